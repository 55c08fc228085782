// Property tests run with a fixed seed, so that CI is reproducible; FC_SEED=<n> (or FC_SEED=random)
// explores other inputs locally. A failure prints its seed and path for replay.
import fc from 'fast-check';

const requested = process.env.FC_SEED;
if (requested !== 'random') fc.configureGlobal({ seed: requested ? Number(requested) : 20261122 });

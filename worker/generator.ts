// Address generation behind one interface, so that a GPU backend (gpu.js/WebGPU, a later issue) can replace
// the CPU one without touching the sender: a backend turns a range of scan positions into ready-to-send
// probes. The backend contract is bit-identity: every backend produces the same addresses and MAC tags for
// the same job, positions and send time (the permutation and SipHash are exact in 16-bit words).

import { addressToBytesWords } from '../lib/core/words.js';
import type { ProbeWriter } from '../lib/core/probe.js';
import type { Hardware } from '../lib/core/job.js';
import type { ExclusionReason, TargetSpace } from '../lib/core/targets.js';

export type Backend = 'cpu';

export class ProbeBatch {
  /** Probes in the batch (excluded positions are not in it). */
  count = 0;
  /** Positions of the range that fell in excluded space, by reason. */
  readonly excluded: Record<ExclusionReason, number> = { never: 0, nonGlobal: 0, exclude: 0, blocklist: 0 };
  /** Destination of probe i at bytes [16i, 16i + 16). */
  readonly addresses: Uint8Array;
  /** Probe i (ICMPv6 header + payload) at bytes [packetBytes·i, packetBytes·(i+1)). */
  readonly packets: Buffer;

  constructor(readonly capacity: number, readonly packetBytes: number) {
    this.addresses = new Uint8Array(capacity * 16);
    this.packets = Buffer.alloc(capacity * packetBytes);
  }

  reset(): void {
    this.count = 0;
    for (const k of Object.keys(this.excluded) as ExclusionReason[]) this.excluded[k] = 0;
  }

  excludedTotal(): number {
    const e = this.excluded;
    return e.never + e.nonGlobal + e.exclude + e.blocklist;
  }
}

export interface AddressGenerator {
  readonly backend: Backend;
  /** Fills `batch` (after resetting it) with the probes of positions [start, start + count), count ≤ capacity. */
  generate(start: number, count: number, sendTimeMs: number, batch: ProbeBatch): Promise<void>;
  close(): Promise<void>;
}

const TWO32 = 2 ** 32;

/** Plain JS over typed arrays: measured faster than every gpu.js CPU mode (see bench/README.md). */
export class CpuGenerator implements AddressGenerator {
  readonly backend = 'cpu' as const;
  private readonly words = new Uint32Array(4);

  constructor(private readonly space: TargetSpace, private readonly writer: ProbeWriter) {}

  async generate(start: number, count: number, sendTimeMs: number, batch: ProbeBatch): Promise<void> {
    if (count > batch.capacity) throw new RangeError(`batch of ${count} exceeds capacity ${batch.capacity}`);
    batch.reset();
    const { space, writer, words } = this;
    const { addresses, packets, packetBytes } = batch;
    let n = 0;
    for (let position = start, end = start + count; position < end; position++) {
      const index = space.indexAt(position);
      const excluded = space.address(index, words);
      if (excluded !== undefined) {
        batch.excluded[excluded.reason]++;
        continue;
      }
      addressToBytesWords(words, addresses, n * 16);
      writer.write(packets, n * packetBytes, addresses, n * 16, Math.floor(index / TWO32), index >>> 0, sendTimeMs);
      n++;
    }
    batch.count = n;
  }

  async close(): Promise<void> {}
}

/**
 * Picks the backend for a job's `hardware`. Only the CPU backend exists in this build, so `gpu` fails fast
 * with a clear message instead of silently running somewhere else, and `auto` means CPU (on GPU-pool workers
 * too, so that the GPU pool serves `auto` jobs).
 */
export function createGenerator(hardware: Hardware, space: TargetSpace, writer: ProbeWriter): AddressGenerator {
  if (hardware === 'gpu') {
    throw new Error('hardware: gpu was requested but this worker has no GPU backend (the gpu.js WebGPU backend is not built yet); use hardware: auto or cpu');
  }
  return new CpuGenerator(space, writer);
}

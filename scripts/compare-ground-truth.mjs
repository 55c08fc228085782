// Compares a scan's peers (NDJSON) with what the lab's ground truth says the job must find.
import { readFileSync } from 'node:fs';
import { loadJob } from '../dist/lib/core/job.js';
import { expectedHosts } from '../dist/testbed/lab.js';

const [jobFile, truthFile, peersFile] = process.argv.slice(2);
const job = loadJob(readFileSync(jobFile, 'utf8'), jobFile);
const truth = JSON.parse(readFileSync(truthFile, 'utf8'));
const expected = expectedHosts(job, truth);
const peers = readFileSync(peersFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const found = new Set(peers.map((p) => p.address));
const missed = [...expected].filter((a) => !found.has(a));
const extra = [...found].filter((a) => !expected.has(a));
const widescan = peers.filter((p) => p.kind === 'widescan').map((p) => p.address);
console.log(`ground truth: ${expected.size} live targets; found ${expected.size - missed.length}, missed ${missed.length}, unexpected ${extra.length}`);
console.log(`widescan peers: ${widescan.join(', ') || 'none'} (the lab's second instance is ${truth.peerAddress})`);
if (missed.length || extra.length || !widescan.includes(truth.peerAddress)) {
  console.log(`missed: ${missed.join(' ')}\nunexpected: ${extra.join(' ')}`);
  process.exit(1);
}

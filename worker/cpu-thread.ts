// One generator thread of ThreadedCpuGenerator (cpu-threads.ts). It rebuilds the job's target space and
// probe writer from their plain definitions, then serves generations for ever: wait for the counter, write
// the probes of its position range from its own first slot of the shared batch, report, wait again. It
// blocks in Atomics.wait between batches: it has nothing else to do, and the wake-up is the fastest there is.
// Any exception is left uncaught: the thread dies and the generator fails (never a silently wrong batch).

import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { ProbeWriter } from '../lib/core/probe.js';
import { TargetSpace, type ExclusionReason } from '../lib/core/targets.js';
import {
  ATTACH,
  COUNT,
  EXCLUDED,
  FIRST,
  GEN,
  MADE,
  PARAMS_BYTE,
  REASONS,
  RECORD_INTS,
  RECORDS,
  REMAINING,
  SEND_TIME,
  START,
  type BatchMemory,
  type ThreadData,
} from './cpu-threads.js';
import { fillProbes } from './generator.js';

const data = workerData as ThreadData;
const space = new TargetSpace(data.space.specs, data.space.rules, data.space.options);
const writer = new ProbeWriter(data.writer);
const ctl = new Int32Array(data.control);
const params = new Float64Array(data.control, PARAMS_BYTE, 2);
const record = RECORDS + RECORD_INTS * data.index;
const words = new Uint32Array(4);
let addresses: Uint8Array = new Uint8Array(0);
let packets: Uint8Array = new Uint8Array(0);
let packetBytes = 0;

/** The batch the main thread posted just before signalling this generation. */
function attach(): void {
  const received = receiveMessageOnPort(parentPort!);
  if (!received) throw new Error('generator thread: a new batch was signalled but none was posted');
  const m = received.message as BatchMemory;
  addresses = new Uint8Array(m.addresses, m.addressesOffset, m.capacity * 16);
  packets = new Uint8Array(m.packets, m.packetsOffset, m.capacity * m.packetBytes);
  packetBytes = m.packetBytes;
  ctl[record + ATTACH] = 0;
}

const excluded: Record<ExclusionReason, number> = { never: 0, nonGlobal: 0, exclude: 0, blocklist: 0 };

/** The CPU backend's loop (fillProbes), from slot `first`. */
function fill(first: number, count: number): void {
  for (const r of REASONS) excluded[r] = 0;
  ctl[record + MADE] = fillProbes(space, writer, params[START]! + first, count, params[SEND_TIME]!, { addresses, packets, packetBytes }, first, excluded, words);
  REASONS.forEach((r, k) => (ctl[record + EXCLUDED + k] = excluded[r]));
}

let seen = 0;
for (;;) {
  // A loop, not one wait: the notify of a generation this thread already served (it saw the counter move
  // before the main thread notified) would otherwise wake it for that generation a second time.
  while (Atomics.load(ctl, GEN) === seen) Atomics.wait(ctl, GEN, seen);
  seen = Atomics.load(ctl, GEN);
  if (ctl[record + ATTACH] === 1) attach();
  const count = ctl[record + COUNT];
  if (count > 0) fill(ctl[record + FIRST], count);
  // The last one done wakes the main thread; the Atomics write also publishes the batch bytes written above.
  if (Atomics.sub(ctl, REMAINING, 1) === 1) Atomics.notify(ctl, REMAINING);
}

// CPU cost of the listener's reply path, per reply, without sockets or the kernel: N echo replies of N
// distinct hosts (the aliased-prefix flood: every reply valid and new) are fed to a real Listener in
// receive batches of 256, the way the native path delivers them; its reports go through the same
// (job, address) hand-over the listener service does and are serialised in batches of 5000 as the
// bootstrap reporter would post them. Prints µs per reply (median of the rounds) and the reply rate one
// core sustains.
//
// Run with `bash bench/listener.sh [rounds=5] [replies=1048576]`.
import { performance } from 'node:perf_hooks';
import { macKeyFor, networkIdOf } from '../lib/core/keys.js';
import { ICMP6_ECHO_REPLY, ProbeWriter } from '../lib/core/probe.js';
import { RECEIVE_SLOT_BYTES, type PacketsHandler } from '../lib/icmp6native.js';
import { createLogger } from '../lib/log.js';
import { createMetrics } from '../lib/metrics.js';
import { Listener, peerReport } from '../listener/listener.js';
import type { PeerReport } from '../listener/reporter.js';

const rounds = Number(process.argv[2] ?? 5);
const replies = Number(process.argv[3] ?? 2 ** 20);
const BATCH = 256;

const networkKey = new Uint8Array(32).fill(3);
const networkId = networkIdOf(networkKey);
const jobTag = 0x5ca1ab1e;
const writer = new ProbeWriter({ networkId, jobTag, macKey: macKeyFor(networkKey, jobTag) });

// Every reply as the native path hands it over: datagram i in slot i, its source (the probe's destination).
const slots = Buffer.alloc(replies * RECEIVE_SLOT_BYTES);
const sources = new Uint8Array(replies * 16);
const lengths = new Uint32Array(replies).fill(writer.packetBytes);
const now = Date.now();
for (let i = 0; i < replies; i++) {
  sources.set([0xfd, 0, 0x05, 0xca, 0x01, 0xab, 0x01, 0xaa], i * 16);
  new DataView(sources.buffer).setUint32(i * 16 + 12, i + 1);
  writer.write(slots, i * RECEIVE_SLOT_BYTES, sources, i * 16, 0, i, now);
  slots[i * RECEIVE_SLOT_BYTES] = ICMP6_ECHO_REPLY;
}

function round(): { us: number; reported: number } {
  let handler: PacketsHandler | undefined;
  let buffered: PeerReport[] = [];
  let reported = 0;
  let bytes = 0;
  // The listener registers its handler with io.onPackets: that is all this bench needs of it.
  new Listener({
    io: { onPackets: (h) => (handler = h), send: async () => ({ sent: 0, errors: {} }) },
    networkKey,
    networkId,
    instanceTag: 1,
    localAddresses: () => [],
    isOwnTag: (tag) => tag === jobTag,
    labelOf: () => 'bench',
    report: (peer) => {
      // What listener/service.ts does with a report of a known job, then the reporter's batching.
      buffered.push(peerReport(peer, 'bench'));
      if (buffered.length === 5000) {
        bytes += JSON.stringify({ peers: buffered }).length;
        reported += buffered.length;
        buffered = [];
      }
    },
    count: () => {},
    answerHellos: false,
    logger: createLogger('bench', 'warn'),
    metrics: createMetrics('listener'),
  });
  const start = performance.now();
  for (let i = 0; i < replies; i += BATCH) {
    const n = Math.min(BATCH, replies - i);
    handler!(slots.subarray(i * RECEIVE_SLOT_BYTES), lengths.subarray(i), sources.subarray(i * 16), n);
  }
  const us = ((performance.now() - start) * 1000) / replies;
  if (bytes === 0 && replies >= 5000) throw new Error('nothing was reported: the replies did not verify');
  return { us, reported: reported + buffered.length };
}

const results: number[] = [];
for (let r = 1; r <= rounds; r++) {
  const { us, reported } = round();
  if (reported !== replies) throw new Error(`round ${r}: ${reported} of ${replies} replies reported`);
  results.push(us);
  console.log(`round ${r}: ${us.toFixed(3)} µs per reply (${reported} reported)`);
}
const median = [...results].sort((a, b) => a - b)[Math.floor(results.length / 2)]!;
console.log(`median: ${median.toFixed(3)} µs per reply = ${Math.round(1e6 / median)} replies/s on one core`);

// The listener: one raw ICMPv6 socket (echo request and reply only). Replies are verified statelessly by
// their MAC — the address answered *our* probe — counted (valid/invalid/duplicate), de-duplicated and
// reported. Echo requests that verify under our network key come from another widescan instance: that is a
// widescan peer, greeted with one rate-limited `hello` so that it learns of us too.

import { addressToBytes, formatAddressBytes, parseAddress } from '../lib/core/ipv6.js';
import { macKeyFor } from '../lib/core/keys.js';
import { ICMP6_ECHO_REPLY, ICMP6_ECHO_REQUEST, KIND_HELLO, KIND_PROBE, PROBE_MAGIC, ProbeWriter, verifyEcho, type EchoVerdict } from '../lib/core/probe.js';
import { sipKey, type SipKey } from '../lib/core/siphash.js';
import { RECEIVE_SLOT_BYTES, type Icmp6Transport } from '../lib/icmp6native.js';
import type { JobCounter } from '../lib/keys.js';
import type { Logger } from '../lib/log.js';
import type { Metrics } from '../lib/metrics.js';
import { BoundedSet } from './bounded.js';
import type { PeerReport } from './reporter.js';

/** A report before its job tag is resolved to a job id. */
export type TaggedReport = Omit<PeerReport, 'job'> & { tag: number };

/** The report of `peer` for the job `job` (a literal, not a rest/spread copy: this runs once per new peer). */
export function peerReport(peer: TaggedReport, job: string): PeerReport {
  return peer.rttMs === undefined ? { address: peer.address, kind: peer.kind, job } : { address: peer.address, kind: peer.kind, job, rttMs: peer.rttMs };
}

export interface ListenerOptions {
  /** Receives echo traffic in batches, sends hellos. */
  io: Pick<Icmp6Transport, 'onPackets' | 'send'>;
  networkKey: Uint8Array;
  networkId: number;
  /** This instance's own tag: its hellos are MACed under it. */
  instanceTag: number;
  /** Our own addresses, network order: an echo request's MAC covers its destination, which is one of them. */
  localAddresses: () => readonly Uint8Array[];
  /** Whether a tag is one of this installation's jobs (as far as the registry has been read). */
  isOwnTag: (tag: number) => boolean;
  /** Metric label of a tag: the job id when known, else the tag in hex. */
  labelOf: (tag: number) => string;
  /** A peer found by the job with `tag`; the job's name is resolved by the caller, who may first re-read the registry. */
  report: (peer: TaggedReport) => void;
  /** Adds to the counters of the job with `tag` (batched and resolved by the caller). */
  count: (tag: number, counter: JobCounter, n: number) => void;
  answerHellos: boolean;
  logger: Logger;
  metrics: Metrics;
  /** Most (job, address) pairs remembered for de-duplication. */
  dedupeCapacity?: number;
  /** Hellos per second at most, all peers together. */
  helloRate?: number;
  /** One hello per peer and probing job per this many ms. */
  helloIntervalMs?: number;
}

const TWO32 = 2 ** 32;
/** The largest RTT the bootstrap accepts (bootstrap/server.ts). */
export const MAX_RTT_MS = 600_000;

export class Listener {
  private readonly seen: BoundedSet;
  private readonly greeted: BoundedSet;
  private readonly keyCache = new Map<number, SipKey>();
  private readonly helloWriter: ProbeWriter;
  private helloTokens: number;
  private helloRefill = Date.now();

  constructor(private readonly o: ListenerOptions) {
    this.seen = new BoundedSet(o.dedupeCapacity ?? 262_144);
    this.greeted = new BoundedSet(65_536);
    this.helloWriter = new ProbeWriter({ networkId: o.networkId, jobTag: o.instanceTag, macKey: macKeyFor(o.networkKey, o.instanceTag), kind: KIND_HELLO });
    this.helloTokens = o.helloRate ?? 20;
    o.io.onPackets((buffer, lengths, sources, count) => {
      for (let i = 0; i < count; i++) {
        const at = i * RECEIVE_SLOT_BYTES;
        this.onPacket(buffer.subarray(at, at + lengths[i]!), sources.subarray(i * 16, i * 16 + 16));
      }
      this.flushReplyMetrics();
    });
  }

  /**
   * `widescan_replies_total` increments of the current receive batch, by job and result: prom-client hashes
   * the labels on every inc, which per reply was a visible share of the listener's CPU under a reply flood.
   */
  private readonly replyTally = new Map<string, { job: string; result: string; n: number }>();

  private countReply(job: string, result: 'valid' | 'invalid' | 'duplicate'): void {
    const key = `${result}|${job}`;
    const t = this.replyTally.get(key);
    if (t) t.n++;
    else this.replyTally.set(key, { job, result, n: 1 });
  }

  private flushReplyMetrics(): void {
    for (const { job, result, n } of this.replyTally.values()) this.o.metrics.replies.inc({ job, result }, n);
    this.replyTally.clear();
  }

  /** MAC keys of tags, derived from the network key; bounded so that hostile tags cannot grow it. */
  private macKeyOf = (tag: number): SipKey => {
    let key = this.keyCache.get(tag);
    if (!key) {
      if (this.keyCache.size >= 4096) this.keyCache.clear();
      key = sipKey(macKeyFor(this.o.networkKey, tag));
      this.keyCache.set(tag, key);
    }
    return key;
  };

  /** One datagram (ICMPv6 header first) from `src` (16 bytes); neither is kept after the call. */
  onPacket(packet: Uint8Array, src: Uint8Array): void {
    const type = packet[0];
    if (type === ICMP6_ECHO_REPLY) this.onReply(packet, src);
    else if (type === ICMP6_ECHO_REQUEST) this.onRequest(packet, src);
  }

  private onReply(packet: Uint8Array, src: Uint8Array): void {
    // Echo replies without the magic answer somebody else's ping: not ours to judge, not "invalid".
    if (!claimsWidescan(packet)) return;
    const v = verifyEcho(packet, src, this.o.networkId, this.macKeyOf);
    if (!v.ok) {
      // A reply that fails verification is counted against the job its identifier claims, if it is ours.
      const tag = packet.length >= 20 ? readTag(packet) : undefined;
      this.countReply(tag !== undefined && this.o.isOwnTag(tag) ? this.o.labelOf(tag) : 'unknown', 'invalid');
      if (tag !== undefined) this.o.count(tag, 'repliesInvalid', 1);
      this.o.logger.debug({ source: formatAddressBytes(src), reason: v.reason }, 'invalid reply');
      return;
    }
    const address = formatAddressBytes(src);
    if (v.kind === KIND_HELLO) {
      // Our hello, echoed by the other instance's kernel: it is alive and of our network.
      this.widescanPeer(address, Number(v.targetIndex % BigInt(TWO32)), undefined);
      return;
    }
    const job = this.o.labelOf(v.jobTag);
    const rttMs = ((Date.now() % TWO32) - v.sendTimeMs + TWO32) % TWO32;
    if (!this.seen.add(`h|${v.jobTag}|${address}`)) {
      this.countReply(job, 'duplicate');
      this.o.count(v.jobTag, 'repliesDuplicate', 1);
      return;
    }
    this.countReply(job, 'valid');
    this.o.count(v.jobTag, 'repliesValid', 1);
    // A very late echo or a clock step gives a meaningless RTT, which the bootstrap refuses together with
    // the whole batch: such a host is still a host, reported without one.
    this.o.report({ address, kind: 'host', tag: v.jobTag, ...(rttMs <= MAX_RTT_MS ? { rttMs } : {}) });
  }

  private onRequest(packet: Uint8Array, src: Uint8Array): void {
    // An ordinary ping: not ours to judge (and not worth a MAC per local address).
    if (!claimsWidescan(packet)) return;
    let verdict: EchoVerdict | undefined;
    for (const dst of this.o.localAddresses()) {
      const v = verifyEcho(packet, src, this.o.networkId, this.macKeyOf, { dst });
      if (v.ok) {
        verdict = v;
        break;
      }
    }
    if (!verdict || !verdict.ok) return;
    // Our own probes (a worker scanning this node) and our own hellos are not peers.
    if (verdict.jobTag === this.o.instanceTag || this.o.isOwnTag(verdict.jobTag)) return;
    const address = formatAddressBytes(src);
    if (verdict.kind === KIND_HELLO) {
      // The hello names the job of ours whose probe it answers.
      this.widescanPeer(address, Number(verdict.targetIndex % BigInt(TWO32)), undefined);
    } else if (verdict.kind === KIND_PROBE) {
      this.widescanPeer(address, verdict.jobTag, verdict.jobTag);
    }
  }

  private widescanPeer(address: string, tag: number, probeTag: number | undefined): void {
    if (this.seen.add(`w|${tag}|${address}`)) {
      this.o.logger.info({ address, job: this.o.labelOf(tag) }, 'widescan peer');
      this.o.report({ address, kind: 'widescan', tag });
    }
    if (probeTag !== undefined && this.o.answerHellos) this.hello(address, probeTag);
  }

  private hello(address: string, probeTag: number): void {
    const now = Date.now();
    const rate = this.o.helloRate ?? 20;
    this.helloTokens = Math.min(rate, this.helloTokens + ((now - this.helloRefill) * rate) / 1000);
    this.helloRefill = now;
    if (this.helloTokens < 1 || !this.greeted.add(`${address}|${probeTag}`, now + (this.o.helloIntervalMs ?? 600_000))) return;
    this.helloTokens--;
    const dst = addressToBytes(parseAddress(address));
    // A buffer per hello: the transport keeps it until the kernel took it, so a shared one would carry the
    // last hello's destination MAC in every hello queued in the same tick.
    const packet = Buffer.alloc(this.helloWriter.packetBytes);
    this.helloWriter.write(packet, 0, dst, 0, 0, probeTag >>> 0, now);
    this.o.io.send(packet, packet.length, dst, 0, 1).then(
      (r) => {
        if (r.sent !== 1) this.o.logger.warn({ address, errors: r.errors }, 'hello not sent');
      },
      (err: unknown) => this.o.logger.warn({ err, address }, 'hello not sent'),
    );
  }
}

/** Whether the payload starts with the WSCN magic, i.e. claims to be widescan traffic. */
function claimsWidescan(packet: Uint8Array): boolean {
  return packet.length >= 12 && packet[8] === PROBE_MAGIC[0] && packet[9] === PROBE_MAGIC[1] && packet[10] === PROBE_MAGIC[2] && packet[11] === PROBE_MAGIC[3];
}

/** The job tag field of a payload (bytes 8..11 after the 8-byte ICMPv6 header). */
function readTag(packet: Uint8Array): number {
  return ((packet[16] << 24) | (packet[17] << 16) | (packet[18] << 8) | packet[19]) >>> 0;
}

// The listener's decisions, driven through a stub socket (the raw socket itself is exercised by the lab
// integration tests). Packets are real: built by ProbeWriter under real keys.
import { afterEach, describe, expect, jest, test } from '@jest/globals';
import { addressToBytes, bytesToAddress, formatAddress, parseAddress } from '../../lib/core/ipv6.js';
import { jobTagHex, jobTagOf, macKeyFor, networkIdOf, networkKeyBytes } from '../../lib/core/keys.js';
import { ICMP6_ECHO_REPLY, ICMP6_ECHO_REQUEST, KIND_HELLO, KIND_PROBE, PROBE_MAGIC, ProbeWriter, verifyEcho } from '../../lib/core/probe.js';
import type { PacketsHandler } from '../../lib/icmp6native.js';
import type { JobCounter } from '../../lib/keys.js';
import { createLogger } from '../../lib/log.js';
import { createMetrics } from '../../lib/metrics.js';
import { Listener, MAX_RTT_MS, type ListenerOptions, type TaggedReport } from '../../listener/listener.js';

const NET_KEY = networkKeyBytes('listener unit test network');
const NET_ID = networkIdOf(NET_KEY);
const OTHER_NET_KEY = networkKeyBytes('some other network');

const JOB = jobTagOf('job-uid-1'); // a job of this installation
const JOB2 = jobTagOf('job-uid-2');
const INSTANCE = jobTagOf('instance/us');
const PEER_JOB = jobTagOf('their-job-uid'); // a job of another installation of the same network
const PEER_INSTANCE = jobTagOf('instance/them');
const JOB_NAMES = new Map([
  [JOB, 'default/job-1'],
  [JOB2, 'default/job-2'],
]);

const bytes = (a: string) => addressToBytes(parseAddress(a));
const OUR_ADDR = '2001:db8:1::1'; // this node
const OUR_OTHER_ADDR = '2001:db8:1::2';
const TARGET = '2001:db8:2::42'; // a probed host
const PEER = '2001:db8:3::7'; // another widescan instance

interface Sent {
  buffer: Buffer;
  offset: number;
  length: number;
  address: string;
}

/**
 * A transport stub with the real one's contract: batches in, `send` keeps the arrays until it resolves (a
 * caller that reuses a buffer before that is caught: `sent` holds references, not copies).
 */
class StubIo {
  readonly sent: Sent[] = [];
  handler: PacketsHandler | undefined;
  onPackets(handler: PacketsHandler): void {
    this.handler = handler;
  }
  send(packets: Buffer, packetBytes: number, addresses: Uint8Array, from: number, to: number): Promise<{ sent: number; errors: Record<string, number> }> {
    for (let i = from; i < to; i++) {
      this.sent.push({ buffer: packets, offset: i * packetBytes, length: packetBytes, address: formatAddress(bytesToAddress(addresses, i * 16)) });
    }
    return new Promise((resolve) => setImmediate(() => resolve({ sent: to - from, errors: {} })));
  }
}

function setup(overrides: Partial<ListenerOptions> = {}) {
  const socket = new StubIo();
  const reports: TaggedReport[] = [];
  const counts: Array<[number, JobCounter, number]> = [];
  const metrics = createMetrics('listener');
  const listener = new Listener({
    io: socket,
    networkKey: NET_KEY,
    networkId: NET_ID,
    instanceTag: INSTANCE,
    localAddresses: () => [bytes(OUR_OTHER_ADDR), bytes(OUR_ADDR)],
    isOwnTag: (tag) => JOB_NAMES.has(tag),
    labelOf: (tag) => JOB_NAMES.get(tag) ?? jobTagHex(tag),
    report: (peer) => reports.push(peer),
    count: (tag, counter, n) => counts.push([tag, counter, n]),
    answerHellos: true,
    logger: createLogger('t', 'silent'),
    metrics,
    ...overrides,
  });
  /** Delivers one datagram as the transport does: ICMPv6 header first, its source as 16 bytes. */
  const receive = (packet: Uint8Array, source: string) =>
    socket.handler!(Buffer.from(packet), Uint32Array.of(packet.length), addressToBytes(parseAddress(source)), 1);
  const replyMetric = async () =>
    Object.fromEntries((await metrics.replies.get()).values.map((v) => [`${v.labels.job}|${v.labels.result}`, v.value]));
  return { socket, listener, reports, counts, metrics, receive, replyMetric };
}

/** An echo request as `tag`'s writer builds it for `dst` (a probe, or a hello whose index names `indexLo`). */
function request(o: { tag: number; dst: string; kind?: 1 | 2; indexHi?: number; indexLo?: number; time?: number; networkKey?: Uint8Array }): Uint8Array {
  const key = o.networkKey ?? NET_KEY;
  const w = new ProbeWriter({ networkId: networkIdOf(key), jobTag: o.tag, macKey: macKeyFor(key, o.tag), kind: o.kind ?? KIND_PROBE });
  const pkt = new Uint8Array(w.packetBytes);
  w.write(pkt, 0, bytes(o.dst), 0, o.indexHi ?? 0, o.indexLo ?? 7, o.time ?? Date.now());
  return pkt;
}

/** The echo reply `dst` sends back for that request: the same bytes, type 129. */
function reply(o: Parameters<typeof request>[0]): Uint8Array {
  const pkt = request(o);
  pkt[0] = ICMP6_ECHO_REPLY;
  return pkt;
}

const macKeyOf = (tag: number) => macKeyFor(NET_KEY, tag);

/** Checks that `s` is a hello from us to `to` answering the probe of `probeTag`. */
function expectHello(s: Sent, to: string, probeTag: number): void {
  expect(s.address).toBe(to);
  const pkt = s.buffer.subarray(s.offset, s.offset + s.length);
  expect(pkt[0]).toBe(ICMP6_ECHO_REQUEST);
  const v = verifyEcho(pkt, bytes(OUR_ADDR), NET_ID, macKeyOf, { dst: bytes(to) });
  expect(v).toMatchObject({ ok: true, type: ICMP6_ECHO_REQUEST, kind: KIND_HELLO, jobTag: INSTANCE });
  if (v.ok) expect(Number(v.targetIndex & 0xffffffffn)).toBe(probeTag);
}

afterEach(() => {
  jest.restoreAllMocks();
});

test('the test network ids differ (else the wrong-network case proves nothing)', () => {
  expect(networkIdOf(OTHER_NET_KEY)).not.toBe(NET_ID);
  expect(new Set([JOB, JOB2, INSTANCE, PEER_JOB, PEER_INSTANCE]).size).toBe(5);
});

describe('echo replies', () => {
  test('a valid reply from the probed address is reported once, with its RTT', async () => {
    const t = setup();
    const pkt = reply({ tag: JOB, dst: TARGET, indexHi: 1, indexLo: 2, time: Date.now() - 5 });
    t.receive(pkt, TARGET);
    expect(t.reports).toHaveLength(1);
    const [r] = t.reports;
    expect(r).toMatchObject({ address: TARGET, kind: 'host', tag: JOB });
    expect(r.rttMs).toBeGreaterThanOrEqual(0);
    expect(r.rttMs).toBeLessThan(5000);
    expect(t.counts).toEqual([[JOB, 'repliesValid', 1]]);

    t.receive(pkt, TARGET);
    expect(t.reports).toHaveLength(1);
    expect(t.counts).toEqual([
      [JOB, 'repliesValid', 1],
      [JOB, 'repliesDuplicate', 1],
    ]);
    expect(await t.replyMetric()).toEqual({ 'default/job-1|valid': 1, 'default/job-1|duplicate': 1 });
  });

  test('the source is reported in canonical form, whatever text the socket gives', () => {
    const t = setup();
    t.receive(reply({ tag: JOB, dst: TARGET }), '2001:DB8:2:0:0:0:0:42');
    expect(t.reports.map((r) => r.address)).toEqual([TARGET]);
  });

  test('the same host found by two jobs is reported for each', () => {
    const t = setup();
    t.receive(reply({ tag: JOB, dst: TARGET }), TARGET);
    t.receive(reply({ tag: JOB2, dst: TARGET }), TARGET);
    expect(t.reports.map((r) => r.tag)).toEqual([JOB, JOB2]);
  });

  test.each([
    ['a very late reply', -(MAX_RTT_MS + 1)],
    ['a send time in the future (clock stepped back)', 50],
  ])('%s is a host reported without an RTT the bootstrap would refuse', (_what, offsetMs) => {
    const t = setup();
    t.receive(reply({ tag: JOB, dst: TARGET, time: Date.now() + offsetMs }), TARGET);
    expect(t.reports).toHaveLength(1);
    expect(t.reports[0]).toMatchObject({ address: TARGET, kind: 'host', tag: JOB });
    expect(t.reports[0].rttMs).toBeUndefined();
  });

  test('the RTT survives the 2^32 ms wrap of the send time', () => {
    const t = setup();
    const now = 2 ** 32 * 400 + 3; // just after a wrap
    jest.spyOn(Date, 'now').mockReturnValue(now);
    t.receive(reply({ tag: JOB, dst: TARGET, time: now - 10 }), TARGET); // written as ms mod 2^32, before the wrap
    expect(t.reports[0].rttMs).toBe(10);
  });

  const valid = () => reply({ tag: JOB, dst: TARGET });
  const invalid: Array<[string, () => Uint8Array, string, number | null]> = [
    ['a bad MAC', () => { const p = valid(); p[39] ^= 1; return p; }, TARGET, JOB],
    ['a reply from another address than the probed one', valid, '2001:db8:2::43', JOB],
    ['a changed target index', () => { const p = valid(); p[27] ^= 1; return p; }, TARGET, JOB],
    ['a changed send time', () => { const p = valid(); p[31] ^= 1; return p; }, TARGET, JOB],
    ['a packet truncated to 39 bytes', () => valid().subarray(0, 39), TARGET, JOB],
    ['a packet truncated to 20 bytes (the tag just fits)', () => valid().subarray(0, 20), TARGET, JOB],
    ['a packet truncated to 19 bytes (no whole tag)', () => valid().subarray(0, 19), TARGET, null],
    ['a wrong network id', () => reply({ tag: JOB, dst: TARGET, networkKey: OTHER_NET_KEY }), TARGET, JOB],
    ['a version 2 payload', () => { const p = valid(); p[12] = 2; return p; }, TARGET, JOB],
    ['a nonzero code', () => { const p = valid(); p[1] = 1; return p; }, TARGET, JOB],
  ];
  test.each(invalid)('%s is counted invalid and never reported', async (_what, make, source, claimedTag) => {
    const t = setup();
    expect(() => t.receive(make(), source)).not.toThrow();
    expect(t.reports).toEqual([]);
    expect(t.counts).toEqual(claimedTag === null ? [] : [[claimedTag, 'repliesInvalid', 1]]);
    const label = claimedTag !== null && JOB_NAMES.has(claimedTag) ? JOB_NAMES.get(claimedTag) : 'unknown';
    expect(await t.replyMetric()).toEqual({ [`${label}|invalid`]: 1 });
    expect(t.socket.sent).toEqual([]);
  });

  // Replies without the WSCN magic answer somebody else's ping (a busy node sees them): neither peers nor
  // "invalid", which would raise the invalid-reply alert for traffic that is none of ours.
  const foreign: Array<[string, () => Uint8Array]> = [
    ['the echo header alone', () => valid().subarray(0, 8)],
    ['an ordinary ping reply', () => Uint8Array.of(129, 0, 0, 0, 0x12, 0x34, 0, 1, ...new Array(56).fill(0xab))],
    ['a reply with a wrong magic', () => { const p = valid(); p[8] = 0x58; return p; }],
  ];
  test.each(foreign)('%s is ignored: not reported, not counted', async (_what, make) => {
    const t = setup();
    t.receive(make(), TARGET);
    expect(t.reports).toEqual([]);
    expect(t.counts).toEqual([]);
    expect(await t.replyMetric()).toEqual({});
  });

  test('a valid reply after an invalid one from the same address is still reported', () => {
    const t = setup();
    const p = valid();
    p[39] ^= 1;
    t.receive(p, TARGET);
    t.receive(valid(), TARGET);
    expect(t.reports).toHaveLength(1);
  });

  test('64 KiB of garbage, of every leading byte, never throws nor reports', async () => {
    const t = setup();
    const garbage = new Uint8Array(65536);
    let x = 0x12345678;
    for (let i = 0; i < garbage.length; i++) garbage[i] = (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24;
    garbage.set(PROBE_MAGIC, 8); // claims to be widescan traffic, so the reply one is judged (and fails)
    for (let type = 0; type < 256; type++) {
      garbage[0] = type;
      expect(() => t.receive(garbage, TARGET)).not.toThrow();
    }
    expect(t.reports).toEqual([]);
    expect(t.socket.sent).toEqual([]);
    // Only the echo-reply one is a reply at all; garbage requests are not ours to count.
    expect(t.counts).toHaveLength(1);
    expect(t.counts[0][1]).toBe('repliesInvalid');
  });

  test('empty packets are ignored', async () => {
    const t = setup();
    expect(() => t.receive(new Uint8Array(0), TARGET)).not.toThrow();
    expect(t.reports).toEqual([]);
    expect(t.counts).toEqual([]);
  });

  test('invalid replies of foreign tags share one metric label, whatever tags a flood claims', async () => {
    const t = setup();
    for (let i = 0; i < 1000; i++) {
      const p = reply({ tag: (i * 2654435761) >>> 0, dst: TARGET });
      p[39] ^= 1;
      t.receive(p, TARGET);
    }
    expect(await t.replyMetric()).toEqual({ 'unknown|invalid': 1000 });
  });

  test('a flood of distinct valid hosts keeps the de-duplication memory bounded', () => {
    const t = setup({ dedupeCapacity: 100 });
    for (let i = 0; i < 300; i++) {
      const a = `2001:db8:2::${(i + 1).toString(16)}`;
      t.receive(reply({ tag: JOB, dst: a }), a);
    }
    expect(t.reports).toHaveLength(300);
    // The newest are remembered; a forgotten one is reported again (the bootstrap's upsert is idempotent).
    t.receive(reply({ tag: JOB, dst: '2001:db8:2::12c' }), '2001:db8:2::12c');
    expect(t.reports).toHaveLength(300);
    t.receive(reply({ tag: JOB, dst: '2001:db8:2::1' }), '2001:db8:2::1');
    expect(t.reports).toHaveLength(301);
  });
});

describe('widescan peers', () => {
  test("another instance's probe is a widescan peer, answered with one hello", () => {
    const t = setup();
    t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR, indexLo: 99 }), PEER);
    expect(t.reports).toEqual([{ address: PEER, kind: 'widescan', tag: PEER_JOB }]);
    expect(t.counts).toEqual([]);
    expect(t.socket.sent).toHaveLength(1);
    expectHello(t.socket.sent[0], PEER, PEER_JOB);

    t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR, indexLo: 100 }), PEER);
    expect(t.reports).toHaveLength(1);
    expect(t.socket.sent).toHaveLength(1);
  });

  test('the probe may be addressed to any of our local addresses', () => {
    const t = setup();
    t.receive(request({ tag: PEER_JOB, dst: OUR_OTHER_ADDR }), PEER);
    expect(t.reports).toEqual([{ address: PEER, kind: 'widescan', tag: PEER_JOB }]);
    expect(t.socket.sent).toHaveLength(1);
  });

  test('a second probing job of the same peer gets its own hello', () => {
    const t = setup();
    const otherPeerJob = jobTagOf('their-job-uid-2');
    t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), PEER);
    t.receive(request({ tag: otherPeerJob, dst: OUR_ADDR }), PEER);
    expect(t.reports.map((r) => r.tag)).toEqual([PEER_JOB, otherPeerJob]);
    expect(t.socket.sent).toHaveLength(2);
    expectHello(t.socket.sent[0], PEER, PEER_JOB);
    expectHello(t.socket.sent[1], PEER, otherPeerJob);
  });

  test('hellos queued in the same tick each carry their own destination MAC', async () => {
    const t = setup();
    const peers = ['2001:db8:3::1', '2001:db8:3::2', '2001:db8:3::3'];
    for (const p of peers) t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), p);
    await new Promise((r) => setImmediate(r)); // raw-socket sends after this tick
    expect(t.socket.sent).toHaveLength(3);
    t.socket.sent.forEach((s, i) => expectHello(s, peers[i], PEER_JOB));
  });

  test('a hello is sent again to the same peer only after the per-peer interval', () => {
    let now = 1_700_000_000_000;
    jest.spyOn(Date, 'now').mockImplementation(() => now);
    const t = setup({ helloIntervalMs: 60_000 });
    t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), PEER);
    now += 59_999;
    t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), PEER);
    expect(t.socket.sent).toHaveLength(1);
    now += 1;
    t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), PEER);
    expect(t.socket.sent).toHaveLength(2);
    expectHello(t.socket.sent[1], PEER, PEER_JOB);
    expect(t.reports).toHaveLength(1); // the peer itself is reported once
  });

  test('hellos to many peers at once are held to helloRate; every peer is still reported', () => {
    let now = 1_700_000_000_000;
    jest.spyOn(Date, 'now').mockImplementation(() => now);
    const t = setup({ helloRate: 20 });
    const peer = (i: number) => `2001:db8:4::${(i + 1).toString(16)}`;
    for (let i = 0; i < 100; i++) t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), peer(i));
    expect(t.reports).toHaveLength(100);
    expect(t.socket.sent).toHaveLength(20);
    t.socket.sent.forEach((s, i) => expectHello(s, peer(i), PEER_JOB));

    // Half a second refills half the bucket: a refused peer that probes again is greeted then.
    now += 500;
    for (let i = 20; i < 100; i++) t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), peer(i));
    expect(t.socket.sent).toHaveLength(30);
    expect(t.socket.sent.slice(20).map((s) => s.address)).toEqual(Array.from({ length: 10 }, (_, i) => peer(20 + i)));
    expect(t.reports).toHaveLength(100); // and none reported twice

    // However long the pause, the bucket holds at most helloRate.
    now += 3_600_000;
    for (let i = 0; i < 100; i++) t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), `2001:db8:5::${(i + 1).toString(16)}`);
    expect(t.socket.sent).toHaveLength(50);
  });

  test('with answerHellos false the peer is reported but never greeted', () => {
    const t = setup({ answerHellos: false });
    for (let i = 0; i < 5; i++) t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), `2001:db8:3::${i + 1}`);
    expect(t.reports).toHaveLength(5);
    expect(t.socket.sent).toEqual([]);
  });

  test("a hello from another instance names the job of ours it answers, and is not answered", () => {
    const t = setup();
    t.receive(request({ tag: PEER_INSTANCE, dst: OUR_ADDR, kind: KIND_HELLO, indexLo: JOB }), PEER);
    expect(t.reports).toEqual([{ address: PEER, kind: 'widescan', tag: JOB }]);
    expect(t.socket.sent).toEqual([]);
    expect(t.counts).toEqual([]);
  });

  test('our hello echoed back by the peer is a widescan peer of the job it named', () => {
    const t = setup();
    const echoed = reply({ tag: INSTANCE, dst: PEER, kind: KIND_HELLO, indexLo: PEER_JOB });
    t.receive(echoed, PEER);
    expect(t.reports).toEqual([{ address: PEER, kind: 'widescan', tag: PEER_JOB }]);
    expect(t.socket.sent).toEqual([]);
    t.receive(echoed, PEER);
    expect(t.reports).toHaveLength(1);
  });

  test('a full round: our hello, sent to a peer listener, makes us its peer', async () => {
    const us = setup();
    const them = setup({ instanceTag: PEER_INSTANCE, localAddresses: () => [bytes(PEER)], isOwnTag: (tag) => tag === PEER_JOB });
    // Their worker's probe reaches us; our hello reaches their listener.
    us.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), PEER);
    const hello = us.socket.sent[0];
    them.receive(hello.buffer.subarray(hello.offset, hello.offset + hello.length), OUR_ADDR);
    expect(them.reports).toEqual([{ address: OUR_ADDR, kind: 'widescan', tag: PEER_JOB }]);
    expect(them.socket.sent).toEqual([]); // hellos are never answered with hellos
  });
});

describe('echo requests that are not peers', () => {
  test('a probe whose MAC covers none of our local addresses is ignored', () => {
    const t = setup();
    t.receive(request({ tag: PEER_JOB, dst: '2001:db8:1::99' }), PEER);
    expect(t.reports).toEqual([]);
    expect(t.socket.sent).toEqual([]);
    expect(t.counts).toEqual([]);
  });

  test('with no local addresses nothing verifies', () => {
    const t = setup({ localAddresses: () => [] });
    t.receive(request({ tag: PEER_JOB, dst: OUR_ADDR }), PEER);
    expect(t.reports).toEqual([]);
    expect(t.socket.sent).toEqual([]);
  });

  test.each([
    ['an ordinary ping', () => Uint8Array.of(128, 0, 0, 0, 0x12, 0x34, 0, 1, ...new Array(56).fill(0x61))],
    ['a ping whose payload starts with W', () => Uint8Array.of(128, 0, 0, 0, 0x12, 0x34, 0, 1, 0x57, ...new Array(55).fill(0))],
    ['a ping with no payload', () => Uint8Array.of(128, 0, 0, 0, 0x12, 0x34, 0, 1)],
    ['a probe of another network', () => request({ tag: PEER_JOB, dst: OUR_ADDR, networkKey: OTHER_NET_KEY })],
    ['a probe with a bad MAC', () => { const p = request({ tag: PEER_JOB, dst: OUR_ADDR }); p[39] ^= 0x80; return p; }],
    ['a truncated probe', () => request({ tag: PEER_JOB, dst: OUR_ADDR }).subarray(0, 39)],
  ])('%s is ignored', (_what, make) => {
    const t = setup();
    expect(() => t.receive(make(), PEER)).not.toThrow();
    expect(t.reports).toEqual([]);
    expect(t.socket.sent).toEqual([]);
    expect(t.counts).toEqual([]);
  });

  test('our own probes and our own hellos are not peers', async () => {
    const t = setup();
    t.receive(request({ tag: JOB, dst: OUR_ADDR }), PEER); // a worker of ours scanning this node
    t.receive(request({ tag: JOB2, dst: OUR_ADDR }), OUR_ADDR);
    t.receive(request({ tag: INSTANCE, dst: OUR_ADDR }), PEER);
    t.receive(request({ tag: INSTANCE, dst: OUR_ADDR, kind: KIND_HELLO, indexLo: PEER_JOB }), PEER);
    expect(t.reports).toEqual([]);
    expect(t.socket.sent).toEqual([]);
    expect(t.counts).toEqual([]);
    expect(await t.replyMetric()).toEqual({});
  });
});

import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { macKeyFor, networkIdOf, networkKeyBytes } from '../../lib/core/keys.js';
import {
  echoContact,
  ICMP6_ECHO_REPLY,
  ICMP6_ECHO_REQUEST,
  KIND_HELLO,
  KIND_PROBE,
  MAX_CONTACT_BYTES,
  ProbeWriter,
  PROBE_MAGIC,
  verifyEcho,
  type EchoVerdict,
} from '../../lib/core/probe.js';
import { sipKey, siphash24 } from '../../lib/core/siphash.js';

const NET_KEY = networkKeyBytes('test network');
const NET_ID = networkIdOf(NET_KEY);
const TAG = 0xdeadbeef;
const macKeys = new Map<number, Uint8Array>();
const macKeyOf = (tag: number) => {
  let k = macKeys.get(tag);
  if (!k) macKeys.set(tag, (k = macKeyFor(NET_KEY, tag)));
  return k;
};
const writer = (opts: { jobTag?: number; kind?: 1 | 2; contact?: string } = {}) =>
  new ProbeWriter({ networkId: NET_ID, jobTag: opts.jobTag ?? TAG, macKey: macKeyOf(opts.jobTag ?? TAG), kind: opts.kind, contact: opts.contact });

const DST = Uint8Array.from(Buffer.from('fd000000000000000000000000000042', 'hex'));
const OTHER = Uint8Array.from(Buffer.from('fd000000000000000000000000000043', 'hex'));

/** A probe to DST turned into the echo reply DST would send. */
function reply(w = writer(), indexHi = 0x01020304, indexLo = 0x05060708, time = 123456): Uint8Array {
  const pkt = new Uint8Array(w.packetBytes);
  w.write(pkt, 0, DST, 0, indexHi, indexLo, time);
  pkt[0] = ICMP6_ECHO_REPLY;
  return pkt;
}
const reason = (v: EchoVerdict) => (v.ok ? 'ok' : v.reason);

describe('ProbeWriter', () => {
  test('writes the documented layout', () => {
    const w = writer();
    expect(w.packetBytes).toBe(40);
    const pkt = new Uint8Array(40);
    w.write(pkt, 0, DST, 0, 0x01020304, 0x0506a7b8, 2 ** 32 + 99);
    const b = Buffer.from(pkt);
    expect([b[0], b[1], b.readUInt16BE(2)]).toEqual([ICMP6_ECHO_REQUEST, 0, 0]);
    expect(b.readUInt16BE(4)).toBe(TAG & 0xffff);
    expect(b.readUInt16BE(6)).toBe(0xa7b8);
    expect(b.subarray(8, 12).toString('latin1')).toBe('WSCN');
    expect(Array.from(PROBE_MAGIC)).toEqual([0x57, 0x53, 0x43, 0x4e]);
    expect([b[12], b[13], b.readUInt16BE(14), b.readUInt32BE(16)]).toEqual([1, KIND_PROBE, NET_ID, TAG]);
    expect(b.readBigUInt64BE(20)).toBe(0x010203040506a7b8n);
    expect(b.readUInt32BE(28)).toBe(99); // send time mod 2^32
    // MAC: SipHash over destination ‖ payload 0..23, big-endian
    const h = siphash24(sipKey(macKeyOf(TAG)), Buffer.concat([DST, b.subarray(8, 32)]));
    expect(b.readUInt32BE(32)).toBe(h[1]);
    expect(b.readUInt32BE(36)).toBe(h[0]);
  });

  test('writes at offsets into a shared buffer and leaves the rest alone', () => {
    const w = writer();
    const buf = new Uint8Array(200).fill(0xaa);
    const dsts = new Uint8Array(64);
    dsts.set(DST, 32);
    w.write(buf, 50, dsts, 32, 0, 7, 1);
    expect(buf.subarray(0, 50).every((x) => x === 0xaa)).toBe(true);
    expect(buf.subarray(90).every((x) => x === 0xaa)).toBe(true);
    const pkt = buf.slice(50, 90);
    pkt[0] = ICMP6_ECHO_REPLY;
    expect(verifyEcho(pkt, DST, NET_ID, macKeyOf)).toEqual({ ok: true, type: 129, kind: 1, jobTag: TAG, targetIndex: 7n, sendTimeMs: 1 });
  });

  test('refuses writes that do not fit and bad options', () => {
    const w = writer();
    expect(() => w.write(new Uint8Array(39), 0, DST, 0, 0, 0, 0)).toThrow(RangeError);
    expect(() => w.write(new Uint8Array(80), 41, DST, 0, 0, 0, 0)).toThrow(RangeError);
    expect(() => w.write(new Uint8Array(80), -1, DST, 0, 0, 0, 0)).toThrow(RangeError);
    expect(() => w.write(new Uint8Array(80), 0, DST, 1, 0, 0, 0)).toThrow(RangeError);
    const base = { networkId: NET_ID, jobTag: TAG, macKey: macKeyOf(TAG) };
    expect(() => new ProbeWriter({ ...base, networkId: 0x10000 })).toThrow(/networkId/);
    expect(() => new ProbeWriter({ ...base, jobTag: -1 })).toThrow(/jobTag/);
    expect(() => new ProbeWriter({ ...base, jobTag: 2 ** 32 })).toThrow(/jobTag/);
    expect(() => new ProbeWriter({ ...base, macKey: new Uint8Array(8) })).toThrow(/16 bytes/);
    expect(() => new ProbeWriter({ ...base, kind: 3 as 1 })).toThrow(/kind/);
  });

  test('an over-long contact is refused at construction; the limit is in UTF-8 bytes', () => {
    expect(writer({ contact: 'x'.repeat(MAX_CONTACT_BYTES) }).packetBytes).toBe(40 + MAX_CONTACT_BYTES);
    expect(() => writer({ contact: 'x'.repeat(MAX_CONTACT_BYTES + 1) })).toThrow(/201 bytes/);
    expect(() => writer({ contact: 'é'.repeat(101) })).toThrow(/202 bytes/);
  });
});

describe('verifyEcho', () => {
  test('round trip: write, turn into a reply, verify (random fields)', () => {
    fc.assert(
      fc.property(
        fc.nat(0xffffffff), fc.nat(0xffffffff), fc.nat(0xffffffff), fc.double({ min: 0, max: 2 ** 53, noNaN: true }),
        fc.constantFrom<1 | 2>(KIND_PROBE, KIND_HELLO), fc.uint8Array({ minLength: 16, maxLength: 16 }),
        (jobTag, hi, lo, time, kind, dst) => {
          const w = writer({ jobTag, kind });
          const pkt = new Uint8Array(w.packetBytes);
          w.write(pkt, 0, dst, 0, hi, lo, time);
          pkt[0] = ICMP6_ECHO_REPLY;
          const v = verifyEcho(pkt, dst, NET_ID, macKeyOf);
          expect(v).toEqual({
            ok: true, type: 129, kind, jobTag, targetIndex: (BigInt(hi) << 32n) | BigInt(lo), sendTimeMs: Math.trunc(time) % 2 ** 32,
          });
        },
      ),
      { numRuns: 200 },
    );
  });

  test('an echo request verifies against the dst option, and fails without it', () => {
    const w = writer({ kind: KIND_HELLO });
    const pkt = new Uint8Array(w.packetBytes);
    w.write(pkt, 0, DST, 0, 0, 0x12345678, 5);
    const ok = verifyEcho(pkt, OTHER, NET_ID, macKeyOf, { dst: DST });
    expect(ok).toEqual({ ok: true, type: 128, kind: 2, jobTag: TAG, targetIndex: 0x12345678n, sendTimeMs: 5 });
    expect(reason(verifyEcho(pkt, OTHER, NET_ID, macKeyOf))).toBe('mac');
    expect(reason(verifyEcho(pkt, OTHER, NET_ID, macKeyOf, { dst: OTHER }))).toBe('mac');
  });

  test('accepts a precomputed SipKey from macKeyOf', () => {
    const k = sipKey(macKeyOf(TAG));
    expect(reason(verifyEcho(reply(), DST, NET_ID, () => k))).toBe('ok');
  });

  test('any single-bit change of header (but the checksum), payload or source address fails', () => {
    const good = reply();
    expect(reason(verifyEcho(good, DST, NET_ID, macKeyOf))).toBe('ok');
    const positions = [...Array.from({ length: 16 }, (_, i) => i), ...Array.from({ length: 320 - 32 }, (_, i) => 32 + i)];
    // every bit, exhaustively (cheap), plus the source address through fast-check
    for (const bit of positions) {
      const pkt = good.slice();
      pkt[bit >> 3]! ^= 1 << (bit & 7);
      const r = reason(verifyEcho(pkt, DST, NET_ID, macKeyOf));
      if (r === 'ok') throw new Error(`flipping packet bit ${bit} still verifies`);
    }
    fc.assert(
      fc.property(fc.nat(127), (bit) => {
        const src = DST.slice();
        src[bit >> 3]! ^= 1 << (bit & 7);
        expect(reason(verifyEcho(good, src, NET_ID, macKeyOf))).toBe('mac');
      }),
    );
  });

  test('the checksum bytes and the contact string are not covered', () => {
    const w = writer({ contact: 'https://example.org/scan-info' });
    const pkt = reply(w);
    expect(echoContact(pkt)).toBe('https://example.org/scan-info');
    pkt[2] = 0xab; pkt[3] = 0xcd; // the kernel's checksum
    pkt[40] ^= 0xff;
    expect(reason(verifyEcho(pkt, DST, NET_ID, macKeyOf))).toBe('ok');
    expect(echoContact(reply())).toBeUndefined();
  });

  test('each malformed field gets its reason, without throwing', () => {
    const mutate = (f: (p: Uint8Array) => void, pkt = reply()) => {
      f(pkt);
      return reason(verifyEcho(pkt, DST, NET_ID, macKeyOf));
    };
    for (let n = 0; n < 40; n++) expect(reason(verifyEcho(reply().subarray(0, n), DST, NET_ID, macKeyOf))).toBe('short');
    expect(mutate((p) => (p[0] = 1))).toBe('type');
    expect(mutate((p) => (p[0] = 135))).toBe('type');
    expect(mutate((p) => (p[1] = 1))).toBe('code');
    expect(mutate((p) => (p[8] = 0x58))).toBe('magic');
    expect(mutate((p) => (p[12] = 2))).toBe('version');
    expect(mutate((p) => (p[13] = 0))).toBe('kind');
    expect(mutate((p) => (p[13] = 3))).toBe('kind');
    expect(mutate((p) => (p[15] ^= 1))).toBe('network');
    expect(mutate((p) => (p[5] ^= 1))).toBe('identifier');
    expect(mutate((p) => (p[7] ^= 1))).toBe('identifier');
    expect(mutate((p) => (p[19] ^= 1))).toBe('identifier'); // job tag no longer matches the identifier
    expect(mutate((p) => (p[27] ^= 1))).toBe('identifier'); // index no longer matches the sequence
    expect(mutate((p) => (p[39] ^= 0x80))).toBe('mac');
    // a reply from another address than the probed one
    expect(reason(verifyEcho(reply(), OTHER, NET_ID, macKeyOf))).toBe('mac');
    // another network
    expect(reason(verifyEcho(reply(), DST, NET_ID ^ 1, macKeyOf))).toBe('network');
  });

  test('a probe of another network with the same network id fails the MAC', () => {
    const otherKey = networkKeyBytes('other network');
    const w = new ProbeWriter({ networkId: NET_ID, jobTag: TAG, macKey: macKeyFor(otherKey, TAG) });
    expect(reason(verifyEcho(reply(w), DST, NET_ID, macKeyOf))).toBe('mac');
  });

  test('64 KiB of garbage and random packets never throw', () => {
    const garbage = new Uint8Array(65536);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 2654435761) >>> 24;
    expect(reason(verifyEcho(garbage, DST, NET_ID, macKeyOf))).not.toBe('ok');
    const huge = reply();
    const big = new Uint8Array(65536);
    big.set(huge);
    // a valid packet followed by a huge tail still verifies (the tail is the unauthenticated contact)
    expect(reason(verifyEcho(big, DST, NET_ID, macKeyOf))).toBe('ok');
    expect(echoContact(big)).toHaveLength(MAX_CONTACT_BYTES);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (p) => {
        expect(reason(verifyEcho(p, DST, NET_ID, macKeyOf))).not.toBe('ok');
      }),
      { numRuns: 300 },
    );
  });

  test('refuses address arguments that are not 16 bytes (a caller bug, not packet data)', () => {
    expect(() => verifyEcho(reply(), new Uint8Array(4), NET_ID, macKeyOf)).toThrow(RangeError);
    expect(() => verifyEcho(reply(), DST, NET_ID, macKeyOf, { dst: new Uint8Array(15) })).toThrow(RangeError);
  });
});

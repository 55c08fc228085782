import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { FRAME_HEADER_BYTES, FrameWriter } from '../../lib/core/frame.js';
import { ProbeWriter } from '../../lib/core/probe.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const FE80_1 = hex('fe80 0000 0000 0000 0000 0000 0000 0001');
const FE80_2 = hex('fe80 0000 0000 0000 0000 0000 0000 0002');
const SRC_MAC = hex('02 00 00 00 00 01');
const DST_MAC = hex('02 00 00 00 00 02');

/** Straightforward RFC 8200 §8.1 checksum: the pseudo-header built out in full, then RFC 1071's sum. */
function referenceChecksum(src: Uint8Array, dst: Uint8Array, message: Uint8Array): number {
  const m = Uint8Array.from(message);
  m[2] = 0;
  m[3] = 0;
  const p = new Uint8Array(40 + m.length + (m.length % 2));
  p.set(src, 0);
  p.set(dst, 16);
  new DataView(p.buffer).setUint32(32, m.length);
  p[39] = 58;
  p.set(m, 40);
  let sum = 0;
  for (let i = 0; i < p.length; i += 2) sum += p[i]! * 256 + p[i + 1]!;
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return 0xffff - sum;
}

const writer = (hopLimit = 64, source = FE80_1) => new FrameWriter({ source, sourceMac: SRC_MAC, destinationMac: DST_MAC, hopLimit });

describe('FrameWriter', () => {
  test('a hand-computed vector: echo request id 0x1234 seq 1, fe80::1 -> fe80::2', () => {
    // Sum: fe81 (src) + fe82 (dst) + 0008 (length) + 003a (next header) + 8000 + 0000 + 1234 + 0001 = 0x28f7a;
    // folded 0x8f7c; complement 0x7083.
    const message = hex('8000 0000 1234 0001');
    const frame = new Uint8Array(FRAME_HEADER_BYTES + 8);
    expect(writer(7).write(message, 0, 8, FE80_2, 0, frame, 0)).toBe(62);
    expect(Buffer.from(frame).toString('hex')).toBe(
      '020000000002' + '020000000001' + '86dd' + '60000000' + '0008' + '3a' + '07' + Buffer.from(FE80_1).toString('hex') + Buffer.from(FE80_2).toString('hex') + '80007083' + '12340001',
    );
  });

  test('a hand-computed odd-length vector: "abc" after the header', () => {
    // fe81 + fe82 + 000b + 003a + 8000 + 1234 + 0001 + 6162 + 6300 (padded) = 0x353df; folded 0x53e2; complement 0xac1d.
    const message = hex('8000 0000 1234 0001 616263');
    const frame = new Uint8Array(FRAME_HEADER_BYTES + 11);
    writer().write(message, 0, 11, FE80_2, 0, frame, 0);
    expect(frame[FRAME_HEADER_BYTES + 2]).toBe(0xac);
    expect(frame[FRAME_HEADER_BYTES + 3]).toBe(0x1d);
    expect(frame[19]).toBe(11);
  });

  test('matches the reference checksum for any addresses, message and offsets (odd lengths included)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.uint8Array({ minLength: 4, maxLength: 301 }),
        fc.nat(7),
        fc.nat(7),
        fc.integer({ min: 1, max: 255 }),
        (src, dst, message, gap, frameGap, hops) => {
          const messages = new Uint8Array(gap + message.length).fill(0xee);
          messages.set(message, gap);
          const addresses = new Uint8Array(gap + 16).fill(0xdd);
          addresses.set(dst, gap);
          const frame = new Uint8Array(frameGap + FRAME_HEADER_BYTES + message.length + 3).fill(0xcc);
          const n = writer(hops, src).write(messages, gap, message.length, addresses, gap, frame, frameGap);
          expect(n).toBe(FRAME_HEADER_BYTES + message.length);
          const f = frame.subarray(frameGap, frameGap + n);
          const ck = (f[56]! << 8) | f[57]!;
          expect(ck).toBe(referenceChecksum(src, dst, message));
          expect(f[21]).toBe(hops);
          expect((f[18]! << 8) | f[19]!).toBe(message.length);
          expect(Buffer.from(f.subarray(22, 38)).equals(Buffer.from(src))).toBe(true);
          expect(Buffer.from(f.subarray(38, 54)).equals(Buffer.from(dst))).toBe(true);
          // Bytes around the frame are untouched.
          expect(frame.subarray(0, frameGap).every((b) => b === 0xcc)).toBe(true);
          expect(frame.subarray(frameGap + n).every((b) => b === 0xcc)).toBe(true);
          // The whole ICMPv6 message plus pseudo-header sums to 0xffff: what the receiving kernel checks.
          const withSum = Uint8Array.from(f.subarray(FRAME_HEADER_BYTES));
          expect(referenceChecksum(src, dst, withSum)).toBe(ck);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('frames ProbeWriter probes with odd-length contact strings', () => {
    for (const contact of ['a', 'abc', 'scan@example.org', 'x'.repeat(199)]) {
      const probes = new ProbeWriter({ networkId: 7, jobTag: 0xabcdef01, macKey: new Uint8Array(16).fill(1), contact });
      const packet = new Uint8Array(probes.packetBytes);
      probes.write(packet, 0, FE80_2, 0, 1, 1234, 5678);
      expect(packet.length % 2).toBe(contact.length % 2); // 40 fixed bytes + the contact
      const frame = new Uint8Array(FRAME_HEADER_BYTES + packet.length);
      writer().write(packet, 0, packet.length, FE80_2, 0, frame, 0);
      expect((frame[56]! << 8) | frame[57]!).toBe(referenceChecksum(FE80_1, FE80_2, packet));
      expect(frame[FRAME_HEADER_BYTES]).toBe(128);
    }
  });

  test('setHopLimit changes the IPv6 hop limit of later frames only', () => {
    const w = writer(64);
    const frame = new Uint8Array(FRAME_HEADER_BYTES + 8);
    w.setHopLimit(3);
    expect(w.hopLimit).toBe(3);
    w.write(hex('8000 0000 0000 0000'), 0, 8, FE80_2, 0, frame, 0);
    expect(frame[21]).toBe(3);
    expect(() => w.setHopLimit(0)).toThrow('hopLimit must be an integer from 1 to 255, got 0');
    expect(() => w.setHopLimit(256)).toThrow(RangeError);
    expect(w.hopLimit).toBe(3);
  });

  test('refuses malformed options', () => {
    const ok = { source: FE80_1, sourceMac: SRC_MAC, destinationMac: DST_MAC, hopLimit: 64 };
    expect(() => new FrameWriter(null as never)).toThrow('FrameWriter options must be an object');
    expect(() => new FrameWriter({ ...ok, source: new Uint8Array(4) })).toThrow('source (IPv6 address) must be 16 bytes, got 4');
    expect(() => new FrameWriter({ ...ok, source: '::1' as never })).toThrow(TypeError);
    expect(() => new FrameWriter({ ...ok, sourceMac: new Uint8Array(8) })).toThrow('sourceMac must be 6 bytes, got 8');
    expect(() => new FrameWriter({ ...ok, destinationMac: [1, 2, 3, 4, 5, 6] as never })).toThrow('destinationMac must be a Uint8Array of 6 bytes');
    expect(() => new FrameWriter({ ...ok, hopLimit: 1.5 })).toThrow('hopLimit must be an integer from 1 to 255, got 1.5');
    expect(() => new FrameWriter({ ...ok, hopLimit: '64' as never })).toThrow('got string');
  });

  test('refuses messages, addresses and frames out of bounds, writing nothing', () => {
    const w = writer();
    const message = new Uint8Array(16);
    const frame = new Uint8Array(FRAME_HEADER_BYTES + 16).fill(9);
    expect(() => w.write(message, 0, 3, FE80_2, 0, frame, 0)).toThrow('messageBytes must be an integer from 4');
    expect(() => w.write(message, 0, 65536, FE80_2, 0, frame, 0)).toThrow('to 65535, got 65536');
    expect(() => w.write(message, 1, 16, FE80_2, 0, frame, 0)).toThrow('message bytes [1, 17) are not within the 16-byte message buffer');
    expect(() => w.write(message, -1, 8, FE80_2, 0, frame, 0)).toThrow(RangeError);
    expect(() => w.write(message, 0, 8, FE80_2, 1, frame, 0)).toThrow('destination bytes [1, 17) are not within the 16-byte address buffer');
    expect(() => w.write(message, 0, 16, FE80_2, 0, frame, 1)).toThrow('frame bytes [1, 71) are not within the 70-byte frame buffer');
    expect(() => w.write(message, 0, 16, FE80_2, 0, frame, 0.5)).toThrow(RangeError);
    expect(frame.every((b) => b === 9)).toBe(true);
  });
});

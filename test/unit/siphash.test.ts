import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { sipKey, siphash24, siphash24Word64, siphashBytes } from '../../lib/core/siphash.js';

// The reference implementation's vectors.h (vectors_sip64): key 00..0f, message 00..n-1, output bytes.
const VECTORS = [
  '310e0edd47db6f72', 'fd67dc93c539f874', '5a4fa9d909806c0d', '2d7efbd796666785',
  'b7877127e09427cf', '8da699cd64557618', 'cee3fe586e46c9cb', '37d1018bf50002ab',
  '6224939a79f5f593', 'b0e4a90bdf82009e', 'f3b9dd94c5bb5d7a', 'a7ad6b22462fb3f4',
  'fbe50e86bc8f1e75', '903d84c02756ea14', 'eef27a8e90ca23f7', 'e545be4961ca29a1',
  'db9bc2577fcc2a3f', '9447be2cf5e99a69', '9cd38d96f0b3c14b', 'bd6179a71dc96dbb',
  '98eea21af25cd6be', 'c7673b2eb0cbf2d0', '883ea3e395675393', 'c8ce5ccd8c030ca8',
  '94af49f6c650adb8', 'eab8858ade92e1bc', 'f315bb5bb835d817', 'adcf6b0763612e2f',
  'a5c91da7acaa4dde', '716595876650a2a6', '28ef495c53a387ad', '42c341d8fa92d832',
  'ce7cf2722f512771', 'e37859f94623f3a7', '381205bb1ab0e012', 'ae97a10fd434e015',
  'b4a31508beff4d31', '81396229f0907902', '4d0cf49ee5d4dcca', '5c73336a76d8bf9a',
  'd0a704536ba93e0e', '925958fcd6420cad', 'a915c29bc8067318', '952b79f3bc0aa6d4',
  'f21df2e41d4535f9', '87577519048f53a9', '10a56cf5dfcd9adb', 'eb75095ccd986cd0',
  '51a9cb9ecba312e6', '96afadfc2ce666c7', '72fe52975a4364ee', '5a1645b276d592a1',
  'b274cb8ebf87870a', '6f9bb4203de7b381', 'eaecb2a30b22a87f', '9924a43cc1315724',
  'bd838d3aafbf8db7', '0b1a2a3265d51aea', '135079a3231ce660', '932b2846e4d70666',
  'e1915f5cb1eca46c', 'f325965ca16d629f', '575ff28e60381be5', '724506eb4c328a95',
];

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const seq = (n: number) => Uint8Array.from({ length: n }, (_, i) => i);
const KEY_BYTES = seq(16);

// An independent, deliberately naive SipHash-2-4 on BigInt, straight from the paper.
function referenceSiphash(key: Uint8Array, msg: Uint8Array): bigint {
  const M = (1n << 64n) - 1n;
  const le = (b: Uint8Array, o: number, n: number) => {
    let x = 0n;
    for (let i = n - 1; i >= 0; i--) x = (x << 8n) | BigInt(b[o + i]!);
    return x;
  };
  const rotl = (x: bigint, n: bigint) => ((x << n) | (x >> (64n - n))) & M;
  const k0 = le(key, 0, 8), k1 = le(key, 8, 8);
  let v0 = k0 ^ 0x736f6d6570736575n, v1 = k1 ^ 0x646f72616e646f6dn;
  let v2 = k0 ^ 0x6c7967656e657261n, v3 = k1 ^ 0x7465646279746573n;
  const round = () => {
    v0 = (v0 + v1) & M; v1 = rotl(v1, 13n); v1 ^= v0; v0 = rotl(v0, 32n);
    v2 = (v2 + v3) & M; v3 = rotl(v3, 16n); v3 ^= v2;
    v0 = (v0 + v3) & M; v3 = rotl(v3, 21n); v3 ^= v0;
    v2 = (v2 + v1) & M; v1 = rotl(v1, 17n); v1 ^= v2; v2 = rotl(v2, 32n);
  };
  const blocks: bigint[] = [];
  const full = Math.floor(msg.length / 8);
  for (let i = 0; i < full; i++) blocks.push(le(msg, 8 * i, 8));
  blocks.push((BigInt(msg.length & 0xff) << 56n) | le(msg, 8 * full, msg.length - 8 * full));
  for (const m of blocks) {
    v3 ^= m; round(); round(); v0 ^= m;
  }
  v2 ^= 0xffn;
  round(); round(); round(); round();
  return v0 ^ v1 ^ v2 ^ v3;
}

const toBigint = (h: Uint32Array) => (BigInt(h[1]!) << 32n) | BigInt(h[0]!);

describe('siphash24', () => {
  const key = sipKey(KEY_BYTES);

  test('all 64 vectors of the reference implementation', () => {
    expect(VECTORS).toHaveLength(64);
    for (let n = 0; n < 64; n++) expect([n, hex(siphashBytes(key, seq(n)))]).toEqual([n, VECTORS[n]]);
  });

  test('the BigInt reference implementation agrees with the vectors (so it is a valid oracle)', () => {
    for (const n of [0, 1, 7, 8, 9, 15, 16, 63]) {
      const le = Buffer.alloc(8);
      le.writeBigUInt64LE(referenceSiphash(KEY_BYTES, seq(n)));
      expect(le.toString('hex')).toBe(VECTORS[n]);
    }
  });

  test('agrees with the BigInt reference on random keys, messages and sub-ranges', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.uint8Array({ maxLength: 300 }),
        fc.nat(20),
        fc.nat(20),
        (k, msg, cutA, cutB) => {
          const offset = Math.min(cutA, msg.length);
          const length = Math.max(0, msg.length - offset - cutB);
          const got = siphash24(sipKey(k), msg, offset, length);
          expect(toBigint(got)).toBe(referenceSiphash(k, msg.subarray(offset, offset + length)));
        },
      ),
      { numRuns: 300 },
    );
  });

  test('writes into the given out array and returns it', () => {
    const out = new Uint32Array(2);
    expect(siphash24(key, seq(15), 0, 15, out)).toBe(out);
    expect(toBigint(out)).toBe(0xa129ca6149be45e5n);
  });

  test('an offset range hashes exactly those bytes', () => {
    const buf = new Uint8Array(40).fill(0xee);
    buf.set(seq(20), 7);
    expect(toBigint(siphash24(key, buf, 7, 20))).toBe(toBigint(siphash24(key, seq(20))));
  });

  test('refuses ranges outside the message', () => {
    expect(() => siphash24(key, seq(8), 4, 5)).toThrow(RangeError);
    expect(() => siphash24(key, seq(8), -1, 2)).toThrow(RangeError);
    expect(() => siphash24(key, seq(8), 9)).toThrow(RangeError);
  });

  test('siphash24Word64 equals siphash24 on the same 8 little-endian bytes', () => {
    const out = new Uint32Array(2);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.nat(0xffffffff), fc.nat(0xffffffff), (k, lo, hi) => {
        const sk = sipKey(k);
        const bytes = Buffer.alloc(8);
        bytes.writeUInt32LE(lo, 0);
        bytes.writeUInt32LE(hi, 4);
        siphash24Word64(sk, lo, hi, out);
        expect(Array.from(out)).toEqual(Array.from(siphash24(sk, new Uint8Array(bytes))));
      }),
      { numRuns: 500 },
    );
    // Vector 8 of the reference is the 8-byte message 00..07.
    siphash24Word64(key, 0x03020100, 0x07060504, out);
    expect(toBigint(out)).toBe(0x93f5f5799a932462n);
  });
});

describe('sipKey', () => {
  test('reads k0 and k1 little-endian', () => {
    expect(Array.from(sipKey(KEY_BYTES))).toEqual([0x03020100, 0x07060504, 0x0b0a0908, 0x0f0e0d0c]);
  });

  test('refuses keys that are not exactly 16 bytes', () => {
    for (const n of [0, 8, 15, 17, 32]) expect(() => sipKey(new Uint8Array(n))).toThrow(/exactly 16 bytes/);
    expect(() => sipKey('0123456789abcdef' as unknown as Uint8Array)).toThrow(RangeError);
  });
});

import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { Permutation } from '../../lib/core/permutation.js';
import { sipKey, siphash24, siphashBytes } from '../../lib/core/siphash.js';

const KEY = Uint8Array.from({ length: 16 }, (_, i) => i);
const KEY2 = Uint8Array.from({ length: 16 }, (_, i) => 0xf0 ^ (i * 7));
const KEY3 = new Uint8Array(16);

const toWords = (x: bigint) => Uint32Array.from([0n, 32n, 64n, 96n], (s) => Number((x >> s) & 0xffffffffn));
const fromWords = (w: Uint32Array) => w.reduceRight((acc, x) => (acc << 32n) | BigInt(x), 0n);

// An independent BigInt model of the documented construction (split, rounds, join, cycle-walk).
function reference(key: Uint8Array, size: bigint, p: bigint): bigint {
  if (size === 1n) return p;
  let b = 2;
  while (1n << BigInt(b) < size) b += 2;
  const w = BigInt(b / 2), m = (1n << w) - 1n;
  const k = sipKey(key);
  const rk = [0, 1, 2, 3].map((r) => {
    const half = (i: number) => siphashBytes(k, Uint8Array.of(0x57, 0x53, 0x50, r, b, i, 0, 0));
    return sipKey(Uint8Array.from([...half(0), ...half(1)]));
  });
  const f = (r: number, x: bigint) => {
    const msg = new Uint8Array(8);
    new DataView(msg.buffer).setBigUint64(0, x, true);
    return fromWords(siphash24(rk[r]!, msg)) & m;
  };
  let x = p;
  do {
    let l = x >> w, r = x & m;
    for (let i = 0; i < 4; i++) [l, r] = [r, l ^ f(i, r)];
    x = (l << w) | r;
  } while (x >= size);
  return x;
}

describe('Permutation', () => {
  test('is a bijection on [0, size) for every size 1..300 (exhaustive, three keys)', () => {
    const pos = new Uint32Array(4), out = new Uint32Array(4);
    for (const key of [KEY, KEY2, KEY3]) {
      for (let size = 1; size <= 300; size++) {
        const perm = new Permutation(key, BigInt(size));
        const seen = new Uint8Array(size);
        let bad = 0; // counted, not expect()ed per element: expect is too slow for ~45k calls
        for (let p = 0; p < size; p++) {
          pos[0] = p;
          perm.applyWords(pos, out);
          if ((out[1]! | out[2]! | out[3]!) !== 0 || out[0]! >= size) bad++;
          else seen[out[0]!]!++;
        }
        expect([size, bad, seen.every((c) => c === 1)]).toEqual([size, 0, true]);
        // inverse undoes it, checked on a few points per size to keep the test fast
        for (const p of [0, size >> 1, size - 1]) expect(perm.inverse(perm.apply(BigInt(p)))).toBe(BigInt(p));
      }
    }
  });

  test('size 1 is the identity', () => {
    const perm = new Permutation(KEY, 1n);
    expect(perm.apply(0n)).toBe(0n);
    expect(perm.inverse(0n)).toBe(0n);
  });

  const sizeAndPosition = (max: bigint) =>
    fc.bigInt({ min: 1n, max }).chain((size) => fc.tuple(fc.constant(size), fc.bigInt({ min: 0n, max: size - 1n })));

  for (const [label, max] of [['2^64', 1n << 64n], ['2^128', 1n << 128n]] as const) {
    test(`random sizes up to ${label}: inverse(apply(p)) = p, in range, applyWords agrees, matches the model`, () => {
      fc.assert(
        fc.property(sizeAndPosition(max), fc.uint8Array({ minLength: 16, maxLength: 16 }), ([size, p], key) => {
          const perm = new Permutation(key, size);
          const v = perm.apply(p);
          expect(v >= 0n && v < size).toBe(true);
          expect(perm.inverse(v)).toBe(p);
          const out = new Uint32Array(4);
          perm.applyWords(toWords(p), out);
          expect(fromWords(out)).toBe(v);
          expect(v).toBe(reference(key, size, p));
        }),
        { numRuns: 200 },
      );
    });
  }

  test('every half width 1..64 round-trips and matches the model (sizes 2^b and 2^(b-1)+1)', () => {
    for (let b = 2; b <= 128; b += 2) {
      for (const size of [1n << BigInt(b), (1n << BigInt(b - 1)) + 1n]) {
        const perm = new Permutation(KEY2, size);
        for (const p of [0n, 1n, size - 1n, size / 3n]) {
          const v = perm.apply(p);
          expect(v < size).toBe(true);
          expect(v).toBe(reference(KEY2, size, p));
          expect(perm.inverse(v)).toBe(p);
        }
      }
    }
  });

  test('applyWords may write its result over its input', () => {
    const perm = new Permutation(KEY, 1n << 100n);
    const w = toWords(123456789012345678901234567n);
    const expected = perm.apply(123456789012345678901234567n);
    perm.applyWords(w, w);
    expect(fromWords(w)).toBe(expected);
  });

  test('different keys give different orders', () => {
    const a = new Permutation(KEY, 1000n), b = new Permutation(KEY2, 1000n);
    const first = (p: Permutation) => Array.from({ length: 20 }, (_, i) => p.apply(BigInt(i)));
    expect(first(a)).not.toEqual(first(b));
    // and the same key gives the same order
    expect(first(a)).toEqual(first(new Permutation(KEY, 1000n)));
  });

  test('known answers (pinned for refactors and the GPU port)', () => {
    const pin = (size: bigint, ps: bigint[]) => ps.map((p) => new Permutation(KEY, size).apply(p).toString(16));
    expect(pin(10n, [0n, 1n, 9n])).toEqual(KNOWN[0]);
    expect(pin(1n << 16n, [0n, 1n, 0xffffn])).toEqual(KNOWN[1]);
    expect(pin(1n << 64n, [0n, 1n, (1n << 64n) - 1n])).toEqual(KNOWN[2]);
    expect(pin(1n << 128n, [0n, 1n, (1n << 128n) - 1n])).toEqual(KNOWN[3]);
  });

  test('the first 1000 outputs for size 2^16 spread over the 16 top-nibble buckets', () => {
    for (const key of [KEY, KEY2, KEY3]) {
      const perm = new Permutation(key, 1n << 16n);
      const buckets = new Array<number>(16).fill(0);
      for (let p = 0n; p < 1000n; p++) buckets[Number(perm.apply(p) >> 12n)]!++;
      // Expected 62.5 each; chi-square with 15 degrees of freedom is < 50 with overwhelming probability.
      const chi = buckets.reduce((acc, c) => acc + (c - 62.5) ** 2 / 62.5, 0);
      expect(chi).toBeLessThan(50);
      expect(Math.min(...buckets)).toBeGreaterThan(25);
    }
  });

  test('refuses bad sizes, keys and out-of-range positions', () => {
    expect(() => new Permutation(KEY, 0n)).toThrow(RangeError);
    expect(() => new Permutation(KEY, -5n)).toThrow(RangeError);
    expect(() => new Permutation(KEY, (1n << 128n) + 1n)).toThrow(RangeError);
    expect(() => new Permutation(KEY, 10 as unknown as bigint)).toThrow(RangeError);
    expect(() => new Permutation(new Uint8Array(15), 10n)).toThrow(RangeError);
    expect(() => new Permutation(new Uint8Array(32), 10n)).toThrow(RangeError);
    const perm = new Permutation(KEY, 10n);
    expect(() => perm.apply(10n)).toThrow(RangeError);
    expect(() => perm.apply(-1n)).toThrow(RangeError);
    expect(() => perm.inverse(10n)).toThrow(RangeError);
    expect(() => perm.apply(1n << 200n)).toThrow(RangeError);
    expect(() => perm.applyWords(toWords(10n), new Uint32Array(4))).toThrow(RangeError);
    expect(() => perm.applyWords(toWords(1n << 96n), new Uint32Array(4))).toThrow(RangeError);
    const full = new Permutation(KEY, 1n << 128n);
    expect(() => full.apply(1n << 128n)).toThrow(RangeError);
  });
});

// Key 00..0f; outputs (hex) for positions [0, 1, size-1]; they agree with the BigInt model above.
const KNOWN: string[][] = [
  ['4', '5', '9'],
  ['a7e5', 'cd26', '6280'],
  ['9fddba424df0f501', '905a4c4689384b1a', 'bca324edf5c7db69'],
  ['f3b20425c8b28e4c3018d972e7b89527', 'dca5876ca9c15f295eb77dc13b81fa96', '327ec65b8a3de7e3704e2ae982597a93'],
];

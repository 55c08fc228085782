import { describe, expect, test } from '@jest/globals';
import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import { jobTagHex, jobTagOf, macKeyFor, networkIdOf, networkKeyBytes, permutationKeyFor } from '../../lib/core/keys.js';

// RFC 5869 written out with HMAC, to pin the documented derivation independently of hkdfSync.
function hkdf(ikm: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  const prk = createHmac('sha256', 'widescan').update(ikm).digest();
  let t = Buffer.alloc(0);
  const okm: Buffer[] = [];
  for (let i = 1; okm.length * 32 < length; i++) {
    t = createHmac('sha256', prk).update(Buffer.concat([t, info, Buffer.of(i)])).digest();
    okm.push(t);
  }
  return new Uint8Array(Buffer.concat(okm).subarray(0, length));
}

const NET = networkKeyBytes('correct horse battery staple');

describe('networkKeyBytes', () => {
  test('UTF-8 for strings, a copy for bytes', () => {
    expect(Buffer.from(networkKeyBytes('ü')).toString('hex')).toBe('c3bc');
    const raw = Uint8Array.of(1, 2, 3);
    const copy = networkKeyBytes(raw);
    expect(Array.from(copy)).toEqual([1, 2, 3]);
    raw[0] = 9;
    expect(copy[0]).toBe(1);
  });

  test('refuses empty, oversized and non-string secrets', () => {
    expect(() => networkKeyBytes('')).toThrow(/empty/);
    expect(() => networkKeyBytes(new Uint8Array(0))).toThrow(/empty/);
    expect(() => networkKeyBytes('x'.repeat(4097))).toThrow(/4097 bytes/);
    expect(() => networkKeyBytes('é'.repeat(2049))).toThrow(/4098 bytes/);
    expect(networkKeyBytes('x'.repeat(4096))).toHaveLength(4096);
    expect(() => networkKeyBytes(42 as unknown as string)).toThrow(TypeError);
  });
});

describe('networkIdOf', () => {
  test('is the documented HKDF, 16 bits big-endian, deterministic', () => {
    const b = hkdf(NET, Buffer.from('widescan/v1 network-id'), 2);
    expect(networkIdOf(NET)).toBe((b[0]! << 8) | b[1]!);
    expect(networkIdOf(networkKeyBytes('correct horse battery staple'))).toBe(networkIdOf(NET));
  });

  test('is 16-bit and depends on the key', () => {
    const ids = new Set<number>();
    for (let i = 0; i < 50; i++) {
      const id = networkIdOf(networkKeyBytes(`network ${i}`));
      expect(Number.isInteger(id) && id >= 0 && id <= 0xffff).toBe(true);
      ids.add(id);
    }
    expect(ids.size).toBeGreaterThan(45);
  });

  test('refuses a bad key', () => {
    expect(() => networkIdOf(new Uint8Array(0))).toThrow(/networkKeyBytes/);
    expect(() => networkIdOf('secret' as unknown as Uint8Array)).toThrow(RangeError);
  });
});

describe('jobTagOf', () => {
  test('is the first 4 bytes of SHA-256(uid), big-endian, unsigned', () => {
    const uid = '3f2a8c1e-8d7b-4c1a-9e0f-123456789abc';
    expect(jobTagOf(uid)).toBe(createHash('sha256').update(uid).digest().readUInt32BE(0));
    // SHA-256("abc") = ba7816bf…: a tag with the top bit set stays positive
    expect(jobTagOf('abc')).toBe(0xba7816bf);
    expect(jobTagHex(jobTagOf('abc'))).toBe('ba7816bf');
  });

  test('different uids give different tags', () => {
    const tags = new Set(Array.from({ length: 200 }, (_, i) => jobTagOf(`uid-${i}`)));
    expect(tags.size).toBe(200);
  });

  test('refuses an empty uid', () => {
    expect(() => jobTagOf('')).toThrow(/non-empty/);
    expect(() => jobTagOf(undefined as unknown as string)).toThrow(RangeError);
  });
});

describe('jobTagHex', () => {
  test('is 8 lowercase hex digits', () => {
    expect(jobTagHex(0)).toBe('00000000');
    expect(jobTagHex(0xabc)).toBe('00000abc');
    expect(jobTagHex(0xffffffff)).toBe('ffffffff');
  });
});

describe('macKeyFor', () => {
  test('is the documented HKDF with the tag big-endian in the info, 16 bytes', () => {
    const key = macKeyFor(NET, 0x01020304);
    expect(key).toHaveLength(16);
    const info = Buffer.concat([Buffer.from('widescan/v1 mac'), Buffer.of(1, 2, 3, 4)]);
    expect(Buffer.from(key).equals(Buffer.from(hkdf(NET, info, 16)))).toBe(true);
    expect(Buffer.from(macKeyFor(NET, 0x01020304)).equals(Buffer.from(key))).toBe(true);
  });

  test('differs per tag and per network', () => {
    fc.assert(
      fc.property(fc.nat(0xffffffff), fc.nat(0xffffffff), (a, b) => {
        fc.pre(a !== b);
        expect(Buffer.from(macKeyFor(NET, a)).equals(Buffer.from(macKeyFor(NET, b)))).toBe(false);
      }),
      { numRuns: 50 },
    );
    const other = networkKeyBytes('another network');
    expect(Buffer.from(macKeyFor(NET, 7)).equals(Buffer.from(macKeyFor(other, 7)))).toBe(false);
  });

  test('refuses bad tags and keys', () => {
    for (const tag of [-1, 2 ** 32, 1.5, Number.NaN]) expect(() => macKeyFor(NET, tag)).toThrow(/32-bit/);
    expect(() => macKeyFor(new Uint8Array(0), 1)).toThrow(RangeError);
    expect(() => macKeyFor(new Uint8Array(4097), 1)).toThrow(RangeError);
  });
});

describe('permutationKeyFor', () => {
  test('is the documented HKDF, 16 bytes, deterministic', () => {
    const key = permutationKeyFor('seed-1', 'global');
    const want = hkdf(Buffer.from('seed-1'), Buffer.from('widescan/v1 permutation global'), 16);
    expect(Buffer.from(key).equals(Buffer.from(want))).toBe(true);
    expect(Buffer.from(permutationKeyFor('seed-1', 'global')).equals(Buffer.from(key))).toBe(true);
  });

  test('labels and seeds give distinct keys, and none equals a MAC key', () => {
    const hexes = new Set<string>();
    for (const seed of ['a', 'b', 'correct horse battery staple']) {
      for (const label of ['global', 'target 0', 'target 1', '']) hexes.add(Buffer.from(permutationKeyFor(seed, label)).toString('hex'));
    }
    expect(hexes.size).toBe(12);
    expect(hexes.has(Buffer.from(macKeyFor(NET, 0)).toString('hex'))).toBe(false);
  });

  test('refuses empty or oversized seeds and oversized labels', () => {
    expect(() => permutationKeyFor('', 'global')).toThrow(/seed must be/);
    expect(() => permutationKeyFor('x'.repeat(4097), 'global')).toThrow(/seed must be/);
    expect(() => permutationKeyFor('s', 'l'.repeat(2000))).toThrow(/label is too long/);
    expect(() => permutationKeyFor(1 as unknown as string, 'global')).toThrow(TypeError);
  });
});

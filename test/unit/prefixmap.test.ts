import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import {
  type Prefix,
  formatPrefix,
  makePrefix,
  parsePrefix,
  prefixContains,
  prefixCovers,
  prefixLast,
} from '../../lib/core/cidr.js';
import { ADDRESS_MAX, parseAddress } from '../../lib/core/ipv6.js';
import { PrefixMap } from '../../lib/core/prefixmap.js';

const P = parsePrefix;
const A = parseAddress;
const show = <V>(es: Array<{ prefix: Prefix; value: V }>): Array<[string, V]> =>
  es.map((e) => [formatPrefix(e.prefix), e.value]);

function sample(): PrefixMap<string> {
  const m = new PrefixMap<string>();
  const texts = ['2001:db8::/32', '::/0', '2001:db8:1::/48', '2001:db8:1:2::/64', 'fe80::/10', '2001:db8:1:2::1/128'];
  for (const text of texts) m.set(P(text), text);
  return m;
}

describe('PrefixMap', () => {
  test('empty map', () => {
    const m = new PrefixMap<number>();
    expect(m.size).toBe(0);
    expect(m.lookup(1n)).toBeUndefined();
    expect(m.get(P('::/0'))).toBeUndefined();
    expect(m.entries()).toEqual([]);
    expect(m.overlapping(P('::/0'))).toEqual([]);
  });

  test('set, get (exact only) and replace', () => {
    const m = sample();
    expect(m.size).toBe(6);
    expect(m.get(P('2001:db8::/32'))).toBe('2001:db8::/32');
    expect(m.get(P('2001:db8::/33'))).toBeUndefined();
    expect(m.get(P('2001:db9::/32'))).toBeUndefined();
    m.set(P('2001:db8::/32'), 'replaced');
    expect(m.size).toBe(6);
    expect(m.get(P('2001:db8::/32'))).toBe('replaced');
    expect(m.lookup(A('2001:db8::5'))?.value).toBe('replaced');
  });

  test('undefined and falsy values are stored, not mistaken for misses', () => {
    const m = new PrefixMap<number | undefined>();
    m.set(P('2001:db8::/32'), undefined);
    m.set(P('::/0'), 0);
    expect(m.size).toBe(2);
    expect(m.lookup(A('2001:db8::1'))).toEqual({ prefix: P('2001:db8::/32'), value: undefined });
    expect(m.lookup(A('2001:db9::1'))).toEqual({ prefix: P('::/0'), value: 0 });
  });

  test('lookup finds the longest match', () => {
    const m = sample();
    expect(m.lookup(A('2001:db8:1:2::1'))?.value).toBe('2001:db8:1:2::1/128');
    expect(m.lookup(A('2001:db8:1:2::2'))?.value).toBe('2001:db8:1:2::/64');
    expect(m.lookup(A('2001:db8:1:3::'))?.value).toBe('2001:db8:1::/48');
    expect(m.lookup(A('2001:db8:2::'))?.value).toBe('2001:db8::/32');
    expect(m.lookup(A('fe80::1'))?.value).toBe('fe80::/10');
    expect(m.lookup(A('febf:ffff::'))?.value).toBe('fe80::/10');
    expect(m.lookup(A('fec0::'))?.value).toBe('::/0');
    expect(m.lookup(0n)?.value).toBe('::/0');
    expect(m.lookup(ADDRESS_MAX)?.value).toBe('::/0');
    expect(m.lookup(A('2001:db8:1:2::1'))?.prefix).toEqual(P('2001:db8:1:2::1/128'));
  });

  test('lookup misses without a default route', () => {
    const m = new PrefixMap<string>();
    m.set(P('2001:db8::/32'), 'doc');
    expect(m.lookup(A('2001:db7:ffff:ffff:ffff:ffff:ffff:ffff'))).toBeUndefined();
    expect(m.lookup(A('2001:db9::'))).toBeUndefined();
  });

  test('entries are sorted by base then length', () => {
    expect(show(sample().entries()).map(([p]) => p)).toEqual([
      '::/0',
      '2001:db8::/32',
      '2001:db8:1::/48',
      '2001:db8:1:2::/64',
      '2001:db8:1:2::1/128',
      'fe80::/10',
    ]);
  });

  test('overlapping returns covering and inner entries, sorted', () => {
    const m = sample();
    expect(show(m.overlapping(P('2001:db8:1::/48'))).map(([p]) => p)).toEqual([
      '::/0',
      '2001:db8::/32',
      '2001:db8:1::/48',
      '2001:db8:1:2::/64',
      '2001:db8:1:2::1/128',
    ]);
    expect(show(m.overlapping(P('2001:db8:1:3::/64'))).map(([p]) => p)).toEqual([
      '::/0',
      '2001:db8::/32',
      '2001:db8:1::/48',
    ]);
    expect(show(m.overlapping(P('2001::/16'))).map(([p]) => p)).toEqual([
      '::/0',
      '2001:db8::/32',
      '2001:db8:1::/48',
      '2001:db8:1:2::/64',
      '2001:db8:1:2::1/128',
    ]);
    expect(m.overlapping(P('::/0'))).toHaveLength(6);
    expect(show(m.overlapping(P('fe80::/64'))).map(([p]) => p)).toEqual(['::/0', 'fe80::/10']);
  });

  test('handed-out entries cannot alter the map', () => {
    const m = sample();
    const hit = m.lookup(A('2001:db8::1'))!;
    expect(() => {
      (hit as { value: string }).value = 'tampered';
    }).toThrow(TypeError);
    expect(() => {
      (hit.prefix as { length: number }).length = 0;
    }).toThrow(TypeError);
    // Mutating the caller's prefix object after `set` does not move the entry either.
    const mine = { base: A('2001:db8:5::'), length: 48 };
    m.set(mine, 'mine');
    mine.length = 64;
    expect(m.get(P('2001:db8:5::/48'))).toBe('mine');
    expect(m.lookup(A('2001:db8::1'))?.value).toBe('2001:db8::/32');
  });

  test('rejects malformed prefixes and addresses', () => {
    const m = new PrefixMap<number>();
    expect(() => m.set({ base: 1n, length: 64 }, 1)).toThrow(RangeError);
    expect(() => m.set({ base: 0n, length: 129 }, 1)).toThrow(RangeError);
    expect(() => m.get({ base: -1n, length: 0 })).toThrow(RangeError);
    expect(() => m.overlapping({ base: 0n, length: 0.5 })).toThrow(RangeError);
    expect(() => m.lookup(-1n)).toThrow(RangeError);
    expect(() => m.lookup(1n << 128n)).toThrow(RangeError);
    expect(() => m.lookup(5 as unknown as bigint)).toThrow(RangeError);
    expect(m.size).toBe(0);
  });

  test('lookup is fast on a few dozen entries', () => {
    const m = new PrefixMap<number>();
    for (let i = 0; i < 40; i++) m.set(makePrefix(BigInt(0x2001_0db8 + i) << 96n, [32, 48, 56, 64][i % 4]!), i);
    const addrs = Array.from({ length: 1000 }, (_, i) => (BigInt(0x2001_0db8 + (i % 50)) << 96n) | BigInt(i));
    const start = performance.now();
    let hits = 0;
    for (let round = 0; round < 100; round++) for (const a of addrs) if (m.lookup(a) !== undefined) hits++;
    const elapsed = performance.now() - start;
    expect(hits).toBe(100 * 800);
    // 100k lookups; a bucketed map does them in tens of milliseconds. Generous for a shared machine.
    expect(elapsed).toBeLessThan(2000);
  });
});

describe('properties', () => {
  // Prefixes drawn around a few bases with few distinct lengths, so entries nest and collide often.
  const bases = [0n, A('2001:db8::'), A('2001:db8:1:2::'), A('fe80::'), ADDRESS_MAX];
  const prefixArb = fc
    .tuple(
      fc.constantFrom(...bases),
      fc.bigInt({ min: 0n, max: (1n << 80n) - 1n }),
      fc.oneof(fc.constantFrom(0, 8, 16, 32, 48, 64, 127, 128), fc.integer({ min: 0, max: 128 })),
    )
    .map(([b, noise, len]) => makePrefix((b ^ noise) & ADDRESS_MAX, len));
  const addrArb = fc.oneof(
    fc.bigInt({ min: 0n, max: ADDRESS_MAX }),
    fc.tuple(fc.constantFrom(...bases), fc.bigInt({ min: 0n, max: (1n << 80n) - 1n })).map(([b, n]) => b ^ n),
  );
  const entriesArb = fc.array(fc.tuple(prefixArb, fc.integer()), { maxLength: 40 });

  /** The reference: the map as a plain list where later sets win. */
  function reference(entries: Array<[Prefix, number]>): Map<string, { prefix: Prefix; value: number }> {
    const ref = new Map<string, { prefix: Prefix; value: number }>();
    for (const [prefix, value] of entries) ref.set(formatPrefix(prefix), { prefix, value });
    return ref;
  }

  test('lookup agrees with a brute-force longest match', () => {
    fc.assert(
      fc.property(entriesArb, fc.array(addrArb, { minLength: 20, maxLength: 20 }), (entries, addrs) => {
        const m = new PrefixMap<number>();
        for (const [p, v] of entries) m.set(p, v);
        const ref = [...reference(entries).values()];
        expect(m.size).toBe(ref.length);
        // Also probe each prefix's own first and last addresses, where off-by-one masks would show.
        const probes = [...addrs, ...ref.flatMap((e) => [e.prefix.base, prefixLast(e.prefix)])];
        for (const a of probes) {
          let best: { prefix: Prefix; value: number } | undefined;
          for (const e of ref) {
            if (prefixContains(e.prefix, a) && (best === undefined || e.prefix.length > best.prefix.length)) best = e;
          }
          expect(m.lookup(a)).toEqual(best);
        }
      }),
      { numRuns: 200 },
    );
  });

  test('get, entries and overlapping agree with the reference', () => {
    fc.assert(
      fc.property(entriesArb, prefixArb, (entries, query) => {
        const m = new PrefixMap<number>();
        for (const [p, v] of entries) m.set(p, v);
        const ref = reference(entries);
        expect(m.get(query)).toBe(ref.get(formatPrefix(query))?.value);
        const byPrefix = (a: { prefix: Prefix }, b: { prefix: Prefix }): number =>
          a.prefix.base < b.prefix.base ? -1 : a.prefix.base > b.prefix.base ? 1 : a.prefix.length - b.prefix.length;
        expect(m.entries()).toEqual([...ref.values()].sort(byPrefix));
        const expected = [...ref.values()]
          .filter((e) => prefixCovers(e.prefix, query) || prefixCovers(query, e.prefix))
          .sort(byPrefix);
        expect(m.overlapping(query)).toEqual(expected);
      }),
      { numRuns: 200 },
    );
  });
});

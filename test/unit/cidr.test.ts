import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import {
  type Prefix,
  checkPrefix,
  comparePrefixes,
  formatPrefix,
  makePrefix,
  parsePrefix,
  prefixContains,
  prefixCovers,
  prefixLast,
  prefixMask,
  prefixSize,
  prefixesOverlap,
  rangeToPrefixes,
  subtractPrefixes,
} from '../../lib/core/cidr.js';
import { ADDRESS_MAX, AddressError, parseAddress } from '../../lib/core/ipv6.js';

const P = parsePrefix;
const A = parseAddress;
const texts = (ps: Prefix[]): string[] => ps.map(formatPrefix);

/** Random prefixes, biased to short bases so that nesting and overlap happen often. */
const prefixArb = fc
  .tuple(fc.bigInt({ min: 0n, max: ADDRESS_MAX }), fc.integer({ min: 0, max: 128 }))
  .map(([a, len]) => makePrefix(a, len));

describe('parsePrefix', () => {
  test.each([
    ['2001:db8::/32', A('2001:db8::'), 32, '2001:db8::/32'],
    ['2001:DB8:0000::/48', A('2001:db8::'), 48, '2001:db8::/48'],
    ['::/0', 0n, 0, '::/0'],
    ['::1/128', 1n, 128, '::1/128'],
    ['::ffff:0:0/96', A('::ffff:0:0'), 96, '::ffff:0.0.0.0/96'],
    ['::ffff:0.0.0.0/96', A('::ffff:0:0'), 96, '::ffff:0.0.0.0/96'],
    ['8000::/1', 1n << 127n, 1, '8000::/1'],
    ['fe80::/10', A('fe80::'), 10, 'fe80::/10'],
    [
      'ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128',
      ADDRESS_MAX,
      128,
      'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128',
    ],
  ])('%s', (text, base, length, canonical) => {
    const p = parsePrefix(text);
    expect(p).toEqual({ base, length });
    expect(formatPrefix(p)).toBe(canonical);
    expect(Object.isFrozen(p)).toBe(true);
  });

  test('host bits set: the message suggests the fix, verbatim', () => {
    expect(() => P('2001:db8::1/32')).toThrow(
      new AddressError('2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?'),
    );
    expect(() => P('2001:db8::1/32')).toThrow(AddressError);
    expect(() => P('::1/0')).toThrow('did you mean ::/0?');
    expect(() => P('fe80::1:0/111')).toThrow('did you mean fe80::/111?');
    expect(() => P('2001:DB8:1:2::/16')).toThrow('2001:DB8:1:2::/16 has host bits set; did you mean 2001::/16?');
  });

  test.each([
    ['', 'is empty'],
    ['2001:db8::', 'has no prefix length; write address/length'],
    ['2001:db8::1', 'has no prefix length'],
    ['2001:db8::/', 'empty prefix length'],
    ['2001:db8::/032', 'with a leading zero'],
    ['::/00', 'with a leading zero'],
    ['2001:db8::/+32', 'not a decimal integer from 0 to 128'],
    ['2001:db8::/-1', 'not a decimal integer'],
    ['2001:db8::/3.5', 'not a decimal integer'],
    ['2001:db8::/0x20', 'not a decimal integer'],
    ['2001:db8::/1e2', 'not a decimal integer'],
    ['2001:db8::/129', 'prefix length 129, more than 128'],
    ['2001:db8::/999', 'more than 128'],
    ['::/12345678901234567890', 'more than 128'],
    ['2001:db8::/32/64', "more than one '/'"],
    ['/32', 'is not a valid prefix: "" is empty'],
    ['2001:db8::g/32', '"2001:db8::g" contains "g", which is not a hex digit'],
    ['1.2.3.0/24', 'not an IPv6 address'],
    ['2001:db8:: /32', 'whitespace'],
    ['2001:db8::/32 ', 'whitespace'],
    ['fe80::%eth0/64', 'zone ids are not accepted'],
    ['[2001:db8::]/32', 'brackets'],
    ['1::2::/64', "'::' more than once"],
    [`${'0'.repeat(60)}/64`, 'longer than 49 characters'],
  ])('%j: %s', (text, fragment) => {
    let error: unknown;
    try {
      P(text);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(AddressError);
    expect((error as Error).message).toContain(fragment);
    expect((error as Error).message).toContain(JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text));
  });

  test('hostile input is rejected fast', () => {
    const start = performance.now();
    for (const text of ['/'.repeat(1e6), `::/${'9'.repeat(1e6)}`, `${'1:'.repeat(5e5)}/64`]) {
      expect(() => P(text)).toThrow(AddressError);
    }
    expect(() => P(7 as unknown as string)).toThrow(AddressError);
    expect(performance.now() - start).toBeLessThan(500);
  });

  test('property: formatPrefix∘parsePrefix round-trips', () => {
    fc.assert(
      fc.property(prefixArb, (p) => {
        expect(P(formatPrefix(p))).toEqual(p);
      }),
      { numRuns: 300 },
    );
  });
});

describe('makePrefix and checkPrefix', () => {
  test('masks host bits off', () => {
    expect(makePrefix(A('2001:db8::1'), 32)).toEqual(P('2001:db8::/32'));
    expect(makePrefix(ADDRESS_MAX, 0)).toEqual(P('::/0'));
    expect(makePrefix(ADDRESS_MAX, 128)).toEqual({ base: ADDRESS_MAX, length: 128 });
    expect(makePrefix(ADDRESS_MAX, 1)).toEqual(P('8000::/1'));
    expect(makePrefix(A('fe80::ffff'), 10)).toEqual(P('fe80::/10'));
  });

  test.each([
    [0n, -1],
    [0n, 129],
    [0n, 1.5],
    [0n, Number.NaN],
    [-1n, 64],
    [1n << 128n, 0],
  ])('makePrefix(%p, %p) is a RangeError', (a, len) => {
    expect(() => makePrefix(a, len)).toThrow(RangeError);
  });

  test('hand-built prefixes are checked', () => {
    expect(checkPrefix({ base: 0n, length: 0 })).toEqual({ base: 0n, length: 0 });
    expect(() => checkPrefix({ base: 1n, length: 64 })).toThrow(/host bits set; build it with makePrefix/);
    expect(() => formatPrefix({ base: 0n, length: 129 })).toThrow(RangeError);
    expect(() => prefixSize({ base: -1n, length: 128 })).toThrow(RangeError);
    expect(() => prefixContains({ base: 1n, length: 127 }, 1n)).toThrow(RangeError);
    expect(() => prefixMask(200)).toThrow(RangeError);
  });

  test('prefixMask', () => {
    expect(prefixMask(0)).toBe(0n);
    expect(prefixMask(128)).toBe(ADDRESS_MAX);
    expect(prefixMask(16)).toBe(0xffffn << 112n);
  });
});

describe('set relations', () => {
  test('size and last', () => {
    expect(prefixSize(P('::/0'))).toBe(1n << 128n);
    expect(prefixSize(P('::1/128'))).toBe(1n);
    expect(prefixSize(P('2001:db8::/32'))).toBe(1n << 96n);
    expect(prefixLast(P('::/0'))).toBe(ADDRESS_MAX);
    expect(prefixLast(P('2001:db8::/32'))).toBe(A('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff'));
    expect(prefixLast(P('::1/128'))).toBe(1n);
  });

  test('contains at the edges and outside the address space', () => {
    const p = P('2001:db8::/32');
    expect(prefixContains(p, A('2001:db8::'))).toBe(true);
    expect(prefixContains(p, A('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff'))).toBe(true);
    expect(prefixContains(p, A('2001:db8::') - 1n)).toBe(false);
    expect(prefixContains(p, A('2001:db9::'))).toBe(false);
    expect(prefixContains(P('::/0'), 0n)).toBe(true);
    expect(prefixContains(P('::/0'), ADDRESS_MAX)).toBe(true);
    expect(prefixContains(P('::/0'), -1n)).toBe(false);
    expect(prefixContains(P('::/0'), 1n << 128n)).toBe(false);
    expect(prefixContains(p, (1n << 128n) + A('2001:db8::'))).toBe(false);
  });

  test('covers and overlaps', () => {
    expect(prefixCovers(P('2001:db8::/32'), P('2001:db8:1::/48'))).toBe(true);
    expect(prefixCovers(P('2001:db8::/32'), P('2001:db8::/32'))).toBe(true);
    expect(prefixCovers(P('2001:db8:1::/48'), P('2001:db8::/32'))).toBe(false);
    expect(prefixCovers(P('2001:db8::/32'), P('2001:db9::/48'))).toBe(false);
    expect(prefixesOverlap(P('2001:db8:1::/48'), P('2001:db8::/32'))).toBe(true);
    expect(prefixesOverlap(P('2001:db8::/32'), P('2001:db8:1::/48'))).toBe(true);
    expect(prefixesOverlap(P('2001:db8::/33'), P('2001:db8:8000::/33'))).toBe(false);
  });

  test('property: contains agrees with a naive bit comparison', () => {
    const addrArb = fc.bigInt({ min: 0n, max: ADDRESS_MAX });
    fc.assert(
      fc.property(prefixArb, addrArb, fc.bigInt({ min: 0n, max: 1000n }), (p, a, near) => {
        // Half the time test an address near the prefix, where the edges are.
        for (const addr of [a, p.base + near - 500n, prefixLast(p) + near - 500n]) {
          if (addr < 0n || addr > ADDRESS_MAX) continue;
          const bits = (x: bigint): string => x.toString(2).padStart(128, '0').slice(0, p.length);
          expect(prefixContains(p, addr)).toBe(bits(addr) === bits(p.base));
        }
      }),
      { numRuns: 500 },
    );
  });

  test('property: covers/overlaps agree with interval arithmetic', () => {
    const pairArb = prefixArb.chain((p) =>
      fc.tuple(
        fc.constant(p),
        fc.oneof(prefixArb, fc.integer({ min: 0, max: 128 }).map((len) => makePrefix(p.base, len))),
      ),
    );
    fc.assert(
      fc.property(pairArb, ([a, b]) => {
        const [a0, a1, b0, b1] = [a.base, prefixLast(a), b.base, prefixLast(b)];
        expect(prefixCovers(a, b)).toBe(a0 <= b0 && b1 <= a1);
        expect(prefixesOverlap(a, b)).toBe(a0 <= b1 && b0 <= a1);
      }),
      { numRuns: 500 },
    );
  });

  test('comparePrefixes orders by base, then length', () => {
    const sorted = [P('2001:db8:1::/48'), P('2001:db8::/48'), P('2001:db8::/32'), P('::/0')].sort(comparePrefixes);
    expect(texts(sorted)).toEqual(['::/0', '2001:db8::/32', '2001:db8::/48', '2001:db8:1::/48']);
  });
});

/**
 * Why `ps` is not a minimal, exact, ordered cover of [first, last], or '' when it is. (Plain checks, not
 * one `expect` per prefix: these run over hundreds of prefixes per property case.)
 */
function coverProblem(ps: Prefix[], first: bigint, last: bigint): string {
  if (ps.length === 0) return 'empty';
  if (ps[0]!.base !== first) return 'does not start at first';
  if (prefixLast(ps[ps.length - 1]!) !== last) return 'does not end at last';
  for (let i = 1; i < ps.length; i++) {
    if (ps[i]!.base !== prefixLast(ps[i - 1]!) + 1n) return `gap or overlap before ${formatPrefix(ps[i]!)}`;
  }
  // Minimal: no prefix's parent fits in the range, so no two neighbours could merge into one.
  for (const p of ps) {
    if (p.length === 0) continue;
    const parent = makePrefix(p.base, p.length - 1);
    if (parent.base >= first && prefixLast(parent) <= last) return `${formatPrefix(p)} could be its parent`;
  }
  return '';
}

describe('rangeToPrefixes', () => {
  test.each([
    ['::', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', ['::/0']],
    ['::1', '::2', ['::1/128', '::2/128']],
    ['::', '8000::', ['::/1', '8000::/128']],
    ['::1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', null],
    ['2001:db8::', '2001:db8::ff', ['2001:db8::/120']],
    ['2001:db8::1', '2001:db8::fe', [
      '2001:db8::1/128', '2001:db8::2/127', '2001:db8::4/126', '2001:db8::8/125', '2001:db8::10/124',
      '2001:db8::20/123', '2001:db8::40/122', '2001:db8::80/122', '2001:db8::c0/123', '2001:db8::e0/124',
      '2001:db8::f0/125', '2001:db8::f8/126', '2001:db8::fc/127', '2001:db8::fe/128',
    ]],
    [
      'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
      'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
      ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128'],
    ],
  ])('[%s, %s]', (first, last, expected) => {
    const ps = rangeToPrefixes(A(first), A(last));
    expect(coverProblem(ps, A(first), A(last))).toBe('');
    if (expected !== null) expect(texts(ps)).toEqual(expected);
    else expect(ps).toHaveLength(128); // ::1/128, ::2/127, …, 8000::/1
  });

  test('rejects reversed and out-of-range bounds', () => {
    expect(() => rangeToPrefixes(2n, 1n)).toThrow(/range start ::2 is after its end ::1/);
    expect(() => rangeToPrefixes(-1n, 1n)).toThrow(RangeError);
    expect(() => rangeToPrefixes(0n, 1n << 128n)).toThrow(RangeError);
  });

  test('property: exact, ordered and minimal', () => {
    const boundArb = fc.oneof(
      fc.bigInt({ min: 0n, max: ADDRESS_MAX }),
      fc.bigInt({ min: 0n, max: 1n << 20n }),
      fc.bigInt({ min: ADDRESS_MAX - (1n << 20n), max: ADDRESS_MAX }),
    );
    fc.assert(
      fc.property(boundArb, boundArb, (x, y) => {
        const [first, last] = x <= y ? [x, y] : [y, x];
        const ps = rangeToPrefixes(first, last);
        expect(coverProblem(ps, first, last)).toBe('');
        expect(ps.length).toBeLessThanOrEqual(254);
      }),
      { numRuns: 300 },
    );
  });
});

describe('subtractPrefixes', () => {
  test.each([
    ['2001:db8::/32', [], ['2001:db8::/32']],
    ['2001:db8::/32', ['2001:db8::/32'], []],
    ['2001:db8::/32', ['2001::/16'], []],
    ['2001:db8::/32', ['2001:db9::/32', 'fe80::/10'], ['2001:db8::/32']],
    ['2001:db8::/32', ['2001:db8::/33'], ['2001:db8:8000::/33']],
    ['2001:db8::/32', ['2001:db8:8000::/33'], ['2001:db8::/33']],
    ['2001:db8::/30', ['2001:db9::/32'], ['2001:db8::/32', '2001:dba::/31']],
    ['2001:db8::/126', ['2001:db8::1/128', '2001:db8::2/128'], ['2001:db8::/128', '2001:db8::3/128']],
    // Nested and duplicate removals, in any order.
    ['2001:db8::/126', ['2001:db8::2/128', '2001:db8::/127', '2001:db8::1/128', '2001:db8::/127'], ['2001:db8::3/128']],
    ['::/0', ['::/1'], ['8000::/1']],
    ['::/0', ['::/128', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128'], null],
  ])('%s minus %j', (from, remove, expected) => {
    const out = subtractPrefixes(P(from), remove.map(P));
    if (expected !== null) expect(texts(out)).toEqual(expected);
    else {
      expect(coverProblem(out, 1n, ADDRESS_MAX - 1n)).toBe('');
      expect(out).toHaveLength(2 * 127);
    }
  });

  test('rejects malformed prefixes', () => {
    expect(() => subtractPrefixes({ base: 1n, length: 64 }, [])).toThrow(RangeError);
    expect(() => subtractPrefixes(P('::/0'), [{ base: 0n, length: 129 }])).toThrow(RangeError);
  });

  /** `from` and removals mostly inside or around it, at all depths. */
  const caseArb = prefixArb.chain((from) => {
    const near = fc
      .tuple(
        fc.bigInt({ min: 0n, max: prefixSize(from) - 1n }),
        fc.integer({ min: Math.max(0, from.length - 2), max: 128 }),
      )
      .map(([offset, len]) => makePrefix(from.base + offset, len));
    // Short removals in deep prefixes are often the whole of `from`; keep them rare.
    const removal = fc.oneof({ weight: 8, arbitrary: near }, { weight: 1, arbitrary: prefixArb });
    return fc.tuple(
      fc.constant(from),
      fc.array(removal, { maxLength: 8 }),
      fc.array(fc.bigInt({ min: 0n, max: prefixSize(from) - 1n }), { minLength: 20, maxLength: 20 }),
    );
  });

  test('property: disjoint from removals, exact together with them, sorted and minimal', () => {
    fc.assert(
      fc.property(caseArb, ([from, remove, offsets]) => {
        const out = subtractPrefixes(from, remove);
        // Inside `from`, disjoint from every removed prefix, sorted without overlaps (plain checks: `out`
        // can hold hundreds of prefixes).
        expect(out.every((q) => prefixCovers(from, q) && !remove.some((r) => prefixesOverlap(q, r)))).toBe(true);
        expect(out.every((q, i) => i === 0 || q.base > prefixLast(out[i - 1]!))).toBe(true);
        // Sizes: result + (union of removals within `from`) = `from`. The union's size is the sum over the
        // outermost removals clipped to `from` (a duplicate counts once).
        const clipped = remove.map((r) => (prefixCovers(r, from) ? from : r)).filter((r) => prefixCovers(from, r));
        const outermost = clipped.filter(
          (r, i) => !clipped.some((o, j) => j !== i && prefixCovers(o, r) && (o.length < r.length || j < i)),
        );
        const removed = outermost.reduce((sum, r) => sum + prefixSize(r), 0n);
        expect(out.reduce((sum, q) => sum + prefixSize(q), 0n) + removed).toBe(prefixSize(from));
        // Membership of random addresses of `from`: in the result exactly when in no removal.
        for (const offset of offsets) {
          const addr = from.base + offset;
          expect(out.some((q) => prefixContains(q, addr))).toBe(!remove.some((r) => prefixContains(r, addr)));
        }
        // Minimal: each prefix's parent (inside `from`) overlaps a removal, or the two halves would merge.
        const mergeable = out.filter(
          (q) => q.length > from.length && !remove.some((r) => prefixesOverlap(makePrefix(q.base, q.length - 1), r)),
        );
        expect(mergeable.map(formatPrefix)).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});

import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { formatPrefix, makePrefix, parsePrefix, prefixCovers, prefixLast } from '../../lib/core/cidr.js';
import { ADDRESS_MAX, parseAddress } from '../../lib/core/ipv6.js';
import { type ScopeClass, SPECIAL_RANGES, classifyAddress, classifyPrefix } from '../../lib/core/special.js';

const P = parsePrefix;
const A = parseAddress;
const RANK: Record<ScopeClass, number> = { global: 0, nonGlobal: 1, never: 2 };

describe('SPECIAL_RANGES', () => {
  test.each([
    ['::/0', 'nonGlobal'],
    ['2000::/3', 'global'],
    ['::/128', 'never'],
    ['::1/128', 'never'],
    ['::ffff:0:0/96', 'never'],
    ['100::/64', 'never'],
    ['fe80::/10', 'never'],
    ['ff00::/8', 'never'],
    ['64:ff9b:1::/48', 'nonGlobal'],
    ['100:0:0:1::/64', 'nonGlobal'],
    ['2001::/23', 'nonGlobal'],
    ['2001:2::/48', 'nonGlobal'],
    ['2001:db8::/32', 'nonGlobal'],
    ['3fff::/20', 'nonGlobal'],
    ['5f00::/16', 'nonGlobal'],
    ['fc00::/7', 'nonGlobal'],
    ['2001:10::/28', 'nonGlobal'],
    ['2001:1::1/128', 'global'],
    ['2001:1::2/128', 'global'],
    ['2001:1::3/128', 'global'],
    ['2001:3::/32', 'global'],
    ['2001:4:112::/48', 'global'],
    ['2001:20::/28', 'global'],
    ['2001:30::/28', 'global'],
    ['2001::/32', 'global'],
  ])('%s is %s', (prefix, scope) => {
    const found = SPECIAL_RANGES.filter((r) => formatPrefix(r.prefix) === formatPrefix(P(prefix)));
    expect(found).toHaveLength(1);
    expect(found[0]!.scope).toBe(scope);
  });

  test('exactly the listed ranges, each named and referenced, none twice', () => {
    expect(SPECIAL_RANGES).toHaveLength(25);
    expect(new Set(SPECIAL_RANGES.map((r) => formatPrefix(r.prefix))).size).toBe(SPECIAL_RANGES.length);
    for (const r of SPECIAL_RANGES) {
      expect(r.name).not.toBe('');
      expect(r.reference).toMatch(/^RFC \d{4}$/);
    }
    const ref = (p: string): string | undefined => SPECIAL_RANGES.find((r) => formatPrefix(r.prefix) === p)?.reference;
    expect(ref('::1/128')).toBe('RFC 4291');
    expect(ref('fc00::/7')).toBe('RFC 4193');
    expect(ref('2001:db8::/32')).toBe('RFC 3849');
    expect(ref('100::/64')).toBe('RFC 6666');
  });

  test('cannot be modified at run time', () => {
    expect(Object.isFrozen(SPECIAL_RANGES)).toBe(true);
    expect(SPECIAL_RANGES.every((r) => Object.isFrozen(r) && Object.isFrozen(r.prefix))).toBe(true);
  });
});

describe('classifyAddress', () => {
  test.each([
    ['::', 'never', 'unspecified'],
    ['::1', 'never', 'loopback'],
    ['::2', 'nonGlobal', 'outside 2000::/3, not global unicast'],
    ['::ffff:192.0.2.1', 'never', 'IPv4-mapped'],
    ['100::1', 'never', 'discard-only'],
    ['100:0:0:1::5', 'nonGlobal', 'dummy prefix'],
    ['100:0:0:2::', 'nonGlobal', 'outside 2000::/3, not global unicast'],
    ['fe80::1', 'never', 'link-local'],
    ['febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'never', 'link-local'],
    ['fec0::1', 'nonGlobal', 'outside 2000::/3, not global unicast'],
    ['ff02::1', 'never', 'multicast'],
    ['fd00::1', 'nonGlobal', 'unique-local'],
    ['fc00::', 'nonGlobal', 'unique-local'],
    ['2001:db8::1', 'nonGlobal', 'documentation'],
    ['3fff::1', 'nonGlobal', 'documentation'],
    ['3fff:1000::', 'global', 'global unicast'],
    ['5f00::1', 'nonGlobal', 'SRv6 SIDs'],
    ['64:ff9b:1::1', 'nonGlobal', 'IPv4/IPv6 translation, local use'],
    ['2606:4700::1111', 'global', 'global unicast'],
    ['2000::', 'global', 'global unicast'],
    ['3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff', 'nonGlobal', 'documentation'],
    ['3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'global', 'global unicast'],
    ['4000::', 'nonGlobal', 'outside 2000::/3, not global unicast'],
    ['1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'nonGlobal', 'outside 2000::/3, not global unicast'],
    ['2001::1', 'global', 'Teredo'],
    ['2001:0:ffff::', 'global', 'Teredo'],
    ['2001:1::', 'nonGlobal', 'IETF protocol assignments'],
    ['2001:1::1', 'global', 'Port Control Protocol anycast'],
    ['2001:1::2', 'global', 'TURN anycast'],
    ['2001:1::3', 'global', 'DNS-SD service registration protocol anycast'],
    ['2001:1::4', 'nonGlobal', 'IETF protocol assignments'],
    ['2001:2::1', 'nonGlobal', 'benchmarking'],
    ['2001:3::1', 'global', 'AMT'],
    ['2001:4:112::1', 'global', 'AS112-v6'],
    ['2001:4:113::1', 'nonGlobal', 'IETF protocol assignments'],
    ['2001:10::1', 'nonGlobal', 'ORCHID (deprecated)'],
    ['2001:20::1', 'global', 'ORCHIDv2'],
    ['2001:30::1', 'global', 'drone remote ID entity tags (DETs)'],
    ['2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff', 'nonGlobal', 'IETF protocol assignments'],
    ['2001:200::', 'global', 'global unicast'],
  ])('%s → %s (%s)', (addr, scope, name) => {
    const r = classifyAddress(A(addr));
    expect(r.scope).toBe(scope);
    expect(r.name).toBe(name);
  });

  test('rejects addresses outside the address space', () => {
    expect(() => classifyAddress(-1n)).toThrow(RangeError);
    expect(() => classifyAddress(1n << 128n)).toThrow(RangeError);
  });
});

describe('classifyPrefix', () => {
  const names = (p: string): string[] => classifyPrefix(P(p)).ranges.map((r) => formatPrefix(r.prefix));

  test.each([
    ['2001:db8::/48', 'nonGlobal', ['2001:db8::/32']],
    ['2001:db8::/32', 'nonGlobal', ['2001:db8::/32']],
    ['fd00::/8', 'nonGlobal', ['fc00::/7']],
    ['2a00::/12', 'global', ['2000::/3']],
    ['::/0', 'never', ['::/128', '::1/128', '::ffff:0.0.0.0/96', '100::/64', 'fe80::/10', 'ff00::/8']],
    ['2001::/16', 'nonGlobal', ['2001::/23', '2001:2::/48', '2001:10::/28', '2001:db8::/32']],
    ['2001::/23', 'nonGlobal', ['2001::/23', '2001:2::/48', '2001:10::/28']],
    ['2001::/32', 'global', ['2001::/32']],
    ['2001:1::/126', 'nonGlobal', ['2001::/23']],
    ['2001:1::/127', 'nonGlobal', ['2001::/23']],
    ['2001:1::2/127', 'global', ['2001:1::2/128', '2001:1::3/128']],
    ['2001:1::1/128', 'global', ['2001:1::1/128']],
    ['2001:4:112::/48', 'global', ['2001:4:112::/48']],
    ['2001:4:112::/47', 'nonGlobal', ['2001::/23']],
    ['2000::/3', 'nonGlobal', ['2001::/23', '2001:2::/48', '2001:10::/28', '2001:db8::/32', '3fff::/20']],
    ['8000::/1', 'never', ['fe80::/10', 'ff00::/8']],
    ['fe80::/64', 'never', ['fe80::/10']],
    ['fe80::/10', 'never', ['fe80::/10']],
    ['ff02::1/128', 'never', ['ff00::/8']],
    ['::/127', 'never', ['::/128', '::1/128']],
    ['::/126', 'never', ['::/128', '::1/128']],
    ['::ffff:0:0/96', 'never', ['::ffff:0.0.0.0/96']],
    ['100::/63', 'never', ['100::/64']],
    ['100:0:0:1::/64', 'nonGlobal', ['100:0:0:1::/64']],
    ['3000::/4', 'nonGlobal', ['3fff::/20']],
    ['3fff:1000::/20', 'global', ['2000::/3']],
    ['4000::/2', 'nonGlobal', ['::/0', '5f00::/16']],
    ['2001:200::/23', 'global', ['2000::/3']],
  ])('%s → %s because of %j', (p, scope, ranges) => {
    expect(classifyPrefix(P(p)).scope).toBe(scope);
    expect(names(p)).toEqual(ranges);
  });

  test('rejects malformed prefixes', () => {
    expect(() => classifyPrefix({ base: 1n, length: 64 })).toThrow(RangeError);
  });

  test('answers quickly even for the whole address space', () => {
    const start = performance.now();
    for (let i = 0; i < 20; i++) classifyPrefix(P('::/0'));
    expect(performance.now() - start).toBeLessThan(1000);
  });

  test('property: the scope of a small prefix is the most restrictive scope of its addresses', () => {
    // Prefixes of at most 256 addresses placed at and around the edges of the special ranges, enumerated in full.
    const edges = SPECIAL_RANGES.flatMap((r) => [r.prefix.base, prefixLast(r.prefix), prefixLast(r.prefix) + 1n]);
    const prefixArb = fc
      .tuple(fc.constantFrom(...edges), fc.integer({ min: -300, max: 300 }), fc.integer({ min: 120, max: 128 }))
      .filter(([edge, delta]) => edge + BigInt(delta) >= 0n && edge + BigInt(delta) <= ADDRESS_MAX)
      .map(([edge, delta, len]) => makePrefix(edge + BigInt(delta), len));
    fc.assert(
      fc.property(prefixArb, (p) => {
        let worst: ScopeClass = 'global';
        const responsible = new Set<string>();
        for (let a = p.base; a <= prefixLast(p); a++) {
          const r = classifyAddress(a);
          if (RANK[r.scope] > RANK[worst]) {
            worst = r.scope;
            responsible.clear();
          }
          if (r.scope === worst) responsible.add(formatPrefix(r.prefix));
        }
        const got = classifyPrefix(p);
        expect(got.scope).toBe(worst);
        expect(new Set(got.ranges.map((r) => formatPrefix(r.prefix)))).toEqual(responsible);
      }),
      { numRuns: 150 },
    );
  });

  test('property: a prefix is at least as restrictive as any of its addresses and sub-prefixes', () => {
    const addrArb = fc.oneof(
      fc.bigInt({ min: 0n, max: ADDRESS_MAX }),
      fc
        .tuple(fc.constantFrom(...SPECIAL_RANGES.map((r) => r.prefix.base)), fc.bigInt({ min: 0n, max: 1n << 20n }))
        .map(([b, n]) => b + n),
    );
    fc.assert(
      fc.property(addrArb, fc.integer({ min: 0, max: 128 }), fc.integer({ min: 0, max: 128 }), (a, l1, l2) => {
        const outer = makePrefix(a, Math.min(l1, l2));
        const inner = makePrefix(a, Math.max(l1, l2));
        expect(prefixCovers(outer, inner)).toBe(true);
        const o = classifyPrefix(outer);
        expect(RANK[o.scope]).toBeGreaterThanOrEqual(RANK[classifyPrefix(inner).scope]);
        expect(RANK[o.scope]).toBeGreaterThanOrEqual(RANK[classifyAddress(a).scope]);
        expect(o.ranges.length).toBeGreaterThan(0);
        expect(o.ranges.every((r) => r.scope === o.scope)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});

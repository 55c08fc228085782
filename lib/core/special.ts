// The address-scope registry behind DESIGN.md "Safety": which addresses are never scannable (layer 1)
// and which are non-global, scannable only with `allowNonGlobal: true` (layer 2). The operator's
// blocklist (layer 3) lives elsewhere. A longest match over these ranges classifies any address.

import { type Prefix, comparePrefixes, parsePrefix, subtractPrefixes } from './cidr.js';
import { PrefixMap } from './prefixmap.js';

export type ScopeClass = 'never' | 'nonGlobal' | 'global';

export interface SpecialRange {
  readonly prefix: Prefix;
  readonly name: string;
  readonly scope: ScopeClass;
  readonly reference: string;
}

const range = (prefix: string, name: string, scope: ScopeClass, reference: string): SpecialRange =>
  Object.freeze({ prefix: parsePrefix(prefix), name, scope, reference });

export const SPECIAL_RANGES: readonly SpecialRange[] = Object.freeze([
  // The defaults every longer entry refines.
  range('::/0', 'outside 2000::/3, not global unicast', 'nonGlobal', 'RFC 4291'),
  range('2000::/3', 'global unicast', 'global', 'RFC 4291'),
  // Layer 1: never scannable.
  range('::/128', 'unspecified', 'never', 'RFC 4291'),
  range('::1/128', 'loopback', 'never', 'RFC 4291'),
  range('::ffff:0:0/96', 'IPv4-mapped', 'never', 'RFC 4291'),
  range('100::/64', 'discard-only', 'never', 'RFC 6666'),
  range('fe80::/10', 'link-local', 'never', 'RFC 4291'),
  range('ff00::/8', 'multicast', 'never', 'RFC 4291'),
  // Layer 2: IANA IPv6 Special-Purpose Address Registry entries that are not globally reachable.
  range('64:ff9b:1::/48', 'IPv4/IPv6 translation, local use', 'nonGlobal', 'RFC 8215'),
  range('100:0:0:1::/64', 'dummy prefix', 'nonGlobal', 'RFC 9780'),
  range('2001::/23', 'IETF protocol assignments', 'nonGlobal', 'RFC 2928'),
  range('2001:2::/48', 'benchmarking', 'nonGlobal', 'RFC 5180'),
  range('2001:db8::/32', 'documentation', 'nonGlobal', 'RFC 3849'),
  range('3fff::/20', 'documentation', 'nonGlobal', 'RFC 9637'),
  range('5f00::/16', 'SRv6 SIDs', 'nonGlobal', 'RFC 9602'),
  range('fc00::/7', 'unique-local', 'nonGlobal', 'RFC 4193'),
  range('2001:10::/28', 'ORCHID (deprecated)', 'nonGlobal', 'RFC 4843'),
  // Globally reachable registry entries inside 2001::/23, listed so the longest match says 'global'.
  range('2001:1::1/128', 'Port Control Protocol anycast', 'global', 'RFC 7723'),
  range('2001:1::2/128', 'TURN anycast', 'global', 'RFC 8155'),
  range('2001:1::3/128', 'DNS-SD service registration protocol anycast', 'global', 'RFC 9665'),
  range('2001:3::/32', 'AMT', 'global', 'RFC 7450'),
  range('2001:4:112::/48', 'AS112-v6', 'global', 'RFC 7535'),
  range('2001:20::/28', 'ORCHIDv2', 'global', 'RFC 7343'),
  range('2001:30::/28', 'drone remote ID entity tags (DETs)', 'global', 'RFC 9374'),
  // The registry leaves Teredo's reachability "N/A"; its addresses stand for real hosts, so global.
  range('2001::/32', 'Teredo', 'global', 'RFC 4380'),
]);

const SCOPE_MAP = new PrefixMap<SpecialRange>();
for (const r of SPECIAL_RANGES) SCOPE_MAP.set(r.prefix, r);

const RESTRICTION: Readonly<Record<ScopeClass, number>> = { global: 0, nonGlobal: 1, never: 2 };

/** The most specific special range containing `addr`; `::/0` guarantees there is one. */
export function classifyAddress(addr: bigint): SpecialRange {
  return SCOPE_MAP.lookup(addr)!.value;
}

/**
 * The most restrictive scope of any address in `p`, and the ranges that give addresses of `p` that
 * scope (in address order), e.g. to name them in an error.
 */
export function classifyPrefix(p: Prefix): { scope: ScopeClass; ranges: SpecialRange[] } {
  const found = SCOPE_MAP.overlapping(p);
  // The longest entry covering p (there is one: ::/0) decides every address of p that no entry inside
  // p claims; each entry inside p decides its addresses that no longer entry claims.
  const covering = found
    .filter((e) => e.prefix.length <= p.length)
    .reduce((best, e) => (e.prefix.length > best.prefix.length ? e : best));
  const inner = found.filter((e) => e.prefix.length > p.length);
  const candidates = [{ region: p, range: covering.value }];
  for (const e of inner) candidates.push({ region: e.prefix, range: e.value });

  // A range counts only if the longer entries inside its region leave part of it uncovered (classifying
  // is rare, so reusing the exact difference beats a cleverer count).
  const effective = candidates.filter(({ region }) => {
    const longer = inner.filter((e) => e.prefix.length > region.length).map((e) => e.prefix);
    return subtractPrefixes(region, longer).length > 0;
  });

  let scope: ScopeClass = 'global';
  for (const { range: r } of effective) if (RESTRICTION[r.scope] > RESTRICTION[scope]) scope = r.scope;
  const ranges = effective.filter(({ range: r }) => r.scope === scope).map(({ range: r }) => r);
  return { scope, ranges: ranges.sort((a, b) => comparePrefixes(a.prefix, b.prefix)) };
}

// CIDR prefixes over bigint addresses: parsing, set relations, and the range/difference covers that
// scope computation (job prefixes minus excludes minus blocklist) and index-range printing need.

import { ADDRESS_MAX, AddressError, formatAddress, parseAddress, quoteInput, rejectForeignSyntax } from './ipv6.js';

export interface Prefix {
  readonly base: bigint;
  readonly length: number;
}

/** Longest valid prefix text: a 45-character address, '/' and three digits. */
const MAX_TEXT_LENGTH = 49;

/** HOST_MASK[len] has the low 128−len bits set; NET_MASK[len] the top len bits. */
const HOST_MASK: readonly bigint[] = Array.from({ length: 129 }, (_, len) => (1n << BigInt(128 - len)) - 1n);
const NET_MASK: readonly bigint[] = HOST_MASK.map((host) => ADDRESS_MAX ^ host);

function checkLength(length: number): void {
  if (!Number.isInteger(length) || length < 0 || length > 128) {
    throw new RangeError(`prefix length ${String(length)} is not an integer from 0 to 128`);
  }
}

function checkAddress(a: bigint): void {
  if (typeof a !== 'bigint' || a < 0n || a > ADDRESS_MAX) {
    throw new RangeError(`address ${String(a)} is not a bigint in [0, 2^128)`);
  }
}

/** The mask of the top `length` bits, e.g. for bucketing addresses by prefix. */
export function prefixMask(length: number): bigint {
  checkLength(length);
  return NET_MASK[length]!;
}

/**
 * Throws a RangeError unless `p` is a well-formed prefix (length 0..128, base in range, no host bits);
 * guards the functions below against hand-built objects that `parsePrefix`/`makePrefix` would never return.
 */
export function checkPrefix(p: Prefix): Prefix {
  checkLength(p.length);
  checkAddress(p.base);
  if ((p.base & HOST_MASK[p.length]!) !== 0n) {
    throw new RangeError(
      `prefix ${formatAddress(p.base)}/${p.length} has host bits set; build it with makePrefix, which masks them off`,
    );
  }
  return p;
}

/** Order by base address, then by length (a covering prefix before the prefixes inside it). */
export function comparePrefixes(a: Prefix, b: Prefix): number {
  return a.base < b.base ? -1 : a.base > b.base ? 1 : a.length - b.length;
}

export function makePrefix(addr: bigint, length: number): Prefix {
  checkLength(length);
  checkAddress(addr);
  return Object.freeze({ base: addr & NET_MASK[length]!, length });
}

export function parsePrefix(text: string): Prefix {
  if (typeof text !== 'string') {
    throw new AddressError(`expected an IPv6 prefix as a string, got ${typeof text}`);
  }
  rejectForeignSyntax(text, 'prefix');
  const q = () => quoteInput(text); // only on the error path: quoting costs more than parsing
  if (text.length > MAX_TEXT_LENGTH) {
    throw new AddressError(`${q()} is longer than ${MAX_TEXT_LENGTH} characters, the longest IPv6 prefix text`);
  }
  const slash = text.indexOf('/');
  if (slash < 0) {
    throw new AddressError(
      `${q()} has no prefix length; write address/length, such as 2001:db8::/32 (or /128 for a single address)`,
    );
  }
  if (text.indexOf('/', slash + 1) >= 0) throw new AddressError(`${q()} has more than one '/'`);

  let base: bigint;
  try {
    base = parseAddress(text.slice(0, slash));
  } catch (e) {
    if (e instanceof AddressError) throw new AddressError(`${q()} is not a valid prefix: ${e.message}`);
    throw e;
  }

  const lenText = text.slice(slash + 1);
  if (lenText === '') throw new AddressError(`${q()} has an empty prefix length after '/'; expected 0 to 128`);
  let length = 0;
  for (let i = 0; i < lenText.length; i++) {
    const c = lenText.charCodeAt(i);
    if (c < 0x30 || c > 0x39) {
      throw new AddressError(`${q()} has prefix length "${lenText}", which is not a decimal integer from 0 to 128`);
    }
    length = length * 10 + (c - 0x30);
  }
  if (lenText.length > 1 && lenText[0] === '0') {
    throw new AddressError(`${q()} has prefix length "${lenText}" with a leading zero`);
  }
  if (length > 128) throw new AddressError(`${q()} has prefix length ${length}, more than 128`);

  const masked = base & NET_MASK[length]!;
  if (masked !== base) {
    throw new AddressError(`${text} has host bits set; did you mean ${formatAddress(masked)}/${length}?`);
  }
  return Object.freeze({ base, length });
}

export function formatPrefix(p: Prefix): string {
  checkPrefix(p);
  return `${formatAddress(p.base)}/${p.length}`;
}

/** Number of addresses in `p`: 2^(128−length). */
export function prefixSize(p: Prefix): bigint {
  checkPrefix(p);
  return HOST_MASK[p.length]! + 1n;
}

/** The highest address in `p`. */
export function prefixLast(p: Prefix): bigint {
  checkPrefix(p);
  return p.base | HOST_MASK[p.length]!;
}

/** Whether `addr` lies in `p`; false for anything outside [0, 2^128). */
export function prefixContains(p: Prefix, addr: bigint): boolean {
  checkPrefix(p);
  return addr >= p.base && addr <= (p.base | HOST_MASK[p.length]!);
}

/** Whether every address of `inner` lies in `outer` (a prefix covers itself). */
export function prefixCovers(outer: Prefix, inner: Prefix): boolean {
  checkPrefix(inner);
  return outer.length <= inner.length && prefixContains(outer, inner.base);
}

/** Prefixes either nest or are disjoint, so they overlap exactly when one covers the other. */
export function prefixesOverlap(a: Prefix, b: Prefix): boolean {
  return prefixCovers(a, b) || prefixCovers(b, a);
}

function bitLength(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length;
}

/** The fewest prefixes whose union is exactly [first, last] (inclusive), in address order. */
export function rangeToPrefixes(first: bigint, last: bigint): Prefix[] {
  checkAddress(first);
  checkAddress(last);
  if (first > last) {
    throw new RangeError(`range start ${formatAddress(first)} is after its end ${formatAddress(last)}`);
  }
  const out: Prefix[] = [];
  let cur = first;
  while (cur <= last) {
    // The largest block starting at cur: aligned (bounded by cur's trailing zero bits) and fitting the rest.
    const alignBits = cur === 0n ? 128 : bitLength(cur & -cur) - 1;
    const bits = Math.min(alignBits, bitLength(last - cur + 1n) - 1);
    out.push(makePrefix(cur, 128 - bits));
    cur += 1n << BigInt(bits);
  }
  return out;
}

/** The fewest prefixes, in address order, covering exactly the addresses of `from` outside every `remove`. */
export function subtractPrefixes(from: Prefix, remove: Prefix[]): Prefix[] {
  checkPrefix(from);
  // Prefixes nest or are disjoint, so each removal covers `from`, lies inside it, or misses it entirely.
  const inside: Prefix[] = [];
  for (const r of remove) {
    if (prefixCovers(r, from)) return [];
    if (prefixCovers(from, r)) inside.push(r);
  }
  inside.sort(comparePrefixes);
  // The gaps between removals are separated by removed addresses, so no prefix can span two of them and
  // the minimal cover of each gap together form the minimal cover of the difference.
  const out: Prefix[] = [];
  let next = from.base; // lowest address not yet emitted or removed
  for (const r of inside) {
    if (r.base > next) out.push(...rangeToPrefixes(next, r.base - 1n));
    const after = prefixLast(r) + 1n;
    if (after > next) next = after; // a removal nested in an earlier one must not move `next` back
  }
  const last = prefixLast(from);
  if (next <= last) out.push(...rangeToPrefixes(next, last));
  return out;
}

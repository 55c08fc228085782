// Longest-prefix-match map. Entries are bucketed by prefix length, longest first, each bucket a
// Map keyed by base address: a lookup costs one mask and one hash probe per distinct length in use,
// however many entries there are.

import { type Prefix, checkPrefix, comparePrefixes, prefixCovers, prefixMask } from './cidr.js';
import { ADDRESS_MAX } from './ipv6.js';

export interface PrefixEntry<V> {
  readonly prefix: Prefix;
  readonly value: V;
}

interface Bucket<V> {
  readonly length: number;
  readonly mask: bigint;
  readonly entries: Map<bigint, PrefixEntry<V>>;
}

const byPrefix = <V>(a: PrefixEntry<V>, b: PrefixEntry<V>): number => comparePrefixes(a.prefix, b.prefix);

export class PrefixMap<V> {
  /** Longest length first, so the first hit of a lookup is the longest match. */
  #buckets: Bucket<V>[] = [];
  #size = 0;

  /** Adds `p`, or replaces the value of an identical prefix. */
  set(p: Prefix, value: V): void {
    checkPrefix(p);
    let bucket = this.#buckets.find((b) => b.length === p.length);
    if (bucket === undefined) {
      bucket = { length: p.length, mask: prefixMask(p.length), entries: new Map() };
      this.#buckets.push(bucket);
      this.#buckets.sort((a, b) => b.length - a.length);
    }
    if (!bucket.entries.has(p.base)) this.#size++;
    // Frozen copies: lookups hand these out directly, and callers must not be able to alter the map.
    const prefix = Object.freeze({ base: p.base, length: p.length });
    bucket.entries.set(p.base, Object.freeze({ prefix, value }));
  }

  /** The value stored for exactly `p`. */
  get(p: Prefix): V | undefined {
    checkPrefix(p);
    return this.#buckets.find((b) => b.length === p.length)?.entries.get(p.base)?.value;
  }

  /** The entry with the longest prefix containing `addr`. */
  lookup(addr: bigint): PrefixEntry<V> | undefined {
    if (typeof addr !== 'bigint' || addr < 0n || addr > ADDRESS_MAX) {
      throw new RangeError(`address ${String(addr)} is not a bigint in [0, 2^128)`);
    }
    for (const bucket of this.#buckets) {
      const hit = bucket.entries.get(addr & bucket.mask);
      if (hit !== undefined) return hit;
    }
    return undefined;
  }

  /** Every entry that covers `p` or lies inside it, sorted by base then length. */
  overlapping(p: Prefix): PrefixEntry<V>[] {
    checkPrefix(p);
    const out: PrefixEntry<V>[] = [];
    for (const bucket of this.#buckets) {
      if (bucket.length < p.length) {
        const hit = bucket.entries.get(p.base & bucket.mask);
        if (hit !== undefined) out.push(hit);
      } else {
        for (const entry of bucket.entries.values()) if (prefixCovers(p, entry.prefix)) out.push(entry);
      }
    }
    return out.sort(byPrefix);
  }

  /** All entries, sorted by base then length. */
  entries(): PrefixEntry<V>[] {
    const out: PrefixEntry<V>[] = [];
    for (const bucket of this.#buckets) out.push(...bucket.entries.values());
    return out.sort(byPrefix);
  }

  get size(): number {
    return this.#size;
  }
}

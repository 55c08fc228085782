// The target space of DESIGN.md: a finite, ordered index space built from a job's `targets`, never
// materialised. index → address is pure; position → index is the job's keyed permutation, so any slice of the
// scan can be recomputed anywhere. Exclusions are resolved here, per block, into disjoint prefixes: their sizes
// give the exact planned `excluded` count for `full` and `lowbyte`, and the same prefixes are what the worker
// checks every generated address against, so the count and the check cannot disagree.

import { formatPrefix, makePrefix, prefixCovers, prefixesOverlap, prefixSize, subtractPrefixes, type Prefix } from './cidr.js';
import { permutationKeyFor } from './keys.js';
import { Permutation } from './permutation.js';
import { PrefixMap } from './prefixmap.js';
import { SPECIAL_RANGES } from './special.js';
import { bigintToWords, wordsToBigint } from './words.js';

export type Strategy = 'full' | 'lowbyte' | 'random';
export type ExclusionReason = 'never' | 'nonGlobal' | 'exclude' | 'blocklist';

export interface ExcludedRange {
  readonly prefix: Prefix;
  readonly reason: ExclusionReason;
  /** What the range is: "unique-local", "spec.exclude[2]", "blocklist". */
  readonly name: string;
}

export interface TargetBlockSpec {
  readonly prefix: Prefix;
  readonly strategy: Strategy;
  readonly subnetLength?: number;
  readonly hosts?: number;
  readonly budget?: number;
}

export interface ScopeRules {
  readonly allowNonGlobal: boolean;
  readonly exclude: readonly Prefix[];
  readonly blocklist: readonly Prefix[];
}

export interface TargetBlock extends TargetBlockSpec {
  /** Position of the block in `spec.targets`. */
  readonly ordinal: number;
  /** Number of indices in the block. */
  readonly size: number;
  /** First global index of the block. */
  readonly offset: number;
  /** Disjoint excluded prefixes inside the block's prefix. */
  readonly excludedRanges: readonly ExcludedRange[];
  /** Exact number of the block's indices that fall in `excludedRanges`; null for `random`, counted while scanning. */
  readonly plannedExcluded: number | null;
}

/** Why a block cannot be scanned at all; `compileJob` turns it into a field error. */
export class TargetError extends Error {
  constructor(readonly ordinal: number, readonly field: string, message: string) {
    super(message);
  }
}

const TWO32 = 2 ** 32;

/** ORs `value` (< 2^53) shifted left by `shift` bits into a big-endian 4-word address. */
function orShifted(words: Uint32Array, value: number, shift: number): void {
  orWord(words, value >>> 0, shift);
  const high = Math.floor(value / TWO32);
  if (high !== 0) orWord(words, high, shift + 32);
}

function orWord(words: Uint32Array, part: number, bit: number): void {
  if (bit >= 128) return;
  const k = bit >>> 5;
  const r = bit & 31;
  words[3 - k] |= part << r;
  if (r !== 0 && k < 3) words[2 - k] |= part >>> (32 - r);
}

/** The compiled block: everything the per-address path needs, precomputed. */
export class Block implements TargetBlock {
  readonly prefix: Prefix;
  readonly strategy: Strategy;
  readonly subnetLength?: number;
  readonly hosts?: number;
  readonly budget?: number;
  readonly baseWords: Uint32Array;
  readonly exclusions: PrefixMap<ExcludedRange> | null;
  readonly randomOrder: Permutation | null;
  private readonly pos = new Uint32Array(4);
  private readonly drawn = new Uint32Array(4);

  constructor(
    spec: TargetBlockSpec,
    readonly ordinal: number,
    readonly size: number,
    readonly offset: number,
    readonly excludedRanges: readonly ExcludedRange[],
    readonly plannedExcluded: number | null,
    seed: string,
  ) {
    this.prefix = spec.prefix;
    this.strategy = spec.strategy;
    if (spec.subnetLength !== undefined) this.subnetLength = spec.subnetLength;
    if (spec.hosts !== undefined) this.hosts = spec.hosts;
    if (spec.budget !== undefined) this.budget = spec.budget;
    this.baseWords = bigintToWords(spec.prefix.base);
    if (excludedRanges.length > 0) {
      this.exclusions = new PrefixMap();
      for (const range of excludedRanges) this.exclusions.set(range.prefix, range);
    } else {
      this.exclusions = null;
    }
    this.randomOrder = spec.strategy === 'random' ? new Permutation(permutationKeyFor(seed, `target/${ordinal}`), prefixSize(spec.prefix)) : null;
  }

  /** Writes the address of local index `j` as 4 big-endian words. */
  address(j: number, out: Uint32Array): void {
    out.set(this.baseWords);
    switch (this.strategy) {
      case 'full':
        orShifted(out, j, 0);
        return;
      case 'lowbyte': {
        const hosts = this.hosts!;
        const subnet = Math.floor(j / hosts);
        orShifted(out, subnet, 128 - this.subnetLength!);
        orShifted(out, (j % hosts) + 1, 0);
        return;
      }
      case 'random': {
        const pos = this.pos;
        pos[0] = j >>> 0;
        pos[1] = Math.floor(j / TWO32);
        pos[2] = 0;
        pos[3] = 0;
        this.randomOrder!.applyWords(pos, this.drawn);
        this.orDrawn(this.drawn, out);
        return;
      }
    }
  }

  /** For `random`: ORs the drawn host part (4 little-endian words, randomOrder's output) into the base in `out`. */
  orDrawn(drawn: Uint32Array, out: Uint32Array): void {
    // applyWords is little-endian by word; the address is big-endian by word.
    out[0] |= drawn[3]!;
    out[1] |= drawn[2]!;
    out[2] |= drawn[1]!;
    out[3] |= drawn[0]!;
  }

  /** The excluded range an address of this block falls in, if any. */
  exclusionOf(words: Uint32Array): ExcludedRange | undefined {
    return this.exclusions?.lookup(wordsToBigint(words))?.value;
  }
}

function isRefused(scope: 'never' | 'nonGlobal' | 'global', rules: ScopeRules): scope is 'never' | 'nonGlobal' {
  return scope === 'never' || (scope === 'nonGlobal' && !rules.allowNonGlobal);
}

/** The larger-length (inner) of two overlapping prefixes: their intersection. */
function intersection(a: Prefix, b: Prefix): Prefix {
  return a.length >= b.length ? a : b;
}

/**
 * The disjoint excluded prefixes inside `prefix`: refused special-purpose space (the longest match decides,
 * so a globally reachable entry nested in a non-global block stays scannable), the job's `exclude` and the
 * blocklist (which always win). Outer ranges absorb nested ones.
 */
export function excludedRangesOf(prefix: Prefix, rules: ScopeRules): ExcludedRange[] {
  const candidates: ExcludedRange[] = [];
  const specials = SPECIAL_RANGES.filter((r) => prefixesOverlap(r.prefix, prefix));
  for (const special of specials) {
    if (!isRefused(special.scope, rules)) continue;
    const region = intersection(special.prefix, prefix);
    // A longer entry covering the whole region is the longest match for all of it (2000::/3 inside ::/0).
    if (specials.some((o) => o.prefix.length > special.prefix.length && prefixCovers(o.prefix, region))) continue;
    const nested = specials.filter((o) => o.prefix.length > special.prefix.length && prefixCovers(region, o.prefix)).map((o) => o.prefix);
    for (const p of subtractPrefixes(region, nested)) candidates.push({ prefix: p, reason: special.scope, name: special.name });
  }
  rules.exclude.forEach((p, i) => {
    if (prefixesOverlap(p, prefix)) candidates.push({ prefix: intersection(p, prefix), reason: 'exclude', name: `spec.exclude[${i}] ${formatPrefix(p)}` });
  });
  for (const p of rules.blocklist) {
    if (prefixesOverlap(p, prefix)) candidates.push({ prefix: intersection(p, prefix), reason: 'blocklist', name: `blocklist ${formatPrefix(p)}` });
  }
  // Blocklist first among equals, so that the reason shown for a range is the one that always wins.
  const rank: Record<ExclusionReason, number> = { blocklist: 0, never: 1, exclude: 2, nonGlobal: 3 };
  candidates.sort((a, b) => a.prefix.length - b.prefix.length || rank[a.reason] - rank[b.reason]);
  const kept: ExcludedRange[] = [];
  for (const c of candidates) {
    if (!kept.some((k) => prefixCovers(k.prefix, c.prefix))) kept.push(c);
  }
  return kept.sort((a, b) => (a.prefix.base < b.prefix.base ? -1 : a.prefix.base > b.prefix.base ? 1 : 0));
}

function blockSize(spec: TargetBlockSpec, ordinal: number, fullLimitBits: number): number {
  const hostBits = 128 - spec.prefix.length;
  const p = formatPrefix(spec.prefix);
  switch (spec.strategy) {
    case 'full':
      if (hostBits > fullLimitBits) {
        throw new TargetError(ordinal, 'strategy', `prefix ${p} with strategy full is 2^${hostBits} addresses (the limit is 2^${fullLimitBits}); use random with a budget, or lowbyte`);
      }
      return 2 ** hostBits;
    case 'lowbyte': {
      const { subnetLength, hosts } = spec;
      if (subnetLength === undefined || hosts === undefined) throw new TargetError(ordinal, 'strategy', 'strategy lowbyte needs subnetLength and hosts');
      if (subnetLength < spec.prefix.length) {
        throw new TargetError(ordinal, 'subnetLength', `subnetLength ${subnetLength} is shorter than the prefix length of ${p}; use a value from ${spec.prefix.length} to 128`);
      }
      const idBits = 128 - subnetLength;
      if (idBits < 53 && hosts > 2 ** idBits - 1) {
        throw new TargetError(ordinal, 'hosts', `hosts ${hosts} does not fit a /${subnetLength} subnet (interface IDs 1..${2 ** idBits - 1}); lower hosts or subnetLength`);
      }
      const subnetBits = subnetLength - spec.prefix.length;
      if (subnetBits > 52 || 2 ** subnetBits * hosts > MAX_SIZE) {
        throw new TargetError(ordinal, 'subnetLength', `prefix ${p} has 2^${subnetBits} /${subnetLength} subnets × ${hosts} hosts, more than 2^53 targets; use a longer prefix or random`);
      }
      return 2 ** subnetBits * hosts;
    }
    case 'random': {
      const { budget } = spec;
      if (budget === undefined) throw new TargetError(ordinal, 'strategy', 'strategy random needs budget');
      if (hostBits < 53 && budget > 2 ** hostBits) {
        throw new TargetError(ordinal, 'budget', `budget ${budget} exceeds the ${2 ** hostBits} addresses of ${p}; lower the budget or use strategy full`);
      }
      return budget;
    }
  }
}

const MAX_SIZE = 2 ** 53;

function plannedExcludedOf(spec: TargetBlockSpec, ranges: readonly ExcludedRange[]): number | null {
  if (spec.strategy === 'random') return null;
  let total = 0;
  for (const { prefix } of ranges) {
    if (spec.strategy === 'full') {
      total += Number(prefixSize(prefix));
      continue;
    }
    const subnetLength = spec.subnetLength!;
    const hosts = spec.hosts!;
    if (prefix.length <= subnetLength) {
      total += 2 ** (subnetLength - prefix.length) * hosts;
    } else {
      // Inside one subnet: count the interface IDs 1..hosts that fall in the range.
      const subnetBase = makePrefix(prefix.base, subnetLength).base;
      const first = prefix.base - subnetBase;
      const last = first + prefixSize(prefix) - 1n;
      const lo = first > 1n ? first : 1n;
      const hi = last < BigInt(hosts) ? last : BigInt(hosts);
      if (hi >= lo) total += Number(hi - lo + 1n);
    }
  }
  return total;
}

export interface TargetSpaceOptions {
  /** Keys the global order and the random draws. */
  seed: string;
  /** Largest `full` block, as a power of two (default 32). */
  fullLimitBits?: number;
}

/** A target space's constructor arguments: plain, structured-cloneable data, so a thread can rebuild the same space. */
export interface TargetSpaceDefinition {
  readonly specs: readonly TargetBlockSpec[];
  readonly rules: ScopeRules;
  readonly options: TargetSpaceOptions;
}

export class TargetSpace {
  readonly definition: TargetSpaceDefinition;
  readonly blocks: readonly TargetBlock[];
  /** Total number of indices (= positions). */
  readonly size: number;
  /** Sum of the exactly known planned exclusions (full and lowbyte blocks). */
  readonly plannedExcluded: number;
  /** The compiled blocks, for the GPU backend, which computes the random draws itself. */
  readonly compiled: readonly Block[];
  private readonly offsets: Float64Array;
  /** The global scan order (position → index). */
  readonly order: Permutation;
  private readonly pos = new Uint32Array(4);
  private readonly out = new Uint32Array(4);

  constructor(specs: readonly TargetBlockSpec[], rules: ScopeRules, options: TargetSpaceOptions) {
    this.definition = { specs, rules, options };
    const fullLimitBits = options.fullLimitBits ?? 32;
    const compiled: Block[] = [];
    let offset = 0;
    specs.forEach((spec, ordinal) => {
      const size = blockSize(spec, ordinal, fullLimitBits);
      const ranges = excludedRangesOf(spec.prefix, rules);
      const whole = wholeExclusionMessage(spec.prefix, ranges);
      if (whole) throw new TargetError(ordinal, 'prefix', whole);
      // Not `offset + size > MAX_SIZE`: above 2^53 the sum rounds (2^53 + 1 === 2^53).
      if (size > MAX_SIZE - offset) {
        throw new TargetError(ordinal, 'prefix', `the targets add up to more than 2^53 addresses; split the job or use smaller budgets`);
      }
      compiled.push(new Block(spec, ordinal, size, offset, ranges, plannedExcludedOf(spec, ranges), options.seed));
      offset += size;
    });
    this.compiled = compiled;
    this.blocks = compiled;
    this.size = offset;
    this.offsets = Float64Array.from(compiled, (b) => b.offset);
    this.plannedExcluded = compiled.reduce((sum, b) => sum + (b.plannedExcluded ?? 0), 0);
    this.order = new Permutation(permutationKeyFor(options.seed, 'order'), BigInt(Math.max(offset, 1)));
  }

  /** The target index probed at scan position `position` (the keyed permutation). */
  indexAt(position: number): number {
    const pos = this.pos;
    pos[0] = position >>> 0;
    pos[1] = Math.floor(position / TWO32);
    pos[2] = 0;
    pos[3] = 0;
    this.order.applyWords(pos, this.out);
    return this.out[1] * TWO32 + this.out[0];
  }

  /** The block holding global index `index` (binary search over the block offsets). */
  blockIndexOf(index: number): number {
    const offsets = this.offsets;
    let lo = 0;
    let hi = offsets.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (offsets[mid] <= index) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /**
   * Writes the address of global `index` as 4 big-endian words into `out`; returns the excluded range it
   * falls in (then it must not be probed), or undefined.
   */
  address(index: number, out: Uint32Array): ExcludedRange | undefined {
    const block = this.compiled[this.blockIndexOf(index)]!;
    block.address(index - block.offset, out);
    return block.exclusions === null ? undefined : block.exclusionOf(out);
  }

  /** Convenience for tests and tools: the address of `index` as a bigint. */
  addressAt(index: number): bigint {
    const words = new Uint32Array(4);
    this.address(index, words);
    return wordsToBigint(words);
  }
}

/** Why `prefix` has nothing left to scan, or undefined. `ranges` are disjoint and inside `prefix`. */
function wholeExclusionMessage(prefix: Prefix, ranges: readonly ExcludedRange[]): string | undefined {
  const p = formatPrefix(prefix);
  const range = ranges.find((r) => prefixCovers(r.prefix, prefix));
  if (!range) {
    // Several ranges can add up to the whole prefix (4000::/2 is non-global space around the SRv6 /16).
    if (ranges.reduce((sum, r) => sum + prefixSize(r.prefix), 0n) !== prefixSize(prefix)) return undefined;
    const names = [...new Set(ranges.map((r) => r.name))].join('; ');
    const hint = ranges.some((r) => r.reason === 'nonGlobal') ? 'set allowNonGlobal: true to scan non-global space (labs only)' : 'remove the target or the exclusions';
    return `prefix ${p} is entirely excluded (${names}); ${hint}`;
  }
  switch (range.reason) {
    case 'never':
      return `prefix ${p} is ${range.name} space, which is never scanned`;
    case 'nonGlobal':
      return `prefix ${p} is ${range.name} space, which is not global; set allowNonGlobal: true to scan it (labs only)`;
    case 'exclude':
      return `prefix ${p} is entirely excluded by ${range.name}; remove the target or the exclusion`;
    case 'blocklist':
      return `prefix ${p} is entirely covered by the operator's ${range.name}; it cannot be scanned`;
  }
}

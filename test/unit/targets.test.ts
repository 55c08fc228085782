import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { formatPrefix, makePrefix, parsePrefix, prefixContains, prefixSize } from '../../lib/core/cidr.js';
import { formatAddress } from '../../lib/core/ipv6.js';
import { shardAt, shardCount } from '../../lib/core/shards.js';
import { classifyAddress } from '../../lib/core/special.js';
import {
  excludedRangesOf,
  TargetError,
  TargetSpace,
  type ScopeRules,
  type Strategy,
  type TargetBlockSpec,
} from '../../lib/core/targets.js';

const P = parsePrefix;
const NONE: ScopeRules = { allowNonGlobal: false, exclude: [], blocklist: [] };
const LAB: ScopeRules = { allowNonGlobal: true, exclude: [], blocklist: [] };

interface BlockText {
  prefix: string;
  strategy: Strategy;
  subnetLength?: number;
  hosts?: number;
  budget?: number;
}

const blockOf = (b: BlockText): TargetBlockSpec => ({ ...b, prefix: P(b.prefix) });
const rulesOf = (r: { allowNonGlobal?: boolean; exclude?: string[]; blocklist?: string[] } = {}): ScopeRules => ({
  allowNonGlobal: r.allowNonGlobal ?? false,
  exclude: (r.exclude ?? []).map(P),
  blocklist: (r.blocklist ?? []).map(P),
});
function spaceOf(blocks: BlockText[], rules: ScopeRules = NONE, seed = 'seed', fullLimitBits?: number): TargetSpace {
  return new TargetSpace(blocks.map(blockOf), rules, { seed, fullLimitBits });
}

// The independent model of DESIGN.md's table, in BigInt: the address of local index j of a full or lowbyte block.
function model(b: BlockText, j: bigint): bigint {
  const base = P(b.prefix).base;
  if (b.strategy === 'full') return base + j;
  if (b.strategy === 'lowbyte') {
    const hosts = BigInt(b.hosts!);
    return base + ((j / hosts) << BigInt(128 - b.subnetLength!)) + (j % hosts) + 1n;
  }
  throw new Error('random has no closed form');
}

/** Every address of a full/lowbyte block, in index order. */
const enumerate = (b: BlockText): bigint[] => {
  const size = b.strategy === 'full' ? Number(prefixSize(P(b.prefix))) : 2 ** (b.subnetLength! - P(b.prefix).length) * b.hosts!;
  return Array.from({ length: size }, (_, j) => model(b, BigInt(j)));
};

const fmt = (a: bigint) => formatAddress(a);

/** The TargetError thrown by `fn`, for field/message assertions. */
function targetError(fn: () => unknown): TargetError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TargetError);
    return err as TargetError;
  }
  throw new Error('expected a TargetError');
}

describe('index → address', () => {
  test('full: base + j (exhaustive on a /120, sampled across the 32-bit boundary of a /96)', () => {
    const b: BlockText = { prefix: '2a00:1::/120', strategy: 'full' };
    const s = spaceOf([b]);
    expect(s.size).toBe(256);
    for (let j = 0; j < 256; j++) expect(s.addressAt(j)).toBe(model(b, BigInt(j)));
    const big: BlockText = { prefix: '2a00:1:2:3:4:5::/96', strategy: 'full' };
    const t = spaceOf([big]);
    expect(t.size).toBe(2 ** 32);
    for (const j of [0, 1, 0xffff, 0x10000, 2 ** 31, 2 ** 32 - 1]) expect(fmt(t.addressAt(j))).toBe(fmt(model(big, BigInt(j))));
  });

  test('full: indices above 2^32 land in the right words (fullLimitBits 53, a /75)', () => {
    const b: BlockText = { prefix: '2a00:ffff:1234:5678:ffe0::/75', strategy: 'full' };
    const s = spaceOf([b], NONE, 'seed', 53);
    expect(s.size).toBe(2 ** 53);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 53 - 1 }), (j) => {
        expect(fmt(s.addressAt(j))).toBe(fmt(model(b, BigInt(j))));
      }),
      { numRuns: 300 },
    );
    expect(fmt(s.addressAt(2 ** 53 - 1))).toBe('2a00:ffff:1234:5678:ffff:ffff:ffff:ffff');
  });

  test.each<BlockText>([
    { prefix: '2a00:1:100::/48', strategy: 'lowbyte', subnetLength: 64, hosts: 16 },
    { prefix: '2a00:1:2:3:4:5::/100', strategy: 'lowbyte', subnetLength: 117, hosts: 300 },
    { prefix: '2a00:1:2::/60', strategy: 'lowbyte', subnetLength: 60, hosts: 65536 },
    { prefix: '2a00:1:2::/48', strategy: 'lowbyte', subnetLength: 97, hosts: 3 },
    // 2^52 subnets × 2: subnet numbers above 2^32, shifted across word boundaries.
    { prefix: '2a00:1000::/20', strategy: 'lowbyte', subnetLength: 72, hosts: 2 },
  ])('lowbyte %o: subnet j / hosts, interface ID j % hosts + 1', (b) => {
    const s = spaceOf([b]);
    const size = 2 ** (b.subnetLength! - P(b.prefix).length) * b.hosts!;
    expect(s.size).toBe(size);
    const edges = [0, 1, b.hosts! - 1, b.hosts!, size - b.hosts!, size - 1].filter((j) => j >= 0 && j < size);
    for (const j of edges) expect(fmt(s.addressAt(j))).toBe(fmt(model(b, BigInt(j))));
    fc.assert(
      fc.property(fc.integer({ min: 0, max: size - 1 }), (j) => {
        expect(fmt(s.addressAt(j))).toBe(fmt(model(b, BigInt(j))));
      }),
      { numRuns: 200 },
    );
  });

  test('lowbyte hosts: 16 is ::1 … ::10 in every subnet', () => {
    const s = spaceOf([{ prefix: '2a00:1:100::/63', strategy: 'lowbyte', subnetLength: 64, hosts: 16 }]);
    const all = Array.from({ length: s.size }, (_, j) => fmt(s.addressAt(j)));
    expect(all.slice(0, 3)).toEqual(['2a00:1:100::1', '2a00:1:100::2', '2a00:1:100::3']);
    expect(all[15]).toBe('2a00:1:100::10');
    expect(all[16]).toBe('2a00:1:100:1::1');
    expect(all[31]).toBe('2a00:1:100:1::10');
  });

  test('random: a budget equal to the prefix size is a permutation of the whole /116 (exhaustive)', () => {
    const b: BlockText = { prefix: '2a00:1::f000/116', strategy: 'random', budget: 4096 };
    const s = spaceOf([b]);
    const seen = new Set<bigint>();
    for (let j = 0; j < 4096; j++) seen.add(s.addressAt(j));
    expect(seen).toEqual(new Set(enumerate({ prefix: b.prefix, strategy: 'full' })));
    // Keyed, not the identity.
    expect(Array.from({ length: 16 }, (_, j) => s.addressAt(j) - P(b.prefix).base)).not.toEqual(Array.from({ length: 16 }, (_, j) => BigInt(j)));
  });

  test('random: budget distinct draws inside the prefix; deterministic per seed, different per seed and per block', () => {
    const b: BlockText = { prefix: '2a00:1:2:3::/64', strategy: 'random', budget: 1000 };
    const draws = (s: TargetSpace, from = 0) => Array.from({ length: 1000 }, (_, j) => s.addressAt(from + j));
    const a = draws(spaceOf([b], NONE, 'one'));
    expect(new Set(a).size).toBe(1000);
    for (const x of a) expect(prefixContains(P(b.prefix), x)).toBe(true);
    expect(draws(spaceOf([b], NONE, 'one'))).toEqual(a);
    expect(draws(spaceOf([b], NONE, 'two'))).not.toEqual(a);
    // The same prefix as the second block draws a different sample (per-block key).
    const second = draws(spaceOf([{ prefix: '2a00:9::/128', strategy: 'full' }, b], NONE, 'one'), 1);
    expect(second).not.toEqual(a);
  });

  test('random never repeats an address: 10^5 draws from a /64', () => {
    const s = spaceOf([{ prefix: '2a00:1:2:3::/64', strategy: 'random', budget: 100_000 }]);
    const out = new Uint32Array(4);
    const seen = new Set<number>();
    let outside = 0;
    let excluded = 0;
    for (let j = 0; j < 100_000; j++) {
      if (s.address(j, out) !== undefined) excluded++;
      if (out[0] !== 0x2a000001 || out[1] !== 0x00020003) outside++;
      seen.add(out[2]! * 2 ** 32 + out[3]!);
    }
    expect({ outside, excluded, distinct: seen.size }).toEqual({ outside: 0, excluded: 0, distinct: 100_000 });
  });

  test('random from a /0 (allowNonGlobal) draws across the whole space', () => {
    const s = spaceOf([{ prefix: '::/0', strategy: 'random', budget: 2000 }], LAB);
    const draws = Array.from({ length: 2000 }, (_, j) => s.addressAt(j));
    expect(new Set(draws).size).toBe(2000);
    // Uniform over 2^128: the top bit is set about half the time.
    const high = draws.filter((a) => a >> 127n === 1n).length;
    expect(high).toBeGreaterThan(850);
    expect(high).toBeLessThan(1150);
  });

  test('blocks concatenate in spec.targets order (offsets, blockIndexOf)', () => {
    const blocks: BlockText[] = [
      { prefix: '2a00:1::/124', strategy: 'full' },
      { prefix: '2a00:2::/62', strategy: 'lowbyte', subnetLength: 64, hosts: 3 },
      { prefix: '2a00:3::/64', strategy: 'random', budget: 5 },
      { prefix: '2a00:4::1/128', strategy: 'full' },
      { prefix: '2a00:1::/124', strategy: 'full' },
    ];
    const s = spaceOf(blocks);
    expect(s.blocks.map((b) => [b.ordinal, b.offset, b.size])).toEqual([
      [0, 0, 16],
      [1, 16, 12],
      [2, 28, 5],
      [3, 33, 1],
      [4, 34, 16],
    ]);
    expect(s.size).toBe(50);
    for (const [i, b] of s.blocks.entries()) {
      for (let j = 0; j < b.size; j++) {
        expect(s.blockIndexOf(b.offset + j)).toBe(i);
        const a = s.addressAt(b.offset + j);
        if (b.strategy === 'random') expect(prefixContains(b.prefix, a)).toBe(true);
        else expect(fmt(a)).toBe(fmt(model(blocks[i]!, BigInt(j))));
      }
    }
    expect(s.blocks[1]).toMatchObject({ strategy: 'lowbyte', subnetLength: 64, hosts: 3 });
    expect(s.blocks[2]).toMatchObject({ strategy: 'random', budget: 5, plannedExcluded: null });
  });
});

describe('position → index (indexAt)', () => {
  /** A space of exactly n indices from full blocks /128../120 (binary decomposition), or one lowbyte block. */
  function spaceOfSize(n: number, seed: string): TargetSpace {
    if (n % 3 === 0) return spaceOf([{ prefix: '2a00:5::/64', strategy: 'lowbyte', subnetLength: 64, hosts: n }], NONE, seed);
    const blocks: BlockText[] = [];
    for (let bit = 12; bit >= 0; bit--) {
      if (n & (1 << bit)) blocks.push({ prefix: `2a00:6:${bit}::/${128 - bit}`, strategy: 'full' });
    }
    return spaceOf(blocks, NONE, seed);
  }

  test('is a bijection on [0, size) for every size 1..200 (exhaustive)', () => {
    for (let n = 1; n <= 200; n++) {
      const s = spaceOfSize(n, `bijection-${n}`);
      expect(s.size).toBe(n);
      const hit = new Uint8Array(n);
      let outside = 0;
      for (let p = 0; p < n; p++) {
        const i = s.indexAt(p);
        if (Number.isInteger(i) && i >= 0 && i < n) hit[i]!++;
        else outside++;
      }
      expect({ n, outside, once: hit.every((h) => h === 1) }).toEqual({ n, outside: 0, once: true });
    }
  });

  test('is deterministic per seed; different seeds give different orders', () => {
    const order = (seed: string) => {
      const s = spaceOfSize(1000, seed);
      return Array.from({ length: 1000 }, (_, p) => s.indexAt(p));
    };
    const a = order('job-a');
    expect(order('job-a')).toEqual(a);
    const b = order('job-b');
    expect(b).not.toEqual(a);
    expect([...b].sort((x, y) => x - y)).toEqual([...a].sort((x, y) => x - y));
    // Spread, not sorted: the permutation is far from the identity.
    expect(a.filter((i, p) => i === p).length).toBeLessThan(20);
  });

  test('stays inside [0, size) for large spaces (size 2^53)', () => {
    const s = spaceOf([{ prefix: '2000::/3', strategy: 'random', budget: 2 ** 53 }]);
    expect(s.size).toBe(2 ** 53);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 53 - 1 }), (p) => {
        const i = s.indexAt(p);
        expect(Number.isSafeInteger(i) && i >= 0 && i < 2 ** 53).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  test('property: the addresses of all positions are exactly the blocks’ addresses (as a multiset)', () => {
    const block = fc.oneof(
      fc.record({
        prefix: fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 122, max: 128 })).map(([n, len]) => formatPrefix(makePrefix(P('2a00:7::/32').base + (BigInt(n) << 16n), len))),
        strategy: fc.constant<Strategy>('full'),
      }),
      fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 9 })).map(
        ([n, subnetBits, hosts]): BlockText => ({ prefix: formatPrefix(makePrefix(P('2a00:8::/32').base + (BigInt(n) << 80n), 46 - subnetBits)), strategy: 'lowbyte', subnetLength: 46, hosts }),
      ),
    );
    fc.assert(
      fc.property(fc.array(block, { minLength: 1, maxLength: 6 }), fc.string({ minLength: 1, maxLength: 8 }), (blocks, seed) => {
        const s = spaceOf(blocks, NONE, seed);
        const viaPositions = Array.from({ length: s.size }, (_, p) => s.addressAt(s.indexAt(p)));
        const viaBlocks = blocks.flatMap(enumerate);
        const sort = (xs: bigint[]) => xs.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
        expect(sort(viaPositions)).toEqual(sort(viaBlocks));
      }),
      { numRuns: 60 },
    );
  });
});

describe('shards', () => {
  test('property: shardAt partitions [0, size) into contiguous shards of shardSize (the last shorter)', () => {
    // Up to ~3000 shards per case; sizes up to 2^53.
    const shardSize = fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 2 ** 24 }));
    const sizeFor = (ss: number) => fc.oneof(fc.integer({ min: 0, max: ss * 3000 }), fc.integer({ min: 2 ** 53 - 3 * ss, max: 2 ** 53 }));
    fc.assert(
      fc.property(shardSize.chain((ss) => fc.tuple(fc.constant(ss), sizeFor(ss))), ([ss, size]) => {
        const count = shardCount(size, ss);
        expect(count).toBe(Math.ceil(size / ss));
        const first = count <= 3000 ? 0 : count - 3;
        let next = first * ss;
        const bad: unknown[] = [];
        for (let k = first; k < count; k++) {
          const sh = shardAt(k, size, ss);
          const want = k < count - 1 ? ss : size - (count - 1) * ss;
          if (sh.index !== k || sh.start !== next || sh.end - sh.start !== want || want < 1) bad.push(sh);
          next = sh.end;
        }
        expect(bad).toEqual([]);
        expect(next).toBe(size);
      }),
      { numRuns: 300 },
    );
  });

  test('a space of exactly 2^53 positions has an exact last shard', () => {
    const count = shardCount(2 ** 53, 2 ** 24);
    expect(count).toBe(2 ** 29);
    expect(shardAt(count - 1, 2 ** 53, 2 ** 24)).toEqual({ index: count - 1, start: 2 ** 53 - 2 ** 24, end: 2 ** 53 });
    expect(shardCount(2 ** 53, 65_536)).toBe(2 ** 37);
  });

  test.each([
    ['a negative size', () => shardCount(-1, 10), /size/],
    ['a size above 2^53', () => shardCount(2 ** 53 + 2, 10), /size/],
    ['a fractional size', () => shardCount(1.5, 10), /size/],
    ['NaN', () => shardCount(NaN, 10), /size/],
    ['shardSize 0', () => shardCount(10, 0), /shardSize/],
    ['a fractional shardSize', () => shardCount(10, 2.5), /shardSize/],
    ['a shard past the end', () => shardAt(1, 10, 10), /shard 1 does not exist \(the job has 1 shards\)/],
    ['a negative shard', () => shardAt(-1, 10, 3), /does not exist/],
    ['a fractional shard', () => shardAt(0.5, 10, 3), /does not exist/],
    ['any shard of an empty space', () => shardAt(0, 0, 3), /does not exist/],
  ])('refuses %s', (_name, fn, message) => {
    expect(fn).toThrow(RangeError);
    expect(fn).toThrow(message);
  });
});

describe('exclusions', () => {
  const texts = (prefix: string, rules: ScopeRules) => excludedRangesOf(P(prefix), rules).map((r) => `${formatPrefix(r.prefix)} ${r.reason} ${r.name}`);

  test('a global prefix has no exclusions; special space is named by its longest match', () => {
    expect(texts('2a00::/16', NONE)).toEqual([]);
    expect(texts('2000::/3', LAB)).toEqual([]);
    expect(texts('2001:db8::/48', NONE)).toEqual(['2001:db8::/48 nonGlobal documentation']);
    expect(texts('fd00::/8', NONE)).toEqual(['fd00::/8 nonGlobal unique-local']);
    expect(texts('4000::/16', NONE)).toEqual(['4000::/16 nonGlobal outside 2000::/3, not global unicast']);
  });

  test('a global prefix containing non-global space excludes just that space', () => {
    expect(texts('2001:d00::/24', NONE)).toEqual(expect.arrayContaining(['2001:db8::/32 nonGlobal documentation']));
    expect(texts('2001:d00::/24', NONE)).toHaveLength(1);
    expect(texts('2001:d00::/24', LAB)).toEqual([]);
    expect(texts('3ff0::/12', NONE)).toEqual(['3fff::/20 nonGlobal documentation']);
  });

  test('job exclude: clipped to the target, nested and duplicate ranges collapse, unrelated ones ignored', () => {
    const rules = rulesOf({ exclude: ['2a00:1:0:5::/64', '2a00:1:0:5::/80', '2a00:1:0:4::/63', '2a00:1:0:4::/63', '2a01::/16', '2a00:1:0:8::/64'] });
    expect(texts('2a00:1::/48', rules)).toEqual([
      '2a00:1:0:4::/63 exclude spec.exclude[2] 2a00:1:0:4::/63',
      '2a00:1:0:8::/64 exclude spec.exclude[5] 2a00:1:0:8::/64',
    ]);
    // An exclude wider than the target is clipped to it.
    expect(texts('2a00:1:0:5::/120', rules)).toEqual(['2a00:1:0:5::/120 exclude spec.exclude[0] 2a00:1:0:5::/64']);
    expect(texts('2a02::/16', rules)).toEqual([]);
  });

  test('the blocklist wins over the job and over allowNonGlobal', () => {
    const rules = rulesOf({ allowNonGlobal: true, exclude: ['fd00:1::/32', 'fd00:2::/48'], blocklist: ['fd00:1::/32', 'fd00:2::/32'] });
    expect(texts('fd00::/16', rules)).toEqual(['fd00:1::/32 blocklist blocklist fd00:1::/32', 'fd00:2::/32 blocklist blocklist fd00:2::/32']);
    const e = targetError(() => spaceOf([{ prefix: 'fd00:2::/120', strategy: 'full' }], rules));
    expect(e.field).toBe('prefix');
    expect(e.message).toBe("prefix fd00:2::/120 is entirely covered by the operator's blocklist fd00:2::/32; it cannot be scanned");
    // Blocklist and layer 1 of the same size: the blocklist is named.
    expect(texts('fe80::/10', rulesOf({ blocklist: ['fe80::/10'] }))).toEqual(['fe80::/10 blocklist blocklist fe80::/10']);
  });

  test('layer 1 (never) holds even with allowNonGlobal', () => {
    for (const [prefix, name] of [
      ['fe80::/64', 'link-local'],
      ['ff02::/16', 'multicast'],
      ['::ffff:0:0/96', 'IPv4-mapped'],
      ['100::/64', 'discard-only'],
      ['::1/128', 'loopback'],
      ['::/128', 'unspecified'],
    ] as const) {
      const e = targetError(() => spaceOf([{ prefix, strategy: 'random', budget: 1 }], LAB));
      expect(e.field).toBe('prefix');
      expect(e.message).toBe(`prefix ${formatPrefix(P(prefix))} is ${name} space, which is never scanned`);
    }
    // ::/96 is outside 2000::/3: refused entirely without allowNonGlobal, and even with it :: and ::1 are never probed.
    const e = targetError(() => spaceOf([{ prefix: '::/96', strategy: 'full' }], NONE));
    expect(e.message).toBe('prefix ::/96 is entirely excluded (unspecified; loopback; outside 2000::/3, not global unicast); set allowNonGlobal: true to scan non-global space (labs only)');
    expect(texts('::/96', LAB)).toEqual(['::/128 never unspecified', '::1/128 never loopback']);
    expect(texts('fe00::/7', LAB)).toEqual(['fe80::/10 never link-local', 'ff00::/8 never multicast']);
  });

  test('layer 2 (non-global) is refused without allowNonGlobal and allowed with it', () => {
    for (const [prefix, name] of [
      ['fd00::/8', 'unique-local'],
      ['2001:db8::/32', 'documentation'],
      ['3fff:1::/32', 'documentation'],
      ['2001:2::/64', 'benchmarking'],
    ] as const) {
      const e = targetError(() => spaceOf([{ prefix, strategy: 'random', budget: 10 }], NONE));
      expect(e).toMatchObject({ ordinal: 0, field: 'prefix' });
      expect(e.message).toBe(`prefix ${prefix} is ${name} space, which is not global; set allowNonGlobal: true to scan it (labs only)`);
      const s = spaceOf([{ prefix, strategy: 'random', budget: 10 }], LAB);
      expect(s.blocks[0]!.excludedRanges).toEqual([]);
      for (let j = 0; j < 10; j++) expect(s.address(j, new Uint32Array(4))).toBeUndefined();
    }
  });

  test('a global /128 nested in the non-global 2001::/23 stays scannable', () => {
    expect(spaceOf([{ prefix: '2001:1::1/128', strategy: 'full' }]).blocks[0]!.excludedRanges).toEqual([]);
    const s = spaceOf([{ prefix: '2001:1::/126', strategy: 'full' }]);
    expect(texts('2001:1::/126', NONE)).toEqual(['2001:1::/128 nonGlobal IETF protocol assignments']);
    expect(s.plannedExcluded).toBe(1);
    const out = new Uint32Array(4);
    expect(s.address(0, out)).toMatchObject({ reason: 'nonGlobal', name: 'IETF protocol assignments' });
    for (const j of [1, 2, 3]) expect(s.address(j, out)).toBeUndefined();
  });

  /** Exclusion by the rules themselves (an independent model): the blocklist, the job's exclude, or a refused scope. */
  const excludedByRules = (a: bigint, rules: ScopeRules) => {
    const scope = classifyAddress(a).scope;
    return (
      rules.blocklist.some((p) => prefixContains(p, a)) ||
      rules.exclude.some((p) => prefixContains(p, a)) ||
      scope === 'never' ||
      (scope === 'nonGlobal' && !rules.allowNonGlobal)
    );
  };

  /** Enumerates every position, checking each verdict against the model; returns the excluded count. */
  function countExcluded(s: TargetSpace, rules: ScopeRules): number {
    const out = new Uint32Array(4);
    let excluded = 0;
    for (let p = 0; p < s.size; p++) {
      const index = s.indexAt(p);
      const range = s.address(index, out);
      const a = s.addressAt(index);
      expect(range !== undefined).toBe(excludedByRules(a, rules));
      if (range) {
        expect(prefixContains(range.prefix, a)).toBe(true);
        excluded++;
      }
    }
    return excluded;
  }

  test.each([
    {
      name: 'full, nested excludes and a blocklist',
      blocks: [{ prefix: '2a00:1::/116', strategy: 'full' }] as BlockText[],
      rules: { exclude: ['2a00:1::100/120', '2a00:1::180/121', '2a00:1::fff/128', '2a00:1::800/118'], blocklist: ['2a00:1::c00/122', '2a00:1::100/124'] },
      planned: 256 + 1 + 1024 + 64,
      excluded: 256 + 1 + 1024 + 64,
    },
    {
      name: 'lowbyte, excludes wider than, equal to and longer than subnetLength',
      blocks: [{ prefix: '2a00:2::/56', strategy: 'lowbyte', subnetLength: 60, hosts: 20 }] as BlockText[],
      rules: {
        exclude: [
          '2a00:2:0:80::/58', // subnets 8..11: 80
          '2a00:2:0:10::/60', // subnet 1: 20
          '2a00:2:0:30::/126', // IDs 0..3 of subnet 3: 3
          '2a00:2:0:50::10/124', // IDs 16..31 of subnet 5: 5
          '2a00:2:0:60::100/120', // IDs 256..511: none probed
          '2a00:2:0:70::/64', // inside subnet 7, all 20 IDs
          '2a00:2:0:d0::14/128', // ID 20 of subnet 13: 1
          '2a00:2:0:e0::15/128', // ID 21: not probed
        ],
      },
      planned: 80 + 20 + 3 + 5 + 0 + 20 + 1,
      excluded: 129,
    },
    {
      name: 'lowbyte in 2001::/23 around the global anycast /128s',
      blocks: [{ prefix: '2001:1::/120', strategy: 'lowbyte', subnetLength: 124, hosts: 5 }] as BlockText[],
      rules: {},
      planned: 15 * 5 + 2,
      excluded: 77,
    },
    {
      name: 'several blocks, a random one among them (counted while scanning, not planned)',
      blocks: [
        { prefix: 'fd00:1::/120', strategy: 'full' },
        { prefix: 'fd00:2::/63', strategy: 'lowbyte', subnetLength: 64, hosts: 7 },
        { prefix: 'fd00:3::/120', strategy: 'random', budget: 256 },
        { prefix: 'fe00::/7', strategy: 'lowbyte', subnetLength: 9, hosts: 3 },
      ] as BlockText[],
      rules: { allowNonGlobal: true, exclude: ['fd00:1::80/121', 'fd00:2:0:1::4/126', 'fd00:3::/124'], blocklist: ['fd00:1::/124'] },
      // 128 + 16 in the /120, IDs 4..7 of one /64, fe80::1..3 (link-local) and ff00::1..3, ff80::1..3 (multicast);
      // the random block's 16 are counted while scanning, not planned.
      planned: 144 + 4 + 3 + 6,
      excluded: 144 + 4 + 3 + 6 + 16,
    },
  ])('planned excluded = positions whose address() is excluded: $name', ({ blocks, rules, planned, excluded }) => {
    const r = rulesOf(rules);
    const s = spaceOf(blocks, r, 'planned');
    expect(s.plannedExcluded).toBe(planned);
    expect(s.blocks.reduce((sum, b) => sum + (b.plannedExcluded ?? 0), 0)).toBe(planned);
    expect(countExcluded(s, r)).toBe(excluded);
  });

  test('property: planned excluded = enumerated excluded for random full and lowbyte blocks and excludes', () => {
    const base = P('2a00:9::/112');
    const exclude = fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 113, max: 128 })).map(([off, len]) => makePrefix(base.base + BigInt(off), len));
    const block = fc.oneof(
      fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 118, max: 128 })).map(([off, len]): BlockText => ({ prefix: formatPrefix(makePrefix(base.base + BigInt(off), len)), strategy: 'full' })),
      fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 113, max: 120 }), fc.integer({ min: 0, max: 4 }), fc.integer({ min: 1, max: 40 })).map(([off, len, extra, hosts]): BlockText => {
        const subnetLength = Math.min(len + extra, 124);
        return { prefix: formatPrefix(makePrefix(base.base + BigInt(off), len)), strategy: 'lowbyte', subnetLength, hosts: Math.min(hosts, 2 ** (128 - subnetLength) - 1) };
      }),
    );
    fc.assert(
      fc.property(fc.array(block, { minLength: 1, maxLength: 3 }), fc.array(exclude, { maxLength: 8 }), (blocks, excludes) => {
        const rules: ScopeRules = { allowNonGlobal: false, exclude: excludes, blocklist: [] };
        let s: TargetSpace;
        try {
          s = spaceOf(blocks, rules, 'prop');
        } catch (err) {
          // Only a target that an exclusion swallows whole may be refused.
          expect(err).toBeInstanceOf(TargetError);
          expect((err as TargetError).message).toMatch(/entirely excluded/);
          return;
        }
        expect(countExcluded(s, rules)).toBe(s.plannedExcluded);
      }),
      { numRuns: 60 },
    );
  });

  test('random: plannedExcluded is null and address() reports each excluded draw', () => {
    const r = rulesOf({ exclude: ['2a00:1::f100/120'], blocklist: ['2a00:1::f200/127'] });
    const s = spaceOf([{ prefix: '2a00:1::f000/116', strategy: 'random', budget: 4096 }], r);
    expect(s.blocks[0]!.plannedExcluded).toBeNull();
    expect(s.plannedExcluded).toBe(0);
    const out = new Uint32Array(4);
    const reasons: Record<string, number> = {};
    for (let j = 0; j < 4096; j++) {
      const range = s.address(j, out);
      if (range) reasons[range.reason] = (reasons[range.reason] ?? 0) + 1;
    }
    expect(reasons).toEqual({ exclude: 256, blocklist: 2 });
  });
});

describe('errors', () => {
  test('full above the limit names 2^N and suggests random', () => {
    const e = targetError(() => spaceOf([{ prefix: '2a00:1::/120', strategy: 'full' }, { prefix: '2a00::/64', strategy: 'full' }]));
    expect(e).toMatchObject({ ordinal: 1, field: 'strategy' });
    expect(e.message).toBe('prefix 2a00::/64 with strategy full is 2^64 addresses (the limit is 2^32); use random with a budget, or lowbyte');
    expect(spaceOf([{ prefix: '2a00::/96', strategy: 'full' }]).size).toBe(2 ** 32);
    const small = targetError(() => spaceOf([{ prefix: '2a00::/119', strategy: 'full' }], NONE, 's', 8));
    expect(small.message).toMatch(/is 2\^9 addresses \(the limit is 2\^8\)/);
  });

  test('lowbyte: subnetLength shorter than the prefix; hosts that do not fit; too many subnets; missing fields', () => {
    const short = targetError(() => spaceOf([{ prefix: '2a00:1::/48', strategy: 'lowbyte', subnetLength: 40, hosts: 1 }]));
    expect(short).toMatchObject({ field: 'subnetLength' });
    expect(short.message).toBe('subnetLength 40 is shorter than the prefix length of 2a00:1::/48; use a value from 48 to 128');
    const hosts = targetError(() => spaceOf([{ prefix: '2a00:1::/120', strategy: 'lowbyte', subnetLength: 124, hosts: 16 }]));
    expect(hosts).toMatchObject({ field: 'hosts' });
    expect(hosts.message).toBe('hosts 16 does not fit a /124 subnet (interface IDs 1..15); lower hosts or subnetLength');
    expect(spaceOf([{ prefix: '2a00:1::/120', strategy: 'lowbyte', subnetLength: 124, hosts: 15 }]).size).toBe(16 * 15);
    expect(targetError(() => spaceOf([{ prefix: '2a00:1::/120', strategy: 'lowbyte', subnetLength: 128, hosts: 1 }])).field).toBe('hosts');
    const wide = targetError(() => spaceOf([{ prefix: '2a00::/16', strategy: 'lowbyte', subnetLength: 70, hosts: 1 }]));
    expect(wide).toMatchObject({ field: 'subnetLength' });
    expect(wide.message).toMatch(/2\^54 \/70 subnets × 1 hosts, more than 2\^53 targets/);
    expect(targetError(() => spaceOf([{ prefix: '2a00::/16', strategy: 'lowbyte', subnetLength: 68, hosts: 3 }])).message).toMatch(/more than 2\^53/);
    expect(targetError(() => spaceOf([{ prefix: '2a00::/16', strategy: 'lowbyte', hosts: 3 }])).message).toBe('strategy lowbyte needs subnetLength and hosts');
    expect(targetError(() => spaceOf([{ prefix: '2a00::/16', strategy: 'lowbyte', subnetLength: 64 }])).field).toBe('strategy');
  });

  test('random: budget above the prefix size; missing budget', () => {
    const e = targetError(() => spaceOf([{ prefix: '2a00:1::/120', strategy: 'random', budget: 257 }]));
    expect(e).toMatchObject({ field: 'budget' });
    expect(e.message).toBe('budget 257 exceeds the 256 addresses of 2a00:1::/120; lower the budget or use strategy full');
    expect(spaceOf([{ prefix: '2a00:1::/120', strategy: 'random', budget: 256 }]).size).toBe(256);
    expect(targetError(() => spaceOf([{ prefix: '2a00:1::/120', strategy: 'random' }])).message).toBe('strategy random needs budget');
  });

  test('a target entirely excluded is refused, naming the exclusion', () => {
    const r = rulesOf({ exclude: ['2a00:1::/112'] });
    const e = targetError(() => spaceOf([{ prefix: '2a00:2::/120', strategy: 'full' }, { prefix: '2a00:1::/120', strategy: 'full' }], r));
    expect(e).toMatchObject({ ordinal: 1, field: 'prefix' });
    expect(e.message).toBe('prefix 2a00:1::/120 is entirely excluded by spec.exclude[0] 2a00:1::/112; remove the target or the exclusion');
  });

  test('a target excluded whole by several ranges is refused too', () => {
    const halves = rulesOf({ exclude: ['2a00:1::/121', '2a00:1::80/121'] });
    const e = targetError(() => spaceOf([{ prefix: '2a00:1::/120', strategy: 'random', budget: 5 }], halves));
    expect(e).toMatchObject({ ordinal: 0, field: 'prefix' });
    expect(e.message).toBe('prefix 2a00:1::/120 is entirely excluded (spec.exclude[0] 2a00:1::/121; spec.exclude[1] 2a00:1::80/121); remove the target or the exclusions');
    // Non-global space in pieces: outside 2000::/3 around the SRv6 SIDs /16.
    const ng = targetError(() => spaceOf([{ prefix: '4000::/2', strategy: 'random', budget: 5 }]));
    expect(ng.message).toBe('prefix 4000::/2 is entirely excluded (outside 2000::/3, not global unicast; SRv6 SIDs); set allowNonGlobal: true to scan non-global space (labs only)');
    expect(spaceOf([{ prefix: '4000::/2', strategy: 'random', budget: 5 }], LAB).blocks[0]!.excludedRanges).toEqual([]);
    // Almost all: one address left is scannable.
    expect(spaceOf([{ prefix: '2a00:1::/120', strategy: 'full' }], rulesOf({ exclude: ['2a00:1::/121', '2a00:1::80/122', '2a00:1::c0/123', '2a00:1::e0/124', '2a00:1::f0/125', '2a00:1::f8/126', '2a00:1::fc/127', '2a00:1::fe/128'] })).plannedExcluded).toBe(255);
  });

  test('totals above 2^53 are refused; exactly 2^53 is accepted', () => {
    const half: BlockText = { prefix: '2a00::/16', strategy: 'random', budget: 2 ** 52 };
    expect(spaceOf([half, { ...half, prefix: '2a01::/16' }]).size).toBe(2 ** 53);
    const e = targetError(() => spaceOf([half, { ...half, prefix: '2a01::/16' }, { prefix: '2a02::1/128', strategy: 'full' }]));
    expect(e).toMatchObject({ ordinal: 2, field: 'prefix' });
    expect(e.message).toBe('the targets add up to more than 2^53 addresses; split the job or use smaller budgets');
  });
});

// The threaded CPU backend for real: worker threads running the compiled dist/worker/cpu-thread.js (ts-jest
// cannot run a .ts thread entry; `npm run build` builds dist/), byte for byte against CpuGenerator, and the
// ways it must fail: bad input, a closed generator, a thread that dies (never a hang).
import { beforeAll, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { parsePrefix } from '../../lib/core/cidr.js';
import { loadJob, type CompiledJob } from '../../lib/core/job.js';
import { ProbeWriter } from '../../lib/core/probe.js';
import { CpuGenerator, ProbeBatch } from '../../worker/generator.js';

type ThreadsModule = typeof import('../../worker/cpu-threads.js');

const repo = process.cwd();
const moduleFile = path.join(repo, 'dist', 'worker', 'cpu-threads.js');
let m: ThreadsModule;

/** The sources the threads run, compiled: a dist/ older than them would test yesterday's code. */
function staleOutputs(): string[] {
  const stale: string[] = [];
  for (const dir of ['worker', path.join('lib', 'core')]) {
    for (const file of readdirSync(path.join(repo, dir)).filter((f) => f.endsWith('.ts'))) {
      const out = path.join(repo, 'dist', dir, file.replace(/\.ts$/, '.js'));
      let built = 0;
      try {
        built = statSync(out).mtimeMs;
      } catch {
        // missing: stale
      }
      if (built < statSync(path.join(repo, dir, file)).mtimeMs) stale.push(path.join(dir, file));
    }
  }
  return stale;
}

beforeAll(async () => {
  const stale = staleOutputs();
  if (stale.length > 0) throw new Error(`dist/ is missing or older than ${stale.join(', ')}; run npm run build`);
  m = (await import(moduleFile)) as ThreadsModule;
});

function job(targets: string, extra = '', blocklist: string[] = []): CompiledJob {
  // A fresh uid: a fresh seed, so every run checks other permutations.
  return loadJob(`
apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata: {name: threads-test, uid: ${randomBytes(8).toString('hex')}}
spec:
  targets: ${targets}
  rate: {packetsPerSecond: 1000}
${extra}`, 'threads-test', { blocklist: blocklist.map(parsePrefix) });
}

/** Every strategy, every exclusion reason (planned ones in full/lowbyte, drawn ones in random): 917 504 positions. */
const mixed = () =>
  job(`
    - {prefix: "2a00:1::/110", strategy: full}
    - {prefix: "2a00:2:0:1000::/52", strategy: lowbyte, subnetLength: 64, hosts: 32}
    - {prefix: "::/0", strategy: random, budget: 262144}
    - {prefix: "2001::/16", strategy: random, budget: 262144}`,
  '  exclude: ["2a00:1::1:0/112", "2a00:1::2:0/116", "2a00:2:0:1100::/56", "2001:4000::/18"]',
  ['2a00:1::3:0/120', '2001:8000::/20']);

const writerFor = (j: CompiledJob) =>
  new ProbeWriter({ networkId: randomBytes(2).readUInt16BE(0), jobTag: j.tag, macKey: randomBytes(16), contact: 'https://example.org/optout' });

/** Where two batches differ, or undefined: counts, excluded counts, then the first differing probe. */
function difference(a: ProbeBatch, b: ProbeBatch): string | undefined {
  if (a.count !== b.count) return `count ${b.count}, expected ${a.count}`;
  if (JSON.stringify(a.excluded) !== JSON.stringify(b.excluded)) return `excluded ${JSON.stringify(b.excluded)}, expected ${JSON.stringify(a.excluded)}`;
  const pb = a.packetBytes;
  for (let i = 0; i < a.count; i++) {
    if (Buffer.compare(a.addresses.subarray(16 * i, 16 * i + 16), b.addresses.subarray(16 * i, 16 * i + 16)) !== 0) return `address of probe ${i}`;
    if (Buffer.compare(a.packets.subarray(pb * i, pb * i + pb), b.packets.subarray(pb * i, pb * i + pb)) !== 0) return `packet of probe ${i}`;
  }
  return undefined;
}

/**
 * Generates positions [0, size) with CpuGenerator and the threaded one, in batches whose sizes cycle through
 * `sizes`, and compares every batch. Returns the excluded totals by reason.
 */
async function compare(j: CompiledJob, threads: number, capacity: number, sizes: number[], options?: { minThreadPositions?: number }) {
  const writer = writerFor(j);
  const cpu = new CpuGenerator(j.space, writer);
  const threaded = new m.ThreadedCpuGenerator(j.space, writer, threads, options);
  const a = new ProbeBatch(capacity, writer.packetBytes);
  const b = new ProbeBatch(capacity, writer.packetBytes);
  const totals = { never: 0, nonGlobal: 0, exclude: 0, blocklist: 0 };
  try {
    for (let pos = 0, n = 0; pos < j.space.size; n++) {
      const count = Math.min(sizes[n % sizes.length]!, j.space.size - pos);
      const time = Date.now() + n * 977;
      await cpu.generate(pos, count, time, a);
      await threaded.generate(pos, count, time, b);
      const diff = difference(a, b);
      if (diff !== undefined) throw new Error(`positions [${pos}, ${pos + count}): ${diff}`);
      for (const k of m.REASONS) totals[k] += b.excluded[k];
      pos += count;
    }
  } finally {
    await threaded.close();
  }
  return totals;
}

describe('bit-identity with CpuGenerator', () => {
  test('full, lowbyte and random blocks with every exclusion reason: 2 threads, batches of 1 to capacity', async () => {
    const j = mixed();
    const totals = await compare(j, 2, 4096, [4096, 1, 4095, 7, 256, 257, 1000, 4096, 128, 3001]);
    // Every reason occurred, so the per-thread counts and their sum were exercised.
    for (const k of m.REASONS) expect(totals[k]).toBeGreaterThan(0);
    expect(totals.exclude + totals.blocklist).toBeGreaterThanOrEqual(j.space.plannedExcluded);
  });

  test('the same job with 3 threads and every batch threaded (uneven splits, idle threads)', async () => {
    const totals = await compare(mixed(), 3, 1000, [1000, 1, 2, 3, 4, 999, 500, 17], { minThreadPositions: 1 });
    for (const k of m.REASONS) expect(totals[k]).toBeGreaterThan(0);
  });

  test('small spaces: a /120 smaller than the batch, a single random draw, one thread', async () => {
    await compare(job('[{prefix: "2a00:3::/120", strategy: full}]', '  exclude: ["2a00:3::80/121"]'), 1, 4096, [4096]);
    await compare(job('[{prefix: "2a00:4::/48", strategy: random, budget: 1}]'), 2, 16, [16], { minThreadPositions: 1 });
    await compare(job('[{prefix: "2a00:5::/120", strategy: lowbyte, subnetLength: 124, hosts: 3}]'), 2, 8, [8, 1, 5], { minThreadPositions: 1 });
  });

  test('thousands of tiny threaded batches: no thread serves a generation twice or misses one', async () => {
    // Tiny batches finish before the main thread's notify: the race a single Atomics.wait gets wrong.
    const j = job('[{prefix: "2a00:6::/112", strategy: random, budget: 20000}]');
    const writer = writerFor(j);
    const cpu = new CpuGenerator(j.space, writer);
    const threaded = new m.ThreadedCpuGenerator(j.space, writer, 3, { minThreadPositions: 1 });
    const a = new ProbeBatch(4, writer.packetBytes);
    const b = new ProbeBatch(4, writer.packetBytes);
    try {
      for (let pos = 0, n = 0; n < 6000; n++) {
        const count = 1 + (n % 4);
        await cpu.generate(pos, count, n, a);
        await threaded.generate(pos, count, n, b);
        expect(difference(a, b)).toBeUndefined();
        pos += count;
      }
    } finally {
      await threaded.close();
    }
  });

  test('overlapping calls run one after another; switching batches hands the new one to the threads', async () => {
    const j = mixed();
    const writer = writerFor(j);
    const cpu = new CpuGenerator(j.space, writer);
    const threaded = new m.ThreadedCpuGenerator(j.space, writer, 2);
    const ref = [new ProbeBatch(2048, writer.packetBytes), new ProbeBatch(2048, writer.packetBytes)];
    const got = [new ProbeBatch(2048, writer.packetBytes), new ProbeBatch(2048, writer.packetBytes)];
    try {
      for (let round = 0; round < 5; round++) {
        const starts = [round * 4096, 300_000 + round * 4096];
        await Promise.all(starts.map((s, i) => threaded.generate(s, 2048, 42, got[i]!)));
        for (let i = 0; i < 2; i++) {
          await cpu.generate(starts[i]!, 2048, 42, ref[i]!);
          expect(difference(ref[i]!, got[i]!)).toBeUndefined();
        }
      }
    } finally {
      await threaded.close();
    }
  });
});

describe('refusals and failures', () => {
  const j = job('[{prefix: "2a00:7::/112", strategy: full}]');
  const writer = writerFor(j);

  test('bad arguments are refused with clear errors, and the generator stays usable', async () => {
    expect(() => new m.ThreadedCpuGenerator(j.space, writer, 0)).toThrow(/threads must be an integer from 1 to 256, got 0/);
    expect(() => new m.ThreadedCpuGenerator(j.space, writer, 1.5)).toThrow(RangeError);
    expect(() => new m.ThreadedCpuGenerator(j.space, writer, 100_000)).toThrow(/got 100000/);
    expect(() => new m.ThreadedCpuGenerator(j.space, writer, 1, { minThreadPositions: 0 })).toThrow(/minThreadPositions/);
    const g = new m.ThreadedCpuGenerator(j.space, writer, 2);
    const batch = new ProbeBatch(1024, writer.packetBytes);
    try {
      await expect(g.generate(0, 1025, 0, batch)).rejects.toThrow('batch of 1025 exceeds capacity 1024');
      await expect(g.generate(65_000, 1000, 0, batch)).rejects.toThrow(/positions \[65000, 65000 \+ 1000\) are not integers inside the target space \[0, 65536\)/);
      await expect(g.generate(-1, 10, 0, batch)).rejects.toThrow(RangeError);
      await expect(g.generate(0.5, 10, 0, batch)).rejects.toThrow(RangeError);
      await expect(g.generate(0, 1024, 0, new ProbeBatch(1024, writer.packetBytes + 1))).rejects.toThrow(/allocate the batch with writer.packetBytes/);
      const unshared = { ...new ProbeBatch(1024, writer.packetBytes), addresses: new Uint8Array(1024 * 16), capacity: 1024, packetBytes: writer.packetBytes } as unknown as ProbeBatch;
      await expect(g.generate(0, 1024, 0, unshared)).rejects.toThrow(/SharedArrayBuffer/);
      await g.generate(65_536 - 1024, 1024, 0, batch);
      expect(batch.count).toBe(1024);
    } finally {
      await g.close();
    }
  });

  test('close(): a pending generate() and every later one reject', async () => {
    const g = new m.ThreadedCpuGenerator(j.space, writer, 2);
    const batch = new ProbeBatch(61_440, writer.packetBytes);
    await g.generate(0, 4096, 0, batch);
    // The rest of the space: tens of milliseconds of work (4096 positions, ~2 ms, sometimes finished within
    // the turn below on a quiet machine, and the call resolved before close()).
    const pending = g.generate(4096, 61_440, 0, batch);
    // One turn of the event loop: the threads have the batch when close() comes.
    await new Promise((resolve) => setImmediate(resolve));
    await g.close();
    await expect(pending).rejects.toThrow(/closed/);
    await expect(g.generate(0, 4096, 0, batch)).rejects.toThrow(/closed; create a new one/);
    await expect(g.generate(0, 1, 0, batch)).rejects.toThrow(/closed/);
    await g.close(); // twice is harmless
  });

  test('a thread that throws mid-batch fails the pending call and every later one', async () => {
    // The threads rebuild the space from its definition: a smaller one makes them run past its end.
    const small = job('[{prefix: "2a00:8::/120", strategy: full}]');
    const space = Object.assign(Object.create(Object.getPrototypeOf(j.space) as object) as object, j.space, { definition: small.space.definition });
    const g = new m.ThreadedCpuGenerator(space as typeof j.space, writer, 2);
    const batch = new ProbeBatch(4096, writer.packetBytes);
    try {
      await expect(g.generate(0, 4096, 0, batch)).rejects.toThrow(/generator thread [01] failed: .*is outside/);
      await expect(g.generate(0, 4096, 0, batch)).rejects.toThrow(/generator thread [01] failed/);
      await expect(g.generate(0, 1, 0, batch)).rejects.toThrow(/generator thread [01] failed/);
    } finally {
      await g.close();
    }
  });

  test('a thread that cannot start fails the first call instead of hanging', async () => {
    const bad = Object.assign(Object.create(ProbeWriter.prototype) as object, writer, { options: { ...writer.options, networkId: 70_000 } });
    const g = new m.ThreadedCpuGenerator(j.space, bad as ProbeWriter, 1);
    try {
      await expect(g.generate(0, 4096, 0, new ProbeBatch(4096, writer.packetBytes))).rejects.toThrow(/generator thread 0 failed: networkId must be a 16-bit/);
    } finally {
      await g.close();
    }
  });

  test('idle threads do not keep the process alive: a generator never closed still lets node exit', async () => {
    const code = `
      import { loadJob } from ${JSON.stringify(path.join(repo, 'dist/lib/core/job.js'))};
      import { ProbeWriter } from ${JSON.stringify(path.join(repo, 'dist/lib/core/probe.js'))};
      import { ProbeBatch } from ${JSON.stringify(path.join(repo, 'dist/worker/generator.js'))};
      import { ThreadedCpuGenerator } from ${JSON.stringify(moduleFile)};
      const j = loadJob('apiVersion: widescan.dev/v1alpha1\\nkind: WidescanJob\\nmetadata: {name: x}\\nspec:\\n  targets: [{prefix: "2a00:9::/112", strategy: full}]\\n  rate: {packetsPerSecond: 1}\\n');
      const writer = new ProbeWriter({ networkId: 1, jobTag: j.tag, macKey: new Uint8Array(16) });
      const batch = new ProbeBatch(4096, writer.packetBytes);
      await new ThreadedCpuGenerator(j.space, writer, 2).generate(0, 4096, 0, batch);
      console.log(batch.count);`;
    // A file, not `--input-type=module -e`: threads inherit the process's node flags, and that one refuses a file.
    const dir = mkdtempSync(path.join(tmpdir(), 'widescan-threads-'));
    writeFileSync(path.join(dir, 'main.mjs'), code);
    const child = spawn(process.execPath, [path.join(dir, 'main.mjs')], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const code_ = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
    expect({ code: code_, out: out.trim() }).toEqual({ code: 0, out: '4096' });
  });
});

describe('defaultGeneratorThreads', () => {
  const withEnv = (value: string | undefined, fn: () => void) => {
    const saved = process.env.WIDESCAN_GENERATOR_THREADS;
    if (value === undefined) delete process.env.WIDESCAN_GENERATOR_THREADS;
    else process.env.WIDESCAN_GENERATOR_THREADS = value;
    try {
      fn();
    } finally {
      if (saved === undefined) delete process.env.WIDESCAN_GENERATOR_THREADS;
      else process.env.WIDESCAN_GENERATOR_THREADS = saved;
    }
  };

  test('one per core but one (at least one) unless WIDESCAN_GENERATOR_THREADS says', () => {
    withEnv(undefined, () => expect(m.defaultGeneratorThreads()).toBe(Math.max(1, availableParallelism() - 1)));
    withEnv('', () => expect(m.defaultGeneratorThreads()).toBe(Math.max(1, availableParallelism() - 1)));
    withEnv('3', () => expect(m.defaultGeneratorThreads()).toBe(3));
    withEnv('256', () => expect(m.defaultGeneratorThreads()).toBe(256));
  });

  test.each(['0', '-1', '1.5', 'four', '257', '1e9'])('WIDESCAN_GENERATOR_THREADS=%s is refused', (value) => {
    withEnv(value, () => expect(() => m.defaultGeneratorThreads()).toThrow(/WIDESCAN_GENERATOR_THREADS/));
  });
});

// What the Kubernetes operator costs per job: create→Running latency and reconcile durations for a burst of
// N jobs, then steady-state reconciles/s, CPU and memory while N jobs stay Running; and that a job of 2^20
// shards costs the operator and Redis what a 16-shard job does (the planner keeps `window` shards queued).
//
// Two processes, so that the operator's figures are its own: this one (the driver) runs the in-process test
// API server, creates the jobs and watches for `Running`; the forked child runs only the Controller. Redis is
// its own redis-server. No job is ever probed in part 1 (no worker exists); part 2 drains shards with a
// ShardWorker whose transport only counts — no packet is sent anywhere.
//
// Run with `bash bench/reconcile.sh` (compiles this file and what it imports with tsc, then runs it).
process.env.WIDESCAN_LOG_LEVEL ??= 'warn';

import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import type { Redis } from 'ioredis';
import { parse } from 'yaml';
import { readCounters } from '../lib/jobstore.js';
import { keys } from '../lib/keys.js';
import { createLogger } from '../lib/log.js';
import { createMetrics } from '../lib/metrics.js';
import { ShardQueues } from '../lib/queue.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../lib/redis.js';
import { parseOperatorConfig } from '../operator/config.js';
import { Controller } from '../operator/controller.js';
import { windowFor } from '../operator/planner.js';
import { startApiServer, type ApiServer, type KObject } from '../test/apiserver/server.js';
import { ShardWorker } from '../worker/worker.js';

const NS = 'scans';
const WSJ = '/apis/widescan.dev/v1alpha1';
// The operator's defaults (statusIntervalSeconds 2, window 16, fullLimitBits 32, concurrency 4) are what is measured.
const CONFIG_YAML = 'namespace: widescan\nimage: widescan:bench\n';
const STATUS_INTERVAL_S = parseOperatorConfig(CONFIG_YAML, 'bench').statusIntervalSeconds;

// ---- the operator process ----

type Request = { id: number; cmd: 'sample' | 'stop'; gc?: boolean };

export interface OperatorSample {
  /** process.cpuUsage() user + system, µs since start. */
  cpuUs: number;
  rss: number;
  heapUsed: number;
  reconciles: number;
  errors: number;
  /** widescan_reconcile_duration_seconds_count, to check the wrapped timings saw every reconcile. */
  histogramCount: number;
  /** Reconcile durations (ms) since the previous sample. */
  durations: number[];
  /** Keys waiting in the controller's work queue. */
  queued: number;
}

async function operatorMain(): Promise<void> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(process.env.KUBECONFIG!);
  const redis = connectRedis(process.env.WIDESCAN_REDIS_URL!);
  const metrics = createMetrics('operator');
  // Exact durations rather than the histogram's default buckets (5 ms … 10 s): the controller times each
  // reconcile with this histogram's startTimer, so wrapping it sees every reconcile.
  const durations: number[] = [];
  const histogram = metrics.reconcileSeconds;
  const startTimer = histogram.startTimer.bind(histogram);
  histogram.startTimer = ((labels?: Record<string, string>) => {
    const t0 = performance.now();
    const end = startTimer(labels);
    return (more?: Record<string, string>) => {
      durations.push(performance.now() - t0);
      return end(more);
    };
  }) as typeof histogram.startTimer;
  const controller = new Controller({
    kubeConfig: kc,
    redis,
    config: parseOperatorConfig(CONFIG_YAML, 'bench'),
    logger: createLogger('operator'),
    metrics,
    identity: 'bench-operator',
  });
  await controller.start();
  const reply = (m: object) => process.send!(m);
  process.on('message', (req: Request) =>
    void (async () => {
      if (req.cmd === 'stop') {
        await controller.stop();
        redis.disconnect();
        reply({ id: req.id });
        process.disconnect();
        return;
      }
      if (req.gc) (globalThis as { gc?: () => void }).gc!();
      const cpu = process.cpuUsage();
      const mem = process.memoryUsage();
      const results = (await metrics.reconcile.get()).values;
      const count = (await histogram.get()).values.find((v) => v.metricName === 'widescan_reconcile_duration_seconds_count');
      const sample: OperatorSample = {
        cpuUs: cpu.user + cpu.system,
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        reconciles: results.reduce((s, v) => s + v.value, 0),
        errors: results.find((v) => v.labels.result === 'error')?.value ?? 0,
        histogramCount: count?.value ?? 0,
        durations: durations.splice(0),
        queued: controller.snapshot.queued,
      };
      reply({ id: req.id, sample });
    })(),
  );
  reply({ ready: true });
}

// ---- the driver ----

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MiB = (b: number) => (b / 2 ** 20).toFixed(1);

/** Nearest-rank percentile of unsorted values. */
function pct(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
const ms = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

class Operator {
  private nextId = 0;
  private readonly pending = new Map<number, (m: { sample?: OperatorSample }) => void>();

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: { id?: number; sample?: OperatorSample }) => {
      if (m.id === undefined) return;
      this.pending.get(m.id)?.(m);
      this.pending.delete(m.id);
    });
  }

  static async start(kubeconfig: string, redisUrl: string): Promise<Operator> {
    const child = fork(fileURLToPath(import.meta.url), ['operator'], {
      execArgv: ['--expose-gc'],
      env: { ...process.env, KUBECONFIG: kubeconfig, WIDESCAN_REDIS_URL: redisUrl },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`the operator process exited with ${code} before it was ready`)));
      child.on('message', (m: { ready?: boolean }) => m.ready && resolve());
    });
    child.removeAllListeners('exit');
    return new Operator(child);
  }

  private ask(req: Omit<Request, 'id'>): Promise<{ sample?: OperatorSample }> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.child.send({ ...req, id });
    });
  }

  async sample(gc = false): Promise<OperatorSample> {
    return (await this.ask({ cmd: 'sample', gc })).sample!;
  }

  async stop(): Promise<void> {
    const exited = new Promise((r) => this.child.once('exit', r));
    await this.ask({ cmd: 'stop' });
    await exited;
  }
}

/** API server with the CRD, namespaces and the network-key Secret; Redis; the operator process. */
class Env {
  private constructor(
    readonly srv: ApiServer,
    readonly redisServer: EmbeddedRedis,
    readonly redis: Redis,
    readonly queues: ShardQueues,
    readonly operator: Operator,
  ) {}

  static async start(): Promise<Env> {
    const srv = await startApiServer();
    const call = async (method: string, path: string, body: unknown) => {
      const r = await fetch(srv.url + path, { method, headers: { authorization: `Bearer ${srv.token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (r.status !== 201) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
    };
    const crd = parse(readFileSync(join(process.cwd(), 'crds/widescanjobs.widescan.dev.yaml'), 'utf8')) as KObject;
    await call('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd);
    for (const ns of [NS, 'widescan']) await call('POST', '/api/v1/namespaces', { metadata: { name: ns } });
    await call('POST', `/api/v1/namespaces/${NS}/secrets`, { metadata: { name: 'widescan-network' }, data: { key: Buffer.from('bench-network-key').toString('base64') } });
    const redisServer = await startEmbeddedRedis();
    const redis = connectRedis(redisServer.url);
    const operator = await Operator.start(srv.kubeconfig, redisServer.url);
    return new Env(srv, redisServer, redis, new ShardQueues(redis), operator);
  }

  async createJob(name: string, spec: KObject): Promise<void> {
    const body = {
      apiVersion: 'widescan.dev/v1alpha1',
      kind: 'WidescanJob',
      metadata: { name, namespace: NS },
      spec: { allowNonGlobal: true, networkKeySecretRef: { name: 'widescan-network', key: 'key' }, ...spec },
    };
    const r = await fetch(`${this.srv.url}${WSJ}/namespaces/${NS}/widescanjobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.srv.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (r.status !== 201) throw new Error(`creating WidescanJob ${name}: ${r.status} ${await r.text()}`);
  }

  /** Calls back with the time each job is first seen `Running`, from a watch on the jobs. */
  watchRunning(onRunning: (name: string, t: number) => void): () => void {
    const abort = new AbortController();
    const seen = new Set<string>();
    void (async () => {
      const r = await fetch(`${this.srv.url}${WSJ}/namespaces/${NS}/widescanjobs?watch=true`, { headers: { authorization: `Bearer ${this.srv.token}` }, signal: abort.signal });
      const decoder = new TextDecoder();
      let buffered = '';
      for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
        const t = performance.now();
        buffered += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const event = JSON.parse(buffered.slice(0, nl)) as { object: KObject };
          buffered = buffered.slice(nl + 1);
          const name = event.object.metadata?.name as string;
          if (event.object.status?.phase === 'Running' && !seen.has(name)) {
            seen.add(name);
            onRunning(name, t);
          }
        }
      }
    })().catch((err: unknown) => {
      if (!abort.signal.aborted) throw err;
    });
    return () => abort.abort();
  }

  async redisUsed(): Promise<number> {
    return Number(/^used_memory:(\d+)/m.exec(await this.redis.info('memory'))![1]);
  }

  /** Shards in BullMQ, both queues, by state. */
  async queueCounts(): Promise<Record<string, number>> {
    const totals: Record<string, number> = {};
    for (const q of this.queues.all) {
      for (const [state, n] of Object.entries(await q.getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'))) totals[state] = (totals[state] ?? 0) + n;
    }
    return totals;
  }

  async close(): Promise<void> {
    await this.operator.stop();
    await this.queues.close();
    this.redis.disconnect();
    await this.redisServer.stop();
    await this.srv.close();
  }
}

async function waitUntil(what: string, done: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

interface ScaleResult {
  n: number;
  latency?: { median: number; p95: number; max: number; allRunningS: number; reconciles: number; recMedian: number; recP95: number; cpuS: number };
  steady: { reconcilesPerS: number; recMedian: number; recP95: number; cpuPerS: number; errors: number; queued: number; rss: number; heapAfterGc: number; baselineRss: number; baselineHeap: number; redisUsed: number; waitingShards: number };
}

/** Part 1: N small jobs (one 256-address shard each, 1 pps, never probed: no worker exists). */
async function scale(n: number, steadyS: number): Promise<ScaleResult> {
  const env = await Env.start();
  try {
    await sleep(1000); // first pools reconcile, informer start-up
    const base = await env.operator.sample(true);
    let latency: ScaleResult['latency'];
    if (n > 0) {
      const created = new Map<string, number>();
      const running = new Map<string, number>();
      const unwatch = env.watchRunning((name, t) => running.set(name, t));
      await sleep(200); // the watch is open before the first create
      const before = await env.operator.sample();
      const t0 = performance.now();
      let next = 0;
      // 8 creates in flight: a client (kubectl apply -f of a directory, a CI job) creating jobs in a burst.
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          for (let i = next++; i < n; i = next++) {
            const name = `j${i}`;
            created.set(name, performance.now());
            await env.createJob(name, {
              targets: [{ prefix: `2001:db8:${i.toString(16)}::/120`, strategy: 'full' }],
              shardSize: 256,
              rate: { packetsPerSecond: 1 },
            });
          }
        }),
      );
      await waitUntil(`${n} jobs Running`, () => running.size === n, 300_000);
      const t1 = performance.now();
      unwatch();
      const after = await env.operator.sample();
      const lat = [...created].map(([name, t]) => running.get(name)! - t);
      latency = {
        median: pct(lat, 50),
        p95: pct(lat, 95),
        max: Math.max(...lat),
        allRunningS: (t1 - t0) / 1000,
        reconciles: after.reconciles - before.reconciles,
        recMedian: pct(after.durations, 50),
        recP95: pct(after.durations, 95),
        cpuS: (after.cpuUs - before.cpuUs) / 1e6,
      };
      console.error(`  N=${n}: all Running after ${latency.allRunningS.toFixed(2)} s; create→Running median ${ms(latency.median)} ms`);
      await sleep(2 * STATUS_INTERVAL_S * 1000); // the burst's follow-up reconciles spread out
    }
    const s0 = await env.operator.sample();
    const w0 = performance.now();
    await sleep(steadyS * 1000);
    const s1 = await env.operator.sample();
    const wall = (performance.now() - w0) / 1000;
    const afterGc = await env.operator.sample(true);
    const counts = await env.queueCounts();
    if (s1.histogramCount !== s1.reconciles) throw new Error(`the wrapped timer saw ${s1.histogramCount} reconciles, the counter ${s1.reconciles}`);
    return {
      n,
      latency,
      steady: {
        reconcilesPerS: (s1.reconciles - s0.reconciles) / wall,
        recMedian: pct(s1.durations, 50),
        recP95: pct(s1.durations, 95),
        cpuPerS: (s1.cpuUs - s0.cpuUs) / 1e6 / wall,
        errors: s1.errors,
        queued: s1.queued,
        rss: s1.rss,
        heapAfterGc: afterGc.heapUsed,
        baselineRss: base.rss,
        baselineHeap: base.heapUsed,
        redisUsed: await env.redisUsed(),
        waitingShards: (counts.waiting ?? 0) + (counts.prioritized ?? 0),
      },
    };
  } finally {
    await env.close();
  }
}

interface BigSample {
  t: number;
  shardsCompleted: number;
  probes: number;
  queued: number;
  active: number;
  redisUsed: number;
  rss: number;
  heapUsed: number;
  /** Operator reconciles/s and CPU s/s since the previous sample. */
  reconcilesPerS: number;
  cpuPerS: number;
}

/** Part 2: one job of `prefix` (shardSize 4096): planning time, and memory with and without shards draining. */
async function bigJob(label: string, prefix: string, drainS: number): Promise<{ label: string; toRunningMs: number; totalShards: number; idle: BigSample; drain: BigSample[]; keys: number; largest: { key: string; bytes: number }[] }> {
  const env = await Env.start();
  let worker: { stop(): Promise<void> } | undefined;
  try {
    await sleep(1000);
    let runningAt = 0;
    const unwatch = env.watchRunning((_name, t) => (runningAt = t));
    await sleep(200);
    const t0 = performance.now();
    await env.createJob(label, { targets: [{ prefix, strategy: 'full' }], shardSize: 4096, rate: { packetsPerSecond: BIG_RATE } });
    await waitUntil(`${label} Running`, () => runningAt > 0, 120_000);
    unwatch();
    const toRunningMs = runningAt - t0;
    await sleep(2 * STATUS_INTERVAL_S * 1000);
    const id = `${NS}/${label}`;
    let probes = 0;
    let previous = { op: await env.operator.sample(), at: performance.now() };
    const sample = async (t: number, gc: boolean): Promise<BigSample> => {
      const op = await env.operator.sample(gc);
      const at = performance.now();
      const wall = (at - previous.at) / 1000;
      const since = previous.op;
      previous = { op, at };
      const counts = await env.queueCounts();
      return {
        reconcilesPerS: (op.reconciles - since.reconciles) / wall,
        cpuPerS: (op.cpuUs - since.cpuUs) / 1e6 / wall,
        t,
        shardsCompleted: (await readCounters(env.redis, id)).shardsCompleted,
        probes,
        queued: (counts.waiting ?? 0) + (counts.prioritized ?? 0) + (counts.delayed ?? 0),
        active: counts.active ?? 0,
        redisUsed: await env.redisUsed(),
        rss: op.rss,
        heapUsed: op.heapUsed,
      };
    };
    const idle = await sample(0, true);
    const planned = Number(await env.redis.hget(keys.job(id), 'nextShard'));
    const job = await (await fetch(`${env.srv.url}${WSJ}/namespaces/${NS}/widescanjobs/${label}`, { headers: { authorization: `Bearer ${env.srv.token}` } })).json() as KObject;
    const totalShards = job.status.shards.total as number;
    if (planned > BIG_WINDOW) throw new Error(`the planner queued ${planned} shards of ${label}; the window is ${BIG_WINDOW}`);
    const drain: BigSample[] = [];
    if (drainS > 0) {
      // A worker whose transport counts and sends nothing: shards finish and the planner tops the window up.
      const connection = connectRedis(env.redisServer.url);
      const w = new ShardWorker({
        redis: env.redis,
        connection,
        io: {
          setHopLimit() {},
          async send(_packets: Buffer, _bytes: number, _addresses: Uint8Array, from: number, to: number) {
            probes += to - from;
            return { sent: to - from, errors: {} };
          },
        },
        logger: createLogger('worker'),
        metrics: createMetrics('worker'),
        hardware: 'cpu',
      });
      void w.run();
      worker = {
        stop: async () => {
          await w.stop();
          connection.disconnect();
        },
      };
      const d0 = performance.now();
      for (let i = 1; i * 4 <= drainS; i++) {
        await sleep(d0 + i * 4000 - performance.now());
        drain.push(await sample((performance.now() - d0) / 1000, false));
      }
    }
    // Where Redis' memory is: the largest keys (BullMQ's event stream is capped, the rest is per shard in flight).
    const largest: { key: string; bytes: number }[] = [];
    for await (const batch of env.redis.scanStream({ count: 1000 }) as AsyncIterable<string[]>) {
      for (const key of batch) largest.push({ key, bytes: Number(await env.redis.memory('USAGE', key)) });
    }
    largest.sort((a, b) => b.bytes - a.bytes);
    return { label, toRunningMs, totalShards, idle, drain, keys: largest.length, largest: largest.slice(0, 3) };
  } finally {
    await worker?.stop();
    await env.close();
  }
}

async function benchMain(args: string[]): Promise<void> {
  const opt = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1]! : fallback;
  };
  const ns = opt('jobs', '0,1,100,1000').split(',').filter(Boolean).map(Number);
  const steadyS = Number(opt('steady', '10'));
  const drainS = Number(opt('drain', '24'));
  const skipBig = args.includes('--no-big');
  for (const n of ns) if (!Number.isSafeInteger(n) || n < 0 || n > 65535) throw new Error(`--jobs takes job counts 0…65535 (comma-separated), got ${n}`);
  console.error(`machine: ${cpus().length} × ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`);

  const results: ScaleResult[] = [];
  for (const n of ns) results.push(await scale(n, steadyS));
  console.log(`\nBurst: N jobs created 8 at a time into a running operator (times from each POST being sent to the watch seeing Running)\n`);
  console.log('| jobs | create→Running median (ms) | p95 (ms) | max (ms) | all Running after (s) | reconciles | reconcile median (ms) | p95 (ms) | operator CPU (s) |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    const l = r.latency;
    if (l) console.log(`| ${r.n} | ${ms(l.median)} | ${ms(l.p95)} | ${ms(l.max)} | ${l.allRunningS.toFixed(2)} | ${l.reconciles} | ${ms(l.recMedian)} | ${ms(l.recP95)} | ${l.cpuS.toFixed(2)} |`);
  }
  console.log(`\nSteady state: ${steadyS} s with the N jobs Running (status every ${STATUS_INTERVAL_S} s)\n`);
  console.log('| jobs | reconciles/s | reconcile median (ms) | p95 (ms) | operator CPU (s/s) | work-queue backlog | errors | RSS (MiB) | heap after GC (MiB) | at 0 jobs: RSS / heap (MiB) | Redis used (MiB) | shards queued |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const { n, steady: s } of results) {
    console.log(
      `| ${n} | ${s.reconcilesPerS.toFixed(1)} | ${ms(s.recMedian)} | ${ms(s.recP95)} | ${s.cpuPerS.toFixed(3)} | ${s.queued} | ${s.errors} | ${MiB(s.rss)} | ${MiB(s.heapAfterGc)} | ${MiB(s.baselineRss)} / ${MiB(s.baselineHeap)} | ${MiB(s.redisUsed)} | ${s.waitingShards} |`,
    );
  }

  if (skipBig) return;
  const small = await bigJob('small', '2001:db8:1::/112', 0);
  const big = await bigJob('big', '2001:db8::/96', drainS);
  console.log(`\nOne job, shardSize 4096, rate ${BIG_RATE}/s so window ${BIG_WINDOW}, no worker (sampled ${2 * STATUS_INTERVAL_S} s after Running; heap after a forced GC)\n`);
  console.log('| job | shards | create→Running (ms) | shards queued | operator RSS (MiB) | heap (MiB) | Redis used (MiB) |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of [small, big]) console.log(`| ${r.label} | ${r.totalShards} | ${ms(r.toRunningMs)} | ${r.idle.queued} | ${MiB(r.idle.rss)} | ${MiB(r.idle.heapUsed)} | ${MiB(r.idle.redisUsed)} |`);
  if (big.drain.length) {
    console.log(`\nThe ${big.totalShards}-shard job drained by a counting worker (no packet sent), every 4 s\n`);
    console.log('| t (s) | shards completed | probes counted | shards queued | active | operator reconciles/s | operator CPU (s/s) | operator RSS (MiB) | heap (MiB, no GC) | Redis used (MiB) |');
    console.log('|---|---|---|---|---|---|---|---|---|---|');
    for (const d of big.drain) console.log(`| ${d.t.toFixed(0)} | ${d.shardsCompleted} | ${d.probes} | ${d.queued} | ${d.active} | ${d.reconcilesPerS.toFixed(1)} | ${d.cpuPerS.toFixed(3)} | ${MiB(d.rss)} | ${MiB(d.heapUsed)} | ${MiB(d.redisUsed)} |`);
    console.log(`\nRedis after the drain: ${big.keys} keys; largest ${big.largest.map((k) => `${k.key} ${(k.bytes / 1024).toFixed(0)} KiB`).join(', ')}`);
    const worst = Math.max(...big.drain.map((d) => d.queued + d.active));
    if (worst > BIG_WINDOW) throw new Error(`the ${big.totalShards}-shard job had ${worst} shards queued or active; the window is ${BIG_WINDOW}`);
  }
}

// The big job's rate cap: about what one worker sends on this machine (bench/README.md), so its window is
// one second of that (windowFor), and the counting worker drains it at a realistic pace.
const BIG_RATE = 400_000;
const BIG_WINDOW = windowFor(16, { shardSize: 4096 }, BIG_RATE);

if (process.argv[2] === 'operator') await operatorMain();
else await benchMain(process.argv.slice(2));

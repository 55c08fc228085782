// `widescan run job.yaml`: the whole data path of DESIGN.md on one machine — planner (in this process),
// N worker processes, one listener process, the bootstrap API (in this process) — on Redis at --redis or
// on a private redis-server started here and removed after.

import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import type { Peer } from '../bootstrap/store.js';
import { PeerStore } from '../bootstrap/store.js';
import { startBootstrap } from '../bootstrap/service.js';
import type { CompiledJob } from '../lib/core/job.js';
import { macKeyFor, networkIdOf, networkKeyBytes } from '../lib/core/keys.js';
import type { JobStatus } from '../lib/core/status.js';
import { loadJob, removeJob } from '../lib/jobstore.js';
import { createLogger } from '../lib/log.js';
import { createMetrics, recordJobStatus } from '../lib/metrics.js';
import { serveMetrics } from '../lib/serve.js';
import { ShardQueues } from '../lib/queue.js';
import type { Redis } from 'ioredis';
import { stopChild } from '../lib/proc.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../lib/redis.js';
import { Planner } from '../operator/planner.js';

export interface RunOptions {
  redis?: string;
  output?: string;
  workers: number;
  networkKeyFile?: string;
  blocklist: string[];
  fullLimitBits: number;
  progress: boolean;
  /** For tests: how long a killed worker's shard stays locked before redelivery. */
  lockMs?: number;
  /** Port of the bootstrap API and control panel on 127.0.0.1 (0: any free one). */
  bootstrapPort: number;
  /** Enables the control panel's admin API. */
  adminToken?: string;
  /**
   * Serve /metrics: the planner (job gauges) on this port, the listener on +1, worker i on +2+i (0: none). The
   * bootstrap serves its own on the bootstrap port.
   */
  metricsPort?: number;
}

export interface RunResult {
  status: JobStatus;
  peers: Peer[];
  /** From registration to the last shard done: the sending time, for a probes/s figure. */
  sendSeconds: number;
}

const here = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));

function startChild(script: string, env: Record<string, string>, name: string): Promise<ChildProcess> {
  const child = fork(here(script), [], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`${name} exited during start-up (code ${code}); see its log above`));
    child.once('exit', onExit);
    child.once('message', (m: { type?: string }) => {
      if (m?.type !== 'ready') return;
      child.off('exit', onExit);
      resolve(child);
    });
  });
}

function askFlush(listener: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { type?: string; error?: string }) => {
      if (m?.type !== 'flushed') return;
      listener.off('message', onMessage);
      if (m.error) reject(new Error(m.error));
      else resolve();
    };
    listener.on('message', onMessage);
    listener.send({ type: 'flush' });
  });
}

/** The network's shared secret: --network-key-file, $WIDESCAN_NETWORK_KEY_FILE, $WIDESCAN_NETWORK_KEY. */
export function networkSecretFrom(file: string | undefined): string {
  const path = file ?? process.env.WIDESCAN_NETWORK_KEY_FILE;
  if (path) return readFileSync(path, 'utf8').trim();
  // No network given: a private one, so replies still verify; no other instance can recognise us.
  return process.env.WIDESCAN_NETWORK_KEY || randomBytes(32).toString('hex');
}

async function allPeers(store: PeerStore, job: string): Promise<Peer[]> {
  const peers: Peer[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.list({ job, limit: 1000, cursor });
    peers.push(...page.peers);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return peers.sort((a, b) => (a.kind === b.kind ? a.address.localeCompare(b.address) : a.kind === 'widescan' ? -1 : 1));
}

export function writePeers(path: string, peers: Peer[]): void {
  if (path.endsWith('.csv')) {
    const rows = peers.map((p) => [p.address, p.kind, p.job, p.rttMs ?? '', p.firstSeen, p.lastSeen].join(','));
    writeFileSync(path, ['address,kind,job,rttMs,firstSeen,lastSeen', ...rows].join('\n') + '\n');
  } else {
    writeFileSync(path, peers.map((p) => JSON.stringify(p)).join('\n') + (peers.length ? '\n' : ''));
  }
}

class Progress {
  private bar: cliProgress.SingleBar | undefined;
  private lastLine = 0;

  constructor(tty: boolean, private readonly total: number) {
    if (tty) {
      this.bar = new cliProgress.SingleBar(
        { format: 'scanning [{bar}] {percentage}% | {probes} probes | {rate} pps | {peers} peers | ETA {eta_formatted}', stream: process.stderr, etaBuffer: 20 },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, 0, { probes: 0, rate: 0, peers: 0 });
    }
  }

  update(s: JobStatus, rate: number): void {
    const done = s.shards.completed + s.shards.failed;
    if (this.bar) {
      this.bar.update(done, { probes: s.probesSent, rate: Math.round(rate), peers: s.repliesValid });
    } else if (Date.now() - this.lastLine >= 2000) {
      this.lastLine = Date.now();
      process.stderr.write(`progress ${s.progress} shards ${done}/${this.total} probes ${s.probesSent} rate ${Math.round(rate)}/s replies ${s.repliesValid}\n`);
    }
  }

  stop(): void {
    this.bar?.stop();
  }
}

/** Fails fast on an unreachable Redis (the clients themselves retry forever, as BullMQ needs). */
async function reachable(redis: Redis, url: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis at ${url} did not answer within 5 s`)), 5000);
  });
  try {
    await Promise.race([redis.ping(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** With --metrics-port, how long a finished run waits for one more scrape of its final values. */
const FINAL_SCRAPE_WAIT_MS = 5000;

/** Runs a compiled job to its end; throws on infrastructure failures (exit 1). */
export async function runJob(job: CompiledJob, o: RunOptions): Promise<RunResult> {
  const logger = createLogger('run');
  const cleanups: Array<() => Promise<unknown>> = [];
  const cleanup = async () => {
    for (const f of cleanups.reverse()) await f().catch((err) => logger.warn({ err: String(err) }, 'clean-up step failed'));
  };
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    let redisUrl = o.redis;
    if (!redisUrl) {
      const embedded: EmbeddedRedis = await startEmbeddedRedis();
      cleanups.push(() => embedded.stop());
      redisUrl = embedded.url;
    }
    const redis = connectRedis(redisUrl);
    cleanups.push(async () => redis.disconnect());
    await reachable(redis, redisUrl);
    const secret = networkSecretFrom(o.networkKeyFile);
    const networkKey = networkKeyBytes(secret);
    const token = randomBytes(24).toString('hex');

    const bootstrap = await startBootstrap({
      redisUrl, listenerToken: token, adminToken: o.adminToken, port: o.bootstrapPort, host: '127.0.0.1', logger: createLogger('bootstrap'),
    });
    cleanups.push(() => bootstrap.close());
    if (o.adminToken) process.stderr.write(`control panel: ${bootstrap.url}/ (sign in with the admin token)\n`);
    const metricsPort = (offset: number): Record<string, string> => (o.metricsPort ? { WIDESCAN_METRICS_PORT: String(o.metricsPort + offset) } : {});
    const listener = await startChild('../listener/main.js', {
      WIDESCAN_REDIS_URL: redisUrl,
      WIDESCAN_BOOTSTRAP_URL: bootstrap.url,
      WIDESCAN_LISTENER_TOKEN: token,
      WIDESCAN_NETWORK_KEY: secret,
      ...metricsPort(1),
    }, 'listener');
    cleanups.push(() => stopChild(listener, 10_000));

    const queues = new ShardQueues(redis);
    cleanups.push(() => queues.close());
    const planner = new Planner(redis, queues, { window: Math.max(2, o.workers * 3) });
    await planner.submit(job, {
      macKey: macKeyFor(networkKey, job.tag),
      networkId: networkIdOf(networkKey),
      blocklist: o.blocklist,
      fullLimitBits: o.fullLimitBits,
    });
    // On a shared Redis, leave nothing of the job behind but its peers.
    if (o.redis) cleanups.push(() => removeJob(redis, job.id, job.tag));

    const workers: ChildProcess[] = [];
    for (let i = 0; i < o.workers; i++) {
      const env: Record<string, string> = { WIDESCAN_REDIS_URL: redisUrl, ...metricsPort(2 + i) };
      if (o.lockMs) env.WIDESCAN_LOCK_MS = String(o.lockMs);
      workers.push(await startChild('../worker/main.js', env, `worker ${i}`));
    }
    cleanups.push(() => Promise.all(workers.map((w) => stopChild(w, 10_000))));

    const metrics = createMetrics('planner');
    // Scrapes of the planner's /metrics so far: at the end, one more is awaited (see below).
    let scrapes = 0;
    if (o.metricsPort) {
      const server = await serveMetrics(metrics.registry, o.metricsPort, () => redis.status === 'ready');
      server.on('request', (req: { url?: string }) => {
        if (req.url?.split('?')[0] === '/metrics') scrapes++;
      });
      cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    }
    const tick = async () => {
      const s = await planner.tick(job.id);
      recordJobStatus(metrics, job.id, s);
      // Queue counts cost Redis round trips every tick: only when someone scrapes them.
      if (o.metricsPort) for (const [state, n] of Object.entries(await queues.depth())) metrics.queueDepth.set({ state }, n);
      return s;
    };
    const progress = new Progress(o.progress, job.totalShards);
    let status = await tick();
    let lastProbes = 0;
    let lastAt = Date.now();
    let rate = 0;
    while (status.phase === 'Running' && !interrupted) {
      await new Promise((r) => setTimeout(r, 200));
      status = await tick();
      const now = Date.now();
      rate = 0.7 * rate + (0.3 * (status.probesSent - lastProbes) * 1000) / Math.max(1, now - lastAt);
      lastProbes = status.probesSent;
      lastAt = now;
      progress.update(status, rate);
      if (workers.every((w) => w.exitCode !== null || w.signalCode !== null)) throw new Error('every worker process has exited; see their logs above');
    }
    progress.stop();
    if (interrupted) {
      // Cancel first and let the workers abandon their shards themselves (they look at the flag at every
      // checkpoint), so that no probe of this job leaves after we return.
      await planner.cancel(job.id);
      const deadline = Date.now() + 5000;
      while ((await planner.activeShards(job.id)) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      throw new Error('interrupted: the job was cancelled');
    }
    await askFlush(listener);
    status = await tick();
    // Someone scrapes us: let them see the final values (progress 1, the phase) before the port closes,
    // waiting for their next scrape, at most FINAL_SCRAPE_WAIT_MS.
    if (scrapes > 0) {
      const seen = scrapes;
      const deadline = Date.now() + FINAL_SCRAPE_WAIT_MS;
      while (scrapes === seen && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    }
    const record = await loadJob(redis, job.id);
    const sendSeconds = ((record.lastShardDoneMs ?? Date.now()) - (record.startTimeMs ?? Date.now())) / 1000;
    const peers = await allPeers(new PeerStore(redis), job.id);
    if (o.output) writePeers(o.output, peers);
    return { status, peers, sendSeconds };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

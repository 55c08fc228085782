// The worker: takes shards from BullMQ, generates their probes, sends them under the job-wide rate cap,
// checkpoints inside the shard (a redelivered shard resumes there), stops promptly when its job is
// cancelled or removed, parks it while its job is suspended, follows rate changes, and on SIGTERM hands the
// current shard back to the queue with its checkpoint.

import { DelayedError, WaitingError, Worker, type ConnectionOptions, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { jobTagHex } from '../lib/core/keys.js';
import { ProbeWriter } from '../lib/core/probe.js';
import { shardAt } from '../lib/core/shards.js';
import { addCounters, finishShard, loadJob, type JobRecord } from '../lib/jobstore.js';
import { BULL_PREFIX, keys } from '../lib/keys.js';
import type { Icmp6Transport } from '../lib/icmp6native.js';
import type { Logger } from '../lib/log.js';
import type { Metrics } from '../lib/metrics.js';
import { queuesReadBy, type ShardData } from '../lib/queue.js';
import { TokenBucket } from '../lib/ratelimit.js';
import type { Hardware } from '../lib/core/job.js';
import { createGenerator } from './backends.js';
import { ProbeBatch, type AddressGenerator } from './generator.js';

/** Where a shard stands; stored as the BullMQ job's progress. */
export interface Checkpoint {
  pass: number;
  position: number;
  /** Excluded positions counted so far in pass 0. */
  excluded: number;
}

export interface WorkerOptions {
  redis: Redis;
  connection: ConnectionOptions;
  /** Raw ICMPv6 sending (sendmmsg addon, or raw-socket). */
  io: Pick<Icmp6Transport, 'send' | 'setHopLimit'>;
  logger: Logger;
  metrics: Metrics;
  /** What this node offers: a GPU pool worker runs `gpu`, a CPU pool worker `cpu`. */
  hardware: Hardware;
  checkpointMs?: number;
  /** How long a shard of a suspended job is parked (delayed in BullMQ) before it is looked at again. */
  suspendRecheckMs?: number;
  /** BullMQ lock; a worker silent this long (killed) has its shard redelivered. */
  lockMs?: number;
  concurrency?: number;
  /** How a job's generator is made (default: createGenerator, which picks the backend for this machine). */
  createGenerator?: typeof createGenerator;
  /**
   * Batches in flight at once (default 1: each batch is sent before the next is generated). More lets a
   * transport that sends on other threads (SenderThreads) send several while the next is generated.
   */
  sendAhead?: number;
}

interface JobContext {
  record: JobRecord;
  generator: AddressGenerator;
  /** sendAhead batches, used in turn: the one to fill next is the oldest sent. */
  batches: ProbeBatch[];
  bucket: TokenBucket;
}

const SET_IF_EXISTS = "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a worker learns about its job at each checkpoint. */
type JobControl = { state: 'run'; packetsPerSecond: number; blocklistDigest: string } | { state: 'suspended' } | { state: 'stopped'; why: string };

export class ShardWorker {
  /** One BullMQ worker per queue this kind of worker reads (a GPU-capable one also takes `hardware: gpu` shards). */
  private readonly workers: Worker<ShardData>[];
  private readonly contexts = new Map<string, JobContext>();
  private stopping = false;
  private readonly checkpointMs: number;
  private readonly suspendRecheckMs: number;
  private readonly sendAhead: number;

  constructor(private readonly options: WorkerOptions) {
    this.sendAhead = options.sendAhead ?? 1;
    if (!Number.isSafeInteger(this.sendAhead) || this.sendAhead < 1 || this.sendAhead > 256) {
      throw new RangeError(`sendAhead must be an integer from 1 to 256 batches, got ${String(options.sendAhead)}`);
    }
    this.checkpointMs = options.checkpointMs ?? 1000;
    this.suspendRecheckMs = options.suspendRecheckMs ?? 2000;
    const lockDuration = options.lockMs ?? 30_000;
    this.workers = queuesReadBy(options.hardware).map((name) => {
      const worker = new Worker<ShardData>(name, (job, token) => this.process(job, token!), {
        connection: options.connection,
        prefix: BULL_PREFIX,
        concurrency: options.concurrency ?? 1,
        lockDuration,
        stalledInterval: lockDuration,
        maxStalledCount: 5,
        autorun: false,
      });
      worker.on('failed', (job, err) => void this.onFailed(job, err));
      worker.on('error', (err) => options.logger.error({ err }, 'worker error'));
      return worker;
    });
  }

  async run(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.run()));
  }

  /** Graceful stop: the running shard is checkpointed and returned to the queue, then BullMQ closes. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.workers.map((w) => w.close()));
    for (const ctx of this.contexts.values()) await ctx.generator.close();
    this.contexts.clear();
  }

  private async dropContext(id: string): Promise<void> {
    const ctx = this.contexts.get(id);
    this.contexts.delete(id);
    await ctx?.generator.close();
  }

  /** The job's context; `tag` is the registered job's, so a job recreated under the same name is not served stale. */
  private async context(id: string, tag: string, digest: string): Promise<JobContext> {
    const cached = this.contexts.get(id);
    if (cached && jobTagHex(cached.record.job.tag) === tag && cached.record.blocklistDigest === digest) return cached;
    if (cached) await this.dropContext(id);
    const record = await loadJob(this.options.redis, id);
    const { job } = record;
    const writer = new ProbeWriter({
      networkId: record.networkId,
      jobTag: job.tag,
      macKey: record.macKey,
      contact: job.spec.probe.contact,
    });
    // The job's own `hardware` picks the backend (with this machine's GPU, see backends.ts); this worker's
    // kind only decides which queues it reads.
    const generator = await (this.options.createGenerator ?? createGenerator)(job.spec.hardware, job.space, writer);
    this.options.logger.info({ job: id, hardware: job.spec.hardware, backend: generator.backend }, 'generator ready');
    // A batch is ~10 ms of probes at the job's rate: small enough to pace smoothly, large enough to amortise
    // a Redis round trip for its tokens.
    const size = Math.max(16, Math.min(4096, Math.ceil(record.packetsPerSecond / 100)));
    const batches = Array.from({ length: this.sendAhead }, () => new ProbeBatch(size, writer.packetBytes));
    const ctx: JobContext = { record, generator, batches, bucket: new TokenBucket(this.options.redis, keys.rate(id)) };
    // Only into a job that still exists: a key written after the finalizer's clean-up would never go away.
    await this.options.redis.eval(SET_IF_EXISTS, 1, keys.job(id), 'backend', generator.backend);
    // A long-lived worker sees many jobs; keep the most recent few.
    if (this.contexts.size >= 16) await this.dropContext(this.contexts.keys().next().value as string);
    this.contexts.set(id, ctx);
    return ctx;
  }

  private async process(bull: Job<ShardData>, token: string): Promise<void> {
    const { job: id, shard: k } = bull.data;
    const { redis, logger, metrics, io } = this.options;
    // The shard's id carries the tag of the job it was planned for (shardJobId): a shard of a deleted job
    // whose name was reused must not run as the new job's.
    const shardTag = String(bull.id).split('-')[0]!;
    let control = await this.control(id, shardTag);
    if (control.state === 'stopped') {
      logger.info({ job: id, shard: k, why: control.why }, 'shard dropped');
      return;
    }
    if (control.state === 'suspended') {
      // Parked again before anything is loaded: a suspended job costs one Redis round trip per recheck.
      await bull.moveToDelayed(Date.now() + this.suspendRecheckMs, token);
      throw new DelayedError();
    }
    const ctx = await this.context(id, shardTag, control.blocklistDigest);
    const { job } = ctx.record;
    const shard = shardAt(k, job.space.size, job.spec.shardSize);
    const saved = bull.progress as Partial<Checkpoint> | number;
    const cp: Checkpoint =
      typeof saved === 'object' && saved !== null && typeof saved.position === 'number'
        ? { pass: saved.pass ?? 0, position: saved.position, excluded: saved.excluded ?? 0 }
        : { pass: 0, position: shard.start, excluded: 0 };
    if (cp.position !== shard.start || cp.pass !== 0) logger.info({ job: id, shard: k, ...cp }, 'resuming shard from checkpoint');
    const passes = 1 + job.spec.probe.retries;
    let unsaved = { sent: 0, errors: 0 };
    let lastSave = Date.now();
    // Sends in flight, oldest first; the checkpoint counts their positions as done, so every save (and
    // therefore every hand-back and the shard's end) waits for them first.
    const inFlight: Promise<void>[] = [];
    let sendFailure: unknown;
    let turn = 0;
    const settle = async () => {
      await Promise.all(inFlight.splice(0));
      if (sendFailure !== undefined) throw sendFailure;
    };

    const save = async () => {
      await settle();
      await bull.updateProgress({ ...cp });
      await addCounters(redis, id, { probesSent: unsaved.sent, sendErrors: unsaved.errors });
      unsaved = { sent: 0, errors: 0 };
      lastSave = Date.now();
    };
    // Hands the shard back to BullMQ's delayed set with its checkpoint, without using up an attempt.
    const park = async (delayMs: number, why: string): Promise<never> => {
      await save();
      await bull.moveToDelayed(Date.now() + delayMs, token);
      logger.info({ job: id, shard: k, why, ...cp }, 'shard parked');
      throw new DelayedError();
    };

    io.setHopLimit(job.spec.probe.hopLimit);
    for (; cp.pass < passes; cp.pass++, cp.position = shard.start) {
      while (cp.position < shard.end) {
        if (this.stopping) {
          await save();
          await bull.moveToWait(token);
          logger.info({ job: id, shard: k, ...cp }, 'shard returned to the queue');
          throw new WaitingError();
        }
        if (Date.now() - lastSave >= this.checkpointMs) {
          await save();
          control = await this.control(id, shardTag);
        }
        if (control.state === 'stopped') {
          logger.info({ job: id, shard: k, why: control.why }, 'shard abandoned');
          // The batches are reused by the next shard: nothing may still be sending from them.
          await settle().catch(() => undefined);
          return;
        }
        // The operator's blocklist changed: the shard resumes at once, recompiled with it.
        if (control.state === 'run' && control.blocklistDigest !== ctx.record.blocklistDigest) return park(0, 'blocklist changed');
        if (control.state === 'suspended') return park(this.suspendRecheckMs, 'job suspended');
        // Tokens first, then generate: the send time in each probe's MAC (its RTT) is the time it leaves.
        const batch = ctx.batches[turn]!;
        const grant = await ctx.bucket.take(Math.min(batch.capacity, shard.end - cp.position), control.packetsPerSecond);
        if (grant.granted === 0) {
          await sleep(Math.max(1, grant.waitMs));
          continue;
        }
        // This batch was the oldest in flight: it must have left before it is filled again.
        if (inFlight.length === ctx.batches.length) await inFlight.shift();
        if (sendFailure !== undefined) throw sendFailure;
        turn = (turn + 1) % ctx.batches.length;
        const count = grant.granted;
        const began = process.hrtime.bigint();
        await ctx.generator.generate(cp.position, count, Date.now(), batch);
        metrics.generationSeconds.observe({ backend: ctx.generator.backend }, Number(process.hrtime.bigint() - began) / 1e9);
        metrics.addressesGenerated.inc({ backend: ctx.generator.backend }, count);
        const { packets, packetBytes, addresses } = batch;
        const sending = io.send(packets, packetBytes, addresses, 0, batch.count).then((result) => {
          unsaved.sent += result.sent;
          metrics.probesSent.inc({ job: id, backend: ctx.generator.backend }, result.sent);
          for (const [reason, n] of Object.entries(result.errors)) {
            unsaved.errors += n;
            metrics.sendErrors.inc({ job: id, reason }, n);
          }
        });
        // Held, not awaited yet: a failure is kept (no unhandled rejection) and thrown at the next turn or save.
        inFlight.push(sending.catch((err: unknown) => void (sendFailure ??= err)));
        if (cp.pass === 0) cp.excluded += batch.excludedTotal();
        cp.position += count;
      }
    }
    await save();
    if (await finishShard(redis, id, k, 'completed', cp.excluded)) logger.debug({ job: id, shard: k }, 'shard completed');
  }

  /** The job's controls as the operator last set them; a job that is gone or cancelled stops its shards. */
  private async control(id: string, shardTag: string): Promise<JobControl> {
    const [phase, cancelled, suspended, pps, tag, digest] = await this.options.redis.hmget(keys.job(id), 'phase', 'cancelled', 'suspended', 'packetsPerSecond', 'tag', 'blocklistDigest');
    if (phase === null) return { state: 'stopped', why: 'job removed' };
    if (tag !== shardTag) return { state: 'stopped', why: `shard of an earlier job of this name (tag ${shardTag}, now ${tag})` };
    if (cancelled === '1') return { state: 'stopped', why: 'job cancelled' };
    if (suspended === '1') return { state: 'suspended' };
    const packetsPerSecond = Number(pps);
    // Never send uncapped: a job without a usable rate is not scanned.
    if (!(packetsPerSecond > 0)) return { state: 'stopped', why: `job has no valid packetsPerSecond (${pps})` };
    return { state: 'run', packetsPerSecond, blocklistDigest: digest ?? '' };
  }

  private async onFailed(bull: Job<ShardData> | undefined, err: Error): Promise<void> {
    if (!bull || err instanceof WaitingError || err instanceof DelayedError) return;
    const final = bull.attemptsMade >= (bull.opts.attempts ?? 1);
    this.options.logger.error({ err, job: bull.data.job, shard: bull.data.shard, attempt: bull.attemptsMade, final }, 'shard failed');
    if (final) await finishShard(this.options.redis, bull.data.job, bull.data.shard, 'failed', 0);
  }
}

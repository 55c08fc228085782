// The operator's planning core, shared by `widescan run` and the Kubernetes operator: register a compiled
// job, keep a bounded window of its shards in the queue (topped up as shards finish, so a job of 10^9
// addresses costs the queue what a job of 10^5 does), move its phase, and render its status.

import type { Redis } from 'ioredis';
import type { CompiledJob, JobSpec } from '../lib/core/job.js';
import { nextPhase, type JobStatus } from '../lib/core/status.js';
import {
  CompiledJobCache,
  loadJob,
  readCounters,
  registerJob,
  removeJob,
  setJobControls,
  setJobFields,
  statusOf,
  type JobRecord,
  type RegisterOptions,
} from '../lib/jobstore.js';
import { keys, type JobCounters } from '../lib/keys.js';
import { shardJobId, type ShardQueues } from '../lib/queue.js';

export interface PlannerOptions {
  /** Shards queued or running per job at most — raised for fast jobs to one second of sending (see windowFor). */
  window: number;
}

/** Above this many shards per job the window stops growing with the rate. */
const MAX_WINDOW = 1024;

/**
 * A job's window: at least `base` shards, and enough for one second of sending at its rate cap, so that a
 * planner topping up every quarter second never lets the workers run dry. Memory stays bounded by the rate,
 * never by the size of the job.
 */
export function windowFor(base: number, spec: Pick<JobSpec, 'shardSize'>, packetsPerSecond: number): number {
  return Math.min(MAX_WINDOW, Math.max(base, Math.ceil(packetsPerSecond / spec.shardSize)));
}

export class Planner {
  /** Compiled jobs, shared with the controller (compiling is ms to s with a large blocklist). */
  readonly compiled = new CompiledJobCache(4096);

  constructor(
    private readonly redis: Redis,
    private readonly queues: ShardQueues,
    private readonly options: PlannerOptions,
  ) {
    if (!Number.isSafeInteger(options.window) || options.window < 1) throw new RangeError(`window must be a positive integer, got ${options.window}`);
  }

  async submit(job: CompiledJob, options: RegisterOptions): Promise<void> {
    await registerJob(this.redis, job, options);
    await this.topUp(job.id);
  }

  /** Enqueues shards until the window is full; returns how many were added. */
  async topUp(id: string): Promise<number> {
    const record = await loadJob(this.redis, id, this.compiled);
    return this.fill(record, await readCounters(this.redis, id));
  }

  private async fill(record: JobRecord, counters: JobCounters): Promise<number> {
    if (record.cancelled || record.suspended || record.phase !== 'Running') return 0;
    const { id, tag, totalShards, spec } = record.job;
    const queue = this.queues.for(spec.hardware);
    const inFlight = record.nextShard - counters.shardsCompleted - counters.shardsFailed;
    const room = Math.min(windowFor(this.options.window, spec, record.packetsPerSecond) - inFlight, totalShards - record.nextShard);
    for (let added = 0; added < room; added++) {
      const k = record.nextShard;
      // Add first, then advance: a planner that dies in between re-adds the same id, which BullMQ ignores
      // while the shard exists (at worst a finished shard is probed once more; counters stay exact).
      await queue.add('shard', { job: id, shard: k }, { jobId: shardJobId(tag, k) });
      await this.redis.hset(keys.job(id), 'nextShard', String(k + 1));
      record.nextShard = k + 1;
    }
    return Math.max(0, room);
  }

  /** One planning step: advance the phase, top up, return the status. */
  async tick(id: string, nowMs = Date.now()): Promise<JobStatus> {
    const record = await loadJob(this.redis, id, this.compiled);
    const counters = await readCounters(this.redis, id);
    const phase = nextPhase({
      phase: record.phase,
      suspended: record.suspended,
      totalShards: record.job.totalShards,
      counters,
      lastShardDoneMs: record.lastShardDoneMs,
      replyTimeoutMs: record.job.spec.probe.replyTimeoutSeconds * 1000,
      nowMs,
    });
    if (phase !== record.phase) {
      const fields: Record<string, string> = { phase };
      if (phase === 'Succeeded' || phase === 'Failed') fields.completionTime = String((record.completionTimeMs = nowMs));
      await setJobFields(this.redis, id, fields);
      record.phase = phase;
    }
    await this.fill(record, counters);
    return statusOf(record, counters, nowMs);
  }

  /** Suspends/resumes and changes the rate cap; running shards see it at their next checkpoint. */
  async control(id: string, controls: { suspended: boolean; packetsPerSecond: number }): Promise<void> {
    await setJobControls(this.redis, id, controls);
  }

  /** Stops the job: workers see the flag at their next checkpoint; queued shards are dropped. */
  async cancel(id: string): Promise<void> {
    await setJobFields(this.redis, id, { cancelled: '1' });
    for (const queue of this.queues.all) {
      const waiting = await queue.getJobs(['waiting', 'delayed', 'prioritized']);
      await Promise.all(waiting.filter((j) => j.data.job === id).map((j) => j.remove().catch(() => undefined)));
    }
  }

  /** Shards of the job a worker holds right now. */
  async activeShards(id: string): Promise<number> {
    let n = 0;
    for (const queue of this.queues.all) n += (await queue.getJobs(['active'])).filter((j) => j.data.job === id).length;
    return n;
  }

  /**
   * Cancels the job and, once no worker holds one of its shards any more, removes all its Redis state.
   * Returns false while shards are still active (call again): removing earlier would let a worker that has
   * not seen the cancel flag yet go on probing.
   */
  async remove(id: string, tag: number): Promise<boolean> {
    await this.cancel(id);
    if ((await this.activeShards(id)) > 0) return false;
    for (const queue of this.queues.all) {
      const failed = await queue.getJobs(['failed', 'completed']);
      await Promise.all(failed.filter((j) => j.data.job === id).map((j) => j.remove().catch(() => undefined)));
    }
    await removeJob(this.redis, id, tag);
    return true;
  }
}

// The operator's planning core, shared by `widescan run` and the Kubernetes operator: register a compiled
// job, keep a bounded window of its shards in the queue (topped up as shards finish, so a job of 10^9
// addresses costs the queue what a job of 10^5 does), move its phase, and render its status.

import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { CompiledJob } from '../lib/core/job.js';
import { nextPhase, type JobStatus } from '../lib/core/status.js';
import { CompiledJobCache, loadJob, readCounters, registerJob, setJobFields, statusOf, type JobRecord, type RegisterOptions } from '../lib/jobstore.js';
import { keys, type JobCounters } from '../lib/keys.js';
import { shardJobId, type ShardData } from '../lib/queue.js';

export interface PlannerOptions {
  /** Shards queued or running per job at most. */
  window: number;
}

export class Planner {
  private readonly compiled = new CompiledJobCache();

  constructor(
    private readonly redis: Redis,
    private readonly queue: Queue<ShardData>,
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
    if (record.cancelled || record.phase !== 'Running') return 0;
    const { id, tag, totalShards } = record.job;
    const inFlight = record.nextShard - counters.shardsCompleted - counters.shardsFailed;
    const room = Math.min(this.options.window - inFlight, totalShards - record.nextShard);
    for (let added = 0; added < room; added++) {
      const k = record.nextShard;
      // Add first, then advance: a planner that dies in between re-adds the same id, which BullMQ ignores
      // while the shard exists (at worst a finished shard is probed once more; counters stay exact).
      await this.queue.add('shard', { job: id, shard: k }, { jobId: shardJobId(tag, k) });
      await this.redis.hset(keys.job(id), 'nextShard', String(k + 1));
      record.nextShard = k + 1;
    }
    return Math.max(0, room);
  }

  /** One planning step: top up, advance the phase, return the status. */
  async tick(id: string, nowMs = Date.now()): Promise<JobStatus> {
    const record = await loadJob(this.redis, id, this.compiled);
    const counters = await readCounters(this.redis, id);
    await this.fill(record, counters);
    const phase = nextPhase({
      phase: record.phase,
      suspended: record.job.spec.suspend,
      totalShards: record.job.totalShards,
      counters,
      lastShardDoneMs: record.lastShardDoneMs,
      replyTimeoutMs: record.job.spec.probe.replyTimeoutSeconds * 1000,
      nowMs,
    });
    let completionTimeMs = record.completionTimeMs;
    if (phase !== record.phase) {
      const fields: Record<string, string> = { phase };
      if (phase === 'Succeeded' || phase === 'Failed') fields.completionTime = String((completionTimeMs = nowMs));
      await setJobFields(this.redis, id, fields);
    }
    return statusOf(record, counters, nowMs, phase, completionTimeMs);
  }

  /** Stops the job: workers see the flag at their next batch; queued shards are dropped. */
  async cancel(id: string): Promise<void> {
    await setJobFields(this.redis, id, { cancelled: '1' });
    const waiting = await this.queue.getJobs(['waiting', 'delayed', 'prioritized']);
    await Promise.all(waiting.filter((j) => j.data.job === id).map((j) => j.remove().catch(() => undefined)));
  }
}

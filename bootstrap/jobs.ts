// Job progress for the control panel, read from the job registry the planner keeps in Redis. Read-only:
// the status is computed as the planner's tick computes it, but nothing is enqueued and no phase is moved
// (the planner owns both), so the phase shown is the one the planner last wrote.

import type { Redis } from 'ioredis';
import type { JobStatus } from '../lib/core/status.js';
import { CompiledJobCache, findJob, readCounters, statusOf } from '../lib/jobstore.js';
import { keys } from '../lib/keys.js';
import type { Logger } from '../lib/log.js';

function isRedisError(err: unknown): boolean {
  return err instanceof Error && (['ReplyError', 'MaxRetriesPerRequestError'].includes(err.name) || err.message === 'Connection is closed.');
}

export type JobSummary = { id: string } & JobStatus;

export class JobReader {
  // Compiling a job is the costly part; a panel polling every few seconds should not redo it.
  private readonly compiled = new CompiledJobCache();

  constructor(
    private readonly redis: Redis,
    private readonly logger: Logger,
  ) {}

  /** Every registered job, by id. A job that cannot be read is logged and left out, not fatal to the list. */
  async list(nowMs = Date.now()): Promise<JobSummary[]> {
    const ids = (await this.redis.smembers(keys.jobs())).sort();
    const jobs = await Promise.all(ids.map((id) => this.read(id, nowMs)));
    return jobs.filter((j): j is JobSummary => j !== null);
  }

  private async read(id: string, nowMs: number): Promise<JobSummary | null> {
    try {
      const [record, counters] = await Promise.all([findJob(this.redis, id, this.compiled), readCounters(this.redis, id)]);
      if (!record) return null; // removed between SMEMBERS and HGETALL
      return { id, ...statusOf(record, counters, nowMs) };
    } catch (err) {
      if (isRedisError(err)) throw err; // the whole list is unavailable, not this job
      this.logger.warn({ err, job: id }, 'cannot read job for /api/v1/jobs; left out');
      return null;
    }
  }
}

// The `status` block of a WidescanJob, computed from the job's counters (pure: the planner, the operator and
// `widescan run` all render status through this one function).

import { JOB_COUNTERS, type JobCounters } from '../keys.js';

export type Phase = 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Suspended';

export interface JobStatus {
  phase: Phase;
  targets: number;
  shards: { total: number; completed: number; active: number; failed: number };
  probesSent: number;
  repliesValid: number;
  repliesInvalid: number;
  repliesDuplicate: number;
  peersDiscovered: number;
  widescanPeers: number;
  excluded: number;
  progress: string;
  backend?: string;
  startTime?: string;
  completionTime?: string;
  estimatedCompletionTime?: string;
}

export function emptyCounters(): JobCounters {
  return Object.fromEntries(JOB_COUNTERS.map((c) => [c, 0])) as JobCounters;
}

/** Parses an HGETALL reply; missing or garbage fields count as 0. */
export function countersFrom(hash: Record<string, string>): JobCounters {
  const out = emptyCounters();
  for (const c of JOB_COUNTERS) {
    const v = Number(hash[c]);
    if (Number.isSafeInteger(v) && v >= 0) out[c] = v;
  }
  return out;
}

export interface StatusInput {
  phase: Phase;
  /** Index-space size minus the planned exclusions. */
  targets: number;
  totalShards: number;
  activeShards: number;
  counters: JobCounters;
  startTimeMs?: number;
  completionTimeMs?: number;
  nowMs: number;
  backend?: string;
}

export function computeStatus(input: StatusInput): JobStatus {
  const c = input.counters;
  const done = c.shardsCompleted + c.shardsFailed;
  const fraction = input.totalShards === 0 ? 1 : Math.min(1, done / input.totalShards);
  const status: JobStatus = {
    phase: input.phase,
    targets: input.targets,
    shards: { total: input.totalShards, completed: c.shardsCompleted, active: input.activeShards, failed: c.shardsFailed },
    probesSent: c.probesSent,
    repliesValid: c.repliesValid,
    repliesInvalid: c.repliesInvalid,
    repliesDuplicate: c.repliesDuplicate,
    peersDiscovered: c.peersDiscovered,
    widescanPeers: c.widescanPeers,
    excluded: c.excluded,
    progress: `${Math.floor(fraction * 100)}%`,
  };
  if (input.backend) status.backend = input.backend;
  if (input.startTimeMs !== undefined) status.startTime = new Date(input.startTimeMs).toISOString();
  if (input.completionTimeMs !== undefined) status.completionTime = new Date(input.completionTimeMs).toISOString();
  else if (input.phase === 'Running' && input.startTimeMs !== undefined && fraction > 0 && fraction < 1) {
    const elapsed = input.nowMs - input.startTimeMs;
    status.estimatedCompletionTime = new Date(input.nowMs + (elapsed * (1 - fraction)) / fraction).toISOString();
  }
  return status;
}

export interface PhaseInput {
  phase: Phase;
  suspended: boolean;
  totalShards: number;
  counters: JobCounters;
  /** When the last shard finished, if all have. */
  lastShardDoneMs?: number;
  replyTimeoutMs: number;
  nowMs: number;
}

/**
 * The next phase. A job whose shards are all done stays Running for the reply timeout, so that late replies
 * are still counted, then ends Succeeded — or Failed when any shard failed for good (its targets were not probed).
 */
export function nextPhase(p: PhaseInput): Phase {
  if (p.phase === 'Succeeded' || p.phase === 'Failed') return p.phase;
  if (p.suspended) return 'Suspended';
  const done = p.counters.shardsCompleted + p.counters.shardsFailed;
  if (done < p.totalShards) return 'Running';
  if (p.lastShardDoneMs === undefined || p.nowMs - p.lastShardDoneMs < p.replyTimeoutMs) return 'Running';
  return p.counters.shardsFailed > 0 ? 'Failed' : 'Succeeded';
}

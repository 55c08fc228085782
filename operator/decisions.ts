// The operator's reconcile decisions, pure: which spec changes are refused, what the conditions say, whether
// the status changed, when a finished job is deleted. The controller (controller.ts) does the I/O around them.

import { setConditions, type Condition, type ConditionUpdate } from '../lib/core/conditions.js';
import type { JobSpec } from '../lib/core/job.js';
import type { JobStatus, Phase } from '../lib/core/status.js';

/** Held on every WidescanJob until its Redis/BullMQ state is gone and no worker probes for it. */
export const FINALIZER = 'widescan.dev/cleanup';

/** Spec fields that may change while a job runs; every other field is fixed once the job is planned. */
export const MUTABLE_SPEC_FIELDS: readonly string[] = ['rate', 'suspend', 'ttlSecondsAfterFinished'];

/** JSON with object keys sorted, so equal values compare equal whatever the key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object')
    return `{${Object.keys(v)
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

/** `spec.<field>` for every fixed field that differs between the planned spec and the current one. */
export function changedFixedFields(planned: JobSpec, current: JobSpec): string[] {
  const fields = new Set([...Object.keys(planned), ...Object.keys(current)]);
  return [...fields]
    .filter((f) => !MUTABLE_SPEC_FIELDS.includes(f))
    .filter((f) => canonical((planned as unknown as Record<string, unknown>)[f]) !== canonical((current as unknown as Record<string, unknown>)[f]))
    .sort()
    .map((f) => `spec.${f}`);
}

/** Milliseconds until a finished job is to be deleted (≤ 0: now); undefined when it never is. */
export function ttlRemainingMs(completionTime: string | undefined, ttlSeconds: number | undefined, nowMs: number): number | undefined {
  if (ttlSeconds === undefined || completionTime === undefined) return undefined;
  const done = Date.parse(completionTime);
  if (Number.isNaN(done)) return undefined;
  return done + ttlSeconds * 1000 - nowMs;
}

/** What the conditions are computed from. */
export interface ConditionInput {
  phase: Phase;
  /** Why the job cannot be planned or ended Failed (reason + message), e.g. InvalidSpec. */
  failure?: { reason: string; message: string };
  /** Why a Pending job waits (e.g. NetworkKeyMissing). */
  waiting?: { reason: string; message: string };
  /** `spec.*` fields changed after planning (ignored). */
  changedFixed: string[];
  /** Ready worker pods that can take this job's shards. */
  readyWorkers: number;
  /** Set when this job's shards run on the CPU pool instead of the GPU pool. */
  fallback?: { reason: string; message: string };
  /** Set when no pool can run this job's shards. */
  blocked?: string;
  /** Nodes that run workers but have no ready listener (replies there are lost). */
  listenerGaps: string[];
  status?: Pick<JobStatus, 'targets' | 'probesSent' | 'peersDiscovered' | 'shards'>;
}

const cond = (type: string, on: boolean, reason: string, message: string): ConditionUpdate => ({ type, status: on ? 'True' : 'False', reason, message });

/** The five standard conditions, all of them every time (conditions are set on first sight). */
export function jobConditions(i: ConditionInput): ConditionUpdate[] {
  const finished = i.phase === 'Succeeded' || i.phase === 'Failed';
  const degraded: { reason: string; message: string }[] = [];
  if (i.listenerGaps.length > 0 && !finished)
    degraded.push({ reason: 'ListenerNotReady', message: `no ready listener on node(s) ${i.listenerGaps.join(', ')} that run workers: replies to probes sent from there are lost` });
  if (i.changedFixed.length > 0)
    degraded.push({
      reason: 'SpecChangeIgnored',
      message: `${i.changedFixed.join(', ')} changed after the scan was planned and are ignored (only ${MUTABLE_SPEC_FIELDS.map((f) => `spec.${f}`).join(', ')} may change); create a new WidescanJob to scan other targets`,
    });
  if (i.fallback && !finished) degraded.push(i.fallback);

  let ready: ConditionUpdate;
  if (i.phase === 'Failed') ready = cond('Ready', false, i.failure?.reason ?? 'ShardsFailed', i.failure?.message ?? 'the job failed');
  else if (i.phase === 'Succeeded') ready = cond('Ready', true, 'Completed', 'the scan is complete');
  else if (i.phase === 'Suspended') ready = cond('Ready', false, 'Suspended', 'spec.suspend is true: no probes are sent until it is false');
  else if (i.waiting) ready = cond('Ready', false, i.waiting.reason, i.waiting.message);
  else if (i.blocked) ready = cond('Ready', false, 'NoWorkerPool', i.blocked);
  else if (i.readyWorkers === 0) ready = cond('Ready', false, 'NoReadyWorkers', 'no ready worker pod can take this job\'s shards yet');
  else ready = cond('Ready', true, 'WorkersReady', `${i.readyWorkers} ready worker pod(s) can take this job's shards`);

  const s = i.status;
  const progressing =
    i.phase === 'Running'
      ? cond('Progressing', true, 'Scanning', s ? `${s.shards.completed + s.shards.failed}/${s.shards.total} shards done, ${s.probesSent} probes sent` : 'scanning')
      : i.phase === 'Pending'
        ? cond('Progressing', false, i.waiting?.reason ?? 'Pending', i.waiting?.message ?? 'the job is not planned yet')
        : i.phase === 'Suspended'
          ? cond('Progressing', false, 'Suspended', 'spec.suspend is true')
          : cond('Progressing', false, i.phase === 'Succeeded' ? 'Completed' : (i.failure?.reason ?? 'ShardsFailed'), 'the job has finished');

  return [
    ready,
    progressing,
    degraded.length > 0
      ? cond('Degraded', true, degraded[0]!.reason, degraded.map((d) => d.message).join('; '))
      : cond('Degraded', false, 'AsExpected', 'nothing degrades this job'),
    i.phase === 'Succeeded'
      ? cond('Complete', true, 'Completed', s ? `${s.targets} targets probed, ${s.peersDiscovered} peers found` : 'the scan is complete')
      : cond('Complete', false, 'NotComplete', 'the scan has not completed'),
    i.phase === 'Failed'
      ? cond('Failed', true, i.failure?.reason ?? 'ShardsFailed', i.failure?.message ?? `${s?.shards.failed ?? 0} shard(s) failed after every retry: their targets were not all probed`)
      : cond('Failed', false, 'NotFailed', 'the job has not failed'),
  ];
}

/** The `status` object the operator writes: the planner's counts plus generation and conditions. */
export interface WrittenStatus extends Partial<JobStatus> {
  phase: Phase;
  observedGeneration: number;
  conditions: Condition[];
}

export function nextStatus(previous: Partial<WrittenStatus> | undefined, counts: Partial<JobStatus> & { phase: Phase }, updates: ConditionUpdate[], generation: number, now: Date): WrittenStatus {
  return { ...counts, observedGeneration: generation, conditions: setConditions(previous?.conditions, updates, generation, now) };
}

/** Whether writing `next` over `previous` changes anything (status is written only then). */
export function statusChanged(previous: unknown, next: unknown): boolean {
  return canonical(previous ?? {}) !== canonical(next);
}

/** Kubernetes Events worth recording when the phase moves. */
export function phaseEvent(from: Phase | undefined, to: Phase, status: Partial<JobStatus>): { type: 'Normal' | 'Warning'; reason: string; message: string } | undefined {
  if (from === to) return undefined;
  switch (to) {
    case 'Running':
      return from === 'Suspended'
        ? { type: 'Normal', reason: 'Resumed', message: 'spec.suspend is false: scanning resumes' }
        : { type: 'Normal', reason: 'Started', message: `planned ${status.targets} targets in ${status.shards?.total} shards` };
    case 'Suspended':
      return { type: 'Normal', reason: 'Suspended', message: 'spec.suspend is true: workers park this job\'s shards' };
    case 'Succeeded':
      return { type: 'Normal', reason: 'Completed', message: `${status.probesSent} probes sent, ${status.repliesValid} valid replies, ${status.peersDiscovered} peers found` };
    case 'Failed':
      return { type: 'Warning', reason: 'ShardsFailed', message: `${status.shards?.failed ?? 0} shard(s) failed after every retry` };
    default:
      return undefined;
  }
}

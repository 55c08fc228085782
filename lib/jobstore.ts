// A job's state in Redis: what the planner registers and workers and listeners read. Workers recompile the
// job from its manifest (with the uid and blocklist the planner used), which gives them the very same target
// space and order: nothing but the manifest travels.

import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { parsePrefix } from './core/cidr.js';
import { compileJob, type CompiledJob, type JobManifest } from './core/job.js';
import { jobTagHex } from './core/keys.js';
import { computeStatus, countersFrom, type JobStatus, type Phase } from './core/status.js';
import { keys, type JobCounter, type JobCounters } from './keys.js';

export interface JobRecord {
  job: CompiledJob;
  phase: Phase;
  macKey: Uint8Array;
  networkId: number;
  startTimeMs?: number;
  completionTimeMs?: number;
  lastShardDoneMs?: number;
  nextShard: number;
  cancelled: boolean;
  /** The controls that may change while a job runs (`spec.suspend`, `spec.rate`); the manifest keeps the rest. */
  suspended: boolean;
  packetsPerSecond: number;
  /** Generation backend the workers report. */
  backend?: string;
  /** Identifies the blocklist the job is compiled with (blocklistDigest). */
  blocklistDigest: string;
}

export interface RegisterOptions {
  macKey: Uint8Array;
  networkId: number;
  blocklist: string[];
  fullLimitBits: number;
}

export async function registerJob(redis: Redis, job: CompiledJob, options: RegisterOptions): Promise<void> {
  const manifest: JobManifest = { ...job.manifest, metadata: { ...job.manifest.metadata, uid: job.uid } };
  await redis
    .multi()
    .hset(keys.job(job.id), {
      manifest: JSON.stringify(manifest),
      tag: jobTagHex(job.tag),
      macKey: Buffer.from(options.macKey).toString('hex'),
      networkId: String(options.networkId),
      blocklist: JSON.stringify(options.blocklist),
      blocklistDigest: blocklistDigest(options.blocklist),
      fullLimitBits: String(options.fullLimitBits),
      phase: 'Running',
      startTime: String(Date.now()),
      nextShard: '0',
      cancelled: '0',
      suspended: job.spec.suspend ? '1' : '0',
      packetsPerSecond: String(job.spec.rate.packetsPerSecond),
    })
    .hset(keys.tags(), jobTagHex(job.tag), job.id)
    .sadd(keys.jobs(), job.id)
    .exec();
}

export class JobNotFoundError extends Error {}

/** Compiled jobs by id, recompiled only when what they are compiled from changes (keys, permutations). */
export class CompiledJobCache {
  private readonly entries = new Map<string, { source: string; job: CompiledJob }>();

  constructor(private readonly capacity = 64) {}

  get(id: string, h: Record<string, string>): CompiledJob {
    const source = `${h.manifest}\0${h.blocklist}\0${h.fullLimitBits}`;
    const hit = this.entries.get(id);
    if (hit?.source === source) return hit.job;
    const job = compileJob(JSON.parse(h.manifest!) as JobManifest, {
      blocklist: (JSON.parse(h.blocklist ?? '[]') as string[]).map(parsePrefix),
      fullLimitBits: Number(h.fullLimitBits ?? 32),
    });
    this.entries.delete(id);
    if (this.entries.size >= this.capacity) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(id, { source, job });
    return job;
  }
}

export async function loadJob(redis: Redis, id: string, cache = new CompiledJobCache(1)): Promise<JobRecord> {
  const h = await redis.hgetall(keys.job(id));
  if (!h.manifest) throw new JobNotFoundError(`job ${id} is not registered in Redis`);
  const job = cache.get(id, h);
  const num = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));
  const record: JobRecord = {
    job,
    phase: (h.phase as Phase) ?? 'Running',
    macKey: Uint8Array.from(Buffer.from(h.macKey ?? '', 'hex')),
    networkId: Number(h.networkId),
    nextShard: Number(h.nextShard ?? 0),
    cancelled: h.cancelled === '1',
    suspended: h.suspended === '1',
    blocklistDigest: h.blocklistDigest ?? '',
    packetsPerSecond: Number(h.packetsPerSecond) || job.spec.rate.packetsPerSecond,
  };
  const start = num(h.startTime);
  if (start !== undefined) record.startTimeMs = start;
  const completion = num(h.completionTime);
  if (completion !== undefined) record.completionTimeMs = completion;
  if (h.backend) record.backend = h.backend;
  const lastDone = num(h.lastShardDone);
  if (lastDone !== undefined) record.lastShardDoneMs = lastDone;
  return record;
}

/** The job's record, or undefined when it is not (or no longer) registered. */
export async function findJob(redis: Redis, id: string, cache?: CompiledJobCache): Promise<JobRecord | undefined> {
  try {
    return await loadJob(redis, id, cache);
  } catch (err) {
    if (err instanceof JobNotFoundError) return undefined;
    throw err;
  }
}

/** The job's `status`, from its record and counters; `phase`/`completionTimeMs` override the stored ones. */
export function statusOf(record: JobRecord, counters: JobCounters, nowMs: number, phase = record.phase, completionTimeMs = record.completionTimeMs): JobStatus {
  const inFlight = record.nextShard - counters.shardsCompleted - counters.shardsFailed;
  return computeStatus({
    phase,
    targets: record.job.space.size - record.job.space.plannedExcluded,
    totalShards: record.job.totalShards,
    activeShards: Math.max(0, inFlight),
    counters,
    startTimeMs: record.startTimeMs,
    completionTimeMs,
    nowMs,
    backend: record.backend,
  });
}

export async function readCounters(redis: Redis, id: string): Promise<JobCounters> {
  return countersFrom(await redis.hgetall(keys.counters(id)));
}

// Counters of a job that is gone (removed by the finalizer while late replies still arrive) are dropped,
// not recreated: a removed job leaves no keys behind.
const ADD_COUNTERS = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
`;

export function addCounters(redis: Redis, id: string, deltas: Partial<Record<JobCounter, number>>): Promise<unknown> {
  const args: string[] = [];
  for (const [k, v] of Object.entries(deltas)) if (v) args.push(k, String(v));
  if (args.length === 0) return Promise.resolve();
  return redis.eval(ADD_COUNTERS, 2, keys.job(id), keys.counters(id), ...args);
}

// Shard completion is idempotent: a shard redelivered after its worker died between finishing and
// acknowledging must not count twice. One bit per shard (a job of 2^32 targets in 65536-position shards
// needs 8 KiB), set atomically with the counters.
const FINISH = `
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if redis.call('SETBIT', KEYS[1], ARGV[1], 1) == 1 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[2], 'excluded', ARGV[3]) end
redis.call('HSET', KEYS[3], 'lastShardDone', ARGV[4])
return 1
`;

/** Marks shard `shard` done; returns false when it already was, or the job is gone. */
export async function finishShard(redis: Redis, id: string, shard: number, outcome: 'completed' | 'failed', excluded: number): Promise<boolean> {
  const counter: JobCounter = outcome === 'completed' ? 'shardsCompleted' : 'shardsFailed';
  const done = await redis.eval(FINISH, 3, `${keys.job(id)}:done`, keys.counters(id), keys.job(id), String(shard), counter, String(excluded), String(Date.now()));
  return done === 1;
}

/** Short digest of a blocklist: workers compare it at every checkpoint to notice a changed blocklist. */
export function blocklistDigest(blocklist: readonly string[]): string {
  return createHash('sha256').update(JSON.stringify(blocklist)).digest('hex').slice(0, 16);
}

/**
 * Replaces a running job's blocklist (the operator's blocklist always wins, also over jobs planned before it
 * changed): the planner and workers recompile the job, workers at their next checkpoint.
 */
export async function setJobBlocklist(redis: Redis, id: string, blocklist: readonly string[]): Promise<void> {
  await setJobFields(redis, id, { blocklist: JSON.stringify(blocklist), blocklistDigest: blocklistDigest(blocklist) });
}

/** Changes what may change while a job runs; workers pick it up at their next checkpoint. */
export async function setJobControls(redis: Redis, id: string, controls: { suspended: boolean; packetsPerSecond: number }): Promise<void> {
  await setJobFields(redis, id, { suspended: controls.suspended ? '1' : '0', packetsPerSecond: String(controls.packetsPerSecond) });
}

export async function setJobFields(redis: Redis, id: string, fields: Record<string, string>): Promise<void> {
  await redis.hset(keys.job(id), fields);
}

/** Removes every key of the job (the finalizer's and `widescan run`'s clean-up); peers stay. */
export async function removeJob(redis: Redis, id: string, tag: number): Promise<void> {
  await redis
    .multi()
    .del(keys.job(id), `${keys.job(id)}:done`, keys.counters(id), keys.rate(id))
    .hdel(keys.tags(), jobTagHex(tag))
    .srem(keys.jobs(), id)
    .exec();
}

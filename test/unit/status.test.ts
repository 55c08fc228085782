import { describe, expect, test } from '@jest/globals';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import fc from 'fast-check';
import { statusSchema } from '../../lib/core/schema.js';
import { computeStatus, countersFrom, emptyCounters, nextPhase, type Phase, type PhaseInput, type StatusInput } from '../../lib/core/status.js';
import { JOB_COUNTERS, type JobCounters } from '../../lib/keys.js';

const counters = (c: Partial<JobCounters> = {}): JobCounters => ({ ...emptyCounters(), ...c });

const base: StatusInput = {
  phase: 'Running',
  targets: 70_128,
  totalShards: 18,
  activeShards: 2,
  counters: counters(),
  nowMs: Date.UTC(2026, 0, 1, 12, 0, 0),
};

// The CRD's status schema, closed: a field computeStatus writes that the schema lacks would be pruned by the API server.
function closed(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(closed);
  if (schema === null || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) out[k] = k === 'enum' ? v : closed(v);
  if ('properties' in out) out.additionalProperties = false;
  return out;
}
const ajv = new Ajv({ allErrors: true, strict: false });
(addFormatsModule as unknown as (a: Ajv) => void)(ajv);
const statusValid = ajv.compile(closed(statusSchema) as object);

describe('computeStatus', () => {
  test('copies the counters and sizes, with progress in whole percent of finished shards', () => {
    const s = computeStatus({
      ...base,
      counters: counters({ probesSent: 592_000, repliesValid: 4211, repliesInvalid: 3, repliesDuplicate: 7, peersDiscovered: 4100, widescanPeers: 2, excluded: 16, shardsCompleted: 9, sendErrors: 5 }),
      backend: 'gpu',
    });
    expect(s).toEqual({
      phase: 'Running',
      targets: 70_128,
      shards: { total: 18, completed: 9, active: 2, failed: 0 },
      probesSent: 592_000,
      repliesValid: 4211,
      repliesInvalid: 3,
      repliesDuplicate: 7,
      peersDiscovered: 4100,
      widescanPeers: 2,
      excluded: 16,
      progress: '50%',
      backend: 'gpu',
    });
    expect(statusValid(s)).toBe(true);
  });

  test.each([
    [0, 0, 18, '0%'],
    [1, 0, 3, '33%'],
    [2, 0, 3, '66%'],
    [17, 0, 18, '94%'],
    [17, 1, 18, '100%'],
    [0, 3, 3, '100%'],
    [25, 0, 18, '100%'], // counters overshooting (a redelivered shard counted twice) never pass 100%
    [0, 0, 0, '100%'],
    [999_999, 0, 1_000_000, '99%'],
  ])('%i completed + %i failed of %i shards is %s', (completed, failed, total, progress) => {
    const s = computeStatus({ ...base, totalShards: total, counters: counters({ shardsCompleted: completed, shardsFailed: failed }) });
    expect(s.progress).toBe(progress);
    expect(s.shards).toEqual({ total, completed, active: 2, failed });
  });

  test('times are ISO 8601; the ETA extrapolates the elapsed time while running', () => {
    const start = base.nowMs - 60_000;
    const s = computeStatus({ ...base, startTimeMs: start, counters: counters({ shardsCompleted: 6 }) }); // 1/3 done in 60 s
    expect(s.startTime).toBe('2026-01-01T11:59:00.000Z');
    expect(s.estimatedCompletionTime).toBe('2026-01-01T12:02:00.000Z');
    expect(s.completionTime).toBeUndefined();
    expect(statusValid(s)).toBe(true);
  });

  test('no ETA unless running, started, under way and unfinished', () => {
    const start = base.nowMs - 60_000;
    const half = counters({ shardsCompleted: 9 });
    for (const phase of ['Pending', 'Suspended', 'Succeeded', 'Failed'] as Phase[]) {
      expect(computeStatus({ ...base, phase, startTimeMs: start, counters: half }).estimatedCompletionTime).toBeUndefined();
    }
    expect(computeStatus({ ...base, counters: half }).estimatedCompletionTime).toBeUndefined();
    expect(computeStatus({ ...base, startTimeMs: start }).estimatedCompletionTime).toBeUndefined();
    expect(computeStatus({ ...base, startTimeMs: start, counters: counters({ shardsCompleted: 18 }) }).estimatedCompletionTime).toBeUndefined();
    const done = computeStatus({ ...base, phase: 'Succeeded', startTimeMs: start, completionTimeMs: base.nowMs, counters: counters({ shardsCompleted: 18 }) });
    expect(done).toMatchObject({ completionTime: '2026-01-01T12:00:00.000Z', progress: '100%' });
    expect(done.estimatedCompletionTime).toBeUndefined();
    expect(done.backend).toBeUndefined();
    expect(statusValid(done)).toBe(true);
  });

  test('property: the status always fits the CRD schema and progress is 0..100%', () => {
    const phase = fc.constantFrom<Phase>('Pending', 'Running', 'Succeeded', 'Failed', 'Suspended');
    const n = fc.integer({ min: 0, max: 2 ** 40 });
    fc.assert(
      fc.property(phase, fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 0, max: 12_000 }), fc.integer({ min: 0, max: 500 }), n, fc.option(fc.integer({ min: 0, max: 10 ** 6 })), (ph, total, completed, failed, probes, elapsed) => {
        const s = computeStatus({
          ...base,
          phase: ph,
          totalShards: total,
          counters: counters({ shardsCompleted: completed, shardsFailed: failed, probesSent: probes }),
          ...(elapsed === null ? {} : { startTimeMs: base.nowMs - elapsed }),
        });
        expect(statusValid(s)).toBe(true);
        const pct = Number(s.progress.slice(0, -1));
        expect(pct >= 0 && pct <= 100 && s.progress.endsWith('%')).toBe(true);
        if (s.estimatedCompletionTime) expect(Date.parse(s.estimatedCompletionTime)).toBeGreaterThanOrEqual(base.nowMs);
      }),
      { numRuns: 300 },
    );
  });
});

describe('nextPhase', () => {
  const p = (over: Partial<PhaseInput>): PhaseInput => ({
    phase: 'Running',
    suspended: false,
    totalShards: 4,
    counters: counters(),
    replyTimeoutMs: 5000,
    nowMs: 100_000,
    ...over,
  });
  const allDone = counters({ shardsCompleted: 4 });

  test('Running until every shard is done and the reply timeout has elapsed, then Succeeded', () => {
    expect(nextPhase(p({ phase: 'Pending' }))).toBe('Running');
    expect(nextPhase(p({ counters: counters({ shardsCompleted: 3 }), lastShardDoneMs: 0 }))).toBe('Running');
    expect(nextPhase(p({ counters: allDone }))).toBe('Running'); // last shard's time not known yet
    expect(nextPhase(p({ counters: allDone, lastShardDoneMs: 96_000 }))).toBe('Running');
    expect(nextPhase(p({ counters: allDone, lastShardDoneMs: 95_001 }))).toBe('Running');
    expect(nextPhase(p({ counters: allDone, lastShardDoneMs: 95_000 }))).toBe('Succeeded');
    expect(nextPhase(p({ counters: allDone, lastShardDoneMs: 0 }))).toBe('Succeeded');
  });

  test('Failed when any shard failed for good, also only after the reply timeout', () => {
    const oneFailed = counters({ shardsCompleted: 3, shardsFailed: 1 });
    expect(nextPhase(p({ counters: oneFailed, lastShardDoneMs: 99_000 }))).toBe('Running');
    expect(nextPhase(p({ counters: oneFailed, lastShardDoneMs: 90_000 }))).toBe('Failed');
    expect(nextPhase(p({ counters: counters({ shardsFailed: 4 }), lastShardDoneMs: 0 }))).toBe('Failed');
    expect(nextPhase(p({ counters: counters({ shardsCompleted: 2, shardsFailed: 1 }), lastShardDoneMs: 0 }))).toBe('Running');
  });

  test('suspend wins over running; resuming goes back to Running', () => {
    expect(nextPhase(p({ suspended: true }))).toBe('Suspended');
    expect(nextPhase(p({ phase: 'Pending', suspended: true }))).toBe('Suspended');
    expect(nextPhase(p({ suspended: true, counters: allDone, lastShardDoneMs: 0 }))).toBe('Suspended');
    expect(nextPhase(p({ phase: 'Suspended' }))).toBe('Running');
  });

  test('terminal phases stick', () => {
    for (const phase of ['Succeeded', 'Failed'] as Phase[]) {
      expect(nextPhase(p({ phase }))).toBe(phase);
      expect(nextPhase(p({ phase, suspended: true }))).toBe(phase);
      expect(nextPhase(p({ phase, counters: counters({ shardsFailed: 4 }), lastShardDoneMs: 0 }))).toBe(phase);
    }
  });

  test('property: never goes back to Pending, terminal phases stay, Succeeded only with no failed shard', () => {
    const phase = fc.constantFrom<Phase>('Pending', 'Running', 'Succeeded', 'Failed', 'Suspended');
    fc.assert(
      fc.property(phase, fc.boolean(), fc.integer({ min: 0, max: 50 }), fc.integer({ min: 0, max: 60 }), fc.integer({ min: 0, max: 5 }), fc.option(fc.integer({ min: 0, max: 200_000 })), (ph, suspended, total, completed, failed, last) => {
        const input = p({ phase: ph, suspended, totalShards: total, counters: counters({ shardsCompleted: completed, shardsFailed: failed }), ...(last === null ? {} : { lastShardDoneMs: last }) });
        const next = nextPhase(input);
        expect(next).not.toBe('Pending');
        if (ph === 'Succeeded' || ph === 'Failed') expect(next).toBe(ph);
        else if (next === 'Succeeded') expect(failed).toBe(0);
        if (next !== ph && (next === 'Succeeded' || next === 'Failed')) {
          expect(completed + failed).toBeGreaterThanOrEqual(total);
          expect(input.nowMs - last!).toBeGreaterThanOrEqual(input.replyTimeoutMs);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('countersFrom', () => {
  test('reads every counter of an HGETALL reply', () => {
    const hash = Object.fromEntries(JOB_COUNTERS.map((c, i) => [c, String(i * 1000 + 1)]));
    const c = countersFrom(hash);
    expect(Object.keys(c).sort()).toEqual([...JOB_COUNTERS].sort());
    JOB_COUNTERS.forEach((k, i) => expect(c[k]).toBe(i * 1000 + 1));
    expect(countersFrom({ probesSent: '9007199254740991' }).probesSent).toBe(2 ** 53 - 1);
  });

  test('missing fields and garbage count as 0; unknown fields are ignored', () => {
    expect(countersFrom({})).toEqual(emptyCounters());
    expect(Object.values(emptyCounters()).every((v) => v === 0)).toBe(true);
    const c = countersFrom({
      probesSent: 'abc',
      sendErrors: '-1',
      excluded: '1.5',
      shardsCompleted: 'Infinity',
      shardsFailed: '1e400',
      repliesValid: '9007199254740993',
      repliesInvalid: 'NaN',
      repliesDuplicate: '[object Object]',
      peersDiscovered: '12',
      bogus: '77',
    });
    expect(c).toEqual({ ...emptyCounters(), peersDiscovered: 12 });
    expect('bogus' in c).toBe(false);
  });
});

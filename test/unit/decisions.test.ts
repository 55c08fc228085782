// The operator's pure reconcile decisions and the conditions they write (API conventions).
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { setConditions, type ConditionUpdate } from '../../lib/core/conditions.js';
import type { JobSpec } from '../../lib/core/job.js';
import { changedFixedFields, jobConditions, nextStatus, phaseEvent, statusChanged, ttlRemainingMs, type ConditionInput } from '../../operator/decisions.js';

const t0 = new Date('2026-11-22T10:00:00.000Z');
const t1 = new Date('2026-11-22T10:05:00.000Z');
const up = (type: string, status: 'True' | 'False', reason = 'R'): ConditionUpdate => ({ type, status, reason, message: 'm' });

describe('setConditions', () => {
  test('a new type is set on first sight with the generation and the time', () => {
    expect(setConditions(undefined, [up('Ready', 'False')], 3, t0)).toEqual([
      { type: 'Ready', status: 'False', reason: 'R', message: 'm', observedGeneration: 3, lastTransitionTime: '2026-11-22T10:00:00Z' },
    ]);
  });

  test('lastTransitionTime moves only when the status flips; reason, message and generation always follow', () => {
    const a = setConditions(undefined, [up('Ready', 'False', 'A')], 1, t0);
    const same = setConditions(a, [{ ...up('Ready', 'False', 'B'), message: 'other' }], 2, t1);
    expect(same[0]).toMatchObject({ reason: 'B', message: 'other', observedGeneration: 2, lastTransitionTime: '2026-11-22T10:00:00Z' });
    const flipped = setConditions(same, [up('Ready', 'True')], 2, t1);
    expect(flipped[0]!.lastTransitionTime).toBe('2026-11-22T10:05:00Z');
  });

  test('other types are kept in order and the input is not modified', () => {
    const a = setConditions(undefined, [up('Ready', 'True'), up('Degraded', 'False')], 1, t0);
    const copy = structuredClone(a);
    const b = setConditions(a, [up('Degraded', 'True'), up('Complete', 'False')], 2, t1);
    expect(a).toEqual(copy);
    expect(b.map((c) => c.type)).toEqual(['Ready', 'Degraded', 'Complete']);
    expect(b[0]).toEqual(a[0]);
  });

  test('property: one entry per type, whatever sequence of updates', () => {
    const types = fc.constantFrom('Ready', 'Progressing', 'Degraded', 'Complete', 'Failed');
    fc.assert(
      fc.property(fc.array(fc.array(fc.record({ type: types, status: fc.constantFrom('True' as const, 'False' as const) }), { maxLength: 5 }), { maxLength: 8 }), (rounds) => {
        let cs = setConditions(undefined, [], 0, t0);
        rounds.forEach((r, g) => (cs = setConditions(cs, r.map((u) => up(u.type, u.status)), g, t0)));
        expect(new Set(cs.map((c) => c.type)).size).toBe(cs.length);
      }),
    );
  });
});

const spec = (extra: Partial<JobSpec> = {}): JobSpec => ({
  targets: [{ prefix: '2001:db8::/120', strategy: 'full' }],
  allowNonGlobal: true,
  rate: { packetsPerSecond: 100 },
  hardware: 'auto',
  shardSize: 256,
  probe: { hopLimit: 64, retries: 0, replyTimeoutSeconds: 5 },
  suspend: false,
  ...extra,
});

describe('changedFixedFields', () => {
  test('rate, suspend and ttlSecondsAfterFinished may change; key order does not count', () => {
    expect(changedFixedFields(spec(), spec({ rate: { packetsPerSecond: 5 }, suspend: true, ttlSecondsAfterFinished: 9 }))).toEqual([]);
    const reordered = { probe: { retries: 0, replyTimeoutSeconds: 5, hopLimit: 64 } } as Partial<JobSpec>;
    expect(changedFixedFields(spec(), spec(reordered))).toEqual([]);
  });

  test('every other changed field is named, sorted', () => {
    expect(changedFixedFields(spec(), spec({ targets: [{ prefix: '2001:db8:1::/120', strategy: 'full' }], shardSize: 512, exclude: ['2001:db8::/124'] }))).toEqual([
      'spec.exclude',
      'spec.shardSize',
      'spec.targets',
    ]);
  });
});

describe('ttlRemainingMs', () => {
  const done = '2026-11-22T10:00:00Z';
  test('undefined without a TTL, a completion time, or with a garbage time', () => {
    expect(ttlRemainingMs(done, undefined, 0)).toBeUndefined();
    expect(ttlRemainingMs(undefined, 10, 0)).toBeUndefined();
    expect(ttlRemainingMs('yesterday-ish', 10, 0)).toBeUndefined();
  });
  test('time left, zero or negative once due', () => {
    const at = Date.parse(done);
    expect(ttlRemainingMs(done, 60, at + 10_000)).toBe(50_000);
    expect(ttlRemainingMs(done, 0, at)).toBe(0);
    expect(ttlRemainingMs(done, 1, at + 5000)).toBeLessThan(0);
  });
});

const base: ConditionInput = { phase: 'Running', changedFixed: [], readyWorkers: 2, listenerGaps: [] };
const byType = (i: ConditionInput) => Object.fromEntries(jobConditions(i).map((c) => [c.type, c]));

describe('jobConditions', () => {
  test('always the five standard types', () => {
    for (const phase of ['Pending', 'Running', 'Suspended', 'Succeeded', 'Failed'] as const)
      expect(jobConditions({ ...base, phase }).map((c) => c.type).sort()).toEqual(['Complete', 'Degraded', 'Failed', 'Progressing', 'Ready']);
  });

  test('running with workers: Ready, Progressing, not Degraded', () => {
    const c = byType(base);
    expect(c.Ready).toMatchObject({ status: 'True', reason: 'WorkersReady' });
    expect(c.Progressing).toMatchObject({ status: 'True', reason: 'Scanning' });
    expect(c.Degraded).toMatchObject({ status: 'False', reason: 'AsExpected' });
  });

  test('no ready worker, no pool, waiting, suspended: Ready False with the reason', () => {
    expect(byType({ ...base, readyWorkers: 0 }).Ready).toMatchObject({ status: 'False', reason: 'NoReadyWorkers' });
    expect(byType({ ...base, blocked: 'the GPU pool is disabled' }).Ready).toMatchObject({ status: 'False', reason: 'NoWorkerPool', message: 'the GPU pool is disabled' });
    expect(byType({ ...base, phase: 'Pending', waiting: { reason: 'NetworkKeyMissing', message: 'x' } }).Ready).toMatchObject({ status: 'False', reason: 'NetworkKeyMissing' });
    expect(byType({ ...base, phase: 'Suspended' }).Progressing).toMatchObject({ status: 'False', reason: 'Suspended' });
  });

  test('Degraded names the first reason and carries every message; finished jobs ignore pool and listener troubles', () => {
    const c = byType({ ...base, listenerGaps: ['n1'], changedFixed: ['spec.targets'], fallback: { reason: 'GPUUnschedulable', message: 'gpu pods pending' } });
    expect(c.Degraded).toMatchObject({ status: 'True', reason: 'ListenerNotReady' });
    expect(c.Degraded!.message).toMatch(/n1.*spec\.targets.*gpu pods pending/);
    expect(byType({ ...base, phase: 'Succeeded', listenerGaps: ['n1'], fallback: { reason: 'X', message: 'y' } }).Degraded).toMatchObject({ status: 'False' });
  });

  test('Succeeded and Failed: Complete or Failed True, with the failure reason', () => {
    expect(byType({ ...base, phase: 'Succeeded' }).Complete).toMatchObject({ status: 'True', reason: 'Completed' });
    const f = byType({ ...base, phase: 'Failed', failure: { reason: 'InvalidSpec', message: 'spec.targets[0]: too big' } });
    expect(f.Failed).toMatchObject({ status: 'True', reason: 'InvalidSpec', message: 'spec.targets[0]: too big' });
    expect(f.Ready).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    expect(byType({ ...base, phase: 'Failed' }).Failed).toMatchObject({ status: 'True', reason: 'ShardsFailed' });
  });
});

describe('status writes and events', () => {
  test('statusChanged ignores key order, sees any value change', () => {
    expect(statusChanged({ a: 1, b: { c: 2, d: 3 } }, { b: { d: 3, c: 2 }, a: 1 })).toBe(false);
    expect(statusChanged({ a: 1 }, { a: 2 })).toBe(true);
    expect(statusChanged(undefined, { a: 1 })).toBe(true);
  });

  test('nextStatus carries the generation and keeps a condition\'s transition time', () => {
    const first = nextStatus(undefined, { phase: 'Running' }, jobConditions(base), 4, t0);
    const again = nextStatus(first, { phase: 'Running' }, jobConditions(base), 5, t1);
    expect(again.observedGeneration).toBe(5);
    expect(again.conditions.find((c) => c.type === 'Ready')!.lastTransitionTime).toBe('2026-11-22T10:00:00Z');
  });

  test('phaseEvent: one per transition, none when the phase stays', () => {
    expect(phaseEvent('Running', 'Running', {})).toBeUndefined();
    expect(phaseEvent(undefined, 'Running', { targets: 5, shards: { total: 1, completed: 0, active: 0, failed: 0 } })).toMatchObject({ reason: 'Started', message: 'planned 5 targets in 1 shards' });
    expect(phaseEvent('Suspended', 'Running', {})).toMatchObject({ reason: 'Resumed' });
    expect(phaseEvent('Running', 'Failed', {})).toMatchObject({ type: 'Warning', reason: 'ShardsFailed' });
  });
});

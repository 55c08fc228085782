import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import type { V1ContainerState, V1ContainerStatus, V1Pod, V1PodCondition } from '@kubernetes/client-node';
import { EXIT_GPU_UNAVAILABLE } from '../../lib/core/job.js';
import { parseOperatorConfig, type OperatorConfig, type PoolSettings } from '../../operator/config.js';
import {
  POOL_LABELS,
  gpuUnavailable,
  gpuUnschedulableSince,
  listenerGaps,
  planPools,
  poolDeployment,
  poolDeploymentName,
  readyWorkers,
  type Demand,
  type PoolName,
  type PoolPlan,
} from '../../operator/pools.js';

type Pools = OperatorConfig['pools'];

const pools = (gpu: Partial<Pools['gpu']> = {}, cpu: Partial<PoolSettings> = {}): Pools => ({
  gpu: { enabled: true, minReplicas: 0, maxReplicas: 4, gpusPerPod: 1, ...gpu },
  cpu: { enabled: true, minReplicas: 0, maxReplicas: 4, ...cpu },
});

const demand = (d: Partial<Demand> = {}): Demand => ({ auto: 0, gpu: 0, cpu: 0, ...d });

const AFTER = 120_000;
const NOW = 1_700_000_000_000;

const plan = (d: Partial<Demand>, p: Pools = pools(), unschedulableForMs?: number, gpuUnavailable?: string): PoolPlan =>
  planPools({
    demand: demand(d),
    pools: p,
    gpuUnschedulableSinceMs: unschedulableForMs === undefined ? undefined : NOW - unschedulableForMs,
    ...(gpuUnavailable === undefined ? {} : { gpuUnavailable }),
    fallbackAfterMs: AFTER,
    nowMs: NOW,
  });

describe('planPools', () => {
  // [what, demand, pools, GPU pods unschedulable for (ms), expected replicas, expected fallback reason]
  const table: [string, Partial<Demand>, Pools, number | undefined, Record<PoolName, number>, string | undefined][] = [
    ['idle: min replicas (0)', {}, pools(), undefined, { gpu: 0, cpu: 0 }, undefined],
    ['idle: min replicas kept', {}, pools({ minReplicas: 1 }, { minReplicas: 2 }), undefined, { gpu: 1, cpu: 2 }, undefined],
    ['auto goes to the GPU pool', { auto: 3 }, pools(), undefined, { gpu: 3, cpu: 0 }, undefined],
    ['one worker per shard at most', { auto: 1 }, pools(), undefined, { gpu: 1, cpu: 0 }, undefined],
    ['clamped to max', { auto: 100 }, pools(), undefined, { gpu: 4, cpu: 0 }, undefined],
    ['min wins over a small demand', { auto: 1 }, pools({ minReplicas: 3 }), undefined, { gpu: 3, cpu: 0 }, undefined],
    ['gpu and auto add up on the GPU pool', { gpu: 2, auto: 1 }, pools(), undefined, { gpu: 3, cpu: 0 }, undefined],
    ['cpu jobs go to the CPU pool', { cpu: 2 }, pools(), undefined, { gpu: 0, cpu: 2 }, undefined],
    ['all three kinds', { auto: 1, gpu: 1, cpu: 1 }, pools(), undefined, { gpu: 2, cpu: 1 }, undefined],
    ['unschedulable but not long enough', { auto: 3 }, pools(), AFTER - 1, { gpu: 3, cpu: 0 }, undefined],
    ['unschedulable exactly the delay: fallback', { auto: 3 }, pools(), AFTER, { gpu: 3, cpu: 3 }, 'GPUUnschedulable'],
    ['fallback adds auto to cpu demand', { auto: 2, cpu: 1 }, pools(), AFTER + 5000, { gpu: 2, cpu: 3 }, 'GPUUnschedulable'],
    ['fallback still clamps the CPU pool', { auto: 50, cpu: 50 }, pools({}, { maxReplicas: 6 }), AFTER * 2, { gpu: 4, cpu: 6 }, 'GPUUnschedulable'],
    ['gpu jobs never fall back', { gpu: 5 }, pools(), AFTER * 10, { gpu: 4, cpu: 0 }, 'GPUUnschedulable'],
    ['GPU pool disabled: auto on CPU', { auto: 3, gpu: 2 }, pools({ enabled: false, minReplicas: 2 }), undefined, { gpu: 0, cpu: 3 }, 'GPUPoolDisabled'],
    ['GPU pool max 0: auto on CPU', { auto: 3 }, pools({ maxReplicas: 0 }), undefined, { gpu: 0, cpu: 3 }, 'GPUPoolDisabled'],
    ['CPU pool disabled: cpu jobs wait', { cpu: 3, auto: 1 }, pools({}, { enabled: false, minReplicas: 1 }), undefined, { gpu: 1, cpu: 0 }, undefined],
    ['CPU disabled and GPU unschedulable', { auto: 3 }, pools({}, { enabled: false }), AFTER, { gpu: 3, cpu: 0 }, 'GPUUnschedulable'],
    ['both disabled', { auto: 3, gpu: 1, cpu: 1 }, pools({ enabled: false }, { enabled: false }), AFTER, { gpu: 0, cpu: 0 }, 'GPUPoolDisabled'],
    ['clock skew: unschedulable in the future', { auto: 3 }, pools(), -AFTER, { gpu: 3, cpu: 0 }, undefined],
  ];

  test.each(table)('%s', (_what, d, p, unschedulableFor, replicas, reason) => {
    const result = plan(d, p, unschedulableFor);
    expect(result.replicas).toEqual(replicas);
    expect(result.fallback?.reason).toBe(reason);
  });

  test('the GPUUnschedulable message says how long, the limit and where auto jobs run', () => {
    expect(plan({ auto: 1 }, pools(), 125_000).fallback).toEqual({
      reason: 'GPUUnschedulable',
      message: 'GPU worker pods unschedulable for 125 s (limit 120 s); auto jobs run on the CPU pool',
    });
  });

  test('with the CPU pool disabled, the fallback message says that auto jobs wait', () => {
    expect(plan({ auto: 1 }, pools({}, { enabled: false }), 125_000).fallback!.message).toBe(
      'GPU worker pods unschedulable for 125 s (limit 120 s); the CPU pool is disabled (pools.cpu.enabled: false) too, so auto jobs wait',
    );
    expect(plan({}, pools({ enabled: false }, { maxReplicas: 0 })).fallback!.message).toBe(
      'the GPU pool is disabled (pools.gpu.enabled: false); the CPU pool has pools.cpu.maxReplicas 0 too, so auto jobs wait',
    );
  });

  test('gpuBlocked and cpuBlocked name the setting', () => {
    const disabled = plan({}, pools({ enabled: false }));
    expect(disabled.gpuBlocked).toMatch(/hardware: gpu jobs cannot run: .*pools\.gpu\.enabled: false/);
    expect(disabled.fallback!.message).toBe('the GPU pool is disabled (pools.gpu.enabled: false); auto jobs run on the CPU pool');
    expect(disabled.cpuBlocked).toBeUndefined();
    expect(plan({}, pools({ maxReplicas: 0 })).gpuBlocked).toMatch(/pools\.gpu\.maxReplicas 0/);
    expect(plan({}, pools({}, { enabled: false })).cpuBlocked).toMatch(/hardware: cpu jobs cannot run: .*pools\.cpu\.enabled: false/);
    expect(plan({}, pools({}, { maxReplicas: 0 })).cpuBlocked).toMatch(/pools\.cpu\.maxReplicas 0/);
    const healthy = plan({ auto: 1, gpu: 1, cpu: 1 });
    expect(healthy.gpuBlocked).toBeUndefined();
    expect(healthy.cpuBlocked).toBeUndefined();
    expect(healthy.fallback).toBeUndefined();
  });

  test('fallbackAfterMs 0 falls back as soon as a GPU pod is unschedulable', () => {
    const p = planPools({ demand: demand({ auto: 2 }), pools: pools(), gpuUnschedulableSinceMs: NOW, fallbackAfterMs: 0, nowMs: NOW });
    expect(p.fallback?.reason).toBe('GPUUnschedulable');
    expect(p.replicas).toEqual({ gpu: 2, cpu: 2 });
  });

  test.each([
    [{ auto: -1 }, /demand\.auto must be a non-negative integer, got -1/],
    [{ gpu: 1.5 }, /demand\.gpu/],
    [{ cpu: Number.NaN }, /demand\.cpu/],
    [{ auto: Number.POSITIVE_INFINITY }, /demand\.auto/],
  ])('bad demand %p is refused', (d, message) => {
    expect(() => plan(d)).toThrow(message);
  });

  const poolArb = fc
    .record({ enabled: fc.boolean(), a: fc.nat(20), b: fc.nat(20) })
    .map(({ enabled, a, b }) => ({ enabled, minReplicas: Math.min(a, b), maxReplicas: Math.max(a, b) }));
  const inputArb = fc.record({
    demand: fc.record({ auto: fc.nat(100), gpu: fc.nat(100), cpu: fc.nat(100) }),
    gpu: poolArb,
    cpu: poolArb,
    since: fc.option(fc.integer({ min: -600_000, max: 600_000 }), { nil: undefined }),
    after: fc.nat(300_000),
  });
  type Input = typeof inputArb extends fc.Arbitrary<infer T> ? T : never;
  const run = (i: Input, d: Demand = i.demand) =>
    planPools({
      demand: d,
      pools: { gpu: { ...i.gpu, gpusPerPod: 1 }, cpu: i.cpu },
      gpuUnschedulableSinceMs: i.since === undefined ? undefined : NOW - i.since,
      fallbackAfterMs: i.after,
      nowMs: NOW,
    });

  test('property: replicas within [min, max], 0 when disabled, ≥ 1 for a usable pool with demand', () => {
    fc.assert(
      fc.property(inputArb, (i) => {
        const p = run(i);
        for (const name of ['gpu', 'cpu'] as const) {
          const settings = i[name];
          const r = p.replicas[name];
          if (!settings.enabled) expect(r).toBe(0);
          else {
            expect(r).toBeGreaterThanOrEqual(settings.minReplicas);
            expect(r).toBeLessThanOrEqual(settings.maxReplicas);
          }
        }
        if (i.gpu.enabled && i.gpu.maxReplicas > 0 && i.demand.gpu + i.demand.auto > 0) expect(p.replicas.gpu).toBeGreaterThanOrEqual(1);
        if (i.cpu.enabled && i.cpu.maxReplicas > 0 && i.demand.cpu > 0) expect(p.replicas.cpu).toBeGreaterThanOrEqual(1);
        // Never more workers than shards, unless min asks for them.
        expect(p.replicas.gpu).toBeLessThanOrEqual(Math.max(i.gpu.minReplicas, i.demand.gpu + i.demand.auto));
      }),
    );
  });

  test('property: hardware gpu jobs never move to the CPU pool', () => {
    fc.assert(
      fc.property(inputArb, (i) => {
        const without = run(i, { ...i.demand, gpu: 0 });
        const withGpu = run(i);
        expect(withGpu.replicas.cpu).toBe(without.replicas.cpu);
        expect(withGpu.fallback).toEqual(without.fallback);
      }),
    );
  });

  test('property: a usable GPU pool falls back only after the delay, and then keeps its replicas', () => {
    fc.assert(
      fc.property(inputArb, (i) => {
        fc.pre(i.gpu.enabled && i.gpu.maxReplicas > 0);
        const p = run(i);
        const due = i.since !== undefined && i.since >= i.after;
        expect(p.fallback?.reason).toBe(due ? 'GPUUnschedulable' : undefined);
        const noAuto = run(i, { ...i.demand, auto: 0 });
        if (!due) expect(p.replicas.cpu).toBe(noAuto.replicas.cpu);
        const never = planPools({ demand: i.demand, pools: { gpu: { ...i.gpu, gpusPerPod: 1 }, cpu: i.cpu }, fallbackAfterMs: i.after, nowMs: NOW });
        expect(p.replicas.gpu).toBe(never.replicas.gpu);
      }),
    );
  });

  test('property: more demand never means fewer replicas', () => {
    fc.assert(
      fc.property(inputArb, fc.constantFrom<keyof Demand>('auto', 'gpu', 'cpu'), fc.nat(50), (i, k, extra) => {
        const a = run(i);
        const b = run(i, { ...i.demand, [k]: i.demand[k] + extra });
        expect(b.replicas.gpu).toBeGreaterThanOrEqual(a.replicas.gpu);
        expect(b.replicas.cpu).toBeGreaterThanOrEqual(a.replicas.cpu);
      }),
    );
  });

  describe('with gpuUnavailable (a GPU worker found no usable GPU)', () => {
    const WHY = 'GPU worker pod widescan-worker-gpu-abc12 on node gpu-1 found no usable GPU';
    const unavailable = (d: Partial<Demand>, p: Pools = pools(), unschedulableForMs?: number): PoolPlan => plan(d, p, unschedulableForMs, WHY);

    test('falls back at once, without waiting for fallbackAfter; the CPU pool is sized for the auto demand', () => {
      const p = unavailable({ auto: 3 });
      expect(p.fallback).toEqual({ reason: 'GPUUnavailable', message: `${WHY}; auto jobs run on the CPU pool` });
      // The GPU pool keeps its pods: one that gets a working GPU ends the fallback.
      expect(p.replicas).toEqual({ gpu: 3, cpu: 3 });
      // `hardware: gpu` jobs never fall back: they wait, and say why.
      expect(p.gpuBlocked).toMatch(/^hardware: gpu jobs cannot run: GPU worker pod widescan-worker-gpu-abc12 on node gpu-1 found no usable GPU; fix the GPU nodes' driver/);
      expect(p.cpuBlocked).toBeUndefined();
      expect(unavailable({ auto: 2, cpu: 1 }, pools({}, { maxReplicas: 2 })).replicas).toEqual({ gpu: 2, cpu: 2 });
      expect(unavailable({}).replicas).toEqual({ gpu: 0, cpu: 0 });
    });

    test('wins over GPUUnschedulable (it is the more precise cause), also before the delay', () => {
      expect(unavailable({ auto: 1 }, pools(), AFTER * 3).fallback?.reason).toBe('GPUUnavailable');
      expect(unavailable({ auto: 1 }, pools(), 1).fallback?.reason).toBe('GPUUnavailable');
    });

    test('hardware: gpu jobs still never move to the CPU pool', () => {
      const p = unavailable({ gpu: 2 });
      expect(p.replicas).toEqual({ gpu: 2, cpu: 0 });
      expect(p.fallback?.reason).toBe('GPUUnavailable');
    });

    test('a disabled GPU pool wins: GPUPoolDisabled, not GPUUnavailable', () => {
      const p = unavailable({ auto: 2 }, pools({ enabled: false }));
      expect(p.fallback).toEqual({ reason: 'GPUPoolDisabled', message: 'the GPU pool is disabled (pools.gpu.enabled: false); auto jobs run on the CPU pool' });
      expect(p.replicas).toEqual({ gpu: 0, cpu: 2 });
      expect(unavailable({ auto: 2 }, pools({ maxReplicas: 0 })).fallback?.reason).toBe('GPUPoolDisabled');
    });

    test('with the CPU pool disabled too, the message says that auto jobs wait', () => {
      const p = unavailable({ auto: 2 }, pools({}, { enabled: false }));
      expect(p.fallback).toEqual({
        reason: 'GPUUnavailable',
        message: `${WHY}; the CPU pool is disabled (pools.cpu.enabled: false) too, so auto jobs wait`,
      });
      expect(p.replicas).toEqual({ gpu: 2, cpu: 0 });
      expect(unavailable({ auto: 2 }, pools({}, { maxReplicas: 0 })).fallback!.message).toBe(`${WHY}; the CPU pool has pools.cpu.maxReplicas 0 too, so auto jobs wait`);
    });

    test('property: for a usable GPU pool, always GPUUnavailable and sized as a due fallback', () => {
      fc.assert(
        fc.property(inputArb, fc.string({ maxLength: 40 }), (i, why) => {
          fc.pre(i.gpu.enabled && i.gpu.maxReplicas > 0);
          const p = planPools({
            demand: i.demand,
            pools: { gpu: { ...i.gpu, gpusPerPod: 1 }, cpu: i.cpu },
            gpuUnschedulableSinceMs: i.since === undefined ? undefined : NOW - i.since,
            gpuUnavailable: why,
            fallbackAfterMs: i.after,
            nowMs: NOW,
          });
          expect(p.fallback?.reason).toBe('GPUUnavailable');
          expect(p.fallback!.message.startsWith(`${why}; `)).toBe(true);
          const due = planPools({ demand: i.demand, pools: { gpu: { ...i.gpu, gpusPerPod: 1 }, cpu: i.cpu }, gpuUnschedulableSinceMs: NOW, fallbackAfterMs: 0, nowMs: NOW });
          expect(p.replicas).toEqual(due.replicas);
        }),
      );
    });
  });
});

interface PodSpec {
  name?: string;
  labels?: Record<string, string>;
  node?: string;
  phase?: string;
  conditions?: V1PodCondition[];
  deleting?: boolean;
}

const pod = ({ name = 'p', labels = {}, node, phase = 'Running', conditions = [], deleting = false }: PodSpec): V1Pod => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, labels, ...(deleting ? { deletionTimestamp: new Date('2025-01-01T00:00:00Z') } : {}) },
  spec: { containers: [{ name: 'c' }], ...(node ? { nodeName: node } : {}) },
  status: { phase, conditions },
});

const worker = (pool: PoolName, extra: PodSpec = {}): V1Pod => pod({ labels: POOL_LABELS(pool), ...extra });
const ready = (status = 'True'): V1PodCondition => ({ type: 'Ready', status });
// Pods read as plain JSON carry strings where the typed client says Date.
const unschedulable = (time: string, reason = 'Unschedulable'): V1PodCondition =>
  ({ type: 'PodScheduled', status: 'False', reason, lastTransitionTime: time }) as unknown as V1PodCondition;

describe('gpuUnschedulableSince', () => {
  test('no pods, or none unschedulable: undefined', () => {
    expect(gpuUnschedulableSince([])).toBeUndefined();
    expect(gpuUnschedulableSince([worker('gpu', { conditions: [{ type: 'PodScheduled', status: 'True' }, ready()] })])).toBeUndefined();
  });

  test('the earliest transition among unschedulable GPU pods', () => {
    const pods = [
      worker('gpu', { phase: 'Pending', conditions: [unschedulable('2025-03-01T10:00:05Z')] }),
      worker('gpu', { phase: 'Pending', conditions: [unschedulable('2025-03-01T10:00:00Z')] }),
      worker('gpu', { conditions: [ready()] }),
    ];
    expect(gpuUnschedulableSince(pods)).toBe(Date.parse('2025-03-01T10:00:00Z'));
  });

  test('Date objects (typed client) are read too', () => {
    const c: V1PodCondition = { type: 'PodScheduled', status: 'False', reason: 'Unschedulable', lastTransitionTime: new Date(5000) };
    expect(gpuUnschedulableSince([worker('gpu', { conditions: [c] })])).toBe(5000);
  });

  test('CPU pool pods, pods being deleted, other reasons and unreadable times are ignored', () => {
    const pods = [
      worker('cpu', { conditions: [unschedulable('2025-01-01T00:00:00Z')] }),
      worker('gpu', { deleting: true, conditions: [unschedulable('2025-01-01T00:00:01Z')] }),
      worker('gpu', { conditions: [unschedulable('2025-01-01T00:00:02Z', 'SchedulingGated')] }),
      worker('gpu', { conditions: [unschedulable('not a time')] }),
      worker('gpu', { conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable' }] }),
      pod({ labels: { 'app.kubernetes.io/component': 'worker' }, conditions: [unschedulable('2025-01-01T00:00:03Z')] }),
      { metadata: { labels: POOL_LABELS('gpu') } } as V1Pod,
    ];
    expect(gpuUnschedulableSince(pods)).toBeUndefined();
    expect(gpuUnschedulableSince([...pods, worker('gpu', { conditions: [unschedulable('2025-01-01T00:00:09Z')] })])).toBe(Date.parse('2025-01-01T00:00:09Z'));
  });
});

describe('gpuUnavailable', () => {
  const FINISHED = '2025-03-01T10:00:00Z';
  const MESSAGE = 'GPU worker has no usable GPU: the only WebGPU adapter is a software rasteriser (mesa / llvmpipe), which is never used for scanning';
  const exited = (exitCode: number, extra: Record<string, unknown> = {}): V1ContainerState =>
    ({ terminated: { exitCode, reason: 'Error', finishedAt: FINISHED, message: MESSAGE, ...extra } }) as unknown as V1ContainerState;
  const backOff: V1ContainerState = { waiting: { reason: 'CrashLoopBackOff', message: 'back-off 10s restarting failed container=worker' } };
  /** A GPU worker pod (pool label, node) whose worker container is in `state` after `lastState`. */
  const gpuPod = (name: string, state: V1ContainerState, lastState: V1ContainerState = {}, extra: PodSpec & { ready?: boolean } = {}): V1Pod => {
    const p = worker('gpu', { name, node: 'gpu-1', ...extra });
    const status: V1ContainerStatus = { name: 'worker', image: 'widescan', imageID: '', ready: extra.ready ?? false, restartCount: 1, state, lastState };
    p.status!.containerStatuses = [status];
    return p;
  };

  test('exit 3 in lastState while in CrashLoopBackOff: names the pod and the node, with the termination message', () => {
    expect(EXIT_GPU_UNAVAILABLE).toBe(3);
    expect(gpuUnavailable([gpuPod('widescan-worker-gpu-abc12', backOff, exited(3))])).toBe(
      `GPU worker pod widescan-worker-gpu-abc12 on node gpu-1 found no usable GPU (${MESSAGE})`,
    );
  });

  test('exit 3 in state.terminated counts too; the message is trimmed, and left out when there is none', () => {
    expect(gpuUnavailable([gpuPod('p1', exited(3, { message: `  ${MESSAGE}\n` }))])).toBe(`GPU worker pod p1 on node gpu-1 found no usable GPU (${MESSAGE})`);
    expect(gpuUnavailable([gpuPod('p1', exited(3, { message: undefined }))])).toBe('GPU worker pod p1 on node gpu-1 found no usable GPU');
    expect(gpuUnavailable([gpuPod('p1', exited(3, { message: '' }))])).toBe('GPU worker pod p1 on node gpu-1 found no usable GPU');
  });

  test('another exit code, no termination at all, or no pods: undefined', () => {
    expect(gpuUnavailable([])).toBeUndefined();
    expect(gpuUnavailable([gpuPod('p1', backOff, exited(1))])).toBeUndefined();
    expect(gpuUnavailable([gpuPod('p1', exited(0))])).toBeUndefined();
    expect(gpuUnavailable([gpuPod('p1', exited(137, { reason: 'OOMKilled' }))])).toBeUndefined();
    expect(gpuUnavailable([gpuPod('p1', { waiting: { reason: 'ContainerCreating' } })])).toBeUndefined();
    expect(gpuUnavailable([gpuPod('p1', backOff, exited(1)), gpuPod('p2', exited(2))])).toBeUndefined();
  });

  test('a worker that is running and ready again is not counted', () => {
    const running: V1ContainerState = { running: { startedAt: new Date('2025-03-01T10:00:10Z') } };
    expect(gpuUnavailable([gpuPod('p1', running, exited(3), { ready: true })])).toBeUndefined();
    // …but another pod still crashing is.
    expect(gpuUnavailable([gpuPod('p1', running, exited(3), { ready: true }), gpuPod('p2', backOff, exited(3))])).toMatch(/^GPU worker pod p2 /);
  });

  test('a restarted worker that runs but is not ready yet still counts: it is probing its GPU again', () => {
    // Else every restart of a crash-looping GPU worker would lift the fallback and scale the CPU pool down.
    const running: V1ContainerState = { running: { startedAt: new Date('2025-03-01T10:00:10Z') } };
    expect(gpuUnavailable([gpuPod('p1', running, exited(3))])).toBe(`GPU worker pod p1 on node gpu-1 found no usable GPU (${MESSAGE})`);
  });

  test('CPU pool pods and pods being deleted are ignored', () => {
    const cpu = worker('cpu', { name: 'cpu-1', node: 'n1' });
    cpu.status!.containerStatuses = [{ name: 'worker', image: 'widescan', imageID: '', ready: false, restartCount: 1, state: backOff, lastState: exited(3) }];
    expect(gpuUnavailable([cpu])).toBeUndefined();
    expect(gpuUnavailable([gpuPod('p1', backOff, exited(3), { deleting: true })])).toBeUndefined();
    expect(gpuUnavailable([cpu, gpuPod('p1', backOff, exited(3), { deleting: true }), gpuPod('p2', backOff, exited(3))])).toMatch(/^GPU worker pod p2 on node gpu-1 /);
  });

  test('the newest exit wins, whatever the order; Date objects (typed client) and strings both read', () => {
    const older = gpuPod('older', backOff, exited(3, { finishedAt: '2025-03-01T09:00:00Z', message: 'old' }));
    const newer = gpuPod('newer', backOff, exited(3, { finishedAt: new Date('2025-03-01T11:00:00Z'), message: 'new' }));
    const undated = gpuPod('undated', backOff, exited(3, { finishedAt: 'not a time', message: 'undated' }));
    for (const pods of [[older, newer, undated], [undated, newer, older]]) expect(gpuUnavailable(pods)).toMatch(/^GPU worker pod newer on node gpu-1 found no usable GPU \(new\)$/);
    expect(gpuUnavailable([undated])).toMatch(/^GPU worker pod undated /);
  });

  test('hostile input: missing status, metadata or node; a huge message is cut to 300 characters', () => {
    const bare = [
      { metadata: { labels: POOL_LABELS('gpu') } },
      { metadata: { labels: POOL_LABELS('gpu') }, status: {} },
      { metadata: { labels: POOL_LABELS('gpu') }, status: { containerStatuses: [{} as V1ContainerStatus] } },
      { metadata: { labels: POOL_LABELS('gpu') }, status: { containerStatuses: [{ lastState: { terminated: { exitCode: '3' } } } as unknown as V1ContainerStatus] } },
      {},
    ] as V1Pod[];
    expect(gpuUnavailable(bare)).toBeUndefined();
    const nameless = { metadata: { labels: POOL_LABELS('gpu') }, status: { containerStatuses: [{ lastState: exited(3, { message: 'x' }) } as V1ContainerStatus] } } as V1Pod;
    expect(gpuUnavailable([...bare, nameless])).toBe('GPU worker pod ? found no usable GPU (x)');

    const huge = gpuPod('p1', backOff, exited(3, { message: 'A'.repeat(1_000_000) }));
    const text = gpuUnavailable([huge])!;
    const quoted = /\((A*)\)$/.exec(text)![1]!;
    expect(quoted.length).toBe(300);
    expect(text).toBe(`GPU worker pod p1 on node gpu-1 found no usable GPU (${'A'.repeat(300)})`);
  });
});

describe('listenerGaps', () => {
  const SELECTOR = { 'app.kubernetes.io/name': 'widescan', 'app.kubernetes.io/component': 'listener' };
  const listener = (node: string, extra: PodSpec = {}): V1Pod => pod({ labels: { ...SELECTOR, 'pod-template-hash': 'x' }, node, conditions: [ready()], ...extra });

  test('nodes with a running worker but no Ready listener, sorted', () => {
    const pods = [
      worker('gpu', { node: 'node-c' }),
      worker('cpu', { node: 'node-a' }),
      worker('cpu', { node: 'node-b' }),
      worker('gpu', { node: 'node-b' }),
      listener('node-b'),
      listener('node-c', { conditions: [ready('False')] }),
    ];
    expect(listenerGaps(pods, SELECTOR)).toEqual(['node-a', 'node-c']);
  });

  test('a crash-looping worker (a GPU pod without a usable GPU) sends nothing: no gap for it', () => {
    const looping = worker('gpu', { node: 'gpu-1' });
    looping.status!.containerStatuses = [{ name: 'worker', image: 'w', imageID: '', ready: false, restartCount: 4, state: { waiting: { reason: 'CrashLoopBackOff' } } }];
    const running = worker('cpu', { node: 'cpu-1' });
    running.status!.containerStatuses = [{ name: 'worker', image: 'w', imageID: '', ready: true, restartCount: 0, state: { running: {} } }];
    expect(listenerGaps([looping, running], SELECTOR)).toEqual(['cpu-1']);
  });

  test('every node covered: no gaps', () => {
    expect(listenerGaps([worker('gpu', { node: 'n1' }), listener('n1'), listener('n2')], SELECTOR)).toEqual([]);
  });

  test('a listener being deleted or without all selector labels does not cover its node', () => {
    const pods = [
      worker('cpu', { node: 'n1' }),
      worker('cpu', { node: 'n2' }),
      listener('n1', { deleting: true }),
      pod({ labels: { 'app.kubernetes.io/component': 'listener' }, node: 'n2', conditions: [ready()] }),
    ];
    expect(listenerGaps(pods, SELECTOR)).toEqual(['n1', 'n2']);
  });

  test('pending, unscheduled and terminating workers need no listener', () => {
    const pods = [
      worker('gpu', { node: 'n1', phase: 'Pending' }),
      worker('gpu', { phase: 'Running' }),
      worker('cpu', { node: 'n2', deleting: true }),
      worker('cpu', { node: 'n3', phase: 'Succeeded' }),
    ];
    expect(listenerGaps(pods, SELECTOR)).toEqual([]);
  });

  test('a custom selector is honoured', () => {
    const custom = { app: 'my-listener' };
    const pods = [worker('cpu', { node: 'n1' }), worker('cpu', { node: 'n2' }), pod({ labels: { app: 'my-listener' }, node: 'n1', conditions: [ready()] })];
    expect(listenerGaps(pods, custom)).toEqual(['n2']);
    expect(listenerGaps(pods, SELECTOR)).toEqual(['n1', 'n2']);
  });

  test('an empty selector is refused (it would count workers as listeners)', () => {
    expect(() => listenerGaps([worker('cpu', { node: 'n1' })], {})).toThrow(/listenerSelector/);
  });
});

describe('readyWorkers', () => {
  test('counts Ready worker pods per pool', () => {
    const pods = [
      worker('gpu', { conditions: [ready()] }),
      worker('gpu', { conditions: [ready()] }),
      worker('gpu', { conditions: [ready('False')] }),
      worker('gpu', { conditions: [ready()], deleting: true }),
      worker('cpu', { conditions: [ready()] }),
      worker('cpu', { phase: 'Pending' }),
      pod({ labels: { 'widescan.dev/pool': 'cpu' }, conditions: [ready()] }),
      pod({ labels: { ...POOL_LABELS('cpu'), 'widescan.dev/pool': 'tpu' }, conditions: [ready()] }),
      pod({ labels: { 'app.kubernetes.io/name': 'widescan', 'app.kubernetes.io/component': 'listener' }, conditions: [ready()] }),
    ];
    expect(readyWorkers(pods)).toEqual({ gpu: 2, cpu: 1 });
    expect(readyWorkers([])).toEqual({ gpu: 0, cpu: 0 });
  });
});

describe('poolDeployment', () => {
  const config = (extra: Record<string, unknown> = {}): OperatorConfig =>
    parseOperatorConfig(JSON.stringify({ namespace: 'scans', image: 'registry.local/widescan:1', ...extra }), 'test');
  const owner = { apiVersion: 'apps/v1', kind: 'Deployment', name: 'widescan-operator', uid: 'u-1', controller: false, blockOwnerDeletion: false };
  const container = (d: ReturnType<typeof poolDeployment>) => d.spec!.template.spec!.containers[0]!;

  test('the GPU pool with defaults', () => {
    const d = poolDeployment(config(), 'gpu', 3);
    expect(d.apiVersion).toBe('apps/v1');
    expect(d.kind).toBe('Deployment');
    expect(d.metadata).toEqual({ name: 'widescan-worker-gpu', namespace: 'scans', labels: POOL_LABELS('gpu') });
    expect(POOL_LABELS('gpu')).toEqual({
      'app.kubernetes.io/name': 'widescan',
      'app.kubernetes.io/component': 'worker',
      'app.kubernetes.io/managed-by': 'widescan-operator',
      'widescan.dev/pool': 'gpu',
    });
    expect(d.spec!.replicas).toBe(3);
    expect(d.spec!.selector).toEqual({ matchLabels: POOL_LABELS('gpu') });
    expect(d.spec!.template.metadata!.labels).toEqual(POOL_LABELS('gpu'));
    expect(d.spec!.strategy!.type).toBe('RollingUpdate');
    const spec = d.spec!.template.spec!;
    expect(spec.hostNetwork).toBe(true);
    expect(spec.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(spec.terminationGracePeriodSeconds).toBe(30);
    expect(spec.securityContext).toEqual({ seccompProfile: { type: 'RuntimeDefault' } });
    expect(spec.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    expect(spec.nodeSelector).toBeUndefined();
    expect(spec.imagePullSecrets).toBeUndefined();
    expect(spec.serviceAccountName).toBeUndefined();
    expect(spec.containers).toHaveLength(1);
    const c = container(d);
    expect(c.name).toBe('worker');
    expect(c.image).toBe('registry.local/widescan:1');
    expect(c.imagePullPolicy).toBe('IfNotPresent');
    expect(c.args).toEqual(['worker']);
    // graphics: WebGPU (Dawn) needs the driver's Vulkan ICD, which the NVIDIA container toolkit mounts only then.
    expect(c.env).toEqual([
      { name: 'WIDESCAN_HARDWARE', value: 'gpu' },
      { name: 'WIDESCAN_METRICS_PORT', value: '9102' },
      { name: 'NVIDIA_DRIVER_CAPABILITIES', value: 'compute,utility,graphics' },
    ]);
    expect(c.ports).toEqual([{ name: 'metrics', containerPort: 9102 }]);
    expect(c.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(c.livenessProbe!.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(c.resources).toEqual({ limits: { 'nvidia.com/gpu': '1' } });
    expect(c.securityContext).toEqual({
      capabilities: { drop: ['ALL'], add: ['NET_RAW'] },
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      runAsNonRoot: false,
      runAsUser: 0,
      seccompProfile: { type: 'RuntimeDefault' },
    });
  });

  test('the CPU pool: its own name, labels, hardware, and no GPU limit', () => {
    const d = poolDeployment(config(), 'cpu', 0);
    expect(d.metadata!.name).toBe(poolDeploymentName('cpu'));
    expect(d.spec!.selector.matchLabels).toEqual(POOL_LABELS('cpu'));
    expect(d.spec!.replicas).toBe(0);
    expect(container(d).env).toEqual([
      { name: 'WIDESCAN_HARDWARE', value: 'cpu' },
      { name: 'WIDESCAN_METRICS_PORT', value: '9102' },
    ]);
    expect(container(d).env!.map((e) => e.name)).not.toContain('NVIDIA_DRIVER_CAPABILITIES');
    expect(container(d).resources).toBeUndefined();
    expect(d.spec!.template.spec!.tolerations).toBeUndefined();
    const withResources = poolDeployment(config({ pools: { cpu: { resources: { limits: { cpu: 2 } } } } }), 'cpu', 1);
    expect(container(withResources).resources).toEqual({ limits: { cpu: '2' } });
  });

  test('GPU limits: gpusPerPod added to the pool limits, requests kept', () => {
    const c = config({ pools: { gpu: { gpusPerPod: 2, resources: { limits: { cpu: '4', memory: '8Gi' }, requests: { cpu: '1' } } } } });
    expect(container(poolDeployment(c, 'gpu', 1)).resources).toEqual({
      limits: { cpu: '4', memory: '8Gi', 'nvidia.com/gpu': '2' },
      requests: { cpu: '1' },
    });
    // The pool's own settings are not modified by adding the GPU limit.
    expect(c.pools.gpu.resources!.limits).toEqual({ cpu: '4', memory: '8Gi' });
  });

  test('pool image, pull policy, pull secrets, service account, grace period, port and node placement come from the config', () => {
    const c = config({
      imagePullPolicy: 'Always',
      imagePullSecrets: [{ name: 'regcred' }],
      serviceAccountName: 'widescan-worker',
      terminationGracePeriodSeconds: 5,
      workerMetricsPort: 9300,
      pools: { cpu: { image: 'registry.local/widescan-cpu:2', nodeSelector: { pool: 'cpu' }, tolerations: [{ key: 'spot', operator: 'Exists' }] } },
    });
    const d = poolDeployment(c, 'cpu', 2);
    const spec = d.spec!.template.spec!;
    expect(container(d).image).toBe('registry.local/widescan-cpu:2');
    expect(container(poolDeployment(c, 'gpu', 2)).image).toBe('registry.local/widescan:1');
    expect(container(d).imagePullPolicy).toBe('Always');
    expect(spec.imagePullSecrets).toEqual([{ name: 'regcred' }]);
    expect(spec.serviceAccountName).toBe('widescan-worker');
    expect(spec.terminationGracePeriodSeconds).toBe(5);
    expect(spec.nodeSelector).toEqual({ pool: 'cpu' });
    expect(spec.tolerations).toEqual([{ key: 'spot', operator: 'Exists' }]);
    expect(container(d).ports).toEqual([{ name: 'metrics', containerPort: 9300 }]);
    expect(container(d).env).toContainEqual({ name: 'WIDESCAN_METRICS_PORT', value: '9300' });
  });

  test('workerEnv follows ours; an entry with our name replaces ours in place, no duplicates', () => {
    const c = config({
      workerEnv: [
        { name: 'WIDESCAN_REDIS_URL', valueFrom: { secretKeyRef: { name: 'redis', key: 'url' } } },
        { name: 'LOG_LEVEL', value: 'debug' },
      ],
    });
    expect(container(poolDeployment(c, 'cpu', 1)).env).toEqual([
      { name: 'WIDESCAN_HARDWARE', value: 'cpu' },
      { name: 'WIDESCAN_METRICS_PORT', value: '9102' },
      { name: 'WIDESCAN_REDIS_URL', valueFrom: { secretKeyRef: { name: 'redis', key: 'url' } } },
      { name: 'LOG_LEVEL', value: 'debug' },
    ]);
    // The config parser refuses this, but a hand-built config still gets one entry per name.
    const handBuilt: OperatorConfig = { ...c, workerEnv: [{ name: 'WIDESCAN_METRICS_PORT', value: '1' }, { name: 'X', value: 'a' }, { name: 'X', value: 'b' }] };
    expect(container(poolDeployment(handBuilt, 'gpu', 1)).env).toEqual([
      { name: 'WIDESCAN_HARDWARE', value: 'gpu' },
      { name: 'WIDESCAN_METRICS_PORT', value: '1' },
      { name: 'NVIDIA_DRIVER_CAPABILITIES', value: 'compute,utility,graphics' },
      { name: 'X', value: 'b' },
    ]);
  });

  test('workerEnv may set NVIDIA_DRIVER_CAPABILITIES: it replaces ours in place on the GPU pool, and reaches the CPU pool as given', () => {
    const c = config({ workerEnv: [{ name: 'LOG_LEVEL', value: 'debug' }, { name: 'NVIDIA_DRIVER_CAPABILITIES', value: 'all' }] });
    expect(container(poolDeployment(c, 'gpu', 1)).env).toEqual([
      { name: 'WIDESCAN_HARDWARE', value: 'gpu' },
      { name: 'WIDESCAN_METRICS_PORT', value: '9102' },
      { name: 'NVIDIA_DRIVER_CAPABILITIES', value: 'all' },
      { name: 'LOG_LEVEL', value: 'debug' },
    ]);
    expect(container(poolDeployment(c, 'cpu', 1)).env).toEqual([
      { name: 'WIDESCAN_HARDWARE', value: 'cpu' },
      { name: 'WIDESCAN_METRICS_PORT', value: '9102' },
      { name: 'LOG_LEVEL', value: 'debug' },
      { name: 'NVIDIA_DRIVER_CAPABILITIES', value: 'all' },
    ]);
  });

  test('property: env names are unique whatever workerEnv holds', () => {
    const base = config();
    const names = fc.constantFrom('WIDESCAN_HARDWARE', 'WIDESCAN_METRICS_PORT', 'NVIDIA_DRIVER_CAPABILITIES', 'A', 'B', 'WIDESCAN_REDIS_URL');
    fc.assert(
      fc.property(fc.array(fc.record({ name: names, value: fc.string({ maxLength: 4 }) }), { maxLength: 8 }), fc.constantFrom<PoolName>('gpu', 'cpu'), (env, pool) => {
        const out = container(poolDeployment({ ...base, workerEnv: env }, pool, 1)).env!;
        const outNames = out.map((e) => e.name);
        expect(new Set(outNames).size).toBe(outNames.length);
        for (const e of env) expect(out.find((o) => o.name === e.name)).toEqual(env.filter((x) => x.name === e.name).at(-1));
      }),
    );
  });

  test('owner reference copied as controller with blockOwnerDeletion; none without an owner', () => {
    const d = poolDeployment(config(), 'gpu', 1, owner);
    expect(d.metadata!.ownerReferences).toEqual([
      { apiVersion: 'apps/v1', kind: 'Deployment', name: 'widescan-operator', uid: 'u-1', controller: true, blockOwnerDeletion: true },
    ]);
    expect(owner.controller).toBe(false);
    expect('ownerReferences' in poolDeployment(config(), 'gpu', 1).metadata!).toBe(false);
  });

  test('deterministic, plain JSON, and not aliased to the config', () => {
    const c = config({ workerEnv: [{ name: 'A', value: '1' }], pools: { gpu: { nodeSelector: { a: 'b' } } } });
    const a = poolDeployment(c, 'gpu', 2, owner);
    const b = poolDeployment(c, 'gpu', 2, owner);
    expect(a).toStrictEqual(b);
    expect(JSON.parse(JSON.stringify(a))).toStrictEqual(a);
    container(a).env!.push({ name: 'B', value: '2' });
    container(a).env!.find((e) => e.name === 'A')!.value = 'changed';
    a.spec!.template.spec!.nodeSelector!.a = 'changed';
    a.spec!.template.spec!.tolerations!.push({ key: 'x' });
    a.metadata!.labels!['widescan.dev/pool'] = 'changed';
    expect(c.workerEnv).toEqual([{ name: 'A', value: '1' }]);
    expect(c.pools.gpu.nodeSelector).toEqual({ a: 'b' });
    expect(c.pools.gpu.tolerations).toHaveLength(1);
    expect(poolDeployment(c, 'gpu', 2, owner)).toStrictEqual(b);
  });

  test.each([-1, 1.5, Number.NaN])('replicas %p is refused', (r) => {
    expect(() => poolDeployment(config(), 'cpu', r)).toThrow(/replicas must be a non-negative integer/);
  });
});

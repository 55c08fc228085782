// The two worker pools, as pure functions of the backlog and the cluster's pods: how many replicas each
// pool gets, when `auto` jobs fall back from GPU to CPU, and the Deployment each pool is. The controller
// does the I/O; everything deciding what to do is here, so that it can be tested exhaustively.

import type { V1Deployment, V1EnvVar, V1OwnerReference, V1Pod, V1PodCondition } from '@kubernetes/client-node';
import { EXIT_GPU_UNAVAILABLE } from '../lib/core/job.js';
import { GPU_RESOURCE, type OperatorConfig, type PoolSettings } from './config.js';

export type PoolName = 'gpu' | 'cpu';

export const POOL_LABEL = 'widescan.dev/pool';

export const POOL_LABELS = (pool: PoolName): Record<string, string> => ({
  'app.kubernetes.io/name': 'widescan',
  'app.kubernetes.io/component': 'worker',
  'app.kubernetes.io/managed-by': 'widescan-operator',
  [POOL_LABEL]: pool,
});

export const poolDeploymentName = (pool: PoolName): string => `widescan-worker-${pool}`;

/** Remaining shards of runnable jobs, by `spec.hardware`. */
export interface Demand {
  auto: number;
  gpu: number;
  cpu: number;
}

export interface PoolPlan {
  replicas: Record<PoolName, number>;
  /**
   * Whether `auto` jobs are served by the CPU pool, and why. Set whenever the GPU pool cannot serve them,
   * also when the CPU pool is disabled too (then the message says that auto jobs wait).
   */
  fallback?: { reason: 'GPUPoolDisabled' | 'GPUUnschedulable' | 'GPUUnavailable'; message: string };
  /** Set when `hardware: gpu` jobs cannot run (GPU pool disabled or max 0). */
  gpuBlocked?: string;
  /** Set when `hardware: cpu` jobs cannot run (CPU pool disabled or max 0). */
  cpuBlocked?: string;
}

export interface PlanInput {
  demand: Demand;
  pools: OperatorConfig['pools'];
  /** From `gpuUnschedulableSince`: since when a GPU worker pod has been waiting for a node. */
  gpuUnschedulableSinceMs?: number;
  /** From `gpuUnavailable`: why scheduled GPU worker pods cannot use their GPU. */
  gpuUnavailable?: string;
  fallbackAfterMs: number;
  nowMs: number;
}

/** Why a pool can run nothing, or undefined if it can. */
function unusable(name: PoolName, pool: PoolSettings): string | undefined {
  if (!pool.enabled) return `the ${name.toUpperCase()} pool is disabled (pools.${name}.enabled: false)`;
  if (pool.maxReplicas <= 0) return `the ${name.toUpperCase()} pool has pools.${name}.maxReplicas 0`;
  return undefined;
}

/** One worker per remaining shard, within [min, max] (so at least one while there is work and max > 0). */
function replicasFor(pool: PoolSettings, demand: number): number {
  if (!pool.enabled) return 0;
  return Math.max(0, Math.min(pool.maxReplicas, Math.max(pool.minReplicas, demand)));
}

function checkCount(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${what} must be a non-negative integer, got ${String(value)}`);
}

/** Replicas per pool for the current backlog, and whether `auto` jobs fall back to the CPU pool. */
export function planPools(input: PlanInput): PoolPlan {
  const { demand, pools, gpuUnschedulableSinceMs: since, gpuUnavailable, fallbackAfterMs, nowMs } = input;
  for (const k of ['auto', 'gpu', 'cpu'] as const) checkCount(demand[k], `demand.${k}`);
  const gpuProblem = unusable('gpu', pools.gpu);
  const cpuProblem = unusable('cpu', pools.cpu);
  const plan: PoolPlan = { replicas: { gpu: 0, cpu: 0 } };
  // With no CPU pool, auto jobs simply wait for GPU capacity; the message says so instead of promising a fallback.
  const outcome = cpuProblem ? `${cpuProblem} too, so auto jobs wait` : 'auto jobs run on the CPU pool';
  if (gpuProblem) {
    plan.fallback = { reason: 'GPUPoolDisabled', message: `${gpuProblem}; ${outcome}` };
  } else if (gpuUnavailable !== undefined) {
    // Conclusive at once: the worker itself found no usable GPU, waiting longer changes nothing.
    plan.fallback = { reason: 'GPUUnavailable', message: `${gpuUnavailable}; ${outcome}` };
  } else if (since !== undefined && nowMs - since >= fallbackAfterMs) {
    const waited = Math.floor((nowMs - since) / 1000);
    plan.fallback = {
      reason: 'GPUUnschedulable',
      message: `GPU worker pods unschedulable for ${waited} s (limit ${Math.floor(fallbackAfterMs / 1000)} s); ${outcome}`,
    };
  }
  // The GPU pool keeps sizing for auto jobs while falling back: its pending pods are what tells us that GPUs
  // have appeared, and once they schedule the fallback ends by itself.
  plan.replicas.gpu = replicasFor(pools.gpu, demand.gpu + demand.auto);
  plan.replicas.cpu = replicasFor(pools.cpu, demand.cpu + (plan.fallback ? demand.auto : 0));
  if (gpuProblem) plan.gpuBlocked = `hardware: gpu jobs cannot run: ${gpuProblem}; enable it or use hardware: auto`;
  else if (gpuUnavailable !== undefined) plan.gpuBlocked = `hardware: gpu jobs cannot run: ${gpuUnavailable}; fix the GPU nodes' driver, or use hardware: auto`;
  if (cpuProblem) plan.cpuBlocked = `hardware: cpu jobs cannot run: ${cpuProblem}; enable it or use hardware: auto`;
  return plan;
}

const beingDeleted = (pod: V1Pod): boolean => pod.metadata?.deletionTimestamp != null;

const condition = (pod: V1Pod, type: string): V1PodCondition | undefined => pod.status?.conditions?.find((c) => c.type === type);

const isReady = (pod: V1Pod): boolean => condition(pod, 'Ready')?.status === 'True';

const hasLabels = (pod: V1Pod, selector: Record<string, string>): boolean =>
  Object.entries(selector).every(([k, v]) => pod.metadata?.labels?.[k] === v);

const WORKER_SELECTOR = { 'app.kubernetes.io/name': 'widescan', 'app.kubernetes.io/component': 'worker' };

/** The typed client says Date; pods read as plain JSON carry RFC 3339 strings. */
function timeMs(t: Date | string | undefined): number | undefined {
  if (t == null) return undefined;
  const ms = new Date(t).getTime();
  return Number.isNaN(ms) ? undefined : ms;
}

/**
 * Why GPU worker pods cannot use their GPU: the newest pod whose worker exited with EXIT_GPU_UNAVAILABLE
 * (at start, finding no usable WebGPU adapter), with its termination message; undefined if none did. A pod
 * whose worker is ready again is not counted.
 */
export function gpuUnavailable(pods: V1Pod[]): string | undefined {
  let found: { ms: number; text: string } | undefined;
  for (const pod of pods) {
    if (pod.metadata?.labels?.[POOL_LABEL] !== 'gpu' || beingDeleted(pod)) continue;
    for (const c of pod.status?.containerStatuses ?? []) {
      // Running is not enough: a restarted worker probes its GPU again first (and likely exits again); it
      // serves /readyz only once past that check, so only a ready one has a usable GPU.
      if (c.ready) continue;
      const t = c.state?.terminated ?? c.lastState?.terminated;
      if (t?.exitCode !== EXIT_GPU_UNAVAILABLE) continue;
      const ms = timeMs(t.finishedAt) ?? 0;
      const where = pod.spec?.nodeName ? ` on node ${pod.spec.nodeName}` : '';
      const text = `GPU worker pod ${pod.metadata?.name ?? '?'}${where} found no usable GPU${t.message ? ` (${t.message.trim().slice(0, 300)})` : ''}`;
      if (found === undefined || ms > found.ms) found = { ms, text };
    }
  }
  return found?.text;
}

/** Since when (ms) the longest-waiting GPU worker pod has been unschedulable; undefined if none is. */
export function gpuUnschedulableSince(pods: V1Pod[]): number | undefined {
  let earliest: number | undefined;
  for (const pod of pods) {
    if (pod.metadata?.labels?.[POOL_LABEL] !== 'gpu' || beingDeleted(pod)) continue;
    const scheduled = condition(pod, 'PodScheduled');
    if (scheduled?.status !== 'False' || scheduled.reason !== 'Unschedulable') continue;
    const ms = timeMs(scheduled.lastTransitionTime);
    if (ms !== undefined && (earliest === undefined || ms < earliest)) earliest = ms;
  }
  return earliest;
}

/**
 * Nodes (sorted) where a worker probes but no Ready listener catches the replies. Workers being deleted are
 * left out: they have been told to stop and return their shard.
 */
export function listenerGaps(pods: V1Pod[], listenerSelector: Record<string, string>): string[] {
  // An empty selector would count every pod, workers included, as a listener and hide every gap.
  if (Object.keys(listenerSelector).length === 0) throw new RangeError('listenerSelector must name at least one label');
  const probing = new Set<string>();
  const covered = new Set<string>();
  for (const pod of pods) {
    const node = pod.spec?.nodeName;
    if (!node || beingDeleted(pod)) continue;
    if (hasLabels(pod, listenerSelector)) {
      if (isReady(pod)) covered.add(node);
    } else if (hasLabels(pod, WORKER_SELECTOR) && pod.status?.phase === 'Running' && workerRuns(pod)) {
      probing.add(node);
    }
  }
  return [...probing].filter((n) => !covered.has(n)).sort();
}

/** A crash-looping worker (a GPU pod without a usable GPU) sends nothing: it needs no listener. */
const workerRuns = (pod: V1Pod): boolean => {
  const statuses = pod.status?.containerStatuses;
  return statuses === undefined || statuses.some((c) => c.state?.running !== undefined);
};

/** Ready worker pods per pool (pods being deleted are leaving and not counted). */
export function readyWorkers(pods: V1Pod[]): Record<PoolName, number> {
  const counts: Record<PoolName, number> = { gpu: 0, cpu: 0 };
  for (const pod of pods) {
    const pool = pod.metadata?.labels?.[POOL_LABEL];
    if ((pool !== 'gpu' && pool !== 'cpu') || !hasLabels(pod, WORKER_SELECTOR) || beingDeleted(pod) || !isReady(pod)) continue;
    counts[pool] += 1;
  }
  return counts;
}

/** Our env first, then workerEnv; a workerEnv entry of the same name replaces ours in place. */
function workerEnv(config: OperatorConfig, pool: PoolName): V1EnvVar[] {
  const env = new Map<string, V1EnvVar>([
    ['WIDESCAN_HARDWARE', { name: 'WIDESCAN_HARDWARE', value: pool }],
    ['WIDESCAN_METRICS_PORT', { name: 'WIDESCAN_METRICS_PORT', value: String(config.workerMetricsPort) }],
  ]);
  // WebGPU runs on the driver's Vulkan ICD, which the NVIDIA container toolkit mounts only with `graphics`.
  if (pool === 'gpu') env.set('NVIDIA_DRIVER_CAPABILITIES', { name: 'NVIDIA_DRIVER_CAPABILITIES', value: 'compute,utility,graphics' });
  for (const e of config.workerEnv) env.set(e.name, structuredClone(e));
  return [...env.values()];
}

/**
 * The Deployment of one worker pool. Deterministic (same input, deep-equal output) so that the controller
 * can compare it with the cluster's copy; empty lists and maps are left out, as the API server drops them.
 */
export function poolDeployment(config: OperatorConfig, pool: PoolName, replicas: number, owner?: V1OwnerReference): V1Deployment {
  checkCount(replicas, 'replicas');
  const settings: PoolSettings = config.pools[pool];
  const labels = POOL_LABELS(pool);
  const resources = structuredClone(settings.resources ?? {});
  if (pool === 'gpu') resources.limits = { ...resources.limits, [GPU_RESOURCE]: String(config.pools.gpu.gpusPerPod) };
  const port = config.workerMetricsPort;
  const nonEmpty = <T extends object>(key: string, value: T | undefined): Record<string, T> =>
    value !== undefined && Object.keys(value).length > 0 ? { [key]: structuredClone(value) } : {};

  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: {
      name: poolDeploymentName(pool),
      namespace: config.namespace,
      labels: { ...labels },
      ...(owner
        ? { ownerReferences: [{ apiVersion: owner.apiVersion, kind: owner.kind, name: owner.name, uid: owner.uid, controller: true, blockOwnerDeletion: true }] }
        : {}),
    },
    spec: {
      replicas,
      selector: { matchLabels: { ...labels } },
      // No surge: a new pod needs the old one's host port (hostNetwork) and, on the GPU pool, often its GPU,
      // so a surge pod would sit unschedulable, stall the rollout and look like a GPU shortage. A worker
      // stopped early costs nothing: its shard is redelivered.
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } },
      template: {
        metadata: { labels: { ...labels } },
        spec: {
          // Probes leave from the node's own address, so that replies reach the node's listener (DESIGN.md).
          hostNetwork: true,
          dnsPolicy: 'ClusterFirstWithHostNet',
          ...(config.serviceAccountName ? { serviceAccountName: config.serviceAccountName } : {}),
          // Workers talk to Redis, never to the Kubernetes API.
          automountServiceAccountToken: false,
          ...nonEmpty('imagePullSecrets', config.imagePullSecrets),
          terminationGracePeriodSeconds: config.terminationGracePeriodSeconds,
          ...nonEmpty('nodeSelector', settings.nodeSelector),
          ...nonEmpty('tolerations', settings.tolerations),
          securityContext: { seccompProfile: { type: 'RuntimeDefault' } },
          containers: [
            {
              name: 'worker',
              image: settings.image ?? config.image,
              imagePullPolicy: config.imagePullPolicy,
              args: ['worker'],
              env: workerEnv(config, pool),
              ports: [{ name: 'metrics', containerPort: port }],
              readinessProbe: { httpGet: { path: '/readyz', port: 'metrics' } },
              livenessProbe: { httpGet: { path: '/healthz', port: 'metrics' } },
              ...nonEmpty('resources', resources),
              // Root with no capability but NET_RAW (for the raw ICMPv6 socket): a non-root process could only get
              // it from file capabilities on the node binary, which no_new_privs (allowPrivilegeEscalation: false)
              // ignores, and Kubernetes cannot grant ambient capabilities to a non-root user.
              securityContext: {
                capabilities: { drop: ['ALL'], add: ['NET_RAW'] },
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                runAsNonRoot: false,
                runAsUser: 0,
                seccompProfile: { type: 'RuntimeDefault' },
              },
            },
          ],
        },
      },
    },
  };
}

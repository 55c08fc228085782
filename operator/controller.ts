// The WidescanJob controller: informers on WidescanJobs and on the pods of its namespace feed one rate-limited
// work queue; each job key is reconciled level-triggered and idempotently (plan it once, follow suspend and
// rate, refresh status, clean up behind the finalizer, delete after the TTL), and the `@pools` key sizes
// the GPU and CPU worker Deployments from the backlog of all jobs. Decisions are in decisions.ts and
// pools.ts; this file does the Kubernetes and Redis I/O.

import { createHash } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import type { Redis } from 'ioredis';
import { parsePrefix } from '../lib/core/cidr.js';
import { compileJob, InvalidJobError, validateManifest, type CompiledJob, type Hardware, type JobManifest, type JobSpec } from '../lib/core/job.js';
import { jobTagOf, macKeyFor, networkIdOf, networkKeyBytes } from '../lib/core/keys.js';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION } from '../lib/core/schema.js';
import type { JobStatus, Phase } from '../lib/core/status.js';
import { blocklistDigest, findJob, loadJob, setJobBlocklist, type JobRecord } from '../lib/jobstore.js';
import type { Logger } from '../lib/log.js';
import { keys } from '../lib/keys.js';
import { forgetJobMetrics, recordJobStatus, type Metrics } from '../lib/metrics.js';
import { ShardQueues } from '../lib/queue.js';
import type { OperatorConfig } from './config.js';
import { changedFixedFields, FINALIZER, jobConditions, nextStatus, phaseEvent, statusChanged, ttlRemainingMs, type WrittenStatus } from './decisions.js';
import { createInformer, type Informer } from './informer.js';
import { apiErrorSummary, apiStatus } from './apierror.js';
import { Planner, windowFor } from './planner.js';
import { gpuUnavailable, gpuUnschedulableSince, listenerGaps, planPools, poolDeployment, readyWorkers, type Demand, type PoolName, type PoolPlan } from './pools.js';
import { runWorkers, WorkQueue } from './workqueue.js';

/* A WidescanJob as the API returns it. */
export interface WidescanJobObject extends k8s.KubernetesObject {
  metadata: k8s.V1ObjectMeta & { name: string; namespace: string; uid: string };
  spec: JobSpec;
  status?: Partial<WrittenStatus>;
}

export interface ControllerOptions {
  kubeConfig: k8s.KubeConfig;
  redis: Redis;
  config: OperatorConfig;
  logger: Logger;
  metrics: Metrics;
  /** The installation's network key, for jobs without `spec.networkKeySecretRef`. */
  networkKey?: string;
  /** Who writes Events (`reportingInstance`): the pod name. */
  identity: string;
  /** Set on the worker Deployments (the operator's own Deployment), so they go when the operator is uninstalled. */
  owner?: k8s.V1OwnerReference;
  /** Informer knobs (tests shorten them). */
  informer?: { resyncMs?: number; watchdogMs?: number };
  /** Concurrent reconciles. */
  concurrency?: number;
}

const POOLS_KEY = '@pools'; // cannot collide with a `namespace/name` key
const POOLS_INTERVAL_MS = 5000;
const CLEANUP_RETRY_MS = 500;
/** Shortest top-up period of a job (the window covers at least a second of sending, so 4 per second suffice). */
const MIN_REQUEUE_MS = 100;
const MERGE = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

/** What the pools reconcile needs to know of a job: its remaining shards and where they may run. */
interface JobDemand {
  hardware: Hardware;
  remaining: number;
}

const isFinished = (p: Phase | undefined) => p === 'Succeeded' || p === 'Failed';

export class Controller {
  private readonly jobs: Informer<WidescanJobObject>;
  private readonly pods: Informer<k8s.V1Pod>;
  private readonly queue = new WorkQueue({ baseDelayMs: 200, maxDelayMs: 60_000 });
  private readonly custom: k8s.CustomObjectsApi;
  private readonly core: k8s.CoreV1Api;
  private readonly apps: k8s.AppsV1Api;
  private readonly queues: ShardQueues;
  private readonly planner: Planner;
  private readonly demand = new Map<string, JobDemand>();
  /** When each job's status was last written. */
  private readonly lastWrite = new Map<string, number>();
  /** Per job, what of its metadata last triggered a reconcile (see the informer handler). */
  private readonly seen = new Map<string, string>();
  private plan: PoolPlan = { replicas: { gpu: 0, cpu: 0 } };
  private ready: Record<PoolName, number> = { gpu: 0, cpu: 0 };
  private gaps: string[] = [];
  private running?: Promise<void>;
  /**
   * Unfinished jobs found at start that no reconcile has looked at yet: until each has told its backlog, the
   * pools are left as they are (sizing them from a partial backlog would stop running workers at every
   * operator start or failover).
   */
  private readonly unreconciled = new Set<string>();

  constructor(private readonly o: ControllerOptions) {
    const kc = o.kubeConfig;
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.apps = kc.makeApiClient(k8s.AppsV1Api);
    this.queues = new ShardQueues(o.redis);
    this.planner = new Planner(o.redis, this.queues, { window: o.config.window });
    const common = { kubeConfig: kc, logger: o.logger, resyncMs: o.informer?.resyncMs ?? 300_000, watchdogMs: o.informer?.watchdogMs ?? 150_000 };
    this.jobs = createInformer<WidescanJobObject>({
      ...common,
      path: `/apis/${GROUP}/${VERSION}/${PLURAL}`,
      list: () => this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL }) as Promise<k8s.KubernetesListObject<WidescanJobObject>>,
      onEvent: (type, obj) => {
        const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
        // Our own status writes come back as updates: re-reconciling on them would skip the status interval
        // (measured: ~230 reconciles/s for one progressing job). Only what the user or the API server changes
        // counts; resyncs and the requeue timer keep everything else level-triggered.
        const seen = `${obj.metadata.uid}|${obj.metadata.generation}|${obj.metadata.deletionTimestamp}|${obj.metadata.finalizers?.join(',')}`;
        if (type === 'update' && this.seen.get(key) === seen) return;
        if (type === 'delete') this.seen.delete(key);
        else this.seen.set(key, seen);
        this.queue.add(key);
      },
    });
    this.pods = createInformer<k8s.V1Pod>({
      ...common,
      path: `/api/v1/namespaces/${o.config.namespace}/pods`,
      list: () => this.core.listNamespacedPod({ namespace: o.config.namespace }),
      onEvent: () => this.queue.add(POOLS_KEY),
    });
  }

  /** Starts the informers and the reconcile workers; resolves once both caches are synced. */
  async start(): Promise<void> {
    await Promise.all([this.pods.start(), this.jobs.start()]);
    for (const obj of this.jobs.list()) if (!isFinished(obj.status?.phase)) this.unreconciled.add(`${obj.metadata.namespace}/${obj.metadata.name}`);
    this.queue.add(POOLS_KEY);
    this.running = runWorkers(this.queue, (key) => this.reconcile(key), {
      concurrency: this.o.concurrency ?? 4,
      onError: (key, err, retries) => {
        // A 409 means our cached copy was stale: routine, retried with the fresh object.
        if (apiStatus(err) === 409) this.o.logger.debug({ key, retries }, 'conflict; retrying with the fresh object');
        else this.o.logger.warn({ key, err: apiErrorSummary(err), retries }, 'reconcile failed; retrying with backoff');
      },
    });
    this.o.logger.info({ jobs: this.jobs.list().length }, 'controller started');
  }

  async stop(): Promise<void> {
    this.queue.shutDown();
    this.jobs.stop();
    this.pods.stop();
    await this.running;
    await this.queues.close();
  }

  private async reconcile(key: string): Promise<{ requeueAfterMs?: number } | void> {
    const end = this.o.metrics.reconcileSeconds.startTimer();
    try {
      const result = key === POOLS_KEY ? await this.reconcilePools() : await this.reconcileJob(key);
      this.unreconciled.delete(key);
      this.o.metrics.reconcile.inc({ result: 'success' });
      return result;
    } catch (err) {
      this.o.metrics.reconcile.inc({ result: 'error' });
      throw err;
    } finally {
      end();
    }
  }

  // ---- jobs ----

  private async reconcileJob(key: string): Promise<{ requeueAfterMs?: number } | void> {
    const [namespace, name] = key.split('/') as [string, string];
    const obj = this.jobs.get(namespace, name);
    if (!obj) {
      this.forgetJob(key);
      return;
    }
    if (obj.metadata.deletionTimestamp) return this.finalize(obj);
    if (!obj.metadata.finalizers?.includes(FINALIZER)) {
      // The update event this causes brings the job back to the queue.
      await this.patchJob(obj, { metadata: { finalizers: [...(obj.metadata.finalizers ?? []), FINALIZER], resourceVersion: obj.metadata.resourceVersion } });
      return;
    }
    const previous = obj.status;
    if (isFinished(previous?.phase)) return this.expire(obj);

    let record = await this.record(key, obj);
    if (!record) {
      const planned = await this.planJob(obj);
      if ('requeueAfterMs' in planned || 'done' in planned) return 'done' in planned ? undefined : planned;
      record = planned.record;
    }
    const { spec } = obj;
    if (record.blocklistDigest !== blocklistDigest(this.o.config.blocklist)) {
      await setJobBlocklist(this.o.redis, key, this.o.config.blocklist);
      this.o.logger.info({ job: key }, 'the blocklist changed; the job is recompiled with it');
      record = await loadJob(this.o.redis, key, this.planner.compiled);
    }
    if (record.suspended !== spec.suspend || record.packetsPerSecond !== spec.rate.packetsPerSecond) {
      await this.planner.control(key, { suspended: spec.suspend, packetsPerSecond: spec.rate.packetsPerSecond });
      this.o.logger.info({ job: key, suspend: spec.suspend, packetsPerSecond: spec.rate.packetsPerSecond }, 'job controls changed');
    }
    const counts = await this.planner.tick(key);
    this.track(key, record.job, counts);
    const pool = this.poolFor(record.job.spec.hardware);
    const updates = jobConditions({
      phase: counts.phase,
      changedFixed: changedFixedFields(record.job.spec, spec),
      readyWorkers: pool.ready,
      fallback: pool.fallback,
      blocked: pool.blocked,
      listenerGaps: this.gaps,
      status: counts,
    });
    const status = nextStatus(previous, counts, updates, obj.metadata.generation ?? 0, new Date());
    // Counts move with every shard: they are written at most every statusInterval; a phase or condition
    // change is written at once.
    const intervalMs = this.o.config.statusIntervalSeconds * 1000;
    const gist = (cs: readonly { type: string; status: string; reason: string }[] | undefined) => cs?.map((c) => [c.type, c.status, c.reason]);
    const urgent = previous?.phase !== status.phase || statusChanged(gist(previous?.conditions), gist(status.conditions));
    if (urgent || Date.now() - (this.lastWrite.get(key) ?? 0) >= intervalMs) {
      if (await this.writeStatus(obj, status)) this.lastWrite.set(key, Date.now());
    }
    const event = phaseEvent(previous?.phase, counts.phase, counts);
    if (event) await this.event(obj, event.type, event.reason, event.message);
    const degraded = status.conditions.find((c) => c.type === 'Degraded')!;
    const before = previous?.conditions?.find((c) => c.type === 'Degraded');
    if (degraded.status === 'True' && (before?.status !== 'True' || before.reason !== degraded.reason)) await this.event(obj, 'Warning', degraded.reason, degraded.message);
    if (isFinished(counts.phase)) return this.expire({ ...obj, status });
    // Top-ups must keep pace with the workers: come back before a quarter of the window has drained at the
    // job's rate (the window holds at least a second of sending), and at least every status interval.
    const pps = spec.rate.packetsPerSecond;
    const drainMs = (windowFor(this.o.config.window, record.job.spec, pps) * record.job.spec.shardSize * 1000) / pps;
    return { requeueAfterMs: Math.max(MIN_REQUEUE_MS, Math.min(intervalMs, drainMs / 4)) };
  }

  /** The job's Redis record, if it is this object's (a record of an earlier object of the same name is removed). */
  private async record(key: string, obj: WidescanJobObject): Promise<JobRecord | undefined> {
    const record = await findJob(this.o.redis, key, this.planner.compiled);
    if (!record || record.job.uid === obj.metadata.uid) return record;
    this.o.logger.info({ job: key, stale: record.job.uid }, 'removing the state of an earlier job of the same name');
    if (!(await this.planner.remove(key, record.job.tag))) throw new Error(`the earlier job ${key} (uid ${record.job.uid}) still has active shards`);
    return undefined;
  }

  /** Compiles and registers a new job; a spec the operator refuses ends the job Failed/InvalidSpec. */
  private async planJob(obj: WidescanJobObject): Promise<{ record: JobRecord } | { requeueAfterMs: number } | { done: true }> {
    const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
    const manifest: JobManifest = {
      apiVersion: API_VERSION,
      kind: KIND,
      metadata: { name: obj.metadata.name, namespace: obj.metadata.namespace, uid: obj.metadata.uid },
      spec: structuredClone(obj.spec),
    };
    let job: CompiledJob;
    try {
      // The API server validated the schema already; validating again costs little and covers a server
      // whose CRD is older than this operator.
      job = compileJob(validateManifest(manifest, key), { blocklist: this.o.config.blocklist.map(parsePrefix), fullLimitBits: this.o.config.fullLimitBits, source: key });
    } catch (err) {
      if (!(err instanceof InvalidJobError)) throw err;
      await this.fail(obj, 'InvalidSpec', err.problems.map((p) => `${p.path}: ${p.message}`).join('; '));
      return { done: true };
    }
    const secret = await this.networkKey(obj);
    if ('waiting' in secret) {
      await this.pending(obj, 'NetworkKeyMissing', secret.waiting);
      return { requeueAfterMs: 10_000 };
    }
    let networkKey: Uint8Array;
    try {
      networkKey = networkKeyBytes(secret.key);
    } catch (err) {
      await this.pending(obj, 'NetworkKeyInvalid', `${(err as Error).message} (spec.networkKeySecretRef, or the installation's key)`);
      return { requeueAfterMs: 10_000 };
    }
    // Listeners verify replies with the installation's key: a job probing under another key would have every
    // reply counted invalid, so it is refused rather than run blind.
    if (this.o.networkKey !== undefined && secret.key !== this.o.networkKey) {
      await this.fail(obj, 'NetworkKeyMismatch', `the key in Secret ${obj.metadata.namespace}/${obj.spec.networkKeySecretRef?.name} differs from the installation's network key, which the listeners verify replies with; put a copy of the installation's key there, or leave spec.networkKeySecretRef out`);
      return { done: true };
    }
    await this.planner.submit(job, {
      macKey: macKeyFor(networkKey, job.tag),
      networkId: networkIdOf(networkKey),
      blocklist: this.o.config.blocklist,
      fullLimitBits: this.o.config.fullLimitBits,
    });
    this.o.logger.info({ job: key, targets: job.space.size, shards: job.totalShards }, 'job planned');
    return { record: await loadJob(this.o.redis, key, this.planner.compiled) };
  }

  private async networkKey(obj: WidescanJobObject): Promise<{ key: string } | { waiting: string }> {
    const ref = obj.spec.networkKeySecretRef;
    if (!ref) return this.o.networkKey ? { key: this.o.networkKey } : { waiting: 'the job names no spec.networkKeySecretRef and the operator has no network key configured' };
    try {
      const secret = await this.core.readNamespacedSecret({ name: ref.name, namespace: obj.metadata.namespace });
      const value = secret.data?.[ref.key];
      if (!value) return { waiting: `Secret ${obj.metadata.namespace}/${ref.name} has no key ${JSON.stringify(ref.key)}` };
      return { key: Buffer.from(value, 'base64').toString('utf8').trim() };
    } catch (err) {
      if (apiStatus(err) === 404) return { waiting: `Secret ${obj.metadata.namespace}/${ref.name} (spec.networkKeySecretRef) does not exist` };
      throw err;
    }
  }

  private async pending(obj: WidescanJobObject, reason: string, message: string): Promise<void> {
    const counts = { phase: 'Pending' as const };
    const updates = jobConditions({ phase: 'Pending', waiting: { reason, message }, changedFixed: [], readyWorkers: 0, listenerGaps: [] });
    const status = nextStatus(obj.status, counts, updates, obj.metadata.generation ?? 0, new Date());
    const before = obj.status?.conditions?.find((c) => c.type === 'Ready');
    if (await this.writeStatus(obj, status) && before?.reason !== reason) await this.event(obj, 'Warning', reason, message);
  }

  private async fail(obj: WidescanJobObject, reason: string, message: string): Promise<void> {
    const failure = { reason, message };
    const counts = { phase: 'Failed' as const, completionTime: new Date().toISOString() };
    const updates = jobConditions({ phase: 'Failed', failure, changedFixed: [], readyWorkers: 0, listenerGaps: [] });
    await this.writeStatus(obj, nextStatus(obj.status, counts, updates, obj.metadata.generation ?? 0, new Date()));
    await this.event(obj, 'Warning', reason, message);
    this.o.logger.warn({ job: `${obj.metadata.namespace}/${obj.metadata.name}`, reason, message }, 'job failed');
  }

  /** A finished job: deleted once its TTL has passed, else looked at again then. */
  private async expire(obj: WidescanJobObject): Promise<{ requeueAfterMs?: number } | void> {
    const remaining = ttlRemainingMs(obj.status?.completionTime, obj.spec.ttlSecondsAfterFinished, Date.now());
    if (remaining === undefined) return;
    if (remaining > 0) return { requeueAfterMs: remaining };
    this.o.logger.info({ job: `${obj.metadata.namespace}/${obj.metadata.name}` }, 'ttlSecondsAfterFinished passed; deleting the job');
    await this.custom
      .deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: obj.metadata.namespace, name: obj.metadata.name, body: { preconditions: { uid: obj.metadata.uid } } })
      .catch((err: unknown) => {
        if (apiStatus(err) !== 404 && apiStatus(err) !== 409) throw err;
      });
  }

  /** Behind the finalizer: stop probing, remove the job's Redis/BullMQ state, then let the object go. */
  private async finalize(obj: WidescanJobObject): Promise<{ requeueAfterMs?: number } | void> {
    const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
    if (!obj.metadata.finalizers?.includes(FINALIZER)) return;
    const record = await findJob(this.o.redis, key, this.planner.compiled);
    // A record of another object of the same name is not ours to remove.
    if (!record || record.job.uid === obj.metadata.uid) {
      if (!(await this.planner.remove(key, jobTagOf(obj.metadata.uid)))) return { requeueAfterMs: CLEANUP_RETRY_MS };
    }
    this.forgetJob(key);
    await this.patchJob(obj, { metadata: { finalizers: obj.metadata.finalizers.filter((f) => f !== FINALIZER), resourceVersion: obj.metadata.resourceVersion } }).catch((err: unknown) => {
      // Gone already: an earlier pass released it and the cache had not caught up.
      if (apiStatus(err) !== 404) throw err;
    });
    this.o.logger.info({ job: key }, 'job state removed; finalizer released');
  }

  private track(key: string, job: CompiledJob, s: JobStatus): void {
    const remaining = isFinished(s.phase) || s.phase === 'Suspended' ? 0 : s.shards.total - s.shards.completed - s.shards.failed;
    const before = this.demand.get(key);
    this.demand.set(key, { hardware: job.spec.hardware, remaining });
    if (!before || (before.remaining > 0) !== (remaining > 0) || before.remaining < remaining) this.queue.add(POOLS_KEY);
    recordJobStatus(this.o.metrics, key, s);
  }

  private forgetJob(key: string): void {
    if (this.demand.delete(key)) this.queue.add(POOLS_KEY);
    this.lastWrite.delete(key);
    forgetJobMetrics(this.o.metrics, key);
  }

  private async patchJob(obj: WidescanJobObject, body: object): Promise<void> {
    await this.custom.patchNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: obj.metadata.namespace, name: obj.metadata.name, body }, MERGE);
  }

  /**
   * Writes status through the status subresource when it changed. The patch carries the resourceVersion the
   * decision was made on, so a concurrent write makes it fail with 409 and the key is retried with the
   * fresh object. Returns whether it wrote.
   */
  private async writeStatus(obj: WidescanJobObject, status: WrittenStatus): Promise<boolean> {
    if (!statusChanged(obj.status, status)) return false;
    // A merge patch keeps what it does not name: fields the new status lacks (an ETA once finished) are nulled.
    const body: Record<string, unknown> = { ...status };
    for (const k of Object.keys(obj.status ?? {})) if (!(k in status)) body[k] = null;
    await this.custom.patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, plural: PLURAL, namespace: obj.metadata.namespace, name: obj.metadata.name, body: { metadata: { resourceVersion: obj.metadata.resourceVersion }, status: body } },
      MERGE,
    );
    return true;
  }

  private async event(obj: WidescanJobObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date();
    try {
      await this.core.createNamespacedEvent({
        namespace: obj.metadata.namespace,
        body: {
          metadata: { name: `${obj.metadata.name}.${(now.getTime() * 1000 + Math.floor(Math.random() * 1000)).toString(16)}`, namespace: obj.metadata.namespace },
          involvedObject: { apiVersion: API_VERSION, kind: KIND, name: obj.metadata.name, namespace: obj.metadata.namespace, uid: obj.metadata.uid, resourceVersion: obj.metadata.resourceVersion },
          type,
          reason,
          message: message.slice(0, 1024),
          source: { component: 'widescan-operator' },
          reportingComponent: 'widescan.dev/operator',
          reportingInstance: this.o.identity,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
    } catch (err) {
      // Events are best effort: never fail a reconcile for one.
      this.o.logger.warn({ err, reason }, 'could not record an event');
    }
  }

  // ---- pools ----

  private poolFor(hardware: Hardware): { ready: number; fallback?: { reason: string; message: string }; blocked?: string } {
    const { plan, ready } = this;
    if (hardware === 'gpu') return { ready: ready.gpu, blocked: plan.gpuBlocked };
    if (hardware === 'cpu') return { ready: ready.cpu + ready.gpu, blocked: plan.cpuBlocked && ready.gpu === 0 ? plan.cpuBlocked : undefined };
    return { ready: ready.gpu + ready.cpu, fallback: plan.fallback };
  }

  private async reconcilePools(): Promise<{ requeueAfterMs: number }> {
    if (this.unreconciled.size > 0) return { requeueAfterMs: CLEANUP_RETRY_MS };
    await this.sweepOrphans();
    const demand: Demand = { auto: 0, gpu: 0, cpu: 0 };
    for (const d of this.demand.values()) demand[d.hardware] += d.remaining;
    const pods = this.pods.list();
    const plan = planPools({
      demand,
      pools: this.o.config.pools,
      gpuUnschedulableSinceMs: gpuUnschedulableSince(pods),
      gpuUnavailable: gpuUnavailable(pods),
      fallbackAfterMs: this.o.config.fallbackAfterSeconds * 1000,
      nowMs: Date.now(),
    });
    for (const pool of ['gpu', 'cpu'] as const) await this.ensureDeployment(poolDeployment(this.o.config, pool, plan.replicas[pool], this.o.owner));
    const changed = JSON.stringify(plan) !== JSON.stringify(this.plan);
    if (changed) this.o.logger.info({ demand, plan }, 'worker pools planned');
    const ready = readyWorkers(pods);
    const gaps = listenerGaps(pods, this.o.config.listenerSelector);
    const conditionsMove = changed || JSON.stringify(ready) !== JSON.stringify(this.ready) || JSON.stringify(gaps) !== JSON.stringify(this.gaps);
    this.plan = plan;
    this.ready = ready;
    this.gaps = gaps;
    // Jobs' conditions name the pools: refresh every unfinished job when what they say may have changed.
    if (conditionsMove) for (const key of this.demand.keys()) this.queue.add(key);
    for (const [state, n] of Object.entries(await this.queues.depth())) this.o.metrics.queueDepth.set({ state }, n);
    return { requeueAfterMs: POOLS_INTERVAL_MS };
  }

  /**
   * Removes the Redis state of jobs whose object is gone without the finalizer having run (it was removed by
   * hand, or the object was deleted while no operator ran): otherwise workers would go on probing for them.
   * Ids without a namespace belong to `widescan run` on a shared Redis and are left alone.
   */
  private async sweepOrphans(): Promise<void> {
    for (const id of await this.o.redis.smembers(keys.jobs())) {
      const slash = id.indexOf('/');
      if (slash < 0 || this.jobs.get(id.slice(0, slash), id.slice(slash + 1))) continue;
      const tag = await this.o.redis.hget(keys.job(id), 'tag');
      if (await this.planner.remove(id, tag ? parseInt(tag, 16) : 0)) this.o.logger.warn({ job: id }, 'removed the state of a job whose object is gone without its finalizer');
      this.forgetJob(id);
    }
  }

  private async ensureDeployment(deployment: k8s.V1Deployment): Promise<void> {
    const { name, namespace } = deployment.metadata as { name: string; namespace: string };
    const hash = createHash('sha256').update(JSON.stringify({ template: deployment.spec?.template, selector: deployment.spec?.selector, strategy: deployment.spec?.strategy })).digest('hex').slice(0, 16);
    const desired: k8s.V1Deployment = { ...deployment, metadata: { ...deployment.metadata, annotations: { ...deployment.metadata?.annotations, [SPEC_HASH]: hash } } };
    let current: k8s.V1Deployment;
    try {
      current = await this.apps.readNamespacedDeployment({ name, namespace });
    } catch (err) {
      if (apiStatus(err) !== 404) throw err;
      await this.apps.createNamespacedDeployment({ namespace, body: desired });
      this.o.logger.info({ deployment: name, replicas: desired.spec?.replicas }, 'worker pool created');
      return;
    }
    if (current.metadata?.annotations?.[SPEC_HASH] === hash) {
      if (current.spec?.replicas === desired.spec?.replicas) return;
      // Scaling only: a patch of the count keeps what others added (e.g. `kubectl rollout restart`'s annotation).
      await this.apps.patchNamespacedDeployment({ name, namespace, body: { spec: { replicas: desired.spec?.replicas } } }, MERGE);
      this.o.logger.info({ deployment: name, replicas: desired.spec?.replicas }, 'worker pool scaled');
      return;
    }
    // Replace with the version read: a concurrent change makes this 409 and the pools key is retried.
    await this.apps.replaceNamespacedDeployment({ name, namespace, body: { ...desired, metadata: { ...desired.metadata, resourceVersion: current.metadata?.resourceVersion } } });
    this.o.logger.info({ deployment: name, replicas: desired.spec?.replicas }, 'worker pool updated');
  }

  /** For tests and the bench: what the controller has seen and decided. */
  get snapshot() {
    return { plan: this.plan, ready: this.ready, gaps: this.gaps, jobs: this.jobs.counters, pods: this.pods.counters, queued: this.queue.length };
  }
}

/** Annotation with a digest of what the operator wants in a worker Deployment, so drift is found without diffing server defaults. */
export const SPEC_HASH = 'widescan.dev/spec-hash';

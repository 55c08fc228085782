// The operator against the in-process Kubernetes API server (real @kubernetes/client-node, real Redis and
// BullMQ, the real ShardWorker). The worker's transport records each probe's destination instead of sending
// it, so these scenarios send no packet at all and can prove "each target probed exactly once", "nothing
// sent while suspended" and "nothing sent after deletion".
process.env.WIDESCAN_LOG_LEVEL ??= 'warn';

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import type { Redis } from 'ioredis';
import { parse } from 'yaml';
import { createLogger } from '../../lib/log.js';
import { createMetrics } from '../../lib/metrics.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';
import { parseOperatorConfig, type OperatorConfig } from '../../operator/config.js';
import { Controller } from '../../operator/controller.js';
import { FINALIZER } from '../../operator/decisions.js';
import { ShardWorker } from '../../worker/worker.js';
import { startApiServer, type ApiServer, type KObject } from '../apiserver/server.js';
import { eventually } from '../helpers/cli.js';

const waitFor = (probe: () => boolean | Promise<boolean>, timeoutMs: number) => eventually(probe, timeoutMs, probe.toString().slice(0, 160));

const WSJ = '/apis/widescan.dev/v1alpha1';

const NS = 'scans';
const crd = parse(readFileSync(new URL('../../crds/widescanjobs.widescan.dev.yaml', import.meta.url), 'utf8')) as KObject;

let srv: ApiServer;
let redisServer: EmbeddedRedis;
let redis: Redis;
let tmp: string;

async function api(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<{ code: number; body: KObject }> {
  const r = await fetch(srv.url + path, {
    method,
    headers: { authorization: `Bearer ${srv.token}`, 'content-type': contentType },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { code: r.status, body: text ? (JSON.parse(text) as KObject) : {} };
}

const getJob = async (name: string) => (await api('GET', `${WSJ}/namespaces/${NS}/widescanjobs/${name}`)).body;
const condition = (o: KObject, type: string) => (o.status?.conditions as KObject[] | undefined)?.find((c) => c.type === type);

function jobBody(name: string, spec: KObject): KObject {
  return {
    apiVersion: 'widescan.dev/v1alpha1',
    kind: 'WidescanJob',
    metadata: { name, namespace: NS },
    spec: {
      allowNonGlobal: true, // documentation space; the recording transport sends nothing anywhere
      shardSize: 1024,
      probe: { replyTimeoutSeconds: 1 },
      networkKeySecretRef: { name: 'widescan-network', key: 'key' },
      ...spec,
    },
  };
}

async function createJob(name: string, spec: KObject): Promise<KObject> {
  const r = await api('POST', `${WSJ}/namespaces/${NS}/widescanjobs`, jobBody(name, spec));
  expect(r.code).toBe(201);
  return r.body;
}

const CONFIG_YAML = `
namespace: widescan
image: widescan:test
statusIntervalSeconds: 1
fallbackAfterSeconds: 1
window: 4
pools:
  gpu: { maxReplicas: 3 }
  cpu: { maxReplicas: 2 }
`;

/** A ShardWorker whose transport records destinations (hex) with the time, and sends nothing. */
function recordingWorker(hardware: 'cpu' | 'gpu' = 'cpu'): { worker: ShardWorker; sends: { t: number; addr: string }[]; stop(): Promise<void> } {
  const sends: { t: number; addr: string }[] = [];
  const io = {
    setHopLimit() {},
    async send(_p: Buffer, _b: number, addresses: Uint8Array, from: number, to: number) {
      const t = Date.now();
      for (let i = from; i < to; i++) sends.push({ t, addr: Buffer.from(addresses.subarray(i * 16, i * 16 + 16)).toString('hex') });
      return { sent: to - from, errors: {} };
    },
  };
  const connection = connectRedis(redisServer.url);
  const worker = new ShardWorker({
    redis,
    connection,
    io,
    logger: createLogger('worker'),
    metrics: createMetrics('worker'),
    hardware,
    checkpointMs: 100,
    suspendRecheckMs: 200,
  });
  void worker.run();
  return {
    worker,
    sends,
    stop: async () => {
      await worker.stop();
      connection.disconnect();
    },
  };
}

function startController(config: OperatorConfig = parseOperatorConfig(CONFIG_YAML, 'test'), networkKey?: string): { controller: Controller; metrics: ReturnType<typeof createMetrics>; started: Promise<void> } {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(srv.kubeconfig);
  const metrics = createMetrics('operator');
  const controller = new Controller({ kubeConfig: kc, redis, config, logger: createLogger('operator'), metrics, networkKey, identity: 'test-operator', informer: { resyncMs: 2000, watchdogMs: 10_000 } });
  return { controller, metrics, started: controller.start() };
}

const cleanups: (() => Promise<unknown> | void)[] = [];

/** A recording worker and a started controller, both stopped after the test. */
async function scenario() {
  const w = recordingWorker();
  cleanups.push(w.stop);
  const { controller, metrics, started } = startController();
  cleanups.push(() => controller.stop());
  await started;
  return { w, controller, metrics };
}
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'widescan-operator-'));
  srv = await startApiServer({ bookmarkIntervalMs: 500 });
  expect((await api('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd)).code).toBe(201);
  for (const ns of [NS, 'widescan']) expect((await api('POST', '/api/v1/namespaces', { metadata: { name: ns } })).code).toBe(201);
  const secret = { metadata: { name: 'widescan-network' }, data: { key: Buffer.from('operator-test-network-key').toString('base64') } };
  expect((await api('POST', `/api/v1/namespaces/${NS}/secrets`, secret)).code).toBe(201);
  redisServer = await startEmbeddedRedis();
  redis = connectRedis(redisServer.url);
}, 30_000);

afterAll(async () => {
  redis?.disconnect();
  await redisServer?.stop();
  await srv?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const phase = async (name: string) => (await getJob(name)).status?.phase as string | undefined;
const redisKeysOf = (name: string) => redis.keys(`widescan:job:${NS}/${name}*`);

describe('operator scenarios (in-process controller)', () => {
  test('create → Running → Succeeded: exact counts, conditions, events, finalizer; every target probed once', async () => {
    const { w, metrics } = await scenario();
    await createJob('basic', { targets: [{ prefix: '2001:db8:1::/116', strategy: 'full' }], rate: { packetsPerSecond: 50_000 } });
    await waitFor(async () => (await phase('basic')) === 'Succeeded', 30_000);
    const job = await getJob('basic');
    expect(job.metadata.finalizers).toContain(FINALIZER);
    expect(job.status).toMatchObject({
      phase: 'Succeeded',
      observedGeneration: job.metadata.generation,
      targets: 4096,
      probesSent: 4096,
      shards: { total: 4, completed: 4, failed: 0 },
      progress: '100%',
    });
    expect(condition(job, 'Complete')).toMatchObject({ status: 'True', reason: 'Completed', observedGeneration: job.metadata.generation });
    expect(condition(job, 'Failed')).toMatchObject({ status: 'False' });
    expect(condition(job, 'Progressing')).toMatchObject({ status: 'False', reason: 'Completed' });
    expect(w.sends).toHaveLength(4096);
    expect(new Set(w.sends.map((s) => s.addr)).size).toBe(4096);
    expect(w.sends.every((s) => s.addr.startsWith('20010db800010000'))).toBe(true);
    const events = (await api('GET', `/api/v1/namespaces/${NS}/events`)).body.items as KObject[];
    const reasons = events.filter((e) => e.involvedObject.name === 'basic').map((e) => e.reason);
    expect(reasons).toEqual(expect.arrayContaining(['Started', 'Completed']));
    // The GPU pool (auto jobs go there first) was sized from the backlog, and back to its minimum after.
    const gpu = (await api('GET', '/apis/apps/v1/namespaces/widescan/deployments/widescan-worker-gpu')).body;
    expect(gpu.spec.replicas).toBe(0);
    expect(gpu.spec.template.spec.hostNetwork).toBe(true);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/widescan_reconcile_total\{result="success",component="operator"\} [1-9]/);
    expect(text).toMatch(/widescan_shards\{job="scans\/basic",state="completed",component="operator"\} 4/);
    expect(text).toMatch(/widescan_job_progress_ratio\{job="scans\/basic",component="operator"\} 1/);
    expect(text).toMatch(/widescan_reconcile_duration_seconds_count\{component="operator"\} [1-9]/);
  }, 60_000);

  test('invalid spec → Failed/InvalidSpec naming the field and the fix; nothing planned', async () => {
    const { controller, started } = startController();
    cleanups.push(() => controller.stop());
    await started;
    await createJob('toolarge', { targets: [{ prefix: '2001:db8::/64', strategy: 'full' }] });
    await waitFor(async () => (await phase('toolarge')) === 'Failed', 20_000);
    const job = await getJob('toolarge');
    const failed = condition(job, 'Failed');
    expect(failed).toMatchObject({ status: 'True', reason: 'InvalidSpec' });
    expect(failed!.message).toMatch(/spec\.targets\[0\]/);
    expect(failed!.message).toMatch(/random/);
    expect(condition(job, 'Ready')).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    expect(await redisKeysOf('toolarge')).toEqual([]);
    const events = (await api('GET', `/api/v1/namespaces/${NS}/events`)).body.items as KObject[];
    expect(events.some((e) => e.involvedObject.name === 'toolarge' && e.type === 'Warning' && e.reason === 'InvalidSpec')).toBe(true);
  }, 40_000);

  test('a missing network key Secret keeps the job Pending with a reason, and it starts once the Secret exists', async () => {
    const { controller, started } = startController();
    cleanups.push(() => controller.stop());
    await started;
    const w = recordingWorker();
    cleanups.push(w.stop);
    await createJob('nokey', { targets: [{ prefix: '2001:db8:9::/120', strategy: 'full' }], networkKeySecretRef: { name: 'later', key: 'key' } });
    await waitFor(async () => condition(await getJob('nokey'), 'Ready')?.reason === 'NetworkKeyMissing', 20_000);
    expect(await phase('nokey')).toBe('Pending');
    expect(condition(await getJob('nokey'), 'Ready')!.message).toMatch(/Secret scans\/later/);
    await api('POST', `/api/v1/namespaces/${NS}/secrets`, { metadata: { name: 'later' }, data: { key: Buffer.from('k2').toString('base64') } });
    await waitFor(async () => (await phase('nokey')) === 'Succeeded', 40_000);
  }, 60_000);

  test('a job whose key Secret differs from the installation\'s network key is refused (listeners could verify none of its replies)', async () => {
    const { controller, started } = startController(undefined, 'the-installation-key');
    cleanups.push(() => controller.stop());
    await started;
    await createJob('otherkey', { targets: [{ prefix: '2001:db8:f::/120', strategy: 'full' }] });
    await waitFor(async () => (await phase('otherkey')) === 'Failed', 20_000);
    const failed = condition(await getJob('otherkey'), 'Failed');
    expect(failed).toMatchObject({ status: 'True', reason: 'NetworkKeyMismatch' });
    expect(failed!.message).toMatch(/scans\/widescan-network/);
    expect(await redisKeysOf('otherkey')).toEqual([]);
  }, 40_000);

  test('a job deleted while no operator ran (finalizer removed by hand): the next operator removes its state and probing stops', async () => {
    const w = recordingWorker();
    cleanups.push(w.stop);
    const first = startController();
    await first.started;
    await createJob('orphan', { targets: [{ prefix: '2001:db8:10::/112', strategy: 'full' }], rate: { packetsPerSecond: 3000 } });
    await waitFor(() => w.sends.length > 1000, 20_000);
    await first.controller.stop();
    expect((await api('DELETE', `${WSJ}/namespaces/${NS}/widescanjobs/orphan`)).code).toBe(200);
    await api('PATCH', `${WSJ}/namespaces/${NS}/widescanjobs/orphan`, { metadata: { finalizers: null } }, 'application/merge-patch+json');
    expect((await api('GET', `${WSJ}/namespaces/${NS}/widescanjobs/orphan`)).code).toBe(404);
    expect(await redisKeysOf('orphan')).not.toEqual([]); // nobody cleaned up: the worker still probes for it
    const second = startController();
    cleanups.push(() => second.controller.stop());
    await second.started;
    await waitFor(async () => (await redisKeysOf('orphan')).length === 0, 20_000);
    const settled = w.sends.length;
    await new Promise((r) => setTimeout(r, 1000));
    expect(w.sends.length).toBe(settled);
    expect(settled).toBeLessThan(65536);
  }, 60_000);

  test('a job recreated under the same name is scanned with its own targets, not the deleted one\'s', async () => {
    const { w } = await scenario();
    await createJob('again', { targets: [{ prefix: '2001:db8:11::/120', strategy: 'full' }] });
    await waitFor(async () => (await phase('again')) === 'Succeeded', 20_000);
    await api('DELETE', `${WSJ}/namespaces/${NS}/widescanjobs/again`);
    await waitFor(async () => (await api('GET', `${WSJ}/namespaces/${NS}/widescanjobs/again`)).code === 404, 20_000);
    const before = w.sends.length;
    await createJob('again', { targets: [{ prefix: '2001:db8:12::/120', strategy: 'full' }] });
    await waitFor(async () => (await phase('again')) === 'Succeeded', 20_000);
    const second = w.sends.slice(before);
    expect(second).toHaveLength(256);
    expect(second.every((x) => x.addr.startsWith('20010db800120000'))).toBe(true);
  }, 60_000);

  test('a key Secret holding only whitespace keeps the job Pending/NetworkKeyInvalid, not retrying silently', async () => {
    await scenario();
    await api('POST', `/api/v1/namespaces/${NS}/secrets`, { metadata: { name: 'blank' }, data: { key: Buffer.from('   ').toString('base64') } });
    await createJob('blankkey', { targets: [{ prefix: '2001:db8:13::/120', strategy: 'full' }], networkKeySecretRef: { name: 'blank', key: 'key' } });
    await waitFor(async () => condition(await getJob('blankkey'), 'Ready')?.reason === 'NetworkKeyInvalid', 20_000);
    expect(await phase('blankkey')).toBe('Pending');
    expect(condition(await getJob('blankkey'), 'Ready')!.message).toMatch(/network key/);
    expect(await redisKeysOf('blankkey')).toEqual([]);
  }, 40_000);

  test('the operator\'s blocklist wins over running jobs too: a prefix added to it is not probed from then on', async () => {
    const w = recordingWorker();
    cleanups.push(w.stop);
    const first = startController();
    await first.started;
    await createJob('optout', { targets: [{ prefix: '2001:db8:14::/116', strategy: 'full' }], rate: { packetsPerSecond: 1000 } }); // ~4 s
    await waitFor(() => w.sends.length > 800, 20_000);
    await first.controller.stop();
    const blocked = (addr: string) => addr.startsWith('20010db800140000') && parseInt(addr.slice(-4), 16) >= 0x800; // …:800/117
    const second = startController(parseOperatorConfig(`${CONFIG_YAML}\nblocklist: ["2001:db8:14::800/117"]\n`, 'test'));
    cleanups.push(() => second.controller.stop());
    await second.started;
    await waitFor(async () => (await redis.hget(`widescan:job:${NS}/optout`, 'blocklist')) === '["2001:db8:14::800/117"]', 10_000);
    const switched = Date.now();
    await waitFor(async () => (await phase('optout')) === 'Succeeded', 30_000);
    // Workers see the change at their next checkpoint (100 ms here): nothing blocked is sent after that.
    expect(w.sends.filter((x) => x.t > switched + 500 && blocked(x.addr))).toEqual([]);
    expect(w.sends.filter((x) => x.t > switched + 500).length).toBeGreaterThan(0);
    expect((await getJob('optout')).status.excluded).toBeGreaterThan(0);
  }, 60_000);

  test('delete mid-run: the finalizer stops probing and removes the job\'s Redis and BullMQ state', async () => {
    const { w } = await scenario();
    await createJob('doomed', { targets: [{ prefix: '2001:db8:2::/112', strategy: 'full' }], rate: { packetsPerSecond: 5000 } });
    await waitFor(() => w.sends.length > 2000, 20_000);
    expect((await api('DELETE', `${WSJ}/namespaces/${NS}/widescanjobs/doomed`)).code).toBe(200);
    await waitFor(async () => (await api('GET', `${WSJ}/namespaces/${NS}/widescanjobs/doomed`)).code === 404, 20_000);
    const gone = Date.now();
    expect(await redisKeysOf('doomed')).toEqual([]);
    const shards = await redis.keys('widescan:shards*');
    for (const k of shards.filter((k) => /:\w+-\d+$/.test(k))) expect(await redis.hget(k, 'data')).not.toMatch(/doomed/);
    const sentBefore = w.sends.length;
    expect(sentBefore).toBeLessThan(65536); // it really was stopped mid-run
    await new Promise((r) => setTimeout(r, 1500));
    expect(w.sends.length).toBe(sentBefore);
    expect(w.sends.filter((s) => s.t > gone)).toEqual([]);
  }, 60_000);

  test('suspend: no probe while suspended; resume runs to completion with every target probed exactly once', async () => {
    const { w } = await scenario();
    await createJob('pausing', { targets: [{ prefix: '2001:db8:3::/114', strategy: 'full' }], rate: { packetsPerSecond: 4000 } }); // 16384 targets, ~4 s
    await waitFor(() => w.sends.length > 1000, 20_000);
    const merge = 'application/merge-patch+json';
    expect((await api('PATCH', `${WSJ}/namespaces/${NS}/widescanjobs/pausing`, { spec: { suspend: true } }, merge)).code).toBe(200);
    await waitFor(async () => (await phase('pausing')) === 'Suspended', 10_000);
    await new Promise((r) => setTimeout(r, 400)); // a running batch ends at the next checkpoint (100 ms)
    const parked = w.sends.length;
    await new Promise((r) => setTimeout(r, 1500));
    expect(w.sends.length).toBe(parked);
    expect(parked).toBeLessThan(16384);
    const job = await getJob('pausing');
    expect(condition(job, 'Progressing')).toMatchObject({ status: 'False', reason: 'Suspended' });
    expect((await api('PATCH', `${WSJ}/namespaces/${NS}/widescanjobs/pausing`, { spec: { suspend: false, rate: { packetsPerSecond: 20_000 } } }, merge)).code).toBe(200);
    await waitFor(async () => (await phase('pausing')) === 'Succeeded', 30_000);
    expect(w.sends).toHaveLength(16384);
    expect(new Set(w.sends.map((s) => s.addr)).size).toBe(16384);
    expect((await getJob('pausing')).status.probesSent).toBe(16384);
    const reasons = ((await api('GET', `/api/v1/namespaces/${NS}/events`)).body.items as KObject[]).filter((e) => e.involvedObject.name === 'pausing').map((e) => e.reason);
    expect(reasons).toEqual(expect.arrayContaining(['Suspended', 'Resumed', 'Completed']));
  }, 60_000);

  test('targets are fixed once planned: a change is reported in a condition and ignored', async () => {
    const { w } = await scenario();
    await createJob('fixed', { targets: [{ prefix: '2001:db8:4::/116', strategy: 'full' }], rate: { packetsPerSecond: 2000 } });
    await waitFor(async () => (await phase('fixed')) === 'Running', 10_000);
    const merge = 'application/merge-patch+json';
    await api('PATCH', `${WSJ}/namespaces/${NS}/widescanjobs/fixed`, { spec: { targets: [{ prefix: '2001:db8:5::/116', strategy: 'full' }], rate: { packetsPerSecond: 50_000 } } }, merge);
    await waitFor(async () => condition(await getJob('fixed'), 'Degraded')?.reason === 'SpecChangeIgnored', 10_000);
    const job = await getJob('fixed');
    expect(condition(job, 'Degraded')!.message).toMatch(/spec\.targets/);
    expect(condition(job, 'Degraded')!.observedGeneration).toBe(job.metadata.generation);
    await waitFor(async () => (await phase('fixed')) === 'Succeeded', 30_000); // the new rate was applied
    expect(w.sends.every((s) => s.addr.startsWith('20010db800040000'))).toBe(true);
    expect(w.sends).toHaveLength(4096);
  }, 60_000);

  test('status conflicts (409) are retried until the write lands', async () => {
    const { metrics } = await scenario();
    const before = srv.store.conflictsInjected;
    srv.store.injectStatusConflicts(3);
    await createJob('conflicted', { targets: [{ prefix: '2001:db8:6::/120', strategy: 'full' }] });
    await waitFor(async () => (await phase('conflicted')) === 'Succeeded', 30_000);
    expect(srv.store.conflictsInjected - before).toBe(3);
    const errors = (await metrics.reconcile.get()).values.find((v) => v.labels.result === 'error')?.value ?? 0;
    expect(errors).toBeGreaterThanOrEqual(3);
  }, 60_000);

  test('watch cut and history compacted (410 Gone): the controller relists and misses nothing', async () => {
    const { controller } = await scenario();
    const relists = controller.snapshot.jobs.relists;
    srv.store.failRequests(503);
    srv.store.cutWatches({ abrupt: true });
    srv.store.failRequests(undefined);
    await createJob('ingap', { targets: [{ prefix: '2001:db8:7::/120', strategy: 'full' }] });
    srv.store.compact();
    await waitFor(async () => (await phase('ingap')) === 'Succeeded', 30_000);
    expect(controller.snapshot.jobs.relists).toBeGreaterThan(relists);
  }, 60_000);

  test('a node that runs workers without a ready listener makes running jobs Degraded/ListenerNotReady', async () => {
    const merge = 'application/merge-patch+json';
    const pod = (name: string, component: string, extra: KObject = {}) => ({
      metadata: { name, labels: { 'app.kubernetes.io/name': 'widescan', 'app.kubernetes.io/component': component, ...extra } },
      spec: { nodeName: 'node-1', containers: [{ name: component, image: 'widescan' }] },
    });
    const running = (ready: boolean) => ({ status: { phase: 'Running', conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] } });
    await api('POST', '/api/v1/namespaces/widescan/pods', pod('worker-x', 'worker', { 'widescan.dev/pool': 'cpu' }));
    await api('PATCH', '/api/v1/namespaces/widescan/pods/worker-x/status', running(true), merge);
    await api('POST', '/api/v1/namespaces/widescan/pods', pod('listener-x', 'listener'));
    await api('PATCH', '/api/v1/namespaces/widescan/pods/listener-x/status', running(false), merge);
    cleanups.push(async () => {
      for (const n of ['worker-x', 'listener-x']) await api('DELETE', `/api/v1/namespaces/widescan/pods/${n}`);
    });
    await scenario();
    await createJob('deaf', { targets: [{ prefix: '2001:db8:b::/112', strategy: 'full' }], rate: { packetsPerSecond: 2000 } });
    await waitFor(async () => condition(await getJob('deaf'), 'Degraded')?.reason === 'ListenerNotReady', 15_000);
    expect(condition(await getJob('deaf'), 'Degraded')!.message).toMatch(/node-1/);
    await api('PATCH', '/api/v1/namespaces/widescan/pods/listener-x/status', running(true), merge);
    await waitFor(async () => condition(await getJob('deaf'), 'Degraded')?.status === 'False', 15_000);
    await api('DELETE', `${WSJ}/namespaces/${NS}/widescanjobs/deaf`);
    await waitFor(async () => (await api('GET', `${WSJ}/namespaces/${NS}/widescanjobs/deaf`)).code === 404, 20_000);
  }, 60_000);

  test('queues by hardware: a CPU-pool worker never takes `hardware: gpu` shards; a GPU-pool worker serves auto jobs', async () => {
    const { controller, started } = startController();
    cleanups.push(() => controller.stop());
    await started;
    const cpu = recordingWorker('cpu');
    cleanups.push(cpu.stop);
    await createJob('gpuonly', { targets: [{ prefix: '2001:db8:d::/120', strategy: 'full' }], hardware: 'gpu' });
    await waitFor(async () => (await phase('gpuonly')) === 'Running', 10_000);
    await new Promise((r) => setTimeout(r, 1500));
    expect(cpu.sends).toHaveLength(0);
    expect((await getJob('gpuonly')).status.probesSent).toBe(0);
    await api('DELETE', `${WSJ}/namespaces/${NS}/widescanjobs/gpuonly`);
    await waitFor(async () => (await api('GET', `${WSJ}/namespaces/${NS}/widescanjobs/gpuonly`)).code === 404, 20_000);
    await cpu.stop();
    cleanups.splice(cleanups.indexOf(cpu.stop), 1);
    const gpu = recordingWorker('gpu');
    cleanups.push(gpu.stop);
    await createJob('autogpu', { targets: [{ prefix: '2001:db8:e::/120', strategy: 'full' }] });
    await waitFor(async () => (await phase('autogpu')) === 'Succeeded', 20_000);
    expect(gpu.sends).toHaveLength(256);
  }, 60_000);

  test('ttlSecondsAfterFinished deletes a finished job and its state', async () => {
    await scenario();
    await createJob('shortlived', { targets: [{ prefix: '2001:db8:8::/120', strategy: 'full' }], ttlSecondsAfterFinished: 1 });
    await waitFor(async () => (await api('GET', `${WSJ}/namespaces/${NS}/widescanjobs/shortlived`)).code === 404, 30_000);
    expect(await redisKeysOf('shortlived')).toEqual([]);
  }, 60_000);
});

describe('operator processes: two replicas, leader election, kill -9 mid-job', () => {
  function startOperator(name: string, configFile: string): { child: ChildProcess; log: () => string } {
    let log = '';
    const child = spawn(process.execPath, [resolve('dist/cli/entrypoint.js'), 'operator'], {
      env: {
        ...process.env,
        KUBECONFIG: srv.kubeconfig,
        WIDESCAN_OPERATOR_CONFIG: configFile,
        WIDESCAN_REDIS_URL: redisServer.url,
        POD_NAME: name,
        POD_NAMESPACE: 'widescan',
        WIDESCAN_METRICS_PORT: '0',
        WIDESCAN_LEASE_DURATION_MS: '2000',
        WIDESCAN_LEASE_RENEW_DEADLINE_MS: '1500',
        WIDESCAN_LEASE_RETRY_MS: '250',
        WIDESCAN_LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr!.on('data', (d) => (log += d));
    cleanups.push(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    return { child, log: () => log };
  }

  const holder = async () => (await api('GET', '/apis/coordination.k8s.io/v1/namespaces/widescan/leases/widescan-operator')).body.spec?.holderIdentity as string | undefined;

  test('one leader reconciles; killed mid-job, the standby takes over and the job completes with no shard probed twice', async () => {
    const configFile = join(tmp, 'operator.yaml');
    writeFileSync(configFile, CONFIG_YAML);
    const w = recordingWorker();
    cleanups.push(w.stop);
    const a = startOperator('op-a', configFile);
    await waitFor(async () => (await holder())?.startsWith('op-a_') === true, 20_000);
    const b = startOperator('op-b', configFile);
    await new Promise((r) => setTimeout(r, 1000));
    expect(await holder()).toMatch(/^op-a_/); // the standby waits
    expect(b.log()).not.toMatch(/controller started/);

    await createJob('failover', { targets: [{ prefix: '2001:db8:a::/114', strategy: 'full' }], rate: { packetsPerSecond: 4000 } }); // ~4 s
    await waitFor(() => w.sends.length > 2000, 20_000);
    a.child.kill('SIGKILL');
    await waitFor(async () => (await holder())?.startsWith('op-b_') === true, 10_000);
    await waitFor(() => /controller started/.test(b.log()), 10_000);
    await waitFor(async () => (await phase('failover')) === 'Succeeded', 40_000);
    const job = await getJob('failover');
    expect(job.status.probesSent).toBe(16384);
    expect(job.status.shards).toMatchObject({ total: 16, completed: 16, failed: 0 });
    expect(w.sends).toHaveLength(16384);
    expect(new Set(w.sends.map((s) => s.addr)).size).toBe(16384);
    const lease = (await api('GET', '/apis/coordination.k8s.io/v1/namespaces/widescan/leases/widescan-operator')).body;
    expect(lease.spec.leaseTransitions).toBeGreaterThanOrEqual(1);

    // A graceful stop releases the Lease at once.
    b.child.kill('SIGTERM');
    await waitFor(() => b.child.exitCode !== null, 10_000);
    expect(b.child.exitCode).toBe(0);
    expect(await holder()).toBeFalsy();
  }, 90_000);
});

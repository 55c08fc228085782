// The operator end to end: the in-process API server, the test kubelet running the pods the operator asks
// for as real worker processes inside the lab's scanner namespace (the "node"), the listener DaemonSet and
// the bootstrap the chart would install, real Redis, real raw ICMPv6 in the lab. The node has no GPU, so the
// GPU pool stays Unschedulable and the operator falls back to the CPU pool and says so. `examples/lab.yaml`
// applied as is ends Succeeded with exactly the lab's live population in the bootstrap.
// Then a node that advertises a GPU joins: the GPU worker scheduled there finds no hardware adapter (this
// machine has at most Mesa's software Vulkan) and exits with EXIT_GPU_UNAVAILABLE, and the operator moves auto
// jobs to the CPU pool at once.
process.env.WIDESCAN_LOG_LEVEL ??= 'warn';

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import type { Redis } from 'ioredis';
import { parse } from 'yaml';
import { EXIT_GPU_UNAVAILABLE } from '../../lib/core/job.js';
import { createLogger } from '../../lib/log.js';
import { createMetrics } from '../../lib/metrics.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';
import { parseOperatorConfig } from '../../operator/config.js';
import { Controller } from '../../operator/controller.js';
import { labStatus, type LabInfo } from '../../testbed/lab.js';
import { startApiServer, type ApiServer, type KObject } from '../apiserver/server.js';
import { eventually as waitFor } from '../helpers/cli.js';
import { expectLabPopulation, startLab, stopLab } from '../helpers/lab.js';
import { startKubelet, type Kubelet } from '../kubelet/kubelet.js';

const WSJ = '/apis/widescan.dev/v1alpha1';
const TOKEN = 'lab-listener-token';

let lab: LabInfo | undefined;
let srv: ApiServer;
let kubelet: Kubelet | undefined;
let redisServer: EmbeddedRedis | undefined;
let redis: Redis;
let controller: Controller | undefined;
let socket: string;
/** The GPU node's network namespace: empty but for loopback, so its pods reach nothing. */
let gpuNetns: string | undefined;

async function api(method: string, path: string, body?: unknown): Promise<{ code: number; body: KObject }> {
  const r = await fetch(srv.url + path, { method, headers: { authorization: `Bearer ${srv.token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { code: r.status, body: text ? (JSON.parse(text) as KObject) : {} };
}


const labels = (component: string) => ({ 'app.kubernetes.io/name': 'widescan', 'app.kubernetes.io/component': component });

beforeAll(async () => {
  lab = await startLab();
  // Redis on a Unix socket: processes in the lab's namespace reach it through the file system, which network
  // namespaces do not separate (TCP on the test's loopback would not be reachable from there).
  redisServer = await startEmbeddedRedis({ unixSocket: true });
  socket = redisServer.url;
  redis = connectRedis(socket);
  srv = await startApiServer({ bookmarkIntervalMs: 1000 });
  const crd = parse(readFileSync('crds/widescanjobs.widescan.dev.yaml', 'utf8')) as KObject;
  expect((await api('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd)).code).toBe(201);
  for (const ns of ['widescan', 'scans']) expect((await api('POST', '/api/v1/namespaces', { metadata: { name: ns } })).code).toBe(201);
  const networkKey = readFileSync(lab.networkKeyFile, 'utf8').trim();
  const secret = { metadata: { name: 'widescan-secrets' }, data: { networkKey: Buffer.from(networkKey).toString('base64'), listenerToken: Buffer.from(TOKEN).toString('base64') } };
  expect((await api('POST', '/api/v1/namespaces/widescan/secrets', secret)).code).toBe(201);
  const fromSecret = (name: string, key: string) => ({ name, valueFrom: { secretKeyRef: { name: 'widescan-secrets', key } } });

  // What the chart installs beside the operator: the bootstrap and the listener DaemonSet.
  const bootstrap = {
    metadata: { name: 'widescan-bootstrap', labels: labels('bootstrap') },
    spec: {
      replicas: 1,
      selector: { matchLabels: labels('bootstrap') },
      template: {
        metadata: { labels: labels('bootstrap') },
        spec: {
          hostNetwork: true, // the lab node's namespace, where the listener reaches it on loopback
          containers: [{
            name: 'bootstrap', image: 'widescan', args: ['bootstrap'],
            env: [{ name: 'WIDESCAN_REDIS_URL', value: socket }, { name: 'PORT', value: '18080' }, fromSecret('WIDESCAN_LISTENER_TOKEN', 'listenerToken')],
            readinessProbe: { httpGet: { path: '/readyz', port: 18080 } },
          }],
        },
      },
    },
  };
  expect((await api('POST', '/apis/apps/v1/namespaces/widescan/deployments', bootstrap)).code).toBe(201);
  const listener = {
    metadata: { name: 'widescan-listener', labels: labels('listener') },
    spec: {
      selector: { matchLabels: labels('listener') },
      template: {
        metadata: { labels: labels('listener') },
        spec: {
          hostNetwork: true,
          // As the chart: the listener goes wherever a worker pool may run, GPU nodes included.
          tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }],
          containers: [{
            name: 'listener', image: 'widescan', args: ['listener'],
            env: [
              { name: 'WIDESCAN_REDIS_URL', value: socket },
              { name: 'WIDESCAN_BOOTSTRAP_URL', value: 'http://[::1]:18080' },
              { name: 'WIDESCAN_METRICS_PORT', value: '9103' },
              fromSecret('WIDESCAN_NETWORK_KEY', 'networkKey'),
              fromSecret('WIDESCAN_LISTENER_TOKEN', 'listenerToken'),
            ],
            readinessProbe: { httpGet: { path: '/readyz', port: 9103 } },
          }],
        },
      },
    },
  };
  expect((await api('POST', '/apis/apps/v1/namespaces/widescan/daemonsets', listener)).code).toBe(201);

  kubelet = await startKubelet({
    kubeconfig: srv.kubeconfig,
    nodes: [{ name: 'lab-node', netns: lab.namespaces.scan, labels: { 'widescan.dev/scanner': 'true' } }],
    env: { WIDESCAN_LOG_LEVEL: 'info' },
    maxGraceMs: 5000,
    probePeriodMs: 1000,
    // A short crash-loop back-off: the GPU worker restarts, probing its GPU again, several times during a job.
    backoffInitialMs: 1000,
    backoffMaxMs: 2000,
  });

  const config = parseOperatorConfig(
    `
namespace: widescan
image: widescan:test
statusIntervalSeconds: 1
fallbackAfterSeconds: 2
workerEnv: [{ name: WIDESCAN_REDIS_URL, value: ${JSON.stringify(socket)} }]
pools:
  gpu: { maxReplicas: 1 }
  cpu: { maxReplicas: 1 }
`,
    'test',
  );
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(srv.kubeconfig);
  controller = new Controller({ kubeConfig: kc, redis, config, logger: createLogger('operator'), metrics: createMetrics('operator'), networkKey, identity: 'lab-operator', informer: { resyncMs: 2000, watchdogMs: 10_000 } });
  await controller.start();
}, 60_000);

afterAll(async () => {
  await controller?.stop();
  await kubelet?.stop();
  redis?.disconnect();
  await redisServer?.stop();
  await srv?.close();
  await stopLab(lab);
  if (gpuNetns) execFileSync('ip', ['netns', 'delete', gpuNetns]);
}, 60_000);

const condition = (o: KObject, type: string) => (o.status?.conditions as KObject[] | undefined)?.find((c) => c.type === type);
const workerPods = (pool: 'gpu' | 'cpu') => srv.store.list('', 'pods', 'widescan').filter((p) => p.metadata.labels?.['widescan.dev/pool'] === pool);
const jobEvents = async (name: string) => ((await api('GET', '/api/v1/namespaces/scans/events')).body.items as KObject[]).filter((e) => e.involvedObject.name === name);

test('kubectl apply examples/lab.yaml → GPU pool unschedulable → CPU fallback → Succeeded with exactly the lab\'s population', async () => {
  const before = await labStatus(lab!.name);
  const manifest = parse(readFileSync('examples/lab.yaml', 'utf8')) as KObject;
  expect((await api('POST', `${WSJ}/namespaces/scans/widescanjobs`, manifest)).code).toBe(201);
  const get = async () => (await api('GET', `${WSJ}/namespaces/scans/widescanjobs/lab`)).body;
  const dump = () => `\nstatus: ${JSON.stringify(latest?.status)}\npods: ${JSON.stringify(srv.store.list('', 'pods', 'widescan').map((p) => [p.metadata.name, p.status?.phase, p.status?.conditions]))}\nkubelet errors: ${kubelet!.errors().join('\n')}`;
  let latest: KObject | undefined;

  // The GPU pod cannot be scheduled on a node without nvidia.com/gpu; after fallbackAfterSeconds the CPU pool takes over.
  let sawFallback = false;
  await waitFor(async () => {
    latest = await get();
    if (condition(latest, 'Degraded')?.reason === 'GPUUnschedulable') sawFallback = true;
    return latest.status?.phase === 'Succeeded' || latest.status?.phase === 'Failed';
  }, 120_000, 'the lab job to finish').catch((err: Error) => {
    throw new Error(err.message + dump());
  });
  expect(latest!.status.phase).toBe('Succeeded');
  expect(sawFallback).toBe(true);
  for (const p of workerPods('gpu')) expect(p.status?.conditions?.find((c: KObject) => c.type === 'PodScheduled')).toMatchObject({ status: 'False', reason: 'Unschedulable' });
  expect((await jobEvents('lab')).map((e) => e.reason)).toEqual(expect.arrayContaining(['Started', 'GPUUnschedulable', 'Completed']));

  await expectLabPopulation(redis, lab!, 'scans/lab', latest!.status, before);
}, 180_000);

test('a GPU node without a usable GPU → the GPU worker exits 3 → Degraded/GPUUnavailable → a steady CPU fallback → Succeeded with exactly the lab\'s population', async () => {
  const netns = `g${randomBytes(2).toString('hex')}-scan`;
  execFileSync('ip', ['netns', 'add', netns]);
  gpuNetns = netns;
  execFileSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  // Tainted as GPU nodes are: the GPU pool tolerates it, the CPU pool does not (its worker stays in the lab).
  await kubelet!.addNode({
    name: 'gpu-node',
    netns,
    capacity: { 'nvidia.com/gpu': '1' },
    taints: [{ key: 'nvidia.com/gpu', value: 'present', effect: 'NoSchedule' }],
  });
  const listeners = () => srv.store.list('', 'pods', 'widescan').filter((p) => p.metadata.labels?.['app.kubernetes.io/component'] === 'listener');
  const ready = (p: KObject) => p.status?.conditions?.some((c: KObject) => c.type === 'Ready' && c.status === 'True');
  await waitFor(() => listeners().some((p) => p.spec.nodeName === 'gpu-node' && ready(p)), 30_000, 'the GPU node\'s listener to be ready');

  const before = await labStatus(lab!.name);
  const manifest = parse(readFileSync('examples/lab.yaml', 'utf8')) as KObject;
  manifest.metadata.name = 'lab-gpu';
  expect((await api('POST', `${WSJ}/namespaces/scans/widescanjobs`, manifest)).code).toBe(201);
  let latest: KObject | undefined;
  const dump = () => `\nstatus: ${JSON.stringify(latest?.status)}\npods: ${JSON.stringify(srv.store.list('', 'pods', 'widescan').map((p) => [p.metadata.name, p.spec.nodeName, p.status?.containerStatuses]))}\nkubelet errors: ${kubelet!.errors().join('\n')}`;

  let unavailable: KObject | undefined;
  const reasons = new Set<string>();
  const cpuWorkers = new Set<string>();
  /** The GPU worker pod, as last seen after its worker exited (it is gone once the job is done). */
  let gpuPod: KObject | undefined;
  const exitOf = (p: KObject) => p.status?.containerStatuses?.[0]?.state?.terminated ?? p.status?.containerStatuses?.[0]?.lastState?.terminated;
  await waitFor(async () => {
    latest = (await api('GET', `${WSJ}/namespaces/scans/widescanjobs/lab-gpu`)).body;
    const degraded = condition(latest, 'Degraded');
    if (degraded?.status === 'True') reasons.add(degraded.reason);
    if (degraded?.reason === 'GPUUnavailable') unavailable ??= degraded;
    for (const p of workerPods('cpu')) if (p.spec.nodeName) cpuWorkers.add(`${p.metadata.name} on ${p.spec.nodeName}`);
    gpuPod = workerPods('gpu').find(exitOf) ?? gpuPod;
    // A hardware adapter would make the GPU worker ready instead: then this machine cannot show the fallback.
    const gpuReady = workerPods('gpu').find(ready);
    if (gpuReady) throw new Error(`GPU worker ${gpuReady.metadata.name} is ready: this test needs a machine without a hardware GPU`);
    return latest.status?.phase === 'Succeeded' || latest.status?.phase === 'Failed';
  }, 60_000, 'the lab-gpu job to finish').catch((err: Error) => {
    throw new Error(err.message + dump());
  });
  expect(latest!.status.phase).toBe('Succeeded');

  // The worker's own verdict, through the termination log, reached the pod status and the job's condition.
  expect(gpuPod?.spec.nodeName).toBe('gpu-node');
  const exited = exitOf(gpuPod!);
  expect(exited).toMatchObject({ exitCode: EXIT_GPU_UNAVAILABLE, message: expect.stringMatching(/^GPU worker has no usable GPU: /) });
  expect(unavailable).toBeDefined();
  expect(unavailable!.message).toBe(
    `GPU worker pod ${gpuPod!.metadata.name} on node gpu-node found no usable GPU (${exited.message}); auto jobs run on the CPU pool`,
  );
  // The GPU pod was scheduled: GPUUnavailable is the only degradation, never GPUUnschedulable.
  expect(reasons).toEqual(new Set(['GPUUnavailable']));
  // A steady fallback, also while the GPU worker restarts: one CPU worker did the whole job, in the lab, and
  // the job warned once.
  expect([...cpuWorkers]).toEqual([expect.stringMatching(/^widescan-worker-cpu-\S+ on lab-node$/)]);
  const events = (await jobEvents('lab-gpu')).map((e) => e.reason);
  expect(events).toEqual(expect.arrayContaining(['Started', 'Completed']));
  expect(events.filter((r) => r === 'GPUUnavailable')).toHaveLength(1);

  await expectLabPopulation(redis, lab!, 'scans/lab-gpu', latest!.status, before);
}, 90_000);

// The test kubelet against the in-process API server, running real widescan processes (dist/ must be built).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { freePort } from '../../lib/proc.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';
import { startApiServer, type ApiServer } from '../apiserver/server.js';
import { TERMINATION_LOG_ENV, expandEnvRefs, parseQuantity, startKubelet, unschedulableMessage, type Kubelet } from './kubelet.js';

const NS = 'default';
const LISTENER_TOKEN = 'listener-token-0123456789abcdef';
const ADMIN_TOKEN = 'admin-token-0123456789abcdef-xyz';
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Command lines of this test process's children that run a container or a prober. */
function leftoverChildren(): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) continue;
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes('entrypoint.js') || cmd.includes('kube-probe')) out.push(`${pid}: ${cmd.slice(0, 120)}`);
    } catch {
      // exited while we looked
    }
  }
  return out;
}

interface Cluster {
  srv: ApiServer;
  core: k8s.CoreV1Api;
  apps: k8s.AppsV1Api;
}

async function cluster(): Promise<Cluster> {
  const srv = await startApiServer();
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(srv.kubeconfig);
  return { srv, core: kc.makeApiClient(k8s.CoreV1Api), apps: kc.makeApiClient(k8s.AppsV1Api) };
}

async function eventually<T>(what: string, check: () => Promise<T | undefined | false>, kubelet?: Kubelet, timeoutMs = 12_000): Promise<T> {
  const t0 = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}; kubelet errors: ${JSON.stringify(kubelet?.errors() ?? [])}`);
    }
    await sleep(50);
  }
}

function deployment(name: string, replicas: number, spec: Partial<k8s.V1PodSpec> & { containers: k8s.V1Container[] }): k8s.V1Deployment {
  return {
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name, tier: 'test' } }, spec: { terminationGracePeriodSeconds: 5, ...spec } },
    },
  };
}

describe('a cluster of two nodes running widescan processes', () => {
  let c: Cluster;
  let redis: EmbeddedRedis;
  let kubelet: Kubelet;
  const seen = new Set<number>();

  const bootstrap = (env: k8s.V1EnvVar[] = [], extra: Partial<k8s.V1Container> = {}): k8s.V1Container => ({
    name: 'bootstrap',
    image: 'widescan:test',
    command: ['bootstrap'],
    env: [
      { name: 'WIDESCAN_REDIS_URL', value: redis.url },
      { name: 'WIDESCAN_LISTENER_TOKEN', value: LISTENER_TOKEN },
      { name: 'PORT', value: '0' },
      { name: 'HOST', value: '::1' },
      ...env,
    ],
    ...extra,
  });
  const pods = async (app: string): Promise<k8s.V1Pod[]> => {
    for (const pid of kubelet.processes().values()) seen.add(pid);
    return (await c.core.listNamespacedPod({ namespace: NS, labelSelector: `app=${app}` })).items;
  };
  const ready = (p: k8s.V1Pod): boolean => p.status?.conditions?.find((x) => x.type === 'Ready')?.status === 'True';
  const until = <T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs?: number): Promise<T> =>
    eventually(what, check, kubelet, timeoutMs);
  const deploymentStatus = async (name: string): Promise<k8s.V1DeploymentStatus> =>
    (await c.apps.readNamespacedDeploymentStatus({ name, namespace: NS })).status ?? {};
  const scale = (name: string, replicas: number): Promise<unknown> =>
    c.apps.patchNamespacedDeployment({ name, namespace: NS, body: { spec: { replicas } } }, mergePatch);
  const removeDeployment = async (name: string): Promise<void> => {
    const pids = (await pods(name)).map((p) => kubelet.processes().get(p.metadata!.name!)).filter((p): p is number => p !== undefined);
    await c.apps.deleteNamespacedDeployment({ name, namespace: NS });
    await until(`${name} pods gone`, async () => (await pods(name)).length === 0 && pids.every((pid) => !alive(pid)));
  };

  beforeAll(async () => {
    [c, redis] = await Promise.all([cluster(), startEmbeddedRedis()]);
    kubelet = await startKubelet({
      kubeconfig: c.srv.kubeconfig,
      nodes: [
        { name: 'node-a', labels: { pool: 'cpu' }, capacity: { 'example.com/slot': '1' } },
        { name: 'node-b', labels: { pool: 'cpu' }, taints: [{ key: 'dedicated', value: 'scan', effect: 'NoSchedule' }] },
      ],
      pollMs: 100,
      backoffInitialMs: 300,
      backoffMaxMs: 1200,
      maxGraceMs: 3000,
      probePeriodMs: 1000,
    });
  });
  afterAll(async () => {
    await kubelet?.stop({ graceMs: 1000 });
    await Promise.all([c?.srv.close(), redis?.stop()]);
  });

  test('registers its nodes Ready, with labels, taints, capacity and allocatable', async () => {
    const nodes = (await c.core.listNode()).items;
    expect(nodes.map((n) => n.metadata!.name).sort()).toEqual(['node-a', 'node-b']);
    const a = nodes.find((n) => n.metadata!.name === 'node-a')!;
    expect(a.metadata!.labels).toMatchObject({ 'kubernetes.io/hostname': 'node-a', 'kubernetes.io/os': 'linux', pool: 'cpu' });
    expect(a.status!.conditions!.find((x) => x.type === 'Ready')).toMatchObject({ status: 'True', reason: 'KubeletReady' });
    expect(a.status!.capacity).toMatchObject({ cpu: '8', memory: '16Gi', pods: '110', 'example.com/slot': '1' });
    expect(a.status!.allocatable).toEqual(a.status!.capacity);
    expect(a.spec?.taints ?? []).toEqual([]);
    const b = nodes.find((n) => n.metadata!.name === 'node-b')!;
    expect(b.spec!.taints).toEqual([{ key: 'dedicated', value: 'scan', effect: 'NoSchedule' }]);
    expect(b.status!.allocatable!['example.com/slot']).toBeUndefined();
    expect(kubelet.nodes().sort()).toEqual(['node-a', 'node-b']);
  });

  test('a container that exits at once goes into CrashLoopBackOff and its restartCount grows', async () => {
    await c.apps.createNamespacedDeployment({
      namespace: NS,
      body: deployment('crash', 1, { containers: [{ name: 'cli', image: 'widescan:test', command: ['widescan'], args: ['--version'] }] }),
    });
    let backOff: k8s.V1ContainerStatus | undefined;
    const pod = await until('crash loop', async () => {
      const [p] = await pods('crash');
      const cs = p?.status?.containerStatuses?.[0];
      if (cs?.state?.waiting?.reason === 'CrashLoopBackOff') backOff = cs;
      return backOff && cs!.restartCount! >= 2 && p;
    });
    expect(pod.metadata!.name).toMatch(/^crash-[a-z0-9]{5}$/);
    expect(pod.metadata!.ownerReferences).toEqual([
      expect.objectContaining({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'crash', controller: true, blockOwnerDeletion: true }),
    ]);
    expect(pod.metadata!.labels).toMatchObject({ app: 'crash', tier: 'test' });
    expect(pod.spec!.nodeName).toBe('node-a'); // node-b's taint is not tolerated
    expect(pod.status!.phase).toBe('Running');
    expect(backOff!.state!.waiting!.message).toMatch(/^back-off (300|600)ms restarting failed container=cli pod=crash-[a-z0-9]{5}_default\([-0-9a-f]{36}\)$/);
    expect(backOff!.lastState!.terminated).toMatchObject({ exitCode: 0, reason: 'Completed' });
    expect(backOff!.ready).toBe(false);
    expect(kubelet.logs(pod.metadata!.name!)).toContain(VERSION);
    const status = await until('crash deployment status', async () => {
      const s = await deploymentStatus('crash');
      return s.replicas === 1 && s.unavailableReplicas === 1 && s;
    });
    expect(status).toMatchObject({ observedGeneration: 1, readyReplicas: 0, availableReplicas: 0, updatedReplicas: 1 });
    expect(status.conditions!.find((x) => x.type === 'Available')).toMatchObject({ status: 'False', reason: 'MinimumReplicasUnavailable' });
    await removeDeployment('crash');
  });

  test('bootstrap pods run and become Ready, the Deployment status counts them, and it scales up and down', async () => {
    await c.apps.createNamespacedDeployment({ namespace: NS, body: deployment('boot', 2, { containers: [bootstrap()] }) });
    const two = await until('2 ready bootstrap pods', async () => {
      const ps = await pods('boot');
      return ps.length === 2 && ps.every(ready) && ps;
    });
    const pids = two.map((p) => kubelet.processes().get(p.metadata!.name!)!);
    expect(new Set(pids).size).toBe(2);
    expect(pids.every(alive)).toBe(true);
    for (const p of two) {
      expect(p.status).toMatchObject({ phase: 'Running', hostIP: '::1', podIP: '::1' });
      expect(p.status!.startTime).toBeDefined();
      expect(p.status!.containerStatuses![0]).toMatchObject({ name: 'bootstrap', ready: true, started: true, restartCount: 0 });
      expect(p.status!.containerStatuses![0]!.state!.running).toBeDefined();
      expect(p.status!.conditions!.map((x) => `${x.type}=${x.status}`).sort()).toEqual(
        ['ContainersReady=True', 'Initialized=True', 'PodScheduled=True', 'Ready=True'],
      );
      await until('its log', async () => kubelet.logs(p.metadata!.name!).includes('bootstrap service listening'));
    }
    await until('deployment status 2/2', async () => {
      const s = await deploymentStatus('boot');
      return s.readyReplicas === 2 && s.availableReplicas === 2 && s;
    }).then((s) => {
      expect(s).toMatchObject({ observedGeneration: 1, replicas: 2, updatedReplicas: 2, unavailableReplicas: 0 });
      expect(s.conditions!.find((x) => x.type === 'Available')).toMatchObject({ status: 'True', reason: 'MinimumReplicasAvailable' });
    });

    await scale('boot', 3);
    await until('deployment status 3/3', async () => {
      const s = await deploymentStatus('boot');
      return s.observedGeneration === 2 && s.replicas === 3 && s.readyReplicas === 3 && s.availableReplicas === 3;
    });

    await scale('boot', 1);
    const left = await until('scaled down to 1', async () => {
      const ps = await pods('boot');
      return ps.length === 1 && ps;
    });
    const gone = [...kubelet.processes()].filter(([name]) => name.startsWith('boot-') && name !== left[0]!.metadata!.name);
    await until('removed pods stopped', async () => gone.every(([, pid]) => !alive(pid)) && [...kubelet.processes().keys()].filter((n) => n.startsWith('boot-')).length === 1);
    await until('deployment status 1/1', async () => {
      const s = await deploymentStatus('boot');
      return s.observedGeneration === 3 && s.replicas === 1 && s.readyReplicas === 1 && s.unavailableReplicas === 0;
    });
  });

  test('deleting a pod stops its process and the Deployment replaces it', async () => {
    const [pod] = await pods('boot');
    const pid = kubelet.processes().get(pod!.metadata!.name!)!;
    expect(alive(pid)).toBe(true);
    await c.core.deleteNamespacedPod({ name: pod!.metadata!.name!, namespace: NS });
    await until('process gone', async () => !alive(pid));
    const [next] = await until('a replacement pod', async () => {
      const ps = await pods('boot');
      return ps.length === 1 && ps[0]!.metadata!.name !== pod!.metadata!.name && ready(ps[0]!) && ps;
    });
    expect(kubelet.processes().get(next!.metadata!.name!)).not.toBe(pid);
  });

  test('a template change replaces the pods, the old process ending before the new one starts', async () => {
    const [before] = await pods('boot');
    const oldPid = kubelet.processes().get(before!.metadata!.name!)!;
    await c.apps.patchNamespacedDeployment(
      { name: 'boot', namespace: NS, body: { spec: { template: { metadata: { annotations: { rev: '2' } } } } } },
      mergePatch,
    );
    let overlap = false;
    const [after] = await until('the new pod ready', async () => {
      const ps = await pods('boot');
      const fresh = ps.find((p) => p.metadata!.uid !== before!.metadata!.uid);
      if (fresh && kubelet.processes().has(fresh.metadata!.name!) && alive(oldPid)) overlap = true;
      return ps.length === 1 && fresh && ready(fresh) && ps;
    });
    expect(overlap).toBe(false);
    expect(alive(oldPid)).toBe(false);
    expect(after!.metadata!.labels!['pod-template-hash']).not.toBe(before!.metadata!.labels!['pod-template-hash']);
    expect(after!.metadata!.annotations).toEqual({ rev: '2' });
    const startedAt = new Date(after!.status!.containerStatuses![0]!.state!.running!.startedAt!).getTime();
    expect(startedAt).toBeGreaterThan(0);
    await until('updated status', async () => {
      const s = await deploymentStatus('boot');
      return s.observedGeneration === 4 && s.updatedReplicas === 1 && s.readyReplicas === 1;
    });
    await removeDeployment('boot');
  });

  test('scaling down deletes the unscheduled pods first', async () => {
    const limits = { 'example.com/slot': '1' };
    await c.apps.createNamespacedDeployment({ namespace: NS, body: deployment('slots', 3, { containers: [bootstrap([], { resources: { limits } })] }) });
    const all = await until('1 running, 2 pending', async () => {
      const ps = await pods('slots');
      const pending = ps.filter((p) => p.status?.conditions?.some((x) => x.type === 'PodScheduled' && x.reason === 'Unschedulable'));
      return ps.length === 3 && pending.length === 2 && ps.some(ready) && ps;
    });
    const running = all.find((p) => p.spec?.nodeName)!;
    expect(running.spec!.nodeName).toBe('node-a');
    for (const p of all.filter((x) => x !== running)) {
      expect(p.status!.phase).toBe('Pending');
      expect(p.spec!.nodeName).toBeUndefined();
      expect(p.status!.conditions).toEqual([
        expect.objectContaining({
          type: 'PodScheduled', status: 'False', reason: 'Unschedulable',
          message: '0/2 nodes are available: 1 Insufficient example.com/slot, 1 node(s) had untolerated taint {dedicated: scan}.',
        }),
      ]);
    }
    await scale('slots', 1);
    const [kept] = await until('scaled down to 1', async () => {
      const ps = await pods('slots');
      return ps.length === 1 && ps;
    });
    expect(kept!.metadata!.name).toBe(running.metadata!.name);
    await removeDeployment('slots');
  });

  test('a pod asking for a GPU stays Pending/Unschedulable until a node with one appears', async () => {
    const gpuPod: Partial<k8s.V1PodSpec> & { containers: k8s.V1Container[] } = {
      containers: [bootstrap([], { resources: { limits: { 'nvidia.com/gpu': '1' } } })],
      tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'scan', effect: 'NoSchedule' }],
    };
    await c.apps.createNamespacedDeployment({ namespace: NS, body: deployment('gpu', 1, gpuPod) });
    const message = (p: k8s.V1Pod | undefined): string | undefined => p?.status?.conditions?.find((x) => x.type === 'PodScheduled')?.message;
    const [pending] = await until('unschedulable', async () => {
      const ps = await pods('gpu');
      return ps.length === 1 && !!message(ps[0]) && ps;
    });
    expect(message(pending)).toBe('0/2 nodes are available: 2 Insufficient nvidia.com/gpu.');
    expect(pending!.status!.phase).toBe('Pending');
    await kubelet.sync();
    await kubelet.sync(); // the scheduler retried: still nowhere to go
    expect((await pods('gpu'))[0]!.spec!.nodeName).toBeUndefined();

    await kubelet.addNode({ name: 'gpu-1', labels: { pool: 'gpu' }, capacity: { 'nvidia.com/gpu': '1' } });
    const [placed] = await until('scheduled on gpu-1', async () => {
      const ps = await pods('gpu');
      return ps.length === 1 && !!ps[0]!.spec?.nodeName && ready(ps[0]!) && ps;
    });
    expect(placed!.metadata!.uid).toBe(pending!.metadata!.uid);
    expect(placed!.spec!.nodeName).toBe('gpu-1');
    expect(placed!.status!.conditions!.find((x) => x.type === 'PodScheduled')).toMatchObject({ status: 'True' });

    // The GPU is taken now: a second replica has nowhere to go.
    await scale('gpu', 2);
    await until('second replica unschedulable', async () => {
      const ps = await pods('gpu');
      return ps.length === 2 && ps.some((p) => message(p) === '0/3 nodes are available: 3 Insufficient nvidia.com/gpu.');
    });
    await removeDeployment('gpu');
  });

  test('a DaemonSet runs one pod per eligible node and follows node labels and node removal', async () => {
    await c.apps.createNamespacedDaemonSet({
      namespace: NS,
      body: {
        metadata: { name: 'listener' },
        spec: {
          selector: { matchLabels: { app: 'listener' } },
          template: {
            metadata: { labels: { app: 'listener' } },
            spec: {
              nodeSelector: { pool: 'cpu' },
              tolerations: [{ key: 'dedicated', operator: 'Exists' }],
              terminationGracePeriodSeconds: 5,
              containers: [bootstrap()],
            },
          },
        },
      },
    });
    const dsStatus = async (): Promise<k8s.V1DaemonSetStatus> =>
      (await c.apps.readNamespacedDaemonSetStatus({ name: 'listener', namespace: NS })).status ?? ({} as k8s.V1DaemonSetStatus);
    const two = await until('a ready daemon pod on node-a and node-b', async () => {
      const ps = await pods('listener');
      return ps.length === 2 && ps.every(ready) && ps;
    });
    expect(two.map((p) => p.spec!.nodeName).sort()).toEqual(['node-a', 'node-b']); // not gpu-1: pool=gpu
    expect(two[0]!.metadata!.ownerReferences![0]).toMatchObject({ kind: 'DaemonSet', name: 'listener', controller: true });
    expect(two[0]!.spec!.affinity!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution!.nodeSelectorTerms[0]!.matchFields![0]).toMatchObject(
      { key: 'metadata.name', operator: 'In', values: [two[0]!.spec!.nodeName] },
    );
    const s = await until('daemonset status 2/2', async () => {
      const st = await dsStatus();
      return st.numberReady === 2 && st;
    });
    expect(s).toMatchObject({
      observedGeneration: 1, desiredNumberScheduled: 2, currentNumberScheduled: 2, numberAvailable: 2,
      numberMisscheduled: 0, updatedNumberScheduled: 2, numberUnavailable: 0,
    });

    await c.core.patchNode({ name: 'gpu-1', body: { metadata: { labels: { pool: 'cpu' } } } }, mergePatch);
    await until('a third daemon pod, on gpu-1', async () => {
      const ps = await pods('listener');
      return ps.length === 3 && ps.every(ready) && ps.some((p) => p.spec!.nodeName === 'gpu-1');
    });
    await until('daemonset status 3/3', async () => {
      const st = await dsStatus();
      return st.desiredNumberScheduled === 3 && st.numberReady === 3;
    });

    // A node going away takes its pods along (pod garbage collection); the DaemonSet shrinks.
    const onGpu = (await pods('listener')).find((p) => p.spec!.nodeName === 'gpu-1')!;
    const gpuPid = kubelet.processes().get(onGpu.metadata!.name!)!;
    await expect(kubelet.addNode({ name: 'gpu-1' })).rejects.toThrow(/gpu-1 is already registered/);
    await expect(kubelet.removeNode('nope')).rejects.toThrow(/node nope is not one of this kubelet's nodes/);
    await kubelet.removeNode('gpu-1');
    expect(alive(gpuPid)).toBe(false);
    expect((await c.core.listNode()).items.map((n) => n.metadata!.name).sort()).toEqual(['node-a', 'node-b']);
    await until('daemonset status back to 2', async () => {
      const st = await dsStatus();
      return st.desiredNumberScheduled === 2 && st.numberReady === 2 && (await pods('listener')).length === 2;
    });

    const pids = (await pods('listener')).map((p) => kubelet.processes().get(p.metadata!.name!)!);
    await c.apps.deleteNamespacedDaemonSet({ name: 'listener', namespace: NS });
    await until('daemon pods gone', async () => (await pods('listener')).length === 0 && pids.every((pid) => !alive(pid)));
  });

  test('env from values, $(VAR) references, a Secret, a ConfigMap and the downward API; a readiness probe on a named port', async () => {
    const port = await freePort();
    await c.core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'envd-config' }, data: { port: String(port) } } });
    const env: k8s.V1EnvVar[] = [
      { name: 'PORT', valueFrom: { configMapKeyRef: { name: 'envd-config', key: 'port' } } },
      { name: 'WIDESCAN_ADMIN_TOKEN', valueFrom: { secretKeyRef: { name: 'envd-admin', key: 'token' } } },
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
      { name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
      { name: 'APP', valueFrom: { fieldRef: { fieldPath: "metadata.labels['app']" } } },
      { name: 'GREETING', value: 'hi $(POD_NAME) $$(POD_NAME) $(NOT_SET)' },
    ];
    const container = bootstrap(env, {
      ports: [{ name: 'http', containerPort: port }],
      readinessProbe: { httpGet: { path: '/readyz', port: 'http' }, periodSeconds: 1 },
    });
    await c.apps.createNamespacedDeployment({ namespace: NS, body: deployment('envd', 1, { containers: [container] }) });

    // The Secret does not exist yet: the container cannot be configured, and nothing runs.
    const [waiting] = await until('CreateContainerConfigError', async () => {
      const ps = await pods('envd');
      return ps[0]?.status?.containerStatuses?.[0]?.state?.waiting?.reason === 'CreateContainerConfigError' && ps;
    });
    expect(waiting!.status!.containerStatuses![0]!.state!.waiting!.message).toBe('secret "envd-admin" not found');
    expect(waiting!.status!.phase).toBe('Pending');
    expect(kubelet.processes().has(waiting!.metadata!.name!)).toBe(false);

    await c.core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'envd-admin' }, stringData: { token: ADMIN_TOKEN } } });
    const [pod] = await until('envd ready', async () => {
      const ps = await pods('envd');
      return ps.length === 1 && ready(ps[0]!) && ps;
    });
    const name = pod!.metadata!.name!;
    expect(kubelet.env(name)).toMatchObject({
      PORT: String(port), WIDESCAN_ADMIN_TOKEN: ADMIN_TOKEN, POD_NAME: name, NODE_NAME: pod!.spec!.nodeName, HOST_IP: '::1', APP: 'envd',
      GREETING: `hi ${name} $(POD_NAME) $(NOT_SET)`, HOSTNAME: name,
    });
    // The token from the Secret is the one the running bootstrap service accepts.
    const blocked = (token: string): Promise<number> =>
      fetch(`http://[::1]:${port}/api/v1/peers/blocked`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
    expect(await blocked(ADMIN_TOKEN)).toBe(200);
    expect(await blocked('wrong-token-0123456789abcdef-xyz')).toBe(401);
    await until('the admin log line', async () => kubelet.logs(name).includes('"admin":true'));
    await removeDeployment('envd');
  });

  test('a failing readiness probe keeps the pod Running but not Ready', async () => {
    const port = await freePort();
    const container = bootstrap([{ name: 'PORT', value: String(port) }], {
      readinessProbe: { httpGet: { path: '/no-such-path', port }, periodSeconds: 1, failureThreshold: 1 },
    });
    await c.apps.createNamespacedDeployment({ namespace: NS, body: deployment('unready', 1, { containers: [container] }) });
    await until('the service answers', async () => {
      const ps = await pods('unready');
      return ps[0]?.status?.phase === 'Running' && (await fetch(`http://[::1]:${port}/healthz`)).status === 200;
    });
    await sleep(2500); // at least two probes (404) have run
    const [pod] = await pods('unready');
    expect(pod!.status!.containerStatuses![0]).toMatchObject({ ready: false, started: true });
    expect(pod!.status!.conditions!.find((x) => x.type === 'Ready')).toMatchObject({
      status: 'False', reason: 'ContainersNotReady', message: 'containers with unready status: [bootstrap]',
    });
    const s = await deploymentStatus('unready');
    expect(s).toMatchObject({ readyReplicas: 0, availableReplicas: 0, unavailableReplicas: 1 });
    await removeDeployment('unready');
  });

  test('restartPolicy Never: exit 0 is Succeeded, a bad component name is Failed with its exit code', async () => {
    const pod = (name: string, command: string[]): k8s.V1Pod => ({
      metadata: { name, labels: { app: name } },
      spec: { restartPolicy: 'Never', containers: [{ name: 'main', image: 'widescan:test', command }] },
    });
    await c.core.createNamespacedPod({ namespace: NS, body: pod('once-ok', ['widescan', '--version']) });
    await c.core.createNamespacedPod({ namespace: NS, body: pod('once-bad', ['rm -rf /; echo', '$(HOME)']) });
    const [ok] = await until('Succeeded', async () => {
      const ps = await pods('once-ok');
      return ps[0]?.status?.phase === 'Succeeded' && ps;
    });
    expect(ok!.status!.containerStatuses![0]!.state!.terminated).toMatchObject({ exitCode: 0, reason: 'Completed' });
    expect(ok!.status!.conditions!.find((x) => x.type === 'Ready')).toMatchObject({ status: 'False', reason: 'PodCompleted' });
    const [bad] = await until('Failed', async () => {
      const ps = await pods('once-bad');
      return ps[0]?.status?.phase === 'Failed' && ps;
    });
    expect(bad!.status!.containerStatuses![0]).toMatchObject({ restartCount: 0, state: { terminated: expect.objectContaining({ exitCode: 2, reason: 'Error' }) } });
    // argv goes to the entrypoint as is, never through a shell; $(HOME) is a defined variable.
    expect(kubelet.logs('once-bad')).toContain('usage: entrypoint');
    expect(kubelet.logs('once-bad')).toContain('"rm -rf /; echo"');
    await kubelet.sync();
    await kubelet.sync();
    expect((await pods('once-bad'))[0]!.status!.containerStatuses![0]!.restartCount).toBe(0);
  });

  test('stop() ends every process it started', async () => {
    await c.apps.createNamespacedDeployment({ namespace: NS, body: deployment('last', 2, { containers: [bootstrap()] }) });
    await until('2 running', async () => (await pods('last')).filter(ready).length === 2);
    for (const pid of kubelet.processes().values()) seen.add(pid);
    expect(seen.size).toBeGreaterThanOrEqual(10);
    expect(leftoverChildren().length).toBeGreaterThan(0);
    await kubelet.stop({ graceMs: 2000 });
    expect([...seen].filter(alive)).toEqual([]);
    expect(leftoverChildren()).toEqual([]);
    expect(kubelet.processes().size).toBe(0);
  });
});

describe('termination messages', () => {
  // A stand-in image: its first argument says how to leave a message, EXIT its exit code.
  const IMAGE = `
import { execFileSync } from 'node:child_process';
import { appendFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
const [what, ...rest] = process.argv.slice(2);
const file = process.env.${TERMINATION_LOG_ENV};
if (what === 'env') appendFileSync(file, rest[0]);
else if (what === 'arg') writeFileSync(rest[0], rest[1]);
else if (what === 'lines') for (let i = 1; i <= Number(rest[0]); i++) console.log('line ' + i);
else if (what === 'big') writeFileSync(file, 'x'.repeat(10000) + 'END');
else if (what === 'fifo') { rmSync(file); execFileSync('mkfifo', [file]); }
else if (what === 'symlink') { rmSync(file); symlinkSync(rest[0], file); }
process.exitCode = Number(process.env.EXIT ?? 0);
`;
  const dir = mkdtempSync(join(tmpdir(), 'kubelet-image-'));
  const entrypoint = join(dir, 'entrypoint.mjs');
  // A path whose directory does not exist on the host: a write that was not rewritten fails.
  const customPath = `/run/widescan-kubelet-test-${randomBytes(4).toString('hex')}/message`;
  const hostHadTerminationLog = existsSync('/dev/termination-log');
  let c: Cluster;
  let kubelet: Kubelet;

  beforeAll(async () => {
    writeFileSync(entrypoint, IMAGE);
    c = await cluster();
    kubelet = await startKubelet({ kubeconfig: c.srv.kubeconfig, nodes: [{ name: 'solo' }], entrypoint, pollMs: 100, backoffInitialMs: 200, backoffMaxMs: 400 });
  });
  afterAll(async () => {
    await kubelet?.stop({ graceMs: 1000 });
    await c?.srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const run = async (name: string, args: string[], exit: number, extra: Partial<k8s.V1Container> = {}, restartPolicy = 'Never'): Promise<void> => {
    await c.core.createNamespacedPod({
      namespace: NS,
      body: { metadata: { name }, spec: { restartPolicy, containers: [{ name: 'main', args, env: [{ name: 'EXIT', value: String(exit) }], ...extra }] } },
    });
  };
  const read = (name: string): Promise<k8s.V1Pod> => c.core.readNamespacedPod({ name, namespace: NS });
  const finished = (name: string): Promise<k8s.V1ContainerStateTerminated> =>
    eventually(`${name} finished`, async () => {
      const p = await read(name);
      return (p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') && p.status.containerStatuses![0]!.state!.terminated;
    }, kubelet);

  test('what the process writes to the file named by the env variable becomes terminated.message; the file is the run\'s own', async () => {
    await run('via-env', ['env', 'GPU worker has no usable GPU'], 3);
    expect(await finished('via-env')).toMatchObject({ exitCode: 3, reason: 'Error', message: 'GPU worker has no usable GPU' });
    const file = kubelet.env('via-env')![TERMINATION_LOG_ENV]!;
    expect(file).not.toBe('/dev/termination-log');
    expect(file.startsWith(tmpdir())).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe('GPU worker has no usable GPU');
    expect(existsSync('/dev/termination-log')).toBe(hostHadTerminationLog);
    expect((await read('via-env')).status!.phase).toBe('Failed');
    // Deleting the pod removes its files.
    await c.core.deleteNamespacedPod({ name: 'via-env', namespace: NS });
    await eventually('the message file removed', async () => !existsSync(file), kubelet);
  });

  test('a custom terminationMessagePath is rewritten in args and env; exit 0 keeps its message too', async () => {
    await run('via-arg', ['arg', customPath, 'all done'], 0, {
      terminationMessagePath: customPath,
      env: [{ name: 'EXIT', value: '0' }, { name: 'MESSAGE_FILE', value: customPath }],
    });
    expect(await finished('via-arg')).toMatchObject({ exitCode: 0, reason: 'Completed', message: 'all done' });
    const env = kubelet.env('via-arg')!;
    expect(env.MESSAGE_FILE).toBe(env[TERMINATION_LOG_ENV]);
    expect(env.MESSAGE_FILE).not.toBe(customPath);
    expect(existsSync(dirname(customPath))).toBe(false);
  });

  test('FallbackToLogsOnError: the last 80 lines of output when the file is empty and the exit code is not 0', async () => {
    const fallback = { terminationMessagePolicy: 'FallbackToLogsOnError' };
    await Promise.all([
      run('logs-failed', ['lines', '100'], 1, fallback),
      run('logs-ok', ['lines', '100'], 0, fallback),
      run('logs-file-policy', ['lines', '100'], 1),
      run('logs-file-wins', ['env', 'from the file'], 1, fallback),
    ]);
    const lines = Array.from({ length: 80 }, (_, i) => `line ${i + 21}\n`).join('');
    expect(await finished('logs-failed')).toMatchObject({ exitCode: 1, message: lines });
    expect((await finished('logs-ok')).message).toBeUndefined();
    expect((await finished('logs-file-policy')).message).toBeUndefined();
    expect((await finished('logs-file-wins')).message).toBe('from the file');
  });

  test('hostile files: an oversized message keeps its last 4096 bytes, a FIFO reads as none, a symlink is not followed', async () => {
    const secret = join(dir, 'secret');
    writeFileSync(secret, 'not for the pod status');
    await Promise.all([run('big', ['big'], 1), run('fifo', ['fifo'], 1), run('symlink', ['symlink', secret], 1)]);
    const big = (await finished('big')).message!;
    expect(big).toHaveLength(4096);
    expect(big.endsWith('xxxEND')).toBe(true);
    expect(await finished('fifo')).toMatchObject({ exitCode: 1 });
    expect((await finished('fifo')).message).toBeUndefined();
    const symlink = (await finished('symlink')).message!;
    expect(symlink).toMatch(/^Error on reading termination log \/.*: ELOOP/);
    expect(symlink).not.toContain('not for the pod status');
  });

  test('a crash loop: each run gets a fresh file, lastState carries the previous run\'s message', async () => {
    await run('loop', ['env', 'once'], 3, {}, 'Always');
    const status = await eventually('two restarts', async () => {
      const cs = (await read('loop')).status?.containerStatuses?.[0];
      return cs && cs.restartCount! >= 2 && cs.lastState?.terminated && cs;
    }, kubelet);
    // Appended to a file of its own each time: never "onceonce".
    expect(status.lastState!.terminated).toMatchObject({ exitCode: 3, message: 'once' });
    const file = kubelet.env('loop')![TERMINATION_LOG_ENV]!;
    expect(readdirSync(dirname(file))).toHaveLength(1);
    await c.core.deleteNamespacedPod({ name: 'loop', namespace: NS });
  });

  test.each([['a relative', 'termination-log'], ['a directory', '/dev/'], ['the root', '/']])(
    '%s terminationMessagePath is a CreateContainerConfigError',
    async (_what, path) => {
      const name = `bad-path-${randomBytes(3).toString('hex')}`;
      await run(name, ['env', 'never'], 0, { terminationMessagePath: path });
      const waiting = await eventually(`${name} waiting`, async () => (await read(name)).status?.containerStatuses?.[0]?.state?.waiting, kubelet);
      expect(waiting).toEqual({
        reason: 'CreateContainerConfigError',
        message: `terminationMessagePath ${JSON.stringify(path)} must be the absolute path of a file (default /dev/termination-log)`,
      });
      expect(kubelet.processes().has(name)).toBe(false);
      await c.core.deleteNamespacedPod({ name, namespace: NS });
    },
  );

  test('no kubelet errors', () => {
    expect(kubelet.errors()).toEqual([]);
  });
});

describe('inputs', () => {
  test('startKubelet refuses bad nodes and options, naming the problem', async () => {
    const kubeconfig = '/nonexistent/kubeconfig';
    await expect(startKubelet({ kubeconfig, nodes: [] })).rejects.toThrow(/at least one node/);
    await expect(startKubelet({ kubeconfig, nodes: [{ name: 'Node_A' }] })).rejects.toThrow(/"Node_A" is not a lowercase RFC 1123/);
    await expect(startKubelet({ kubeconfig, nodes: [{ name: 'x'.repeat(300) }] })).rejects.toThrow(/RFC 1123/);
    await expect(startKubelet({ kubeconfig, nodes: [{ name: 'a' }, { name: 'a' }] })).rejects.toThrow(/node a is listed twice/);
    await expect(startKubelet({ kubeconfig, nodes: [{ name: 'a', capacity: { 'nvidia.com/gpu': 'lots' } }] })).rejects.toThrow(
      /node a: capacity nvidia.com\/gpu: "lots" is not a resource quantity/,
    );
    await expect(startKubelet({ kubeconfig, nodes: [{ name: 'a', taints: [{ key: 'k', effect: 'Sometimes' }] }] })).rejects.toThrow(/effect of NoSchedule/);
    await expect(startKubelet({ kubeconfig, nodes: [{ name: 'a', netns: 'init' }] })).rejects.toThrow(/"init" is not a lab namespace/);
    await expect(startKubelet({ kubeconfig, nodes: [{ name: 'a', netns: 'zq9x8-scan' }] })).rejects.toThrow(/zq9x8-scan does not exist/);
    await expect(startKubelet({ kubeconfig, nodes: [{ name: 'a' }], entrypoint: '/nonexistent/entrypoint.js' })).rejects.toThrow(/npm run build/);
    await expect(startKubelet({ kubeconfig, nodes: [{ name: 'a' }], probePeriodMs: 10 })).rejects.toThrow(/1000 ms minimum/);
    await expect(startKubelet({ kubeconfig, nodes: [{ name: 'a' }] })).rejects.toThrow(/nonexistent\/kubeconfig/);
  });

  test('parseQuantity reads Kubernetes quantities in thousandths and rejects the rest', () => {
    expect(parseQuantity('1')).toBe(1000);
    expect(parseQuantity(2)).toBe(2000);
    expect(parseQuantity('100m')).toBe(100);
    expect(parseQuantity('1.5')).toBe(1500);
    expect(parseQuantity('1Ki')).toBe(1024 * 1000);
    expect(parseQuantity('2Gi')).toBe(2 * 2 ** 30 * 1000);
    expect(parseQuantity('1k')).toBe(1e6);
    expect(parseQuantity('1e3')).toBe(1e6);
    for (const bad of ['', 'lots', '1 Gi', '1gi', '--1', '1Ki2', 'x'.repeat(10_000)]) expect(() => parseQuantity(bad)).toThrow(/is not a resource quantity/);
  });

  test('expandEnvRefs substitutes defined variables only, and $$ escapes', () => {
    const env = { A: 'x', B: '$(A)' };
    expect(expandEnvRefs('$(A)-$(B)-$(C)', env)).toBe('x-$(A)-$(C)');
    expect(expandEnvRefs('$$(A) $$ $A $(', env)).toBe('$(A) $ $A $(');
  });

  test('unschedulableMessage matches the scheduler', () => {
    expect(unschedulableMessage(2, new Map([['Insufficient nvidia.com/gpu', 2]]))).toBe('0/2 nodes are available: 2 Insufficient nvidia.com/gpu.');
    expect(unschedulableMessage(3, new Map([["node(s) didn't match Pod's node affinity/selector", 2], ['Insufficient cpu', 1]]))).toBe(
      "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector.",
    );
    expect(unschedulableMessage(0, new Map())).toBe('no nodes available to schedule pods');
  });

  test('logs are bounded; a missing Secret key or a NUL byte in env stops the container from being created', async () => {
    const c = await cluster();
    const kubelet = await startKubelet({ kubeconfig: c.srv.kubeconfig, nodes: [{ name: 'solo' }], pollMs: 100, logLimitBytes: 64 });
    try {
      await c.core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 's1' }, stringData: { token: 't' } } });
      await c.core.createNamespacedPod({
        namespace: NS,
        body: { metadata: { name: 'help' }, spec: { restartPolicy: 'Never', containers: [{ name: 'main', command: ['widescan'], args: ['--help'] }] } },
      });
      await c.core.createNamespacedPod({
        namespace: NS,
        body: {
          metadata: { name: 'nokey' },
          spec: { containers: [{ name: 'main', command: ['widescan'], env: [{ name: 'T', valueFrom: { secretKeyRef: { name: 's1', key: 'nope' } } }] }] },
        },
      });
      await c.core.createNamespacedPod({
        namespace: NS,
        body: { metadata: { name: 'nul' }, spec: { containers: [{ name: 'main', command: ['widescan'], env: [{ name: 'X', value: 'a\u0000b' }] }] } },
      });
      const phase = async (name: string): Promise<k8s.V1Pod> => c.core.readNamespacedPod({ name, namespace: NS });
      await eventually('help Succeeded', async () => (await phase('help')).status?.phase === 'Succeeded', kubelet);
      const text = kubelet.logs('help');
      expect(Buffer.byteLength(text)).toBeLessThanOrEqual(64);
      expect(text.length).toBeGreaterThan(10);
      const waiting = await eventually('nokey waiting', async () => (await phase('nokey')).status?.containerStatuses?.[0]?.state?.waiting, kubelet);
      expect(waiting).toEqual({ reason: 'CreateContainerConfigError', message: "couldn't find key nope in Secret default/s1" });
      expect(kubelet.processes().has('nokey')).toBe(false);
      const nul = await eventually('nul waiting', async () => (await phase('nul')).status?.containerStatuses?.[0]?.state?.waiting, kubelet);
      expect(nul).toEqual({ reason: 'CreateContainerError', message: expect.stringMatching(/null bytes/) });
      expect(kubelet.errors()).toEqual([]);
    } finally {
      await kubelet.stop({ graceMs: 1000 });
      await c.srv.close();
    }
  });
});

function canUseNetns(): boolean {
  try {
    return process.getuid?.() === 0 && execFileSync('ip', ['netns', 'list'], { stdio: 'pipe' }) !== undefined;
  } catch {
    return false;
  }
}

(canUseNetns() ? describe : describe.skip)('a node in a network namespace', () => {
  const ns = `k${Math.random().toString(36).slice(2, 7).padEnd(5, '0')}-scan`;
  let c: Cluster;
  let kubelet: Kubelet;

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    c = await cluster();
    kubelet = await startKubelet({ kubeconfig: c.srv.kubeconfig, nodes: [{ name: 'lab', netns: ns }], pollMs: 100, probePeriodMs: 1000, maxGraceMs: 2000 });
  });
  afterAll(async () => {
    await kubelet?.stop({ graceMs: 1000 });
    await c?.srv.close();
    execFileSync('ip', ['netns', 'delete', ns]);
  });

  test('hostNetwork pods run and are probed inside the namespace; other pods run on the host', async () => {
    // Redis is unreachable from inside the namespace, which /healthz does not need; the fixed port is
    // free there whatever the host uses.
    const container = (name: string): k8s.V1Container => ({
      name,
      command: ['bootstrap'],
      env: [
        { name: 'WIDESCAN_REDIS_URL', value: 'redis://[::1]:1' },
        { name: 'WIDESCAN_LISTENER_TOKEN', value: LISTENER_TOKEN },
        { name: 'PORT', value: '8080' },
      ],
      readinessProbe: { httpGet: { path: '/healthz', port: 8080 } },
    });
    await c.core.createNamespacedPod({ namespace: NS, body: { metadata: { name: 'in-ns' }, spec: { hostNetwork: true, containers: [container('main')] } } });
    const pod = await eventually('in-ns ready', async () => {
      const p = await c.core.readNamespacedPod({ name: 'in-ns', namespace: NS });
      return p.status?.conditions?.find((x) => x.type === 'Ready')?.status === 'True' && p;
    }, kubelet);
    expect(pod.spec!.nodeName).toBe('lab');
    const pid = kubelet.processes().get('in-ns')!;
    expect(execFileSync('ip', ['netns', 'identify', String(pid)], { encoding: 'utf8' }).trim()).toBe(ns);
    expect(kubelet.env('in-ns')!.HOSTNAME).toBe('lab');

    await c.core.createNamespacedPod({
      namespace: NS,
      body: { metadata: { name: 'on-host' }, spec: { containers: [{ ...container('main'), env: [...container('main').env!.slice(0, 2), { name: 'PORT', value: '0' }], readinessProbe: undefined }] } },
    });
    await eventually('on-host running', async () => kubelet.processes().get('on-host'), kubelet);
    expect(execFileSync('ip', ['netns', 'identify', String(kubelet.processes().get('on-host'))], { encoding: 'utf8' }).trim()).toBe('');
    await c.core.deleteNamespacedPod({ name: 'in-ns', namespace: NS });
    await eventually('in-ns stopped', async () => !alive(pid), kubelet);
  });
});

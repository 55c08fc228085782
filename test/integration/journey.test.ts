// The whole user journey in one test: `helm install` of charts/widescan against the in-process API server,
// the test kubelet running the chart's pods (operator, bootstrap, listener) and the operator's worker pods as
// local processes on one node whose network is the lab's scanner namespace, then `kubectl apply` of
// examples/lab.yaml → Succeeded with exactly the lab's live population in the bootstrap.
//
// What differs from a cluster, and why: Redis is a Unix-socket redis-server given through the chart's
// redis.external.urlSecret (processes in the lab namespace cannot reach the test's loopback TCP, and the
// chart's redis.external.url only takes redis:// URLs); the operator reaches the API server through the
// KUBECONFIG the kubelet gives every process (there is no in-cluster service account); the listener reaches
// the bootstrap Service through the kubelet's Service relay. The test server lacks the RBAC, policy,
// networking and StatefulSet kinds: schemaless stand-in CRDs give them a REST mapping, as in chart.test.ts.
process.env.WIDESCAN_LOG_LEVEL ??= 'warn';

import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import type { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { freePort } from '../../lib/proc.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';
import { labStatus, type LabInfo } from '../../testbed/lab.js';
import { decodeProtobuf, startApiServer, type ApiServer, type KObject } from '../apiserver/server.js';
import { eventually as waitFor } from '../helpers/cli.js';
import { expectLabPopulation, startLab, stopLab } from '../helpers/lab.js';
import { helmBinary, kubectlBinary } from '../helpers/layer.js';
import { startKubelet, type Kubelet } from '../kubelet/kubelet.js';

const NS = 'widescan';
const run = promisify(execFile);

let lab: LabInfo | undefined;
let srv: ApiServer;
let kubelet: Kubelet | undefined;
let redisServer: EmbeddedRedis | undefined;
let redis: Redis | undefined;
let dir: string;

/** helm/kubectl, asynchronously: the API server lives in this process, a synchronous child would deadlock it. */
async function tool(bin: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await run(bin, [...args, '--kubeconfig', srv.kubeconfig], { env: { ...process.env, HOME: dir } });
    return { ok: true, out: r.stdout + r.stderr };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    return { ok: false, out: `${err.stdout ?? ''}${err.stderr ?? ''}` || err.message };
  }
}

beforeAll(async () => {
  lab = await startLab();
  dir = mkdtempSync(join(tmpdir(), 'widescan-journey-'));
  redisServer = await startEmbeddedRedis({ unixSocket: true });
  const socket = redisServer.url;
  redis = connectRedis(socket);
  srv = await startApiServer({ tls: true });
  const { store } = srv;
  for (const ns of [NS, 'scans']) store.create(store.type('', 'namespaces'), 'v1', '', { metadata: { name: ns } });
  const crds = store.type('apiextensions.k8s.io', 'customresourcedefinitions');
  for (const [group, kind, scope] of [
    ['rbac.authorization.k8s.io', 'ClusterRole', 'Cluster'], ['rbac.authorization.k8s.io', 'ClusterRoleBinding', 'Cluster'],
    ['rbac.authorization.k8s.io', 'Role', 'Namespaced'], ['rbac.authorization.k8s.io', 'RoleBinding', 'Namespaced'],
    ['apps', 'StatefulSet', 'Namespaced'], ['policy', 'PodDisruptionBudget', 'Namespaced'], ['networking.k8s.io', 'NetworkPolicy', 'Namespaced'],
  ] as const) {
    const plural = `${kind.toLowerCase()}s`.replace(/ys$/, 'ies');
    store.create(crds, 'v1', '', {
      metadata: { name: `${plural}.${group}` },
      spec: {
        group, scope, names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
        versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } } }],
      },
    });
  }
  // The user's own Secret with the Redis URL (a socket path, which ioredis takes as a Unix socket).
  store.create(store.type('', 'secrets'), 'v1', NS, { metadata: { name: 'redis-url' }, stringData: { url: socket } });
  kubelet = await startKubelet({
    kubeconfig: srv.kubeconfig,
    nodes: [{ name: 'lab-node', netns: lab.namespaces.scan }],
    env: { KUBECONFIG: srv.kubeconfig, WIDESCAN_LOG_LEVEL: 'info' },
    maxGraceMs: 5000,
    probePeriodMs: 1000,
  });
}, 60_000);

afterAll(async () => {
  await kubelet?.stop();
  redis?.disconnect();
  await redisServer?.stop();
  await srv?.close();
  await stopLab(lab);
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

const condition = (o: KObject | undefined, type: string) => (o?.status?.conditions as KObject[] | undefined)?.find((c) => c.type === type);

test('helm install → kubectl apply examples/lab.yaml → GPU unschedulable → CPU fallback → Succeeded with exactly the lab\'s population', async () => {
  const [helm, kubectl] = await Promise.all([helmBinary(), kubectlBinary()]);
  const values = join(dir, 'values.yaml');
  writeFileSync(values, stringify({
    image: { repository: 'widescan', tag: 'test' },
    networkKey: { value: readFileSync(lab!.networkKeyFile, 'utf8').trim() },
    // One replica each: pods off the host network share the host's, where two would collide on one port.
    operator: { replicas: 1, metricsPort: await freePort(), statusIntervalSeconds: 1 },
    bootstrap: { replicas: 1, port: await freePort() },
    workers: { fallbackAfterSeconds: 2, gpu: { enabled: true, maxReplicas: 1 }, cpu: { maxReplicas: 1 } },
    redis: { external: { urlSecret: { name: 'redis-url', key: 'url' } } },
  }));
  const install = await tool(helm, ['install', 'widescan', 'charts/widescan', '--namespace', NS, '-f', values]);
  expect(install).toEqual({ ok: true, out: expect.stringContaining('STATUS: deployed') });
  expect((await tool(helm, ['list', '--namespace', NS, '-o', 'json'])).out).toContain('"status":"deployed"');

  const before = await labStatus(lab!.name);
  const applied = await tool(kubectl, ['apply', '--namespace', 'scans', '-f', 'examples/lab.yaml']);
  expect(applied).toEqual({ ok: true, out: expect.stringContaining('widescanjob.widescan.dev/lab created') });

  let latest: KObject | undefined;
  const dump = () => {
    const pods = srv.store.list('', 'pods', NS);
    return `\nstatus: ${JSON.stringify(latest?.status)}\npods: ${JSON.stringify(pods.map((p) => [p.metadata.name, p.status?.phase, p.status?.containerStatuses?.[0]?.state]))}` +
      `\nkubelet errors: ${kubelet!.errors().join('\n')}\n` + pods.map((p) => `--- ${p.metadata.name}\n${kubelet!.logs(p.metadata.name).slice(-3000)}`).join('\n');
  };
  let sawFallback = false;
  await waitFor(async () => {
    latest = srv.store.get('widescan.dev', 'widescanjobs', 'scans', 'lab');
    if (condition(latest, 'Degraded')?.reason === 'GPUUnschedulable') sawFallback = true;
    return latest?.status?.phase === 'Succeeded' || latest?.status?.phase === 'Failed';
  }, 100_000, 'the lab job to finish').catch((err: Error) => {
    throw new Error(err.message + dump());
  });
  if (latest!.status.phase !== 'Succeeded') throw new Error(`the job ended ${latest!.status.phase}${dump()}`);
  expect(sawFallback).toBe(true);
  // The operator the chart installed did the work: its pods are the chart's, the worker pools its own.
  const deployments = srv.store.list('apps', 'deployments', NS).map((d) => d.metadata.name).sort();
  expect(deployments).toEqual(['widescan-bootstrap', 'widescan-operator', 'widescan-worker-cpu', 'widescan-worker-gpu']);

  await expectLabPopulation(redis!, lab!, 'scans/lab', latest!.status, before);
}, 150_000);

test('the release record Helm wrote in protobuf reads back; protobuf the server cannot decode is refused, not misread', async () => {
  const release = srv.store.list('', 'secrets', NS).find((x) => x.type === 'helm.sh/release.v1');
  expect(release?.metadata.labels).toMatchObject({ name: 'widescan', owner: 'helm', status: 'deployed' });
  expect(Buffer.from(release!.data.release, 'base64').length).toBeGreaterThan(100);
  const refused = (buf: Buffer) => {
    try {
      decodeProtobuf(buf);
      return 0;
    } catch (e) {
      return (e as { code: number }).code;
    }
  };
  expect(refused(Buffer.from('{"kind":"Secret"}'))).toBe(415); // no k8s envelope
  // A Pod (TypeMeta apiVersion v1, kind Pod): a kind without a decoder here.
  const typeMeta = Buffer.from([0x0a, 2, ...Buffer.from('v1'), 0x12, 3, ...Buffer.from('Pod')]);
  expect(refused(Buffer.concat([Buffer.from('k8s\0'), Buffer.from([0x0a, typeMeta.length]), typeMeta]))).toBe(415);
  expect(refused(Buffer.concat([Buffer.from('k8s\0'), Buffer.from([0x0a, 0x7f, 1])]))).toBe(400); // truncated
});

// The Helm chart charts/widescan, rendered by the real helm (v4, from the layer zip): lint and template for the
// defaults and the combinations users pick, schema refusals, the CRD copy, every manifest against the
// Kubernetes OpenAPI schemas (kubernetes-models' validators, plus client-node's field lists for unknown fields),
// the operator's RBAC against the API calls in operator/*.ts, the rendered operator config through the
// operator's own parser, and the generated Secrets (lookup against the in-process API server).
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { parse, parseAllDocuments } from 'yaml';
import { crdYaml } from '../../lib/core/crd-yaml.js';
import { GROUP, PLURAL } from '../../lib/core/schema.js';
import { parseOperatorConfig } from '../../operator/config.js';
import { poolDeploymentName } from '../../operator/pools.js';
import { startApiServer, type ApiServer } from '../apiserver/server.js';
import { helmBinary } from '../helpers/layer.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- rendered manifests are schemaless JSON */
type K = Record<string, any>;

const repo = fileURLToPath(new URL('../../', import.meta.url));
const CHART = join(repo, 'charts/widescan');
const NS = 'widescan';
const work = mkdtempSync(join(tmpdir(), 'chart-test-'));
const run = promisify(execFile);
let helm: string;

interface HelmResult {
  ok: boolean;
  out: string;
}

async function runHelm(args: string[]): Promise<HelmResult> {
  try {
    const r = await run(helm, args, { cwd: repo, env: { ...process.env, HOME: work, HELM_CACHE_HOME: join(work, 'cache'), HELM_CONFIG_HOME: join(work, 'config') }, maxBuffer: 64 << 20 });
    return { ok: true, out: r.stdout + r.stderr };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    return { ok: false, out: `${err.stdout ?? ''}${err.stderr ?? ''}` || err.message };
  }
}

let fileCount = 0;
function valuesFile(values: K): string {
  const file = join(work, `values-${fileCount++}.json`);
  writeFileSync(file, JSON.stringify(values)); // JSON is YAML
  return file;
}

const MONITORING_API = ['--api-versions', 'monitoring.coreos.com/v1'];

async function template(values: K = {}, extra: string[] = []): Promise<HelmResult> {
  return runHelm(['template', 'widescan', CHART, '--namespace', NS, '-f', valuesFile(values), ...extra]);
}

function docs(yamlText: string): K[] {
  return parseAllDocuments(yamlText)
    .map((d) => {
      if (d.errors.length) throw new Error(`helm rendered invalid YAML: ${d.errors[0]!.message}`);
      return d.toJS() as K | null;
    })
    .filter((d): d is K => d !== null);
}

async function render(values: K = {}, extra: string[] = []): Promise<K[]> {
  const r = await template(values, extra);
  if (!r.ok) throw new Error(`helm template failed:\n${r.out}`);
  return docs(r.out);
}

const find = (objs: K[], kind: string, name?: string): K[] => objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
function one(objs: K[], kind: string, name: string): K {
  const found = find(objs, kind, name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length} among ${objs.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')}`);
  return found[0]!;
}
const container = (workload: K, name: string): K => workload.spec.template.spec.containers.find((c: K) => c.name === name);
const env = (c: K): Record<string, K> => Object.fromEntries((c.env ?? []).map((e: K) => [e.name, e]));
const operatorConfig = (objs: K[], fullname = 'widescan') =>
  parseOperatorConfig(one(objs, 'ConfigMap', `${fullname}-operator`).data['config.yaml'], `rendered ConfigMap ${fullname}-operator`);

/** The combinations a user picks; each is linted, rendered and validated. */
const COMBOS: Record<string, { values: K; extra?: string[] }> = {
  defaults: { values: {} },
  'defaults, cluster with prometheus-operator': { values: {}, extra: MONITORING_API },
  'external Redis by URL': { values: { redis: { external: { url: 'redis://redis.example.org:6379/0' } } } },
  'external Redis from a Secret': { values: { redis: { external: { urlSecret: { name: 'redis-credentials', key: 'url' } } } } },
  'monitoring off': {
    values: { monitoring: { serviceMonitor: { enabled: false }, prometheusRule: { enabled: false }, grafanaDashboard: { enabled: false } } },
    extra: MONITORING_API,
  },
  'GPU pool disabled': { values: { workers: { gpu: { enabled: false } } } },
  'GPU pool enabled': { values: { workers: { gpu: { enabled: true } } } },
  'bootstrap behind a LoadBalancer': { values: { bootstrap: { service: { type: 'LoadBalancer', ipFamilyPolicy: 'PreferDualStack' } } } },
  'CPU only, on labelled nodes': {
    values: {
      workers: {
        gpu: { enabled: false },
        cpu: { nodeSelector: { 'widescan.dev/scanner': 'true' }, tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'scan', effect: 'NoSchedule' }], maxReplicas: 8 },
      },
    },
  },
  'GPU and CPU pools on their own nodes': {
    values: { workers: { gpu: { enabled: true, nodeSelector: { 'nvidia.com/gpu.present': 'true' } }, cpu: { nodeSelector: { 'widescan.dev/scanner': 'cpu' } } } },
  },
  'CRDs managed elsewhere': { values: { crds: { enabled: false } } },
  'namespace created by the chart': { values: { namespace: { create: true, labels: { team: 'scanning' } } } },
  'everything set': {
    values: {
      fullnameOverride: 'scan',
      image: { repository: 'registry.example.org/widescan', tag: '0.1.0-rc1', digest: `sha256:${'a'.repeat(64)}`, pullPolicy: 'Always' },
      imagePullSecrets: [{ name: 'regcred' }],
      crds: { keep: false },
      networkKey: { existingSecret: 'site-network-key', key: 'secret' },
      tokens: { listener: 'l'.repeat(32), admin: 'a'.repeat(32) },
      rbac: { jobSecretNames: ['site-network-key', 'lab-key'] },
      operator: { replicas: 3, logLevel: 'debug', blocklist: ['2001:db8:dead::/48'], leaseName: 'scan-leader', podAnnotations: { 'example.org/team': 'scan' } },
      workers: { env: [{ name: 'UV_THREADPOOL_SIZE', value: '8' }], fallbackAfterSeconds: 30, gpu: { image: 'registry.example.org/widescan-gpu:0.1.0', gpusPerPod: 2 } },
      listener: { answerHellos: false, priorityClassName: 'system-node-critical' },
      bootstrap: {
        trustMode: 'authority',
        authorityKey: { existingSecret: 'authority', key: 'key.pem' },
        trustedProxies: ['10.0.0.0/8', 'loopback'],
        service: { type: 'LoadBalancer', annotations: { 'example.org/lb': 'internal' } },
        podDisruptionBudget: { enabled: false },
      },
      redis: { password: 'correct-horse-battery-staple', persistence: { storageClassName: 'fast', size: '20Gi' } },
      networkPolicy: { hostNetworkPeers: [{ ipBlock: { cidr: '192.0.2.0/24' } }], bootstrapFrom: [{ namespaceSelector: {} }] },
      monitoring: { serviceMonitor: { additionalLabels: { release: 'kube-prometheus-stack' } }, grafanaDashboard: { namespace: 'monitoring' } },
    },
    extra: MONITORING_API,
  },
};

const rendered = new Map<string, K[]>();

beforeAll(async () => {
  helm = await helmBinary();
  // Two at a time: the machine has two cores.
  const names = Object.keys(COMBOS);
  for (let i = 0; i < names.length; i += 2) {
    await Promise.all(names.slice(i, i + 2).map(async (n) => rendered.set(n, await render(COMBOS[n]!.values, COMBOS[n]!.extra))));
  }
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('helm lint and template', () => {
  test.each(Object.keys(COMBOS))('helm lint --strict passes: %s', async (name) => {
    const r = await runHelm(['lint', '--strict', CHART, '--namespace', NS, '-f', valuesFile(COMBOS[name]!.values)]);
    expect(r).toEqual({ ok: true, out: expect.stringContaining('0 chart(s) failed') });
    expect(r.out).not.toMatch(/\[(WARNING|ERROR)\]/);
  });

  test('defaults: every component, with the Pod Security note and the first steps in NOTES', async () => {
    const objs = rendered.get('defaults')!;
    const names = objs.map((o) => `${o.kind}/${o.metadata.name}`).sort();
    expect(names).toEqual(
      [
        'ClusterRole/widescan-operator', 'ClusterRoleBinding/widescan-operator', 'ConfigMap/widescan-dashboard', 'ConfigMap/widescan-operator',
        'CustomResourceDefinition/widescanjobs.widescan.dev', 'DaemonSet/widescan-listener', 'Deployment/widescan-bootstrap', 'Deployment/widescan-operator',
        'NetworkPolicy/widescan-bootstrap', 'NetworkPolicy/widescan-operator', 'NetworkPolicy/widescan-redis',
        'PodDisruptionBudget/widescan-bootstrap', 'PodDisruptionBudget/widescan-operator', 'Role/widescan-operator', 'RoleBinding/widescan-operator',
        'Secret/widescan-network', 'Secret/widescan-redis', 'Secret/widescan-tokens', 'Service/widescan-bootstrap', 'Service/widescan-operator',
        'Service/widescan-redis', 'Service/widescan-redis-headless', 'ServiceAccount/widescan-operator', 'ServiceAccount/widescan-workload', 'StatefulSet/widescan-redis',
      ].sort(),
    );
    // Without the monitoring.coreos.com/v1 API there is nothing to render monitors into.
    expect(find(objs, 'ServiceMonitor')).toHaveLength(0);
    const operator = one(objs, 'Deployment', 'widescan-operator');
    expect(operator.spec.replicas).toBe(2);
    const e = env(container(operator, 'operator'));
    expect(e.WIDESCAN_OWNER_DEPLOYMENT!.value).toBe('widescan-operator');
    expect(e.WIDESCAN_OPERATOR_CONFIG!.value).toBe('/etc/widescan/operator/config.yaml');
    expect(e.POD_NAME!.valueFrom.fieldRef.fieldPath).toBe('metadata.name');
    expect(e.POD_NAMESPACE!.valueFrom.fieldRef.fieldPath).toBe('metadata.namespace');
    expect(e.WIDESCAN_NETWORK_KEY_FILE!.value).toBe('/etc/widescan/network/key');
    expect(e.WIDESCAN_REDIS_URL!.value).toBe('redis://:$(WIDESCAN_REDIS_PASSWORD)@widescan-redis.widescan.svc:6379');
    // $(VAR) expansion only sees variables defined earlier in the list.
    const order = container(operator, 'operator').env.map((v: K) => v.name);
    expect(order.indexOf('WIDESCAN_REDIS_PASSWORD')).toBeLessThan(order.indexOf('WIDESCAN_REDIS_URL'));
    const notes = await runHelm(['install', 'widescan', CHART, '--namespace', NS, '--dry-run=client']);
    expect(notes.ok).toBe(true);
    expect(notes.out).toContain('pod-security.kubernetes.io/enforce=privileged');
    expect(notes.out).toContain('kubectl get wsj');
    expect(notes.out).toContain('port-forward service/widescan-bootstrap 8080:8080');
    expect(notes.out).toContain("get secret widescan-tokens -o jsonpath='{.data.admin}'");
    expect(notes.out).toContain('NetworkPolicy does not apply to these hostNetwork pods');
  });

  test('monitoring: monitors only with the API and when enabled; the dashboard ConfigMap follows its toggle', () => {
    const withApi = rendered.get('defaults, cluster with prometheus-operator')!;
    expect(find(withApi, 'ServiceMonitor').map((o) => o.metadata.name).sort()).toEqual(['widescan-bootstrap', 'widescan-operator']);
    expect(find(withApi, 'PodMonitor')).toHaveLength(1);
    expect(find(withApi, 'PrometheusRule')).toHaveLength(1);
    const off = rendered.get('monitoring off')!;
    for (const kind of ['ServiceMonitor', 'PodMonitor', 'PrometheusRule']) expect(find(off, kind)).toHaveLength(0);
    expect(find(off, 'ConfigMap', 'widescan-dashboard')).toHaveLength(0);
    const all = rendered.get('everything set')!;
    for (const m of [...find(all, 'ServiceMonitor'), ...find(all, 'PodMonitor')]) expect(m.metadata.labels.release).toBe('kube-prometheus-stack');
    expect(one(all, 'ConfigMap', 'scan-dashboard').metadata.namespace).toBe('monitoring');
  });

  test('every Service the monitors select exists with the port they name; pods carry the selector labels', () => {
    const objs = rendered.get('defaults, cluster with prometheus-operator')!;
    for (const sm of find(objs, 'ServiceMonitor')) {
      const selected = find(objs, 'Service').filter((s) => Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => s.metadata.labels[k] === v));
      expect(selected).toHaveLength(1);
      expect(selected[0]!.spec.ports.map((p: K) => p.name)).toContain(sm.spec.endpoints[0].port);
    }
    for (const [kind, name, component, port] of [
      ['Deployment', 'widescan-operator', 'operator', 'metrics'],
      ['Deployment', 'widescan-bootstrap', 'bootstrap', 'http'],
      ['DaemonSet', 'widescan-listener', 'listener', 'metrics'],
      ['StatefulSet', 'widescan-redis', 'redis', 'redis'],
    ] as const) {
      const w = one(objs, kind, name);
      expect(w.spec.template.metadata.labels).toMatchObject({ 'app.kubernetes.io/name': 'widescan', 'app.kubernetes.io/instance': 'widescan', 'app.kubernetes.io/component': component });
      expect(w.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'widescan', 'app.kubernetes.io/instance': 'widescan', 'app.kubernetes.io/component': component });
      expect(w.spec.template.spec.containers[0].ports.map((p: K) => p.name)).toContain(port);
    }
    // The operator warns about nodes with workers and no listener by this selector: it must match the listener pods.
    const selector = operatorConfig(objs).listenerSelector;
    const listenerLabels = one(objs, 'DaemonSet', 'widescan-listener').spec.template.metadata.labels;
    expect(Object.entries(selector).every(([k, v]) => listenerLabels[k] === v)).toBe(true);
  });

  test('external Redis: no StatefulSet, password Secret or Redis NetworkPolicy; every component and the workers get the URL', () => {
    for (const [name, expected] of [
      ['external Redis by URL', { value: 'redis://redis.example.org:6379/0' }],
      ['external Redis from a Secret', { valueFrom: { secretKeyRef: { name: 'redis-credentials', key: 'url' } } }],
    ] as const) {
      const objs = rendered.get(name)!;
      expect(find(objs, 'StatefulSet')).toHaveLength(0);
      expect(find(objs, 'Secret', 'widescan-redis')).toHaveLength(0);
      expect(find(objs, 'NetworkPolicy', 'widescan-redis')).toHaveLength(0);
      expect(find(objs, 'Service').map((s) => s.metadata.name)).not.toContain('widescan-redis');
      for (const [kind, n, c] of [['Deployment', 'widescan-operator', 'operator'], ['Deployment', 'widescan-bootstrap', 'bootstrap'], ['DaemonSet', 'widescan-listener', 'listener']] as const) {
        const e = env(container(one(objs, kind, n), c));
        expect(e.WIDESCAN_REDIS_URL).toEqual({ name: 'WIDESCAN_REDIS_URL', ...expected });
        expect(e.WIDESCAN_REDIS_PASSWORD).toBeUndefined();
      }
      expect(operatorConfig(objs).workerEnv).toEqual([{ name: 'WIDESCAN_REDIS_URL', ...expected }]);
    }
  });

  test('built-in Redis: pinned 7.x image, AOF, noeviction, a password, a PVC, probes', () => {
    const objs = rendered.get('defaults')!;
    const sts = one(objs, 'StatefulSet', 'widescan-redis');
    const c = container(sts, 'redis');
    expect(c.image).toMatch(/^redis:7\.\d+\.\d+/);
    const args = c.args.join(' ');
    expect(args).toContain('--appendonly yes');
    expect(args).toContain('--maxmemory-policy noeviction');
    expect(args).toContain('--requirepass $(REDIS_PASSWORD)');
    expect(env(c).REDIS_PASSWORD!.valueFrom.secretKeyRef).toEqual({ name: 'widescan-redis', key: 'password' });
    expect(sts.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe('8Gi');
    expect(c.volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
    expect(c.readinessProbe.exec.command.join(' ')).toContain('redis-cli');
    expect(c.livenessProbe).toBeDefined();
    expect(sts.spec.serviceName).toBe('widescan-redis-headless');
    expect(one(objs, 'Service', 'widescan-redis-headless').spec.clusterIP).toBe('None');
    // The workers connect the same way as everyone else.
    expect(operatorConfig(objs).workerEnv.map((e) => e.name)).toEqual(['WIDESCAN_REDIS_PASSWORD', 'WIDESCAN_REDIS_URL']);
  });

  test('a bootstrap exposed outside keeps callers\' addresses (announce checks them) and can be dual-stack', () => {
    const lb = one(rendered.get('bootstrap behind a LoadBalancer')!, 'Service', 'widescan-bootstrap').spec;
    expect(lb).toMatchObject({ type: 'LoadBalancer', externalTrafficPolicy: 'Local', ipFamilyPolicy: 'PreferDualStack' });
    const internal = one(rendered.get('defaults')!, 'Service', 'widescan-bootstrap').spec;
    expect(internal.externalTrafficPolicy).toBeUndefined(); // not allowed on ClusterIP
  });

  test('GPU pool disabled / CPU only / both pools on their own nodes: the listener runs where the workers may', () => {
    const gpuOff = rendered.get('GPU pool disabled')!;
    expect(operatorConfig(gpuOff).pools.gpu.enabled).toBe(false);
    const ds = (n: string) => one(rendered.get(n)!, 'DaemonSet', 'widescan-listener').spec.template.spec;
    // CPU pool with no node selector and no tolerations: any node, no GPU toleration.
    expect(ds('GPU pool disabled').affinity).toBeUndefined();
    expect(ds('GPU pool disabled').tolerations).toBeUndefined();
    // The GPU pool is on by default (GPU first, CPU as fallback): defaults place the listener for both pools.
    expect(ds('defaults')).toEqual(ds('GPU pool enabled'));
    expect(operatorConfig(rendered.get('defaults')!).pools.gpu.enabled).toBe(true);
    // With the GPU pool: its toleration (GPU nodes are tainted), and no affinity (the CPU pool may run anywhere).
    expect(ds('GPU pool enabled').tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    expect(ds('GPU pool enabled').affinity).toBeUndefined();
    const cpuOnly = ds('CPU only, on labelled nodes');
    expect(cpuOnly.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([
      { matchExpressions: [{ key: 'widescan.dev/scanner', operator: 'In', values: ['true'] }] },
    ]);
    expect(cpuOnly.tolerations).toEqual([{ key: 'dedicated', operator: 'Equal', value: 'scan', effect: 'NoSchedule' }]);
    const both = ds('GPU and CPU pools on their own nodes');
    expect(both.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([
      { matchExpressions: [{ key: 'nvidia.com/gpu.present', operator: 'In', values: ['true'] }] },
      { matchExpressions: [{ key: 'widescan.dev/scanner', operator: 'In', values: ['cpu'] }] },
    ]);
    const config = operatorConfig(rendered.get('CPU only, on labelled nodes')!);
    expect(config.pools.cpu).toMatchObject({ enabled: true, maxReplicas: 8, nodeSelector: { 'widescan.dev/scanner': 'true' } });
    expect(config.pools.gpu.enabled).toBe(false);
  });

  test('crds.enabled false renders no CRD; namespace.create renders the privileged namespace, kept on uninstall', () => {
    expect(find(rendered.get('CRDs managed elsewhere')!, 'CustomResourceDefinition')).toHaveLength(0);
    expect(find(rendered.get('defaults')!, 'Namespace')).toHaveLength(0);
    const ns = one(rendered.get('namespace created by the chart')!, 'Namespace', NS);
    expect(ns.metadata.labels).toMatchObject({ 'pod-security.kubernetes.io/enforce': 'privileged', team: 'scanning' });
    expect(ns.metadata.annotations['helm.sh/resource-policy']).toBe('keep');
  });

  test('everything set: overrides reach the manifests and the operator config', () => {
    const objs = rendered.get('everything set')!;
    const operator = one(objs, 'Deployment', 'scan-operator');
    const image = `registry.example.org/widescan:0.1.0-rc1@sha256:${'a'.repeat(64)}`;
    expect(container(operator, 'operator').image).toBe(image);
    expect(operator.spec.template.spec.imagePullSecrets).toEqual([{ name: 'regcred' }]);
    expect(env(container(operator, 'operator')).WIDESCAN_LEASE_NAME!.value).toBe('scan-leader');
    expect(operator.spec.template.metadata.annotations['example.org/team']).toBe('scan');
    const config = operatorConfig(objs, 'scan');
    expect(config).toMatchObject({ image, imagePullPolicy: 'Always', imagePullSecrets: [{ name: 'regcred' }], blocklist: ['2001:db8:dead::/48'], fallbackAfterSeconds: 30, serviceAccountName: 'scan-workload' });
    expect(config.pools.gpu).toMatchObject({ image: 'registry.example.org/widescan-gpu:0.1.0', gpusPerPod: 2 });
    expect(config.workerEnv.map((e) => e.name)).toEqual(['WIDESCAN_REDIS_PASSWORD', 'WIDESCAN_REDIS_URL', 'UV_THREADPOOL_SIZE']);
    // Existing network key Secret: none rendered, mounted from the user's.
    expect(find(objs, 'Secret', 'scan-network')).toHaveLength(0);
    expect(operator.spec.template.spec.volumes.find((v: K) => v.name === 'network-key').secret).toMatchObject({ secretName: 'site-network-key', items: [{ key: 'secret', path: 'key' }] });
    const bootstrap = one(objs, 'Deployment', 'scan-bootstrap');
    const be = env(container(bootstrap, 'bootstrap'));
    expect(be.WIDESCAN_TRUST_MODE!.value).toBe('authority');
    expect(be.WIDESCAN_AUTHORITY_KEY_FILE!.value).toBe('/etc/widescan/authority/key.pem');
    expect(be.WIDESCAN_TRUSTED_PROXIES!.value).toBe('10.0.0.0/8,loopback');
    expect(find(objs, 'PodDisruptionBudget', 'scan-bootstrap')).toHaveLength(0);
    expect(one(objs, 'Service', 'scan-bootstrap').spec.type).toBe('LoadBalancer');
    expect(env(container(one(objs, 'DaemonSet', 'scan-listener'), 'listener')).WIDESCAN_ANSWER_HELLOS!.value).toBe('false');
    const crd = one(objs, 'CustomResourceDefinition', 'widescanjobs.widescan.dev');
    expect(crd.metadata.annotations).toBeUndefined();
    expect(one(objs, 'ClusterRole', 'scan-operator').rules.find((r: K) => r.resources[0] === 'secrets').resourceNames).toEqual(['site-network-key', 'lab-key']);
    expect(one(objs, 'NetworkPolicy', 'scan-redis').spec.ingress[0].from).toContainEqual({ ipBlock: { cidr: '192.0.2.0/24' } });
    expect(one(objs, 'NetworkPolicy', 'scan-bootstrap').spec.ingress[0].from).toEqual([{ namespaceSelector: {} }]);
  });
});

describe('values.schema.json', () => {
  const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as K;
  const resolve = (node: K): K => (node.$ref ? { ...resolve(schema.definitions[node.$ref.split('/').pop()]), ...node, $ref: undefined } : node);

  test('every value in values.yaml is typed and documented in the schema', () => {
    const values = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as K;
    const missing: string[] = [];
    const walk = (value: unknown, node: K | undefined, path: string): void => {
      if (!node) return void missing.push(`${path}: not in the schema`);
      const s = resolve(node);
      if (!s.description) missing.push(`${path}: no description`);
      if (!s.type) missing.push(`${path}: no type`);
      // Objects with fixed fields are walked; maps (labels, quantities) and lists are typed as a whole.
      if (value && typeof value === 'object' && !Array.isArray(value) && s.properties) {
        for (const [k, v] of Object.entries(value)) walk(v, s.properties[k], `${path}.${k}`);
      }
    };
    for (const [k, v] of Object.entries(values)) walk(v, schema.properties[k], k);
    expect(missing).toEqual([]);
  });

  test('every object with fields refuses unknown keys', () => {
    const open: string[] = [];
    const walk = (node: unknown, path: string): void => {
      if (!node || typeof node !== 'object') return;
      const n = node as K;
      if (n.properties && n.additionalProperties !== false) open.push(path);
      for (const [k, v] of Object.entries(n)) walk(v, `${path}/${k}`);
    };
    walk(schema, '#');
    expect(open).toEqual([]);
  });

  const REFUSED: [string, K, RegExp][] = [
    ['a string for a number', { workers: { gpu: { maxReplicas: 'four' } } }, /at '\/workers\/gpu\/maxReplicas': got string, want integer/],
    ['an unknown key (typo)', { workers: { gpu: { replicas: 3 } } }, /at '\/workers\/gpu': additional properties 'replicas' not allowed/],
    ['an unknown top-level key', { operater: { replicas: 2 } }, /additional properties 'operater' not allowed/],
    ['a value outside the enum', { bootstrap: { trustMode: 'signed' } }, /at '\/bootstrap\/trustMode': value must be one of 'trustless', 'authority'/],
    ['zero operator replicas', { operator: { replicas: 0 } }, /at '\/operator\/replicas': minimum: got 0, want 1/],
    ['a port out of range', { listener: { metricsPort: 70000 } }, /at '\/listener\/metricsPort': maximum: got 70,?000, want 65,?535/],
    ['a non-Redis URL', { redis: { external: { url: 'http://redis:6379' } } }, /at '\/redis\/external\/url': '.*' does not match pattern/],
    ['a Redis URL with a password (use urlSecret)', { redis: { external: { url: 'redis://:hunter2@redis:6379' } } }, /at '\/redis\/external\/url': '.*' does not match pattern/],
    ['a privileged port for a non-root process', { bootstrap: { port: 80 } }, /at '\/bootstrap\/port': minimum: got 80, want 1,?024/],
    ['a bad quantity', { workers: { cpu: { resources: { requests: { cpu: 'lots' } } } } }, /at '\/workers\/cpu\/resources\/requests\/cpu': 'lots' does not match pattern/],
    ['a bad toleration', { workers: { gpu: { tolerations: [{ key: 'x', operator: 'Maybe' }] } } }, /at '\/workers\/gpu\/tolerations\/0\/operator': value must be one of/],
    ['a bad label key', { workers: { cpu: { nodeSelector: { 'bad key!': 'x' } } } }, /invalid propertyName 'bad key!'/],
    ['min above max', { workers: { cpu: { minReplicas: 5, maxReplicas: 2 } } }, /workers\.cpu\.maxReplicas \(2\) must be ≥ workers\.cpu\.minReplicas \(5\)/],
    ['both pools off', { workers: { gpu: { enabled: false }, cpu: { enabled: false } } }, /both false: no job could run/],
    ['a short token', { tokens: { listener: 'short' } }, /tokens\.listener must be at least 16 characters/],
    ['admin token equal to the listener token', { tokens: { listener: 'x'.repeat(20), admin: 'x'.repeat(20) } }, /tokens\.admin equals tokens\.listener/],
    ['authority mode without a key', { bootstrap: { trustMode: 'authority' } }, /needs bootstrap\.authorityKey\.existingSecret/],
    ['GPUs in resources', { workers: { gpu: { resources: { limits: { 'nvidia.com/gpu': 1 } } } } }, /use workers\.gpu\.gpusPerPod instead/],
    ['an operator-owned worker variable', { workers: { env: [{ name: 'WIDESCAN_HARDWARE', value: 'cpu' }] } }, /workers\.env\[0\]\.name: WIDESCAN_HARDWARE is set by the operator/],
    ['two Redis URLs', { redis: { external: { url: 'redis://a:6379', urlSecret: { name: 'r' } } } }, /keep one/],
    ['clashing host ports', { listener: { metricsPort: 9102 } }, /both 9102: both are host ports/],
    ['an oversized token', { tokens: { listener: 'x'.repeat(5000) } }, /at '\/tokens\/listener': maxLength: got 5,?000, want 4,?096/],
    ['an image with a line break (YAML injection)', { image: { repository: 'widescan\nkind: Secret' } }, /at '\/image\/repository': '.*' does not match pattern/],
  ];
  test.each(REFUSED)('refuses %s, naming the value', async (_what, values, message) => {
    const r = await template(values);
    expect(r.ok).toBe(false);
    expect(r.out).toMatch(message);
  });

  test('values that are free text stay data: line breaks and YAML in them never become manifests', async () => {
    const hostile = 'x\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: injected}';
    const objs = await render({ workers: { env: [{ name: 'NOTE', value: hostile }] }, operator: { podAnnotations: { 'example.org/note': hostile } } });
    expect(objs.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(rendered.get('defaults')!.map((o) => `${o.kind}/${o.metadata.name}`).sort());
    expect(operatorConfig(objs).workerEnv.find((e) => e.name === 'NOTE')!.value).toBe(hostile);
    expect(one(objs, 'Deployment', 'widescan-operator').spec.template.metadata.annotations['example.org/note']).toBe(hostile);
  });

  test('helm install refuses bad values the same way (the schema runs before anything is sent)', async () => {
    const r = await runHelm(['install', 'widescan', CHART, '--namespace', NS, '--dry-run=client', '--set', 'operator.replicas=zero']);
    expect(r.ok).toBe(false);
    expect(r.out).toMatch(/at '\/operator\/replicas': got string, want integer/);
  });
});

describe('the CRD', () => {
  const top = readFileSync(join(repo, 'crds/widescanjobs.widescan.dev.yaml'), 'utf8');

  test('charts/widescan/files/crd.yaml is byte-identical to crds/ and to what gen:crd writes', () => {
    const copy = readFileSync(join(CHART, 'files/crd.yaml'), 'utf8');
    const fix = 'run `npm run gen:crd` (it writes both files)';
    expect({ identical: copy === top, fix }).toEqual({ identical: true, fix });
    expect({ identical: copy === crdYaml(), fix }).toEqual({ identical: true, fix });
  });

  test('the rendered CRD is the file with only the chart labels and the keep annotation added', async () => {
    const objs = rendered.get('defaults')!;
    const crd = one(objs, 'CustomResourceDefinition', 'widescanjobs.widescan.dev');
    expect(crd.metadata.annotations).toEqual({ 'helm.sh/resource-policy': 'keep' });
    expect(crd.metadata.labels['app.kubernetes.io/name']).toBe('widescan');
    const { labels: _l, annotations: _a, ...meta } = crd.metadata;
    expect({ ...crd, metadata: meta }).toEqual(parse(top));
    // Text too: every line of the file is in the output, in order, unchanged.
    const out = (await template()).out;
    const start = out.indexOf(top.split('\n')[0]!);
    const section = out.slice(start, out.indexOf('\n---', start) === -1 ? undefined : out.indexOf('\n---', start));
    const inserted = /^ {2}(annotations|labels):\n(?: {4}.*\n)+/gm;
    expect(section.replace(inserted, '').trimEnd()).toBe(top.trimEnd());
  });
});

// ---- Kubernetes OpenAPI validation ----

interface Model {
  validate(): void;
}
type ModelClass = new (data: K) => Model;

/**
 * kubernetes-models ships the Kubernetes OpenAPI schemas (1.34) as compiled validators, one class per kind; the
 * prometheus-operator package does the same for its CRDs. A devDependency: the message says how to add it.
 */
const models = new Map<string, ModelClass>();
async function modelFor(apiVersion: string, kind: string): Promise<ModelClass> {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  const pkg = group === 'monitoring.coreos.com' ? `@kubernetes-models/prometheus-operator/${group}` : `kubernetes-models/${group ? `${group}/` : ''}`;
  const spec = group === 'monitoring.coreos.com' ? `${pkg}/${version}/${kind}` : `${pkg}${version}/${kind}`;
  const cached = models.get(spec);
  if (cached) return cached;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(spec)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`cannot load the validator ${spec} (${(err as Error).message}); install the devDependencies: npm install --save-dev kubernetes-models @kubernetes-models/prometheus-operator`);
  }
  models.set(spec, mod[kind] as ModelClass);
  return mod[kind] as ModelClass;
}

/** What the OpenAPI schemas cannot say (they allow unknown fields; the API server's strict field validation does not). */
function unknownFields(obj: unknown, type: string, path: string, out: string[]): void {
  if (obj === null || obj === undefined || type === 'any' || type === 'object') return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(obj)) obj.forEach((v, i) => unknownFields(v, array[1]!, `${path}[${i}]`, out));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    for (const [k, v] of Object.entries(obj as K)) unknownFields(v, map[1]!, `${path}.${k}`, out);
    return;
  }
  if (['string', 'number', 'boolean', 'Date', 'IntOrString'].includes(type)) return;
  const cls = (k8s as unknown as Record<string, { getAttributeTypeMap?: () => { baseName: string; type: string }[] }>)[type];
  if (!cls?.getAttributeTypeMap) return void out.push(`${path}: no field list for type ${type}`);
  const fields = new Map(cls.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(obj as K)) {
    const t = fields.get(k);
    if (t === undefined) out.push(`${path}.${k}: unknown field of ${type}`);
    else unknownFields(v, t, `${path}.${k}`, out);
  }
}

async function validateManifest(o: K): Promise<string[]> {
  const problems: string[] = [];
  if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') return [`${JSON.stringify(o).slice(0, 80)}: no apiVersion/kind`];
  const where = `${o.kind}/${o.metadata?.name}`;
  const Model = await modelFor(o.apiVersion, o.kind);
  if (!Model) return [`${where}: no schema for ${o.apiVersion} ${o.kind}`];
  try {
    new Model(o).validate();
  } catch (err) {
    problems.push(`${where}: ${(err as Error).message}`);
  }
  if (!o.apiVersion.startsWith('monitoring.coreos.com/')) {
    const out: string[] = [];
    unknownFields(o, `V1${o.kind}`, where, out);
    problems.push(...out);
  }
  return problems;
}

describe('every rendered manifest against the Kubernetes OpenAPI schemas', () => {
  test.each(Object.keys(COMBOS))('%s', async (name) => {
    const objs = rendered.get(name)!;
    expect(objs.length).toBeGreaterThan(15);
    // One at a time: jest's module loader fails concurrent first imports of the same module.
    const problems: string[] = [];
    for (const o of objs) problems.push(...(await validateManifest(o)));
    expect(problems).toEqual([]);
  });

  test('the validation catches what the API server would refuse', async () => {
    const objs = rendered.get('defaults')!;
    const deployment = structuredClone(one(objs, 'Deployment', 'widescan-operator'));
    deployment.spec.replicas = 'two';
    deployment.spec.template.spec.containers[0].securityContext.capabilities.drop = 'ALL';
    deployment.spec.template.spec.containers[0].imagePullPolicy = 'Sometimes';
    deployment.spec.template.spec.hostNetwerk = true;
    const problems = (await validateManifest(deployment)).join('\n');
    expect(problems).toContain('/spec/replicas must be integer');
    expect(problems).toContain('capabilities/drop must be array');
    expect(problems).toContain('imagePullPolicy must be equal to one of the allowed values');
    expect(problems).toContain('spec.template.spec.hostNetwerk: unknown field of V1PodSpec');
    const crd = structuredClone(one(objs, 'CustomResourceDefinition', 'widescanjobs.widescan.dev'));
    delete crd.spec.names.plural;
    expect((await validateManifest(crd)).join('\n')).toContain('spec/names must have required property plural');
    const cm = structuredClone(one(objs, 'ConfigMap', 'widescan-operator'));
    cm.data['config.yaml'] = 42;
    expect((await validateManifest(cm)).join('\n')).toContain('/data/config.yaml must be string');
  });
});

// ---- RBAC against the operator's code ----

/** client-node method → verb; `Status` at the end addresses the status subresource. */
const VERBS: Record<string, string> = { list: 'list', read: 'get', create: 'create', patch: 'patch', replace: 'update', delete: 'delete' };
/** The kinds the operator's typed clients address, and their API group and resource. */
const RESOURCES: Record<string, [string, string]> = {
  Secret: ['', 'secrets'],
  Event: ['', 'events'],
  Pod: ['', 'pods'],
  Deployment: ['apps', 'deployments'],
  Lease: ['coordination.k8s.io', 'leases'],
  CustomObject: [GROUP, PLURAL],
};

/** The first argument list of a call starting at `open` (the index of its parenthesis). */
function callArgs(text: string, open: number): string {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '(') depth++;
    else if (text[i] === ')' && --depth === 0) return text.slice(open + 1, i);
  }
  throw new Error(`unbalanced call at ${open}`);
}

/**
 * Every Kubernetes API permission the operator's code needs, as `scope group resource verb`. Scope: `cluster`
 * for cluster-wide lists and for calls in a job's namespace (obj.metadata.namespace), else `namespace` (the
 * operator's own). A list feeding an informer (`list: () => …`) is followed by a watch of the same collection.
 */
function operatorPermissions(): { perms: Set<string>; calls: string[] } {
  const perms = new Set<string>();
  const calls: string[] = [];
  for (const file of readdirSync(join(repo, 'operator')).filter((f) => f.endsWith('.ts'))) {
    const text = readFileSync(join(repo, 'operator', file), 'utf8');
    for (const m of text.matchAll(/\.(list|read|create|patch|replace|delete)(Namespaced|Cluster)([A-Z][A-Za-z]*?)(Status)?\(/g)) {
      const [call, method, where, kind, status] = m as unknown as [string, string, string, string, string | undefined];
      calls.push(`${file}: ${call}`);
      const resource = RESOURCES[kind];
      if (!resource) throw new Error(`${file}: ${call}) addresses ${kind}, which this test does not know: add it to RESOURCES with its group and resource`);
      const args = callArgs(text, m.index! + call.length - 1);
      if (kind === 'CustomObject' && !(/group: GROUP\b/.test(args) && /plural: PLURAL\b/.test(args)))
        throw new Error(`${file}: ${call}) on a custom resource other than ${GROUP}/${PLURAL}: add it to this test`);
      const scope = where === 'Cluster' || /obj\.metadata\.namespace/.test(args) ? 'cluster' : 'namespace';
      const res = `${resource[0]} ${resource[1]}${status ? '/status' : ''}`;
      perms.add(`${scope} ${res} ${VERBS[method]}`);
      if (method === 'list' && /list:\s*\(\)\s*=>\s*$/.test(text.slice(Math.max(0, m.index! - 80), m.index).replace(/this\.\w+$/, ''))) perms.add(`${scope} ${res} watch`);
    }
  }
  return { perms, calls };
}

function chartPermissions(objs: K[]): Set<string> {
  const perms = new Set<string>();
  for (const [kind, scope] of [['ClusterRole', 'cluster'], ['Role', 'namespace']] as const) {
    for (const role of find(objs, kind)) {
      for (const rule of role.rules) {
        for (const g of rule.apiGroups) for (const r of rule.resources) for (const v of rule.verbs) perms.add(`${scope} ${g} ${r} ${v}`);
      }
    }
  }
  return perms;
}

describe('RBAC: exactly what the operator calls', () => {
  test('the Role and ClusterRole grant exactly the API calls in operator/*.ts', () => {
    const { perms, calls } = operatorPermissions();
    // The scan found the calls this test was written against (a broken regex would find none).
    expect(calls.length).toBeGreaterThanOrEqual(13);
    expect([...perms].sort()).toEqual(
      [
        'cluster widescan.dev widescanjobs list', 'cluster widescan.dev widescanjobs watch', 'cluster widescan.dev widescanjobs patch',
        'cluster widescan.dev widescanjobs delete', 'cluster widescan.dev widescanjobs/status patch', 'cluster  secrets get', 'cluster  events create',
        'namespace  pods list', 'namespace  pods watch', 'namespace apps deployments get', 'namespace apps deployments create',
        'namespace apps deployments update', 'namespace apps deployments patch', 'namespace coordination.k8s.io leases get', 'namespace coordination.k8s.io leases create',
        'namespace coordination.k8s.io leases update',
      ].sort(),
    );
    for (const name of Object.keys(COMBOS)) {
      const granted = chartPermissions(rendered.get(name)!);
      expect({ name, missing: [...perms].filter((p) => !granted.has(p)), extra: [...granted].filter((p) => !perms.has(p)) }).toEqual({ name, missing: [], extra: [] });
    }
  });

  test('names are pinned where Kubernetes allows it, and only the operator is bound', () => {
    const objs = rendered.get('defaults')!;
    const cluster = one(objs, 'ClusterRole', 'widescan-operator');
    expect(cluster.rules.find((r: K) => r.resources.includes('secrets')).resourceNames).toEqual(['widescan-network']);
    const role = one(objs, 'Role', 'widescan-operator');
    const named = (resource: string, verb: string) => role.rules.find((r: K) => r.resources.includes(resource) && r.verbs.includes(verb)).resourceNames;
    const e = env(container(one(objs, 'Deployment', 'widescan-operator'), 'operator'));
    expect(named('deployments', 'get').sort()).toEqual([poolDeploymentName('gpu'), poolDeploymentName('cpu'), e.WIDESCAN_OWNER_DEPLOYMENT!.value].sort());
    expect(named('deployments', 'update').sort()).toEqual([poolDeploymentName('gpu'), poolDeploymentName('cpu')].sort());
    expect(named('deployments', 'patch').sort()).toEqual([poolDeploymentName('gpu'), poolDeploymentName('cpu')].sort());
    expect(named('leases', 'update')).toEqual([e.WIDESCAN_LEASE_NAME!.value]);
    expect(named('deployments', 'create')).toBeUndefined(); // create cannot be restricted by name
    const subjects = [...find(objs, 'RoleBinding'), ...find(objs, 'ClusterRoleBinding')].flatMap((b) => b.subjects);
    expect(subjects).toEqual([
      { kind: 'ServiceAccount', name: 'widescan-operator', namespace: NS },
      { kind: 'ServiceAccount', name: 'widescan-operator', namespace: NS },
    ]);
    for (const [kind, name] of [['Deployment', 'widescan-bootstrap'], ['DaemonSet', 'widescan-listener'], ['StatefulSet', 'widescan-redis']] as const) {
      const spec = one(objs, kind, name).spec.template.spec;
      expect({ name, sa: spec.serviceAccountName, token: spec.automountServiceAccountToken }).toEqual({ name, sa: 'widescan-workload', token: false });
    }
    expect(operatorConfig(objs).serviceAccountName).toBe('widescan-workload');
  });
});

describe('pods: security, probes, resources', () => {
  const workloads = (objs: K[]) => objs.filter((o) => ['Deployment', 'DaemonSet', 'StatefulSet'].includes(o.kind));

  test('hardened securityContexts: non-root where possible, raw-socket pods with only NET_RAW', () => {
    for (const name of ['defaults', 'everything set']) {
      for (const w of workloads(rendered.get(name)!)) {
        const pod = w.spec.template.spec;
        for (const c of pod.containers) {
          const sc = c.securityContext;
          const where = `${w.kind}/${w.metadata.name}/${c.name}`;
          expect({ where, ape: sc.allowPrivilegeEscalation, ro: sc.readOnlyRootFilesystem, seccomp: sc.seccompProfile?.type ?? pod.securityContext.seccompProfile.type, drop: sc.capabilities.drop }).toEqual({
            where, ape: false, ro: true, seccomp: 'RuntimeDefault', drop: ['ALL'],
          });
          const component = w.spec.template.metadata.labels['app.kubernetes.io/component'];
          if (component === 'listener') {
            expect(sc).toMatchObject({ runAsUser: 0, runAsNonRoot: false, capabilities: { add: ['NET_RAW'] } });
            expect(pod).toMatchObject({ hostNetwork: true, dnsPolicy: 'ClusterFirstWithHostNet' });
          } else {
            expect({ where, add: sc.capabilities.add, nonRoot: sc.runAsNonRoot ?? pod.securityContext.runAsNonRoot, host: pod.hostNetwork }).toEqual({ where, add: undefined, nonRoot: true, host: undefined });
            expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
          }
          expect(c.resources.requests).toEqual(expect.objectContaining({ cpu: expect.any(String), memory: expect.any(String) }));
          expect({ where, liveness: !!c.livenessProbe, readiness: !!c.readinessProbe }).toEqual({ where, liveness: true, readiness: true });
        }
      }
    }
  });

  test('PodDisruptionBudgets select the operator and bootstrap pods; the config checksum follows the config', async () => {
    const objs = rendered.get('defaults')!;
    for (const c of ['operator', 'bootstrap']) {
      const pdb = one(objs, 'PodDisruptionBudget', `widescan-${c}`);
      expect(pdb.spec.selector.matchLabels).toEqual(one(objs, 'Deployment', `widescan-${c}`).spec.selector.matchLabels);
      expect(pdb.spec.maxUnavailable).toBe(1);
    }
    const checksum = (o: K[]) => one(o, 'Deployment', 'widescan-operator').spec.template.metadata.annotations['checksum/config'];
    const config = one(objs, 'ConfigMap', 'widescan-operator').data['config.yaml'];
    expect(checksum(objs)).toBe(createHash('sha256').update(config.replace(/\n$/, '')).digest('hex'));
    expect(checksum(await render({ operator: { window: 32 } }))).not.toBe(checksum(objs));
  });

  test('NetworkPolicies: Redis from widescan pods and the hosts, the bootstrap on its port, the operator on metrics', () => {
    const objs = rendered.get('defaults')!;
    const redis = one(objs, 'NetworkPolicy', 'widescan-redis').spec;
    expect(redis.podSelector.matchLabels['app.kubernetes.io/component']).toBe('redis');
    expect(redis.ingress).toHaveLength(1);
    expect(redis.ingress[0].ports).toEqual([{ port: 'redis', protocol: 'TCP' }]);
    expect(redis.ingress[0].from[0]).toEqual({ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'widescan', 'app.kubernetes.io/instance': 'widescan' } } });
    expect(one(objs, 'NetworkPolicy', 'widescan-bootstrap').spec.ingress).toEqual([{ ports: [{ port: 'http', protocol: 'TCP' }] }]);
    expect(one(objs, 'NetworkPolicy', 'widescan-operator').spec.ingress).toEqual([{ ports: [{ port: 'metrics', protocol: 'TCP' }] }]);
  });
});

describe('generated Secrets', () => {
  const secretData = (objs: K[], name: string) => Object.fromEntries(Object.entries(one(objs, 'Secret', name).data as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]));

  test('generated when not given (random, 48 characters), given values used verbatim, all kept on uninstall', async () => {
    const a = rendered.get('defaults')!;
    const b = await render();
    const tokens = secretData(a, 'widescan-tokens');
    expect(tokens.listener).toMatch(/^[A-Za-z0-9]{48}$/);
    expect(tokens.admin).toMatch(/^[A-Za-z0-9]{48}$/);
    expect(tokens.admin).not.toBe(tokens.listener);
    expect(secretData(b, 'widescan-tokens').listener).not.toBe(tokens.listener);
    expect(secretData(a, 'widescan-network').key).toMatch(/^[A-Za-z0-9]{64}$/);
    expect(secretData(a, 'widescan-redis').password).toMatch(/^[A-Za-z0-9]{40}$/);
    for (const s of find(a, 'Secret')) expect(s.metadata.annotations['helm.sh/resource-policy']).toBe('keep');
    const given = rendered.get('everything set')!;
    expect(secretData(given, 'scan-tokens')).toEqual({ listener: 'l'.repeat(32), admin: 'a'.repeat(32) });
    expect(secretData(given, 'scan-redis').password).toBe('correct-horse-battery-staple');
  });

  describe('against the in-process API server (helm template --dry-run=server runs lookup there)', () => {
    let srv: ApiServer;
    beforeAll(async () => {
      srv = await startApiServer({ tls: true });
      srv.store.create(srv.store.type('', 'namespaces'), 'v1', '', { metadata: { name: NS } });
      // Helm maps every rendered kind through discovery before it renders anything out. The test server has no
      // RBAC, policy, networking or StatefulSet types: schemaless stand-in CRDs give them a REST mapping.
      const crds = srv.store.type('apiextensions.k8s.io', 'customresourcedefinitions');
      for (const [group, kind, scope] of [
        ['rbac.authorization.k8s.io', 'ClusterRole', 'Cluster'], ['rbac.authorization.k8s.io', 'ClusterRoleBinding', 'Cluster'],
        ['rbac.authorization.k8s.io', 'Role', 'Namespaced'], ['rbac.authorization.k8s.io', 'RoleBinding', 'Namespaced'],
        ['apps', 'StatefulSet', 'Namespaced'], ['policy', 'PodDisruptionBudget', 'Namespaced'], ['networking.k8s.io', 'NetworkPolicy', 'Namespaced'],
      ]) {
        const plural = `${kind.toLowerCase()}s`.replace(/ys$/, 'ies');
        srv.store.create(crds, 'v1', '', {
          metadata: { name: `${plural}.${group}` },
          spec: {
            group, scope, names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
            versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } } }],
          },
        });
      }
    });
    afterAll(async () => {
      await srv?.close();
    });

    /** Async helm: the API server runs in this process, a synchronous child would deadlock it. */
    const templateOnServer = (values: K = {}) => runHelm(['template', 'widescan', CHART, '--namespace', NS, '--kubeconfig', srv.kubeconfig, '--dry-run=server', '-f', valuesFile(values)]);

    test('existing Secrets keep their values; missing keys and Secrets are generated', async () => {
      const b64 = (s: string) => Buffer.from(s).toString('base64');
      const secrets = srv.store.type('', 'secrets');
      // As an earlier install of the release left them (resource-policy keep): owned by the release, so Helm adopts them.
      const metadata = (name: string) => ({
        name,
        labels: { 'app.kubernetes.io/managed-by': 'Helm' },
        annotations: { 'meta.helm.sh/release-name': 'widescan', 'meta.helm.sh/release-namespace': NS },
      });
      srv.store.create(secrets, 'v1', NS, { metadata: metadata('widescan-tokens'), data: { listener: b64('existing-listener-token-0001'), admin: b64('existing-admin-token-000002') } });
      // A Secret missing one key: that key alone is generated.
      srv.store.create(secrets, 'v1', NS, { metadata: metadata('widescan-redis'), data: { other: b64('x') } });
      const r = await templateOnServer();
      expect(r.ok).toBe(true);
      const objs = docs(r.out);
      expect(secretData(objs, 'widescan-tokens')).toEqual({ listener: 'existing-listener-token-0001', admin: 'existing-admin-token-000002' });
      expect(secretData(objs, 'widescan-redis').password).toMatch(/^[A-Za-z0-9]{40}$/);
      expect(secretData(objs, 'widescan-network').key).toMatch(/^[A-Za-z0-9]{64}$/);
      // A value given explicitly still wins over the cluster's.
      const given = docs((await templateOnServer({ tokens: { admin: 'rotated-admin-token-00003' } })).out);
      expect(secretData(given, 'widescan-tokens')).toEqual({ listener: 'existing-listener-token-0001', admin: 'rotated-admin-token-00003' });
    });

    test('the cluster capabilities come from discovery: no monitoring.coreos.com/v1 there, so no monitors', async () => {
      const objs = docs((await templateOnServer()).out);
      expect(find(objs, 'ServiceMonitor')).toHaveLength(0);
      expect(find(objs, 'Deployment', 'widescan-operator')).toHaveLength(1);
    });
  });
});

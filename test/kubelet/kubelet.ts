// A test "kubelet" for the in-process API server (test/apiserver/server.ts): it registers Nodes, runs
// minimal Deployment and DaemonSet controllers and a scheduler, and runs bound pods as local processes of
// the widescan image entrypoint, so the operator's end-to-end tests see their pods behave as on a cluster.
// Kubernetes itself cannot run on the test machines (no container engine).
//
// It talks to the API server only through @kubernetes/client-node, by polling: every pass lists nodes,
// pods, Deployments and DaemonSets (every `pollMs`, at once again after a pass that wrote something). Each
// pass so works on one consistent snapshot, so the controllers need none of the "expectations" bookkeeping
// a watch cache requires to not create a pod twice.
//
// The container image contract: every container runs `node dist/cli/entrypoint.js`, whose first argument
// (the container's command, then args) picks the component; the container `image` is ignored. Not
// modelled: init containers, exec probes (an exec readinessProbe counts as passing), per-pod network
// namespaces (pods that are not hostNetwork share the host's network, so two replicas listening on one fixed
// port collide), Events, ReplicaSets (pods are owned by the Deployment directly), StatefulSets.
//
// Volumes: configMap and secret volumes are written into a per-pod directory, and since the processes share
// the host's file system, every env value, command and argument that names a path under such a mountPath is
// rewritten to that directory. emptyDir and other volumes are not materialized (an emptyDir's mountPath,
// e.g. /tmp, is left as the host's).
//
// Termination messages: each container run gets an empty file of its own in the pod's directory for its
// terminationMessagePath (default /dev/termination-log), rewritten in env, command and args like a mount path,
// so that no process writes the host's /dev. Code that writes a fixed path cannot be rewritten: the run also
// gets TERMINATION_LOG_ENV naming the path (rewritten to the file), for the image to honour. At exit the file's
// last 4 KiB become `terminated.message`; with terminationMessagePolicy FallbackToLogsOnError, an empty file
// and a non-zero exit code, the run's last 80 lines of output (at most its last 2 KiB) do, as on the kubelet.
//
// Services, for nodes with a network namespace (the stand-in for cluster DNS and kube-proxy): the node's
// hostNetwork pods resolve `<svc>.<ns>.svc[.cluster.local]` to ::1 through /etc/netns/<netns>/hosts (which
// `ip netns exec` mounts over /etc/hosts), where a relay inside the namespace listens on the Service port and
// forwards each connection, over a Unix socket, to a ready endpoint pod on the host network. Services are told
// apart by port alone, so two with one port collide (the relay's error shows in errors()).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, closeSync, constants as fsConstants, existsSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmdirSync, rmSync,
  writeFileSync,
} from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { netnsExecArgs } from '../../testbed/lab.js';

export interface KubeletNode {
  name: string;
  labels?: Record<string, string>;
  taints?: k8s.V1Taint[];
  /** Extra or overriding capacity, e.g. `{ 'nvidia.com/gpu': '1' }`; allocatable equals capacity. */
  capacity?: Record<string, string>;
  /** A lab network namespace (`<lab>-scan`): this node's hostNetwork pods and their probes run inside it. */
  netns?: string;
  /** The node's InternalIP, also every pod's hostIP/podIP and the default probe host (default `::1`). */
  address?: string;
}

export interface KubeletOptions {
  kubeconfig: string;
  nodes: KubeletNode[];
  /** Extra environment of every container process (below the container's own env). */
  env?: Record<string, string>;
  /** The image entrypoint (default: <repo>/dist/cli/entrypoint.js; `npm run build` makes it). */
  entrypoint?: string;
  /** Pause between passes when nothing changed (default 200 ms). */
  pollMs?: number;
  /** CrashLoopBackOff: first delay and cap (defaults 10 s and 300 s, as the real kubelet). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Upper bound on a pod's terminationGracePeriodSeconds (default: none; the pods' default is 30 s). */
  maxGraceMs?: number;
  /** Readiness probe period for every probe, instead of its periodSeconds (default 10 s); at least 1 s. */
  probePeriodMs?: number;
  /** Bytes of stdout+stderr kept per pod (default 200 KiB; older output is dropped). */
  logLimitBytes?: number;
}

export interface Kubelet {
  /** Names of the nodes this kubelet runs. */
  nodes(): string[];
  /** Pod name → pid of its first container's running process. */
  processes(): Map<string, number>;
  /** The pod's captured stdout+stderr (all its containers, all restarts), the last logLimitBytes of it. */
  logs(podName: string): string;
  /** The environment the pod's first container was last started with, or undefined. */
  env(podName: string): Record<string, string> | undefined;
  /** Registers one more node (e.g. GPU capacity appearing); pending pods may then be scheduled on it. */
  addNode(node: KubeletNode): Promise<void>;
  /** Stops a node's pods, deletes the pods bound to it (like the pod garbage collector) and its Node. */
  removeNode(name: string): Promise<void>;
  /** Resolves after a full pass that started after the call. */
  sync(): Promise<void>;
  /** Errors the passes met (API failures other than 404/409), the latest 50, for test diagnostics. */
  errors(): string[];
  /** SIGTERM every process, SIGKILL after the grace period, and wait until all have exited. */
  stop(opts?: { graceMs?: number }): Promise<void>;
}

type Json = Record<string, unknown>;

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const DEFAULT_ENTRYPOINT = `${REPO}dist/cli/entrypoint.js`;
const DEFAULT_CAPACITY: Record<string, string> = { cpu: '8', memory: '16Gi', pods: '110', 'ephemeral-storage': '100Gi' };
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const TAINT_EFFECTS = ['NoSchedule', 'PreferNoSchedule', 'NoExecute'];
const MAX_ERRORS = 50;
const CREATE_RETRY_MS = 1000;
/** The stand-in for the termination message file mount: set on every container run, naming its file. */
export const TERMINATION_LOG_ENV = 'WIDESCAN_TERMINATION_LOG';
const DEFAULT_TERMINATION_MESSAGE_PATH = '/dev/termination-log';
// The kubelet's limits: MaxContainerTerminationMessageLength, …LogLength and …LogLines.
const TERMINATION_MESSAGE_BYTES = 4096;
const TERMINATION_LOG_BYTES = 2048;
const TERMINATION_LOG_LINES = 80;
/** How long an exited container's output may take to drain before its status is written without the rest. */
const DRAIN_MS = 1000;
// The tolerations the real DaemonSet controller adds to every daemon pod.
const DAEMON_TOLERATIONS: k8s.V1Toleration[] = [
  { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute' },
  { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute' },
  { key: 'node.kubernetes.io/disk-pressure', operator: 'Exists', effect: 'NoSchedule' },
  { key: 'node.kubernetes.io/memory-pressure', operator: 'Exists', effect: 'NoSchedule' },
  { key: 'node.kubernetes.io/pid-pressure', operator: 'Exists', effect: 'NoSchedule' },
  { key: 'node.kubernetes.io/unschedulable', operator: 'Exists', effect: 'NoSchedule' },
];

const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
const iso = (d: Date | string | undefined): string | undefined =>
  d === undefined ? undefined : (d instanceof Date ? d.toISOString() : d).replace(/\.\d{3}Z$/, 'Z');
const millis = (d: Date | string | undefined): number => (d === undefined ? 0 : new Date(d).getTime());

// ---------- pure helpers (exported for tests) ----------

const QUANTITY = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$/;
const SUFFIX: Record<string, number> = {
  '': 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A Kubernetes resource quantity ("100m", "1Gi", "2", "1e3") in thousandths, so "100m" of cpu is 100. */
export function parseQuantity(q: string | number): number {
  const text = String(q).trim();
  const m = text.match(QUANTITY);
  if (!m) throw new Error(`${JSON.stringify(String(q).slice(0, 40))} is not a resource quantity (e.g. "1", "500m", "2Gi")`);
  const suffix = m[2] ?? '';
  const scale = /^[eE]/.test(suffix) ? 10 ** Number(suffix.slice(1)) : SUFFIX[suffix]!;
  return Math.round(Number(m[1]) * scale * 1000);
}

/**
 * Kubernetes' `$(VAR)` references in env values, command and args: a defined variable is substituted,
 * `$$` is a literal `$`, anything else stays as written.
 */
export function expandEnvRefs(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (all, name: string | undefined) =>
    name === undefined ? '$' : Object.prototype.hasOwnProperty.call(env, name) ? env[name]! : all,
  );
}

/**
 * Rewrites a path under one of `mounts` (mountPath → host directory) to the host directory; the longest
 * mountPath wins. Anything else comes back unchanged.
 */
export function remapPath(text: string, mounts: Map<string, string>): string {
  let best: string | undefined;
  for (const m of mounts.keys()) {
    if ((text === m || text.startsWith(m.endsWith('/') ? m : `${m}/`)) && (best === undefined || m.length > best.length)) best = m;
  }
  return best === undefined ? text : mounts.get(best)! + text.slice(best.length);
}

/**
 * The termination message a container run left: the last TERMINATION_MESSAGE_BYTES of `file` (a plain file
 * only: a FIFO or device put in its place reads as empty, a symlink is not followed), else, with
 * FallbackToLogsOnError and a non-zero exit code, the last TERMINATION_LOG_LINES lines of `output`. Empty
 * when there is none.
 */
function terminationMessage(file: string, policy: string | undefined, exitCode: number, output: string): string {
  let message = '';
  let fd: number | undefined;
  try {
    // Non-blocking, so that a FIFO left at the path cannot hang the kubelet.
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW);
    const st = fstatSync(fd);
    if (st.isFile() && st.size > 0) {
      const length = Math.min(st.size, TERMINATION_MESSAGE_BYTES);
      const buf = Buffer.alloc(length);
      const n = readSync(fd, buf, 0, length, st.size - length);
      message = buf.subarray(0, n).toString('utf8');
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') message = `Error on reading termination log ${file}: ${(e as Error).message}`;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (message === '' && policy === 'FallbackToLogsOnError' && exitCode !== 0) {
    const lines = output.split('\n');
    // A trailing newline ends the last line; it does not start one more.
    const keep = TERMINATION_LOG_LINES + (lines.at(-1) === '' ? 1 : 0);
    message = lines.slice(-keep).join('\n');
  }
  return message;
}

/** The scheduler's FailedScheduling message, e.g. "0/2 nodes are available: 2 Insufficient nvidia.com/gpu." */
export function unschedulableMessage(nodeCount: number, reasons: Map<string, number>): string {
  if (nodeCount === 0) return 'no nodes available to schedule pods';
  const parts = [...reasons].map(([reason, n]) => `${n} ${reason}`).sort();
  return `0/${nodeCount} nodes are available: ${parts.join(', ')}.`;
}

function labelsMatch(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
}

function requirementMatches(r: k8s.V1NodeSelectorRequirement, value: string | undefined): boolean {
  const values = r.values ?? [];
  switch (r.operator) {
    case 'In':
      return value !== undefined && values.includes(value);
    case 'NotIn':
      return value === undefined || !values.includes(value);
    case 'Exists':
      return value !== undefined;
    case 'DoesNotExist':
      return value === undefined;
    case 'Gt':
      return value !== undefined && Number(value) > Number(values[0]);
    case 'Lt':
      return value !== undefined && Number(value) < Number(values[0]);
    default:
      return false;
  }
}

/** nodeSelector and required node affinity (label expressions, and matchFields on metadata.name). */
function nodeMatches(spec: k8s.V1PodSpec, node: k8s.V1Node): boolean {
  const labels = node.metadata?.labels ?? {};
  if (!labelsMatch(spec.nodeSelector, labels)) return false;
  const terms = spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms;
  if (!terms?.length) return true;
  return terms.some((t) => {
    const exprs = t.matchExpressions ?? [];
    const fields = t.matchFields ?? [];
    if (!exprs.length && !fields.length) return false;
    return (
      exprs.every((r) => requirementMatches(r, labels[r.key])) &&
      fields.every((r) => requirementMatches(r, r.key === 'metadata.name' ? node.metadata?.name : undefined))
    );
  });
}

function tolerates(tol: k8s.V1Toleration, taint: k8s.V1Taint): boolean {
  if (tol.effect && tol.effect !== taint.effect) return false;
  if (tol.operator === 'Exists') return !tol.key || tol.key === taint.key;
  return tol.key === taint.key && (tol.value ?? '') === (taint.value ?? '');
}

function untoleratedTaint(spec: k8s.V1PodSpec, node: k8s.V1Node): k8s.V1Taint | undefined {
  return (node.spec?.taints ?? []).find(
    (t) => (t.effect === 'NoSchedule' || t.effect === 'NoExecute') && !(spec.tolerations ?? []).some((tol) => tolerates(tol, t)),
  );
}

/** What a pod asks for, per resource in thousandths; a limit without a request counts as the request. */
function podRequests(spec: k8s.V1PodSpec): Map<string, number> {
  const out = new Map<string, number>();
  for (const c of spec.containers ?? []) {
    const req = c.resources?.requests ?? {};
    const lim = c.resources?.limits ?? {};
    for (const name of new Set([...Object.keys(req), ...Object.keys(lim)])) {
      out.set(name, (out.get(name) ?? 0) + parseQuantity(req[name] ?? lim[name]!));
    }
  }
  return out;
}

/** A stable short hash of a pod template (the pod-template-hash / controller-revision-hash label). */
function templateHash(template: k8s.V1PodTemplateSpec | undefined): string {
  return createHash('sha256').update(JSON.stringify(template ?? {})).digest('hex').slice(0, 10);
}

const controllerUid = (p: k8s.V1Pod): string | undefined => p.metadata?.ownerReferences?.find((o) => o.controller)?.uid;
const isTerminal = (p: k8s.V1Pod): boolean => p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed';
const condition = (p: k8s.V1Pod, type: string): k8s.V1PodCondition | undefined => p.status?.conditions?.find((c) => c.type === type);
const isReady = (p: k8s.V1Pod): boolean => condition(p, 'Ready')?.status === 'True';
const isAvailable = (p: k8s.V1Pod, minReadySeconds: number): boolean =>
  isReady(p) && Date.now() - millis(condition(p, 'Ready')?.lastTransitionTime) >= minReadySeconds * 1000;
const podKey = (p: k8s.V1Pod): string => `${p.metadata?.namespace}/${p.metadata?.name}`;

function apiError(e: unknown): { code?: number; message: string } {
  const err = e as { code?: number; body?: unknown; message?: string };
  let message = err.message ?? String(e);
  try {
    const body = typeof err.body === 'string' ? (JSON.parse(err.body) as Json) : (err.body as Json | undefined);
    if (body && typeof body.message === 'string') message = body.message;
  } catch {
    // a body that is not JSON: the exception's own message will do
  }
  return { code: err.code, message };
}

/** Keeps the last `limit` bytes written to it. */
class LogRing {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit: number) {}
  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
    while (this.size > this.limit) {
      const first = this.chunks[0]!;
      const excess = this.size - this.limit;
      if (first.length <= excess) {
        this.chunks.shift();
        this.size -= first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.size -= excess;
      }
    }
  }
  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

/** Removes an empty directory; a non-empty or missing one stays as it is. */
function rmdirSyncQuiet(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // in use by someone else, or gone already
  }
}

/** Signals a process group (every container is its own group, so its children go too). */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Resolves when the child's stdout and stderr have closed, or after `ms`. */
function drained(child: ChildProcess, ms: number): Promise<void> {
  const open = [child.stdout, child.stderr].filter((s) => s && !s.closed);
  if (open.length === 0) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    void Promise.all(open.map((s) => new Promise((r) => s!.once('close', r)))).then(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// ---------- readiness probes ----------

// Runs in a long-lived `node -e` per network namespace (one for the host), so a probe costs a message, not
// a process start. Requests and results are JSON lines on stdin/stdout.
const PROBER_SCRIPT = `
const http = require('node:http'), net = require('node:net');
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) { const line = buf.slice(0, i); buf = buf.slice(i + 1); run(JSON.parse(line)); }
});
process.stdin.on('end', () => process.exit(0));
function run(r) {
  let sent = false;
  const done = (ok, detail) => { if (sent) return; sent = true; process.stdout.write(JSON.stringify({ id: r.id, ok, detail }) + '\\n'); };
  if (r.kind === 'http') {
    const req = http.get({ host: r.host, port: r.port, path: r.path, agent: false, timeout: r.timeoutMs,
      headers: { 'User-Agent': 'kube-probe/1.33', Connection: 'close' } }, (res) => {
      res.resume();
      done(res.statusCode >= 200 && res.statusCode < 400, 'HTTP probe failed with statuscode: ' + res.statusCode);
    });
    req.on('timeout', () => { req.destroy(); done(false, 'timeout'); });
    req.on('error', (e) => done(false, e.message));
  } else {
    const s = net.connect({ host: r.host, port: r.port });
    s.setTimeout(r.timeoutMs, () => { s.destroy(); done(false, 'timeout'); });
    s.on('connect', () => { s.destroy(); done(true, 'connected'); });
    s.on('error', (e) => done(false, e.message));
  }
}`;

// The Service relay inside a node's network namespace: told `{ip, port, sock}` lines on stdin, it listens on
// ip:port and pipes every connection to the Unix socket `sock`, where the kubelet picks an endpoint.
const RELAY_SCRIPT = `
const net = require('node:net');
const listening = new Set();
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) { const line = buf.slice(0, i); buf = buf.slice(i + 1); listen(JSON.parse(line)); }
});
process.stdin.on('end', () => process.exit(0));
function listen(r) {
  const key = r.ip + ' ' + r.port;
  if (listening.has(key)) return;
  listening.add(key);
  net.createServer((conn) => {
    const up = net.connect(r.sock);
    conn.pipe(up).on('error', () => conn.destroy());
    up.pipe(conn).on('error', () => up.destroy());
    conn.on('error', () => up.destroy());
    up.on('error', () => conn.destroy());
  }).on('error', (e) => process.stderr.write(key + ': ' + e.message + '\\n')).listen(r.port, r.ip);
}`;

interface ProbeRequest {
  kind: 'http' | 'tcp';
  host: string;
  port: number;
  path?: string;
  timeoutMs: number;
}
interface ProbeResult {
  ok: boolean;
  detail: string;
}

class Prober {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, (r: ProbeResult) => void>();
  private nextId = 0;
  private buf = '';
  readonly exited: Promise<void>;
  dead = false;

  constructor(netns: string | undefined, groups: Set<number>) {
    const argv = [process.execPath, '-e', PROBER_SCRIPT];
    const [cmd, ...args] = netns ? netnsExecArgs(netns, argv) : argv;
    this.child = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'ignore'], detached: true, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    const pid = this.child.pid;
    if (pid) groups.add(pid);
    this.exited = new Promise((resolve) => {
      const end = (): void => {
        this.dead = true;
        if (pid) groups.delete(pid);
        for (const r of this.pending.values()) r({ ok: false, detail: 'prober exited' });
        this.pending.clear();
        resolve();
      };
      this.child.once('exit', end);
      this.child.once('error', end);
    });
    this.child.stdin!.on('error', () => undefined); // a dead prober is seen through 'exit'
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        try {
          const r = JSON.parse(line) as ProbeResult & { id: number };
          this.pending.get(r.id)?.({ ok: r.ok === true, detail: String(r.detail) });
          this.pending.delete(r.id);
        } catch {
          // not a result line
        }
      }
    });
  }

  probe(req: ProbeRequest): Promise<ProbeResult> {
    if (this.dead) return Promise.resolve({ ok: false, detail: 'prober exited' });
    const id = this.nextId++;
    return new Promise((resolve) => {
      // The prober enforces the timeout; this guard only covers a prober that hangs.
      const guard = setTimeout(() => {
        this.pending.delete(id);
        resolve({ ok: false, detail: 'timeout' });
      }, req.timeoutMs + 2000);
      this.pending.set(id, (r) => {
        clearTimeout(guard);
        resolve(r);
      });
      this.child.stdin!.write(JSON.stringify({ id, ...req }) + '\n');
    });
  }

  async close(): Promise<void> {
    this.child.stdin!.end();
    const pid = this.child.pid;
    const kill = setTimeout(() => pid && signalGroup(pid, 'SIGKILL'), 1000);
    await this.exited;
    clearTimeout(kill);
  }
}

// ---------- the pod runtime ----------

interface Terminated {
  exitCode: number;
  signal?: number;
  reason: string;
  message?: string;
  startedAt?: string;
  finishedAt: string;
  containerID?: string;
}

interface Container {
  spec: k8s.V1Container;
  child?: ChildProcess;
  pid?: number;
  /** Bumped per start, so a late probe result of an earlier run is ignored. */
  run: number;
  starting: boolean;
  started: boolean;
  startedAt?: string;
  startedMs: number;
  exited?: Promise<void>;
  restartCount: number;
  last?: Terminated;
  /** Exited and will not be restarted (restartPolicy). */
  done: boolean;
  /** The current run's termination message file (host path) and the end of its output. */
  messageFile?: string;
  output?: LogRing;
  nextStartAt: number;
  /** The delay before the pending restart, and the one after it. */
  delayMs: number;
  backoffMs: number;
  /** Why the last start attempt failed before a process ran (CreateContainerConfigError, CreateContainerError). */
  createError?: { reason: string; message: string };
  env?: Record<string, string>;
  ready: boolean;
  probeSuccesses: number;
  probeFailures: number;
  probeNextAt: number;
  probing: boolean;
}

interface PodRuntime {
  uid: string;
  name: string;
  namespace: string;
  nodeName: string;
  pod: k8s.V1Pod;
  containers: Container[];
  startTime: string;
  conds: Map<string, { status: string; time: string }>;
  terminating?: Promise<void>;
  lastStatus?: string;
}

function checkNode(n: KubeletNode): void {
  if (typeof n?.name !== 'string' || n.name.length > 253 || !DNS_SUBDOMAIN.test(n.name)) {
    throw new Error(`node name ${JSON.stringify(n?.name)} is not a lowercase RFC 1123 subdomain (e.g. node-a)`);
  }
  for (const [k, v] of Object.entries(n.capacity ?? {})) {
    try {
      parseQuantity(v);
    } catch (e) {
      throw new Error(`node ${n.name}: capacity ${k}: ${(e as Error).message}`);
    }
  }
  for (const t of n.taints ?? []) {
    if (!t.key || !TAINT_EFFECTS.includes(t.effect)) {
      throw new Error(`node ${n.name}: taint ${JSON.stringify(t)} needs a key and an effect of ${TAINT_EFFECTS.join(', ')}`);
    }
  }
  if (n.netns !== undefined) {
    netnsExecArgs(n.netns, ['true']); // throws for anything but a lab namespace
    if (!existsSync(`/run/netns/${n.netns}`)) {
      throw new Error(`node ${n.name}: network namespace ${n.netns} does not exist; create it first (ip netns add ${n.netns})`);
    }
  }
}

export async function startKubelet(opts: KubeletOptions): Promise<Kubelet> {
  if (!Array.isArray(opts.nodes) || opts.nodes.length === 0) throw new Error('startKubelet needs at least one node in opts.nodes');
  opts.nodes.forEach(checkNode);
  const dup = opts.nodes.map((n) => n.name).find((n, i, all) => all.indexOf(n) !== i);
  if (dup) throw new Error(`node ${dup} is listed twice; node names must be unique`);
  const entrypoint = opts.entrypoint ?? DEFAULT_ENTRYPOINT;
  if (!existsSync(entrypoint)) throw new Error(`the image entrypoint ${entrypoint} does not exist; run \`npm run build\` first`);
  const pollMs = opts.pollMs ?? 200;
  const backoffInitialMs = opts.backoffInitialMs ?? 10_000;
  const backoffMaxMs = opts.backoffMaxMs ?? 300_000;
  const logLimit = opts.logLimitBytes ?? 200 * 1024;
  if (opts.probePeriodMs !== undefined && !(opts.probePeriodMs >= 1000)) throw new Error(`probePeriodMs ${opts.probePeriodMs} is below the 1000 ms minimum`);

  const kc = new k8s.KubeConfig();
  kc.loadFromFile(opts.kubeconfig);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const apps = kc.makeApiClient(k8s.AppsV1Api);
  const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

  const nodeSpecs = new Map<string, KubeletNode>();
  const runtimes = new Map<string, PodRuntime>();
  const logs = new Map<string, LogRing>();
  const probers = new Map<string, Prober>();
  /** Process groups alive now: the exit hook SIGKILLs them if the test process ends without stop(). */
  const groups = new Set<number>();
  /** Owner uid → uids of pods deleted for a template change whose processes must end before new pods start. */
  const recreating = new Map<string, Set<string>>();
  const lastWritten = new Map<string, string>();
  const errorLog: string[] = [];
  /** Pods' volumes, Service sockets. */
  const workDir = mkdtempSync(join(tmpdir(), 'kubelet-'));
  const podsDir = join(workDir, 'pods');
  /** Per network namespace: its relay process and the hosts file this kubelet made (`created`: remove it at stop). */
  const netnsState = new Map<string, { relay?: ChildProcess; hostsFile: string; base: string; written?: string; createdDir?: string }>();
  /** `ns/name/port` → the host side of a Service port: its Unix socket server and its current endpoints. */
  const servicePorts = new Map<string, { server: Server; sock: string; ip: string; port: number; endpoints: { host: string; port: number }[]; next: number }>();
  /** Open relayed connections, ended by stop(). */
  const relayed = new Set<Socket>();
  let writes = 0;
  let stopped = false;
  let stopping: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let inPass: Promise<void> | undefined;
  let again = false;
  let passesStarted = 0;
  let passesDone = 0;
  const waiters: { after: number; resolve: () => void }[] = [];

  const killAll = (): void => {
    for (const pid of groups) signalGroup(pid, 'SIGKILL');
  };
  process.on('exit', killAll);

  const record = (what: string, e: unknown): void => {
    errorLog.push(`${what}: ${apiError(e).message}`);
    if (errorLog.length > MAX_ERRORS) errorLog.shift();
  };
  /** One API write; 404 and 409 are the ordinary races of a controller (next pass sees the truth). */
  const write = async (what: string, op: () => Promise<unknown>): Promise<boolean> => {
    try {
      await op();
      writes++;
      return true;
    } catch (e) {
      const { code } = apiError(e);
      if (code !== 404 && code !== 409) record(what, e);
      return false;
    }
  };

  const graceOf = (pod: k8s.V1Pod): number => {
    const ms = (pod.spec?.terminationGracePeriodSeconds ?? 30) * 1000;
    return opts.maxGraceMs === undefined ? ms : Math.min(ms, opts.maxGraceMs);
  };
  const addressOf = (nodeName: string): string => nodeSpecs.get(nodeName)?.address ?? '::1';

  // ----- nodes -----

  async function registerNode(n: KubeletNode): Promise<void> {
    const arch = process.arch === 'x64' ? 'amd64' : process.arch;
    const labels = { 'kubernetes.io/hostname': n.name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': arch, ...n.labels };
    const body: k8s.V1Node = { metadata: { name: n.name, labels }, spec: { taints: n.taints?.length ? n.taints : undefined } };
    try {
      await core.createNode({ body });
    } catch (e) {
      if (apiError(e).code !== 409) throw new Error(`cannot register node ${n.name}: ${apiError(e).message}`);
      await core.patchNode({ name: n.name, body: { metadata: { labels }, spec: { taints: n.taints ?? null } } }, mergePatch);
    }
    const capacity = { ...DEFAULT_CAPACITY, ...n.capacity };
    const t = now();
    const condition = (type: string, status: string, reason: string, message: string): Json => ({
      type, status, reason, message, lastHeartbeatTime: t, lastTransitionTime: t,
    });
    const status = {
      capacity,
      allocatable: capacity,
      conditions: [
        condition('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'),
        condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
        condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
        condition('Ready', 'True', 'KubeletReady', 'kubelet is posting ready status'),
      ],
      addresses: [
        { type: 'InternalIP', address: n.address ?? '::1' },
        { type: 'Hostname', address: n.name },
      ],
      nodeInfo: {
        kubeletVersion: 'v1.33.0-widescan-test', kubeProxyVersion: '', operatingSystem: 'linux', architecture: arch,
        containerRuntimeVersion: 'process://widescan-test-kubelet', osImage: 'widescan test kubelet', kernelVersion: '',
        machineID: '', systemUUID: '', bootID: '',
      },
      daemonEndpoints: { kubeletEndpoint: { Port: 0 } },
    };
    await core.patchNodeStatus({ name: n.name, body: { status } }, mergePatch);
    if (n.netns && !netnsState.has(n.netns)) {
      // Must exist before any pod starts there: `ip netns exec` bind-mounts it over /etc/hosts at exec time.
      const dir = `/etc/netns/${n.netns}`;
      // The first directory made (/etc/netns itself if it was missing): what stop() removes.
      const createdDir = mkdirSync(dir, { recursive: true });
      const hostsFile = join(dir, 'hosts');
      const base = existsSync(hostsFile) ? readFileSync(hostsFile, 'utf8') : readFileSync('/etc/hosts', 'utf8');
      writeFileSync(hostsFile, base);
      netnsState.set(n.netns, { hostsFile, base, createdDir });
    }
    nodeSpecs.set(n.name, n);
  }

  // ----- services -----

  /** Brings relays, endpoints and hosts files of the netns nodes up to date with the Services. */
  function serviceSync(services: k8s.V1Service[], pods: k8s.V1Pod[]): void {
    if (netnsState.size === 0) return;
    const hostNames: string[] = [];
    for (const svc of services) {
      const ns = svc.metadata!.namespace!;
      const name = svc.metadata!.name!;
      if (svc.spec?.clusterIP === 'None' || !svc.spec?.selector) continue;
      // ::1, not a 127/8 address per Service: getaddrinfo's AI_ADDRCONFIG (Node's default) drops IPv4 answers in
      // a namespace whose only IPv4 address is loopback. Services so share one address, told apart by port.
      const ip = '::1';
      hostNames.push(`${ip} ${name}.${ns}.svc.cluster.local ${name}.${ns}.svc ${name}.${ns}`);
      const backends = pods.filter(
        (p) => p.metadata?.namespace === ns && !p.metadata.deletionTimestamp && isReady(p) && labelsMatch(svc.spec!.selector, p.metadata.labels) &&
          // Only endpoints on the host network are reachable from the host side of the relay.
          !(p.spec?.hostNetwork && nodeSpecs.get(p.spec.nodeName ?? '')?.netns),
      );
      for (const sp of svc.spec.ports ?? []) {
        const key = `${ns}/${name}/${sp.port}`;
        const target = sp.targetPort ?? sp.port;
        const endpoints = backends.flatMap((p) => {
          const port = typeof target === 'number' || /^\d+$/.test(String(target))
            ? Number(target)
            : p.spec?.containers.flatMap((c) => c.ports ?? []).find((cp) => cp.name === target)?.containerPort;
          return port ? [{ host: p.status?.podIP ?? '::1', port }] : [];
        });
        let entry = servicePorts.get(key);
        if (!entry) {
          const sock = join(workDir, `svc-${createHash('sha256').update(key).digest('hex').slice(0, 12)}.sock`);
          const e = { sock, ip, port: sp.port, endpoints, next: 0, server: undefined as unknown as Server };
          e.server = createServer((conn) => {
            const ep = e.endpoints[e.next++ % Math.max(1, e.endpoints.length)];
            if (!ep) return void conn.destroy(); // no ready endpoint: the connection is refused, as by kube-proxy
            const up = createConnection({ host: ep.host, port: ep.port });
            relayed.add(conn);
            conn.on('close', () => relayed.delete(conn));
            conn.pipe(up).on('error', () => conn.destroy());
            up.pipe(conn).on('error', () => up.destroy());
            conn.on('error', () => up.destroy());
            up.on('error', () => conn.destroy());
          }).listen(sock);
          servicePorts.set(key, (entry = e));
        }
        entry.endpoints = endpoints;
        for (const [netns, st] of netnsState) {
          if (!st.relay || st.relay.exitCode !== null) {
            const [cmd, ...args] = netnsExecArgs(netns, [process.execPath, '-e', RELAY_SCRIPT]);
            const relay = spawn(cmd!, args, { stdio: ['pipe', 'ignore', 'pipe'], detached: true, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
            relay.stdin!.on('error', () => undefined);
            relay.stderr!.on('data', (b: Buffer) => record(`service relay in ${netns}`, new Error(b.toString('utf8').trim())));
            if (relay.pid) groups.add(relay.pid);
            st.relay = relay;
            // A new relay knows nothing yet: every port is sent to it again below.
            for (const other of servicePorts.values()) relay.stdin!.write(JSON.stringify({ ip: other.ip, port: other.port, sock: other.sock }) + '\n');
          } else st.relay.stdin!.write(JSON.stringify({ ip: entry.ip, port: entry.port, sock: entry.sock }) + '\n');
        }
      }
    }
    const hosts = hostNames.sort().join('\n');
    for (const st of netnsState.values()) {
      if (st.written === hosts) continue;
      // Rewritten in place: the file is bind-mounted into running processes, which then see the new names.
      writeFileSync(st.hostsFile, `${st.base.trimEnd()}\n# Services (widescan test kubelet)\n${hosts}\n`);
      st.written = hosts;
    }
  }

  // ----- environment -----

  async function resolveEnv(rt: PodRuntime, c: k8s.V1Container): Promise<Record<string, string>> {
    const pod = rt.pod;
    const ns = rt.namespace;
    const hostIP = addressOf(rt.nodeName);
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: '/tmp',
      HOSTNAME: pod.spec?.hostNetwork ? rt.nodeName : rt.name,
      ...opts.env,
      // The container's own path: rewritten to the run's file with the mount paths (startContainer).
      [TERMINATION_LOG_ENV]: c.terminationMessagePath || DEFAULT_TERMINATION_MESSAGE_PATH,
    };
    const secrets = new Map<string, k8s.V1Secret | null>();
    const configMaps = new Map<string, k8s.V1ConfigMap | null>();
    const secret = async (name: string): Promise<k8s.V1Secret | null> => {
      if (!secrets.has(name)) {
        try {
          secrets.set(name, await core.readNamespacedSecret({ name, namespace: ns }));
        } catch (e) {
          if (apiError(e).code !== 404) throw e;
          secrets.set(name, null);
        }
      }
      return secrets.get(name)!;
    };
    const configMap = async (name: string): Promise<k8s.V1ConfigMap | null> => {
      if (!configMaps.has(name)) {
        try {
          configMaps.set(name, await core.readNamespacedConfigMap({ name, namespace: ns }));
        } catch (e) {
          if (apiError(e).code !== 404) throw e;
          configMaps.set(name, null);
        }
      }
      return configMaps.get(name)!;
    };
    const secretData = (s: k8s.V1Secret): Record<string, string> =>
      Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
    const configMapData = (m: k8s.V1ConfigMap): Record<string, string> => ({
      ...Object.fromEntries(Object.entries(m.binaryData ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')])),
      ...m.data,
    });

    for (const src of c.envFrom ?? []) {
      const prefix = src.prefix ?? '';
      if (src.secretRef) {
        const s = await secret(src.secretRef.name!);
        if (!s && !src.secretRef.optional) throw new Error(`secret "${src.secretRef.name}" not found`);
        if (s) for (const [k, v] of Object.entries(secretData(s))) env[prefix + k] = v;
      } else if (src.configMapRef) {
        const m = await configMap(src.configMapRef.name!);
        if (!m && !src.configMapRef.optional) throw new Error(`configmap "${src.configMapRef.name}" not found`);
        if (m) for (const [k, v] of Object.entries(configMapData(m))) env[prefix + k] = v;
      }
    }
    for (const e of c.env ?? []) {
      const from = e.valueFrom;
      if (!from) {
        env[e.name] = expandEnvRefs(e.value ?? '', env);
      } else if (from.secretKeyRef) {
        const ref = from.secretKeyRef;
        const s = await secret(ref.name!);
        const v = s ? secretData(s)[ref.key] : undefined;
        if (v !== undefined) env[e.name] = v;
        else if (!ref.optional) {
          throw new Error(s ? `couldn't find key ${ref.key} in Secret ${ns}/${ref.name}` : `secret "${ref.name}" not found`);
        }
      } else if (from.configMapKeyRef) {
        const ref = from.configMapKeyRef;
        const m = await configMap(ref.name!);
        const v = m ? configMapData(m)[ref.key] : undefined;
        if (v !== undefined) env[e.name] = v;
        else if (!ref.optional) {
          throw new Error(m ? `couldn't find key ${ref.key} in ConfigMap ${ns}/${ref.name}` : `configmap "${ref.name}" not found`);
        }
      } else if (from.fieldRef) {
        const path = from.fieldRef.fieldPath;
        const meta = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
        const fields: Record<string, string | undefined> = {
          'metadata.name': rt.name,
          'metadata.namespace': ns,
          'metadata.uid': rt.uid,
          'spec.nodeName': rt.nodeName,
          'spec.serviceAccountName': pod.spec?.serviceAccountName ?? 'default',
          'status.hostIP': hostIP,
          'status.hostIPs': hostIP,
          'status.podIP': hostIP,
          'status.podIPs': hostIP,
        };
        if (meta) env[e.name] = (meta[1] === 'labels' ? pod.metadata?.labels : pod.metadata?.annotations)?.[meta[2]!] ?? '';
        else if (Object.prototype.hasOwnProperty.call(fields, path)) env[e.name] = fields[path]!;
        else throw new Error(`env ${e.name}: fieldRef ${JSON.stringify(path)} is not supported by the test kubelet`);
      } else {
        throw new Error(`env ${e.name}: only value, secretKeyRef, configMapKeyRef and fieldRef are supported by the test kubelet`);
      }
    }
    return env;
  }

  // ----- volumes -----

  /** Writes the container's configMap and secret volumes under the pod's directory: mountPath → host path. */
  async function mountVolumes(rt: PodRuntime, c: k8s.V1Container): Promise<Map<string, string>> {
    const mounts = new Map<string, string>();
    const volumes = new Map((rt.pod.spec?.volumes ?? []).map((v) => [v.name, v]));
    for (const m of c.volumeMounts ?? []) {
      const v = volumes.get(m.name);
      if (!v) throw new Error(`volumeMount ${m.name}: the pod has no volume of that name`);
      let files: Record<string, Buffer> | undefined;
      let items: k8s.V1KeyToPath[] | undefined;
      let mode: number | undefined;
      if (v.configMap) {
        const cm = await core.readNamespacedConfigMap({ name: v.configMap.name!, namespace: rt.namespace }).catch((e: unknown) => {
          if (apiError(e).code === 404 && v.configMap!.optional) return undefined;
          throw new Error(`volume ${v.name}: configmap "${v.configMap!.name}": ${apiError(e).message}`);
        });
        files = {
          ...Object.fromEntries(Object.entries(cm?.binaryData ?? {}).map(([k, b]) => [k, Buffer.from(b, 'base64')])),
          ...Object.fromEntries(Object.entries(cm?.data ?? {}).map(([k, t]) => [k, Buffer.from(t, 'utf8')])),
        };
        [items, mode] = [v.configMap.items, v.configMap.defaultMode];
      } else if (v.secret) {
        const sec = await core.readNamespacedSecret({ name: v.secret.secretName!, namespace: rt.namespace }).catch((e: unknown) => {
          if (apiError(e).code === 404 && v.secret!.optional) return undefined;
          throw new Error(`volume ${v.name}: secret "${v.secret!.secretName}": ${apiError(e).message}`);
        });
        files = Object.fromEntries(Object.entries(sec?.data ?? {}).map(([k, b]) => [k, Buffer.from(b, 'base64')]));
        [items, mode] = [v.secret.items, v.secret.defaultMode];
      }
      if (!files) continue; // emptyDir and the like: the host's own path stands in
      const dir = join(podsDir, rt.uid, v.name);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      for (const it of items ?? Object.keys(files).map((key): k8s.V1KeyToPath => ({ key, path: key }))) {
        const data = files[it.key];
        if (data === undefined) throw new Error(`volume ${v.name}: couldn't find key ${it.key}`);
        if (it.path.split('/').includes('..') || it.path.startsWith('/')) throw new Error(`volume ${v.name}: item path ${JSON.stringify(it.path)} must be relative without '..'`);
        const file = join(dir, it.path);
        mkdirSync(join(file, '..'), { recursive: true });
        writeFileSync(file, data);
        chmodSync(file, it.mode ?? mode ?? 0o644);
      }
      mounts.set(m.mountPath.replace(/\/+$/, '') || '/', m.subPath ? join(dir, m.subPath) : dir);
    }
    return mounts;
  }

  // ----- containers -----

  function newContainer(spec: k8s.V1Container): Container {
    return {
      spec, run: 0, starting: false, started: false, startedMs: 0, restartCount: 0, done: false, nextStartAt: 0,
      delayMs: 0, backoffMs: 0, ready: false, probeSuccesses: 0, probeFailures: 0, probeNextAt: 0, probing: false,
    };
  }

  async function startContainer(rt: PodRuntime, c: Container): Promise<void> {
    c.starting = true;
    try {
      const fail = (reason: string, e: unknown): void => {
        c.createError = { reason, message: apiError(e).message };
        c.nextStartAt = Date.now() + CREATE_RETRY_MS;
      };
      let env: Record<string, string>;
      let mounts: Map<string, string>;
      const messagePath = c.spec.terminationMessagePath || DEFAULT_TERMINATION_MESSAGE_PATH;
      try {
        if (!isAbsolute(messagePath) || messagePath.endsWith('/')) {
          throw new Error(`terminationMessagePath ${JSON.stringify(messagePath)} must be the absolute path of a file (default ${DEFAULT_TERMINATION_MESSAGE_PATH})`);
        }
        env = await resolveEnv(rt, c.spec);
        mounts = await mountVolumes(rt, c.spec);
      } catch (e) {
        return fail('CreateContainerConfigError', e);
      }
      if (rt.terminating || stopped) return;
      // A fresh empty file per run, as the kubelet's: a message never outlives the run that wrote it.
      const messageDir = join(podsDir, rt.uid, 'termination');
      const messageFile = join(messageDir, `${rt.containers.indexOf(c)}-${c.run + 1}`);
      try {
        if (c.messageFile) rmSync(c.messageFile, { force: true });
        mkdirSync(messageDir, { recursive: true });
        writeFileSync(messageFile, '', { mode: 0o666 });
      } catch (e) {
        return fail('CreateContainerError', e);
      }
      mounts.set(messagePath, messageFile);
      for (const [k, v] of Object.entries(env)) env[k] = remapPath(v, mounts);
      const expand = (list: string[] | undefined): string[] => (list ?? []).map((a) => remapPath(expandEnvRefs(a, env), mounts));
      const argv = [process.execPath, entrypoint, ...expand(c.spec.command), ...expand(c.spec.args)];
      const netns = nodeSpecs.get(rt.nodeName)?.netns;
      const [cmd, ...args] = rt.pod.spec?.hostNetwork && netns ? netnsExecArgs(netns, argv) : argv;
      let child: ChildProcess;
      try {
        child = spawn(cmd!, args, { env, cwd: REPO, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (e) {
        return fail('CreateContainerError', e); // e.g. a NUL byte in an argument or env value
      }
      c.createError = undefined;
      let log = logs.get(rt.name);
      if (!log) logs.set(rt.name, (log = new LogRing(logLimit)));
      const sink = log;
      const output = new LogRing(TERMINATION_LOG_BYTES);
      const capture = (b: Buffer): void => {
        sink.push(b);
        output.push(b);
      };
      child.stdout!.on('data', capture);
      child.stderr!.on('data', capture);
      c.messageFile = messageFile;
      c.output = output;
      if (c.started) c.restartCount++;
      c.started = true;
      c.run++;
      c.child = child;
      c.pid = child.pid;
      c.env = env;
      c.startedAt = now();
      c.startedMs = Date.now();
      c.ready = false;
      c.probeSuccesses = 0;
      c.probeFailures = 0;
      c.probeNextAt = Date.now() + (c.spec.readinessProbe?.initialDelaySeconds ?? 0) * 1000;
      const pid = child.pid;
      if (pid) groups.add(pid);
      c.exited = new Promise((resolve) => {
        let ended = false;
        const end = async (code: number | null, signal: NodeJS.Signals | null, error?: Error): Promise<void> => {
          if (ended) return;
          ended = true;
          if (pid) {
            signalGroup(pid, 'SIGKILL'); // whatever the container left behind in its group
            groups.delete(pid);
          }
          // 'exit' may come before the last output: FallbackToLogsOnError needs it.
          await drained(child, DRAIN_MS);
          onExit(rt, c, child, code, signal, error);
          resolve();
        };
        child.once('exit', (code, signal) => void end(code, signal));
        child.once('error', (err) => void end(null, null, err));
      });
    } finally {
      c.starting = false;
    }
  }

  function onExit(rt: PodRuntime, c: Container, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null, error?: Error): void {
    if (c.child !== child) return;
    const signum = signal ? constants.signals[signal] : 0;
    const exitCode = code ?? (signal ? 128 + signum : 128);
    const message = error ? error.message : terminationMessage(c.messageFile!, c.spec.terminationMessagePolicy, exitCode, c.output?.text() ?? '');
    c.last = {
      exitCode,
      ...(signal ? { signal: signum } : {}),
      reason: error ? 'StartError' : exitCode === 0 ? 'Completed' : 'Error',
      ...(message ? { message } : {}),
      startedAt: c.startedAt,
      finishedAt: now(),
      containerID: `process://${child.pid ?? 0}`,
    };
    c.child = undefined;
    c.pid = undefined;
    c.ready = false;
    if (rt.terminating || stopped) return;
    const policy = rt.pod.spec?.restartPolicy ?? 'Always';
    if (policy === 'Always' || (policy === 'OnFailure' && exitCode !== 0)) {
      // As the real kubelet: the first restart is immediate, then 10 s, 20 s, … up to the cap; a container
      // that ran for twice the cap starts over.
      if (Date.now() - c.startedMs >= 2 * backoffMaxMs) c.backoffMs = 0;
      c.delayMs = c.backoffMs;
      c.nextStartAt = Date.now() + c.backoffMs;
      c.backoffMs = c.backoffMs === 0 ? backoffInitialMs : Math.min(c.backoffMs * 2, backoffMaxMs);
    } else {
      c.done = true;
    }
    kick();
  }

  function terminate(rt: PodRuntime, graceMs: number): Promise<void> {
    rt.terminating ??= (async () => {
      // A start in progress sees `terminating` before it spawns; one that already spawned is killed below.
      while (rt.containers.some((c) => c.starting)) await new Promise((r) => setTimeout(r, 10));
      await Promise.all(
        rt.containers.map(async (c) => {
          const pid = c.pid;
          if (!pid || !c.exited) return;
          signalGroup(pid, 'SIGTERM');
          const kill = setTimeout(() => signalGroup(pid, 'SIGKILL'), graceMs);
          await c.exited;
          clearTimeout(kill);
        }),
      );
      runtimes.delete(rt.uid);
      rmSync(join(podsDir, rt.uid), { recursive: true, force: true });
      lastWritten.delete(rt.uid);
      kick();
    })();
    return rt.terminating;
  }

  function probeContainer(rt: PodRuntime, c: Container): void {
    const p = c.spec.readinessProbe;
    if (!p || !c.child || c.probing || Date.now() < c.probeNextAt) return;
    const period = opts.probePeriodMs ?? Math.max(1000, (p.periodSeconds ?? 10) * 1000);
    const run = c.run;
    const named = (port: number | string | undefined): number =>
      typeof port === 'number' ? port : Number((c.spec.ports ?? []).find((q) => q.name === port)?.containerPort ?? port);
    let req: ProbeRequest | undefined;
    const timeoutMs = (p.timeoutSeconds ?? 1) * 1000;
    if (p.httpGet) {
      const { host, port, path } = p.httpGet;
      req = { kind: 'http', host: host ?? addressOf(rt.nodeName), port: named(port as number | string), path: path ?? '/', timeoutMs };
    } else if (p.tcpSocket) {
      req = { kind: 'tcp', host: p.tcpSocket.host ?? addressOf(rt.nodeName), port: named(p.tcpSocket.port as number | string), timeoutMs };
    }
    const apply = (ok: boolean): void => {
      if (c.run !== run || !c.child) return;
      const before = c.ready;
      if (ok) {
        c.probeFailures = 0;
        if (++c.probeSuccesses >= (p.successThreshold ?? 1)) c.ready = true;
      } else {
        c.probeSuccesses = 0;
        if (++c.probeFailures >= (p.failureThreshold ?? 3)) c.ready = false;
      }
      if (c.ready !== before) kick();
    };
    if (!req) {
      apply(true); // exec probes cannot run without the image: counted as passing
      return;
    }
    if (!Number.isInteger(req.port) || req.port < 1 || req.port > 65535) {
      apply(false);
      c.probeNextAt = Date.now() + period;
      return;
    }
    const netns = rt.pod.spec?.hostNetwork ? nodeSpecs.get(rt.nodeName)?.netns : undefined;
    let prober = probers.get(netns ?? '');
    if (!prober || prober.dead) probers.set(netns ?? '', (prober = new Prober(netns, groups)));
    c.probing = true;
    prober
      .probe(req)
      .then((r) => apply(r.ok))
      .finally(() => {
        c.probing = false;
        c.probeNextAt = Date.now() + period;
      });
  }

  function podStatus(rt: PodRuntime): Json {
    const cond = (type: string, status: boolean, reason?: string, message?: string): Json => {
      const s = status ? 'True' : 'False';
      const prev = rt.conds.get(type);
      const time = prev?.status === s ? prev.time : now();
      rt.conds.set(type, { status: s, time });
      return { type, status: s, lastProbeTime: null, lastTransitionTime: time, ...(reason ? { reason } : {}), ...(message ? { message } : {}) };
    };
    const cs = rt.containers.map((c) => {
      let state: Json;
      if (c.child) state = { running: { startedAt: c.startedAt } };
      else if (c.done && c.last) state = { terminated: c.last };
      else if (c.createError) state = { waiting: c.createError };
      else if (c.started && c.nextStartAt > Date.now()) {
        // Go's duration format, as in the real message ("back-off 10s", "back-off 300ms").
        const delay = c.delayMs < 1000 ? `${c.delayMs}ms` : `${c.delayMs / 1000}s`;
        const message = `back-off ${delay} restarting failed container=${c.spec.name} pod=${rt.name}_${rt.namespace}(${rt.uid})`;
        state = { waiting: { reason: 'CrashLoopBackOff', message } };
      } else state = { waiting: { reason: 'ContainerCreating' } };
      const ready = Boolean(c.child) && (c.spec.readinessProbe ? c.ready : true);
      return {
        name: c.spec.name,
        image: c.spec.image ?? 'widescan',
        imageID: '',
        ...(c.pid || c.last ? { containerID: c.pid ? `process://${c.pid}` : c.last!.containerID } : {}),
        ready,
        started: Boolean(c.child),
        restartCount: c.restartCount,
        state,
        lastState: !c.done && c.last ? { terminated: c.last } : {},
      };
    });
    const allDone = rt.containers.every((c) => c.done);
    const phase = allDone
      ? rt.containers.every((c) => c.last?.exitCode === 0) ? 'Succeeded' : 'Failed'
      : rt.containers.some((c) => c.started) ? 'Running' : 'Pending';
    const notReady = cs.filter((c) => !c.ready).map((c) => c.name);
    const allReady = notReady.length === 0;
    const why = allDone ? 'PodCompleted' : allReady ? undefined : 'ContainersNotReady';
    const whyText = allReady || allDone ? undefined : `containers with unready status: [${notReady.join(' ')}]`;
    const ip = addressOf(rt.nodeName);
    return {
      phase,
      conditions: [
        cond('Initialized', true),
        cond('Ready', allReady && !allDone, why, whyText),
        cond('ContainersReady', allReady && !allDone, why, whyText),
        cond('PodScheduled', true),
      ],
      hostIP: ip,
      hostIPs: [{ ip }],
      podIP: ip,
      podIPs: [{ ip }],
      startTime: rt.startTime,
      containerStatuses: cs,
      qosClass: 'BestEffort',
    };
  }

  // ----- the passes -----

  async function kubeletSync(pods: k8s.V1Pod[]): Promise<void> {
    const mine = new Map<string, k8s.V1Pod>();
    for (const p of pods) {
      if (p.spec?.nodeName && nodeSpecs.has(p.spec.nodeName) && !p.metadata?.deletionTimestamp) mine.set(p.metadata!.uid!, p);
    }
    for (const rt of runtimes.values()) {
      const p = mine.get(rt.uid);
      if (!p || p.spec?.nodeName !== rt.nodeName) void terminate(rt, graceOf(rt.pod));
    }
    const starts: Promise<void>[] = [];
    for (const [uid, pod] of mine) {
      let rt = runtimes.get(uid);
      if (!rt) {
        if (isTerminal(pod)) continue; // finished before this kubelet started: never run again
        const scheduled = condition(pod, 'PodScheduled');
        rt = {
          uid, name: pod.metadata!.name!, namespace: pod.metadata!.namespace!, nodeName: pod.spec!.nodeName!, pod,
          containers: (pod.spec?.containers ?? []).map(newContainer),
          startTime: now(),
          conds: new Map([['PodScheduled', { status: 'True', time: scheduled?.status === 'True' ? iso(scheduled.lastTransitionTime)! : now() }]]),
        };
        runtimes.set(uid, rt);
      }
      if (rt.terminating) continue;
      rt.pod = pod;
      for (const c of rt.containers) {
        if (!c.child && !c.starting && !c.done && Date.now() >= c.nextStartAt) starts.push(startContainer(rt, c));
        probeContainer(rt, c);
      }
    }
    await Promise.all(starts);
    for (const rt of runtimes.values()) {
      if (rt.terminating) continue;
      const status = podStatus(rt);
      const text = JSON.stringify(status);
      if (rt.lastStatus === text) continue;
      const patch = (): Promise<unknown> => core.patchNamespacedPodStatus({ name: rt.name, namespace: rt.namespace, body: { status } }, mergePatch);
      if (await write(`pod ${rt.namespace}/${rt.name} status`, patch)) {
        rt.lastStatus = text;
      }
    }
  }

  const busy = (ownerUid: string): boolean => {
    const uids = recreating.get(ownerUid);
    if (!uids) return false;
    for (const u of uids) if (!runtimes.has(u)) uids.delete(u);
    if (uids.size === 0) recreating.delete(ownerUid);
    return uids.size > 0;
  };
  const deletePods = async (owner: string, list: k8s.V1Pod[], forRecreate: boolean): Promise<void> => {
    for (const p of list) {
      if (forRecreate) {
        const set = recreating.get(owner) ?? new Set<string>();
        set.add(p.metadata!.uid!);
        recreating.set(owner, set);
      }
      await write(`delete pod ${podKey(p)}`, () => core.deleteNamespacedPod({ name: p.metadata!.name!, namespace: p.metadata!.namespace! }));
    }
  };
  const writeStatus = async (key: string, what: string, status: Json, op: () => Promise<unknown>): Promise<void> => {
    const text = JSON.stringify(status);
    if (lastWritten.get(key) === text) return;
    if (await write(what, op)) lastWritten.set(key, text);
  };
  /** A condition with its transition time kept while its status stays the same. */
  const keepTime = (prev: { type?: string; status?: string; lastTransitionTime?: Date; lastUpdateTime?: Date }[] | undefined, c: Json): Json => {
    const old = prev?.find((o) => o.type === c.type);
    const same = old !== undefined && old.status === c.status;
    const t = (same && iso(old.lastTransitionTime)) || now();
    return { ...c, lastUpdateTime: (same && iso(old.lastUpdateTime)) || t, lastTransitionTime: t };
  };
  const ownerRef = (kind: string, o: k8s.KubernetesObject): k8s.V1OwnerReference => ({
    apiVersion: 'apps/v1', kind, name: o.metadata!.name!, uid: o.metadata!.uid!, controller: true, blockOwnerDeletion: true,
  });

  async function deploymentSync(deployments: k8s.V1Deployment[], pods: k8s.V1Pod[]): Promise<void> {
    for (const d of deployments) {
      if (d.metadata?.deletionTimestamp) continue;
      const uid = d.metadata!.uid!;
      const name = d.metadata!.name!;
      const namespace = d.metadata!.namespace!;
      const want = d.spec?.replicas ?? 1;
      const hash = templateHash(d.spec?.template);
      const active = pods.filter((p) => controllerUid(p) === uid && !p.metadata?.deletionTimestamp && !isTerminal(p));
      const current = active.filter((p) => p.metadata?.labels?.['pod-template-hash'] === hash);
      const old = active.filter((p) => p.metadata?.labels?.['pod-template-hash'] !== hash);
      if (old.length) {
        await deletePods(uid, old, true); // Recreate: the new pods wait until these processes are gone
      } else if (current.length < want && !busy(uid)) {
        const tmpl = d.spec?.template;
        for (let i = current.length; i < want; i++) {
          const body: k8s.V1Pod = {
            metadata: {
              generateName: `${name}-`,
              labels: { ...tmpl?.metadata?.labels, 'pod-template-hash': hash },
              annotations: tmpl?.metadata?.annotations,
              ownerReferences: [ownerRef('Deployment', d)],
            },
            spec: tmpl?.spec ?? { containers: [] },
          };
          await write(`create pod for deployment ${namespace}/${name}`, () => core.createNamespacedPod({ namespace, body }));
        }
      } else if (current.length > want) {
        // As the ReplicaSet controller: unscheduled before scheduled, pending before running, not ready
        // before ready, more restarts first, newer first.
        const restarts = (p: k8s.V1Pod): number => (p.status?.containerStatuses ?? []).reduce((n, c) => n + (c.restartCount ?? 0), 0);
        const rank = (p: k8s.V1Pod): number[] => [
          p.spec?.nodeName ? 1 : 0,
          p.status?.phase === 'Running' ? 2 : p.status?.phase === 'Pending' || !p.status?.phase ? 0 : 1,
          isReady(p) ? 1 : 0,
          -restarts(p),
          -millis(p.metadata?.creationTimestamp),
        ];
        const order = [...current].sort((a, b) => {
          const [ra, rb] = [rank(a), rank(b)];
          for (let i = 0; i < ra.length; i++) if (ra[i] !== rb[i]) return ra[i]! - rb[i]!;
          return 0;
        });
        await deletePods(uid, order.slice(0, current.length - want), false);
      }
      const minReady = d.spec?.minReadySeconds ?? 0;
      const ready = active.filter(isReady).length;
      const available = active.filter((p) => isAvailable(p, minReady)).length;
      const strategy = d.spec?.strategy;
      let maxUnavailable = 0;
      if (strategy?.type !== 'Recreate') {
        const mu = strategy?.rollingUpdate?.maxUnavailable ?? '25%';
        maxUnavailable = typeof mu === 'number' ? mu : Math.floor((want * parseInt(String(mu), 10)) / 100);
      }
      const isAvail = available >= want - Math.min(maxUnavailable, want);
      const complete = old.length === 0 && current.length === want && available >= want;
      const status = {
        observedGeneration: d.metadata?.generation,
        replicas: active.length,
        updatedReplicas: current.length,
        readyReplicas: ready,
        availableReplicas: available,
        unavailableReplicas: Math.max(0, want - available),
        conditions: [
          keepTime(d.status?.conditions, {
            type: 'Available', status: isAvail ? 'True' : 'False',
            reason: isAvail ? 'MinimumReplicasAvailable' : 'MinimumReplicasUnavailable',
            message: isAvail ? 'Deployment has minimum availability.' : 'Deployment does not have minimum availability.',
          }),
          keepTime(d.status?.conditions, {
            type: 'Progressing', status: 'True',
            reason: complete ? 'NewReplicaSetAvailable' : 'ReplicaSetUpdated',
            message: complete ? `Deployment "${name}" has successfully progressed.` : `Deployment "${name}" is progressing.`,
          }),
        ],
      };
      await writeStatus(uid, `deployment ${namespace}/${name} status`, status, () =>
        apps.patchNamespacedDeploymentStatus({ name, namespace, body: { status } }, mergePatch),
      );
    }
  }

  async function daemonSetSync(daemonSets: k8s.V1DaemonSet[], pods: k8s.V1Pod[], nodes: k8s.V1Node[]): Promise<void> {
    for (const ds of daemonSets) {
      if (ds.metadata?.deletionTimestamp) continue;
      const uid = ds.metadata!.uid!;
      const name = ds.metadata!.name!;
      const namespace = ds.metadata!.namespace!;
      const tmpl = ds.spec?.template;
      const hash = templateHash(tmpl);
      const tolerations = [...(tmpl?.spec?.tolerations ?? [])];
      for (const t of DAEMON_TOLERATIONS) if (!tolerations.some((x) => x.key === t.key && x.effect === t.effect)) tolerations.push(t);
      const podSpec: k8s.V1PodSpec = { ...(tmpl?.spec ?? { containers: [] }), tolerations };
      const eligible = nodes.filter((n) => nodeMatches(podSpec, n) && !untoleratedTaint(podSpec, n)).map((n) => n.metadata!.name!);
      const owned = pods.filter((p) => controllerUid(p) === uid && !p.metadata?.deletionTimestamp);
      const target = (p: k8s.V1Pod): string | undefined =>
        p.spec?.nodeName ??
        p.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms?.[0]?.matchFields
          ?.find((f) => f.key === 'metadata.name')?.values?.[0];
      // Daemon pods that failed, landed on a node that no longer qualifies, or lost their node go.
      const stray = owned.filter((p) => isTerminal(p) || !eligible.includes(target(p) ?? ''));
      if (stray.length) await deletePods(uid, stray, false);
      const live = owned.filter((p) => !stray.includes(p));
      for (const node of eligible) {
        const here = live.filter((p) => target(p) === node);
        const old = here.filter((p) => p.metadata?.labels?.['controller-revision-hash'] !== hash);
        const current = here.filter((p) => !old.includes(p));
        if (old.length) await deletePods(uid, old, true);
        else if (current.length > 1) {
          const byAge = [...current].sort((a, b) => millis(a.metadata?.creationTimestamp) - millis(b.metadata?.creationTimestamp));
          await deletePods(uid, byAge.slice(1), false);
        } else if (current.length === 0 && !busy(uid)) {
          const body: k8s.V1Pod = {
            metadata: {
              generateName: `${name}-`,
              labels: { ...tmpl?.metadata?.labels, 'controller-revision-hash': hash, 'pod-template-generation': String(ds.metadata?.generation ?? 1) },
              annotations: tmpl?.metadata?.annotations,
              ownerReferences: [ownerRef('DaemonSet', ds)],
            },
            spec: {
              ...podSpec,
              // As the real controller: the scheduler places the pod, pinned to its node by affinity.
              affinity: {
                ...podSpec.affinity,
                nodeAffinity: {
                  ...podSpec.affinity?.nodeAffinity,
                  requiredDuringSchedulingIgnoredDuringExecution: {
                    nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: [node] }] }],
                  },
                },
              },
            },
          };
          await write(`create pod for daemonset ${namespace}/${name}`, () => core.createNamespacedPod({ namespace, body }));
        }
      }
      const minReady = ds.spec?.minReadySeconds ?? 0;
      const bound = live.filter((p) => p.spec?.nodeName && eligible.includes(p.spec.nodeName));
      const nodesWith = (f: (p: k8s.V1Pod) => boolean): number => new Set(bound.filter(f).map((p) => p.spec!.nodeName)).size;
      const available = nodesWith((p) => isAvailable(p, minReady));
      const status = {
        observedGeneration: ds.metadata?.generation,
        desiredNumberScheduled: eligible.length,
        currentNumberScheduled: nodesWith(() => true),
        numberMisscheduled: new Set(owned.filter((p) => p.spec?.nodeName && !eligible.includes(p.spec.nodeName)).map((p) => p.spec!.nodeName)).size,
        numberReady: nodesWith(isReady),
        numberAvailable: available,
        numberUnavailable: Math.max(0, eligible.length - available),
        updatedNumberScheduled: nodesWith((p) => p.metadata?.labels?.['controller-revision-hash'] === hash),
      };
      await writeStatus(uid, `daemonset ${namespace}/${name} status`, status, () =>
        apps.patchNamespacedDaemonSetStatus({ name, namespace, body: { status } }, mergePatch),
      );
    }
  }

  async function scheduleSync(pods: k8s.V1Pod[], nodes: k8s.V1Node[]): Promise<void> {
    const used = new Map<string, { pods: number; res: Map<string, number> }>();
    for (const n of nodes) used.set(n.metadata!.name!, { pods: 0, res: new Map() });
    const charge = (nodeName: string, req: Map<string, number>): void => {
      const u = used.get(nodeName);
      if (!u) return;
      u.pods++;
      for (const [r, v] of req) u.res.set(r, (u.res.get(r) ?? 0) + v);
    };
    for (const p of pods) {
      if (!p.spec?.nodeName || isTerminal(p)) continue;
      try {
        charge(p.spec.nodeName, podRequests(p.spec));
      } catch {
        charge(p.spec.nodeName, new Map());
      }
    }
    const pending = pods
      .filter((p) => !p.spec?.nodeName && !p.metadata?.deletionTimestamp && !isTerminal(p))
      .filter((p) => (p.spec?.schedulerName ?? 'default-scheduler') === 'default-scheduler')
      .sort((a, b) => millis(a.metadata?.creationTimestamp) - millis(b.metadata?.creationTimestamp));
    for (const p of pending) {
      const spec = p.spec!;
      let req: Map<string, number>;
      let message: string;
      const feasible: string[] = [];
      try {
        req = podRequests(spec);
        const reasons = new Map<string, number>();
        const add = (r: string): void => void reasons.set(r, (reasons.get(r) ?? 0) + 1);
        for (const n of nodes) {
          const nodeName = n.metadata!.name!;
          // The real scheduler's filter order; the first failing filter is the node's reason.
          const taint = untoleratedTaint(spec, n);
          if (n.spec?.unschedulable && !(spec.tolerations ?? []).some((t) => tolerates(t, { key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' }))) {
            add('node(s) were unschedulable');
          } else if (taint) {
            add(`node(s) had untolerated taint {${taint.key}: ${taint.value ?? ''}}`);
          } else if (!nodeMatches(spec, n)) {
            add("node(s) didn't match Pod's node affinity/selector");
          } else {
            const u = used.get(nodeName)!;
            const alloc = n.status?.allocatable ?? {};
            const short: string[] = [];
            if (alloc.pods !== undefined && u.pods + 1 > parseQuantity(alloc.pods) / 1000) short.push('Too many pods');
            for (const [r, v] of req) {
              if (v > 0 && v > (alloc[r] === undefined ? 0 : parseQuantity(alloc[r])) - (u.res.get(r) ?? 0)) short.push(`Insufficient ${r}`);
            }
            if (short.length) short.forEach(add);
            else feasible.push(nodeName);
          }
        }
        message = unschedulableMessage(nodes.length, reasons);
      } catch (e) {
        req = new Map();
        message = `invalid pod resources: ${(e as Error).message}`;
      }
      const name = p.metadata!.name!;
      const namespace = p.metadata!.namespace!;
      if (feasible.length) {
        // Spread: the feasible node with the fewest pods.
        const nodeName = feasible.sort((a, b) => used.get(a)!.pods - used.get(b)!.pods || a.localeCompare(b))[0]!;
        if (await write(`bind pod ${namespace}/${name}`, () => core.patchNamespacedPod({ name, namespace, body: { spec: { nodeName } } }, mergePatch))) {
          charge(nodeName, req);
          const status = { conditions: [{ type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: now() }] };
          await write(`pod ${namespace}/${name} scheduled`, () => core.patchNamespacedPodStatus({ name, namespace, body: { status } }, mergePatch));
        }
      } else if (condition(p, 'PodScheduled')?.message !== message || p.status?.phase !== 'Pending') {
        const prev = condition(p, 'PodScheduled');
        const status = {
          phase: 'Pending',
          conditions: [{
            type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message, lastProbeTime: null,
            lastTransitionTime: prev?.status === 'False' ? iso(prev.lastTransitionTime) : now(),
          }],
        };
        await write(`pod ${namespace}/${name} unschedulable`, () => core.patchNamespacedPodStatus({ name, namespace, body: { status } }, mergePatch));
      }
    }
  }

  async function pass(): Promise<void> {
    const [nodeList, podList, deployments, daemonSets, services] = await Promise.all([
      core.listNode(),
      core.listPodForAllNamespaces(),
      apps.listDeploymentForAllNamespaces(),
      apps.listDaemonSetForAllNamespaces(),
      netnsState.size ? core.listServiceForAllNamespaces() : Promise.resolve({ items: [] }),
    ]);
    const nodes = nodeList.items.filter((n) => nodeSpecs.has(n.metadata?.name ?? ''));
    serviceSync(services.items, podList.items);
    await kubeletSync(podList.items);
    if (stopped) return;
    await deploymentSync(deployments.items, podList.items);
    await daemonSetSync(daemonSets.items, podList.items, nodes);
    await scheduleSync(podList.items, nodes);
  }

  function schedule(ms: number): void {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(loop, ms);
  }
  function kick(): void {
    if (inPass) again = true;
    else schedule(0);
  }
  function loop(): void {
    if (stopped || inPass) return;
    const seq = ++passesStarted;
    const writesBefore = writes;
    again = false;
    inPass = pass()
      .catch((e: unknown) => record('pass', e))
      .finally(() => {
        inPass = undefined;
        passesDone = seq;
        for (const w of [...waiters]) {
          if (w.after <= seq) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve();
          }
        }
        // A pass that wrote something is followed at once by another that sees the result.
        schedule(again || writes !== writesBefore ? 10 : pollMs);
      });
  }

  try {
    for (const n of opts.nodes) await registerNode(n);
  } catch (e) {
    process.off('exit', killAll);
    rmSync(workDir, { recursive: true, force: true });
    throw e;
  }
  schedule(0);

  return {
    nodes: () => [...nodeSpecs.keys()],
    processes: () => {
      const out = new Map<string, number>();
      for (const rt of runtimes.values()) {
        const pid = rt.containers[0]?.pid;
        if (pid) out.set(rt.name, pid);
      }
      return out;
    },
    logs: (podName) => logs.get(podName)?.text() ?? '',
    env: (podName) => {
      for (const rt of runtimes.values()) if (rt.name === podName) return rt.containers[0]?.env && { ...rt.containers[0].env };
      return undefined;
    },
    addNode: async (node) => {
      checkNode(node);
      if (nodeSpecs.has(node.name)) throw new Error(`node ${node.name} is already registered`);
      await registerNode(node);
      kick();
    },
    removeNode: async (name) => {
      const spec = nodeSpecs.get(name);
      if (!spec) throw new Error(`node ${name} is not one of this kubelet's nodes (${[...nodeSpecs.keys()].join(', ')})`);
      nodeSpecs.delete(name);
      await Promise.all([...runtimes.values()].filter((rt) => rt.nodeName === name).map((rt) => terminate(rt, graceOf(rt.pod))));
      const bound = await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${name}` });
      await deletePods('', bound.items, false);
      await write(`delete node ${name}`, () => core.deleteNode({ name }));
      kick();
    },
    sync: () => {
      if (stopped) return Promise.resolve();
      const after = passesStarted + 1;
      if (passesDone >= after) return Promise.resolve();
      const done = new Promise<void>((resolve) => waiters.push({ after, resolve }));
      kick();
      return done;
    },
    errors: () => [...errorLog],
    stop: (stopOpts = {}) => {
      stopping ??= (async () => {
        stopped = true;
        clearTimeout(timer);
        await inPass;
        await Promise.all([...runtimes.values()].map((rt) => terminate(rt, stopOpts.graceMs ?? graceOf(rt.pod))));
        await Promise.all([...probers.values()].map((p) => p.close()));
        for (const st of netnsState.values()) {
          st.relay?.stdin?.end();
          if (st.relay?.pid) signalGroup(st.relay.pid, 'SIGKILL');
          if (st.createdDir) {
            rmSync(dirname(st.hostsFile), { recursive: true, force: true });
            // /etc/netns too if this kubelet made it, unless another lab's kubelet uses it now.
            if (st.createdDir !== dirname(st.hostsFile)) rmdirSyncQuiet(st.createdDir);
          } else writeFileSync(st.hostsFile, st.base);
        }
        for (const conn of relayed) conn.destroy();
        await Promise.all([...servicePorts.values()].map((e) => new Promise((r) => e.server.close(r))));
        killAll();
        groups.clear();
        rmSync(workDir, { recursive: true, force: true });
        process.off('exit', killAll);
        for (const w of waiters.splice(0)) w.resolve();
      })();
      return stopping;
    },
  };
}


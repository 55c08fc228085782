// An in-process Kubernetes API server for tests: JSON REST + chunked watch over node:http on loopback,
// with the semantics controllers rely on (resourceVersion, 410 Gone, status subresource, 409 conflicts,
// finalizers, owner-reference GC, CRDs served at once with structural-schema pruning/defaulting/validation,
// server-side Table rendering). Kubernetes itself cannot run on the test machines; this stands in for it.
import { randomBytes, randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { parse as parseYaml } from 'yaml';

/* eslint-disable @typescript-eslint/no-explicit-any -- Kubernetes objects are schemaless JSON here */
export type KObject = Record<string, any>;

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  description?: string;
  priority?: number;
  format?: string;
}

export interface ResourceType {
  group: string;
  /** Served versions; the first is the storage version. */
  versions: string[];
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  statusSubresource: boolean;
  /** Custom resources: per-version structural schema, validator and printer columns. */
  custom?: { schemas: Map<string, KObject>; validators: Map<string, ValidateFunction>; columns: Map<string, PrinterColumn[]> };
}

export interface ApiServerOptions {
  /** Bearer token clients must send (default: random). */
  token?: string;
  /** Watch events kept for replay; older resourceVersions get 410 Gone (default 1000). */
  historySize?: number;
  /** Interval of BOOKMARK events on watches that allow them (default 1000 ms). */
  bookmarkIntervalMs?: number;
  /**
   * Serve HTTPS with a fresh self-signed certificate (made with the `openssl` binary) whose CA data goes
   * into the kubeconfig. kubectl needs this: client-go sends bearer tokens only over TLS.
   */
  tls?: boolean;
}

export interface ApiServer {
  url: string;
  token: string;
  /** Path of a kubeconfig file (token auth) pointing at this server; removed by close(). */
  kubeconfig: string;
  store: Store;
  close(): Promise<void>;
}

export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: KObject,
  ) {
    super(message);
  }
}

const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
const clone = <T>(v: T): T => structuredClone(v);
const isObj = (v: unknown): v is KObject => typeof v === 'object' && v !== null && !Array.isArray(v);
const grKey = (group: string, plural: string): string => `${group}|${plural}`;
const objKey = (ns: string, name: string): string => `${ns}/${name}`;
const apiVersionOf = (group: string, version: string): string => (group ? `${group}/${version}` : version);
const qualified = (rt: ResourceType): string => (rt.group ? `${rt.plural}.${rt.group}` : rt.plural);
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function notFound(rt: ResourceType, name: string): ApiError {
  return new ApiError(404, 'NotFound', `${qualified(rt)} "${name}" not found`, { name, group: rt.group, kind: rt.plural });
}
function conflict(rt: ResourceType, name: string): ApiError {
  return new ApiError(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${qualified(rt)} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
    { name, group: rt.group, kind: rt.plural },
  );
}
function invalid(rt: ResourceType, name: string, causes: { field: string; message: string }[]): ApiError {
  const msgs = causes.map((c) => `${c.field}: ${c.message}`);
  const text = msgs.length === 1 ? msgs[0] : `[${msgs.join(', ')}]`;
  return new ApiError(422, 'Invalid', `${rt.kind}${rt.group ? '.' + rt.group : ''} "${name}" is invalid: ${text}`, {
    name,
    group: rt.group,
    kind: rt.kind,
    causes: causes.map((c) => ({ reason: 'FieldValueInvalid', message: c.message, field: c.field })),
  });
}

// ---------- selectors ----------

type Requirement = { key: string; op: '=' | '!=' | 'in' | 'notin' | 'exists' | '!'; values: string[] };

/** Label selector grammar of the API server: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`. */
export function parseLabelSelector(sel: string): Requirement[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of sel) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  const reqs: Requirement[] = [];
  for (const raw of parts) {
    const p = raw.trim();
    if (!p) continue;
    let m: RegExpMatchArray | null;
    if ((m = p.match(/^([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)$/))) {
      reqs.push({ key: m[1]!, op: m[2] as 'in' | 'notin', values: m[3]!.split(',').map((s) => s.trim()) });
    } else if ((m = p.match(/^([^\s!=,()]+)\s*(==|=|!=)\s*([^\s!=,()]*)$/))) {
      reqs.push({ key: m[1]!, op: m[2] === '!=' ? '!=' : '=', values: [m[3]!] });
    } else if ((m = p.match(/^!\s*([^\s!=,()]+)$/))) {
      reqs.push({ key: m[1]!, op: '!', values: [] });
    } else if ((m = p.match(/^([^\s!=,()]+)$/))) {
      reqs.push({ key: m[1]!, op: 'exists', values: [] });
    } else {
      throw new ApiError(400, 'BadRequest', `unable to parse requirement: invalid label selector "${sel}"`);
    }
  }
  return reqs;
}

function matchLabels(reqs: Requirement[], labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    switch (r.op) {
      case '=':
        return has && l[r.key] === r.values[0];
      case '!=':
        return !has || l[r.key] !== r.values[0];
      case 'in':
        return has && r.values.includes(l[r.key]!);
      case 'notin':
        return !has || !r.values.includes(l[r.key]!);
      case 'exists':
        return has;
      case '!':
        return !has;
    }
  });
}

type FieldReq = { path: string[]; neg: boolean; value: string };
function parseFieldSelector(sel: string): FieldReq[] {
  return sel
    .split(',')
    .filter((p) => p.trim())
    .map((p) => {
      const m = p.trim().match(/^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$/);
      if (!m) throw new ApiError(400, 'BadRequest', `invalid field selector "${sel}": expected field=value`);
      return { path: m[1]!.split('.'), neg: m[2] === '!=', value: m[3]! };
    });
}
function matchFields(reqs: FieldReq[], obj: KObject): boolean {
  return reqs.every((r) => {
    let v: any = obj;
    for (const k of r.path) v = isObj(v) ? v[k] : undefined;
    const s = v === undefined || v === null ? '' : String(v);
    return r.neg ? s !== r.value : s === r.value;
  });
}

// ---------- patches ----------

function mergePatch(target: any, patch: any): any {
  if (!isObj(patch)) return clone(patch);
  const out: KObject = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function jsonPatch(doc: any, ops: unknown): any {
  if (!Array.isArray(ops)) throw new ApiError(400, 'BadRequest', 'json patch body must be an array of operations');
  let root = clone(doc);
  const parse = (ptr: unknown): string[] => {
    if (typeof ptr !== 'string' || (ptr !== '' && !ptr.startsWith('/')))
      throw new ApiError(400, 'BadRequest', `invalid JSON pointer ${JSON.stringify(ptr)}`);
    return ptr === '' ? [] : ptr.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  };
  const fail = (msg: string): never => {
    throw new ApiError(422, 'Invalid', `the server rejected our request due to an error in our request: ${msg}`);
  };
  const parentOf = (path: string[]): [any, string] => {
    let p = root;
    for (const k of path.slice(0, -1)) {
      p = Array.isArray(p) ? p[Number(k)] : isObj(p) ? p[k] : undefined;
      if (p === undefined) fail(`path /${path.join('/')} does not exist`);
    }
    return [p, path[path.length - 1]!];
  };
  const get = (path: string[]): any => {
    if (path.length === 0) return root;
    const [p, k] = parentOf(path);
    const v = Array.isArray(p) ? p[Number(k)] : p[k];
    if (v === undefined) fail(`path /${path.join('/')} does not exist`);
    return v;
  };
  const remove = (path: string[]): any => {
    const v = get(path);
    const [p, k] = parentOf(path);
    if (Array.isArray(p)) p.splice(Number(k), 1);
    else delete p[k];
    return v;
  };
  const add = (path: string[], value: any): void => {
    if (path.length === 0) {
      root = value;
      return;
    }
    const [p, k] = parentOf(path);
    if (Array.isArray(p)) {
      const i = k === '-' ? p.length : Number(k);
      if (!Number.isInteger(i) || i < 0 || i > p.length) fail(`array index ${k} out of range`);
      p.splice(i, 0, value);
    } else if (isObj(p)) p[k] = value;
    else fail(`cannot add to non-container at /${path.join('/')}`);
  };
  for (const op of ops) {
    if (!isObj(op)) throw new ApiError(400, 'BadRequest', 'json patch operation must be an object');
    const path = parse(op.path);
    switch (op.op) {
      case 'add':
        add(path, clone(op.value));
        break;
      case 'remove':
        remove(path);
        break;
      case 'replace':
        remove(path);
        add(path, clone(op.value));
        break;
      case 'move':
        add(path, remove(parse(op.from)));
        break;
      case 'copy':
        add(path, clone(get(parse(op.from))));
        break;
      case 'test':
        if (!isDeepStrictEqual(get(path), op.value)) fail(`testing value /${path.join('/')} failed`);
        break;
      default:
        throw new ApiError(400, 'BadRequest', `unknown json patch op ${JSON.stringify(op.op)}`);
    }
  }
  return root;
}

// ---------- structural schemas ----------

/** Drops fields the schema does not declare (structural-schema pruning). */
function prune(value: any, schema: KObject | undefined, dropped: string[], path = '', root = false): void {
  if (!schema || schema['x-kubernetes-preserve-unknown-fields'] === true) return;
  if (Array.isArray(value)) {
    value.forEach((item, i) => prune(item, schema.items, dropped, `${path}[${i}]`));
    return;
  }
  if (!isObj(value)) return;
  const props: KObject = schema.properties ?? {};
  for (const k of Object.keys(value)) {
    // apiVersion, kind and metadata at the root are never pruned (metadata is ObjectMeta, not the schema's).
    if (root && (k === 'apiVersion' || k === 'kind' || k === 'metadata')) continue;
    const sub = path ? `${path}.${k}` : k;
    if (props[k]) prune(value[k], props[k], dropped, sub);
    else if (isObj(schema.additionalProperties)) prune(value[k], schema.additionalProperties, dropped, sub);
    else if (schema.additionalProperties !== true) {
      delete value[k];
      dropped.push(sub);
    }
  }
}

/** Applies `default`s top-down, so defaults inside a defaulted object apply too. */
function applyDefaults(value: any, schema: KObject | undefined): void {
  if (!schema) return;
  if (Array.isArray(value)) {
    for (const item of value) applyDefaults(item, schema.items);
    return;
  }
  if (!isObj(value)) return;
  for (const [k, s] of Object.entries<KObject>(schema.properties ?? {})) {
    if (value[k] === undefined && s.default !== undefined) value[k] = clone(s.default);
    applyDefaults(value[k], s);
  }
  if (isObj(schema.additionalProperties)) for (const k of Object.keys(value)) applyDefaults(value[k], schema.additionalProperties);
}

const KNOWN_FORMATS = new Set(['date-time', 'date', 'uuid', 'email', 'hostname', 'ipv4', 'ipv6', 'uri']);
/** OpenAPI v3 (Kubernetes dialect) → JSON schema ajv understands. */
function toJsonSchema(s: any): any {
  if (Array.isArray(s)) return s.map(toJsonSchema);
  if (!isObj(s)) return s;
  const out: KObject = {};
  for (const [k, v] of Object.entries(s)) {
    if (k.startsWith('x-kubernetes-') || k === 'nullable' || k === 'description' || k === 'example' || k === 'externalDocs')
      continue;
    if (k === 'format' && !KNOWN_FORMATS.has(v as string)) continue;
    if (k === 'properties' || k === 'patternProperties' || k === 'definitions')
      out[k] = Object.fromEntries(Object.entries(v as KObject).map(([pk, pv]) => [pk, toJsonSchema(pv)]));
    else out[k] = toJsonSchema(v);
  }
  if (s['x-kubernetes-int-or-string'] === true) {
    delete out.type;
    out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  }
  if (s.nullable === true && typeof out.type === 'string') out.type = [out.type, 'null'];
  return out;
}

function fieldPath(instancePath: string): string {
  return instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, s) => (/^\d+$/.test(s) ? `${acc}[${s}]` : acc ? `${acc}.${s}` : s), '');
}

function ajvCauses(errors: ErrorObject[], obj: KObject): { field: string; message: string }[] {
  return errors.map((e) => {
    const base = fieldPath(e.instancePath);
    if (e.keyword === 'required') {
      const p = (e.params as { missingProperty: string }).missingProperty;
      return { field: base ? `${base}.${p}` : p, message: 'Required value' };
    }
    let v: any = obj;
    for (const seg of e.instancePath.split('/').slice(1)) v = v?.[seg.replace(/~1/g, '/').replace(/~0/g, '~')];
    if (e.keyword === 'enum') {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues.map((a) => JSON.stringify(a)).join(', ');
      return { field: base, message: `Unsupported value: ${JSON.stringify(v)}: supported values: ${allowed}` };
    }
    return { field: base, message: `Invalid value: ${JSON.stringify(v)}: ${e.message ?? e.keyword}` };
  });
}

// ---------- table rendering ----------

function jsonPathGet(obj: KObject, path: string): unknown {
  const segs = path.replace(/^\{?\.?/, '').replace(/\}$/, '').match(/[^.[\]]+|\[\d+\]/g) ?? [];
  let v: any = obj;
  for (const s of segs) {
    if (v === undefined || v === null) return undefined;
    v = s.startsWith('[') ? (Array.isArray(v) ? v[Number(s.slice(1, -1))] : undefined) : v[s];
  }
  return v;
}

/** k8s.io/apimachinery/pkg/util/duration.HumanDuration. */
export function humanDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < -1) return '<invalid>';
  if (s < 0) return '0s';
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (h < 192) return h % 24 === 0 ? `${d}d` : `${d}d${h % 24}h`;
  if (d < 730) return `${d}d`;
  return `${Math.floor(d / 365)}y`;
}

// ---------- the store ----------

interface HistoryEvent {
  rv: number;
  gr: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  obj: KObject;
  prev?: KObject;
}

interface Watcher {
  gr: string;
  version: string;
  ns?: string;
  labels: Requirement[];
  fields: FieldReq[];
  res: ServerResponse;
  close(): void;
}

const BUILTINS: Omit<ResourceType, 'listKind' | 'singular' | 'categories'>[] = [
  { group: '', versions: ['v1'], kind: 'Namespace', plural: 'namespaces', namespaced: false, shortNames: ['ns'], statusSubresource: true },
  { group: '', versions: ['v1'], kind: 'Pod', plural: 'pods', namespaced: true, shortNames: ['po'], statusSubresource: true },
  { group: '', versions: ['v1'], kind: 'Node', plural: 'nodes', namespaced: false, shortNames: ['no'], statusSubresource: true },
  { group: '', versions: ['v1'], kind: 'Event', plural: 'events', namespaced: true, shortNames: ['ev'], statusSubresource: false },
  { group: '', versions: ['v1'], kind: 'ConfigMap', plural: 'configmaps', namespaced: true, shortNames: ['cm'], statusSubresource: false },
  { group: '', versions: ['v1'], kind: 'Secret', plural: 'secrets', namespaced: true, shortNames: [], statusSubresource: false },
  { group: '', versions: ['v1'], kind: 'Service', plural: 'services', namespaced: true, shortNames: ['svc'], statusSubresource: true },
  { group: '', versions: ['v1'], kind: 'ServiceAccount', plural: 'serviceaccounts', namespaced: true, shortNames: ['sa'], statusSubresource: false },
  { group: 'apps', versions: ['v1'], kind: 'Deployment', plural: 'deployments', namespaced: true, shortNames: ['deploy'], statusSubresource: true },
  { group: 'apps', versions: ['v1'], kind: 'DaemonSet', plural: 'daemonsets', namespaced: true, shortNames: ['ds'], statusSubresource: true },
  { group: 'apps', versions: ['v1'], kind: 'ReplicaSet', plural: 'replicasets', namespaced: true, shortNames: ['rs'], statusSubresource: true },
  { group: 'coordination.k8s.io', versions: ['v1'], kind: 'Lease', plural: 'leases', namespaced: true, shortNames: [], statusSubresource: false },
  { group: 'events.k8s.io', versions: ['v1'], kind: 'Event', plural: 'events', namespaced: true, shortNames: ['ev'], statusSubresource: false },
  {
    group: 'apiextensions.k8s.io',
    versions: ['v1'],
    kind: 'CustomResourceDefinition',
    plural: 'customresourcedefinitions',
    namespaced: false,
    shortNames: ['crd', 'crds'],
    statusSubresource: true,
  },
];

export class Store {
  private rv = 0;
  /** History holds every event with rv > compactedRv. */
  private compactedRv = 0;
  private history: HistoryEvent[] = [];
  readonly types = new Map<string, ResourceType>();
  private data = new Map<string, Map<string, KObject>>();
  private readonly watchers = new Set<Watcher>();
  private gcScheduled = false;
  /** Watches refused with 410 Expired so far (lets tests prove a client went through the relist path). */
  expiredWatches = 0;
  /** Open watches whose delivery is held by stallWatches(), with the lines held back. */
  private readonly stalled = new Map<Watcher, string[]>();
  private failWith: number | undefined;
  /** Status writes still to be refused with 409 Conflict (see injectStatusConflicts), and those refused so far. */
  private statusConflicts = 0;
  conflictsInjected = 0;

  /** The next `n` writes to any status subresource fail with 409 Conflict, as if someone had written first. */
  injectStatusConflicts(n: number): void {
    this.statusConflicts = n;
  }

  /** Requests refused by failRequests so far (lets tests count a client's retries). */
  failedRequests = 0;
  private gcRunning: Promise<void> = Promise.resolve();

  constructor(private readonly historySize: number) {
    for (const b of BUILTINS)
      this.register({ ...b, listKind: `${b.kind}List`, singular: b.kind.toLowerCase(), categories: [] });
    for (const ns of ['default', 'kube-system', 'kube-public']) this.create(this.type('', 'namespaces'), 'v1', '', { metadata: { name: ns } });
  }

  resourceVersion(): string {
    return String(this.rv);
  }

  type(group: string, plural: string): ResourceType {
    const rt = this.types.get(grKey(group, plural));
    if (!rt) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    return rt;
  }

  private register(rt: ResourceType): void {
    this.types.set(grKey(rt.group, rt.plural), rt);
    if (!this.data.has(grKey(rt.group, rt.plural))) this.data.set(grKey(rt.group, rt.plural), new Map());
  }

  private bucket(rt: ResourceType): Map<string, KObject> {
    return this.data.get(grKey(rt.group, rt.plural))!;
  }

  /** The stored object (a copy), or undefined. */
  get(group: string, plural: string, ns: string, name: string): KObject | undefined {
    const o = this.data.get(grKey(group, plural))?.get(objKey(ns, name));
    return o && clone(o);
  }

  /** The stored objects of a type (copies), optionally in one namespace. */
  list(group: string, plural: string, ns?: string): KObject[] {
    return [...(this.data.get(grKey(group, plural))?.values() ?? [])]
      .filter((o) => ns === undefined || o.metadata.namespace === ns)
      .map(clone);
  }

  watcherCount(): number {
    return this.watchers.size;
  }

  /** Forgets all watch history: a watch from any earlier resourceVersion now gets 410 Gone. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  /** Ends every watch stream: cleanly (like a server-side timeout) or by resetting the connection. */
  cutWatches(opts: { abrupt?: boolean } = {}): void {
    for (const w of [...this.watchers]) {
      if (opts.abrupt) w.res.socket?.destroy();
      w.close();
    }
  }

  /**
   * Holds every open watch: its connection stays open but nothing arrives (events are kept back, bookmarks
   * skipped), as on a silently stalled connection. Watches opened later are unaffected.
   */
  stallWatches(): void {
    for (const w of this.watchers) if (!this.stalled.has(w)) this.stalled.set(w, []);
  }

  /** Ends stallWatches(): the held events are sent, in order, on the watches still open. */
  resumeWatches(): void {
    for (const [w, lines] of this.stalled) for (const line of lines) w.res.write(line);
    this.stalled.clear();
  }

  /**
   * Makes every request for API resources (not discovery, health or OpenAPI) fail with `code` until called
   * with undefined; open watches are not touched (cutWatches ends them).
   */
  failRequests(code: number | undefined): void {
    if (code !== undefined && !(Number.isInteger(code) && code >= 400 && code <= 599))
      throw new RangeError(`failRequests wants an HTTP error status 400-599 or undefined, got ${code}`);
    this.failWith = code;
  }

  /** The HTTP status every resource request fails with while set (see failRequests). */
  get injectedFailure(): number | undefined {
    return this.failWith;
  }

  /** Sends a BOOKMARK carrying the current resourceVersion on every watch that allowed bookmarks. */
  readonly bookmarkers = new Set<() => void>();
  sendBookmarks(): void {
    for (const b of this.bookmarkers) b();
  }

  /** Resolves once pending garbage collection (owner cascade, namespace cleanup) has run. */
  async settle(): Promise<void> {
    while (this.gcScheduled) await new Promise((r) => setTimeout(r, 5));
    await this.gcRunning;
  }

  private view(rt: ResourceType, version: string, o: KObject): KObject {
    const c = clone(o);
    c.apiVersion = apiVersionOf(rt.group, version);
    c.kind = rt.kind;
    return c;
  }

  private emit(rt: ResourceType, type: HistoryEvent['type'], obj: KObject, prev?: KObject): void {
    const ev: HistoryEvent = { rv: this.rv, gr: grKey(rt.group, rt.plural), type, obj: clone(obj), prev: prev && clone(prev) };
    this.history.push(ev);
    while (this.history.length > this.historySize) this.compactedRv = this.history.shift()!.rv;
    for (const w of this.watchers) this.deliver(w, ev);
  }

  private watchMatches(w: Watcher, o: KObject | undefined): boolean {
    if (!o) return false;
    if (w.ns !== undefined && o.metadata.namespace !== w.ns) return false;
    return matchLabels(w.labels, o.metadata.labels) && matchFields(w.fields, o);
  }

  private deliver(w: Watcher, ev: HistoryEvent): void {
    if (ev.gr !== w.gr) return;
    const rt = this.types.get(w.gr);
    if (!rt) return;
    const now = this.watchMatches(w, ev.obj);
    const before = ev.type === 'MODIFIED' && this.watchMatches(w, ev.prev);
    // An object entering or leaving the selection is ADDED / DELETED for that watch, as on the real server.
    let type: string | undefined = ev.type;
    if (ev.type === 'MODIFIED') type = now && before ? 'MODIFIED' : now ? 'ADDED' : before ? 'DELETED' : undefined;
    else if (!now) type = undefined;
    if (!type) return;
    const obj = this.view(rt, w.version, ev.obj);
    if (type === 'DELETED' && ev.type === 'MODIFIED') obj.metadata.resourceVersion = String(ev.rv);
    const line = JSON.stringify({ type, object: obj }) + '\n';
    const held = this.stalled.get(w);
    if (held) held.push(line);
    else w.res.write(line);
  }

  // ----- CRDs -----

  private crdToType(crd: KObject): ResourceType {
    const spec = crd.spec ?? {};
    const names = spec.names ?? {};
    const name = crd.metadata?.name ?? '';
    const causes: { field: string; message: string }[] = [];
    if (!spec.group) causes.push({ field: 'spec.group', message: 'Required value' });
    if (!names.plural) causes.push({ field: 'spec.names.plural', message: 'Required value' });
    if (!names.kind) causes.push({ field: 'spec.names.kind', message: 'Required value' });
    if (spec.scope !== 'Namespaced' && spec.scope !== 'Cluster')
      causes.push({ field: 'spec.scope', message: `Unsupported value: ${JSON.stringify(spec.scope)}: supported values: "Cluster", "Namespaced"` });
    const versions: KObject[] = Array.isArray(spec.versions) ? spec.versions : [];
    if (versions.length === 0) causes.push({ field: 'spec.versions', message: 'Invalid value: null: must have exactly one version marked as storage version' });
    if (names.plural && spec.group && name !== `${names.plural}.${spec.group}`)
      causes.push({ field: 'metadata.name', message: `Invalid value: ${JSON.stringify(name)}: must be spec.names.plural+"."+spec.group` });
    const crdType = this.type('apiextensions.k8s.io', 'customresourcedefinitions');
    if (causes.length) throw invalid(crdType, name, causes);
    const served = versions.filter((v) => v.served !== false);
    const storage = versions.find((v) => v.storage) ?? versions[0]!;
    const ordered = [storage, ...served.filter((v) => v !== storage)].map((v) => String(v.name));
    const schemas = new Map<string, KObject>();
    const validators = new Map<string, ValidateFunction>();
    const columns = new Map<string, PrinterColumn[]>();
    const ajv = new Ajv({ allErrors: true, strict: false });
    (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
    for (const v of versions) {
      const schema = v.schema?.openAPIV3Schema ?? { type: 'object', 'x-kubernetes-preserve-unknown-fields': true };
      schemas.set(v.name, schema);
      try {
        validators.set(v.name, ajv.compile(toJsonSchema(schema)));
      } catch (e) {
        throw invalid(crdType, name, [{ field: `spec.versions[${versions.indexOf(v)}].schema.openAPIV3Schema`, message: `Invalid value: ${(e as Error).message}` }]);
      }
      columns.set(v.name, Array.isArray(v.additionalPrinterColumns) ? v.additionalPrinterColumns : [{ name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' }]);
    }
    return {
      group: spec.group,
      versions: ordered,
      kind: names.kind,
      listKind: names.listKind ?? `${names.kind}List`,
      plural: names.plural,
      singular: names.singular ?? String(names.kind).toLowerCase(),
      namespaced: spec.scope === 'Namespaced',
      shortNames: names.shortNames ?? [],
      categories: names.categories ?? [],
      statusSubresource: versions.some((v) => v.subresources?.status !== undefined),
      custom: { schemas, validators, columns },
    };
  }

  // ----- writes -----

  /** Structural-schema handling of a custom resource: prune, default, validate. */
  private admitCustom(rt: ResourceType, version: string, o: KObject, fieldValidation: string): void {
    const schema = rt.custom!.schemas.get(version)!;
    const dropped: string[] = [];
    prune(o, schema, dropped, '', true);
    // fieldValidation=Strict (what kubectl sends) turns silent pruning into an error, as on the real server.
    if (fieldValidation === 'Strict' && dropped.length)
      throw new ApiError(400, 'BadRequest', `${rt.kind} in version "${version}" cannot be handled as a ${rt.kind}: strict decoding error: ${dropped.map((d) => `unknown field "${d}"`).join(', ')}`);
    applyDefaults(o, schema);
    const validate = rt.custom!.validators.get(version)!;
    // ajv's type guard would narrow `o` to never on failure; a plain boolean keeps it usable.
    const ok: boolean = validate(o);
    if (!ok) throw invalid(rt, o.metadata?.name ?? '', ajvCauses(validate.errors ?? [], o));
  }

  private checkMeta(rt: ResourceType, ns: string, o: KObject): void {
    if (!isObj(o)) throw new ApiError(400, 'BadRequest', 'request body must be a JSON object');
    if (o.metadata !== undefined && !isObj(o.metadata)) throw new ApiError(400, 'BadRequest', 'metadata must be an object');
    o.metadata ??= {};
    if (o.kind !== undefined && o.kind !== rt.kind)
      throw new ApiError(400, 'BadRequest', `the kind of the provided object ${JSON.stringify(o.kind)} does not match ${rt.kind}`);
    const bodyNs = o.metadata.namespace;
    if (rt.namespaced) {
      if (bodyNs !== undefined && bodyNs !== '' && bodyNs !== ns)
        throw new ApiError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
      o.metadata.namespace = ns;
    } else delete o.metadata.namespace;
    const labels = o.metadata.labels;
    if (labels !== undefined && (!isObj(labels) || Object.values(labels).some((v) => typeof v !== 'string')))
      throw invalid(rt, o.metadata.name ?? '', [{ field: 'metadata.labels', message: 'Invalid value: label values must be strings' }]);
  }

  private specChanged(rt: ResourceType, a: KObject, b: KObject): boolean {
    const strip = (o: KObject): KObject => {
      const { metadata: _m, status: _s, apiVersion: _a, kind: _k, ...rest } = o;
      return rt.statusSubresource ? rest : { ...rest, status: _s };
    };
    return !isDeepStrictEqual(strip(a), strip(b));
  }

  private finishWrite(rt: ResourceType, version: string, o: KObject, fieldValidation = ''): void {
    if (rt.plural === 'secrets' && rt.group === '' && isObj(o.stringData)) {
      // Like the real server: stringData is write-only, merged into base64 data.
      o.data = { ...(o.data ?? {}) };
      for (const [k, v] of Object.entries(o.stringData)) o.data[k] = Buffer.from(String(v)).toString('base64');
      delete o.stringData;
    }
    if (rt.custom) this.admitCustom(rt, version, o, fieldValidation);
    o.apiVersion = apiVersionOf(rt.group, rt.versions[0]!);
    o.kind = rt.kind;
  }

  create(rt: ResourceType, version: string, ns: string, body: KObject, fieldValidation = ''): KObject {
    const o = clone(body);
    this.checkMeta(rt, ns, o);
    const md = o.metadata;
    if (!md.name) {
      if (!md.generateName) throw invalid(rt, '', [{ field: 'metadata.name', message: 'Required value: name or generateName is required' }]);
      const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
      md.name = md.generateName + [...randomBytes(5)].map((b) => alphabet[b % alphabet.length]).join('');
    }
    if (typeof md.name !== 'string' || md.name.length > 253 || !DNS_SUBDOMAIN.test(md.name))
      throw invalid(rt, String(md.name), [
        { field: 'metadata.name', message: `Invalid value: ${JSON.stringify(md.name)}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'` },
      ]);
    if (rt.namespaced && !this.bucket(this.type('', 'namespaces')).has(objKey('', ns)))
      throw new ApiError(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' });
    if (rt.namespaced && this.bucket(this.type('', 'namespaces')).get(objKey('', ns))!.metadata.deletionTimestamp)
      throw new ApiError(403, 'Forbidden', `${rt.plural} "${md.name}" is forbidden: unable to create new content in namespace ${ns} because it is being terminated`);
    const key = objKey(rt.namespaced ? ns : '', md.name);
    if (this.bucket(rt).has(key))
      throw new ApiError(409, 'AlreadyExists', `${qualified(rt)} "${md.name}" already exists`, { name: md.name, group: rt.group, kind: rt.plural });
    // Server-owned metadata is set by the server, whatever the client sent.
    for (const k of ['uid', 'resourceVersion', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation']) delete md[k];
    if (rt.statusSubresource) delete o.status;
    if (rt.plural === 'namespaces' && rt.group === '') o.status = { phase: 'Active' };
    this.finishWrite(rt, version, o, fieldValidation);
    let crdType: ResourceType | undefined;
    if (rt.group === 'apiextensions.k8s.io') {
      crdType = this.crdToType(o);
      if (this.types.has(grKey(crdType.group, crdType.plural)) && !this.types.get(grKey(crdType.group, crdType.plural))!.custom)
        throw invalid(rt, md.name, [{ field: 'spec.names.plural', message: 'Invalid value: conflicts with a built-in resource' }]);
    }
    md.uid = randomUUID();
    md.creationTimestamp = now();
    md.generation = 1;
    md.resourceVersion = String(++this.rv);
    this.bucket(rt).set(key, o);
    this.emit(rt, 'ADDED', o);
    // A dependent whose owners are already gone is collected, as the real garbage collector does.
    if (md.ownerReferences?.length) this.scheduleGc();
    if (crdType) {
      this.register(crdType);
      // The real apiextensions controller marks the CRD Established asynchronously; here it follows at once.
      const prev = clone(o);
      o.status = {
        conditions: ['NamesAccepted', 'Established'].map((type) => ({ type, status: 'True', reason: type === 'Established' ? 'InitialNamesAccepted' : 'NoConflicts', message: '', lastTransitionTime: now() })),
        acceptedNames: o.spec.names,
        storedVersions: [crdType.versions[0]],
      };
      md.resourceVersion = String(++this.rv);
      this.emit(rt, 'MODIFIED', o, prev);
    }
    return this.view(rt, version, o);
  }

  /** PUT (and the second half of PATCH): `sub` is 'status' for the status subresource. */
  update(rt: ResourceType, version: string, ns: string, name: string, body: KObject, sub?: string, fromPatch = false, fieldValidation = ''): KObject {
    const key = objKey(rt.namespaced ? ns : '', name);
    const old = this.bucket(rt).get(key);
    if (!old) throw notFound(rt, name);
    const o = clone(body);
    this.checkMeta(rt, ns, o);
    const md = o.metadata;
    if (md.name !== undefined && md.name !== name)
      throw new ApiError(400, 'BadRequest', `the name of the object (${md.name}) does not match the name on the URL (${name})`);
    md.name = name;
    if (md.resourceVersion !== undefined && md.resourceVersion !== '' && md.resourceVersion !== old.metadata.resourceVersion) throw conflict(rt, name);
    if (sub === 'status' && this.statusConflicts > 0) {
      this.statusConflicts--;
      this.conflictsInjected++;
      throw conflict(rt, name);
    }
    if (!fromPatch && (md.resourceVersion === undefined || md.resourceVersion === '') && rt.custom)
      throw invalid(rt, name, [{ field: 'metadata.resourceVersion', message: 'Invalid value: 0x0: must be specified for an update' }]);
    if (md.uid !== undefined && md.uid !== old.metadata.uid)
      throw new ApiError(409, 'Conflict', `Precondition failed: UID in precondition: ${md.uid}, UID in object meta: ${old.metadata.uid}`);
    let next: KObject;
    if (sub === 'status') {
      // The status subresource changes only status (and nothing of spec or metadata).
      next = clone(old);
      if (o.status === undefined) delete next.status;
      else next.status = o.status;
    } else {
      next = o;
      if (rt.statusSubresource) {
        if (old.status === undefined) delete next.status;
        else next.status = clone(old.status);
      }
      for (const k of ['uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation']) {
        if (old.metadata[k] === undefined) delete md[k];
        else md[k] = old.metadata[k];
      }
      if (old.metadata.deletionTimestamp) {
        const added = (md.finalizers ?? []).filter((f: string) => !(old.metadata.finalizers ?? []).includes(f));
        if (added.length) throw invalid(rt, name, [{ field: 'metadata.finalizers', message: `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}` }]);
      }
    }
    next.metadata.resourceVersion = old.metadata.resourceVersion;
    this.finishWrite(rt, version, next, fieldValidation);
    if (rt.group === 'apiextensions.k8s.io' && sub !== 'status') {
      const t = this.crdToType(next);
      if (t.group !== old.spec.group || t.plural !== old.spec.names.plural)
        throw invalid(rt, name, [{ field: 'spec', message: 'Invalid value: group and names.plural are immutable' }]);
      this.register(t);
    }
    // A write that changes nothing is a no-op: no new resourceVersion, no watch event.
    if (isDeepStrictEqual(next, old)) return this.view(rt, version, old);
    if (this.specChanged(rt, old, next)) next.metadata.generation = (old.metadata.generation ?? 0) + 1;
    next.metadata.resourceVersion = String(++this.rv);
    if (next.metadata.deletionTimestamp && !(next.metadata.finalizers?.length)) {
      this.bucket(rt).delete(key);
      this.removed(rt, next);
      return this.view(rt, version, next);
    }
    this.bucket(rt).set(key, next);
    this.emit(rt, 'MODIFIED', next, old);
    if (!isDeepStrictEqual(old.metadata.ownerReferences, next.metadata.ownerReferences)) this.scheduleGc();
    return this.view(rt, version, next);
  }

  patch(rt: ResourceType, version: string, ns: string, name: string, contentType: string, patchBody: unknown, sub?: string, fieldValidation = ''): KObject {
    const old = this.bucket(rt).get(objKey(rt.namespaced ? ns : '', name));
    const apply = contentType === 'application/apply-patch+yaml';
    if (apply) {
      // Minimal server-side apply: create, or merge the applied configuration into the object. Not modelled:
      // field managers and ownership (fieldManager and force are ignored, nothing is ever a conflict), and
      // removal of fields an earlier apply set but this one leaves out.
      if (!isObj(patchBody)) throw new ApiError(400, 'BadRequest', 'apply patch body must be an object');
      if (patchBody.metadata !== undefined && !isObj(patchBody.metadata)) throw new ApiError(400, 'BadRequest', 'metadata must be an object');
      if (patchBody.metadata?.name !== undefined && patchBody.metadata.name !== name)
        throw new ApiError(400, 'BadRequest', `the name of the object (${patchBody.metadata.name}) does not match the name on the URL (${name})`);
      if (!old) {
        if (sub !== undefined) throw notFound(rt, name);
        return this.create(rt, version, ns, { ...patchBody, metadata: { ...patchBody.metadata, name } }, fieldValidation);
      }
    }
    if (!old) throw notFound(rt, name);
    const base = this.view(rt, version, old);
    let next: any;
    if (contentType === 'application/merge-patch+json' || apply) next = mergePatch(base, patchBody);
    else if (contentType === 'application/json-patch+json') next = jsonPatch(base, patchBody);
    else if (contentType === 'application/strategic-merge-patch+json') {
      if (rt.custom) throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`);
      // Simplification: built-in types take strategic merge patches as JSON merge patches (no list merge keys).
      next = mergePatch(base, patchBody);
    } else
      throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml${rt.custom ? '' : ', application/strategic-merge-patch+json'}`);
    if (!isObj(next)) throw new ApiError(422, 'Invalid', 'patched object must be a JSON object');
    return this.update(rt, version, ns, name, next, sub, true, fieldValidation);
  }

  delete(rt: ResourceType, version: string, ns: string, name: string, opts: KObject = {}): KObject {
    const key = objKey(rt.namespaced ? ns : '', name);
    const old = this.bucket(rt).get(key);
    if (!old) throw notFound(rt, name);
    const pre = opts.preconditions ?? {};
    if (pre.uid && pre.uid !== old.metadata.uid)
      throw new ApiError(409, 'Conflict', `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`);
    if (pre.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion) throw conflict(rt, name);
    const policy = opts.propagationPolicy ?? (opts.orphanDependents === true ? 'Orphan' : 'Background');
    if (!['Background', 'Foreground', 'Orphan'].includes(policy))
      throw invalid(rt, name, [{ field: 'propagationPolicy', message: `Unsupported value: ${JSON.stringify(policy)}` }]);
    if (policy === 'Orphan') this.orphan(old.metadata.uid);
    const finalizers: string[] = [...(old.metadata.finalizers ?? [])];
    if (policy === 'Foreground' && !finalizers.includes('foregroundDeletion')) finalizers.push('foregroundDeletion');
    const isNamespace = rt.group === '' && rt.plural === 'namespaces';
    if (finalizers.length || isNamespace) {
      if (old.metadata.deletionTimestamp && isDeepStrictEqual(finalizers, old.metadata.finalizers ?? [])) return this.view(rt, version, old);
      const next = clone(old);
      if (finalizers.length) next.metadata.finalizers = finalizers;
      else delete next.metadata.finalizers;
      if (!next.metadata.deletionTimestamp) {
        next.metadata.deletionTimestamp = now();
        next.metadata.deletionGracePeriodSeconds = 0;
        next.metadata.generation = (old.metadata.generation ?? 0) + 1;
      }
      if (isNamespace) next.status = { ...(next.status ?? {}), phase: 'Terminating' };
      next.metadata.resourceVersion = String(++this.rv);
      this.bucket(rt).set(key, next);
      this.emit(rt, 'MODIFIED', next, old);
      this.scheduleGc();
      return this.view(rt, version, next);
    }
    this.bucket(rt).delete(key);
    const gone = clone(old);
    gone.metadata.resourceVersion = String(++this.rv);
    this.removed(rt, gone);
    return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, group: rt.group, kind: rt.plural, uid: old.metadata.uid } };
  }

  /** An object left the store: DELETED event, CRD teardown, and garbage collection of its dependents. */
  private removed(rt: ResourceType, gone: KObject): void {
    this.emit(rt, 'DELETED', gone);
    if (rt.group === 'apiextensions.k8s.io') {
      // Simplification: instances go at once, without the real customresourcecleanup finalizer round trip.
      const t = this.types.get(grKey(gone.spec.group, gone.spec.names.plural));
      if (t?.custom) {
        for (const [k, o] of [...this.bucket(t)]) {
          this.bucket(t).delete(k);
          const c = clone(o);
          c.metadata.resourceVersion = String(++this.rv);
          this.emit(t, 'DELETED', c);
        }
        this.types.delete(grKey(t.group, t.plural));
      }
    }
    this.scheduleGc();
  }

  private orphan(uid: string): void {
    for (const [gr, bucket] of this.data) {
      const rt = this.types.get(gr);
      if (!rt) continue;
      for (const o of bucket.values()) {
        const refs: KObject[] = o.metadata.ownerReferences ?? [];
        if (!refs.some((r) => r.uid === uid)) continue;
        const patched = clone(o);
        patched.metadata.ownerReferences = refs.filter((r) => r.uid !== uid);
        if (!patched.metadata.ownerReferences.length) delete patched.metadata.ownerReferences;
        this.update(rt, rt.versions[0]!, o.metadata.namespace ?? '', o.metadata.name, patched, undefined, true);
      }
    }
  }

  private scheduleGc(): void {
    if (this.gcScheduled) return;
    this.gcScheduled = true;
    // Like the real garbage collector: asynchronous, soon after the owner goes.
    setImmediate(() => {
      this.gcScheduled = false;
      this.gcRunning = this.gcRunning.then(() => this.gcPass());
    });
  }

  private gcPass(): void {
    const byUid = new Map<string, KObject>();
    for (const bucket of this.data.values()) for (const o of bucket.values()) byUid.set(o.metadata.uid, o);
    const safeDelete = (rt: ResourceType, o: KObject, opts: KObject = {}): void => {
      try {
        this.delete(rt, rt.versions[0]!, o.metadata.namespace ?? '', o.metadata.name, opts);
      } catch (e) {
        if (!(e instanceof ApiError && e.code === 404)) throw e;
      }
    };
    for (const [gr, bucket] of this.data) {
      const rt = this.types.get(gr);
      if (!rt) continue;
      for (const o of [...bucket.values()]) {
        const refs: KObject[] = o.metadata.ownerReferences ?? [];
        if (!refs.length) continue;
        const live = refs.filter((r) => {
          const owner = byUid.get(r.uid);
          return owner && (!owner.metadata.namespace || owner.metadata.namespace === o.metadata.namespace);
        });
        const foregroundOwner = live.some((r) => byUid.get(r.uid)!.metadata.finalizers?.includes('foregroundDeletion'));
        if (live.length === 0 || foregroundOwner) {
          if (!o.metadata.deletionTimestamp) safeDelete(rt, o, foregroundOwner ? { propagationPolicy: 'Foreground' } : {});
        } else if (live.length < refs.length) {
          const patched = clone(o);
          patched.metadata.ownerReferences = live;
          this.update(rt, rt.versions[0]!, o.metadata.namespace ?? '', o.metadata.name, patched, undefined, true);
        }
      }
    }
    // Owners in foreground deletion lose that finalizer once no dependent is left.
    const dependents = new Set<string>();
    for (const bucket of this.data.values()) for (const o of bucket.values()) for (const r of o.metadata.ownerReferences ?? []) dependents.add(r.uid);
    for (const [gr, bucket] of this.data) {
      const rt = this.types.get(gr);
      if (!rt) continue;
      for (const o of [...bucket.values()]) {
        if (o.metadata.finalizers?.includes('foregroundDeletion') && !dependents.has(o.metadata.uid)) {
          const patched = clone(o);
          patched.metadata.finalizers = o.metadata.finalizers.filter((f: string) => f !== 'foregroundDeletion');
          this.update(rt, rt.versions[0]!, o.metadata.namespace ?? '', o.metadata.name, patched, undefined, true);
        }
      }
    }
    // Terminating namespaces: delete their contents, then the namespace itself once empty.
    const nsType = this.type('', 'namespaces');
    for (const nsObj of [...this.bucket(nsType).values()]) {
      if (!nsObj.metadata.deletionTimestamp) continue;
      const ns = nsObj.metadata.name;
      for (const [gr, bucket] of this.data) {
        const rt = this.types.get(gr);
        if (!rt?.namespaced) continue;
        for (const o of [...bucket.values()]) {
          if (o.metadata.namespace !== ns) continue;
          if (!o.metadata.deletionTimestamp) safeDelete(rt, o);
        }
      }
      const stillThere = [...this.data].some(([gr, b]) => this.types.get(gr)?.namespaced && [...b.values()].some((o) => o.metadata.namespace === ns));
      if (!stillThere && !nsObj.metadata.finalizers?.length) {
        this.bucket(nsType).delete(objKey('', ns));
        const gone = clone(nsObj);
        gone.metadata.resourceVersion = String(++this.rv);
        this.removed(nsType, gone);
      }
      // Otherwise the next removal (a finalizer dropped, a dependent collected) schedules another pass.
    }
  }

  // ----- reads -----

  listObjects(rt: ResourceType, version: string, ns: string | undefined, q: URLSearchParams): KObject {
    const labels = parseLabelSelector(q.get('labelSelector') ?? '');
    const fields = parseFieldSelector(q.get('fieldSelector') ?? '');
    let items = [...this.bucket(rt).entries()]
      .filter(([, o]) => ns === undefined || o.metadata.namespace === ns)
      .filter(([, o]) => matchLabels(labels, o.metadata.labels) && matchFields(fields, o))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    // Simplification: continue tokens resume after the last key against the current state, not a snapshot.
    const cont = q.get('continue');
    if (cont) {
      const after = Buffer.from(cont, 'base64url').toString();
      items = items.filter(([k]) => k > after);
    }
    const limit = Number(q.get('limit') ?? 0);
    const meta: KObject = { resourceVersion: String(this.rv) };
    if (limit > 0 && items.length > limit) {
      meta.continue = Buffer.from(items[limit - 1]![0]).toString('base64url');
      meta.remainingItemCount = items.length - limit;
      items = items.slice(0, limit);
    }
    return {
      kind: rt.listKind,
      apiVersion: apiVersionOf(rt.group, version),
      metadata: meta,
      items: items.map(([, o]) => this.view(rt, version, o)),
    };
  }

  getObject(rt: ResourceType, version: string, ns: string, name: string): KObject {
    const o = this.bucket(rt).get(objKey(rt.namespaced ? ns : '', name));
    if (!o) throw notFound(rt, name);
    return this.view(rt, version, o);
  }

  table(rt: ResourceType, version: string, objs: KObject[], listMeta: KObject, includeObject: string): KObject {
    const cols: PrinterColumn[] = rt.custom?.columns.get(version) ?? [{ name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' }];
    const t = Date.now();
    return {
      kind: 'Table',
      apiVersion: 'meta.k8s.io/v1',
      metadata: { resourceVersion: listMeta.resourceVersion, ...(listMeta.continue ? { continue: listMeta.continue } : {}) },
      columnDefinitions: [
        { name: 'Name', type: 'string', format: 'name', description: 'Name must be unique within a namespace.', priority: 0 },
        ...cols.map((c) => ({ name: c.name, type: c.type, format: c.format ?? '', description: c.description ?? '', priority: c.priority ?? 0 })),
      ],
      rows: objs.map((o) => ({
        cells: [
          o.metadata.name,
          ...cols.map((c) => {
            const v = jsonPathGet(o, c.jsonPath);
            if (v === undefined || v === null) return null;
            if (c.type === 'date') return humanDuration(t - Date.parse(String(v)));
            return typeof v === 'object' ? JSON.stringify(v) : v;
          }),
        ],
        object:
          includeObject === 'None'
            ? undefined
            : includeObject === 'Object'
              ? o
              : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata },
      })),
    };
  }

  // ----- watch -----

  watch(rt: ResourceType, version: string, ns: string | undefined, q: URLSearchParams, res: ServerResponse, bookmarkIntervalMs: number): void {
    const labels = parseLabelSelector(q.get('labelSelector') ?? '');
    const fields = parseFieldSelector(q.get('fieldSelector') ?? '');
    const rvParam = q.get('resourceVersion') ?? '';
    if (rvParam !== '' && !/^\d+$/.test(rvParam))
      throw new ApiError(400, 'BadRequest', `invalid resource version: ${JSON.stringify(rvParam)}`);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const timers: NodeJS.Timeout[] = [];
    let closed = false;
    const bookmark = (extra?: KObject): void => {
      if (closed || this.stalled.has(w)) return;
      const obj = { kind: rt.kind, apiVersion: apiVersionOf(rt.group, version), metadata: { resourceVersion: String(this.rv), ...(extra ?? {}) } };
      res.write(JSON.stringify({ type: 'BOOKMARK', object: obj }) + '\n');
    };
    const w: Watcher = {
      gr: grKey(rt.group, rt.plural),
      version,
      ns,
      labels,
      fields,
      res,
      close: () => {
        if (closed) return;
        closed = true;
        this.watchers.delete(w);
        this.stalled.delete(w);
        this.bookmarkers.delete(bookmark);
        for (const tm of timers) clearTimeout(tm);
        if (!res.writableEnded) res.end();
      },
    };
    res.on('close', w.close);
    if (rvParam !== '' && rvParam !== '0' && Number(rvParam) < this.compactedRv) {
      const status = {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `too old resource version: ${rvParam} (${this.compactedRv})`,
        reason: 'Expired',
        code: 410,
      };
      res.write(JSON.stringify({ type: 'ERROR', object: status }) + '\n');
      this.expiredWatches++;
      w.close();
      return;
    }
    if (rvParam === '' || rvParam === '0' || q.get('sendInitialEvents') === 'true') {
      // Without a resourceVersion a watch starts with the current state as synthetic ADDED events.
      for (const o of this.bucket(rt).values())
        if (this.watchMatches(w, o)) res.write(JSON.stringify({ type: 'ADDED', object: this.view(rt, version, o) }) + '\n');
      if (q.get('sendInitialEvents') === 'true' && q.get('allowWatchBookmarks') === 'true')
        bookmark({ annotations: { 'k8s.io/initial-events-end': 'true' } });
    } else {
      for (const ev of this.history) if (ev.rv > Number(rvParam)) this.deliver(w, ev);
    }
    this.watchers.add(w);
    if (q.get('allowWatchBookmarks') === 'true') {
      this.bookmarkers.add(bookmark);
      const tick = (): void => {
        bookmark();
        timers[0] = setTimeout(tick, bookmarkIntervalMs);
      };
      timers[0] = setTimeout(tick, bookmarkIntervalMs);
    }
    const timeout = Number(q.get('timeoutSeconds') ?? 0);
    if (timeout > 0) timers.push(setTimeout(w.close, timeout * 1000));
  }

  closeAll(): void {
    for (const w of [...this.watchers]) w.close();
  }

  /**
   * Minimal OpenAPI v3: the root index and per group-version documents with each resource's PATCH
   * operation (its GVK, the `fieldValidation` parameter, accepted patch types) and schema. kubectl needs
   * this to choose server-side field validation and the patch type of `kubectl apply`.
   */
  openapi(gvPath: string): KObject {
    const gvs = new Map<string, [string, string]>();
    for (const rt of this.types.values()) for (const v of rt.versions) gvs.set(rt.group ? `apis/${rt.group}/${v}` : `api/${v}`, [rt.group, v]);
    if (gvPath === '') {
      return { paths: Object.fromEntries([...gvs.keys()].map((p) => [p, { serverRelativeURL: `/openapi/v3/${p}?hash=${this.rv}` }])) };
    }
    const gv = gvs.get(gvPath);
    if (!gv) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const [group, version] = gv;
    const paths: KObject = {};
    const schemas: KObject = {};
    for (const rt of this.types.values()) {
      if (rt.group !== group || !rt.versions.includes(version)) continue;
      const gvk = { group, version, kind: rt.kind };
      const schemaName = `${group ? group.split('.').reverse().join('.') : 'io.k8s.api.core'}.${version}.${rt.kind}`;
      schemas[schemaName] = { ...(rt.custom?.schemas.get(version) ?? { type: 'object', 'x-kubernetes-preserve-unknown-fields': true }), 'x-kubernetes-group-version-kind': [gvk] };
      const ref = { $ref: `#/components/schemas/${schemaName}` };
      const types = ['application/json-patch+json', 'application/merge-patch+json', APPLY_PATCH, ...(rt.custom ? [] : ['application/strategic-merge-patch+json'])];
      const base = `/${gvPath}${rt.namespaced ? '/namespaces/{namespace}' : ''}/${rt.plural}/{name}`;
      paths[base] = {
        get: { 'x-kubernetes-group-version-kind': gvk, responses: { '200': { content: { 'application/json': { schema: ref } } } } },
        patch: {
          'x-kubernetes-group-version-kind': gvk,
          parameters: ['dryRun', 'fieldManager', 'fieldValidation', 'force'].map((name) => ({ name, in: 'query', schema: { type: 'string' } })),
          requestBody: { content: Object.fromEntries(types.map((t) => [t, { schema: { type: 'object' } }])) },
          responses: { '200': { content: { 'application/json': { schema: ref } } } },
        },
      };
    }
    return { openapi: '3.0.0', info: { title: 'Kubernetes', version: 'v1.33.0' }, paths, components: { schemas } };
  }

  discovery(group: string, version: string): KObject {
    const resources: KObject[] = [];
    for (const rt of this.types.values()) {
      if (rt.group !== group || !rt.versions.includes(version)) continue;
      const verbs = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
      resources.push({ name: rt.plural, singularName: rt.singular, namespaced: rt.namespaced, kind: rt.kind, verbs, shortNames: rt.shortNames, categories: rt.categories });
      if (rt.statusSubresource) resources.push({ name: `${rt.plural}/status`, singularName: '', namespaced: rt.namespaced, kind: rt.kind, verbs: ['get', 'patch', 'update'] });
    }
    if (!resources.length) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersionOf(group, version), resources };
  }

  groups(): KObject {
    const byGroup = new Map<string, Set<string>>();
    for (const rt of this.types.values()) {
      if (!rt.group) continue;
      const s = byGroup.get(rt.group) ?? new Set<string>();
      rt.versions.forEach((v) => s.add(v));
      byGroup.set(rt.group, s);
    }
    return {
      kind: 'APIGroupList',
      apiVersion: 'v1',
      groups: [...byGroup].map(([name, vs]) => {
        const versions = [...vs].map((v) => ({ groupVersion: `${name}/${v}`, version: v }));
        return { name, versions, preferredVersion: versions[0] };
      }),
    };
  }
}

// ---------- HTTP ----------

const APPLY_PATCH = 'application/apply-patch+yaml';
const MAX_BODY = 3 * 1024 * 1024; // the real server's request size limit

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    // Past the limit the rest is drained, not stored, so the client reads the 413 instead of a reset.
    if (size <= MAX_BODY) chunks.push(c as Buffer);
  }
  if (size > MAX_BODY) throw new ApiError(413, 'RequestEntityTooLarge', `request body exceeds ${MAX_BODY} bytes`);
  const raw = Buffer.concat(chunks);
  if ((req.headers['content-type'] ?? '').startsWith('application/vnd.kubernetes.protobuf')) return decodeProtobuf(raw);
  const text = raw.toString('utf8');
  if (!text.trim()) return undefined;
  try {
    // Server-side apply bodies are YAML (of which JSON is a subset).
    return (req.headers['content-type'] ?? '').startsWith(APPLY_PATCH) ? parseYaml(text) : JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, 'BadRequest', `error decoding request body: ${(e as Error).message}`);
  }
}

// ---------- protobuf ----------

// client-go's typed clientsets send built-in objects as protobuf and do not fall back to JSON on 415 (only
// CBOR does). Helm stores its release record that way, so the kinds it writes are decoded: Secret and
// ConfigMap. Field numbers are those of k8s.io/api/core/v1 and apimachinery's generated.proto.
type PbField = { no: number; wire: number; int: bigint; bytes: Buffer };

function pbFields(buf: Buffer): PbField[] {
  const out: PbField[] = [];
  let i = 0;
  const varint = (): bigint => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (i >= buf.length || shift > 63n) throw new ApiError(400, 'BadRequest', 'error decoding protobuf body: truncated varint');
      const b = buf[i++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < buf.length) {
    const key = Number(varint());
    const f: PbField = { no: key >>> 3, wire: key & 7, int: 0n, bytes: Buffer.alloc(0) };
    if (f.wire === 0) f.int = varint();
    else if (f.wire === 2) {
      const len = Number(varint());
      if (i + len > buf.length) throw new ApiError(400, 'BadRequest', 'error decoding protobuf body: truncated field');
      f.bytes = buf.subarray(i, (i += len));
    } else if (f.wire === 1) i += 8;
    else if (f.wire === 5) i += 4;
    else throw new ApiError(400, 'BadRequest', `error decoding protobuf body: unsupported wire type ${f.wire}`);
    out.push(f);
  }
  return out;
}

function pbMap(fields: PbField[], no: number, value: (b: Buffer) => string): Record<string, string> | undefined {
  const entries = fields.filter((f) => f.no === no).map((f) => {
    const kv = pbFields(f.bytes);
    return [kv.find((x) => x.no === 1)?.bytes.toString('utf8') ?? '', value(kv.find((x) => x.no === 2)?.bytes ?? Buffer.alloc(0))];
  });
  return entries.length ? Object.fromEntries(entries) : undefined;
}

function pbObjectMeta(buf: Buffer): KObject {
  const f = pbFields(buf);
  const str = (no: number): string | undefined => f.find((x) => x.no === no)?.bytes.toString('utf8');
  const utf8 = (b: Buffer): string => b.toString('utf8');
  const md: KObject = {};
  for (const [no, k] of [[1, 'name'], [2, 'generateName'], [3, 'namespace'], [5, 'uid'], [6, 'resourceVersion']] as const) {
    const v = str(no);
    if (v) md[k] = v;
  }
  const labels = pbMap(f, 11, utf8);
  const annotations = pbMap(f, 12, utf8);
  if (labels) md.labels = labels;
  if (annotations) md.annotations = annotations;
  const refs = f.filter((x) => x.no === 13).map((x) => {
    const r = pbFields(x.bytes);
    const s = (no: number): string | undefined => r.find((y) => y.no === no)?.bytes.toString('utf8');
    const b = (no: number): boolean | undefined => (r.some((y) => y.no === no) ? r.find((y) => y.no === no)!.int !== 0n : undefined);
    return { apiVersion: s(5), kind: s(1), name: s(3), uid: s(4), controller: b(6), blockOwnerDeletion: b(7) };
  });
  if (refs.length) md.ownerReferences = refs;
  const finalizers = f.filter((x) => x.no === 14).map((x) => x.bytes.toString('utf8'));
  if (finalizers.length) md.finalizers = finalizers;
  return md;
}

/** A `k8s\0`-enveloped runtime.Unknown holding a v1 Secret or ConfigMap, as JSON; other kinds get 415. */
export function decodeProtobuf(raw: Buffer): KObject {
  const unsupported = (what: string): ApiError =>
    new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format (${what}) - accepted media types include: application/json, and protobuf for v1 Secret and ConfigMap`);
  if (raw.length < 4 || raw.subarray(0, 4).toString('latin1') !== 'k8s\0') throw unsupported('no k8s protobuf envelope');
  const unknown = pbFields(raw.subarray(4));
  const tm = pbFields(unknown.find((f) => f.no === 1)?.bytes ?? Buffer.alloc(0));
  const apiVersion = tm.find((f) => f.no === 1)?.bytes.toString('utf8') ?? '';
  const kind = tm.find((f) => f.no === 2)?.bytes.toString('utf8') ?? '';
  const body = pbFields(unknown.find((f) => f.no === 2)?.bytes ?? Buffer.alloc(0));
  if (apiVersion !== 'v1' || (kind !== 'Secret' && kind !== 'ConfigMap')) throw unsupported(`protobuf ${apiVersion} ${kind}`);
  const o: KObject = { apiVersion, kind, metadata: pbObjectMeta(body.find((f) => f.no === 1)?.bytes ?? Buffer.alloc(0)) };
  const b64 = (b: Buffer): string => b.toString('base64');
  const utf8 = (b: Buffer): string => b.toString('utf8');
  const immutable = body.find((f) => f.no === (kind === 'Secret' ? 5 : 4));
  if (kind === 'Secret') {
    const data = pbMap(body, 2, b64);
    const stringData = pbMap(body, 4, utf8);
    const type = body.find((f) => f.no === 3)?.bytes.toString('utf8');
    if (data) o.data = data;
    if (stringData) o.stringData = stringData;
    if (type) o.type = type;
  } else {
    const data = pbMap(body, 2, utf8);
    const binaryData = pbMap(body, 3, b64);
    if (data) o.data = data;
    if (binaryData) o.binaryData = binaryData;
  }
  if (immutable) o.immutable = immutable.int !== 0n;
  return o;
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function statusBody(e: ApiError): KObject {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: e.message, reason: e.reason, details: e.details, code: e.code };
}

export async function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServer> {
  const token = opts.token ?? randomBytes(16).toString('hex');
  const store = new Store(opts.historySize ?? 1000);
  const bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 1000;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const segs = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const q = url.searchParams;
    if (url.pathname === '/openapi/v3' || url.pathname.startsWith('/openapi/v3/')) {
      if (req.headers.authorization !== `Bearer ${token}`) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
      return sendJson(res, 200, store.openapi(url.pathname.slice('/openapi/v3/'.length)));
    }
    if (url.pathname === '/version')
      return sendJson(res, 200, { major: '1', minor: '33', gitVersion: 'v1.33.0-widescan-test', platform: 'linux/amd64' });
    if (['/healthz', '/livez', '/readyz'].includes(url.pathname)) {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      return void res.end('ok');
    }
    if (req.headers.authorization !== `Bearer ${token}`) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
    const method = req.method ?? 'GET';
    let group: string;
    let version: string;
    let rest: string[];
    if (segs[0] === 'api') {
      if (segs.length === 1) return sendJson(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: req.headers.host ?? '' }] });
      [group, version, rest] = ['', segs[1]!, segs.slice(2)];
    } else if (segs[0] === 'apis') {
      if (segs.length === 1) return sendJson(res, 200, store.groups());
      if (segs.length === 2) {
        const g = store.groups().groups.find((x: KObject) => x.name === segs[1]);
        if (!g) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
        return sendJson(res, 200, { kind: 'APIGroup', apiVersion: 'v1', ...g });
      }
      [group, version, rest] = [segs[1]!, segs[2]!, segs.slice(3)];
    } else throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if (rest.length === 0) return sendJson(res, 200, store.discovery(group, version));

    let ns: string | undefined;
    let plural: string;
    let name: string | undefined;
    let sub: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3 && !(group === '' && rest[2] === 'status')) {
      [ns, plural, name, sub] = [rest[1], rest[2]!, rest[3], rest[4]];
      if (rest.length > 5) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    } else {
      [plural, name, sub] = [rest[0]!, rest[1], rest[2]];
      if (rest.length > 3) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    }
    if (store.injectedFailure !== undefined) {
      store.failedRequests++;
      const code = store.injectedFailure;
      const reason = code === 429 ? 'TooManyRequests' : code === 503 ? 'ServiceUnavailable' : code < 500 ? 'BadRequest' : 'InternalError';
      throw new ApiError(code, reason, `injected failure (store.failRequests(${code}))`);
    }
    const rt = store.type(group, plural);
    if (!rt.versions.includes(version)) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if (rt.namespaced && name !== undefined && ns === undefined) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if (!rt.namespaced && ns !== undefined) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if (sub !== undefined && !(sub === 'status' && rt.statusSubresource))
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const nsv = ns ?? '';
    const wantsTable = /as=Table/.test(req.headers.accept ?? '');
    const fv = q.get('fieldValidation') ?? '';

    if (name === undefined) {
      if (method === 'GET') {
        if (q.get('watch') === 'true' || q.get('watch') === '1') return store.watch(rt, version, ns, q, res, bookmarkIntervalMs);
        const list = store.listObjects(rt, version, ns, q);
        if (wantsTable) return sendJson(res, 200, store.table(rt, version, list.items, list.metadata, q.get('includeObject') ?? 'Metadata'));
        return sendJson(res, 200, list);
      }
      if (method === 'POST') {
        if (ns === undefined && rt.namespaced) throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        const body = await readBody(req);
        return sendJson(res, 201, store.create(rt, version, nsv, body as KObject, fv));
      }
      if (method === 'DELETE') {
        const body = ((await readBody(req)) ?? {}) as KObject;
        const list = store.listObjects(rt, version, ns, q);
        for (const o of list.items) store.delete(rt, version, o.metadata.namespace ?? '', o.metadata.name, body);
        return sendJson(res, 200, list);
      }
      throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
    switch (method) {
      case 'GET': {
        const o = store.getObject(rt, version, nsv, name);
        if (wantsTable) return sendJson(res, 200, store.table(rt, version, [o], { resourceVersion: o.metadata.resourceVersion }, q.get('includeObject') ?? 'Metadata'));
        return sendJson(res, 200, o);
      }
      case 'PUT':
        return sendJson(res, 200, store.update(rt, version, nsv, name, (await readBody(req)) as KObject, sub, false, fv));
      case 'PATCH': {
        const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
        return sendJson(res, 200, store.patch(rt, version, nsv, name, ct, await readBody(req), sub, fv));
      }
      case 'DELETE': {
        const body = ((await readBody(req)) ?? {}) as KObject;
        if (q.get('propagationPolicy')) body.propagationPolicy = q.get('propagationPolicy');
        return sendJson(res, 200, store.delete(rt, version, nsv, name, body));
      }
      default:
        throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
  };

  const listener: RequestListener = (req, res) => {
    handle(req, res).catch((e: unknown) => {
      const err = e instanceof ApiError ? e : new ApiError(500, 'InternalError', `internal error: ${(e as Error).stack ?? String(e)}`);
      if (res.headersSent) return void res.end();
      sendJson(res, err.code, statusBody(err));
    });
  };
  const dir = mkdtempSync(join(tmpdir(), 'apiserver-'));
  let cluster: KObject;
  let server: ReturnType<typeof createServer>;
  if (opts.tls) {
    const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
        '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'pipe' });
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`startApiServer({tls: true}) needs the openssl binary to make a certificate: ${(e as Error).message}`);
    }
    const certPem = readFileSync(cert);
    server = createHttpsServer({ key: readFileSync(key), cert: certPem }, listener) as unknown as ReturnType<typeof createServer>;
    cluster = { 'certificate-authority-data': certPem.toString('base64') };
  } else {
    server = createServer(listener);
    // Plain HTTP on loopback; client-node 1.x refuses http:// unless TLS verification is declared off.
    cluster = { 'insecure-skip-tls-verify': true };
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'test', cluster: { server: url, ...cluster } }],
      users: [{ name: 'test', user: { token } }],
      contexts: [{ name: 'test', context: { cluster: 'test', user: 'test', namespace: 'default' } }],
      'current-context': 'test',
    }),
    { mode: 0o600 },
  );
  return {
    url,
    token,
    kubeconfig,
    store,
    close: async () => {
      store.closeAll();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await store.settle();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

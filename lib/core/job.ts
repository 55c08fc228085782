// A WidescanJob from text to a compiled, scannable job. Three stages, each answering bad input with
// `InvalidJobError` whose problems name the field (and, for a file, the line) and the fix:
//   1. YAML/JSON syntax;  2. the CRD schema (the same object the API server uses) through ajv;
//   3. what a schema cannot say: prefix syntax, sizes, scope (compileJob, shared with the operator).

import { randomUUID } from 'node:crypto';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { AddressError } from './ipv6.js';
import { parsePrefix, type Prefix } from './cidr.js';
import { jobTagOf } from './keys.js';
import { API_VERSION, KIND, specSchema } from './schema.js';
import { shardCount } from './shards.js';
import { TargetError, TargetSpace, type Strategy } from './targets.js';

export interface TargetSpec {
  prefix: string;
  strategy: Strategy;
  subnetLength?: number;
  hosts?: number;
  budget?: number;
}

/** Where addresses are generated: `auto` uses a GPU when the node has one. */
export type Hardware = 'auto' | 'gpu' | 'cpu';

/**
 * Exit status of a GPU-pool worker that finds no usable GPU adapter at start: how the operator tells "no GPU
 * here" (fall back to the CPU pool) from a crash. Its message goes to the pod's termination log.
 */
export const EXIT_GPU_UNAVAILABLE = 3;

/** The spec after schema defaults are applied. */
export interface JobSpec {
  targets: TargetSpec[];
  exclude?: string[];
  allowNonGlobal: boolean;
  rate: { packetsPerSecond: number };
  hardware: Hardware;
  shardSize: number;
  seed?: string;
  probe: { hopLimit: number; retries: number; replyTimeoutSeconds: number; contact?: string };
  networkKeySecretRef?: { name: string; key: string };
  suspend: boolean;
  ttlSecondsAfterFinished?: number;
}

export interface JobManifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; generation?: number; [k: string]: unknown };
  spec: JobSpec;
}

export interface Problem {
  /** Dotted path with indices: `spec.targets[0].prefix`. */
  path: string;
  message: string;
  /** 1-based line in the source file, where known. */
  line?: number;
}

export class InvalidJobError extends Error {
  constructor(readonly problems: Problem[], readonly source?: string) {
    super(problems.map((p) => formatProblem(p, source)).join('\n'));
    this.name = 'InvalidJobError';
  }
}

export function formatProblem(p: Problem, source?: string): string {
  const where = source ? `${source}${p.line ? `:${p.line}` : ''}: ` : p.line ? `line ${p.line}: ` : '';
  return `${where}${p.path}: ${p.message}`;
}

/** Largest job file accepted: a job is a few prefixes, not a data set (seed lists come through other means). */
export const MAX_JOB_BYTES = 1 << 20;

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

// The schema as a local file is checked: like `kubectl apply` (strict field validation), unknown fields are
// errors, so a typo such as `stratgy` is caught instead of silently pruned.
function strict(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(strict);
  if (schema === null || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) out[k] = k === 'default' || k === 'enum' ? v : strict(v);
  if ('properties' in out && !('additionalProperties' in out)) out.additionalProperties = false;
  return out;
}

const manifestSchema = {
  type: 'object',
  required: ['apiVersion', 'kind', 'metadata', 'spec'],
  additionalProperties: false,
  properties: {
    apiVersion: { type: 'string', const: API_VERSION },
    kind: { type: 'string', const: KIND },
    metadata: {
      type: 'object',
      required: ['name'],
      properties: {
        name: { type: 'string', minLength: 1, maxLength: 63, pattern: DNS1123_SUBDOMAIN.source },
        namespace: { type: 'string', minLength: 1, maxLength: 63, pattern: DNS1123_SUBDOMAIN.source },
        uid: { type: 'string', minLength: 1, maxLength: 128 },
      },
    },
    spec: strict(specSchema),
    status: { type: 'object' },
  },
};

let validator: ValidateFunction | undefined;
function validate(): ValidateFunction {
  if (!validator) {
    const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, strictTypes: false });
    // The OpenAPI extensions of the CRD: CEL rules are mirrored by compileJob, list-type is metadata.
    for (const keyword of ['x-kubernetes-validations', 'x-kubernetes-list-type', 'x-kubernetes-list-map-keys']) ajv.addKeyword(keyword);
    (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
    validator = ajv.compile(manifestSchema);
  }
  return validator;
}

function pathOf(instancePath: string): string {
  return instancePath
    .split('/')
    .slice(1)
    .map((seg) => (/^\d+$/.test(seg) ? `[${seg}]` : `.${seg.replace(/~1/g, '/').replace(/~0/g, '~')}`))
    .join('')
    .replace(/^\./, '');
}

function problemOf(e: ErrorObject): Problem {
  const path = pathOf(e.instancePath) || '(document)';
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties':
      return { path: `${path === '(document)' ? '' : `${path}.`}${String(p.additionalProperty)}`, message: 'unknown field' };
    case 'required':
      return { path, message: `missing required field ${String(p.missingProperty)}` };
    case 'enum':
      return { path, message: `must be one of ${(p.allowedValues as unknown[]).join(', ')}` };
    case 'const':
      return { path, message: `must be ${JSON.stringify(p.allowedValue)}` };
    case 'pattern':
      return { path, message: 'must be a lowercase DNS name (a-z, 0-9, "-", ".")' };
    default:
      return { path, message: e.message ?? e.keyword };
  }
}

/** Schema stage: applies defaults in place and returns the typed manifest. */
export function validateManifest(value: unknown, source?: string, locate?: (path: string) => number | undefined): JobManifest {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidJobError([{ path: '(document)', message: 'a job is a YAML mapping with apiVersion, kind, metadata and spec' }], source);
  }
  const check = validate();
  if (!check(value)) {
    const problems = (check.errors ?? []).map(problemOf);
    throw new InvalidJobError(withLines(dedupe(problems), locate), source);
  }
  return value as JobManifest;
}

function dedupe(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const k = `${p.path}\0${p.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function withLines(problems: Problem[], locate?: (path: string) => number | undefined): Problem[] {
  if (!locate) return problems;
  return problems.map((p) => {
    const line = locate(p.path);
    return line === undefined ? p : { ...p, line };
  });
}

function lineLocator(doc: Document, counter: LineCounter): (path: string) => number | undefined {
  return (path) => {
    const segments = path.match(/[^.[\]]+/g) ?? [];
    const keys = segments.map((s) => (/^\d+$/.test(s) ? Number(s) : s));
    // The deepest node that exists: a missing field is reported at its parent.
    for (let n = keys.length; n >= 0; n--) {
      const node = doc.getIn(keys.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node && node.range) return counter.linePos(node.range[0]).line;
    }
    return undefined;
  };
}

export interface LoadedJob {
  manifest: JobManifest;
  /** Maps a problem path to its line in the source. */
  locate: (path: string) => number | undefined;
}

/** Stages 1 and 2 for a job file's text (YAML or JSON). */
export function parseJobText(text: string, source = 'job'): LoadedJob {
  if (Buffer.byteLength(text) > MAX_JOB_BYTES) {
    throw new InvalidJobError([{ path: '(document)', message: `file is larger than ${MAX_JOB_BYTES} bytes; a job lists prefixes, not addresses` }], source);
  }
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new InvalidJobError(
      doc.errors.map((e) => ({ path: '(document)', message: `invalid YAML: ${e.message.split('\n')[0]}`, line: counter.linePos(e.pos[0]).line })),
      source,
    );
  }
  const locate = lineLocator(doc, counter);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new InvalidJobError([{ path: '(document)', message: `invalid YAML: ${(err as Error).message}` }], source);
  }
  return { manifest: validateManifest(value, source, locate), locate };
}

export interface CompileOptions {
  /** Operator's blocklist: always wins over the job. */
  blocklist?: readonly Prefix[];
  /** Largest `full` block as a power of two (default 32). */
  fullLimitBits?: number;
  /** For problems' line numbers. */
  locate?: (path: string) => number | undefined;
  source?: string;
}

export interface CompiledJob {
  /** `name` locally, `namespace/name` in Kubernetes. */
  readonly id: string;
  readonly manifest: JobManifest;
  readonly spec: JobSpec;
  readonly uid: string;
  /** 32-bit job tag (probe identifier, MAC key derivation). */
  readonly tag: number;
  readonly seed: string;
  readonly space: TargetSpace;
  readonly exclude: readonly Prefix[];
  readonly totalShards: number;
}

/** Stage 3: prefixes, sizes and scope. A manifest without `metadata.uid` gets a fresh one. */
export function compileJob(manifest: JobManifest, options: CompileOptions = {}): CompiledJob {
  const problems: Problem[] = [];
  const spec = manifest.spec;
  const parse = (text: string, path: string): Prefix | undefined => {
    try {
      return parsePrefix(text);
    } catch (err) {
      if (!(err instanceof AddressError)) throw err;
      problems.push({ path, message: err.message });
      return undefined;
    }
  };
  const prefixes = spec.targets.map((t, i) => parse(t.prefix, `spec.targets[${i}].prefix`));
  const exclude = (spec.exclude ?? []).map((e, i) => parse(e, `spec.exclude[${i}]`));
  spec.targets.forEach((t, i) => {
    const extra = (['subnetLength', 'hosts', 'budget'] as const).filter((f) => t[f] !== undefined && !allowedFields[t.strategy].includes(f));
    for (const f of extra) problems.push({ path: `spec.targets[${i}].${f}`, message: `does not apply to strategy ${t.strategy}; remove it` });
  });
  if (problems.length > 0) throw new InvalidJobError(withLines(problems, options.locate), options.source);

  const uid = manifest.metadata.uid ?? randomUUID();
  const seed = spec.seed ?? uid;
  let space: TargetSpace;
  try {
    space = new TargetSpace(
      spec.targets.map((t, i) => ({ ...t, prefix: prefixes[i]! })),
      { allowNonGlobal: spec.allowNonGlobal, exclude: exclude as Prefix[], blocklist: options.blocklist ?? [] },
      { seed, fullLimitBits: options.fullLimitBits },
    );
  } catch (err) {
    if (!(err instanceof TargetError)) throw err;
    throw new InvalidJobError(withLines([{ path: `spec.targets[${err.ordinal}].${err.field}`, message: err.message }], options.locate), options.source);
  }
  const { name, namespace } = manifest.metadata;
  return {
    id: namespace ? `${namespace}/${name}` : name,
    manifest,
    spec,
    uid,
    tag: jobTagOf(uid),
    seed,
    space,
    exclude: exclude as Prefix[],
    totalShards: shardCount(space.size, spec.shardSize),
  };
}

const allowedFields: Record<Strategy, readonly string[]> = {
  full: [],
  lowbyte: ['subnetLength', 'hosts'],
  random: ['budget'],
};

/** Text → compiled job; every stage's problems as one `InvalidJobError`. */
export function loadJob(text: string, source = 'job', options: Omit<CompileOptions, 'locate' | 'source'> = {}): CompiledJob {
  const { manifest, locate } = parseJobText(text, source);
  return compileJob(manifest, { ...options, locate, source });
}

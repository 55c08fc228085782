// The operator's own settings (the Helm chart renders them into a ConfigMap): where and how the worker pools
// run, and the cluster-wide scan limits. Parsed like a job file — YAML or JSON, one schema through ajv with
// defaults applied, unknown keys refused — so that a typo fails at startup with the path and the fix
// instead of being silently ignored.

import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { V1EnvVar, V1ResourceRequirements, V1Toleration } from '@kubernetes/client-node';
import { parseDocument } from 'yaml';
import { AddressError } from '../lib/core/ipv6.js';
import { parsePrefix } from '../lib/core/cidr.js';

export interface PoolSettings {
  enabled: boolean;
  minReplicas: number;
  maxReplicas: number;
  /** Overrides the operator-wide `image` for this pool. */
  image?: string;
  resources?: V1ResourceRequirements;
  nodeSelector?: Record<string, string>;
  tolerations?: V1Toleration[];
}

export interface OperatorConfig {
  /** Where the worker pools live. */
  namespace: string;
  /** Default worker image. */
  image: string;
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  imagePullSecrets: { name: string }[];
  serviceAccountName?: string;
  /** Shards per job queued at once. */
  window: number;
  /** Largest `full` target block, as a power of two. */
  fullLimitBits: number;
  /** IPv6 prefixes never probed, whatever a job says. */
  blocklist: string[];
  /** How long GPU worker pods may stay unschedulable before `auto` jobs move to the CPU pool. */
  fallbackAfterSeconds: number;
  /** How often a Running job's status is refreshed. */
  statusIntervalSeconds: number;
  workerMetricsPort: number;
  terminationGracePeriodSeconds: number;
  /** Extra worker environment, e.g. WIDESCAN_REDIS_URL from a secretKeyRef. */
  workerEnv: V1EnvVar[];
  /** Labels of the listener pods (to warn about nodes whose replies nobody catches). */
  listenerSelector: Record<string, string>;
  pools: { gpu: PoolSettings & { gpusPerPod: number }; cpu: PoolSettings };
}

/** Largest config accepted: settings, not data (a blocklist of this size would be a data set). */
export const MAX_CONFIG_BYTES = 1 << 20;

/** The extended resource the NVIDIA device plugin advertises; set from `pools.gpu.gpusPerPod` only. */
export const GPU_RESOURCE = 'nvidia.com/gpu';

/** Environment the operator sets on every worker from other settings; workerEnv may not redefine it. */
const OWN_ENV: Record<string, string> = {
  WIDESCAN_HARDWARE: 'it is set per pool (gpu or cpu); a wrong value would make a pool skip its queue',
  WIDESCAN_METRICS_PORT: 'set workerMetricsPort instead, so that the probes and the port agree',
};

const DNS1123_LABEL = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
const DNS1123_SUBDOMAIN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
// Kubernetes label syntax: an optional DNS-subdomain prefix and a name of up to 63 characters.
const LABEL_KEY = '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$';
const LABEL_VALUE = '^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$';
// Resource quantities as Kubernetes writes them (500m, 2, 1.5Gi, 1e3); never negative for requests and limits.
const QUANTITY = '^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$';
const ENV_NAME = '^[-._a-zA-Z][-._a-zA-Z0-9]*$';
const IMAGE = '^\\S+$';

const labels = {
  type: 'object',
  maxProperties: 64,
  propertyNames: { maxLength: 316, pattern: LABEL_KEY },
  additionalProperties: { type: 'string', maxLength: 63, pattern: LABEL_VALUE },
} as const;

const dnsName = { type: 'string', minLength: 1, maxLength: 253, pattern: DNS1123_SUBDOMAIN } as const;

// Numbers are accepted too because YAML reads `cpu: 2` as one; they are turned into strings below.
const quantities = {
  type: 'object',
  maxProperties: 32,
  propertyNames: { maxLength: 316, pattern: LABEL_KEY },
  additionalProperties: { type: ['string', 'number'], minimum: 0, maxLength: 64, pattern: QUANTITY },
} as const;

const keyRef = {
  type: 'object',
  additionalProperties: false,
  required: ['key'],
  properties: { name: dnsName, key: { type: 'string', minLength: 1, maxLength: 253 }, optional: { type: 'boolean' } },
} as const;

const envVar = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 256, pattern: ENV_NAME },
    value: { type: 'string', maxLength: 32768 },
    valueFrom: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      maxProperties: 1,
      properties: {
        secretKeyRef: keyRef,
        configMapKeyRef: keyRef,
        fieldRef: {
          type: 'object',
          additionalProperties: false,
          required: ['fieldPath'],
          properties: { apiVersion: { type: 'string', maxLength: 64 }, fieldPath: { type: 'string', minLength: 1, maxLength: 256 } },
        },
        resourceFieldRef: {
          type: 'object',
          additionalProperties: false,
          required: ['resource'],
          properties: {
            containerName: { type: 'string', maxLength: 63 },
            resource: { type: 'string', minLength: 1, maxLength: 64 },
            divisor: { type: ['string', 'number'], minimum: 0, maxLength: 64, pattern: QUANTITY },
          },
        },
      },
    },
  },
} as const;

const toleration = {
  type: 'object',
  additionalProperties: false,
  properties: {
    key: { type: 'string', maxLength: 316 },
    operator: { type: 'string', enum: ['Exists', 'Equal'] },
    value: { type: 'string', maxLength: 63 },
    effect: { type: 'string', enum: ['NoSchedule', 'PreferNoSchedule', 'NoExecute'] },
    tolerationSeconds: { type: 'integer', minimum: 0 },
  },
} as const;

/** Upper bound of a pool: far beyond any cluster this runs on, low enough to catch a stray digit. */
const MAX_POOL_REPLICAS = 1000;

const poolProperties = {
  enabled: { type: 'boolean', default: true },
  minReplicas: { type: 'integer', minimum: 0, maximum: MAX_POOL_REPLICAS, default: 0 },
  maxReplicas: { type: 'integer', minimum: 0, maximum: MAX_POOL_REPLICAS, default: 4 },
  image: { type: 'string', minLength: 1, maxLength: 1024, pattern: IMAGE },
  resources: {
    type: 'object',
    additionalProperties: false,
    properties: { limits: quantities, requests: quantities },
  },
  nodeSelector: labels,
  tolerations: { type: 'array', maxItems: 64, items: toleration },
} as const;

export const operatorConfigSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['namespace', 'image'],
  properties: {
    namespace: { type: 'string', minLength: 1, maxLength: 63, pattern: DNS1123_LABEL },
    image: { type: 'string', minLength: 1, maxLength: 1024, pattern: IMAGE },
    imagePullPolicy: { type: 'string', enum: ['Always', 'IfNotPresent', 'Never'], default: 'IfNotPresent' },
    imagePullSecrets: {
      type: 'array',
      maxItems: 64,
      default: [],
      items: { type: 'object', additionalProperties: false, required: ['name'], properties: { name: dnsName } },
    },
    serviceAccountName: dnsName,
    window: { type: 'integer', minimum: 1, maximum: 10_000, default: 16 },
    fullLimitBits: { type: 'integer', minimum: 1, maximum: 53, default: 32 },
    blocklist: { type: 'array', maxItems: 100_000, default: [], items: { type: 'string', maxLength: 64 } },
    fallbackAfterSeconds: { type: 'integer', minimum: 0, maximum: 86_400, default: 120 },
    statusIntervalSeconds: { type: 'number', minimum: 0.1, maximum: 3600, default: 2 },
    workerMetricsPort: { type: 'integer', minimum: 1, maximum: 65_535, default: 9102 },
    terminationGracePeriodSeconds: { type: 'integer', minimum: 0, maximum: 3600, default: 30 },
    workerEnv: { type: 'array', maxItems: 256, default: [], items: envVar },
    listenerSelector: {
      ...labels,
      minProperties: 1,
      default: { 'app.kubernetes.io/name': 'widescan', 'app.kubernetes.io/component': 'listener' },
    },
    pools: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        gpu: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            ...poolProperties,
            nodeSelector: { ...labels, default: {} },
            // GPU nodes are usually tainted so that only pods asking for GPUs land there.
            tolerations: { ...poolProperties.tolerations, default: [{ key: GPU_RESOURCE, operator: 'Exists', effect: 'NoSchedule' }] },
            gpusPerPod: { type: 'integer', minimum: 1, maximum: 16, default: 1 },
          },
        },
        cpu: { type: 'object', additionalProperties: false, default: {}, properties: poolProperties },
      },
    },
  },
} as const;

export class InvalidConfigError extends Error {
  constructor(
    readonly problems: string[],
    readonly source: string,
  ) {
    super(`invalid operator config ${source}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'InvalidConfigError';
  }
}

let validator: ValidateFunction | undefined;
function validate(): ValidateFunction {
  // verbose: errors carry their parent schema, which lists the allowed fields and the bounds for the message.
  validator ??= new Ajv({ allErrors: true, useDefaults: true, strict: true, strictTypes: false, verbose: true }).compile(operatorConfigSchema);
  return validator;
}

/** `/pools/gpu/maxReplicas` → `pools.gpu.maxReplicas`, `/blocklist/2` → `blocklist[2]`, label keys quoted. */
function pathOf(instancePath: string, child?: string): string {
  const segments = instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (child !== undefined) segments.push(child);
  let out = '';
  for (const seg of segments) {
    if (/^\d+$/.test(seg)) out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out || '(document)';
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
};

function range(schema: Record<string, unknown>): string {
  const kind = schema.type === 'integer' ? 'an integer' : 'a number';
  return `must be ${kind} from ${String(schema.minimum)} to ${String(schema.maximum)}`;
}

function problemOf(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  const parent = (e.parentSchema ?? {}) as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties': {
      const allowed = Object.keys((parent.properties ?? {}) as object);
      return `${pathOf(e.instancePath, String(p.additionalProperty))}: unknown field; allowed here: ${allowed.join(', ')}`;
    }
    case 'required':
      return `${pathOf(e.instancePath, String(p.missingProperty))}: required; set it`;
    case 'enum':
      return `${pathOf(e.instancePath)}: must be one of ${(p.allowedValues as unknown[]).join(', ')}`;
    case 'type':
    case 'minimum':
    case 'maximum':
      if (parent.minimum !== undefined && parent.maximum !== undefined) return `${pathOf(e.instancePath)}: ${range(parent)}`;
      if (e.keyword === 'type') return `${pathOf(e.instancePath)}: must be ${String(p.type).split(',').map((t) => TYPE_NAMES[t] ?? t).join(' or ')}`;
      return `${pathOf(e.instancePath)}: must be ${e.keyword === 'minimum' ? '≥' : '≤'} ${String(p.limit)}`;
    case 'pattern':
      return `${pathOf(e.instancePath)}: ${patternHint(String(p.pattern))}`;
    case 'minProperties':
    case 'maxProperties':
      // valueFrom names its one source; label maps need entries.
      if (parent.properties) return `${pathOf(e.instancePath)}: must set exactly one of ${Object.keys(parent.properties).join(', ')}`;
      if (e.keyword === 'minProperties') return `${pathOf(e.instancePath)}: must not be empty`;
      return `${pathOf(e.instancePath)}: must have at most ${String(p.limit)} entries`;
    case 'propertyNames':
      return `${pathOf(e.instancePath, String(p.propertyName))}: not a valid Kubernetes label or resource name (prefix/name, name ≤ 63 characters of A-Z a-z 0-9 - _ .)`;
    default:
      return `${pathOf(e.instancePath)}: ${e.message ?? e.keyword}`;
  }
}

function patternHint(pattern: string): string {
  switch (pattern) {
    case DNS1123_LABEL:
      return 'must be a DNS label: lowercase a-z, 0-9 and "-", at most 63 characters';
    case DNS1123_SUBDOMAIN:
      return 'must be a lowercase DNS name (a-z, 0-9, "-", ".")';
    case LABEL_VALUE:
      return 'must be a label value: at most 63 characters of A-Z a-z 0-9 - _ ., starting and ending alphanumeric';
    case QUANTITY:
      return 'must be a Kubernetes quantity such as 500m, 2, 1Gi';
    case IMAGE:
      return 'must be an image reference without spaces';
    case ENV_NAME:
      return 'must be an environment variable name (letters, digits, "_", "-", ".", not starting with a digit)';
    default:
      return `must match ${pattern}`;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * What a schema cannot say. Runs on the raw value even when the schema found problems (so one run reports
 * every bad field), hence the type guards.
 */
function semanticProblems(value: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const pools = isObject(value.pools) ? value.pools : {};
  for (const name of ['gpu', 'cpu'] as const) {
    const pool = isObject(pools[name]) ? pools[name] : {};
    const { minReplicas: min, maxReplicas: max } = pool;
    if (typeof min === 'number' && typeof max === 'number' && max < min) {
      problems.push(`pools.${name}.maxReplicas must be ≥ minReplicas (got min ${min}, max ${max}); raise maxReplicas or lower minReplicas`);
    }
  }
  const gpuResources = isObject(pools.gpu) && isObject(pools.gpu.resources) ? pools.gpu.resources : {};
  for (const kind of ['limits', 'requests'] as const) {
    const map = gpuResources[kind];
    if (isObject(map) && map[GPU_RESOURCE] !== undefined) {
      problems.push(`pools.gpu.resources.${kind}["${GPU_RESOURCE}"]: set by the operator; use pools.gpu.gpusPerPod instead`);
    }
  }
  (Array.isArray(value.blocklist) ? value.blocklist : []).forEach((text: unknown, i) => {
    if (typeof text !== 'string') return;
    try {
      parsePrefix(text);
    } catch (err) {
      if (!(err instanceof AddressError)) throw err;
      problems.push(`blocklist[${i}]: ${err.message}`);
    }
  });
  const seen = new Set<string>();
  (Array.isArray(value.workerEnv) ? value.workerEnv : []).forEach((env: unknown, i) => {
    if (!isObject(env) || typeof env.name !== 'string') return;
    const why = Object.hasOwn(OWN_ENV, env.name) ? OWN_ENV[env.name] : undefined;
    if (why) problems.push(`workerEnv[${i}].name: ${env.name} is set by the operator; ${why}`);
    else if (seen.has(env.name)) problems.push(`workerEnv[${i}].name: ${env.name} is defined twice; keep one`);
    seen.add(env.name);
    if (env.value !== undefined && env.valueFrom !== undefined) problems.push(`workerEnv[${i}]: has both value and valueFrom; keep one`);
  });
  return problems;
}

function quantitiesToStrings(resources: V1ResourceRequirements | undefined): void {
  for (const map of [resources?.limits, resources?.requests]) {
    if (!map) continue;
    for (const [k, v] of Object.entries(map)) map[k] = String(v);
  }
}

/** Parses the operator's config file (YAML or JSON) and applies defaults; throws InvalidConfigError naming every bad field. */
export function parseOperatorConfig(text: string, source: string): OperatorConfig {
  if (Buffer.byteLength(text) > MAX_CONFIG_BYTES) {
    throw new InvalidConfigError([`(document): larger than ${MAX_CONFIG_BYTES} bytes; the config holds settings, keep large blocklists short by merging prefixes`], source);
  }
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new InvalidConfigError(doc.errors.map((e) => `(document): invalid YAML: ${e.message.split('\n')[0]}`), source);
  }
  let value: unknown;
  try {
    // A few aliases are legitimate; an alias bomb expands past this and is refused.
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new InvalidConfigError([`(document): invalid YAML: ${(err as Error).message}`], source);
  }
  if (!isObject(value)) {
    throw new InvalidConfigError(['(document): the config is a mapping with at least namespace and image'], source);
  }
  const check = validate();
  // An error inside propertyNames (e.propertyName set) is reported by the propertyNames error that follows it.
  const schemaProblems = check(value) ? [] : (check.errors ?? []).filter((e) => e.propertyName === undefined).map(problemOf);
  const problems = [...new Set([...schemaProblems, ...semanticProblems(value)])];
  if (problems.length > 0) throw new InvalidConfigError(problems, source);
  const config = value as unknown as OperatorConfig;
  quantitiesToStrings(config.pools.gpu.resources);
  quantitiesToStrings(config.pools.cpu.resources);
  for (const e of config.workerEnv) {
    const ref = e.valueFrom?.resourceFieldRef;
    if (ref?.divisor !== undefined) ref.divisor = String(ref.divisor);
  }
  return config;
}

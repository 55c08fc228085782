// The WidescanJob schema, written once. `crds/widescanjobs.widescan.dev.yaml` is generated from it (`npm run gen:crd`,
// checked by a test), the API server validates with that CRD, and `widescan validate|run` validate with this
// same object through ajv — so a job accepted on one machine is accepted by the cluster and vice versa.
// It is an OpenAPI v3 *structural* schema: no $ref, no oneOf at the top of a property, explicit types.
// Rules a schema cannot state (prefix syntax, sizes, scope) are checked by `compileJob` for both sides.

export const GROUP = 'widescan.dev';
export const VERSION = 'v1alpha1';
export const KIND = 'WidescanJob';
export const PLURAL = 'widescanjobs';
export const API_VERSION = `${GROUP}/${VERSION}`;

/** Largest index space of one job: beyond 2^53 positions JS numbers lose exactness, and at 10^6 probes/s it is 285 years of probing. */
export const MAX_INDEX_SPACE = 2 ** 53;

const cidr = { type: 'string', minLength: 3, maxLength: 64 } as const;

export const targetSchema = {
  type: 'object',
  description: 'One block of targets: a prefix and how addresses are picked in it.',
  required: ['prefix', 'strategy'],
  properties: {
    prefix: { ...cidr, description: 'IPv6 prefix in CIDR notation, host bits zero (e.g. 2001:db8:100::/48).' },
    strategy: {
      type: 'string',
      enum: ['full', 'lowbyte', 'random'],
      description: 'full: every address; lowbyte: interface IDs 1..hosts in every /subnetLength subnet; random: budget distinct addresses drawn uniformly.',
    },
    subnetLength: { type: 'integer', minimum: 1, maximum: 128, description: 'lowbyte: length of the subnets whose low interface IDs are probed.' },
    hosts: { type: 'integer', minimum: 1, maximum: 65536, description: 'lowbyte: interface IDs 1..hosts are probed in every subnet.' },
    budget: { type: 'integer', minimum: 1, maximum: MAX_INDEX_SPACE, description: 'random: number of distinct addresses to draw.' },
  },
  'x-kubernetes-validations': [
    { rule: "self.strategy != 'lowbyte' || (has(self.subnetLength) && has(self.hosts))", message: 'strategy lowbyte needs subnetLength and hosts' },
    { rule: "self.strategy != 'random' || has(self.budget)", message: 'strategy random needs budget' },
  ],
} as const;

export const specSchema = {
  type: 'object',
  required: ['targets'],
  properties: {
    targets: { type: 'array', minItems: 1, maxItems: 256, items: targetSchema, description: 'The blocks to scan; their union, in one keyed pseudorandom order.' },
    exclude: { type: 'array', maxItems: 4096, items: { ...cidr }, description: 'Prefixes never probed (counted in status.excluded).' },
    allowNonGlobal: { type: 'boolean', default: false, description: 'Allow unique-local, documentation and other non-global space (labs).' },
    rate: {
      type: 'object',
      default: {},
      properties: {
        packetsPerSecond: { type: 'integer', minimum: 1, maximum: 10_000_000, default: 10_000, description: 'Job-wide cap shared by all of its workers.' },
      },
    },
    hardware: { type: 'string', enum: ['auto', 'gpu', 'cpu'], default: 'auto', description: 'Address generation backend: auto prefers a hardware GPU.' },
    shardSize: { type: 'integer', minimum: 256, maximum: 16_777_216, default: 65_536, description: 'Positions per shard (the unit of work and of redelivery).' },
    seed: { type: 'string', minLength: 1, maxLength: 256, description: 'Keys the scan order; default the job UID. Same seed, same order.' },
    probe: {
      type: 'object',
      default: {},
      properties: {
        hopLimit: { type: 'integer', minimum: 1, maximum: 255, default: 64 },
        retries: { type: 'integer', minimum: 0, maximum: 5, default: 0, description: 'Extra passes over every shard.' },
        replyTimeoutSeconds: { type: 'integer', minimum: 1, maximum: 300, default: 5, description: 'How long replies are awaited after the last probe.' },
        contact: { type: 'string', maxLength: 200, description: 'Appended to every probe so that operators of probed networks can reach you.' },
      },
    },
    networkKeySecretRef: {
      type: 'object',
      required: ['name'],
      properties: { name: { type: 'string', maxLength: 253 }, key: { type: 'string', maxLength: 253, default: 'key' } },
      description: 'Secret holding the shared key of the P2P network (MACs, peer recognition).',
    },
    suspend: { type: 'boolean', default: false },
    ttlSecondsAfterFinished: { type: 'integer', minimum: 0 },
  },
} as const;

const condition = {
  type: 'object',
  required: ['type', 'status'],
  properties: {
    type: { type: 'string' },
    status: { type: 'string', enum: ['True', 'False', 'Unknown'] },
    reason: { type: 'string' },
    message: { type: 'string' },
    observedGeneration: { type: 'integer' },
    lastTransitionTime: { type: 'string', format: 'date-time' },
  },
} as const;

const count = { type: 'integer', minimum: 0 } as const;

export const statusSchema = {
  type: 'object',
  properties: {
    phase: { type: 'string', enum: ['Pending', 'Running', 'Succeeded', 'Failed', 'Suspended'] },
    observedGeneration: { type: 'integer' },
    targets: count,
    shards: { type: 'object', properties: { total: count, completed: count, active: count, failed: count } },
    probesSent: count,
    repliesValid: count,
    repliesInvalid: count,
    repliesDuplicate: count,
    peersDiscovered: count,
    widescanPeers: count,
    excluded: count,
    progress: { type: 'string', description: 'Completed shards in percent, for printing.' },
    backend: { type: 'string' },
    startTime: { type: 'string', format: 'date-time' },
    completionTime: { type: 'string', format: 'date-time' },
    estimatedCompletionTime: { type: 'string', format: 'date-time' },
    conditions: { type: 'array', items: condition, 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] },
  },
} as const;

/** The CustomResourceDefinition, as an object; `crds/widescanjobs.widescan.dev.yaml` is its YAML rendering. */
export function customResourceDefinition() {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${PLURAL}.${GROUP}` },
    spec: {
      group: GROUP,
      names: { kind: KIND, listKind: `${KIND}List`, plural: PLURAL, singular: 'widescanjob', shortNames: ['wsj'], categories: ['widescan'] },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [
            { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
            { name: 'Progress', type: 'string', jsonPath: '.status.progress' },
            { name: 'Probes', type: 'integer', jsonPath: '.status.probesSent' },
            { name: 'Peers', type: 'integer', jsonPath: '.status.peersDiscovered' },
            { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
          ],
          schema: {
            openAPIV3Schema: {
              type: 'object',
              required: ['spec'],
              properties: {
                apiVersion: { type: 'string' },
                kind: { type: 'string' },
                metadata: { type: 'object' },
                spec: specSchema,
                status: statusSchema,
              },
            },
          },
        },
      ],
    },
  };
}

// Every Redis key widescan uses, in one place, so planner, worker, listener and bootstrap agree.
// A job id is `name` for `widescan run` and `namespace/name` in Kubernetes; BullMQ ids never contain
// it (they use the job tag), so the `:` restriction of BullMQ ids does not apply here.

export const KEY_PREFIX = 'widescan';

/** BullMQ queue of shard windows, shared by all `auto` and `cpu` jobs. */
export const SHARD_QUEUE = 'shards';
/** Shards of `hardware: gpu` jobs, read only by GPU-capable workers. */
export const SHARD_QUEUE_GPU = 'shards-gpu';
/** BullMQ's own key prefix, so `widescan:shards:*` holds the queue. */
export const BULL_PREFIX = KEY_PREFIX;

export const keys = {
  /** Set of job ids known to this Redis. */
  jobs: () => `${KEY_PREFIX}:jobs`,
  /** Hash: spec (JSON of the compiled job), tag, phase, timestamps, nextShard. */
  job: (job: string) => `${KEY_PREFIX}:job:${job}`,
  /** Hash of monotonically increasing counters (see `JobCounter`). */
  counters: (job: string) => `${KEY_PREFIX}:job:${job}:counters`,
  /** Token bucket of the job-wide rate cap. */
  rate: (job: string) => `${KEY_PREFIX}:job:${job}:rate`,
  /** Hash: job tag (8 hex digits) → job id; lets listeners name the job a reply belongs to. */
  tags: () => `${KEY_PREFIX}:tags`,
  /** Hash of one peer, keyed by canonical address text. */
  peer: (address: string) => `${KEY_PREFIX}:peer:${address}`,
  /** Sorted sets of peer addresses, scored by a unique, time-ordered sequence (see bootstrap/store). */
  peersAll: () => `${KEY_PREFIX}:peers:all`,
  peersByKind: (kind: string) => `${KEY_PREFIX}:peers:kind:${kind}`,
  peersByJob: (job: string) => `${KEY_PREFIX}:peers:job:${job}`,
  /** Last sequence score handed out. */
  peersSeq: () => `${KEY_PREFIX}:peers:seq`,
  /** Set of blocked addresses: never served, never re-added. */
  peersBlocked: () => `${KEY_PREFIX}:peers:blocked`,
  /** Hash: blocked address → JSON { reason, at }. */
  peersBlockedInfo: () => `${KEY_PREFIX}:peers:blocked:info`,
  /** Sorted set of P2P nodes by their last announce/heartbeat (Redis time, ms): the node TTL is read from it. */
  nodesSeen: () => `${KEY_PREFIX}:peers:nodes:seen`,
  /** List of admin actions, newest first, capped. */
  audit: () => `${KEY_PREFIX}:audit`,
} as const;

/** Fields of `keys.counters(job)`; the job's `status` is computed from them. */
export const JOB_COUNTERS = [
  'probesSent',
  'sendErrors',
  'excluded',
  'shardsCompleted',
  'shardsFailed',
  'repliesValid',
  'repliesInvalid',
  'repliesDuplicate',
  'peersDiscovered',
  'widescanPeers',
] as const;
export type JobCounter = (typeof JOB_COUNTERS)[number];
export type JobCounters = Record<JobCounter, number>;

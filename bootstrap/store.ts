import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { MAX_PAGE_LIMIT, PEER_KINDS, type PeerKind } from '../lib/core/peers.js';
import { keys } from '../lib/keys.js';

// Peers live in Redis so several bootstrap replicas share them and they survive restarts.
//
// Layout (key names in lib/keys.ts):
// - `peer:<address>` hash: `score`, `kind`, `job` (the first job that found it), `last` (ms), `rtt` (ms,
//   the minimum reported) and one `ws:<job>` flag per job that reported the address as a widescan peer.
// - sorted sets `peers:all`, `peers:kind:<kind>`, `peers:job:<job>` of addresses. An address has one
//   score in every set: a unique, time-ordered sequence `max(nowMs * 1024, last + 1)` handed out when it is
//   first stored. Scores stay below 2^53 until the year 2248, so doubles hold them exactly; uniqueness
//   makes a score cursor exact, and `floor(score / 1024)` is the firstSeen time (ms).
// New addresses always get a score above every existing one, so a client walking pages by cursor sees
// peers added while it walks at the end, and never sees one twice.
//
// P2P nodes (kind `node`) announce themselves: their hash also holds `port` and `id`, and `last` is their
// last announce or heartbeat, mirrored in the sorted set `peers:nodes:seen` (score = last, ms) so the
// live ones can be found by range. A node silent for longer than the node TTL is left out of every list;
// its record stays, and announcing again brings it back. Listener sightings never refresh a node's
// `last`: a host that still answers pings is no proof that its P2P process runs.
// One record per address: a scanned host or widescan peer that announces becomes a node (keeping its
// score and first job), and a node is never downgraded by a listener's report.
// Blocked addresses keep their record (filtered out when read), so unblocking restores them as they were.

/** What listeners report; `node` comes only from the nodes themselves (`announce`). */
export const REPORT_KINDS = ['host', 'widescan'] as const;
export type ReportKind = (typeof REPORT_KINDS)[number];

/** Sorted set of node addresses scored by their last announce or heartbeat (ms). */

export const DEFAULT_NODE_TTL_SECONDS = 300;
/** Most peers an announce answers with. */
export const ANNOUNCE_PEERS = 100;

export interface PeerReport {
  /** Canonical (RFC 5952) address text; the HTTP layer canonicalises before calling the store. */
  address: string;
  kind: ReportKind;
  job: string;
  rttMs?: number;
  /** When the reporter saw the peer (ms since the epoch); defaults to the Redis server's time. */
  seenAt?: number;
}

export interface Peer {
  address: string;
  kind: PeerKind;
  /** The first job that found it; null for a node no scan has found. */
  job: string | null;
  rttMs: number | null;
  firstSeen: string;
  /** For a node, its last announce or heartbeat. */
  lastSeen: string;
  /** Nodes only: the port and id they announced. */
  port?: number;
  id?: string;
}

/** A node's own announcement, validated and canonical. */
export interface NodeAnnouncement {
  /** Canonical IPv6 text or a dotted quad. */
  address: string;
  port: number;
  id: string;
}

export interface UpsertResult {
  received: number;
  created: number;
  updated: number;
  blocked: number;
  /** Peers new to their job, by job and reported kind (not part of the HTTP answer). */
  discovered: { job: string; kind: PeerKind; count: number }[];
}

export interface PeerQuery {
  kind?: PeerKind;
  job?: string;
  /** Only peers first seen at or after this time (ms since the epoch). */
  since?: number;
  /** Peers per page, 1..1000 (default 100). */
  limit?: number;
  /** `nextCursor` of the previous page. */
  cursor?: string;
}

export interface PeerPage {
  peers: Peer[];
  /** Null once the end is reached. A page may hold fewer than `limit` peers and still have a cursor. */
  nextCursor: string | null;
}

/** A query value the store cannot serve; `param` names the query parameter (the HTTP layer's 400). */
export class PeerQueryError extends Error {
  constructor(
    readonly param: string,
    message: string,
  ) {
    super(`${param}: ${message}`);
    this.name = 'PeerQueryError';
  }
}

export const DEFAULT_LIMIT = 100;
const SCORE_SCALE = 1024;
/** `since` beyond this would make `since * 1024` inexact as a double. */
export const MAX_SINCE_MS = Math.floor(Number.MAX_SAFE_INTEGER / SCORE_SCALE);
/** With kind and job both set, a page inspects at most this many job-set entries per returned slot. */
const FILTER_SCAN_FACTOR = 10;
const ARGS_PER_REPORT = 5;
const KEYS_PER_REPORT = 3;

// KEYS: all, kind:host, kind:widescan, seq, blocked, then per report: peer hash, job set, job counters.
// ARGV per report: address, kind, job, rttMs ('' = none), seenAt ('' = none).
const UPSERT_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = tonumber(redis.call('GET', KEYS[4]) or '0')
local seqChanged = false
local kindKey = { host = KEYS[2], widescan = KEYS[3] }
local created, updated, blocked = 0, 0, 0
-- (job, kind) of each peer new to its job, for widescan_peers_discovered_total
local discovered = {}
-- Counter increments by counter key and field, written once per batch (not once per peer).
local increments = {}
local function bump(key, field)
  local c = increments[key]
  if not c then c = {}; increments[key] = c end
  c[field] = (c[field] or 0) + 1
end
local n = #ARGV / ${ARGS_PER_REPORT}
for i = 0, n - 1 do
  local a = i * ${ARGS_PER_REPORT}
  local addr, kind, job, rtt, seen = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local k = 5 + i * ${KEYS_PER_REPORT}
  local peerKey, jobKey, counterKey = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  if redis.call('SISMEMBER', KEYS[5], addr) == 1 then
    blocked = blocked + 1
  else
    -- A reporter's clock may run ahead; never record a sighting in the future.
    local seenMs = now
    if seen ~= '' then seenMs = math.min(tonumber(seen), now) end
    local h = redis.call('HMGET', peerKey, 'score', 'kind', 'rtt', 'last')
    local score
    if not h[1] then
      seq = math.max(now * ${SCORE_SCALE}, seq + 1)
      seqChanged = true
      score = string.format('%.0f', seq)
      local first = math.floor(seq / ${SCORE_SCALE})
      local last = string.format('%.0f', math.max(seenMs, first))
      if rtt ~= '' then
        redis.call('HSET', peerKey, 'score', score, 'kind', kind, 'job', job, 'last', last, 'rtt', rtt)
      else
        redis.call('HSET', peerKey, 'score', score, 'kind', kind, 'job', job, 'last', last)
      end
      redis.call('ZADD', KEYS[1], score, addr)
      redis.call('ZADD', kindKey[kind], score, addr)
      created = created + 1
    else
      score = h[1]
      -- A node's lastSeen is its liveness, which only its announces and heartbeats prove.
      if h[2] ~= 'node' and seenMs > tonumber(h[4]) then redis.call('HSET', peerKey, 'last', string.format('%.0f', seenMs)) end
      if rtt ~= '' and (not h[3] or tonumber(rtt) < tonumber(h[3])) then redis.call('HSET', peerKey, 'rtt', rtt) end
      -- A host that turns out to run widescan is upgraded; a widescan peer is never downgraded.
      if h[2] == 'host' and kind == 'widescan' then
        redis.call('ZREM', KEYS[2], addr)
        redis.call('ZADD', KEYS[3], score, addr)
        redis.call('HSET', peerKey, 'kind', 'widescan')
      end
      updated = updated + 1
    end
    if redis.call('ZADD', jobKey, 'NX', score, addr) == 1 then
      bump(counterKey, 'peersDiscovered')
      discovered[#discovered + 1] = job
      discovered[#discovered + 1] = kind
    end
    if kind == 'widescan' and redis.call('HSETNX', peerKey, 'ws:' .. job, '1') == 1 then
      bump(counterKey, 'widescanPeers')
    end
  end
end
for key, c in pairs(increments) do
  for field, by in pairs(c) do redis.call('HINCRBY', key, field, by) end
end
if seqChanged then redis.call('SET', KEYS[4], string.format('%.0f', seq)) end
local out = { n, created, updated, blocked }
for _, v in ipairs(discovered) do out[#out + 1] = v end
return out
`;

// Rows of peers, as LIST_LUA and SAMPLE_LUA return them: address, kind, job, rtt, score, last, port, id
// ('' where absent).
const ROW = 8;
// Times come from the Redis server's clock, so replicas with skewed clocks agree on every node's TTL.
const NOW_LUA = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;
const ROW_LUA = `${NOW_LUA}
local PEER_FIELDS = { 'kind', 'job', 'rtt', 'score', 'last', 'port', 'id' }
local function row(out, addr, h)
  out[#out + 1] = addr
  for j = 1, 7 do out[#out + 1] = h[j] or '' end
end
`;

// KEYS: the set to walk, blocked. ARGV: min score (inclusive), limit, scan budget, kind filter ('' = none),
// peer key prefix (peer hashes are derived from the members, so they cannot all be declared as KEYS),
// node TTL (ms). Returns { nextCursorScore or '', then one row per peer }.
const LIST_LUA = `${ROW_LUA}
local limit, budget, kind, prefix = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local cutoff = now_ms() - tonumber(ARGV[6])
local rows = redis.call('ZRANGE', KEYS[1], ARGV[1], '+inf', 'BYSCORE', 'LIMIT', 0, budget + 1, 'WITHSCORES')
local n = #rows / 2
local out = { '' }
local found, i, last = 0, 1, nil
while i <= math.min(n, budget) and found < limit do
  local addr = rows[2 * i - 1]
  last = rows[2 * i]
  i = i + 1
  if redis.call('SISMEMBER', KEYS[2], addr) == 0 then
    local h = redis.call('HMGET', prefix .. addr, unpack(PEER_FIELDS))
    if h[1] and (kind == '' or h[1] == kind) and not (h[1] == 'node' and tonumber(h[5]) < cutoff) then
      found = found + 1
      row(out, addr, h)
    end
  end
end
if i <= n then out[1] = string.format('%.0f', tonumber(last)) end
return out
`;

// KEYS: all, kind:host, kind:widescan, kind:node, seq, blocked, nodes seen, peer hash.
// ARGV: address, port, id. Returns { 1 = created, 0 = refreshed, -1 = blocked }.
const ANNOUNCE_LUA = `${NOW_LUA}
local addr = ARGV[1]
if redis.call('SISMEMBER', KEYS[6], addr) == 1 then return -1 end
local now = now_ms()
local last = string.format('%.0f', now)
local h = redis.call('HMGET', KEYS[8], 'score', 'kind')
local created = 0
if not h[1] then
  local seq = math.max(now * ${SCORE_SCALE}, tonumber(redis.call('GET', KEYS[5]) or '0') + 1)
  local score = string.format('%.0f', seq)
  redis.call('SET', KEYS[5], score)
  redis.call('HSET', KEYS[8], 'score', score, 'kind', 'node')
  redis.call('ZADD', KEYS[1], score, addr)
  redis.call('ZADD', KEYS[4], score, addr)
  created = 1
elseif h[2] ~= 'node' then
  local kindKey = { host = KEYS[2], widescan = KEYS[3] }
  redis.call('ZREM', kindKey[h[2]], addr)
  redis.call('ZADD', KEYS[4], h[1], addr)
  redis.call('HSET', KEYS[8], 'kind', 'node')
end
redis.call('HSET', KEYS[8], 'last', last, 'port', ARGV[2], 'id', ARGV[3])
redis.call('ZADD', KEYS[7], last, addr)
return created
`;

// KEYS: blocked, nodes seen, peer hash. ARGV: address, port, id, node TTL (ms).
// Returns { 1 = refreshed, 0 = unknown or expired, -1 = blocked }.
const HEARTBEAT_LUA = `${NOW_LUA}
local addr = ARGV[1]
if redis.call('SISMEMBER', KEYS[1], addr) == 1 then return -1 end
local now = now_ms()
local h = redis.call('HMGET', KEYS[3], 'kind', 'port', 'id', 'last')
if h[1] ~= 'node' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] or tonumber(h[4]) < now - tonumber(ARGV[4]) then return 0 end
local last = string.format('%.0f', now)
redis.call('HSET', KEYS[3], 'last', last)
redis.call('ZADD', KEYS[2], last, addr)
return 1
`;

// KEYS: nodes seen, kind:widescan, kind:host, blocked. ARGV: node TTL (ms), the caller's address, most
// rows, scan budget per set, peer key prefix. Live nodes first (latest heartbeat first), then widescan
// peers, then hosts (newest first): nodes are what a P2P newcomer can connect to.
const SAMPLE_LUA = `${ROW_LUA}
local self, most, budget, prefix = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local cutoff = now_ms() - tonumber(ARGV[1])
local out = {}
local found = 0
local function take(addrs)
  for _, addr in ipairs(addrs) do
    if found >= most then return end
    if addr ~= self and redis.call('SISMEMBER', KEYS[4], addr) == 0 then
      local h = redis.call('HMGET', prefix .. addr, unpack(PEER_FIELDS))
      if h[1] and not (h[1] == 'node' and tonumber(h[5]) < cutoff) then
        found = found + 1
        row(out, addr, h)
      end
    end
  end
end
take(redis.call('ZRANGE', KEYS[1], '+inf', cutoff, 'BYSCORE', 'REV', 'LIMIT', 0, budget))
if found < most then take(redis.call('ZRANGE', KEYS[2], 0, budget - 1, 'REV')) end
if found < most then take(redis.call('ZRANGE', KEYS[3], 0, budget - 1, 'REV')) end
return out
`;

// KEYS: kind:host, kind:widescan, nodes seen, blocked. ARGV: node TTL (ms).
// Returns the served count per kind: blocked addresses and expired nodes left out.
const COUNTS_LUA = `${NOW_LUA}
local cutoff = now_ms() - tonumber(ARGV[1])
local host, widescan = redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])
local node = redis.call('ZCOUNT', KEYS[3], cutoff, '+inf')
for _, addr in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if redis.call('ZSCORE', KEYS[1], addr) then host = host - 1 end
  if redis.call('ZSCORE', KEYS[2], addr) then widescan = widescan - 1 end
  local seen = redis.call('ZSCORE', KEYS[3], addr)
  if seen and tonumber(seen) >= cutoff then node = node - 1 end
end
return { host, widescan, node }
`;

interface LuaScript {
  lua: string;
  sha: string;
}

function script(lua: string): LuaScript {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') };
}

const upsertScript = script(UPSERT_LUA);
const listScript = script(LIST_LUA);
const announceScript = script(ANNOUNCE_LUA);
const heartbeatScript = script(HEARTBEAT_LUA);
const sampleScript = script(SAMPLE_LUA);
const countsScript = script(COUNTS_LUA);

/** EVALSHA, falling back to EVAL when the server does not have the script cached (restart, new replica). */
async function runScript(redis: Redis, s: LuaScript, keyNames: string[], args: string[]): Promise<unknown> {
  try {
    return await redis.evalsha(s.sha, keyNames.length, [...keyNames, ...args]);
  } catch (err) {
    if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
    return redis.eval(s.lua, keyNames.length, [...keyNames, ...args]);
  }
}

export function encodeCursor(score: number): string {
  return Buffer.from(String(score), 'utf8').toString('base64url');
}

/** The score a cursor stands for; throws a PeerQueryError for anything `encodeCursor` could not have made. */
export function decodeCursor(cursor: string): number {
  const bad = () =>
    new PeerQueryError('cursor', 'not a cursor returned by this API; pass nextCursor of the previous page unchanged');
  if (cursor.length === 0 || cursor.length > 32 || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!/^[1-9][0-9]{0,15}$/.test(text)) throw bad();
  const score = Number(text);
  if (!Number.isSafeInteger(score) || encodeCursor(score) !== cursor) throw bad();
  return score;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** Peers from rows of ROW fields, starting at `from`. */
function peersFromRows(reply: string[], from: number): Peer[] {
  const peers: Peer[] = [];
  for (let i = from; i + ROW <= reply.length; i += ROW) {
    const [address, kind, job, rtt, score, last, port, id] = reply.slice(i, i + ROW) as [string, PeerKind, string, string, string, string, string, string];
    const peer: Peer = {
      address,
      kind,
      job: job === '' ? null : job,
      rttMs: rtt === '' ? null : Number(rtt),
      firstSeen: iso(Math.floor(Number(score) / SCORE_SCALE)),
      lastSeen: iso(Number(last)),
    };
    if (kind === 'node') {
      peer.port = Number(port);
      peer.id = id;
    }
    peers.push(peer);
  }
  return peers;
}

export type AnnounceResult = 'created' | 'refreshed' | 'blocked';
export type HeartbeatResult = 'refreshed' | 'unknown' | 'blocked';

export interface PeerStoreOptions {
  /** Nodes silent for longer are left out of every list; default 300. */
  nodeTtlSeconds?: number;
}

export class PeerStore {
  readonly nodeTtlSeconds: number;

  constructor(
    private readonly redis: Redis,
    options: PeerStoreOptions = {},
  ) {
    const ttl = options.nodeTtlSeconds ?? DEFAULT_NODE_TTL_SECONDS;
    if (!Number.isSafeInteger(ttl) || ttl < 1) throw new RangeError(`nodeTtlSeconds must be a positive integer, got ${String(ttl)}`);
    this.nodeTtlSeconds = ttl;
  }

  private get ttlMs(): string {
    return String(this.nodeTtlSeconds * 1000);
  }

  /** Stores a batch atomically (one Lua script); the reports must already be validated and canonical. */
  async upsert(peers: PeerReport[]): Promise<UpsertResult> {
    const fixed = [keys.peersAll(), keys.peersByKind('host'), keys.peersByKind('widescan'), keys.peersSeq(), keys.peersBlocked()];
    if (peers.length === 0) return { received: 0, created: 0, updated: 0, blocked: 0, discovered: [] };
    const keyNames = fixed.slice();
    const args: string[] = [];
    for (const p of peers) {
      keyNames.push(keys.peer(p.address), keys.peersByJob(p.job), keys.counters(p.job));
      args.push(p.address, p.kind, p.job, p.rttMs === undefined ? '' : String(p.rttMs), p.seenAt === undefined ? '' : String(Math.floor(p.seenAt)));
    }
    const [received, created, updated, blocked, ...pairs] = (await runScript(this.redis, upsertScript, keyNames, args)) as (number | string)[];
    const counts = new Map<string, { job: string; kind: PeerKind; count: number }>();
    for (let i = 0; i + 1 < pairs.length; i += 2) {
      const job = String(pairs[i]);
      const kind = String(pairs[i + 1]) as PeerKind;
      const entry = counts.get(`${job}\0${kind}`) ?? { job, kind, count: 0 };
      entry.count++;
      counts.set(`${job}\0${kind}`, entry);
    }
    return { received: Number(received), created: Number(created), updated: Number(updated), blocked: Number(blocked), discovered: [...counts.values()] };
  }

  /**
   * One page of peers in score (first-seen) order. With both `kind` and `job`, the job's set is walked and
   * filtered by kind, inspecting at most 10 × limit entries, so a page can come back short (even empty)
   * with a cursor: keep following `nextCursor` until it is null.
   */
  async list(q: PeerQuery): Promise<PeerPage> {
    const limit = q.limit ?? DEFAULT_LIMIT;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_LIMIT) {
      throw new PeerQueryError('limit', `must be an integer from 1 to ${MAX_PAGE_LIMIT}, got ${String(limit)}`);
    }
    if (q.kind !== undefined && !PEER_KINDS.includes(q.kind)) {
      throw new PeerQueryError('kind', `must be one of ${PEER_KINDS.join(', ')}, got ${JSON.stringify(q.kind)}`);
    }
    let min = 0;
    if (q.since !== undefined) {
      if (!Number.isInteger(q.since) || q.since > MAX_SINCE_MS) {
        throw new PeerQueryError('since', `must be an integer number of ms up to ${MAX_SINCE_MS}, got ${String(q.since)}`);
      }
      min = Math.max(0, q.since) * SCORE_SCALE;
    }
    if (q.cursor !== undefined) min = Math.max(min, decodeCursor(q.cursor) + 1);

    let set: string;
    let kindFilter = '';
    let budget = limit;
    if (q.job !== undefined) {
      set = keys.peersByJob(q.job);
      if (q.kind !== undefined) {
        kindFilter = q.kind;
        budget = limit * FILTER_SCAN_FACTOR;
      }
    } else if (q.kind !== undefined) {
      set = keys.peersByKind(q.kind);
    } else {
      set = keys.peersAll();
    }

    const reply = (await runScript(this.redis, listScript, [set, keys.peersBlocked()], [
      String(min), String(limit), String(budget), kindFilter, keys.peer(''), this.ttlMs,
    ])) as string[];
    return { peers: peersFromRows(reply, 1), nextCursor: reply[0] === '' ? null : encodeCursor(Number(reply[0])) };
  }

  /** Registers or refreshes a node (validated and canonical); a blocked address is not stored. */
  async announce(node: NodeAnnouncement): Promise<AnnounceResult> {
    const reply = await runScript(this.redis, announceScript, [
      keys.peersAll(), keys.peersByKind('host'), keys.peersByKind('widescan'), keys.peersByKind('node'),
      keys.peersSeq(), keys.peersBlocked(), keys.nodesSeen(), keys.peer(node.address),
    ], [node.address, String(node.port), node.id]);
    return reply === -1 ? 'blocked' : reply === 1 ? 'created' : 'refreshed';
  }

  /** Refreshes a live node announced with this very address, port and id. */
  async heartbeat(node: NodeAnnouncement): Promise<HeartbeatResult> {
    const reply = await runScript(this.redis, heartbeatScript, [keys.peersBlocked(), keys.nodesSeen(), keys.peer(node.address)], [
      node.address, String(node.port), node.id, this.ttlMs,
    ]);
    return reply === -1 ? 'blocked' : reply === 1 ? 'refreshed' : 'unknown';
  }

  /**
   * Up to `most` served peers for a newcomer at `self` (left out): live nodes first, latest heartbeat first,
   * then widescan peers and hosts, newest first.
   */
  async sample(self: string, most = ANNOUNCE_PEERS): Promise<Peer[]> {
    const reply = (await runScript(this.redis, sampleScript, [
      keys.nodesSeen(), keys.peersByKind('widescan'), keys.peersByKind('host'), keys.peersBlocked(),
    ], [this.ttlMs, self, String(most), String(most * FILTER_SCAN_FACTOR), keys.peer('')])) as string[];
    return peersFromRows(reply, 0);
  }

  /** Number of served peers per kind: blocked addresses and expired nodes are not counted. */
  async counts(): Promise<Record<PeerKind, number>> {
    const [host, widescan, node] = (await runScript(this.redis, countsScript, [
      keys.peersByKind('host'), keys.peersByKind('widescan'), keys.nodesSeen(), keys.peersBlocked(),
    ], [this.ttlMs])) as number[];
    return { host: Number(host), widescan: Number(widescan), node: Number(node) };
  }
}

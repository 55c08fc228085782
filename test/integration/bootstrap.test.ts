import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Redis } from 'ioredis';
import { createBootstrapApp } from '../../bootstrap/server.js';
import { bootstrapOptionsFromEnv, startBootstrap } from '../../bootstrap/service.js';
import { PeerStore, type Peer, type PeerReport } from '../../bootstrap/store.js';
import { keys } from '../../lib/keys.js';
import { createLogger } from '../../lib/log.js';
import { createMetrics } from '../../lib/metrics.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';

const TOKEN = 'listener-token-0123456789abcdef';
const logger = createLogger('test', 'silent');

let embedded: EmbeddedRedis;
let redis: Redis;
let server: Server;
let base: string;

function listenLoopback(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; base: string }> {
  const s = createServer(handler);
  return new Promise((resolve) => {
    s.listen(0, '127.0.0.1', () => resolve({ server: s, base: `http://127.0.0.1:${(s.address() as AddressInfo).port}` }));
  });
}

function closeServer(s: Server): Promise<void> {
  s.closeAllConnections();
  return new Promise((resolve) => s.close(() => resolve()));
}

beforeAll(async () => {
  embedded = await startEmbeddedRedis();
  redis = connectRedis(embedded.url);
  const app = createBootstrapApp({ store: new PeerStore(redis), redis, listenerToken: TOKEN, metrics: createMetrics('bootstrap'), logger });
  ({ server, base } = await listenLoopback(app));
});

afterAll(async () => {
  await closeServer(server);
  await redis.quit();
  await embedded.stop();
});

beforeEach(async () => {
  await redis.flushall();
});

interface Reply {
  status: number;
  body: any; // the JSON the API under test sent back, read field by field in assertions
  headers: Headers;
}

async function request(method: string, path: string, init: { body?: string | Uint8Array; headers?: Record<string, string> } = {}): Promise<Reply> {
  const res = await fetch(base + path, { method, body: init.body, headers: init.headers });
  const text = await res.text();
  let body: unknown = text;
  if ((res.headers.get('content-type') ?? '').startsWith('application/json')) body = JSON.parse(text);
  return { status: res.status, body, headers: res.headers };
}

function postRaw(body: string | Uint8Array, headers: Record<string, string> = {}): Promise<Reply> {
  return request('POST', '/api/v1/peers', {
    body,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...headers },
  });
}

function post(peers: unknown): Promise<Reply> {
  return postRaw(JSON.stringify({ peers }));
}

async function postOk(peers: PeerReport[] | Record<string, unknown>[]) {
  const r = await post(peers);
  expect(r.status).toBe(200);
  return r.body as { received: number; created: number; updated: number; blocked: number };
}

async function list(query = ''): Promise<{ peers: Peer[]; nextCursor: string | null }> {
  const r = await request('GET', `/api/v1/peers${query}`);
  expect(r.status).toBe(200);
  return r.body;
}

/** Every peer of a query, following cursors. */
async function listAll(query: string, limit: number): Promise<Peer[]> {
  const out: Peer[] = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < 10_000; pages++) {
    const sep = query ? '&' : '';
    const page = await list(`?${query}${sep}limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
    out.push(...page.peers);
    cursor = page.nextCursor;
    if (cursor === null) return out;
  }
  throw new Error('pagination did not end');
}

/** The whole Redis content, to prove a rejected request changed nothing. */
async function dump(r: Redis = redis, dropLastSeen = false): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const k of (await r.keys('*')).sort()) {
    const type = await r.type(k);
    if (type === 'hash') {
      const h = await r.hgetall(k);
      if (dropLastSeen) delete h.last;
      out[k] = h;
    } else if (type === 'zset') out[k] = await r.zrange(k, 0, '-1', 'WITHSCORES');
    else if (type === 'set') out[k] = (await r.smembers(k)).sort();
    else out[k] = await r.get(k);
  }
  return out;
}

const addr = (i: number) => `2001:db8::${i.toString(16)}`;
const hosts = (n: number, job: string, from = 1): PeerReport[] =>
  Array.from({ length: n }, (_, i) => ({ address: addr(from + i), kind: 'host' as const, job }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('authentication', () => {
  test('missing, malformed and wrong tokens get 401 JSON and store nothing; the right one is accepted', async () => {
    const body = JSON.stringify({ peers: hosts(1, 'j') });
    for (const authorization of [undefined, '', 'Bearer', `Basic ${TOKEN}`, 'Bearer wrong-token-0123456789abcdef', `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(1)}`]) {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (authorization !== undefined) headers.authorization = authorization;
      const r = await request('POST', '/api/v1/peers', { body, headers });
      expect(r.status).toBe(401);
      expect(r.body.error).toMatch(/^authorization: /);
      expect(r.headers.get('www-authenticate')).toBe('Bearer');
    }
    expect(await redis.dbsize()).toBe(0);
    const ok = await postRaw(body, { authorization: `bearer ${TOKEN}` });
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ received: 1, created: 1, updated: 0, blocked: 0 });
  });
});

describe('upsert and list', () => {
  test('round trip keeps kind, first job, rtt and times', async () => {
    const before = Date.now();
    const result = await postOk([
      { address: '2001:db8::1', kind: 'host', job: 'default/scan-a', rttMs: 12.5 },
      { address: '2001:db8::2', kind: 'widescan', job: 'default/scan-a' },
    ]);
    expect(result).toEqual({ received: 2, created: 2, updated: 0, blocked: 0 });
    const { peers, nextCursor } = await list();
    expect(nextCursor).toBeNull();
    expect(peers.map((p) => [p.address, p.kind, p.job, p.rttMs])).toEqual([
      ['2001:db8::1', 'host', 'default/scan-a', 12.5],
      ['2001:db8::2', 'widescan', 'default/scan-a', null],
    ]);
    for (const p of peers) {
      const first = Date.parse(p.firstSeen);
      expect(first).toBeGreaterThanOrEqual(before - 1000);
      expect(first).toBeLessThanOrEqual(Date.now() + 1000);
      expect(Date.parse(p.lastSeen)).toBeGreaterThanOrEqual(first);
    }
    expect(Date.parse(peers[1].firstSeen)).toBeGreaterThanOrEqual(Date.parse(peers[0].firstSeen));
  });

  test('non-canonical address text is stored canonical, and both spellings are one peer', async () => {
    await postOk([
      { address: 'FD00::0001', kind: 'host', job: 'j' },
      { address: 'fd00:0:0:0:0:0:0:1', kind: 'host', job: 'j' },
      { address: '2001:DB8:0:0:1:0:0:1', kind: 'host', job: 'j' },
    ]);
    const { peers } = await list();
    expect(peers.map((p) => p.address)).toEqual(['fd00::1', '2001:db8::1:0:0:1']);
    expect(await redis.exists(keys.peer('fd00::1'))).toBe(1);
    expect(await redis.exists(keys.peer('FD00::0001'))).toBe(0);
  });

  test('reposting the same batch changes nothing but lastSeen', async () => {
    const batch: PeerReport[] = [
      { address: addr(1), kind: 'host', job: 'a', rttMs: 30 },
      { address: addr(2), kind: 'widescan', job: 'a' },
      { address: addr(3), kind: 'host', job: 'b' },
    ];
    await postOk(batch);
    const first = await dump(redis, true);
    await sleep(5);
    expect(await postOk(batch)).toEqual({ received: 3, created: 0, updated: 3, blocked: 0 });
    expect(await dump(redis, true)).toEqual(first);
    const last = await redis.hget(keys.peer(addr(1)), 'last');
    expect(Number(last)).toBeGreaterThan(Date.parse((await list()).peers[0].firstSeen));
  });

  test('a full batch of 10000 is stored in one go; duplicates within a batch are one peer', async () => {
    const batch = hosts(10_000, 'big');
    batch[9_999] = { address: addr(1), kind: 'widescan', job: 'big', rttMs: 0 };
    batch[9_998] = { ...batch[9_998], rttMs: 600_000 };
    expect(await postOk(batch)).toEqual({ received: 10_000, created: 9_999, updated: 1, blocked: 0 });
    expect(await redis.zcard(keys.peersAll())).toBe(9_999);
    expect(await redis.hgetall(keys.counters('big'))).toEqual({ peersDiscovered: '9999', widescanPeers: '1' });
    const [first] = (await list('?limit=1')).peers;
    expect(first).toMatchObject({ address: addr(1), kind: 'widescan', rttMs: 0 });
    // every score is distinct even though thousands were created within the same millisecond
    const scores = await redis.zrange(keys.peersAll(), 0, '-1', 'WITHSCORES');
    expect(new Set(scores.filter((_, i) => i % 2 === 1)).size).toBe(9_999);
  });

  test('lastSeen follows seenAt but never moves back or into the future', async () => {
    await postOk([{ address: addr(1), kind: 'host', job: 'j' }]);
    const [p0] = (await list()).peers;
    await postOk([{ address: addr(1), kind: 'host', job: 'j', seenAt: 1000 }]);
    expect((await list()).peers[0].lastSeen).toBe(p0.lastSeen);
    await postOk([{ address: addr(1), kind: 'host', job: 'j', seenAt: Date.now() + 86_400_000 }]);
    expect(Date.parse((await list()).peers[0].lastSeen)).toBeLessThanOrEqual(Date.now() + 1000);
  });

  test('a host is upgraded to widescan, never downgraded; rtt keeps the minimum', async () => {
    await postOk([{ address: addr(1), kind: 'host', job: 'j', rttMs: 50 }]);
    expect((await list('?kind=host')).peers).toHaveLength(1);
    await postOk([{ address: addr(1), kind: 'widescan', job: 'j', rttMs: 20 }]);
    await postOk([{ address: addr(1), kind: 'host', job: 'j', rttMs: 80 }]);
    expect((await list('?kind=host')).peers).toHaveLength(0);
    const [p] = (await list('?kind=widescan')).peers;
    expect(p).toMatchObject({ address: addr(1), kind: 'widescan', rttMs: 20 });
    expect((await list()).peers).toHaveLength(1);
    // the upgraded peer keeps its score, so cursors stay valid
    const score = await redis.zscore(keys.peersAll(), addr(1));
    expect(await redis.zscore(keys.peersByKind('widescan'), addr(1))).toBe(score);
  });

  test('per-job counters and multi-job membership', async () => {
    await postOk([
      { address: addr(1), kind: 'host', job: 'a' },
      { address: addr(2), kind: 'widescan', job: 'a' },
    ]);
    await postOk([
      { address: addr(1), kind: 'widescan', job: 'b' },
      { address: addr(3), kind: 'host', job: 'b' },
      { address: addr(2), kind: 'host', job: 'b' },
    ]);
    // idempotent: counters do not move on a repost
    await postOk([{ address: addr(1), kind: 'widescan', job: 'b' }, { address: addr(2), kind: 'widescan', job: 'a' }]);
    expect(await redis.hgetall(keys.counters('a'))).toEqual({ peersDiscovered: '2', widescanPeers: '1' });
    expect(await redis.hgetall(keys.counters('b'))).toEqual({ peersDiscovered: '3', widescanPeers: '1' });
    // job a now reports addr(1) as widescan too: it becomes a widescan peer for a as well
    await postOk([{ address: addr(1), kind: 'widescan', job: 'a' }]);
    expect(await redis.hget(keys.counters('a'), 'widescanPeers')).toBe('2');

    const inB = (await list('?job=b')).peers;
    expect(inB.map((p) => p.address)).toEqual([addr(1), addr(2), addr(3)]); // original scores: first-seen order
    expect(inB.map((p) => p.job)).toEqual(['a', 'a', 'b']); // the first job that found each
    expect((await list('?job=a')).peers.map((p) => p.address)).toEqual([addr(1), addr(2)]);
    expect((await list('?job=nobody')).peers).toEqual([]);
  });

  test('a blocked address is never stored or served', async () => {
    await redis.sadd(keys.peersBlocked(), addr(2));
    expect(await postOk([...hosts(3, 'j'), { address: addr(2), kind: 'widescan', job: 'k' }])).toEqual({
      received: 4, created: 2, updated: 0, blocked: 2,
    });
    expect(await redis.exists(keys.peer(addr(2)))).toBe(0);
    expect(await redis.zscore(keys.peersAll(), addr(2))).toBeNull();
    expect(await redis.hget(keys.counters('j'), 'peersDiscovered')).toBe('2');
    expect(await redis.exists(keys.counters('k'))).toBe(0);
    expect((await list()).peers.map((p) => p.address)).toEqual([addr(1), addr(3)]);
    // blocked after being stored: no longer served
    await redis.sadd(keys.peersBlocked(), addr(3));
    expect((await list()).peers.map((p) => p.address)).toEqual([addr(1)]);
    expect((await list('?job=j&kind=host')).peers.map((p) => p.address)).toEqual([addr(1)]);
  });
});

describe('pagination and filters', () => {
  test('cursor pages visit every peer exactly once while inserts happen between pages', async () => {
    await postOk(hosts(250, 'j'));
    const seen: string[] = [];
    let cursor: string | null = null;
    let next = 1000;
    let pages = 0;
    do {
      const page = await list(`?limit=7${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.peers.length).toBeLessThanOrEqual(7);
      seen.push(...page.peers.map((p) => p.address));
      cursor = page.nextCursor;
      if (pages++ < 30) {
        // new peers and reposts of old ones, concurrently with the next page
        const [, r] = await Promise.all([postOk([...hosts(3, 'k', next), ...hosts(2, 'j', 1 + pages)]), list('?limit=7')]);
        expect(r.peers).toHaveLength(7);
        next += 3;
      }
    } while (cursor !== null);
    const expected = new Set([...hosts(250, 'j'), ...hosts(next - 1000, 'k', 1000)].map((p) => p.address));
    expect(seen).toHaveLength(expected.size);
    expect(new Set(seen)).toEqual(expected);
    expect(seen).toHaveLength(250 + 30 * 3);
  });

  test('a page that ends exactly at the last peer has no cursor', async () => {
    await postOk(hosts(4, 'j'));
    const p1 = await list('?limit=2');
    expect(p1.nextCursor).not.toBeNull();
    const p2 = await list(`?limit=2&cursor=${p1.nextCursor}`);
    expect(p2.peers.map((p) => p.address)).toEqual([addr(3), addr(4)]);
    expect(p2.nextCursor).toBeNull();
    expect((await list('?limit=4')).nextCursor).toBeNull();
  });

  test('kind, job, since and kind+job filters', async () => {
    await postOk([...hosts(5, 'a'), { address: addr(100), kind: 'widescan', job: 'a' }]);
    await sleep(10);
    await postOk([...hosts(3, 'b', 200), { address: addr(300), kind: 'widescan', job: 'b' }, { address: addr(1), kind: 'host', job: 'b' }]);
    const all = await listAll('', 3);
    expect(all).toHaveLength(10);
    const secondBatch = all.find((p) => p.address === addr(200))!;

    expect((await listAll('kind=widescan', 1)).map((p) => p.address)).toEqual([addr(100), addr(300)]);
    expect((await listAll('kind=host', 100)).map((p) => p.address)).toHaveLength(8);
    expect((await listAll('job=b', 2)).map((p) => p.address)).toEqual([addr(1), addr(200), addr(201), addr(202), addr(300)]);
    const expectedSince = [addr(200), addr(201), addr(202), addr(300)];
    const sinceMs = Date.parse(secondBatch.firstSeen);
    expect((await listAll(`since=${sinceMs}`, 2)).map((p) => p.address)).toEqual(expectedSince);
    expect((await listAll(`since=${encodeURIComponent(secondBatch.firstSeen)}`, 50)).map((p) => p.address)).toEqual(expectedSince);
    expect((await listAll(`since=${encodeURIComponent(new Date(sinceMs).toISOString().replace('Z', '+00:00'))}`, 50)).map((p) => p.address)).toEqual(expectedSince);
    expect((await listAll('since=2200-01-01', 50))).toEqual([]);
    expect((await listAll('since=1970-01-01', 50))).toHaveLength(10);
    expect((await listAll('kind=host&job=b', 1)).map((p) => p.address)).toEqual([addr(1), addr(200), addr(201), addr(202)]);
    expect((await listAll(`kind=widescan&job=a&since=${sinceMs}`, 5))).toEqual([]);
  });

  test('kind+job does bounded work per page: sparse matches come back over several (possibly empty) pages', async () => {
    await postOk([...hosts(45, 'j'), { address: addr(999), kind: 'widescan', job: 'j' }, ...hosts(30, 'j', 1000)]);
    const first = await list('?kind=widescan&job=j&limit=1');
    expect(first.peers).toEqual([]); // 10 entries inspected, no widescan among them
    expect(first.nextCursor).not.toBeNull();
    expect((await listAll('kind=widescan&job=j', 1)).map((p) => p.address)).toEqual([addr(999)]);
  });
});

describe('hostile input changes nothing', () => {
  const good = { address: '2001:db8::1', kind: 'host', job: 'j' };
  const many = (n: number, bad: Record<string, unknown>) => [...Array.from({ length: n }, (_, i) => ({ ...good, address: addr(i + 1) })), bad];

  const posts: [string, () => Promise<Reply>, number, RegExp][] = [
    ['malformed JSON', () => postRaw('{"peers": [{"address": '), 400, /^body: not valid JSON/],
    ['JSON with a trailing comma', () => postRaw('{"peers": [],}'), 400, /^body: not valid JSON/],
    ['text/plain', () => postRaw(JSON.stringify({ peers: [good] }), { 'content-type': 'text/plain' }), 415, /Content-Type/],
    ['form encoding', () => postRaw('peers=1', { 'content-type': 'application/x-www-form-urlencoded' }), 415, /Content-Type/],
    ['latin1 charset', () => postRaw(JSON.stringify({ peers: [good] }), { 'content-type': 'application/json; charset=latin1' }), 415, /charset/],
    ['gzip body', () => postRaw(gzipSync(JSON.stringify({ peers: [good] })), { 'content-encoding': 'gzip' }), 415, /Content-Encoding/],
    ['null body', () => postRaw('null'), 400, /not valid JSON|body: must be object/],
    ['array body', () => postRaw('[]'), 400, /^body: must be object/],
    ['empty object', () => postRaw('{}'), 400, /^peers: is required/],
    ['peers not an array', () => post({ address: '2001:db8::1' }), 400, /^peers: must be array/],
    ['unknown top-level field', () => postRaw(JSON.stringify({ peers: [good], extra: 1 })), 400, /^body: unknown field "extra"/],
    ['__proto__ field', () => postRaw('{"peers":[{"address":"::1","kind":"host","job":"j","__proto__":{"x":1}}]}'), 400, /^peers\/0: unknown field "__proto__"/],
    ['unknown item field', () => post(many(3, { ...good, port: 80 })), 400, /^peers\/3: unknown field "port"/],
    ['missing address', () => post([{ kind: 'host', job: 'j' }]), 400, /^peers\/0\/address: is required/],
    ['address as number', () => post(many(1, { ...good, address: 42 })), 400, /^peers\/1\/address: must be string/],
    ['kind not in enum', () => post([{ ...good, kind: 'router' }]), 400, /^peers\/0\/kind: must be one of host, widescan/],
    ['uppercase job', () => post([{ ...good, job: 'Default/Scan' }]), 400, /^peers\/0\/job: must be 1-253/],
    ['job with a colon', () => post([{ ...good, job: 'a:b' }]), 400, /^peers\/0\/job/],
    ['job ending in -', () => post([{ ...good, job: 'ab-' }]), 400, /^peers\/0\/job/],
    ['job of 254 chars', () => post([{ ...good, job: 'a'.repeat(254) }]), 400, /^peers\/0\/job/],
    ['rttMs as string', () => post([{ ...good, rttMs: '5' }]), 400, /^peers\/0\/rttMs: must be number/],
    ['negative rttMs', () => post([{ ...good, rttMs: -1 }]), 400, /^peers\/0\/rttMs: must be >= 0/],
    ['rttMs above 600000', () => post([{ ...good, rttMs: 600_001 }]), 400, /^peers\/0\/rttMs: must be <= 600000/],
    ['fractional seenAt', () => post([{ ...good, seenAt: 1.5 }]), 400, /^peers\/0\/seenAt: must be integer/],
    ['bad hex at index 3', () => post(many(3, { ...good, address: '2001:db8::g' })), 400, /^peers\/3\/address: /],
    ['IPv4 address', () => post(many(3, { ...good, address: '192.0.2.1' })), 400, /^peers\/3\/address: /],
    ['zone id', () => post(many(3, { ...good, address: 'fe80::1%eth0' })), 400, /^peers\/3\/address: .*zone/],
    ['prefix', () => post(many(3, { ...good, address: '2001:db8::/64' })), 400, /^peers\/3\/address: /],
    ['empty address', () => post(many(3, { ...good, address: '' })), 400, /^peers\/3\/address: /],
    ['a very long address', () => post(many(3, { ...good, address: '1'.repeat(100_000) })), 400, /^peers\/3\/address: /],
    ['10001 peers', () => post(hosts(10_001, 'j')), 413, /^peers: 10001 peers, more than the 10000/],
    ['2 MiB body', () => postRaw(JSON.stringify({ peers: [{ ...good, job: 'x'.repeat(2 * 1024 * 1024) }] })), 413, /^body: larger than the limit of 1048576 bytes/],
  ];

  test.each(posts)('POST %s → 4xx JSON error, Redis unchanged', async (_name, send, status, message) => {
    await postOk(hosts(5, 'existing'));
    const before = await dump();
    const r = await send();
    expect(r.status).toBe(status);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect(r.body.error).toMatch(message);
    expect(JSON.stringify(r.body)).not.toMatch(/\bat .*\.(ts|js):\d+/); // no stack traces
    expect(await dump()).toEqual(before);
  });

  const gets: [string, string, RegExp][] = [
    ['garbage cursor', 'cursor=!!!', /^cursor: /],
    ['base64 of text', `cursor=${Buffer.from('hello').toString('base64url')}`, /^cursor: /],
    ['cursor of a huge number', `cursor=${Buffer.from('99999999999999999').toString('base64url')}`, /^cursor: /],
    ['cursor of a negative number', `cursor=${Buffer.from('-5').toString('base64url')}`, /^cursor: /],
    ['non-canonical base64 of a number', 'cursor=MTd', /^cursor: /], // decodes to "17", but encodes as MTc
    ['limit=0', 'limit=0', /^limit: /],
    ['limit=1001', 'limit=1001', /^limit: /],
    ['limit=abc', 'limit=abc', /^limit: /],
    ['limit=1.5', 'limit=1.5', /^limit: /],
    ['limit empty', 'limit=', /^limit: /],
    ['since=garbage', 'since=garbage', /^since: /],
    ['since=-5', 'since=-5', /^since: /],
    ['since without zone', 'since=2024-01-01T00:00:00', /^since: /],
    ['since Feb 30', 'since=2024-02-30', /^since: .*calendar/],
    ['since far future', 'since=99999999999999', /^since: .*future/],
    ['kind=router', 'kind=router', /^kind: must be one of/],
    ['kind twice', 'kind=host&kind=widescan', /^kind: give it once/],
    ['bad job', 'job=UPPER', /^job: /],
    ['unknown parameter', 'kinds=host', /^kinds: unknown query parameter/],
  ];

  test.each(gets)('GET %s → 400 naming the parameter', async (_name, query, message) => {
    await postOk(hosts(5, 'j'));
    const before = await dump();
    const r = await request('GET', `/api/v1/peers?${query}`);
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(message);
    expect(await dump()).toEqual(before);
  });
});

describe('service endpoints', () => {
  test('healthz, readyz, 404, no x-powered-by', async () => {
    const h = await request('GET', '/healthz');
    expect(h).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(h.headers.get('x-powered-by')).toBeNull();
    expect(await request('GET', '/readyz')).toMatchObject({ status: 200, body: { status: 'ok' } });
    const nf = await request('GET', '/nope/123?x=1');
    expect(nf.status).toBe(404);
    expect(nf.body.error).toBe('no route for GET /nope/123');
    expect((await request('DELETE', '/api/v1/peers')).status).toBe(404);
  });

  test('/metrics counts requests by route pattern and refreshes the peer gauge', async () => {
    // Its own job name: the app (and its counters) outlives the per-test Redis flush.
    await postOk([...hosts(3, 'mj'), { address: addr(50), kind: 'widescan', job: 'mj' }]);
    await postOk([...hosts(3, 'mj')]); // a repost discovers nothing new
    await request('GET', '/no/such/path-123');
    await request('GET', '/api/v1/peers?limit=0');
    const r = await request('GET', '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = r.body as string;
    expect(text).toContain('widescan_http_requests_total');
    expect(text).toMatch(/widescan_http_requests_total\{route="\/api\/v1\/peers",code="200",component="bootstrap"\} [1-9]/);
    expect(text).toMatch(/widescan_http_requests_total\{route="\/api\/v1\/peers",code="400",component="bootstrap"\} [1-9]/);
    expect(text).toMatch(/widescan_http_requests_total\{route="unmatched",code="404",component="bootstrap"\} [1-9]/);
    expect(text).not.toContain('path-123');
    expect(text).toMatch(/widescan_bootstrap_peers\{kind="host",component="bootstrap"\} 3\n/);
    expect(text).toMatch(/widescan_bootstrap_peers\{kind="widescan",component="bootstrap"\} 1\n/);
    expect(text).toMatch(/widescan_peers_discovered_total\{job="mj",kind="host",component="bootstrap"\} 3\n/);
    expect(text).toMatch(/widescan_peers_discovered_total\{job="mj",kind="widescan",component="bootstrap"\} 1\n/);
  });

  test('an internal error is a JSON 500 without details', async () => {
    const failing = { list: async () => { throw new Error('secret internals at /srv/x.js:1'); } } as unknown as PeerStore;
    const app = createBootstrapApp({ store: failing, redis, listenerToken: TOKEN, metrics: createMetrics('bootstrap'), logger });
    const s = await listenLoopback(app);
    try {
      const res = await fetch(`${s.base}/api/v1/peers`);
      expect(res.status).toBe(500);
      expect(await res.json()).toEqual({ error: 'internal error' });
    } finally {
      await closeServer(s.server);
    }
  });
});

describe('startBootstrap', () => {
  test('serves over HTTP, reports 503 once Redis is gone, and closes', async () => {
    const own = await startEmbeddedRedis();
    const svc = await startBootstrap({ redisUrl: own.url, listenerToken: TOKEN, port: 0, logger });
    let redisStopped = false;
    try {
      expect(svc.url).toBe(`http://127.0.0.1:${svc.port}`);
      const ok = await fetch(`${svc.url}/api/v1/peers`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ peers: hosts(2, 'svc') }),
      });
      expect(await ok.json()).toEqual({ received: 2, created: 2, updated: 0, blocked: 0 });
      expect((await fetch(`${svc.url}/readyz`)).status).toBe(200);

      await own.stop();
      redisStopped = true;
      const ready = await fetch(`${svc.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { status: string }).status).toBe('unavailable');
      expect((await fetch(`${svc.url}/healthz`)).status).toBe(200);
      const list = await fetch(`${svc.url}/api/v1/peers`);
      expect(list.status).toBe(503);
      expect(await list.json()).toEqual({ error: 'storage unavailable; retry later' });
      expect((await fetch(`${svc.url}/metrics`)).status).toBe(200);
    } finally {
      await svc.close();
      await svc.close(); // idempotent
      if (!redisStopped) await own.stop();
    }
    await expect(fetch(`${svc.url}/healthz`)).rejects.toThrow();
  });

  test('refuses short tokens', async () => {
    await expect(startBootstrap({ redisUrl: embedded.url, listenerToken: 'short' })).rejects.toThrow(/at least 16/);
  });

  test('options from the environment', () => {
    const dir = mkdtempSync(join(tmpdir(), 'widescan-bootstrap-test-'));
    try {
      const file = join(dir, 'token');
      writeFileSync(file, `${TOKEN}\n`);
      expect(bootstrapOptionsFromEnv({ WIDESCAN_REDIS_URL: 'redis://r:6379', WIDESCAN_LISTENER_TOKEN_FILE: file })).toEqual({
        redisUrl: 'redis://r:6379', listenerToken: TOKEN, port: 8080, host: '::',
      });
      expect(bootstrapOptionsFromEnv({ WIDESCAN_REDIS_URL: 'redis://r', WIDESCAN_LISTENER_TOKEN: TOKEN, PORT: '9000', HOST: '127.0.0.1' }))
        .toMatchObject({ port: 9000, host: '127.0.0.1' });
      const base = { WIDESCAN_REDIS_URL: 'redis://r' };
      expect(() => bootstrapOptionsFromEnv({ WIDESCAN_LISTENER_TOKEN: TOKEN })).toThrow(/WIDESCAN_REDIS_URL/);
      expect(() => bootstrapOptionsFromEnv(base)).toThrow(/no listener token/);
      expect(() => bootstrapOptionsFromEnv({ ...base, WIDESCAN_LISTENER_TOKEN: 'x'.repeat(15) })).toThrow(/at least 16/);
      expect(() => bootstrapOptionsFromEnv({ ...base, WIDESCAN_LISTENER_TOKEN: 'has a space in it, 16+' })).toThrow(/whitespace/);
      expect(() => bootstrapOptionsFromEnv({ ...base, WIDESCAN_LISTENER_TOKEN_FILE: join(dir, 'missing') })).toThrow(/cannot read/);
      expect(() => bootstrapOptionsFromEnv({ ...base, WIDESCAN_LISTENER_TOKEN: TOKEN, WIDESCAN_LISTENER_TOKEN_FILE: file })).toThrow(/only one/);
      expect(() => bootstrapOptionsFromEnv({ ...base, WIDESCAN_LISTENER_TOKEN: TOKEN, PORT: '80a' })).toThrow(/PORT/);
      expect(() => bootstrapOptionsFromEnv({ ...base, WIDESCAN_LISTENER_TOKEN: TOKEN, PORT: '70000' })).toThrow(/PORT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

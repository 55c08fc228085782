// BootstrapReporter against a real bootstrap service on a real redis-server: buffering while the
// bootstrap is down, bounded loss, refused batches, and flush deadlines.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, jest, test } from '@jest/globals';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer, type Socket } from 'node:net';
import type { Redis } from 'ioredis';
import { startBootstrap, type BootstrapService } from '../../bootstrap/service.js';
import { PeerStore } from '../../bootstrap/store.js';
import { createLogger } from '../../lib/log.js';
import { createMetrics, type Metrics } from '../../lib/metrics.js';
import { freePort } from '../../lib/proc.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';
import { BootstrapReporter, type PeerReport } from '../../listener/reporter.js';

const TOKEN = 'reporter-test-token-0123456789abcdef';
const logger = createLogger('test', 'silent');

let embedded: EmbeddedRedis;
let redis: Redis;
let store: PeerStore;
/** Everything a test starts, closed after it whatever happened. */
let cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeAll(async () => {
  embedded = await startEmbeddedRedis();
  redis = connectRedis(embedded.url);
  store = new PeerStore(redis);
});

afterAll(async () => {
  await redis.quit();
  await embedded.stop();
});

beforeEach(async () => {
  await redis.flushall();
});

afterEach(async () => {
  jest.restoreAllMocks();
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});


async function bootstrapOn(port: number): Promise<BootstrapService> {
  const b = await startBootstrap({ redisUrl: embedded.url, listenerToken: TOKEN, port, host: '127.0.0.1', logger });
  cleanups.push(() => b.close());
  return b;
}

function reporter(port: number, o: { token?: string; capacity?: number; metrics?: Metrics } = {}): { r: BootstrapReporter; metrics: Metrics } {
  const metrics = o.metrics ?? createMetrics('listener');
  const r = new BootstrapReporter({ url: `http://127.0.0.1:${port}`, token: o.token ?? TOKEN, logger, metrics, capacity: o.capacity, batchSize: 1000 });
  cleanups.push(() => r.close());
  return { r, metrics };
}

const peer = (i: number, job = 'test/reporter'): PeerReport => ({ address: `2001:db8:77::${(i + 1).toString(16)}`, kind: 'host', job, rttMs: i % 100 });

const dropped = async (m: Metrics) => (await m.reportsDropped.get()).values.reduce((sum, v) => sum + v.value, 0);

interface Post {
  status: number;
  peers: PeerReport[];
  result: unknown;
}

/** Records every POST the reporter makes, passing it through to the network. */
function recordPosts(): Post[] {
  const posts: Post[] = [];
  const realFetch = globalThis.fetch;
  jest.spyOn(globalThis, 'fetch').mockImplementation(async (input, init) => {
    const res = await realFetch(input, init);
    const peers = (JSON.parse(String(init?.body)) as { peers: PeerReport[] }).peers;
    posts.push({ status: res.status, peers, result: await res.clone().json().catch(() => null) });
    return res;
  });
  return posts;
}

/** Every stored peer, walked page by page. */
async function allStored(): Promise<string[]> {
  const out: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.list({ limit: 1000, cursor });
    out.push(...page.peers.map((p) => p.address));
    cursor = page.nextCursor ?? undefined;
  } while (cursor !== undefined);
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('BootstrapReporter', () => {
  test('buffers while the bootstrap is down, then delivers every report exactly once', async () => {
    const port = await freePort();
    const { r, metrics } = reporter(port);
    const posts = recordPosts();
    for (let i = 0; i < 2500; i++) r.report(peer(i));
    await sleep(400); // the first batches meet a closed port
    expect(posts).toEqual([]); // connection refused: no response at all
    expect(r.buffered).toBe(2500);

    await bootstrapOn(port);
    await r.flush(15_000);
    expect(r.buffered).toBe(0);
    const delivered = posts.filter((p) => p.status === 200);
    expect(posts).toEqual(delivered); // nothing was refused
    const sent = delivered.flatMap((p) => p.peers.map((x) => x.address));
    expect(sent).toHaveLength(2500);
    expect(new Set(sent).size).toBe(2500);
    expect(delivered.reduce((n, p) => n + (p.result as { created: number }).created, 0)).toBe(2500);
    expect(await store.counts()).toEqual({ host: 2500, widescan: 0, node: 0 });
    expect(new Set(await allStored())).toEqual(new Set(Array.from({ length: 2500 }, (_, i) => peer(i).address)));
    expect(await dropped(metrics)).toBe(0);
  });

  test('a full buffer drops the newest reports and counts them', async () => {
    const port = await freePort();
    const { r, metrics } = reporter(port, { capacity: 100 });
    for (let i = 0; i < 150; i++) r.report(peer(i));
    expect(r.buffered).toBe(100);
    expect(await dropped(metrics)).toBe(50);
    expect(await metrics.registry.metrics()).toMatch(/^widescan_reports_dropped_total\{component="listener"\} 50$/m);

    await bootstrapOn(port);
    await r.flush(10_000);
    expect(await store.counts()).toEqual({ host: 100, widescan: 0, node: 0 });
    expect(new Set(await allStored())).toEqual(new Set(Array.from({ length: 100 }, (_, i) => peer(i).address)));
    expect(await dropped(metrics)).toBe(50);
  });

  test('a batch the bootstrap refuses (wrong token) is dropped and counted, not retried', async () => {
    const b = await bootstrapOn(0);
    const { r, metrics } = reporter(b.port, { token: 'not-the-listener-token-at-all' });
    const posts = recordPosts();
    for (let i = 0; i < 2500; i++) r.report(peer(i));
    const started = Date.now();
    await r.flush(10_000);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(r.buffered).toBe(0);
    expect(posts.map((p) => p.status)).toEqual([401, 401, 401]); // each batch tried once
    expect(await dropped(metrics)).toBe(2500);
    expect(await store.counts()).toEqual({ host: 0, widescan: 0, node: 0 });

    await sleep(600); // the periodic pump has nothing left to send
    expect(posts).toHaveLength(3);
  });

  test('a batch the bootstrap finds invalid is dropped without losing the batches after it', async () => {
    const b = await bootstrapOn(0);
    const { r, metrics } = reporter(b.port);
    const posts = recordPosts();
    for (let i = 0; i < 999; i++) r.report(peer(i));
    r.report({ address: 'not an address', kind: 'host', job: 'test/reporter' }); // poisons the first batch
    for (let i = 1000; i < 1500; i++) r.report(peer(i));
    await r.flush(10_000);
    expect(posts.map((p) => p.status)).toEqual([400, 200]);
    expect(await dropped(metrics)).toBe(1000);
    expect(await store.counts()).toEqual({ host: 500, widescan: 0, node: 0 });
  });

  test('server errors and proxy rate limits are retried until delivered', async () => {
    const statuses = [503, 429, 500, 200];
    const received: number[] = [];
    const server: Server = createHttpServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        received.push((JSON.parse(body) as { peers: unknown[] }).peers.length);
        res.writeHead(statuses.shift() ?? 200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }));
    const { r, metrics } = reporter((server.address() as { port: number }).port);
    for (let i = 0; i < 10; i++) r.report(peer(i));
    await r.flush(10_000);
    expect(received).toEqual([10, 10, 10, 10]);
    expect(r.buffered).toBe(0);
    expect(await dropped(metrics)).toBe(0);
  });

  test('flush rejects at its deadline when the bootstrap never comes up, keeping the reports', async () => {
    const port = await freePort();
    const { r } = reporter(port);
    for (let i = 0; i < 3; i++) r.report(peer(i));
    const started = Date.now();
    await expect(r.flush(500)).rejects.toThrow(`could not deliver 3 peer reports to http://127.0.0.1:${port} within 500 ms`);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(r.buffered).toBe(3);
  });

  test('flush keeps its deadline when the bootstrap accepts connections but never answers', async () => {
    const sockets: Socket[] = [];
    const blackHole = createServer((s) => void sockets.push(s));
    await new Promise<void>((resolve) => blackHole.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => { for (const s of sockets) s.destroy(); blackHole.close(resolve); }));
    const { r } = reporter((blackHole.address() as { port: number }).port);
    r.report(peer(0));
    const started = Date.now();
    await expect(r.flush(700)).rejects.toThrow(/could not deliver 1 peer reports/);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(r.buffered).toBe(1);
    for (const s of sockets) s.destroy(); // ends the hanging request, so close() need not wait out its timeout
  });
});

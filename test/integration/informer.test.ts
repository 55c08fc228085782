// The resilient informer against the in-process API server (and, for misbehaving servers, tiny ad-hoc ones):
// events, cuts, compaction, error backoff, stalled watches, resync, and a clean stop.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { createInformer, objectKey, type Informer, type InformerEventType, type InformerOptions } from '../../operator/informer.js';
import { startApiServer, type ApiServer, type KObject } from '../apiserver/server.js';

let srv: ApiServer;
let kc: k8s.KubeConfig;
let core: k8s.CoreV1Api;
const live: Informer<k8s.V1ConfigMap>[] = [];

beforeAll(async () => {
  srv = await startApiServer({ bookmarkIntervalMs: 200 });
  kc = new k8s.KubeConfig();
  kc.loadFromFile(srv.kubeconfig);
  core = kc.makeApiClient(k8s.CoreV1Api);
});
afterEach(() => {
  for (const i of live.splice(0)) i.stop();
  srv.store.failRequests(undefined);
  srv.store.resumeWatches();
});
afterAll(async () => {
  await srv.close();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function eventually(check: () => boolean, what: () => string, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting: ${what()}`);
    await sleep(10);
  }
}

interface Harness {
  informer: Informer<k8s.V1ConfigMap>;
  events: string[];
  warns: KObject[];
  has(e: string): boolean;
  until(...e: string[]): Promise<void>;
}

/** An informer over the ConfigMaps of namespace `ns` (created here), recording events as `type name`. */
async function harness(ns: string, opts: Partial<InformerOptions<k8s.V1ConfigMap>> = {}, config = kc): Promise<Harness> {
  if (config === kc) await core.createNamespace({ body: { metadata: { name: ns } } });
  const events: string[] = [];
  const warns: KObject[] = [];
  const api = config.makeApiClient(k8s.CoreV1Api);
  const informer = createInformer<k8s.V1ConfigMap>({
    kubeConfig: config,
    path: `/api/v1/namespaces/${ns}/configmaps`,
    list: () => api.listNamespacedConfigMap({ namespace: ns }),
    onEvent: (type: InformerEventType, obj) => void events.push(`${type} ${obj.metadata!.name}`),
    resyncMs: 0,
    watchdogMs: 5000,
    backoff: { baseMs: 50, maxMs: 400 },
    logger: { debug: () => undefined, warn: (o, msg) => void warns.push({ ...o, msg }) },
    ...opts,
  });
  live.push(informer);
  const has = (e: string): boolean => events.includes(e);
  return {
    informer,
    events,
    warns,
    has,
    until: (...want) => eventually(() => want.every(has), () => `${JSON.stringify(want)} in ${JSON.stringify(events)}`),
  };
}

const cm = (name: string, data: Record<string, string> = {}): k8s.V1ConfigMap => ({ metadata: { name }, data });
const configmaps = (): ReturnType<ApiServer['store']['type']> => srv.store.type('', 'configmaps');
const names = (i: Informer<k8s.V1ConfigMap>): string[] => i.list().map((o) => o.metadata!.name!).sort();

describe('resilient informer', () => {
  test('initial list, then adds, updates and deletes; bookmarks requested; a throwing handler is survived', async () => {
    const ns = 'inf-basic';
    const h = await harness(ns, {
      onEvent: (type, obj) => {
        h.events.push(`${type} ${obj.metadata!.name}`);
        if (obj.metadata!.name === 'boom') throw new Error('handler bug');
      },
    });
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('one', { v: '1' }) });
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('two') });
    expect(h.informer.hasSynced).toBe(false);
    await h.informer.start();
    expect(h.informer.hasSynced).toBe(true);
    expect(h.events.sort()).toEqual(['add one', 'add two']);
    expect(names(h.informer)).toEqual(['one', 'two']);

    await core.createNamespacedConfigMap({ namespace: ns, body: cm('boom') });
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('three') });
    await core.replaceNamespacedConfigMap({ name: 'one', namespace: ns, body: cm('one', { v: '2' }) });
    await core.deleteNamespacedConfigMap({ name: 'two', namespace: ns });
    await h.until('add boom', 'add three', 'update one', 'delete two');
    expect(h.informer.get(ns, 'one')!.data).toEqual({ v: '2' });
    expect(h.informer.get(ns, 'two')).toBeUndefined();
    expect(h.informer.get(undefined, 'one')).toBeUndefined(); // namespaced objects need their namespace
    expect(names(h.informer)).toEqual(['boom', 'one', 'three']);
    expect(h.warns).toEqual([expect.objectContaining({ msg: 'informer event handler failed', key: `${ns}/boom`, err: 'handler bug' })]);
    expect(srv.store.bookmarkers.size).toBeGreaterThan(0); // the watch asked for BOOKMARKs
    expect(h.informer.counters).toMatchObject({ lists: 1, relists: 0, watches: 1, errors: 0, restarts: 0 });
  });

  for (const abrupt of [false, true]) {
    test(`watch cut ${abrupt ? 'abruptly' : 'cleanly'}: reconnects from its resourceVersion and misses nothing`, async () => {
      const ns = `inf-cut-${abrupt ? 'abrupt' : 'clean'}`;
      const h = await harness(ns);
      await core.createNamespacedConfigMap({ namespace: ns, body: cm('stays') });
      await core.createNamespacedConfigMap({ namespace: ns, body: cm('goes') });
      await h.informer.start();
      // A cut, then a change right away.
      srv.store.cutWatches({ abrupt });
      await core.createNamespacedConfigMap({ namespace: ns, body: cm('right-after') });
      await h.until('add right-after');
      // A cut with the server refusing requests for a while: changes during the gap arrive afterwards.
      srv.store.failRequests(503);
      srv.store.cutWatches({ abrupt });
      const failedBefore = srv.store.failedRequests;
      srv.store.create(configmaps(), 'v1', ns, { metadata: { name: 'during-gap' } });
      srv.store.delete(configmaps(), 'v1', ns, 'goes');
      srv.store.update(configmaps(), 'v1', ns, 'stays', { metadata: { name: 'stays' }, data: { changed: 'yes' } });
      await eventually(() => srv.store.failedRequests >= failedBefore + 2, () => 'the informer retrying');
      expect(h.events).not.toContain('add during-gap');
      srv.store.failRequests(undefined);
      await h.until('add during-gap', 'delete goes', 'update stays');
      expect(names(h.informer)).toEqual(['during-gap', 'right-after', 'stays']);
      expect(h.informer.counters.lists).toBe(1); // history was available: resumed, not relisted
      expect(h.informer.counters.errors).toBeGreaterThanOrEqual(2);
      expect(h.informer.counters.restarts).toBeGreaterThanOrEqual(2);
    });
  }

  test('history compacted while disconnected: 410, relist, deletes in the gap become delete events', async () => {
    const ns = 'inf-compact';
    const h = await harness(ns);
    for (const n of ['keep', 'gone', 'edited']) await core.createNamespacedConfigMap({ namespace: ns, body: cm(n) });
    await h.informer.start();
    const expiredBefore = srv.store.expiredWatches;
    srv.store.failRequests(500);
    srv.store.cutWatches();
    srv.store.delete(configmaps(), 'v1', ns, 'gone');
    srv.store.create(configmaps(), 'v1', ns, { metadata: { name: 'new' } });
    srv.store.update(configmaps(), 'v1', ns, 'edited', { metadata: { name: 'edited' }, data: { e: '1' } });
    srv.store.compact();
    await eventually(() => h.informer.counters.errors >= 1, () => 'a failed reconnect');
    srv.store.failRequests(undefined);
    await h.until('delete gone', 'add new', 'update edited');
    expect(srv.store.expiredWatches).toBeGreaterThan(expiredBefore);
    expect(h.informer.counters.relists).toBe(1);
    expect(h.informer.get(ns, 'gone')).toBeUndefined();
    expect(names(h.informer)).toEqual(['edited', 'keep', 'new']);
    expect(h.events.filter((e) => e.endsWith(' keep'))).toEqual(['add keep']); // unchanged: not re-announced
    // And the watch after the relist works.
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('later') });
    await h.until('add later');
  });

  test('server errors: retries back off exponentially to the cap (no tight loop), then recover', async () => {
    const ns = 'inf-errors';
    const h = await harness(ns, { backoff: { baseMs: 50, maxMs: 400 } });
    await h.informer.start();
    srv.store.failRequests(500);
    const failedBefore = srv.store.failedRequests;
    srv.store.cutWatches();
    await sleep(2500);
    const attempts = srv.store.failedRequests - failedBefore;
    // Retries at ~0, 50, 150, 350, 750, 1150, 1550, 1950, 2350 ms: 9. A tight loop makes thousands.
    expect(attempts).toBeGreaterThanOrEqual(6);
    expect(attempts).toBeLessThanOrEqual(11);
    const delays = h.warns.filter((w) => w.msg === 'informer list/watch failed; retrying').map((w) => w.delayMs as number);
    expect(delays.slice(0, 6)).toEqual([50, 100, 200, 400, 400, 400]);
    srv.store.failRequests(undefined);
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('after-outage') });
    await h.until('add after-outage');
    // Healthy again, the next failure starts over at the base delay.
    h.warns.length = 0;
    srv.store.failRequests(500);
    srv.store.cutWatches();
    await eventually(() => h.warns.length > 0, () => 'a retry after the second outage');
    expect(h.warns[0]!.delayMs).toBe(50);
  });

  test('the first list failing: start() keeps retrying with backoff and resolves once the server answers', async () => {
    const h = await harness('inf-first-list');
    srv.store.failRequests(503);
    let synced = false;
    const started = h.informer.start().then(() => (synced = true));
    await sleep(600); // lists at ~0, 50, 150, 350 ms
    expect(synced).toBe(false);
    expect(h.informer.counters.lists).toBeGreaterThanOrEqual(3);
    expect(h.informer.counters.lists).toBeLessThanOrEqual(6);
    srv.store.failRequests(undefined);
    await started;
    expect(h.informer.hasSynced).toBe(true);
  });

  test('the API server going away: reconnect attempts back off instead of spinning', async () => {
    const other = await startApiServer({ bookmarkIntervalMs: 200 });
    const okc = new k8s.KubeConfig();
    okc.loadFromFile(other.kubeconfig);
    await okc.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name: 'gone-server' } } });
    const h = await harness('gone-server', {}, okc);
    await h.informer.start();
    await other.close();
    const before = h.informer.counters.lists + h.informer.counters.watches;
    await sleep(2000);
    const attempts = h.informer.counters.lists + h.informer.counters.watches - before;
    expect(attempts).toBeGreaterThanOrEqual(4);
    expect(attempts).toBeLessThanOrEqual(10);
    expect(h.informer.counters.errors).toBeGreaterThanOrEqual(attempts); // plus the cut of the open watch
  });

  test('a stalled watch: the watchdog relists and re-watches; a healthy quiet watch is kept alive by bookmarks', async () => {
    const ns = 'inf-stall';
    const h = await harness(ns, { watchdogMs: 1000 });
    await h.informer.start();
    await sleep(1500); // no events, only bookmarks: the watchdog must stay calm
    expect(h.informer.counters.watchdogRestarts).toBe(0);
    srv.store.stallWatches();
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('while-stalled') });
    await sleep(300);
    expect(h.has('add while-stalled')).toBe(false); // the stall holds events back
    await h.until('add while-stalled');
    expect(h.informer.counters.watchdogRestarts).toBe(1);
    expect(h.informer.counters.relists).toBe(1);
    expect(h.warns.map((w) => w.msg)).toContain('watch silent past the watchdog; relisting');
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('after') });
    await h.until('add after');
    srv.store.resumeWatches(); // the stalled connection was closed by the restart: nothing arrives twice
    await sleep(100);
    expect(h.events.filter((e) => e === 'add while-stalled')).toHaveLength(1);
  });

  test('resync re-delivers every cached object periodically', async () => {
    const ns = 'inf-resync';
    const h = await harness(ns, { resyncMs: 200 });
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('a') });
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('b') });
    await h.informer.start();
    await eventually(() => h.informer.counters.resyncs >= 2, () => 'two resyncs');
    const resyncs = h.events.filter((e) => e.startsWith('resync'));
    expect(resyncs.length).toBeGreaterThanOrEqual(4);
    expect(new Set(resyncs)).toEqual(new Set(['resync a', 'resync b']));
  });

  test('stop() closes the watch and leaves no timers; stop before the first list rejects start()', async () => {
    // Track every timer set from now on (the informer's, client-node's, the server's): after stop() none may
    // be left pending, else the process could not exit.
    const pending = new Set<NodeJS.Timeout>();
    const [realSet, realClear] = [globalThis.setTimeout, globalThis.clearTimeout];
    globalThis.setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
      const t = realSet(() => {
        pending.delete(t);
        fn(...args);
      }, ms);
      pending.add(t);
      return t;
    }) as typeof setTimeout;
    globalThis.clearTimeout = ((t: NodeJS.Timeout | undefined) => {
      if (t) pending.delete(t);
      realClear(t);
    }) as typeof clearTimeout;
    try {
      // Long periods, so that a timer stop() forgot would still be pending when checked.
      const h = await harness('inf-stop', { resyncMs: 5000, watchdogMs: 8000 });
      await h.informer.start();
      await eventually(() => h.informer.counters.watches === 1 && srv.store.bookmarkers.size > 0, () => 'the watch');
      expect(pending.size).toBeGreaterThanOrEqual(3); // watchdog, resync, the server's bookmark ticker
      const watchers = srv.store.watcherCount();
      h.informer.stop();
      h.informer.stop(); // idempotent
      await eventually(() => srv.store.watcherCount() === watchers - 1, () => `watchers ${srv.store.watcherCount()}`);
      await eventually(() => pending.size === 0, () => `${pending.size} timers still pending`, 1000);
      await expect(h.informer.start()).rejects.toThrow(/already started/);
    } finally {
      globalThis.setTimeout = realSet;
      globalThis.clearTimeout = realClear;
    }

    const early = await harness('inf-stop-early');
    srv.store.failRequests(500);
    const start = early.informer.start();
    early.informer.stop();
    await expect(start).rejects.toThrow(/stopped before its first list/);
  });

  test('bad options are refused with messages naming them', () => {
    const base = { kubeConfig: kc, path: '/api/v1/configmaps', list: () => core.listConfigMapForAllNamespaces(), onEvent: () => undefined };
    expect(() => createInformer({ ...base, path: 'api/v1/configmaps' })).toThrow(/starting with '\/'/);
    expect(() => createInformer({ ...base, watchdogMs: 0 })).toThrow(/watchdogMs/);
    expect(() => createInformer({ ...base, resyncMs: Number.NaN })).toThrow(/resyncMs/);
    expect(() => createInformer({ ...base, backoff: { baseMs: 100, maxMs: 10 } })).toThrow(/backoff.maxMs must be .* >= 100/);
    expect(objectKey({ metadata: { name: 'n', namespace: 'ns' } })).toBe('ns/n');
    expect(objectKey({ metadata: { name: 'cluster-scoped' } })).toBe('cluster-scoped');
  });
});

describe('resilient informer against misbehaving servers', () => {
  /** A server whose list is the list() option and whose watch answers with `watch(n)`, n counting from 1. */
  async function fakeServer(watch: (n: number) => string): Promise<{ kc: k8s.KubeConfig; watches: () => number; close(): Promise<void> }> {
    let n = 0;
    const server: Server = createServer((req, res) => {
      if (!req.url?.includes('watch=true')) return void res.writeHead(404).end();
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(watch(++n));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const config = new k8s.KubeConfig();
    config.loadFromOptions({
      clusters: [{ name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
      users: [{ name: 'u', token: 't' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    return {
      kc: config,
      watches: () => n,
      close: () => {
        server.closeAllConnections();
        return new Promise((r) => server.close(() => r()));
      },
    };
  }

  async function run(watch: (n: number) => string, ms: number): Promise<{ watches: number; lists: number; events: string[]; informer: Informer<k8s.V1ConfigMap> }> {
    const fake = await fakeServer(watch);
    const events: string[] = [];
    let lists = 0;
    const informer = createInformer<k8s.V1ConfigMap>({
      kubeConfig: fake.kc,
      path: '/api/v1/namespaces/x/configmaps',
      list: async () => {
        lists++;
        return { metadata: { resourceVersion: '7' }, items: [cm('listed')].map((o) => ({ ...o, metadata: { ...o.metadata, namespace: 'x', resourceVersion: '7' } })) };
      },
      onEvent: (type, obj) => void events.push(`${type} ${obj.metadata!.name}`),
      resyncMs: 0,
      backoff: { baseMs: 100, maxMs: 400 },
    });
    live.push(informer);
    await informer.start();
    await sleep(ms);
    informer.stop();
    await fake.close();
    return { watches: fake.watches(), lists, events, informer };
  }

  test('watches that end at once without events are paced, not re-opened in a tight loop', async () => {
    const r = await run(() => '', 1500);
    // Re-opened at ~0, 0, 100, 300, 700, 1100, 1500 ms. client-node alone re-opens them back to back.
    expect(r.watches).toBeGreaterThanOrEqual(4);
    expect(r.watches).toBeLessThanOrEqual(9);
    expect(r.lists).toBe(1);
  });

  test('a server answering every watch with 410 is relisted with backoff, not in a loop', async () => {
    const gone = JSON.stringify({ type: 'ERROR', object: { kind: 'Status', status: 'Failure', reason: 'Expired', code: 410 } }) + '\n';
    const r = await run(() => gone, 1500);
    expect(r.lists).toBeGreaterThanOrEqual(4);
    expect(r.lists).toBeLessThanOrEqual(10);
    expect(r.watches).toBe(r.lists);
    expect(r.events).toEqual(['add listed']); // relisting the same object announces nothing new
  });

  test('hostile watch lines (garbage, no object, no metadata, unknown types) are ignored without crashing', async () => {
    const lines = [
      'not json at all',
      JSON.stringify({ type: 'ADDED' }),
      JSON.stringify({ type: 'ADDED', object: null }),
      JSON.stringify({ type: 'ADDED', object: {} }),
      JSON.stringify({ type: 'MODIFIED', object: { metadata: { name: '' } } }),
      JSON.stringify({ type: 'DELETED', object: { metadata: 'x' } }),
      JSON.stringify({ type: 'SURPRISE', object: { metadata: { name: 'weird', namespace: 'x' } } }),
      JSON.stringify({ type: 'BOOKMARK', object: null }),
      JSON.stringify({ type: 'ADDED', object: { metadata: { name: 'fine', namespace: 'x', resourceVersion: '8' }, data: { big: 'y'.repeat(1 << 20) } } }),
      JSON.stringify({ type: 'DELETED', object: { metadata: { name: 'listed', namespace: 'x', resourceVersion: '9' } } }),
    ];
    const r = await run((n) => (n === 1 ? lines.join('\n') + '\n' : ''), 400);
    expect(r.events).toEqual(['add listed', 'add fine', 'delete listed']);
    expect(names(r.informer)).toEqual(['fine']);
  });
});

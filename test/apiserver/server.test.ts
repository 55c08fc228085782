// The in-process API server against plain HTTP and against the real @kubernetes/client-node 1.x.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { parse } from 'yaml';
import { humanDuration, parseLabelSelector, startApiServer, type ApiServer, type KObject } from './server.js';

const crd = parse(readFileSync(new URL('../../crds/widescanjobs.widescan.dev.yaml', import.meta.url), 'utf8')) as KObject;
const lab = parse(readFileSync(new URL('../../examples/lab.yaml', import.meta.url), 'utf8')) as KObject;
const WSJ = '/apis/widescan.dev/v1alpha1';

let srv: ApiServer;

async function api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ code: number; body: KObject }> {
  const r = await fetch(srv.url + path, {
    method,
    headers: { authorization: `Bearer ${srv.token}`, 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  return { code: r.status, body: text ? (JSON.parse(text) as KObject) : {} };
}

/** Opens a watch and collects its events; `done` resolves when the server ends the stream. */
function openWatch(path: string): { events: KObject[]; headers: Promise<Headers>; done: Promise<void>; abort(): void; until(n: number): Promise<void> } {
  const events: KObject[] = [];
  const ctl = new AbortController();
  let resolveHeaders!: (h: Headers) => void;
  const headers = new Promise<Headers>((r) => (resolveHeaders = r));
  const done = (async () => {
    const r = await fetch(srv.url + path, { headers: { authorization: `Bearer ${srv.token}` }, signal: ctl.signal });
    resolveHeaders(r.headers);
    const dec = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
        buf += dec.decode(chunk, { stream: true });
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          events.push(JSON.parse(buf.slice(0, i)) as KObject);
          buf = buf.slice(i + 1);
        }
      }
    } catch (e) {
      if ((e as Error).name !== 'AbortError') throw e;
    }
  })();
  const until = async (n: number): Promise<void> => {
    const t0 = Date.now();
    while (events.length < n) {
      if (Date.now() - t0 > 5000) throw new Error(`watch ${path}: wanted ${n} events, got ${JSON.stringify(events.map((e) => e.type))}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  return { events, headers, done, abort: () => ctl.abort(), until };
}

async function eventually(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > 5000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  srv = await startApiServer({ bookmarkIntervalMs: 50, historySize: 50 });
  const r = await api('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd);
  expect(r.code).toBe(201);
});
afterAll(async () => {
  await srv.close();
});

describe('auth, discovery, version', () => {
  test('401 without or with a wrong bearer token, /version open', async () => {
    const none = await fetch(`${srv.url}/api/v1/namespaces`);
    expect(none.status).toBe(401);
    expect(((await none.json()) as KObject).reason).toBe('Unauthorized');
    const wrong = await fetch(`${srv.url}/api/v1/namespaces`, { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    const v = await fetch(`${srv.url}/version`);
    expect(((await v.json()) as KObject).major).toBe('1');
  });

  test('discovery lists built-ins and the CRD as soon as it exists', async () => {
    expect((await api('GET', '/api')).body.versions).toEqual(['v1']);
    const core = (await api('GET', '/api/v1')).body;
    const names = core.resources.map((r: KObject) => r.name);
    expect(names).toEqual(expect.arrayContaining(['namespaces', 'pods', 'pods/status', 'events', 'configmaps', 'secrets']));
    const groups = (await api('GET', '/apis')).body.groups.map((g: KObject) => g.name);
    expect(groups).toEqual(expect.arrayContaining(['apps', 'coordination.k8s.io', 'events.k8s.io', 'apiextensions.k8s.io', 'widescan.dev']));
    const wsj = (await api('GET', WSJ)).body;
    expect(wsj.resources).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ name: 'widescanjobs', kind: 'WidescanJob', namespaced: true, shortNames: ['wsj'], categories: ['widescan'] }),
        expect.objectContaining({ name: 'widescanjobs/status' }),
      ]),
    );
    expect((await api('GET', '/apis/apps/v1')).body.resources.map((r: KObject) => r.name)).toEqual(
      expect.arrayContaining(['deployments', 'deployments/status', 'daemonsets']),
    );
    expect((await api('GET', '/apis/nope.example/v1')).code).toBe(404);
  });

  test('the CRD is marked Established (ADDED then MODIFIED, like the real controller)', async () => {
    const c = (await api('GET', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widescanjobs.widescan.dev')).body;
    expect(c.status.conditions).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'Established', status: 'True' })]));
  });

  test('a CRD whose name is not plural.group is rejected with 422', async () => {
    const bad = structuredClone(crd);
    bad.metadata.name = 'wrong.widescan.dev';
    const r = await api('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', bad);
    expect(r.code).toBe(422);
    expect(r.body.message).toContain('metadata.name');
  });
});

describe('create, get, errors', () => {
  test('server metadata, generateName, one increasing resourceVersion', async () => {
    const a = await api('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'a', uid: 'forged' }, data: { x: '1' } });
    expect(a.code).toBe(201);
    const md = a.body.metadata;
    expect(md.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(md.uid).not.toBe('forged');
    expect(md.generation).toBe(1);
    expect(md.creationTimestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const b = await api('POST', '/api/v1/namespaces/default/secrets', { metadata: { generateName: 'tok-' }, stringData: { k: 'v' } });
    expect(b.body.metadata.name).toMatch(/^tok-[a-z0-9]{5}$/);
    expect(b.body.data).toEqual({ k: Buffer.from('v').toString('base64') });
    expect(b.body.stringData).toBeUndefined();
    expect(Number(b.body.metadata.resourceVersion)).toBeGreaterThan(Number(md.resourceVersion));
  });

  test('409 AlreadyExists, 404 NotFound and 422 Invalid are Status objects', async () => {
    const dup = await api('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'a' } });
    expect(dup.code).toBe(409);
    expect(dup.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'AlreadyExists', code: 409, details: { name: 'a', kind: 'configmaps' } });
    const missing = await api('GET', `${WSJ}/namespaces/default/widescanjobs/nope`);
    expect(missing.body).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404, message: 'widescanjobs.widescan.dev "nope" not found' });
    const noName = await api('POST', '/api/v1/namespaces/default/configmaps', { metadata: {} });
    expect(noName.body).toMatchObject({ reason: 'Invalid', code: 422 });
    expect(noName.body.details.causes[0].field).toBe('metadata.name');
    const badName = await api('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'Bad_Name' } });
    expect(badName.code).toBe(422);
    const noNs = await api('POST', '/api/v1/namespaces/ghost/configmaps', { metadata: { name: 'x' } });
    expect(noNs.code).toBe(404);
    expect(noNs.body.message).toContain('namespaces "ghost" not found');
    const wrongNs = await api('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'y', namespace: 'kube-system' } });
    expect(wrongNs.code).toBe(400);
  });

  test('hostile input: bad JSON, oversized body, bad selectors, unknown paths', async () => {
    expect((await api('POST', '/api/v1/namespaces/default/configmaps', '{"metadata":')).code).toBe(400);
    expect((await api('POST', '/api/v1/namespaces/default/configmaps', '[1,2]')).code).toBe(400);
    const huge = { metadata: { name: 'huge' }, data: { x: 'a'.repeat(4 * 1024 * 1024) } };
    expect((await api('POST', '/api/v1/namespaces/default/configmaps', huge)).code).toBe(413);
    expect((await api('GET', '/api/v1/configmaps?labelSelector=' + encodeURIComponent('a in (b'))).code).toBe(400);
    expect((await api('GET', '/api/v1/configmaps?fieldSelector=garbage')).code).toBe(400);
    expect((await api('GET', '/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=abc')).code).toBe(400);
    expect((await api('GET', '/api/v1/../../etc/passwd')).code).toBe(404);
    expect((await api('GET', '/api/v1/nosuchthings')).code).toBe(404);
    expect((await api('GET', '/api/v2/pods')).code).toBe(404);
    expect((await api('GET', '/api/v1/namespaces/default/configmaps/a/status')).code).toBe(404);
  });
});

describe('list', () => {
  beforeAll(async () => {
    await api('POST', '/api/v1/namespaces', { metadata: { name: 'other' } });
    for (const [ns, name, tier] of [
      ['default', 'l1', 'web'],
      ['default', 'l2', 'db'],
      ['other', 'l3', 'web'],
    ] as const)
      await api('POST', `/api/v1/namespaces/${ns}/pods`, { metadata: { name, labels: { app: 'sel', tier } }, spec: {} });
  });

  test('labelSelector, fieldSelector, across namespaces, list resourceVersion', async () => {
    const names = async (q: string): Promise<string[]> =>
      (await api('GET', `/api/v1/pods?${q}`)).body.items.map((p: KObject) => p.metadata.name).sort();
    expect(await names('labelSelector=app%3Dsel')).toEqual(['l1', 'l2', 'l3']);
    expect(await names('labelSelector=app%3Dsel,tier%3Dweb')).toEqual(['l1', 'l3']);
    expect(await names('labelSelector=app%3Dsel,tier!%3Dweb')).toEqual(['l2']);
    expect(await names('labelSelector=' + encodeURIComponent('tier in (db,cache)'))).toEqual(['l2']);
    expect(await names('labelSelector=' + encodeURIComponent('app,!nothere'))).toEqual(['l1', 'l2', 'l3']);
    expect(await names('fieldSelector=metadata.name%3Dl3')).toEqual(['l3']);
    const nsList = await api('GET', '/api/v1/namespaces/default/pods?labelSelector=app%3Dsel');
    expect(nsList.body.kind).toBe('PodList');
    expect(nsList.body.items).toHaveLength(2);
    expect(Number(nsList.body.metadata.resourceVersion)).toBeGreaterThan(0);
  });

  test('limit/continue pages through everything once', async () => {
    const first = await api('GET', '/api/v1/pods?labelSelector=app%3Dsel&limit=2');
    expect(first.body.items).toHaveLength(2);
    expect(first.body.metadata.remainingItemCount).toBe(1);
    const second = await api('GET', `/api/v1/pods?labelSelector=app%3Dsel&limit=2&continue=${first.body.metadata.continue}`);
    expect(second.body.items).toHaveLength(1);
    expect(second.body.metadata.continue).toBeUndefined();
  });

  test('parseLabelSelector rejects garbage', () => {
    expect(() => parseLabelSelector('a=b=c')).toThrow(/label selector/);
    expect(parseLabelSelector('a==b, c notin (d, e)')).toEqual([
      { key: 'a', op: '=', values: ['b'] },
      { key: 'c', op: 'notin', values: ['d', 'e'] },
    ]);
  });
});

describe('watch', () => {
  test('chunked ADDED/MODIFIED/DELETED from a resourceVersion, one JSON event per line', async () => {
    const start = srv.store.resourceVersion();
    const w = openWatch(`/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${start}`);
    expect((await w.headers).get('transfer-encoding')).toBe('chunked');
    const c = await api('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'w1' }, data: { a: '1' } });
    await api('PATCH', '/api/v1/namespaces/default/configmaps/w1', { data: { a: '2' } }, { 'content-type': 'application/merge-patch+json' });
    await api('DELETE', '/api/v1/namespaces/default/configmaps/w1');
    await w.until(3);
    expect(w.events.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED', 'DELETED']);
    const rvs = w.events.map((e) => Number(e.object.metadata.resourceVersion));
    expect(rvs[0]).toBe(Number(c.body.metadata.resourceVersion));
    expect(rvs[1]! > rvs[0]! && rvs[2]! > rvs[1]!).toBe(true);
    w.abort();
    // Replay: a new watch from the same resourceVersion gets the same three events from history.
    const replay = openWatch(`/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${start}`);
    await replay.until(3);
    expect(replay.events.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED', 'DELETED']);
    replay.abort();
  });

  test('without resourceVersion the current state arrives as ADDED; selectors filter; leaving the selection is DELETED', async () => {
    const w = openWatch('/api/v1/namespaces/default/pods?watch=true&labelSelector=tier%3Dweb');
    await w.until(1);
    expect(w.events[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'l1' } } });
    await api('PATCH', '/api/v1/namespaces/default/pods/l1', { metadata: { labels: { tier: 'db' } } }, { 'content-type': 'application/merge-patch+json' });
    await api('PATCH', '/api/v1/namespaces/default/pods/l2', { metadata: { labels: { tier: 'web' } } }, { 'content-type': 'application/merge-patch+json' });
    await w.until(3);
    expect(w.events.slice(1).map((e) => [e.type, e.object.metadata.name])).toEqual([
      ['DELETED', 'l1'],
      ['ADDED', 'l2'],
    ]);
    w.abort();
  });

  test('a resourceVersion older than the history gets ERROR 410 Expired and the stream ends', async () => {
    const old = srv.store.resourceVersion();
    await api('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'gone-soon' } });
    srv.store.compact();
    const before = srv.store.expiredWatches;
    const w = openWatch(`/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${old}`);
    await w.done;
    expect(w.events).toHaveLength(1);
    expect(w.events[0]).toMatchObject({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });
    expect(srv.store.expiredWatches).toBe(before + 1);
    // The history is bounded: 60 writes with historySize 50 expire the first of them too.
    const rv = srv.store.resourceVersion();
    for (let i = 0; i < 60; i++) await api('PUT', '/api/v1/namespaces/default/configmaps/gone-soon', { metadata: { name: 'gone-soon' }, data: { i: String(i) } });
    const w2 = openWatch(`/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${rv}`);
    await w2.done;
    expect(w2.events[0]!.object.code).toBe(410);
  });

  test('bookmarks, timeoutSeconds and the cut hook end or mark streams', async () => {
    const b = openWatch(`/api/v1/namespaces/default/configmaps?watch=true&allowWatchBookmarks=true&resourceVersion=${srv.store.resourceVersion()}`);
    await b.until(1);
    expect(b.events[0]).toMatchObject({ type: 'BOOKMARK', object: { kind: 'ConfigMap', metadata: { resourceVersion: srv.store.resourceVersion() } } });
    const t = openWatch(`/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1&resourceVersion=${srv.store.resourceVersion()}`);
    const t0 = Date.now();
    await t.done;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    await eventually(() => srv.store.watcherCount() === 1, 'one watcher left');
    srv.store.cutWatches();
    await b.done;
    expect(srv.store.watcherCount()).toBe(0);
  });
});

describe('updates, status subresource, patches', () => {
  let job: KObject;
  beforeAll(async () => {
    const r = await api('POST', `${WSJ}/namespaces/default/widescanjobs`, { ...lab, status: { phase: 'Succeeded' } });
    expect(r.code).toBe(201);
    job = r.body;
  });

  test('create drops status, applies defaults and prunes unknown fields', async () => {
    expect(job.status).toBeUndefined();
    expect(job.spec.hardware).toBe('auto');
    expect(job.spec.probe).toMatchObject({ hopLimit: 64, retries: 0, replyTimeoutSeconds: 2 });
    expect(job.spec.rate).toEqual({ packetsPerSecond: 20000 });
    const r = await api('POST', `${WSJ}/namespaces/default/widescanjobs`, { ...lab, metadata: { name: 'pruned' }, spec: { ...lab.spec, bogus: 1, rate: { evil: true } } });
    expect(r.code).toBe(201);
    expect(r.body.spec.bogus).toBeUndefined();
    expect(r.body.spec.rate).toEqual({ packetsPerSecond: 10000 });
  });

  test('fieldValidation=Strict refuses unknown fields instead of pruning them; OpenAPI v3 advertises it', async () => {
    const r = await api('POST', `${WSJ}/namespaces/default/widescanjobs?fieldValidation=Strict`, { ...lab, metadata: { name: 'strict' }, spec: { ...lab.spec, bogus: 1 } });
    expect(r.code).toBe(400);
    expect(r.body.message).toContain('unknown field "spec.bogus"');
    const root = (await api('GET', '/openapi/v3')).body;
    const gv = (await api('GET', root.paths['apis/widescan.dev/v1alpha1'].serverRelativeURL)).body;
    const patch = gv.paths['/apis/widescan.dev/v1alpha1/namespaces/{namespace}/widescanjobs/{name}'].patch;
    expect(patch['x-kubernetes-group-version-kind']).toEqual({ group: 'widescan.dev', version: 'v1alpha1', kind: 'WidescanJob' });
    expect(patch.parameters.map((p: KObject) => p.name)).toContain('fieldValidation');
    expect(Object.keys(patch.requestBody.content)).not.toContain('application/strategic-merge-patch+json');
    expect((await fetch(`${srv.url}/openapi/v3`)).status).toBe(401);
  });

  test('invalid custom resources get 422 naming the field', async () => {
    const bad = structuredClone(lab);
    bad.metadata.name = 'bad';
    bad.spec.targets[1].strategy = 'everything';
    const r = await api('POST', `${WSJ}/namespaces/default/widescanjobs`, bad);
    expect(r.code).toBe(422);
    expect(r.body.message).toContain('spec.targets[1].strategy: Unsupported value: "everything"');
    expect(r.body.details.causes[0].field).toBe('spec.targets[1].strategy');
    const noTargets = await api('POST', `${WSJ}/namespaces/default/widescanjobs`, { ...lab, metadata: { name: 'bad2' }, spec: { shardSize: 1 } });
    expect(noTargets.code).toBe(422);
    expect(noTargets.body.message).toContain('spec.targets: Required value');
    expect(noTargets.body.message).toContain('spec.shardSize');
    const badStatus = await api('PATCH', `${WSJ}/namespaces/default/widescanjobs/lab/status`, { status: { phase: 'Exploded' } }, { 'content-type': 'application/merge-patch+json' });
    expect(badStatus.code).toBe(422);
    expect(badStatus.body.message).toContain('status.phase');
  });

  test('PUT with a stale resourceVersion is 409; without one on a custom resource 422', async () => {
    const cur = (await api('GET', `${WSJ}/namespaces/default/widescanjobs/lab`)).body;
    const ok = await api('PUT', `${WSJ}/namespaces/default/widescanjobs/lab`, { ...cur, spec: { ...cur.spec, suspend: true } });
    expect(ok.code).toBe(200);
    expect(ok.body.metadata.generation).toBe(2);
    const stale = await api('PUT', `${WSJ}/namespaces/default/widescanjobs/lab`, { ...cur, spec: { ...cur.spec, suspend: false } });
    expect(stale.code).toBe(409);
    expect(stale.body.reason).toBe('Conflict');
    const { resourceVersion: _drop, ...md } = ok.body.metadata;
    expect((await api('PUT', `${WSJ}/namespaces/default/widescanjobs/lab`, { ...ok.body, metadata: md })).code).toBe(422);
  });

  test('main resource ignores status; /status changes only status and never bumps generation; no-op writes keep the resourceVersion', async () => {
    const cur = (await api('GET', `${WSJ}/namespaces/default/widescanjobs/lab`)).body;
    const main = await api('PATCH', `${WSJ}/namespaces/default/widescanjobs/lab`, { status: { phase: 'Running' } }, { 'content-type': 'application/merge-patch+json' });
    expect(main.body.status).toBeUndefined();
    expect(main.body.metadata.resourceVersion).toBe(cur.metadata.resourceVersion);
    const st = await api(
      'PATCH',
      `${WSJ}/namespaces/default/widescanjobs/lab/status`,
      { spec: { suspend: false }, metadata: { labels: { sneaky: 'x' } }, status: { phase: 'Running', progress: '12%', probesSent: 5, peersDiscovered: 2 } },
      { 'content-type': 'application/merge-patch+json' },
    );
    expect(st.code).toBe(200);
    expect(st.body.status.phase).toBe('Running');
    expect(st.body.spec.suspend).toBe(true);
    expect(st.body.metadata.labels).toBeUndefined();
    expect(st.body.metadata.generation).toBe(cur.metadata.generation);
    expect(Number(st.body.metadata.resourceVersion)).toBeGreaterThan(Number(cur.metadata.resourceVersion));
  });

  test('JSON patch (with a failing test op), strategic merge 415 on custom resources, accepted on built-ins', async () => {
    const jp = await api(
      'PATCH',
      `${WSJ}/namespaces/default/widescanjobs/lab`,
      [
        { op: 'test', path: '/spec/suspend', value: true },
        { op: 'replace', path: '/spec/suspend', value: false },
        { op: 'add', path: '/metadata/labels', value: { team: 'a' } },
      ],
      { 'content-type': 'application/json-patch+json' },
    );
    expect(jp.code).toBe(200);
    expect(jp.body.spec.suspend).toBe(false);
    expect(jp.body.metadata.labels).toEqual({ team: 'a' });
    const failed = await api('PATCH', `${WSJ}/namespaces/default/widescanjobs/lab`, [{ op: 'test', path: '/spec/suspend', value: true }], {
      'content-type': 'application/json-patch+json',
    });
    expect(failed.code).toBe(422);
    const smp = await api('PATCH', `${WSJ}/namespaces/default/widescanjobs/lab`, { spec: {} }, { 'content-type': 'application/strategic-merge-patch+json' });
    expect(smp.code).toBe(415);
    expect(smp.body.reason).toBe('UnsupportedMediaType');
    const cm = await api('PATCH', '/api/v1/namespaces/default/configmaps/a', { data: { y: '2' } }, { 'content-type': 'application/strategic-merge-patch+json' });
    expect(cm.body.data).toEqual({ x: '1', y: '2' });
    const stalePatch = await api('PATCH', '/api/v1/namespaces/default/configmaps/a', { metadata: { resourceVersion: '1' }, data: { y: '3' } }, {
      'content-type': 'application/merge-patch+json',
    });
    expect(stalePatch.code).toBe(409);
    expect((await api('PATCH', '/api/v1/namespaces/default/configmaps/a', { a: 1 }, { 'content-type': 'text/plain' })).code).toBe(415);
  });

  test('deployments: status subresource, spec change bumps generation, status does not', async () => {
    const d = (await api('POST', '/apis/apps/v1/namespaces/default/deployments', { metadata: { name: 'd' }, spec: { replicas: 1 }, status: { replicas: 9 } })).body;
    expect(d.status).toBeUndefined();
    const s = await api('PUT', '/apis/apps/v1/namespaces/default/deployments/d/status', { ...d, status: { replicas: 1 } });
    expect(s.body.metadata.generation).toBe(1);
    const p = await api('PATCH', '/apis/apps/v1/namespaces/default/deployments/d', { spec: { replicas: 3 } }, { 'content-type': 'application/merge-patch+json' });
    expect(p.body.metadata.generation).toBe(2);
    expect(p.body.status).toEqual({ replicas: 1 });
  });

  test('Table rendering shows the printer columns of kubectl get wsj', async () => {
    const r = await api('GET', `${WSJ}/namespaces/default/widescanjobs`, undefined, { accept: 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json' });
    expect(r.body.kind).toBe('Table');
    expect(r.body.apiVersion).toBe('meta.k8s.io/v1');
    expect(r.body.columnDefinitions.map((c: KObject) => c.name)).toEqual(['Name', 'Phase', 'Progress', 'Probes', 'Peers', 'Age']);
    const row = r.body.rows.find((x: KObject) => x.cells[0] === 'lab');
    expect(row.cells.slice(0, 5)).toEqual(['lab', 'Running', '12%', 5, 2]);
    expect(row.cells[5]).toMatch(/^\d+s$/);
    expect(row.object.kind).toBe('PartialObjectMetadata');
    const one = await api('GET', `${WSJ}/namespaces/default/widescanjobs/pruned`, undefined, { accept: 'application/json;as=Table;v=v1;g=meta.k8s.io' });
    expect(one.body.rows[0].cells.slice(0, 2)).toEqual(['pruned', null]);
    expect(humanDuration(5 * 60_000 + 3000)).toBe('5m3s');
    expect(humanDuration(3 * 86_400_000)).toBe('3d');
  });
});

describe('deletion: finalizers, owner cascade, namespaces', () => {
  test('finalizers hold the object with deletionTimestamp until removed, then DELETED', async () => {
    const o = (await api('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'fin', finalizers: ['widescan.dev/cleanup'] } })).body;
    const w = openWatch(`/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${o.metadata.resourceVersion}&fieldSelector=metadata.name%3Dfin`);
    const d = await api('DELETE', '/api/v1/namespaces/default/configmaps/fin');
    expect(d.body.metadata.deletionTimestamp).toBeDefined();
    expect(d.body.metadata.generation).toBe(2);
    expect((await api('GET', '/api/v1/namespaces/default/configmaps/fin')).code).toBe(200);
    const add = await api('PATCH', '/api/v1/namespaces/default/configmaps/fin', { metadata: { finalizers: ['widescan.dev/cleanup', 'x/y'] } }, { 'content-type': 'application/merge-patch+json' });
    expect(add.code).toBe(422);
    await api('PATCH', '/api/v1/namespaces/default/configmaps/fin', [{ op: 'remove', path: '/metadata/finalizers' }], { 'content-type': 'application/json-patch+json' });
    expect((await api('GET', '/api/v1/namespaces/default/configmaps/fin')).code).toBe(404);
    await w.until(2);
    expect(w.events.map((e) => e.type)).toEqual(['MODIFIED', 'DELETED']);
    w.abort();
  });

  test('delete preconditions: a wrong uid is a 409', async () => {
    const r = await api('DELETE', '/api/v1/namespaces/default/configmaps/a', { preconditions: { uid: 'not-it' } });
    expect(r.code).toBe(409);
  });

  test('deleting an owner garbage-collects dependents (background), orphan keeps them', async () => {
    const dep = (await api('POST', '/apis/apps/v1/namespaces/default/deployments', { metadata: { name: 'owner' }, spec: {} })).body;
    const ref = (o: KObject): KObject[] => [{ apiVersion: o.apiVersion, kind: o.kind, name: o.metadata.name, uid: o.metadata.uid, controller: true, blockOwnerDeletion: true }];
    const rs = (await api('POST', '/apis/apps/v1/namespaces/default/replicasets', { metadata: { name: 'owner-rs', ownerReferences: ref(dep) }, spec: {} })).body;
    await api('POST', '/api/v1/namespaces/default/pods', { metadata: { name: 'owner-pod', ownerReferences: ref(rs) }, spec: {} });
    await api('DELETE', '/apis/apps/v1/namespaces/default/deployments/owner');
    await eventually(async () => (await api('GET', '/api/v1/namespaces/default/pods/owner-pod')).code === 404, 'pod collected');
    expect((await api('GET', '/apis/apps/v1/namespaces/default/replicasets/owner-rs')).code).toBe(404);

    const keep = (await api('POST', '/apis/apps/v1/namespaces/default/deployments', { metadata: { name: 'keep' }, spec: {} })).body;
    await api('POST', '/api/v1/namespaces/default/pods', { metadata: { name: 'orphan', ownerReferences: ref(keep) }, spec: {} });
    await api('DELETE', '/apis/apps/v1/namespaces/default/deployments/keep?propagationPolicy=Orphan');
    await srv.store.settle();
    const orphan = await api('GET', '/api/v1/namespaces/default/pods/orphan');
    expect(orphan.code).toBe(200);
    expect(orphan.body.metadata.ownerReferences).toBeUndefined();
  });

  test('foreground deletion keeps the owner until its dependents are gone', async () => {
    const dep = (await api('POST', '/apis/apps/v1/namespaces/default/deployments', { metadata: { name: 'fg' }, spec: {} })).body;
    const ref = [{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'fg', uid: dep.metadata.uid }];
    await api('POST', '/api/v1/namespaces/default/pods', { metadata: { name: 'fg-pod', ownerReferences: ref, finalizers: ['hold'] }, spec: {} });
    const d = await api('DELETE', '/apis/apps/v1/namespaces/default/deployments/fg', { propagationPolicy: 'Foreground' });
    expect(d.body.metadata.finalizers).toEqual(['foregroundDeletion']);
    await srv.store.settle();
    expect((await api('GET', '/api/v1/namespaces/default/pods/fg-pod')).body.metadata.deletionTimestamp).toBeDefined();
    expect((await api('GET', '/apis/apps/v1/namespaces/default/deployments/fg')).code).toBe(200);
    await api('PATCH', '/api/v1/namespaces/default/pods/fg-pod', { metadata: { finalizers: null } }, { 'content-type': 'application/merge-patch+json' });
    await eventually(async () => (await api('GET', '/apis/apps/v1/namespaces/default/deployments/fg')).code === 404, 'owner gone');
  });

  test('deleting a namespace deletes its contents, then the namespace', async () => {
    await api('POST', '/api/v1/namespaces', { metadata: { name: 'doomed' } });
    await api('POST', '/apis/coordination.k8s.io/v1/namespaces/doomed/leases', { metadata: { name: 'l' }, spec: { holderIdentity: 'a' } });
    const d = await api('DELETE', '/api/v1/namespaces/doomed');
    expect(d.body.status.phase).toBe('Terminating');
    await eventually(async () => (await api('GET', '/api/v1/namespaces/doomed')).code === 404, 'namespace gone');
    expect(srv.store.list('coordination.k8s.io', 'leases', 'doomed')).toEqual([]);
  });

  test('a namespace stays Terminating while an object in it holds a finalizer', async () => {
    await api('POST', '/api/v1/namespaces', { metadata: { name: 'held' } });
    await api('POST', '/api/v1/namespaces/held/configmaps', { metadata: { name: 'c', finalizers: ['x/y'] } });
    await api('DELETE', '/api/v1/namespaces/held');
    await srv.store.settle();
    expect((await api('GET', '/api/v1/namespaces/held')).body.status.phase).toBe('Terminating');
    expect((await api('POST', '/api/v1/namespaces/held/configmaps', { metadata: { name: 'new' } })).code).toBe(403);
    await api('PATCH', '/api/v1/namespaces/held/configmaps/c', { metadata: { finalizers: [] } }, { 'content-type': 'application/merge-patch+json' });
    await eventually(async () => (await api('GET', '/api/v1/namespaces/held')).code === 404, 'namespace gone');
  });

  test('an object created with an owner that does not exist is collected', async () => {
    const ref = [{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'ghost', uid: '00000000-0000-0000-0000-000000000000' }];
    expect((await api('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'dangling', ownerReferences: ref } })).code).toBe(201);
    await eventually(async () => (await api('GET', '/api/v1/namespaces/default/configmaps/dangling')).code === 404, 'dangling collected');
  });
});

describe('@kubernetes/client-node 1.x through the kubeconfig', () => {
  let kc: k8s.KubeConfig;
  let custom: k8s.CustomObjectsApi;
  const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
  const base = { group: 'widescan.dev', version: 'v1alpha1', namespace: 'cn', plural: 'widescanjobs' };

  beforeAll(async () => {
    kc = new k8s.KubeConfig();
    kc.loadFromFile(srv.kubeconfig);
    custom = kc.makeApiClient(k8s.CustomObjectsApi);
    await kc.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name: 'cn' } } });
  });

  test('CustomObjectsApi create/get/merge-patch status, 409 on a stale replace', async () => {
    const created = (await custom.createNamespacedCustomObject({ ...base, body: { ...lab, metadata: { name: 'cjob' } } })) as KObject;
    expect(created.metadata.uid).toBeDefined();
    const got = (await custom.getNamespacedCustomObject({ ...base, name: 'cjob' })) as KObject;
    expect(got.spec.shardSize).toBe(4096);
    const patched = (await custom.patchNamespacedCustomObjectStatus({ ...base, name: 'cjob', body: { status: { phase: 'Running' } } }, mergePatch)) as KObject;
    expect(patched.status.phase).toBe('Running');
    expect(patched.metadata.generation).toBe(1);
    await expect(custom.replaceNamespacedCustomObject({ ...base, name: 'cjob', body: got })).rejects.toMatchObject({ code: 409 });
    await expect(custom.getNamespacedCustomObject({ ...base, name: 'missing' })).rejects.toMatchObject({ code: 404 });
  });

  test('informer sees ADDED/MODIFIED/DELETED, and after a cut + compaction relists via 410 without missing a change', async () => {
    const path = `${WSJ}/namespaces/cn/widescanjobs`;
    const seen: string[] = [];
    const informer = k8s.makeInformer(kc, path, () => custom.listNamespacedCustomObject(base) as Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>);
    const errors: unknown[] = [];
    informer.on('add', (o) => seen.push(`add ${o.metadata!.name}`));
    informer.on('update', (o) => seen.push(`update ${o.metadata!.name} ${(o as KObject).status?.phase ?? ''}`));
    informer.on('delete', (o) => seen.push(`delete ${o.metadata!.name}`));
    informer.on('error', (e) => errors.push(e));
    await informer.start();
    await eventually(() => seen.includes('add cjob') && srv.store.watcherCount() > 0, 'initial list + watch');

    await custom.createNamespacedCustomObject({ ...base, body: { ...lab, metadata: { name: 'i1' } } });
    await custom.patchNamespacedCustomObjectStatus({ ...base, name: 'i1', body: { status: { phase: 'Running' } } }, mergePatch);
    await custom.deleteNamespacedCustomObject({ ...base, name: 'cjob' });
    await eventually(() => seen.includes('add i1') && seen.includes('update i1 Running') && seen.includes('delete cjob'), 'watch events');

    // Cut every watch and, before the informer can reconnect, change things and forget the history:
    // its re-watch from the last resourceVersion must get 410 and the relist must surface every change.
    const expired = srv.store.expiredWatches;
    const wsj = srv.store.type('widescan.dev', 'widescanjobs');
    srv.store.cutWatches();
    srv.store.create(wsj, 'v1alpha1', 'cn', { ...lab, metadata: { name: 'during-cut' } });
    srv.store.patch(wsj, 'v1alpha1', 'cn', 'i1', 'application/merge-patch+json', { status: { phase: 'Succeeded' } }, 'status');
    srv.store.compact();
    await eventually(() => seen.includes('add during-cut') && seen.includes('update i1 Succeeded'), 'relist after 410');
    expect(srv.store.expiredWatches).toBeGreaterThan(expired);

    await custom.deleteNamespacedCustomObject({ ...base, name: 'i1' });
    await eventually(() => seen.includes('delete i1'), 'watch resumed after relist');
    expect(errors).toEqual([]);
    await informer.stop();
  });

  test('leases and events work through the typed clients', async () => {
    const coord = kc.makeApiClient(k8s.CoordinationV1Api);
    const lease = await coord.createNamespacedLease({ namespace: 'cn', body: { metadata: { name: 'leader' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 15 } } });
    const stale = structuredClone(lease);
    await coord.replaceNamespacedLease({ name: 'leader', namespace: 'cn', body: { ...lease, spec: { ...lease.spec, holderIdentity: 'b' } } });
    await expect(coord.replaceNamespacedLease({ name: 'leader', namespace: 'cn', body: { ...stale, spec: { ...stale.spec, holderIdentity: 'c' } } })).rejects.toMatchObject({ code: 409 });
    const ev = kc.makeApiClient(k8s.EventsV1Api);
    await ev.createNamespacedEvent({ namespace: 'cn', body: { metadata: { generateName: 'e-' }, eventTime: new Date(), reportingController: 'widescan', reportingInstance: 'x', action: 'Scan', reason: 'Started' } as k8s.EventsV1Event });
    expect((await ev.listNamespacedEvent({ namespace: 'cn' })).items).toHaveLength(1);
  });
});

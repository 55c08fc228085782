// The bootstrap's P2P and admin API (issue 7) over real HTTP on a real redis-server: node announces and
// heartbeats with their TTL, the caller's public address behind trusted and untrusted proxies, signed peer
// lists in authority mode across a key rotation, blocking with its audit trail, job progress for the panel,
// and state shared by restarts and replicas.

import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { bootstrapOptionsFromEnv, startBootstrap, type BootstrapOptions, type BootstrapService } from '../../bootstrap/service.js';
import type { Peer } from '../../bootstrap/store.js';
import { loadJob as compileJobText } from '../../lib/core/job.js';
import { keyIdOf, parsePublicKey, SIGNATURE_HEADER, verifyBody } from '../../lib/core/signing.js';
import { addCounters, finishShard, registerJob } from '../../lib/jobstore.js';
import { keys } from '../../lib/keys.js';
import { createLogger } from '../../lib/log.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';

const LISTENER = 'listener-token-0123456789abcdef';
const ADMIN = 'admin-token-fedcba9876543210xyz';
const logger = createLogger('test', 'silent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let embedded: EmbeddedRedis;
let redis: Redis;
/** Admin enabled, node TTL 1 s, trustless, no trusted proxies. */
let svc: BootstrapService;
const started: BootstrapService[] = [];
let dir: string;

function newKeyPem(): string {
  return generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

// Key facts straight from node:crypto, so the test does not lean on the code under test to read keys.
const idOf = (pem: string) => keyIdOf(createPrivateKey(pem));
/** Base64 of the raw public key of a PEM private key, the way a verifier would configure it. */
const rawOf = (pem: string) => Buffer.from(createPublicKey(createPrivateKey(pem)).export({ format: 'jwk' }).x!, 'base64url').toString('base64');

// The tests announce many nodes from one loopback client: the own-address rule has its own test below.
async function start(extra: Partial<BootstrapOptions> = {}): Promise<BootstrapService> {
  const s = await startBootstrap({ redisUrl: embedded.url, listenerToken: LISTENER, port: 0, host: '127.0.0.1', logger, announceAnyAddress: true, ...extra });
  started.push(s);
  return s;
}

beforeAll(async () => {
  embedded = await startEmbeddedRedis();
  redis = connectRedis(embedded.url);
  svc = await start({ adminToken: ADMIN, nodeTtlSeconds: 1 });
  dir = mkdtempSync(join(tmpdir(), 'widescan-p2p-test-'));
});

afterAll(async () => {
  await Promise.all(started.map((s) => s.close()));
  await redis.quit();
  await embedded.stop();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await redis.flushall();
});

interface Reply {
  status: number;
  body: any; // the JSON the API under test sent back, read field by field in assertions
  bytes: Buffer;
  headers: Headers;
}

async function call(
  base: string,
  method: string,
  path: string,
  init: { json?: unknown; raw?: string; token?: string; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  let body: string | undefined = init.raw;
  if (init.json !== undefined) body = JSON.stringify(init.json);
  if (body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + path, { method, headers, body });
  const bytes = Buffer.from(await res.arrayBuffer());
  const isJson = (res.headers.get('content-type') ?? '').startsWith('application/json');
  return { status: res.status, body: isJson ? JSON.parse(bytes.toString('utf8')) : bytes.toString('utf8'), bytes, headers: res.headers };
}

const announce = (node: unknown, base = svc.url) => call(base, 'POST', '/api/v1/announce', { json: node });
const heartbeat = (node: unknown, base = svc.url) => call(base, 'POST', '/api/v1/heartbeat', { json: node });
const block = (address: string, body: unknown, base = svc.url, token = ADMIN) =>
  call(base, 'POST', `/api/v1/peers/${encodeURIComponent(address)}/block`, { json: body, token });

async function announceOk(node: { address: string; port: number; id: string }, base = svc.url): Promise<{ self: unknown; peers: Peer[]; issuedAt: string }> {
  const r = await announce(node, base);
  expect(r.status).toBe(200);
  return r.body;
}

async function report(peers: { address: string; kind: string; job: string }[], base = svc.url): Promise<unknown> {
  const r = await call(base, 'POST', '/api/v1/peers', { json: { peers }, token: LISTENER });
  expect(r.status).toBe(200);
  return r.body;
}

async function listed(query = '', base = svc.url): Promise<string[]> {
  const r = await call(base, 'GET', `/api/v1/peers${query}`);
  expect(r.status).toBe(200);
  return (r.body.peers as Peer[]).map((p) => p.address);
}

/** The whole Redis content, to prove a rejected request changed nothing. */
async function dump(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const k of (await redis.keys('*')).sort()) {
    const type = await redis.type(k);
    if (type === 'hash') out[k] = await redis.hgetall(k);
    else if (type === 'zset') out[k] = await redis.zrange(k, 0, '-1', 'WITHSCORES');
    else if (type === 'set') out[k] = (await redis.smembers(k)).sort();
    else if (type === 'list') out[k] = await redis.lrange(k, 0, -1);
    else out[k] = await redis.get(k);
  }
  return out;
}

const NODE_A = { address: '2001:DB8:0:0::A', port: 4433, id: 'node-a' };
const NODE_B = { address: '2001:db8::b', port: 9000, id: 'b.example:1' };
const NODE_C = { address: '192.0.2.7', port: 1, id: 'C_3' };

describe('announce and heartbeat', () => {
  test('announce registers the node and answers with the others: nodes first, never the caller or a blocked peer', async () => {
    const before = Date.now();
    const first = await announce(NODE_A);
    expect(first.status).toBe(200);
    expect(first.body.self).toEqual({ address: '2001:db8::a', port: 4433, id: 'node-a' });
    expect(first.body.peers).toEqual([]);
    expect(Date.parse(first.body.issuedAt)).toBeGreaterThanOrEqual(before - 1000);
    expect(first.headers.get(SIGNATURE_HEADER)).toBeNull(); // trustless

    await report([
      { address: '2001:db8:1::1', kind: 'host', job: 'scan' },
      { address: '2001:db8:1::2', kind: 'host', job: 'scan' },
      { address: '2001:db8:1::3', kind: 'widescan', job: 'scan' },
    ]);
    await announceOk(NODE_B);
    expect((await block('2001:db8:1::2', { blocked: true })).status).toBe(200);

    const c = await announceOk(NODE_C);
    expect(c.self).toEqual(NODE_C);
    expect(c.peers.map((p) => p.address)).toEqual(['2001:db8::b', '2001:db8::a', '2001:db8:1::3', '2001:db8:1::1']);
    expect(c.peers[0]).toMatchObject({ kind: 'node', port: 9000, id: 'b.example:1', job: null, rttMs: null });
    expect(c.peers[3]).toMatchObject({ kind: 'host', job: 'scan' });
    expect(c.peers[3]).not.toHaveProperty('port');

    // every served list shows nodes with their port and id; the caller is excluded only from its own answer
    const nodes = await call(svc.url, 'GET', '/api/v1/peers?kind=node');
    expect((nodes.body.peers as Peer[]).map((p) => [p.address, p.port, p.id])).toEqual([
      ['2001:db8::a', 4433, 'node-a'], ['2001:db8::b', 9000, 'b.example:1'], ['192.0.2.7', 1, 'C_3'],
    ]);
    expect(Date.parse(nodes.body.issuedAt)).toBeGreaterThanOrEqual(before - 1000);
    expect((await announceOk(NODE_A)).peers.map((p) => p.address)).toEqual(['192.0.2.7', '2001:db8::b', '2001:db8:1::3', '2001:db8:1::1']);
  });

  test('announcing is idempotent; the IPv4-mapped form is the same node as its dotted quad', async () => {
    await announceOk({ ...NODE_C, address: '::ffff:192.0.2.7' });
    const strip = (d: Record<string, unknown>) => {
      const h = d[keys.peer('192.0.2.7')] as Record<string, string>;
      return { ...d, [keys.peer('192.0.2.7')]: { ...h, last: 'x' }, 'widescan:peers:nodes:seen': 'x' };
    };
    const once = strip(await dump());
    expect(once[keys.peer('192.0.2.7')]).toMatchObject({ kind: 'node', port: '1', id: 'C_3' });
    await sleep(5);
    expect((await announceOk(NODE_C)).self).toEqual(NODE_C);
    expect(strip(await dump())).toEqual(once);
  });

  test('a node found by a scan becomes a node when it announces; a listener never downgrades it', async () => {
    await report([{ address: '2001:db8::a', kind: 'widescan', job: 'scan' }]);
    await announceOk(NODE_A);
    await report([{ address: '2001:db8::a', kind: 'host', job: 'other' }]);
    const r = await call(svc.url, 'GET', '/api/v1/peers');
    expect(r.body.peers).toEqual([expect.objectContaining({ address: '2001:db8::a', kind: 'node', job: 'scan', port: 4433, id: 'node-a' })]);
    expect(await listed('?kind=widescan')).toEqual([]);
  });

  test('heartbeats keep a node alive past the TTL; a silent node drops out of every list, then must announce again', async () => {
    // Sleeps are lower bounds: B is silent for more than the TTL for sure, and A's gaps stay well under it.
    await announceOk(NODE_A);
    await announceOk(NODE_B);
    await sleep(550);
    const hb = await heartbeat(NODE_A);
    expect(hb.status).toBe(200);
    expect(hb.body).toEqual({ ttlSeconds: 1 });
    await sleep(550); // B is now over 1.1 s silent, A about 0.55 s
    expect((await heartbeat(NODE_A)).status).toBe(200);
    expect(await listed()).toEqual(['2001:db8::a']);
    expect(await listed('?kind=node')).toEqual(['2001:db8::a']);
    expect((await announceOk(NODE_C)).peers.map((p) => p.address)).toEqual(['2001:db8::a']);
    const metrics = (await call(svc.url, 'GET', '/metrics')).body as string;
    expect(metrics).toMatch(/widescan_bootstrap_peers\{kind="node",component="bootstrap"\} 2\n/);

    const late = await heartbeat(NODE_B);
    expect(late.status).toBe(404);
    expect(late.body.error).toMatch(/announce first/);
    // a heartbeat must name the node as it announced itself
    expect((await heartbeat({ ...NODE_A, port: 4434 })).status).toBe(404);
    expect((await heartbeat({ ...NODE_A, id: 'someone-else' })).status).toBe(404);
    expect((await heartbeat({ address: '2001:db8::99', port: 1, id: 'x' })).status).toBe(404);
    await announceOk(NODE_B);
    expect(await listed('?kind=node')).toEqual(['2001:db8::a', '2001:db8::b', '192.0.2.7']);
  });

  test('a blocked address cannot announce nor heartbeat, and is not stored', async () => {
    await announceOk(NODE_A);
    expect((await block('2001:db8::a', { blocked: true, reason: 'abuse' })).status).toBe(200);
    expect((await block('198.51.100.1', { blocked: true })).status).toBe(200);
    const before = await dump();
    const r = await announce(NODE_A);
    expect(r.status).toBe(403);
    expect(r.body.error).toMatch(/^address: 2001:db8::a is blocked/);
    expect((await announce({ address: '::ffff:198.51.100.1', port: 80, id: 'v4' })).status).toBe(403);
    expect((await heartbeat(NODE_A)).status).toBe(403);
    expect(await dump()).toEqual(before);
    expect(await listed()).toEqual([]);
  });

  const good = { address: '2001:db8::1', port: 80, id: 'n' };
  const bad: [string, () => Promise<Reply>, number, RegExp][] = [
    ['malformed JSON', () => call(svc.url, 'POST', '/api/v1/announce', { raw: '{"address": ' }), 400, /^body: not valid JSON/],
    ['text/plain', () => call(svc.url, 'POST', '/api/v1/announce', { raw: JSON.stringify(good), headers: { 'content-type': 'text/plain' } }), 415, /Content-Type/],
    ['no body', () => call(svc.url, 'POST', '/api/v1/announce', { headers: { 'content-type': 'application/json' } }), 400, /^address: is required/],
    ['null body', () => call(svc.url, 'POST', '/api/v1/announce', { raw: 'null' }), 400, /^body: not valid JSON/],
    ['array body', () => call(svc.url, 'POST', '/api/v1/announce', { raw: '[]' }), 400, /^body: must be object/],
    ['missing id', () => announce({ address: good.address, port: 80 }), 400, /^id: is required/],
    ['unknown field', () => announce({ ...good, job: 'j' }), 400, /^body: unknown field "job"/],
    ['__proto__ field', () => call(svc.url, 'POST', '/api/v1/announce', { raw: '{"address":"::1","port":1,"id":"a","__proto__":{"x":1}}' }), 400, /unknown field "__proto__"/],
    ['port as string', () => announce({ ...good, port: '80' }), 400, /^port: must be integer/],
    ['port 0', () => announce({ ...good, port: 0 }), 400, /^port: must be >= 1/],
    ['port 65536', () => announce({ ...good, port: 65536 }), 400, /^port: must be <= 65535/],
    ['fractional port', () => announce({ ...good, port: 80.5 }), 400, /^port: must be integer/],
    ['id with a space', () => announce({ ...good, id: 'a b' }), 400, /^id: must be 1-128 characters/],
    ['empty id', () => announce({ ...good, id: '' }), 400, /^id: /],
    ['id of 129 chars', () => announce({ ...good, id: 'x'.repeat(129) }), 400, /^id: /],
    ['id with markup', () => announce({ ...good, id: '<script>alert(1)</script>' }), 400, /^id: /],
    ['address as number', () => announce({ ...good, address: 42 }), 400, /^address: must be string/],
    ['bad hex', () => announce({ ...good, address: '2001:db8::g' }), 400, /^address: /],
    ['three octets', () => announce({ ...good, address: '192.0.2' }), 400, /^address: .*not an IPv4 address/],
    ['octet with a leading zero', () => announce({ ...good, address: '192.0.2.07' }), 400, /^address: .*not an IPv4 address/],
    ['octet 256', () => announce({ ...good, address: '192.0.2.256' }), 400, /^address: /],
    ['unspecified', () => announce({ ...good, address: '::' }), 400, /^address: :: is the unspecified address/],
    ['IPv4 unspecified', () => announce({ ...good, address: '0.0.0.0' }), 400, /^address: .*unspecified/],
    ['multicast', () => announce({ ...good, address: 'ff02::1' }), 400, /^address: .*multicast/],
    ['IPv4 multicast', () => announce({ ...good, address: '224.0.0.1' }), 400, /^address: .*multicast/],
    ['broadcast', () => announce({ ...good, address: '255.255.255.255' }), 400, /^address: .*broadcast/],
    ['zone id', () => announce({ ...good, address: 'fe80::1%eth0' }), 400, /^address: .*zone/],
    ['prefix', () => announce({ ...good, address: '2001:db8::/64' }), 400, /^address: /],
    ['hostile address text', () => announce({ ...good, address: '"><img src=x onerror=alert(1)>' }), 400, /^address: /],
    ['address of 65 chars', () => announce({ ...good, address: '1'.repeat(65) }), 400, /^address: must NOT have more than 64/],
    ['5 KiB body', () => announce({ ...good, pad: 'x'.repeat(5000) }), 413, /^body: larger than the limit of 4096 bytes$/],
    ['heartbeat: malformed JSON', () => call(svc.url, 'POST', '/api/v1/heartbeat', { raw: '{' }), 400, /^body: not valid JSON/],
    ['heartbeat: unknown field', () => heartbeat({ ...NODE_A, ttl: 9 }), 400, /^body: unknown field "ttl"/],
    ['heartbeat: port as string', () => heartbeat({ ...NODE_A, port: '4433' }), 400, /^port: must be integer/],
    ['heartbeat: bad address', () => heartbeat({ ...NODE_A, address: 'localhost' }), 400, /^address: /],
    ['heartbeat: 5 KiB body', () => heartbeat({ ...NODE_A, id: 'x'.repeat(5000) }), 413, /^body: larger than/],
  ];

  test.each(bad)('%s → 4xx JSON error, Redis unchanged', async (_name, send, status, message) => {
    await announceOk(NODE_A);
    await report([{ address: '2001:db8:1::1', kind: 'host', job: 'j' }]);
    const before = await dump();
    const r = await send();
    expect(r.status).toBe(status);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect(r.body.error).toMatch(message);
    expect(await dump()).toEqual(before);
  });
});

describe('a node announces its own address', () => {
  test('by default an address other than the caller\'s is refused (403, nothing stored); the caller\'s own is accepted', async () => {
    const strict = await start({ announceAnyAddress: false });
    const before = await dump();
    const foreign = await announce({ address: '2001:db8::66', port: 4000, id: 'spoofer' }, strict.url);
    expect(foreign.status).toBe(403);
    expect(foreign.body.error).toBe('address: a node announces its own address; this request comes from 127.0.0.1, not 2001:db8::66');
    expect((await heartbeat({ address: '2001:db8::66', port: 4000, id: 'spoofer' }, strict.url)).status).toBe(403);
    expect(await dump()).toEqual(before);
    const own = await announce({ address: '127.0.0.1', port: 4000, id: 'honest' }, strict.url);
    expect(own.status).toBe(200);
    expect(own.body.self).toEqual({ address: '127.0.0.1', port: 4000, id: 'honest' });
    expect((await heartbeat({ address: '127.0.0.1', port: 4000, id: 'honest' }, strict.url)).status).toBe(200);
  });
});

describe('publicip', () => {
  test('without trusted proxies the TCP peer is the caller, whatever X-Forwarded-For says', async () => {
    const r = await call(svc.url, 'GET', '/api/v1/publicip', { headers: { 'x-forwarded-for': '203.0.113.9' } });
    expect(r).toMatchObject({ status: 200, body: { address: '127.0.0.1' } });
    expect(r.headers.get('cache-control')).toBe('no-store');
    const v6 = await start({ host: '::1' });
    expect(v6.url).toMatch(/^http:\/\/\[::1\]:\d+$/);
    expect((await call(v6.url, 'GET', '/api/v1/publicip', { headers: { forwarded: 'for=192.0.2.1' } })).body).toEqual({ address: '::1' });
  });

  test('a trusted proxy\'s X-Forwarded-For names the caller, canonical, IPv4-mapped as a dotted quad', async () => {
    const behind = await start({ trustedProxies: ['127.0.0.0/8', 'fd00::/8'] });
    const ip = async (xff: string) => call(behind.url, 'GET', '/api/v1/publicip', { headers: { 'x-forwarded-for': xff } });
    expect((await ip('2001:DB8:0::5')).body).toEqual({ address: '2001:db8::5' });
    expect((await ip('::ffff:198.51.100.7')).body).toEqual({ address: '198.51.100.7' });
    // the client may prepend anything; the rightmost untrusted hop is the one that connected to the proxy
    expect((await ip('6.6.6.6, 203.0.113.5, 127.0.0.9')).body).toEqual({ address: '203.0.113.5' });
    expect((await call(behind.url, 'GET', '/api/v1/publicip')).body).toEqual({ address: '127.0.0.1' });
    const garbage = await ip('<script>');
    expect(garbage.status).toBe(400);
    expect(garbage.body.error).toMatch(/^X-Forwarded-For: /);
  });

  test('trusted proxies are validated', async () => {
    for (const bad of [['10.0.0.0/33'], ['not-a-proxy'], ['2001:db8::/129'], ['1.2.3.4/8/9']]) {
      await expect(start({ trustedProxies: bad })).rejects.toThrow(/trusted proxy/);
    }
  });
});

/** The authority's public keys as a verifier gets them. */
async function trusted(base: string) {
  const r = await call(base, 'GET', '/api/v1/authority');
  expect(r.status).toBe(200);
  return (r.body.keys as { publicKey: string }[]).map((k) => parsePublicKey(k.publicKey));
}

describe('trust modes', () => {
  test('trustless: no keys, no signatures', async () => {
    expect((await call(svc.url, 'GET', '/api/v1/authority')).body).toEqual({ mode: 'trustless', keys: [] });
    const r = await call(svc.url, 'GET', '/api/v1/peers');
    expect(r.headers.get(SIGNATURE_HEADER)).toBeNull();
    expect(Object.keys(r.body).sort()).toEqual(['issuedAt', 'nextCursor', 'peers']);
  });

  test('authority: peer lists and announce answers are signed over their exact bytes', async () => {
    const pem = newKeyPem();
    const auth = await start({ trustMode: 'authority', authorityKey: pem });
    const info = (await call(auth.url, 'GET', '/api/v1/authority')).body;
    expect(info).toEqual({ mode: 'authority', keys: [{ id: idOf(pem), publicKey: rawOf(pem), current: true }] });
    const keysOfAuth = await trusted(auth.url);

    await report([{ address: '2001:db8::1', kind: 'host', job: 'j' }], auth.url);
    const list = await call(auth.url, 'GET', '/api/v1/peers');
    expect(list.body.peers).toHaveLength(1);
    expect(Date.parse(list.body.issuedAt)).toBeLessThanOrEqual(Date.now() + 1000);
    expect(verifyBody(list.bytes, list.headers.get(SIGNATURE_HEADER), keysOfAuth)).toEqual({ ok: true, keyId: info.keys[0].id });
    const tampered = Buffer.from(list.bytes);
    tampered[tampered.indexOf('2001:db8::1') + 10] ^= 1;
    expect(verifyBody(tampered, list.headers.get(SIGNATURE_HEADER), keysOfAuth)).toMatchObject({ ok: false, reason: expect.stringMatching(/tampered/) });
    // another authority's key does not vouch for this one's lists
    expect(verifyBody(list.bytes, list.headers.get(SIGNATURE_HEADER), [parsePublicKey(rawOf(newKeyPem()))]).ok).toBe(false);

    const ann = await announce(NODE_A, auth.url);
    expect(ann.status).toBe(200);
    expect(verifyBody(ann.bytes, ann.headers.get(SIGNATURE_HEADER), keysOfAuth).ok).toBe(true);
    // errors are not signed: they vouch for nothing
    expect((await announce({}, auth.url)).headers.get(SIGNATURE_HEADER)).toBeNull();
  });

  test('rotation: both keys sign until the previous one retires, then only the current one', async () => {
    const current = newKeyPem();
    const previous = newKeyPem();
    const retiresAt = new Date(Date.now() + 2000); // time enough for the checks before it
    const auth = await start({ trustMode: 'authority', authorityKey: current, previousAuthorityKey: previous, previousKeyRetiresAt: retiresAt.toISOString() });
    const info = (await call(auth.url, 'GET', '/api/v1/authority')).body;
    expect(info.keys).toEqual([
      { id: idOf(current), publicKey: rawOf(current), current: true },
      { id: idOf(previous), publicKey: rawOf(previous), current: false, retiresAt: retiresAt.toISOString() },
    ]);
    const [cur, prev] = await trusted(auth.url);
    const r = await call(auth.url, 'GET', '/api/v1/peers');
    const header = r.headers.get(SIGNATURE_HEADER)!;
    expect(header.split(',')).toHaveLength(2);
    expect(verifyBody(r.bytes, header, [cur!])).toEqual({ ok: true, keyId: cur!.id });
    expect(verifyBody(r.bytes, header, [prev!])).toEqual({ ok: true, keyId: prev!.id });

    await sleep(Math.max(0, retiresAt.getTime() - Date.now()) + 50);
    expect((await call(auth.url, 'GET', '/api/v1/authority')).body.keys).toEqual([expect.objectContaining({ id: cur!.id, current: true })]);
    const after = await call(auth.url, 'GET', '/api/v1/peers');
    const header2 = after.headers.get(SIGNATURE_HEADER)!;
    expect(header2.split(',')).toHaveLength(1);
    expect(verifyBody(after.bytes, header2, [cur!]).ok).toBe(true);
    expect(verifyBody(after.bytes, header2, [prev!])).toEqual({ ok: false, reason: 'signed by none of the trusted keys' });
  });

  test('authority mode refuses to start without a usable key; trustless refuses keys', async () => {
    const key = newKeyPem();
    const x25519 = generateKeyPairSync('x25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    const cases: [Partial<BootstrapOptions>, RegExp][] = [
      [{ trustMode: 'authority' }, /authority mode needs a signing key/],
      [{ trustMode: 'authority', authorityKey: 'not a key' }, /authority key: not a PEM private key/],
      [{ trustMode: 'authority', authorityKey: x25519 }, /must be Ed25519/],
      [{ trustMode: 'authority', authorityKey: key, previousAuthorityKey: newKeyPem() }, /retirement time/],
      [{ trustMode: 'authority', authorityKey: key, previousAuthorityKey: key, previousKeyRetiresAt: new Date().toISOString() }, /is the current key/],
      [{ trustMode: 'authority', authorityKey: key, previousAuthorityKey: newKeyPem(), previousKeyRetiresAt: 'next week' }, /not an ISO-8601 time/],
      [{ trustMode: 'authority', authorityKey: key, previousKeyRetiresAt: new Date().toISOString() }, /no previous authority key/],
      [{ authorityKey: key }, /trust mode is trustless/],
      [{ trustMode: 'sometimes' as 'authority', authorityKey: key }, /trust mode "sometimes"/],
    ];
    for (const [opts, message] of cases) await expect(start(opts)).rejects.toThrow(message);
  });
});


describe('admin', () => {
  test('tokens: missing or wrong → 401; the listener token is no admin token and vice versa', async () => {
    const routes: [string, string, unknown?][] = [
      ['POST', '/api/v1/peers/2001:db8::1/block', { blocked: true }],
      ['GET', '/api/v1/peers/blocked'],
      ['GET', '/api/v1/audit'],
      ['GET', '/api/v1/jobs'],
    ];
    for (const [method, path, json] of routes) {
      for (const token of [undefined, LISTENER, `${ADMIN}x`, ADMIN.slice(1)]) {
        const r = await call(svc.url, method, path, { json, token });
        expect(r.status).toBe(401);
        expect(r.body.error).toMatch(/^authorization: .*admin token/);
        expect(r.headers.get('www-authenticate')).toBe('Bearer');
      }
      expect((await call(svc.url, method, path, { json, token: ADMIN })).status).toBe(200);
    }
    await redis.flushall();
    const r = await call(svc.url, 'POST', '/api/v1/peers', { json: { peers: [{ address: '2001:db8::1', kind: 'host', job: 'j' }] }, token: ADMIN });
    expect(r.status).toBe(401);
    expect(r.body.error).toBe('authorization: wrong listener token');
    expect(await redis.dbsize()).toBe(0);
  });

  test('without an admin token the admin endpoints are off (503)', async () => {
    const noAdmin = await start();
    for (const [method, path] of [['GET', '/api/v1/peers/blocked'], ['GET', '/api/v1/jobs'], ['GET', '/api/v1/audit'], ['POST', '/api/v1/peers/::1/block']] as const) {
      const r = await call(noAdmin.url, method, path, { token: ADMIN, json: method === 'POST' ? { blocked: true } : undefined });
      expect(r.status).toBe(503);
      expect(r.body.error).toMatch(/^admin disabled/);
    }
    expect(await redis.dbsize()).toBe(0);
    await expect(start({ adminToken: LISTENER })).rejects.toThrow(/admin token equals the listener token/);
    await expect(start({ adminToken: 'short-admin' })).rejects.toThrow(/admin token is 11 characters/);
  });

  test('block hides a peer at once and listeners cannot re-add it; unblock restores it; all audited', async () => {
    await report([
      { address: '2001:db8::1', kind: 'host', job: 'j' },
      { address: '2001:db8::2', kind: 'widescan', job: 'j' },
    ]);
    const b = await block('2001:DB8:0::2', { blocked: true, reason: 'asked to opt out <b>"quoted"</b>' });
    expect(b).toMatchObject({ status: 200, body: { address: '2001:db8::2', blocked: true } });
    expect(b.headers.get('cache-control')).toBe('no-store');
    expect(await listed()).toEqual(['2001:db8::1']);
    expect(await listed('?kind=widescan')).toEqual([]);
    expect(await listed('?job=j')).toEqual(['2001:db8::1']);

    const stored = await redis.hgetall(keys.peer('2001:db8::2'));
    expect(await report([{ address: '2001:db8::2', kind: 'widescan', job: 'k' }])).toEqual({ received: 1, created: 0, updated: 0, blocked: 1 });
    expect(await redis.hgetall(keys.peer('2001:db8::2'))).toEqual(stored);
    expect(await listed()).toEqual(['2001:db8::1']);

    const blocked = await call(svc.url, 'GET', '/api/v1/peers/blocked', { token: ADMIN });
    expect(blocked.body).toEqual({ blocked: [{ address: '2001:db8::2', reason: 'asked to opt out <b>"quoted"</b>', at: expect.any(String) }] });
    expect(Math.abs(Date.parse(blocked.body.blocked[0].at) - Date.now())).toBeLessThan(5000);

    // blocking twice is harmless; blocking an unknown address pre-empts it
    expect((await block('2001:db8::2', { blocked: true })).status).toBe(200);
    expect((await block('2001:db8::77', { blocked: true, reason: 'pre-emptive' })).body).toEqual({ address: '2001:db8::77', blocked: true });
    expect(await report([{ address: '2001:db8::77', kind: 'host', job: 'j' }])).toMatchObject({ blocked: 1, created: 0 });

    expect((await block('2001:db8::2', { blocked: false, reason: 'resolved' })).body).toEqual({ address: '2001:db8::2', blocked: false });
    expect(await listed()).toEqual(['2001:db8::1', '2001:db8::2']);
    expect((await call(svc.url, 'GET', '/api/v1/peers/blocked', { token: ADMIN })).body.blocked.map((e: { address: string }) => e.address)).toEqual(['2001:db8::77']);
    expect(await report([{ address: '2001:db8::2', kind: 'widescan', job: 'k' }])).toMatchObject({ updated: 1, blocked: 0 });

    const audit = await call(svc.url, 'GET', '/api/v1/audit', { token: ADMIN });
    expect(audit.status).toBe(200);
    expect(audit.body.entries).toEqual([
      { at: expect.any(String), action: 'unblock', address: '2001:db8::2', reason: 'resolved', actor: 'admin', ip: '127.0.0.1' },
      { at: expect.any(String), action: 'block', address: '2001:db8::77', reason: 'pre-emptive', actor: 'admin', ip: '127.0.0.1' },
      { at: expect.any(String), action: 'block', address: '2001:db8::2', actor: 'admin', ip: '127.0.0.1' },
      { at: expect.any(String), action: 'block', address: '2001:db8::2', reason: 'asked to opt out <b>"quoted"</b>', actor: 'admin', ip: '127.0.0.1' },
    ]);
    const times = (audit.body.entries as { at: string }[]).map((e) => Date.parse(e.at));
    expect([...times].sort((x, y) => y - x)).toEqual(times);
    expect((await call(svc.url, 'GET', '/api/v1/audit?limit=1', { token: ADMIN })).body.entries).toHaveLength(1);
  });

  test('blocking a node removes it from announce answers and the lists; IPv4 nodes can be blocked', async () => {
    await announceOk(NODE_A);
    await announceOk(NODE_C);
    expect((await block('192.0.2.7', { blocked: true })).body).toEqual({ address: '192.0.2.7', blocked: true });
    expect((await announceOk(NODE_B)).peers.map((p) => p.address)).toEqual(['2001:db8::a']);
    expect(await listed('?kind=node')).toEqual(['2001:db8::a', '2001:db8::b']);
    const metrics = (await call(svc.url, 'GET', '/metrics')).body as string;
    expect(metrics).toMatch(/widescan_bootstrap_peers\{kind="node",component="bootstrap"\} 2\n/);
    expect(metrics).toMatch(/widescan_http_requests_total\{route="\/api\/v1\/peers\/:address\/block",code="200",component="bootstrap"\} [1-9]/);
    expect(metrics).toMatch(/widescan_http_requests_total\{route="\/api\/v1\/announce",code="200",component="bootstrap"\} [1-9]/);
    expect(metrics).not.toContain('192.0.2.7');
  });

  const badBlocks: [string, () => Promise<Reply>, number, RegExp][] = [
    ['address that is no address', () => block('not-an-address', { blocked: true }), 400, /^address: /],
    ['address with a prefix', () => block('2001:db8::/64', { blocked: true }), 400, /^address: /],
    ['address with markup', () => block('<script>', { blocked: true }), 400, /^address: /],
    ['address with a NUL', () => block('::1\u0000', { blocked: true }), 400, /^address: /],
    ['malformed JSON', () => call(svc.url, 'POST', '/api/v1/peers/::1/block', { raw: '{"blocked":', token: ADMIN }), 400, /^body: not valid JSON/],
    ['text/plain', () => call(svc.url, 'POST', '/api/v1/peers/::1/block', { raw: '{"blocked":true}', token: ADMIN, headers: { 'content-type': 'text/plain' } }), 415, /Content-Type/],
    ['missing blocked', () => block('::1', { reason: 'x' }), 400, /^blocked: is required/],
    ['blocked as string', () => block('::1', { blocked: 'yes' }), 400, /^blocked: must be boolean/],
    ['unknown field', () => block('::1', { blocked: true, actor: 'root' }), 400, /^body: unknown field "actor"/],
    ['reason of 201 chars', () => block('::1', { blocked: true, reason: 'r'.repeat(201) }), 400, /^reason: must NOT have more than 200/],
    ['reason as number', () => block('::1', { blocked: true, reason: 5 }), 400, /^reason: must be string/],
    ['reason with a newline', () => block('::1', { blocked: true, reason: 'a\nforged log line' }), 400, /^reason: must not contain control/],
    ['reason with a bidi override', () => block('::1', { blocked: true, reason: 'abc\u202Egnp.exe' }), 400, /^reason: /],
    ['5 KiB body', () => block('::1', { blocked: true, reason: 'r'.repeat(5000) }), 413, /^body: larger than the limit of 4096/],
    ['audit limit=0', () => call(svc.url, 'GET', '/api/v1/audit?limit=0', { token: ADMIN }), 400, /^limit: /],
    ['audit limit=1001', () => call(svc.url, 'GET', '/api/v1/audit?limit=1001', { token: ADMIN }), 400, /^limit: /],
    ['audit limit twice', () => call(svc.url, 'GET', '/api/v1/audit?limit=1&limit=2', { token: ADMIN }), 400, /^limit: give it once/],
    ['audit unknown parameter', () => call(svc.url, 'GET', '/api/v1/audit?action=block', { token: ADMIN }), 400, /^action: unknown query parameter/],
  ];

  test.each(badBlocks)('%s → 4xx JSON error, Redis unchanged', async (_name, send, status, message) => {
    await report([{ address: '::1', kind: 'host', job: 'j' }]);
    expect((await block('2001:db8::9', { blocked: true, reason: 'seed' })).status).toBe(200);
    const before = await dump();
    expect(before[keys.audit()]).toHaveLength(1);
    const r = await send();
    expect(r.status).toBe(status);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect(r.body.error).toMatch(message);
    expect(await dump()).toEqual(before);
  });

  test('the audit log keeps the newest 10000 entries', async () => {
    const filler = Array.from({ length: 10_000 }, (_, i) => JSON.stringify({ at: new Date(i).toISOString(), action: 'block', address: `::${i.toString(16)}`, actor: 'admin', ip: '::1' }));
    await redis.rpush(keys.audit(), ...filler);
    expect((await block('2001:db8::1', { blocked: true })).status).toBe(200);
    expect(await redis.llen(keys.audit())).toBe(10_000);
    const entries = (await call(svc.url, 'GET', '/api/v1/audit?limit=1000', { token: ADMIN })).body.entries;
    expect(entries).toHaveLength(1000);
    expect(entries[0]).toMatchObject({ address: '2001:db8::1' });
    expect(entries[1]).toMatchObject({ address: '::0' });
    // the entry at the tail (::270f) fell off
    expect(JSON.parse((await redis.lindex(keys.audit(), -1))!)).toMatchObject({ address: '::270e' });
  });

  test('GET /api/v1/jobs shows registered jobs with their counters, read-only', async () => {
    const job = compileJobText(readFileSync('examples/lab.yaml', 'utf8'));
    await registerJob(redis, job, { macKey: new Uint8Array(32), networkId: 1, blocklist: [], fullLimitBits: 32 });
    await redis.hset(keys.job(job.id), 'nextShard', '3');
    await addCounters(redis, job.id, { probesSent: 12_288, repliesValid: 40, repliesInvalid: 2 });
    expect(await finishShard(redis, job.id, 0, 'completed', 17)).toBe(true);
    expect(await finishShard(redis, job.id, 1, 'failed', 0)).toBe(true);
    expect(await finishShard(redis, job.id, 0, 'completed', 17)).toBe(false); // idempotent
    await report([
      { address: 'fd00:5ca:1ab:100::1', kind: 'host', job: job.id },
      { address: 'fd00:5ca:1ab:400::1', kind: 'widescan', job: job.id },
    ]);
    const before = await dump();
    const r = await call(svc.url, 'GET', '/api/v1/jobs', { token: ADMIN });
    expect(r.status).toBe(200);
    expect(r.body.jobs).toHaveLength(1);
    const [j] = r.body.jobs;
    expect(j).toMatchObject({
      id: 'lab', phase: 'Running', probesSent: 12_288, repliesValid: 40, repliesInvalid: 2, peersDiscovered: 2, widescanPeers: 1, excluded: 17,
      shards: { total: job.totalShards, completed: 1, failed: 1, active: 1 },
      progress: `${Math.floor((2 / job.totalShards) * 100)}%`,
    });
    expect(job.totalShards).toBeGreaterThan(2);
    expect(Date.parse(j.startTime)).toBeLessThanOrEqual(Date.now());
    expect(Date.parse(j.estimatedCompletionTime)).toBeGreaterThan(Date.parse(j.startTime));
    expect(j).not.toHaveProperty('completionTime');
    expect(await dump()).toEqual(before); // no phase moved, nothing enqueued
  });
});

describe('panel', () => {
  test('/ serves the panel with a strict CSP; nothing outside the folder is served', async () => {
    const r = await call(svc.url, 'GET', '/');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/html/);
    expect(r.headers.get('content-security-policy')).toBe("default-src 'self'; frame-ancestors 'none'");
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    expect(r.body).toMatch(/<html/i);
    for (const path of ['/..%2f..%2fpackage.json', '/%2e%2e/server.ts', '/.hidden', '/no-such-file.js']) {
      const miss = await call(svc.url, 'GET', path);
      expect(miss.status).toBeGreaterThanOrEqual(400);
      expect(miss.status).toBeLessThan(500);
      expect(String(miss.bytes)).not.toContain('createBootstrapApp');
      expect(String(miss.bytes)).not.toContain('"name": "widescan"');
    }
    const metrics = (await call(svc.url, 'GET', '/metrics')).body as string;
    expect(metrics).toMatch(/widescan_http_requests_total\{route="panel",code="200",component="bootstrap"\} [1-9]/);
    expect(metrics).not.toContain('no-such-file');
  });
});

describe('shared state', () => {
  test('two replicas on one Redis serve one view; a restart keeps peers, blocks and audit', async () => {
    const a = await start({ adminToken: ADMIN, nodeTtlSeconds: 60 });
    const b = await start({ adminToken: ADMIN, nodeTtlSeconds: 60 });
    await announceOk(NODE_A, a.url);
    await announceOk(NODE_B, b.url);
    await report([{ address: '2001:db8:1::1', kind: 'host', job: 'j' }], a.url);
    expect(await listed('', b.url)).toEqual(['2001:db8::a', '2001:db8::b', '2001:db8:1::1']);
    expect((await block('2001:db8::b', { blocked: true, reason: 'replica test' }, b.url)).status).toBe(200);
    expect(await listed('', a.url)).toEqual(['2001:db8::a', '2001:db8:1::1']);
    expect((await announceOk(NODE_C, a.url)).peers.map((p) => p.address)).toEqual(['2001:db8::a', '2001:db8:1::1']);
    expect((await announce(NODE_B, a.url)).status).toBe(403);

    const view = async (base: string) => ({
      peers: (await call(base, 'GET', '/api/v1/peers')).body.peers,
      blocked: (await call(base, 'GET', '/api/v1/peers/blocked', { token: ADMIN })).body,
      audit: (await call(base, 'GET', '/api/v1/audit', { token: ADMIN })).body,
    });
    const seen = await view(a.url);
    expect(await view(b.url)).toEqual(seen);
    expect(seen.audit.entries).toEqual([expect.objectContaining({ action: 'block', address: '2001:db8::b', reason: 'replica test' })]);

    await a.close();
    await b.close();
    const c = await start({ adminToken: ADMIN, nodeTtlSeconds: 60 });
    expect(await view(c.url)).toEqual(seen);
  });
});

describe('configuration from the environment', () => {
  test('every new variable is read and checked', () => {
    const keyFile = join(dir, 'key.pem');
    const prevFile = join(dir, 'prev.pem');
    const adminFile = join(dir, 'admin');
    const key = newKeyPem();
    const prev = newKeyPem();
    writeFileSync(keyFile, key);
    writeFileSync(prevFile, prev);
    writeFileSync(adminFile, `${ADMIN}\n`);
    const base = { WIDESCAN_REDIS_URL: 'redis://r', WIDESCAN_LISTENER_TOKEN: LISTENER };
    expect(bootstrapOptionsFromEnv({
      ...base,
      WIDESCAN_ADMIN_TOKEN_FILE: adminFile,
      WIDESCAN_TRUST_MODE: 'authority',
      WIDESCAN_AUTHORITY_KEY_FILE: keyFile,
      WIDESCAN_AUTHORITY_PREVIOUS_KEY_FILE: prevFile,
      WIDESCAN_AUTHORITY_PREVIOUS_RETIRES_AT: '2030-01-01T00:00:00Z',
      WIDESCAN_TRUSTED_PROXIES: ' 10.0.0.0/8, fd00::/8 ,loopback,',
      WIDESCAN_NODE_TTL_SECONDS: '120',
    })).toEqual({
      redisUrl: 'redis://r', listenerToken: LISTENER, port: 8080, host: '::',
      adminToken: ADMIN, trustMode: 'authority', authorityKey: key, previousAuthorityKey: prev,
      previousKeyRetiresAt: '2030-01-01T00:00:00Z', trustedProxies: ['10.0.0.0/8', 'fd00::/8', 'loopback'], nodeTtlSeconds: 120,
    });
    expect(bootstrapOptionsFromEnv({ ...base, WIDESCAN_ADMIN_TOKEN: ADMIN })).toEqual({ redisUrl: 'redis://r', listenerToken: LISTENER, port: 8080, host: '::', adminToken: ADMIN });
    const bad: [Record<string, string>, RegExp][] = [
      [{ WIDESCAN_ADMIN_TOKEN: ADMIN, WIDESCAN_ADMIN_TOKEN_FILE: adminFile }, /only one/],
      [{ WIDESCAN_ADMIN_TOKEN: 'short' }, /admin token is 5 characters/],
      [{ WIDESCAN_ADMIN_TOKEN_FILE: join(dir, 'missing') }, /cannot read WIDESCAN_ADMIN_TOKEN_FILE/],
      [{ WIDESCAN_TRUST_MODE: 'Authority' }, /WIDESCAN_TRUST_MODE "Authority" is not one of trustless, authority/],
      [{ WIDESCAN_AUTHORITY_KEY_FILE: join(dir, 'missing.pem') }, /cannot read WIDESCAN_AUTHORITY_KEY_FILE/],
      [{ WIDESCAN_TRUSTED_PROXIES: '10.0.0.0/8,example.org' }, /WIDESCAN_TRUSTED_PROXIES: trusted proxy "example.org"/],
      [{ WIDESCAN_NODE_TTL_SECONDS: '0' }, /WIDESCAN_NODE_TTL_SECONDS "0"/],
      [{ WIDESCAN_NODE_TTL_SECONDS: '1.5' }, /WIDESCAN_NODE_TTL_SECONDS/],
      [{ WIDESCAN_NODE_TTL_SECONDS: '604801' }, /from 1 to 604800/],
    ];
    for (const [env, message] of bad) expect(() => bootstrapOptionsFromEnv({ ...base, ...env })).toThrow(message);
  });
});

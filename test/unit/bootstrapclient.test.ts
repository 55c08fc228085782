import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import {
  BootstrapClient,
  BootstrapError,
  DEFAULT_MAX_BODY_BYTES,
  UntrustedResponseError,
  type BootstrapClientOptions,
} from '../../lib/bootstrapclient.js';
import { keyIdOf, rawPublicKey, signBody, SIGNATURE_HEADER, type PublicKeyEntry } from '../../lib/core/signing.js';

// A bootstrap stand-in on loopback whose every answer byte the test decides.

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

let server: Server;
let base: string;
let handler: Handler;
let requests: { method: string; url: string; body: string }[];

const oldKey = generateKeyPairSync('ed25519').privateKey;
const newKey = generateKeyPairSync('ed25519').privateKey;
const strangerKey = generateKeyPairSync('ed25519').privateKey;
// The client holds only public keys, as it would in the field.
const pin = (k: KeyObject): PublicKeyEntry => ({ id: keyIdOf(k), key: createPublicKey(k) });

const PEER = { address: '2001:db8::1', kind: 'widescan', job: 'scans/lab', rttMs: 1.5, firstSeen: '2024-05-01T12:00:00.000Z', lastSeen: '2024-05-01T12:00:01.000Z' };
const NODE = { address: '192.0.2.7', kind: 'node', job: null, rttMs: null, firstSeen: '2024-05-01T12:00:00.000Z', lastSeen: '2024-05-01T12:00:02.000Z', port: 4000, id: 'node-7' };

function listBody(extra: Record<string, unknown> = {}, issuedAt = new Date().toISOString()): Buffer {
  return Buffer.from(JSON.stringify({ peers: [PEER, NODE], nextCursor: null, issuedAt, ...extra }));
}

function send(res: ServerResponse, body: Buffer, headers: Record<string, string> = {}, status = 200): void {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(body.length), ...headers });
  res.end(body);
}

/** Answers every request with `body`, signed by `keys` (none: unsigned). */
function serve(body: Buffer, keys: KeyObject[] = [oldKey], headers: Record<string, string> = {}): void {
  handler = (_req, _b, res) => send(res, body, { ...(keys.length ? { [SIGNATURE_HEADER]: signBody(body, keys) } : {}), ...headers });
}

function client(opts: Partial<BootstrapClientOptions> = {}): BootstrapClient {
  return new BootstrapClient({ url: base, authorityKeys: [pin(oldKey)], ...opts });
}

async function refusal(p: Promise<unknown>): Promise<UntrustedResponseError> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(UntrustedResponseError);
  return err as UntrustedResponseError;
}

async function failure(p: Promise<unknown>): Promise<BootstrapError> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(BootstrapError);
  return err as BootstrapError;
}

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      requests.push({ method: req.method!, url: req.url!, body });
      handler(req, body, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  requests = [];
});

describe('pinned authority key', () => {
  test('accepts a correctly signed list and returns its peers', async () => {
    const issuedAt = new Date().toISOString();
    serve(listBody({}, issuedAt));
    const page = await client().peers({ kind: 'widescan', job: 'scans/lab', since: new Date(0), limit: 5 });
    expect(page.issuedAt).toBe(issuedAt);
    expect(page.nextCursor).toBeNull();
    expect(page.peers).toEqual([PEER, NODE]);
    expect(requests).toEqual([
      { method: 'GET', url: '/api/v1/peers?kind=widescan&job=scans%2Flab&since=1970-01-01T00%3A00%3A00.000Z&limit=5', body: '' },
    ]);
  });

  test('refuses an unsigned list', async () => {
    serve(listBody(), []);
    expect((await refusal(client().peers())).reason).toBe('the response is not signed');
  });

  test('refuses a list with one byte changed after signing', async () => {
    const body = listBody();
    const signature = signBody(body, [oldKey]);
    const tampered = Buffer.from(body);
    tampered[tampered.indexOf('2001:db8::1') + 10] = '2'.charCodeAt(0); // ::1 → ::2, still valid JSON
    handler = (_req, _b, res) => send(res, tampered, { [SIGNATURE_HEADER]: signature });
    const err = await refusal(client().peers());
    expect(err.reason).toMatch(/does not match the body/);
    expect(err.message).toContain(base);
  });

  test('refuses a list signed by a key that is not pinned', async () => {
    serve(listBody(), [strangerKey]);
    expect((await refusal(client().peers())).reason).toBe('signed by none of the trusted keys');
  });

  test('refuses a stale list (replay) and one from the future, accepts small clock skew', async () => {
    serve(listBody({}, new Date(Date.now() - 301_000).toISOString()));
    expect((await refusal(client().peers())).reason).toMatch(/more than the 300 s allowed \(replayed\?\)/);
    serve(listBody({}, new Date(Date.now() - 50_000).toISOString()));
    expect((await refusal(client({ maxAgeSeconds: 30 }).peers())).reason).toMatch(/replayed/);
    serve(listBody({}, new Date(Date.now() + 120_000).toISOString()));
    expect((await refusal(client().peers())).reason).toMatch(/in the future/);
    serve(listBody({}, new Date(Date.now() + 30_000).toISOString()));
    expect((await client().peers()).peers).toHaveLength(2);
  });

  test('refuses a signed list without a usable issuedAt', async () => {
    for (const issuedAt of [undefined, 'yesterday', 12345, '2024-02-30T00:00:00Z x']) {
      const body = Buffer.from(JSON.stringify({ peers: [PEER], nextCursor: null, issuedAt }));
      serve(body);
      expect((await refusal(client().peers())).reason).toMatch(/no valid issuedAt/);
    }
  });

  test('refuses malformed signature headers', async () => {
    const body = listBody();
    const good = signBody(body, [oldKey]);
    for (const header of ['garbage', `${good}; extra`, good.replace(':', '='), `,${good}`, 'x'.repeat(5000)]) {
      serve(body, [], { [SIGNATURE_HEADER]: header });
      expect((await refusal(client().peers())).reason).toMatch(/malformed signature header|too long/);
    }
  });

  test('rotation: a client pinned to either key accepts a list signed by old and new', async () => {
    serve(listBody(), [newKey, oldKey]);
    expect((await client({ authorityKeys: [pin(oldKey)] }).peers()).peers).toHaveLength(2);
    expect((await client({ authorityKeys: [pin(newKey)] }).peers()).peers).toHaveLength(2);
    // Once the old key is retired, a client pinned only to it refuses lists signed by the new one alone.
    serve(listBody(), [newKey]);
    expect((await refusal(client({ authorityKeys: [pin(oldKey)] }).peers())).reason).toBe('signed by none of the trusted keys');
  });

  test('a pinned key is never replaced by what the server says', async () => {
    handler = (req, _b, res) => {
      if (req.url === '/api/v1/authority') send(res, Buffer.from(JSON.stringify({ mode: 'trustless', keys: [] })));
      else send(res, listBody());
    };
    expect((await refusal(client().peers())).reason).toBe('the response is not signed');
    expect(requests.map((r) => r.url)).toEqual(['/api/v1/peers']);
  });
});

describe('hostile bodies', () => {
  test('a 5 MB body is over the default cap and refused', async () => {
    const big = Buffer.alloc(5 * 1024 * 1024, 0x20);
    serve(big);
    expect((await failure(client().peers())).message).toMatch(`larger than ${DEFAULT_MAX_BODY_BYTES} bytes`);
  });

  test('an endless body is cut off at the cap, not buffered', async () => {
    let sent = 0;
    handler = (_req, _b, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = () => {
        while (!res.destroyed && sent < 64 * 1024 * 1024 && res.write(chunk)) sent += chunk.length;
        if (!res.destroyed && sent < 64 * 1024 * 1024) res.once('drain', pump);
        else res.end();
      };
      res.on('close', () => undefined);
      pump();
    };
    expect((await failure(client({ maxBodyBytes: 1024 * 1024 }).peers())).message).toMatch('larger than 1048576 bytes');
    expect(sent).toBeLessThan(32 * 1024 * 1024);
  });

  test('the body cap is at most 16 MiB', () => {
    expect(() => client({ maxBodyBytes: 16 * 1024 * 1024 + 1 })).toThrow(/maxBodyBytes/);
    expect(() => client({ maxBodyBytes: 0 })).toThrow(/maxBodyBytes/);
  });

  test('invalid JSON and invalid UTF-8 are refused even when signed', async () => {
    for (const body of [Buffer.from('{"peers": [,'), Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), Buffer.alloc(0)]) {
      serve(body);
      expect((await failure(client().peers())).message).toMatch(/not valid JSON/);
    }
  });

  test('signed lists with malformed peers are refused, naming the field', async () => {
    const cases: [unknown, RegExp][] = [
      [[{ ...PEER, address: 'not-an-ip' }], /peers\/0\/address/],
      [[PEER, { ...PEER, address: '2001:db8::1\u001b[2J' }], /peers\/1\/address/],
      [[{ ...PEER, kind: 'node\u001b[31m' }], /peers\/0\/kind/],
      [[{ ...PEER, job: 'a,b' }], /peers\/0\/job/],
      [[{ ...PEER, rttMs: -1 }], /peers\/0\/rttMs/],
      [[{ ...NODE, port: 70000 }], /peers\/0\/port/],
      [[{ ...NODE, id: 'x'.repeat(129) }], /peers\/0\/id/],
      [[{ ...PEER, lastSeen: 'now' }], /peers\/0\/lastSeen/],
      [{ not: 'an array' }, /peers: not an array/],
      [[null], /peers\/0: not an object/],
    ];
    for (const [peers, why] of cases) {
      serve(Buffer.from(JSON.stringify({ peers, nextCursor: null, issuedAt: new Date().toISOString() })));
      expect((await failure(client().peers())).message).toMatch(why);
    }
  });

  test('property: flipping any one byte of a signed body is refused', async () => {
    const body = listBody();
    const signature = signBody(body, [oldKey]);
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: body.length - 1 }), fc.integer({ min: 1, max: 255 }), async (at, xor) => {
        const changed = Buffer.from(body);
        changed[at]! ^= xor;
        // Same client code, no sockets: a fetch that answers from memory.
        const fakeFetch = (async () => new Response(changed, { headers: { [SIGNATURE_HEADER]: signature } })) as typeof fetch;
        const err = await client({ fetch: fakeFetch }).peers().then(() => null, (e: unknown) => e);
        expect(err).toBeInstanceOf(UntrustedResponseError);
      }),
      { numRuns: 200 },
    );
  });
});

describe('without pinned keys', () => {
  const authorityJson = (keys: KeyObject[]) =>
    Buffer.from(JSON.stringify({ mode: 'authority', keys: keys.map((k, i) => ({ id: keyIdOf(k), publicKey: rawPublicKey(k).toString('base64'), current: i === 0 })) }));

  test('authority mode: verifies against the served keys and warns that they are not pinned', async () => {
    const body = listBody();
    let signWith = [oldKey];
    handler = (req, _b, res) => {
      if (req.url === '/api/v1/authority') send(res, authorityJson([oldKey]));
      else send(res, body, { [SIGNATURE_HEADER]: signBody(body, signWith) });
    };
    const c = client({ authorityKeys: undefined });
    expect((await c.peers()).peers).toHaveLength(2);
    expect(c.warnings).toHaveLength(1);
    expect(c.warnings[0]).toMatch(new RegExp(`not pinned.*${keyIdOf(oldKey)}`));
    signWith = [strangerKey];
    expect((await refusal(c.peers())).reason).toBe('signed by none of the trusted keys');
    // The authority is asked once per client.
    expect(requests.filter((r) => r.url === '/api/v1/authority')).toHaveLength(1);
  });

  test('authority mode with an unusable key list is an error, not a silent trustless fallback', async () => {
    for (const info of [{ mode: 'authority', keys: [] }, { mode: 'authority', keys: [{ id: 'x', publicKey: 'AAAA', current: true }] }, { mode: 'open' }]) {
      handler = (req, _b, res) => send(res, req.url === '/api/v1/authority' ? Buffer.from(JSON.stringify(info)) : listBody());
      expect((await failure(client({ authorityKeys: undefined }).peers())).message).toMatch(/malformed response/);
    }
  });

  test('trustless mode: unsigned lists are accepted, with a warning', async () => {
    handler = (req, _b, res) =>
      send(res, req.url === '/api/v1/authority' ? Buffer.from(JSON.stringify({ mode: 'trustless', keys: [] })) : listBody());
    const c = client({ authorityKeys: undefined });
    expect((await c.authority()).mode).toBe('trustless');
    expect((await c.peers()).peers).toEqual([PEER, NODE]);
    expect(c.warnings.join('\n')).toMatch(/trustless.*not signed/);
  });
});

describe('HTTP and transport errors', () => {
  test('an error answer becomes a BootstrapError with the status and the server message', async () => {
    handler = (_req, _b, res) => send(res, Buffer.from('{"error":"job: must be 1-253 characters"}'), {}, 400);
    const err = await failure(client().peers({ job: 'BAD' }));
    expect(err.status).toBe(400);
    expect(err.serverMessage).toBe('job: must be 1-253 characters');
    handler = (_req, _b, res) => send(res, Buffer.from('<html>bad gateway</html>'), {}, 502);
    const html = await failure(client().peers());
    expect([html.status, html.serverMessage]).toEqual([502, null]);
  });

  test('a server that never answers times out', async () => {
    handler = () => undefined;
    const started = Date.now();
    expect((await failure(client({ timeoutMs: 300 }).peers())).message).toMatch(/no complete answer within 0.3 s/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  test('a server that is not there is reported as unreachable', async () => {
    // A port that was just free: nothing listens there now.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise((resolve) => probe.close(resolve));
    const c = new BootstrapClient({ url: `http://127.0.0.1:${port}`, authorityKeys: [pin(oldKey)] });
    expect((await failure(c.peers())).message).toMatch(/cannot reach the bootstrap: ECONNREFUSED/);
  });

  test('bad URLs and options are refused up front', () => {
    expect(() => new BootstrapClient({ url: 'bootstrap:8080x' })).toThrow(/use http:\/\/ or https:\/\//);
    expect(() => new BootstrapClient({ url: 'not a url' })).toThrow(/is not a URL/);
    expect(() => new BootstrapClient({ url: 'ftp://h/' })).toThrow(/use http/);
    expect(() => new BootstrapClient({ url: 'http://h/?x=1' })).toThrow(/query/);
    expect(() => new BootstrapClient({ url: 'http://h/', authorityKeys: [] })).toThrow(/authorityKeys is empty/);
    expect(() => new BootstrapClient({ url: 'http://h/', maxAgeSeconds: -1 })).toThrow(/maxAgeSeconds/);
  });

  test('a base URL with a path prefix keeps it', async () => {
    serve(listBody());
    await new BootstrapClient({ url: `${base}/bootstrap`, authorityKeys: [pin(oldKey)] }).peers();
    expect(requests[0]!.url).toBe('/bootstrap/api/v1/peers');
  });
});

describe('paging, announce, heartbeat, public IP', () => {
  test('allPeers follows cursors, verifying every page', async () => {
    handler = (req, _b, res) => {
      const cursor = new URL(req.url!, base).searchParams.get('cursor');
      const body = Buffer.from(JSON.stringify(
        cursor === null
          ? { peers: [PEER], nextCursor: 'c1', issuedAt: new Date().toISOString() }
          : { peers: [NODE], nextCursor: null, issuedAt: new Date().toISOString() },
      ));
      send(res, body, { [SIGNATURE_HEADER]: signBody(body, cursor === null ? [oldKey] : [strangerKey]) });
    };
    const got: unknown[] = [];
    const err = await (async () => {
      for await (const p of client().allPeers({ kind: 'node' })) got.push(p);
    })().then(() => null, (e: unknown) => e);
    expect(got).toEqual([PEER]); // the first page was good; the second is refused
    expect(err).toBeInstanceOf(UntrustedResponseError);
    expect(requests.map((r) => r.url)).toEqual(['/api/v1/peers?kind=node', '/api/v1/peers?kind=node&cursor=c1']);
  });

  test('allPeers stops on a cursor handed back twice', async () => {
    serve(listBody({ nextCursor: 'again' }));
    const err = await (async () => {
      for await (const _ of client().allPeers()) void _;
    })().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(BootstrapError);
    expect((err as Error).message).toMatch(/cursor "again" twice/);
    expect(requests).toHaveLength(2);
  });

  test('announce sends this node, verifies the answer and checks it is ours', async () => {
    const answer = (self: unknown) => Buffer.from(JSON.stringify({ self, peers: [PEER], issuedAt: new Date().toISOString() }));
    serve(answer({ address: '2001:db8::5', port: 4000, id: 'me' }));
    const result = await client().announce({ address: '2001:DB8:0::5', port: 4000, id: 'me' });
    expect(result).toEqual({ self: { address: '2001:db8::5', port: 4000, id: 'me' }, peers: [PEER], issuedAt: expect.any(String) });
    expect(requests[0]).toEqual({ method: 'POST', url: '/api/v1/announce', body: '{"address":"2001:db8::5","port":4000,"id":"me"}' });
    // A validly signed answer to another node's announce, replayed to us.
    serve(answer({ address: '2001:db8::6', port: 4000, id: 'other' }));
    expect((await refusal(client().announce({ address: '2001:db8::5', port: 4000, id: 'me' }))).reason).toMatch(/not ours \(replayed\?\)/);
    serve(answer({ address: '2001:db8::5', port: 4000, id: 'me' }), [strangerKey]);
    expect((await refusal(client().announce({ address: '2001:db8::5', port: 4000, id: 'me' }))).reason).toBe('signed by none of the trusted keys');
  });

  test('announce of an IPv4-mapped address matches the dotted quad the bootstrap echoes', async () => {
    serve(Buffer.from(JSON.stringify({ self: { address: '192.0.2.9', port: 7, id: 'me' }, peers: [], issuedAt: new Date().toISOString() })));
    expect((await client().announce({ address: '::ffff:192.0.2.9', port: 7, id: 'me' })).self.address).toBe('192.0.2.9');
    expect(JSON.parse(requests[0]!.body).address).toBe('192.0.2.9');
  });

  test('announce refuses bad input before sending anything', async () => {
    await expect(client().announce({ address: '2001:db8::5', port: 0, id: 'me' })).rejects.toThrow(/port 0/);
    await expect(client().announce({ address: '2001:db8::5', port: 1, id: 'bad id' })).rejects.toThrow(/id "bad id"/);
    await expect(client().announce({ address: '1.2.3.04', port: 1, id: 'me' })).rejects.toThrow();
    expect(requests).toHaveLength(0);
  });

  test('heartbeat returns the TTL; an unknown node gets a 404 BootstrapError', async () => {
    serve(Buffer.from('{"ttlSeconds":300}'), []);
    expect(await client().heartbeat({ address: '192.0.2.1', port: 9, id: 'n' })).toEqual({ ttlSeconds: 300 });
    expect(JSON.parse(requests[0]!.body)).toEqual({ address: '192.0.2.1', port: 9, id: 'n' });
    handler = (_req, _b, res) => send(res, Buffer.from('{"error":"unknown node; announce first"}'), {}, 404);
    const err = await failure(client().heartbeat({ address: '192.0.2.1', port: 9, id: 'n' }));
    expect([err.status, err.serverMessage]).toEqual([404, 'unknown node; announce first']);
  });

  test('publicIp returns a checked address', async () => {
    serve(Buffer.from('{"address":"2001:DB8::9"}'), []);
    expect(await client().publicIp()).toBe('2001:db8::9');
    serve(Buffer.from('{"address":"<script>"}'), []);
    expect((await failure(client().publicIp())).message).toMatch(/address/);
  });
});

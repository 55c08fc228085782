import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommanderError } from 'commander';
import { startBootstrap, type BootstrapService } from '../../bootstrap/service.js';
import { peersCommand } from '../../cli/peers.js';
import { rawPublicKey, SIGNATURE_HEADER } from '../../lib/core/signing.js';
import { createLogger } from '../../lib/log.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';

// `widescan peers` against the real bootstrap in authority mode, on a private Redis; a tampering proxy
// stands where an attacker on the path would.

const LISTENER_TOKEN = 'listener-token-0123456789abcdef';
const authorityKey = generateKeyPairSync('ed25519').privateKey;
const wrongKey = generateKeyPairSync('ed25519').privateKey;
const b64 = (k: typeof authorityKey) => rawPublicKey(k).toString('base64');

let embedded: EmbeddedRedis;
let bootstrap: BootstrapService;
let dir: string;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The command as `widescan peers …` runs it, in-process: output captured, exit code from the error. */
async function peers(...args: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const cmd = peersCommand().configureOutput({ writeOut: (s) => (stdout += s), writeErr: (s) => (stderr += s) });
  try {
    await cmd.parseAsync(args, { from: 'user' });
    return { code: 0, stdout, stderr };
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    return { code: err.exitCode, stdout, stderr };
  }
}

/** A proxy in front of the bootstrap that changes the body as `edit` says, keeping the signature header. */
async function proxy(target: string, edit: (body: Buffer) => Buffer): Promise<{ url: string; server: Server }> {
  const server = createServer(async (req, res) => {
    const upstream = await fetch(target + req.url, { method: req.method });
    const body = edit(Buffer.from(await upstream.arrayBuffer()));
    const signature = upstream.headers.get(SIGNATURE_HEADER);
    res.writeHead(upstream.status, { 'content-type': 'application/json', ...(signature ? { [SIGNATURE_HEADER]: signature } : {}) });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

beforeAll(async () => {
  embedded = await startEmbeddedRedis();
  dir = mkdtempSync(join(tmpdir(), 'widescan-peers-'));
  bootstrap = await startBootstrap({
    redisUrl: embedded.url,
    listenerToken: LISTENER_TOKEN,
    trustMode: 'authority',
    authorityKey: authorityKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    announceAnyAddress: true, // the CLI announces [2001:db8::77] from loopback
    logger: createLogger('test', 'silent'),
  });
  const res = await fetch(`${bootstrap.url}/api/v1/peers`, {
    method: 'POST',
    headers: { authorization: `Bearer ${LISTENER_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      peers: [
        { address: '2001:db8::1', kind: 'host', job: 'scans/lab', rttMs: 1.25 },
        { address: '2001:db8::2', kind: 'widescan', job: 'scans/lab', rttMs: 3 },
      ],
    }),
  });
  expect(res.status).toBe(200);
});

afterAll(async () => {
  await bootstrap?.close();
  await embedded?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('widescan peers against a signing bootstrap', () => {
  test('the served authority key is what --authority-key takes', async () => {
    const info = (await (await fetch(`${bootstrap.url}/api/v1/authority`)).json()) as { mode: string; keys: { publicKey: string }[] };
    expect(info.mode).toBe('authority');
    expect(info.keys.map((k) => k.publicKey)).toEqual([b64(authorityKey)]);
  });

  test('pinned to the right key: the peers are printed as a table, NDJSON and CSV', async () => {
    const table = await peers('--bootstrap', bootstrap.url, '--authority-key', b64(authorityKey));
    expect(table).toMatchObject({ code: 0, stderr: '' });
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^address\s+kind\s+job\s+rtt ms\s+last seen$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 4))).toEqual([
      ['2001:db8::1', 'host', 'scans/lab', '1.3'],
      ['2001:db8::2', 'widescan', 'scans/lab', '3.0'],
    ]);

    const csvFile = join(dir, 'peers.csv');
    const json = await peers('--bootstrap', bootstrap.url, '--authority-key', b64(authorityKey), '--kind', 'widescan', '--json', '--output', csvFile);
    expect(json.code).toBe(0);
    expect(json.stdout.trim().split('\n').map((l) => JSON.parse(l).address)).toEqual(['2001:db8::2']);
    expect(json.stderr).toBe(`1 peers written to ${csvFile}\n`);
    const csv = readFileSync(csvFile, 'utf8').trim().split('\n');
    expect(csv[0]).toBe('address,port,id,kind,job,rttMs,firstSeen,lastSeen');
    expect(csv[1]).toMatch(/^2001:db8::2,,,widescan,scans\/lab,3,\d{4}-.+Z,\d{4}-.+Z$/);
  });

  test('a PEM public key file works as @file, and --all walks every page', async () => {
    const pem = join(dir, 'authority.pub.pem');
    writeFileSync(pem, createPublicKey(authorityKey).export({ type: 'spki', format: 'pem' }) as string);
    const run = await peers('--bootstrap', bootstrap.url, '--authority-key', `@${pem}`, '--limit', '1', '--all', '--json');
    expect(run.code).toBe(0);
    expect(run.stdout.trim().split('\n').map((l) => JSON.parse(l).address)).toEqual(['2001:db8::1', '2001:db8::2']);
    const onePage = await peers('--bootstrap', bootstrap.url, '--authority-key', `@${pem}`, '--limit', '1', '--json');
    expect(onePage.stdout.trim().split('\n')).toHaveLength(1);
  });

  test('pinned to a wrong key: refused, exit 1, nothing printed', async () => {
    const run = await peers('--bootstrap', bootstrap.url, '--authority-key', b64(wrongKey));
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/refused: signed by none of the trusted keys/);
  });

  test('a proxy flipping one byte of the body: refused; the same proxy passing it through: accepted', async () => {
    const flip = await proxy(bootstrap.url, (body) => {
      const i = body.indexOf('2001:db8::2');
      if (i >= 0) body[i + 10] = '3'.charCodeAt(0); // redirect a peer to an address of the attacker's choosing
      return body;
    });
    const honest = await proxy(bootstrap.url, (body) => body);
    try {
      const refused = await peers('--bootstrap', flip.url, '--authority-key', b64(authorityKey));
      expect(refused.code).toBe(1);
      expect(refused.stdout).toBe('');
      expect(refused.stderr).toMatch(/refused: the signature does not match the body \(tampered\?\)/);
      const passed = await peers('--bootstrap', honest.url, '--authority-key', b64(authorityKey), '--json');
      expect(passed.code).toBe(0);
      expect(passed.stdout).toContain('"2001:db8::2"');
    } finally {
      await closeServer(flip.server);
      await closeServer(honest.server);
    }
  });

  test('a proxy stripping the signature: refused as unsigned', async () => {
    const strip = createServer(async (req, res) => {
      const upstream = await fetch(bootstrap.url + req.url);
      res.writeHead(upstream.status, { 'content-type': 'application/json' });
      res.end(Buffer.from(await upstream.arrayBuffer()));
    });
    await new Promise<void>((resolve) => strip.listen(0, '127.0.0.1', resolve));
    try {
      const run = await peers('--bootstrap', `http://127.0.0.1:${(strip.address() as AddressInfo).port}`, '--authority-key', b64(authorityKey));
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/refused: the response is not signed/);
    } finally {
      await closeServer(strip);
    }
  });

  test('without a pinned key: verified against the served key, with a warning', async () => {
    const run = await peers('--bootstrap', bootstrap.url, '--json');
    expect(run.code).toBe(0);
    expect(run.stdout.trim().split('\n')).toHaveLength(2);
    expect(run.stderr).toMatch(/^warning: the authority key of .* is not pinned/);
  });

  test('--announce registers this node and prints the peers it gets back', async () => {
    const run = await peers('--bootstrap', bootstrap.url, '--authority-key', b64(authorityKey), '--announce', '[2001:db8::77]:4000', '--id', 'node-77', '--json');
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('announced [2001:db8::77]:4000 as node-77; 2 peers\n');
    expect(run.stdout.trim().split('\n').map((l) => JSON.parse(l).address).sort()).toEqual(['2001:db8::1', '2001:db8::2']);
    // The node is now in the list, port and id included.
    const nodes = await peers('--bootstrap', bootstrap.url, '--authority-key', b64(authorityKey), '--kind', 'node');
    expect(nodes.code).toBe(0);
    expect(nodes.stdout).toMatch(/\[2001:db8::77\]:4000\s+node\s+-/);
  });

  test('usage errors exit 2 and name the problem', async () => {
    const cases: [string[], RegExp][] = [
      [['--bootstrap', 'bootstrap:8080'], /--bootstrap: .*use http:\/\/ or https:\/\//],
      [['--bootstrap', bootstrap.url, '--authority-key', 'not-a-key'], /--authority-key not-a-key: not an Ed25519 public key/],
      [['--bootstrap', bootstrap.url, '--authority-key', `@${join(dir, 'missing.pem')}`], /cannot read .*missing\.pem: ENOENT/],
      [['--bootstrap', bootstrap.url, '--kind', 'router'], /--kind router: use one of host, widescan, node/],
      [['--bootstrap', bootstrap.url, '--limit', '0'], /--limit 0/],
      [['--bootstrap', bootstrap.url, '--since', 'yesterday'], /--since yesterday/],
      [['--bootstrap', bootstrap.url, '--output', 'peers.txt'], /--output peers.txt/],
      [['--bootstrap', bootstrap.url, '--announce', '2001:db8::1:4000', '--id', 'x'], /IPv6 address in brackets/],
      [['--bootstrap', bootstrap.url, '--announce', '[2001:db8::1]:4000'], /--announce needs --id/],
      [['--bootstrap', bootstrap.url, '--announce', '[2001:db8::1]:4000', '--id', 'x', '--all'], /does not take --all/],
      [['--bootstrap', bootstrap.url, '--id', 'x'], /--id goes with --announce/],
      [['--bootstrap', bootstrap.url, '--job', 'UPPER CASE'], /the bootstrap rejected the request: job:/],
      [['--bootstrap', bootstrap.url, '--frobnicate'], /unknown option '--frobnicate'/],
      [['--authority-key', b64(authorityKey)], /required option '--bootstrap <url>' not specified/],
    ];
    for (const [args, why] of cases) {
      const run = await peers(...args);
      expect({ args, code: run.code, stdout: run.stdout }).toEqual({ args, code: 2, stdout: '' });
      expect(run.stderr).toMatch(why);
    }
  });

  test('an unreachable bootstrap exits 1', async () => {
    const gone = createServer();
    await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
    const { port } = gone.address() as AddressInfo;
    await new Promise((resolve) => gone.close(resolve));
    const run = await peers('--bootstrap', `http://127.0.0.1:${port}`, '--authority-key', b64(authorityKey));
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/cannot reach the bootstrap: ECONNREFUSED/);
  });
});

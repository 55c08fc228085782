// `widescan peers`: the peers a bootstrap service knows, checked the way a P2P node checks them
// (lib/bootstrapclient.ts), or `--announce` to register this node and get its first peers.
//
// Exit codes: 0 success; 1 the list was refused as untrusted, or the bootstrap failed or could not be
// reached; 2 usage: bad flags, URL or key, or a query the bootstrap rejected as invalid (HTTP 400).

import { readFileSync, writeFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { BootstrapClient, BootstrapError, UntrustedResponseError, type Peer } from '../lib/bootstrapclient.js';
import { MAX_PAGE_LIMIT, NODE_ID_RE, PEER_KINDS } from '../lib/core/peers.js';
import { canonicalAddress } from '../lib/core/ipv6.js';
import { parsePublicKey, type PublicKeyEntry } from '../lib/core/signing.js';

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

interface PeersOptions {
  bootstrap: string;
  authorityKey: string[];
  kind?: string;
  job?: string;
  since?: string;
  limit?: string;
  all?: boolean;
  announce?: string;
  id?: string;
  output?: string;
  json?: boolean;
}

function usage(cmd: Command, message: string): never {
  return cmd.error(`error: ${message}`, { exitCode: EXIT_USAGE, code: 'widescan.peers.usage' });
}

/**
 * Writes to stdout and waits until the text is handed to the OS: the process exits right after, and a
 * pipe still holding the tail would lose it. Output redirected with `configureOutput` (tests, embedding)
 * goes there instead.
 */
async function print(cmd: Command, stdoutWriter: unknown, text: string): Promise<void> {
  const writeOut = cmd.configureOutput().writeOut!;
  if (writeOut !== stdoutWriter) {
    writeOut(text);
    return;
  }
  await new Promise<void>((resolve) => process.stdout.write(text, () => resolve()));
}

function readKey(cmd: Command, spec: string): PublicKeyEntry {
  let text = spec;
  if (spec.startsWith('@')) {
    try {
      text = readFileSync(spec.slice(1), 'utf8');
    } catch (err) {
      return usage(cmd, `--authority-key ${spec}: cannot read ${spec.slice(1)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  try {
    return parsePublicKey(text);
  } catch (err) {
    return usage(cmd, `--authority-key ${spec.slice(0, 60)}: ${(err as Error).message}; give the base64 key GET /api/v1/authority serves, or @file with it or a PEM public key`);
  }
}

/** `[2001:db8::1]:4000` or `192.0.2.1:4000`. */
function parseEndpoint(cmd: Command, text: string): { address: string; port: number } {
  const m = /^\[([^\]]{1,64})\]:(\d{1,5})$/.exec(text) ?? /^([\d.]{7,15}):(\d{1,5})$/.exec(text);
  const hint = 'give ADDRESS:PORT with an IPv6 address in brackets, e.g. [2001:db8::1]:4000 or 192.0.2.1:4000';
  if (m === null) return usage(cmd, `--announce ${JSON.stringify(text.slice(0, 80))}: ${hint}`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return usage(cmd, `--announce ${text}: port ${m[2]} is not from 1 to 65535`);
  try {
    return { address: canonicalAddress(m[1]!), port };
  } catch (err) {
    return usage(cmd, `--announce ${text}: ${(err as Error).message}`);
  }
}

function checkFlags(cmd: Command, o: PeersOptions): void {
  if (o.kind !== undefined && !(PEER_KINDS as readonly string[]).includes(o.kind)) usage(cmd, `--kind ${o.kind}: use one of ${PEER_KINDS.join(', ')}`);
  if (o.limit !== undefined && (!/^\d{1,4}$/.test(o.limit) || Number(o.limit) < 1 || Number(o.limit) > MAX_PAGE_LIMIT)) {
    usage(cmd, `--limit ${o.limit}: use an integer from 1 to ${MAX_PAGE_LIMIT}`);
  }
  if (o.since !== undefined && !/^\d{1,16}$/.test(o.since) && (!/^\d{4}-\d{2}-\d{2}/.test(o.since) || Number.isNaN(Date.parse(o.since)))) {
    usage(cmd, `--since ${o.since}: give an ISO-8601 time such as 2024-05-01T12:00:00Z, or ms since the epoch`);
  }
  if (o.output !== undefined && !/\.(ndjson|csv)$/.test(o.output)) usage(cmd, `--output ${o.output}: use a file name ending in .ndjson or .csv`);
  if (o.id !== undefined && o.announce === undefined) usage(cmd, '--id goes with --announce');
  if (o.announce !== undefined) {
    if (o.id === undefined) usage(cmd, '--announce needs --id, the identifier this node announces');
    if (!NODE_ID_RE.test(o.id)) usage(cmd, `--id ${JSON.stringify(o.id.slice(0, 140))}: use 1-128 of A-Z a-z 0-9 . _ : -`);
    const query = (['kind', 'job', 'since', 'limit', 'all'] as const).filter((f) => o[f] !== undefined);
    if (query.length > 0) usage(cmd, `--announce returns the peers the bootstrap picks; it does not take --${query.join(', --')}`);
  }
}

function endpoint(p: { address: string; port?: number }): string {
  if (p.port === undefined) return p.address;
  return p.address.includes(':') ? `[${p.address}]:${p.port}` : `${p.address}:${p.port}`;
}

function table(peers: Peer[]): string {
  const rows = peers.map((p) => [endpoint(p), p.kind, p.job ?? '-', p.rttMs === null ? '-' : p.rttMs.toFixed(1), p.lastSeen ?? '-']);
  const head = ['address', 'kind', 'job', 'rtt ms', 'last seen'];
  const widths = head.map((h, i) => rows.reduce((w, r) => Math.max(w, r[i]!.length), h.length));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

function ndjson(peers: Peer[]): string {
  return peers.map((p) => `${JSON.stringify(p)}\n`).join('');
}

/** Every field is validated by the client to hold no comma, quote or newline, so none needs quoting. */
function csv(peers: Peer[]): string {
  const rows = peers.map((p) => [p.address, p.port ?? '', p.id ?? '', p.kind, p.job ?? '', p.rttMs ?? '', p.firstSeen ?? '', p.lastSeen ?? ''].join(','));
  return ['address,port,id,kind,job,rttMs,firstSeen,lastSeen', ...rows].join('\n') + '\n';
}

async function fetchPeers(client: BootstrapClient, o: PeersOptions, cmd: Command): Promise<Peer[]> {
  if (o.announce !== undefined) {
    const self = { ...parseEndpoint(cmd, o.announce), id: o.id! };
    const result = await client.announce(self);
    cmd.configureOutput().writeErr!(`announced ${endpoint(result.self)} as ${result.self.id}; ${result.peers.length} peers\n`);
    return result.peers;
  }
  const q = { kind: o.kind, job: o.job, since: o.since, limit: o.limit === undefined ? undefined : Number(o.limit) };
  if (!o.all) return (await client.peers(q)).peers;
  const peers: Peer[] = [];
  for await (const p of client.allPeers(q)) peers.push(p);
  return peers;
}

function printWarnings(cmd: Command, client: BootstrapClient): void {
  for (const w of client.warnings) cmd.configureOutput().writeErr!(`warning: ${w}\n`);
}

export function peersCommand(): Command {
  const cmd = new Command('peers');
  // Commander's own writer: output not redirected by the caller still goes to stdout through it.
  const stdoutWriter = cmd.configureOutput().writeOut;
  cmd
    .description('list the peers a bootstrap service knows (verifying signed lists), or --announce this node')
    .requiredOption('--bootstrap <url>', 'bootstrap service URL, e.g. http://bootstrap:8080')
    .option('--authority-key <key>', 'pin the authority key: base64 as GET /api/v1/authority serves it, or @file (base64 or PEM); repeat to pin several', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--kind <kind>', `only this kind: ${PEER_KINDS.join(', ')}`)
    .option('--job <job>', 'only peers found by this job')
    .option('--since <time>', 'only peers first seen at or after this ISO-8601 time (or ms since the epoch)')
    .option('--limit <n>', `peers per page, 1 to ${MAX_PAGE_LIMIT}`)
    .option('--all', 'follow the pages to the end')
    .option('--announce <address:port>', 'register this node ([IPv6]:port or IPv4:port) and print the peers it gets back')
    .option('--id <id>', 'the identifier to announce')
    .option('--output <file>', 'also write the peers to this .ndjson or .csv file')
    .option('--json', 'NDJSON on stdout instead of a table')
    // Commander's own usage errors (unknown option, missing value) exit 1 by default; usage is 2 here.
    .exitOverride((err) => {
      throw err.exitCode !== 0 && err.code.startsWith('commander.') ? new CommanderError(EXIT_USAGE, err.code, err.message) : err;
    })
    .action(async (o: PeersOptions) => {
      checkFlags(cmd, o);
      const authorityKeys = o.authorityKey.length > 0 ? o.authorityKey.map((k) => readKey(cmd, k)) : undefined;
      let client: BootstrapClient;
      try {
        client = new BootstrapClient({ url: o.bootstrap, authorityKeys });
      } catch (err) {
        return usage(cmd, `--bootstrap: ${(err as Error).message}`);
      }
      let peers: Peer[];
      try {
        peers = await fetchPeers(client, o, cmd);
      } catch (err) {
        if (err instanceof CommanderError) throw err;
        printWarnings(cmd, client);
        if (err instanceof UntrustedResponseError) return cmd.error(`error: ${err.message}`, { exitCode: EXIT_FAILURE, code: 'widescan.peers.untrusted' });
        if (err instanceof BootstrapError && err.status === 400) return usage(cmd, `the bootstrap rejected the request: ${err.serverMessage ?? err.message}`);
        return cmd.error(`error: ${(err as Error).message}`, { exitCode: EXIT_FAILURE, code: 'widescan.peers.failed' });
      }
      printWarnings(cmd, client);
      if (o.output !== undefined) {
        try {
          writeFileSync(o.output, o.output.endsWith('.csv') ? csv(peers) : ndjson(peers));
        } catch (err) {
          return cmd.error(`error: cannot write ${o.output}: ${(err as Error).message}`, { exitCode: EXIT_FAILURE, code: 'widescan.peers.output' });
        }
        cmd.configureOutput().writeErr!(`${peers.length} peers written to ${o.output}\n`);
      }
      await print(cmd, stdoutWriter, o.json ? ndjson(peers) : table(peers));
    });
  return cmd;
}

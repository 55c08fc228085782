import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from '@jest/globals';
import type { Redis } from 'ioredis';
import { PeerStore, type Peer } from '../../bootstrap/store.js';
import { loadJob } from '../../lib/core/job.js';
import { defaultPeerCommand, expectedHosts, labDown, labStatus, labUp, type LabInfo, type LabStatus } from '../../testbed/lab.js';
import { CLI } from './cli.js';

/** A lab with a unique name (tests may run beside other labs), its peer listener started. */
export async function startLab(): Promise<LabInfo> {
  const name = `t${randomBytes(3).toString('hex').slice(0, 5)}`;
  const stateDir = mkdtempSync(join(tmpdir(), `widescan-lab-${name}-`));
  return labUp({ name, stateDir, peerCommand: defaultPeerCommand(CLI) });
}

export async function stopLab(lab: LabInfo | undefined): Promise<void> {
  if (lab) await labDown(lab.name, lab.stateDir);
}

export function writeJob(yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'widescan-job-'));
  const file = join(dir, 'job.yaml');
  writeFileSync(file, yaml);
  return file;
}

export interface PeerLine {
  address: string;
  kind: 'host' | 'widescan';
  job: string;
  rttMs: number | null;
  firstSeen: string;
  lastSeen: string;
}

export function parseNdjson(text: string): PeerLine[] {
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as PeerLine);
}

/**
 * The opening of an ESM script run with `node <file> <networkKeyFile> <jobTag> <repo>` inside the responder
 * namespace to forge echo replies: it loads raw-socket and widescan's probe codec from the built repo and
 * defines `secret` (the network key), `tag` and `me` (the responder's address on the scanner link, bytes).
 */
export const INJECTOR_PREAMBLE = `
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
const [keyFile, tagText, repo] = process.argv.slice(2);
const require = createRequire(repo + '/');
const raw = require('raw-socket');
const probe = await import(repo + '/dist/lib/core/probe.js');
const keys = await import(repo + '/dist/lib/core/keys.js');
const ipv6 = await import(repo + '/dist/lib/core/ipv6.js');
const secret = keys.networkKeyBytes(readFileSync(keyFile, 'utf8').trim());
const tag = Number(tagText);
const me = ipv6.addressToBytes(ipv6.parseAddress('fd00:5ca:1ab:f001::2'));
`;

/**
 * Asserts what a finished scan of `examples/lab.yaml` (job id `jobId`) must show: every target probed, exactly
 * the lab's live population among the job's peers in the bootstrap's store (the peer instance as the one
 * widescan peer), status counting them, and nothing sent to the excluded sink since `before`.
 */
export async function expectLabPopulation(redis: Redis, lab: LabInfo, jobId: string, status: { probesSent: number; peersDiscovered: number }, before: LabStatus): Promise<void> {
  const job = loadJob(readFileSync('examples/lab.yaml', 'utf8'));
  expect(status.probesSent).toBe(job.space.size - job.space.plannedExcluded);
  const expected = expectedHosts(job, lab);
  const store = new PeerStore(redis);
  const peers: Peer[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.list({ job: jobId, limit: 1000, cursor });
    peers.push(...page.peers);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  expect(new Set(peers.map((p) => p.address))).toEqual(expected);
  expect(peers).toHaveLength(expected.size);
  expect(peers.filter((p) => p.kind === 'widescan').map((p) => p.address)).toEqual([lab.peerAddress]);
  expect(status.peersDiscovered).toBe(expected.size);
  const after = await labStatus(lab.name);
  expect(after.counters.sinkEchoRequests - before.counters.sinkEchoRequests).toBe(0); // the excluded subnet saw nothing
}

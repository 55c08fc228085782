import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prefixContains, parsePrefix } from '../../lib/core/cidr.js';
import { formatAddress } from '../../lib/core/ipv6.js';
import type { CompiledJob } from '../../lib/core/job.js';
import { wordsToBigint } from '../../lib/core/words.js';
import { defaultPeerCommand, labDown, labUp, type LabInfo } from '../../testbed/lab.js';
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

/** What a correct scan of `job` in `lab` reports: the targeted live and aliased addresses, never excluded ones. */
export function expectedHosts(job: CompiledJob, lab: LabInfo): Set<string> {
  const live = new Set([...lab.live, lab.peerAddress]);
  const aliased = lab.aliased.map(parsePrefix);
  const words = new Uint32Array(4);
  const found = new Set<string>();
  for (let i = 0; i < job.space.size; i++) {
    if (job.space.address(i, words)) continue;
    const a = wordsToBigint(words);
    const text = formatAddress(a);
    if (live.has(text) || aliased.some((p) => prefixContains(p, a))) found.add(text);
  }
  return found;
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

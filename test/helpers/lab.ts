import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

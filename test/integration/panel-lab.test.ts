// The control panel watching a real scan: `widescan run examples/lab.yaml` in the lab's scanner namespace
// serves the panel on its loopback; Chromium runs in the same namespace (through an `ip netns exec`
// wrapper as its executable) and must see the lab job's progress move to 100 % and its peers appear.
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { freePort } from '../../lib/proc.js';
import type { LabInfo } from '../../testbed/lab.js';
import { startCli } from '../helpers/cli.js';
import { startLab, stopLab } from '../helpers/lab.js';

const ADMIN_TOKEN = 'panel-lab-admin-token-0123456789';
let lab: LabInfo | undefined;
let browser: Browser | undefined;

beforeAll(async () => {
  lab = await startLab();
  const dir = mkdtempSync(join(tmpdir(), 'widescan-chromium-'));
  const wrapper = join(dir, 'chromium-in-lab');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${lab.namespaces.scan} /usr/bin/chromium "$@"\n`);
  chmodSync(wrapper, 0o755);
  browser = await chromium.launch({
    executablePath: wrapper,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
afterAll(async () => {
  await browser?.close();
  await stopLab(lab);
});

test('the panel shows a real lab scan progressing to completion and its peers', async () => {
  const tokenFile = join(mkdtempSync(join(tmpdir(), 'widescan-admin-')), 'token');
  writeFileSync(tokenFile, ADMIN_TOKEN);
  // Slow enough to watch (70 144 probes at 8000/s ≈ 9 s) and a reply timeout that keeps the job open after.
  const job = join(mkdtempSync(join(tmpdir(), 'widescan-job-')), 'lab.yaml');
  writeFileSync(job, readFileSync('examples/lab.yaml', 'utf8').replace('packetsPerSecond: 20000', 'packetsPerSecond: 8000').replace('replyTimeoutSeconds: 2', 'replyTimeoutSeconds: 6'));
  const port = await freePort(); // a free number here is as good as any in the fresh namespace
  const run = startCli(['run', job, '--network-key-file', lab!.networkKeyFile, '--admin-token-file', tokenFile, '--bootstrap-port', String(port)], { ns: lab!.namespaces.scan });
  try {
    const page = await browser!.newPage();
    const base = `http://127.0.0.1:${port}/`;
    for (let i = 0; ; i++) {
      try {
        await page.goto(base);
        break;
      } catch (err) {
        if (i > 100) throw err; // the run is still starting
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await page.getByTestId('token-input').fill(ADMIN_TOKEN);
    await page.getByTestId('signin-button').click();
    await page.getByTestId('app').waitFor({ state: 'visible' });
    const progress = page.locator('[data-testid="job-row"][data-job-id="lab"] [data-testid="job-progress"]');
    const seen = new Set<number>();
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const value = Number(await progress.getAttribute('value', { timeout: 5000 }).catch(() => NaN));
      if (Number.isFinite(value)) seen.add(value);
      if (seen.has(100)) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    // It moved: more than one value on the way to 100 %.
    expect(seen.has(100)).toBe(true);
    expect([...seen].filter((v) => v > 0 && v < 100).length).toBeGreaterThan(0);
    // All 32 of the lab's live targets on one page (the order is first-seen, so no single row is promised).
    await page.getByTestId('filter-limit').selectOption('100');
    await page.getByTestId('filter-apply').click();
    await page.waitForFunction('document.querySelectorAll(\'[data-testid="peer-row"]\').length >= 32', undefined, { timeout: 10_000 });
    const addresses = await page.getByTestId('peer-row').evaluateAll((rows) => rows.map((r) => (r as unknown as { dataset: { address: string } }).dataset.address));
    expect(addresses).toContain('fd00:5ca:1ab:1aa::1');
    expect(addresses).toContain(lab!.peerAddress);
    mkdirSync('test-artifacts', { recursive: true });
    await page.screenshot({ path: 'test-artifacts/panel-lab.png', fullPage: true });
  } finally {
    const r = await run.done;
    expect(r.code).toBe(0);
  }
}, 90_000);

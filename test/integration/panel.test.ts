// The control panel at `/`, driven in a real browser (Debian's Chromium through playwright-core) against the
// real bootstrap on a real redis-server, fed the way the product feeds it: peers from the listener API, a
// job registered the way the planner registers it, whose progress advances while the page is open.

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startBootstrap, type BootstrapService } from '../../bootstrap/service.js';
import { compileJob, loadJob as compileJobText, type CompiledJob } from '../../lib/core/job.js';
import { keyIdOf, rawPublicKey } from '../../lib/core/signing.js';
import { addCounters, finishShard, registerJob } from '../../lib/jobstore.js';
import { createLogger } from '../../lib/log.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';

const LISTENER_TOKEN = 'listener-token-0123456789abcdef';
const ADMIN_TOKEN = 'admin-token-fedcba9876543210';
/** Text that would run script if the panel ever parsed server text as HTML. */
const HOSTILE = '<img src=x onerror=alert(1)>';
const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT = 'test-artifacts/panel.png';
const WAIT_MS = 5000;

let embedded: EmbeddedRedis;
let redis: Redis;
let service: BootstrapService;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let job: CompiledJob;
let currentKey: ReturnType<typeof generateKeyPairSync>['privateKey'];

const requests: string[] = [];
const consoleErrors: { text: string; url: string }[] = [];
const pageErrors: string[] = [];
const dialogs: string[] = [];

// 18 lab hosts and 3 widescan peers found by job `lab`, 4 hosts found by job `other`.
const LAB_HOSTS = Array.from({ length: 18 }, (_, i) => `fd00:5ca:1ab:100::${(i + 1).toString(16)}`);
const LAB_WIDESCAN = ['fd00:5ca:1ab:400::1', 'fd00:5ca:1ab:400::2', 'fd00:5ca:1ab:400::3'];
const OTHER_HOSTS = ['fd00:5ca:1ab:200::a', 'fd00:5ca:1ab:200::b', 'fd00:5ca:1ab:200::c', 'fd00:5ca:1ab:200::d'];
const NODE = { address: 'fd00:5ca:1ab:500::1', port: 4433, id: 'node-1.lab' };
const ALL_REPORTED = [...LAB_HOSTS, ...LAB_WIDESCAN, ...OTHER_HOSTS];

async function api(method: string, path: string, init: { token?: string; body?: unknown } = {}): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(service.url + path, { method, headers, body: init.body === undefined ? undefined : JSON.stringify(init.body) });
  return { status: res.status, body: await res.json() };
}

async function postPeers(peers: { address: string; kind: string; job: string; rttMs?: number }[]): Promise<void> {
  const r = await api('POST', '/api/v1/peers', { token: LISTENER_TOKEN, body: { peers } });
  expect(r.status).toBe(200);
}

/** Polls `probe` until it returns a value `ok` accepts; fails naming what it waited for and the last value. */
async function waitFor<T>(what: string, probe: () => Promise<T>, ok: (value: T) => boolean, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T;
  for (;;) {
    last = await probe();
    if (ok(last)) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const status = () => page.getByTestId('status').textContent().then((t) => t ?? '');
const peerAddresses = () => page.getByTestId('peer-row').evaluateAll((rows) => rows.map((r) => (r as unknown as { dataset: { address: string } }).dataset.address));
const jobProgress = (id: string) => page.locator(`[data-testid="job-row"][data-job-id="${id}"] [data-testid="job-progress"]`);

async function applyFilters(f: { kind?: string; job?: string; since?: string; limit?: string }): Promise<string[]> {
  await page.getByTestId('filter-kind').selectOption(f.kind ?? '');
  await page.getByTestId('filter-job').fill(f.job ?? '');
  await page.getByTestId('filter-since').fill(f.since ?? '');
  await page.getByTestId('filter-limit').selectOption(f.limit ?? '25');
  // Submitting marks the table busy at once (before its request); the mark goes when the answer is shown.
  await page.getByTestId('filter-apply').click();
  await waitFor('the peers table to load', () => page.getByTestId('peers-body').getAttribute('aria-busy'), (busy) => busy === null);
  return peerAddresses();
}

beforeAll(async () => {
  embedded = await startEmbeddedRedis();
  redis = connectRedis(embedded.url);
  const previous = generateKeyPairSync('ed25519');
  currentKey = generateKeyPairSync('ed25519').privateKey;
  service = await startBootstrap({
    redisUrl: embedded.url,
    listenerToken: LISTENER_TOKEN,
    adminToken: ADMIN_TOKEN,
    host: '127.0.0.1',
    port: 0,
    announceAnyAddress: true, // the test announces a node that is not 127.0.0.1
    trustMode: 'authority',
    authorityKey: currentKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    previousAuthorityKey: previous.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    previousKeyRetiresAt: new Date(Date.now() + 7 * 86_400_000).toISOString(),
    logger: createLogger('test', 'silent'),
  });

  const register = { macKey: new Uint8Array(32), networkId: 1, blocklist: [], fullLimitBits: 32 };
  job = compileJobText(readFileSync('examples/lab.yaml', 'utf8'));
  await registerJob(redis, job, register);
  // compileJob does not re-validate metadata, which is how a hostile id reaches Redis here; the panel must
  // cope with whatever the registry holds.
  await registerJob(redis, compileJob({ ...job.manifest, metadata: { name: HOSTILE } }), register);

  await postPeers(LAB_HOSTS.map((address, i) => ({ address, kind: 'host', job: 'lab', rttMs: 1 + i / 10 })));
  await postPeers(LAB_WIDESCAN.map((address) => ({ address, kind: 'widescan', job: 'lab' })));
  await postPeers(OTHER_HOSTS.map((address) => ({ address, kind: 'host', job: 'other' })));
  expect((await api('POST', '/api/v1/announce', { body: NODE })).status).toBe(200);

  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  } catch (err) {
    throw new Error(`Chromium did not start from ${CHROMIUM}; install Debian's chromium package: ${(err as Error).message}`);
  }
  context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'light', locale: 'en-US', timezoneId: 'UTC' });
  page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push({ text: m.text(), url: m.location().url });
  });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('dialog', (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    void d.dismiss();
  });
}, 30_000);

afterAll(async () => {
  await browser?.close();
  await service?.close();
  redis?.disconnect();
  await embedded?.stop();
});

describe('control panel', () => {
  test('is served with a CSP that allows nothing but its own origin', async () => {
    const res = await fetch(service.url + '/');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toMatch(/default-src 'self'/);
    expect(await res.text()).not.toMatch(/<style|\sstyle\s*=|<script>|\son[a-z]+\s*=/i);
  });

  test('a wrong or short token is refused and the panel stays signed out', async () => {
    await page.goto(service.url + '/');
    await expect(page.getByTestId('signin-form').isVisible()).resolves.toBe(true);

    const before = requests.length;
    await page.getByTestId('token-input').fill('short');
    await page.getByTestId('signin-button').click();
    await waitFor('the short-token message', status, (s) => s.includes('at least 16 characters'));
    expect(requests.slice(before).filter((u) => u.includes('/api/'))).toEqual([]); // refused before asking the server

    // The listener token is a real token, but not the admin's.
    for (const wrong of ['wrong-token-0123456789abcdef', LISTENER_TOKEN]) {
      await page.getByTestId('token-input').fill(wrong);
      await page.getByTestId('signin-button').click();
      await waitFor('the refused-token message', status, (s) => s.startsWith('Sign-in failed') && s.includes('refused'));
      await expect(page.getByTestId('app').isHidden()).resolves.toBe(true);
      await expect(page.getByTestId('signin-form').isVisible()).resolves.toBe(true);
      await expect(page.evaluate('sessionStorage.length')).resolves.toBe(0);
    }
    await expect(page.getByTestId('status').getAttribute('aria-live')).resolves.toBe('polite');
    mkdirSync('test-artifacts', { recursive: true });
    await page.screenshot({ path: 'test-artifacts/panel-signin.png' });
  });

  test('a bootstrap without an admin token says so at sign-in', async () => {
    const bare = await startBootstrap({ redisUrl: embedded.url, listenerToken: LISTENER_TOKEN, host: '127.0.0.1', port: 0, logger: createLogger('test', 'silent') });
    const other = await browser.newPage(); // its own page: the checks on `page` stay about the main server
    try {
      await other.goto(bare.url + '/');
      await other.getByTestId('token-input').fill(ADMIN_TOKEN);
      await other.getByTestId('signin-button').click();
      await waitFor('the admin-disabled message', () => other.getByTestId('status').textContent(), (s) => /^Sign-in failed: admin disabled/.test(s ?? ''));
      await expect(other.getByTestId('app').isHidden()).resolves.toBe(true);
    } finally {
      await other.close();
      await bare.close();
    }
  });

  test('signs in; the jobs table shows the job and its progress bar moves', async () => {
    await page.getByTestId('token-input').fill(ADMIN_TOKEN);
    await page.getByTestId('signin-button').click();
    await page.getByTestId('app').waitFor({ state: 'visible' });
    await expect(page.getByTestId('signin').isHidden()).resolves.toBe(true);
    await expect(page.evaluate(`sessionStorage.getItem('widescan.adminToken')`)).resolves.toBe(ADMIN_TOKEN);

    const row = page.locator('[data-testid="job-row"][data-job-id="lab"]');
    await row.waitFor();
    await expect(jobProgress('lab').getAttribute('value')).resolves.toBe('0');
    const bar = await jobProgress('lab').elementHandle();
    expect(job.totalShards).toBeGreaterThan(4);

    // Workers finish half the shards while the page is open.
    const half = Math.ceil(job.totalShards / 2);
    for (let shard = 0; shard < half; shard++) await finishShard(redis, job.id, shard, 'completed', 0);
    await addCounters(redis, job.id, { probesSent: 12345, repliesValid: 678 });
    const expected = Math.floor((half / job.totalShards) * 100);
    await waitFor('the progress bar to reach the shards done', () => jobProgress('lab').getAttribute('value'), (v) => Number(v) === expected);
    await expect(row.getByTestId('job-percent').textContent()).resolves.toBe(`${expected}%`);
    const cells = await row.locator('td').allTextContents();
    expect(cells).toContain('12,345');
    expect(cells).toContain('678');
    expect(cells[0]).toBe('Running');
    expect(cells.at(-1)).toMatch(/^(in \d+ \w+|now)$/); // an ETA, relative to now
    await expect(bar!.evaluate((e) => (e as unknown as { isConnected: boolean }).isConnected)).resolves.toBe(true); // updated in place
    for (let shard = half; shard < job.totalShards; shard++) await finishShard(redis, job.id, shard, 'completed', 0);
    await waitFor('the progress bar to reach 100', () => jobProgress('lab').getAttribute('value'), (v) => v === '100');
  });

  test('a hostile job name is shown as text, never as markup', async () => {
    const cell = page.locator('[data-testid="job-row"]').filter({ hasText: 'onerror' }).locator('th');
    await expect(cell.textContent()).resolves.toBe(HOSTILE);
    await expect(page.getByTestId('jobs-table').locator('img').count()).resolves.toBe(0);
  });

  test('filters peers by kind, job and first-seen time', async () => {
    expect((await applyFilters({ kind: 'widescan' })).sort()).toEqual([...LAB_WIDESCAN].sort());
    const kinds = await page.getByTestId('peer-row').locator('td[data-label="Kind"]').allTextContents();
    expect(kinds).toEqual(['widescan', 'widescan', 'widescan']);

    expect((await applyFilters({ job: 'other' })).sort()).toEqual([...OTHER_HOSTS].sort());
    expect(await applyFilters({ kind: 'host', job: 'lab', limit: '100' })).toEqual(LAB_HOSTS);
    expect(await applyFilters({ kind: 'node' })).toEqual([NODE.address]);
    await expect(page.getByTestId('peer-row').locator('th').textContent()).resolves.toContain(`id ${NODE.id}, port ${NODE.port}`);

    // The browser runs in UTC here, so the datetime-local value is an exact instant.
    expect(await applyFilters({ since: '2099-01-01T00:00:00' })).toEqual([]);
    await expect(page.getByTestId('peers-body').textContent()).resolves.toContain('No peers match');

    // A job name the server refuses: its message is shown and the field marked.
    await applyFilters({ job: 'Not A Job!' });
    await waitFor('the server\'s job error', status, (s) => s.startsWith('Peers could not be loaded: job:'));
    await expect(page.getByTestId('filter-job').getAttribute('aria-invalid')).resolves.toBe('true');
    await expect(page.getByTestId('peers-body').textContent()).resolves.toContain('could not be loaded'); // no stale rows
    await expect(page.getByTestId('peers-next').isDisabled()).resolves.toBe(true);
  });

  test('pages through every peer with the cursor, and back to the first page', async () => {
    const first = await applyFilters({ limit: '10' });
    expect(first).toHaveLength(10);
    await expect(page.getByTestId('peers-first').isDisabled()).resolves.toBe(true);
    const seen = [...first];
    let pages = 1;
    while (await page.getByTestId('peers-next').isEnabled()) {
      await page.getByTestId('peers-next').click();
      pages++;
      await waitFor(`page ${pages}`, () => page.getByTestId('peers-page').textContent(), (t) => t === `Page ${pages}`);
      await waitFor('the page to load', () => page.getByTestId('peers-body').getAttribute('aria-busy'), (b) => b === null);
      seen.push(...(await peerAddresses()));
      expect(pages).toBeLessThan(10);
    }
    expect(pages).toBeGreaterThanOrEqual(3);
    expect(new Set(seen).size).toBe(seen.length); // no peer twice
    expect(seen.sort()).toEqual([...ALL_REPORTED, NODE.address].sort());
    await expect(page.getByTestId('peers-caption').textContent()).resolves.toContain(`page ${pages}`);

    await page.getByTestId('peers-first').click();
    await waitFor('the first page again', peerAddresses, (a) => JSON.stringify(a) === JSON.stringify(first));
    await expect(page.getByTestId('peers-page').textContent()).resolves.toBe('Page 1');
  });

  test('blocks a peer after confirmation: it leaves the table and the API', async () => {
    const [target, second] = await applyFilters({ kind: 'host', job: 'lab' });
    const rowOf = (address: string) => page.locator(`[data-testid="peer-row"][data-address="${address}"]`);

    // Cancelling changes nothing.
    await rowOf(target!).getByTestId('block-button').click();
    await expect(page.getByTestId('block-dialog').isVisible()).resolves.toBe(true);
    await expect(page.getByTestId('block-address').textContent()).resolves.toBe(target);
    await page.getByTestId('block-cancel').click();
    await expect(page.getByTestId('block-dialog').isHidden()).resolves.toBe(true);
    await expect(rowOf(target!).count()).resolves.toBe(1);

    await rowOf(target!).getByTestId('block-button').click();
    await page.getByTestId('block-reason').fill(HOSTILE);
    await page.screenshot({ path: 'test-artifacts/panel-block.png' });
    await page.getByTestId('block-confirm').click();
    await rowOf(target!).waitFor({ state: 'detached' });
    await waitFor('the block message', status, (s) => s.startsWith(`Blocked ${target}`));
    // Keyboard users land on the next row's button rather than on the page top.
    await expect(rowOf(second!).getByTestId('block-button').evaluate((b) => b === (b as unknown as { ownerDocument: { activeElement: unknown } }).ownerDocument.activeElement)).resolves.toBe(true);

    const served = await api('GET', '/api/v1/peers?limit=1000');
    expect(served.status).toBe(200);
    expect(served.body.peers.map((p: { address: string }) => p.address)).not.toContain(target);
    expect(served.body.peers).toHaveLength(ALL_REPORTED.length); // the node is still there, one host less

    const blockedRow = page.locator(`[data-testid="blocked-row"][data-address="${target}"]`);
    await blockedRow.waitFor();
    await expect(blockedRow.locator('td[data-label="Reason"]').textContent()).resolves.toBe(HOSTILE);
    await expect(page.getByTestId('blocked-table').locator('img').count()).resolves.toBe(0);
    const listed = await api('GET', '/api/v1/peers/blocked', { token: ADMIN_TOKEN });
    expect(listed.body.blocked).toEqual([expect.objectContaining({ address: target, reason: HOSTILE })]);
  });

  test('unblocks a peer from the blocked list', async () => {
    const target = LAB_HOSTS[0]!;
    await page.locator(`[data-testid="blocked-row"][data-address="${target}"]`).getByTestId('unblock-button').click();
    await page.locator(`[data-testid="blocked-row"][data-address="${target}"]`).waitFor({ state: 'detached' });
    await waitFor('the unblock message', status, (s) => s.startsWith(`Unblocked ${target}`));
    await expect(page.getByTestId('blocked-body').textContent()).resolves.toContain('No peers are blocked');
    expect((await api('GET', '/api/v1/peers/blocked', { token: ADMIN_TOKEN })).body.blocked).toEqual([]);
    // The store keeps a blocked peer's record, so unblocking serves it again as it was.
    await waitFor('the peer back in the table', peerAddresses, (a) => a.includes(target));
  });

  test('shows the authority mode and keys, current and retiring', async () => {
    await expect(page.getByTestId('authority-mode').textContent()).resolves.toBe('authority');
    const rows = page.getByTestId('authority-key');
    await expect(rows.count()).resolves.toBe(2);
    await expect(rows.first().locator('th').textContent()).resolves.toBe(keyIdOf(currentKey));
    await expect(rows.first().locator('code.key').textContent()).resolves.toBe(rawPublicKey(currentKey).toString('base64'));
    await expect(rows.first().locator('td[data-label="State"]').textContent()).resolves.toBe('current');
    await expect(rows.nth(1).locator('td[data-label="State"]').textContent()).resolves.toMatch(/^retiring at /);
    await rows.first().getByTestId('copy-key').click();
    // Headless Chromium may or may not grant the clipboard; either way the user is told what happened.
    await waitFor('the copy message', status, (s) => /copied|selected/.test(s));
  });

  test('looks right (screenshots), fits a 360 px wide screen and follows the dark colour scheme', async () => {
    await applyFilters({});
    mkdirSync('test-artifacts', { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(readFileSync(SCREENSHOT).subarray(1, 4).toString()).toBe('PNG');

    await page.setViewportSize({ width: 360, height: 800 });
    const overflow = await page.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth');
    expect(overflow).toBe(0);
    await page.evaluate('scrollTo(0, 0)');
    await page.screenshot({ path: 'test-artifacts/panel-360.png', fullPage: false });
    await page.setViewportSize({ width: 1280, height: 900 });

    const background = () => page.evaluate('getComputedStyle(document.body).backgroundColor');
    const light = await background();
    await page.emulateMedia({ colorScheme: 'dark' });
    expect(await background()).not.toBe(light);
    await page.screenshot({ path: 'test-artifacts/panel-dark.png', fullPage: false });
    await page.emulateMedia({ colorScheme: 'light' });
  });

  test('every control is labelled and the structure is semantic', async () => {
    const unlabelled = await page.evaluate(`[...document.querySelectorAll('input, select')]
      .filter((e) => e.labels.length === 0 && !e.getAttribute('aria-label')).map((e) => e.outerHTML)`);
    expect(unlabelled).toEqual([]);
    const unnamedButtons = await page.evaluate(`[...document.querySelectorAll('button')]
      .filter((b) => !(b.getAttribute('aria-label') || b.textContent.trim())).length`);
    expect(unnamedButtons).toBe(0);
    await expect(page.locator('main').count()).resolves.toBe(1);
    await expect(page.locator('nav').count()).resolves.toBe(1);
    await expect(page.locator('table:not(:has(caption))').count()).resolves.toBe(0);
    await expect(page.locator('thead th:not([scope="col"])').count()).resolves.toBe(0);
  });

  test('a 401 while signed in signs out with a message, and sign-out forgets the token', async () => {
    // The server cannot be made to change its token mid-test, so this one answer is replaced.
    await page.route('**/api/v1/jobs', (route) => route.fulfill({ status: 401, contentType: 'application/json', body: JSON.stringify({ error: 'authorization: wrong admin token' }) }));
    await waitFor('the session to end', status, (s) => s.startsWith('Signed out: the server refused the admin token'));
    await page.unroute('**/api/v1/jobs');
    await expect(page.getByTestId('app').isHidden()).resolves.toBe(true);
    await expect(page.getByTestId('jobs-body').locator('tr').count()).resolves.toBe(0); // nothing left on screen
    await expect(page.evaluate('sessionStorage.length')).resolves.toBe(0);

    // A restored session survives a reload; the sign-out button ends it.
    await page.getByTestId('token-input').fill(ADMIN_TOKEN);
    await page.getByTestId('signin-button').click();
    await page.getByTestId('app').waitFor({ state: 'visible' });
    await page.reload();
    await page.getByTestId('app').waitFor({ state: 'visible' });
    await page.getByTestId('signout').click();
    await page.getByTestId('signin').waitFor({ state: 'visible' });
    await expect(status()).resolves.toBe('Signed out.');
    await expect(page.evaluate('sessionStorage.length')).resolves.toBe(0);
  });

  test('no request left 127.0.0.1, and nothing failed in the page', async () => {
    const origin = new URL(service.url).origin;
    expect(origin).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(requests.length).toBeGreaterThan(10);
    expect(requests.filter((u) => new URL(u).origin !== origin)).toEqual([]);
    expect(requests.filter((u) => new URL(u).pathname === '/x')).toEqual([]); // the hostile <img> never loaded
    expect(pageErrors).toEqual([]);
    expect(dialogs).toEqual([]);
    // The refused sign-ins log their 401s and the refused job filter its 400; anything else (a CSP
    // violation, a 404, a script error) fails.
    const expected = (e: { text: string; url: string }) =>
      (e.text.includes('status of 401') && new URL(e.url).pathname === '/api/v1/jobs') ||
      (e.text.includes('status of 400') && new URL(e.url).searchParams.get('job') === 'Not A Job!');
    const unexpected = consoleErrors.filter((e) => !expected(e));
    expect(unexpected).toEqual([]);
    expect(consoleErrors.length).toBeGreaterThanOrEqual(2);
  });
});

// Leader election on a Lease: the pure decision exhaustively, then two electors against the in-process API
// server (one leads; takeover after a crash, after a release, after the Lease is taken or the API is lost).
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import fc from 'fast-check';
import {
  decideElection,
  LeaderElector,
  leaseDurationSeconds,
  microTime,
  releaseRecord,
  type ElectionInput,
  type LeaderElectorOptions,
  type ObservedLease,
  type StoppedReason,
} from '../../operator/leader.js';
import { startApiServer, type ApiServer, type KObject } from '../apiserver/server.js';

const MICRO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
const NOW = new Date('2026-01-01T00:00:00.123Z');
const STAMP = '2026-01-01T00:00:00.123000Z';
const INT32_MAX = 2 ** 31 - 1;

const input = (record: ObservedLease | undefined, over: Partial<ElectionInput> = {}): ElectionInput => ({
  record,
  identity: 'me',
  nowMs: 100_000,
  observedAtMs: 100_000,
  now: NOW,
  leaseDurationMs: 15000,
  ...over,
});
const theirs: ObservedLease = {
  holderIdentity: 'other',
  leaseDurationSeconds: 15,
  acquireTime: '2025-12-31T23:00:00.000001Z',
  renewTime: '2025-12-31T23:59:59.999999Z',
  leaseTransitions: 4,
};

describe('decideElection (pure)', () => {
  test('no Lease: create it with us as holder and no transitions', () => {
    expect(decideElection(input(undefined, { leaseDurationMs: 1500 }))).toEqual({
      action: 'create',
      spec: { holderIdentity: 'me', leaseDurationSeconds: 2, acquireTime: STAMP, renewTime: STAMP, leaseTransitions: 0 },
    });
  });

  test("another holder's Lease: wait while this process has seen it for less than its duration", () => {
    expect(decideElection(input(theirs, { observedAtMs: 90_000 }))).toEqual({ action: 'wait', holder: 'other', expiresInMs: 5000 });
    expect(decideElection(input(theirs, { observedAtMs: 85_001 }))).toEqual({ action: 'wait', holder: 'other', expiresInMs: 1 });
  });

  test("another holder's Lease unseen to change for its duration: take it over, transitions + 1", () => {
    for (const observedAtMs of [85_000, 0, -1e9])
      expect(decideElection(input(theirs, { observedAtMs }))).toEqual({
        action: 'acquire',
        spec: { holderIdentity: 'me', leaseDurationSeconds: 15, acquireTime: STAMP, renewTime: STAMP, leaseTransitions: 5 },
      });
  });

  test("the other node's renewTime is not trusted: only this process's observation counts", () => {
    // A holder whose clock runs a year ahead still loses its Lease once we stop seeing renewals...
    expect(decideElection(input({ ...theirs, renewTime: '2027-01-01T00:00:00.000000Z' }, { observedAtMs: 0 })).action).toBe('acquire');
    // ...and one whose clock runs a year behind keeps it while we see it renew.
    expect(decideElection(input({ ...theirs, renewTime: '2025-01-01T00:00:00.000000Z' })).action).toBe('wait');
  });

  test('our own Lease: renew, keeping acquireTime and transitions, even when our observation is old', () => {
    for (const observedAtMs of [100_000, 0])
      expect(decideElection(input({ ...theirs, holderIdentity: 'me' }, { observedAtMs }))).toEqual({
        action: 'renew',
        spec: { holderIdentity: 'me', leaseDurationSeconds: 15, acquireTime: theirs.acquireTime, renewTime: STAMP, leaseTransitions: 4 },
      });
    // A record without an acquireTime gets one.
    const d = decideElection(input({ holderIdentity: 'me' }));
    expect(d).toMatchObject({ action: 'renew', spec: { acquireTime: STAMP, leaseTransitions: 0 } });
  });

  test('a released (holder-less) Lease is taken at once, however recently it changed', () => {
    for (const holderIdentity of ['', undefined])
      expect(decideElection(input({ ...releaseRecord(theirs, NOW), holderIdentity }))).toMatchObject({
        action: 'acquire',
        spec: { holderIdentity: 'me', leaseTransitions: 5 },
      });
  });

  test('a missing or nonsensical duration falls back to ours instead of expiring the Lease at once', () => {
    for (const leaseDurationSeconds of [undefined, 0, -5, 1.5, Number.NaN, Infinity]) {
      const rec = { ...theirs, leaseDurationSeconds };
      expect(decideElection(input(rec, { observedAtMs: 90_000 }))).toEqual({ action: 'wait', holder: 'other', expiresInMs: 5000 });
      expect(decideElection(input(rec, { observedAtMs: 85_000 })).action).toBe('acquire');
    }
  });

  test('hostile leaseTransitions and holderIdentity', () => {
    for (const leaseTransitions of [undefined, -1, 1.5, Number.NaN, '7' as unknown as number])
      expect(decideElection(input({ ...theirs, leaseTransitions }, { observedAtMs: 0 }))).toMatchObject({ spec: { leaseTransitions: 1 } });
    // int32 on the server: the counter saturates instead of overflowing.
    expect(decideElection(input({ ...theirs, leaseTransitions: INT32_MAX }, { observedAtMs: 0 }))).toMatchObject({ spec: { leaseTransitions: INT32_MAX } });
    expect(decideElection(input({ ...theirs, leaseTransitions: 2 ** 60 }, { observedAtMs: 0 }))).toMatchObject({ spec: { leaseTransitions: 1 } });
    // A non-string holder is no holder (the real API server would reject it anyway).
    expect(decideElection(input({ ...theirs, holderIdentity: 42 as unknown as string })).action).toBe('acquire');
    // An identity that merely prefixes ours is someone else.
    expect(decideElection(input({ ...theirs, holderIdentity: 'me2' })).action).toBe('wait');
  });

  test('property: matches an independent statement of the rules', () => {
    const record = fc.option(
      fc.record(
        {
          holderIdentity: fc.constantFrom('', 'me', 'other'),
          leaseDurationSeconds: fc.oneof(fc.integer({ min: -2, max: 100 }), fc.double()),
          acquireTime: fc.constant('2025-01-01T00:00:00.000000Z'),
          renewTime: fc.constant('2025-01-01T00:00:01.000000Z'),
          leaseTransitions: fc.integer({ min: -1, max: INT32_MAX }),
        },
        { requiredKeys: [] },
      ),
      { nil: undefined },
    );
    fc.assert(
      fc.property(record, fc.integer({ min: 0, max: 1e9 }), fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 1, max: 1e6 }), (rec, observedAtMs, age, leaseDurationMs) => {
        const d = decideElection(input(rec, { observedAtMs, nowMs: observedAtMs + age, leaseDurationMs }));
        if (rec === undefined) return expect(d.action).toBe('create');
        const holder = rec.holderIdentity ?? '';
        const t = Number.isSafeInteger(rec.leaseTransitions) && rec.leaseTransitions! >= 0 ? rec.leaseTransitions! : 0;
        const ds = rec.leaseDurationSeconds;
        const durMs = Number.isSafeInteger(ds) && ds! > 0 ? ds! * 1000 : leaseDurationMs;
        if (holder === 'me') return expect(d).toMatchObject({ action: 'renew', spec: { leaseTransitions: t } });
        if (holder !== '' && age < durMs) return expect(d).toEqual({ action: 'wait', holder, expiresInMs: durMs - age });
        expect(d).toEqual({
          action: 'acquire',
          spec: { holderIdentity: 'me', leaseDurationSeconds: Math.ceil(leaseDurationMs / 1000), acquireTime: STAMP, renewTime: STAMP, leaseTransitions: Math.min(t + 1, INT32_MAX) },
        });
      }),
    );
  });

  test('MicroTime, duration rounding and the release record', () => {
    expect(microTime(NOW)).toBe(STAMP);
    expect(microTime(new Date(0))).toMatch(MICRO);
    // Whole seconds, rounded up: a candidate never waits less than the holder asked for.
    expect([1, 999, 1000, 1001, 1500, 15000].map(leaseDurationSeconds)).toEqual([1, 1, 1, 2, 2, 15]);
    expect(releaseRecord(theirs, NOW)).toEqual({ holderIdentity: '', leaseDurationSeconds: 1, acquireTime: STAMP, renewTime: STAMP, leaseTransitions: 4 });
    expect(releaseRecord({ leaseTransitions: -3 }, NOW).leaseTransitions).toBe(0);
  });
});

// ---------- against the API server ----------

const LEASE = 1000; // whole seconds, so the Lease's leaseDurationSeconds (1) is exactly what the test reasons with
const RENEW = 700;
const RETRY = 100;
/** Allowance for a shared 2-core machine: timers and requests run late. */
const SLACK = 600;

let srv: ApiServer;
const live: LeaderElector[] = [];
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  srv = await startApiServer();
});
afterEach(async () => {
  await Promise.all(live.splice(0).map((e) => e.stop({ release: false })));
  for (const c of cleanups.splice(0)) await c();
});
afterAll(async () => {
  await srv.close();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function kubeConfig(server = srv.url): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (server === srv.url) kc.loadFromFile(srv.kubeconfig);
  else
    kc.loadFromOptions({
      // Plain HTTP on loopback: client-node refuses http:// unless TLS verification is marked off.
      clusters: [{ name: 'proxied', server, skipTLSVerify: true }],
      users: [{ name: 'u', token: srv.token }],
      contexts: [{ name: 'c', cluster: 'proxied', user: 'u' }],
      currentContext: 'c',
    });
  return kc;
}

interface Candidate {
  id: string;
  el: LeaderElector;
  events: string[];
  signals: AbortSignal[];
}

function candidate(id: string, lease: string, over: Partial<LeaderElectorOptions> = {}): Candidate {
  const c: Candidate = { id, events: [], signals: [], el: undefined as unknown as LeaderElector };
  c.el = new LeaderElector({
    kubeConfig: kubeConfig(),
    namespace: 'default',
    name: lease,
    identity: id,
    leaseDurationMs: LEASE,
    renewDeadlineMs: RENEW,
    retryPeriodMs: RETRY,
    onStartedLeading: (signal) => {
      c.events.push('started');
      c.signals.push(signal);
    },
    onStoppedLeading: (reason: StoppedReason) => void c.events.push(`stopped:${reason}`),
    ...over,
  });
  live.push(c.el);
  return c;
}

const leaseObj = (name: string, ns = 'default'): KObject | undefined => srv.store.get('coordination.k8s.io', 'leases', ns, name);
const spec = (name: string): KObject => leaseObj(name)?.spec ?? {};

/** Polls until `check` holds; returns the ms it took. */
async function waitFor(check: () => boolean, what: string, withinMs: number): Promise<number> {
  const t0 = performance.now();
  while (!check()) {
    if (performance.now() - t0 > withinMs) throw new Error(`not within ${withinMs} ms: ${what}`);
    await sleep(5);
  }
  return performance.now() - t0;
}

/** Samples every 20 ms whether more than one candidate believes it leads. */
function overlapSampler(cs: Candidate[]): { samples: () => number; both: () => number } {
  let samples = 0;
  let both = 0;
  const timer = setInterval(() => {
    samples++;
    if (cs.filter((c) => c.el.isLeader).length > 1) both++;
  }, 20);
  cleanups.push(() => clearInterval(timer));
  return { samples: () => samples, both: () => both };
}

/** A TCP relay to the API server that counts requests and can black-hole traffic (an unreachable API). */
async function relay(): Promise<{ url: string; requests: () => number; blackhole(): void }> {
  const upstream = new URL(srv.url);
  const sockets = new Set<Socket>();
  let requests = 0;
  let dropping = false;
  const server: Server = createServer((client) => {
    const up = connect(Number(upstream.port), upstream.hostname);
    for (const s of [client, up]) {
      sockets.add(s);
      s.on('error', () => s.destroy());
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (d: Buffer) => {
      requests += d.toString('latin1').match(/^(GET|PUT|POST|PATCH|DELETE) \/\S* HTTP\/1\.1\r$/gm)?.length ?? 0;
      if (!dropping) up.write(d);
    });
    up.on('data', (d: Buffer) => void (dropping || client.write(d)));
    client.on('close', () => up.destroy());
    up.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, requests: () => requests, blackhole: () => void (dropping = true) };
}

describe('LeaderElector against the API server', () => {
  test('two candidates on one Lease: exactly one leads and is the holder', async () => {
    const a = candidate('a', 'one');
    const b = candidate('b', 'one');
    const overlap = overlapSampler([a, b]);
    a.el.start();
    b.el.start();
    await waitFor(() => a.el.isLeader || b.el.isLeader, 'a leader', LEASE);
    await sleep(5 * RETRY);
    const leaders = [a, b].filter((c) => c.el.isLeader);
    expect(leaders).toHaveLength(1);
    const leader = leaders[0]!;
    const other = leader === a ? b : a;
    const s = spec('one');
    expect(s).toMatchObject({ holderIdentity: leader.id, leaseDurationSeconds: 1, leaseTransitions: 0 });
    expect(s.acquireTime).toMatch(MICRO);
    expect(s.renewTime).toMatch(MICRO);
    // It renewed since it acquired.
    expect(Date.parse(s.renewTime)).toBeGreaterThan(Date.parse(s.acquireTime));
    expect(leader.events).toEqual(['started']);
    expect(other.events).toEqual([]);
    expect(overlap.samples()).toBeGreaterThan(10);
    expect(overlap.both()).toBe(0);
  });

  test('a leader that dies without releasing: the standby takes over after the lease duration, never overlapping', async () => {
    const a = candidate('a', 'crash');
    const b = candidate('b', 'crash');
    a.el.start();
    await waitFor(() => a.el.isLeader, 'a leads', LEASE);
    b.el.start();
    await sleep(3 * RETRY);
    expect(b.el.isLeader).toBe(false);
    const overlap = overlapSampler([a, b]);
    const t0 = performance.now();
    await a.el.stop({ release: false });
    expect(a.el.isLeader).toBe(false);
    expect(a.events).toEqual(['started', 'stopped:stopped']);
    const rv = leaseObj('crash')!.metadata.resourceVersion;
    await sleep(LEASE / 2);
    // Nothing was written since: the dead leader's timers are gone and the standby still waits.
    expect(leaseObj('crash')!.metadata.resourceVersion).toBe(rv);
    expect(b.el.isLeader).toBe(false);
    await waitFor(() => b.el.isLeader, 'b takes over', LEASE + RETRY + SLACK);
    const took = performance.now() - t0;
    // It waited for the lease to expire as it observed it (last renewal seen at most a retry before the crash).
    expect(took).toBeGreaterThan(LEASE - 2 * RETRY);
    expect(spec('crash')).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1 });
    expect(b.events).toEqual(['started']);
    expect(overlap.both()).toBe(0);
    expect(overlap.samples()).toBeGreaterThan(20);
  });

  test('graceful release: the standby takes over within about a retry period', async () => {
    let holderDuringCallback: unknown;
    const a = candidate('a', 'release', {
      onStoppedLeading: () => void (holderDuringCallback = spec('release').holderIdentity),
    });
    const b = candidate('b', 'release');
    a.el.start();
    await waitFor(() => a.el.isLeader, 'a leads', LEASE);
    b.el.start();
    await sleep(3 * RETRY);
    const overlap = overlapSampler([a, b]);
    const t0 = performance.now();
    await a.el.stop({ release: true });
    // The leader's work ended before the Lease was given up.
    expect(holderDuringCallback).toBe('a');
    await waitFor(() => b.el.isLeader, 'b takes over', 2 * RETRY + SLACK);
    expect(performance.now() - t0).toBeLessThan(LEASE - RETRY);
    expect(spec('release')).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1 });
    expect(overlap.both()).toBe(0);
  });

  test('the release record itself: no holder, one second, transitions kept', async () => {
    const a = candidate('a', 'released');
    a.el.start();
    await waitFor(() => a.el.isLeader, 'a leads', LEASE);
    await a.el.stop({ release: true });
    expect(spec('released')).toMatchObject({ holderIdentity: '', leaseDurationSeconds: 1, leaseTransitions: 0 });
    expect(spec('released').renewTime).toMatch(MICRO);
    // stop() is idempotent and the elector cannot be restarted.
    await a.el.stop({ release: true });
    expect(a.events).toEqual(['started', 'stopped:stopped']);
    expect(() => a.el.start()).toThrow(/create a new LeaderElector/);
  });

  test('a leader whose Lease is taken by someone else stops leading at once and writes no more', async () => {
    const a = candidate('a', 'stolen');
    a.el.start();
    await waitFor(() => a.el.isLeader, 'a leads', LEASE);
    const coord = kubeConfig().makeApiClient(k8s.CoordinationV1Api);
    const cur = await coord.readNamespacedLease({ name: 'stolen', namespace: 'default' });
    await coord.replaceNamespacedLease({ name: 'stolen', namespace: 'default', body: { ...cur, spec: { ...cur.spec, holderIdentity: 'intruder' } } });
    // The next renewal gets a 409, reads the Lease and sees the new holder: no waiting for the deadline.
    const took = await waitFor(() => !a.el.isLeader, 'a stops leading', RENEW + SLACK);
    expect(took).toBeLessThan(RENEW);
    expect(a.events).toEqual(['started', 'stopped:lost']);
    expect(a.signals[0]!.aborted).toBe(true);
    const rv = leaseObj('stolen')!.metadata.resourceVersion;
    await sleep(LEASE + 2 * RETRY);
    // A lost elector is done: it never campaigns again, even once the intruder's lease expires.
    expect(leaseObj('stolen')!.metadata.resourceVersion).toBe(rv);
    expect(spec('stolen').holderIdentity).toBe('intruder');
    expect(a.el.isLeader).toBe(false);
  });

  test('a leader that cannot reach the API server stops at the renew deadline, and the standby then takes over', async () => {
    const r = await relay();
    const a = candidate('a', 'cut', { kubeConfig: kubeConfig(r.url) });
    const b = candidate('b', 'cut');
    a.el.start();
    await waitFor(() => a.el.isLeader, 'a leads', LEASE);
    b.el.start();
    await sleep(3 * RETRY);
    const overlap = overlapSampler([a, b]);
    const t0 = performance.now();
    r.blackhole(); // requests now hang: only the deadline timer can end a's leadership
    const lost = await waitFor(() => !a.el.isLeader, 'a stops leading', RENEW + SLACK);
    expect(lost).toBeLessThanOrEqual(RENEW + 50);
    expect(a.events).toEqual(['started', 'stopped:lost']);
    await waitFor(() => b.el.isLeader, 'b takes over', LEASE + RETRY + SLACK);
    expect(performance.now() - t0).toBeGreaterThan(LEASE - 2 * RETRY);
    expect(spec('cut')).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1 });
    expect(overlap.both()).toBe(0);
    // A lost elector has nothing to release: stop() returns at once although a request hangs.
    const s0 = performance.now();
    await a.el.stop({ release: true });
    expect(performance.now() - s0).toBeLessThan(RENEW);
    expect(spec('cut').holderIdentity).toBe('b');
  });

  test('stop({ release: true }) on an unreachable API server still returns, bounded by the renew deadline', async () => {
    const r = await relay();
    const a = candidate('a', 'hang', { kubeConfig: kubeConfig(r.url) });
    a.el.start();
    await waitFor(() => a.el.isLeader, 'a leads', LEASE);
    r.blackhole();
    await sleep(RETRY + 20); // a renewal is now hanging
    const s0 = performance.now();
    await a.el.stop({ release: true });
    expect(performance.now() - s0).toBeLessThan(2 * RENEW + SLACK);
    expect(a.el.isLeader).toBe(false);
    // Either stop() ended it, or the renew deadline passed while stop() waited for the hanging renewal.
    expect(a.events).toHaveLength(2);
    expect(a.events[1]).toMatch(/^stopped:(stopped|lost)$/);
    expect(spec('hang').holderIdentity).toBe('a');
  });

  test('errors wait a retry period (no hot loop), and stop() leaves no timer running', async () => {
    const r = await relay();
    // A namespace that does not exist: every attempt is a 404 read and a failed create.
    const c = candidate('c', 'nowhere', { kubeConfig: kubeConfig(r.url), namespace: 'no-such-namespace' });
    const timers = (): number => process.getActiveResourcesInfo().filter((x) => x === 'Timeout').length;
    const before = timers();
    c.el.start();
    await sleep(1000);
    const n = r.requests();
    expect(n).toBeGreaterThanOrEqual(4);
    expect(n).toBeLessThanOrEqual(2 * (1000 / RETRY + 1));
    expect(c.el.isLeader).toBe(false);
    expect(c.events).toEqual([]);
    await c.el.stop({ release: true });
    expect(timers()).toBe(before);
    const after = r.requests();
    await sleep(4 * RETRY);
    expect(r.requests()).toBe(after);
  });

  test('a deleted Lease is re-created by its leader, which keeps leading', async () => {
    const a = candidate('a', 'deleted');
    a.el.start();
    await waitFor(() => a.el.isLeader, 'a leads', LEASE);
    const uid = leaseObj('deleted')!.metadata.uid;
    const coord = kubeConfig().makeApiClient(k8s.CoordinationV1Api);
    await coord.deleteNamespacedLease({ name: 'deleted', namespace: 'default' });
    await waitFor(() => leaseObj('deleted') !== undefined && leaseObj('deleted')!.metadata.uid !== uid, 'lease re-created', RENEW);
    expect(spec('deleted')).toMatchObject({ holderIdentity: 'a', leaseTransitions: 0 });
    await sleep(RENEW);
    expect(a.el.isLeader).toBe(true);
    expect(a.events).toEqual(['started']);
  });

  test('callbacks that throw do not break the election', async () => {
    const a = candidate('a', 'throwing', {
      onStartedLeading: () => {
        throw new Error('boom');
      },
      onStoppedLeading: () => Promise.reject(new Error('boom')),
    });
    a.el.start();
    await waitFor(() => a.el.isLeader, 'a leads', LEASE);
    await sleep(3 * RETRY);
    expect(a.el.isLeader).toBe(true);
    await a.el.stop({ release: true });
    expect(spec('throwing').holderIdentity).toBe('');
  });

  test('stop() before start(): nothing is written and start() is refused', async () => {
    const a = candidate('a', 'never');
    await a.el.stop({ release: true });
    expect(() => a.el.start()).toThrow(/create a new LeaderElector/);
    await sleep(2 * RETRY);
    expect(leaseObj('never')).toBeUndefined();
  });
});

describe('LeaderElector options', () => {
  const base = (): LeaderElectorOptions => ({
    kubeConfig: kubeConfig(),
    namespace: 'default',
    name: 'opts',
    identity: 'me',
    onStartedLeading: () => undefined,
    onStoppedLeading: () => undefined,
  });

  test('defaults follow client-go (15 s / 10 s / 2 s)', () => {
    const e = new LeaderElector(base());
    expect([e.leaseDurationMs, e.renewDeadlineMs, e.retryPeriodMs]).toEqual([15000, 10000, 2000]);
    expect(e.isLeader).toBe(false);
  });

  test.each<[string, Partial<LeaderElectorOptions> | Record<string, unknown>, RegExp]>([
    ['zero lease duration', { leaseDurationMs: 0 }, /leaseDurationMs must be a positive number/],
    ['negative lease duration', { leaseDurationMs: -1000 }, /leaseDurationMs must be a positive number.*got -1000/],
    ['NaN renew deadline', { renewDeadlineMs: Number.NaN }, /renewDeadlineMs must be a positive number/],
    ['infinite lease', { leaseDurationMs: Infinity }, /leaseDurationMs must be a positive number/],
    ['lease too long for a timer', { leaseDurationMs: 2 ** 31, renewDeadlineMs: 1000, retryPeriodMs: 100 }, /leaseDurationMs .* up to 2147483647/],
    ['string duration', { retryPeriodMs: '2000' }, /retryPeriodMs must be a positive number/],
    ['zero retry period', { retryPeriodMs: 0 }, /retryPeriodMs must be a positive number/],
    ['negative retry period', { retryPeriodMs: -5 }, /retryPeriodMs must be a positive number/],
    ['renew deadline equal to the lease', { leaseDurationMs: 10000, renewDeadlineMs: 10000 }, /renewDeadlineMs \(10000\) must be less than leaseDurationMs \(10000\)/],
    ['renew deadline above the lease', { leaseDurationMs: 1000, renewDeadlineMs: 5000 }, /renewDeadlineMs \(5000\) must be less than leaseDurationMs/],
    ['retry period at the renew deadline', { renewDeadlineMs: 2000, retryPeriodMs: 2000 }, /retryPeriodMs \(2000\) must be less than renewDeadlineMs \(2000\)/],
    ['empty identity', { identity: '' }, /identity must be a non-empty string/],
    ['blank identity', { identity: '  ' }, /identity must be a non-empty string/],
    ['missing identity', { identity: undefined }, /identity must be a non-empty string/],
    ['empty namespace', { namespace: '' }, /namespace must be a non-empty string/],
    ['empty lease name', { name: '' }, /name must be a non-empty string/],
    ['no kubeconfig', { kubeConfig: {} }, /kubeConfig must be a KubeConfig/],
    ['no callback', { onStartedLeading: undefined }, /onStartedLeading and onStoppedLeading must be functions/],
  ])('%s is refused', (_what, over, message) => {
    expect(() => new LeaderElector({ ...base(), ...over } as LeaderElectorOptions)).toThrow(message);
  });
});

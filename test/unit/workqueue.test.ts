import { afterEach, beforeEach, describe, expect, jest, test } from '@jest/globals';
import fc from 'fast-check';
import { runWorkers, WorkQueue } from '../../operator/workqueue.js';

/** Lets resolved promises and their continuations run. */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

/** get() that must already have a key: fails instead of waiting. */
async function getNow(q: WorkQueue): Promise<string | undefined> {
  let got: string | undefined | null = null;
  void q.get().then((k) => (got = k));
  await Promise.resolve();
  await Promise.resolve();
  if (got === null) throw new Error('get() did not resolve: queue empty');
  return got;
}

describe('WorkQueue basics', () => {
  test('add de-duplicates and hands keys out in order', async () => {
    const q = new WorkQueue();
    q.add('ns/a');
    q.add('ns/b');
    q.add('ns/a');
    q.add('ns/a');
    expect(q.length).toBe(2);
    expect(await getNow(q)).toBe('ns/a');
    expect(await getNow(q)).toBe('ns/b');
    expect(q.length).toBe(0);
  });

  test('a key being processed is not handed out again; an add meanwhile re-queues it on done', async () => {
    const q = new WorkQueue();
    q.add('k');
    expect(await getNow(q)).toBe('k');
    q.add('k');
    q.add('k');
    expect(q.length).toBe(0); // dirty, not ready
    let second: string | undefined | null = null;
    void q.get().then((k) => (second = k));
    await flush();
    expect(second).toBeNull();
    q.done('k');
    await flush();
    expect(second).toBe('k');
    expect(q.length).toBe(0); // the two adds during processing made one re-queue
  });

  test('done without a re-add does not re-queue', async () => {
    const q = new WorkQueue();
    q.add('k');
    await getNow(q);
    q.done('k');
    expect(q.length).toBe(0);
  });

  test('done for a key that was never handed out changes nothing (no duplicate queue entry)', async () => {
    const q = new WorkQueue();
    q.add('k');
    q.done('k');
    q.done('other');
    expect(q.length).toBe(1);
    expect(await getNow(q)).toBe('k');
    q.done('k');
    q.done('k'); // twice: still nothing queued
    expect(q.length).toBe(0);
  });

  test('waiting get()s are served in order, each with a different key', async () => {
    const q = new WorkQueue();
    const got: (string | undefined)[] = [];
    const a = q.get().then((k) => got.push(k));
    const b = q.get().then((k) => got.push(k));
    q.add('x');
    q.add('x'); // already handed to the first waiter: now dirty, not given to the second
    q.add('y');
    await Promise.all([a, b]);
    expect(got).toEqual(['x', 'y']);
  });

  test('rejects bad keys and bad delays with a message naming them', () => {
    const q = new WorkQueue();
    expect(() => q.add('')).toThrow(/non-empty strings/);
    expect(() => q.add(42 as unknown as string)).toThrow(/non-empty strings, got 42/);
    expect(() => q.addRateLimited(undefined as unknown as string)).toThrow(/non-empty strings/);
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) expect(() => q.addAfter('k', bad)).toThrow(/addAfter delay/);
    expect(q.length).toBe(0);
  });

  test('rejects bad options', () => {
    expect(() => new WorkQueue({ baseDelayMs: 0 })).toThrow(/hot loop/);
    expect(() => new WorkQueue({ baseDelayMs: -5 })).toThrow(/baseDelayMs/);
    expect(() => new WorkQueue({ maxDelayMs: Number.NaN })).toThrow(/maxDelayMs/);
    expect(() => new WorkQueue({ baseDelayMs: 1000, maxDelayMs: 10 })).toThrow(/maxDelayMs \(10\) must be >= baseDelayMs \(1000\)/);
  });

  test('a very long key is just a key', async () => {
    const q = new WorkQueue();
    const big = 'n/' + 'x'.repeat(1 << 20);
    q.add(big);
    q.add(big);
    expect(q.length).toBe(1);
    expect(await getNow(q)).toBe(big);
  });
});

describe('WorkQueue timers', () => {
  beforeEach(() => {
    jest.useFakeTimers();
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  test('addRateLimited backs off exponentially per key up to the cap; forget resets', async () => {
    const q = new WorkQueue({ baseDelayMs: 200, maxDelayMs: 1000 });
    const expected = [200, 400, 800, 1000, 1000];
    for (const [i, delay] of expected.entries()) {
      expect(q.numRequeues('k')).toBe(i);
      q.addRateLimited('k');
      await jest.advanceTimersByTimeAsync(delay - 1);
      expect(q.length).toBe(0);
      await jest.advanceTimersByTimeAsync(1);
      expect(q.length).toBe(1);
      expect(await getNow(q)).toBe('k');
      q.done('k');
    }
    expect(q.numRequeues('k')).toBe(5);
    expect(q.numRequeues('other')).toBe(0); // per key
    q.forget('k');
    expect(q.numRequeues('k')).toBe(0);
    q.addRateLimited('k');
    await jest.advanceTimersByTimeAsync(200);
    expect(q.length).toBe(1);
  });

  test('defaults: 200 ms base, 60 s cap; huge failure counts do not overflow the cap', async () => {
    const q = new WorkQueue();
    for (let i = 0; i < 2000; i++) q.addRateLimited('k'); // each call re-arms at most the earliest timer
    expect(q.numRequeues('k')).toBe(2000);
    await jest.advanceTimersByTimeAsync(200);
    expect(q.length).toBe(1); // the first (earliest) deadline won
    await getNow(q);
    q.done('k');
    q.addRateLimited('k');
    await jest.advanceTimersByTimeAsync(59_999);
    expect(q.length).toBe(0);
    await jest.advanceTimersByTimeAsync(1);
    expect(q.length).toBe(1);
  });

  test('addAfter: the earliest deadline wins, later ones are dropped', async () => {
    const q = new WorkQueue();
    q.addAfter('a', 1000);
    q.addAfter('a', 300); // earlier: replaces
    q.addAfter('a', 5000); // later: ignored
    expect(jest.getTimerCount()).toBe(1);
    await jest.advanceTimersByTimeAsync(299);
    expect(q.length).toBe(0);
    await jest.advanceTimersByTimeAsync(1);
    expect(q.length).toBe(1);
    expect(await getNow(q)).toBe('a');
    q.done('a');
    await jest.advanceTimersByTimeAsync(10_000);
    expect(q.length).toBe(0); // the dropped deadlines never fire
    expect(jest.getTimerCount()).toBe(0);
  });

  test('addAfter(0) adds at once; a delayed add of a key already queued stays one entry', async () => {
    const q = new WorkQueue();
    q.addAfter('a', 0);
    expect(q.length).toBe(1);
    q.addAfter('a', 50);
    await jest.advanceTimersByTimeAsync(50);
    expect(q.length).toBe(1);
  });

  test('shutDown resolves waiting get()s with undefined, ignores later adds and clears timers', async () => {
    const q = new WorkQueue();
    const waiting = [q.get(), q.get()];
    q.addAfter('x', 1000);
    q.addRateLimited('y');
    expect(jest.getTimerCount()).toBe(2);
    q.shutDown();
    expect(await Promise.all(waiting)).toEqual([undefined, undefined]);
    expect(jest.getTimerCount()).toBe(0);
    q.add('z');
    q.addAfter('z', 10);
    expect(q.length).toBe(0);
    expect(jest.getTimerCount()).toBe(0);
    expect(await q.get()).toBeUndefined();
    expect(q.shuttingDown).toBe(true);
  });

  test('shutDown drops queued keys and a key being processed is not re-queued by done', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('b');
    expect(await getNow(q)).toBe('a');
    q.add('a'); // dirty
    q.shutDown();
    expect(q.length).toBe(0);
    q.done('a');
    expect(q.length).toBe(0);
    expect(await q.get()).toBeUndefined();
  });
});

describe('runWorkers', () => {
  beforeEach(() => {
    jest.useFakeTimers();
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  test('a failing key retries with growing backoff, never in a hot loop; success resets it', async () => {
    const q = new WorkQueue({ baseDelayMs: 100, maxDelayMs: 1600 });
    const attempts: number[] = [];
    const errors: [string, number][] = [];
    let failUntil = 7;
    const run = runWorkers(
      q,
      async (key) => {
        attempts.push(Date.now());
        if (attempts.length < failUntil) throw new Error(`boom ${key}`);
      },
      { concurrency: 2, onError: (key, _err, retries) => errors.push([key, retries]) },
    );
    const t0 = Date.now();
    q.add('ns/job');
    await jest.advanceTimersByTimeAsync(10_000);
    // 100+200+400+800+1600+1600 ms of backoff before the 7th attempt, which succeeds; nothing after.
    expect(attempts.map((t) => t - t0)).toEqual([0, 100, 300, 700, 1500, 3100, 4700]);
    expect(errors).toEqual([0, 1, 2, 3, 4, 5].map((n) => ['ns/job', n]));
    expect(q.numRequeues('ns/job')).toBe(0);
    // After a success the next failure waits only the base delay again.
    failUntil = Infinity;
    q.add('ns/job');
    await jest.advanceTimersByTimeAsync(0);
    await jest.advanceTimersByTimeAsync(100);
    expect(attempts.length).toBe(9);
    q.shutDown();
    await run;
  });

  test('requeueAfterMs runs the key again after that delay; invalid values count as failures', async () => {
    const q = new WorkQueue({ baseDelayMs: 1000 });
    const seen: [string, number][] = [];
    const run = runWorkers(
      q,
      async (key) => {
        seen.push([key, Date.now()]);
        if (key === 'good') return { requeueAfterMs: 250 };
        if (key === 'bad') return { requeueAfterMs: -1 };
        return undefined;
      },
      { concurrency: 1 },
    );
    const t0 = Date.now();
    q.add('good');
    q.add('bad');
    q.add('plain');
    await jest.advanceTimersByTimeAsync(600);
    const rel = seen.map(([k, t]) => `${k}@${t - t0}`);
    expect(rel).toEqual(['good@0', 'bad@0', 'plain@0', 'good@250', 'good@500']);
    expect(q.numRequeues('bad')).toBe(1);
    await jest.advanceTimersByTimeAsync(400);
    expect(seen.filter(([k]) => k === 'bad')).toHaveLength(2); // retried after the 1000 ms backoff
    expect(seen.filter(([k]) => k === 'plain')).toHaveLength(1);
    q.shutDown();
    await run;
  });

  test('never reconciles one key concurrently, even with many workers and re-adds during processing', async () => {
    jest.useRealTimers();
    const q = new WorkQueue();
    const active = new Set<string>();
    let overlaps = 0;
    let runs = 0;
    const run = runWorkers(
      q,
      async (key) => {
        if (active.has(key)) overlaps++;
        active.add(key);
        runs++;
        q.add(key); // an event for the same object arriving mid-reconcile
        await new Promise((r) => setTimeout(r, 1));
        active.delete(key);
      },
      { concurrency: 8 },
    );
    for (let i = 0; i < 4; i++) q.add(`k${i}`);
    while (runs < 80) await new Promise((r) => setTimeout(r, 2));
    q.shutDown();
    await run;
    expect(overlaps).toBe(0);
    expect(active.size).toBe(0);
  });

  test('an onError hook that throws does not stop the worker or the retry', async () => {
    const q = new WorkQueue({ baseDelayMs: 10 });
    let calls = 0;
    const run = runWorkers(
      q,
      async () => {
        calls++;
        if (calls === 1) throw new Error('first');
      },
      {
        concurrency: 1,
        onError: () => {
          throw new Error('hook broke');
        },
      },
    );
    q.add('k');
    await jest.advanceTimersByTimeAsync(10);
    expect(calls).toBe(2);
    q.shutDown();
    await run;
  });

  test('rejects a bad concurrency', async () => {
    const q = new WorkQueue();
    for (const c of [0, -1, 1.5, Number.NaN]) await expect(runWorkers(q, async () => undefined, { concurrency: c })).rejects.toThrow(/concurrency/);
  });

  test('resolves after shutDown once the in-flight reconcile finishes', async () => {
    jest.useRealTimers();
    const q = new WorkQueue();
    let release!: () => void;
    let finished = false;
    const run = runWorkers(
      q,
      () =>
        new Promise<void>((r) => {
          release = () => {
            finished = true;
            r();
          };
        }),
      { concurrency: 3 },
    );
    q.add('k');
    await flush();
    q.shutDown();
    let resolved = false;
    void run.then(() => (resolved = true));
    await flush();
    expect(resolved).toBe(false);
    release();
    await run;
    expect(finished).toBe(true);
  });
});

describe('WorkQueue properties', () => {
  type Op = { kind: 'add'; key: number } | { kind: 'get' } | { kind: 'done'; pick: number } | { kind: 'doneStray'; key: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant('add' as const), key: fc.nat(4) }),
    fc.record({ kind: fc.constant('get' as const) }),
    fc.record({ kind: fc.constant('done' as const), pick: fc.nat(10) }),
    fc.record({ kind: fc.constant('doneStray' as const), key: fc.nat(4) }),
  );

  test('random add/get/done: never hands a key out twice at once, never loses an add, never invents one', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
        const q = new WorkQueue();
        const held = new Set<string>();
        const addedSinceHandout = new Map<string, boolean>();
        const lastAdd = new Map<string, number>();
        const lastHandout = new Map<string, number>();
        const violations: string[] = [];
        let clock = 0;
        const get = (): void => {
          void q.get().then((k) => {
            if (k === undefined) return;
            if (held.has(k)) violations.push(`${k} handed out while already held`);
            if (!addedSinceHandout.get(k)) violations.push(`${k} handed out without an add since its last handout`);
            addedSinceHandout.set(k, false);
            held.add(k);
            lastHandout.set(k, ++clock);
          });
        };
        for (const o of ops) {
          if (o.kind === 'add') {
            q.add(`ns/k${o.key}`);
            addedSinceHandout.set(`ns/k${o.key}`, true);
            lastAdd.set(`ns/k${o.key}`, ++clock);
          } else if (o.kind === 'get') get();
          else if (o.kind === 'done' && held.size > 0) {
            const k = [...held][o.pick % held.size]!;
            held.delete(k);
            q.done(k);
          } else if (o.kind === 'doneStray' && !held.has(`ns/k${o.key}`)) q.done(`ns/k${o.key}`);
          await flush();
        }
        // Drain: finish everything held and keep a get() outstanding until nothing more comes.
        for (let round = 0; round < 20; round++) {
          for (const k of [...held]) {
            held.delete(k);
            q.done(k);
          }
          for (let i = 0; i < q.length + 1; i++) get();
          await flush();
          if (held.size === 0 && q.length === 0) break;
        }
        q.shutDown();
        await flush();
        expect(violations).toEqual([]);
        for (const [k, t] of lastAdd) expect(lastHandout.get(k) ?? -1).toBeGreaterThan(t);
      }),
      { numRuns: 150 },
    );
  });
});

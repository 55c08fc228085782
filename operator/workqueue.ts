// A rate-limited work queue with client-go's semantics, for level-triggered controllers: a key is queued
// once however often it is added, is never handed to two workers at once (an add during processing marks
// it dirty and re-queues it on done), and failures retry after a per-key exponential backoff instead of a
// hot loop. Keys are strings (`namespace/name`).

export interface WorkQueueOptions {
  /** Delay of the first rate-limited retry; each further failure doubles it (default 200 ms). */
  baseDelayMs?: number;
  /** Ceiling of the retry delay (default 60 s). */
  maxDelayMs?: number;
}

function checkDelay(name: string, v: number): number {
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be a finite number of milliseconds >= 0, got ${v}`);
  return v;
}

function checkKey(key: unknown): string {
  if (typeof key !== 'string' || key === '') throw new TypeError(`work queue keys must be non-empty strings, got ${JSON.stringify(key)}`);
  return key;
}

export class WorkQueue {
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  /** Keys ready to hand out, in order; each also in `dirty` and never in `processing`. */
  private readonly ready: string[] = [];
  /** Keys that need processing (ready, or added again while being processed). */
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  private readonly failures = new Map<string, number>();
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private stopped = false;

  constructor(opts: WorkQueueOptions = {}) {
    this.baseDelayMs = checkDelay('baseDelayMs', opts.baseDelayMs ?? 200);
    this.maxDelayMs = checkDelay('maxDelayMs', opts.maxDelayMs ?? 60_000);
    if (this.baseDelayMs === 0) throw new RangeError('baseDelayMs must be > 0: a zero backoff retries a failing key in a hot loop');
    if (this.maxDelayMs < this.baseDelayMs)
      throw new RangeError(`maxDelayMs (${this.maxDelayMs}) must be >= baseDelayMs (${this.baseDelayMs})`);
  }

  /** Keys waiting to be handed out (not counting those being processed). */
  get length(): number {
    return this.ready.length;
  }

  get shuttingDown(): boolean {
    return this.stopped;
  }

  add(key: string): void {
    checkKey(key);
    if (this.stopped || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return; // done() re-queues it
    this.enqueue(key);
  }

  /** The next key; waits while the queue is empty; undefined once the queue is shut down. */
  get(): Promise<string | undefined> {
    if (this.stopped) return Promise.resolve(undefined);
    const key = this.ready.shift();
    if (key !== undefined) return Promise.resolve(this.take(key));
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Marks the end of processing a key from get(); a key added meanwhile is queued again. */
  done(key: string): void {
    if (!this.processing.delete(key)) return; // not handed out: nothing to release, and no duplicate to queue
    if (this.dirty.has(key) && !this.stopped) this.enqueue(key);
  }

  /** Adds the key after its backoff: baseDelayMs × 2^(failures so far), at most maxDelayMs. */
  addRateLimited(key: string): void {
    checkKey(key);
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    this.addAfter(key, Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(n, 64)));
  }

  /** Resets the key's failure count (after a success). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Adds the key after `ms`; of repeated calls for one key the earliest deadline wins. */
  addAfter(key: string, ms: number): void {
    checkKey(key);
    checkDelay('addAfter delay', ms);
    if (this.stopped) return;
    if (ms === 0) return this.add(key);
    const at = Date.now() + ms;
    const pending = this.delayed.get(key);
    if (pending) {
      if (pending.at <= at) return;
      clearTimeout(pending.timer);
    }
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    this.delayed.set(key, { at, timer });
  }

  /** Stops handing out keys: pending and later get() resolve undefined; delayed adds are cancelled. */
  shutDown(): void {
    this.stopped = true;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    this.ready.length = 0;
    this.dirty.clear();
    for (const w of this.waiters.splice(0)) w(undefined);
  }

  private enqueue(key: string): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(this.take(key));
    else this.ready.push(key);
  }

  private take(key: string): string {
    this.dirty.delete(key);
    this.processing.add(key);
    return key;
  }
}

export type Reconciler = (key: string) => Promise<{ requeueAfterMs?: number } | void>;

export interface RunWorkersOptions {
  /** Workers processing keys concurrently (never the same key twice at once). */
  concurrency: number;
  /** Told of each failed reconcile before it is retried; `retries` counts earlier failures of the key. */
  onError?: (key: string, err: unknown, retries: number) => void;
}

/**
 * Runs `concurrency` workers over the queue until it shuts down: a reconcile that throws is retried with
 * the key's backoff; one that succeeds resets the backoff and, if it asks, runs again after requeueAfterMs.
 * Resolves when every worker has finished its last key after shutDown().
 */
export async function runWorkers(queue: WorkQueue, reconcile: Reconciler, opts: RunWorkersOptions): Promise<void> {
  if (!Number.isSafeInteger(opts.concurrency) || opts.concurrency < 1)
    throw new RangeError(`concurrency must be a positive integer, got ${opts.concurrency}`);
  const worker = async (): Promise<void> => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      try {
        const result = await reconcile(key);
        queue.forget(key);
        if (result?.requeueAfterMs !== undefined) queue.addAfter(key, result.requeueAfterMs);
      } catch (err) {
        try {
          opts.onError?.(key, err, queue.numRequeues(key));
        } catch {
          // A failing error hook must not kill the worker; the retry below still happens.
        }
        queue.addRateLimited(key);
      } finally {
        queue.done(key);
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
}

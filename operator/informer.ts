// A resilient informer on @kubernetes/client-node 1.x. Its ListWatch runs the list → watch → re-watch loop
// (and relists on 410 Gone), but alone it is not safe for a long-running controller:
//  - on any error other than 410 it reports 'error' and stops for good;
//  - a watch that ends without an error is re-opened at once, so a server or proxy that keeps ending
//    watches immediately gets a tight reconnect loop (same for a 410 answered again after every relist);
//  - it asks for no BOOKMARKs, and its watch has no timeout once the response headers are in (node-fetch's
//    30 s covers only the wait for them), so a stalled connection goes unnoticed;
//  - an exception thrown by a callback, or an event without metadata, becomes an unhandled rejection.
// This wrapper restarts it with exponential backoff, paces short-lived empty watches, requests bookmarks
// and a server-side timeout, keeps a watchdog (no event or bookmark for watchdogMs → relist), keeps its own
// cache so every relist is diffed against what handlers were told (objects gone meanwhile become
// deletes), and periodically re-delivers every cached object (controllers are level-triggered).
// resourceVersions are opaque: only compared for equality, never parsed.

import { randomInt } from 'node:crypto';
import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { apiStatus } from './apierror.js';

export type InformerEventType = 'add' | 'update' | 'delete' | 'resync';

/** The subset of a pino logger the informer uses. */
export interface InformerLogger {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface InformerOptions<T extends KubernetesObject> {
  kubeConfig: KubeConfig;
  /** Collection path to watch, e.g. `/api/v1/namespaces/default/configmaps`. */
  path: string;
  /** Lists the same collection (with the same selector) as `path` watches. */
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  /**
   * Called for every change of the cache and, every resyncMs, with 'resync' for every cached object. A
   * 'delete' carries the last state seen. Exceptions and rejections are logged, never fatal.
   */
  onEvent: (type: InformerEventType, obj: T) => void | Promise<void>;
  /** Re-delivery period of the whole cache; 0 turns it off (default 5 min). */
  resyncMs?: number;
  /**
   * Without any watch event or bookmark for this long the informer relists and re-watches (default 150 s).
   * Keep it above the server's bookmark interval (about a minute on Kubernetes); on a server that sends no
   * bookmarks a quiet watch looks stalled, and this becomes its relist period.
   */
  watchdogMs?: number;
  /** Retry delays after failures: baseMs doubled per consecutive failure, at most maxMs (default 500 ms / 30 s). */
  backoff?: { baseMs: number; maxMs: number };
  logger?: InformerLogger;
}

export interface InformerCounters {
  /** List requests made (the initial one, relists, retries). */
  lists: number;
  /** Lists that completed after the initial sync. */
  relists: number;
  /** Watch requests made. */
  watches: number;
  /** Failed list or watch requests. */
  errors: number;
  /** Recoveries after an error or a watchdog timeout. */
  restarts: number;
  watchdogRestarts: number;
  resyncs: number;
}

export interface Informer<T extends KubernetesObject> {
  /** Starts listing and watching; resolves once the first list is in the cache (retrying until it is). */
  start(): Promise<void>;
  /** Stops for good: closes the watch, clears every timer; a pending start() rejects. */
  stop(): void;
  /** The cached objects. */
  list(): T[];
  /** A cached object; `namespace` undefined or '' for cluster-scoped objects. */
  get(namespace: string | undefined, name: string): T | undefined;
  readonly hasSynced: boolean;
  readonly counters: Readonly<InformerCounters>;
}

/** The cache and work-queue key of an object: `namespace/name`, or `name` for cluster-scoped objects. */
export function objectKey(obj: KubernetesObject): string {
  const { namespace, name } = obj.metadata ?? {};
  return namespace ? `${namespace}/${name ?? ''}` : (name ?? '');
}

// A watch that ends cleanly after this long, or that delivered something, is healthy: re-open it at once.
const HEALTHY_WATCH_MS = 1000;
// Server-side watch timeout, randomised per watch like client-go's, so watches rotate and do not all expire together.
const WATCH_TIMEOUT_S: [number, number] = [300, 600];

type WatchCallback = Parameters<Watch['watch']>[2];
type WatchDone = Parameters<Watch['watch']>[3];
type Connect = (path: string, params: Record<string, string | number | boolean | undefined>, cb: WatchCallback, done: WatchDone) => Promise<AbortController>;

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const hasName = (obj: unknown): obj is KubernetesObject =>
  isObj(obj) && isObj(obj.metadata) && typeof obj.metadata.name === 'string' && obj.metadata.name !== '';

function checkMs(name: string, v: number, min: number): number {
  if (!Number.isFinite(v) || v < min) throw new RangeError(`${name} must be a finite number of milliseconds >= ${min}, got ${v}`);
  return v;
}

/** Client-node's Watch, with bookmarks and a server-side timeout requested, and every call routed through the informer. */
class InformerWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly open: (connect: Connect, path: string, params: Record<string, string | number | boolean | undefined>, cb: WatchCallback, done: WatchDone) => Promise<AbortController>,
  ) {
    super(kc);
  }

  override watch(path: string, params: Record<string, string | number | boolean | undefined>, cb: WatchCallback, done: WatchDone): Promise<AbortController> {
    return this.open((p, q, c, d) => super.watch(p, q, c, d), path, params, cb, done);
  }
}

class ResilientInformer<T extends KubernetesObject> implements Informer<T> {
  readonly counters: InformerCounters = { lists: 0, relists: 0, watches: 0, errors: 0, restarts: 0, watchdogRestarts: 0, resyncs: 0 };
  private readonly cache = new Map<string, T>();
  private readonly resyncMs: number;
  private readonly watchdogMs: number;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private state: 'new' | 'running' | 'stopped' = 'new';
  private synced = false;
  private syncWaiter?: { resolve(): void; reject(e: Error): void };
  /** Each ListWatch gets a generation; callbacks of a retired one are ignored. */
  private gen = 0;
  private lw?: ListWatch<T>;
  private controller?: AbortController;
  /** Consecutive failures (errors and short empty watches); reset by any watch event or bookmark. */
  private failures = 0;
  private retryTimer?: NodeJS.Timeout;
  private watchdogTimer?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;
  private lastProgress = 0;

  constructor(private readonly opts: InformerOptions<T>) {
    this.resyncMs = checkMs('resyncMs', opts.resyncMs ?? 300_000, 0);
    this.watchdogMs = checkMs('watchdogMs', opts.watchdogMs ?? 150_000, 1);
    this.baseMs = checkMs('backoff.baseMs', opts.backoff?.baseMs ?? 500, 1);
    this.maxMs = checkMs('backoff.maxMs', opts.backoff?.maxMs ?? 30_000, this.baseMs);
    if (!opts.path.startsWith('/')) throw new Error(`informer path must be an API path starting with '/', got ${JSON.stringify(opts.path)}`);
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.cache.get(namespace ? `${namespace}/${name}` : name);
  }

  start(): Promise<void> {
    if (this.state !== 'new') return Promise.reject(new Error(`informer for ${this.opts.path} was already started; create a new one`));
    this.state = 'running';
    const synced = new Promise<void>((resolve, reject) => (this.syncWaiter = { resolve, reject }));
    this.armWatchdog();
    if (this.resyncMs > 0) this.armResync();
    this.newGeneration();
    return synced;
  }

  stop(): void {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    this.gen++;
    this.retire();
    clearTimeout(this.watchdogTimer);
    clearTimeout(this.resyncTimer);
    this.syncWaiter?.reject(new Error(`informer for ${this.opts.path} was stopped before its first list`));
    this.syncWaiter = undefined;
  }

  // ----- generations -----

  private isCurrent(gen: number): boolean {
    return this.state === 'running' && gen === this.gen;
  }

  /**
   * A fresh ListWatch: starts with a list, which is diffed against the cache. Built as makeInformer() builds
   * it (`new ListWatch(path, new Watch(kc), list, false, labelSelector)`), with our Watch in its place.
   */
  private newGeneration(): void {
    const gen = ++this.gen;
    this.retire();
    const watch = new InformerWatch(this.opts.kubeConfig, (connect, path, params, cb, done) => this.openWatch(gen, connect, path, params, cb, done));
    const lw = new ListWatch<T>(this.opts.path, watch, () => this.listFor(gen), false, this.opts.labelSelector);
    lw.on('error', (err?: unknown) => this.onFailure(gen, err));
    this.lw = lw;
    this.touch();
    this.launch(gen, lw);
  }

  /** Starts (or, after an error, resumes from its last resourceVersion) a ListWatch. */
  private launch(gen: number, lw: ListWatch<T>): void {
    lw.start().catch((err: unknown) => this.onFailure(gen, err));
  }

  private retire(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    void this.lw?.stop();
    this.lw = undefined;
    // ListWatch.stop() cannot abort a watch whose response has not arrived yet; openWatch aborts those.
    this.controller?.abort();
    this.controller = undefined;
  }

  private delay(failures: number): number {
    return failures <= 0 ? 0 : Math.min(this.maxMs, this.baseMs * 2 ** Math.min(failures - 1, 64));
  }

  private retryLater(gen: number, delayMs: number, fn: () => void): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.isCurrent(gen)) return;
      this.touch();
      fn();
    }, delayMs);
  }

  /** A failed list or watch: ListWatch has stopped; resume it after the backoff. */
  private onFailure(gen: number, err: unknown): void {
    if (!this.isCurrent(gen)) return; // includes the AbortError of a watch we closed ourselves
    this.counters.errors++;
    const delayMs = this.delay(++this.failures);
    this.opts.logger?.warn({ path: this.opts.path, err: message(err), failures: this.failures, delayMs }, 'informer list/watch failed; retrying');
    const lw = this.lw!;
    this.retryLater(gen, delayMs, () => {
      this.counters.restarts++;
      this.launch(gen, lw);
    });
  }

  // ----- list -----

  private async listFor(gen: number): Promise<KubernetesListObject<T>> {
    this.counters.lists++;
    const list = await this.opts.list();
    if (!isObj(list) || !Array.isArray(list.items))
      throw new Error(`informer list() for ${this.opts.path} must resolve to a list object with an items array`);
    if (this.isCurrent(gen)) this.applyList(list.items);
    return list;
  }

  private applyList(items: T[]): void {
    const seen = new Set<string>();
    for (const obj of items) {
      if (!hasName(obj)) continue;
      const key = objectKey(obj);
      seen.add(key);
      this.upsert(key, obj);
    }
    // Objects the new list lacks were deleted while we were not watching (or their delete was compacted away).
    for (const [key, old] of this.cache) {
      if (seen.has(key)) continue;
      this.cache.delete(key);
      this.emit('delete', old);
    }
    this.touch();
    if (this.synced) this.counters.relists++;
    else {
      this.synced = true;
      this.syncWaiter?.resolve();
      this.syncWaiter = undefined;
    }
  }

  private upsert(key: string, obj: T): void {
    const old = this.cache.get(key);
    this.cache.set(key, obj);
    if (!old) this.emit('add', obj);
    else if (old.metadata?.resourceVersion === undefined || old.metadata.resourceVersion !== obj.metadata?.resourceVersion) this.emit('update', obj);
  }

  // ----- watch -----

  private async openWatch(
    gen: number,
    connect: Connect,
    path: string,
    params: Record<string, string | number | boolean | undefined>,
    cb: WatchCallback,
    done: WatchDone,
  ): Promise<AbortController> {
    // A retired ListWatch (its list finished after a restart) must not open another watch.
    if (!this.isCurrent(gen)) return new AbortController();
    this.counters.watches++;
    const started = Date.now();
    let productive = false;
    const query = { ...params, allowWatchBookmarks: true, timeoutSeconds: randomInt(WATCH_TIMEOUT_S[0], WATCH_TIMEOUT_S[1]) };
    const onEvent: WatchCallback = (type, obj, raw) => {
      if (!this.isCurrent(gen) || !this.onWatchEvent(type, obj)) return;
      if (type !== 'ERROR') productive = true;
      cb(type, obj, raw); // ListWatch tracks the resourceVersion and notices 410
    };
    const onDone: WatchDone = (err) => this.onWatchDone(gen, err, productive, Date.now() - started, () => done(err));
    let controller: AbortController;
    try {
      controller = await connect(path, query, onEvent, onDone);
    } catch (err) {
      // Watch.watch throws, instead of calling done, when the kubeconfig has no cluster or its auth fails.
      onDone(err);
      return new AbortController();
    }
    if (this.isCurrent(gen)) this.controller = controller;
    else controller.abort();
    return controller;
  }

  /** Applies one watch event to the cache; false for events ListWatch must not see (it would throw on them). */
  private onWatchEvent(type: string, obj: unknown): boolean {
    if (!isObj(obj)) return false;
    this.touch();
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        if (!hasName(obj)) {
          this.opts.logger?.warn({ path: this.opts.path, type }, 'watch event without metadata.name ignored');
          return false;
        }
        this.failures = 0;
        const key = objectKey(obj);
        if (type !== 'DELETED') this.upsert(key, obj as T);
        else if (this.cache.delete(key)) this.emit('delete', obj as T);
        return true;
      }
      case 'BOOKMARK':
        this.failures = 0;
        return true;
      case 'ERROR':
        this.opts.logger?.debug({ path: this.opts.path, status: obj }, 'watch ERROR event');
        return true;
      default:
        return false;
    }
  }

  private onWatchDone(gen: number, err: unknown, productive: boolean, lastedMs: number, passOn: () => void): void {
    if (!this.isCurrent(gen)) return; // a retired watch: its ListWatch stays stopped
    // Errors other than 410 stop ListWatch, which then reports them to onFailure.
    if (err && apiStatus(err) !== 410) return passOn();
    // A clean end or a 410: ListWatch would re-watch (or relist) at once. That is right after a healthy
    // watch; after a short empty one it is how a tight loop starts, so from the second in a row, back off.
    if (productive || lastedMs >= HEALTHY_WATCH_MS) return passOn();
    const delayMs = this.delay(this.failures++);
    if (delayMs === 0) return passOn();
    this.opts.logger?.warn({ path: this.opts.path, lastedMs, failures: this.failures, delayMs }, 'watch ended at once without events; backing off');
    this.retryLater(gen, delayMs, passOn);
  }

  // ----- watchdog, resync -----

  private touch(): void {
    this.lastProgress = Date.now();
  }

  private armWatchdog(): void {
    this.watchdogTimer = setTimeout(() => {
      if (this.state !== 'running') return;
      // While a retry waits, silence is expected; the retry itself counts as progress.
      if (this.retryTimer === undefined && Date.now() - this.lastProgress > this.watchdogMs) {
        this.counters.watchdogRestarts++;
        this.counters.restarts++;
        this.opts.logger?.warn({ path: this.opts.path, silentMs: Date.now() - this.lastProgress }, 'watch silent past the watchdog; relisting');
        this.newGeneration();
      }
      this.armWatchdog();
    }, Math.max(5, this.watchdogMs / 4));
  }

  private armResync(): void {
    this.resyncTimer = setTimeout(() => {
      if (this.state !== 'running') return;
      if (this.synced) {
        this.counters.resyncs++;
        for (const obj of [...this.cache.values()]) this.emit('resync', obj);
      }
      this.armResync();
    }, this.resyncMs);
  }

  private emit(type: InformerEventType, obj: T): void {
    const report = (err: unknown): void =>
      this.opts.logger?.warn({ path: this.opts.path, type, key: objectKey(obj), err: message(err) }, 'informer event handler failed');
    try {
      const r = this.opts.onEvent(type, obj);
      if (r instanceof Promise) r.catch(report);
    } catch (err) {
      report(err);
    }
  }
}

/** An informer over client-node's ListWatch that survives errors, stalls and compaction; see the file comment. */
export function createInformer<T extends KubernetesObject>(opts: InformerOptions<T>): Informer<T> {
  return new ResilientInformer(opts);
}

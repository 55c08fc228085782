// Leader election on a coordination.k8s.io/v1 Lease, with client-go's leaderelection semantics:
// candidates take an expired or free Lease, the leader renews it every retry period, and a leader that
// cannot renew within the renew deadline stops leading. Every write is a replace carrying the
// resourceVersion that was read, so a 409 means another process won and no write is ever blind.
// @kubernetes/client-node 1.x has no election helper; this is one.

import { performance } from 'node:perf_hooks';
import * as k8s from '@kubernetes/client-node';
import { pino, type Logger } from 'pino';
import { apiStatus } from './apierror.js';

/** The election fields of a Lease spec as read: anything may be missing or malformed. */
export interface ObservedLease {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

/** The election fields this elector writes. */
export interface LeaseRecord {
  holderIdentity: string;
  leaseDurationSeconds: number;
  acquireTime: string;
  renewTime: string;
  leaseTransitions: number;
}

export type ElectionDecision =
  /** No Lease exists: create it as its holder. */
  | { action: 'create'; spec: LeaseRecord }
  /** The Lease is free or expired: take it over (leaseTransitions + 1). */
  | { action: 'acquire'; spec: LeaseRecord }
  /** The Lease is ours: extend it, keeping acquireTime and leaseTransitions. */
  | { action: 'renew'; spec: LeaseRecord }
  /** Another holder's Lease is still valid for `expiresInMs` as this process sees it. */
  | { action: 'wait'; holder: string; expiresInMs: number };

export interface ElectionInput {
  /** The Lease's spec as read, or undefined when there is no Lease. */
  record: ObservedLease | undefined;
  identity: string;
  /** Monotonic time now, and when this process last saw `record` change (same clock, ms). */
  nowMs: number;
  observedAtMs: number;
  /** Wall-clock time written as renewTime (and acquireTime when taking the Lease). */
  now: Date;
  /** This elector's lease duration: written into the Lease, and assumed for a read one without a valid duration. */
  leaseDurationMs: number;
}

const INT32_MAX = 2 ** 31 - 1;
/** setTimeout fires at once for longer delays, which would turn every wait into a hot loop. */
const MAX_TIMER_MS = INT32_MAX;

/** Kubernetes MicroTime: RFC 3339 with six fractional digits (JavaScript clocks stop at milliseconds). */
export function microTime(d: Date): string {
  return d.toISOString().replace(/Z$/, '000Z');
}

/** The Lease duration field is whole seconds; rounding up keeps candidates waiting at least as long as asked. */
export function leaseDurationSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

const validTransitions = (t: unknown): number => (Number.isSafeInteger(t) && (t as number) >= 0 ? Math.min(t as number, INT32_MAX) : 0);

/**
 * One step of the election, as client-go's tryAcquireOrRenew decides it. Expiry is judged by this
 * process's own clock from when it last saw the record change (`observedAtMs`), never by the renewTime
 * another node wrote, so clock skew between nodes cannot hand out a Lease early.
 */
export function decideElection(input: ElectionInput): ElectionDecision {
  const { record, identity, nowMs, observedAtMs, now, leaseDurationMs } = input;
  const stamp = microTime(now);
  const fresh = (leaseTransitions: number): LeaseRecord => ({
    holderIdentity: identity,
    leaseDurationSeconds: leaseDurationSeconds(leaseDurationMs),
    acquireTime: stamp,
    renewTime: stamp,
    leaseTransitions,
  });
  if (record === undefined) return { action: 'create', spec: fresh(0) };
  const transitions = validTransitions(record.leaseTransitions);
  const holder = typeof record.holderIdentity === 'string' ? record.holderIdentity : '';
  if (holder === identity)
    return { action: 'renew', spec: { ...fresh(transitions), acquireTime: typeof record.acquireTime === 'string' ? record.acquireTime : stamp } };
  if (holder !== '') {
    // A missing or nonsensical duration must not make someone else's Lease look expired at once.
    const d = record.leaseDurationSeconds;
    const durationMs = Number.isSafeInteger(d) && (d as number) > 0 ? (d as number) * 1000 : leaseDurationMs;
    const expiresInMs = observedAtMs + durationMs - nowMs;
    if (expiresInMs > 0) return { action: 'wait', holder, expiresInMs };
  }
  return { action: 'acquire', spec: fresh(Math.min(transitions + 1, INT32_MAX)) };
}

/** What a graceful leader writes on stop, like client-go's ReleaseOnCancel: no holder, so a candidate takes it at once. */
export function releaseRecord(record: ObservedLease, now: Date): LeaseRecord {
  const stamp = microTime(now);
  return { holderIdentity: '', leaseDurationSeconds: 1, acquireTime: stamp, renewTime: stamp, leaseTransitions: validTransitions(record.leaseTransitions) };
}

export type StoppedReason =
  /** The Lease was lost (renew deadline passed, or another holder took it): stop work at once. */
  | 'lost'
  /** stop() was called. */
  | 'stopped';

export interface LeaderElectorOptions {
  kubeConfig: k8s.KubeConfig;
  namespace: string;
  /** Name of the Lease. */
  name: string;
  /** Unique per process (e.g. pod name plus a random suffix). */
  identity: string;
  /** How long candidates wait before taking a Lease that is not renewed; written in whole seconds, rounded up (default 15000). */
  leaseDurationMs?: number;
  /** A leader that has not renewed for this long stops leading; must be below leaseDurationMs (default 10000). */
  renewDeadlineMs?: number;
  /** Interval between attempts to acquire or renew, and the wait after any error (default 2000). */
  retryPeriodMs?: number;
  logger?: Logger;
  /** Called on becoming leader; `signal` aborts when leadership ends. */
  onStartedLeading(signal: AbortSignal): void | Promise<void>;
  /** Called once after onStartedLeading when leadership ends; stop() awaits it before releasing the Lease. */
  onStoppedLeading(reason: StoppedReason): void | Promise<void>;
}

function checkDuration(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > MAX_TIMER_MS)
    throw new RangeError(`LeaderElector: ${name} must be a positive number of milliseconds up to ${MAX_TIMER_MS}, got ${String(v)}`);
  return v;
}

function checkName(name: string, v: unknown): string {
  if (typeof v !== 'string' || v.trim() === '') throw new TypeError(`LeaderElector: ${name} must be a non-empty string, got ${JSON.stringify(v)}`);
  return v;
}

/** client-node 1.3 hands MicroTime fields back as the raw strings (it has no deserializer for them). */
function timeField(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v instanceof Date && !Number.isNaN(v.getTime())) return microTime(v);
  return undefined;
}

function observedOf(lease: k8s.V1Lease): ObservedLease {
  const s = lease.spec ?? {};
  return {
    holderIdentity: s.holderIdentity,
    leaseDurationSeconds: s.leaseDurationSeconds,
    acquireTime: timeField(s.acquireTime),
    renewTime: timeField(s.renewTime),
    leaseTransitions: s.leaseTransitions,
  };
}

const recordKey = (r: ObservedLease | undefined): string =>
  r === undefined ? 'absent' : JSON.stringify([r.holderIdentity, r.leaseDurationSeconds, r.acquireTime, r.renewTime, r.leaseTransitions]);

export class LeaderElector {
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  private readonly api: k8s.CoordinationV1Api;
  private readonly log: Logger;
  private state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';
  private leading = false;
  /** Set once the Lease was lost: the elector is finished. */
  private lost = false;
  /** The last Lease read or written: its resourceVersion guards the next write. */
  private lease: k8s.V1Lease | undefined;
  private observed: { key: string; atMs: number } | undefined;
  private loopTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private leadership: AbortController | undefined;
  private stopping: Promise<void> | undefined;

  constructor(private readonly opts: LeaderElectorOptions) {
    if (typeof opts.kubeConfig?.makeApiClient !== 'function') throw new TypeError('LeaderElector: kubeConfig must be a KubeConfig (load it with loadFromDefault or loadFromFile)');
    checkName('namespace', opts.namespace);
    checkName('name', opts.name);
    checkName('identity', opts.identity);
    this.leaseDurationMs = checkDuration('leaseDurationMs', opts.leaseDurationMs ?? 15000);
    this.renewDeadlineMs = checkDuration('renewDeadlineMs', opts.renewDeadlineMs ?? 10000);
    this.retryPeriodMs = checkDuration('retryPeriodMs', opts.retryPeriodMs ?? 2000);
    // The gap between the two is what keeps an old leader from overlapping a new one.
    if (this.renewDeadlineMs >= this.leaseDurationMs)
      throw new RangeError(`LeaderElector: renewDeadlineMs (${this.renewDeadlineMs}) must be less than leaseDurationMs (${this.leaseDurationMs})`);
    if (this.retryPeriodMs >= this.renewDeadlineMs)
      throw new RangeError(`LeaderElector: retryPeriodMs (${this.retryPeriodMs}) must be less than renewDeadlineMs (${this.renewDeadlineMs}), or a single failed renewal loses the lease`);
    if (typeof opts.onStartedLeading !== 'function' || typeof opts.onStoppedLeading !== 'function')
      throw new TypeError('LeaderElector: onStartedLeading and onStoppedLeading must be functions');
    this.api = opts.kubeConfig.makeApiClient(k8s.CoordinationV1Api);
    this.log = (opts.logger ?? pino({ enabled: false })).child({ lease: `${opts.namespace}/${opts.name}`, identity: opts.identity });
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Starts campaigning; one elector runs once (after stop(), make a new one). */
  start(): void {
    if (this.state !== 'new') throw new Error(`LeaderElector: start() called on an elector that is ${this.state}; create a new LeaderElector`);
    this.state = 'running';
    this.tick();
  }

  /**
   * Stops campaigning and renewing, clearing every timer. A leader calls onStoppedLeading('stopped') first
   * and then, with `release`, gives the Lease up so a standby takes it at once. Waits at most about two
   * renew deadlines on an unresponsive API server (none without `release`).
   */
  stop(opts: { release: boolean }): Promise<void> {
    this.stopping ??= this.shutdown(opts.release);
    return this.stopping;
  }

  private async shutdown(release: boolean): Promise<void> {
    const wasStarted = this.state !== 'new';
    if (this.state === 'new' || this.state === 'running') this.state = 'stopping';
    clearTimeout(this.loopTimer);
    // Let the attempt under way land, so the release below carries the newest resourceVersion.
    if (release && !this.lost && this.inFlight) await this.bounded(this.inFlight);
    if (this.leading) await this.endLeadership('stopped');
    this.state = 'stopped';
    clearTimeout(this.deadlineTimer);
    // After a loss nothing is ours to release; otherwise the Lease is ours if our last write says so
    // (an acquisition can land while stopping).
    if (!wasStarted || !release || this.lost || this.lease?.spec?.holderIdentity !== this.opts.identity) return;
    try {
      const spec = releaseRecord(observedOf(this.lease), new Date());
      await this.bounded(this.write(spec, this.lease));
      this.log.info('released the lease');
    } catch (e) {
      // A conflict means someone wrote after our last renewal: the Lease is no longer ours to release.
      this.log.warn({ err: e }, 'could not release the lease');
    }
  }

  private async bounded(p: Promise<unknown>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.renewDeadlineMs)));
    try {
      await Promise.race([p.then(() => undefined), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private tick(): void {
    this.loopTimer = undefined;
    const attempt = this.attempt()
      .catch((e: unknown) => this.log.warn({ err: e }, 'leader election attempt failed'))
      .finally(() => {
        if (this.inFlight === attempt) this.inFlight = undefined;
        // Success and failure alike wait a retry period: no hot loop on a failing API server.
        if (this.state === 'running') this.loopTimer = setTimeout(() => this.tick(), this.retryPeriodMs);
      });
    this.inFlight = attempt;
  }

  private observe(record: ObservedLease | undefined, nowMs: number): void {
    const key = recordKey(record);
    if (this.observed?.key !== key) this.observed = { key, atMs: nowMs };
  }

  private async attempt(): Promise<void> {
    // Fast path, as in client-go: the leader writes over the version it last saw without reading first.
    if (this.leading && this.lease) {
      const sentAt = performance.now();
      try {
        const d = decideElection(this.input(observedOf(this.lease), sentAt));
        if (d.action === 'renew') {
          await this.write(d.spec, this.lease);
          // The deadline may have fired while the request was out: a lost leader stays lost.
          if (this.leading) this.renewed(sentAt);
          return;
        }
      } catch (e) {
        this.log.debug({ err: e }, 'optimistic renewal failed; reading the lease');
      }
    }
    let current: k8s.V1Lease | undefined;
    try {
      current = await this.api.readNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace });
    } catch (e) {
      if (apiStatus(e) !== 404) throw e;
    }
    if (this.state !== 'running') return;
    const nowMs = performance.now();
    const record = current && observedOf(current);
    this.observe(record, nowMs);
    if (current) this.lease = current;
    const d = decideElection(this.input(record, nowMs));
    if (d.action === 'wait') {
      if (this.leading) this.lose(`lease is now held by ${JSON.stringify(d.holder)}`);
      else this.log.debug({ holder: d.holder, expiresInMs: Math.round(d.expiresInMs) }, 'lease held by another candidate');
      return;
    }
    try {
      if (d.action === 'create') await this.create(d.spec);
      else await this.write(d.spec, current!);
    } catch (e) {
      // 409 (AlreadyExists on create, Conflict on replace): another candidate wrote first; read again next period.
      if (apiStatus(e) === 409) return void this.log.debug({ action: d.action }, 'lost the race for the lease');
      throw e;
    }
    if (this.leading) this.renewed(nowMs);
    else if (this.state === 'running') this.begin(nowMs, d.spec.leaseTransitions);
  }

  private input(record: ObservedLease | undefined, nowMs: number): ElectionInput {
    return {
      record,
      identity: this.opts.identity,
      nowMs,
      observedAtMs: this.observed?.atMs ?? nowMs,
      now: new Date(),
      leaseDurationMs: this.leaseDurationMs,
    };
  }

  private async create(spec: LeaseRecord): Promise<void> {
    const body: k8s.V1Lease = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.opts.name, namespace: this.opts.namespace }, spec: toApiSpec(spec) };
    this.recordWrite(await this.api.createNamespacedLease({ namespace: this.opts.namespace, body }));
  }

  /** Replaces the Lease as last read: the carried resourceVersion makes a concurrent writer's change a 409. */
  private async write(spec: LeaseRecord, base: k8s.V1Lease): Promise<void> {
    const body: k8s.V1Lease = { ...base, metadata: { ...base.metadata }, spec: { ...base.spec, ...toApiSpec(spec) } };
    this.recordWrite(await this.api.replaceNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace, body }));
  }

  private recordWrite(lease: k8s.V1Lease): void {
    this.lease = lease;
    this.observe(observedOf(lease), performance.now());
  }

  private begin(sentAtMs: number, transitions: number): void {
    this.leading = true;
    this.leadership = new AbortController();
    this.renewed(sentAtMs);
    this.log.info({ leaseTransitions: transitions }, 'became leader');
    // Not awaited: the callback may run the leader's work for as long as it leads.
    void this.callback(() => this.opts.onStartedLeading(this.leadership!.signal), 'onStartedLeading');
  }

  /** Arms the deadline from when the successful request was sent, so it also fires while a renewal hangs. */
  private renewed(sentAtMs: number): void {
    clearTimeout(this.deadlineTimer);
    const left = Math.max(0, sentAtMs + this.renewDeadlineMs - performance.now());
    this.deadlineTimer = setTimeout(() => this.lose(`no successful renewal for ${this.renewDeadlineMs} ms`), left);
  }

  /** Losing the Lease ends this elector (as client-go's Run returns): the process must not reconcile on. */
  private lose(why: string): void {
    if (!this.leading) return;
    this.log.warn({ reason: why }, 'stopped leading: lease lost');
    this.lost = true;
    this.state = 'stopped';
    clearTimeout(this.loopTimer);
    void this.endLeadership('lost');
  }

  private async endLeadership(reason: StoppedReason): Promise<void> {
    this.leading = false;
    clearTimeout(this.deadlineTimer);
    this.leadership?.abort(new Error(`leadership ended: ${reason}`));
    await this.callback(() => this.opts.onStoppedLeading(reason), 'onStoppedLeading');
  }

  private async callback(fn: () => void | Promise<void>, name: string): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.log.error({ err: e }, `${name} failed`);
    }
  }
}

function toApiSpec(r: LeaseRecord): k8s.V1LeaseSpec {
  // The times stay strings so another writer's microseconds survive; client-node serializes them as given.
  return {
    holderIdentity: r.holderIdentity,
    leaseDurationSeconds: r.leaseDurationSeconds,
    acquireTime: r.acquireTime as unknown as k8s.V1MicroTime,
    renewTime: r.renewTime as unknown as k8s.V1MicroTime,
    leaseTransitions: r.leaseTransitions,
  };
}

// Client of the bootstrap service's public API (DESIGN.md, "Bootstrap Service"), for P2P nodes and the
// `widescan peers` command. Peer lists are what an attacker between a node and its bootstrap would want to
// forge (eclipse a node by feeding it only their own peers), so in authority mode every list is checked
// before it is believed: the signature over the exact body bytes (lib/core/signing.ts), then its age, then
// its shape. Nothing of an unverified body is parsed.

import { canonicalAddress } from './core/ipv6.js';
import { NODE_ID_RE } from './core/peers.js';
import { parsePublicKey, SIGNATURE_HEADER, verifyBody, type PublicKeyEntry } from './core/signing.js';

export const DEFAULT_MAX_AGE_SECONDS = 300;
/** Clocks of client and bootstrap may differ by this much before a list counts as from the future. */
export const MAX_CLOCK_SKEW_SECONDS = 60;
export const DEFAULT_TIMEOUT_MS = 10_000;
/** A full page (1000 peers) is well under 1 MiB; four leave room and still bound what a hostile server costs us. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
export const MAX_BODY_BYTES = 16 * 1024 * 1024;

const ISO_TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;
/** Job names as the bootstrap stores them (a safe superset), so they print and land in CSV unquoted. */
const JOB_RE = /^[A-Za-z0-9._/:-]{1,253}$/;
const MAX_CURSOR_LENGTH = 1024;

export interface Peer {
  /** Canonical IPv6 text, or a dotted quad for IPv4 nodes. */
  address: string;
  /** One of PEER_KINDS; a newer bootstrap may serve other lowercase kinds. */
  kind: string;
  /** The first job that found the peer; null for nodes that announced themselves. */
  job: string | null;
  rttMs: number | null;
  firstSeen: string | null;
  lastSeen: string | null;
  /** Nodes only: where they listen and who they say they are. */
  port?: number;
  id?: string;
}

export interface NodeSelf {
  address: string;
  port: number;
  id: string;
}

export interface PeerQuery {
  kind?: string;
  job?: string;
  /** Only peers first seen at or after this time: ms since the epoch, ISO-8601 text or a Date. */
  since?: number | string | Date;
  /** Peers per page, 1..1000. */
  limit?: number;
  cursor?: string;
}

export interface PeerPage {
  peers: Peer[];
  nextCursor: string | null;
  issuedAt: string;
}

export interface AnnounceResult {
  self: NodeSelf;
  peers: Peer[];
  issuedAt: string;
}

export interface AuthorityKey {
  id: string;
  /** Base64 raw 32-byte Ed25519 public key. */
  publicKey: string;
  current: boolean;
  retiresAt?: string;
}

export interface AuthorityInfo {
  mode: 'trustless' | 'authority';
  keys: AuthorityKey[];
}

export interface BootstrapClientOptions {
  /** Base URL of the bootstrap service, e.g. `https://bootstrap.example:8080`. */
  url: string;
  /** Pinned authority keys: every peer list must be signed by one of them. */
  authorityKeys?: PublicKeyEntry[];
  /** Signed lists older than this are refused as replays; default 300. */
  maxAgeSeconds?: number;
  fetch?: typeof fetch;
  /** Per request, body included; default 10 s. */
  timeoutMs?: number;
  /** Largest response body read; default 4 MiB, at most 16 MiB. */
  maxBodyBytes?: number;
}

/** The bootstrap could not be reached, answered with an HTTP error, or sent something that is not the API. */
export class BootstrapError extends Error {
  constructor(
    message: string,
    /** HTTP status of an error answer; null when there was none (network, timeout, malformed body). */
    readonly status: number | null = null,
    /** The `error` text of the bootstrap's JSON error body. */
    readonly serverMessage: string | null = null,
  ) {
    super(message);
    this.name = 'BootstrapError';
  }
}

/** A peer list that must not be believed: unsigned, tampered with, signed by an unknown key, or replayed. */
export class UntrustedResponseError extends Error {
  constructor(
    readonly reason: string,
    readonly url: string,
  ) {
    super(`peer list from ${url} refused: ${reason}`);
    this.name = 'UntrustedResponseError';
  }
}

/** `keys` null: the bootstrap is trustless and lists are taken unsigned. */
interface Trust {
  keys: readonly PublicKeyEntry[] | null;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isIsoTime(v: unknown): v is string {
  return typeof v === 'string' && ISO_TIME_RE.test(v) && !Number.isNaN(Date.parse(v));
}

function malformed(url: string, what: string): BootstrapError {
  return new BootstrapError(`${url}: malformed response: ${what}`);
}

function checkPeer(p: unknown, at: string, url: string): Peer {
  if (!isObject(p)) throw malformed(url, `${at}: not an object`);
  if (typeof p.address !== 'string') throw malformed(url, `${at}/address: not a string`);
  let address: string;
  try {
    address = canonicalAddress(p.address);
  } catch (err) {
    throw malformed(url, `${at}/address: ${(err as Error).message}`);
  }
  if (typeof p.kind !== 'string' || !/^[a-z]{1,32}$/.test(p.kind)) throw malformed(url, `${at}/kind: not a peer kind`);
  const job = p.job ?? null;
  if (job !== null && job !== '' && (typeof job !== 'string' || !JOB_RE.test(job))) throw malformed(url, `${at}/job: not a job name`);
  const rttMs = p.rttMs ?? null;
  if (rttMs !== null && (typeof rttMs !== 'number' || !Number.isFinite(rttMs) || rttMs < 0)) throw malformed(url, `${at}/rttMs: not a duration`);
  for (const f of ['firstSeen', 'lastSeen'] as const) {
    if (p[f] !== undefined && p[f] !== null && !isIsoTime(p[f])) throw malformed(url, `${at}/${f}: not an ISO-8601 time`);
  }
  const peer: Peer = {
    address,
    kind: p.kind,
    job: job === '' ? null : (job as string | null),
    rttMs: rttMs as number | null,
    firstSeen: (p.firstSeen as string | undefined) ?? null,
    lastSeen: (p.lastSeen as string | undefined) ?? null,
  };
  if (p.port !== undefined && p.port !== null) {
    if (!Number.isInteger(p.port) || (p.port as number) < 1 || (p.port as number) > 65535) throw malformed(url, `${at}/port: not a port`);
    peer.port = p.port as number;
  }
  if (p.id !== undefined && p.id !== null) {
    if (typeof p.id !== 'string' || !NODE_ID_RE.test(p.id)) throw malformed(url, `${at}/id: not a node id`);
    peer.id = p.id;
  }
  return peer;
}

function checkPeers(v: unknown, url: string): Peer[] {
  if (!Array.isArray(v)) throw malformed(url, 'peers: not an array');
  return v.map((p, i) => checkPeer(p, `peers/${i}`, url));
}

function checkSelf(self: NodeSelf): NodeSelf {
  if (!Number.isInteger(self.port) || self.port < 1 || self.port > 65535) throw new TypeError(`port ${self.port}: must be an integer from 1 to 65535`);
  if (typeof self.id !== 'string' || !NODE_ID_RE.test(self.id)) throw new TypeError(`id ${JSON.stringify(self.id)}: must be 1-128 of A-Z a-z 0-9 . _ : -`);
  return { address: canonicalAddress(self.address), port: self.port, id: self.id };
}

/** The body, refusing to hold more than `max` bytes of it: a hostile server could otherwise stream forever. */
async function readCapped(res: Response, max: number, url: string): Promise<Uint8Array> {
  if (res.body === null) return new Uint8Array(0);
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel().catch(() => undefined);
      throw new BootstrapError(`${url}: response body is larger than ${max} bytes; refusing to read more`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

export class BootstrapClient {
  /** Things the caller should tell its user, e.g. that the authority key was not pinned. */
  readonly warnings: string[] = [];
  readonly url: string;
  private readonly base: URL;
  private readonly pinned: readonly PublicKeyEntry[] | null;
  private readonly maxAgeSeconds: number;
  private readonly fetchFn: typeof fetch;
  private readonly timeoutMs: number;
  private readonly maxBodyBytes: number;
  private trust: Promise<Trust> | undefined;

  constructor(opts: BootstrapClientOptions) {
    let base: URL;
    try {
      base = new URL(opts.url);
    } catch {
      throw new TypeError(`bootstrap URL ${JSON.stringify(opts.url)} is not a URL; give one such as http://bootstrap:8080`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new TypeError(`bootstrap URL ${JSON.stringify(opts.url)}: use http:// or https://, not ${base.protocol}`);
    }
    if (base.search || base.hash) throw new TypeError(`bootstrap URL ${JSON.stringify(opts.url)}: leave out the query and fragment`);
    // API paths are resolved relative to the base, so a bootstrap behind a path prefix works.
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    this.base = base;
    this.url = base.href.replace(/\/$/, '');

    if (opts.authorityKeys !== undefined && opts.authorityKeys.length === 0) {
      throw new TypeError('authorityKeys is empty; leave it out to use the keys the bootstrap serves, or pin at least one');
    }
    this.pinned = opts.authorityKeys ?? null;
    this.maxAgeSeconds = opts.maxAgeSeconds ?? DEFAULT_MAX_AGE_SECONDS;
    if (!(this.maxAgeSeconds > 0) || !Number.isFinite(this.maxAgeSeconds)) throw new TypeError(`maxAgeSeconds ${opts.maxAgeSeconds}: must be a positive number`);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(this.timeoutMs > 0)) throw new TypeError(`timeoutMs ${opts.timeoutMs}: must be positive`);
    this.maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    if (!Number.isInteger(this.maxBodyBytes) || this.maxBodyBytes < 1 || this.maxBodyBytes > MAX_BODY_BYTES) {
      throw new TypeError(`maxBodyBytes ${opts.maxBodyBytes}: must be an integer from 1 to ${MAX_BODY_BYTES}`);
    }
    this.fetchFn = opts.fetch ?? fetch;
  }

  /** What the bootstrap says about itself. Unsigned: on its own it proves nothing, which is why keys can be pinned. */
  async authority(): Promise<AuthorityInfo> {
    const { body, url } = await this.request('GET', 'api/v1/authority');
    const json = this.parse(body, url);
    if (!isObject(json) || (json.mode !== 'trustless' && json.mode !== 'authority')) throw malformed(url, 'mode: not "trustless" or "authority"');
    if (!Array.isArray(json.keys)) throw malformed(url, 'keys: not an array');
    const keys = json.keys.map((k, i): AuthorityKey => {
      if (!isObject(k) || typeof k.id !== 'string' || typeof k.publicKey !== 'string' || typeof k.current !== 'boolean') {
        throw malformed(url, `keys/${i}: expected { id, publicKey, current }`);
      }
      if (k.retiresAt !== undefined && !isIsoTime(k.retiresAt)) throw malformed(url, `keys/${i}/retiresAt: not an ISO-8601 time`);
      return { id: k.id, publicKey: k.publicKey, current: k.current, ...(k.retiresAt === undefined ? {} : { retiresAt: k.retiresAt }) };
    });
    return { mode: json.mode, keys };
  }

  /** One page of peers; in authority mode only once it is verified. */
  async peers(q: PeerQuery = {}): Promise<PeerPage> {
    const { json, url } = await this.signedList('GET', 'api/v1/peers', { query: q });
    const nextCursor = json.nextCursor ?? null;
    if (nextCursor !== null && (typeof nextCursor !== 'string' || nextCursor.length === 0 || nextCursor.length > MAX_CURSOR_LENGTH)) {
      throw malformed(url, 'nextCursor: not a cursor');
    }
    return { peers: checkPeers(json.peers, url), nextCursor, issuedAt: json.issuedAt as string };
  }

  /** Every peer matching `q`, page by page (each page verified on its own). */
  async *allPeers(q: Omit<PeerQuery, 'cursor'> = {}): AsyncIterable<Peer> {
    const seen = new Set<string>();
    let cursor: string | undefined;
    do {
      const page = await this.peers({ ...q, cursor });
      yield* page.peers;
      cursor = page.nextCursor ?? undefined;
      // A server handing back a cursor twice would keep us walking forever.
      if (cursor !== undefined) {
        if (seen.has(cursor)) throw new BootstrapError(`${this.url}: the bootstrap returned the cursor ${JSON.stringify(cursor.slice(0, 40))} twice`);
        seen.add(cursor);
      }
    } while (cursor !== undefined);
  }

  /** Registers (or refreshes) this node and returns the peers the bootstrap hands it. */
  async announce(self: NodeSelf): Promise<AnnounceResult> {
    const mine = checkSelf(self);
    const { json, url, verified } = await this.signedList('POST', 'api/v1/announce', { body: mine });
    const echoed = json.self;
    if (!isObject(echoed) || typeof echoed.address !== 'string' || typeof echoed.port !== 'number' || typeof echoed.id !== 'string') {
      throw malformed(url, 'self: expected { address, port, id }');
    }
    // The signature covers the body, not the request: a recorded answer to another node's announce
    // would verify too. The echoed self ties it to ours.
    let sameAddress: boolean;
    try {
      sameAddress = canonicalAddress(echoed.address) === mine.address;
    } catch {
      sameAddress = false;
    }
    if (!sameAddress || echoed.port !== mine.port || echoed.id !== mine.id) {
      const why = `it answers the announce of ${echoed.id} at ${echoed.address} port ${echoed.port}, not ours`;
      throw verified ? new UntrustedResponseError(`${why} (replayed?)`, url) : malformed(url, why);
    }
    return { self: mine, peers: checkPeers(json.peers, url), issuedAt: json.issuedAt as string };
  }

  /** Keeps this node in the lists; a BootstrapError with status 404 means it must announce again. */
  async heartbeat(self: NodeSelf): Promise<{ ttlSeconds: number }> {
    const { body, url } = await this.request('POST', 'api/v1/heartbeat', { body: checkSelf(self) });
    const json = this.parse(body, url);
    if (!isObject(json) || typeof json.ttlSeconds !== 'number' || !(json.ttlSeconds > 0)) throw malformed(url, 'ttlSeconds: not a positive number');
    return { ttlSeconds: json.ttlSeconds };
  }

  /** This machine's address as the bootstrap sees it (unsigned: a hint, not a proof). */
  async publicIp(): Promise<string> {
    const { body, url } = await this.request('GET', 'api/v1/publicip');
    const json = this.parse(body, url);
    if (!isObject(json) || typeof json.address !== 'string') throw malformed(url, 'address: not a string');
    try {
      return canonicalAddress(json.address);
    } catch (err) {
      throw malformed(url, `address: ${(err as Error).message}`);
    }
  }

  /** How lists are checked: the pinned keys, else what the bootstrap serves (asked once per client). */
  private resolveTrust(): Promise<Trust> {
    if (this.pinned !== null) return Promise.resolve({ keys: this.pinned });
    this.trust ??= this.authority().then(
      (info): Trust => {
        if (info.mode === 'trustless') {
          this.warnings.push(`${this.url} is a trustless bootstrap: its peer lists are not signed, anyone on the path can change them`);
          return { keys: null };
        }
        if (info.keys.length === 0) throw malformed(`${this.url}/api/v1/authority`, 'authority mode with no keys');
        const keys = info.keys.map((k, i) => {
          try {
            return parsePublicKey(k.publicKey);
          } catch (err) {
            throw malformed(`${this.url}/api/v1/authority`, `keys/${i}/publicKey: ${(err as Error).message}`);
          }
        });
        this.warnings.push(
          `the authority key of ${this.url} is not pinned: lists are checked against the key(s) it serves itself (${keys.map((k) => k.id).join(', ')}); pin one with --authority-key`,
        );
        return { keys };
      },
      (err: unknown) => {
        this.trust = undefined; // a failed look-up is retried on the next call
        throw err;
      },
    );
    return this.trust;
  }

  /** A peer list: fetched, verified over its exact bytes, checked for freshness, then parsed. */
  private async signedList(
    method: 'GET' | 'POST',
    path: string,
    init: { query?: PeerQuery; body?: unknown },
  ): Promise<{ json: Json & { issuedAt: string }; url: string; verified: boolean }> {
    const trust = await this.resolveTrust();
    const { body, signature, url } = await this.request(method, path, init);
    if (trust.keys !== null) {
      const verdict = verifyBody(body, signature, trust.keys);
      if (!verdict.ok) throw new UntrustedResponseError(verdict.reason, url);
    }
    const json = this.parse(body, url);
    if (!isObject(json)) throw malformed(url, 'not a JSON object');
    if (!isIsoTime(json.issuedAt)) {
      if (trust.keys !== null) throw new UntrustedResponseError('the signed list has no valid issuedAt, so its age cannot be checked', url);
      throw malformed(url, 'issuedAt: not an ISO-8601 time');
    }
    if (trust.keys !== null) {
      // Only a signed list can be checked for replay: an unsigned one could carry any issuedAt.
      const ageSeconds = (Date.now() - Date.parse(json.issuedAt)) / 1000;
      if (ageSeconds > this.maxAgeSeconds) {
        throw new UntrustedResponseError(`the list was issued at ${json.issuedAt}, ${Math.round(ageSeconds)} s ago, more than the ${this.maxAgeSeconds} s allowed (replayed?)`, url);
      }
      if (-ageSeconds > MAX_CLOCK_SKEW_SECONDS) {
        throw new UntrustedResponseError(`the list was issued at ${json.issuedAt}, ${Math.round(-ageSeconds)} s in the future (check the clocks)`, url);
      }
    }
    return { json: json as Json & { issuedAt: string }, url, verified: trust.keys !== null };
  }

  private parse(body: Uint8Array, url: string): unknown {
    try {
      return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
    } catch (err) {
      throw malformed(url, `not valid JSON (${(err as Error).message})`);
    }
  }

  private async request(
    method: 'GET' | 'POST',
    path: string,
    init: { query?: PeerQuery; body?: unknown } = {},
  ): Promise<{ body: Uint8Array; signature: string | null; url: string }> {
    const target = new URL(path, this.base);
    for (const [name, value] of Object.entries(init.query ?? {})) {
      if (value === undefined) continue;
      target.searchParams.set(name, value instanceof Date ? value.toISOString() : String(value));
    }
    const url = target.href;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    try {
      // One deadline for headers and body: a server trickling bytes is as dead as a silent one.
      const res = await this.fetchFn(target, {
        method,
        headers,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      const body = await readCapped(res, this.maxBodyBytes, url);
      if (!res.ok) {
        let serverMessage: string | null = null;
        try {
          const json: unknown = JSON.parse(new TextDecoder().decode(body));
          if (isObject(json) && typeof json.error === 'string') serverMessage = json.error.slice(0, 500);
        } catch {
          // not the API's JSON error: the status says enough
        }
        throw new BootstrapError(`${method} ${url}: HTTP ${res.status}${serverMessage === null ? '' : `: ${serverMessage}`}`, res.status, serverMessage);
      }
      return { body, signature: res.headers.get(SIGNATURE_HEADER), url };
    } catch (err) {
      if (err instanceof BootstrapError) throw err;
      const e = err as Error & { cause?: { code?: string; message?: string } };
      if (e.name === 'TimeoutError' || e.name === 'AbortError') {
        throw new BootstrapError(`${method} ${url}: no complete answer within ${this.timeoutMs / 1000} s`);
      }
      throw new BootstrapError(`${method} ${url}: cannot reach the bootstrap: ${e.cause?.code ?? e.cause?.message ?? e.message}`);
    }
  }
}

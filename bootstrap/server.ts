import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Redis } from 'ioredis';
import { canonicalAddress, formatAddress, parseAddress } from '../lib/core/ipv6.js';
import { MAX_PAGE_LIMIT, NODE_ID_PATTERN, PEER_KINDS, type PeerKind } from '../lib/core/peers.js';
import { SIGNATURE_HEADER } from '../lib/core/signing.js';
import type { Logger } from '../lib/log.js';
import type { Metrics } from '../lib/metrics.js';
import { AdminStore, MAX_REASON_LENGTH } from './admin.js';
import { Authority } from './authority.js';
import { JobReader } from './jobs.js';
import {
  MAX_SINCE_MS, PeerQueryError, REPORT_KINDS,
  type NodeAnnouncement, type PeerQuery, type PeerReport, type PeerStore,
} from './store.js';

export interface BootstrapAppOptions {
  store: PeerStore;
  redis: Redis;
  /** Bearer token listeners present on `POST /api/v1/peers`. */
  listenerToken: string;
  /** Bearer token of the admin endpoints; without one they answer 503. Must differ from the listener token. */
  adminToken?: string;
  /** Signs served peer lists in authority mode; default trustless. */
  authority?: Authority;
  /**
   * Proxies whose `X-Forwarded-For` is believed: addresses, CIDRs, or express' names `loopback`,
   * `linklocal`, `uniquelocal`. Default none: the caller is the TCP peer.
   */
  trustedProxies?: string[];
  /** Folder of the control panel's static files; default `panel/` beside this module. */
  panelDir?: string;
  /**
   * Let a caller announce (and heartbeat) an address other than its own. Off by default: otherwise anyone
   * could fill the lists that other nodes connect to with addresses of their choice.
   */
  announceAnyAddress?: boolean;
  metrics: Metrics;
  logger: Logger;
  /** Largest accepted request body; default 1 MiB. */
  maxBodyBytes?: number;
  /** Most peers in one `POST /api/v1/peers`; default 10000. */
  maxBatch?: number;
}

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
export const DEFAULT_MAX_BATCH = 10_000;
/** Bodies of announce, heartbeat and block are a few fields: anything bigger is not one of them. */
export const SMALL_BODY_BYTES = 4096;
export const DEFAULT_AUDIT_LIMIT = 100;
export const MAX_AUDIT_LIMIT = 1000;
const NODE_ID_RULE = "must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'";
// Control characters and bidirectional overrides could disguise a reason in logs and in the panel.
const REASON_PATTERN = '^[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*$';
const REASON_RULE = 'must not contain control characters or bidirectional overrides';
const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);
const PANEL_CSP = "default-src 'self'; frame-ancestors 'none'";
/** Same shape as a Kubernetes `namespace/name` or a DNS-ish name: lowercase, no `:` (it is part of Redis keys). */
export const JOB_PATTERN = '^[a-z0-9]([a-z0-9./-]{0,251}[a-z0-9])?$';
const JOB_RE = new RegExp(JOB_PATTERN);
const JOB_RULE = "must be 1-253 characters of a-z, 0-9, '.', '/', '-', starting and ending with a letter or digit";
const MAX_RTT_MS = 600_000;
/** Readiness and metrics must answer even while Redis hangs; the client queues commands while reconnecting. */
const REDIS_PROBE_TIMEOUT_MS = 1000;
const QUERY_PARAMS = new Set(['kind', 'job', 'since', 'limit', 'cursor']);

function reportsSchema(maxBatch: number) {
  return {
    type: 'object',
    additionalProperties: false,
    required: ['peers'],
    properties: {
      peers: {
        type: 'array',
        maxItems: maxBatch,
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['address', 'kind', 'job'],
          properties: {
            // Syntax is checked by lib/core/ipv6 after the schema, for its precise messages.
            address: { type: 'string' },
            kind: { type: 'string', enum: [...REPORT_KINDS] },
            job: { type: 'string', pattern: JOB_PATTERN },
            rttMs: { type: 'number', minimum: 0, maximum: MAX_RTT_MS },
            seenAt: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
          },
        },
      },
    },
  };
}

function nodeSchema() {
  return {
    type: 'object',
    additionalProperties: false,
    required: ['address', 'port', 'id'],
    properties: {
      address: { type: 'string', maxLength: 64 }, // syntax: parseNodeAddress
      port: { type: 'integer', minimum: 1, maximum: 65535 },
      id: { type: 'string', pattern: NODE_ID_PATTERN },
    },
  };
}

const blockSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['blocked'],
  properties: {
    blocked: { type: 'boolean' },
    reason: { type: 'string', maxLength: MAX_REASON_LENGTH, pattern: REASON_PATTERN },
  },
};

/** What a `pattern` failure means, by the name of the field. */
const PATTERN_RULES: Record<string, string> = { job: JOB_RULE, id: NODE_ID_RULE, reason: REASON_RULE };

/** An HTTP error whose message is safe to show the client. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

function describeSchemaError(e: ErrorObject): string {
  const path = e.instancePath.replace(/^\//, '');
  const at = (p: string) => p || 'body';
  switch (e.keyword) {
    case 'required':
      return `${at(path ? `${path}/${e.params.missingProperty}` : e.params.missingProperty)}: is required`;
    case 'additionalProperties':
      return `${at(path)}: unknown field ${JSON.stringify(e.params.additionalProperty)}`;
    case 'enum':
      return `${at(path)}: must be one of ${(e.params.allowedValues as unknown[]).join(', ')}`;
    case 'pattern':
      return `${at(path)}: ${PATTERN_RULES[path.split('/').pop()!] ?? 'has a character that is not allowed'}`;
    default:
      return `${at(path)}: ${e.message ?? 'is invalid'}`;
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/**
 * Bearer-token check. Hashing both sides first gives equal-length inputs, so the comparison leaks no length.
 * Without a token the routes are switched off (503), never open.
 */
function requireToken(token: string | undefined, role: 'listener' | 'admin'): RequestHandler {
  if (token === undefined) {
    return (_req, res) => {
      res.status(503).json({ error: `${role} disabled: no ${role} token is configured (WIDESCAN_${role.toUpperCase()}_TOKEN)` });
    };
  }
  const expected = sha256(token);
  return (req, res, next) => {
    const header = req.get('authorization');
    const match = header === undefined ? null : /^Bearer +(\S+) *$/i.exec(header);
    if (match === null) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ error: `authorization: missing "Authorization: Bearer <${role} token>" header` });
      return;
    }
    if (!timingSafeEqual(sha256(match[1]), expected)) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ error: `authorization: wrong ${role} token` });
      return;
    }
    next();
  };
}

/** A node's announced address: canonical, and one other nodes could connect to. */
export function parseNodeAddress(text: string): string {
  const address = canonicalAddress(text);
  if (address === '::' || address === '0.0.0.0') throw new Error(`${address} is the unspecified address; announce the address peers can reach`);
  if (/^ff[0-9a-f]{2}:/.test(address)) throw new Error(`${address} is a multicast address; announce a unicast address`);
  if (address.includes('.') && Number(address.split('.')[0]) >= 224) {
    throw new Error(`${address} is a multicast, reserved or broadcast address (224.0.0.0/3); announce a unicast address`);
  }
  return address;
}

/**
 * Refuses proxy entries express would misread or ignore: each must be an address, a CIDR or one of
 * express' names. Returns the list unchanged.
 */
export function checkTrustedProxies(list: readonly string[]): string[] {
  for (const entry of list) {
    if (PROXY_NAMES.has(entry)) continue;
    const [addr, bits, ...rest] = entry.split('/');
    const family = isIP(addr ?? '');
    const maxBits = family === 4 ? 32 : 128;
    if (family === 0 || rest.length > 0 || (bits !== undefined && (!/^\d{1,3}$/.test(bits) || Number(bits) > maxBits))) {
      throw new Error(
        `trusted proxy ${JSON.stringify(entry.slice(0, 80))} is not an address, a CIDR (e.g. 10.0.0.0/8, fd00::/8) or one of ${[...PROXY_NAMES].join(', ')}`,
      );
    }
  }
  return [...list];
}

/** The caller's address as the server sees it (after trusted proxies), canonical. */
function clientAddress(req: Request): string {
  const ip = req.ip;
  if (ip === undefined) throw new HttpError(400, 'the connection closed before its address could be read');
  try {
    return canonicalAddress(ip.replace(/%.*$/, '')); // a link-local peer's zone id names our interface, not theirs
  } catch {
    // Only a trusted proxy's X-Forwarded-For can carry text that is not an address.
    throw new HttpError(400, `X-Forwarded-For: ${JSON.stringify(ip.slice(0, 60))} is not an IP address`);
  }
}

/** Sends JSON; in authority mode signs the exact bytes sent. */
function sendJson(res: Response, body: unknown, authority: Authority): void {
  const bytes = Buffer.from(JSON.stringify(body), 'utf8');
  const signature = authority.sign(bytes);
  if (signature !== undefined) res.set(SIGNATURE_HEADER, signature);
  res.set('Content-Type', 'application/json; charset=utf-8').send(bytes);
}

/** Checks `body` against a compiled schema; a 400 naming the first bad field otherwise. */
function validated<T>(validate: ValidateFunction, body: unknown): T {
  if (!validate(body)) throw new HttpError(400, describeSchemaError(validate.errors![0]!));
  return body as T;
}

function validNode(validate: ValidateFunction, body: unknown): NodeAnnouncement {
  const node = validated<NodeAnnouncement>(validate, body);
  try {
    return { address: parseNodeAddress(node.address), port: node.port, id: node.id };
  } catch (err) {
    throw new HttpError(400, `address: ${(err as Error).message}`);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})(?:T([01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,9})?)?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d))?$/;

/** `since` as ms since the epoch: an integer, or an ISO-8601 date or date-time with a zone (no local times). */
export function parseSince(text: string): number {
  const bad = (why: string) =>
    new PeerQueryError('since', `${why}; give ms since the epoch or an ISO-8601 time such as 2024-05-01T12:00:00Z`);
  let ms: number;
  if (/^\d{1,16}$/.test(text)) {
    ms = Number(text);
  } else {
    const m = ISO_RE.exec(text);
    if (m === null) throw bad(`${JSON.stringify(text.slice(0, 40))} is not a time`);
    const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
    // Date.parse rolls 2024-02-30 over into March instead of rejecting it.
    if (mo < 1 || mo > 12 || d < 1 || d > new Date(Date.UTC(y, mo, 0)).getUTCDate()) {
      throw bad(`${JSON.stringify(text)} is not a calendar date`);
    }
    ms = Date.parse(text);
    if (Number.isNaN(ms)) throw bad(`${JSON.stringify(text)} is not a time`);
  }
  if (ms > MAX_SINCE_MS) throw bad(`${text} is too far in the future`);
  return Math.max(0, ms);
}

/** The validated `GET /api/v1/peers` query; unknown or repeated parameters are refused so typos do not go unnoticed. */
function parsePeerQuery(query: Request['query']): PeerQuery {
  const q: PeerQuery = {};
  for (const [name, value] of Object.entries(query)) {
    if (!QUERY_PARAMS.has(name)) {
      throw new PeerQueryError(name.slice(0, 40), `unknown query parameter; known: ${[...QUERY_PARAMS].join(', ')}`);
    }
    if (typeof value !== 'string') throw new PeerQueryError(name, 'give it once, as a single value');
    switch (name) {
      case 'kind':
        if (!(PEER_KINDS as readonly string[]).includes(value)) {
          throw new PeerQueryError('kind', `must be one of ${PEER_KINDS.join(', ')}, got ${JSON.stringify(value.slice(0, 40))}`);
        }
        q.kind = value as PeerKind;
        break;
      case 'job':
        if (!JOB_RE.test(value)) throw new PeerQueryError('job', JOB_RULE);
        q.job = value;
        break;
      case 'since':
        q.since = parseSince(value);
        break;
      case 'limit':
        if (!/^\d{1,4}$/.test(value) || Number(value) < 1 || Number(value) > MAX_PAGE_LIMIT) {
          throw new PeerQueryError('limit', `must be an integer from 1 to ${MAX_PAGE_LIMIT}, got ${JSON.stringify(value.slice(0, 40))}`);
        }
        q.limit = Number(value);
        break;
      case 'cursor':
        q.cursor = value; // the store decodes it and rejects what it did not make
        break;
    }
  }
  return q;
}

/** ioredis reports a Redis it cannot reach with these; the client should retry later, so 503 rather than 500. */
function isRedisUnavailable(err: unknown): boolean {
  return err instanceof Error && (err.name === 'MaxRetriesPerRequestError' || err.message === 'Connection is closed.');
}

/** Client-facing status and message of an error, or null for an internal one (logged, never shown). */
function clientError(err: unknown, maxBodyBytes: number): { status: number; message: string } | null {
  if (err instanceof HttpError) return { status: err.status, message: err.message };
  if (err instanceof PeerQueryError) return { status: 400, message: err.message };
  if (isRedisUnavailable(err)) return { status: 503, message: 'storage unavailable; retry later' };
  const e = err as { status?: unknown; type?: unknown; expose?: unknown; message?: unknown; limit?: unknown };
  if (typeof e.status !== 'number' || e.status < 400 || e.status >= 500) return null;
  // Errors of express' body parser carry a `type`; their messages describe the client's input.
  switch (e.type) {
    case 'entity.parse.failed':
      return { status: 400, message: `body: not valid JSON (${String(e.message)})` };
    case 'entity.too.large': {
      const limit = typeof e.limit === 'number' ? e.limit : maxBodyBytes;
      return { status: 413, message: `body: larger than the limit of ${limit} bytes${limit === maxBodyBytes ? '; send smaller batches' : ''}` };
    }
    case 'encoding.unsupported':
      return { status: 415, message: 'body: Content-Encoding is not supported; send the body uncompressed' };
    case 'charset.unsupported':
      return { status: 415, message: 'body: charset is not supported; send UTF-8' };
  }
  return { status: e.status, message: e.expose === true ? String(e.message) : 'bad request' };
}

/** The validated `GET /api/v1/audit` limit. */
function parseAuditLimit(query: Request['query']): number {
  let limit = DEFAULT_AUDIT_LIMIT;
  for (const [name, value] of Object.entries(query)) {
    if (name !== 'limit') throw new PeerQueryError(name.slice(0, 40), 'unknown query parameter; known: limit');
    if (typeof value !== 'string') throw new PeerQueryError(name, 'give it once, as a single value');
    if (!/^\d{1,4}$/.test(value) || Number(value) < 1 || Number(value) > MAX_AUDIT_LIMIT) {
      throw new PeerQueryError('limit', `must be an integer from 1 to ${MAX_AUDIT_LIMIT}, got ${JSON.stringify(value.slice(0, 40))}`);
    }
    limit = Number(value);
  }
  return limit;
}

/**
 * The bootstrap HTTP API (DESIGN.md, "Bootstrap Service"): peer reports from listeners, peer lists for
 * newcomers, P2P node announces and heartbeats, the trust authority's keys, admin actions, the control
 * panel, health and metrics. Every request is counted by route pattern, so hostile URLs cannot blow up
 * metric cardinality.
 */
export function createBootstrapApp(opts: BootstrapAppOptions): express.Express {
  const { store, redis, metrics, logger } = opts;
  const maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const maxBatch = opts.maxBatch ?? DEFAULT_MAX_BATCH;
  const authority = opts.authority ?? Authority.trustless();
  if (opts.listenerToken.length === 0) throw new Error('createBootstrapApp: listenerToken is empty; configure a listener token');
  if (opts.adminToken !== undefined && opts.adminToken.length === 0) throw new Error('createBootstrapApp: adminToken is empty; configure an admin token or leave it out');
  // One token for both roles would let every listener block peers.
  if (opts.adminToken === opts.listenerToken) throw new Error('the admin token equals the listener token; give the admin a token of its own');
  const trustedProxies = checkTrustedProxies(opts.trustedProxies ?? []);
  const ajv = new Ajv({ allErrors: false, strict: true });
  const validateReports = ajv.compile(reportsSchema(maxBatch));
  const validateAnnounce = ajv.compile(nodeSchema());
  const validateHeartbeat = ajv.compile(nodeSchema());
  const validateBlock = ajv.compile(blockSchema);
  const admin = new AdminStore(redis);
  const jobs = new JobReader(redis, logger);
  const panelDir = opts.panelDir ?? fileURLToPath(new URL('./panel/', import.meta.url));

  const app = express();
  app.set('x-powered-by', false);
  app.set('query parser', 'simple');
  // req.ip then walks X-Forwarded-For back only through these proxies; with none it is the TCP peer.
  app.set('trust proxy', trustedProxies.length > 0 ? trustedProxies : false);

  app.use((_req, res, next) => {
    res.set('X-Content-Type-Options', 'nosniff');
    res.on('finish', () => {
      metrics.httpRequests.inc({ route: (res.locals.route as string | undefined) ?? 'unmatched', code: String(res.statusCode) });
    });
    next();
  });
  // Labels the request with its route pattern, first in each route's chain so errors inside count right.
  const route = (pattern: string): RequestHandler => (_req, res, next) => {
    res.locals.route = pattern;
    next();
  };
  const json = (limit: number): RequestHandler[] => [
    (req, _res, next) => {
      next(req.is('application/json') ? undefined : new HttpError(415, 'body: expected a JSON body with Content-Type: application/json'));
    },
    express.json({ limit, strict: true, inflate: false, type: 'application/json' }),
  ];
  const adminAuth: RequestHandler[] = [
    (_req, res, next) => {
      res.set('Cache-Control', 'no-store'); // admin views must not linger in shared caches
      next();
    },
    requireToken(opts.adminToken, 'admin'),
  ];

  app.get('/healthz', route('/healthz'), (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', route('/readyz'), async (_req, res) => {
    try {
      await withTimeout(redis.ping(), REDIS_PROBE_TIMEOUT_MS, 'redis PING');
      res.json({ status: 'ok' });
    } catch (err) {
      res.status(503).json({ status: 'unavailable', error: `redis: ${(err as Error).message}` });
    }
  });

  app.get('/metrics', route('/metrics'), async (_req, res) => {
    try {
      const counts = await withTimeout(store.counts(), REDIS_PROBE_TIMEOUT_MS, 'redis');
      for (const kind of PEER_KINDS) metrics.bootstrapPeers.set({ kind }, counts[kind]);
    } catch (err) {
      // Serve the other metrics anyway: a scrape failing with Redis would hide the process metrics too.
      logger.warn({ err }, 'could not refresh widescan_bootstrap_peers');
    }
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  app.post(
    '/api/v1/peers',
    route('/api/v1/peers'),
    requireToken(opts.listenerToken, 'listener'),
    ...json(maxBodyBytes),
    async (req, res) => {
      const body: unknown = req.body;
      // Counted first so an oversized batch costs no validation work, and answered 413 so senders split it.
      const peers = (body as { peers?: unknown } | null)?.peers;
      if (Array.isArray(peers) && peers.length > maxBatch) {
        throw new HttpError(413, `peers: ${peers.length} peers, more than the ${maxBatch} allowed per request; split the batch`);
      }
      // The whole batch is checked before anything is written, so a bad item leaves Redis unchanged.
      const reports = validated<{ peers: PeerReport[] }>(validateReports, body).peers;
      const canonical = reports.map((p, i): PeerReport => {
        try {
          return { ...p, address: formatAddress(parseAddress(p.address)) };
        } catch (err) {
          throw new HttpError(400, `peers/${i}/address: ${(err as Error).message}`);
        }
      });
      const { discovered, ...result } = await store.upsert(canonical);
      for (const d of discovered) metrics.peersDiscovered.inc({ job: d.job, kind: d.kind }, d.count);
      logger.debug(result, 'peer reports stored');
      res.json(result);
    },
  );

  app.get('/api/v1/peers', route('/api/v1/peers'), async (req, res) => {
    const page = await store.list(parsePeerQuery(req.query));
    sendJson(res, { ...page, issuedAt: new Date().toISOString() }, authority);
  });

  /** A node speaks for itself: its announced address must be the one the server sees. */
  const ownAddress = (req: Request, node: NodeAnnouncement) => {
    if (opts.announceAnyAddress) return;
    const caller = clientAddress(req);
    if (node.address !== caller) {
      throw new HttpError(403, `address: a node announces its own address; this request comes from ${caller}, not ${node.address}`);
    }
  };

  app.post('/api/v1/announce', route('/api/v1/announce'), ...json(SMALL_BODY_BYTES), async (req, res) => {
    const node = validNode(validateAnnounce, req.body);
    ownAddress(req, node);
    if ((await store.announce(node)) === 'blocked') {
      throw new HttpError(403, `address: ${node.address} is blocked by the bootstrap's operator`);
    }
    const peers = await store.sample(node.address);
    sendJson(res, { self: node, peers, issuedAt: new Date().toISOString() }, authority);
  });

  app.post('/api/v1/heartbeat', route('/api/v1/heartbeat'), ...json(SMALL_BODY_BYTES), async (req, res) => {
    const node = validNode(validateHeartbeat, req.body);
    ownAddress(req, node);
    const result = await store.heartbeat(node);
    if (result === 'blocked') throw new HttpError(403, `address: ${node.address} is blocked by the bootstrap's operator`);
    if (result === 'unknown') {
      throw new HttpError(404, `node: no live node ${JSON.stringify(node.id)} at ${node.address} port ${node.port}; announce first (POST /api/v1/announce)`);
    }
    res.json({ ttlSeconds: store.nodeTtlSeconds });
  });

  app.get('/api/v1/publicip', route('/api/v1/publicip'), (req, res) => {
    res.set('Cache-Control', 'no-store').json({ address: clientAddress(req) });
  });

  app.get('/api/v1/authority', route('/api/v1/authority'), (_req, res) => {
    res.json(authority.info());
  });

  app.post('/api/v1/peers/:address/block', route('/api/v1/peers/:address/block'), ...adminAuth, ...json(SMALL_BODY_BYTES), async (req, res) => {
    const body = validated<{ blocked: boolean; reason?: string }>(validateBlock, req.body);
    let address: string;
    try {
      address = canonicalAddress(String(req.params.address));
    } catch (err) {
      throw new HttpError(400, `address: ${(err as Error).message}`);
    }
    const entry = await admin.setBlocked({ address, blocked: body.blocked, reason: body.reason, ip: clientAddress(req) });
    logger.info(entry, `admin ${entry.action}ed ${address}`);
    res.json({ address, blocked: body.blocked });
  });

  app.get('/api/v1/peers/blocked', route('/api/v1/peers/blocked'), ...adminAuth, async (_req, res) => {
    res.json({ blocked: await admin.blocked() });
  });

  app.get('/api/v1/audit', route('/api/v1/audit'), ...adminAuth, async (req, res) => {
    res.json({ entries: await admin.audit(parseAuditLimit(req.query)) });
  });

  app.get('/api/v1/jobs', route('/api/v1/jobs'), ...adminAuth, async (_req, res) => {
    res.json({ jobs: await jobs.list() });
  });

  // The control panel: static files only, nothing loaded from elsewhere.
  app.use(
    (req, res, next) => {
      if (req.method === 'GET' || req.method === 'HEAD') res.locals.route = 'panel';
      next();
    },
    express.static(panelDir, {
      index: 'index.html',
      redirect: false,
      dotfiles: 'ignore',
      setHeaders: (res) => {
        res.setHeader('Content-Security-Policy', PANEL_CSP);
        res.setHeader('Referrer-Policy', 'no-referrer');
      },
    }),
  );

  app.use((req, res) => {
    res.locals.route = 'unmatched';
    res.status(404).json({ error: `no route for ${req.method} ${req.path.slice(0, 200)}` });
  });

  app.use((err: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(err); // express closes the connection; nothing more can be said to the client
      return;
    }
    const client = clientError(err, maxBodyBytes);
    if (client === null) {
      logger.error({ err, method: req.method, route: res.locals.route }, 'request failed');
      res.status(500).json({ error: 'internal error' });
      return;
    }
    if (client.status >= 500) logger.warn({ err, route: res.locals.route }, client.message);
    res.status(client.status).json({ error: client.message });
  });

  return app;
}

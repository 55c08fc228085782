import { createHash, timingSafeEqual } from 'node:crypto';
import { Ajv, type ErrorObject } from 'ajv';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Redis } from 'ioredis';
import { formatAddress, parseAddress } from '../lib/core/ipv6.js';
import type { Logger } from '../lib/log.js';
import type { Metrics } from '../lib/metrics.js';
import { MAX_LIMIT, MAX_SINCE_MS, PEER_KINDS, PeerQueryError, type PeerKind, type PeerQuery, type PeerReport, type PeerStore } from './store.js';

export interface BootstrapAppOptions {
  store: PeerStore;
  redis: Redis;
  /** Bearer token listeners present on `POST /api/v1/peers`. */
  listenerToken: string;
  metrics: Metrics;
  logger: Logger;
  /** Largest accepted request body; default 1 MiB. */
  maxBodyBytes?: number;
  /** Most peers in one `POST /api/v1/peers`; default 10000. */
  maxBatch?: number;
}

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
export const DEFAULT_MAX_BATCH = 10_000;
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
            kind: { type: 'string', enum: [...PEER_KINDS] },
            job: { type: 'string', pattern: JOB_PATTERN },
            rttMs: { type: 'number', minimum: 0, maximum: MAX_RTT_MS },
            seenAt: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
          },
        },
      },
    },
  };
}

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
      return `${at(path)}: ${JOB_RULE}`;
    default:
      return `${at(path)}: ${e.message ?? 'is invalid'}`;
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Bearer-token check. Hashing both sides first gives equal-length inputs, so the comparison leaks no length. */
function requireToken(token: string): RequestHandler {
  const expected = sha256(token);
  return (req, res, next) => {
    const header = req.get('authorization');
    const match = header === undefined ? null : /^Bearer +(\S+) *$/i.exec(header);
    if (match === null) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ error: 'authorization: missing "Authorization: Bearer <listener token>" header' });
      return;
    }
    if (!timingSafeEqual(sha256(match[1]), expected)) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ error: 'authorization: wrong listener token' });
      return;
    }
    next();
  };
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
        if (!/^\d{1,4}$/.test(value) || Number(value) < 1 || Number(value) > MAX_LIMIT) {
          throw new PeerQueryError('limit', `must be an integer from 1 to ${MAX_LIMIT}, got ${JSON.stringify(value.slice(0, 40))}`);
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
  const e = err as { status?: unknown; type?: unknown; expose?: unknown; message?: unknown };
  if (typeof e.status !== 'number' || e.status < 400 || e.status >= 500) return null;
  // Errors of express' body parser carry a `type`; their messages describe the client's input.
  switch (e.type) {
    case 'entity.parse.failed':
      return { status: 400, message: `body: not valid JSON (${String(e.message)})` };
    case 'entity.too.large':
      return { status: 413, message: `body: larger than the limit of ${maxBodyBytes} bytes; send smaller batches` };
    case 'encoding.unsupported':
      return { status: 415, message: 'body: Content-Encoding is not supported; send the body uncompressed' };
    case 'charset.unsupported':
      return { status: 415, message: 'body: charset is not supported; send UTF-8' };
  }
  return { status: e.status, message: e.expose === true ? String(e.message) : 'bad request' };
}

/**
 * The bootstrap HTTP API (DESIGN.md, "Bootstrap Service"): peer reports from listeners, peer lists for
 * newcomers, health and metrics. Every request is counted by route pattern, so hostile URLs cannot blow
 * up metric cardinality.
 */
export function createBootstrapApp(opts: BootstrapAppOptions): express.Express {
  const { store, redis, metrics, logger } = opts;
  const maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const maxBatch = opts.maxBatch ?? DEFAULT_MAX_BATCH;
  if (opts.listenerToken.length === 0) throw new Error('createBootstrapApp: listenerToken is empty; configure a listener token');
  const validateReports = new Ajv({ allErrors: false, strict: true }).compile(reportsSchema(maxBatch));

  const app = express();
  app.set('x-powered-by', false);
  app.set('query parser', 'simple');

  app.use((_req, res, next) => {
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
    requireToken(opts.listenerToken),
    (req, _res, next) => {
      next(req.is('application/json') ? undefined : new HttpError(415, 'body: expected a JSON body with Content-Type: application/json'));
    },
    express.json({ limit: maxBodyBytes, strict: true, inflate: false, type: 'application/json' }),
    async (req, res) => {
      const body: unknown = req.body;
      // Counted first so an oversized batch costs no validation work, and answered 413 so senders split it.
      const peers = (body as { peers?: unknown } | null)?.peers;
      if (Array.isArray(peers) && peers.length > maxBatch) {
        throw new HttpError(413, `peers: ${peers.length} peers, more than the ${maxBatch} allowed per request; split the batch`);
      }
      // The whole batch is checked before anything is written, so a bad item leaves Redis unchanged.
      if (!validateReports(body)) throw new HttpError(400, describeSchemaError(validateReports.errors![0]));
      const reports = (body as { peers: PeerReport[] }).peers;
      const canonical = reports.map((p, i): PeerReport => {
        try {
          return { ...p, address: formatAddress(parseAddress(p.address)) };
        } catch (err) {
          throw new HttpError(400, `peers/${i}/address: ${(err as Error).message}`);
        }
      });
      const result = await store.upsert(canonical);
      logger.debug(result, 'peer reports stored');
      res.json(result);
    },
  );

  app.get('/api/v1/peers', route('/api/v1/peers'), async (req, res) => {
    res.json(await store.list(parsePeerQuery(req.query)));
  });

  app.use((req, res) => {
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

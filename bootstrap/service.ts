import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger } from '../lib/log.js';
import { createMetrics } from '../lib/metrics.js';
import { connectRedis } from '../lib/redis.js';
import { Authority, TRUST_MODES, type TrustMode } from './authority.js';
import { checkTrustedProxies, createBootstrapApp } from './server.js';
import { DEFAULT_NODE_TTL_SECONDS, PeerStore } from './store.js';

export const MIN_TOKEN_LENGTH = 16;
/** A week: a node silent that long is gone, whatever the operator meant. */
export const MAX_NODE_TTL_SECONDS = 7 * 86_400;
export const DEFAULT_PORT = 8080;
export const DEFAULT_HOST = '::';
/** In-flight requests get this long to finish on close before their connections are cut. */
const CLOSE_GRACE_MS = 10_000;

export interface BootstrapOptions {
  redisUrl: string;
  listenerToken: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  /** Default 127.0.0.1: in-process use (`widescan run`) needs nothing beyond this machine. */
  host?: string;
  logger?: Logger;
  /** Bearer token of the admin endpoints (≥ 16 characters, not the listener token); without it they answer 503. */
  adminToken?: string;
  /** Default trustless. */
  trustMode?: TrustMode;
  /** Authority mode's signing key: Ed25519, PKCS#8 PEM text. */
  authorityKey?: string;
  /** The key being rotated out (PKCS#8 PEM); it signs too until `previousKeyRetiresAt`. */
  previousAuthorityKey?: string;
  /** ISO-8601 time with a zone. */
  previousKeyRetiresAt?: string | Date;
  /** Proxies whose X-Forwarded-For is believed: addresses, CIDRs, `loopback`, `linklocal`, `uniquelocal`. */
  trustedProxies?: string[];
  /** P2P nodes silent for longer drop out of every list; default 300. */
  nodeTtlSeconds?: number;
  /** See BootstrapAppOptions.announceAnyAddress (env WIDESCAN_ANNOUNCE_ANY_ADDRESS=true). */
  announceAnyAddress?: boolean;
}

export interface BootstrapService {
  /** Base URL to reach the service from this machine (a wildcard host becomes loopback). */
  url: string;
  port: number;
  /** Stops accepting, lets in-flight requests finish, closes Redis. Safe to call twice. */
  close(): Promise<void>;
}

/** Refuses tokens a client could not send or an attacker could guess. */
export function checkToken(token: string, role: 'listener' | 'admin'): void {
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new Error(`${role} token is ${token.length} characters; use at least ${MIN_TOKEN_LENGTH} (e.g. \`openssl rand -hex 32\`)`);
  }
  if (/\s/.test(token)) throw new Error(`${role} token contains whitespace; a Bearer token cannot carry it`);
}

export function checkListenerToken(token: string): void {
  checkToken(token, 'listener');
}

function checkNodeTtl(ttl: number): void {
  if (!Number.isSafeInteger(ttl) || ttl < 1 || ttl > MAX_NODE_TTL_SECONDS) {
    throw new Error(`node TTL ${String(ttl)} is not a whole number of seconds from 1 to ${MAX_NODE_TTL_SECONDS}`);
  }
}

/** A file's text, naming the variable that pointed at it when it cannot be read. */
function readVarFile(name: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${name} ${file}: ${(err as Error).message}`);
  }
}

/** A secret from `NAME` or the file named by `NAME_FILE` (not both); undefined when neither is set. */
function readSecret(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const inline = env[name];
  const file = env[`${name}_FILE`];
  if (inline && file) throw new Error(`both ${name} and ${name}_FILE are set; set only one`);
  // Secrets mounted as files often end in a newline.
  if (file) return readVarFile(`${name}_FILE`, file).trim();
  return inline || undefined;
}

export type EnvBootstrapOptions = Omit<BootstrapOptions, 'logger'> & Required<Pick<BootstrapOptions, 'port' | 'host'>>;

/**
 * `startBootstrap` options from the environment: `WIDESCAN_REDIS_URL`, `WIDESCAN_LISTENER_TOKEN[_FILE]`,
 * `WIDESCAN_ADMIN_TOKEN[_FILE]`, `WIDESCAN_TRUST_MODE`, `WIDESCAN_AUTHORITY_KEY_FILE`,
 * `WIDESCAN_AUTHORITY_PREVIOUS_KEY_FILE`, `WIDESCAN_AUTHORITY_PREVIOUS_RETIRES_AT`, `WIDESCAN_TRUSTED_PROXIES`
 * (comma-separated), `WIDESCAN_NODE_TTL_SECONDS`, `PORT`, `HOST`. Only what is set appears in the result.
 */
export function bootstrapOptionsFromEnv(env: NodeJS.ProcessEnv): EnvBootstrapOptions {
  const redisUrl = env.WIDESCAN_REDIS_URL;
  if (!redisUrl) throw new Error('WIDESCAN_REDIS_URL is not set; point it at Redis, e.g. redis://redis:6379');
  const listenerToken = readSecret(env, 'WIDESCAN_LISTENER_TOKEN');
  if (listenerToken === undefined) throw new Error('no listener token: set WIDESCAN_LISTENER_TOKEN or WIDESCAN_LISTENER_TOKEN_FILE');
  checkToken(listenerToken, 'listener');
  const portText = env.PORT ?? String(DEFAULT_PORT);
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText) || port > 65535) throw new Error(`PORT ${JSON.stringify(portText)} is not a port number (0-65535)`);
  const opts: EnvBootstrapOptions = { redisUrl, listenerToken, port, host: env.HOST || DEFAULT_HOST };

  const adminToken = readSecret(env, 'WIDESCAN_ADMIN_TOKEN');
  if (adminToken !== undefined) {
    checkToken(adminToken, 'admin');
    opts.adminToken = adminToken;
  }
  const mode = env.WIDESCAN_TRUST_MODE;
  if (mode) {
    if (!(TRUST_MODES as readonly string[]).includes(mode)) {
      throw new Error(`WIDESCAN_TRUST_MODE ${JSON.stringify(mode.slice(0, 40))} is not one of ${TRUST_MODES.join(', ')}`);
    }
    opts.trustMode = mode as TrustMode;
  }
  if (env.WIDESCAN_AUTHORITY_KEY_FILE) opts.authorityKey = readVarFile('WIDESCAN_AUTHORITY_KEY_FILE', env.WIDESCAN_AUTHORITY_KEY_FILE);
  if (env.WIDESCAN_AUTHORITY_PREVIOUS_KEY_FILE) {
    opts.previousAuthorityKey = readVarFile('WIDESCAN_AUTHORITY_PREVIOUS_KEY_FILE', env.WIDESCAN_AUTHORITY_PREVIOUS_KEY_FILE);
  }
  if (env.WIDESCAN_AUTHORITY_PREVIOUS_RETIRES_AT) opts.previousKeyRetiresAt = env.WIDESCAN_AUTHORITY_PREVIOUS_RETIRES_AT;
  if (env.WIDESCAN_TRUSTED_PROXIES) {
    const list = env.WIDESCAN_TRUSTED_PROXIES.split(',').map((p) => p.trim()).filter((p) => p !== '');
    try {
      opts.trustedProxies = checkTrustedProxies(list);
    } catch (err) {
      throw new Error(`WIDESCAN_TRUSTED_PROXIES: ${(err as Error).message}`);
    }
  }
  if (env.WIDESCAN_ANNOUNCE_ANY_ADDRESS) {
    if (!['true', 'false'].includes(env.WIDESCAN_ANNOUNCE_ANY_ADDRESS)) throw new Error('WIDESCAN_ANNOUNCE_ANY_ADDRESS must be true or false');
    opts.announceAnyAddress = env.WIDESCAN_ANNOUNCE_ANY_ADDRESS === 'true';
  }
  const ttlText = env.WIDESCAN_NODE_TTL_SECONDS;
  if (ttlText) {
    const ttl = /^\d{1,7}$/.test(ttlText) ? Number(ttlText) : NaN;
    try {
      checkNodeTtl(ttl);
    } catch {
      throw new Error(`WIDESCAN_NODE_TTL_SECONDS ${JSON.stringify(ttlText.slice(0, 40))} is not a whole number of seconds from 1 to ${MAX_NODE_TTL_SECONDS}`);
    }
    opts.nodeTtlSeconds = ttl;
  }
  return opts;
}

function reachableUrl(address: AddressInfo): string {
  let host = address.address;
  if (host === '::') host = '::1';
  else if (host === '0.0.0.0') host = '127.0.0.1';
  return `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`;
}

function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Starts the bootstrap service with its own Redis connection and metrics registry. */
export async function startBootstrap(opts: BootstrapOptions): Promise<BootstrapService> {
  // Every setting is checked before anything starts, so a misconfigured service never half-runs.
  checkToken(opts.listenerToken, 'listener');
  if (opts.adminToken !== undefined) checkToken(opts.adminToken, 'admin');
  if (opts.adminToken !== undefined && opts.adminToken === opts.listenerToken) {
    throw new Error('the admin token equals the listener token; give the admin a token of its own');
  }
  const nodeTtlSeconds = opts.nodeTtlSeconds ?? DEFAULT_NODE_TTL_SECONDS;
  checkNodeTtl(nodeTtlSeconds);
  const trustedProxies = checkTrustedProxies(opts.trustedProxies ?? []);
  const authority = Authority.create({
    mode: opts.trustMode,
    key: opts.authorityKey,
    previousKey: opts.previousAuthorityKey,
    previousRetiresAt: opts.previousKeyRetiresAt,
  });
  const logger = opts.logger ?? createLogger('bootstrap');
  // Few retries per command: an HTTP caller is better served by a quick 503 than a request hanging
  // until Redis returns.
  const redis = connectRedis(opts.redisUrl, { maxRetriesPerRequest: 2 });
  let lastRedisError = '';
  redis.on('error', (err: Error) => {
    if (err.message !== lastRedisError) logger.warn({ err }, 'redis connection error');
    lastRedisError = err.message;
  });
  redis.on('ready', () => (lastRedisError = ''));

  const app = createBootstrapApp({
    store: new PeerStore(redis, { nodeTtlSeconds }),
    redis,
    listenerToken: opts.listenerToken,
    adminToken: opts.adminToken,
    authority,
    trustedProxies,
    announceAnyAddress: opts.announceAnyAddress,
    metrics: createMetrics('bootstrap'),
    logger,
  });
  const server = createServer(app);
  let address: AddressInfo;
  try {
    address = await listen(server, opts.port ?? 0, opts.host ?? '127.0.0.1');
  } catch (err) {
    redis.disconnect();
    throw new Error(`bootstrap cannot listen on ${opts.host ?? '127.0.0.1'} port ${opts.port ?? 0}: ${(err as Error).message}`);
  }
  const url = reachableUrl(address);
  logger.info({ url, trustMode: authority.mode, keys: authority.info().keys.map((k) => k.id), admin: opts.adminToken !== undefined }, 'bootstrap service listening');

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      grace.unref();
      // server.close() stops accepting and, on Node ≥ 19, drops idle keep-alive connections at once.
      await new Promise<void>((resolve) => server.close(() => resolve()));
      clearTimeout(grace);
      if (redis.status === 'ready') {
        await redis.quit().catch(() => redis.disconnect());
      } else {
        redis.disconnect(); // reconnecting: QUIT would wait for a Redis that may never return
      }
      logger.info('bootstrap service stopped');
    })());
  return { url, port: address.port, close };
}

import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger } from '../lib/log.js';
import { createMetrics } from '../lib/metrics.js';
import { connectRedis } from '../lib/redis.js';
import { createBootstrapApp } from './server.js';
import { PeerStore } from './store.js';

export const MIN_TOKEN_LENGTH = 16;
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
}

export interface BootstrapService {
  /** Base URL to reach the service from this machine (a wildcard host becomes loopback). */
  url: string;
  port: number;
  /** Stops accepting, lets in-flight requests finish, closes Redis. Safe to call twice. */
  close(): Promise<void>;
}

/** Refuses tokens a listener could not send or an attacker could guess. */
export function checkListenerToken(token: string): void {
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new Error(`listener token is ${token.length} characters; use at least ${MIN_TOKEN_LENGTH} (e.g. \`openssl rand -hex 32\`)`);
  }
  if (/\s/.test(token)) throw new Error('listener token contains whitespace; a Bearer token cannot carry it');
}

/** `startBootstrap` options from the environment (`WIDESCAN_REDIS_URL`, `WIDESCAN_LISTENER_TOKEN[_FILE]`, `PORT`, `HOST`). */
export function bootstrapOptionsFromEnv(env: NodeJS.ProcessEnv): Required<Omit<BootstrapOptions, 'logger'>> {
  const redisUrl = env.WIDESCAN_REDIS_URL;
  if (!redisUrl) throw new Error('WIDESCAN_REDIS_URL is not set; point it at Redis, e.g. redis://redis:6379');
  const inline = env.WIDESCAN_LISTENER_TOKEN;
  const file = env.WIDESCAN_LISTENER_TOKEN_FILE;
  if (inline && file) throw new Error('both WIDESCAN_LISTENER_TOKEN and WIDESCAN_LISTENER_TOKEN_FILE are set; set only one');
  let listenerToken: string;
  if (file) {
    try {
      listenerToken = readFileSync(file, 'utf8').trim(); // Secrets mounted as files often end in a newline
    } catch (err) {
      throw new Error(`cannot read WIDESCAN_LISTENER_TOKEN_FILE ${file}: ${(err as Error).message}`);
    }
  } else if (inline) {
    listenerToken = inline;
  } else {
    throw new Error('no listener token: set WIDESCAN_LISTENER_TOKEN or WIDESCAN_LISTENER_TOKEN_FILE');
  }
  checkListenerToken(listenerToken);
  const portText = env.PORT ?? String(DEFAULT_PORT);
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText) || port > 65535) throw new Error(`PORT ${JSON.stringify(portText)} is not a port number (0-65535)`);
  return { redisUrl, listenerToken, port, host: env.HOST || DEFAULT_HOST };
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
  checkListenerToken(opts.listenerToken);
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
    store: new PeerStore(redis), redis, listenerToken: opts.listenerToken, metrics: createMetrics('bootstrap'), logger,
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
  logger.info({ url }, 'bootstrap service listening');

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

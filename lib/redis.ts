import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis, type RedisOptions } from 'ioredis';
import { freePort, stopChild } from './proc.js';

/**
 * A Redis client for a `redis://` URL. `maxRetriesPerRequest: null` is what BullMQ requires of the
 * connections its workers block on, and is harmless elsewhere: commands wait for a reconnect instead of
 * failing after a few tries.
 */
export function connectRedis(url: string, options: RedisOptions = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableAutoPipelining: true, ...options });
}

export interface EmbeddedRedis {
  /** A `redis://` URL, or the socket's path with `unixSocket` (both are what connectRedis takes). */
  url: string;
  stop(): Promise<void>;
}

export interface EmbeddedRedisOptions {
  binary?: string;
  /**
   * Listen on a Unix socket in the temporary directory instead of loopback TCP: processes in other network
   * namespaces of this machine reach it through the file system, which network namespaces do not separate.
   */
  unixSocket?: boolean;
}

/**
 * Starts a private `redis-server` on a free loopback port (or a Unix socket), with no persistence and
 * `noeviction` (BullMQ must never lose a key), in a temporary directory removed by `stop()`.
 */
export async function startEmbeddedRedis(options: EmbeddedRedisOptions = {}): Promise<EmbeddedRedis> {
  for (let attempt = 0; ; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), 'widescan-redis-'));
    const socket = join(dir, 'redis.sock');
    const port = options.unixSocket ? 0 : await freePort();
    const listen = options.unixSocket
      ? ['--port', '0', '--unixsocket', socket, '--unixsocketperm', '700']
      : ['--port', String(port), '--bind', '127.0.0.1', '--protected-mode', 'yes'];
    const child = spawn(options.binary ?? 'redis-server', [
      ...listen, '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction', '--dir', dir, '--loglevel', 'warning',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const where = options.unixSocket ? { path: socket } : { port, host: '127.0.0.1' };
    try {
      await waitReady(child, where);
    } catch (err) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      // Another process may have taken the port between our probe and redis' bind: try another.
      if (!options.unixSocket && attempt < 3 && !(err as NodeJS.ErrnoException).code) continue;
      throw err;
    }
    return {
      url: options.unixSocket ? socket : `redis://127.0.0.1:${port}`,
      stop: () => stopChild(child, 3000).then(() => rmSync(dir, { recursive: true, force: true })),
    };
  }
}

async function waitReady(child: ChildProcess, where: { path: string } | { port: number; host: string }): Promise<void> {
  let output = '';
  child.stdout?.on('data', (d) => (output += d));
  child.stderr?.on('data', (d) => (output += d));
  const exited = new Promise<never>((_, reject) => {
    child.once('error', reject); // ENOENT: redis-server is not installed
    child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${output.trim()}`)));
  });
  const deadline = Date.now() + 10_000;
  const ready = (async () => {
    while (Date.now() < deadline) {
      const client = new Redis({ ...where, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      client.on('error', () => {});
      try {
        await client.connect();
        await client.ping();
        await client.quit();
        return;
      } catch {
        // disconnect() on a closed client arms a timer that would keep the process alive for seconds
        if (client.status !== 'end') client.disconnect();
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    throw new Error(`redis-server did not become ready on ${'path' in where ? where.path : `port ${where.port}`}: ${output.trim()}`);
  })();
  await Promise.race([ready, exited]);
}

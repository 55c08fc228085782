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
  url: string;
  port: number;
  stop(): Promise<void>;
}

/**
 * Starts a private `redis-server` on a free loopback port, with no persistence and `noeviction` (BullMQ
 * must never lose a key), in a temporary directory removed by `stop()`.
 */
export async function startEmbeddedRedis(binary = 'redis-server'): Promise<EmbeddedRedis> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'widescan-redis-'));
    const child = spawn(binary, [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--maxmemory-policy', 'noeviction', '--dir', dir, '--protected-mode', 'yes', '--loglevel', 'warning',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await waitReady(child, port);
    } catch (err) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      // Another process may have taken the port between our probe and redis' bind: try another.
      if (attempt < 3 && !(err as NodeJS.ErrnoException).code) continue;
      throw err;
    }
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      stop: () => stopChild(child, 3000).then(() => rmSync(dir, { recursive: true, force: true })),
    };
  }
}

async function waitReady(child: ChildProcess, port: number): Promise<void> {
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
      const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
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
    throw new Error(`redis-server did not become ready on port ${port}: ${output.trim()}`);
  })();
  await Promise.race([ready, exited]);
}

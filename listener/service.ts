// Assembles a running listener from its settings; shared by the listener's entrypoint (env) and
// `widescan listen` / `widescan run` (flags).

import { hostname, networkInterfaces } from 'node:os';
import type { Redis } from 'ioredis';
import { addressToBytes, parseAddress } from '../lib/core/ipv6.js';
import { jobTagOf, networkIdOf } from '../lib/core/keys.js';
import { openIcmp6Socket } from '../lib/icmp6socket.js';
import { addCounters } from '../lib/jobstore.js';
import { keys, type JobCounter } from '../lib/keys.js';
import type { Logger } from '../lib/log.js';
import type { Metrics } from '../lib/metrics.js';
import { Listener } from './listener.js';
import { BootstrapReporter, StdoutReporter, type Reporter } from './reporter.js';

export interface ListenerServiceOptions {
  networkKey: Uint8Array;
  /** Job registry and counters; without Redis, only widescan peers are recognised (foreign tags). */
  redis?: Redis;
  /** Bootstrap service; without it, peers are printed as NDJSON on stdout. */
  bootstrap?: { url: string; token: string };
  answerHellos: boolean;
  instanceId?: string;
  logger: Logger;
  metrics: Metrics;
}

export interface ListenerService {
  /** Delivers buffered peers and counters. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** Global and unique-local addresses of this host, refreshed every 10 s (interfaces come and go). */
function localAddressSource(): () => Uint8Array[] {
  let cached: Uint8Array[] = [];
  let at = 0;
  return () => {
    if (Date.now() - at < 10_000) return cached;
    at = Date.now();
    cached = Object.values(networkInterfaces())
      .flat()
      .filter((i) => i !== undefined && i.family === 'IPv6' && !i.address.toLowerCase().startsWith('fe80'))
      .map((i) => addressToBytes(parseAddress(i!.address.split('%')[0]!)));
    return cached;
  };
}

export async function startListenerService(o: ListenerServiceOptions): Promise<ListenerService> {
  const socket = openIcmp6Socket({ receiveTypes: [128, 129], receiveBufferBytes: 8 << 20 });
  const reporter: Reporter = o.bootstrap
    ? new BootstrapReporter({ url: o.bootstrap.url, token: o.bootstrap.token, logger: o.logger, metrics: o.metrics })
    : new StdoutReporter();

  // tag → job id, from the registry the planner writes; refreshed so that new jobs are recognised.
  let tags = new Map<number, string>();
  const refreshTags = async () => {
    if (!o.redis) return;
    const h = await o.redis.hgetall(keys.tags());
    tags = new Map(Object.entries(h).map(([hex, id]) => [parseInt(hex, 16), id]));
  };
  await refreshTags();

  const pending = new Map<string, Partial<Record<JobCounter, number>>>();
  const flushCounters = async () => {
    if (!o.redis || pending.size === 0) return;
    const batch = [...pending];
    pending.clear();
    await Promise.all(batch.map(([job, deltas]) => addCounters(o.redis!, job, deltas)));
  };
  const timer = setInterval(() => {
    refreshTags().catch((err) => o.logger.warn({ err: String(err) }, 'job registry unavailable'));
    flushCounters().catch((err) => o.logger.warn({ err: String(err) }, 'counters not written'));
  }, 500);

  const instanceId = o.instanceId ?? `${hostname()}/${process.pid}`;
  new Listener({
    socket,
    networkKey: o.networkKey,
    networkId: networkIdOf(o.networkKey),
    instanceTag: jobTagOf(`instance/${instanceId}`),
    localAddresses: localAddressSource(),
    jobOfTag: (tag) => tags.get(tag),
    report: (peer) => reporter.report(peer),
    count: (job, counter, n) => {
      if (!o.redis || ![...tags.values()].includes(job)) return;
      const deltas = pending.get(job) ?? {};
      deltas[counter] = (deltas[counter] ?? 0) + n;
      pending.set(job, deltas);
    },
    answerHellos: o.answerHellos,
    logger: o.logger,
    metrics: o.metrics,
  });
  o.logger.info({ instanceId, hellos: o.answerHellos, bootstrap: o.bootstrap?.url ?? null }, 'listener started');

  return {
    async flush() {
      await refreshTags();
      await flushCounters();
      await reporter.flush();
    },
    async close() {
      clearInterval(timer);
      socket.close();
      await flushCounters().catch(() => undefined);
      await reporter.close();
    },
  };
}

// Assembles a running listener from its settings; shared by the listener's entrypoint (env) and
// `widescan listen` / `widescan run` (flags).

import { hostname, networkInterfaces } from 'node:os';
import type { Redis } from 'ioredis';
import { addressToBytes, parseAddress } from '../lib/core/ipv6.js';
import { jobTagHex, jobTagOf, networkIdOf } from '../lib/core/keys.js';
import { openIcmp6Transport } from '../lib/icmp6native.js';
import { addCounters } from '../lib/jobstore.js';
import { keys, type JobCounter } from '../lib/keys.js';
import type { Logger } from '../lib/log.js';
import type { Metrics } from '../lib/metrics.js';
import { Listener, peerReport, type TaggedReport } from './listener.js';
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
  const io = openIcmp6Transport({ receiveTypes: [128, 129], receiveBufferBytes: 32 << 20 });
  o.metrics.ioPath.set({ path: io.path }, 1);
  const reporter: Reporter = o.bootstrap
    ? new BootstrapReporter({ url: o.bootstrap.url, token: o.bootstrap.token, logger: o.logger, metrics: o.metrics })
    : new StdoutReporter();

  // tag → job id, from the registry the planner writes. A reply can arrive before the periodic re-read has
  // seen a new job, so reports and counts of unknown tags wait for an immediate re-read instead of being
  // attributed to a bare tag.
  let tags = new Map<number, string>();
  let refreshing: Promise<void> | undefined;
  const refreshTags = () =>
    (refreshing ??= (async () => {
      try {
        if (o.redis) tags = new Map(Object.entries(await o.redis.hgetall(keys.tags())).map(([hex, id]) => [parseInt(hex, 16), id]));
      } finally {
        refreshing = undefined;
      }
    })());
  await refreshTags();
  const jobOf = (tag: number) => tags.get(tag) ?? jobTagHex(tag);

  const unresolved: TaggedReport[] = [];
  const resolveReports = async () => {
    if (unresolved.length === 0) return;
    await refreshTags().catch((err) => o.logger.warn({ err: String(err) }, 'job registry unavailable'));
    for (const peer of unresolved.splice(0)) reporter.report(peerReport(peer, jobOf(peer.tag)));
  };
  const pending = new Map<number, Partial<Record<JobCounter, number>>>();
  const flushCounters = async () => {
    if (!o.redis || pending.size === 0) return;
    if ([...pending.keys()].some((tag) => !tags.has(tag))) await refreshTags();
    const batch = [...pending];
    pending.clear();
    // Counters of foreign tags (other installations' jobs) have no job here to count against.
    await Promise.all(batch.filter(([tag]) => tags.has(tag)).map(([tag, deltas]) => addCounters(o.redis!, tags.get(tag)!, deltas)));
  };
  const timer = setInterval(() => {
    refreshTags().catch((err) => o.logger.warn({ err: String(err) }, 'job registry unavailable'));
    flushCounters().catch((err) => o.logger.warn({ err: String(err) }, 'counters not written'));
  }, 2000);

  const instanceId = o.instanceId ?? `${hostname()}/${process.pid}`;
  new Listener({
    io,
    networkKey: o.networkKey,
    networkId: networkIdOf(o.networkKey),
    instanceTag: jobTagOf(`instance/${instanceId}`),
    localAddresses: localAddressSource(),
    isOwnTag: (tag) => tags.has(tag),
    labelOf: jobOf,
    report: (peer) => {
      const job = tags.get(peer.tag);
      if (job !== undefined || !o.redis) {
        reporter.report(peerReport(peer, job ?? jobTagHex(peer.tag)));
        return;
      }
      if (unresolved.push(peer) === 1) void resolveReports();
    },
    count: (tag, counter, n) => {
      if (!o.redis) return;
      const deltas = pending.get(tag) ?? {};
      deltas[counter] = (deltas[counter] ?? 0) + n;
      pending.set(tag, deltas);
    },
    answerHellos: o.answerHellos,
    logger: o.logger,
    metrics: o.metrics,
  });
  o.logger.info({ instanceId, hellos: o.answerHellos, bootstrap: o.bootstrap?.url ?? null, io: io.path }, 'listener started');

  return {
    async flush() {
      await refreshTags();
      await resolveReports();
      await flushCounters();
      await reporter.flush();
    },
    async close() {
      clearInterval(timer);
      io.close();
      await flushCounters().catch(() => undefined);
      await reporter.close();
    },
  };
}

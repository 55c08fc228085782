// The planner on a real redis-server and real BullMQ: bounded window, top-up, idempotent shard completion,
// phases and status. No packets: shards are finished here the way a worker finishes them.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { compileJob, type CompiledJob, type JobManifest } from '../../lib/core/job.js';
import { addCounters, finishShard, readCounters, removeJob } from '../../lib/jobstore.js';
import { keys } from '../../lib/keys.js';
import { createShardQueue, shardJobId } from '../../lib/queue.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';
import { Planner } from '../../operator/planner.js';

let server: EmbeddedRedis;
let redis: Redis;
let queue: Queue;

beforeAll(async () => {
  server = await startEmbeddedRedis();
  redis = connectRedis(server.url);
  queue = createShardQueue(redis);
});
afterAll(async () => {
  await queue.close();
  redis.disconnect();
  await server.stop();
});

function job(name: string, targets: JobManifest['spec']['targets'], extra: Partial<JobManifest['spec']> = {}): CompiledJob {
  return compileJob({
    apiVersion: 'widescan.dev/v1alpha1',
    kind: 'WidescanJob',
    metadata: { name, uid: `${name}-uid` },
    spec: {
      targets,
      allowNonGlobal: true, // documentation space: nothing is sent here, the planner only plans
      rate: { packetsPerSecond: 10000 },
      hardware: 'auto',
      shardSize: 256,
      probe: { hopLimit: 64, retries: 0, replyTimeoutSeconds: 1 },
      suspend: false,
      ...extra,
    },
  });
}

const register = { macKey: new Uint8Array(16), networkId: 7, blocklist: [], fullLimitBits: 32 };

async function queuedShards(id: string): Promise<number[]> {
  const jobs = await queue.getJobs(['waiting', 'active', 'delayed', 'prioritized']);
  return jobs.filter((j) => j.data.job === id).map((j) => j.data.shard as number).sort((a, b) => a - b);
}

describe('planner', () => {
  test('keeps at most `window` shards queued for a large job and tops up as shards finish', async () => {
    // 2^20 targets in 256-position shards: 4096 shards, of which only the window is ever in Redis.
    const big = job('big', [{ prefix: '2001:db8:1::/108', strategy: 'full' }]);
    expect(big.totalShards).toBe(4096);
    const planner = new Planner(redis, queue, { window: 6 });
    await planner.submit(big, register);
    expect(await queuedShards('big')).toEqual([0, 1, 2, 3, 4, 5]);
    expect(await planner.topUp('big')).toBe(0); // full window: nothing added

    await finishShard(redis, 'big', 0, 'completed', 0);
    await finishShard(redis, 'big', 2, 'failed', 0);
    for (const k of [0, 2]) await (await queue.getJob(shardJobId(big.tag, k)))?.remove();
    const status = await planner.tick('big');
    expect(await queuedShards('big')).toEqual([1, 3, 4, 5, 6, 7]);
    expect(status).toMatchObject({ phase: 'Running', targets: 2 ** 20, shards: { total: 4096, completed: 1, failed: 1, active: 6 }, progress: '0%' });
    expect(status.estimatedCompletionTime).toBeDefined();
    await queue.obliterate({ force: true });
    await removeJob(redis, 'big', big.tag);
  });

  test('shard completion is idempotent: a redelivered shard is counted once, with its excluded positions', async () => {
    const j = job('idem', [{ prefix: '2001:db8:2::/120', strategy: 'full' }]);
    const planner = new Planner(redis, queue, { window: 2 });
    await planner.submit(j, register);
    expect(await finishShard(redis, 'idem', 0, 'completed', 5)).toBe(true);
    expect(await finishShard(redis, 'idem', 0, 'completed', 5)).toBe(false);
    expect(await finishShard(redis, 'idem', 0, 'failed', 0)).toBe(false);
    const c = await readCounters(redis, 'idem');
    expect(c).toMatchObject({ shardsCompleted: 1, shardsFailed: 0, excluded: 5 });
    await queue.obliterate({ force: true });
    await removeJob(redis, 'idem', j.tag);
  });

  test('phases: Running until every shard is done and the reply timeout has passed; Failed when a shard failed', async () => {
    const ok = job('ok', [{ prefix: '2001:db8:2::/120', strategy: 'full' }]); // 1 shard
    const bad = job('bad', [{ prefix: '2001:db8:3::/119', strategy: 'full' }]); // 2 shards
    const planner = new Planner(redis, queue, { window: 4 });
    await planner.submit(ok, register);
    await planner.submit(bad, register);
    await addCounters(redis, 'ok', { probesSent: 256, repliesValid: 3 });
    await finishShard(redis, 'ok', 0, 'completed', 0);
    const now = Date.now();
    expect((await planner.tick('ok', now)).phase).toBe('Running'); // waiting for late replies
    const done = await planner.tick('ok', now + 1500);
    expect(done).toMatchObject({ phase: 'Succeeded', probesSent: 256, repliesValid: 3, progress: '100%' });
    expect(done.completionTime).toBeDefined();
    expect((await planner.tick('ok', now + 5000)).phase).toBe('Succeeded'); // terminal
    expect(await planner.topUp('ok')).toBe(0);

    await finishShard(redis, 'bad', 0, 'completed', 0);
    await finishShard(redis, 'bad', 1, 'failed', 0);
    expect((await planner.tick('bad', Date.now() + 1500)).phase).toBe('Failed');
    await queue.obliterate({ force: true });
  });

  test('cancel drops the job\'s queued shards and stops top-ups; other jobs keep theirs', async () => {
    const a = job('cancel-a', [{ prefix: '2001:db8:4::/112', strategy: 'full' }]);
    const b = job('cancel-b', [{ prefix: '2001:db8:5::/112', strategy: 'full' }]);
    const planner = new Planner(redis, queue, { window: 3 });
    await planner.submit(a, register);
    await planner.submit(b, register);
    await planner.cancel('cancel-a');
    expect(await queuedShards('cancel-a')).toEqual([]);
    expect(await queuedShards('cancel-b')).toEqual([0, 1, 2]);
    expect(await redis.hget(keys.job('cancel-a'), 'cancelled')).toBe('1');
    expect(await planner.topUp('cancel-a')).toBe(0);
    await queue.obliterate({ force: true });
  });

  test('refuses a window that is not a positive integer', () => {
    expect(() => new Planner(redis, queue, { window: 0 })).toThrow(/window must be a positive integer/);
  });
});

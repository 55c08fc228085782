// The planner on a real redis-server and real BullMQ: bounded window, top-up, idempotent shard completion,
// phases and status. No packets: shards are finished here the way a worker finishes them.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { Redis } from 'ioredis';
import { compileJob, type CompiledJob, type JobManifest } from '../../lib/core/job.js';
import { addCounters, finishShard, readCounters, removeJob } from '../../lib/jobstore.js';
import { keys } from '../../lib/keys.js';
import { ShardQueues, shardJobId } from '../../lib/queue.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';
import { Planner, windowFor } from '../../operator/planner.js';

let server: EmbeddedRedis;
let redis: Redis;
let queues: ShardQueues;

beforeAll(async () => {
  server = await startEmbeddedRedis();
  redis = connectRedis(server.url);
  queues = new ShardQueues(redis);
});
afterAll(async () => {
  await queues.close();
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
      rate: { packetsPerSecond: 100 }, // under one shard per second: the window is `window` (see windowFor)
      hardware: 'auto',
      shardSize: 256,
      probe: { hopLimit: 64, retries: 0, replyTimeoutSeconds: 1 },
      suspend: false,
      ...extra,
    },
  });
}

const register = { macKey: new Uint8Array(16), networkId: 7, blocklist: [], fullLimitBits: 32 };

const queue = () => queues.for('auto');
const obliterate = () => Promise.all(queues.all.map((q) => q.obliterate({ force: true })));

async function queuedShards(id: string, hardware: 'auto' | 'gpu' = 'auto'): Promise<number[]> {
  const jobs = await queues.for(hardware).getJobs(['waiting', 'active', 'delayed', 'prioritized']);
  return jobs.filter((j) => j.data.job === id).map((j) => j.data.shard as number).sort((a, b) => a - b);
}

describe('planner', () => {
  test('keeps at most `window` shards queued for a large job and tops up as shards finish', async () => {
    // 2^20 targets in 256-position shards: 4096 shards, of which only the window is ever in Redis.
    const big = job('big', [{ prefix: '2001:db8:1::/108', strategy: 'full' }]);
    expect(big.totalShards).toBe(4096);
    const planner = new Planner(redis, queues, { window: 6 });
    await planner.submit(big, register);
    expect(await queuedShards('big')).toEqual([0, 1, 2, 3, 4, 5]);
    expect(await planner.topUp('big')).toBe(0); // full window: nothing added

    await finishShard(redis, 'big', 0, 'completed', 0);
    await finishShard(redis, 'big', 2, 'failed', 0);
    for (const k of [0, 2]) await (await queue().getJob(shardJobId(big.tag, k)))?.remove();
    const status = await planner.tick('big');
    expect(await queuedShards('big')).toEqual([1, 3, 4, 5, 6, 7]);
    expect(status).toMatchObject({ phase: 'Running', targets: 2 ** 20, shards: { total: 4096, completed: 1, failed: 1, active: 6 }, progress: '0%' });
    expect(status.estimatedCompletionTime).toBeDefined();
    await obliterate();
    await removeJob(redis, 'big', big.tag);
  });

  test('shard completion is idempotent: a redelivered shard is counted once, with its excluded positions', async () => {
    const j = job('idem', [{ prefix: '2001:db8:2::/120', strategy: 'full' }]);
    const planner = new Planner(redis, queues, { window: 2 });
    await planner.submit(j, register);
    expect(await finishShard(redis, 'idem', 0, 'completed', 5)).toBe(true);
    expect(await finishShard(redis, 'idem', 0, 'completed', 5)).toBe(false);
    expect(await finishShard(redis, 'idem', 0, 'failed', 0)).toBe(false);
    const c = await readCounters(redis, 'idem');
    expect(c).toMatchObject({ shardsCompleted: 1, shardsFailed: 0, excluded: 5 });
    await obliterate();
    await removeJob(redis, 'idem', j.tag);
  });

  test('phases: Running until every shard is done and the reply timeout has passed; Failed when a shard failed', async () => {
    const ok = job('ok', [{ prefix: '2001:db8:2::/120', strategy: 'full' }]); // 1 shard
    const bad = job('bad', [{ prefix: '2001:db8:3::/119', strategy: 'full' }]); // 2 shards
    const planner = new Planner(redis, queues, { window: 4 });
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
    await obliterate();
  });

  test('cancel drops the job\'s queued shards and stops top-ups; other jobs keep theirs', async () => {
    const a = job('cancel-a', [{ prefix: '2001:db8:4::/112', strategy: 'full' }]);
    const b = job('cancel-b', [{ prefix: '2001:db8:5::/112', strategy: 'full' }]);
    const planner = new Planner(redis, queues, { window: 3 });
    await planner.submit(a, register);
    await planner.submit(b, register);
    await planner.cancel('cancel-a');
    expect(await queuedShards('cancel-a')).toEqual([]);
    expect(await queuedShards('cancel-b')).toEqual([0, 1, 2]);
    expect(await redis.hget(keys.job('cancel-a'), 'cancelled')).toBe('1');
    expect(await planner.topUp('cancel-a')).toBe(0);
    await obliterate();
  });

  test('shards of `hardware: gpu` jobs go to the queue only GPU-capable workers read', async () => {
    const g = job('gpu-only', [{ prefix: '2001:db8:6::/118', strategy: 'full' }], { hardware: 'gpu' });
    const planner = new Planner(redis, queues, { window: 3 });
    await planner.submit(g, register);
    expect(await queuedShards('gpu-only', 'gpu')).toEqual([0, 1, 2]);
    expect(await queuedShards('gpu-only')).toEqual([]);
    await obliterate();
    await removeJob(redis, 'gpu-only', g.tag);
  });

  test('suspend stops top-ups and shows Suspended; resume tops up again and runs on', async () => {
    const j = job('pause', [{ prefix: '2001:db8:7::/116', strategy: 'full' }]); // 16 shards
    const planner = new Planner(redis, queues, { window: 2 });
    await planner.submit(j, register);
    await planner.control('pause', { suspended: true, packetsPerSecond: 500 });
    expect(await redis.hmget(keys.job('pause'), 'suspended', 'packetsPerSecond')).toEqual(['1', '500']);
    await finishShard(redis, 'pause', 0, 'completed', 0);
    await (await queue().getJob(shardJobId(j.tag, 0)))?.remove();
    expect((await planner.tick('pause')).phase).toBe('Suspended');
    expect(await queuedShards('pause')).toEqual([1]); // no top-up while suspended
    await planner.control('pause', { suspended: false, packetsPerSecond: 500 });
    expect((await planner.tick('pause')).phase).toBe('Running');
    expect(await queuedShards('pause')).toEqual([1, 2]);
    await obliterate();
    await removeJob(redis, 'pause', j.tag);
  });

  test('remove waits while a worker holds a shard, then leaves no key; late counters do not recreate the job', async () => {
    const j = job('gone', [{ prefix: '2001:db8:8::/118', strategy: 'full' }]);
    const planner = new Planner(redis, queues, { window: 2 });
    await planner.submit(j, register);
    // Take shard 0 the way a worker does, so it is active.
    const { Worker } = await import('bullmq');
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let taken!: () => void;
    const active = new Promise<void>((r) => (taken = r));
    const connection = connectRedis(server.url);
    const worker = new Worker(queue().name, async () => { taken(); await held; }, { connection, prefix: 'widescan' });
    await active;
    expect(await planner.activeShards('gone')).toBe(1);
    expect(await planner.remove('gone', j.tag)).toBe(false);
    expect(await redis.hget(keys.job('gone'), 'cancelled')).toBe('1');
    release();
    await worker.close();
    connection.disconnect();
    expect(await planner.remove('gone', j.tag)).toBe(true);
    await addCounters(redis, 'gone', { repliesValid: 1 });
    expect(await finishShard(redis, 'gone', 1, 'completed', 0)).toBe(false);
    expect(await redis.keys('widescan:job:gone*')).toEqual([]);
    expect(await redis.hget(keys.tags(), j.tag.toString(16).padStart(8, '0'))).toBeNull();
    await obliterate();
  });

  test('a fast job gets a window of one second of sending (capped), so top-ups every quarter second keep up', async () => {
    expect(windowFor(4, { shardSize: 256 }, 100)).toBe(4);
    expect(windowFor(4, { shardSize: 256 }, 10_000)).toBe(40);
    expect(windowFor(4, { shardSize: 16 }, 1e9)).toBe(1024);
    const fast = job('fast', [{ prefix: '2001:db8:c::/112', strategy: 'full' }], { rate: { packetsPerSecond: 2048 } }); // 8 shards/s
    const planner = new Planner(redis, queues, { window: 2 });
    await planner.submit(fast, register);
    expect(await queuedShards('fast')).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    await obliterate();
    await removeJob(redis, 'fast', fast.tag);
  });

  test('refuses a window that is not a positive integer', () => {
    expect(() => new Planner(redis, queues, { window: 0 })).toThrow(/window must be a positive integer/);
  });
});

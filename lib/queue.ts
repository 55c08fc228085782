import { Queue, type ConnectionOptions } from 'bullmq';
import type { Hardware } from './core/job.js';
import { jobTagHex } from './core/keys.js';
import { BULL_PREFIX, SHARD_QUEUE, SHARD_QUEUE_GPU } from './keys.js';

/** One shard to scan; everything else is recomputed from the job registered in Redis. */
export interface ShardData {
  job: string;
  shard: number;
}

/** BullMQ job ids must not contain ':'; the job tag and the shard number never do. */
export const shardJobId = (tag: number, shard: number) => `${jobTagHex(tag)}-${shard}`;

/**
 * Shards of `hardware: gpu` jobs wait in their own queue, which only GPU-capable workers read: a CPU-pool
 * worker must never take them (`gpu` never falls back). `auto` and `cpu` shards go to the queue every
 * worker reads.
 */
export const queueNameFor = (hardware: Hardware): string => (hardware === 'gpu' ? SHARD_QUEUE_GPU : SHARD_QUEUE);

/** The queues a worker of this kind reads: a CPU-pool worker only the common one. */
export const queuesReadBy = (worker: Hardware): string[] => (worker === 'cpu' ? [SHARD_QUEUE] : [SHARD_QUEUE_GPU, SHARD_QUEUE]);

export class ShardQueues {
  readonly all: Queue<ShardData>[];
  private readonly byName = new Map<string, Queue<ShardData>>();

  constructor(connection: ConnectionOptions) {
    for (const name of [SHARD_QUEUE, SHARD_QUEUE_GPU]) {
      this.byName.set(
        name,
        new Queue<ShardData>(name, {
          connection,
          prefix: BULL_PREFIX,
          defaultJobOptions: {
            attempts: 3,
            backoff: { type: 'exponential', delay: 1000 },
            removeOnComplete: true,
            removeOnFail: { count: 1000 },
          },
        }),
      );
    }
    this.all = [...this.byName.values()];
  }

  for(hardware: Hardware): Queue<ShardData> {
    return this.byName.get(queueNameFor(hardware))!;
  }

  /** Shards by BullMQ state, summed over the queues (`widescan_queue_depth`). */
  async depth(): Promise<Record<string, number>> {
    const totals: Record<string, number> = {};
    for (const q of this.all) {
      const counts = await q.getJobCounts('waiting', 'active', 'delayed', 'failed', 'prioritized');
      for (const [state, n] of Object.entries(counts)) totals[state] = (totals[state] ?? 0) + n;
    }
    return totals;
  }

  async close(): Promise<void> {
    await Promise.all(this.all.map((q) => q.close()));
  }
}

import { Queue, type ConnectionOptions } from 'bullmq';
import { jobTagHex } from './core/keys.js';
import { BULL_PREFIX, SHARD_QUEUE } from './keys.js';

/** One shard to scan; everything else is recomputed from the job registered in Redis. */
export interface ShardData {
  job: string;
  shard: number;
}

/** BullMQ job ids must not contain ':'; the job tag and the shard number never do. */
export const shardJobId = (tag: number, shard: number) => `${jobTagHex(tag)}-${shard}`;

export function createShardQueue(connection: ConnectionOptions): Queue<ShardData> {
  return new Queue<ShardData>(SHARD_QUEUE, {
    connection,
    prefix: BULL_PREFIX,
    defaultJobOptions: {
      attempts: 3,
      backoff: { type: 'exponential', delay: 1000 },
      removeOnComplete: true,
      removeOnFail: { count: 1000 },
    },
  });
}

// Shard planning: a shard is the contiguous range [k·shardSize, (k+1)·shardSize) of scan *positions*
// (the last one shorter). Positions, not indices: the permutation already spreads each shard over all
// target blocks, and a shard is recomputable from (job, k) alone.

import { MAX_INDEX_SPACE } from './schema.js';

export interface Shard {
  readonly index: number;
  /** First position. */
  readonly start: number;
  /** One past the last position. */
  readonly end: number;
}

export function shardCount(size: number, shardSize: number): number {
  // size = 2^53 is allowed (a job may be that large); its positions 0 .. 2^53 − 1 are all safe integers.
  if (!Number.isInteger(size) || size < 0 || size > MAX_INDEX_SPACE) throw new RangeError(`size must be an integer from 0 to 2^53, got ${size}`);
  if (!Number.isSafeInteger(shardSize) || shardSize < 1) throw new RangeError(`shardSize must be a positive integer, got ${shardSize}`);
  return Math.ceil(size / shardSize);
}

export function shardAt(index: number, size: number, shardSize: number): Shard {
  const count = shardCount(size, shardSize);
  if (!Number.isSafeInteger(index) || index < 0 || index >= count) {
    throw new RangeError(`shard ${index} does not exist (the job has ${count} shards)`);
  }
  const start = index * shardSize;
  return { index, start, end: Math.min(size, start + shardSize) };
}

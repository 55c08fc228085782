// Shard planning: a shard is the contiguous range [k·shardSize, (k+1)·shardSize) of scan *positions*
// (the last one shorter). Positions, not indices: the permutation already spreads each shard over all
// target blocks, and a shard is recomputable from (job, k) alone.

export interface Shard {
  readonly index: number;
  /** First position. */
  readonly start: number;
  /** One past the last position. */
  readonly end: number;
}

export function shardCount(size: number, shardSize: number): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`size must be a safe non-negative integer, got ${size}`);
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

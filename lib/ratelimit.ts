import type { Redis } from 'ioredis';

// The job-wide rate cap: one token bucket in Redis shared by all of a job's workers, refilled from the Redis
// server's clock (workers' clocks may disagree). A worker asks for a slice of tokens at a time and is told
// how long to wait when the bucket is empty, so the cap holds however many workers run.
const TAKE = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local grant = math.min(want, math.floor(tokens))
tokens = tokens - grant
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], 60000)
local wait = 0
if grant < want then wait = math.ceil((math.min(want - grant, burst) - tokens) * 1000 / rate) end
return {grant, wait}
`;

export interface Grant {
  /** Tokens granted now (0..want). */
  granted: number;
  /** Milliseconds until the rest could be granted. */
  waitMs: number;
}

export class TokenBucket {
  private sha: string | undefined;

  /** `burst`: bucket capacity; a tenth of a second of tokens keeps bursts small at any rate. */
  constructor(private readonly redis: Redis, private readonly key: string) {}

  async take(want: number, rate: number, burst = Math.max(1, Math.ceil(rate / 10))): Promise<Grant> {
    if (!(rate > 0)) throw new RangeError(`rate must be positive, got ${rate}`);
    const args = [String(rate), String(burst), String(Math.max(0, Math.floor(want)))];
    let reply: unknown;
    try {
      this.sha ??= (await this.redis.script('LOAD', TAKE)) as string;
      reply = await this.redis.evalsha(this.sha, 1, this.key, ...args);
    } catch (err) {
      if (!String(err).includes('NOSCRIPT')) throw err;
      reply = await this.redis.eval(TAKE, 1, this.key, ...args); // script cache flushed (restart): reload
      this.sha = undefined;
    }
    const [granted, waitMs] = reply as [number, number];
    return { granted, waitMs };
  }
}

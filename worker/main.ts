// Worker process entrypoint. Settings come from the environment (the operator's Deployment, or
// `widescan run`, which starts one process per --workers).
import { envInt, envRequired } from '../lib/env.js';
import { createLogger } from '../lib/log.js';
import { createMetrics } from '../lib/metrics.js';
import { connectRedis } from '../lib/redis.js';
import { serveMetrics } from '../lib/serve.js';
import { openIcmp6Transport } from '../lib/icmp6native.js';
import type { Hardware } from '../lib/core/job.js';
import { ShardWorker } from './worker.js';

const logger = createLogger('worker');
const redisUrl = envRequired('WIDESCAN_REDIS_URL');
const hardware = (process.env.WIDESCAN_HARDWARE ?? 'auto') as Hardware;
if (!['auto', 'gpu', 'cpu'].includes(hardware)) throw new Error(`WIDESCAN_HARDWARE must be auto, gpu or cpu, got ${hardware}`);
const metrics = createMetrics('worker');
const redis = connectRedis(redisUrl);
const io = openIcmp6Transport({ receiveTypes: [], sendBufferBytes: 4 << 20 });
metrics.ioPath.set({ path: io.path }, 1);
const worker = new ShardWorker({
  redis,
  connection: connectRedis(redisUrl),
  io,
  logger,
  metrics,
  hardware,
  lockMs: envInt('WIDESCAN_LOCK_MS', 30_000),
  checkpointMs: envInt('WIDESCAN_CHECKPOINT_MS', 1000),
});
const metricsPort = envInt('WIDESCAN_METRICS_PORT', 0);
const server = metricsPort ? await serveMetrics(metrics.registry, metricsPort, () => redis.status === 'ready') : undefined;

let stopping = false;
const shutdown = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping: returning the current shard to the queue');
  await worker.stop();
  io.close();
  server?.close();
  redis.disconnect();
  process.exit(0);
};
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
process.send?.({ type: 'ready' });
logger.info({ hardware, io: io.path }, 'worker started');
await worker.run();

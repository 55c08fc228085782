// Worker process entrypoint. Settings come from the environment (the operator's Deployment, or
// `widescan run`, which starts one process per --workers).
import { existsSync, writeFileSync } from 'node:fs';
import { envInt, envRequired } from '../lib/env.js';
import { createLogger } from '../lib/log.js';
import { createMetrics } from '../lib/metrics.js';
import { connectRedis } from '../lib/redis.js';
import { serveMetrics } from '../lib/serve.js';
import { openIcmp6Transport } from '../lib/icmp6native.js';
import { EXIT_GPU_UNAVAILABLE, type Hardware } from '../lib/core/job.js';
import { gpuProbe, gpuProblem } from './backends.js';
import { MAX_SENDER_THREADS, SENDER_THREADS_ENV, SenderThreads } from './senders.js';
import { ShardWorker } from './worker.js';

const logger = createLogger('worker');
// Kubernetes' default terminationMessagePath; the test kubelet names each container run's own file instead
// (its pods are processes sharing the host's file system).
const TERMINATION_LOG = process.env.WIDESCAN_TERMINATION_LOG || '/dev/termination-log';
const redisUrl = envRequired('WIDESCAN_REDIS_URL');
const hardware = (process.env.WIDESCAN_HARDWARE ?? 'auto') as Hardware;
if (!['auto', 'gpu', 'cpu'].includes(hardware)) throw new Error(`WIDESCAN_HARDWARE must be auto, gpu or cpu, got ${hardware}`);
// A GPU-pool worker without a usable GPU stops here, before it takes a shard: never a GPU pod scanning on
// the CPU or on software rendering. The message reaches `kubectl describe pod` and the operator through the
// termination log.
const gpu = hardware === 'gpu' ? await gpuProbe() : undefined;
if (gpu) {
  const problem = gpuProblem(gpu);
  if (problem !== undefined) {
    const message = `GPU worker has no usable GPU: ${problem}`;
    logger.fatal({ hardware }, message);
    // Kubernetes creates the file; elsewhere there is none, and the log line above says it.
    if (existsSync(TERMINATION_LOG)) writeFileSync(TERMINATION_LOG, message);
    process.exit(EXIT_GPU_UNAVAILABLE);
  }
}
const metrics = createMetrics('worker');
const redis = connectRedis(redisUrl);
// WIDESCAN_SENDER_THREADS > 1: sends run on that many threads, each with its own socket, so the kernel's
// per-packet work is spread over as many cores (one batch more is kept in flight, so they never wait for the
// next one to be generated).
const senderThreads = envInt(SENDER_THREADS_ENV, 1);
if (senderThreads < 1 || senderThreads > MAX_SENDER_THREADS) {
  throw new Error(`${SENDER_THREADS_ENV} must be from 1 to ${MAX_SENDER_THREADS}, got ${senderThreads}`);
}
const sendBufferBytes = 4 << 20;
const io = senderThreads > 1 ? await SenderThreads.open(senderThreads, { sendBufferBytes }) : openIcmp6Transport({ receiveTypes: [], sendBufferBytes });
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
  sendAhead: senderThreads > 1 ? senderThreads + 1 : 1,
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
logger.info({ hardware, io: io.path, senderThreads, gpu: gpu === undefined ? 'probed at the first job that may use it' : gpu.adapter?.description }, 'worker started');
await worker.run();

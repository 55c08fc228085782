// Listener process entrypoint (the DaemonSet, and the child `widescan run` starts). Settings from the
// environment; secrets also from `<NAME>_FILE`.
import { networkKeyBytes } from '../lib/core/keys.js';
import { envInt, envSecret } from '../lib/env.js';
import { createLogger } from '../lib/log.js';
import { createMetrics } from '../lib/metrics.js';
import { connectRedis } from '../lib/redis.js';
import { serveMetrics } from '../lib/serve.js';
import { startListenerService } from './service.js';

const logger = createLogger('listener');
const key = envSecret('WIDESCAN_NETWORK_KEY');
if (!key) {
  logger.fatal('WIDESCAN_NETWORK_KEY or WIDESCAN_NETWORK_KEY_FILE must be set');
  process.exit(2);
}
const redisUrl = process.env.WIDESCAN_REDIS_URL;
const bootstrapUrl = process.env.WIDESCAN_BOOTSTRAP_URL;
const token = envSecret('WIDESCAN_LISTENER_TOKEN');
if (bootstrapUrl && !token) {
  logger.fatal('WIDESCAN_BOOTSTRAP_URL needs WIDESCAN_LISTENER_TOKEN or WIDESCAN_LISTENER_TOKEN_FILE');
  process.exit(2);
}
const metrics = createMetrics('listener');
const redis = redisUrl ? connectRedis(redisUrl) : undefined;
const service = await startListenerService({
  networkKey: networkKeyBytes(key),
  redis,
  bootstrap: bootstrapUrl ? { url: bootstrapUrl, token: token! } : undefined,
  answerHellos: process.env.WIDESCAN_ANSWER_HELLOS !== 'false',
  instanceId: process.env.WIDESCAN_INSTANCE_ID,
  logger,
  metrics,
});
const metricsPort = envInt('WIDESCAN_METRICS_PORT', 0);
const server = metricsPort ? await serveMetrics(metrics.registry, metricsPort, () => true) : undefined;

// `widescan run` asks its listener child to deliver everything before it reads the peers.
process.on('message', (msg: { type?: string }) => {
  if (msg?.type !== 'flush') return;
  service.flush().then(
    () => process.send?.({ type: 'flushed' }),
    (err) => process.send?.({ type: 'flushed', error: String(err) }),
  );
});
const shutdown = async () => {
  await service.close();
  server?.close();
  redis?.disconnect();
  process.exit(0);
};
process.on('SIGTERM', () => void shutdown());
process.on('SIGINT', () => void shutdown());
process.send?.({ type: 'ready' });

// Operator process entrypoint. Two replicas run; the one holding the Lease reconciles, the other waits to
// take over. Settings: WIDESCAN_OPERATOR_CONFIG (YAML file, see config.ts), WIDESCAN_REDIS_URL, the
// installation's WIDESCAN_NETWORK_KEY(_FILE), POD_NAME/POD_NAMESPACE (downward API), and the Kubernetes
// client configuration (in-cluster, or KUBECONFIG).
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as k8s from '@kubernetes/client-node';
import { envInt, envRequired, envSecret } from '../lib/env.js';
import { createLogger } from '../lib/log.js';
import { createMetrics } from '../lib/metrics.js';
import { connectRedis } from '../lib/redis.js';
import { serveMetrics } from '../lib/serve.js';
import { parseOperatorConfig } from './config.js';
import { Controller } from './controller.js';
import { LeaderElector } from './leader.js';

const logger = createLogger('operator');
const configPath = envRequired('WIDESCAN_OPERATOR_CONFIG');
const config = parseOperatorConfig(readFileSync(configPath, 'utf8'), configPath);
const podName = process.env.POD_NAME || hostname();
const podNamespace = process.env.POD_NAMESPACE || config.namespace;
// The pod name alone is not unique across a restart of the same pod: a suffix keeps the new process from
// taking the old one's Lease for its own.
const identity = `${podName}_${randomBytes(4).toString('hex')}`;
const kc = new k8s.KubeConfig();
kc.loadFromDefault();
const redis = connectRedis(envRequired('WIDESCAN_REDIS_URL'));
const metrics = createMetrics('operator');
const metricsPort = envInt('WIDESCAN_METRICS_PORT', 8080);
const server = metricsPort ? await serveMetrics(metrics.registry, metricsPort, () => redis.status === 'ready') : undefined;

/** The operator's own Deployment owns the worker pools, so uninstalling the operator removes them. */
async function owner(): Promise<k8s.V1OwnerReference | undefined> {
  const name = process.env.WIDESCAN_OWNER_DEPLOYMENT;
  if (!name) return undefined;
  const d = await kc.makeApiClient(k8s.AppsV1Api).readNamespacedDeployment({ name, namespace: podNamespace });
  return { apiVersion: 'apps/v1', kind: 'Deployment', name, uid: d.metadata!.uid!, controller: true, blockOwnerDeletion: true };
}

let controller: Controller | undefined;
const elector = new LeaderElector({
  kubeConfig: kc,
  namespace: podNamespace,
  name: process.env.WIDESCAN_LEASE_NAME || 'widescan-operator',
  identity,
  leaseDurationMs: envInt('WIDESCAN_LEASE_DURATION_MS', 15_000),
  renewDeadlineMs: envInt('WIDESCAN_LEASE_RENEW_DEADLINE_MS', 10_000),
  retryPeriodMs: envInt('WIDESCAN_LEASE_RETRY_MS', 2000),
  logger,
  onStartedLeading: async () => {
    logger.info({ identity }, 'leading: starting the controller');
    try {
      controller = new Controller({
        kubeConfig: kc,
        redis,
        config,
        logger,
        metrics,
        networkKey: envSecret('WIDESCAN_NETWORK_KEY'),
        identity: podName,
        owner: await owner(),
      });
      await controller.start();
    } catch (err) {
      logger.fatal({ err }, 'the controller could not start');
      process.exit(1);
    }
  },
  onStoppedLeading: (reason) => {
    // Never reconcile without the Lease: a process that lost it exits and starts afresh as a candidate.
    if (reason === 'lost') {
      logger.error('lost the Lease; exiting');
      process.exit(1);
    }
  },
});
elector.start();
logger.info({ identity, namespace: config.namespace }, 'operator started; campaigning for the Lease');

let stopping = false;
const shutdown = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping');
  await controller?.stop();
  // Released, so the standby takes over at once instead of after the lease duration.
  await elector.stop({ release: true });
  server?.close();
  redis.disconnect();
  process.exit(0);
};
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

// Container entrypoint of the bootstrap service. Configuration: see bootstrapOptionsFromEnv.
import { createLogger } from '../lib/log.js';
import { bootstrapOptionsFromEnv, startBootstrap } from './service.js';

const logger = createLogger('bootstrap');
try {
  const service = await startBootstrap({ ...bootstrapOptionsFromEnv(process.env), logger });
  const stop = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'shutting down');
    service.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} catch (err) {
  logger.fatal({ err }, `bootstrap service not started: ${(err as Error).message}`);
  process.exitCode = 1;
}

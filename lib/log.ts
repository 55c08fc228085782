import { pino, type Logger } from 'pino';

/** Structured JSON logs on stderr, so stdout stays free for a command's own output. */
export function createLogger(component: string, level = process.env.WIDESCAN_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name: `widescan-${component}`, level, base: { component } }, pino.destination(2));
}
export type { Logger };

#!/usr/bin/env node
// The `widescan` command. Exit codes: 0 success, 2 invalid job or usage, 1 any other failure.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { parsePrefix, formatPrefix } from '../lib/core/cidr.js';
import { InvalidJobError, loadJob, type CompiledJob } from '../lib/core/job.js';
import { networkKeyBytes } from '../lib/core/keys.js';
import { createLogger } from '../lib/log.js';
import { createMetrics } from '../lib/metrics.js';
import { connectRedis } from '../lib/redis.js';
import { startListenerService } from '../listener/service.js';
import { defaultPeerCommand, testbedCommand } from '../testbed/command.js';
import { peersCommand } from './peers.js';
import { networkSecretFrom, runJob } from './run.js';
import { chooseBackend, gpuProbe, GpuUnavailableError } from '../worker/backends.js';

const EXIT_FAILURE = 1;
const EXIT_INVALID = 2;
const TABLE_ROWS = 100;

/** Writes and waits until the text is handed to the OS: `process.exit` would cut a piped stdout short. */
function emit(stream: NodeJS.WriteStream, text: string): Promise<void> {
  return new Promise((resolve) => stream.write(text, () => resolve()));
}

class ExitError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** A blocklist file: one prefix per line, `#` comments. */
function readBlocklist(path: string | undefined): string[] {
  if (!path) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean)
    .map((l, i) => {
      try {
        return formatPrefix(parsePrefix(l));
      } catch (err) {
        throw new ExitError(EXIT_INVALID, `${path}: entry ${i + 1}: ${(err as Error).message}`);
      }
    });
}

function readSecretFile(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new ExitError(EXIT_INVALID, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function compileFile(file: string, blocklist: string[], fullLimitBits: number): CompiledJob {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ExitError(EXIT_INVALID, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return loadJob(text, file, { blocklist: blocklist.map(parsePrefix), fullLimitBits });
  } catch (err) {
    if (err instanceof InvalidJobError) throw new ExitError(EXIT_INVALID, `invalid job:\n${err.message}`);
    throw err;
  }
}

function positiveInt(max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`must be an integer from 1 to ${max}`);
    return n;
  };
}

function port(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number from 0 to 65535');
  return n;
}

function describe(job: CompiledJob): string {
  const s = job.space;
  const lines = [
    `job ${job.id}: ${s.size} targets in ${job.totalShards} shards of ${job.spec.shardSize}, ${s.plannedExcluded} excluded by plan, at most ${job.spec.rate.packetsPerSecond} probes/s`,
  ];
  for (const b of s.blocks) {
    const excluded = b.plannedExcluded === null ? 'counted while scanning' : String(b.plannedExcluded);
    lines.push(`  targets[${b.ordinal}] ${formatPrefix(b.prefix)} ${b.strategy}: ${b.size} addresses, excluded ${excluded}`);
  }
  return lines.join('\n');
}

const cliPath = fileURLToPath(import.meta.url);
const program = new Command('widescan')
  .description('distributed IPv6 discovery scanner')
  .version(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version)
  .exitOverride()
  .showHelpAfterError();

program
  .command('validate')
  .argument('<job.yaml>', 'WidescanJob manifest')
  .option('--blocklist <file>', 'operator blocklist: one prefix per line')
  .option('--full-limit-bits <n>', 'largest full block as a power of two', positiveInt(64), 32)
  .description('check a job without running it')
  .action(async (file: string, o: { blocklist?: string; fullLimitBits: number }) => {
    const job = compileFile(file, readBlocklist(o.blocklist), o.fullLimitBits);
    await emit(process.stdout, `ok: ${describe(job)}\n`);
  });

program
  .command('run')
  .argument('<job.yaml>', 'WidescanJob manifest')
  .option('--redis <url>', 'use this Redis instead of a private redis-server')
  .option('--output <file>', 'write the peers found: .ndjson or .csv')
  .option('--workers <n>', 'worker processes', positiveInt(64), 1)
  .option('--network-key-file <file>', 'shared key of the P2P network (default: $WIDESCAN_NETWORK_KEY_FILE, else a private one)')
  .option('--blocklist <file>', 'operator blocklist: one prefix per line')
  .option('--full-limit-bits <n>', 'largest full block as a power of two', positiveInt(64), 32)
  .option('--no-progress', 'plain progress lines even on a terminal')
  .option('--bootstrap-port <n>', 'port of the bootstrap API and control panel on 127.0.0.1 (default: any free one)', port, 0)
  .option('--admin-token-file <file>', 'enables the control panel, signed in with the token in this file')
  .option('--metrics-port <n>', 'serve /metrics: the planner on n, the listener on n+1, worker i on n+2+i (the bootstrap on its own port)', port, 0)
  .description('run a job on this machine: planner, workers, listener and bootstrap')
  .action(async (file: string, o: { redis?: string; output?: string; workers: number; networkKeyFile?: string; blocklist?: string; fullLimitBits: number; progress: boolean; bootstrapPort: number; adminTokenFile?: string; metricsPort: number }) => {
    // The components' JSON logs would drown the progress bar; WIDESCAN_LOG_LEVEL=info brings them back.
    process.env.WIDESCAN_LOG_LEVEL ??= 'warn';
    if (o.metricsPort && o.metricsPort + 1 + o.workers > 65535) throw new ExitError(EXIT_INVALID, `--metrics-port ${o.metricsPort}: the workers' ports ${o.metricsPort + 2}…${o.metricsPort + 1 + o.workers} must stay below 65536`);
    if (o.output && !/\.(ndjson|csv)$/.test(o.output)) throw new ExitError(EXIT_INVALID, `--output ${o.output}: use a file name ending in .ndjson or .csv`);
    const blocklist = readBlocklist(o.blocklist);
    const job = compileFile(file, blocklist, o.fullLimitBits);
    // `hardware: gpu` on a machine without a usable GPU: refused before anything starts.
    if (job.spec.hardware === 'gpu') {
      try {
        chooseBackend('gpu', await gpuProbe());
      } catch (err) {
        if (err instanceof GpuUnavailableError) throw new ExitError(EXIT_INVALID, err.message);
        throw err;
      }
    }
    process.stderr.write(`${describe(job)}\n`);
    const { status, peers, sendSeconds } = await runJob(job, {
      redis: o.redis,
      output: o.output,
      workers: o.workers,
      networkKeyFile: o.networkKeyFile,
      blocklist,
      fullLimitBits: o.fullLimitBits,
      progress: o.progress && Boolean(process.stderr.isTTY),
      lockMs: process.env.WIDESCAN_LOCK_MS ? Number(process.env.WIDESCAN_LOCK_MS) : undefined,
      bootstrapPort: o.bootstrapPort,
      adminToken: o.adminTokenFile ? readSecretFile(o.adminTokenFile) : undefined,
      metricsPort: o.metricsPort,
    });
    // A terminal table of the first peers; the complete list is what --output is for.
    const shown = peers.slice(0, TABLE_ROWS);
    const width = shown.reduce((w, p) => Math.max(w, p.address.length), 7);
    const out = [`${'address'.padEnd(width)}  kind      rtt ms`];
    for (const p of shown) out.push(`${p.address.padEnd(width)}  ${p.kind.padEnd(8)}  ${p.rttMs === null ? '-' : p.rttMs.toFixed(1)}`);
    if (peers.length > shown.length) out.push(`… ${peers.length - shown.length} more${o.output ? '' : ' (use --output to save them all)'}`);
    out.push(
      '',
      `${status.phase}: ${status.probesSent} probes in ${sendSeconds.toFixed(1)} s (${Math.round(status.probesSent / Math.max(sendSeconds, 0.001))}/s), ${status.repliesValid} valid replies (${status.repliesInvalid} invalid, ${status.repliesDuplicate} duplicate), ` +
        `${peers.filter((p) => p.kind === 'host').length} hosts and ${peers.filter((p) => p.kind === 'widescan').length} widescan peers, ${status.excluded} excluded, ` +
        `shards ${status.shards.completed}/${status.shards.total}${status.shards.failed ? ` (${status.shards.failed} failed)` : ''}`,
    );
    if (o.output) out.push(`peers written to ${o.output}`);
    await emit(process.stdout, `${out.join('\n')}\n`);
    if (status.phase !== 'Succeeded') throw new ExitError(EXIT_FAILURE, `job ended ${status.phase}`);
  });

program
  .command('listen')
  .description('run a listener: verify replies, recognise other widescan instances, answer them with a hello')
  .option('--redis <url>', 'job registry and counters')
  .option('--bootstrap <url>', 'report peers here (else NDJSON on stdout)')
  .option('--token-file <file>', 'listener token for the bootstrap service')
  .option('--network-key-file <file>', 'shared key of the P2P network (default: $WIDESCAN_NETWORK_KEY_FILE)')
  .option('--hello', 'answer probes of other instances with a hello', false)
  .action(async (o: { redis?: string; bootstrap?: string; tokenFile?: string; networkKeyFile?: string; hello: boolean }) => {
    if (!o.networkKeyFile && !process.env.WIDESCAN_NETWORK_KEY_FILE && !process.env.WIDESCAN_NETWORK_KEY) {
      throw new ExitError(EXIT_INVALID, 'a listener needs the network key: --network-key-file or WIDESCAN_NETWORK_KEY_FILE');
    }
    if (o.bootstrap && !o.tokenFile) throw new ExitError(EXIT_INVALID, '--bootstrap needs --token-file');
    const logger = createLogger('listener');
    const redis = o.redis ? connectRedis(o.redis) : undefined;
    const service = await startListenerService({
      networkKey: networkKeyBytes(networkSecretFrom(o.networkKeyFile)),
      redis,
      bootstrap: o.bootstrap ? { url: o.bootstrap, token: readSecretFile(o.tokenFile!) } : undefined,
      answerHellos: o.hello,
      logger,
      metrics: createMetrics('listener'),
    });
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', resolve);
      process.once('SIGINT', resolve);
    });
    await service.close();
    redis?.disconnect();
  });

// addCommand() does not pass exitOverride on: the testbed commands must throw, not exit, like the rest.
const overrideExits = (cmd: Command): Command => {
  cmd.exitOverride();
  cmd.commands.forEach(overrideExits);
  return cmd;
};
program.addCommand(overrideExits(testbedCommand({ peerCommand: () => defaultPeerCommand(cliPath) })));
program.addCommand(peersCommand()); // has its own exit handling (usage errors 2)

try {
  await program.parseAsync(process.argv);
  process.exit(0);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version end with 0; commander's own usage errors (already printed) with 2; our commands'
    // `cmd.error(…, { exitCode })` with the code they chose.
    process.exit(err.exitCode === 0 ? 0 : err.code.startsWith('commander.') ? EXIT_INVALID : err.exitCode);
  }
  if (err instanceof ExitError) {
    await emit(process.stderr, `widescan: ${err.message}\n`);
    process.exit(err.code);
  }
  await emit(process.stderr, `widescan: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(EXIT_FAILURE);
}

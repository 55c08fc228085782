// Runs the built CLI (dist/, built by `npm test` before jest) as a real process, optionally inside a lab
// namespace, the way a user runs it.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { netnsExecArgs } from '../../testbed/lab.js';

export const CLI = resolve('dist/cli/main.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliProcess {
  child: ChildProcess;
  done: Promise<CliResult>;
}

export function startCli(args: string[], options: { ns?: string; env?: Record<string, string>; timeoutMs?: number } = {}): CliProcess {
  const argv = [process.execPath, CLI, ...args];
  const [cmd, ...rest] = options.ns ? netnsExecArgs(options.ns, argv) : argv;
  // Info logs on: tests read what the components say (checkpoints, shard hand-backs).
  const child = spawn(cmd!, rest, { env: { ...process.env, WIDESCAN_LOG_LEVEL: 'info', ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  const done = new Promise<CliResult>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { child, done };
}

export function runCli(args: string[], options: { ns?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  return startCli(args, options).done;
}

/** Direct children of `pid` whose command line contains `needle`. */
export function childPids(pid: number, needle: string): number[] {
  const out: number[] = [];
  let children: string;
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8');
  } catch {
    return out;
  }
  for (const c of children.split(/\s+/).filter(Boolean).map(Number)) {
    try {
      if (readFileSync(`/proc/${c}/cmdline`, 'utf8').includes(needle)) out.push(c);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Polls an async condition until it holds; the error names what was awaited. */
export async function eventually(probe: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function waitFor<T>(probe: () => T | undefined | false, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

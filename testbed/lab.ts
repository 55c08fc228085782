// The private network-namespace lab that the demo and the integration tests scan (DESIGN "One machine,
// and tests"). Everything is built from a validated lab name and run with execFile, never a shell, and
// every address lives in the ULA prefix below, so nothing sent in the lab can leave it.
import { execFile as execFileCallback, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, open, readFile, rmdir, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { parsePrefix, prefixContains } from '../lib/core/cidr.js';
import { formatAddress } from '../lib/core/ipv6.js';
import type { CompiledJob } from '../lib/core/job.js';
import { wordsToBigint } from '../lib/core/words.js';

const execFile = promisify(execFileCallback);

export const LAB_PREFIX = 'fd00:5ca:1ab::/48';
export const DEFAULT_LAB_NAME = 'ws';
/** Short enough that `<name>-to-resp` fits Linux's 15-character interface names. */
export const LAB_NAME_PATTERN = /^[a-z][a-z0-9]{0,5}$/;

const P = 'fd00:5ca:1ab';
const ROLES = ['scan', 'resp', 'sink', 'peer'] as const;
type Role = (typeof ROLES)[number];
const LAB_NAMESPACE_PATTERN = /^[a-z][a-z0-9]{0,5}-(scan|resp|sink|peer)$/;

/** The hosts that answer in `N-resp`, by what a correct scan of each area must make of them. */
export const LAB_POPULATION = {
  /** Sparse hosts in `…:100::/56` with interface IDs 1…16: a lowbyte scan (/64 subnets, hosts 16) finds all. */
  lowbyte: [
    `${P}:100::7`,
    `${P}:101::1`,
    `${P}:101::2`,
    `${P}:10a::5`,
    `${P}:15c::10`,
    `${P}:1c0::3`,
    `${P}:1f0::f`,
    `${P}:1fe::1`,
  ],
  /** Live in the same subnets but outside interface IDs 1…16: that lowbyte scan must not find them. */
  lowbyteDecoys: [`${P}:101::11`, `${P}:101::1:1`, `${P}:10a::ffff`],
  /** Inside `…:200::/120`, the area a full scan covers. */
  full: [`${P}:200::1`, `${P}:200::80`, `${P}:200::ff`],
  /** Just past `…:200::/120`. */
  fullDecoys: [`${P}:200::100`],
  /** Random-looking interface IDs in `…:300::/64`. */
  random: [`${P}:300::7`, `${P}:300::1234`, `${P}:300::beef`, `${P}:300::ffff`],
  /** Answers for every address. */
  aliased: [`${P}:1aa::/64`],
} as const;

const LIVE_HOSTS: readonly string[] = [
  ...LAB_POPULATION.lowbyte,
  ...LAB_POPULATION.lowbyteDecoys,
  ...LAB_POPULATION.full,
  ...LAB_POPULATION.fullDecoys,
  ...LAB_POPULATION.random,
];

/** Routed to `N-sink`; a lab job excludes it, so any echo request counted there is a scanner bug. */
const SINK_PREFIXES = [`${P}:1ff::/64`];

/** Each far namespace hangs off `N-scan` by its own /64; `scan`/`far` are the two ends' addresses. */
const LINKS: ReadonlyArray<{ role: Exclude<Role, 'scan'>; scan: string; far: string }> = [
  { role: 'resp', scan: `${P}:f001::1`, far: `${P}:f001::2` },
  { role: 'sink', scan: `${P}:f002::1`, far: `${P}:f002::2` },
  // The peer's only global address is …:400::1, so its hellos come from there.
  { role: 'peer', scan: `${P}:400::1:1`, far: `${P}:400::1` },
];
const linkOf = (role: Exclude<Role, 'scan'>) => LINKS.find((link) => link.role === role)!;

const SCAN_ROUTES: ReadonlyArray<{ prefix: string; via: 'resp' | 'sink' }> = [
  { prefix: `${P}:100::/56`, via: 'resp' },
  { prefix: `${P}:200::/64`, via: 'resp' },
  { prefix: `${P}:300::/64`, via: 'resp' },
  { prefix: `${P}:1ff::/64`, via: 'sink' },
  // Any stray probe, inside the lab prefix or not, ends in the sink and is counted there.
  { prefix: 'default', via: 'sink' },
];

const NAMESPACE_SYSCTLS = [
  'net.ipv6.conf.all.disable_ipv6=0',
  'net.ipv6.conf.default.disable_ipv6=0',
  'net.ipv6.conf.all.forwarding=0',
  'net.ipv6.conf.default.forwarding=0',
  // Link-local addresses usable at once, like the global ones added with `nodad`.
  'net.ipv6.conf.all.accept_dad=0',
  'net.ipv6.conf.default.accept_dad=0',
];

const NETWORK_KEY_FILE = 'network.key';
const GROUND_TRUTH_FILE = 'ground-truth.json';
const PEER_LOG_FILE = 'peer.log';
const PEER_PID_FILE = 'peer.pid';
/** A peer that dies within this long after starting is reported as a failed `up`. */
const PEER_STARTUP_GRACE_MS = 300;
const KILL_GRACE_MS = 2000;

export interface LabNamespaces {
  scan: string;
  resp: string;
  sink: string;
  peer: string;
}

export interface LabInfo {
  name: string;
  stateDir: string;
  namespaces: LabNamespaces;
  /** The scanner's address on the responder link, `fd00:5ca:1ab:f001::1`. */
  scannerAddress: string;
  peerAddress: string;
  /** Every host that answers in `N-resp` (decoys included), canonical text. */
  live: string[];
  aliased: string[];
  sinkPrefixes: string[];
  networkKeyFile: string;
  groundTruthFile: string;
}

export interface LabUpOptions {
  name?: string;
  /** Default `.testbed/<name>` under the working directory. */
  stateDir?: string;
  /** Started detached in `N-peer`; a function gets the lab's info (paths included). */
  peerCommand?: string[] | ((info: LabInfo) => string[]);
}

export interface LabStatus {
  up: boolean;
  namespaces: string[];
  counters: { respEchoRequests: number; sinkEchoRequests: number; peerEchoRequests: number };
}

/** Returns `name` if it is a valid lab name, else throws an error that says what is allowed. */
export function checkLabName(name: string): string {
  if (typeof name !== 'string' || !LAB_NAME_PATTERN.test(name)) {
    const shown = typeof name === 'string' ? JSON.stringify(name.slice(0, 40)) : String(name);
    throw new Error(
      `invalid lab name ${shown}: use 1 to 6 characters, a lowercase letter first, then lowercase letters or digits (e.g. ws)`,
    );
  }
  return name;
}

export function labNamespaces(name: string): LabNamespaces {
  checkLabName(name);
  return { scan: `${name}-scan`, resp: `${name}-resp`, sink: `${name}-sink`, peer: `${name}-peer` };
}

/** argv that runs `argv` inside one of the lab's namespaces. */
export function netnsExecArgs(ns: string, argv: string[]): string[] {
  if (!LAB_NAMESPACE_PATTERN.test(ns)) {
    throw new Error(`${JSON.stringify(ns)} is not a lab namespace; use one of LabInfo.namespaces (e.g. ws-scan)`);
  }
  if (argv.length === 0) throw new Error(`nothing to run in ${ns}: the command is empty`);
  return ['ip', 'netns', 'exec', ns, ...argv];
}

export function defaultPeerCommand(cliPath: string): string[] {
  return [process.execPath, cliPath, 'listen', '--hello'];
}

function defaultStateDir(name: string): string {
  return path.resolve('.testbed', name);
}

function labInfo(name: string, stateDir: string): LabInfo {
  return {
    name,
    stateDir,
    namespaces: labNamespaces(name),
    scannerAddress: linkOf('resp').scan,
    peerAddress: linkOf('peer').far,
    live: [...LIVE_HOSTS],
    aliased: [...LAB_POPULATION.aliased],
    sinkPrefixes: [...SINK_PREFIXES],
    networkKeyFile: path.join(stateDir, NETWORK_KEY_FILE),
    groundTruthFile: path.join(stateDir, GROUND_TRUTH_FILE),
  };
}

async function run(argv: string[]): Promise<string> {
  try {
    const { stdout } = await execFile(argv[0]!, argv.slice(1), { timeout: 15_000 });
    return stdout;
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error(`${argv[0]} was not found; widescan testbed needs iproute2 and procps installed`);
    const detail = (e.stderr ?? '').trim() || e.message;
    const hint = /permission denied|not permitted/i.test(detail)
      ? ' (widescan testbed must run as root: it creates network namespaces)'
      : '';
    throw new Error(`\`${argv.join(' ')}\` failed: ${detail}${hint}`);
  }
}

async function listNamespaces(): Promise<string[]> {
  const out = await run(['ip', 'netns', 'list']);
  // Lines look like `ws-scan (id: 3)` or just `ws-scan`.
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((ns) => ns !== '');
}

async function presentNamespaces(name: string): Promise<string[]> {
  const all = new Set(await listNamespaces());
  return Object.values(labNamespaces(name)).filter((ns) => all.has(ns));
}

/** Every `ip` call, after the namespaces exist, that wires the lab up. */
function topologyCommands(name: string): string[][] {
  const ns = labNamespaces(name);
  const toScan = `${name}-to-scan`;
  const toFar = (role: Role) => `${name}-to-${role}`;
  const cmds: string[][] = [];
  for (const role of ROLES) {
    cmds.push(['ip', 'netns', 'exec', ns[role], 'sysctl', '-q', '-w', ...NAMESPACE_SYSCTLS]);
    cmds.push(['ip', '-n', ns[role], 'link', 'set', 'lo', 'up']);
  }
  for (const link of LINKS) {
    // Created straight inside the namespaces, so no lab interface ever appears in the host's namespace.
    cmds.push(['ip', 'link', 'add', toFar(link.role), 'netns', ns.scan, 'type', 'veth', 'peer', 'name', toScan, 'netns', ns[link.role]]);
    cmds.push(['ip', '-n', ns.scan, '-6', 'addr', 'add', `${link.scan}/64`, 'dev', toFar(link.role), 'nodad']);
    cmds.push(['ip', '-n', ns[link.role], '-6', 'addr', 'add', `${link.far}/64`, 'dev', toScan, 'nodad']);
    cmds.push(['ip', '-n', ns.scan, 'link', 'set', toFar(link.role), 'up']);
    cmds.push(['ip', '-n', ns[link.role], 'link', 'set', toScan, 'up']);
    cmds.push(['ip', '-n', ns[link.role], '-6', 'route', 'add', 'default', 'via', link.scan, 'dev', toScan]);
  }
  for (const route of SCAN_ROUTES) {
    cmds.push(['ip', '-n', ns.scan, '-6', 'route', 'add', route.prefix, 'via', linkOf(route.via).far, 'dev', toFar(route.via)]);
  }
  // AnyIP: a local route makes the kernel answer echo requests for every address it covers.
  for (const host of [...LIVE_HOSTS, ...LAB_POPULATION.aliased]) {
    cmds.push(['ip', '-n', ns.resp, '-6', 'route', 'add', 'local', host, 'dev', 'lo']);
  }
  // The sink owns the whole lab prefix (its 1ff::/64 hosts and any stray address alike), so every probe
  // that reaches it is counted in Icmp6InEchos and answered. Only the scanner's own addresses are carved
  // out, in the local table that is consulted first, so the replies find their way back.
  cmds.push(['ip', '-n', ns.sink, '-6', 'route', 'add', 'local', LAB_PREFIX, 'dev', 'lo']);
  const sinkGateway = linkOf('sink').scan;
  for (const link of LINKS) {
    cmds.push(['ip', '-n', ns.sink, '-6', 'route', 'add', 'table', 'local', `${link.scan}/128`, 'via', sinkGateway, 'dev', toScan, 'onlink']);
  }
  return cmds;
}

/** Writes `content` to a fresh file readable by root only. */
async function writeSecretFile(file: string, content: string): Promise<void> {
  await unlink(file).catch(ignoreMissing);
  await writeFile(file, content, { mode: 0o600, flag: 'wx' });
}

function ignoreMissing(error: NodeJS.ErrnoException): void {
  if (error.code !== 'ENOENT') throw error;
}

export async function labUp(opts: LabUpOptions = {}): Promise<LabInfo> {
  const name = checkLabName(opts.name ?? DEFAULT_LAB_NAME);
  const existing = await presentNamespaces(name);
  if (existing.length > 0) {
    throw new Error(`lab ${name} exists (${existing.join(', ')}); run widescan testbed down --name ${name} first`);
  }
  const info = labInfo(name, opts.stateDir === undefined ? defaultStateDir(name) : path.resolve(opts.stateDir));
  const peerArgv = typeof opts.peerCommand === 'function' ? opts.peerCommand(info) : opts.peerCommand;
  if (peerArgv !== undefined && (!Array.isArray(peerArgv) || peerArgv.length === 0 || !peerArgv.every((a) => typeof a === 'string'))) {
    throw new Error('peerCommand must be a non-empty array of strings (program, then its arguments)');
  }

  const created: string[] = [];
  try {
    for (const ns of Object.values(info.namespaces)) {
      await run(['ip', 'netns', 'add', ns]);
      created.push(ns);
    }
    for (const cmd of topologyCommands(name)) await run(cmd);
    await mkdir(info.stateDir, { recursive: true, mode: 0o700 });
    await writeSecretFile(info.networkKeyFile, randomBytes(32).toString('hex'));
    await writeFile(info.groundTruthFile, `${JSON.stringify(info, null, 2)}\n`);
    if (peerArgv !== undefined) await startPeer(info, peerArgv);
    return info;
  } catch (error) {
    // Only what this call created: a namespace that existed before is someone else's.
    try {
      await removeNamespaces(created);
      await removeStateDir(info.stateDir);
    } catch (cleanupError) {
      throw new Error(
        `${(error as Error).message}; cleaning up also failed (${(cleanupError as Error).message}): run widescan testbed down --name ${name}`,
      );
    }
    throw error;
  }
}

async function startPeer(info: LabInfo, argv: string[]): Promise<void> {
  const logFile = path.join(info.stateDir, PEER_LOG_FILE);
  const log = await open(logFile, 'a', 0o600);
  try {
    const [cmd, ...args] = netnsExecArgs(info.namespaces.peer, argv);
    const child = spawn(cmd!, args, {
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
      env: { ...process.env, WIDESCAN_NETWORK_KEY_FILE: info.networkKeyFile },
    });
    const exited = once(child, 'exit');
    exited.catch(() => undefined); // 'error' is reported by the race below
    const early = await Promise.race([exited, delay(PEER_STARTUP_GRACE_MS).then(() => undefined)]);
    if (early !== undefined) {
      const [code, signal] = early as [number | null, NodeJS.Signals | null];
      const output = (await readFile(logFile, 'utf8').catch(() => '')).slice(-500).trim();
      throw new Error(
        `the peer command \`${argv.join(' ')}\` exited at once (${signal ?? `code ${code}`}); output: ${output || '(none)'}`,
      );
    }
    child.unref();
    await writeFile(path.join(info.stateDir, PEER_PID_FILE), `${child.pid}\n`);
  } finally {
    await log.close();
  }
}

async function namespacePids(ns: string): Promise<number[]> {
  const out = await run(['ip', 'netns', 'pids', ns]).catch(() => '');
  return out
    .split('\n')
    .map((line) => Number.parseInt(line, 10))
    .filter((pid) => Number.isInteger(pid) && pid > 0 && pid !== process.pid);
}

function signal(pids: number[], sig: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  }
}

/**
 * Stops every process inside the namespaces (the peer among them), then deletes the namespaces, which
 * deletes their veths. A namespace with a process left inside would outlive `ip netns delete`, veths and
 * all, so the processes go first. `ip netns pids` names them by id and, unlike a pid file, cannot name an
 * unrelated process that reused a stale pid.
 */
async function removeNamespaces(namespaces: string[]): Promise<void> {
  const alive = async () => (await Promise.all(namespaces.map(namespacePids))).flat();
  let pids = await alive();
  if (pids.length > 0) {
    signal(pids, 'SIGTERM');
    for (const deadline = Date.now() + KILL_GRACE_MS; pids.length > 0 && Date.now() < deadline; ) {
      await delay(50);
      pids = await alive();
    }
    signal(pids, 'SIGKILL');
    for (let tries = 0; pids.length > 0 && tries < 20; tries++) {
      await delay(50);
      pids = await alive();
    }
  }
  for (const ns of namespaces) {
    await run(['ip', 'netns', 'delete', ns]).catch(async (error: Error) => {
      // Gone already (a concurrent down) is fine; anything else is not.
      if ((await listNamespaces()).includes(ns)) throw error;
    });
  }
}

/** Removes the files `up` writes, then the directory if nothing else is in it; never a recursive delete. */
async function removeStateDir(stateDir: string): Promise<boolean> {
  for (const file of [NETWORK_KEY_FILE, GROUND_TRUTH_FILE, PEER_LOG_FILE, PEER_PID_FILE]) {
    await unlink(path.join(stateDir, file)).catch(ignoreMissing);
  }
  try {
    await rmdir(stateDir);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTEMPTY' || code === 'EEXIST') return false;
    throw error;
  }
}

export async function labDown(name: string = DEFAULT_LAB_NAME, stateDir?: string): Promise<{ removed: string[] }> {
  checkLabName(name);
  const dir = stateDir === undefined ? defaultStateDir(name) : path.resolve(stateDir);
  const present = await presentNamespaces(name);
  await removeNamespaces(present);
  const removed = [...present];
  if (await removeStateDir(dir)) removed.push(dir);
  return { removed };
}

function echoRequestsIn(snmp6: string): number {
  const match = /^Icmp6InEchos\s+(\d+)/m.exec(snmp6);
  if (!match) throw new Error('Icmp6InEchos is missing from /proc/net/snmp6');
  return Number(match[1]);
}

export async function labStatus(name: string = DEFAULT_LAB_NAME): Promise<LabStatus> {
  const ns = labNamespaces(name);
  const present = await presentNamespaces(name);
  const count = async (namespace: string) =>
    present.includes(namespace) ? echoRequestsIn(await run(netnsExecArgs(namespace, ['cat', '/proc/net/snmp6']))) : 0;
  const [respEchoRequests, sinkEchoRequests, peerEchoRequests] = await Promise.all([
    count(ns.resp),
    count(ns.sink),
    count(ns.peer),
  ]);
  return {
    up: present.length === ROLES.length,
    namespaces: present,
    counters: { respEchoRequests, sinkEchoRequests, peerEchoRequests },
  };
}

/**
 * What a correct scan of `job` in the lab reports: the targeted live and aliased addresses (the peer
 * instance's among them), never excluded ones. The demo and the tests compare scans with it.
 */
export function expectedHosts(job: CompiledJob, truth: Pick<LabInfo, 'live' | 'peerAddress' | 'aliased'>): Set<string> {
  const live = new Set([...truth.live, truth.peerAddress]);
  const aliased = truth.aliased.map(parsePrefix);
  const words = new Uint32Array(4);
  const found = new Set<string>();
  for (let i = 0; i < job.space.size; i++) {
    if (job.space.address(i, words)) continue;
    const a = wordsToBigint(words);
    const text = formatAddress(a);
    if (live.has(text) || aliased.some((p) => prefixContains(p, a))) found.add(text);
  }
  return found;
}

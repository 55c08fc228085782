// Both raw ICMPv6 I/O paths of lib/icmp6native.ts, for real. The sockets live only in a child process inside
// the scanner namespace of a lab this test creates (the jest process is in the host's namespace), and every
// packet goes to a lab address. Needs root, iproute2 (ip, tc) and a built tree: `npm install` builds the
// addon (native/build/Release/icmp6.node), `npm run build` builds dist/.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFile as execFileCallback } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync } from 'node:fs';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { labDown, labUp, netnsExecArgs, type LabInfo } from '../../testbed/lab.js';

const execFile = promisify(execFileCallback);
const P = 'fd00:5ca:1ab';
const repo = process.cwd();
const moduleFile = path.join(repo, 'dist', 'lib', 'icmp6native.js');
const addonFile = path.join(repo, 'native', 'build', 'Release', 'icmp6.node');

// The child: argv = module file, prefer, mode. Prints one JSON report. Destinations: the aliased
// …:1aa::/64 (every address answers, via N-resp), …:1ff::/64 (answered by N-sink, over a link this test
// throttles), …:dead::/64 and …:beef::/64 (unreachable and prohibited routes this test adds in N-scan).
const CHILD = `
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { setImmediate as tick, setTimeout as sleep } from 'node:timers/promises';
const [moduleFile, prefer, mode] = process.argv.slice(2);
const m = await import(moduleFile);
const SLOT = m.RECEIVE_SLOT_BYTES;
const id = process.pid & 0xffff;
const report = {};

// Echo requests i in [0, n) to the /64 of 'net' with interface ID i (+ 'first'), each carrying its index.
function probes(n, net, first = 0) {
  const packets = Buffer.alloc(n * 16), addresses = new Uint8Array(n * 16), view = new DataView(addresses.buffer);
  for (let i = 0; i < n; i++) {
    const p = i * 16;
    packets[p] = 128;
    packets.writeUInt16BE(id, p + 4);
    packets.writeUInt16BE(i & 0xffff, p + 6);
    packets.write('WSNT', p + 8);
    packets.writeUInt32BE(i, p + 12);
    addresses.set([0xfd, 0, 0x05, 0xca, 0x01, 0xab, net >> 8, net & 0xff], p);
    view.setUint32(p + 12, i + first);
  }
  return { packets, addresses };
}

// Counts replies by probe index; a reply from anywhere but its probe's destination is counted wrong.
function collector(n, addresses) {
  const got = new Uint8Array(n);
  const c = { unique: 0, duplicates: 0, wrongSource: 0, foreign: 0, batches: 0, maxBatch: 0, last: 0 };
  const handler = (buffer, lengths, sources, count) => {
    c.batches++;
    c.maxBatch = Math.max(c.maxBatch, count);
    for (let k = 0; k < count; k++) {
      const o = k * SLOT;
      if (lengths[k] < 16 || buffer[o] !== 129 || buffer.readUInt16BE(o + 4) !== id || buffer.toString('latin1', o + 8, o + 12) !== 'WSNT') { c.foreign++; continue; }
      const i = buffer.readUInt32BE(o + 12);
      if (i >= n || Buffer.compare(sources.subarray(k * 16, k * 16 + 16), addresses.subarray(i * 16, i * 16 + 16)) !== 0) { c.wrongSource++; continue; }
      if (got[i]) c.duplicates++; else { got[i] = 1; c.unique++; }
    }
    c.last = performance.now();
  };
  return { c, handler };
}
async function until(done, ms) {
  for (const end = Date.now() + ms; !done() && Date.now() < end; ) await sleep(10);
}
const outcome = async (f) => { try { await f(); return 'ok'; } catch (e) { return e.name + ': ' + e.message; } };
const open = (options) => m.openIcmp6Transport({ prefer, ...options });

if (mode === 'status') {
  report.outcome = await outcome(() => { const t = open({ receiveTypes: [129] }); report.path = t.path; t.close(); });
  report.status = m.nativeAddonStatus();
} else if (mode === 'check') {
  const n = 4096;
  const t = open({ receiveTypes: [129], receiveBufferBytes: 16 << 20, sendBufferBytes: 4 << 20 });
  report.path = t.path;
  const { packets, addresses } = probes(n, 0x1aa);
  const { c, handler } = collector(n, addresses);
  t.onPackets(handler);
  t.setHopLimit(64);
  report.send = await t.send(packets, 16, addresses, 0, n);
  await until(() => c.unique === n, 5000);
  await sleep(50); // time for duplicates, were there any
  report.receive = { ...c }; // before the probes below, whose replies look like duplicates
  // Interleaved: routable (16), unreachable (…:dead::, odd i: 16) and prohibited (…:beef::, i % 8 = 6: 4).
  const mixed = probes(32, 0x1aa);
  for (let i = 0; i < 32; i++) {
    if (i % 2 === 1) mixed.addresses.set([0xde, 0xad], i * 16 + 6);
    if (i % 8 === 6) mixed.addresses.set([0xbe, 0xef], i * 16 + 6);
  }
  report.mixed = await t.send(mixed.packets, 16, mixed.addresses, 0, 32);
  report.nothing = await t.send(packets, 16, addresses, 7, 7);
  report.bad = {
    reversed: await outcome(() => t.send(packets, 16, addresses, 10, 5)),
    beyond: await outcome(() => t.send(packets, 16, addresses, 0, n + 1)),
    shortAddresses: await outcome(() => t.send(packets, 16, addresses.subarray(0, 40), 0, 3)),
    zeroBytes: await outcome(() => t.send(packets, 0, addresses, 0, 1)),
    fraction: await outcome(() => t.send(packets, 16, addresses, 0.5, 1)),
    notBytes: await outcome(() => t.send('x', 16, addresses, 0, 1)),
    hops0: await outcome(() => t.setHopLimit(0)),
    hops256: await outcome(() => t.setHopLimit(256)),
    hopsNaN: await outcome(() => t.setHopLimit(NaN)),
    secondHandler: await outcome(() => t.onPackets(() => {})),
    type300: await outcome(() => open({ receiveTypes: [300] })),
    typesNotArray: await outcome(() => open({ receiveTypes: 'x' })),
    hugeBuffer: await outcome(() => open({ receiveTypes: [], receiveBufferBytes: 2 ** 40 })),
    badPrefer: await outcome(() => m.openIcmp6Transport({ receiveTypes: [], prefer: 'fast' })),
    sendOnlyReceives: await outcome(() => { const s = open({ receiveTypes: [] }); try { s.onPackets(() => {}); } finally { s.close(); } }),
  };
  if (t.path === 'sendmmsg') {
    // The addon itself, for what the wrapper never lets through.
    const addon = createRequire(import.meta.url)(m.nativeAddonStatus().file);
    const h = addon.open({ receiveTypes: [] });
    report.native = {
      foreignHandle: await outcome(() => addon.sendBatch({}, packets, 16, addresses, 0, 1)),
      noArguments: await outcome(() => addon.sendBatch()),
      beyond: await outcome(() => addon.sendBatch(h, packets, 16, addresses.subarray(0, 32), 0, 3)),
      negativeType: await outcome(() => addon.open({ receiveTypes: [1, -1] })),
      notOptions: await outcome(() => addon.open(null)),
      notCallback: await outcome(() => addon.startReceiving(h, 42)),
    };
    addon.close(h);
    report.native.closedHandle = await outcome(() => addon.sendBatch(h, packets, 16, addresses, 0, 1));
    // Handles dropped without close() are closed when collected.
    const fds = () => readdirSync('/proc/self/fd').length;
    const before = fds();
    for (let i = 0; i < 64; i++) addon.open({ receiveTypes: [] });
    const opened = fds();
    for (let i = 0; i < 5 && fds() > before; i++) { globalThis.gc(); await sleep(20); }
    report.gc = { before, opened, after: fds() };
  }
  t.close();
  t.close();
  report.afterClose = {
    send: await outcome(() => t.send(packets, 16, addresses, 0, 1)),
    setHopLimit: await outcome(() => t.setHopLimit(64)),
    onPackets: await outcome(() => t.onPackets(() => {})),
  };
} else if (mode === 'lifecycle') {
  const n = 600;
  const { packets, addresses } = probes(n, 0x1aa);
  // A handler that throws: an uncaught exception, and the rest still arrives.
  let uncaught = 0, delivered = 0;
  process.on('uncaughtException', () => uncaught++);
  const t1 = open({ receiveTypes: [129], receiveBufferBytes: 4 << 20 });
  t1.onPackets((buffer, lengths, sources, count) => { delivered += count; throw new Error('a handler bug'); });
  await t1.send(packets, 16, addresses, 0, n);
  await until(() => delivered >= n, 3000);
  t1.close();
  process.removeAllListeners('uncaughtException');
  report.throwing = { delivered, uncaught };
  // close() inside the handler: no call after it.
  let calls = 0;
  const t2 = open({ receiveTypes: [129], receiveBufferBytes: 4 << 20 });
  t2.onPackets(() => { calls++; t2.close(); });
  await outcome(() => t2.send(packets, 16, addresses, 0, n)); // raw-socket may still be sending: rejected
  await sleep(200);
  report.closeInHandler = { calls };
  // Worker threads that end while their transports receive: the thread's teardown closes them. (Only the
  // addon: raw-socket, a Nan addon, loads in one thread per process.)
  const { Worker } = await import('node:worker_threads');
  for (const end of prefer === 'native' ? ['exit', 'terminate'] : []) {
    const w = new Worker(
      "const { parentPort, workerData } = require('node:worker_threads');" +
      "import(workerData.moduleFile).then((m) => {" +
      "  const t = m.openIcmp6Transport({ receiveTypes: [129], prefer: workerData.prefer });" +
      "  t.onPackets(() => {});" +
      "  parentPort.postMessage(t.path);" +
      "  if (workerData.end === 'exit') process.exit(0);" +
      "});",
      { eval: true, workerData: { moduleFile, prefer, end } },
    );
    report[end] = await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
    if (end === 'terminate') await w.terminate();
    else await new Promise((resolve) => w.once('exit', resolve));
  }
} else if (mode === 'backpressure') {
  // N-sink's link is throttled to 10 Mbit/s and the send buffer is tiny: the kernel refuses, we wait.
  const n = 4096;
  const { packets, addresses } = probes(n, 0x1ff, 1);
  const t = open({ receiveTypes: [], sendBufferBytes: 8192 });
  const cpu = process.cpuUsage(), start = performance.now();
  report.send = await t.send(packets, 16, addresses, 0, n);
  report.wallMs = performance.now() - start;
  const used = process.cpuUsage(cpu);
  report.cpuMs = (used.user + used.system) / 1000;
  const sending = t.send(packets, 16, addresses, 0, n);
  setTimeout(() => t.close(), 20);
  report.closedWhileSending = await outcome(() => sending);
} else if (mode === 'measure') {
  const n = 1 << 18, chunk = 4096;
  const { packets, addresses } = probes(n, 0x1aa);
  // Sending alone, then sending and receiving in this one process.
  for (const receive of [false, true]) {
    const tx = open({ receiveTypes: [], sendBufferBytes: 4 << 20 });
    const rx = receive ? open({ receiveTypes: [129], receiveBufferBytes: 16 << 20 }) : undefined;
    const { c, handler } = collector(n, addresses);
    rx?.onPackets(handler);
    const start = performance.now();
    let sent = 0;
    for (let i = 0; i < n; i += chunk) {
      sent += (await tx.send(packets, 16, addresses, i, i + chunk)).sent;
      await tick(); // the receiver's turn, as a worker's rate limiter would leave it
    }
    const seconds = (performance.now() - start) / 1000;
    for (let seen = -1; rx && c.unique !== seen && c.unique < n; ) { seen = c.unique; await sleep(300); }
    report[receive ? 'sendReceive' : 'sendOnly'] = {
      path: tx.path, probes: n, sent, sendPerSecond: Math.round(sent / seconds),
      ...(rx ? { replies: c.unique, receivePerSecond: Math.round(c.unique / ((c.last - start) / 1000)), batches: c.batches } : {}),
    };
    tx.close();
    rx?.close();
  }
}
process.stdout.write(JSON.stringify(report));
`;

interface SendResult {
  sent: number;
  errors: Record<string, number>;
}
interface Counts {
  unique: number;
  duplicates: number;
  wrongSource: number;
  foreign: number;
  batches: number;
  maxBatch: number;
}
interface CheckReport {
  path: string;
  send: SendResult;
  receive: Counts;
  mixed: SendResult;
  nothing: SendResult;
  bad: Record<string, string>;
  native?: Record<string, string>;
  gc?: { before: number; opened: number; after: number };
  afterClose: Record<string, string>;
}
interface StatusReport {
  outcome: string;
  path?: string;
  status: { available: boolean; file: string; reason?: string };
}
interface LifecycleReport {
  throwing: { delivered: number; uncaught: number };
  closeInHandler: { calls: number };
  exit?: string;
  terminate?: string;
}
interface BackpressureReport {
  send: SendResult;
  wallMs: number;
  cpuMs: number;
  closedWhileSending: string;
}
interface Rate {
  path: string;
  probes: number;
  sent: number;
  sendPerSecond: number;
  replies?: number;
  receivePerSecond?: number;
  batches?: number;
}

function randomLabName(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return `t${[...randomBytes(4)].map((b) => alphabet[b % alphabet.length]).join('')}`;
}

const name = randomLabName();
let workDir = '';
let childScript = '';
/** dist/lib copied into a package root that has no native/ folder: where the addon is missing. */
let bareModuleFile = '';
let info: LabInfo;

async function inScan(argv: string[], env: Record<string, string> = {}, timeout = 60_000): Promise<string> {
  const [cmd, ...args] = netnsExecArgs(info.namespaces.scan, argv);
  const { stdout } = await execFile(cmd!, args, { timeout, env: { ...process.env, WIDESCAN_IO: '', ...env }, maxBuffer: 1 << 20 });
  return stdout;
}

async function child<T>(mode: string, prefer: string, opts: { env?: Record<string, string>; module?: string; withoutNetRaw?: boolean } = {}): Promise<T> {
  // setpriv: root, but with CAP_NET_RAW out of the bounding set, so the exec'd node has it nowhere.
  const prefix = opts.withoutNetRaw ? ['setpriv', '--bounding-set', '-net_raw'] : [];
  return JSON.parse(await inScan([...prefix, process.execPath, '--expose-gc', childScript, opts.module ?? moduleFile, prefer, mode], opts.env)) as T;
}

beforeAll(async () => {
  for (const file of [moduleFile, addonFile]) {
    if (!existsSync(file)) throw new Error(`${file} is missing: run npm install (it builds native/) and npm run build`);
  }
  workDir = await mkdtemp(path.join(os.tmpdir(), 'widescan-icmp6-'));
  childScript = path.join(workDir, 'child.mjs');
  await writeFile(childScript, CHILD);
  const bare = path.join(workDir, 'bare');
  cpSync(path.join(repo, 'dist', 'lib'), path.join(bare, 'dist', 'lib'), { recursive: true });
  await writeFile(path.join(bare, 'package.json'), '{ "type": "module" }\n');
  await symlink(path.join(repo, 'node_modules'), path.join(bare, 'node_modules'));
  bareModuleFile = path.join(bare, 'dist', 'lib', 'icmp6native.js');

  info = await labUp({ name, stateDir: path.join(workDir, 'state') });
  await inScan(['ip', '-6', 'route', 'add', 'unreachable', `${P}:dead::/64`]);
  await inScan(['ip', '-6', 'route', 'add', 'prohibit', `${P}:beef::/64`]);
  await inScan(['tc', 'qdisc', 'add', 'dev', `${name}-to-sink`, 'root', 'tbf', 'rate', '10mbit', 'burst', '16kb', 'latency', '50ms']);
});

afterAll(async () => {
  if (info) await labDown(name, path.join(workDir, 'state'));
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

const checks = new Map<string, Promise<CheckReport>>();
const check = (prefer: string) => {
  if (!checks.has(prefer)) checks.set(prefer, child<CheckReport>('check', prefer));
  return checks.get(prefer)!;
};

describe.each([
  ['native', 'sendmmsg'],
  ['raw-socket', 'raw-socket'],
])('prefer %s', (prefer, expectedPath) => {
  test(`runs the ${expectedPath} path and gets every reply of 4096 probes to ${P}:1aa::/116, from its own address`, async () => {
    const r = await check(prefer);
    expect(r.path).toBe(expectedPath);
    expect(r.send).toEqual({ sent: 4096, errors: {} });
    expect(r.receive).toMatchObject({ unique: 4096, duplicates: 0, wrongSource: 0 });
    if (expectedPath === 'sendmmsg') {
      // Batched: far fewer callbacks than datagrams, up to 256 in one.
      expect(r.receive.maxBatch).toBeGreaterThan(1);
      expect(r.receive.maxBatch).toBeLessThanOrEqual(256);
      expect(r.receive.batches).toBeLessThan(4096 / 4);
    } else {
      expect(r.receive.maxBatch).toBe(1);
    }
  });

  test('counts refused destinations by errno code and still sends the others', async () => {
    const r = await check(prefer);
    expect(r.mixed).toEqual({ sent: 12, errors: { EHOSTUNREACH: 16, EACCES: 4 } });
    expect(r.nothing).toEqual({ sent: 0, errors: {} });
  });

  test('rejects bad arguments and options with errors that name them', async () => {
    const { bad } = await check(prefer);
    expect(bad.reversed).toMatch(/^RangeError: probes \[10, 5\) are not within the 4096/);
    expect(bad.beyond).toMatch(/^RangeError: probes \[0, 4097\)/);
    expect(bad.shortAddresses).toMatch(/^RangeError: probes \[0, 3\) are not within the 2 /);
    expect(bad.zeroBytes).toMatch(/^RangeError: packetBytes must be an integer from 4 to 65535, got 0/);
    expect(bad.fraction).toMatch(/^RangeError: probes \[0\.5, 1\)/);
    expect(bad.notBytes).toMatch(/^TypeError: packets must be a Buffer/);
    expect(bad.hops0).toMatch(/^RangeError: hopLimit must be an integer from 1 to 255, got 0/);
    expect(bad.hops256).toMatch(/got 256/);
    expect(bad.hopsNaN).toMatch(/got NaN/);
    expect(bad.secondHandler).toMatch(/a packets handler already/);
    expect(bad.type300).toMatch(/^RangeError: each of receiveTypes must be an integer from 0 to 255, got 300/);
    expect(bad.typesNotArray).toMatch(/^TypeError: receiveTypes must be an array/);
    expect(bad.hugeBuffer).toMatch(/^RangeError: receiveBufferBytes must be an integer from 1 to 1073741824/);
    expect(bad.badPrefer).toMatch(/^RangeError: prefer must be 'native' or 'raw-socket', got "fast"/);
    expect(bad.sendOnlyReceives).toMatch(/opened with receiveTypes: \[\] and receives nothing/);
  });

  test('close twice is fine; a closed transport refuses sends with a clear error', async () => {
    const { afterClose } = await check(prefer);
    const closed = /^Error: the ICMPv6 transport is closed; open a new one with openIcmp6Transport$/;
    expect(afterClose.send).toMatch(closed);
    expect(afterClose.setHopLimit).toMatch(closed);
    expect(afterClose.onPackets).toMatch(closed);
  });

  test('survives a throwing handler, close() inside the handler, and worker threads that end while receiving', async () => {
    const r = await child<LifecycleReport>('lifecycle', prefer);
    expect(r.throwing.delivered).toBe(600);
    expect(r.throwing.uncaught).toBeGreaterThanOrEqual(expectedPath === 'sendmmsg' ? 3 : 600);
    expect(r.closeInHandler).toEqual({ calls: 1 });
    if (expectedPath === 'sendmmsg') expect(r).toMatchObject({ exit: expectedPath, terminate: expectedPath });
  });

  test('waits out a full send buffer on a throttled link, and close rejects a send in flight', async () => {
    const r = await child<BackpressureReport>('backpressure', prefer);
    expect(r.send).toEqual({ sent: 4096, errors: {} });
    // 4096 × 70 bytes at 10 Mbit/s take ~230 ms: the kernel pushed back, and we waited, not spun.
    expect(r.wallMs).toBeGreaterThan(150);
    if (expectedPath === 'sendmmsg') expect(r.cpuMs).toBeLessThan(r.wallMs * 0.6);
    expect(r.closedWhileSending).toMatch(/^Error: the ICMPv6 transport is closed/);
  });
});

test('the addon refuses foreign handles and bad arguments, and closes collected handles', async () => {
  const r = await check('native');
  expect(r.native).toEqual({
    foreignHandle: 'TypeError: expected a socket handle returned by open()',
    noArguments: 'TypeError: sendBatch(handle, packets, packetBytes, addresses, from, to)',
    beyond: 'RangeError: to must be an integer from 0 to 2, got 3',
    negativeType: 'RangeError: each of receiveTypes must be an integer from 0 to 255, got -1',
    notOptions: expect.stringMatching(/^TypeError: open\(\) takes an options object/),
    notCallback: 'TypeError: callback must be a function',
    closedHandle: 'Error: the ICMPv6 socket is closed; open a new one',
  });
  expect(r.gc!.opened).toBe(r.gc!.before + 64);
  expect(r.gc!.after).toBeLessThanOrEqual(r.gc!.before);
});

test('WIDESCAN_IO picks the path; without the addon, prefer native falls back to raw-socket', async () => {
  expect(await child<StatusReport>('status', 'native', { env: { WIDESCAN_IO: 'raw-socket' } })).toMatchObject({ outcome: 'ok', path: 'raw-socket' });
  expect(await child<StatusReport>('status', 'raw-socket', { env: { WIDESCAN_IO: 'native' } })).toMatchObject({ outcome: 'ok', path: 'sendmmsg' });
  expect((await child<StatusReport>('status', 'native', { env: { WIDESCAN_IO: 'fast' } })).outcome).toMatch(
    /^Error: WIDESCAN_IO="fast" is not an I\/O path; use native, raw-socket, or leave it unset/,
  );

  const bare = await child<StatusReport>('status', 'native', { module: bareModuleFile });
  expect(bare).toMatchObject({ outcome: 'ok', path: 'raw-socket', status: { available: false } });
  expect(bare.status.reason).toMatch(/native\/build\/Release\/icmp6\.node is missing \(run npm install/);
  const required = await child<StatusReport>('status', 'native', { module: bareModuleFile, env: { WIDESCAN_IO: 'native' } });
  expect(required.outcome).toMatch(/^Error: WIDESCAN_IO=native, but the native addon is unavailable: .* is missing/);
});

test('without CAP_NET_RAW, opening says that it is needed', async () => {
  const native = await child<StatusReport>('status', 'native', { withoutNetRaw: true });
  expect(native.outcome).toBe(
    'Error: socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6) failed: Operation not permitted (EPERM); widescan needs CAP_NET_RAW for raw ICMPv6 sockets (run as root or grant it)',
  );
  const fallback = await child<StatusReport>('status', 'raw-socket', { withoutNetRaw: true });
  expect(fallback.outcome).toMatch(/^Error: cannot open a raw ICMPv6 socket \(Operation not permitted\); run as root or grant CAP_NET_RAW/);
});

test('rates of both paths for 2^18 probes to the aliased prefix (printed, not asserted)', async () => {
  const rates: Rate[] = [];
  for (const prefer of ['native', 'raw-socket']) {
    const r = await child<{ sendOnly: Rate; sendReceive: Rate }>('measure', prefer);
    expect(r.sendOnly.sent).toBe(1 << 18);
    expect(r.sendReceive.sent).toBe(1 << 18);
    rates.push(r.sendOnly, r.sendReceive);
  }
  console.log(
    [
      'path        | probes/s sent alone | probes/s sent while receiving | replies received | replies/s | callbacks',
      ...rates
        .filter((r) => r.replies !== undefined)
        .map((r) => {
          const alone = rates.find((o) => o.path === r.path && o.replies === undefined)!;
          return `${r.path.padEnd(11)} | ${String(alone.sendPerSecond).padStart(19)} | ${String(r.sendPerSecond).padStart(29)} | ${String(r.replies).padStart(16)} | ${String(r.receivePerSecond).padStart(9)} | ${r.batches}`;
        }),
    ].join('\n'),
  );
});

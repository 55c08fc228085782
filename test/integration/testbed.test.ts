// The namespace lab, for real: needs root and iproute2. Every probe is sent from inside the lab's own
// scanner namespace to lab addresses, so nothing reaches the host's network.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFile as execFileCallback } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { testbedCommand } from '../../testbed/command.js';
import {
  LAB_POPULATION,
  LAB_PREFIX,
  defaultPeerCommand,
  labDown,
  labStatus,
  labUp,
  netnsExecArgs,
  type LabInfo,
} from '../../testbed/lab.js';

const execFile = promisify(execFileCallback);
const P = 'fd00:5ca:1ab';

function randomLabName(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return `t${[...randomBytes(4)].map((b) => alphabet[b % alphabet.length]).join('')}`;
}

const canonical = (address: string) => new URL(`http://[${address}]/`).hostname.slice(1, -1);

async function netnsList(): Promise<string[]> {
  const { stdout } = await execFile('ip', ['netns', 'list']);
  return stdout.split('\n').map((line) => line.trim().split(/\s+/)[0] ?? '').filter(Boolean);
}

// Sends one echo request to each address and prints, as JSON, those that answered; gives up after 800 ms.
const PROBE_SCRIPT = `
const raw = require(process.argv[2]);
const targets = process.argv.slice(3);
const canonical = (a) => new URL('http://[' + a + ']/').hostname.slice(1, -1);
const wanted = new Map(targets.map((t) => [canonical(t), t]));
const id = process.pid & 0xffff;
const replied = new Set();
const socket = raw.createSocket({ addressFamily: raw.AddressFamily.IPv6, protocol: raw.Protocol.ICMPv6 });
function finish() {
  process.stdout.write(JSON.stringify([...replied]));
  process.exit(0);
}
socket.on('message', (buffer, source) => {
  if (buffer.length < 8 || buffer[0] !== 129 || buffer.readUInt16BE(4) !== id) return;
  const target = wanted.get(canonical(source));
  if (target !== undefined) replied.add(target);
  if (replied.size === wanted.size) finish();
});
targets.forEach((target, seq) => {
  const packet = Buffer.alloc(16);
  packet[0] = 128;
  packet.writeUInt16BE(id, 4);
  packet.writeUInt16BE(seq, 6);
  packet.write('wstestbd', 8);
  socket.send(packet, 0, packet.length, target, (error) => {
    if (error) { console.error('send to ' + target + ' failed: ' + error.message); process.exit(3); }
  });
});
setTimeout(finish, 800);
`;

const name = randomLabName();
let workDir = '';
let probeScript = '';
let info: LabInfo;
const rawSocketPath = createRequire(path.join(process.cwd(), 'package.json')).resolve('raw-socket');

/** Probes `targets` from the lab's scanner namespace; returns those that replied. */
async function probe(targets: string[]): Promise<string[]> {
  for (const target of targets) {
    // The only network this test may touch is the lab itself.
    expect(target.startsWith(`${P}:`)).toBe(true);
  }
  const [cmd, ...args] = netnsExecArgs(info.namespaces.scan, [process.execPath, probeScript, rawSocketPath, ...targets]);
  const { stdout } = await execFile(cmd!, args, { timeout: 5000 });
  return (JSON.parse(stdout) as string[]).sort();
}

/** An address in the aliased /64 with a random interface ID. */
function randomAliased(): string {
  const words = [...randomBytes(8)].reduce<string[]>((acc, b, i) => {
    if (i % 2 === 0) acc.push(b.toString(16).padStart(2, '0'));
    else acc[acc.length - 1] += b.toString(16).padStart(2, '0');
    return acc;
  }, []);
  return canonical(`${P}:1aa:${words.join(':')}`);
}

beforeAll(async () => {
  workDir = await mkdtemp(path.join(os.tmpdir(), 'widescan-testbed-'));
  probeScript = path.join(workDir, 'probe.cjs');
  await writeFile(probeScript, PROBE_SCRIPT);
  info = await labUp({
    name,
    stateDir: path.join(workDir, 'state'),
    // Stands in for the widescan listener: says where its key is, then idles until labDown stops it.
    peerCommand: (lab) => [
      process.execPath,
      '-e',
      `console.log('peer key ' + process.env.WIDESCAN_NETWORK_KEY_FILE + ' for ${lab.name}'); setInterval(() => {}, 1000);`,
    ],
  });
});

afterAll(async () => {
  await labDown(name, path.join(workDir, 'state'));
  await rm(workDir, { recursive: true, force: true });
});

describe('testbed lab', () => {
  test('up creates the four namespaces and describes the lab', async () => {
    const present = await netnsList();
    for (const role of ['scan', 'resp', 'sink', 'peer']) expect(present).toContain(`${name}-${role}`);
    expect(info.namespaces).toEqual({ scan: `${name}-scan`, resp: `${name}-resp`, sink: `${name}-sink`, peer: `${name}-peer` });
    expect(info.scannerAddress).toBe('fd00:5ca:1ab:f001::1');
    expect(info.peerAddress).toBe('fd00:5ca:1ab:400::1');
    expect(info.aliased).toEqual(['fd00:5ca:1ab:1aa::/64']);
    expect(info.sinkPrefixes).toEqual(['fd00:5ca:1ab:1ff::/64']);
    expect(info.live).toHaveLength(19);
    expect(new Set(info.live).size).toBe(19);
    for (const address of info.live) expect(canonical(address)).toBe(address);
    expect(info.live).toEqual(expect.arrayContaining(['fd00:5ca:1ab:101::1:1', 'fd00:5ca:1ab:200::100', 'fd00:5ca:1ab:300::beef']));
    expect(LAB_PREFIX).toBe('fd00:5ca:1ab::/48');
    // Each far namespace's only global address is its end of the link to the scanner.
    const { stdout } = await execFile('ip', ['-n', info.namespaces.peer, '-6', '-o', 'addr', 'show', 'scope', 'global']);
    expect(stdout.match(/inet6 (\S+)/g)).toEqual(['inet6 fd00:5ca:1ab:400::1/64']);
  });

  test('the ground truth, key file and peer are in the state dir', async () => {
    expect(JSON.parse(await readFile(info.groundTruthFile, 'utf8'))).toEqual(info);
    expect(await readFile(info.networkKeyFile, 'utf8')).toMatch(/^[0-9a-f]{64}$/);
    expect((await stat(info.networkKeyFile)).mode & 0o777).toBe(0o600);
    const pid = Number((await readFile(path.join(info.stateDir, 'peer.pid'), 'utf8')).trim());
    const { stdout } = await execFile('ip', ['netns', 'identify', String(pid)]);
    expect(stdout.trim()).toBe(info.namespaces.peer);
    let log = '';
    for (let i = 0; i < 40 && !log.includes('peer key'); i++) {
      await delay(50);
      log = await readFile(path.join(info.stateDir, 'peer.log'), 'utf8');
    }
    expect(log).toContain(`peer key ${info.networkKeyFile} for ${name}`);
  });

  test('every live host, the aliased prefix and the peer answer; the sink sees none of it', async () => {
    const before = await labStatus(name);
    expect(before.up).toBe(true);
    const aliased = [randomAliased(), randomAliased(), randomAliased(), 'fd00:5ca:1ab:1aa::1'];
    const targets = [...info.live, ...aliased, info.peerAddress];
    expect(await probe(targets)).toEqual([...targets].sort());
    const after = await labStatus(name);
    expect(after.counters.respEchoRequests - before.counters.respEchoRequests).toBe(info.live.length + aliased.length);
    expect(after.counters.peerEchoRequests - before.counters.peerEchoRequests).toBe(1);
    expect(after.counters.sinkEchoRequests).toBe(before.counters.sinkEchoRequests);
  });

  test('dead addresses in the populated subnets do not answer', async () => {
    const before = await labStatus(name);
    const dead = [
      `${P}:101::3`,
      `${P}:101::10`,
      `${P}:10a::6`,
      `${P}:100::1`,
      `${P}:102::1`,
      `${P}:1ab::1`,
      `${P}:200::2`,
      `${P}:200::101`,
      `${P}:300::8`,
      `${P}:300::bee`,
      `${P}:400::2`,
    ];
    expect(await probe(dead)).toEqual([]);
    const after = await labStatus(name);
    expect(after.counters.sinkEchoRequests).toBe(before.counters.sinkEchoRequests);
  });

  test('a probe into the excluded subnet lands in the sink, is counted, and would even be answered', async () => {
    const before = await labStatus(name);
    expect(await probe([`${P}:1ff::5`])).toEqual([`${P}:1ff::5`]);
    const after = await labStatus(name);
    expect(after.counters.sinkEchoRequests - before.counters.sinkEchoRequests).toBe(1);
    expect(after.counters.respEchoRequests).toBe(before.counters.respEchoRequests);
  });

  test('a probe to an unrouted lab address also lands in the sink', async () => {
    const before = await labStatus(name);
    await probe([`${P}:9999::1`, `${P}:f003::1`]);
    const after = await labStatus(name);
    expect(after.counters.sinkEchoRequests - before.counters.sinkEchoRequests).toBe(2);
  });

  test('up with the name of a running lab fails clearly and leaves it intact', async () => {
    await expect(labUp({ name, stateDir: path.join(workDir, 'other') })).rejects.toThrow(
      `lab ${name} exists (${name}-scan, ${name}-resp, ${name}-sink, ${name}-peer); run widescan testbed down --name ${name} first`,
    );
    expect((await labStatus(name)).up).toBe(true);
    expect(JSON.parse(await readFile(info.groundTruthFile, 'utf8'))).toEqual(info);
    await expect(stat(path.join(workDir, 'other'))).rejects.toThrow(/ENOENT/);
    expect(await probe([info.live[0]!])).toEqual([info.live[0]]);
  });

  test('bad names are refused before anything is created', async () => {
    const before = await netnsList();
    const bad = ['', 'WS', '1ab', 'toolong', 'a-b', 'a b', '../x', 'ws\n', 'x'.repeat(10_000), 'ws;rm'];
    for (const badName of bad) {
      await expect(labUp({ name: badName })).rejects.toThrow(/invalid lab name .*use 1 to 6 characters/);
      await expect(labDown(badName)).rejects.toThrow(/invalid lab name/);
      await expect(labStatus(badName)).rejects.toThrow(/invalid lab name/);
    }
    expect(() => netnsExecArgs('eth0', ['true'])).toThrow(/not a lab namespace/);
    expect(() => netnsExecArgs(`${name}-scan`, [])).toThrow(/command is empty/);
    expect(await netnsList()).toEqual(before);
  });

  test('a peer that dies at once fails up and leaves nothing behind', async () => {
    const other = randomLabName();
    const stateDir = path.join(workDir, `state-${other}`);
    await expect(labUp({ name: other, stateDir, peerCommand: ['/nonexistent/widescan-peer'] })).rejects.toThrow(
      /peer command `\/nonexistent\/widescan-peer` exited at once/,
    );
    expect((await netnsList()).filter((ns) => ns.startsWith(`${other}-`))).toEqual([]);
    await expect(stat(stateDir)).rejects.toThrow(/ENOENT/);
  });

  test('the CLI reports status, refuses bad names with exit 2, and has a default peer command', async () => {
    const run = async (args: string[]) => {
      const out: string[] = [];
      const err: string[] = [];
      const cmd = testbedCommand();
      for (const c of [cmd, ...cmd.commands]) {
        c.exitOverride();
        c.configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
      }
      let exitCode = 0;
      try {
        await cmd.parseAsync(args, { from: 'user' });
      } catch (error) {
        exitCode = (error as { exitCode: number }).exitCode;
      }
      return { out: out.join(''), err: err.join(''), exitCode };
    };
    const status = await run(['status', '--name', name, '--json']);
    expect(status.exitCode).toBe(0);
    expect(JSON.parse(status.out)).toMatchObject({ up: true, namespaces: Object.values(info.namespaces) });
    expect((await run(['status', '--name', name])).out).toContain(`lab ${name} is up (4/4 namespaces`);
    const badName = await run(['up', '--name', 'Bad!']);
    expect(badName.exitCode).toBe(2);
    expect(badName.err).toMatch(/invalid lab name "Bad!"/);
    const exists = await run(['up', '--name', name, '--state-dir', path.join(workDir, 'other')]);
    expect(exists.exitCode).toBe(1);
    expect(exists.err).toContain(`lab ${name} exists`);
    expect(defaultPeerCommand('/opt/widescan/cli/main.js')).toEqual([process.execPath, '/opt/widescan/cli/main.js', 'listen', '--hello']);
  });

  test('the population categories add up to the live list', () => {
    const { lowbyte, lowbyteDecoys, full, fullDecoys, random } = LAB_POPULATION;
    expect([...lowbyte, ...lowbyteDecoys, ...full, ...fullDecoys, ...random].sort()).toEqual([...info.live].sort());
  });

  test('down removes namespaces, links, processes and state; twice is fine', async () => {
    const pid = Number((await readFile(path.join(info.stateDir, 'peer.pid'), 'utf8')).trim());
    const { removed } = await labDown(name, info.stateDir);
    expect(removed).toEqual([...Object.values(info.namespaces), info.stateDir]);
    expect((await netnsList()).filter((ns) => ns.startsWith(`${name}-`))).toEqual([]);
    const { stdout: links } = await execFile('ip', ['-o', 'link', 'show']);
    expect(links).not.toContain(`${name}-to-`);
    await expect(stat(info.stateDir)).rejects.toThrow(/ENOENT/);
    // Gone, or at most a zombie waiting for this process to reap it.
    const state = await readFile(`/proc/${pid}/stat`, 'utf8').then((s) => s.split(') ')[1]?.[0], () => 'gone');
    expect(['gone', 'Z']).toContain(state);
    expect(await labDown(name, info.stateDir)).toEqual({ removed: [] });
    expect(await labStatus(name)).toEqual({
      up: false,
      namespaces: [],
      counters: { respEchoRequests: 0, sinkEchoRequests: 0, peerEchoRequests: 0 },
    });
  });
});


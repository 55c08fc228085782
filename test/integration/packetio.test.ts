// The packet-socket send path (WIDESCAN_IO=packet, lib/packetio.ts + native/icmp6.c), for real: two network
// namespaces this test creates, A (the scanner) and B (the target), joined by a veth pair. A sends echo
// requests as whole Ethernet frames to addresses B routes `local` on its lo; B's kernel answers only frames
// whose IPv6 header and ICMPv6 checksum are right, and A receives and verifies the replies on the native
// ICMPv6 path. Needs root, iproute2 and a built tree (`npm install` for native/, `npm run build` for dist/).
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { execFile as execFileCallback } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFile = promisify(execFileCallback);
const repo = process.cwd();
const distLib = path.join(repo, 'dist', 'lib');
const addonFile = path.join(repo, 'native', 'build', 'Release', 'icmp6.node');
const SCAN = 'fd00:5ca:1ab:f001::1';
const TARGET = 'fd00:5ca:1ab:f001::2';
/** B answers for every address of this /64 (a `local` route on its lo). */
const ALIASED = 'fd00:5ca:1ab:1aa::/64';

// The child, in A: argv = dist/lib, mode. Prints one JSON report.
const CHILD = `
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
const [lib, mode] = process.argv.slice(2);
const m = await import(lib + '/icmp6native.js');
const { ProbeWriter, verifyEcho } = await import(lib + '/core/probe.js');
const { FrameWriter, FRAME_HEADER_BYTES } = await import(lib + '/core/frame.js');
const SLOT = m.RECEIVE_SLOT_BYTES;
const report = {};
const outcome = async (f) => { try { await f(); return 'ok'; } catch (e) { return e.name + ': ' + e.message; } };
const macKey = new Uint8Array(16).fill(7);
const networkId = 0x5ca1, jobTag = 0x12345678;
// An odd-length contact (the checksum's padding case), and an even one.
const writer = new ProbeWriter({ networkId, jobTag, macKey, contact: 'packetio test, odd!' });
const evenWriter = new ProbeWriter({ networkId, jobTag, macKey, contact: 'packetio test, even!' });
// Probe i (target index first + i) to …:1aa::(first + i + 1).
function probes(n, w = writer, first = 0) {
  const packets = Buffer.alloc(n * w.packetBytes), addresses = new Uint8Array(n * 16), view = new DataView(addresses.buffer);
  for (let i = 0; i < n; i++) {
    addresses.set([0xfd, 0, 0x05, 0xca, 0x01, 0xab, 0x01, 0xaa], i * 16);
    view.setUint32(i * 16 + 12, first + i + 1);
    w.write(packets, i * w.packetBytes, addresses, i * 16, 0, first + i, Date.now());
  }
  return { packets, addresses };
}

if (mode === 'settings') {
  report.outcome = await outcome(() => { const t = m.openIcmp6Transport({ receiveTypes: [] }); report.path = t.path; t.close(); });
} else if (mode === 'check') {
  const n = 4096, even = 64;
  const rx = m.openIcmp6Transport({ receiveTypes: [129], receiveBufferBytes: 16 << 20 });
  const tx = m.openIcmp6Transport({ receiveTypes: [], sendBufferBytes: 1 << 20 });
  report.paths = { rx: rx.path, tx: tx.path };
  const { packets, addresses } = probes(n);
  const evens = probes(even, evenWriter, n);
  const got = new Uint8Array(n + even);
  const c = { valid: 0, invalid: 0, duplicates: 0, wrongSource: 0 };
  rx.onPackets((buffer, lengths, sources, count) => {
    for (let k = 0; k < count; k++) {
      const source = sources.subarray(k * 16, k * 16 + 16);
      const v = verifyEcho(buffer.subarray(k * SLOT, k * SLOT + lengths[k]), source, networkId, () => macKey);
      if (!v.ok || v.type !== 129) { c.invalid++; continue; }
      const i = Number(v.targetIndex);
      const expected = i < n ? addresses.subarray(i * 16, i * 16 + 16) : evens.addresses.subarray((i - n) * 16, (i - n) * 16 + 16);
      if (i >= n + even || Buffer.compare(source, expected) !== 0) { c.wrongSource++; continue; }
      if (got[i]) c.duplicates++; else { got[i] = 1; c.valid++; }
    }
  });
  tx.setHopLimit(2);
  // Two sends at once: they share the transport's frame buffer, one after the other.
  [report.send, report.sendEven] = await Promise.all([
    tx.send(packets, writer.packetBytes, addresses, 0, n),
    tx.send(evens.packets, evenWriter.packetBytes, evens.addresses, 0, even),
  ]);
  report.packetBytes = [writer.packetBytes, evenWriter.packetBytes];
  for (const end = Date.now() + 5000; c.valid < n + even && Date.now() < end; ) await sleep(10);
  await sleep(50);
  report.receive = c;
  report.bad = {
    beyond: await outcome(() => tx.send(packets, writer.packetBytes, addresses, 0, n + 1)),
    tinyPacket: await outcome(() => tx.send(packets, 2, addresses, 0, 1)),
    notBytes: await outcome(() => tx.send('x', 8, addresses, 0, 1)),
    hops0: await outcome(() => tx.setHopLimit(0)),
    receive: await outcome(() => tx.onPackets(() => {})),
  };
  tx.close();
  tx.close();
  report.afterClose = await outcome(() => tx.send(packets, writer.packetBytes, addresses, 0, 1));
  rx.close();
  // The addon itself: frames with a broken checksum (B must drop them), and what the wrapper never lets through.
  const addon = createRequire(import.meta.url)(m.nativeAddonStatus().file);
  const ifindex = Number(process.env.PACKET_IFINDEX);
  const h = addon.openPacket(ifindex);
  const fw = new FrameWriter({ source: Buffer.from(process.env.PACKET_SOURCE_HEX, 'hex'), sourceMac: Buffer.from(process.env.PACKET_SOURCE_MAC_HEX, 'hex'), destinationMac: Buffer.from(process.env.PACKET_ROUTER_MAC_HEX, 'hex'), hopLimit: 64 });
  const frameBytes = FRAME_HEADER_BYTES + writer.packetBytes, broken = 10;
  const frames = new Uint8Array(broken * frameBytes);
  for (let i = 0; i < broken; i++) {
    fw.write(packets, i * writer.packetBytes, writer.packetBytes, addresses, i * 16, frames, i * frameBytes);
    frames[i * frameBytes + FRAME_HEADER_BYTES + 3] ^= 0x01;
  }
  report.broken = addon.sendFrames(h, frames, frameBytes, 0, broken);
  const icmp = addon.open({ receiveTypes: [] });
  report.native = {
    framesOnIcmp: await outcome(() => addon.sendFrames(icmp, frames, frameBytes, 0, 1)),
    batchOnPacket: await outcome(() => addon.sendBatch(h, packets, writer.packetBytes, addresses, 0, 1)),
    hopsOnPacket: await outcome(() => addon.setHopLimit(h, 5)),
    receiveOnPacket: await outcome(() => addon.startReceiving(h, () => {})),
    beyond: await outcome(() => addon.sendFrames(h, frames, frameBytes, 0, broken + 1)),
    shortFrame: await outcome(() => addon.sendFrames(h, frames, 13, 0, 1)),
    ifindex0: await outcome(() => addon.openPacket(0)),
    noSuchIfindex: await outcome(() => addon.openPacket(999999)),
    noArguments: await outcome(() => addon.openPacket()),
    framesArguments: await outcome(() => addon.sendFrames(h)),
  };
  addon.close(icmp);
  addon.close(h);
  report.native.closed = await outcome(() => addon.sendFrames(h, frames, frameBytes, 0, 1));
}
process.stdout.write(JSON.stringify(report));
`;

const suffix = [...randomBytes(4)].map((b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('');
const nsA = `wspa-${suffix}`;
const nsB = `wspb-${suffix}`;
const ifA = `wsp${suffix}a`;
const ifB = `wsp${suffix}b`;
/** In A: a veth pair with link-local addresses only (no source to default to). */
const ifBare = `wsp${suffix}c`;
let workDir = '';
let childScript = '';
let routerMac = '';
let created = false;

const run = async (argv: string[]) => (await execFile(argv[0]!, argv.slice(1), { timeout: 30_000 })).stdout;
const inNs = (ns: string, argv: string[]) => run(['ip', 'netns', 'exec', ns, ...argv]);

async function child<T>(mode: string, env: Record<string, string | undefined>, prefix: string[] = [], lib = distLib): Promise<T> {
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, WIDESCAN_IO: 'packet', WIDESCAN_PACKET_INTERFACE: ifA, WIDESCAN_PACKET_ROUTER_MAC: routerMac, ...env })) {
    if (v !== undefined) childEnv[k] = v;
  }
  const { stdout } = await execFile('ip', ['netns', 'exec', nsA, ...prefix, process.execPath, childScript, lib, mode], { timeout: 60_000, env: childEnv, maxBuffer: 1 << 20 });
  return JSON.parse(stdout) as T;
}

async function snmp6(ns: string): Promise<Record<string, number>> {
  const text = await inNs(ns, ['cat', '/proc/net/snmp6']);
  return Object.fromEntries(text.split('\n').filter(Boolean).map((line) => { const [k, v] = line.trim().split(/\s+/); return [k!, Number(v)]; }));
}

beforeAll(async () => {
  for (const file of [path.join(distLib, 'packetio.js'), addonFile]) {
    if (!existsSync(file)) throw new Error(`${file} is missing: run npm install (it builds native/) and npm run build`);
  }
  workDir = await mkdtemp(path.join(os.tmpdir(), 'widescan-packetio-'));
  childScript = path.join(workDir, 'child.mjs');
  await writeFile(childScript, CHILD);
  await run(['ip', 'netns', 'add', nsA]);
  created = true;
  await run(['ip', 'netns', 'add', nsB]);
  // No duplicate address detection on the links made below: its neighbour solicitations, sent a while after
  // a link comes up, would be counted by the test that checks that widescan sends none.
  await inNs(nsA, ['sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
  // Created inside A with its peer in B: no interface ever appears in the host's namespace.
  await run(['ip', '-n', nsA, 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
  await run(['ip', '-n', nsA, 'link', 'add', ifBare, 'type', 'veth', 'peer', 'name', `${ifBare}x`]);
  for (const [ns, dev, address] of [[nsA, ifA, SCAN], [nsB, ifB, TARGET]] as const) {
    await run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    await run(['ip', '-n', ns, '-6', 'addr', 'add', `${address}/64`, 'dev', dev, 'nodad']);
    await run(['ip', '-n', ns, 'link', 'set', dev, 'up']);
  }
  await run(['ip', '-n', nsA, 'link', 'set', ifBare, 'up']);
  await run(['ip', '-n', nsA, '-6', 'route', 'add', ALIASED, 'via', TARGET]);
  await run(['ip', '-n', nsB, '-6', 'route', 'add', 'local', ALIASED, 'dev', 'lo']);
  routerMac = (await inNs(nsB, ['cat', `/sys/class/net/${ifB}/address`])).trim();
  // A never speaks neighbour discovery on the packet path: B learns A's MAC here, or it would queue its
  // replies (a few hundred at most) while resolving A.
  const scanMac = (await inNs(nsA, ['cat', `/sys/class/net/${ifA}/address`])).trim();
  await run(['ip', '-n', nsB, '-6', 'neigh', 'replace', SCAN, 'lladdr', scanMac, 'dev', ifB, 'nud', 'permanent']);
}, 60_000);

afterAll(async () => {
  if (created) {
    await run(['ip', 'netns', 'del', nsA]).catch(() => {});
    await run(['ip', 'netns', 'del', nsB]).catch(() => {});
  }
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

interface CheckReport {
  paths: { rx: string; tx: string };
  send: { sent: number; errors: Record<string, number> };
  sendEven: { sent: number; errors: Record<string, number> };
  packetBytes: number[];
  receive: { valid: number; invalid: number; duplicates: number; wrongSource: number };
  broken: { sent: number; errno: number };
  bad: Record<string, string>;
  afterClose: string;
  native: Record<string, string>;
}

test("sends 4096 probes as frames; B's kernel accepts every one and A verifies every reply; broken checksums are dropped", async () => {
  const hex = (text: string) => text.replace(/:/g, '');
  const sourceMac = (await inNs(nsA, ['cat', `/sys/class/net/${ifA}/address`])).trim();
  const ifindex = (await inNs(nsA, ['cat', `/sys/class/net/${ifA}/ifindex`])).trim();
  const before = await snmp6(nsB);
  const r = await child<CheckReport>('check', {
    PACKET_IFINDEX: ifindex,
    PACKET_SOURCE_HEX: 'fd0005ca01abf0010000000000000001',
    PACKET_SOURCE_MAC_HEX: hex(sourceMac),
    PACKET_ROUTER_MAC_HEX: hex(routerMac),
  });
  const after = await snmp6(nsB);
  // Receiving transports (the listener's) stay on the native path under WIDESCAN_IO=packet.
  expect(r.paths).toEqual({ rx: 'sendmmsg', tx: 'packet' });
  expect(r.send).toEqual({ sent: 4096, errors: {} });
  expect(r.sendEven).toEqual({ sent: 64, errors: {} });
  expect(r.packetBytes).toEqual([59, 60]); // odd and even lengths: the checksum's two cases
  expect(r.receive).toEqual({ valid: 4096 + 64, invalid: 0, duplicates: 0, wrongSource: 0 });
  expect(r.broken).toEqual({ sent: 10, errno: 0 });
  // 4096 good echo requests, and the 10 broken ones counted as checksum errors, not answered.
  expect(after.Icmp6InEchos! - before.Icmp6InEchos!).toBe(4096 + 64);
  expect(after.Icmp6OutEchoReplies! - before.Icmp6OutEchoReplies!).toBe(4096 + 64);
  expect(after.Icmp6InCsumErrors! - before.Icmp6InCsumErrors!).toBe(10);

  expect(r.bad.beyond).toMatch(/^RangeError: probes \[0, 4097\) are not within the 4096/);
  expect(r.bad.tinyPacket).toMatch(/^RangeError: packetBytes must be an integer from 4 to 65535, got 2/);
  expect(r.bad.notBytes).toMatch(/^TypeError: packets must be a Buffer/);
  expect(r.bad.hops0).toMatch(/^RangeError: hopLimit must be an integer from 1 to 255, got 0/);
  expect(r.bad.receive).toMatch(/^Error: the packet path \(WIDESCAN_IO=packet\) sends only and receives nothing/);
  expect(r.afterClose).toMatch(/^Error: the ICMPv6 transport is closed/);
  expect(r.native).toEqual({
    framesOnIcmp: expect.stringMatching(/^Error: this is an ICMPv6 socket \(open\): it sends ICMPv6 messages with sendBatch, not frames/),
    batchOnPacket: expect.stringMatching(/^Error: this is a packet socket \(openPacket\): it sends whole frames with sendFrames/),
    hopsOnPacket: expect.stringMatching(/^Error: this is a packet socket \(openPacket\): the hop limit is in the frames/),
    receiveOnPacket: expect.stringMatching(/^Error: this is a packet socket \(openPacket\): it sends frames and receives nothing/),
    beyond: 'RangeError: to must be an integer from 0 to 10, got 11',
    shortFrame: 'RangeError: frameBytes must be an integer from 14 to 65589, got 13',
    ifindex0: 'RangeError: ifindex must be an integer from 1 to 2147483647, got 0',
    noSuchIfindex: expect.stringMatching(/^Error: bind\(AF_PACKET\) to the interface failed: No such device \(ENODEV\)/),
    noArguments: 'TypeError: openPacket(ifindex, sendBufferBytes?)',
    framesArguments: 'TypeError: sendFrames(handle, frames, frameBytes, from, to)',
    closed: 'Error: the ICMPv6 socket is closed; open a new one',
  });
}, 60_000);

test("unset, the interface and the router's MAC come from A's default route and neighbour table, which are only read", async () => {
  const auto = { WIDESCAN_PACKET_INTERFACE: undefined, WIDESCAN_PACKET_ROUTER_MAC: undefined };
  await run(['ip', '-n', nsA, '-6', 'route', 'add', 'default', 'via', TARGET, 'dev', ifA]);
  try {
    await run(['ip', '-n', nsA, '-6', 'neigh', 'flush', 'dev', ifA]);
    const before = await snmp6(nsA);
    // Not resolved: an error, and no neighbour solicitation sent to resolve it.
    expect((await child<{ outcome: string }>('settings', auto)).outcome).toMatch(
      new RegExp(`^Error: WIDESCAN_PACKET_ROUTER_MAC is not set, and the gateway ${TARGET} has no usable entry in the neighbour table of ${ifA}`),
    );
    expect((await snmp6(nsA)).Icmp6OutNeighborSolicits).toBe(before.Icmp6OutNeighborSolicits);
    await run(['ip', '-n', nsA, '-6', 'neigh', 'replace', TARGET, 'lladdr', routerMac, 'dev', ifA, 'nud', 'reachable']);
    expect(await child('settings', auto)).toEqual({ outcome: 'ok', path: 'packet' });
  } finally {
    await run(['ip', '-n', nsA, '-6', 'route', 'del', 'default', 'via', TARGET, 'dev', ifA]);
  }
}, 60_000);

test('bad packet settings fail with errors that name the setting and the fix', async () => {
  const outcome = async (env: Record<string, string | undefined>) => (await child<{ outcome: string; path?: string }>('settings', env)).outcome;
  expect(await child('settings', {})).toEqual({ outcome: 'ok', path: 'packet' });
  expect(await child('settings', { WIDESCAN_PACKET_SOURCE: 'fd00:5ca:1ab:f001::99' })).toEqual({ outcome: 'ok', path: 'packet' });
  // A has no default route (yet): nothing to take the interface or the router from.
  expect(await outcome({ WIDESCAN_PACKET_INTERFACE: undefined })).toMatch(/^Error: WIDESCAN_PACKET_INTERFACE is not set, and there is no IPv6 default route to take it from/);
  expect(await outcome({ WIDESCAN_PACKET_INTERFACE: '../../etc' })).toMatch(/^Error: WIDESCAN_PACKET_INTERFACE="..\/..\/etc" is not an interface name/);
  expect(await outcome({ WIDESCAN_PACKET_INTERFACE: 'nosuch0' })).toMatch(/^Error: WIDESCAN_PACKET_INTERFACE="nosuch0": no such network interface here .*name one of: .*lo/);
  expect(await outcome({ WIDESCAN_PACKET_INTERFACE: 'lo' })).toMatch(/^Error: WIDESCAN_PACKET_INTERFACE=lo is not an Ethernet interface/);
  expect(await outcome({ WIDESCAN_PACKET_INTERFACE: ifBare })).toMatch(new RegExp(`^Error: ${ifBare} has no global IPv6 address to send from; add one or set WIDESCAN_PACKET_SOURCE`));
  expect(await outcome({ WIDESCAN_PACKET_ROUTER_MAC: undefined })).toMatch(
    new RegExp(`^Error: WIDESCAN_PACKET_ROUTER_MAC is not set, and the router's MAC cannot be looked up: there is no IPv6 default route via a gateway on ${ifA}`),
  );
  expect(await outcome({ WIDESCAN_PACKET_ROUTER_MAC: 'router' })).toMatch(/^Error: WIDESCAN_PACKET_ROUTER_MAC="router" is not a MAC address; write six hex pairs/);
  expect(await outcome({ WIDESCAN_PACKET_ROUTER_MAC: '02:00:00:00:00:01:ff' })).toMatch(/is not a MAC address/);
  expect(await outcome({ WIDESCAN_PACKET_ROUTER_MAC: 'ff:ff:ff:ff:ff:ff' })).toMatch(/is a multicast\/broadcast MAC/);
  expect(await outcome({ WIDESCAN_PACKET_ROUTER_MAC: '00:00:00:00:00:00' })).toMatch(/is not a MAC; give the router's/);
  expect(await outcome({ WIDESCAN_PACKET_SOURCE: 'not-an-address' })).toMatch(/^Error: WIDESCAN_PACKET_SOURCE: /);
  expect(await outcome({ WIDESCAN_PACKET_SOURCE: 'ff02::1' })).toMatch(/cannot be a source address \(multicast, unspecified or loopback\)/);
  expect(await outcome({ WIDESCAN_PACKET_SOURCE: '::' })).toMatch(/cannot be a source address/);
  expect(await outcome({ WIDESCAN_IO: 'fast' })).toMatch(/^Error: WIDESCAN_IO="fast" is not an I\/O path; use native, raw-socket, or leave it unset \(or packet/);
  // setpriv: root, but with CAP_NET_RAW out of the bounding set.
  // dist/lib copied into a package root without native/: no addon, and the packet path says so.
  const bare = path.join(workDir, 'bare');
  await cp(distLib, path.join(bare, 'dist', 'lib'), { recursive: true });
  await writeFile(path.join(bare, 'package.json'), '{ "type": "module" }\n');
  await symlink(path.join(repo, 'node_modules'), path.join(bare, 'node_modules'));
  const noAddon = await child<{ outcome: string }>('settings', {}, [], path.join(bare, 'dist', 'lib'));
  expect(noAddon.outcome).toMatch(/^Error: WIDESCAN_IO=packet, but the native addon is unavailable: .*native\/build\/Release\/icmp6\.node is missing/);
  const denied = await child<{ outcome: string }>('settings', {}, ['setpriv', '--bounding-set', '-net_raw']);
  expect(denied.outcome).toBe(
    'Error: socket(AF_PACKET, SOCK_RAW) failed: Operation not permitted (EPERM); widescan needs CAP_NET_RAW for packet sockets (run as root or grant it)',
  );
}, 60_000);

// The settings of the packet-socket send path (WIDESCAN_IO=packet, PacketTransport in lib/icmp6native.ts):
// whole Ethernet frames written to an AF_PACKET socket bound to one interface, masscan's way. The kernel then
// skips route lookup, neighbour resolution and IPv6 output per packet; in exchange widescan writes the IPv6
// header and ICMPv6 checksum itself (lib/core/frame.ts) and needs the next hop's MAC: given
// (WIDESCAN_PACKET_ROUTER_MAC, like masscan's --router-mac) or read from the neighbour table once at start.
// Send-only: replies still arrive on the listener's raw ICMPv6 socket.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addressToBytes, parseAddress } from './core/ipv6.js';

export interface PacketSettings {
  ifindex: number;
  sourceMac: Uint8Array;
  routerMac: Uint8Array;
  /** The IPv6 source address of every probe (16 bytes). */
  source: Uint8Array;
  /** The interface's default hop limit (what the kernel would have used), until setHopLimit. */
  hopLimit: number;
}

const ARPHRD_ETHER = 1;

/** "02:00:5e:10:00:01" (or with '-') to 6 bytes; `name` is the setting it came from, for the error. */
export function parseMac(text: string, name: string): Uint8Array {
  const m = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(text.trim());
  if (!m) throw new Error(`${name}=${JSON.stringify(text.slice(0, 40))} is not a MAC address; write six hex pairs, e.g. 02:00:5e:10:00:01`);
  return Uint8Array.from(m.slice(1), (h) => parseInt(h, 16));
}

function readSys(sysfs: string, name: string, file: string, setting: string): string {
  try {
    return readFileSync(path.join(sysfs, name, file), 'utf8').trim();
  } catch {
    throw new Error(`${setting}=${JSON.stringify(name)}: no such network interface here (no ${path.join(sysfs, name, file)}); name one of: ${listInterfaces(sysfs)}`);
  }
}

/** The interfaces sysfs lists (os.networkInterfaces() leaves out those without an address). */
function listInterfaces(sysfs: string): string {
  let names: string[] = [];
  try {
    names = readdirSync(sysfs).sort();
  } catch {
    // unreadable: said below
  }
  return names.join(', ') || `(none found in ${sysfs})`;
}

/** An IPv6 default route, as `ip -j -6 route show default` lists it. */
export interface DefaultRoute {
  dev: string;
  gateway?: string;
  metric?: number;
}
/** A neighbour table entry, as `ip -j -6 neigh show dev DEV` lists it. */
export interface Neighbour {
  dst: string;
  lladdr?: string;
  state?: string[];
}

export interface PacketEnvironment {
  env?: NodeJS.ProcessEnv;
  /** /sys/class/net, or a stand-in for tests. */
  sysfs?: string;
  /** /proc/sys/net/ipv6/conf, or a stand-in for tests. */
  ipv6conf?: string;
  interfaces?: NodeJS.Dict<os.NetworkInterfaceInfo[]>;
  /** This network namespace's IPv6 default routes (default: from iproute2). */
  defaultRoutes?: () => DefaultRoute[];
  /** Its neighbour table on one interface (default: from iproute2). */
  neighbours?: (dev: string) => Neighbour[];
}

/** Reads kernel state with iproute2's JSON output; sends nothing. */
function ipJson<T>(args: string[]): T[] {
  let out: string;
  try {
    out = execFileSync('ip', ['-j', ...args], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    throw new Error(`could not run \`ip ${args.join(' ')}\` (iproute2) to read it: ${(error as Error).message.split('\n')[0]}`);
  }
  if (out.trim() === '') return [];
  try {
    return JSON.parse(out) as T[];
  } catch {
    throw new Error(`\`ip -j ${args.join(' ')}\` printed no JSON (an iproute2 without -j?): ${JSON.stringify(out.slice(0, 80))}`);
  }
}

/** Neighbour states whose link address the kernel itself would still send to. */
const USABLE_NEIGHBOUR = new Set(['REACHABLE', 'STALE', 'DELAY', 'PROBE', 'PERMANENT', 'NOARP']);

/** The default route to take: on `dev` if given, else the one of lowest metric. */
function defaultRoute(routes: DefaultRoute[], dev: string | undefined): DefaultRoute | undefined {
  return routes.filter((r) => dev === undefined || r.dev === dev).sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0))[0];
}

/**
 * The packet path's settings from WIDESCAN_PACKET_INTERFACE (default: the IPv6 default route's interface),
 * WIDESCAN_PACKET_ROUTER_MAC (default: the default route's gateway's MAC in the neighbour table) and
 * WIDESCAN_PACKET_SOURCE (default: the interface's first global address); each checked, with errors that
 * name the setting and the fix. Looking the defaults up reads kernel tables only: no packet is sent, so a
 * gateway the kernel has not resolved yet is an error, not a neighbour solicitation.
 */
export function packetSettingsFromEnv(where: PacketEnvironment = {}): PacketSettings {
  const {
    env = process.env,
    sysfs = '/sys/class/net',
    ipv6conf = '/proc/sys/net/ipv6/conf',
    interfaces = os.networkInterfaces(),
    defaultRoutes = () => ipJson<DefaultRoute>(['-6', 'route', 'show', 'default']),
    neighbours = (dev: string) => ipJson<Neighbour>(['-6', 'neigh', 'show', 'dev', dev]),
  } = where;
  let routes: DefaultRoute[] | undefined;
  const routesOnce = () => (routes ??= defaultRoutes());
  let name = env.WIDESCAN_PACKET_INTERFACE ?? '';
  if (name === '') {
    let route: DefaultRoute | undefined;
    try {
      route = defaultRoute(routesOnce(), undefined);
    } catch (error) {
      throw new Error(`WIDESCAN_PACKET_INTERFACE is not set, and the default route cannot be read: ${(error as Error).message}; set it (e.g. eth0)`);
    }
    if (!route) throw new Error('WIDESCAN_PACKET_INTERFACE is not set, and there is no IPv6 default route to take it from; set it to the interface to send on (e.g. eth0)');
    name = route.dev;
  }
  // Linux interface names: 1 to 15 bytes, no '/', no whitespace, not '.' or '..' (they must not escape sysfs).
  if (!/^[^/\s:]{1,15}$/.test(name) || name === '.' || name === '..') {
    throw new Error(`WIDESCAN_PACKET_INTERFACE=${JSON.stringify(name.slice(0, 40))} is not an interface name (1 to 15 characters, no '/', ':' or spaces)`);
  }
  const setting = 'WIDESCAN_PACKET_INTERFACE';
  const ifindex = Number(readSys(sysfs, name, 'ifindex', setting));
  if (!Number.isInteger(ifindex) || ifindex < 1) throw new Error(`${setting}=${name}: its ifindex in ${sysfs} is not a positive integer`);
  if (Number(readSys(sysfs, name, 'type', setting)) !== ARPHRD_ETHER) {
    throw new Error(`${setting}=${name} is not an Ethernet interface; the packet path writes Ethernet frames (use WIDESCAN_IO=native on other links)`);
  }
  const sourceMac = parseMac(readSys(sysfs, name, 'address', setting), `${path.join(sysfs, name, 'address')}`);

  let routerText = env.WIDESCAN_PACKET_ROUTER_MAC ?? '';
  if (routerText === '') routerText = gatewayMac(name, routesOnce, neighbours);
  const routerMac = parseMac(routerText, 'WIDESCAN_PACKET_ROUTER_MAC');
  if (routerMac[0]! & 1) throw new Error(`WIDESCAN_PACKET_ROUTER_MAC=${routerText} is a multicast/broadcast MAC; give the router's unicast MAC`);
  if (routerMac.every((b) => b === 0)) throw new Error('WIDESCAN_PACKET_ROUTER_MAC=00:00:00:00:00:00 is not a MAC; give the router\'s');

  const sourceText = env.WIDESCAN_PACKET_SOURCE ?? '';
  let source: Uint8Array;
  if (sourceText !== '') {
    let address: bigint;
    try {
      address = parseAddress(sourceText);
    } catch (error) {
      throw new Error(`WIDESCAN_PACKET_SOURCE: ${(error as Error).message}`);
    }
    source = addressToBytes(address);
    if (source[0] === 0xff || address === 0n || address === 1n) {
      throw new Error(`WIDESCAN_PACKET_SOURCE=${sourceText} cannot be a source address (multicast, unspecified or loopback); give this host's unicast address`);
    }
  } else {
    const global = (interfaces[name] ?? []).find((a) => a.family === 'IPv6' && !a.internal && !/^fe[89ab]/i.test(a.address));
    if (!global) throw new Error(`${name} has no global IPv6 address to send from; add one or set WIDESCAN_PACKET_SOURCE`);
    source = addressToBytes(parseAddress(global.address));
  }
  let hopLimit = 64;
  try {
    const configured = Number(readFileSync(path.join(ipv6conf, name, 'hop_limit'), 'utf8'));
    if (Number.isInteger(configured) && configured >= 1 && configured <= 255) hopLimit = configured;
  } catch {
    // No per-interface setting readable: the kernel's default, 64.
  }
  return { ifindex, sourceMac, routerMac, source, hopLimit };
}

/** The MAC of the default route's gateway on `dev`, from the neighbour table; errors say how to give it. */
function gatewayMac(dev: string, routes: () => DefaultRoute[], neighbours: (dev: string) => Neighbour[]): string {
  const fix = `set WIDESCAN_PACKET_ROUTER_MAC to the next hop's MAC on ${dev}`;
  let route: DefaultRoute | undefined;
  let table: Neighbour[];
  try {
    route = defaultRoute(routes(), dev);
    if (!route?.gateway) throw new Error(`there is no IPv6 default route via a gateway on ${dev}`);
    table = neighbours(dev);
  } catch (error) {
    throw new Error(`WIDESCAN_PACKET_ROUTER_MAC is not set, and the router's MAC cannot be looked up: ${(error as Error).message}; ${fix}`);
  }
  const gateway = route.gateway;
  const entry = table.find((n) => n.dst.toLowerCase() === gateway.toLowerCase() && n.lladdr && (n.state ?? []).some((x) => USABLE_NEIGHBOUR.has(x)));
  if (!entry) {
    throw new Error(
      `WIDESCAN_PACKET_ROUTER_MAC is not set, and the gateway ${gateway} has no usable entry in the neighbour table of ${dev} (the kernel has not resolved it, and widescan sends nothing to resolve it); ${fix}, or let some traffic reach the gateway first`,
    );
  }
  return entry.lladdr!;
}

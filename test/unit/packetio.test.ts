// The packet path's settings (lib/packetio.ts) against a stand-in /sys/class/net and /proc/sys/net/ipv6/conf
// in a temporary directory: every setting checked, every refusal naming the setting and the fix.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { NetworkInterfaceInfo } from 'node:os';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { packetSettingsFromEnv, parseMac, type PacketEnvironment } from '../../lib/packetio.js';

let root = '';
let where: Omit<PacketEnvironment, 'env'>;

function iface(name: string, files: Record<string, string>): void {
  mkdirSync(path.join(root, 'net', name), { recursive: true });
  for (const [file, text] of Object.entries(files)) writeFileSync(path.join(root, 'net', name, file), text);
}

const address = (a: string, internal = false) => ({ address: a, family: 'IPv6', internal }) as NetworkInterfaceInfo;

beforeAll(() => {
  root = mkdtempSync(path.join(tmpdir(), 'widescan-packetio-'));
  iface('eth0', { ifindex: '7\n', type: '1\n', address: '02:00:5e:10:00:01\n' });
  iface('wg0', { ifindex: '8\n', type: '65534\n', address: '\n' });
  iface('odd0', { ifindex: 'x\n', type: '1\n', address: '02:00:5e:10:00:02\n' });
  iface('badmac0', { ifindex: '9\n', type: '1\n', address: 'zz\n' });
  iface('eth1', { ifindex: '10\n', type: '1\n', address: '02:00:5e:10:00:03\n' }); // no hop_limit in conf
  mkdirSync(path.join(root, 'conf', 'eth0'), { recursive: true });
  writeFileSync(path.join(root, 'conf', 'eth0', 'hop_limit'), '32\n');
  where = {
    sysfs: path.join(root, 'net'),
    ipv6conf: path.join(root, 'conf'),
    interfaces: { eth0: [address('fe80::1'), address('2001:db8::7')], eth1: [address('2001:db8::10')], lo: [address('::1', true)] },
    // Two default routes: eth1's has the lower metric; only eth0's gateway is resolved.
    defaultRoutes: () => [
      { dev: 'eth0', gateway: 'fe80::1', metric: 1024 },
      { dev: 'eth1', gateway: 'fe80::2', metric: 100 },
    ],
    neighbours: (dev) =>
      dev === 'eth0'
        ? [
            { dst: 'fe80::99', lladdr: '02:00:00:00:00:99', state: ['REACHABLE'] },
            { dst: 'FE80::1', lladdr: '02:00:5e:00:00:fe', state: ['STALE'] },
          ]
        : [{ dst: 'fe80::2', state: ['FAILED'] }],
  };
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const settings = (env: NodeJS.ProcessEnv) => packetSettingsFromEnv({ ...where, env: { WIDESCAN_PACKET_INTERFACE: 'eth0', WIDESCAN_PACKET_ROUTER_MAC: '02:00:5e:aa:bb:cc', ...env } });

describe('packetSettingsFromEnv', () => {
  test("reads the interface's index, MAC and hop limit; the source defaults to its first global address", () => {
    const s = settings({});
    expect(s.ifindex).toBe(7);
    expect([...s.sourceMac]).toEqual([2, 0, 0x5e, 0x10, 0, 1]);
    expect([...s.routerMac]).toEqual([2, 0, 0x5e, 0xaa, 0xbb, 0xcc]);
    expect(Buffer.from(s.source).toString('hex')).toBe('20010db8000000000000000000000007'); // not fe80::1
    expect(s.hopLimit).toBe(32);
    expect(Buffer.from(settings({ WIDESCAN_PACKET_SOURCE: '2001:db8::99' }).source).toString('hex')).toBe('20010db8000000000000000000000099');
  });

  test('without a readable hop_limit, the kernel default 64', () => {
    expect(packetSettingsFromEnv({ ...where, env: { WIDESCAN_PACKET_INTERFACE: 'eth1', WIDESCAN_PACKET_ROUTER_MAC: '02:00:00:00:00:01' } }).hopLimit).toBe(64);
  });

  test.each([

    [{ WIDESCAN_PACKET_INTERFACE: 'a'.repeat(16) }, /is not an interface name \(1 to 15 characters/],
    [{ WIDESCAN_PACKET_INTERFACE: 'eth 0' }, /is not an interface name/],
    [{ WIDESCAN_PACKET_INTERFACE: '..' }, /is not an interface name/],
    [{ WIDESCAN_PACKET_INTERFACE: 'eth0:1' }, /is not an interface name/],
    [{ WIDESCAN_PACKET_INTERFACE: 'nosuch0' }, /^WIDESCAN_PACKET_INTERFACE="nosuch0": no such network interface here .*; name one of: badmac0, eth0, eth1, odd0, wg0$/],
    [{ WIDESCAN_PACKET_INTERFACE: 'wg0' }, /^WIDESCAN_PACKET_INTERFACE=wg0 is not an Ethernet interface/],
    [{ WIDESCAN_PACKET_INTERFACE: 'odd0' }, /its ifindex in .* is not a positive integer/],
    [{ WIDESCAN_PACKET_INTERFACE: 'badmac0' }, /address="zz" is not a MAC address/],

    [{ WIDESCAN_PACKET_ROUTER_MAC: '01:00:5e:00:00:01' }, /is a multicast\/broadcast MAC/],
    [{ WIDESCAN_PACKET_ROUTER_MAC: '00-00-00-00-00-00' }, /is not a MAC; give the router's/],
    [{ WIDESCAN_PACKET_SOURCE: '2001:db8::/64' }, /^WIDESCAN_PACKET_SOURCE: /],
    [{ WIDESCAN_PACKET_SOURCE: '::1' }, /cannot be a source address/],
    [{ WIDESCAN_PACKET_SOURCE: 'ff02::1' }, /cannot be a source address/],
  ])('refuses %j', (env, message) => {
    expect(() => settings(env)).toThrow(message);
  });

  test("unset, the interface is the default route's of lowest metric, and the router's MAC its gateway's neighbour entry", () => {
    // eth1's route wins by metric, but its gateway is unresolved (FAILED): that is an error, not a guess.
    expect(() => settings({ WIDESCAN_PACKET_INTERFACE: '', WIDESCAN_PACKET_ROUTER_MAC: '' })).toThrow(
      /^WIDESCAN_PACKET_ROUTER_MAC is not set, and the gateway fe80::2 has no usable entry in the neighbour table of eth1 \(the kernel has not resolved it, and widescan sends nothing to resolve it\); set WIDESCAN_PACKET_ROUTER_MAC to the next hop's MAC on eth1/,
    );
    expect(settings({ WIDESCAN_PACKET_INTERFACE: '', WIDESCAN_PACKET_ROUTER_MAC: '02:00:00:00:00:01' }).ifindex).toBe(10);
    // On eth0 the gateway's entry (case aside) is STALE: usable, as the kernel would use it.
    expect([...settings({ WIDESCAN_PACKET_ROUTER_MAC: '' }).routerMac]).toEqual([2, 0, 0x5e, 0, 0, 0xfe]);
  });

  test('the lookups fail with the reason and the setting that avoids them', () => {
    const bare = { ...where, defaultRoutes: () => [], neighbours: () => [] };
    expect(() => packetSettingsFromEnv({ ...bare, env: { WIDESCAN_PACKET_ROUTER_MAC: '02:00:00:00:00:01' } })).toThrow(
      'WIDESCAN_PACKET_INTERFACE is not set, and there is no IPv6 default route to take it from; set it to the interface to send on (e.g. eth0)',
    );
    expect(() => packetSettingsFromEnv({ ...bare, env: { WIDESCAN_PACKET_INTERFACE: 'eth0' } })).toThrow(
      "WIDESCAN_PACKET_ROUTER_MAC is not set, and the router's MAC cannot be looked up: there is no IPv6 default route via a gateway on eth0; set WIDESCAN_PACKET_ROUTER_MAC to the next hop's MAC on eth0",
    );
    const onLink = { ...where, defaultRoutes: () => [{ dev: 'eth0' }] };
    expect(() => packetSettingsFromEnv({ ...onLink, env: { WIDESCAN_PACKET_INTERFACE: 'eth0' } })).toThrow(/no IPv6 default route via a gateway on eth0/);
    const broken = {
      ...where,
      defaultRoutes: () => {
        throw new Error('could not run `ip -6 route show default` (iproute2) to read it: spawn ip ENOENT');
      },
    };
    expect(() => packetSettingsFromEnv({ ...broken, env: {} })).toThrow(
      'WIDESCAN_PACKET_INTERFACE is not set, and the default route cannot be read: could not run `ip -6 route show default` (iproute2) to read it: spawn ip ENOENT; set it (e.g. eth0)',
    );
    expect(() => packetSettingsFromEnv({ ...broken, env: { WIDESCAN_PACKET_INTERFACE: 'eth0' } })).toThrow(/^WIDESCAN_PACKET_ROUTER_MAC is not set, and the router's MAC cannot be looked up: could not run/);
  });

  test('an interface with only link-local addresses needs WIDESCAN_PACKET_SOURCE', () => {
    expect(() => packetSettingsFromEnv({ ...where, interfaces: { eth0: [address('fe80::1')] }, env: { WIDESCAN_PACKET_INTERFACE: 'eth0', WIDESCAN_PACKET_ROUTER_MAC: '02:00:00:00:00:01' } })).toThrow(
      'eth0 has no global IPv6 address to send from; add one or set WIDESCAN_PACKET_SOURCE',
    );
  });
});

describe('parseMac', () => {
  test('colons or dashes, any case, surrounding space', () => {
    expect([...parseMac(' 02-AB-cd-00-ff-10\n', 'X')]).toEqual([2, 0xab, 0xcd, 0, 0xff, 0x10]);
  });
  test.each(['', '02:00:00:00:00', '02:00:00:00:00:00:00', '0200.0000.0001', '02:00:00:00:00:0g', '2:0:0:0:0:1'])('refuses %j naming the setting', (text) => {
    expect(() => parseMac(text, 'SETTING')).toThrow(/^SETTING=".*" is not a MAC address; write six hex pairs/);
  });
  test('a very long input is quoted shortened', () => {
    expect(() => parseMac('x'.repeat(10_000), 'S')).toThrow(/^S="x{40}" is not a MAC address/);
  });
});

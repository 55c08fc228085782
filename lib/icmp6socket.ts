import { createRequire } from 'node:module';
import type raw from 'raw-socket';
import { checkHopLimit } from './core/frame.js';

const IPPROTO_ICMPV6 = 58;
const ICMP6_FILTER = 1;
/** The largest socket buffer widescan asks for (the native addon enforces the same bound). */
export const MAX_SOCKET_BUFFER_BYTES = 2 ** 30;

let rawSocket: typeof raw | undefined;
/**
 * raw-socket, loaded on first use: a Nan addon loads in one thread of a process only, so merely importing
 * this module must not load it (the native path of lib/icmp6native.ts also runs in worker threads).
 */
export function loadRawSocket(): typeof raw {
  return (rawSocket ??= createRequire(import.meta.url)('raw-socket') as typeof raw);
}

export interface Icmp6SocketOptions {
  /** ICMPv6 types this socket receives; [] = none (a send-only socket must not queue every reply). */
  receiveTypes: readonly number[];
  hopLimit?: number;
  receiveBufferBytes?: number;
  sendBufferBytes?: number;
}

function checkInteger(value: unknown, name: string, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const shown = typeof value === 'number' ? String(value) : typeof value;
    throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${shown}`);
  }
}

export { checkHopLimit };

/** Validates the options of both I/O paths (raw-socket here, the native addon in lib/icmp6native.ts). */
export function checkIcmp6SocketOptions(options: Icmp6SocketOptions): void {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError('ICMPv6 socket options must be an object: { receiveTypes: number[], hopLimit?, receiveBufferBytes?, sendBufferBytes? }');
  }
  if (!Array.isArray(options.receiveTypes)) {
    throw new TypeError('receiveTypes must be an array of ICMPv6 types (0 to 255); [] receives nothing');
  }
  for (const type of options.receiveTypes) checkInteger(type, 'each of receiveTypes', 0, 255);
  if (options.hopLimit !== undefined) checkHopLimit(options.hopLimit);
  if (options.receiveBufferBytes !== undefined) checkInteger(options.receiveBufferBytes, 'receiveBufferBytes', 1, MAX_SOCKET_BUFFER_BYTES);
  if (options.sendBufferBytes !== undefined) checkInteger(options.sendBufferBytes, 'sendBufferBytes', 1, MAX_SOCKET_BUFFER_BYTES);
}

/**
 * A raw ICMPv6 socket (needs CAP_NET_RAW). The kernel filters by type (ICMP6_FILTER), so workers do not pay
 * for the replies the listener handles, and the listener sees only echo traffic.
 */
export function openIcmp6Socket(options: Icmp6SocketOptions): raw.Socket {
  checkIcmp6SocketOptions(options);
  const raw = loadRawSocket();
  let socket: raw.Socket;
  try {
    socket = raw.createSocket({ addressFamily: raw.AddressFamily.IPv6, protocol: raw.Protocol.ICMPv6, bufferSize: 2048 });
  } catch (err) {
    throw new Error(`cannot open a raw ICMPv6 socket (${(err as Error).message}); run as root or grant CAP_NET_RAW`);
  }
  // struct icmp6_filter: 256 bits, a set bit *blocks* that type.
  const filter = Buffer.alloc(32, 0xff);
  for (const type of options.receiveTypes) filter[type >> 3] &= ~(1 << (type & 7));
  socket.setOption(IPPROTO_ICMPV6, ICMP6_FILTER, filter, filter.length);
  if (options.hopLimit !== undefined) socket.setOption(raw.SocketLevel.IPPROTO_IPV6, raw.SocketOption.IPV6_UNICAST_HOPS, options.hopLimit);
  if (options.receiveBufferBytes) socket.setOption(raw.SocketLevel.SOL_SOCKET, raw.SocketOption.SO_RCVBUF, options.receiveBufferBytes);
  if (options.sendBufferBytes) socket.setOption(raw.SocketLevel.SOL_SOCKET, raw.SocketOption.SO_SNDBUF, options.sendBufferBytes);
  if (options.receiveTypes.length === 0) socket.pauseRecv();
  return socket;
}

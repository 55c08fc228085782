import raw from 'raw-socket';

const IPPROTO_ICMPV6 = 58;
const ICMP6_FILTER = 1;

export interface Icmp6SocketOptions {
  /** ICMPv6 types this socket receives; [] = none (a send-only socket must not queue every reply). */
  receiveTypes: readonly number[];
  hopLimit?: number;
  receiveBufferBytes?: number;
  sendBufferBytes?: number;
}

/**
 * A raw ICMPv6 socket (needs CAP_NET_RAW). The kernel filters by type (ICMP6_FILTER), so workers do not pay
 * for the replies the listener handles, and the listener sees only echo traffic.
 */
export function openIcmp6Socket(options: Icmp6SocketOptions): raw.Socket {
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

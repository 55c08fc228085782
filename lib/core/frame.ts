/**
 * Ethernet + IPv6 + ICMPv6 frames for a packet socket (AF_PACKET), the way masscan sends: the kernel then
 * skips route lookup, neighbour resolution and IPv6 output per packet, so widescan must write what they
 * would have: the link header (next hop's MAC given), the IPv6 header and the ICMPv6 checksum.
 *
 *   offset  bytes  field
 *   0       6      destination MAC (the next hop: the router)
 *   6       6      source MAC
 *   12      2      ethertype 0x86DD (IPv6)
 *   14      40     IPv6 header: version 6, traffic class 0, flow label 0, payload length, next header 58, hop limit, src, dst
 *   54      n      the ICMPv6 message, its checksum computed (RFC 4443 §2.3, pseudo-header of RFC 8200 §8.1)
 */

export const ETHERNET_HEADER_BYTES = 14;
export const IPV6_HEADER_BYTES = 40;
/** Link and IPv6 headers: frame bytes = FRAME_HEADER_BYTES + ICMPv6 message bytes. */
export const FRAME_HEADER_BYTES = ETHERNET_HEADER_BYTES + IPV6_HEADER_BYTES;
export const ETHERTYPE_IPV6 = 0x86dd;
const NEXT_HEADER_ICMPV6 = 58;
/** An IPv6 payload length is 16 bits; frames beyond the usual 1500-byte MTU are the caller's business. */
export const MAX_ICMP6_MESSAGE_BYTES = 65535;

export interface FrameWriterOptions {
  /** The IPv6 source address written in every frame (16 bytes). */
  source: Uint8Array;
  sourceMac: Uint8Array;
  /** The next hop's MAC (masscan's --router-mac). */
  destinationMac: Uint8Array;
  /** 1 to 255. */
  hopLimit: number;
}

function checkBytes(value: unknown, name: string, length: number): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array of ${length} bytes`);
  if (value.length !== length) throw new RangeError(`${name} must be ${length} bytes, got ${value.length}`);
}

export function checkHopLimit(hops: unknown): asserts hops is number {
  if (typeof hops !== 'number' || !Number.isInteger(hops) || hops < 1 || hops > 255) {
    throw new RangeError(`hopLimit must be an integer from 1 to 255, got ${typeof hops === 'number' ? hops : typeof hops}`);
  }
}

/** One's-complement sum of 16-bit big-endian words of bytes [start, end) added to `sum`, not folded. */
function sumWords(bytes: Uint8Array, start: number, end: number, sum: number): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (i < end) sum += bytes[i]! << 8; // an odd length: the last byte padded with a zero (RFC 1071)
  return sum;
}

/** Folds carries into 16 bits. The loop terminates: each round shrinks the value until it fits. */
function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * Writes frames from ICMPv6 probes as lib/core/probe.ts's ProbeWriter writes them (checksum field 0 or not:
 * it is overwritten). The source half of the pseudo-header sum and the link header are computed once.
 */
export class FrameWriter {
  private readonly template = new Uint8Array(FRAME_HEADER_BYTES);
  /** The pseudo-header's source address and next header, summed (not folded). */
  private readonly constantSum: number;
  private hops: number;

  constructor(options: FrameWriterOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new TypeError('FrameWriter options must be an object: { source, sourceMac, destinationMac, hopLimit }');
    }
    checkBytes(options.source, 'source (IPv6 address)', 16);
    checkBytes(options.sourceMac, 'sourceMac', 6);
    checkBytes(options.destinationMac, 'destinationMac', 6);
    checkHopLimit(options.hopLimit);
    const h = this.template;
    h.set(options.destinationMac, 0);
    h.set(options.sourceMac, 6);
    h[12] = ETHERTYPE_IPV6 >> 8;
    h[13] = ETHERTYPE_IPV6 & 0xff;
    h[14] = 0x60; // version 6; traffic class and flow label 0
    h[20] = NEXT_HEADER_ICMPV6;
    h.set(options.source, 22);
    this.hops = options.hopLimit;
    this.constantSum = sumWords(options.source, 0, 16, NEXT_HEADER_ICMPV6);
  }

  get hopLimit(): number {
    return this.hops;
  }

  setHopLimit(hops: number): void {
    checkHopLimit(hops);
    this.hops = hops;
  }

  /**
   * Writes the frame for `message[messageOffset, +messageBytes)` to `destination[destinationOffset]` at
   * `frame[frameOffset]` (FRAME_HEADER_BYTES + messageBytes bytes). Allocates nothing; returns the frame's length.
   */
  write(
    message: Uint8Array,
    messageOffset: number,
    messageBytes: number,
    destination: Uint8Array,
    destinationOffset: number,
    frame: Uint8Array,
    frameOffset: number,
  ): number {
    if (!Number.isInteger(messageBytes) || messageBytes < 4 || messageBytes > MAX_ICMP6_MESSAGE_BYTES) {
      throw new RangeError(`messageBytes must be an integer from 4 (an ICMPv6 header's type, code and checksum) to ${MAX_ICMP6_MESSAGE_BYTES}, got ${messageBytes}`);
    }
    if (!Number.isInteger(messageOffset) || messageOffset < 0 || messageOffset + messageBytes > message.length) {
      throw new RangeError(`message bytes [${messageOffset}, ${messageOffset + messageBytes}) are not within the ${message.length}-byte message buffer`);
    }
    if (!Number.isInteger(destinationOffset) || destinationOffset < 0 || destinationOffset + 16 > destination.length) {
      throw new RangeError(`destination bytes [${destinationOffset}, ${destinationOffset + 16}) are not within the ${destination.length}-byte address buffer`);
    }
    const frameBytes = FRAME_HEADER_BYTES + messageBytes;
    if (!Number.isInteger(frameOffset) || frameOffset < 0 || frameOffset + frameBytes > frame.length) {
      throw new RangeError(`frame bytes [${frameOffset}, ${frameOffset + frameBytes}) are not within the ${frame.length}-byte frame buffer`);
    }
    frame.set(this.template, frameOffset);
    frame[frameOffset + 18] = messageBytes >> 8; // payload length
    frame[frameOffset + 19] = messageBytes & 0xff;
    frame[frameOffset + 21] = this.hops;
    frame.set(destination.subarray(destinationOffset, destinationOffset + 16), frameOffset + 38);
    const icmp = frameOffset + FRAME_HEADER_BYTES;
    frame.set(message.subarray(messageOffset, messageOffset + messageBytes), icmp);
    frame[icmp + 2] = 0;
    frame[icmp + 3] = 0;
    // Pseudo-header: source (precomputed), destination, 32-bit upper-layer length, zeros, next header (precomputed).
    let sum = sumWords(destination, destinationOffset, destinationOffset + 16, this.constantSum + messageBytes);
    sum = fold(sumWords(frame, icmp, icmp + messageBytes, sum));
    const checksum = ~sum & 0xffff;
    frame[icmp + 2] = checksum >> 8;
    frame[icmp + 3] = checksum & 0xff;
    return frameBytes;
  }
}

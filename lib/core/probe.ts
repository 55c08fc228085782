/*
 * The probe / hello codec (DESIGN.md "Probe wire format"). A packet, as handed to and received from a raw
 * ICMPv6 socket (the kernel adds the IPv6 header and fills/checks the ICMPv6 checksum):
 *
 *   offset  bytes  field
 *   0       1      type: 128 echo request (probes and hellos are requests), 129 echo reply
 *   1       1      code 0
 *   2       2      checksum, written as 0: the kernel fills it on raw ICMPv6 sockets
 *   4       2      identifier = low 16 bits of the job tag
 *   6       2      sequence   = low 16 bits of the target index
 *   8       32     payload, big-endian:
 *                    +0  4  magic "WSCN"          +4 1 version (1)      +5 1 kind (1 probe, 2 hello)
 *                    +6  2  network id            +8 4 job tag          +12 8 target index
 *                    +20 4  send time, ms mod 2^32
 *                    +24 8  MAC = SipHash-2-4(macKeyFor(networkKey, jobTag),
 *                                             destination address (16 bytes) ‖ payload bytes 0..23),
 *                           the 64-bit value big-endian
 *   40      ≤ 200  optional contact string, UTF-8, not covered by the MAC
 *
 * In a hello, the target-index field carries in its low 32 bits the job tag of the probe the hello answers
 * (0 if none), so the receiver can attribute the peer to its job; its job tag is the sender's own.
 *
 * An echo reply copies the request's identifier, sequence and payload, so a reply verifies against its
 * source address (the probed destination). A request (a peer's probe or hello) verifies against the
 * address it was sent to, which the receiver passes as `dst`.
 */
import { sipKey, siphash24, type SipKey } from './siphash.js';

export const ICMP6_ECHO_REQUEST = 128;
export const ICMP6_ECHO_REPLY = 129;
/** "WSCN". */
export const PROBE_MAGIC = Uint8Array.of(0x57, 0x53, 0x43, 0x4e);
export const PROBE_VERSION = 1;
export const KIND_PROBE = 1;
export const KIND_HELLO = 2;
export const ICMP_HEADER_BYTES = 8;
export const PAYLOAD_BYTES = 32;
export const MAX_CONTACT_BYTES = 200;

/** Packet offsets. */
const P = ICMP_HEADER_BYTES;
const O_ID = 4, O_SEQ = 6;
const O_MAGIC = P, O_VERSION = P + 4, O_KIND = P + 5, O_NET = P + 6, O_TAG = P + 8, O_INDEX = P + 12;
const O_TIME = P + 20, O_MAC = P + 24;
const FIXED_BYTES = P + PAYLOAD_BYTES;
/** The MAC's message: 16 address bytes, then payload bytes 0..23. */
const MAC_MSG_BYTES = 16 + 24;
/** A private copy, so a caller mutating the exported PROBE_MAGIC cannot change what verifies. */
const MAGIC = 0x5753434e;

const u32 = (b: Uint8Array, o: number) => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
const u16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24; b[o + 1] = v >>> 16; b[o + 2] = v >>> 8; b[o + 3] = v;
}

export interface ProbeWriterOptions {
  /** 16-bit network id, `networkIdOf(networkKey)`. */
  networkId: number;
  /** 32-bit job tag, `jobTagOf(uid)`. */
  jobTag: number;
  /** 16 bytes, `macKeyFor(networkKey, jobTag)`. */
  macKey: Uint8Array;
  /** KIND_PROBE (default) or KIND_HELLO. */
  kind?: 1 | 2;
  /** Shown to whoever inspects the packet (who scans, where to opt out); at most MAX_CONTACT_BYTES UTF-8. */
  contact?: string;
}

/** Writes echo requests of one job (or hellos of one instance) from a prebuilt template. */
export class ProbeWriter {
  readonly options: ProbeWriterOptions;
  readonly packetBytes: number;
  private readonly template: Uint8Array;
  private readonly key: SipKey;
  /** MAC message scratch; bytes 16..27 (magic … job tag) are constant and prefilled. */
  private readonly msg = new Uint8Array(MAC_MSG_BYTES);
  private readonly mac = new Uint32Array(2);

  constructor(opts: ProbeWriterOptions) {
    this.options = opts;
    const { networkId, jobTag, macKey, kind = KIND_PROBE, contact = '' } = opts;
    if (!Number.isInteger(networkId) || networkId < 0 || networkId > 0xffff) {
      throw new RangeError(`networkId must be a 16-bit unsigned integer, got ${String(networkId)}; use networkIdOf()`);
    }
    if (!Number.isInteger(jobTag) || jobTag < 0 || jobTag > 0xffffffff) {
      throw new RangeError(`jobTag must be a 32-bit unsigned integer, got ${String(jobTag)}; use jobTagOf()`);
    }
    if (kind !== KIND_PROBE && kind !== KIND_HELLO) throw new RangeError(`kind must be 1 (probe) or 2 (hello), got ${String(kind)}`);
    this.key = sipKey(macKey);
    const contactBytes = new TextEncoder().encode(contact);
    if (contactBytes.length > MAX_CONTACT_BYTES) {
      throw new RangeError(`probe contact is ${contactBytes.length} bytes of UTF-8, more than ${MAX_CONTACT_BYTES}; shorten it (a URL is enough)`);
    }
    this.packetBytes = FIXED_BYTES + contactBytes.length;
    const t = new Uint8Array(this.packetBytes);
    t[0] = ICMP6_ECHO_REQUEST;
    t[O_ID] = jobTag >>> 8; t[O_ID + 1] = jobTag;
    put32(t, O_MAGIC, MAGIC);
    t[O_VERSION] = PROBE_VERSION;
    t[O_KIND] = kind;
    t[O_NET] = networkId >>> 8; t[O_NET + 1] = networkId;
    put32(t, O_TAG, jobTag);
    t.set(contactBytes, FIXED_BYTES);
    this.template = t;
    this.msg.set(t.subarray(P, O_INDEX), 16);
  }

  /**
   * Writes one packet at `buf[offset ..)` for the destination `dst[dstOffset .. +16)`; `indexHi`/`indexLo` are
   * the high and low 32 bits of the target index (for a hello: 0 and the answered job tag). No allocation.
   */
  write(buf: Uint8Array, offset: number, dst: Uint8Array, dstOffset: number, indexHi: number, indexLo: number, sendTimeMs: number): void {
    if (!(dstOffset >= 0 && dstOffset + 16 <= dst.length)) {
      throw new RangeError(`destination offset ${dstOffset} leaves no 16-byte address in a ${dst.length}-byte array`);
    }
    const msg = this.msg, mac = this.mac;
    for (let i = 0; i < 16; i++) msg[i] = dst[dstOffset + i]!;
    const m = 16 - P; // MAC message offset of a packet offset
    put32(msg, m + O_INDEX, indexHi >>> 0);
    put32(msg, m + O_INDEX + 4, indexLo >>> 0);
    put32(msg, m + O_TIME, sendTimeMs >>> 0); // ToUint32 truncates and wraps: ms mod 2^32
    siphash24(this.key, msg, 0, MAC_MSG_BYTES, mac);
    this.writeTagged(buf, offset, indexHi, indexLo, sendTimeMs, mac[1]!, mac[0]!);
  }

  /** The MAC message's bytes 16..27 (magic, version, kind, network id, job tag): the same in every probe. */
  macFixedBytes(): Uint8Array {
    return this.msg.slice(16, 16 + O_INDEX - P);
  }

  /**
   * Writes one packet whose MAC (high and low 32 bits) was computed elsewhere: the GPU backend computes the
   * MACs of a whole batch in one kernel. No allocation.
   */
  writeTagged(buf: Uint8Array, offset: number, indexHi: number, indexLo: number, sendTimeMs: number, macHi: number, macLo: number): void {
    if (!(offset >= 0 && offset + this.packetBytes <= buf.length)) {
      throw new RangeError(`no room for a ${this.packetBytes}-byte probe at offset ${offset} of a ${buf.length}-byte buffer`);
    }
    buf.set(this.template, offset);
    buf[offset + O_SEQ] = indexLo >>> 8; buf[offset + O_SEQ + 1] = indexLo;
    put32(buf, offset + O_INDEX, indexHi >>> 0);
    put32(buf, offset + O_INDEX + 4, indexLo >>> 0);
    put32(buf, offset + O_TIME, sendTimeMs >>> 0);
    put32(buf, offset + O_MAC, macHi >>> 0);
    put32(buf, offset + O_MAC + 4, macLo >>> 0);
  }
}

export type EchoVerdict =
  | { ok: true; type: 128 | 129; kind: 1 | 2; jobTag: number; targetIndex: bigint; sendTimeMs: number }
  | { ok: false; reason: 'short' | 'type' | 'code' | 'magic' | 'version' | 'kind' | 'network' | 'identifier' | 'mac' };

export interface VerifyOptions {
  /** This host's address the request was sent to; needed to verify echo requests (peers' probes, hellos). */
  dst?: Uint8Array;
}

// Scratch for verifyEcho; safe because verification is synchronous and takes the key before touching it.
const vMsg = new Uint8Array(MAC_MSG_BYTES);
const vMac = new Uint32Array(2);

/**
 * Checks a received ICMPv6 echo (starting at the ICMPv6 header) from `source` (16 bytes). Never throws on
 * packet contents: any packet gets a verdict. Reasons: 'identifier' covers the echo identifier and sequence
 * number (they must match the job tag and the target index); 'mac' also covers a request without `dst`.
 */
export function verifyEcho(
  packet: Uint8Array,
  source: Uint8Array,
  networkId: number,
  macKeyOf: (jobTag: number) => Uint8Array | SipKey,
  opts: VerifyOptions = {},
): EchoVerdict {
  if (source.length !== 16) throw new RangeError(`source address must be 16 bytes, got ${source.length}`);
  if (opts.dst !== undefined && opts.dst.length !== 16) throw new RangeError(`dst address must be 16 bytes, got ${opts.dst.length}`);
  if (packet.length < FIXED_BYTES) return { ok: false, reason: 'short' };
  const type = packet[0]!;
  if (type !== ICMP6_ECHO_REQUEST && type !== ICMP6_ECHO_REPLY) return { ok: false, reason: 'type' };
  if (packet[1] !== 0) return { ok: false, reason: 'code' };
  if (u32(packet, O_MAGIC) !== MAGIC) return { ok: false, reason: 'magic' };
  if (packet[O_VERSION] !== PROBE_VERSION) return { ok: false, reason: 'version' };
  const kind = packet[O_KIND]!;
  if (kind !== KIND_PROBE && kind !== KIND_HELLO) return { ok: false, reason: 'kind' };
  if (u16(packet, O_NET) !== networkId) return { ok: false, reason: 'network' };
  const jobTag = u32(packet, O_TAG);
  if (u16(packet, O_ID) !== (jobTag & 0xffff) || u16(packet, O_SEQ) !== u16(packet, O_INDEX + 6)) {
    return { ok: false, reason: 'identifier' };
  }
  const addr = type === ICMP6_ECHO_REPLY ? source : opts.dst;
  if (addr === undefined) return { ok: false, reason: 'mac' };

  const k = macKeyOf(jobTag);
  const key = k instanceof Uint32Array ? k : sipKey(k);
  vMsg.set(addr, 0);
  for (let i = 0; i < 24; i++) vMsg[16 + i] = packet[P + i]!;
  siphash24(key, vMsg, 0, MAC_MSG_BYTES, vMac);
  if (u32(packet, O_MAC) !== vMac[1] || u32(packet, O_MAC + 4) !== vMac[0]) return { ok: false, reason: 'mac' };

  return {
    ok: true,
    type,
    kind,
    jobTag,
    targetIndex: (BigInt(u32(packet, O_INDEX)) << 32n) | BigInt(u32(packet, O_INDEX + 4)),
    sendTimeMs: u32(packet, O_TIME),
  };
}

/** The contact string after the payload (at most MAX_CONTACT_BYTES, lenient UTF-8), or undefined if none. */
export function echoContact(packet: Uint8Array): string | undefined {
  if (packet.length <= FIXED_BYTES) return undefined;
  const end = Math.min(packet.length, FIXED_BYTES + MAX_CONTACT_BYTES);
  return new TextDecoder('utf-8', { fatal: false }).decode(packet.subarray(FIXED_BYTES, end));
}

// Raw ICMPv6 I/O behind one interface with three implementations: the native addon (native/icmp6.c:
// sendmmsg/recvmmsg, binary addresses, a batch per syscall); the addon's packet socket (WIDESCAN_IO=packet,
// send-only: whole Ethernet frames, masscan's way, see lib/packetio.ts); and `raw-socket` (a syscall, an
// event-loop wake-up and an address string per packet), the fallback wherever the addon was not built.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { getSystemErrorMap, getSystemErrorName } from 'node:util';
import type raw from 'raw-socket';
import { addressToBytes, parseAddress } from './core/ipv6.js';
import { bytesToSocketText } from './core/words.js';
import { checkHopLimit, checkIcmp6SocketOptions, loadRawSocket, openIcmp6Socket, type Icmp6SocketOptions } from './icmp6socket.js';
import { FRAME_HEADER_BYTES, FrameWriter } from './core/frame.js';
import { packetSettingsFromEnv, type PacketSettings } from './packetio.js';

export type { Icmp6SocketOptions } from './icmp6socket.js';

/** Datagram i of a received batch starts at `buffer[i * RECEIVE_SLOT_BYTES]` and is `lengths[i]` bytes long. */
export const RECEIVE_SLOT_BYTES = 1280;

export type PacketsHandler = (buffer: Buffer, lengths: Uint32Array, sources: Uint8Array, count: number) => void;

export interface Icmp6Transport {
  readonly path: 'sendmmsg' | 'raw-socket' | 'packet';
  setHopLimit(hops: number): void;
  /**
   * Sends probes [from, to): packet i at packets[i*packetBytes], destination at addresses[i*16]. Resolves when
   * the kernel took or refused all; refusals are counted by errno code (ENETUNREACH, EACCES, …), not thrown.
   * The arrays must stay unchanged until then. Rejects on bad arguments and on a closed transport.
   */
  send(packets: Buffer, packetBytes: number, addresses: Uint8Array, from: number, to: number): Promise<{ sent: number; errors: Record<string, number> }>;
  /**
   * Batches of received datagrams (ICMPv6 header first; datagram i at `i * RECEIVE_SLOT_BYTES`, `lengths[i]`
   * bytes) with their 16-byte source addresses (`sources[i*16]`). The arrays are reused for the next batch:
   * read them before returning. One handler per transport; what it throws is an uncaught exception.
   */
  onPackets(handler: PacketsHandler): void;
  /** Idempotent. Sends in progress reject. */
  close(): void;
}

export type Icmp6TransportOptions = Icmp6SocketOptions & { prefer?: 'native' | 'raw-socket' };

/** The addon's handle: opaque. */
interface NativeHandle {
  readonly __icmp6: unique symbol;
}

/** How far a send call got: `errno` (0: none) is about probe or frame `from + sent`. */
type SendRound = { sent: number; errno: number };

interface Icmp6Addon {
  readonly slotBytes: number;
  open(options: Icmp6SocketOptions): NativeHandle;
  sendBatch(handle: NativeHandle, packets: Uint8Array, packetBytes: number, addresses: Uint8Array, from: number, to: number): SendRound;
  /** A packet socket bound to one interface, send-only. */
  openPacket(ifindex: number, sendBufferBytes?: number): NativeHandle;
  /** Frames [from, to) of a packet socket, frame i at frames[i * frameBytes]. */
  sendFrames(handle: NativeHandle, frames: Uint8Array, frameBytes: number, from: number, to: number): SendRound;
  startReceiving(handle: NativeHandle, callback: PacketsHandler): void;
  waitWritable(handle: NativeHandle, callback: () => void): void;
  setHopLimit(handle: NativeHandle, hops: number): void;
  close(handle: NativeHandle): void;
}

export type NativeAddonStatus = { available: true; file: string } | { available: false; file: string; reason: string };

/** The repository (or installed package) root: the nearest folder up from this module with a package.json. */
function packageRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = here; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${here}; widescan's files are incomplete`);
  }
}

let addon: { status: NativeAddonStatus; addon?: Icmp6Addon } | undefined;

function loadAddon(): { status: NativeAddonStatus; addon?: Icmp6Addon } {
  if (addon) return addon;
  const file = path.join(packageRoot(), 'native', 'build', 'Release', 'icmp6.node');
  if (!existsSync(file)) {
    addon = { status: { available: false, file, reason: `${file} is missing (run npm install, which builds it with node-gyp)` } };
    return addon;
  }
  try {
    const loaded = createRequire(import.meta.url)(file) as Icmp6Addon;
    if (loaded.slotBytes !== RECEIVE_SLOT_BYTES) throw new Error(`it has ${loaded.slotBytes}-byte slots, not ${RECEIVE_SLOT_BYTES}: a stale build; run npm install`);
    addon = { status: { available: true, file }, addon: loaded };
  } catch (error) {
    addon = { status: { available: false, file, reason: `${file} did not load: ${(error as Error).message}` } };
  }
  return addon;
}

/** Whether the native addon can be used here, and if not, why. */
export function nativeAddonStatus(): NativeAddonStatus {
  return loadAddon().status;
}

function closedError(): Error {
  return Object.assign(new Error('the ICMPv6 transport is closed; open a new one with openIcmp6Transport'), { code: 'ERR_SOCKET_CLOSED' });
}

function checkSendArguments(packets: Uint8Array, packetBytes: number, addresses: Uint8Array, from: number, to: number): void {
  if (!(packets instanceof Uint8Array)) throw new TypeError('packets must be a Buffer or Uint8Array');
  if (!(addresses instanceof Uint8Array)) throw new TypeError('addresses must be a Uint8Array of 16 bytes per probe');
  // 4: an ICMPv6 header's type, code and checksum, the least the packet path can frame.
  if (!Number.isInteger(packetBytes) || packetBytes < 4 || packetBytes > 65535) {
    throw new RangeError(`packetBytes must be an integer from 4 to 65535, got ${packetBytes}`);
  }
  const capacity = Math.min(Math.floor(packets.length / packetBytes), Math.floor(addresses.length / 16));
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to < from || to > capacity) {
    throw new RangeError(`probes [${from}, ${to}) are not within the ${capacity} that packets and addresses hold; need 0 <= from <= to <= ${capacity}`);
  }
}

/** What both paths check before taking a packets handler. */
function checkReceiving(closed: boolean, receiving: boolean, receives: boolean): void {
  if (closed) throw closedError();
  if (receiving) throw new Error('this transport has a packets handler already; one handler per transport');
  if (!receives) throw new Error('this transport was opened with receiveTypes: [] and receives nothing; name the ICMPv6 types to receive');
}

const count = (errors: Record<string, number>, code: string) => {
  errors[code] = (errors[code] ?? 0) + 1;
};

/** A socket of the addon: its handle, the wait for writability, and the send loop both addon paths share. */
abstract class AddonTransport {
  protected handle: NativeHandle | undefined;
  /** Senders waiting for the socket to be writable again; one native wait serves them all. */
  private waiters: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];

  constructor(protected readonly addon: Icmp6Addon, handle: NativeHandle) {
    this.handle = handle;
  }

  protected open(): NativeHandle {
    if (!this.handle) throw closedError();
    return this.handle;
  }

  /**
   * Sends [from, to) through `round` (a sendmmsg loop in the addon) into `result`: waits while the socket is
   * full, counts and skips what the kernel refuses (no route, interface down, …).
   */
  protected async drain(from: number, to: number, round: (from: number, to: number) => SendRound, result: SendResult): Promise<void> {
    for (let i = from; i < to; ) {
      const { sent, errno } = round(i, to);
      result.sent += sent;
      i += sent;
      if (errno === 0) continue;
      if (errno === constants.errno.EAGAIN) {
        await this.writable();
      } else if (errno === constants.errno.ENOBUFS) {
        // What a raw socket gets for a full send buffer (then writability is the signal) and for a full
        // device queue (then poll says writable at once, and waiting for that alone would spin).
        await Promise.all([this.writable(), delay(1)]);
      } else {
        count(result.errors, getSystemErrorName(-errno)); // this one is refused: skip it
        i++;
      }
    }
  }

  private writable(): Promise<void> {
    const handle = this.open();
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (this.waiters.length === 1) this.addon.waitWritable(handle, () => this.waiters.splice(0).forEach((w) => w.resolve()));
    });
  }

  close(): void {
    if (!this.handle) return;
    this.addon.close(this.handle);
    this.handle = undefined;
    this.waiters.splice(0).forEach((w) => w.reject(closedError()));
  }
}

type SendResult = { sent: number; errors: Record<string, number> };

class NativeTransport extends AddonTransport implements Icmp6Transport {
  readonly path = 'sendmmsg';
  private receiving = false;
  private readonly receives: boolean;

  constructor(addon: Icmp6Addon, options: Icmp6SocketOptions) {
    super(addon, addon.open(options));
    this.receives = options.receiveTypes.length > 0;
  }

  setHopLimit(hops: number): void {
    checkHopLimit(hops);
    this.addon.setHopLimit(this.open(), hops);
  }

  async send(packets: Buffer, packetBytes: number, addresses: Uint8Array, from: number, to: number) {
    checkSendArguments(packets, packetBytes, addresses, from, to);
    const result: SendResult = { sent: 0, errors: {} };
    await this.drain(from, to, (i, end) => this.addon.sendBatch(this.open(), packets, packetBytes, addresses, i, end), result);
    return result;
  }

  onPackets(handler: PacketsHandler): void {
    checkReceiving(!this.handle, this.receiving, this.receives);
    this.addon.startReceiving(this.open(), handler);
    this.receiving = true;
  }
}

/** Frames built and handed to one sendFrames call: the addon's sendmmsg batch. */
const FRAMES_PER_ROUND = 1024;

/**
 * The packet path: probes framed here (lib/core/frame.ts) and sent as whole Ethernet frames on a packet socket
 * bound to the settings' interface, to the router's MAC. Send-only: replies arrive on the listener's socket.
 */
class PacketTransport extends AddonTransport implements Icmp6Transport {
  readonly path = 'packet';
  private readonly frames: FrameWriter;
  private frameBuffer = new Uint8Array(0);
  /** Sends run one after another: they share the frame buffer, and one may wait (socket full) mid-way. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(addon: Icmp6Addon, settings: PacketSettings, sendBufferBytes: number | undefined) {
    super(addon, addon.openPacket(settings.ifindex, sendBufferBytes));
    this.frames = new FrameWriter({ source: settings.source, sourceMac: settings.sourceMac, destinationMac: settings.routerMac, hopLimit: settings.hopLimit });
  }

  setHopLimit(hops: number): void {
    this.open();
    this.frames.setHopLimit(hops);
  }

  send(packets: Buffer, packetBytes: number, addresses: Uint8Array, from: number, to: number): Promise<SendResult> {
    const run = this.tail.then(() => this.sendNow(packets, packetBytes, addresses, from, to));
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async sendNow(packets: Buffer, packetBytes: number, addresses: Uint8Array, from: number, to: number): Promise<SendResult> {
    checkSendArguments(packets, packetBytes, addresses, from, to);
    this.open();
    const result: SendResult = { sent: 0, errors: {} };
    const frameBytes = FRAME_HEADER_BYTES + packetBytes;
    if (this.frameBuffer.length < FRAMES_PER_ROUND * frameBytes) this.frameBuffer = new Uint8Array(FRAMES_PER_ROUND * frameBytes);
    const frames = this.frameBuffer;
    // Framed a round at a time (measured: ~0.2 us a probe in JS, against ~2 us in the kernel), then sent; the
    // kernel copies each frame during sendmmsg, so the buffer is free again once a round is sent.
    for (let start = from; start < to; start += FRAMES_PER_ROUND) {
      const n = Math.min(FRAMES_PER_ROUND, to - start);
      for (let k = 0; k < n; k++) this.frames.write(packets, (start + k) * packetBytes, packetBytes, addresses, (start + k) * 16, frames, k * frameBytes);
      await this.drain(0, n, (i, end) => this.addon.sendFrames(this.open(), frames, frameBytes, i, end), result);
    }
    return result;
  }

  onPackets(_handler: PacketsHandler): void {
    this.open();
    throw new Error('the packet path (WIDESCAN_IO=packet) sends only and receives nothing; receive on a native or raw-socket transport');
  }
}

/**
 * raw-socket reports errors by their strerror text only ("No route to host"): back to the errno code. glibc's
 * texts of the errors a send can meet, then libuv's (which musl's mostly match, case aside).
 */
const GLIBC_MESSAGES: Record<string, string> = {
  'no route to host': 'EHOSTUNREACH',
  'network is unreachable': 'ENETUNREACH',
  'network is down': 'ENETDOWN',
  'host is down': 'EHOSTDOWN',
  'permission denied': 'EACCES',
  'operation not permitted': 'EPERM',
  'no buffer space available': 'ENOBUFS',
  'resource temporarily unavailable': 'EAGAIN',
  'invalid argument': 'EINVAL',
  'message too long': 'EMSGSIZE',
  'cannot assign requested address': 'EADDRNOTAVAIL',
};
let codesByMessage: Map<string, string> | undefined;
function errnoCodeOf(error: Error): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code) return code;
  const message = error.message.toLowerCase();
  codesByMessage ??= new Map([...getSystemErrorMap().values()].map(([name, text]) => [text.toLowerCase(), name]));
  return GLIBC_MESSAGES[message] ?? codesByMessage.get(message) ?? 'EUNKNOWN';
}

class RawSocketTransport implements Icmp6Transport {
  readonly path = 'raw-socket';
  private closed = false;
  private receiving = false;
  /** Rejects the sends in progress: raw-socket drops its queued requests on close without a callback. */
  private readonly inFlight = new Set<(error: Error) => void>();

  constructor(
    private readonly socket: raw.Socket,
    private readonly receives: boolean,
  ) {}

  setHopLimit(hops: number): void {
    checkHopLimit(hops);
    if (this.closed) throw closedError();
    const raw = loadRawSocket();
    this.socket.setOption(raw.SocketLevel.IPPROTO_IPV6, raw.SocketOption.IPV6_UNICAST_HOPS, hops);
  }

  async send(packets: Buffer, packetBytes: number, addresses: Uint8Array, from: number, to: number) {
    checkSendArguments(packets, packetBytes, addresses, from, to);
    if (this.closed) throw closedError();
    const result = { sent: 0, errors: {} as Record<string, number> };
    if (to === from) return result;
    return new Promise<typeof result>((resolve, reject) => {
      let pending = to - from;
      this.inFlight.add(reject);
      const done = (error: Error | null) => {
        if (error) count(result.errors, errnoCodeOf(error));
        else result.sent++;
        if (--pending === 0) {
          this.inFlight.delete(reject);
          resolve(result);
        }
      };
      for (let i = from; i < to; i++) this.socket.send(packets, i * packetBytes, packetBytes, bytesToSocketText(addresses, i * 16), done);
    });
  }

  onPackets(handler: PacketsHandler): void {
    checkReceiving(this.closed, this.receiving, this.receives);
    this.receiving = true;
    const lengths = new Uint32Array(1);
    const sources = new Uint8Array(16);
    this.socket.on('message', (buffer, source) => {
      try {
        addressToBytes(parseAddress(source), sources);
      } catch {
        return; // not an address we can attribute (a zone id, …)
      }
      lengths[0] = buffer.length;
      handler(buffer, lengths, sources, 1);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close();
    for (const reject of this.inFlight) reject(closedError());
    this.inFlight.clear();
  }
}

/**
 * Opens a raw ICMPv6 transport (needs CAP_NET_RAW). `prefer: 'native'` (the default) uses the addon and
 * falls back to raw-socket where it is missing; `path` says which runs. WIDESCAN_IO=raw-socket forces the
 * fallback, WIDESCAN_IO=native requires the addon. WIDESCAN_IO=packet sends the probes of send-only
 * transports (receiveTypes: []) as Ethernet frames on a packet socket (lib/packetio.ts, its settings from
 * WIDESCAN_PACKET_*); receiving transports (the listener's) stay on the native path.
 */
export function openIcmp6Transport(options: Icmp6TransportOptions): Icmp6Transport {
  checkIcmp6SocketOptions(options);
  const { prefer = 'native', ...socketOptions } = options;
  if (prefer !== 'native' && prefer !== 'raw-socket') throw new RangeError(`prefer must be 'native' or 'raw-socket', got ${JSON.stringify(prefer)}`);
  const forced = process.env.WIDESCAN_IO ?? '';
  if (forced !== '' && forced !== 'native' && forced !== 'raw-socket' && forced !== 'packet') {
    throw new Error(
      `WIDESCAN_IO=${JSON.stringify(forced.slice(0, 40))} is not an I/O path; use native, raw-socket, or leave it unset (or packet: send-only, needs WIDESCAN_PACKET_INTERFACE and WIDESCAN_PACKET_ROUTER_MAC)`,
    );
  }
  if (forced === 'packet' && socketOptions.receiveTypes.length === 0) {
    const settings = packetSettingsFromEnv();
    const { status, addon: native } = loadAddon();
    if (!native) throw new Error(`WIDESCAN_IO=packet, but the native addon is unavailable: ${'reason' in status ? status.reason : status.file}`);
    if (typeof native.openPacket !== 'function') throw new Error(`WIDESCAN_IO=packet, but ${status.file} has no packet socket support: a stale build; run npm install`);
    const transport = new PacketTransport(native, settings, socketOptions.sendBufferBytes);
    if (socketOptions.hopLimit !== undefined) transport.setHopLimit(socketOptions.hopLimit);
    return transport;
  }
  const want = forced === 'packet' ? 'native' : forced || prefer;
  if (want === 'native') {
    const { status, addon: native } = loadAddon();
    if (native) return new NativeTransport(native, socketOptions);
    if (forced === 'native' && !status.available) throw new Error(`WIDESCAN_IO=native, but the native addon is unavailable: ${status.reason}`);
  }
  return new RawSocketTransport(openIcmp6Socket(socketOptions), socketOptions.receiveTypes.length > 0);
}

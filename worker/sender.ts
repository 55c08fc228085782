import raw from 'raw-socket';
import { bytesToSocketText } from '../lib/core/words.js';
import type { ProbeBatch } from './generator.js';

export interface SendResult {
  sent: number;
  /** Refused sends by errno code (ENETUNREACH, EACCES, …). */
  errors: Record<string, number>;
}

/** Sends probes of a batch through a raw ICMPv6 socket (`raw-socket`: one send per packet). */
export class ProbeSender {
  private hopLimit = -1;

  constructor(private readonly socket: raw.Socket) {}

  /** Jobs share the socket; each sets its own hop limit before sending. */
  setHopLimit(hops: number): void {
    if (hops === this.hopLimit) return;
    this.socket.setOption(raw.SocketLevel.IPPROTO_IPV6, raw.SocketOption.IPV6_UNICAST_HOPS, hops);
    this.hopLimit = hops;
  }

  /** Sends probes [from, to) of `batch`; resolves when the kernel has taken or refused every one. */
  send(batch: ProbeBatch, from: number, to: number): Promise<SendResult> {
    const result: SendResult = { sent: 0, errors: {} };
    if (to <= from) return Promise.resolve(result);
    const { packets, packetBytes, addresses } = batch;
    return new Promise((resolve) => {
      let pending = to - from;
      const done = (error: Error | null) => {
        if (error) {
          const code = (error as NodeJS.ErrnoException).code ?? error.message.replace(/\s.*$/, '');
          result.errors[code] = (result.errors[code] ?? 0) + 1;
        } else {
          result.sent++;
        }
        if (--pending === 0) resolve(result);
      };
      for (let i = from; i < to; i++) {
        this.socket.send(packets, i * packetBytes, packetBytes, bytesToSocketText(addresses, i * 16), done);
      }
    });
  }

  close(): void {
    this.socket.close();
  }
}

// Sending on several cores: the kernel does its per-packet work (most of a probe's cost: see bench/README.md)
// on the thread that calls sendmmsg, so one sending thread caps a worker at one core's worth of probes.
// SenderThreads is a send-only Icmp6Transport whose sends run on worker threads, each with its own socket on
// the path WIDESCAN_IO selects (native or packet); the worker keeps several batches in flight
// (ShardWorker's sendAhead), so the threads send side by side while the next batch is generated. Batches are
// on SharedArrayBuffer (ProbeBatch): a thread sends straight from the worker's memory, nothing is copied.

import { Worker } from 'node:worker_threads';
import { checkHopLimit } from '../lib/core/frame.js';
import type { Icmp6Transport, PacketsHandler } from '../lib/icmp6native.js';

/** More sender threads than this is a configuration mistake. */
export const MAX_SENDER_THREADS = 64;
export const SENDER_THREADS_ENV = 'WIDESCAN_SENDER_THREADS';

/** Resolved from dist/worker/ after `npm run build`: threads run the compiled JS. */
const THREAD_ENTRY = new URL('./send-thread.js', import.meta.url);

// The protocol between this file and send-thread.ts.
export interface SendThreadData {
  readonly sendBufferBytes: number;
}
export type SendThreadReady = { type: 'ready'; path: Icmp6Transport['path'] } | { type: 'error'; message: string };
export interface SendRequest {
  readonly id: number;
  readonly packets: SharedArrayBuffer;
  readonly packetsOffset: number;
  readonly packetsLength: number;
  readonly packetBytes: number;
  readonly addresses: SharedArrayBuffer;
  readonly addressesOffset: number;
  readonly addressesLength: number;
  readonly from: number;
  readonly to: number;
  readonly hopLimit: number | undefined;
}
export type SendReply = { id: number; sent: number; errors: Record<string, number> } | { id: number; error: string };

type Result = Awaited<ReturnType<Icmp6Transport['send']>>;

interface Thread {
  readonly worker: Worker;
  busy: boolean;
}

export class SenderThreads implements Icmp6Transport {
  private readonly pending = new Map<number, { resolve: (r: Result) => void; reject: (e: Error) => void }>();
  /** Sends waiting for an idle thread, in call order. */
  private readonly queue: Array<() => void> = [];
  private nextId = 0;
  private hopLimit: number | undefined;
  private failure: Error | undefined;

  private constructor(
    private readonly threads: Thread[],
    readonly path: Icmp6Transport['path'],
  ) {
    for (const [index, t] of threads.entries()) {
      t.worker.on('message', (reply: SendReply) => this.settle(t, reply));
      t.worker.on('error', (err: Error) => this.fail(new Error(`sender thread ${index} failed: ${err.message}`, { cause: err })));
      t.worker.on('exit', (code) => this.fail(new Error(`sender thread ${index} exited (code ${code}); the transport cannot be used any more`)));
    }
  }

  /** Starts `count` sender threads; rejects with the first thread's reason if any cannot open its socket. */
  static async open(count: number, options: { sendBufferBytes: number }): Promise<SenderThreads> {
    if (!Number.isSafeInteger(count) || count < 2 || count > MAX_SENDER_THREADS) {
      throw new RangeError(`sender threads must be an integer from 2 to ${MAX_SENDER_THREADS}, got ${String(count)} (1 sends on the worker's own thread)`);
    }
    const data: SendThreadData = { sendBufferBytes: options.sendBufferBytes };
    const workers = Array.from({ length: count }, () => new Worker(THREAD_ENTRY, { workerData: data }));
    // Only our own listeners come off afterwards: Worker keeps internal ones (removeAllListeners would take
    // those too, and its messages would never be delivered again).
    const ready = await Promise.allSettled(
      workers.map((w) => {
        let done = () => {};
        return new Promise<Icmp6Transport['path']>((resolve, reject) => {
          const onMessage = (m: SendThreadReady) => (m.type === 'ready' ? resolve(m.path) : reject(new Error(m.message)));
          const onExit = (code: number) => reject(new Error(`sender thread exited (code ${code}) before it was ready`));
          w.on('message', onMessage).on('error', reject).on('exit', onExit);
          done = () => w.off('message', onMessage).off('error', reject).off('exit', onExit);
        }).finally(() => done());
      }),
    );
    const failed = ready.find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw new Error(`sender threads could not start: ${(failed.reason as Error).message}`);
    }
    return new SenderThreads(
      workers.map((worker) => ({ worker, busy: false })),
      (ready[0] as PromiseFulfilledResult<Icmp6Transport['path']>).value,
    );
  }

  get size(): number {
    return this.threads.length;
  }

  setHopLimit(hops: number): void {
    checkHopLimit(hops);
    this.hopLimit = hops;
  }

  /** Like Icmp6Transport.send; `packets` and `addresses` must be on SharedArrayBuffer (ProbeBatch's are). */
  async send(packets: Buffer, packetBytes: number, addresses: Uint8Array, from: number, to: number): Promise<Result> {
    if (this.failure) throw this.failure;
    if (!(packets?.buffer instanceof SharedArrayBuffer) || !(addresses?.buffer instanceof SharedArrayBuffer)) {
      throw new TypeError('sender threads send from shared memory: packets and addresses must be on a SharedArrayBuffer, as ProbeBatch allocates them');
    }
    let thread = this.threads.find((t) => !t.busy);
    while (!thread) {
      await new Promise<void>((resume) => this.queue.push(resume));
      if (this.failure) throw this.failure;
      thread = this.threads.find((t) => !t.busy);
    }
    thread.busy = true;
    const id = this.nextId++;
    const request: SendRequest = {
      id,
      packets: packets.buffer,
      packetsOffset: packets.byteOffset,
      packetsLength: packets.length,
      packetBytes,
      addresses: addresses.buffer,
      addressesOffset: addresses.byteOffset,
      addressesLength: addresses.length,
      from,
      to,
      hopLimit: this.hopLimit,
    };
    return new Promise<Result>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      thread.worker.postMessage(request);
    });
  }

  onPackets(_handler: PacketsHandler): void {
    throw new Error('sender threads send only and receive nothing; receive on a transport of openIcmp6Transport');
  }

  close(): void {
    this.fail(new Error('the sender threads are closed; open new ones to send again'));
  }

  private settle(thread: Thread, reply: SendReply): void {
    thread.busy = false;
    const waiter = this.pending.get(reply.id);
    this.pending.delete(reply.id);
    if ('error' in reply) waiter?.reject(new Error(reply.error));
    else waiter?.resolve({ sent: reply.sent, errors: reply.errors });
    this.queue.shift()?.();
  }

  /** The first failure wins: every pending and later send rejects with it, and the threads stop. */
  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const { reject } of this.pending.values()) reject(err);
    this.pending.clear();
    for (const resume of this.queue.splice(0)) resume();
    for (const t of this.threads) void t.worker.terminate();
  }
}

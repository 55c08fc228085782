// Address generation behind one interface, so that the GPU backend (worker/gpu.ts) and the CPU backend
// (here, and across threads in worker/cpu-threads.ts) are interchangeable under the sender (worker/backends.ts
// picks one): a backend turns a range of scan positions into ready-to-send probes. The backend contract is bit-identity: every backend produces the same addresses and MAC tags for
// the same job, positions and send time (the permutation and SipHash are exact in 16-bit words).

import { addressToBytesWords } from '../lib/core/words.js';
import type { ProbeWriter } from '../lib/core/probe.js';
import type { ExclusionReason, TargetSpace } from '../lib/core/targets.js';

export type Backend = 'cpu' | 'webgpu';

export class ProbeBatch {
  /** Probes in the batch (excluded positions are not in it). */
  count = 0;
  /** Positions of the range that fell in excluded space, by reason. */
  readonly excluded: Record<ExclusionReason, number> = { never: 0, nonGlobal: 0, exclude: 0, blocklist: 0 };
  /** Destination of probe i at bytes [16i, 16i + 16). */
  readonly addresses: Uint8Array;
  /** Probe i (ICMPv6 header + payload) at bytes [packetBytes·i, packetBytes·(i+1)). */
  readonly packets: Buffer;

  constructor(readonly capacity: number, readonly packetBytes: number) {
    // Shared memory, so that generator threads (worker/cpu-threads.ts) write the probes in place, no copies.
    this.addresses = new Uint8Array(new SharedArrayBuffer(capacity * 16));
    this.packets = Buffer.from(new SharedArrayBuffer(capacity * packetBytes));
  }

  reset(): void {
    this.count = 0;
    for (const k of Object.keys(this.excluded) as ExclusionReason[]) this.excluded[k] = 0;
  }

  excludedTotal(): number {
    const e = this.excluded;
    return e.never + e.nonGlobal + e.exclude + e.blocklist;
  }
}

export interface AddressGenerator {
  readonly backend: Backend;
  /** Fills `batch` (after resetting it) with the probes of positions [start, start + count), count ≤ capacity. */
  generate(start: number, count: number, sendTimeMs: number, batch: ProbeBatch): Promise<void>;
  close(): Promise<void>;
}

const TWO32 = 2 ** 32;

/** Where probes are written: a batch's buffers, or a generator thread's view of them. */
export interface ProbeSlots {
  readonly addresses: Uint8Array;
  readonly packets: Uint8Array;
  readonly packetBytes: number;
}

/**
 * The CPU backend's loop: the probes of positions [start, start + count) into `out` from slot `slot` on,
 * excluded positions counted into `excluded` by reason; returns how many slots it wrote. Plain JS over typed
 * arrays (measured faster than every gpu.js CPU mode, see bench/README.md); `words` is scratch.
 */
export function fillProbes(
  space: TargetSpace, writer: ProbeWriter, start: number, count: number, sendTimeMs: number,
  out: ProbeSlots, slot: number, excluded: Record<ExclusionReason, number>, words: Uint32Array,
): number {
  const { addresses, packets, packetBytes } = out;
  let n = slot;
  for (let position = start, end = start + count; position < end; position++) {
    const index = space.indexAt(position);
    const range = space.address(index, words);
    if (range !== undefined) {
      excluded[range.reason]++;
      continue;
    }
    addressToBytesWords(words, addresses, n * 16);
    writer.write(packets, n * packetBytes, addresses, n * 16, Math.floor(index / TWO32), index >>> 0, sendTimeMs);
    n++;
  }
  return n - slot;
}

/** The CPU backend on the calling thread. */
export class CpuGenerator implements AddressGenerator {
  readonly backend = 'cpu' as const;
  private readonly words = new Uint32Array(4);

  constructor(private readonly space: TargetSpace, private readonly writer: ProbeWriter) {}

  async generate(start: number, count: number, sendTimeMs: number, batch: ProbeBatch): Promise<void> {
    if (count > batch.capacity) throw new RangeError(`batch of ${count} exceeds capacity ${batch.capacity}`);
    batch.reset();
    batch.count = fillProbes(this.space, this.writer, start, count, sendTimeMs, batch, 0, batch.excluded, this.words);
  }

  async close(): Promise<void> {}
}

// The GPU backend: gpu.js kernels in `webgpu` mode (WGSL compute shaders on Dawn) that compute, for a run of
// scan positions, the keyed scan order, the random draws of `random` blocks and the probes' MAC tags, in
// 16-bit limbs (lib/core/kernels.ts), bit-identical with the CPU backend. The host does what is cheap and
// branchy: block lookup, `full`/`lowbyte` addresses, exclusion checks and packet assembly from the template.
//
// The order and the draws do not depend on the send time, so they are computed a chunk of positions ahead
// (double-buffered: the next chunk is on the GPU while the sender drains this one); only the MAC, which covers
// the send time, is computed per batch, just before it leaves.
//
// Dawn comes from the `webgpu` package we pin (0.6: the Dawn build gpu.js pins needs glibc 2.38), and it is
// our code that exposes it as `navigator.gpu`, where gpu.js looks for it (Node has no WebGPU of its own).

import type { GPU as GpuJs } from 'gpu.js';
import {
  GPU_MAX_PASSES, UNFINISHED, macFixedLimbs, macKernelSource, macKeyLimbs, macProbeLimbs, permutationHalves,
  permutationKernelSource, permutationKeyLimbs, sizeLimbs, type PermutationInput,
} from '../lib/core/kernels.js';
import type { Permutation } from '../lib/core/permutation.js';
import type { ProbeWriter } from '../lib/core/probe.js';
import type { Block, ExclusionReason, TargetSpace } from '../lib/core/targets.js';
import { addressToBytesWords } from '../lib/core/words.js';
import type { AddressGenerator, ProbeBatch } from './generator.js';

/** What the WebGPU adapter says it is. */
export interface GpuAdapter {
  /** Vendor, architecture and device, as Dawn reports them. */
  readonly description: string;
  /** A software rasteriser (lavapipe/llvmpipe, SwiftShader): never chosen for scanning, only for tests. */
  readonly software: boolean;
}

export type GpuProbe = { adapter: GpuAdapter } | { adapter?: undefined; why: string };

let dawn: Promise<GPU> | undefined;

/** Loads Dawn once and installs it as `navigator.gpu`. */
function loadDawn(): Promise<GPU> {
  dawn ??= (async () => {
    const { create, globals } = await import('webgpu');
    Object.assign(globalThis, globals);
    const gpu = create([]);
    // Node ≥ 21 has a `navigator` of its own (without `gpu`); Node 20 has none.
    const g = globalThis as { navigator?: object };
    if (typeof g.navigator === 'object' && g.navigator !== null) {
      Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
    } else {
      Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
    }
    return gpu;
  })();
  return dawn;
}

const SOFTWARE = /llvmpipe|lavapipe|swiftshader|softpipe|software/i;

/** The best WebGPU adapter of this machine, or why there is none. Never throws. */
export async function probeGpu(): Promise<GpuProbe> {
  let gpu: GPU;
  try {
    gpu = await loadDawn();
  } catch (err) {
    return { why: `WebGPU (Dawn, npm package webgpu) did not load: ${(err as Error).message}` };
  }
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (err) {
    return { why: `WebGPU adapter request failed: ${(err as Error).message}` };
  }
  if (!adapter) return { why: 'WebGPU found no adapter (no Vulkan driver for a GPU: is the NVIDIA container toolkit exposing the graphics capability?)' };
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const description = [info.vendor, info.architecture, info.device, info.description].filter((s) => s).join(' / ');
  return { adapter: { description, software: info.isFallbackAdapter === true || SOFTWARE.test(description) } };
}

/** A compiled kernel as we call it: flat limbs out (see compile). */
interface Kernel {
  (...args: Float32Array[]): Promise<Float32Array>;
  destroy(): void;
}

let gpuJs: Promise<GpuJs> | undefined;

/** One gpu.js instance in webgpu mode, created after Dawn is in place. */
function gpuJsInstance(): Promise<GpuJs> {
  gpuJs ??= (async () => {
    await loadDawn();
    const { GPU } = await import('gpu.js');
    return new GPU({ mode: 'webgpu' });
  })();
  return gpuJs;
}

/** A kernel returning 4 limbs per thread as one flat Float32Array. */
async function compile(source: string, threads: number, args: string[]): Promise<Kernel> {
  const gpu = await gpuJsInstance();
  const kernel = gpu.createKernel(source, {
    output: [threads],
    argumentTypes: Object.fromEntries(args.map((a) => [a, 'Array'])),
    returnType: 'Array(4)',
    loopMaxIterations: GPU_MAX_PASSES,
  } as never) as unknown as Kernel;
  // gpu.js shapes Array(4) results into one subarray per thread (seconds per call at millions of threads);
  // the flat buffer is what the host reads anyway.
  (kernel as unknown as { kernel: { _shapeOutput: (data: Float32Array) => Float32Array } }).kernel._shapeOutput = (data) => data;
  return kernel;
}

/** A permutation on the GPU over `threads` values at a time: one compiled kernel and its fixed inputs. */
class GpuPermutation {
  readonly halves: 1 | 2;
  /** Values the GPU handed back after GPU_MAX_PASSES passes, finished on the CPU. */
  finishedOnCpu = 0;
  private readonly keys: Float32Array;
  private readonly size: Float32Array;
  private readonly scratch = new Uint32Array(4);

  private constructor(readonly permutation: Permutation, private readonly kernel: Kernel, readonly values: number) {
    this.halves = permutationHalves(permutation.w);
    this.keys = permutationKeyLimbs(permutation.roundKeys);
    this.size = sizeLimbs(permutation.size, permutation.w);
  }

  static async create(permutation: Permutation, input: PermutationInput, values: number): Promise<GpuPermutation> {
    const threads = values * permutationHalves(permutation.w);
    return new GpuPermutation(permutation, await compile(permutationKernelSource({ w: permutation.w, input }), threads, ['xs', 'keys', 'size']), values);
  }

  /** The limbs of the permuted values (4 or 8 per value, see permutationKernelSource). */
  run(xs: Float32Array): Promise<Float32Array> {
    return this.kernel(xs, this.keys, this.size);
  }

  /**
   * Value `e` of a run as 4 little-endian 32-bit words into `out`; a value the GPU left unfinished is computed
   * on the CPU from its input `x` (< 2^53).
   */
  read(limbs: Float32Array, e: number, x: number, out: Uint32Array): void {
    const o = 4 * this.halves * e;
    if (limbs[o] === UNFINISHED) {
      this.finishedOnCpu++;
      const s = this.scratch;
      s[0] = x >>> 0; s[1] = Math.floor(x / 2 ** 32); s[2] = 0; s[3] = 0;
      this.permutation.applyWords(s, out);
      return;
    }
    out[0] = limbs[o]! + limbs[o + 1]! * 65536;
    out[1] = limbs[o + 2]! + limbs[o + 3]! * 65536;
    if (this.halves === 2) {
      out[2] = limbs[o + 4]! + limbs[o + 5]! * 65536;
      out[3] = limbs[o + 6]! + limbs[o + 7]! * 65536;
    } else {
      out[2] = 0; out[3] = 0;
    }
  }

  destroy(): void {
    this.kernel.destroy();
  }
}

/** Values per run of a `random` block's draw kernel. */
const DRAW_RUN = 16384;

const REASONS: readonly ExclusionReason[] = ['never', 'nonGlobal', 'exclude', 'blocklist'];
/** `Chunk.state` of a position that is probed; excluded ones hold 1 + the index of their reason in REASONS. */
const PROBE = 0;

/** The time-independent part of a run of positions: per position, its index, address or exclusion. */
class Chunk {
  start = 0;
  length = 0;
  readonly state: Uint8Array;
  readonly addresses: Uint8Array;
  readonly indices: Float64Array;

  constructor(readonly capacity: number) {
    this.state = new Uint8Array(capacity);
    this.addresses = new Uint8Array(16 * capacity);
    this.indices = new Float64Array(capacity);
  }

  covers(start: number, count: number): boolean {
    return start >= this.start && start + count <= this.start + this.length;
  }
}

export interface GpuGeneratorOptions {
  /** Positions computed ahead per GPU run of the order and the draws (default 65536). */
  chunk?: number;
}

/**
 * The values of one `random` block drawn in a chunk: gathered on the host, permuted on the GPU in runs of
 * `gpu.values` (a chunk's draws are spread over its random blocks, so a kernel the size of the chunk per
 * block would mostly compute nothing).
 */
class Draws {
  count = 0;
  readonly xs: Float32Array;
  /** Chunk offsets of the gathered values. */
  readonly at: Uint32Array;

  constructor(readonly gpu: GpuPermutation, readonly block: Block, chunk: number) {
    const runs = Math.ceil(chunk / gpu.values);
    this.xs = new Float32Array(4 * runs * gpu.values);
    this.at = new Uint32Array(chunk);
  }

  /** Permutes the gathered values; calls `settle(e, drawn)` for each, in gathering order. */
  async run(settle: (e: number, drawn: Uint32Array) => void, drawn: Uint32Array): Promise<void> {
    const { gpu } = this;
    const runs: Promise<Float32Array>[] = [];
    for (let off = 0; off < this.count; off += gpu.values) runs.push(gpu.run(this.xs.subarray(4 * off, 4 * (off + gpu.values))));
    const limbs = await Promise.all(runs);
    for (let i = 0; i < this.count; i++) {
      const e = this.at[i]!;
      const run = Math.floor(i / gpu.values);
      const j = this.xs[4 * i]! + this.xs[4 * i + 1]! * 65536 + this.xs[4 * i + 2]! * 2 ** 32 + this.xs[4 * i + 3]! * 2 ** 48;
      gpu.read(limbs[run]!, i - run * gpu.values, j, drawn);
      settle(e, drawn);
    }
  }
}

export class GpuGenerator implements AddressGenerator {
  readonly backend = 'webgpu' as const;
  private readonly chunks: [Chunk, Chunk];
  private current: Chunk | undefined;
  private pending: Promise<Chunk> | undefined;
  private readonly draws = new Map<number, Draws>();
  private readonly macKernels = new Map<number, Kernel>();
  private readonly macKey: Float32Array;
  private readonly macFixed: Uint8Array;
  private readonly fixed = new Float32Array(8);
  private readonly words = new Uint32Array(4);
  private readonly drawn = new Uint32Array(4);
  /** The MAC kernel's input, and the chunk offset of each probe of the batch. */
  private probes = new Float32Array(0);
  private probeAt = new Uint32Array(0);
  private closed = false;

  private constructor(
    private readonly space: TargetSpace,
    private readonly writer: ProbeWriter,
    private readonly order: GpuPermutation | undefined,
    chunk: number,
  ) {
    this.chunks = [new Chunk(chunk), new Chunk(chunk)];
    this.macKey = macKeyLimbs(writer.options.macKey);
    this.macFixed = writer.macFixedBytes();
  }

  /** Compiles the kernels of a job; any WebGPU adapter will do (chooseBackend in backends.ts decides which may be used). */
  static async create(space: TargetSpace, writer: ProbeWriter, options: GpuGeneratorOptions = {}): Promise<GpuGenerator> {
    const chunk = options.chunk ?? 65536;
    if (!Number.isInteger(chunk) || chunk < 1 || chunk > 1 << 22) throw new RangeError(`GPU chunk must be an integer in [1, 2^22], got ${String(chunk)}`);
    const order = space.order.w === 0 ? undefined : await GpuPermutation.create(space.order, 'sequential', chunk);
    const gen = new GpuGenerator(space, writer, order, chunk);
    for (const block of space.compiled) {
      if (block.randomOrder !== null) {
        const gpu = await GpuPermutation.create(block.randomOrder, 'gathered', Math.min(chunk, DRAW_RUN));
        gen.draws.set(block.ordinal, new Draws(gpu, block, chunk));
      }
    }
    return gen;
  }

  async generate(start: number, count: number, sendTimeMs: number, batch: ProbeBatch): Promise<void> {
    if (this.closed) throw new Error('GPU generator is closed');
    if (count > batch.capacity) throw new RangeError(`batch of ${count} exceeds capacity ${batch.capacity}`);
    if (count > this.chunks[0].capacity) throw new RangeError(`batch of ${count} exceeds the GPU chunk of ${this.chunks[0].capacity} positions; create the generator with a larger chunk`);
    if (!(Number.isSafeInteger(start) && start >= 0 && count >= 0 && start + count <= this.space.size)) {
      throw new RangeError(`positions [${start}, ${start + count}) are outside the target space [0, ${this.space.size})`);
    }
    batch.reset();
    if (count === 0) return;
    const chunk = await this.chunkFor(start, count);
    this.prefetch(chunk);

    const cap = batch.capacity;
    if (this.probeAt.length < cap) {
      this.probes = new Float32Array(12 * cap);
      this.probeAt = new Uint32Array(cap);
    }
    const { probes, probeAt } = this;
    let n = 0;
    for (let e = start - chunk.start, end = e + count; e < end; e++) {
      const state = chunk.state[e]!;
      if (state !== PROBE) {
        batch.excluded[REASONS[state - 1]!]++;
        continue;
      }
      batch.addresses.set(chunk.addresses.subarray(16 * e, 16 * e + 16), 16 * n);
      const index = chunk.indices[e]!;
      macProbeLimbs(chunk.addresses, 16 * e, Math.floor(index / 2 ** 32), index >>> 0, probes, n);
      probeAt[n++] = e;
    }
    batch.count = n;
    if (n === 0) return;
    const tags = await (await this.macKernel(cap))(probes, this.macKey, macFixedLimbs(this.macFixed, sendTimeMs, this.fixed));
    const { packets, packetBytes } = batch;
    for (let i = 0; i < n; i++) {
      const index = chunk.indices[probeAt[i]!]!;
      const o = 4 * i;
      this.writer.writeTagged(packets, i * packetBytes, Math.floor(index / 2 ** 32), index >>> 0, sendTimeMs,
        tags[o + 2]! + tags[o + 3]! * 65536, tags[o]! + tags[o + 1]! * 65536);
    }
  }

  /** Permutation values the GPU handed back unfinished (long cycle walks), completed on the CPU. */
  get finishedOnCpu(): number {
    let n = this.order?.finishedOnCpu ?? 0;
    for (const d of this.draws.values()) n += d.gpu.finishedOnCpu;
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.pending?.catch(() => undefined);
    this.order?.destroy();
    for (const d of this.draws.values()) d.gpu.destroy();
    for (const k of this.macKernels.values()) k.destroy();
  }

  private async macKernel(capacity: number): Promise<Kernel> {
    let k = this.macKernels.get(capacity);
    if (!k) {
      k = await compile(macKernelSource(), capacity, ['probes', 'keys', 'fixed']);
      this.macKernels.set(capacity, k);
    }
    return k;
  }

  /** The chunk holding [start, start + count): the current one, the prefetched one, or a new one. */
  private async chunkFor(start: number, count: number): Promise<Chunk> {
    if (this.current?.covers(start, count)) return this.current;
    if (this.pending) {
      const next = await this.pending;
      this.pending = undefined;
      this.current = next;
      if (next.covers(start, count)) return next;
    }
    const free = this.chunks[0] === this.current ? this.chunks[1] : this.chunks[0];
    this.current = await this.compute(free, start);
    return this.current;
  }

  /** Starts computing the chunk after `chunk` into the other buffer, unless it is under way or past the end. */
  private prefetch(chunk: Chunk): void {
    const next = chunk.start + chunk.length;
    if (this.pending || next >= this.space.size) return;
    const free = this.chunks[0] === chunk ? this.chunks[1] : this.chunks[0];
    this.pending = this.compute(free, next);
    // A failure surfaces at the next chunkFor; never as an unhandled rejection meanwhile.
    this.pending.catch(() => undefined);
  }

  private async compute(chunk: Chunk, start: number): Promise<Chunk> {
    const { space, words } = this;
    const length = Math.min(chunk.capacity, space.size - start);
    chunk.start = start;
    chunk.length = 0;
    let order: Float32Array | undefined;
    if (this.order) {
      const xs = Float32Array.of(start % 65536, Math.floor(start / 65536) % 65536, Math.floor(start / 2 ** 32) % 65536, Math.floor(start / 2 ** 48));
      order = await this.order.run(xs);
    }
    for (const d of this.draws.values()) d.count = 0;
    for (let e = 0; e < length; e++) {
      let index = 0;
      if (order) {
        this.order!.read(order, e, start + e, words);
        index = words[1]! * 2 ** 32 + words[0]!;
      }
      chunk.indices[e] = index;
      const block = space.compiled[space.blockIndexOf(index)]!;
      const j = index - block.offset;
      if (block.randomOrder !== null) {
        const d = this.draws.get(block.ordinal)!;
        const o = 4 * d.count;
        d.xs[o] = j % 65536; d.xs[o + 1] = Math.floor(j / 65536) % 65536; d.xs[o + 2] = Math.floor(j / 2 ** 32) % 65536; d.xs[o + 3] = Math.floor(j / 2 ** 48);
        d.at[d.count++] = e;
        continue;
      }
      block.address(j, words);
      this.settle(chunk, e, block, words);
    }
    await Promise.all([...this.draws.values()].filter((d) => d.count > 0).map((d) => d.run((e, drawn) => {
      words.set(d.block.baseWords);
      d.block.orDrawn(drawn, words);
      this.settle(chunk, e, d.block, words);
    }, this.drawn)));
    chunk.length = length;
    return chunk;
  }

  /** Records position e's address, or the exclusion it falls in. */
  private settle(chunk: Chunk, e: number, block: Block, words: Uint32Array): void {
    const excluded = block.exclusionOf(words);
    if (excluded !== undefined) {
      chunk.state[e] = 1 + REASONS.indexOf(excluded.reason);
      return;
    }
    chunk.state[e] = PROBE;
    addressToBytesWords(words, chunk.addresses, 16 * e);
  }
}

// Which generator backend a job runs on, on this worker. The rule (DESIGN.md "Hardware"): a job's `hardware`
// decides; `auto` takes the GPU only when it is a hardware adapter (a software rasteriser such as lavapipe or
// SwiftShader is slower than the CPU backend, so it is never chosen), `gpu` insists on one and fails with a
// clear message where there is none, `cpu` never touches the GPU.

import type { Hardware } from '../lib/core/job.js';
import type { ProbeWriter } from '../lib/core/probe.js';
import type { TargetSpace } from '../lib/core/targets.js';
import { ThreadedCpuGenerator, defaultGeneratorThreads } from './cpu-threads.js';
import { CpuGenerator, type AddressGenerator, type Backend } from './generator.js';
import { GpuGenerator, probeGpu, type GpuProbe } from './gpu.js';

/** A `hardware: gpu` job (or GPU-pool worker) where no hardware GPU adapter can be used. */
export class GpuUnavailableError extends Error {}

/** Why no hardware adapter can be used, or undefined when one can. */
export function gpuProblem(probe: GpuProbe): string | undefined {
  if (!probe.adapter) return probe.why;
  if (probe.adapter.software) return `the only WebGPU adapter is a software rasteriser (${probe.adapter.description}), which is never used for scanning`;
  return undefined;
}

/** The backend for a job's `hardware` on a machine whose GPU probe gave `probe`; throws GpuUnavailableError. */
export function chooseBackend(hardware: Hardware, probe: GpuProbe): Backend {
  if (hardware === 'cpu') return 'cpu';
  const problem = gpuProblem(probe);
  if (problem === undefined) return 'webgpu';
  if (hardware === 'auto') return 'cpu';
  throw new GpuUnavailableError(`hardware: gpu was requested, but ${problem}; run it on a GPU node (the GPU pool), or use hardware: auto or cpu`);
}

let probed: Promise<GpuProbe> | undefined;

/** This process's GPU probe, done once (loading Dawn and asking for an adapter costs ~0.1–1 s). */
export function gpuProbe(): Promise<GpuProbe> {
  probed ??= probeGpu();
  return probed;
}

export interface GeneratorOptions {
  /** CPU backend threads (default defaultGeneratorThreads()). */
  threads?: number;
}

/** The generator for a job on this worker. A `cpu` job never loads Dawn. */
export async function createGenerator(hardware: Hardware, space: TargetSpace, writer: ProbeWriter, options: GeneratorOptions = {}): Promise<AddressGenerator> {
  const backend = chooseBackend(hardware, hardware === 'cpu' ? { why: 'not asked' } : await gpuProbe());
  if (backend === 'webgpu') return GpuGenerator.create(space, writer);
  const threads = options.threads ?? defaultGeneratorThreads();
  return threads > 1 ? new ThreadedCpuGenerator(space, writer, threads) : new CpuGenerator(space, writer);
}

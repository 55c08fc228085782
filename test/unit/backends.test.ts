// Which backend a job runs on: every (hardware, adapter) pair.
import { describe, expect, test } from '@jest/globals';
import { chooseBackend, gpuProblem, GpuUnavailableError } from '../../worker/backends.js';
import type { GpuProbe } from '../../worker/gpu.js';

const hardwareGpu: GpuProbe = { adapter: { description: 'nvidia / hopper / NVIDIA H100 80GB HBM3', software: false } };
const lavapipe: GpuProbe = { adapter: { description: 'mesa / software / llvmpipe (LLVM 15.0.6)', software: true } };
const none: GpuProbe = { why: 'WebGPU found no adapter' };
const noDawn: GpuProbe = { why: 'WebGPU (Dawn, npm package webgpu) did not load: libvulkan.so.1: cannot open shared object file' };

describe('chooseBackend', () => {
  test.each([
    ['auto', hardwareGpu, 'webgpu'],
    ['auto', lavapipe, 'cpu'],
    ['auto', none, 'cpu'],
    ['auto', noDawn, 'cpu'],
    ['gpu', hardwareGpu, 'webgpu'],
    ['cpu', hardwareGpu, 'cpu'],
    ['cpu', lavapipe, 'cpu'],
    ['cpu', none, 'cpu'],
  ] as const)('hardware %s with %j → %s', (hardware, probe, backend) => {
    expect(chooseBackend(hardware, probe)).toBe(backend);
  });

  test.each([
    [lavapipe, /software rasteriser \(mesa \/ software \/ llvmpipe/],
    [none, /WebGPU found no adapter/],
    [noDawn, /libvulkan\.so\.1/],
  ])('hardware gpu without a hardware adapter is refused, saying why and what to do (%#)', (probe, why) => {
    expect(() => chooseBackend('gpu', probe)).toThrow(GpuUnavailableError);
    expect(() => chooseBackend('gpu', probe)).toThrow(why);
    expect(() => chooseBackend('gpu', probe)).toThrow(/use hardware: auto or cpu/);
  });

  test('gpuProblem: undefined only for a hardware adapter', () => {
    expect(gpuProblem(hardwareGpu)).toBeUndefined();
    for (const p of [lavapipe, none, noDawn]) expect(gpuProblem(p)).toEqual(expect.any(String));
  });
});

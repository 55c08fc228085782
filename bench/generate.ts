// Addresses + MAC tags per second of each generator backend, side by side in one run: the CPU backend on one
// thread, the CPU backend across worker threads, and the GPU backend (gpu.js webgpu) on whatever adapter this
// machine has — here Mesa's lavapipe, software Vulkan on the CPU cores: NOT a hardware GPU figure. Each
// round generates the same positions of the same job with every backend, in the worker's batch size; the
// median of the rounds is printed, with the send path's rate for comparison (is generation ever the
// bottleneck?). The backends' outputs are compared byte for byte on the way (a mismatch aborts).
//
// Run with `bash bench/generate.sh [rounds] [positions] [batch]`.
process.env.WIDESCAN_LOG_LEVEL ??= 'warn';

import { randomBytes } from 'node:crypto';
import { availableParallelism, cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { loadJob, type CompiledJob } from '../lib/core/job.js';
import { ProbeWriter } from '../lib/core/probe.js';
import { ThreadedCpuGenerator } from '../worker/cpu-threads.js';
import { CpuGenerator, ProbeBatch, type AddressGenerator } from '../worker/generator.js';
import { GpuGenerator, probeGpu } from '../worker/gpu.js';

const rounds = Number(process.argv[2] ?? 5);
const positions = Number(process.argv[3] ?? 2 ** 20);
const batchSize = Number(process.argv[4] ?? 4096);

const JOBS: Record<string, string> = {
  // The scan order only (a 2^20..2^32 `full` block: its addresses are arithmetic).
  'full /96': '[{prefix: "fd00:be:c4::/96", strategy: full}]',
  // The scan order and a 64-bit draw per address: the costliest common case (random interface IDs in a /64).
  'random /64': `[{prefix: "fd00:be:c4:1::/64", strategy: random, budget: ${2 ** 30}}]`,
};

function job(targets: string): CompiledJob {
  return loadJob(`apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata: {name: bench, uid: bench-generate}
spec:
  allowNonGlobal: true
  targets: ${targets}
  rate: {packetsPerSecond: 1000}
`, 'bench', { fullLimitBits: 32 });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const probe = await probeGpu();
  const threads = availableParallelism();
  console.log(`generate bench: ${rounds} rounds × ${positions} positions, batch ${batchSize}; ${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}`);
  console.log(`WebGPU adapter: ${probe.adapter ? `${probe.adapter.description}${probe.adapter.software ? ' — SOFTWARE (lavapipe): not a hardware GPU figure' : ''}` : `none (${probe.why})`}`);
  for (const [name, targets] of Object.entries(JOBS)) {
    const j = job(targets);
    const writer = new ProbeWriter({ networkId: 1, jobTag: j.tag, macKey: randomBytes(16), contact: 'https://example.org/scan' });
    const backends: [string, AddressGenerator][] = [
      ['cpu, 1 thread', new CpuGenerator(j.space, writer)],
      [`cpu, ${threads} threads`, new ThreadedCpuGenerator(j.space, writer, threads)],
    ];
    if (probe.adapter) backends.push([`webgpu (${probe.adapter.software ? 'lavapipe' : 'hardware'})`, await GpuGenerator.create(j.space, writer)]);
    const batches = backends.map(() => new ProbeBatch(batchSize, writer.packetBytes));
    const rates = backends.map(() => [] as number[]);
    const cpuPerMillion = backends.map(() => [] as number[]);
    for (let r = 0; r < rounds; r++) {
      // Each round its own slice of the space, the same for every backend.
      const first = r * positions;
      for (let b = 0; b < backends.length; b++) {
        const gen = backends[b]![1];
        const batch = batches[b]!;
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        for (let pos = first; pos < first + positions; pos += batchSize) await gen.generate(pos, batchSize, 0, batch);
        const seconds = (performance.now() - t0) / 1000;
        const cpu = process.cpuUsage(c0);
        rates[b]!.push(positions / seconds);
        // This process's CPU: the calling thread plus the generator threads (lavapipe's too: they are ours).
        cpuPerMillion[b]!.push(((cpu.user + cpu.system) / 1e6 / positions) * 1e6);
      }
      // Same last batch from every backend, byte for byte.
      for (let b = 1; b < backends.length; b++) {
        if (!batches[b]!.packets.equals(batches[0]!.packets)) throw new Error(`${backends[b]![0]} differs from ${backends[0]![0]} in round ${r}`);
      }
    }
    console.log(`\n${name} (${j.space.size} targets)`);
    console.log('  backend                    addresses+tags/s (median)   min … max             CPU s per 10^6   vs cpu 1 thread');
    const base = median(rates[0]!);
    backends.forEach(([label], b) => {
      const m = median(rates[b]!);
      console.log(`  ${label.padEnd(26)} ${Math.round(m).toLocaleString('en').padStart(12)}/s   ${Math.round(Math.min(...rates[b]!)).toLocaleString('en').padStart(10)} … ${Math.round(Math.max(...rates[b]!)).toLocaleString('en').padEnd(10)}   ${median(cpuPerMillion[b]!).toFixed(2).padStart(8)}        ${(m / base).toFixed(2)}×`);
    });
    for (const [, gen] of backends) await gen.close();
  }
}

await main();
process.exit(0);

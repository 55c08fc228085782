// The GPU backend for real: the gpu.js kernels compiled to WGSL and run by Dawn on software Vulkan (Mesa's
// lavapipe, which scripts/setup.sh --tests installs), against the CPU backend byte for byte; and the rule
// that a software adapter is never used for scanning (auto → CPU, gpu → a clear refusal, a GPU-pool worker
// exits at start, `widescan run` refuses a `hardware: gpu` job before anything starts).
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { EXIT_GPU_UNAVAILABLE, loadJob, type CompiledJob } from '../../lib/core/job.js';
import { ICMP6_ECHO_REPLY, ProbeWriter, verifyEcho } from '../../lib/core/probe.js';
import { keys } from '../../lib/keys.js';
import { createLogger } from '../../lib/log.js';
import { createMetrics } from '../../lib/metrics.js';
import { ShardQueues } from '../../lib/queue.js';
import { connectRedis, startEmbeddedRedis } from '../../lib/redis.js';
import { Planner } from '../../operator/planner.js';
import { ShardWorker } from '../../worker/worker.js';
import { chooseBackend, createGenerator, GpuUnavailableError } from '../../worker/backends.js';
import { CpuGenerator, ProbeBatch } from '../../worker/generator.js';
import { GpuGenerator, probeGpu, type GpuProbe } from '../../worker/gpu.js';
import { startCli } from '../helpers/cli.js';

let probe: GpuProbe;
const dir = mkdtempSync(join(tmpdir(), 'widescan-gpu-'));

beforeAll(async () => {
  probe = await probeGpu();
  if (!probe.adapter) {
    throw new Error(`these tests need a WebGPU adapter; scripts/setup.sh --tests installs Mesa's software Vulkan (lavapipe): ${probe.why}`);
  }
}, 30_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function job(targets: string, extra = ''): CompiledJob {
  return loadJob(`
apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata: {name: gpu-test, uid: ${randomBytes(8).toString('hex')}}
spec:
  allowNonGlobal: true
  targets: ${targets}
  rate: {packetsPerSecond: 1000}
${extra}`, 'gpu-test');
}

/**
 * Generates positions [0, size) with both backends in batches of varied sizes and compares everything a
 * batch holds; returns the positions compared.
 */
async function compare(j: CompiledJob, capacity: number, chunk: number, onDone?: (gpu: GpuGenerator) => void): Promise<number> {
  const writer = new ProbeWriter({ networkId: randomBytes(2).readUInt16BE(0), jobTag: j.tag, macKey: randomBytes(16), contact: 'https://example.org/scan' });
  const cpu = new CpuGenerator(j.space, writer);
  const gpu = await GpuGenerator.create(j.space, writer, { chunk });
  const a = new ProbeBatch(capacity, writer.packetBytes);
  const b = new ProbeBatch(capacity, writer.packetBytes);
  let probes = 0;
  try {
    for (let pos = 0, n = 0; pos < j.space.size; n++) {
      // Full batches mostly; a short one now and then moves the batch edges off the chunk edges.
      const count = Math.min(n % 5 === 4 ? 1 + (n * 7919) % capacity : capacity, j.space.size - pos);
      const time = Date.now() + n * 977;
      await cpu.generate(pos, count, time, a);
      await gpu.generate(pos, count, time, b);
      expect({ pos, count: b.count, excluded: b.excluded }).toEqual({ pos, count: a.count, excluded: a.excluded });
      expect(Buffer.from(b.addresses.subarray(0, 16 * b.count)).equals(Buffer.from(a.addresses.subarray(0, 16 * a.count)))).toBe(true);
      expect(b.packets.subarray(0, b.count * b.packetBytes).equals(a.packets.subarray(0, a.count * a.packetBytes))).toBe(true);
      probes += b.count;
      pos += count;
    }
    onDone?.(gpu);
  } finally {
    await gpu.close();
  }
  expect(probes).toBeGreaterThan(0);
  return j.space.size;
}

describe('GPU backend on lavapipe, byte for byte with the CPU backend', () => {
  let compared = 0;

  test('a 2^20 full block with exclusions: the scan order\'s kernel over every position', async () => {
    compared += await compare(job('[{prefix: "fd00:a::/108", strategy: full}]', '  exclude: ["fd00:a::4:0/110", "fd00:a::f:ff00/120"]'), 16384, 65536);
  }, 120_000);

  test('random blocks of 32-, 64- and 88-bit host parts, lowbyte and full, exclusions, over a size just above 2^(b-2)', async () => {
    // 2^16 + 2^14 + 2^12 + 3·2^10 + 8 = 86 024 positions: just above 2^16, so the order's walk often takes many
    // passes and some positions come back unfinished for the CPU to complete.
    const j = job(`
    - {prefix: "fd00:b::/96", strategy: random, budget: 65536}
    - {prefix: "fd00:c::/64", strategy: random, budget: 16384}
    - {prefix: "fd00:d::/40", strategy: random, budget: 4096}
    - {prefix: "fd00:e::/54", strategy: lowbyte, subnetLength: 64, hosts: 3}
    - {prefix: "fd00:f::/125", strategy: full}`, '  exclude: ["fd00:b::8000:0/97", "fd00:d::/44", "fd00:e:0:40::/58"]');
    expect(j.space.size).toBe(2 ** 16 + 2 ** 14 + 2 ** 12 + 3 * 2 ** 10 + 8);
    let handedBack = 0;
    compared += await compare(j, 4096, 32768, (gpu) => (handedBack = gpu.finishedOnCpu));
    // ≈ 86 024 · (3/4)^24 ≈ 86 expected: the GPU-to-CPU hand-back ran and produced the same bytes.
    expect(handedBack).toBeGreaterThan(0);
  }, 120_000);

  test('fresh seeds, small chunks (chunk edges inside batches are refetched), a space of one address', async () => {
    compared += await compare(job('[{prefix: "fd00:1:2::/100", strategy: random, budget: 200000}, {prefix: "fd00:1:3::/112", strategy: full}]'), 1000, 1024 * 300);
    compared += await compare(job('[{prefix: "fd00:1:4::/80", strategy: random, budget: 30000}]'), 512, 700);
    compared += await compare(job('[{prefix: "fd00:1:5::7/128", strategy: full}]'), 16, 16);
  }, 120_000);

  test('in all, more than 10^6 positions over several domain sizes were compared', () => {
    expect(compared).toBeGreaterThanOrEqual(1_000_000);
  });

  test('bad calls are refused with the reason and change nothing', async () => {
    const j = job('[{prefix: "fd00:2::/120", strategy: full}]');
    const writer = new ProbeWriter({ networkId: 1, jobTag: j.tag, macKey: randomBytes(16) });
    await expect(GpuGenerator.create(j.space, writer, { chunk: 0 })).rejects.toThrow(/chunk must be an integer in \[1, 2\^22\]/);
    const gpu = await GpuGenerator.create(j.space, writer, { chunk: 64 });
    const batch = new ProbeBatch(8, writer.packetBytes);
    await expect(gpu.generate(0, 9, 0, batch)).rejects.toThrow(/batch of 9 exceeds capacity 8/);
    await expect(gpu.generate(0, 65, 0, new ProbeBatch(128, writer.packetBytes))).rejects.toThrow(/batch of 65 exceeds the GPU chunk of 64 positions/);
    await expect(gpu.generate(250, 8, 0, batch)).rejects.toThrow(/positions \[250, 258\) are outside the target space \[0, 256\)/);
    await expect(gpu.generate(-1, 1, 0, batch)).rejects.toThrow(/outside the target space/);
    await gpu.generate(0, 8, 0, batch);
    expect(batch.count).toBe(8);
    await gpu.close();
    await expect(gpu.generate(0, 8, 0, batch)).rejects.toThrow(/closed/);
  }, 60_000);
});

test('a worker on the GPU backend: every target probed once, every probe verifies, backend webgpu in metrics and status', async () => {
  const server = await startEmbeddedRedis();
  const redis = connectRedis(server.url);
  const connection = connectRedis(server.url);
  const queues = new ShardQueues(redis);
  const j = job('[{prefix: "fd00:5:6::/116", strategy: full}, {prefix: "fd00:5:7::/64", strategy: random, budget: 1000}]', '  shardSize: 1024');
  const macKey = randomBytes(16);
  const planner = new Planner(redis, queues, { window: 4 });
  await planner.submit(j, { macKey, networkId: 4242, blocklist: [], fullLimitBits: 32 });
  const seen = new Set<string>();
  let verified = 0;
  const io = {
    setHopLimit() {},
    async send(packets: Buffer, packetBytes: number, addresses: Uint8Array, from: number, to: number) {
      for (let i = from; i < to; i++) {
        const dst = addresses.subarray(16 * i, 16 * i + 16);
        seen.add(Buffer.from(dst).toString('hex'));
        // What the target's echo reply carries back: the request with type 129, from the probed address.
        const reply = Buffer.from(packets.subarray(i * packetBytes, (i + 1) * packetBytes));
        reply[0] = ICMP6_ECHO_REPLY;
        if (verifyEcho(reply, dst, 4242, () => macKey).ok) verified++;
      }
      return { sent: to - from, errors: {} };
    },
  };
  const metrics = createMetrics('worker');
  // On this machine the adapter is software, which createGenerator never takes: the test hands the worker the
  // GPU backend itself.
  const worker = new ShardWorker({
    redis, connection, io, logger: createLogger('worker'), metrics, hardware: 'gpu', checkpointMs: 200,
    createGenerator: async (_hardware, space, writer) => GpuGenerator.create(space, writer, { chunk: 2048 }),
  });
  const running = worker.run();
  try {
    let status = await planner.tick(j.id);
    for (const until = Date.now() + 60_000; status.phase === 'Running' && Date.now() < until;) {
      await new Promise((r) => setTimeout(r, 100));
      status = await planner.tick(j.id);
    }
    expect(status.phase).toBe('Succeeded');
    expect(status.backend).toBe('webgpu');
    expect(await redis.hget(keys.job(j.id), 'backend')).toBe('webgpu');
    expect(seen.size).toBe(4096 + 1000);
    expect(verified).toBe(4096 + 1000);
    const sent = (await metrics.registry.getSingleMetric('widescan_probes_sent_total')!.get()).values;
    expect(sent).toEqual([expect.objectContaining({ value: 5096, labels: expect.objectContaining({ backend: 'webgpu' }) })]);
  } finally {
    await worker.stop();
    await running;
    await queues.close();
    connection.disconnect();
    redis.disconnect();
    await server.stop();
  }
}, 120_000);

describe('a software adapter is never used for scanning', () => {
  test('this machine has only a software adapter: auto → CPU, gpu → refused naming it, cpu → CPU', async () => {
    expect(probe.adapter!.software).toBe(true);
    expect(chooseBackend('auto', probe)).toBe('cpu');
    expect(chooseBackend('cpu', probe)).toBe('cpu');
    expect(() => chooseBackend('gpu', probe)).toThrow(GpuUnavailableError);
    expect(() => chooseBackend('gpu', probe)).toThrow(/hardware: gpu was requested, but the only WebGPU adapter is a software rasteriser \(.*llvmpipe.*\)/);
    const j = job('[{prefix: "fd00:3::/120", strategy: full}]');
    const writer = new ProbeWriter({ networkId: 1, jobTag: j.tag, macKey: randomBytes(16) });
    const auto = await createGenerator('auto', j.space, writer, { threads: 1 });
    expect(auto.backend).toBe('cpu');
    await auto.close();
    await expect(createGenerator('gpu', j.space, writer)).rejects.toThrow(GpuUnavailableError);
  });

  test('a GPU-pool worker exits at start with EXIT_GPU_UNAVAILABLE and says why, before touching Redis', async () => {
    const child = spawn(process.execPath, [resolve('dist/worker/main.js')], {
      env: { ...process.env, WIDESCAN_HARDWARE: 'gpu', WIDESCAN_REDIS_URL: 'redis://[::1]:1', WIDESCAN_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    expect(code).toBe(EXIT_GPU_UNAVAILABLE);
    expect(out).toMatch(/GPU worker has no usable GPU: the only WebGPU adapter is a software rasteriser/);
    expect(out).not.toMatch(/worker started/);
  }, 30_000);

  test('`widescan run` refuses a hardware: gpu job before anything starts (exit 2)', async () => {
    const file = join(dir, 'gpu-job.yaml');
    writeFileSync(file, `apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata: {name: wants-gpu}
spec:
  allowNonGlobal: true
  hardware: gpu
  targets: [{prefix: "fd00:4::/120", strategy: full}]
  rate: {packetsPerSecond: 100}
`);
    const { code, stderr } = await startCli(['run', file], { timeoutMs: 30_000 }).done;
    expect(code).toBe(2);
    expect(stderr).toMatch(/hardware: gpu was requested, but the only WebGPU adapter is a software rasteriser/);
    expect(stderr).not.toMatch(/probes sent|planned/);
  }, 40_000);
});

// The GPU kernels' sources, evaluated as plain JavaScript (the same text gpu.js compiles to WGSL), against
// the CPU permutation and MAC bit for bit: every half width, both input kinds, the walk's hand-back to the CPU.
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import {
  GPU_MAX_PASSES, UNFINISHED, macFixedLimbs, macKernelSource, macKeyLimbs, macProbeLimbs, permutationHalves,
  permutationKernelSource, permutationKeyLimbs, sizeLimbs,
} from '../../lib/core/kernels.js';
import { Permutation } from '../../lib/core/permutation.js';
import { ProbeWriter } from '../../lib/core/probe.js';

type KernelFn = (this: { thread: { x: number } }, ...args: Float32Array[]) => number[];
const evaluate = (source: string): KernelFn => new Function(`return (${source})`)() as KernelFn;

const limbsOf = (x: bigint) => Float32Array.from([0, 1, 2, 3], (i) => Number((x >> BigInt(16 * i)) & 0xffffn));

/** Runs a permutation kernel for value x (gathered); the result, or undefined when handed back unfinished. */
function permuteOnKernel(kernel: KernelFn, p: Permutation, x: bigint): bigint | undefined {
  const halves = permutationHalves(p.w);
  let v = 0n;
  for (let h = 0; h < halves; h++) {
    const r = kernel.call({ thread: { x: h } }, limbsOf(x), permutationKeyLimbs(p.roundKeys), sizeLimbs(p.size, p.w));
    expect(r).toHaveLength(4);
    if (r[0] === UNFINISHED) return undefined;
    for (let i = 0; i < 4; i++) {
      expect(Number.isInteger(r[i]) && r[i]! >= 0 && r[i]! < 65536).toBe(true);
      v |= BigInt(r[i]!) << BigInt(16 * (4 * h + i));
    }
  }
  return v;
}

describe('permutation kernel', () => {
  test('every half width 1..64: the kernel permutes like Permutation.apply (fresh keys, sizes from 2^(b-2)+1 to 2^b)', () => {
    let checked = 0;
    for (let w = 1; w <= 64; w++) {
      const b = 2n * BigInt(w);
      const low = (1n << (b - 2n)) + 1n;
      // The size's extremes and a random one between; 2^b itself exercises the "every value in range" limb.
      const sizes = [low, 1n << b, low + (BigInt(`0x${randomBytes(16).toString('hex')}`) % ((1n << b) - low))];
      for (const size of sizes) {
        if (size < 2n) continue;
        const p = new Permutation(randomBytes(16), size);
        expect(p.w).toBe(w);
        const kernel = evaluate(permutationKernelSource({ w, input: 'gathered' }));
        const max = size < 1n << 53n ? size : 1n << 53n; // kernel inputs are < 2^53
        for (let n = 0; n < 12; n++) {
          const x = n < 2 ? [0n, max - 1n][n]! : BigInt(`0x${randomBytes(8).toString('hex')}`) % max;
          const got = permuteOnKernel(kernel, p, x);
          if (got !== undefined) {
            expect(got).toBe(p.apply(x));
            checked++;
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(64 * 3 * 10);
  });

  test('sequential input: thread e permutes start + e, with the carry across limbs', () => {
    const p = new Permutation(randomBytes(16), (1n << 50n) - 7n);
    const kernel = evaluate(permutationKernelSource({ w: p.w, input: 'sequential' }));
    const start = 2 ** 48 - 3; // start + e carries out of limbs 0..2
    const keys = permutationKeyLimbs(p.roundKeys), size = sizeLimbs(p.size, p.w);
    for (const e of [0, 1, 2, 3, 65535, 65536, 2 ** 20 + 5]) {
      const r = kernel.call({ thread: { x: e } }, limbsOf(BigInt(start)), keys, size);
      if (r[0] === UNFINISHED) continue;
      expect(BigInt(r[0]!) | (BigInt(r[1]!) << 16n) | (BigInt(r[2]!) << 32n) | (BigInt(r[3]!) << 48n)).toBe(p.apply(BigInt(start + e)));
    }
  });

  test('a value still outside the domain after GPU_MAX_PASSES passes is handed back, never returned wrong', () => {
    // Sizes just above 2^(b-2) leave 3/4 of the Feistel domain outside: some walks take > GPU_MAX_PASSES passes.
    const p = new Permutation(randomBytes(16), (1n << 14n) + 1n);
    const kernel = evaluate(permutationKernelSource({ w: p.w, input: 'gathered' }));
    let unfinished = 0;
    for (let x = 0n; x < p.size; x++) {
      const got = permuteOnKernel(kernel, p, x);
      if (got === undefined) unfinished++;
      else expect(got).toBe(p.apply(x));
    }
    // Expected ≈ size · (3/4)^GPU_MAX_PASSES ≈ 16 of 16 385; none would be a sign the walk is cut short wrongly.
    expect(GPU_MAX_PASSES).toBe(24);
    expect(unfinished).toBeGreaterThan(0);
    expect(unfinished).toBeLessThan(200);
  });

  test('property: random widths, keys and values agree with the CPU', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.bigInt({ min: 0n, max: (1n << 53n) - 1n }), (w, key, raw) => {
        const b = BigInt(2 * w);
        const size = (1n << b) - (raw % (1n << (b - 2n)));
        const p = new Permutation(key, size);
        const x = raw % (size < 1n << 53n ? size : 1n << 53n);
        const got = permuteOnKernel(evaluate(permutationKernelSource({ w: p.w, input: 'gathered' })), p, x);
        return got === undefined || got === p.apply(x);
      }),
      { numRuns: 150 },
    );
  });

  test('bad shapes and inputs are refused with the reason', () => {
    for (const w of [0, 65, 1.5, Number.NaN]) expect(() => permutationKernelSource({ w, input: 'gathered' })).toThrow(/half width must be an integer in \[1, 64\]/);
    expect(() => permutationKernelSource({ w: 8, input: 'scattered' as never })).toThrow(/sequential or gathered/);
    expect(() => permutationKeyLimbs([])).toThrow(/4 round keys, got 0/);
  });
});

describe('MAC kernel', () => {
  const kernel = evaluate(macKernelSource());

  test('tags equal ProbeWriter.write\'s for random keys, destinations, indices and send times', () => {
    for (let n = 0; n < 300; n++) {
      const writer = new ProbeWriter({
        networkId: randomBytes(2).readUInt16BE(0),
        jobTag: randomBytes(4).readUInt32BE(0),
        macKey: randomBytes(16),
        kind: n % 2 === 0 ? 1 : 2,
        contact: n % 3 === 0 ? 'https://example.org/scan' : '',
      });
      const dst = randomBytes(16);
      const indexHi = n % 5 === 0 ? 0 : randomBytes(4).readUInt32BE(0) & 0x1fffff;
      const indexLo = randomBytes(4).readUInt32BE(0);
      const time = n % 7 === 0 ? 2 ** 32 - 1 : randomBytes(4).readUInt32BE(0);
      const packet = Buffer.alloc(writer.packetBytes);
      writer.write(packet, 0, dst, 0, indexHi, indexLo, time);

      const probes = new Float32Array(12 * 3);
      macProbeLimbs(dst, 0, indexHi, indexLo, probes, 2); // probe 2 of a batch: the offsets count
      const r = kernel.call({ thread: { x: 2 } }, probes, macKeyLimbs(writer.options.macKey), macFixedLimbs(writer.macFixedBytes(), time));
      const hi = (r[2]! + r[3]! * 65536) >>> 0, lo = (r[0]! + r[1]! * 65536) >>> 0;
      expect([hi, lo]).toEqual([packet.readUInt32BE(32), packet.readUInt32BE(36)]);

      // And writeTagged with the kernel's tag writes the very same packet.
      const tagged = Buffer.alloc(writer.packetBytes);
      writer.writeTagged(tagged, 0, indexHi, indexLo, time, hi, lo);
      expect(tagged.equals(packet)).toBe(true);
    }
  });

  test('host layouts refuse malformed input', () => {
    expect(() => macFixedLimbs(new Uint8Array(11), 0)).toThrow(/12 bytes, got 11/);
    expect(() => macKeyLimbs(new Uint8Array(15))).toThrow(/exactly 16 bytes/);
    const writer = new ProbeWriter({ networkId: 1, jobTag: 2, macKey: new Uint8Array(16) });
    expect(() => writer.writeTagged(Buffer.alloc(writer.packetBytes - 1), 0, 0, 0, 0, 0, 0)).toThrow(/no room/);
  });
});

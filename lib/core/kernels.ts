/*
 * The GPU backend's kernels, as gpu.js kernel sources generated here: the keyed permutation (permutation.ts)
 * and the probe MAC (probe.ts), carried in 16-bit limbs as siphash.ts describes. gpu.js kernels compute in
 * float32, which is exact only below 2^24, so every value in these sources is a 16-bit limb (or a sum of two
 * limbs and a carry, < 2^17); bitwise operators on such values are exact on every backend (gpu.js casts them
 * through i32). 32-bit words would be silently wrong there.
 *
 * The sources are plain JavaScript functions of `this.thread.x`, so the same text runs in gpu.js (webgpu,
 * compiled to WGSL) and, evaluated directly, in the unit tests that check it against the CPU code bit for bit.
 * Code is generated rather than written once because the limb layout depends on the permutation's half
 * width: generating it per width keeps every shift a constant and the kernel free of data-dependent indexing.
 *
 * Layouts shared with the host (worker/gpu.ts):
 *   - a 64-bit word is 4 limbs, limb 0 = bits 0..15;
 *   - a SipHash key enters as its initial state: v0..v3 (k xor the constants), 16 limbs, v0 limb 0 first;
 *   - permutation kernels return 4 limbs per thread; a value of more than 64 bits takes two threads (`halves`).
 */
import { sipKey, type SipKey } from './siphash.js';

/** Passes of the Feistel a kernel tries before leaving a position to the CPU (cycle-walking, permutation.ts). */
export const GPU_MAX_PASSES = 24;
/** A permutation kernel's limb 0 when the position needed more than GPU_MAX_PASSES passes. */
export const UNFINISHED = -1;

const V = ['v0', 'v1', 'v2', 'v3'] as const;
const l = (word: string, i: number) => `${word}_${i}`;

/** `a += b` on 64-bit words in limbs. */
function add(a: string, b: string): string {
  const out: string[] = [];
  for (let i = 0; i < 4; i++) {
    out.push(`c = ${l(a, i)} + ${l(b, i)}${i > 0 ? ' + (c >> 16)' : ''};`);
    out.push(`${l(a, i)} = c & 65535;`);
  }
  return out.join(' ');
}

/** `a = rotl(a, n)`: limbs rotate by n / 16, then bits by n mod 16 (via the scratch t0..t3). */
function rotl(a: string, n: number): string {
  const q = Math.floor(n / 16), t = n % 16;
  const src = (i: number) => l(a, (((i - q) % 4) + 4) % 4);
  const out: string[] = [];
  for (let i = 0; i < 4; i++) {
    out.push(t === 0 ? `t${i} = ${src(i)};` : `t${i} = ((${src(i)} << ${t}) & 65535) | (${src(i + 3)} >> ${16 - t});`);
  }
  for (let i = 0; i < 4; i++) out.push(`${l(a, i)} = t${i};`);
  return out.join(' ');
}

function xorInto(a: string, b: string): string {
  return [0, 1, 2, 3].map((i) => `${l(a, i)} = ${l(a, i)} ^ ${l(b, i)};`).join(' ');
}

function sipRound(): string {
  return [
    add('v0', 'v1'), rotl('v1', 13), xorInto('v1', 'v0'), rotl('v0', 32),
    add('v2', 'v3'), rotl('v3', 16), xorInto('v3', 'v2'),
    add('v0', 'v3'), rotl('v3', 21), xorInto('v3', 'v0'),
    add('v2', 'v1'), rotl('v1', 17), xorInto('v1', 'v2'), rotl('v2', 32),
  ].join('\n');
}

/** SipHash-2-4 compression of the message block in limbs m_0..m_3. */
function compress(rounds: number): string {
  return `v3_0 = v3_0 ^ m_0; v3_1 = v3_1 ^ m_1; v3_2 = v3_2 ^ m_2; v3_3 = v3_3 ^ m_3;
for (let r = 0; r < ${rounds}; r++) {
${sipRound()}
}
v0_0 = v0_0 ^ m_0; v0_1 = v0_1 ^ m_1; v0_2 = v0_2 ^ m_2; v0_3 = v0_3 ^ m_3;`;
}

function finalise(): string {
  return `v2_0 = v2_0 ^ 255;
for (let r = 0; r < 4; r++) {
${sipRound()}
}
h_0 = v0_0 ^ v1_0 ^ v2_0 ^ v3_0; h_1 = v0_1 ^ v1_1 ^ v2_1 ^ v3_1; h_2 = v0_2 ^ v1_2 ^ v2_2 ^ v3_2; h_3 = v0_3 ^ v1_3 ^ v2_3 ^ v3_3;`;
}

/** Loads the initial state v0..v3 from `keys[base + 0 .. base + 15]`. */
function loadState(base: string): string {
  const out: string[] = [];
  for (let w = 0; w < 4; w++) for (let i = 0; i < 4; i++) out.push(`${l(V[w]!, i)} = keys[${base} + ${4 * w + i}];`);
  return out.join(' ');
}

function declare(names: string[]): string {
  return names.map((n) => `let ${n} = 0;`).join(' ');
}

const STATE = [...V.flatMap((v) => [0, 1, 2, 3].map((i) => l(v, i))), 'c', 't0', 't1', 't2', 't3', 'm_0', 'm_1', 'm_2', 'm_3', 'h_0', 'h_1', 'h_2', 'h_3'];

export type PermutationInput = 'sequential' | 'gathered';

export interface PermutationKernelShape {
  /** Half width w of the Feistel (permutation.ts), 1..64. */
  readonly w: number;
  /**
   * `sequential`: thread e permutes `xs[0..3] + e` (a run of scan positions from one start);
   * `gathered`: thread e permutes `xs[4e .. 4e + 3]`. Inputs are < 2^53 in both (4 limbs).
   */
  readonly input: PermutationInput;
}

/** Threads per value: a result of more than 64 bits (4 limbs) comes back in two halves. */
export function permutationHalves(w: number): 1 | 2 {
  return 2 * w > 64 ? 2 : 1;
}

/**
 * The source of a gpu.js kernel `(xs, keys, size) → [limb0..limb3]` applying the permutation of half width
 * `w` (with cycle-walking) to one value per thread (two threads per value when permutationHalves(w) = 2:
 * thread 2e returns limbs 0..3 of value e, thread 2e + 1 limbs 4..7). `keys` holds the 4 round keys' initial
 * states (permutationKeyLimbs), `size` the domain size split like a value (sizeLimbs). A value still ≥ size
 * after GPU_MAX_PASSES passes comes back with limb 0 = UNFINISHED, for the host to finish on the CPU.
 */
export function permutationKernelSource(shape: PermutationKernelShape): string {
  const { w, input } = shape;
  if (!Number.isInteger(w) || w < 1 || w > 64) throw new RangeError(`permutation half width must be an integer in [1, 64], got ${String(w)}`);
  if (input !== 'sequential' && input !== 'gathered') throw new RangeError(`permutation input must be sequential or gathered, got ${String(input)}`);
  const hl = Math.ceil(w / 16); // limbs per half
  const q = Math.floor(w / 16), t = w % 16;
  const topMask = t === 0 ? 65535 : (1 << t) - 1; // mask of a half's top limb (limb hl - 1)
  const halves = permutationHalves(w);
  const L = (i: number) => `L_${i}`, R = (i: number) => `R_${i}`;
  const x = (i: number) => (i < 4 ? `x_${i}` : '0');
  const lines: string[] = [];
  lines.push(declare([...STATE, ...range(hl).flatMap((i) => [L(i), R(i), `n_${i}`]), 'x_0', 'x_1', 'x_2', 'x_3']));
  lines.push(halves === 2 ? 'const e = Math.floor(this.thread.x / 2); const half = this.thread.x - 2 * e;' : 'const e = this.thread.x;');
  if (input === 'sequential') {
    // x = xs + e, e < 2^24.
    lines.push('c = xs[0] + (e & 65535); x_0 = c & 65535;');
    lines.push('c = xs[1] + Math.floor(e / 65536) + (c >> 16); x_1 = c & 65535;');
    lines.push('c = xs[2] + (c >> 16); x_2 = c & 65535;');
    lines.push('c = xs[3] + (c >> 16); x_3 = c & 65535;');
  } else {
    lines.push('x_0 = xs[4 * e]; x_1 = xs[4 * e + 1]; x_2 = xs[4 * e + 2]; x_3 = xs[4 * e + 3];');
  }
  // Split x = L · 2^w + R.
  for (let i = 0; i < hl; i++) {
    const r = i < q ? x(i) : `(${x(i)} & ${topMask})`;
    lines.push(`${R(i)} = ${i < hl - 1 || t === 0 ? x(i) : r};`);
    // Inputs are < 2^53: limbs from 4 up are 0.
    const lo = x(q + i), hi = x(q + i + 1);
    let li = lo === '0' ? '0' : t === 0 ? lo : `((${lo} >> ${t}) | ((${hi} << ${16 - t}) & 65535))`;
    if (i === hl - 1 && li !== '0') li = `(${li} & ${topMask})`;
    lines.push(`${L(i)} = ${li};`);
  }
  // The Feistel and the walk: since a pass maps (L, R) to (L', R') of the joined value directly, the walk
  // never re-splits; "x < size" is (L, R) < (size's L, size's R) compared limb by limb from the top.
  const below = lexLess([...range(hl).reverse().map(L), ...range(hl).reverse().map(R)], [...range(hl).reverse().map((i) => `size[${i}]`), ...range(hl).reverse().map((i) => `size[${4 + i}]`)]);
  lines.push(`let done = 0;
for (let p = 0; p < ${GPU_MAX_PASSES}; p++) {
if (done === 0) {
for (let k = 0; k < 4; k++) {
${loadState('k * 16')}
${range(4).map((i) => `m_${i} = ${i < hl ? R(i) : '0'};`).join(' ')}
${compress(2)}
m_0 = 0; m_1 = 0; m_2 = 0; m_3 = 2048;
${compress(2)}
${finalise()}
${range(hl).map((i) => `n_${i} = ${L(i)} ^ (h_${i}${i === hl - 1 ? ` & ${topMask}` : ''});`).join(' ')}
${range(hl).map((i) => `${L(i)} = ${R(i)}; ${R(i)} = n_${i};`).join(' ')}
}
if (${below}) { done = 1; }
}
}`);
  // Join x' = L · 2^w + R into 8 limbs o_0..o_7.
  const o: string[] = [];
  for (let i = 0; i < 8; i++) {
    const parts: string[] = [];
    if (i < hl) parts.push(R(i));
    const k = i - q; // L limb k lands in limb i (shifted by t), L limb k - 1's top bits too
    if (t === 0) {
      if (k >= 0 && k < hl) parts.push(L(k));
    } else {
      if (k >= 0 && k < hl) parts.push(`((${L(k)} << ${t}) & 65535)`);
      if (k - 1 >= 0 && k - 1 < hl) parts.push(`(${L(k - 1)} >> ${16 - t})`);
    }
    o.push(parts.length === 0 ? '0' : parts.join(' | '));
  }
  lines.push(`if (done === 0) { return [${UNFINISHED}, 0, 0, 0]; }`);
  if (halves === 1) {
    lines.push(`return [${o.slice(0, 4).join(', ')}];`);
  } else {
    lines.push(range(8).map((i) => `const o_${i} = ${o[i]};`).join(' '));
    lines.push(`return [${range(4).map((i) => `o_${i} + half * (o_${i + 4} - o_${i})`).join(', ')}];`);
  }
  return `function (xs, keys, size) {\n${lines.join('\n')}\n}`;
}

/** `a < b` for equal-length lists of limbs, most significant first, as a kernel expression. */
function lexLess(a: string[], b: string[]): string {
  let expr = `${a[a.length - 1]} < ${b[b.length - 1]}`;
  for (let i = a.length - 2; i >= 0; i--) expr = `${a[i]} < ${b[i]} || (${a[i]} === ${b[i]} && (${expr}))`;
  return expr;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * The source of the MAC kernel `(probes, keys, fixed) → [limb0..limb3]`: SipHash-2-4 over the 40-byte MAC
 * message of probe.ts for probe e. `probes[12e ..]` holds the message's varying blocks: the destination
 * address (blocks 0 and 1, 8 limbs) and the target index's 4 limbs of blocks 3 and 4 (macProbeLimbs).
 * `fixed` holds block 2 (magic, version, kind, network id; 4 limbs), the job tag's 2 limbs of block 3 and the
 * send time's 2 limbs of block 4 (macFixedLimbs); `keys` the MAC key's initial state.
 */
export function macKernelSource(): string {
  const block = (limbs: string[]) => `${limbs.map((v, i) => `m_${i} = ${v};`).join(' ')}\n${compress(2)}`;
  const p = (i: number) => `probes[12 * e + ${i}]`;
  return `function (probes, keys, fixed) {
${declare(STATE)}
const e = this.thread.x;
${loadState('0')}
${block([p(0), p(1), p(2), p(3)])}
${block([p(4), p(5), p(6), p(7)])}
${block(['fixed[0]', 'fixed[1]', 'fixed[2]', 'fixed[3]'])}
${block(['fixed[4]', 'fixed[5]', p(8), p(9)])}
${block([p(10), p(11), 'fixed[6]', 'fixed[7]'])}
${block(['0', '0', '0', '10240'])}
${finalise()}
return [h_0, h_1, h_2, h_3];
}`;
}

// Host-side layouts.

const SIP_CONSTANTS = [0x70736575, 0x736f6d65, 0x6e646f6d, 0x646f7261, 0x6e657261, 0x6c796765, 0x79746573, 0x74656462];

/** A SipHash key's initial state v0..v3 as 16 limbs into `out` at `offset`. */
export function sipStateLimbs(key: SipKey, out: Float32Array, offset: number): void {
  // v0 = k0 ^ c0, v1 = k1 ^ c1, v2 = k0 ^ c2, v3 = k1 ^ c3; each as (low, high) 32-bit words.
  const words = [key[0]! ^ SIP_CONSTANTS[0]!, key[1]! ^ SIP_CONSTANTS[1]!, key[2]! ^ SIP_CONSTANTS[2]!, key[3]! ^ SIP_CONSTANTS[3]!,
    key[0]! ^ SIP_CONSTANTS[4]!, key[1]! ^ SIP_CONSTANTS[5]!, key[2]! ^ SIP_CONSTANTS[6]!, key[3]! ^ SIP_CONSTANTS[7]!];
  for (let i = 0; i < 8; i++) {
    out[offset + 2 * i] = words[i]! & 0xffff;
    out[offset + 2 * i + 1] = words[i]! >>> 16;
  }
}

/** The 4 round keys' initial states of a permutation (`keys` of permutationKernelSource): 64 limbs. */
export function permutationKeyLimbs(roundKeys: readonly SipKey[]): Float32Array {
  if (roundKeys.length !== 4) throw new RangeError(`a permutation has 4 round keys, got ${roundKeys.length}`);
  const out = new Float32Array(64);
  roundKeys.forEach((k, r) => sipStateLimbs(k, out, 16 * r));
  return out;
}

/**
 * The domain size split like a value (`size` of permutationKernelSource): limbs 0..3 = size >> w, limbs 4..7
 * = size mod 2^w. A size of exactly 2^(2w) (every value in range) is written as a top limb of 65536, which
 * every limb is below.
 */
export function sizeLimbs(size: bigint, w: number): Float32Array {
  const out = new Float32Array(8);
  const hl = Math.ceil(w / 16);
  if (size >= 1n << BigInt(2 * w)) {
    out[hl - 1] = 65536;
    return out;
  }
  const high = size >> BigInt(w), low = size & ((1n << BigInt(w)) - 1n);
  for (let i = 0; i < 4; i++) {
    out[i] = Number((high >> BigInt(16 * i)) & 0xffffn);
    out[4 + i] = Number((low >> BigInt(16 * i)) & 0xffffn);
  }
  return out;
}

/** The MAC key's state for macKernelSource. */
export function macKeyLimbs(macKey: Uint8Array): Float32Array {
  const out = new Float32Array(16);
  sipStateLimbs(sipKey(macKey), out, 0);
  return out;
}

/** Two little-endian limbs of the 4 bytes of `v` written big-endian (how probe.ts puts 32-bit fields). */
function beWordLimbs(v: number, out: Float32Array, offset: number): void {
  out[offset] = (v >>> 24) | (((v >>> 16) & 0xff) << 8);
  out[offset + 1] = ((v >>> 8) & 0xff) | ((v & 0xff) << 8);
}

/**
 * `fixed` of macKernelSource: block 2 and the job tag from the MAC message's constant bytes 16..27
 * (ProbeWriter.macFixedBytes: magic, version, kind, network id, job tag), and the send time.
 */
export function macFixedLimbs(fixedBytes: Uint8Array, sendTimeMs: number, out = new Float32Array(8)): Float32Array {
  if (fixedBytes.length !== 12) throw new RangeError(`the MAC message's fixed part is 12 bytes, got ${fixedBytes.length}`);
  for (let i = 0; i < 6; i++) out[i] = fixedBytes[2 * i]! | (fixedBytes[2 * i + 1]! << 8);
  beWordLimbs(sendTimeMs >>> 0, out, 6);
  return out;
}

/** Probe `n`'s 12 limbs of `probes` (macKernelSource): its destination and its target index. */
export function macProbeLimbs(address: Uint8Array, addressOffset: number, indexHi: number, indexLo: number, out: Float32Array, n: number): void {
  const o = 12 * n;
  for (let i = 0; i < 8; i++) out[o + i] = address[addressOffset + 2 * i]! | (address[addressOffset + 2 * i + 1]! << 8);
  beWordLimbs(indexHi >>> 0, out, o + 8);
  beWordLimbs(indexLo >>> 0, out, o + 10);
}

/*
 * The keyed format-preserving permutation of [0, size), 1 ≤ size ≤ 2^128: the job's global scan order and
 * the per-target orders (DESIGN.md "The target space"). Exact definition, for the GPU port:
 *
 *   size = 1: the identity.
 *   Otherwise b = the smallest even number ≥ 2 with 2^b ≥ size, w = b / 2 (1 ≤ w ≤ 64).
 *   Round keys, r = 0..3 (4 rounds), with K the 16-byte permutation key and SipHash-2-4 as in siphash.ts:
 *     roundKey_r = siphashBytes(K, [0x57, 0x53, 0x50, r, b, 0, 0, 0])   ("WSP", round, width, half 0)
 *                ‖ siphashBytes(K, [0x57, 0x53, 0x50, r, b, 1, 0, 0])   (half 1)
 *     (siphashBytes = the 64-bit result as 8 bytes little-endian; the 16 bytes are then a SipHash key.)
 *   Feistel on x in [0, 2^b): L = x >> w (high half), R = x mod 2^w (low half); for r = 0, 1, 2, 3:
 *     (L, R) ← (R, L xor F_r(R)),  F_r(R) = SipHash-2-4(roundKey_r, R as the 8-byte little-endian message)
 *                                        mod 2^w
 *   and x' = L · 2^w + R. Its inverse runs r = 3, 2, 1, 0 with (L, R) ← (R xor F_r(L), L).
 *   Cycle-walking: apply(p) = the first of Feistel(p), Feistel(Feistel(p)), … that is < size. Terminates
 *   because the Feistel permutes [0, 2^b) and p's own cycle contains p < size; size > 2^(b-2), so fewer
 *   than 4 passes are expected. inverse(v) walks the inverse Feistel the same way.
 *
 * Position and result travel as 4 little-endian 32-bit words (w[0] = bits 0..31); halves are (low, high)
 * 32-bit word pairs, so the hot path never touches BigInt.
 */
import { sipKey, siphash24Word64, siphashBytes, type SipKey } from './siphash.js';

const TWO_128 = 1n << 128n;
const ROUNDS = 4;

/** 2^n − 1 for 0 ≤ n ≤ 32, as a uint32 (JS shifts are mod 32, so `1 << 32` cannot be used). */
const mask32 = (n: number) => (n === 32 ? 0xffffffff : 2 ** n - 1);

export class Permutation {
  readonly size: bigint;
  /** Bit width b of the Feistel domain (0 for the identity). */
  private readonly b: number;
  /** Half width w = b / 2 (0 for the identity); with the round keys, what the GPU kernels need. */
  readonly w: number;
  readonly roundKeys: readonly SipKey[];
  /** Masks of a w-bit half as (low word, high word). */
  private readonly hmLo: number;
  private readonly hmHi: number;
  /** size as words; `full` when size = 2^128, where every 128-bit value is in range. */
  private readonly sw: Uint32Array;
  private readonly full: boolean;
  // Scratch, so the hot path allocates nothing.
  private readonly h = new Uint32Array(2);
  private readonly words = new Uint32Array(4);

  constructor(key: Uint8Array, size: bigint) {
    if (typeof size !== 'bigint' || size < 1n || size > TWO_128) {
      throw new RangeError(`permutation size must be a bigint in [1, 2^128], got ${String(size)}`);
    }
    const k = sipKey(key);
    this.size = size;
    this.full = size === TWO_128;
    this.sw = wordsOf(this.full ? 0n : size);
    let b = 0;
    if (size > 1n) {
      b = 2;
      while (1n << BigInt(b) < size) b += 2;
    }
    this.b = b;
    this.w = b / 2;
    this.hmLo = mask32(Math.min(this.w, 32));
    this.hmHi = mask32(Math.max(this.w - 32, 0));
    const roundKeys: SipKey[] = [];
    for (let r = 0; r < ROUNDS && b > 0; r++) {
      const rk = new Uint8Array(16);
      rk.set(siphashBytes(k, Uint8Array.of(0x57, 0x53, 0x50, r, b, 0, 0, 0)), 0);
      rk.set(siphashBytes(k, Uint8Array.of(0x57, 0x53, 0x50, r, b, 1, 0, 0)), 8);
      roundKeys.push(sipKey(rk));
    }
    this.roundKeys = roundKeys;
  }

  apply(position: bigint): bigint {
    this.check(position, 'position');
    this.words.set(wordsOf(position));
    this.applyWords(this.words, this.words);
    return valueOf(this.words);
  }

  inverse(value: bigint): bigint {
    this.check(value, 'value');
    this.words.set(wordsOf(value));
    this.walk(this.words, this.words, false);
    return valueOf(this.words);
  }

  /** The hot path: `out` = apply(`pos`), both 4 little-endian uint32 words; `out` may be `pos`. */
  applyWords(pos: Uint32Array, out: Uint32Array): void {
    this.walk(pos, out, true);
  }

  private check(x: bigint, what: string): void {
    if (typeof x !== 'bigint' || x < 0n || x >= this.size) {
      throw new RangeError(`${what} ${String(x)} is outside the permutation's range [0, ${this.size})`);
    }
  }

  private walk(input: Uint32Array, out: Uint32Array, forward: boolean): void {
    let a0 = input[0]!, a1 = input[1]!, a2 = input[2]!, a3 = input[3]!;
    if (!this.below(a0, a1, a2, a3)) {
      throw new RangeError(`permutation input [${Array.from(input)}] is outside [0, ${this.size})`);
    }
    if (this.b > 0) {
      const { w, hmLo, hmHi, h } = this;
      do {
        // Split x = L · 2^w + R into (low, high) word pairs.
        let rl: number, rh: number, ll: number, lh: number;
        if (w <= 32) {
          rl = a0 & hmLo; rh = 0;
          ll = w === 32 ? a1 : ((a0 >>> w) | (a1 << (32 - w))) & hmLo; lh = 0;
        } else {
          const s = w - 32;
          rl = a0; rh = a1 & hmHi;
          if (s === 32) {
            ll = a2; lh = a3;
          } else {
            ll = (a1 >>> s) | (a2 << (32 - s));
            lh = ((a2 >>> s) | (a3 << (32 - s))) & hmHi;
          }
        }
        if (forward) {
          for (let r = 0; r < ROUNDS; r++) {
            siphash24Word64(this.roundKeys[r]!, rl, rh, h);
            const nl = ll ^ (h[0]! & hmLo), nh = lh ^ (h[1]! & hmHi);
            ll = rl; lh = rh; rl = nl; rh = nh;
          }
        } else {
          for (let r = ROUNDS - 1; r >= 0; r--) {
            siphash24Word64(this.roundKeys[r]!, ll, lh, h);
            const nl = rl ^ (h[0]! & hmLo), nh = rh ^ (h[1]! & hmHi);
            rl = ll; rh = lh; ll = nl; lh = nh;
          }
        }
        // Join, as unsigned words.
        if (w <= 32) {
          if (w === 32) {
            a0 = rl >>> 0; a1 = ll >>> 0;
          } else {
            a0 = (rl | (ll << w)) >>> 0; a1 = ll >>> (32 - w);
          }
          a2 = 0; a3 = 0;
        } else {
          const s = w - 32;
          a0 = rl >>> 0;
          if (s === 32) {
            a1 = rh >>> 0; a2 = ll >>> 0; a3 = lh >>> 0;
          } else {
            a1 = (rh | (ll << s)) >>> 0;
            a2 = ((ll >>> (32 - s)) | (lh << s)) >>> 0;
            a3 = lh >>> (32 - s);
          }
        }
      } while (!this.below(a0, a1, a2, a3));
    }
    out[0] = a0; out[1] = a1; out[2] = a2; out[3] = a3;
  }

  /** Whether the 128-bit value (a3 a2 a1 a0) is < size. */
  private below(a0: number, a1: number, a2: number, a3: number): boolean {
    if (this.full) return true;
    const s = this.sw;
    if (a3 !== s[3]) return a3 < s[3]!;
    if (a2 !== s[2]) return a2 < s[2]!;
    if (a1 !== s[1]) return a1 < s[1]!;
    return a0 < s[0]!;
  }
}

function wordsOf(x: bigint): Uint32Array {
  return Uint32Array.of(
    Number(x & 0xffffffffn),
    Number((x >> 32n) & 0xffffffffn),
    Number((x >> 64n) & 0xffffffffn),
    Number((x >> 96n) & 0xffffffffn),
  );
}

function valueOf(w: Uint32Array): bigint {
  return (BigInt(w[3]!) << 96n) | (BigInt(w[2]!) << 64n) | (BigInt(w[1]!) << 32n) | BigInt(w[0]!);
}

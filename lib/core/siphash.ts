/*
 * SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012): 128-bit key, 64-bit output.
 * It is widescan's only primitive: the probe MAC and the round function of the keyed permutation.
 *
 * Exact algorithm (all words are 64-bit unsigned, arithmetic mod 2^64, rotl = rotate left):
 *
 *   k0 = key bytes 0..7 little-endian, k1 = key bytes 8..15 little-endian
 *   v0 = k0 ^ 0x736f6d6570736575      v1 = k1 ^ 0x646f72616e646f6d
 *   v2 = k0 ^ 0x6c7967656e657261      v3 = k1 ^ 0x7465646279746573
 *
 *   SipRound:
 *     v0 += v1; v1 = rotl(v1,13); v1 ^= v0; v0 = rotl(v0,32)
 *     v2 += v3; v3 = rotl(v3,16); v3 ^= v2
 *     v0 += v3; v3 = rotl(v3,21); v3 ^= v0
 *     v2 += v1; v1 = rotl(v1,17); v1 ^= v2; v2 = rotl(v2,32)
 *
 *   The message of n bytes is cut into floor(n/8) full 8-byte blocks, each read little-endian, plus one last
 *   block m = (n mod 256) << 56 | (the remaining n mod 8 bytes, little-endian). For every block m, in order:
 *     v3 ^= m; SipRound; SipRound; v0 ^= m
 *   Finalisation: v2 ^= 0xff; SipRound ×4; result = v0 ^ v1 ^ v2 ^ v3.
 *   The reference writes the result as 8 bytes little-endian (`siphashBytes`).
 *
 * Carrying it in 16-bit limbs (the GPU port; float32 is exact below 2^24): hold each 64-bit word as four
 * limbs a[0..3], a[0] = bits 0..15. Then
 *   - xor is limb-wise;
 *   - a += b: s_i = a_i + b_i + c_i (c_0 = 0), a_i = s_i mod 2^16, c_{i+1} = floor(s_i / 2^16); the carry out
 *     of limb 3 is dropped (every intermediate stays below 2^17);
 *   - rotl by 16q + t (0 ≤ t < 16): first rotate the limbs, r_i = a_{(i - q) mod 4}, then
 *     out_i = (r_i · 2^t mod 2^16) + floor(r_{(i-1) mod 4} / 2^(16 - t)). The rotations used are
 *     13 = 0·16+13, 16 = 1·16+0, 17 = 1·16+1, 21 = 1·16+5 and 32 = 2·16+0.
 * This JS implementation uses two 32-bit halves per word instead, for speed; the results are identical.
 */

/** A SipHash key as 4 little-endian 32-bit words: k0 low, k0 high, k1 low, k1 high. */
export type SipKey = Uint32Array;

export function sipKey(bytes: Uint8Array): SipKey {
  if (!(bytes instanceof Uint8Array) || bytes.length !== 16) {
    const got = bytes instanceof Uint8Array ? `${bytes.length} bytes` : typeof bytes;
    throw new RangeError(`SipHash key must be exactly 16 bytes, got ${got}; derive keys with lib/core/keys.ts`);
  }
  const k = new Uint32Array(4);
  for (let i = 0; i < 4; i++) {
    const o = 4 * i;
    k[i] = (bytes[o]! | (bytes[o + 1]! << 8) | (bytes[o + 2]! << 16) | (bytes[o + 3]! << 24)) >>> 0;
  }
  return k;
}

/**
 * SipHash-2-4 of `msg[offset .. offset+length)`. Returns `out` with out[0] = low 32 bits, out[1] = high 32 bits.
 * Allocates nothing when `out` is given.
 */
export function siphash24(
  key: SipKey,
  msg: Uint8Array,
  offset = 0,
  length = msg.length - offset,
  out: Uint32Array = new Uint32Array(2),
): Uint32Array {
  if (!(offset >= 0 && length >= 0 && offset + length <= msg.length)) {
    throw new RangeError(`siphash24: range [${offset}, ${offset + length}) is outside the ${msg.length}-byte message`);
  }
  // Each 64-bit state word is a (low, high) pair of int32 locals; `| 0` keeps them int32 for V8.
  let v0l = key[0]! ^ 0x70736575, v0h = key[1]! ^ 0x736f6d65;
  let v1l = key[2]! ^ 0x6e646f6d, v1h = key[3]! ^ 0x646f7261;
  let v2l = key[0]! ^ 0x6e657261, v2h = key[1]! ^ 0x6c796765;
  let v3l = key[2]! ^ 0x79746573, v3h = key[3]! ^ 0x74656462;
  let t = 0;

  // Blocks 0 .. full-1 are the full 8-byte blocks, block `full` the padded last one, `full + 1` finalisation.
  const full = length >>> 3;
  const end = offset + length;
  for (let blk = 0; blk <= full + 1; blk++) {
    let ml = 0, mh = 0, rounds = 2;
    if (blk < full) {
      const o = offset + 8 * blk;
      ml = msg[o]! | (msg[o + 1]! << 8) | (msg[o + 2]! << 16) | (msg[o + 3]! << 24);
      mh = msg[o + 4]! | (msg[o + 5]! << 8) | (msg[o + 6]! << 16) | (msg[o + 7]! << 24);
    } else if (blk === full) {
      mh = (length & 0xff) << 24;
      for (let o = offset + 8 * full, shift = 0; o < end; o++, shift += 8) {
        if (shift < 32) ml |= msg[o]! << shift;
        else mh |= msg[o]! << (shift - 32);
      }
    } else {
      v2l ^= 0xff;
      rounds = 4;
    }
    v3l ^= ml; v3h ^= mh;
    for (let r = 0; r < rounds; r++) {
      // SipRound, kept inline (and repeated in siphash24Word64) so the state stays in registers.
      // 64-bit add: the carry out of the low words is bit 31 of (a & b) | ((a | b) & ~sum), branch-free
      // (2.5× faster in V8 than comparing the sum with an addend).
      t = (v0l + v1l) | 0; v0h = (v0h + v1h + (((v0l & v1l) | ((v0l | v1l) & ~t)) >>> 31)) | 0; v0l = t;
      t = (v1l << 13) | (v1h >>> 19); v1h = (v1h << 13) | (v1l >>> 19); v1l = t;
      v1l ^= v0l; v1h ^= v0h;
      t = v0l; v0l = v0h; v0h = t;
      t = (v2l + v3l) | 0; v2h = (v2h + v3h + (((v2l & v3l) | ((v2l | v3l) & ~t)) >>> 31)) | 0; v2l = t;
      t = (v3l << 16) | (v3h >>> 16); v3h = (v3h << 16) | (v3l >>> 16); v3l = t;
      v3l ^= v2l; v3h ^= v2h;
      t = (v0l + v3l) | 0; v0h = (v0h + v3h + (((v0l & v3l) | ((v0l | v3l) & ~t)) >>> 31)) | 0; v0l = t;
      t = (v3l << 21) | (v3h >>> 11); v3h = (v3h << 21) | (v3l >>> 11); v3l = t;
      v3l ^= v0l; v3h ^= v0h;
      t = (v2l + v1l) | 0; v2h = (v2h + v1h + (((v2l & v1l) | ((v2l | v1l) & ~t)) >>> 31)) | 0; v2l = t;
      t = (v1l << 17) | (v1h >>> 15); v1h = (v1h << 17) | (v1l >>> 15); v1l = t;
      v1l ^= v2l; v1h ^= v2h;
      t = v2l; v2l = v2h; v2h = t;
    }
    v0l ^= ml; v0h ^= mh;
  }
  out[0] = v0l ^ v1l ^ v2l ^ v3l;
  out[1] = v0h ^ v1h ^ v2h ^ v3h;
  return out;
}

/**
 * SipHash-2-4 of the 8-byte message whose little-endian value is `hi · 2^32 + lo` (lo, hi: 32-bit words).
 * The permutation's round function: no allocation, no byte traffic.
 */
export function siphash24Word64(key: SipKey, lo: number, hi: number, out: Uint32Array): void {
  let v0l = key[0]! ^ 0x70736575, v0h = key[1]! ^ 0x736f6d65;
  let v1l = key[2]! ^ 0x6e646f6d, v1h = key[3]! ^ 0x646f7261;
  let v2l = key[0]! ^ 0x6e657261, v2h = key[1]! ^ 0x6c796765;
  let v3l = key[2]! ^ 0x79746573, v3h = key[3]! ^ 0x74656462;
  let t = 0;
  // Block 0: the message; block 1: the length block (8 << 56); block 2: finalisation.
  for (let blk = 0; blk < 3; blk++) {
    let ml = 0, mh = 0, rounds = 2;
    if (blk === 0) {
      ml = lo | 0;
      mh = hi | 0;
    } else if (blk === 1) {
      mh = 0x08000000;
    } else {
      v2l ^= 0xff;
      rounds = 4;
    }
    v3l ^= ml; v3h ^= mh;
    for (let r = 0; r < rounds; r++) {
      t = (v0l + v1l) | 0; v0h = (v0h + v1h + (((v0l & v1l) | ((v0l | v1l) & ~t)) >>> 31)) | 0; v0l = t;
      t = (v1l << 13) | (v1h >>> 19); v1h = (v1h << 13) | (v1l >>> 19); v1l = t;
      v1l ^= v0l; v1h ^= v0h;
      t = v0l; v0l = v0h; v0h = t;
      t = (v2l + v3l) | 0; v2h = (v2h + v3h + (((v2l & v3l) | ((v2l | v3l) & ~t)) >>> 31)) | 0; v2l = t;
      t = (v3l << 16) | (v3h >>> 16); v3h = (v3h << 16) | (v3l >>> 16); v3l = t;
      v3l ^= v2l; v3h ^= v2h;
      t = (v0l + v3l) | 0; v0h = (v0h + v3h + (((v0l & v3l) | ((v0l | v3l) & ~t)) >>> 31)) | 0; v0l = t;
      t = (v3l << 21) | (v3h >>> 11); v3h = (v3h << 21) | (v3l >>> 11); v3l = t;
      v3l ^= v0l; v3h ^= v0h;
      t = (v2l + v1l) | 0; v2h = (v2h + v1h + (((v2l & v1l) | ((v2l | v1l) & ~t)) >>> 31)) | 0; v2l = t;
      t = (v1l << 17) | (v1h >>> 15); v1h = (v1h << 17) | (v1l >>> 15); v1l = t;
      v1l ^= v2l; v1h ^= v2h;
      t = v2l; v2l = v2h; v2h = t;
    }
    v0l ^= ml; v0h ^= mh;
  }
  out[0] = v0l ^ v1l ^ v2l ^ v3l;
  out[1] = v0h ^ v1h ^ v2h ^ v3h;
}

/** SipHash-2-4 as the reference's 8 output bytes (the 64-bit result little-endian). */
export function siphashBytes(key: SipKey, msg: Uint8Array): Uint8Array {
  const h = siphash24(key, msg);
  const out = new Uint8Array(8);
  for (let i = 0; i < 4; i++) {
    out[i] = h[0]! >>> (8 * i);
    out[4 + i] = h[1]! >>> (8 * i);
  }
  return out;
}

// 128-bit addresses as four big-endian 32-bit words: the representation of the per-address hot path, where
// BigInt would allocate. Conversions to and from bigint and bytes live here, once.

export function wordsToBigint(w: Uint32Array): bigint {
  return (BigInt(w[0]) << 96n) | (BigInt(w[1]) << 64n) | (BigInt(w[2]) << 32n) | BigInt(w[3]);
}

export function bigintToWords(a: bigint, out = new Uint32Array(4)): Uint32Array {
  out[0] = Number((a >> 96n) & 0xffffffffn);
  out[1] = Number((a >> 64n) & 0xffffffffn);
  out[2] = Number((a >> 32n) & 0xffffffffn);
  out[3] = Number(a & 0xffffffffn);
  return out;
}

/** Writes the address in network byte order at `out[offset .. offset + 16)`. */
export function addressToBytesWords(w: Uint32Array, out: Uint8Array, offset: number): void {
  for (let i = 0; i < 4; i++) {
    const v = w[i];
    const o = offset + 4 * i;
    out[o] = v >>> 24;
    out[o + 1] = (v >>> 16) & 0xff;
    out[o + 2] = (v >>> 8) & 0xff;
    out[o + 3] = v & 0xff;
  }
}

const HEX16: string[] = Array.from({ length: 65536 }, (_, i) => i.toString(16));

/**
 * Uncompressed text (`fd00:5ca:0:0:0:0:0:1`) of the address at `bytes[offset..]`: what socket APIs that take
 * a string need, ~10× cheaper than RFC 5952 formatting. Never shown to people (use formatAddress for that).
 */
export function bytesToSocketText(bytes: Uint8Array, offset: number): string {
  const g = (i: number) => HEX16[(bytes[offset + 2 * i] << 8) | bytes[offset + 2 * i + 1]];
  return `${g(0)}:${g(1)}:${g(2)}:${g(3)}:${g(4)}:${g(5)}:${g(6)}:${g(7)}`;
}

import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { addressToBytes, bytesToAddress, formatAddress, parseAddress } from '../../lib/core/ipv6.js';
import { addressToBytesWords, bigintToWords, bytesToSocketText, wordsToBigint } from '../../lib/core/words.js';

const address = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n });
// Addresses with long runs of zero and all-one words, where text formats go wrong.
const structured = fc
  .array(fc.constantFrom(0, 1, 0xffff, 0x8000, 0x00ff, 0x1234), { minLength: 8, maxLength: 8 })
  .map((groups) => groups.reduce((a, g) => (a << 16n) | BigInt(g), 0n));
const anyAddress = fc.oneof(address, structured);

describe('words', () => {
  test('bigint → words → bigint round trips; words are big-endian', () => {
    fc.assert(
      fc.property(anyAddress, (a) => {
        const w = bigintToWords(a);
        expect(w).toBeInstanceOf(Uint32Array);
        expect(w).toHaveLength(4);
        expect(wordsToBigint(w)).toBe(a);
        expect(w[0]).toBe(Number(a >> 96n));
        expect(w[3]).toBe(Number(a & 0xffffffffn));
      }),
      { numRuns: 500 },
    );
    expect(Array.from(bigintToWords(parseAddress('2001:db8:1:2:3:4:5:6')))).toEqual([0x20010db8, 0x00010002, 0x00030004, 0x00050006]);
  });

  test('words → bigint → words round trips; the out buffer is reused', () => {
    fc.assert(
      fc.property(fc.uint32Array({ minLength: 4, maxLength: 4 }), (w) => {
        const out = new Uint32Array(4);
        const back = bigintToWords(wordsToBigint(w), out);
        expect(back).toBe(out);
        expect(Array.from(back)).toEqual(Array.from(w));
      }),
      { numRuns: 300 },
    );
  });

  test('addressToBytesWords writes the same 16 bytes as addressToBytes, at the offset only', () => {
    fc.assert(
      fc.property(anyAddress, fc.integer({ min: 0, max: 20 }), (a, offset) => {
        const buf = new Uint8Array(40).fill(0xee);
        addressToBytesWords(bigintToWords(a), buf, offset);
        expect(Array.from(buf.subarray(offset, offset + 16))).toEqual(Array.from(addressToBytes(a)));
        expect(bytesToAddress(buf, offset)).toBe(a);
        expect(buf.subarray(0, offset).every((b) => b === 0xee)).toBe(true);
        expect(buf.subarray(offset + 16).every((b) => b === 0xee)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  test('bytesToSocketText is 8 uncompressed lowercase groups that parse back to the address', () => {
    fc.assert(
      fc.property(anyAddress, fc.integer({ min: 0, max: 16 }), (a, offset) => {
        const buf = new Uint8Array(32);
        addressToBytes(a, buf, offset);
        const text = bytesToSocketText(buf, offset);
        expect(text).toMatch(/^([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}$/);
        expect(text).not.toMatch(/(^|:)0[0-9a-f]/);
        expect(parseAddress(text)).toBe(a);
      }),
      { numRuns: 500 },
    );
    const buf = addressToBytes(parseAddress('fd00:5ca::1'));
    expect(bytesToSocketText(buf, 0)).toBe('fd00:5ca:0:0:0:0:0:1');
    expect(formatAddress(parseAddress(bytesToSocketText(buf, 0)))).toBe('fd00:5ca::1');
    expect(bytesToSocketText(addressToBytes((1n << 128n) - 1n), 0)).toBe('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
    expect(bytesToSocketText(new Uint8Array(16), 0)).toBe('0:0:0:0:0:0:0:0');
  });
});

import { describe, expect, test } from '@jest/globals';
import { isIPv6 } from 'node:net';
import fc from 'fast-check';
import {
  ADDRESS_BITS,
  ADDRESS_MAX,
  AddressError,
  addressToBytes,
  bytesToAddress,
  formatAddress,
  formatAddressBytes,
  parseAddress,
} from '../../lib/core/ipv6.js';

/** An address from eight 16-bit groups, for readable expectations independent of the parser. */
const fromGroups = (...g: number[]): bigint => g.reduce((acc, x) => (acc << 16n) | BigInt(x), 0n);

/** Addresses with many zero groups and IPv4-mapped ones, where the formatting rules bite. */
const groupArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant(0) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 0xf }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
);
const addressArb = fc.oneof(
  fc.bigInt({ min: 0n, max: ADDRESS_MAX }),
  fc.array(groupArb, { minLength: 8, maxLength: 8 }).map((g) => fromGroups(...g)),
  fc.bigInt({ min: 0n, max: 0xffffffffn }).map((v4) => (0xffffn << 32n) | v4),
  fc.constantFrom(0n, 1n, ADDRESS_MAX, 0xffffn << 32n),
);

describe('parseAddress: RFC 4291 §2.2 text forms', () => {
  test.each([
    [
      'ABCD:EF01:2345:6789:ABCD:EF01:2345:6789',
      fromGroups(0xabcd, 0xef01, 0x2345, 0x6789, 0xabcd, 0xef01, 0x2345, 0x6789),
    ],
    ['2001:DB8:0:0:8:800:200C:417A', fromGroups(0x2001, 0xdb8, 0, 0, 8, 0x800, 0x200c, 0x417a)],
    ['2001:DB8::8:800:200C:417A', fromGroups(0x2001, 0xdb8, 0, 0, 8, 0x800, 0x200c, 0x417a)],
    ['FF01:0:0:0:0:0:0:101', fromGroups(0xff01, 0, 0, 0, 0, 0, 0, 0x101)],
    ['FF01::101', fromGroups(0xff01, 0, 0, 0, 0, 0, 0, 0x101)],
    ['0:0:0:0:0:0:0:1', 1n],
    ['::1', 1n],
    ['0:0:0:0:0:0:0:0', 0n],
    ['::', 0n],
    ['0:0:0:0:0:0:13.1.68.3', fromGroups(0, 0, 0, 0, 0, 0, 0x0d01, 0x4403)],
    ['::13.1.68.3', fromGroups(0, 0, 0, 0, 0, 0, 0x0d01, 0x4403)],
    ['0:0:0:0:0:FFFF:129.144.52.38', fromGroups(0, 0, 0, 0, 0, 0xffff, 0x8190, 0x3426)],
    ['::FFFF:129.144.52.38', fromGroups(0, 0, 0, 0, 0, 0xffff, 0x8190, 0x3426)],
  ])('%s', (text, expected) => {
    expect(parseAddress(text)).toBe(expected);
  });

  test.each([
    ['1:2:3:4:5:6:7::', fromGroups(1, 2, 3, 4, 5, 6, 7, 0)],
    ['::1:2:3:4:5:6:7', fromGroups(0, 1, 2, 3, 4, 5, 6, 7)],
    ['1::8', fromGroups(1, 0, 0, 0, 0, 0, 0, 8)],
    ['1:2:3:4:5:6::8', fromGroups(1, 2, 3, 4, 5, 6, 0, 8)],
    ['1::', fromGroups(1, 0, 0, 0, 0, 0, 0, 0)],
    ['0000:0000:0000:0000:0000:0000:0000:0000', 0n],
    ['ffff:FFFF:fFfF:ffff:ffff:ffff:ffff:ffff', ADDRESS_MAX],
    ['::ffff:192.0.2.1', fromGroups(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201)],
    ['64:ff9b::1.2.3.4', fromGroups(0x64, 0xff9b, 0, 0, 0, 0, 0x0102, 0x0304)],
    ['1:2:3:4:5:6:1.2.3.4', fromGroups(1, 2, 3, 4, 5, 6, 0x0102, 0x0304)],
    ['1:2:3:4:5::1.2.3.4', fromGroups(1, 2, 3, 4, 5, 0, 0x0102, 0x0304)],
    ['::0.0.0.0', 0n],
    ['::255.255.255.255', 0xffffffffn],
    ['ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255', ADDRESS_MAX], // 45 characters, the longest form
  ])('%s', (text, expected) => {
    expect(parseAddress(text)).toBe(expected);
  });
});

describe('RFC 5952', () => {
  // §2.1–2.3: many texts, one address each.
  test.each([
    [
      '2001:db8:aaaa:bbbb:cccc:dddd:eeee:1',
      [
        '2001:db8:aaaa:bbbb:cccc:dddd:eeee:0001',
        '2001:db8:aaaa:bbbb:cccc:dddd:eeee:001',
        '2001:db8:aaaa:bbbb:cccc:dddd:eeee:01',
        '2001:db8:aaaa:bbbb:cccc:dddd:eeee:1',
      ],
    ],
    ['2001:db8:aaaa:bbbb:cccc:dddd:0:1', ['2001:db8:aaaa:bbbb:cccc:dddd::1', '2001:db8:aaaa:bbbb:cccc:dddd:0:1']],
    ['2001:db8::1', ['2001:db8:0:0:0::1', '2001:db8:0:0::1', '2001:db8:0::1', '2001:db8::1']],
    ['2001:db8::aaaa:0:0:1', ['2001:db8::aaaa:0:0:1', '2001:db8:0:0:aaaa::1']],
    [
      '2001:db8:aaaa:bbbb:cccc:dddd:eeee:aaaa',
      [
        '2001:db8:aaaa:bbbb:cccc:dddd:eeee:aaaa',
        '2001:db8:aaaa:bbbb:cccc:dddd:eeee:AAAA',
        '2001:db8:aaaa:bbbb:cccc:dddd:eeee:AaAa',
      ],
    ],
  ])('§2 forms of %s', (canonical, forms) => {
    for (const form of forms) expect(formatAddress(parseAddress(form))).toBe(canonical);
  });

  // §4, verbatim: "2001:0db8::0001 ... must be represented as 2001:db8::1";
  // "2001:db8:0:0:0:0:2:1 must be shortened to 2001:db8::2:1"; "2001:db8::0:1 is not acceptable ... 2001:db8::1";
  // "2001:db8:0:1:1:1:1:1 is correct, but 2001:db8::1:1:1:1:1 is not correct";
  // "the sequence with three consecutive zero fields is shortened in 2001:0:0:1:0:0:0:1";
  // "(i.e., 2001:db8:0:0:1:0:0:1) ... 2001:db8::1:0:0:1 is correct representation".
  test.each([
    ['2001:0db8::0001', '2001:db8::1'],
    ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
    ['2001:db8::0:1', '2001:db8::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['2001:db8::1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:DB8::ABCD:EF', '2001:db8::abcd:ef'],
  ])('§4: %s → %s', (text, canonical) => {
    expect(formatAddress(parseAddress(text))).toBe(canonical);
  });

  test.each([
    ['0:0:0:0:0:ffff:c000:201', '::ffff:192.0.2.1'], // §5: IPv4-mapped in mixed notation
    ['::ffff:0:0', '::ffff:0.0.0.0'],
    ['::ffff:ffff:ffff', '::ffff:255.255.255.255'],
    ['::1:ffff:c000:201', '::1:ffff:c000:201'], // one bit off the mapped prefix: plain hex
    ['::c000:201', '::c000:201'], // deprecated IPv4-compatible: plain hex
    ['64:ff9b::c000:201', '64:ff9b::c000:201'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['1:0:1:0:1:0:1:0', '1:0:1:0:1:0:1:0'],
    ['0:1:0:1:0:1:0:1', '0:1:0:1:0:1:0:1'],
    ['1:0:0:1:0:0:1:1', '1::1:0:0:1:1'],
    ['1:0:0:1:0:0:0:1', '1:0:0:1::1'],
    ['0:0:1:0:0:0:1:0', '0:0:1::1:0'],
    ['1:2:3:4:5:6:7:0', '1:2:3:4:5:6:7:0'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ])('formatAddress(%s) = %s', (text, canonical) => {
    expect(formatAddress(parseAddress(text))).toBe(canonical);
  });
});

describe('parseAddress rejects bad input with a message that says why', () => {
  test.each([
    ['', 'is empty'],
    [' ::1', 'whitespace'],
    ['::1\n', 'whitespace'],
    ['2001:db8::\t1', 'whitespace'],
    ['fe80::1%eth0', 'zone ids are not accepted'],
    ['fe80::1%25eth0', 'zone ids are not accepted'],
    ['[2001:db8::1]', 'brackets'],
    ['[::1]:80', 'brackets'],
    ['2001:db8::/64', 'use a prefix only where one is expected'],
    ['2001:db8::1/128', 'prefix length'],
    ['2001:db8::12345', 'more than 4 hex digits'],
    ['00000::1', 'more than 4 hex digits'],
    ['1::2::3', "'::' more than once"],
    ['::1::', "'::' more than once"],
    ['1:::2', "':::'"],
    [':::', "':::'"],
    ['1:2:3:4:5:6:7:8:9', 'has 9 groups; expected 8'],
    ['1:2:3:4:5:6:7', 'has 7 groups; expected 8'],
    ['1:2:3:4:5:6:7:8::', "at most 7 fit, as '::' stands for at least one zero group"],
    ['1:2:3:4::5:6:7:8', "at most 7 fit, as '::' stands for at least one zero group"],
    ['1:2:3:4:5:6:7:1.2.3.4', 'an embedded IPv4 address counts as 2'],
    ['::1:2:3:4:5:6:1.2.3.4', "at most 7 fit"],
    ['1:2:3:4:5:1.2.3.4', 'has 7 groups (an embedded IPv4 address counts as 2)'],
    ['::ffff:1.2.3.256', 'octet "256" greater than 255'],
    ['::ffff:1.2.3.999', 'greater than 255'],
    ['::ffff:1.2.3.01', 'octet "01" with a leading zero'],
    ['::ffff:1.2.3.00', 'leading zero'],
    ['::ffff:1.2.3', 'with 3 octets; expected 4'],
    ['::ffff:1.2.3.4.5', 'with 5 octets; expected 4'],
    ['::ffff:1..3.4', 'empty octet'],
    ['::ffff:1.2.3.a', 'non-decimal octet "a"'],
    ['::1.2.3.4:ffff', 'not in the last 32 bits'],
    ['1.2.3.4::', 'not in the last 32 bits'],
    ['1.2.3.4::5', 'not in the last 32 bits'],
    ['1.2.3.4', "not an IPv6 address (it has no ':')"],
    ['abcd', "it has no ':'"],
    ['2001:db8::g', '"g", which is not a hex digit'],
    ['2001:db8::-1', '"-", which is not a hex digit'],
    ['2001:db8::1x', '"x", which is not a hex digit'],
    ['::\u00e9', 'not a hex digit'],
    ['::\u0661', 'not a hex digit'], // Arabic-Indic digit one
    ['0x2001::1', '"x", which is not a hex digit'],
    [':1:2:3:4:5:6:7', "starts with a single ':'"],
    [':1::2', "starts with a single ':'"],
    ['1:2:3:4:5:6:7:', "ends with a single ':'"],
    ['1::2:', "ends with a single ':'"],
    [':', "starts with a single ':'"],
    ['2001:0db8:0000:0000:0000:0000:0000:0000:000001', 'longer than 45 characters'],
    ['a'.repeat(46), 'longer than 45 characters'],
  ])('%j: %s', (text, fragment) => {
    let error: unknown;
    try {
      parseAddress(text);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(AddressError);
    expect(error).toBeInstanceOf(Error);
    const message = (error as Error).message;
    expect(message).toContain(fragment);
    expect(message).toContain(JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text));
  });

  test('AddressError has its own name', () => {
    expect(() => parseAddress('nope')).toThrow(expect.objectContaining({ name: 'AddressError' }));
  });

  test('non-string input is an AddressError, not a crash', () => {
    expect(() => parseAddress(42 as unknown as string)).toThrow(AddressError);
    expect(() => parseAddress(undefined as unknown as string)).toThrow(/got undefined/);
  });

  test('hostile input is rejected fast and quoted briefly', () => {
    const hostile = [
      ':'.repeat(1_000_000),
      '1:'.repeat(500_000),
      '1'.repeat(1_000_000),
      `${'1.'.repeat(200_000)}1`,
      `${'::'.repeat(100_000)}x`,
      '0'.repeat(44) + '\u0000',
    ];
    const start = performance.now();
    for (const text of hostile) {
      let message = '';
      try {
        parseAddress(text);
      } catch (e) {
        expect(e).toBeInstanceOf(AddressError);
        message = (e as Error).message;
      }
      expect(message).not.toBe('');
      expect(message.length).toBeLessThan(250);
    }
    expect(performance.now() - start).toBeLessThan(500);
  });
});

describe('formatAddress', () => {
  test.each([-1n, 1n << 128n, -(1n << 200n)])('%p is a RangeError', (a) => {
    expect(() => formatAddress(a)).toThrow(RangeError);
  });
  test('a number is a RangeError, not a wrong answer', () => {
    expect(() => formatAddress(1 as unknown as bigint)).toThrow(RangeError);
  });
  test('constants', () => {
    expect(ADDRESS_BITS).toBe(128);
    expect(ADDRESS_MAX).toBe(2n ** 128n - 1n);
    expect(formatAddress(ADDRESS_MAX)).toBe('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
  });
});

describe('bytes', () => {
  test('network order', () => {
    const a = parseAddress('2001:db8::102:304');
    expect([...addressToBytes(a)]).toEqual([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    expect(bytesToAddress(Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]))).toBe(a);
    expect([...addressToBytes(ADDRESS_MAX)]).toEqual(new Array(16).fill(255));
    expect(bytesToAddress(new Uint8Array(16).fill(255))).toBe(ADDRESS_MAX);
  });

  test('writes at an offset into a caller buffer and leaves the rest alone', () => {
    const buf = new Uint8Array(20).fill(0xaa);
    const ret = addressToBytes(1n, buf, 2);
    expect(ret).toBe(buf);
    expect([...buf]).toEqual([0xaa, 0xaa, ...new Array(15).fill(0), 1, 0xaa, 0xaa]);
    expect(bytesToAddress(buf, 2)).toBe(1n);
  });

  test('refuses to run off the buffer or take bad offsets', () => {
    expect(() => addressToBytes(1n, new Uint8Array(15))).toThrow(RangeError);
    expect(() => addressToBytes(1n, new Uint8Array(20), 5)).toThrow(RangeError);
    expect(() => addressToBytes(1n, new Uint8Array(20), -1)).toThrow(RangeError);
    expect(() => addressToBytes(1n, new Uint8Array(20), 1.5)).toThrow(RangeError);
    expect(() => addressToBytes(-1n)).toThrow(RangeError);
    expect(() => addressToBytes(1n << 128n)).toThrow(RangeError);
    expect(() => bytesToAddress(new Uint8Array(15))).toThrow(RangeError);
    expect(() => bytesToAddress(new Uint8Array(16), 1)).toThrow(RangeError);
    expect(() => bytesToAddress(new Uint8Array(16), Number.NaN)).toThrow(RangeError);
  });

  test('property: formatAddressBytes is formatAddress of the bytes, at any offset, and Node agrees it is IPv6', () => {
    fc.assert(
      fc.property(addressArb, fc.integer({ min: 0, max: 8 }), (a, offset) => {
        const buf = new Uint8Array(24).fill(0x5a);
        addressToBytes(a, buf, offset);
        const text = formatAddressBytes(buf, offset);
        expect(text).toBe(formatAddress(a));
        expect(isIPv6(text)).toBe(true);
      }),
      { numRuns: 2000 },
    );
    expect(formatAddressBytes(new Uint8Array(16))).toBe('::');
    expect(formatAddressBytes(addressToBytes(parseAddress('::ffff:192.0.2.1')))).toBe('::ffff:192.0.2.1');
    expect(formatAddressBytes(addressToBytes(parseAddress('2001:db8:0:1:1:1:1:1')))).toBe('2001:db8:0:1:1:1:1:1');
  });

  test('formatAddressBytes refuses to read past the buffer', () => {
    expect(() => formatAddressBytes(new Uint8Array(15))).toThrow('no 16-byte address at offset 0 of 15 bytes');
    expect(() => formatAddressBytes(new Uint8Array(16), 1)).toThrow(RangeError);
    expect(() => formatAddressBytes(new Uint8Array(16), -1)).toThrow(RangeError);
    expect(() => formatAddressBytes(new Uint8Array(32), Number.NaN)).toThrow(RangeError);
  });

  test('property: bytes round-trip', () => {
    fc.assert(
      fc.property(addressArb, fc.integer({ min: 0, max: 8 }), (a, offset) => {
        const buf = new Uint8Array(24);
        addressToBytes(a, buf, offset);
        expect(bytesToAddress(buf, offset)).toBe(a);
        // Independent check: the hex of the bytes is the address's 32 hex digits.
        const hex = [...buf.subarray(offset, offset + 16)].map((b) => b.toString(16).padStart(2, '0')).join('');
        expect(BigInt(`0x${hex}`)).toBe(a);
      }),
      { numRuns: 300 },
    );
  });
});

/** Renders `a` in a random valid non-canonical form, using `g` for every choice. */
function uncanonical(a: bigint, g: fc.GeneratorValue): string {
  const groups = Array.from({ length: 8 }, (_, i) => Number((a >> BigInt(112 - 16 * i)) & 0xffffn));
  const useV4 = g(fc.boolean);
  const hexCount = useV4 ? 6 : 8;
  const hexGroup = (v: number): string => {
    const digits = v.toString(16).padStart(g(fc.integer, { min: v.toString(16).length, max: 4 }), '0');
    return [...digits].map((c) => (g(fc.boolean) ? c.toUpperCase() : c)).join('');
  };
  const parts = groups.slice(0, hexCount).map(hexGroup);
  const tail = useV4
    ? [[groups[6]! >> 8, groups[6]! & 255, groups[7]! >> 8, groups[7]! & 255].join('.')]
    : [];
  // Any run of zero groups (not only the longest, and of length one too) may be compressed.
  const runs: Array<[number, number]> = [];
  for (let i = 0; i < hexCount; i++) {
    for (let j = i; j < hexCount && groups[j] === 0; j++) runs.push([i, j + 1]);
  }
  if (runs.length > 0 && g(fc.boolean)) {
    const [from, to] = runs[g(fc.integer, { min: 0, max: runs.length - 1 })]!;
    const left = parts.slice(0, from).join(':');
    const right = [...parts.slice(to), ...tail].join(':');
    return `${left}::${right}`;
  }
  return [...parts, ...tail].join(':');
}

describe('properties', () => {
  test('parse∘format is the identity on addresses', () => {
    fc.assert(
      fc.property(addressArb, (a) => {
        expect(parseAddress(formatAddress(a))).toBe(a);
      }),
      { numRuns: 500 },
    );
  });

  test('format∘parse is the identity on canonical text', () => {
    fc.assert(
      fc.property(addressArb, (a) => {
        const text = formatAddress(a);
        expect(formatAddress(parseAddress(text))).toBe(text);
        // Canonical text obeys RFC 5952 on its face.
        expect(text).toBe(text.toLowerCase());
        expect(text).not.toMatch(/(^|:)0[0-9a-f]/);
        expect(text.split('::').length).toBeLessThanOrEqual(2);
      }),
      { numRuns: 500 },
    );
  });

  test('every un-canonicalised rendering parses to the same address', () => {
    fc.assert(
      fc.property(addressArb, fc.gen(), (a, g) => {
        const text = uncanonical(a, g);
        expect(text.length).toBeLessThanOrEqual(45);
        expect(parseAddress(text)).toBe(a);
      }),
      { numRuns: 1000 },
    );
  });

  test('canonical text is never longer than any other rendering that RFC 5952 would allow', () => {
    fc.assert(
      fc.property(addressArb, fc.gen(), (a, g) => {
        const canonical = formatAddress(a);
        const other = uncanonical(a, g);
        // '::' for a single zero group is valid RFC 4291 text one character shorter than canonical, which
        // RFC 5952 §4.2.2 forbids; such renderings are not comparable.
        const explicitGroups = other.split(':').filter(Boolean).length;
        const singleGroupCompressed = other.includes('::') && explicitGroups === 7;
        // Mixed notation for mapped addresses can be longer than hex; RFC 5952 §5 prefers it anyway.
        if (!canonical.includes('.') && !other.includes('.') && !singleGroupCompressed) {
          expect(canonical.length).toBeLessThanOrEqual(other.length);
        }
      }),
      { numRuns: 500 },
    );
  });

  // Independent oracles: Node's own IPv6 grammar decides validity, and the WHATWG URL parser (which
  // serialises hosts the RFC 5952 way, minus mixed notation) decides the value.
  // A valid rendering with up to three characters inserted, deleted or replaced: about half stay valid.
  const editArb = fc.tuple(fc.nat(), fc.constantFrom(...'0123456789abcdefABCDEF:.::..'), fc.constantFrom(0, 1, 2));
  const mutated = fc
    .tuple(addressArb, fc.gen(), fc.array(editArb, { maxLength: 3 }))
    .map(([a, g, edits]) => {
      let text = uncanonical(a, g);
      for (const [at, c, op] of edits) {
        const i = at % (text.length + 1);
        const [keep, drop] = [text.slice(0, i), text.slice(i + (op === 0 ? 0 : 1))];
        text = keep + (op === 1 ? '' : c) + drop;
      }
      return text;
    });

  test('accepts exactly what node:net accepts, with the value the URL parser finds', () => {
    fc.assert(
      fc.property(mutated, (text) => {
        let parsed: bigint | undefined;
        try {
          parsed = parseAddress(text);
        } catch (e) {
          expect(e).toBeInstanceOf(AddressError);
        }
        expect(parsed !== undefined).toBe(text !== '' && isIPv6(text));
        if (parsed !== undefined) {
          const host = new URL(`http://[${text}]/`).hostname.slice(1, -1);
          expect(parseAddress(host)).toBe(parsed);
          if (!formatAddress(parsed).includes('.')) expect(formatAddress(parsed)).toBe(host);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

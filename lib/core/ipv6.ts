// IPv6 addresses as bigints in [0, 2^128): parsing (RFC 4291 §2.2), canonical text (RFC 5952) and
// network-order bytes. Pure; no I/O. The parser is a hand-written scanner over at most 45 characters, so
// hostile input costs a bounded amount of work (no regex backtracking).

export const ADDRESS_BITS = 128;
export const ADDRESS_MAX = (1n << 128n) - 1n;

/** The longest valid text form: six 4-digit groups and a dotted quad (`ffff:…:ffff:255.255.255.255`). */
const MAX_TEXT_LENGTH = 45;
const MASK32 = 0xffffffffn;

/** Bad address or prefix text. The message quotes the input and says what is wrong. */
export class AddressError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AddressError';
  }
}

/** The input as it appears in error messages: JSON-quoted (so whitespace shows), long input cut short. */
export function quoteInput(text: string): string {
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text);
}

/** Rejects the text forms that other tools accept but widescan does not, with a message saying why. */
export function rejectForeignSyntax(text: string, what: 'address' | 'prefix'): void {
  const q = () => quoteInput(text); // only on the error path: quoting costs more than parsing
  if (text.length === 0) {
    throw new AddressError(
      `${q()} is empty; expected an IPv6 ${what} such as ${what === 'address' ? '2001:db8::1' : '2001:db8::/32'}`,
    );
  }
  if (/\s/.test(text)) throw new AddressError(`${q()} contains whitespace; remove it`);
  const zone = text.indexOf('%');
  if (zone >= 0) {
    const id = JSON.stringify(text.slice(zone, zone + 20));
    throw new AddressError(`${q()} has a zone id ${id}; zone ids are not accepted`);
  }
  if (text.includes('[') || text.includes(']')) {
    throw new AddressError(`${q()} has brackets; write the ${what} without [ ]`);
  }
}

/**
 * Any RFC 4291 §2.2 text form: 1–4 hex digits per group in any case, one optional '::', and an optional
 * dotted quad as the last 32 bits. Throws AddressError saying what is wrong.
 */
export function parseAddress(text: string): bigint {
  if (typeof text !== 'string') {
    throw new AddressError(`expected an IPv6 address as a string, got ${typeof text}`);
  }
  rejectForeignSyntax(text, 'address');
  const q = () => quoteInput(text); // only on the error path: quoting costs more than parsing
  if (text.includes('/')) {
    throw new AddressError(
      `${q()} has a prefix length; a single address is expected here (use a prefix only where one is expected)`,
    );
  }
  if (text.length > MAX_TEXT_LENGTH) {
    throw new AddressError(`${q()} is longer than ${MAX_TEXT_LENGTH} characters, the longest IPv6 address text`);
  }
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (hexValue(c) < 0 && c !== 0x3a /* : */ && c !== 0x2e /* . */) {
      throw new AddressError(`${q()} contains ${JSON.stringify(text[i])}, which is not a hex digit, ':' or '.'`);
    }
  }
  if (!text.includes(':')) throw new AddressError(`${q()} is not an IPv6 address (it has no ':')`);
  if (text.includes(':::')) throw new AddressError(`${q()} contains ':::'; at most two colons may stand together`);

  const gap = text.indexOf('::');
  if (gap >= 0 && text.indexOf('::', gap + 2) >= 0) {
    throw new AddressError(`${q()} contains '::' more than once; it may stand for only one run of zero groups`);
  }
  const headText = gap >= 0 ? text.slice(0, gap) : text;
  const tailText = gap >= 0 ? text.slice(gap + 2) : '';
  const head = headText === '' ? [] : headText.split(':');
  const tail = tailText === '' ? [] : tailText.split(':');

  const groups: number[] = [];
  // Only a part at the very start or end can be empty here: an empty part elsewhere would have been
  // '::' (split off above) or ':::' (rejected above).
  const parsePart = (part: string, isFirst: boolean, isLast: boolean): void => {
    if (part === '') throw new AddressError(`${q()} ${isFirst ? 'starts' : 'ends'} with a single ':'`);
    if (part.includes('.')) {
      if (!isLast) throw new AddressError(`${q()} has an embedded IPv4 address that is not in the last 32 bits`);
      const v4 = parseDottedQuad(part, q);
      groups.push(v4 >>> 16, v4 & 0xffff);
      return;
    }
    if (part.length > 4) throw new AddressError(`${q()} has group "${part}" with more than 4 hex digits`);
    let value = 0;
    for (let i = 0; i < part.length; i++) value = (value << 4) | hexValue(part.charCodeAt(i));
    groups.push(value);
  };
  head.forEach((p, i) => parsePart(p, i === 0, gap < 0 && i === head.length - 1));
  const headGroups = groups.length;
  tail.forEach((p, i) => parsePart(p, false, i === tail.length - 1));

  // An embedded IPv4 address is two groups; say so, or "has 9 groups" would puzzle someone counting 8.
  const counted = text.includes('.') ? ' (an embedded IPv4 address counts as 2)' : '';
  if (gap < 0) {
    if (groups.length < 8) {
      throw new AddressError(
        `${q()} has ${groups.length} groups${counted}; expected 8 (use '::' to stand for a run of zero groups)`,
      );
    }
    if (groups.length > 8) throw new AddressError(`${q()} has ${groups.length} groups${counted}; expected 8`);
  } else if (groups.length > 7) {
    throw new AddressError(
      `${q()} has ${groups.length} groups besides '::'${counted}; ` +
        `at most 7 fit, as '::' stands for at least one zero group`,
    );
  } else {
    const zeros = new Array<number>(8 - groups.length).fill(0);
    groups.splice(headGroups, 0, ...zeros);
  }
  return wordsToAddress(
    ((groups[0]! << 16) | groups[1]!) >>> 0,
    ((groups[2]! << 16) | groups[3]!) >>> 0,
    ((groups[4]! << 16) | groups[5]!) >>> 0,
    ((groups[6]! << 16) | groups[7]!) >>> 0,
  );
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/** Strict dotted quad: four decimal octets 0..255, no leading zeros (which some parsers read as octal). */
function parseDottedQuad(part: string, q: () => string): number {
  const octets = part.split('.');
  if (octets.length !== 4) {
    throw new AddressError(`${q()} has embedded IPv4 "${part}" with ${octets.length} octets; expected 4`);
  }
  let value = 0;
  for (const octet of octets) {
    if (octet === '') throw new AddressError(`${q()} has embedded IPv4 "${part}" with an empty octet`);
    let n = 0;
    for (let i = 0; i < octet.length; i++) {
      const c = octet.charCodeAt(i);
      if (c < 0x30 || c > 0x39) {
        throw new AddressError(`${q()} has embedded IPv4 "${part}" with non-decimal octet "${octet}"`);
      }
      n = n * 10 + (c - 0x30);
      // Stop early so a long digit string cannot grow n; the length cap bounds this anyway.
      if (n > 255) throw new AddressError(`${q()} has IPv4 octet "${octet}" greater than 255`);
    }
    if (octet.length > 1 && octet[0] === '0') {
      throw new AddressError(`${q()} has IPv4 octet "${octet}" with a leading zero`);
    }
    value = value * 256 + n;
  }
  return value;
}

function wordsToAddress(w0: number, w1: number, w2: number, w3: number): bigint {
  return (BigInt(w0) << 96n) | (BigInt(w1) << 64n) | (BigInt(w2) << 32n) | BigInt(w3);
}

function checkAddress(a: bigint): void {
  if (typeof a !== 'bigint' || a < 0n || a > ADDRESS_MAX) {
    throw new RangeError(`address ${String(a)} is not a bigint in [0, 2^128)`);
  }
}

/** RFC 5952 canonical text; IPv4-mapped addresses get a dotted quad (RFC 5952 §5). */
export function formatAddress(a: bigint): string {
  checkAddress(a);
  const w = [Number(a >> 96n), Number((a >> 64n) & MASK32), Number((a >> 32n) & MASK32), Number(a & MASK32)];
  for (let i = 0; i < 4; i++) {
    groups[2 * i] = w[i]! >>> 16;
    groups[2 * i + 1] = w[i]! & 0xffff;
  }
  return formatGroups();
}

/**
 * formatAddress of the 16 bytes at `b[offset]`, without a bigint on the way: the listener formats the source
 * of every new reply (a flood from an aliased prefix is ~10^5 a second).
 */
export function formatAddressBytes(b: Uint8Array, offset = 0): string {
  if (!(offset >= 0 && offset + 16 <= b.length)) throw new RangeError(`no 16-byte address at offset ${offset} of ${b.length} bytes`);
  for (let i = 0; i < 8; i++) groups[i] = (b[offset + 2 * i]! << 8) | b[offset + 2 * i + 1]!;
  return formatGroups();
}

/** The eight 16-bit groups formatGroups reads (formatting is synchronous, so one scratch array serves). */
const groups = new Uint16Array(8);

function formatGroups(): string {
  const g = groups;
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${g[6]! >>> 8}.${g[6]! & 255}.${g[7]! >>> 8}.${g[7]! & 255}`;
  }
  // Longest run of zero groups, leftmost on ties (strict > keeps the first); a run of one stays "0".
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  let text = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      text += '::';
      i += bestLen - 1;
      continue;
    }
    if (text !== '' && !text.endsWith(':')) text += ':';
    text += g[i]!.toString(16);
  }
  return text;
}

function checkSpan(length: number, offset: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + 16 > length) {
    throw new RangeError(`offset ${offset} leaves no room for 16 address bytes in a buffer of ${length}`);
  }
}

/** The 16 bytes of `a` in network order, written to `out` at `offset`. */
export function addressToBytes(a: bigint, out: Uint8Array = new Uint8Array(16), offset = 0): Uint8Array {
  checkAddress(a);
  checkSpan(out.length, offset);
  for (let i = 0; i < 4; i++) {
    const word = Number((a >> BigInt(96 - 32 * i)) & MASK32);
    const o = offset + 4 * i;
    out[o] = word >>> 24;
    out[o + 1] = (word >>> 16) & 255;
    out[o + 2] = (word >>> 8) & 255;
    out[o + 3] = word & 255;
  }
  return out;
}

/** The address in the 16 network-order bytes of `b` at `offset`. */
export function bytesToAddress(b: Uint8Array, offset = 0): bigint {
  checkSpan(b.length, offset);
  const word = (o: number): number =>
    ((b[offset + o]! << 24) | (b[offset + o + 1]! << 16) | (b[offset + o + 2]! << 8) | b[offset + o + 3]!) >>> 0;
  return wordsToAddress(word(0), word(4), word(8), word(12));
}

const DOTTED_QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * Canonical text of an IPv6 address (RFC 5952) or a strict dotted quad (no leading zeros, no shorthand);
 * an IPv4-mapped IPv6 address becomes its dotted quad, so one IPv4 host has one spelling.
 */
/** For peers, which may be IPv4 P2P nodes: the bootstrap stores, and its clients compare, this form. */
export function canonicalAddress(text: string): string {
  if (DOTTED_QUAD.test(text)) return text;
  if (/^[\d.]+$/.test(text)) {
    throw new Error(`${JSON.stringify(text.slice(0, 60))} is not an IPv4 address; expected four decimal octets 0-255 without leading zeros, e.g. 192.0.2.1`);
  }
  const canonical = formatAddress(parseAddress(text));
  return canonical.startsWith('::ffff:') && canonical.includes('.') ? canonical.slice('::ffff:'.length) : canonical;
}

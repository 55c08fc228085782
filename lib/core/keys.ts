/*
 * Key derivation. All keys come from HKDF-SHA-256 (RFC 5869) with salt "widescan" and an info string that
 * names the key's purpose and version, so no two purposes can ever share key material. Derivation runs once
 * per job on the host, never in the packet hot path.
 *
 *   network id      = HKDF(networkKey, info "widescan/v1 network-id", 2 bytes), big-endian
 *   MAC key         = HKDF(networkKey, info "widescan/v1 mac" ‖ jobTag as 4 bytes big-endian, 16 bytes)
 *   permutation key = HKDF(UTF-8 seed, info "widescan/v1 permutation " ‖ UTF-8 label, 16 bytes)
 *   job tag         = SHA-256(UTF-8 uid), first 4 bytes big-endian
 *
 * The MAC key depends only on the network key and the job tag, so any listener of the network can verify a
 * reply to any job (and a peer's probe) without knowing the job.
 */
import { createHash, hkdfSync } from 'node:crypto';

const SALT = 'widescan';
const MAX_SECRET_BYTES = 4096;
/** Node's HKDF refuses a longer info string. */
const MAX_INFO_BYTES = 1024;
const PERMUTATION_INFO = 'widescan/v1 permutation ';
const utf8 = new TextEncoder();

function hkdf(ikm: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', ikm, SALT, info, length));
}

const concat = (a: Uint8Array, b: Uint8Array) => {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
};

function checkNetworkKey(networkKey: Uint8Array): void {
  if (!(networkKey instanceof Uint8Array) || networkKey.length === 0 || networkKey.length > MAX_SECRET_BYTES) {
    throw new RangeError('network key must be 1..4096 bytes; build it with networkKeyBytes(secret)');
  }
}

function checkJobTag(jobTag: number): void {
  if (!Number.isInteger(jobTag) || jobTag < 0 || jobTag > 0xffffffff) {
    throw new RangeError(`job tag must be an unsigned 32-bit integer, got ${String(jobTag)}; use jobTagOf(uid)`);
  }
}

/** The network key's bytes: the secret itself (UTF-8 for a string), copied. */
export function networkKeyBytes(secret: string | Uint8Array): Uint8Array {
  const bytes = typeof secret === 'string' ? utf8.encode(secret) : secret instanceof Uint8Array ? Uint8Array.from(secret) : null;
  if (bytes === null) throw new TypeError('network key secret must be a string or bytes');
  if (bytes.length === 0) {
    throw new RangeError('network key secret is empty; put a random value in the Secret (e.g. `openssl rand -hex 32`)');
  }
  if (bytes.length > MAX_SECRET_BYTES) {
    throw new RangeError(`network key secret is ${bytes.length} bytes, more than ${MAX_SECRET_BYTES}; use a shorter random value`);
  }
  return bytes;
}

/** The 16-bit network id carried in every probe (payload bytes 6–7). */
export function networkIdOf(networkKey: Uint8Array): number {
  checkNetworkKey(networkKey);
  const b = hkdf(networkKey, utf8.encode('widescan/v1 network-id'), 2);
  return (b[0]! << 8) | b[1]!;
}

/** The 32-bit job tag of a job UID (Kubernetes metadata.uid, or the id `widescan run` makes up). */
export function jobTagOf(uid: string): number {
  if (typeof uid !== 'string' || uid.length === 0) throw new RangeError('job uid must be a non-empty string');
  return createHash('sha256').update(uid, 'utf8').digest().readUInt32BE(0);
}

/** The 16-byte SipHash key of the probe MAC of one job. */
export function macKeyFor(networkKey: Uint8Array, jobTag: number): Uint8Array {
  checkNetworkKey(networkKey);
  checkJobTag(jobTag);
  const tag = new Uint8Array(4);
  new DataView(tag.buffer).setUint32(0, jobTag, false);
  return hkdf(networkKey, concat(utf8.encode('widescan/v1 mac'), tag), 16);
}

/**
 * The 16-byte key of a keyed permutation; `label` tells apart the job's global order from per-target orders
 * derived from the same seed.
 */
export function permutationKeyFor(seed: string, label: string): Uint8Array {
  if (typeof seed !== 'string' || typeof label !== 'string') throw new TypeError('permutation seed and label must be strings');
  const ikm = utf8.encode(seed);
  if (ikm.length === 0 || ikm.length > MAX_SECRET_BYTES) {
    throw new RangeError(`permutation seed must be 1..${MAX_SECRET_BYTES} bytes, got ${ikm.length}; the job uid is a good seed`);
  }
  const info = utf8.encode(PERMUTATION_INFO + label);
  if (info.length > MAX_INFO_BYTES) throw new RangeError(`permutation label is too long (${info.length - PERMUTATION_INFO.length} bytes); keep it short`);
  return hkdf(ikm, info, 16);
}

export const jobTagHex = (tag: number) => tag.toString(16).padStart(8, '0');

// Signed peer lists (the bootstrap's authority mode). The authority signs the exact bytes of a response
// body with Ed25519; the signature travels in one header so the body stays plain JSON:
//
//   X-Widescan-Signature: <keyId>:<base64url signature>[, <keyId>:<base64url signature>]
//
// keyId = the first 16 hex digits of SHA-256 over the raw 32-byte public key. During a key rotation the
// body is signed by the current and the previous key, so clients pinned to either accept it. The body
// carries its own `issuedAt`, so a client can also refuse stale (replayed) lists.

import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-widescan-signature';

export interface PublicKeyEntry {
  id: string;
  key: KeyObject;
}

/** The raw 32-byte Ed25519 public key of a public or private key. */
export function rawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  if (pub.asymmetricKeyType !== 'ed25519') throw new Error(`expected an Ed25519 key, got ${pub.asymmetricKeyType ?? pub.type}`);
  return Buffer.from(pub.export({ format: 'jwk' }).x!, 'base64url');
}

export function keyIdOf(key: KeyObject): string {
  return createHash('sha256').update(rawPublicKey(key)).digest('hex').slice(0, 16);
}

/** A public key from base64/base64url raw bytes (as `GET /api/v1/authority` serves it) or SPKI PEM. */
export function parsePublicKey(text: string): PublicKeyEntry {
  const trimmed = text.trim();
  let key: KeyObject;
  try {
    key = trimmed.startsWith('-----BEGIN')
      ? createPublicKey(trimmed)
      : createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(trimmed, 'base64').toString('base64url') }, format: 'jwk' });
  } catch (err) {
    throw new Error(`not an Ed25519 public key (raw base64 or PEM expected): ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519' || rawPublicKey(key).length !== 32) throw new Error('not an Ed25519 public key');
  return { id: keyIdOf(key), key };
}

/** An Ed25519 private key from PKCS#8 PEM (what `openssl genpkey -algorithm ed25519` writes). */
export function parsePrivateKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new Error(`not a PEM private key: ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`authority keys must be Ed25519, got ${key.asymmetricKeyType}`);
  return key;
}

/** The header value signing `body` with each private key. */
export function signBody(body: Uint8Array, privateKeys: readonly KeyObject[]): string {
  return privateKeys.map((k) => `${keyIdOf(k)}:${sign(null, body, k).toString('base64url')}`).join(', ');
}

export type Verdict = { ok: true; keyId: string } | { ok: false; reason: string };

/** Accepts `body` when one signature of the header verifies under one of the trusted keys. */
export function verifyBody(body: Uint8Array, header: string | null | undefined, trusted: readonly PublicKeyEntry[]): Verdict {
  if (!header) return { ok: false, reason: 'the response is not signed' };
  if (header.length > 4096) return { ok: false, reason: 'the signature header is too long' };
  const byId = new Map(trusted.map((t) => [t.id, t.key]));
  let known = false;
  for (const part of header.split(',')) {
    const m = /^\s*([0-9a-f]{16}):([A-Za-z0-9_-]{86})\s*$/.exec(part);
    if (!m) return { ok: false, reason: 'malformed signature header' };
    const key = byId.get(m[1]!);
    if (!key) continue;
    known = true;
    if (verify(null, body, key, Buffer.from(m[2]!, 'base64url'))) return { ok: true, keyId: m[1]! };
  }
  return { ok: false, reason: known ? 'the signature does not match the body (tampered?)' : 'signed by none of the trusted keys' };
}

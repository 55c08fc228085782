// The bootstrap's trust mode. Trustless: peer lists go out unsigned and clients judge peers themselves.
// Authority: the bootstrap signs every peer list it serves with its Ed25519 key (lib/core/signing.ts); during
// a key rotation it signs with the previous key too, until that key's `retiresAt`, so clients pinned to
// either key keep accepting lists while they move to the new one.

import type { KeyObject } from 'node:crypto';
import { keyIdOf, parsePrivateKey, rawPublicKey, signBody } from '../lib/core/signing.js';

export const TRUST_MODES = ['trustless', 'authority'] as const;
export type TrustMode = (typeof TRUST_MODES)[number];

export interface AuthorityConfig {
  /** Default trustless. */
  mode?: TrustMode;
  /** The current signing key, PEM PKCS#8 Ed25519; required in authority mode. */
  key?: string;
  /** The key being rotated out, signing alongside the current one until `previousRetiresAt`. */
  previousKey?: string;
  /** ISO-8601 time (or a Date) after which the previous key no longer signs nor is published. */
  previousRetiresAt?: string | Date;
}

/** One entry of `GET /api/v1/authority`. */
export interface PublishedKey {
  id: string;
  /** Base64 of the raw 32-byte Ed25519 public key. */
  publicKey: string;
  current: boolean;
  retiresAt?: string;
}

export interface AuthorityInfo {
  mode: TrustMode;
  keys: PublishedKey[];
}

interface SigningKey {
  key: KeyObject;
  published: PublishedKey;
  /** Signs until then (ms since the epoch); Infinity for the current key. */
  retiresAtMs: number;
}

export class Authority {
  private constructor(
    readonly mode: TrustMode,
    private readonly keys: readonly SigningKey[],
  ) {}

  static trustless(): Authority {
    return new Authority('trustless', []);
  }

  /** Validates the configuration; throws an Error naming the bad setting and its fix. */
  static create(config: AuthorityConfig): Authority {
    const mode = config.mode ?? 'trustless';
    if (!(TRUST_MODES as readonly string[]).includes(mode)) {
      throw new Error(`trust mode ${JSON.stringify(mode)} is not one of ${TRUST_MODES.join(', ')}`);
    }
    if (mode === 'trustless') {
      // A key that is configured but unused would let an operator believe lists are signed.
      if (config.key !== undefined || config.previousKey !== undefined || config.previousRetiresAt !== undefined) {
        throw new Error('authority keys are configured but the trust mode is trustless; set the trust mode to authority or remove the keys');
      }
      return Authority.trustless();
    }
    if (config.key === undefined) {
      throw new Error('authority mode needs a signing key: give an Ed25519 PKCS#8 PEM key (WIDESCAN_AUTHORITY_KEY_FILE; `openssl genpkey -algorithm ed25519`)');
    }
    const current = loadKey(config.key, 'authority key');
    const keys: SigningKey[] = [{ key: current, published: publish(current, true), retiresAtMs: Infinity }];
    if (config.previousKey !== undefined) {
      if (config.previousRetiresAt === undefined) {
        throw new Error('a previous authority key needs its retirement time (WIDESCAN_AUTHORITY_PREVIOUS_RETIRES_AT, ISO-8601)');
      }
      const retiresAtMs = parseRetiresAt(config.previousRetiresAt);
      const previous = loadKey(config.previousKey, 'previous authority key');
      if (keyIdOf(previous) === keyIdOf(current)) {
        throw new Error('the previous authority key is the current key; give the key being rotated out');
      }
      keys.push({ key: previous, published: { ...publish(previous, false), retiresAt: new Date(retiresAtMs).toISOString() }, retiresAtMs });
    } else if (config.previousRetiresAt !== undefined) {
      throw new Error('a retirement time is set but no previous authority key (WIDESCAN_AUTHORITY_PREVIOUS_KEY_FILE)');
    }
    return new Authority('authority', keys);
  }

  private active(nowMs: number): SigningKey[] {
    return this.keys.filter((k) => nowMs < k.retiresAtMs);
  }

  /** What `GET /api/v1/authority` serves: the keys that sign now. */
  info(nowMs = Date.now()): AuthorityInfo {
    return { mode: this.mode, keys: this.active(nowMs).map((k) => ({ ...k.published })) };
  }

  /** The `X-Widescan-Signature` value for these exact body bytes, or undefined in trustless mode. */
  sign(body: Uint8Array, nowMs = Date.now()): string | undefined {
    if (this.mode === 'trustless') return undefined;
    return signBody(body, this.active(nowMs).map((k) => k.key));
  }
}

function loadKey(pem: string, what: string): KeyObject {
  try {
    return parsePrivateKey(pem);
  } catch (err) {
    throw new Error(`${what}: ${(err as Error).message}; give an Ed25519 PKCS#8 PEM key`);
  }
}

function publish(key: KeyObject, current: boolean): PublishedKey {
  return { id: keyIdOf(key), publicKey: rawPublicKey(key).toString('base64'), current };
}

function parseRetiresAt(value: string | Date): number {
  const ms = value instanceof Date ? value.getTime() : /^\d{4}-\d{2}-\d{2}T[^\s]*(Z|[+-]\d{2}:\d{2})$/.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(ms)) {
    throw new Error(`previous key retirement time ${JSON.stringify(String(value).slice(0, 60))} is not an ISO-8601 time with a zone, e.g. 2025-01-31T00:00:00Z`);
  }
  return ms;
}

// Admin actions on the shared peer set: blocking and unblocking addresses, with an audit trail. All state is
// in Redis, so every bootstrap replica sees a block at once and it survives restarts.
//
// Layout: the set `peers:blocked` (what the peer store filters on), the hash `peers:blocked:info`
// (address → JSON { reason, at }) and the list `audit` of JSON entries, newest first, capped.
// Blocking keeps the peer's record; the store never serves nor updates a blocked address, and unblocking
// makes the old record visible again as it was.

import type { Redis } from 'ioredis';
import { keys } from '../lib/keys.js';

export const AUDIT_CAP = 10_000;
export const MAX_REASON_LENGTH = 200;

export interface BlockedEntry {
  address: string;
  /** '' when none was given. */
  reason: string;
  /** Null for an address blocked without this API (added to the set directly). */
  at: string | null;
}

export interface AuditEntry {
  at: string;
  action: 'block' | 'unblock';
  address: string;
  reason?: string;
  actor: 'admin';
  /** The admin's address as the server saw it. */
  ip: string;
}

export interface BlockRequest {
  /** Canonical address text (IPv6 or dotted quad). */
  address: string;
  blocked: boolean;
  reason?: string;
  ip: string;
}

function parseJson<T>(text: string | null | undefined): T | undefined {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined; // written by hand into Redis; show what can be shown
  }
}

export class AdminStore {
  constructor(private readonly redis: Redis) {}

  /** Blocks or unblocks an address and records it in the audit log, in one transaction. Idempotent. */
  async setBlocked(req: BlockRequest): Promise<AuditEntry> {
    const entry: AuditEntry = { at: new Date().toISOString(), action: req.blocked ? 'block' : 'unblock', address: req.address, actor: 'admin', ip: req.ip };
    if (req.reason !== undefined) entry.reason = req.reason;
    const m = this.redis.multi();
    if (req.blocked) {
      m.sadd(keys.peersBlocked(), req.address).hset(keys.peersBlockedInfo(), req.address, JSON.stringify({ reason: req.reason ?? '', at: entry.at }));
    } else {
      m.srem(keys.peersBlocked(), req.address).hdel(keys.peersBlockedInfo(), req.address);
    }
    const results = await m.lpush(keys.audit(), JSON.stringify(entry)).ltrim(keys.audit(), 0, AUDIT_CAP - 1).exec();
    const failed = results?.find(([err]) => err !== null);
    if (results === null || failed) throw failed?.[0] ?? new Error('redis transaction aborted');
    return entry;
  }

  /** Every blocked address, most recently blocked first. */
  async blocked(): Promise<BlockedEntry[]> {
    const [members, info] = await Promise.all([this.redis.smembers(keys.peersBlocked()), this.redis.hgetall(keys.peersBlockedInfo())]);
    const out = members.map((address): BlockedEntry => {
      const i = parseJson<{ reason?: unknown; at?: unknown }>(info[address]);
      return { address, reason: typeof i?.reason === 'string' ? i.reason : '', at: typeof i?.at === 'string' ? i.at : null };
    });
    // ISO times sort as text; entries without a time go last.
    return out.sort((a, b) => (b.at ?? '').localeCompare(a.at ?? '') || a.address.localeCompare(b.address));
  }

  /** The latest `limit` audit entries, newest first. */
  async audit(limit: number): Promise<AuditEntry[]> {
    const rows = await this.redis.lrange(keys.audit(), 0, limit - 1);
    return rows.map((r) => parseJson<AuditEntry>(r)).filter((e): e is AuditEntry => e !== undefined);
  }
}

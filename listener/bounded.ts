/**
 * A set of at most `capacity` keys that forgets the oldest first, with optional expiry: the listener's
 * de-duplication and hello memory stay bounded whatever arrives (a flood from an aliased prefix, hostile
 * traffic). Forgotten keys are caught again downstream: the bootstrap's upsert is idempotent.
 */
export class BoundedSet {
  private readonly entries = new Map<string, number>();

  constructor(private readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
  }

  /** Adds `key`; false when it is present and not expired. `expiresAt`: ms timestamp (default never). */
  add(key: string, expiresAt = Infinity, now = Date.now()): boolean {
    const existing = this.entries.get(key);
    if (existing !== undefined && existing > now) return false;
    this.entries.delete(key);
    if (this.entries.size >= this.capacity) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, expiresAt);
    return true;
  }

  get size(): number {
    return this.entries.size;
  }
}

/**
 * A set of at most `capacity` keys that forgets the oldest first, with optional expiry: the listener's
 * de-duplication and hello memory stay bounded whatever arrives (a flood from an aliased prefix, hostile
 * traffic). Forgotten keys are caught again downstream: the bootstrap's upsert is idempotent.
 *
 * Insertion order lives in a ring of slots, not in the Map's own order: evicting through
 * `map.keys().next()` walks over every deleted entry V8 keeps at the front until it rehashes, which made a
 * full set cost O(capacity) per add (measured: the listener at 93 % CPU for 50 000 replies/s).
 */
export class BoundedSet {
  /** Key → its slot; the slot's expiry is in `expiries` (no object per entry: a reply flood adds ~10^5/s). */
  private readonly entries = new Map<string, number>();
  private readonly slots: Array<string | undefined>;
  private readonly expiries: Float64Array;
  private next = 0;

  constructor(private readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    this.slots = new Array<string | undefined>(capacity);
    this.expiries = new Float64Array(capacity);
  }

  /** Adds `key`; false when it is present and not expired. `expiresAt`: ms timestamp (default never). */
  add(key: string, expiresAt = Infinity, now = Date.now()): boolean {
    const existing = this.entries.get(key);
    if (existing !== undefined) {
      if (this.expiries[existing]! > now) return false;
      this.slots[existing] = undefined; // expired: it re-enters as the newest
    }
    const slot = this.next;
    this.next = (slot + 1) % this.capacity;
    const evicted = this.slots[slot];
    if (evicted !== undefined) this.entries.delete(evicted);
    this.slots[slot] = key;
    this.expiries[slot] = expiresAt;
    this.entries.set(key, slot);
    return true;
  }

  get size(): number {
    return this.entries.size;
  }
}

import { describe, expect, test } from '@jest/globals';
import { BoundedSet } from '../../listener/bounded.js';

describe('BoundedSet', () => {
  test('add reports whether the key was new', () => {
    const s = new BoundedSet(10);
    expect(s.add('a')).toBe(true);
    expect(s.add('a')).toBe(false);
    expect(s.add('b')).toBe(true);
    expect(s.size).toBe(2);
  });

  test('at capacity the oldest key is forgotten first', () => {
    const s = new BoundedSet(3);
    for (const k of ['a', 'b', 'c']) expect(s.add(k)).toBe(true);
    expect(s.add('d')).toBe(true); // evicts a
    expect(s.size).toBe(3);
    expect(s.add('b')).toBe(false);
    expect(s.add('c')).toBe(false);
    expect(s.add('d')).toBe(false);
    expect(s.add('a')).toBe(true); // a was forgotten; re-adding it evicts b, now the oldest
    expect(s.add('c')).toBe(false);
    expect(s.add('b')).toBe(true);
    expect(s.size).toBe(3);
  });

  test('a repeated add of a live key does not make it younger', () => {
    const s = new BoundedSet(2);
    s.add('a');
    s.add('b');
    expect(s.add('a')).toBe(false);
    s.add('c'); // evicts a, still the oldest insertion
    expect(s.add('b')).toBe(false);
    expect(s.add('a')).toBe(true);
  });

  test('an expired key is admitted again, with its new expiry', () => {
    const s = new BoundedSet(10);
    expect(s.add('k', 1000, 0)).toBe(true);
    expect(s.add('k', 5000, 999)).toBe(false); // still live at 999: expiry not extended
    expect(s.add('k', 5000, 1000)).toBe(true); // expired exactly at 1000
    expect(s.add('k', 9000, 4999)).toBe(false);
    expect(s.add('k', 9000, 5000)).toBe(true);
    expect(s.size).toBe(1);
  });

  test('a key with no expiry never expires', () => {
    const s = new BoundedSet(4);
    s.add('k');
    expect(s.add('k', Infinity, Number.MAX_SAFE_INTEGER)).toBe(false);
  });

  test('an expired key re-admitted becomes the youngest', () => {
    const s = new BoundedSet(2);
    s.add('a', 10, 0);
    s.add('b', Infinity, 0);
    expect(s.add('a', Infinity, 20)).toBe(true); // re-admitted: now younger than b
    s.add('c', Infinity, 20); // evicts b
    expect(s.add('a', Infinity, 20)).toBe(false);
    expect(s.add('b', Infinity, 20)).toBe(true);
  });

  test.each([0, -1, 1.5, NaN, Infinity, 2 ** 53])('refuses capacity %p', (capacity) => {
    expect(() => new BoundedSet(capacity)).toThrow(/capacity must be a positive integer/);
  });

  test('a million distinct adds stay at capacity', () => {
    const s = new BoundedSet(1000);
    const started = Date.now();
    for (let i = 0; i < 1_000_000; i++) s.add(`k${i}`);
    expect(s.size).toBe(1000);
    expect(s.add('k999999')).toBe(false); // the newest are kept
    expect(s.add('k998999')).toBe(true); // the oldest are gone
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

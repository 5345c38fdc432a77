import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IntMap } from '../index.js';

describe('IntMap', () => {
  it('behaves like a Map under any sequence of set/delete/get (backward-shift deletion keeps every key reachable)', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), key: fc.integer({ min: 0, max: 64 }), value: fc.integer() }),
      fc.record({ kind: fc.constant('delete' as const), key: fc.integer({ min: 0, max: 64 }) }),
      fc.record({ kind: fc.constant('bigset' as const), key: fc.maxSafeNat(), value: fc.integer() }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const m = new IntMap<number>(1);
        const ref = new Map<number, number>();
        for (const o of ops) {
          if (o.kind === 'delete') expect(m.delete(o.key)).toBe(ref.delete(o.key));
          else {
            m.set(o.key, o.value);
            ref.set(o.key, o.value);
          }
          expect(m.size).toBe(ref.size);
        }
        for (const [k, v] of ref) expect(m.get(k)).toBe(v);
        for (let k = 0; k <= 64; k++) expect(m.has(k)).toBe(ref.has(k));
        expect(new Map(m.entries())).toEqual(ref);
      }),
      { numRuns: 300 },
    );
  });

  it('finds keys that collide into one probe run after deletions in the middle of the run', () => {
    const m = new IntMap<string>();
    // Many keys in a small table: long runs, wrap-around at the end of the table.
    for (let k = 0; k < 1000; k++) m.set(k * 4096, `v${k}`);
    for (let k = 0; k < 1000; k += 3) m.delete(k * 4096);
    for (let k = 0; k < 1000; k++) expect(m.get(k * 4096)).toBe(k % 3 === 0 ? undefined : `v${k}`);
    expect(m.size).toBe(666);
  });

  it('refuses keys that are not non-negative safe integers, storing nothing', () => {
    const m = new IntMap<number>();
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 53]) expect(() => m.set(bad, 1)).toThrow(RangeError);
    expect(m.size).toBe(0);
    expect(m.get(-1)).toBeUndefined();
  });

  it('clear empties the map', () => {
    const m = new IntMap<number>();
    m.set(1, 1).set(2, 2);
    m.clear();
    expect(m.size).toBe(0);
    expect([...m.keys()]).toEqual([]);
  });
});

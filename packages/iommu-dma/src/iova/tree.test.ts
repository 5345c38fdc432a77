/**
 * Unit property of the IOVA range tree (a B+ tree in one Float64Array) against a sorted array:
 * small node orders build trees four and five levels deep from a few hundred ranges, so splits
 * (even and lopsided), merges, redistributions, root growth and collapse, the leaf chain, the
 * cursor reuse (remove after a lookup, insert after findFit) and the largest-gap propagation are
 * all exercised. The tree is internal to the iova room; IovaDomain's tests cover it through the
 * public API, this one pins the data structure itself.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
// eslint-disable-next-line no-restricted-imports -- the internal data structure under test (see the header)
import { IovaTree, gapFits, gapStart } from './tree.js';

interface R {
  lo: number;
  hi: number;
  flags: number;
}

const SPACE = 4000;

/** The reference: sorted, disjoint ranges. */
class Ref {
  readonly rs: R[] = [];

  gapBelow(i: number): number {
    const r = this.rs[i];
    if (r === undefined) throw new Error('ref: index');
    return r.lo - (i > 0 ? (this.rs[i - 1]?.hi ?? 0) : -1) - 1;
  }

  /** Index of the last range with lo <= key, or -1. */
  lastAtOrBelow(key: number): number {
    let i = -1;
    this.rs.forEach((r, k) => {
      if (r.lo <= key) i = k;
    });
    return i;
  }

  fits(lo: number, hi: number): boolean {
    return lo >= 0 && hi >= lo && this.rs.every((r) => r.hi < lo || r.lo > hi);
  }

  insert(r: R): void {
    const i = this.rs.findIndex((x) => x.lo > r.lo);
    this.rs.splice(i < 0 ? this.rs.length : i, 0, r);
  }

  /** The kernel walk's answer: the highest range with lo <= bound whose gap fits. */
  findFit(bound: number, size: number, align: number): number {
    for (let i = this.lastAtOrBelow(bound); i >= 0; i--) {
      const r = this.rs[i];
      if (r === undefined) break;
      if (this.gapBelow(i) >= size && gapFits(r.lo - this.gapBelow(i) - 1, r.lo, size, align)) return i;
    }
    return -1;
  }
}

type Op =
  | { t: 'insert'; at: number; len: number; flags: number }
  | { t: 'alloc'; bound: number; size: number; alignLog: number }
  | { t: 'remove'; pick: number; viaLookup: boolean }
  | { t: 'extend'; pick: number; by: number }
  | { t: 'flags'; pick: number; flags: number }
  | { t: 'query'; key: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('insert' as const), at: fc.nat({ max: SPACE }), len: fc.integer({ min: 1, max: 6 }), flags: fc.nat({ max: 7 }) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('alloc' as const), bound: fc.nat({ max: SPACE + 10 }), size: fc.integer({ min: 1, max: 9 }), alignLog: fc.nat({ max: 3 }) }) },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('remove' as const), pick: fc.nat(), viaLookup: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('extend' as const), pick: fc.nat(), by: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('flags' as const), pick: fc.nat(), flags: fc.nat({ max: 7 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('query' as const), key: fc.integer({ min: -1, max: SPACE + 10 }) }) },
);

function agree(tree: IovaTree, ref: Ref): void {
  const problem = tree.check();
  expect(problem).toBeNull();
  expect(tree.size).toBe(ref.rs.length);
  // entries() reuses its array: copy each as it comes.
  const got = Array.from(tree.entries(), ([lo, hi, gap, flags]) => [lo, hi, gap, flags]);
  expect(got).toEqual(ref.rs.map((r, i) => [r.lo, r.hi, ref.gapBelow(i), r.flags]));
}

describe('IovaTree (B+ tree of IOVA ranges)', () => {
  for (const [leafOrder, innerOrder] of [
    [8, 8],
    [8, 12],
    [16, 32],
  ] as const) {
    it(`orders ${leafOrder}/${innerOrder}: random inserts, removes, fits, extends and lookups agree with a sorted array`, () => {
      fc.assert(
        fc.property(fc.array(opArb, { minLength: 100, maxLength: 800 }), (ops) => {
          const tree = new IovaTree(leafOrder, innerOrder);
          const ref = new Ref();
          for (const op of ops) {
            switch (op.t) {
              case 'insert': {
                const r = { lo: op.at, hi: op.at + op.len - 1, flags: op.flags };
                if (!ref.fits(r.lo, r.hi)) break;
                tree.insert(r.lo, r.hi, r.flags);
                ref.insert(r);
                break;
              }
              case 'alloc': {
                // findFit then insert into the fitting gap: the cursor path of the allocator.
                const align = 2 ** op.alignLog;
                const want = ref.findFit(op.bound, op.size, align);
                const n = tree.findFit(op.bound, op.size, align);
                expect(n).toBe(want < 0 ? -1 : ref.rs[want]?.lo);
                if (n < 0) break;
                expect(tree.foundGap).toBe(ref.gapBelow(want));
                const lo = gapStart(n, op.size, align);
                tree.insert(lo, lo + op.size - 1, 0);
                ref.insert({ lo, hi: lo + op.size - 1, flags: 0 });
                break;
              }
              case 'remove': {
                if (ref.rs.length === 0) break;
                const i = op.pick % ref.rs.length;
                const r = ref.rs[i];
                if (r === undefined) break;
                // Via a containing lookup first (free_iova's order), or cold.
                if (op.viaLookup) expect(tree.findContaining(r.hi)).toBe(r.lo);
                const next = tree.remove(r.lo);
                expect(next).toBe(ref.rs[i + 1]?.lo ?? -1);
                expect(tree.foundHi).toBe(i > 0 ? ref.rs[i - 1]?.hi : -1);
                ref.rs.splice(i, 1);
                break;
              }
              case 'extend': {
                if (ref.rs.length === 0) break;
                const i = op.pick % ref.rs.length;
                const r = ref.rs[i];
                if (r === undefined || ref.gapBelow(i) < op.by) break;
                tree.extendDown(r.lo, r.lo - op.by);
                r.lo -= op.by;
                break;
              }
              case 'flags': {
                if (ref.rs.length === 0) break;
                const r = ref.rs[op.pick % ref.rs.length];
                if (r === undefined) break;
                tree.setFlags(r.lo, op.flags);
                r.flags = op.flags;
                break;
              }
              case 'query': {
                const k = op.key;
                const at = ref.lastAtOrBelow(k);
                expect(tree.lastAtOrBelow(k)).toBe(at < 0 ? -1 : ref.rs[at]?.lo);
                if (at >= 0) expect([tree.foundHi, tree.foundFlags]).toEqual([ref.rs[at]?.hi, ref.rs[at]?.flags]);
                const containing = ref.rs.find((r) => r.lo <= k && k <= r.hi);
                expect(tree.findContaining(k)).toBe(containing?.lo ?? -1);
                expect(tree.predBelow(k)).toBe(ref.rs.filter((r) => r.lo < k).at(-1)?.lo ?? -1);
                expect(tree.succAbove(k)).toBe(ref.rs.find((r) => r.lo > k)?.lo ?? -1);
                expect(tree.lowestAtOrAbove(k)).toBe(ref.rs.find((r) => r.lo >= k)?.lo ?? -1);
                expect(tree.firstEndingAtOrAbove(k)).toBe(ref.rs.find((r) => r.hi >= k)?.lo ?? -1);
                break;
              }
            }
          }
          agree(tree, ref);
          // Empty it again in a random-ish order: merges all the way down to a lone root leaf.
          while (ref.rs.length > 0) {
            const i = (ref.rs.length * 7) % ref.rs.length === 0 ? ref.rs.length >> 1 : 0;
            const r = ref.rs[i];
            if (r === undefined) break;
            tree.remove(r.lo);
            ref.rs.splice(i, 1);
            if (ref.rs.length % 17 === 0) agree(tree, ref);
          }
          agree(tree, ref);
        }),
        { numRuns: 60 },
      );
    });
  }

  it('a top-down run of allocations (lopsided splits), then a drain, keeps every invariant', () => {
    const tree = new IovaTree(8, 8);
    const top = 2 ** 36;
    tree.insert(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 1);
    let below = Number.MAX_SAFE_INTEGER;
    for (let i = 0; i < 2000; i++) {
      // The allocator's order: findFit under the last range, then insert right below it.
      const n = tree.findFit(below, 1, 1);
      expect(n).toBe(below);
      const lo = i === 0 ? top - 1 : n - 1;
      tree.insert(lo, lo, 0);
      below = lo;
    }
    expect(tree.check()).toBeNull();
    expect(tree.size).toBe(2001);
    expect(tree.findFit(top - 1, 1, 1)).toBe(top - 2000);
    for (let i = 0; i < 2000; i += 3) tree.remove(top - 1 - i);
    expect(tree.check()).toBeNull();
    expect(tree.size).toBe(2001 - 667);
  });

  it('refuses orders below 8 and removal of a range that is not there', () => {
    expect(() => new IovaTree(4, 8)).toThrow(RangeError);
    const tree = new IovaTree();
    tree.insert(10, 20, 0);
    expect(() => tree.remove(11)).toThrow(/no range starts at 11/);
    expect(() => {
      tree.extendDown(10, 30);
    }).toThrow(RangeError);
  });
});

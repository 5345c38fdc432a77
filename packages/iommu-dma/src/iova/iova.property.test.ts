import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { iovaDomainProperty, iovaKernelWalkProperty } from '../testing/properties.js';
import { IovaDomain } from '../index.js';

// The properties (arbitraries, the kernel-walk reference, the checks) live in src/testing/properties.ts,
// shared with the seeded soak (tools/soak).
describe('IovaDomain properties', () => {
  it('random alloc/free/reserve never overlaps, respects limits and alignment, and frees back to the reservations', () => {
    fc.assert(iovaDomainProperty(), { numRuns: 150 });
  });

  it('the O(log n) search picks exactly the pfns of the kernel\'s linear cached-node walk', () => {
    fc.assert(iovaKernelWalkProperty(), { numRuns: 300 });
  });
});

/**
 * The kernel's __alloc_and_insert_iova_range / remove_iova over a sorted array (a linear walk from
 * the cached node, like the rbtree walk), for 64-bit limits: cached_node only.
 */
class LinearWalk {
  readonly nodes: { lo: number; hi: number }[] = [{ lo: Number.MAX_SAFE_INTEGER, hi: Number.MAX_SAFE_INTEGER }];
  cached = 0; // index into nodes is unstable: keep the node's lo instead
  cachedLo = Number.MAX_SAFE_INTEGER;

  constructor(readonly start: number) {}

  #index(lo: number): number {
    return this.nodes.findIndex((n) => n.lo === lo);
  }

  alloc(size: number, limitPfn: number, aligned: boolean): number | null {
    let align = 1;
    if (aligned) while (align < size) align *= 2;
    const lim = limitPfn + 1;
    const c = this.nodes[this.#index(this.cachedLo)];
    if (c === undefined) throw new Error('ref: cached node lost');
    const retryPfn = c.hi;
    let idx = this.#index(this.cachedLo);
    let high = lim;
    let low = this.start;
    let newPfn: number;
    for (;;) {
      do {
        high = Math.min(high, this.nodes[idx]?.lo ?? 0);
        newPfn = high - size;
        newPfn -= ((newPfn % align) + align) % align;
        idx--;
      } while (idx >= 0 && newPfn <= (this.nodes[idx]?.hi ?? 0) && newPfn >= low);
      if (high < size || newPfn < low) {
        if (low === this.start && retryPfn < lim) {
          high = lim;
          low = retryPfn + 1;
          idx = this.nodes.length - 1;
          continue;
        }
        return null;
      }
      break;
    }
    this.nodes.splice(idx + 1, 0, { lo: newPfn, hi: newPfn + size - 1 });
    this.cachedLo = newPfn;
    return newPfn;
  }

  free(lo: number): void {
    const i = this.#index(lo);
    const next = this.nodes[i + 1];
    if (i < 0 || next === undefined) throw new Error('ref: free of an unknown range');
    if (lo >= this.cachedLo) this.cachedLo = next.lo;
    this.nodes.splice(i, 1);
  }
}

describe('IovaDomain with thousands of live ranges (a tree several levels deep)', () => {
  it('alloc_iova/free_iova pick the same pfns as the kernel walk, and the domain stays consistent', () => {
    const base = 2 ** 30;
    const step = fc.oneof(
      { weight: 3, arbitrary: fc.tuple(fc.constant('a' as const), fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 9 })), fc.integer({ min: 0, max: 6000 }), fc.boolean()) },
      { weight: 3, arbitrary: fc.tuple(fc.constant('f' as const), fc.nat(), fc.constant(0), fc.constant(false)) },
    );
    fc.assert(
      fc.property(fc.integer({ min: 1500, max: 3000 }), fc.array(step, { minLength: 200, maxLength: 600 }), (prefill, steps) => {
        const d = new IovaDomain({ granule: 4096, startPfn: 1 });
        const ref = new LinearWalk(1);
        const live: number[] = [];
        for (let i = 0; i < prefill; i++) {
          const size = 1 + (i % 3);
          const got = d.allocIova(size, base + 8000, i % 5 === 0);
          const want = ref.alloc(size, base + 8000, i % 5 === 0);
          expect(got?.pfnLo ?? null).toBe(want);
          if (want !== null) live.push(want);
        }
        for (const [k, a, b, c] of steps) {
          if (k === 'a') {
            const got = d.allocIova(a, base + b, c);
            const want = ref.alloc(a, base + b, c);
            expect(got?.pfnLo ?? null).toBe(want);
            if (want !== null) live.push(want);
          } else if (live.length > 0) {
            const [pfn] = live.splice(a % live.length, 1);
            if (pfn === undefined) continue;
            // free_iova takes any pfn inside the range: its last one, when the range has more.
            d.freeIova(a % 2 === 0 ? pfn : (d.findIova(pfn)?.pfnHi ?? pfn));
            ref.free(pfn);
          }
        }
        d.checkConsistency();
        expect([...d.liveRanges()].map((r) => [r.pfnLo, r.pfnHi])).toEqual(ref.nodes.slice(0, -1).map((n) => [n.lo, n.hi]));
        expect(d.stats().invalidFrees).toBe(0);
      }),
      { numRuns: 12 },
    );
  });
});

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { IovaDomain, type Iova } from '@dmakit/iommu-dma';

const G = 4096;

function roundupPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * A line-by-line transliteration of the kernel's __alloc_and_insert_iova_range / remove_iova over a
 * sorted array (linear walk, like the rbtree walk). The model's O(log n) search must pick the same pfns.
 */
class KernelWalkRef {
  readonly nodes: { lo: number; hi: number }[];
  cached: { lo: number; hi: number };
  cached32: { lo: number; hi: number };
  max32: number;
  readonly dma32: number;

  constructor(
    readonly start: number,
    shift: number,
  ) {
    const anchor = { lo: Number.MAX_SAFE_INTEGER, hi: Number.MAX_SAFE_INTEGER };
    this.nodes = [anchor];
    this.cached = anchor;
    this.cached32 = anchor;
    this.dma32 = 2 ** (32 - shift);
    this.max32 = this.dma32;
  }

  alloc(size: number, limitPfn: number, aligned: boolean): number | null {
    const lim = limitPfn + 1;
    const align = aligned ? roundupPow2(size) : 1;
    if (lim <= this.dma32 && size >= this.max32) return null;
    const c = lim <= this.dma32 ? this.cached32 : this.cached;
    let idx = this.nodes.indexOf(c);
    const retryPfn = c.hi;
    let high = lim;
    let low = this.start;
    let newPfn: number;
    for (;;) {
      do {
        high = Math.min(high, this.nodes[idx]!.lo);
        newPfn = high - size;
        newPfn -= ((newPfn % align) + align) % align;
        idx--;
      } while (idx >= 0 && newPfn <= this.nodes[idx]!.hi && newPfn >= low);
      if (high < size || newPfn < low) {
        if (low === this.start && retryPfn < lim) {
          high = lim;
          low = retryPfn + 1;
          idx = lim > this.dma32 ? this.nodes.length - 1 : this.nodes.findIndex((n) => n.hi >= lim);
          continue;
        }
        this.max32 = size;
        return null;
      }
      break;
    }
    const node = { lo: newPfn, hi: newPfn + size - 1 };
    this.nodes.splice(idx + 1, 0, node);
    if (node.hi < this.dma32) this.cached32 = node;
    else this.cached = node;
    return newPfn;
  }

  free(pfn: number): void {
    const i = this.nodes.findIndex((n) => n.lo <= pfn && pfn <= n.hi);
    if (i < 0) return;
    const f = this.nodes[i]!;
    const next = this.nodes[i + 1]!;
    if (f === this.cached32 || (f.hi < this.dma32 && f.lo >= this.cached32.lo)) this.cached32 = next;
    if (f.lo < this.dma32) this.max32 = this.dma32;
    if (f.lo >= this.cached.lo) this.cached = next;
    this.nodes.splice(i, 1);
  }

  reserve(lo: number, hi: number): void {
    // Only used on disjoint ranges before any allocation.
    const i = this.nodes.findIndex((n) => n.lo > lo);
    this.nodes.splice(i, 0, { lo, hi });
  }
}

type Op =
  | { t: 'slow'; size: number; limit: number; aligned: boolean }
  | { t: 'fast'; size: number; limit: number; flush: boolean; cpu: number }
  | { t: 'free'; pick: number }
  | { t: 'reserve'; lo: number; len: number }
  | { t: 'flush' }
  | { t: 'trim' }
  | { t: 'unplug'; cpu: number };

const TOP = 600;
const limitArb = fc.oneof(fc.integer({ min: 0, max: TOP }), fc.constant(TOP), fc.constant(2 ** 21 - 1));

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant('slow' as const), size: fc.integer({ min: 1, max: 40 }), limit: limitArb, aligned: fc.boolean() }) },
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant('fast' as const),
      size: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 40 })),
      limit: limitArb,
      flush: fc.boolean(),
      cpu: fc.integer({ min: 0, max: 1 }),
    }),
  },
  { weight: 6, arbitrary: fc.record({ t: fc.constant('free' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('reserve' as const), lo: fc.integer({ min: 0, max: TOP }), len: fc.integer({ min: 1, max: 30 }) }) },
  { weight: 1, arbitrary: fc.constant({ t: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'trim' as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('unplug' as const), cpu: fc.integer({ min: 0, max: 1 }) }) },
);

interface Live {
  pfn: number;
  hi: number;
  size: number;
  fast: boolean;
  cpu: number;
}

function overlaps(a: { pfnLo: number; pfnHi: number }, lo: number, hi: number): boolean {
  return a.pfnLo <= hi && lo <= a.pfnHi;
}

function coverage(ranges: Iterable<Iova>): [number, number][] {
  const out: [number, number][] = [];
  const sorted = [...ranges].map((r) => [r.pfnLo, r.pfnHi] as [number, number]).sort((a, b) => a[0] - b[0]);
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

describe('IovaDomain properties', () => {
  it('random alloc/free/reserve never overlaps, respects limits and alignment, and frees back to the reservations', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 16 }), fc.array(opArb, { maxLength: 250, size: 'max' }), (startPfn, ops) => {
        const d = new IovaDomain({ granule: G, startPfn, cpus: 2 });
        const live: Live[] = [];
        const reserved: Iova[] = [];
        const check = (lo: number, size: number, limit: number, align: number): void => {
          const hi = lo + size - 1;
          expect(lo).toBeGreaterThanOrEqual(startPfn);
          expect(hi).toBeLessThanOrEqual(limit);
          expect(lo % align).toBe(0);
          for (const r of reserved) expect(overlaps(r, lo, hi)).toBe(false);
          for (const l of live) expect(l.pfn <= hi && lo <= l.hi).toBe(false);
        };
        for (const op of ops) {
          switch (op.t) {
            case 'slow': {
              const r = d.allocIova(op.size, op.limit, op.aligned);
              if (r !== null) {
                expect(r.pfnHi - r.pfnLo + 1).toBe(op.size);
                check(r.pfnLo, op.size, op.limit, op.aligned ? roundupPow2(op.size) : 1);
                live.push({ pfn: r.pfnLo, hi: r.pfnHi, size: op.size, fast: false, cpu: 0 });
              }
              break;
            }
            case 'fast': {
              const pfn = d.allocIovaFast(op.size, op.limit, op.flush, op.cpu);
              if (pfn !== 0) {
                const len = op.size < 32 ? roundupPow2(op.size) : op.size;
                const r = d.findIova(pfn)!;
                expect(r.pfnLo).toBe(pfn);
                expect(r.pfnHi - r.pfnLo + 1).toBe(len);
                check(pfn, len, op.limit, roundupPow2(op.size));
                live.push({ pfn, hi: pfn + len - 1, size: op.size, fast: true, cpu: op.cpu });
              }
              break;
            }
            case 'free': {
              if (live.length === 0) break;
              const [l] = live.splice(op.pick % live.length, 1);
              if (l!.fast) d.freeIovaFast(l!.pfn, l!.size, l!.cpu);
              else d.freeIova(l!.pfn);
              break;
            }
            case 'reserve': {
              // Live allocations (and rcache-held ones) inside the range keep their bounds: the
              // reservation is the range minus them.
              const hi = op.lo + op.len - 1;
              const holes = [...d.liveRanges()].filter((r) => !r.reserved && overlaps(r, op.lo, hi));
              if (d.reserveIova(op.lo, hi) !== null) {
                let lo = op.lo;
                for (const h of holes) {
                  if (lo < h.pfnLo) reserved.push({ pfnLo: lo, pfnHi: h.pfnLo - 1 });
                  lo = h.pfnHi + 1;
                }
                if (lo <= hi) reserved.push({ pfnLo: lo, pfnHi: hi });
              }
              break;
            }
            case 'flush':
              d.flushRcaches();
              break;
            case 'trim':
              d.depotTrim();
              break;
            case 'unplug':
              d.freeCpuCachedIovas(op.cpu);
              break;
          }
          d.checkConsistency();
        }
        // Every live allocation is in the tree exactly, not marked cached.
        for (const l of live) {
          const r = d.findIova(l.pfn)!;
          expect([r.pfnLo, r.pfnHi]).toEqual([l.pfn, l.hi]);
        }
        expect(d.stats().invalidFrees).toBe(0);
        for (const l of live) {
          if (l.fast) d.freeIovaFast(l.pfn, l.size, l.cpu);
          else d.freeIova(l.pfn);
        }
        d.flushRcaches();
        d.checkConsistency();
        const left = [...d.liveRanges()];
        expect(left.every((r) => r.reserved && !r.cached)).toBe(true);
        expect(coverage(left)).toEqual(coverage(reserved));
        const s = d.stats();
        expect(s.allocatedGranules).toBe(0);
        expect(s.cachedGranules).toBe(0);
        expect(s.depotMagazines).toBe(0);
      }),
      { numRuns: 150 },
    );
  });

  it('the O(log n) search picks exactly the pfns of the kernel\'s linear cached-node walk', () => {
    const sizeArb = fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 70 }));
    // Activity either all below 4 GiB (cached32_node, fast-fail) or straddling it (cached_node too).
    const limArb = fc.oneof(fc.integer({ min: 0, max: 400 }), fc.constant(400), fc.integer({ min: 0, max: 800 }));
    const step = fc.oneof(
      { weight: 3, arbitrary: fc.tuple(fc.constant('a' as const), sizeArb, limArb, fc.boolean()) },
      { weight: 2, arbitrary: fc.tuple(fc.constant('f' as const), fc.nat(), fc.constant(0), fc.constant(false)) },
    );
    const resArb = fc.array(fc.tuple(fc.integer({ min: 0, max: 820 }), fc.integer({ min: 1, max: 20 })), { maxLength: 6 });
    const baseArb = fc.constantFrom(0, 2 ** 20 - 400);
    fc.assert(
      fc.property(baseArb, fc.integer({ min: 1, max: 40 }), resArb, fc.array(step, { maxLength: 300, size: 'max' }), (base, startPfn, res, steps) => {
        const d = new IovaDomain({ granule: G, startPfn });
        const ref = new KernelWalkRef(startPfn, 12);
        // Disjoint reservations first (merging is covered elsewhere).
        const taken: [number, number][] = [];
        for (const [off, n] of res) {
          const lo = base + off;
          const hi = lo + n - 1;
          if (taken.some(([a, b]) => a <= hi + 1 && lo <= b + 1)) continue;
          taken.push([lo, hi]);
          d.reserveIova(lo, hi);
          ref.reserve(lo, hi);
        }
        const live: number[] = [];
        for (const [k, a, b, c] of steps) {
          if (k === 'a') {
            const got = d.allocIova(a, base + b, c);
            const want = ref.alloc(a, base + b, c);
            expect(got === null ? null : got.pfnLo).toBe(want);
            if (want !== null) live.push(want);
          } else if (live.length > 0) {
            const [pfn] = live.splice(a % live.length, 1);
            d.freeIova(pfn!);
            ref.free(pfn!);
          }
          expect(d.stats().max32AllocSize).toBe(ref.max32);
        }
        d.checkConsistency();
      }),
      { numRuns: 300 },
    );
  });
});

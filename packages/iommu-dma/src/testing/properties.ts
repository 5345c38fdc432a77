/**
 * Test helper of @dmakit/iommu-dma (not shipped): the package's model-checking properties, shared
 * by its tests (iova/iova.property.test.ts, unmanagedDomain.property.test.ts) and the seeded soak
 * (tools/soak), which runs them with fresh seeds: `fc.check(iovaDomainProperty(), { seed, numRuns })`.
 * Each function returns a fresh fast-check property over the same arbitraries the tests always
 * used; a broken invariant throws (vitest's `expect`, which also runs outside the test runner).
 */
import fc from 'fast-check';
import { expect } from 'vitest';
import { createMachine, Errno, IOMMU_UNMANAGED_READ, IOMMU_UNMANAGED_WRITE } from '@dmakit/dma-core';
import { createIommu, createUnmanagedDomain, IovaDomain } from '../index.js';
import type { Iova } from '../index.js';

const G = 4096;

/** `v`, which the surrounding logic guarantees is there (a plain throw, not a `!`, when it is not). */
function must<T>(v: T | null | undefined): T {
  if (v === null || v === undefined) throw new Error('property helper: expected a value');
  return v;
}

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
        high = Math.min(high, must(this.nodes[idx]).lo);
        newPfn = high - size;
        newPfn -= ((newPfn % align) + align) % align;
        idx--;
      } while (idx >= 0 && newPfn <= must(this.nodes[idx]).hi && newPfn >= low);
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
    const f = must(this.nodes[i]);
    const next = must(this.nodes[i + 1]);
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

/**
 * IovaDomain (drivers/iommu/iova.c) under random slow and fast (rcache) allocations, frees,
 * reservations, rcache flushes, depot trims and CPU unplugs: no two live ranges overlap, limits
 * and alignment hold, the tree stays consistent, and freeing everything leaves exactly the
 * reservations (nothing leaks into the caches).
 */
export function iovaDomainProperty(): fc.IPropertyWithHooks<[number, Op[]]> {
  return fc.property(fc.integer({ min: 1, max: 16 }), fc.array(opArb, { maxLength: 250, size: 'max' }), (startPfn, ops) => {
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
            const r = must(d.findIova(pfn));
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
          if (l === undefined) break;
          if (l.fast) d.freeIovaFast(l.pfn, l.size, l.cpu);
          else d.freeIova(l.pfn);
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
      const r = must(d.findIova(l.pfn));
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
  });
}

/** The kernel's linear cached-node walk vs the model's O(log n) search: the same pfns, the same max32_alloc_size. */
export function iovaKernelWalkProperty() {
  const sizeArb = fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 70 }));
  // Activity either all below 4 GiB (cached32_node, fast-fail) or straddling it (cached_node too).
  const limArb = fc.oneof(fc.integer({ min: 0, max: 400 }), fc.constant(400), fc.integer({ min: 0, max: 800 }));
  const step = fc.oneof(
    { weight: 3, arbitrary: fc.tuple(fc.constant('a' as const), sizeArb, limArb, fc.boolean()) },
    { weight: 2, arbitrary: fc.tuple(fc.constant('f' as const), fc.nat(), fc.constant(0), fc.constant(false)) },
  );
  const resArb = fc.array(fc.tuple(fc.integer({ min: 0, max: 820 }), fc.integer({ min: 1, max: 20 })), { maxLength: 6 });
  const baseArb = fc.constantFrom(0, 2 ** 20 - 400);
  return fc.property(baseArb, fc.integer({ min: 1, max: 40 }), resArb, fc.array(step, { maxLength: 300, size: 'max' }), (base, startPfn, res, steps) => {
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
        d.freeIova(must(pfn));
        ref.free(must(pfn));
      }
      expect(d.stats().max32AllocSize).toBe(ref.max32);
    }
    d.checkConsistency();
  });
}

const SZ_4K = 4096;
const SZ_2M = 2 ** 21;
const SZ_1G = 2 ** 30;
const RW = IOMMU_UNMANAGED_READ | IOMMU_UNMANAGED_WRITE;

function newDomain() {
  const machine = createMachine({ ramBytes: 16 * 2 ** 20, dmaDebug: 'warn' });
  const iommu = createIommu(machine, { mode: 'strict' });
  return { iommu, dom: createUnmanagedDomain(iommu) };
}

interface Range {
  iova: number;
  size: number;
  paddr: number;
}

/** One random operation: map (size class, count, slot, phys slot) or unmap (which range / a hole). */
type UnmanagedOp = { kind: 'map'; pgsize: number; count: number; slot: number; phys: number; physAligned: boolean } | { kind: 'unmap'; pick: number; hole: boolean; slot: number };

const op: fc.Arbitrary<UnmanagedOp> = fc.oneof(
  fc.record({
    kind: fc.constant('map' as const),
    pgsize: fc.constantFrom(SZ_4K, SZ_2M, SZ_1G),
    count: fc.integer({ min: 1, max: 3 }),
    slot: fc.integer({ min: 0, max: 2047 }),
    phys: fc.integer({ min: 0, max: 4095 }),
    physAligned: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('unmap' as const), pick: fc.nat(), hole: fc.boolean(), slot: fc.integer({ min: 0, max: 2047 }) }),
);

/**
 * The unmanaged domain (iommufd-style, drivers/iommu/generic_pt) against a reference model: random
 * map/unmap of mixed sizes and page sizes; translations, unmap results and overlap errnos match
 * the model, and unmapping everything leaves no leaf and no extra page-table page.
 */
export function unmanagedDomainModelProperty(): fc.IPropertyWithHooks<[UnmanagedOp[]]> {
  return fc.property(fc.array(op, { minLength: 20, maxLength: 120 }), (ops) => {
    const { iommu, dom } = newDomain();
    const tablesAtStart = iommu.stats().tablePagesLive;
    const model: Range[] = [];
    const overlaps = (a: number, len: number): boolean => model.some((r) => a < r.iova + r.size && r.iova < a + len);
    const check = (): void => {
      for (const r of model) {
        for (const off of [0, r.size >>> 1, r.size - 8]) expect(dom.iovaToPhys(r.iova + off)).toBe(r.paddr + off);
        // Just past the range: whatever the model says is there (another range or nothing).
        const after = r.iova + r.size;
        const next = model.find((x) => after >= x.iova && after < x.iova + x.size);
        expect(dom.iovaToPhys(after)).toBe(next === undefined ? 0 : next.paddr + (after - next.iova));
      }
      expect(dom.stats().mappedBytes).toBe(model.reduce((t, r) => t + r.size, 0));
    };
    for (const o of ops) {
      if (o.kind === 'map') {
        // IOVA slots of 2 MiB in [0, 4 GiB); a 1G size class is placed at a 1G boundary.
        const size = o.pgsize * o.count;
        const iova = o.pgsize === SZ_1G ? (o.slot % 4) * SZ_1G : o.slot * SZ_2M + (o.pgsize === SZ_4K ? (o.phys % 512) * SZ_4K : 0);
        // Physical addresses aligned to the page size (large leaves) or to the next size down
        // (split into smaller leaves: a 1G range into 2M leaves, a 2M range into 4K leaves).
        const split = o.pgsize === SZ_1G ? SZ_2M : SZ_4K;
        const paddr = 64 * SZ_1G + (o.physAligned ? (o.phys % 64) * o.pgsize : o.phys * split);
        if (iova + size > 2 ** 48) continue;
        const want = overlaps(iova, size) ? -Errno.EADDRINUSE : 0;
        expect(dom.map(iova, paddr, size, RW)).toBe(want);
        if (want === 0) model.push({ iova, size, paddr });
      } else if (o.hole || model.length === 0) {
        // Unmapping where nothing is mapped unmaps nothing (generic_pt stops at the hole).
        const iova = o.slot * SZ_2M;
        if (!overlaps(iova, SZ_4K)) expect(dom.unmap(iova, SZ_4K)).toBe(0);
      } else {
        const i = o.pick % model.length;
        const r = must(model[i]);
        expect(dom.unmap(r.iova, r.size)).toBe(r.size);
        model.splice(i, 1);
      }
      check();
    }
    for (const r of model) expect(dom.unmap(r.iova, r.size)).toBe(r.size);
    expect(dom.domain.pgtable.countLeaves()).toBe(0);
    expect(iommu.stats().tablePagesLive).toBe(tablesAtStart);
  });
}

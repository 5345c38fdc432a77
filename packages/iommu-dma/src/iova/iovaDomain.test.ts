import { describe, expect, it } from 'vitest';
import { Errno } from '@dmakit/dma-core';
import {
  IOVA_MAG_SIZE,
  IOVA_RANGE_CACHE_MAX_SIZE,
  IOVA_DEPOT_DELAY_MS,
  IovaDomain,
  IovaDomainError,
  iovaAlign,
  iovaAlignDown,
  iovaMask,
  iovaOffset,
  iovaPfn,
  iovaRcacheRange,
  iovaShift,
  type Iova,
} from '@dmakit/iommu-dma';

const G = 4096;
const len = (r: Iova | null): number => (r === null ? 0 : r.pfnHi - r.pfnLo + 1);

describe('IovaDomain: init_iova_domain rules and iova.h helpers', () => {
  it('derives shift and dma_32bit_pfn from the granule', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    expect(d.shift).toBe(12);
    expect(d.dma32bitPfn).toBe(1 << 20);
    expect(new IovaDomain({ granule: 512, startPfn: 1 }).dma32bitPfn).toBe(1 << 23);
    expect(IOVA_RANGE_CACHE_MAX_SIZE).toBe(6);
    expect(IOVA_MAG_SIZE).toBe(127);
    expect(IOVA_DEPOT_DELAY_MS).toBe(100);
  });

  it('refuses a granule that is not a power of two or exceeds PAGE_SIZE, and startPfn 0', () => {
    for (const granule of [3000, 8192, 0, -4096, 4096.5]) {
      expect(() => new IovaDomain({ granule, startPfn: 1 })).toThrow(IovaDomainError);
    }
    expect(() => new IovaDomain({ granule: 8192, startPfn: 1 })).toThrow(expect.objectContaining({ errno: -Errno.EINVAL }));
    expect(() => new IovaDomain({ granule: G, startPfn: 0 })).toThrow(/startPfn/);
    expect(() => new IovaDomain({ granule: G, startPfn: 1, cpus: 0 })).toThrow(IovaDomainError);
  });

  it('helpers work above 2^32', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const x = 2 ** 40 + 5000;
    expect(iovaShift(d)).toBe(12);
    expect(iovaMask(d)).toBe(4095);
    expect(iovaOffset(d, x)).toBe(904);
    expect(iovaAlignDown(d, x)).toBe(2 ** 40 + 4096);
    expect(iovaAlign(d, x)).toBe(2 ** 40 + 8192);
    expect(iovaAlign(d, 2 ** 40)).toBe(2 ** 40);
    expect(iovaPfn(d, x)).toBe(2 ** 28 + 1);
    expect(iovaRcacheRange()).toBe(128 * 1024);
  });
});

describe('alloc_iova (tree)', () => {
  it('allocates top-down below the limit', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const got = [1, 2, 3, 4].map(() => d.allocIova(1, 1000, false)?.pfnLo);
    expect(got).toEqual([1000, 999, 998, 997]);
    const two = d.allocIova(2, 1000, false);
    expect(two).toEqual(expect.objectContaining({ pfnLo: 995, pfnHi: 996 }));
    d.checkConsistency();
  });

  it('size_aligned aligns the start to roundup_pow_of_two(size) but keeps the length', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const a = d.allocIova(3, 1000, true)!;
    // (1001 - 3) & ~3 = 996
    expect(a.pfnLo).toBe(996);
    expect(len(a)).toBe(3);
    const b = d.allocIova(5, 1000, true)!;
    expect(b.pfnLo % 8).toBe(0);
    expect(len(b)).toBe(5);
    expect(b.pfnHi).toBeLessThan(a.pfnLo);
  });

  it('never hands out pfn 0 and never goes below startPfn', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const seen: number[] = [];
    for (;;) {
      const r = d.allocIova(1, 15, false);
      if (r === null) break;
      seen.push(r.pfnLo);
    }
    expect(seen).toEqual([15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
    const d2 = new IovaDomain({ granule: G, startPfn: 10 });
    const all: number[] = [];
    for (let r = d2.allocIova(2, 20, true); r !== null; r = d2.allocIova(2, 20, true)) all.push(r.pfnLo);
    expect(all).toEqual([18, 16, 14, 12, 10]);
  });

  it('avoids reserved ranges', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    expect(d.reserveIova(90, 99)).not.toBeNull();
    const r = d.allocIova(4, 99, false)!;
    expect(r.pfnHi).toBeLessThan(90);
    expect(r.pfnLo).toBe(86);
    for (let i = 0; i < 80; i++) {
      const x = d.allocIova(1, 200, false);
      if (x === null) break;
      expect(x.pfnHi < 90 || x.pfnLo > 99).toBe(true);
    }
    expect(d.stats().reservedGranules).toBe(10);
    d.checkConsistency();
  });

  it('reserve_iova merges into overlapping reservations like the kernel', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    d.reserveIova(10, 20);
    // [5,25] over [10,20]: the node widens down to 5, the rest [21,25] becomes a new node.
    d.reserveIova(5, 25);
    expect([...d.liveRanges()].map((r) => [r.pfnLo, r.pfnHi])).toEqual([
      [5, 20],
      [21, 25],
    ]);
    // Fully inside an existing reservation: returns it, adds nothing.
    const inside = d.reserveIova(6, 7);
    expect(inside).toEqual(expect.objectContaining({ pfnLo: 5, pfnHi: 20 }));
    expect(d.stats().treeNodes).toBe(2);
    expect(d.stats().reservedGranules).toBe(21);
    expect(d.reserveIova(30, 29)).toBeNull();
    expect(d.reserveIova(-1, 3)).toBeNull();
    d.checkConsistency();
  });

  it('reserving over a live allocation keeps the allocation intact and reserves around it', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const a = d.allocIova(4, 103, true)!; // [100,103]
    expect(a.pfnLo).toBe(100);
    d.reserveIova(95, 110);
    const ranges = [...d.liveRanges()].map((r) => [r.pfnLo, r.pfnHi, r.reserved]);
    expect(ranges).toEqual([
      [95, 99, true],
      [100, 103, false],
      [104, 110, true],
    ]);
    d.freeIova(100);
    expect([...d.liveRanges()].every((r) => r.reserved)).toBe(true);
    // The hole left by the allocation is free again, the reservation around it is not.
    expect(d.allocIova(4, 110, false)?.pfnLo).toBe(100);
  });

  it('free_iova frees the whole node containing the pfn; find_iova finds it', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const a = d.allocIova(10, 1000, false)!;
    expect(d.findIova(a.pfnLo + 5)).toEqual(a);
    expect(d.findIova(a.pfnLo - 1)).toBeNull();
    d.freeIova(a.pfnLo + 5);
    expect(d.findIova(a.pfnLo)).toBeNull();
    expect(d.stats().treeNodes).toBe(0);
    // Unknown pfns and reserved ranges are left alone.
    d.reserveIova(50, 60);
    d.freeIova(55);
    d.freeIova(500);
    expect(d.stats().invalidFrees).toBe(2);
    expect(d.stats().reservedGranules).toBe(11);
  });

  it('cached node: a higher limit still searches below the cached node first, then retries from the limit', () => {
    const d = new IovaDomain({ granule: G, startPfn: 81 });
    for (let i = 0; i < 10; i++) d.allocIova(1, 100, false);
    // cached32_node is now [91]: a request with limit 200 continues below it, not at 200.
    expect(d.allocIova(1, 200, false)?.pfnLo).toBe(90);
    for (let i = 0; i < 9; i++) d.allocIova(1, 100, false);
    expect(d.findIova(81)).not.toBeNull();
    // Nothing left below the cached node: the one retry goes from the real limit down.
    expect(d.allocIova(1, 200, false)?.pfnLo).toBe(200);
    expect(d.allocIova(1, 200, false)?.pfnLo).toBe(199);
    d.checkConsistency();
  });

  it('a freed hole above the cached node becomes visible again', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    for (let i = 0; i < 10; i++) d.allocIova(1, 100, false); // 100..91
    d.freeIova(95);
    expect(d.allocIova(1, 100, false)?.pfnLo).toBe(95);
    expect(d.allocIova(1, 100, false)?.pfnLo).toBe(90);
  });

  it('32-bit fast-fail: max32_alloc_size after a failed 32-bit search, reset by a free below 4 GiB', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const lim32 = d.dma32bitPfn - 1;
    // Only a 2-granule hole at 100..101 is left below 4 GiB.
    d.reserveIova(1, 99);
    d.reserveIova(102, 999);
    const big = d.allocIova(d.dma32bitPfn - 1000, lim32, false)!;
    expect(big.pfnLo).toBe(1000);
    expect(d.stats().max32AllocSize).toBe(d.dma32bitPfn);

    expect(d.allocIova(4, lim32, true)).toBeNull();
    expect(d.stats().max32AllocSize).toBe(4);
    const ff = d.stats().fastFails32;
    expect(d.allocIova(8, lim32, false)).toBeNull();
    expect(d.stats().fastFails32).toBe(ff + 1);
    // Smaller than the failed size: still searched, and fits the hole.
    expect(d.allocIova(2, lim32, true)?.pfnLo).toBe(100);
    // A 64-bit limit is not subject to the fast-fail.
    const hi = d.allocIova(8, 2 ** 36 - 1, true)!;
    expect(hi.pfnLo).toBeGreaterThanOrEqual(d.dma32bitPfn);
    d.freeIova(hi.pfnLo); // above 4 GiB: no reset
    expect(d.stats().max32AllocSize).toBe(4);
    d.freeIova(big.pfnLo); // below 4 GiB: reset
    expect(d.stats().max32AllocSize).toBe(d.dma32bitPfn);
    expect(d.allocIova(8, lim32, true)).not.toBeNull();
    d.checkConsistency();
  });

  it('rejects nonsensical sizes and limits without touching state', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    expect(d.allocIova(0, 100, false)).toBeNull();
    expect(d.allocIova(1.5, 100, false)).toBeNull();
    expect(d.allocIova(1, -1, false)).toBeNull();
    expect(d.allocIova(1, Number.NaN, false)).toBeNull();
    expect(d.allocIovaFast(0, 100, true)).toBe(0);
    expect(d.stats().treeNodes).toBe(0);
    expect(() => d.allocIovaFast(1, 100, true, 5)).toThrow(IovaDomainError);
  });
});

describe('alloc_iova_fast / free_iova_fast (rcache)', () => {
  it('rounds sizes below 32 up to a power of two, aligned', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const p = d.allocIovaFast(3, 1000, true);
    expect(p % 4).toBe(0);
    expect(len(d.findIova(p))).toBe(4);
    const q = d.allocIovaFast(17, 1000, true);
    expect(q % 32).toBe(0);
    expect(len(d.findIova(q))).toBe(32);
    // 33 is not rounded (not cacheable) but still size-aligned.
    const r = d.allocIovaFast(33, 10_000, true);
    expect(len(d.findIova(r))).toBe(33);
    expect(r % 64).toBe(0);
  });

  it('an rcache hit hands back the same pfn; cached IOVAs stay allocated in the tree', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const p = d.allocIovaFast(3, 1000, true);
    d.freeIovaFast(p, 3);
    let s = d.stats();
    expect(s.treeNodes).toBe(1);
    expect(s.allocatedGranules).toBe(4);
    expect(s.cachedGranules).toBe(4);
    expect([...d.liveRanges()][0]).toEqual(expect.objectContaining({ pfnLo: p, cached: true }));
    expect(d.allocIovaFast(4, 1000, true)).toBe(p);
    s = d.stats();
    expect(s.rcacheHits).toBe(1);
    expect(s.rcacheMisses).toBe(1);
    expect(s.cachedGranules).toBe(0);
  });

  it('sizes above 32 granules go straight back to the tree', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const p = d.allocIovaFast(40, 10_000, true);
    d.freeIovaFast(p, 40);
    expect(d.stats().treeNodes).toBe(0);
    expect(d.stats().cachedGranules).toBe(0);
  });

  it('the rcache pop only returns a pfn that fits below the limit', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const high = d.allocIovaFast(1, 5000, true); // 5000
    const low = d.allocIovaFast(1, 100, true); // 100
    expect([high, low]).toEqual([5000, 100]);
    d.freeIovaFast(low, 1);
    d.freeIovaFast(high, 1); // top of the magazine
    expect(d.allocIovaFast(1, 200, true)).toBe(low); // scans past 5000
    expect(d.allocIovaFast(1, 200, true)).not.toBe(high); // nothing fits: tree
    expect(d.allocIovaFast(1, 6000, true)).toBe(high);
  });

  it('per-CPU isolation: freed on cpu 0, missed on cpu 1', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1, cpus: 2 });
    const p = d.allocIovaFast(1, 1000, true, 0);
    d.freeIovaFast(p, 1, 0);
    const q = d.allocIovaFast(1, 1000, true, 1);
    expect(q).not.toBe(p);
    expect(d.stats().rcacheHits).toBe(0);
    d.currentCpu = 0;
    expect(d.allocIovaFast(1, 1000, true)).toBe(p);
    expect(d.stats().rcacheHits).toBe(1);
  });

  it('loaded and prev full: the loaded magazine goes to the depot; depotTrim returns extras to the tree', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1, cpus: 2 });
    const n = IOVA_MAG_SIZE * 5;
    const pfns: number[] = [];
    for (let i = 0; i < n; i++) pfns.push(d.allocIovaFast(1, 100_000, true));
    for (let i = 0; i < 2 * IOVA_MAG_SIZE; i++) d.freeIovaFast(pfns[i]!, 1);
    expect(d.stats().depotMagazines).toBe(0);
    expect(d.depotWorkPending).toBe(false);
    d.freeIovaFast(pfns[2 * IOVA_MAG_SIZE]!, 1);
    expect(d.stats().depotMagazines).toBe(1);
    expect(d.depotWorkPending).toBe(true);
    for (let i = 2 * IOVA_MAG_SIZE + 1; i < n; i++) d.freeIovaFast(pfns[i]!, 1);
    expect(d.stats().depotMagazines).toBe(3);
    expect(d.stats().cachedGranules).toBe(n);
    expect(d.stats().treeNodes).toBe(n);
    d.checkConsistency();
    // The trim worker frees one magazine per run while the depot holds more than one per CPU.
    d.depotTrim();
    expect(d.stats().depotMagazines).toBe(2);
    expect(d.stats().treeNodes).toBe(n - IOVA_MAG_SIZE);
    expect(d.depotWorkPending).toBe(true);
    d.depotTrim();
    expect(d.stats().depotMagazines).toBe(2);
    expect(d.depotWorkPending).toBe(false);
    // Another CPU with empty magazines takes a full one from the depot.
    const hits = d.stats().rcacheHits;
    expect(d.allocIovaFast(1, 100_000, true, 1)).not.toBe(0);
    expect(d.stats().rcacheHits).toBe(hits + 1);
    expect(d.stats().depotMagazines).toBe(1);
    d.checkConsistency();
  });

  it('exhaustion counts cached IOVAs; flush_rcache frees every CPU cache and the depot, then retries', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1, cpus: 2 });
    const pfns: number[] = [];
    for (let i = 0; i < 64; i++) pfns.push(d.allocIovaFast(1, 64, true, 0));
    expect(pfns.every((p) => p >= 1 && p <= 64)).toBe(true);
    expect(d.allocIovaFast(1, 64, false, 0)).toBe(0);
    for (const p of pfns) d.freeIovaFast(p, 1, 1);
    expect(d.stats().allocatedGranules).toBe(64);
    expect(d.stats().cachedGranules).toBe(64);
    // cpu 0's cache is empty and the tree is full of cpu 1's cached IOVAs.
    expect(d.allocIova(1, 64, false)).toBeNull();
    expect(d.allocIovaFast(2, 64, false, 0)).toBe(0);
    const p = d.allocIovaFast(2, 64, true, 0);
    expect(p).toBe(62); // (65 - 2) & ~1

    const s = d.stats();
    expect(s.rcacheFlushes).toBe(1);
    expect(s.cachedGranules).toBe(0);
    expect(s.allocatedGranules).toBe(2);
    d.checkConsistency();
  });

  it('freeCpuCachedIovas (CPU hot-unplug) returns only that CPU\'s magazines', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1, cpus: 3 });
    const a = d.allocIovaFast(1, 1000, true);
    const b = d.allocIovaFast(8, 1000, true);
    d.freeIovaFast(a, 1, 0);
    d.freeIovaFast(b, 8, 2);
    d.freeCpuCachedIovas(2);
    expect(d.findIova(b)).toBeNull();
    expect(d.findIova(a)).not.toBeNull();
    expect(d.stats().cachedGranules).toBe(1);
  });

  it('bad frees never corrupt the allocator', () => {
    const d = new IovaDomain({ granule: G, startPfn: 1 });
    const p = d.allocIovaFast(4, 1000, true);
    d.freeIovaFast(p, 4);
    d.freeIovaFast(p, 4); // double free into the rcache
    d.freeIova(p); // free_iova of a cached range
    d.freeIovaFast(p + 1, 1); // not an allocation's start
    expect(d.stats().invalidFrees).toBe(3);
    expect(d.allocIovaFast(4, 1000, true)).toBe(p);
    expect(d.allocIovaFast(4, 1000, true)).not.toBe(p);
    // Wrong size: the kernel would file it in the wrong bin; the model frees it to the tree.
    const q = d.allocIovaFast(8, 1000, true);
    d.freeIovaFast(q, 2);
    expect(d.stats().sizeMismatchFrees).toBe(1);
    expect(d.findIova(q)).toBeNull();
    // Slow-path allocation with a non-power-of-two length freed through the fast path.
    const r = d.allocIova(3, 1000, false)!;
    d.freeIovaFast(r.pfnLo, 3);
    expect(d.findIova(r.pfnLo)).toBeNull();
    expect(d.stats().cachedGranules).toBe(0);
    d.checkConsistency();
  });
});

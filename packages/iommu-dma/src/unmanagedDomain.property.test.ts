// The unmanaged domain against a reference model, in the style of iommufd's selftests
// (tools/testing/selftests/iommu/iommufd.c: map/unmap at random with overlap refused) and
// generic_pt's random map/unmap KUnit test (drivers/iommu/generic_pt/kunit_iommu_pt.h), plus
// io-pgtable's selftest pattern (drivers/iommu/io-pgtable-arm.c arm_lpae_run_tests: every page
// size at an aligned address, lookups inside it, map over it refused, unmap, absent afterwards).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Errno, IOMMU_UNMANAGED_READ, IOMMU_UNMANAGED_WRITE, createMachine } from '@dmakit/dma-core';
import { createIommu, createUnmanagedDomain } from './index.js';

const SZ_4K = 4096;
const SZ_2M = 2 ** 21;
const SZ_1G = 2 ** 30;
const RW = IOMMU_UNMANAGED_READ | IOMMU_UNMANAGED_WRITE;

function newDomain() {
  const machine = createMachine({ ramBytes: 16 * 2 ** 20, dmaDebug: 'warn' });
  const iommu = createIommu(machine, { mode: 'strict' });
  return { iommu, dom: createUnmanagedDomain(iommu) };
}

describe('io-pgtable selftest pattern on the unmanaged domain', () => {
  it('4K, 2M and 1G at aligned addresses: lookups inside, overlap refused, unmap returns the size, absent after', () => {
    const { iommu, dom } = newDomain();
    const tablesAtStart = iommu.stats().tablePagesLive;
    for (const size of [SZ_4K, SZ_2M, SZ_1G]) {
      const iova = 3 * SZ_1G + (size === SZ_1G ? SZ_1G : 5 * size);
      const paddr = 7 * size;
      expect(dom.map(iova, paddr, size, RW)).toBe(0);
      dom.domain.pgtable.walk(iova);
      expect(dom.domain.pgtable.walkSize).toBe(size); // one leaf of that size
      for (const off of [0, 42, size / 2 + 8, size - 1]) expect(dom.iovaToPhys(iova + off)).toBe(paddr + off);
      // generic_pt __map_range: -EADDRINUSE for the same range and for a 4K page inside it.
      expect(dom.map(iova, paddr, size, RW)).toBe(-Errno.EADDRINUSE);
      expect(dom.map(iova + size - SZ_4K, 0x1000, SZ_4K, RW)).toBe(-Errno.EADDRINUSE);
      expect(dom.unmap(iova, size)).toBe(size);
      for (const off of [0, 42, size - 1]) expect(dom.iovaToPhys(iova + off)).toBe(0);
    }
    expect(iommu.stats().tablePagesLive).toBe(tablesAtStart);
  });
});

interface Range {
  iova: number;
  size: number;
  paddr: number;
}

/** One random operation: map (size class, count, slot, phys slot) or unmap (which range / a hole). */
const op = fc.oneof(
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

describe('unmanaged domain vs a reference model (iommufd-style property)', () => {
  it('random map/unmap of mixed sizes and page sizes: translations, unmap results and overlap errnos match the model', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 20, maxLength: 120 }), (ops) => {
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
            const r = model[i]!;
            expect(dom.unmap(r.iova, r.size)).toBe(r.size);
            model.splice(i, 1);
          }
          check();
        }
        for (const r of model) expect(dom.unmap(r.iova, r.size)).toBe(r.size);
        expect(dom.domain.pgtable.countLeaves()).toBe(0);
        expect(iommu.stats().tablePagesLive).toBe(tablesAtStart);
      }),
      { numRuns: 40, seed: 1606 },
    );
  });
});

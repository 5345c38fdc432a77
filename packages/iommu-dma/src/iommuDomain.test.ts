import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Errno, createMachine } from '@dmakit/dma-core';
import { IOMMU_CACHE, IOMMU_MMIO, IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE, createIommu, iommuIotlbGatherInit, iommuIotlbSync, iommuIovaToPhys, iommuMap, iommuPgsize, iommuUnmap, iommuUnmapFast } from './index.js';

const SZ_4K = 4096;
const SZ_2M = 2 ** 21;
const SZ_1G = 2 ** 30;
const RW = IOMMU_READ | IOMMU_WRITE;

function newDomain(mode: 'strict' | 'lazy' = 'strict') {
  const machine = createMachine({ ramBytes: 64 * 2 ** 20 });
  const iommu = createIommu(machine, { mode });
  return { machine, iommu, domain: iommu.allocDomain() };
}

describe('iommu_pgsize', () => {
  it('picks the largest size that fits alignment and length, with a count up to the next boundary', () => {
    const sizes = [SZ_4K, SZ_2M, SZ_1G];
    const out = { pgsize: 0, count: 0 };
    expect(iommuPgsize(sizes, 0, 0, SZ_2M, out)).toBe(SZ_2M);
    expect(out.count).toBe(1);
    // Unaligned start: 4K pages up to the 2M boundary, then 2M pages.
    expect(iommuPgsize(sizes, SZ_2M - 3 * SZ_4K, SZ_2M - 3 * SZ_4K, 3 * SZ_4K + 2 * SZ_2M, out)).toBe(SZ_4K);
    expect(out.count).toBe(3);
    expect(iommuPgsize(sizes, SZ_2M, SZ_2M, 2 * SZ_2M, out)).toBe(SZ_2M);
    expect(out.count).toBe(2);
    // iova and paddr disagree on alignment: only 4K pages.
    expect(iommuPgsize(sizes, SZ_2M, SZ_2M + SZ_4K, SZ_2M, out)).toBe(SZ_4K);
    expect(out.count).toBe(512);
    expect(iommuPgsize(sizes, 0, 0, SZ_1G, out)).toBe(SZ_1G);
  });
});

describe('IommuDomain map/unmap', () => {
  it('maps and unmaps every page size, iova_to_phys on each', () => {
    const { domain } = newDomain();
    const root = domain.stats().tablePagesLive;
    for (const [iova, phys, size] of [
      [SZ_4K, 0x5000, SZ_4K],
      [2 * SZ_2M, 6 * SZ_2M, SZ_2M],
      [4 * SZ_1G, 2 * SZ_1G, SZ_1G],
    ] as const) {
      expect(iommuMap(domain, iova, phys, size, RW)).toBe(0);
      expect(iommuIovaToPhys(domain, iova)).toBe(phys);
      expect(iommuIovaToPhys(domain, iova + size - 8)).toBe(phys + size - 8);
      domain.pgtable.walk(iova);
      expect(domain.pgtable.walkSize).toBe(size);
      expect(iommuUnmap(domain, iova, size)).toBe(size);
      expect(iommuIovaToPhys(domain, iova)).toBe(0);
    }
    expect(domain.stats().tablePagesLive).toBe(root);
  });

  it('refuses unaligned ranges (-EINVAL) and mapping over a present entry (-EADDRINUSE, generic_pt __map_range) without changing anything', () => {
    const { domain } = newDomain();
    expect(iommuMap(domain, 0x1001, 0x2000, SZ_4K, RW)).toBe(-Errno.EINVAL);
    expect(iommuMap(domain, 0x1000, 0x2000, 100, RW)).toBe(-Errno.EINVAL);
    expect(iommuMap(domain, 0x3000, 0x3000, SZ_4K, RW)).toBe(0);
    const writes = domain.stats().pteWrites;
    // [0x1000, 0x4000) overlaps the page at 0x3000: the first two pages are rolled back.
    expect(iommuMap(domain, 0x1000, 0x10000, 3 * SZ_4K, RW)).toBe(-Errno.EADDRINUSE);
    expect(iommuIovaToPhys(domain, 0x1000)).toBe(0);
    expect(iommuIovaToPhys(domain, 0x3000)).toBe(0x3000);
    expect(domain.pgtable.countLeaves()).toBe(1);
    expect(domain.stats().pteWrites).toBeGreaterThan(writes);
    // A 2M leaf over a table that has a 4K page in it.
    expect(iommuMap(domain, 0, 0, SZ_2M, RW)).toBe(-Errno.EADDRINUSE);
    // A 4K page under a 2M leaf: __map_range meets an entry that is neither empty nor a table.
    expect(iommuMap(domain, 4 * SZ_2M, 0, SZ_2M, RW)).toBe(0);
    expect(iommuMap(domain, 4 * SZ_2M + SZ_4K, 0x7000, SZ_4K, RW)).toBe(-Errno.EADDRINUSE);
    expect(iommuMap(domain, 2 ** 48, 0, SZ_4K, RW)).toBe(-Errno.ERANGE);
  });

  it('a prot with neither IOMMU_READ nor IOMMU_WRITE is refused with -EINVAL and installs nothing (generic_pt map_pages)', () => {
    // drivers/iommu/generic_pt/iommu_pt.h map_pages: WARN_ON(!(prot & (IOMMU_READ | IOMMU_WRITE))) return -EINVAL.
    for (const mode of ['strict', 'lazy'] as const) {
      const { domain } = newDomain(mode);
      const writes = domain.stats().pteWrites;
      for (const prot of [0, IOMMU_CACHE, IOMMU_NOEXEC | IOMMU_MMIO]) {
        expect(iommuMap(domain, 0x4000, 0x8000, SZ_4K, prot)).toBe(-Errno.EINVAL);
        expect(iommuMap(domain, SZ_2M, SZ_2M, SZ_2M, prot)).toBe(-Errno.EINVAL);
      }
      expect(iommuIovaToPhys(domain, 0x4000)).toBe(0);
      expect(iommuIovaToPhys(domain, SZ_2M)).toBe(0);
      expect(domain.pgtable.countLeaves()).toBe(0);
      expect(domain.stats()).toMatchObject({ pteWrites: writes, maps: 0 });
      // Read-only or write-only is enough.
      expect(iommuMap(domain, 0x4000, 0x8000, SZ_4K, IOMMU_WRITE)).toBe(0);
      expect(iommuIovaToPhys(domain, 0x4000)).toBe(0x8000);
    }
  });

  it('partial unmap of a large page follows generic_pt', () => {
    const { domain } = newDomain();
    expect(iommuMap(domain, SZ_2M, 4 * SZ_2M, SZ_2M, RW)).toBe(0);
    // Starting inside the large leaf: nothing unmapped.
    expect(iommuUnmap(domain, SZ_2M + SZ_4K, SZ_4K)).toBe(0);
    expect(iommuIovaToPhys(domain, SZ_2M + SZ_4K)).toBe(4 * SZ_2M + SZ_4K);
    // Starting at it and ending inside: the whole leaf goes, its full size is reported.
    expect(iommuUnmap(domain, SZ_2M, SZ_4K)).toBe(SZ_2M);
    expect(iommuIovaToPhys(domain, SZ_2M + SZ_4K)).toBe(0);
  });

  it('an unmapped hole stops the walk', () => {
    const { domain } = newDomain();
    expect(iommuMap(domain, 0x1000, 0x1000, SZ_4K, RW)).toBe(0);
    expect(iommuMap(domain, 0x3000, 0x3000, SZ_4K, RW)).toBe(0);
    expect(iommuUnmap(domain, 0x1000, 3 * SZ_4K)).toBe(SZ_4K);
    expect(iommuIovaToPhys(domain, 0x3000)).toBe(0x3000);
  });

  it('unmap_fast adds the whole cleared range and its largest leaf to the gather, across 4K runs, table boundaries and a 2M leaf', () => {
    const { domain } = newDomain();
    // 4K pages from 2M - 3 pages up to 2M + 2 pages (two leaf tables), then a 2M leaf at 4M.
    const first = SZ_2M - 3 * SZ_4K;
    for (let i = 0; i < 5; i++) expect(iommuMap(domain, first + i * SZ_4K, 0x100000 + i * 2 * SZ_4K, SZ_4K, RW)).toBe(0);
    expect(iommuMap(domain, first + 5 * SZ_4K, 0x200000 + 5 * SZ_4K, SZ_2M - 2 * SZ_4K, RW)).toBe(0);
    expect(iommuMap(domain, 2 * SZ_2M, 6 * SZ_2M, SZ_2M, RW)).toBe(0);
    const gather = iommuIotlbGatherInit();
    const len = 2 * SZ_2M + SZ_2M - first;
    expect(iommuUnmapFast(domain, first, len, gather)).toBe(len);
    expect(gather.start).toBe(first);
    expect(gather.end).toBe(3 * SZ_2M - 1);
    expect(gather.pgsize).toBe(SZ_2M);
    // Both leaf tables emptied: detached into the gather's freelist until the sync.
    expect(gather.freelist.length).toBeGreaterThanOrEqual(2);
    iommuIotlbSync(domain, gather);
    expect(domain.pgtable.countLeaves()).toBe(0);
    expect(gather.freelist.length).toBe(0);
  });

  it('unmap_fast of 4K pages only records a 4K page size; a hole ends the range where it starts', () => {
    const { domain } = newDomain();
    for (let i = 0; i < 8; i++) expect(iommuMap(domain, SZ_1G + i * SZ_4K, 0x40000 + i * SZ_4K, SZ_4K, RW)).toBe(0);
    expect(iommuUnmap(domain, SZ_1G + 5 * SZ_4K, SZ_4K)).toBe(SZ_4K); // hole at page 5
    const gather = iommuIotlbGatherInit();
    expect(iommuUnmapFast(domain, SZ_1G + SZ_4K, 7 * SZ_4K, gather)).toBe(4 * SZ_4K);
    expect([gather.start, gather.end, gather.pgsize]).toEqual([SZ_1G + SZ_4K, SZ_1G + 5 * SZ_4K - 1, SZ_4K]);
    iommuIotlbSync(domain, gather);
    expect(iommuIovaToPhys(domain, SZ_1G)).toBe(0x40000);
    expect(iommuIovaToPhys(domain, SZ_1G + 6 * SZ_4K)).toBe(0x40000 + 6 * SZ_4K);
  });

  it('a table page allocation failure (pgtable fault injection) leaves nothing behind', () => {
    const { machine, domain } = newDomain();
    const live = domain.stats().tablePagesLive;
    machine.faultInjection.arm('pgtable', 2);
    expect(iommuMap(domain, 5 * SZ_1G, 0x10000, SZ_4K, RW)).toBe(-Errno.ENOMEM);
    expect(domain.stats().tablePagesLive).toBe(live);
    expect(domain.pgtable.countLeaves()).toBe(0);
  });

  it('1000 random map/unmap rounds keep per-page translations exact and end with an empty table', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 8 }), fc.integer({ min: 0, max: 4095 })), { minLength: 1000, maxLength: 1000 }), (ops) => {
        const { domain } = newDomain();
        const root = domain.stats().tablePagesLive;
        // Model: IOVA page index → phys page
        const model = new Map<number, number>();
        const ranges = new Map<number, number>(); // start page → pages (what we mapped)
        const base = SZ_1G - 128 * SZ_4K; // straddles a 1G and 2M boundary: several tables
        for (const [isMap, page, pages, physPage] of ops) {
          const iova = base + page * SZ_4K;
          if (isMap) {
            let overlap = false;
            for (let p = page; p < page + pages; p++) if (model.has(p)) overlap = true;
            const r = iommuMap(domain, iova, physPage * SZ_4K, pages * SZ_4K, RW);
            if (overlap) {
              expect(r).toBe(-Errno.EADDRINUSE);
            } else {
              expect(r).toBe(0);
              for (let p = 0; p < pages; p++) model.set(page + p, physPage + p);
              ranges.set(page, pages);
            }
          } else {
            const starts = [...ranges.keys()];
            if (starts.length === 0) continue;
            const s = starts[page % starts.length]!;
            const n = ranges.get(s)!;
            expect(iommuUnmap(domain, base + s * SZ_4K, n * SZ_4K)).toBe(n * SZ_4K);
            for (let p = 0; p < n; p++) model.delete(s + p);
            ranges.delete(s);
          }
        }
        for (let p = 0; p < 264; p++) {
          const want = model.get(p);
          expect(iommuIovaToPhys(domain, base + p * SZ_4K + 12)).toBe(want === undefined ? 0 : want * SZ_4K + 12);
        }
        for (const [s, n] of ranges) expect(iommuUnmap(domain, base + s * SZ_4K, n * SZ_4K)).toBe(n * SZ_4K);
        expect(domain.pgtable.countLeaves()).toBe(0);
        expect(domain.stats().tablePagesLive).toBe(root);
      }),
      { numRuns: 5, seed: 42 },
    );
  });
});

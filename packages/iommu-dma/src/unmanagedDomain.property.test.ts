// The unmanaged domain against a reference model, in the style of iommufd's selftests
// (tools/testing/selftests/iommu/iommufd.c: map/unmap at random with overlap refused) and
// generic_pt's random map/unmap KUnit test (drivers/iommu/generic_pt/kunit_iommu_pt.h), plus
// io-pgtable's selftest pattern (drivers/iommu/io-pgtable-arm.c arm_lpae_run_tests: every page
// size at an aligned address, lookups inside it, map over it refused, unmap, absent afterwards).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Errno, IOMMU_UNMANAGED_READ, IOMMU_UNMANAGED_WRITE, createMachine } from '@dmakit/dma-core';
import { createIommu, createUnmanagedDomain } from './index.js';
import { unmanagedDomainModelProperty } from './testing/properties.js';

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

describe('unmanaged domain vs a reference model (iommufd-style property)', () => {
  it('random map/unmap of mixed sizes and page sizes: translations, unmap results and overlap errnos match the model', () => {
    // The property (ops, model, checks) lives in src/testing/properties.ts, shared with the seeded soak.
    fc.assert(unmanagedDomainModelProperty(), { numRuns: 40, seed: 1606 });
  });
});

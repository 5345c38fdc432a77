// IOTLB invalidation granularity per IOMMU driver: VT-d page-selective invalidation with an
// address mask (drivers/iommu/intel/cache.c calculate_psi_aligned_address and
// cache_tag_flush_iotlb; iommu_flush_iotlb_psi in drivers/iommu/intel/iommu.c up to 6.9), AMD's
// build_inv_address (drivers/iommu/amd/iommu.c), SMMUv3's exact range.
import { describe, expect, it } from 'vitest';
import { IOMMU_UNMANAGED_READ, IOMMU_UNMANAGED_WRITE, createMachine } from '@dmakit/dma-core';
import {
  amdInvalidationBlock,
  calculatePsiAlignedAddress,
  createIommu,
  createUnmanagedDomain,
  iotlbInvalidationBlock,
  iotlbInvalidationBlockInit,
} from './index.js';
import type { IommuDriver } from './index.js';

const PG = 4096;
const RW = IOMMU_UNMANAGED_READ | IOMMU_UNMANAGED_WRITE;

function psi(startPfn: number, pages: number, mamv = 18) {
  const b = calculatePsiAlignedAddress(startPfn * PG, (startPfn + pages) * PG - 1, mamv, iotlbInvalidationBlockInit());
  return b.all ? { all: true, mask: b.mask } : { all: false, mask: b.mask, firstPfn: b.start / PG, pages: (b.end + 1 - b.start) / PG };
}

describe('VT-d calculate_psi_aligned_address (drivers/iommu/intel/cache.c)', () => {
  it('an aligned power-of-two range is its own block (mask = ilog2(pages))', () => {
    expect(psi(0, 1)).toEqual({ all: false, mask: 0, firstPfn: 0, pages: 1 });
    expect(psi(8, 8)).toEqual({ all: false, mask: 3, firstPfn: 8, pages: 8 });
    expect(psi(512, 512)).toEqual({ all: false, mask: 9, firstPfn: 512, pages: 512 });
  });

  it('pages are rounded up to a power of two: 3 pages at pfn 4 flush pfns 4..7', () => {
    expect(psi(4, 3)).toEqual({ all: false, mask: 2, firstPfn: 4, pages: 4 });
  });

  it('an unaligned start grows the mask to the first shared bit above it: pfns 3..4 flush 0..7', () => {
    // pfn 3 ^ end_pfn 4 = 0b111: shared_bits = ~0b111 & ~1, __ffs = 3.
    expect(psi(3, 2)).toEqual({ all: false, mask: 3, firstPfn: 0, pages: 8 });
    // Crossing a 2 MiB boundary by one page on each side needs a 4 MiB block.
    expect(psi(511, 2)).toEqual({ all: false, mask: 10, firstPfn: 0, pages: 1024 });
    // Byte addresses inside pages: aligned_nrpages counts every page touched.
    const b = calculatePsiAlignedAddress(0x5ff8, 0x6007, 18, iotlbInvalidationBlockInit());
    expect([b.all, b.mask, b.start, b.end]).toEqual([false, 2, 0x4000, 0x7fff]);
  });

  it('a mask above cap_max_amask_val falls back to a domain-selective flush (cache_tag_flush_iotlb)', () => {
    expect(psi(0, 2 ** 18)).toMatchObject({ all: false, mask: 18 });
    expect(psi(0, 2 ** 18 + 1)).toEqual({ all: true, mask: 19 });
    expect(psi(3, 2, 2)).toEqual({ all: true, mask: 3 });
  });

  it('the block always holds the range, is naturally aligned and no larger than needed', () => {
    const out = iotlbInvalidationBlockInit();
    const bad: string[] = [];
    for (let first = 0; first < 70; first++) {
      for (let pages = 1; pages < 70; pages++) {
        const lo = first * PG;
        const hi = (first + pages) * PG - 1;
        const b = calculatePsiAlignedAddress(lo, hi, 63, out);
        const size = b.end + 1 - b.start;
        const half = size / 2;
        // Half the block would miss one end of the range (or be too small for it).
        const halfWouldDo = b.mask > 0 && Math.floor(lo / half) === Math.floor(hi / half) && half >= pages * PG;
        if (size !== PG * 2 ** b.mask || b.start % size !== 0 || b.start > lo || b.end < hi || halfWouldDo) bad.push(`${first}+${pages}`);
      }
    }
    expect(bad).toEqual([]);
  });
});

describe('AMD build_inv_address (drivers/iommu/amd/iommu.c)', () => {
  it('one page alone, more as the aligned block of 2^(msb_diff + 1) bytes, everything past bit 51', () => {
    const out = iotlbInvalidationBlockInit();
    expect(amdInvalidationBlock(0x3000, 0x3fff, out)).toMatchObject({ all: false, start: 0x3000, end: 0x3fff });
    expect(amdInvalidationBlock(0x3000, 0x4fff, out)).toMatchObject({ all: false, start: 0, end: 0x7fff });
    expect(amdInvalidationBlock(0x8000, 0xbfff, out)).toMatchObject({ all: false, start: 0x8000, end: 0xbfff });
    expect(amdInvalidationBlock(0, 2 ** 52, out).all).toBe(true);
  });

  it('SMMUv3 invalidates the range itself', () => {
    expect(iotlbInvalidationBlock('arm-smmu-v3', 0x3000, 0x4fff, 18, iotlbInvalidationBlockInit())).toMatchObject({ all: false, start: 0x3000, end: 0x4fff });
  });
});

function rig(driver: IommuDriver, maxAddressMask?: number) {
  const machine = createMachine({ ramBytes: 64 * 2 ** 20, dmaDebug: 'warn' });
  const iommu = createIommu(machine, { mode: 'strict', driver, ...(maxAddressMask !== undefined ? { maxAddressMask } : {}) });
  const vf = machine.pci.addDevice({ name: 'vf0', dmaMaskBits: 64 });
  const dom = createUnmanagedDomain(iommu);
  const host = machine.memory.allocPages(4); // 16 pages
  expect(dom.map(0, host, 16 * PG, RW)).toBe(0);
  expect(dom.attachDevice(vf)).toBe(0);
  for (let p = 0; p < 16; p++) vf.dmaRead(p * PG, 8); // every page cached in the IOTLB
  return { iommu, vf, dom };
}

function cachedPfns(dom: ReturnType<typeof rig>['dom']): number[] {
  return [...dom.domain.iotlb.validEntries().pfns].sort((a, b) => a - b);
}

describe('iotlb_sync per IOMMU driver', () => {
  it('VT-d: unmapping pfns 3..4 issues one PSI with mask 3; every IOTLB entry of pfns 0..7 is dropped, counted as 2 requested / 8 covered', () => {
    const { iommu, vf, dom } = rig('intel-vtd');
    expect(cachedPfns(dom)).toHaveLength(16);
    const s0 = iommu.stats();
    expect(dom.unmap(3 * PG, 2 * PG)).toBe(2 * PG);
    const s1 = iommu.stats();
    expect(s1.iotlbInvalidationsRange - s0.iotlbInvalidationsRange).toBe(1);
    expect(s1.iotlbInvalidationPagesRequested - s0.iotlbInvalidationPagesRequested).toBe(2);
    expect(s1.iotlbInvalidationPagesCovered - s0.iotlbInvalidationPagesCovered).toBe(8);
    expect(s1.iotlbInvalidationDomainFallbacks).toBe(0);
    expect(cachedPfns(dom)).toEqual([8, 9, 10, 11, 12, 13, 14, 15]);
    // The still-mapped neighbours inside the block now miss and walk the page table again.
    const walks = dom.domain.iotlb.stats.walks;
    vf.dmaRead(5 * PG, 8);
    expect(dom.domain.iotlb.stats.walks).toBe(walks + 1);
  });

  it('SMMUv3: the same unmap drops only pfns 3..4', () => {
    const { iommu, vf, dom } = rig('arm-smmu-v3');
    expect(dom.unmap(3 * PG, 2 * PG)).toBe(2 * PG);
    const s = iommu.stats();
    expect([s.iotlbInvalidationPagesRequested, s.iotlbInvalidationPagesCovered]).toEqual([2, 2]);
    expect(cachedPfns(dom)).toEqual([0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    const walks = dom.domain.iotlb.stats.walks;
    vf.dmaRead(5 * PG, 8);
    expect(dom.domain.iotlb.stats.walks).toBe(walks);
  });

  it('AMD-Vi: the S-bit block of pfns 3..4 is pfns 0..7 as well', () => {
    const { iommu, dom } = rig('amd-vi');
    expect(dom.unmap(3 * PG, 2 * PG)).toBe(2 * PG);
    expect(iommu.stats().iotlbInvalidationPagesCovered).toBe(8);
    expect(cachedPfns(dom)).toEqual([8, 9, 10, 11, 12, 13, 14, 15]);
  });

  it('VT-d with a small MAMV: a PSI whose mask is too large becomes a domain-selective flush of everything', () => {
    const { iommu, dom } = rig('intel-vtd', 2);
    expect(dom.unmap(3 * PG, 2 * PG)).toBe(2 * PG); // needs mask 3 > MAMV 2
    const s = iommu.stats();
    expect(s.iotlbInvalidationDomainFallbacks).toBe(1);
    expect(s.iotlbInvalidationsRange).toBe(1);
    expect(s.iotlbInvalidationsFull).toBe(0);
    expect(cachedPfns(dom)).toEqual([]);
  });

  it('rejects an unknown driver and a MAMV outside the 6-bit field', () => {
    const machine = createMachine({ ramBytes: 16 * 2 ** 20 });
    expect(() => createIommu(machine, { mode: 'strict', driver: 'riscv' as IommuDriver })).toThrow(RangeError);
    expect(() => createIommu(machine, { mode: 'strict', maxAddressMask: 64 })).toThrow(RangeError);
    expect(() => createIommu(machine, { mode: 'strict', maxAddressMask: 1.5 })).toThrow(RangeError);
  });
});

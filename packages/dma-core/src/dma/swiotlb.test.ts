import { describe, expect, it } from 'vitest';
import {
  createMachine,
  DMA_ATTR_NO_WARN,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  dmaKernelLog,
  dmaMapPhys,
  dmaMappingError,
  dmaMaxMappingSize,
  dmaSetMinAlignMask,
  dmaUnmapPhys,
  IO_TLB_SEGSIZE,
  IO_TLB_SIZE,
  PAGE_SIZE,
  SZ_1G,
  SZ_4G,
  swiotlbMaxMappingSize,
  swiotlbTblMapSingle,
  swiotlbTblUnmapSingle,
} from '@dmakit/dma-core';

const HIGH = SZ_4G + 128 * 1024 * 1024;

describe('swiotlb', () => {
  it('fails immediately when full, warns unless NO_WARN, and accounts back to zero', () => {
    const m = createMachine({ ramBytes: 8 * SZ_1G, swiotlbBytes: 64 * 1024 });
    const dev = m.pci.addDevice({ name: 'legacy', dmaMaskBits: 32 });
    const total = m.swiotlb.stats().totalSlots;
    expect(total).toBe(32);
    const maps: number[] = [];
    for (let i = 0; i < 16; i++) {
      const dma = dmaMapPhys(dev, HIGH + i * PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE);
      expect(dmaMappingError(dev, dma)).toBe(0);
      maps.push(dma);
    }
    expect(m.swiotlb.stats().usedSlots).toBe(total);
    const fail = dmaMapPhys(dev, HIGH + 17 * PAGE_SIZE, 100, DMA_TO_DEVICE);
    expect(fail).toBe(DMA_MAPPING_ERROR);
    expect(dmaMappingError(dev, fail)).toBe(-12);
    expect(m.swiotlb.log.at(-1)).toMatch(/swiotlb buffer is full \(sz: 100 bytes\), total 32 \(slots\), used 32 \(slots\)/);
    expect(dmaKernelLog(m).some((l) => l.includes('swiotlb buffer is full'))).toBe(true);
    const logged = m.swiotlb.log.length;
    expect(dmaMapPhys(dev, HIGH, 100, DMA_TO_DEVICE, DMA_ATTR_NO_WARN)).toBe(DMA_MAPPING_ERROR);
    expect(m.swiotlb.log.length).toBe(logged);
    expect(m.swiotlb.stats().mapFailures).toBe(2);
    for (const dma of maps) dmaUnmapPhys(dev, dma, PAGE_SIZE, DMA_TO_DEVICE);
    const s = m.swiotlb.stats();
    expect(s.usedSlots).toBe(0);
    expect(s.highWaterSlots).toBe(total);
    // The free lists merged back: one maximal bounce fits again.
    const big = dmaMapPhys(dev, HIGH, 16 * PAGE_SIZE, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, big)).toBe(0);
    dmaUnmapPhys(dev, big, 16 * PAGE_SIZE, DMA_TO_DEVICE);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });

  it('a bounce never exceeds one 128-slot segment (256 KiB)', () => {
    const m = createMachine({ ramBytes: 8 * SZ_1G });
    const dev = m.pci.addDevice({ name: 'legacy', dmaMaskBits: 32 });
    expect(swiotlbMaxMappingSize(dev)).toBe(IO_TLB_SIZE * IO_TLB_SEGSIZE);
    expect(dmaMaxMappingSize(dev)).toBe(256 * 1024); // 32-bit device on 8 GiB: addressing limited
    const ok = dmaMapPhys(dev, HIGH, 256 * 1024, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, ok)).toBe(0);
    dmaUnmapPhys(dev, ok, 256 * 1024, DMA_TO_DEVICE);
    const tooBig = dmaMapPhys(dev, HIGH, 256 * 1024 + 1, DMA_TO_DEVICE, DMA_ATTR_NO_WARN);
    expect(tooBig).toBe(DMA_MAPPING_ERROR);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });

  it('page-sized bounces are page aligned; small ones only slot aligned', () => {
    const m = createMachine({ ramBytes: 8 * SZ_1G });
    const dev = m.pci.addDevice({ name: 'legacy', dmaMaskBits: 32 });
    const small = dmaMapPhys(dev, HIGH + 3, 100, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, small)).toBe(0);
    const page = dmaMapPhys(dev, HIGH + 5, PAGE_SIZE, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, page)).toBe(0);
    expect(small % IO_TLB_SIZE).toBe(0); // no min_align_mask: offset not preserved
    expect(page % PAGE_SIZE).toBe(0);
    dmaUnmapPhys(dev, small, 100, DMA_TO_DEVICE);
    dmaUnmapPhys(dev, page, PAGE_SIZE, DMA_TO_DEVICE);
  });

  it('preserves the min_align_mask bits of the original address (NVMe: 4 KiB - 1)', () => {
    const m = createMachine({ ramBytes: 8 * SZ_1G });
    const dev = m.pci.addDevice({ name: 'nvme', dmaMaskBits: 32 });
    dmaSetMinAlignMask(dev, PAGE_SIZE - 1);
    for (const off of [0, 0x10, 0x800, 0xa00, 0xffc]) {
      const data = m.rng.fill(new Uint8Array(3000));
      m.memory.write(HIGH + off, data);
      const dma = dmaMapPhys(dev, HIGH + off, data.length, DMA_TO_DEVICE);
      expect(dmaMappingError(dev, dma)).toBe(0);
      expect(dma % PAGE_SIZE).toBe(off);
      expect(dev.dmaRead(dma, data.length)).toEqual(data);
      dmaUnmapPhys(dev, dma, data.length, DMA_TO_DEVICE);
    }
    expect(m.swiotlb.stats().usedSlots).toBe(0);
    // min_align_mask shrinks the largest mapping.
    expect(swiotlbMaxMappingSize(dev)).toBe(256 * 1024 - PAGE_SIZE);
  });

  it('honours alloc_align_mask and the device segment boundary', () => {
    const m = createMachine({ ramBytes: 8 * SZ_1G });
    const dev = m.pci.addDevice({ name: 'iommu-user', dmaMaskBits: 32, segmentBoundaryMask: 64 * 1024 - 1 });
    const keep: number[] = [];
    for (let i = 0; i < 40; i++) {
      const tlb = swiotlbTblMapSingle(dev, HIGH + i * 8192, 3 * IO_TLB_SIZE + 5, 0xfff, DMA_FROM_DEVICE, 0);
      expect(tlb).not.toBe(DMA_MAPPING_ERROR);
      expect(tlb % PAGE_SIZE).toBe(0);
      // never crosses a 64 KiB boundary
      expect(Math.floor(tlb / 65536)).toBe(Math.floor((tlb + 4 * IO_TLB_SIZE - 1) / 65536));
      keep.push(tlb);
    }
    for (const tlb of keep) swiotlbTblUnmapSingle(dev, tlb, 3 * IO_TLB_SIZE + 5, DMA_FROM_DEVICE, 0);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });

  it('a release of something that is not a live bounce frees nothing', () => {
    const m = createMachine({ ramBytes: 8 * SZ_1G, dmaDebug: 'warn' });
    const dev = m.pci.addDevice({ name: 'legacy', dmaMaskBits: 32 });
    const a = dmaMapPhys(dev, HIGH, 2 * PAGE_SIZE, DMA_TO_DEVICE);
    dmaMappingError(dev, a);
    const used = m.swiotlb.stats().usedSlots;
    dmaUnmapPhys(dev, a + PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE); // middle of a mapping
    expect(m.swiotlb.stats().usedSlots).toBe(used);
    dmaUnmapPhys(dev, a, 2 * PAGE_SIZE, DMA_TO_DEVICE);
    dmaUnmapPhys(dev, a, 2 * PAGE_SIZE, DMA_TO_DEVICE); // double unmap
    expect(m.swiotlb.stats().usedSlots).toBe(0);
    expect(m.dmaDebug.reports.map((r) => r.rule)).toContain('unmap-not-mapped');
  });
});

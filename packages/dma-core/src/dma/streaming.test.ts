import { describe, expect, it } from 'vitest';
import {
  createMachine,
  DMA_ATTR_MMIO,
  DMA_ATTR_SKIP_CPU_SYNC,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  dmaMapPage,
  dmaMapPhys,
  dmaMappingError,
  dmaMapResource,
  dmaMapSingle,
  dmaNeedSync,
  dmaSyncSingleForCpu,
  dmaSyncSingleForDevice,
  dmaSyncSingleRangeForCpu,
  dmaUnmapPhys,
  dmaUnmapSingle,
  IO_TLB_SIZE,
  PAGE_SIZE,
  SZ_1G,
  SZ_4G,
} from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';

const HIGH = SZ_4G + 64 * 1024 * 1024; // RAM above 4 GiB (RAM is [0, 3G) + [4G, ...))

function setup(opts: { swiotlbBytes?: number } = {}): { m: Machine; dev32: Device; dev64: Device } {
  const m = createMachine({ ramBytes: 8 * SZ_1G, ...opts });
  const dev32 = m.pci.addDevice({ name: 'legacy32', dmaMaskBits: 32 });
  const dev64 = m.pci.addDevice({ name: 'nic64', dmaMaskBits: 64 });
  return { m, dev32, dev64 };
}

function pattern(m: Machine, n: number): Uint8Array {
  return m.rng.fill(new Uint8Array(n));
}

describe('dma-direct streaming mappings', () => {
  it('maps a reachable buffer 1:1 without bouncing', () => {
    const { m, dev64 } = setup();
    const phys = m.memory.allocPages(1);
    const data = pattern(m, 5000);
    m.memory.write(phys + 7, data);
    const dma = dmaMapPhys(dev64, phys + 7, data.length, DMA_TO_DEVICE);
    expect(dmaMappingError(dev64, dma)).toBe(0);
    expect(dma).toBe(phys + 7);
    expect(dev64.dmaRead(dma, data.length)).toEqual(data);
    dmaUnmapPhys(dev64, dma, data.length, DMA_TO_DEVICE);
    expect(m.swiotlb.stats().bounces).toBe(0);
    expect(dev64.dmaSkipSync).toBe(true);
  });

  it('applies the dma_range_map offset', () => {
    const m = createMachine({ ramBytes: SZ_1G });
    const dev = m.pci.addDevice({ name: 'off', dmaMaskBits: 40, dmaRangeOffset: 0x1000_0000 });
    const phys = m.memory.allocPages(0);
    const dma = dmaMapPhys(dev, phys, 64, DMA_BIDIRECTIONAL);
    expect(dmaMappingError(dev, dma)).toBe(0);
    expect(dma).toBe(phys + 0x1000_0000);
    dmaUnmapPhys(dev, dma, 64, DMA_BIDIRECTIONAL);
  });

  it('TO_DEVICE above 4 GiB on a 32-bit device bounces; the device reads the CPU bytes', () => {
    const { m, dev32 } = setup();
    const data = pattern(m, 3 * PAGE_SIZE + 123);
    m.memory.write(HIGH + 5, data);
    const dma = dmaMapPhys(dev32, HIGH + 5, data.length, DMA_TO_DEVICE);
    expect(dmaMappingError(dev32, dma)).toBe(0);
    expect(dma).toBeLessThan(SZ_4G);
    expect(m.swiotlb.isSwiotlbBuffer(dma)).toBe(true);
    expect(dev32.dmaSkipSync).toBe(false); // first bounce clears dma_skip_sync
    expect(dmaNeedSync(dev32, dma)).toBe(true);
    expect(dev32.dmaRead(dma, data.length)).toEqual(data);
    // The device scribbling on a TO_DEVICE bounce buffer never reaches the CPU copy.
    dev32.dmaWrite(dma, new Uint8Array(16).fill(0xee));
    dmaUnmapPhys(dev32, dma, data.length, DMA_TO_DEVICE);
    expect(m.memory.read(HIGH + 5, data.length)).toEqual(data);
    const s = m.swiotlb.stats();
    expect(s.usedSlots).toBe(0);
    expect(s.bounces).toBe(1);
    expect(s.highWaterSlots).toBe(Math.ceil(data.length / IO_TLB_SIZE));
  });

  it('FROM_DEVICE: the CPU sees device writes only after sync_for_cpu or unmap', () => {
    const { m, dev32 } = setup();
    const len = 2 * PAGE_SIZE;
    const old = pattern(m, len);
    m.memory.write(HIGH, old);
    const dma = dmaMapPhys(dev32, HIGH, len, DMA_FROM_DEVICE);
    expect(dmaMappingError(dev32, dma)).toBe(0);
    // Map copies orig → bounce for every direction: a partial device write keeps the old bytes.
    expect(dev32.dmaRead(dma, len)).toEqual(old);
    const first = pattern(m, 100);
    dev32.dmaWrite(dma, first);
    expect(m.memory.read(HIGH, 100)).toEqual(old.subarray(0, 100));
    dmaSyncSingleForCpu(dev32, dma, len, DMA_FROM_DEVICE);
    expect(m.memory.read(HIGH, 100)).toEqual(first);
    const second = pattern(m, 50);
    dev32.dmaWrite(dma + 1000, second);
    dmaSyncSingleRangeForCpu(dev32, dma, 1000, 50, DMA_FROM_DEVICE);
    expect(m.memory.read(HIGH + 1000, 50)).toEqual(second);
    const third = pattern(m, len);
    dev32.dmaWrite(dma, third);
    expect(m.memory.read(HIGH + 200, 10)).not.toEqual(third.subarray(200, 210));
    // sync_for_device on a FROM_DEVICE mapping copies nothing
    dmaSyncSingleForDevice(dev32, dma, len, DMA_FROM_DEVICE);
    expect(dev32.dmaRead(dma, len)).toEqual(third);
    dmaUnmapPhys(dev32, dma, len, DMA_FROM_DEVICE);
    expect(m.memory.read(HIGH, len)).toEqual(third);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });

  it('BIDIRECTIONAL: round trip with both syncs', () => {
    const { m, dev32 } = setup();
    const len = PAGE_SIZE;
    const a = pattern(m, len);
    m.memory.write(HIGH, a);
    const dma = dmaMapPhys(dev32, HIGH, len, DMA_BIDIRECTIONAL);
    expect(dmaMappingError(dev32, dma)).toBe(0);
    expect(dev32.dmaRead(dma, len)).toEqual(a);
    const b = a.map((x) => x ^ 0xff);
    dev32.dmaWrite(dma, b);
    dmaSyncSingleForCpu(dev32, dma, len, DMA_BIDIRECTIONAL);
    expect(m.memory.read(HIGH, len)).toEqual(b);
    const c = pattern(m, len);
    m.memory.write(HIGH, c);
    expect(dev32.dmaRead(dma, len)).toEqual(b);
    dmaSyncSingleForDevice(dev32, dma, len, DMA_BIDIRECTIONAL);
    expect(dev32.dmaRead(dma, len)).toEqual(c);
    dmaUnmapPhys(dev32, dma, len, DMA_BIDIRECTIONAL);
    expect(m.memory.read(HIGH, len)).toEqual(c);
  });

  it('SKIP_CPU_SYNC: unmap does not copy back', () => {
    const { m, dev32 } = setup();
    const old = pattern(m, 512);
    m.memory.write(HIGH, old);
    const dma = dmaMapPhys(dev32, HIGH, 512, DMA_FROM_DEVICE, DMA_ATTR_SKIP_CPU_SYNC);
    expect(dmaMappingError(dev32, dma)).toBe(0);
    expect(dev32.dmaRead(dma, 512)).toEqual(old); // the map-time copy still happens
    dev32.dmaWrite(dma, new Uint8Array(512).fill(7));
    dmaUnmapPhys(dev32, dma, 512, DMA_FROM_DEVICE, DMA_ATTR_SKIP_CPU_SYNC);
    expect(m.memory.read(HIGH, 512)).toEqual(old);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });

  it('forceSwiotlb bounces even reachable memory; MMIO cannot be mapped then', () => {
    const m = createMachine({ ramBytes: SZ_1G });
    const dev = m.pci.addDevice({ name: 'coco', dmaMaskBits: 64, forceSwiotlb: true });
    const phys = m.memory.allocPages(0);
    const dma = dmaMapPhys(dev, phys, 100, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    expect(m.swiotlb.isSwiotlbBuffer(dma)).toBe(true);
    dmaUnmapPhys(dev, dma, 100, DMA_TO_DEVICE);
    expect(dmaMapPhys(dev, phys, 100, DMA_TO_DEVICE, DMA_ATTR_MMIO)).toBe(DMA_MAPPING_ERROR);
  });

  it('overflow without swiotlb fails with DMA_MAPPING_ERROR; MMIO never bounces', () => {
    const { m, dev32 } = setup({ swiotlbBytes: 0 });
    expect(m.swiotlb.stats().active).toBe(false);
    const dma = dmaMapPhys(dev32, HIGH, 100, DMA_TO_DEVICE);
    expect(dma).toBe(DMA_MAPPING_ERROR);
    expect(dmaMappingError(dev32, dma)).toBe(-12);
    const m2 = setup().m;
    const d2 = m2.pci.device('legacy32');
    expect(d2).toBeDefined();
    if (d2 !== undefined) expect(dmaMapResource(d2, HIGH, 100, DMA_TO_DEVICE)).toBe(DMA_MAPPING_ERROR);
  });

  it('map_page / map_single wrappers, and map_page refuses MMIO', () => {
    const { m, dev64 } = setup();
    const phys = m.memory.allocPages(0);
    const d1 = dmaMapPage(dev64, phys, 16, 32, DMA_TO_DEVICE);
    expect(dmaMappingError(dev64, d1)).toBe(0);
    expect(d1).toBe(phys + 16);
    dmaUnmapPhys(dev64, d1, 32, DMA_TO_DEVICE);
    const d2 = dmaMapSingle(dev64, phys + 100, 32, DMA_TO_DEVICE);
    expect(dmaMappingError(dev64, d2)).toBe(0);
    expect(d2).toBe(phys + 100);
    dmaUnmapSingle(dev64, d2, 32, DMA_TO_DEVICE);
    expect(dmaMapPage(dev64, phys, 0, 32, DMA_TO_DEVICE, DMA_ATTR_MMIO)).toBe(DMA_MAPPING_ERROR);
  });
});

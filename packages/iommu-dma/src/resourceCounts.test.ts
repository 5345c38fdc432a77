import { describe, expect, it } from 'vitest';
import { DMA_FROM_DEVICE, createMachine, dmaMapPhys, dmaMappingError, dmaUnmapPhys, resourceCountChanges } from '@dmakit/dma-core';
import { createIommu } from './index.js';

describe('iommu resource counts (what fail_nth sweeps compare)', () => {
  it('machine.resourceCounts() holds the IOVA granules and IO page-table pages a mapping takes, back to the start after unmap', () => {
    const m = createMachine({ ramBytes: 256 * 1024 * 1024 });
    const iommu = createIommu(m, { mode: 'strict' });
    const dev = m.pci.addDevice({ name: 'nic0', dmaMaskBits: 64 });
    iommu.attachDevice(dev);
    const start = m.resourceCounts();
    expect(start).toMatchObject({ iovaGranules: 0, iopgtablePages: 0 });
    const phys = m.memory.allocPages(2);
    const dma = dmaMapPhys(dev, phys, 4 * 4096, DMA_FROM_DEVICE, 0);
    expect(dmaMappingError(dev, dma)).toBe(0);
    const mapped = m.resourceCounts();
    expect(mapped.iovaGranules).toBe(4);
    expect(mapped.iopgtablePages).toBeGreaterThan(0); // the levels below the root
    expect(iommu.resourceCounts()).toEqual({ iovaGranules: 4, iopgtablePages: mapped.iopgtablePages });
    dmaUnmapPhys(dev, dma, 4 * 4096, DMA_FROM_DEVICE, 0);
    m.memory.freePages(phys, 2);
    // The freed range sits in an rcache: cached, not held by a user.
    expect(resourceCountChanges(start, m.resourceCounts())).toEqual([]);
  });

  it('counts IOVAs a lazy domain still holds in its flush queue until the queue drains', () => {
    const m = createMachine({ ramBytes: 256 * 1024 * 1024 });
    const iommu = createIommu(m, { mode: 'lazy' });
    const dev = m.pci.addDevice({ name: 'nic0', dmaMaskBits: 64 });
    iommu.attachDevice(dev);
    const start = m.resourceCounts();
    const phys = m.memory.allocPages(0);
    const dma = dmaMapPhys(dev, phys, 4096, DMA_FROM_DEVICE, 0);
    expect(dmaMappingError(dev, dma)).toBe(0);
    dmaUnmapPhys(dev, dma, 4096, DMA_FROM_DEVICE, 0);
    m.memory.freePages(phys, 0);
    expect(m.resourceCounts().iovaGranules).toBe(1);
    iommu.flushQueues();
    expect(resourceCountChanges(start, m.resourceCounts())).toEqual([]);
  });
});

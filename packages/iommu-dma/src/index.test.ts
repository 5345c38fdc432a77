import { describe, expect, it } from 'vitest';
import { DMA_BIDIRECTIONAL, DmaIovaState, createMachine, dmaIovaLink, dmaIovaSync, dmaIovaTryAlloc, dmaIovaDestroy, dmaMapPhys, dmaMappingError, dmaUnmapPhys } from '@dmakit/dma-core';
import * as pkg from './index.js';

const SZ_4K = 4096;

describe('@dmakit/iommu-dma public surface', () => {
  it('exports the IOMMU, the domain API, the IOVA allocator and the ops', () => {
    for (const name of ['createIommu', 'IommuDomain', 'iommuMap', 'iommuMapNosync', 'iommuSyncMap', 'iommuUnmap', 'iommuUnmapFast', 'iommuIovaToPhys', 'IovaDomain', 'IommuDmaOps', 'FlushQueue', 'Iotlb', 'IoPageTable']) {
      expect(pkg).toHaveProperty(name);
    }
  });
});

// Through dma-core's front end (dmaMapPhys, dmaIovaTryAlloc, ...): needs dma/mapping.ts and dma/iova.ts.
describe('through the DMA API front end', () => {
  it('two-step vs per-page: 1 IOVA allocation and 1 sync for 512 pages, against 512 of each', () => {
    const machine = createMachine({ ramBytes: 256 * 2 ** 20 });
    const iommu = pkg.createIommu(machine, { mode: 'strict' });
    const dev = machine.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
    iommu.attachDevice(dev);
    const pages = Array.from({ length: 512 }, () => machine.memory.allocPages(0));
    const s0 = iommu.stats();
    const state = new DmaIovaState();
    expect(dmaIovaTryAlloc(dev, state, 0, 512 * SZ_4K)).toBe(true);
    pages.forEach((p, i) => {
      expect(dmaIovaLink(dev, state, p, i * SZ_4K, SZ_4K, DMA_BIDIRECTIONAL, 0)).toBe(0);
    });
    expect(dmaIovaSync(dev, state, 0, 512 * SZ_4K)).toBe(0);
    const s1 = iommu.stats();
    expect(s1.iovaAllocs - s0.iovaAllocs).toBe(1);
    expect(s1.iotlbSyncMaps - s0.iotlbSyncMaps).toBe(1);
    dmaIovaDestroy(dev, state, 512 * SZ_4K, DMA_BIDIRECTIONAL, 0);
    const dmas = pages.map((p) => dmaMapPhys(dev, p, SZ_4K, DMA_BIDIRECTIONAL, 0));
    dmas.forEach((d) => {
      expect(dmaMappingError(dev, d)).toBe(0);
    });
    const s2 = iommu.stats();
    expect(s2.iovaAllocs - s1.iovaAllocs).toBe(512);
    expect(s2.iotlbSyncMaps - s1.iotlbSyncMaps).toBe(512);
    dmas.forEach((d) => {
      dmaUnmapPhys(dev, d, SZ_4K, DMA_BIDIRECTIONAL, 0);
    });
  });
});

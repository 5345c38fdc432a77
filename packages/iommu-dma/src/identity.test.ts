// IOMMU_DOMAIN_IDENTITY (pass-through, iommu=pt): drivers/iommu/iommu.c gives the device a 1:1
// domain and drivers/iommu/dma-iommu.c leaves its DMA API on dma-direct (dev->dma_iommu false).
import { describe, expect, it } from 'vitest';
import { DMA_BIDIRECTIONAL, createMachine, dmaMapPhys, dmaMappingError, dmaUnmapPhys } from '@dmakit/dma-core';
import { createIommu } from './index.js';

function rig() {
  const machine = createMachine({ ramBytes: 64 * 2 ** 20 });
  const iommu = createIommu(machine, { mode: 'strict' });
  return { machine, iommu };
}

describe('identity (pass-through) domain', () => {
  it('the DMA API is dma-direct: the DMA address is the physical address, bytes move, the IOMMU does no work', () => {
    const { machine, iommu } = rig();
    const nic = machine.pci.addDevice({ name: 'nic0', dmaMaskBits: 64 });
    const idm = iommu.attachDeviceIdentity(nic);
    expect(idm.type).toBe('identity');
    expect(iommu.isIdentity(nic)).toBe(true);
    expect(nic.dmaOps).toBeNull();
    const phys = machine.memory.allocPages(0);
    const dma = dmaMapPhys(nic, phys, 4096, DMA_BIDIRECTIONAL, 0);
    expect(dmaMappingError(nic, dma)).toBe(0);
    expect(dma).toBe(phys);
    nic.dmaWrite(dma + 8, new Uint8Array([1, 2, 3]));
    expect([...machine.memory.read(phys + 8, 3)]).toEqual([1, 2, 3]);
    dmaUnmapPhys(nic, dma, 4096, DMA_BIDIRECTIONAL, 0);
    expect(idm.iovaToPhys(phys + 5)).toBe(phys + 5);
    // The same counters as the other modes, all zero for IOMMU work.
    const s = iommu.stats();
    expect(s.domains).toBe(1);
    expect(s).toMatchObject({ maps: 0, unmaps: 0, pteWrites: 0, iotlbSyncs: 0, iotlbInvalidationsRange: 0, iotlbHits: 0, iotlbMisses: 0, faults: 0, simulatedNs: 0 });
    expect(Object.keys(idm.stats()).sort()).toEqual(Object.keys(iommu.allocDomain().stats()).sort());
  });

  it('a device moves between a DMA domain and pass-through; untrusted devices are refused', () => {
    const { machine, iommu } = rig();
    const dev = machine.pci.addDevice({ name: 'dev0', dmaMaskBits: 64 });
    const phys = machine.memory.allocPages(0);
    iommu.attachDevice(dev);
    const iova = dmaMapPhys(dev, phys, 4096, DMA_BIDIRECTIONAL, 0);
    expect(dmaMappingError(dev, iova)).toBe(0);
    expect(iommu.stats().maps).toBe(1);
    dmaUnmapPhys(dev, iova, 4096, DMA_BIDIRECTIONAL, 0);
    expect(() => iommu.attachDeviceIdentity(dev)).toThrow(RangeError); // still attached
    iommu.detachDevice(dev);
    iommu.attachDeviceIdentity(dev);
    expect(() => iommu.attachDevice(dev)).toThrow(RangeError);
    const direct = dmaMapPhys(dev, phys, 4096, DMA_BIDIRECTIONAL, 0);
    expect(dmaMappingError(dev, direct)).toBe(0);
    expect(direct).toBe(phys);
    dmaUnmapPhys(dev, direct, 4096, DMA_BIDIRECTIONAL, 0);
    iommu.detachDevice(dev);
    expect(iommu.isIdentity(dev)).toBe(false);
    const tb = machine.pci.addDevice({ name: 'tb0', dmaMaskBits: 64, untrusted: true });
    expect(() => iommu.attachDeviceIdentity(tb)).toThrow(RangeError);
  });
});

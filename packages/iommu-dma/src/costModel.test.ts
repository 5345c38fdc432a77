import { describe, expect, it } from 'vitest';
import { DMA_BIDIRECTIONAL, createMachine, dmaMapPhys, dmaMappingError, dmaUnmapPhys } from '@dmakit/dma-core';
import { IOMMU_DEFAULT_COST_MODEL, createIommu, iommuSimulatedNs } from './index.js';

function mapUnmapRounds(mode: 'strict' | 'lazy', rounds: number) {
  const machine = createMachine({ ramBytes: 256 * 2 ** 20 });
  const iommu = createIommu(machine, { mode });
  const dev = machine.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
  iommu.attachDevice(dev);
  const p = machine.memory.allocPages(0);
  for (let i = 0; i < rounds; i++) {
    const d = dmaMapPhys(dev, p, 4096, DMA_BIDIRECTIONAL, 0);
    expect(dmaMappingError(dev, d)).toBe(0);
    dmaUnmapPhys(dev, d, 4096, DMA_BIDIRECTIONAL, 0);
  }
  iommu.flushQueues();
  return iommu.stats();
}

describe('IOMMU cost model', () => {
  it('is a pure function of the counters', () => {
    const c = { iovaAllocs: 10, rcacheHits: 4, iovaFrees: 10, pteWrites: 20, iotlbSyncMaps: 10, iotlbInvalidationsRange: 3, iotlbInvalidationsFull: 1, fqQueued: 7, iotlbWalks: 5 };
    const m = IOMMU_DEFAULT_COST_MODEL;
    expect(iommuSimulatedNs(c)).toBe(
      6 * m.iovaTreeAllocNs + 4 * m.iovaRcacheHitNs + 10 * m.iovaFreeNs + 20 * m.pteWriteNs + 10 * m.iotlbSyncMapNs + 3 * m.iotlbInvalidateRangeNs + m.iotlbInvalidateFullNs + 7 * m.fqQueueNs + 5 * m.iotlbWalkNs,
    );
    // Each counted event adds its own price and nothing else.
    expect(iommuSimulatedNs({ ...c, fqQueued: 8 }) - iommuSimulatedNs(c)).toBe(m.fqQueueNs);
    expect(iommuSimulatedNs({ ...c, iotlbWalks: 6 }) - iommuSimulatedNs(c)).toBe(m.iotlbWalkNs);
  });

  it('strict 4 KiB map+unmap costs one ranged invalidation per op; lazy amortises full flushes and is cheaper', () => {
    const strict = mapUnmapRounds('strict', 2000);
    const lazy = mapUnmapRounds('lazy', 2000);
    expect(strict.iotlbInvalidationsRange).toBe(2000);
    expect(lazy.iotlbInvalidationsRange).toBe(0);
    // 2000 entries through a 256-slot per-CPU ring: a full flush every 255 queued IOVAs (+ the final one).
    expect(lazy.iotlbInvalidationsFull).toBeGreaterThanOrEqual(Math.floor(2000 / 256));
    expect(lazy.iotlbInvalidationsFull).toBeLessThan(20);
    expect(strict.simulatedNs).toBe(iommuSimulatedNs(strict));
    expect(lazy.simulatedNs).toBeLessThan(strict.simulatedNs / 3);
    // Lazy pays queue_iova once per unmap; strict never queues.
    expect(lazy.fqQueued).toBe(2000);
    expect(strict.fqQueued).toBe(0);
  });

  it('counts an IOTLB walk for each device access through an IOVA whose entry was invalidated', () => {
    for (const mode of ['strict', 'lazy'] as const) {
      const machine = createMachine({ ramBytes: 64 * 2 ** 20 });
      const iommu = createIommu(machine, { mode });
      const dev = machine.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
      iommu.attachDevice(dev);
      const p = machine.memory.allocPages(0);
      const buf = new Uint8Array(8);
      const rounds = 600; // more than one 256-entry flush queue: lazy reuses IOVAs after full flushes
      const before = iommu.stats();
      for (let i = 0; i < rounds; i++) {
        const d = dmaMapPhys(dev, p, 4096, DMA_BIDIRECTIONAL, 0);
        expect(dmaMappingError(dev, d)).toBe(0);
        dev.dmaReadInto(d, buf); // a miss: walk and fill
        dev.dmaReadInto(d, buf); // a hit
        dmaUnmapPhys(dev, d, 4096, DMA_BIDIRECTIONAL, 0);
      }
      const after = iommu.stats();
      expect(after.iotlbWalks - before.iotlbWalks).toBe(rounds);
      expect(after.iotlbHits - before.iotlbHits).toBe(rounds);
      const m = iommu.costModel;
      // The walks are priced: the same counters without them cost exactly rounds * iotlbWalkNs less.
      expect(iommuSimulatedNs(after) - iommuSimulatedNs({ ...after, iotlbWalks: before.iotlbWalks })).toBe(rounds * m.iotlbWalkNs);
    }
  });

  it('takes overrides and refuses nonsense', () => {
    const machine = createMachine({ ramBytes: 64 * 2 ** 20 });
    const iommu = createIommu(machine, { mode: 'strict', costModel: { iotlbInvalidateRangeNs: 0 } });
    expect(iommu.costModel.iotlbInvalidateRangeNs).toBe(0);
    expect(iommu.costModel.pteWriteNs).toBe(IOMMU_DEFAULT_COST_MODEL.pteWriteNs);
    expect(() => createIommu(machine, { mode: 'strict', costModel: { pteWriteNs: -1 } })).toThrow(RangeError);
    expect(() => createIommu(machine, { mode: 'strict', costModel: { pteWriteNs: Number.NaN } })).toThrow(RangeError);
  });
});

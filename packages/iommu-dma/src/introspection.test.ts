import { describe, expect, it } from 'vitest';
import { DMA_FROM_DEVICE, createMachine, dmaMapPhys, dmaMappingError, dmaUnmapPhys } from '@dmakit/dma-core';
import type { TraceEvent } from '@dmakit/dma-core';
import { IOMMU_READ, IOMMU_WRITE, createIommu, iommuDeviceList, iommuMap, iommuUnmap } from './index.js';

const SZ_4K = 4096;
const SZ_2M = 2 ** 21;

describe('read-only views for visualisers', () => {
  it('iommuDeviceList lists the IOMMUs created on a machine, and only those', () => {
    const m1 = createMachine({ ramBytes: 64 * 2 ** 20 });
    const m2 = createMachine({ ramBytes: 64 * 2 ** 20 });
    expect(iommuDeviceList(m1)).toEqual([]);
    const a = createIommu(m1, { mode: 'strict' });
    const b = createIommu(m1, { mode: 'lazy' });
    const c = createIommu(m2, { mode: 'strict' });
    expect(iommuDeviceList(m1)).toEqual([a, b]);
    expect(iommuDeviceList(m2)).toEqual([c]);
  });

  it('IoPageTable.occupancy counts tables, entries and 4K vs 2M leaves per level, and tables freed', () => {
    const machine = createMachine({ ramBytes: 64 * 2 ** 20 });
    const domain = createIommu(machine, { mode: 'strict' }).allocDomain();
    const empty = domain.pgtable.occupancy();
    expect(empty.levels.map((l) => l.tables)).toEqual([1, 0, 0, 0]);
    expect(empty.levels.map((l) => l.entries)).toEqual([0, 0, 0, 0]);
    expect(iommuMap(domain, SZ_2M, SZ_2M, SZ_2M, IOMMU_READ | IOMMU_WRITE)).toBe(0); // one 2 MiB leaf
    expect(iommuMap(domain, 4 * SZ_2M, 0x10000, 3 * SZ_4K, IOMMU_READ)).toBe(0); // three 4 KiB leaves
    const o = domain.pgtable.occupancy();
    expect(o.levels.map((l) => l.level)).toEqual([3, 2, 1, 0]);
    expect(o.levels.map((l) => l.tables)).toEqual([1, 1, 1, 1]);
    expect(o.levels.map((l) => l.leaves)).toEqual([0, 0, 1, 3]);
    expect(o.levels.map((l) => l.entries)).toEqual([1, 1, 2, 3]);
    expect(o.levels[2]?.entrySize).toBe(SZ_2M);
    expect(o.tablePagesLive).toBe(4);
    expect(o.entriesPerTable).toBe(512);
    expect(iommuUnmap(domain, 4 * SZ_2M, 3 * SZ_4K)).toBe(3 * SZ_4K);
    const after = domain.pgtable.occupancy();
    expect(after.levels.map((l) => l.leaves)).toEqual([0, 0, 1, 0]);
    expect(after.levels[3]?.tables).toBe(0); // the emptied leaf table was freed
    expect(after.tablePagesLive).toBe(3);
    expect(after.tablePagesPeak).toBe(4);
  });

  it('Iotlb.validEntries lists cached translations without counting a lookup', () => {
    const machine = createMachine({ ramBytes: 64 * 2 ** 20 });
    const iommu = createIommu(machine, { mode: 'strict' });
    const dev = machine.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
    iommu.attachDevice(dev);
    const p = machine.memory.allocPages(0);
    const dma = dmaMapPhys(dev, p, SZ_4K, DMA_FROM_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    dev.dmaWrite(dma, new Uint8Array([1]));
    const tlb = iommu.domainOf(dev)!.iotlb;
    const before = { ...tlb.stats };
    expect(tlb.validEntries()).toEqual({ pfns: [dma / SZ_4K], phys: [p] });
    expect(tlb.stats).toEqual(before);
  });

  it('lazy unmap traces iommu:queue_iova, and the flush queue ends the window with iommu:flush_iotlb_all', () => {
    const machine = createMachine({ ramBytes: 64 * 2 ** 20 });
    const iommu = createIommu(machine, { mode: 'lazy' });
    const dev = machine.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
    const domain = iommu.attachDevice(dev);
    const events: TraceEvent[] = [];
    machine.trace.subscribe((ev) => events.push(ev), { events: ['iommu:queue_iova', 'iommu:flush_iotlb_all', 'iommu:stale_iotlb_access'] });
    const p = machine.memory.allocPages(0);
    const dma = dmaMapPhys(dev, p, SZ_4K, DMA_FROM_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    dev.dmaWrite(dma, new Uint8Array([1]));
    dmaUnmapPhys(dev, dma, SZ_4K, DMA_FROM_DEVICE);
    dev.dmaWrite(dma, new Uint8Array([2])); // through the stale entry
    iommu.flushQueues();
    expect(events.map((e) => e.name)).toEqual(['iommu:queue_iova', 'iommu:stale_iotlb_access', 'iommu:flush_iotlb_all']);
    expect(events[0]).toMatchObject({ device: domain.name, fields: { iova: dma, size: SZ_4K } });
    expect(events[2]).toMatchObject({ device: domain.name, fields: { type: 'lazy' } });
  });

  it('strict unmap queues nothing', () => {
    const machine = createMachine({ ramBytes: 64 * 2 ** 20 });
    const iommu = createIommu(machine, { mode: 'strict' });
    const dev = machine.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
    iommu.attachDevice(dev);
    const names: string[] = [];
    machine.trace.subscribe((ev) => names.push(ev.name), { events: ['iommu:queue_iova', 'iommu:flush_iotlb_all'] });
    const p = machine.memory.allocPages(0);
    const dma = dmaMapPhys(dev, p, SZ_4K, DMA_FROM_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    dmaUnmapPhys(dev, dma, SZ_4K, DMA_FROM_DEVICE);
    expect(names).toEqual([]);
  });
});

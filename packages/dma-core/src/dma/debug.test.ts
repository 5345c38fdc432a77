import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createMachine,
  DMA_ATTR_DEBUGGING_IGNORE_CACHELINES,
  DMA_ATTR_MMIO,
  DMA_ATTR_SKIP_CPU_SYNC,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  DmaDebugError,
  DmaIovaState,
  MapErrType,
  SG_DMA_BUS_ADDRESS,
  SgTable,
} from '@dmakit/dma-core';
import type { DmaDebugMode, DmaDebugRule, DmaMapOps } from '@dmakit/dma-core';
import { dmaDebugBalancedProperty, dmaDebugIovaLinkProperty } from '../testing/properties.js';

function setup(mode: DmaDebugMode = 'warn') {
  const m = createMachine({ dmaDebug: mode });
  const dev = m.pci.addDevice({ name: 'dev0', dmaMaskBits: 64 });
  return { m, dev, dbg: m.dmaDebug };
}

/** An SgTable already "mapped": [phys, len, dmaAddr, dmaLen] per entry (identity segments). */
function mappedSg(segs: readonly (readonly [number, number, number, number])[]): SgTable {
  const sgt = new SgTable(Math.max(segs.length, 1));
  segs.forEach(([p, l, d, dl], i) => {
    sgt.push(p, l);
    sgt.dmaAddress[i] = d;
    sgt.dmaLength[i] = dl;
  });
  return sgt;
}

const A = 0x10_0000;

function rules(dbg: { reports: readonly { rule: DmaDebugRule }[] }): DmaDebugRule[] {
  return dbg.reports.map((r) => r.rule);
}

describe('dma-debug: streaming single mappings', () => {
  it('a correct map / mapping_error / sync / unmap sequence reports nothing and leaves no entry', () => {
    const { dbg, dev } = setup('strict');
    dbg.mapPhys(dev, A, 4096, DMA_FROM_DEVICE, A, 0);
    expect(dbg.entries).toBe(1);
    dbg.mappingError(dev, A);
    dbg.syncSingleForCpu(dev, A + 512, 512, DMA_FROM_DEVICE);
    dbg.syncSingleForDevice(dev, A, 4096, DMA_FROM_DEVICE);
    dbg.unmapPhys(dev, A, 4096, DMA_FROM_DEVICE);
    expect(dbg.entries).toBe(0);
    expect(dbg.reports).toEqual([]);
  });

  it('1: unmap of DMA_MAPPING_ERROR', () => {
    const { dbg, dev } = setup();
    dbg.unmapPhys(dev, DMA_MAPPING_ERROR, 4096, DMA_TO_DEVICE);
    expect(dbg.reports[0]).toMatchObject({ rule: 'unmap-error-address', device: 'dev0', unmapped: { size: 4096, type: 'phy' } });
    expect(dbg.reports[0]?.message).toContain('invalid DMA memory address');
  });

  it('2: unmap of an address never mapped, and double unmap', () => {
    const { dbg, dev } = setup();
    dbg.unmapPhys(dev, A, 4096, DMA_TO_DEVICE);
    expect(dbg.reports[0]).toMatchObject({ rule: 'unmap-not-mapped', device: 'dev0', unmapped: { dmaAddr: A, size: 4096 } });
    expect(dbg.reports[0]?.message).toBe('device driver tries to free DMA memory it has not allocated [device address=0x0000000000100000] [size=4096 bytes]');
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.mappingError(dev, A);
    dbg.unmapPhys(dev, A, 4096, DMA_TO_DEVICE);
    dbg.unmapPhys(dev, A, 4096, DMA_TO_DEVICE);
    expect(rules(dbg)).toEqual(['unmap-not-mapped', 'unmap-not-mapped']);
  });

  it('another device cannot unmap my mapping', () => {
    const { m, dbg, dev } = setup();
    const other = m.pci.addDevice({ name: 'dev1', dmaMaskBits: 64 });
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.mappingError(dev, A);
    dbg.unmapPhys(other, A, 4096, DMA_TO_DEVICE);
    expect(dbg.reports[0]).toMatchObject({ rule: 'unmap-not-mapped', device: 'dev1' });
    expect(dbg.entries).toBe(1);
  });

  it('3: size mismatch carries both sides and the origin', () => {
    const { m, dbg, dev } = setup();
    m.clock.advanceTo(1234);
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0, 'dma_map_page');
    dbg.mappingError(dev, A);
    dbg.unmapPhys(dev, A, 2048, DMA_TO_DEVICE);
    const r = dbg.reports[0];
    expect(r).toMatchObject({
      rule: 'size-mismatch',
      device: 'dev0',
      mapped: { size: 4096, type: 'phy', dir: DMA_TO_DEVICE, paddr: A },
      unmapped: { size: 2048, type: 'phy' },
      origin: { call: 'dma_map_page', time: 1234 },
    });
    expect(r?.message).toContain('[map size=4096 bytes] [unmap size=2048 bytes]');
    expect(dbg.entries).toBe(0);
  });

  it('4: type mismatch (mapped as phy, unmapped as sg; mapped as phy, freed as coherent)', () => {
    const { dbg, dev } = setup();
    dbg.mapPhys(dev, A, 4096, DMA_BIDIRECTIONAL, A, 0);
    dbg.mappingError(dev, A);
    dbg.unmapSg(dev, mappedSg([[A, 4096, A, 4096]]), 1, DMA_BIDIRECTIONAL);
    expect(dbg.reports[0]).toMatchObject({ rule: 'type-mismatch', mapped: { type: 'phy' }, unmapped: { type: 'sg' } });
    expect(dbg.reports[0]?.message).toContain('[mapped as phy] [unmapped as scatter-gather]');
    // As in the kernel, the sg side also disagrees on sg_call_ents (1 vs 0).
    expect(rules(dbg)).toEqual(['type-mismatch', 'nents-mismatch']);

    dbg.mapPhys(dev, A, 4096, DMA_BIDIRECTIONAL, A, 0);
    dbg.mappingError(dev, A);
    dbg.freeCoherent(dev, 4096, A, A);
    expect(dbg.reports[2]).toMatchObject({ rule: 'type-mismatch', mapped: { type: 'phy' }, unmapped: { type: 'coherent' } });
  });

  it('5: coherent free with a different CPU address', () => {
    const { dbg, dev } = setup();
    dbg.allocCoherent(dev, 8192, 0xf000_0000, A, 0);
    dbg.freeCoherent(dev, 8192, A + 4096, 0xf000_0000);
    expect(dbg.reports[0]).toMatchObject({
      rule: 'cpu-address-mismatch',
      mapped: { type: 'coherent', paddr: A, origin: { call: 'dma_alloc_coherent' } },
      unmapped: { cpuAddr: A + 4096 },
    });
    dbg.allocPages(dev, A, 4096, DMA_FROM_DEVICE, 0xf000_0000);
    dbg.freePages(dev, A + 4096, 4096, DMA_FROM_DEVICE, 0xf000_0000);
    expect(dbg.reports[1]).toMatchObject({ rule: 'cpu-address-mismatch', mapped: { type: 'noncoherent' } });
  });

  it('7: direction mismatch on unmap', () => {
    const { dbg, dev } = setup();
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.mappingError(dev, A);
    dbg.unmapPhys(dev, A, 4096, DMA_FROM_DEVICE);
    expect(dbg.reports[0]).toMatchObject({ rule: 'direction-mismatch', mapped: { dir: DMA_TO_DEVICE }, unmapped: { dir: DMA_FROM_DEVICE } });
    expect(dbg.reports[0]?.message).toContain('[mapped with DMA_TO_DEVICE] [unmapped with DMA_FROM_DEVICE]');
  });

  it('8: map error not checked; dma_mapping_error flips only one of two identical entries', () => {
    const { dbg, dev } = setup();
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.unmapPhys(dev, A, 4096, DMA_TO_DEVICE);
    expect(dbg.reports[0]).toMatchObject({ rule: 'map-error-not-checked', mapped: { mapErrType: MapErrType.NOT_CHECKED } });

    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.mappingError(dev, A);
    expect(dbg.dumpMappings(dev).map((e) => e.mapErrType).sort()).toEqual([MapErrType.NOT_CHECKED, MapErrType.CHECKED]);
  });

  it('20: DMA_ATTR_MMIO on RAM', () => {
    const { dbg, dev } = setup();
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, DMA_ATTR_MMIO);
    expect(dbg.reports[0]).toMatchObject({ rule: 'mmio-on-ram', mapped: { paddr: A, attrs: DMA_ATTR_MMIO } });
    expect(dbg.reports[0]?.message).toBe('dma_map_resource called for RAM address 0x100000');
    const notRam = 2 ** 40;
    dbg.mapPhys(dev, notRam, 4096, DMA_TO_DEVICE, notRam, DMA_ATTR_MMIO);
    expect(dbg.reports).toHaveLength(1);
  });

  it('failed mappings (DMA_MAPPING_ERROR) are not recorded', () => {
    const { dbg, dev } = setup('strict');
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, DMA_MAPPING_ERROR, 0);
    expect(dbg.entries).toBe(0);
  });
});

describe('dma-debug: sync', () => {
  it('9: sync of memory never mapped', () => {
    const { dbg, dev } = setup();
    dbg.syncSingleForCpu(dev, A, 64, DMA_FROM_DEVICE);
    expect(dbg.reports[0]).toMatchObject({ rule: 'sync-not-mapped', synced: { dmaAddr: A, size: 64, type: 'single' } });
  });

  it('9: a sync of a mapping that spans many hash buckets is found (containing lookup scans back)', () => {
    const { dbg, dev } = setup('strict');
    dbg.mapPhys(dev, A, 1 << 20, DMA_FROM_DEVICE, A, 0);
    dbg.syncSingleForCpu(dev, A + (1 << 19) + 64, 64, DMA_FROM_DEVICE);
    expect(dbg.reports).toEqual([]);
  });

  it('10: sync beyond the end of the mapping', () => {
    const { dbg, dev } = setup();
    dbg.mapPhys(dev, A, 4096, DMA_FROM_DEVICE, A, 0);
    dbg.syncSingleForCpu(dev, A + 4000, 200, DMA_FROM_DEVICE);
    expect(dbg.reports[0]).toMatchObject({ rule: 'sync-out-of-range', mapped: { size: 4096 }, synced: { dmaAddr: A + 4000, size: 200 } });
    expect(dbg.reports[0]?.message).toContain('[sync offset+size=4200]');
  });

  it('11 + 12: sync_for_cpu of a TO_DEVICE mapping with FROM_DEVICE', () => {
    const { dbg, dev } = setup();
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.syncSingleForCpu(dev, A, 4096, DMA_FROM_DEVICE);
    expect(rules(dbg)).toEqual(['sync-direction-mismatch', 'sync-for-cpu-device-read-only']);
    expect(dbg.reports[1]).toMatchObject({ mapped: { dir: DMA_TO_DEVICE }, synced: { dir: DMA_FROM_DEVICE } });
  });

  it('11 + 13: sync_for_device of a FROM_DEVICE mapping with TO_DEVICE', () => {
    const { dbg, dev } = setup();
    dbg.mapPhys(dev, A, 4096, DMA_FROM_DEVICE, A, 0);
    dbg.syncSingleForDevice(dev, A, 4096, DMA_TO_DEVICE);
    expect(rules(dbg)).toEqual(['sync-direction-mismatch', 'sync-for-device-device-write-only']);
  });

  it('11: direction checks are skipped for BIDIRECTIONAL mappings', () => {
    const { dbg, dev } = setup('strict');
    dbg.mapPhys(dev, A, 4096, DMA_BIDIRECTIONAL, A, 0);
    dbg.syncSingleForCpu(dev, A, 4096, DMA_TO_DEVICE);
    dbg.syncSingleForDevice(dev, A, 4096, DMA_FROM_DEVICE);
    expect(dbg.reports).toEqual([]);
  });
});

describe('dma-debug: scatter-gather', () => {
  const segs = [
    [A, 4096, A, 4096],
    [A + 0x10000, 4096, A + 0x10000, 4096],
    [A + 0x20000, 4096, A + 0x20000, 4096],
  ] as const;

  it('a correct map / sync / unmap of an sg list reports nothing', () => {
    const { dbg, dev } = setup('strict');
    const sgt = mappedSg(segs);
    dbg.mapSg(dev, sgt, 3, 3, DMA_FROM_DEVICE, 0);
    expect(dbg.entries).toBe(3);
    dbg.syncSgForCpu(dev, sgt, 3, DMA_FROM_DEVICE);
    dbg.syncSgForDevice(dev, sgt, 3, DMA_FROM_DEVICE);
    dbg.unmapSg(dev, sgt, 3, DMA_FROM_DEVICE);
    expect(dbg.entries).toBe(0);
  });

  it('6: nents passed to unmap differs from nents passed to map', () => {
    const { dbg, dev } = setup();
    const sgt = mappedSg(segs);
    dbg.mapSg(dev, sgt, 3, 3, DMA_FROM_DEVICE, 0);
    dbg.unmapSg(dev, sgt, 2, DMA_FROM_DEVICE);
    expect(dbg.reports[0]).toMatchObject({ rule: 'nents-mismatch', mapped: { nents: 3, type: 'sg' }, unmapped: { nents: 2 } });
    expect(dbg.reports[0]?.message).toBe('device driver frees DMA sg list with different entry count [map count=3] [unmap count=2]');
  });

  it('14: sg sync with a different nents', () => {
    const { dbg, dev } = setup();
    const sgt = mappedSg(segs);
    dbg.mapSg(dev, sgt, 3, 3, DMA_FROM_DEVICE, 0);
    dbg.syncSgForCpu(dev, sgt, 2, DMA_FROM_DEVICE);
    expect(rules(dbg)).toEqual(['sync-sg-nents-mismatch', 'sync-sg-nents-mismatch']);
    expect(dbg.reports[0]).toMatchObject({ mapped: { nents: 3 }, synced: { nents: 2, type: 'sg' } });
  });

  it('9: sg sync of a list that was never mapped', () => {
    const { dbg, dev } = setup();
    dbg.syncSgForDevice(dev, mappedSg(segs), 3, DMA_TO_DEVICE);
    expect(dbg.reports[0]).toMatchObject({ rule: 'sync-not-mapped' });
  });

  it('15: segment longer than max_segment_size', () => {
    const { m, dbg } = setup();
    const dev = m.pci.addDevice({ name: 'dev1', dmaMaskBits: 64, maxSegmentSize: 4096 });
    dbg.mapSg(dev, mappedSg([[A, 8192, A, 8192]]), 1, 1, DMA_TO_DEVICE, 0);
    expect(dbg.reports[0]).toMatchObject({ rule: 'sg-segment-too-long', device: 'dev1', segment: { length: 8192, maxSegmentSize: 4096 } });
  });

  it('16: segment crossing the segment boundary', () => {
    const { m, dbg } = setup();
    const dev = m.pci.addDevice({ name: 'dev1', dmaMaskBits: 64, segmentBoundaryMask: 0xffff });
    dbg.mapSg(dev, mappedSg([[A + 0xf000, 8192, A + 0xf000, 8192]]), 1, 1, DMA_TO_DEVICE, 0);
    expect(dbg.reports[0]).toMatchObject({ rule: 'sg-segment-boundary', segment: { dmaAddr: A + 0xf000, segmentBoundaryMask: 0xffff } });
  });

  it('merged segments: unmap walks only the mapped segments', () => {
    const { dbg, dev } = setup('strict');
    // 3 CPU entries merged by an IOMMU into one DMA segment.
    const sgt = mappedSg([
      [A, 4096, 0x8000_0000, 12288],
      [A + 0x1000, 4096, 0, 0],
      [A + 0x2000, 4096, 0, 0],
    ]);
    sgt.nents = 1;
    dbg.mapSg(dev, sgt, 3, 1, DMA_TO_DEVICE, 0);
    expect(dbg.entries).toBe(1);
    dbg.unmapSg(dev, sgt, 3, DMA_TO_DEVICE);
    expect(dbg.entries).toBe(0);
  });

  it('P2P bus-address segments are not tracked', () => {
    const { dbg, dev } = setup('strict');
    const sgt = mappedSg([
      [2 ** 40, 4096, 2 ** 40, 4096],
      [A, 4096, A, 4096],
    ]);
    sgt.dmaFlags[0] = SG_DMA_BUS_ADDRESS;
    dbg.mapSg(dev, sgt, 2, 2, DMA_TO_DEVICE, 0);
    expect(dbg.entries).toBe(1);
    dbg.syncSgForDevice(dev, sgt, 2, DMA_TO_DEVICE);
    dbg.unmapSg(dev, sgt, 2, DMA_TO_DEVICE);
    expect(dbg.entries).toBe(0);
  });
});

describe('dma-debug: active cachelines', () => {
  it('21: two FROM_DEVICE mappings of the same cacheline', () => {
    const { dbg, dev } = setup();
    dbg.mapPhys(dev, A, 32, DMA_FROM_DEVICE, A, 0);
    dbg.mapPhys(dev, A + 32, 32, DMA_FROM_DEVICE, A + 32, 0);
    expect(dbg.reports[0]).toMatchObject({ rule: 'cacheline-overlap', cacheline: A / 64, mapped: { paddr: A + 32 } });
    expect(dbg.reports[0]?.message).toBe("cacheline tracking EEXIST, overlapping mappings aren't supported");
  });

  it('21: suppressed by TO_DEVICE, SKIP_CPU_SYNC, or IGNORE_CACHELINES on both sides', () => {
    const { dbg, dev } = setup('strict');
    dbg.mapPhys(dev, A, 32, DMA_TO_DEVICE, A, 0);
    dbg.mapPhys(dev, A + 32, 32, DMA_TO_DEVICE, A + 32, 0);
    dbg.mapPhys(dev, A + 64, 32, DMA_FROM_DEVICE, A + 64, 0);
    dbg.mapPhys(dev, A + 96, 32, DMA_FROM_DEVICE, A + 96, DMA_ATTR_SKIP_CPU_SYNC);
    dbg.mapPhys(dev, A + 128, 32, DMA_FROM_DEVICE, A + 128, DMA_ATTR_DEBUGGING_IGNORE_CACHELINES);
    dbg.mapPhys(dev, A + 160, 32, DMA_FROM_DEVICE, A + 160, DMA_ATTR_DEBUGGING_IGNORE_CACHELINES);
    expect(dbg.reports).toEqual([]);
  });

  it('21: IGNORE_CACHELINES on one side only is still reported (kernel: both must be cache-clean)', () => {
    const { dbg, dev } = setup();
    dbg.mapPhys(dev, A, 32, DMA_FROM_DEVICE, A, 0);
    dbg.mapPhys(dev, A + 32, 32, DMA_FROM_DEVICE, A + 32, DMA_ATTR_DEBUGGING_IGNORE_CACHELINES);
    expect(rules(dbg)).toEqual(['cacheline-overlap']);
  });

  it('21: unmapping balances the overlap count', () => {
    const { dbg, dev } = setup();
    dbg.mapPhys(dev, A, 32, DMA_FROM_DEVICE, A, 0);
    dbg.mappingError(dev, A);
    dbg.unmapPhys(dev, A, 32, DMA_FROM_DEVICE);
    dbg.mapPhys(dev, A + 32, 32, DMA_FROM_DEVICE, A + 32, 0);
    expect(dbg.reports).toEqual([]);
  });

  it('22: more than 7 overlapping mappings of one cacheline', () => {
    const { dbg, dev } = setup();
    for (let i = 0; i < 9; i++) dbg.mapPhys(dev, A, 64, DMA_FROM_DEVICE, A, DMA_ATTR_SKIP_CPU_SYNC);
    expect(rules(dbg)).toEqual(['cacheline-overlap-overflow']);
    expect(dbg.reports[0]?.message).toContain('exceeded 7 overlapping mappings');
  });
});

describe('dma-debug: unbind', () => {
  it('23: leak at unbind, with one example entry; entries are dropped', () => {
    const { m, dbg, dev } = setup();
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.allocCoherent(dev, 8192, 0xf000_0000, A + 0x10000, 0);
    m.unbindDevice(dev);
    const r = dbg.reports[0];
    expect(r).toMatchObject({ rule: 'leak-at-unbind', device: 'dev0', count: 2 });
    expect(r?.message).toContain('has pending DMA allocations while released from device [count=2]');
    expect(r?.mapped).toBeDefined();
    expect(dbg.entries).toBe(0);
  });

  it('a clean driver unbinds silently', () => {
    const { m, dbg, dev } = setup('strict');
    m.unbindDevice(dev);
    expect(dbg.reports).toEqual([]);
  });
});

describe('dma-debug: modes and reporting', () => {
  it('strict mode throws DmaDebugError with the rule, after bookkeeping', () => {
    const { dbg, dev } = setup('strict');
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.mappingError(dev, A);
    let caught: unknown;
    try {
      dbg.unmapPhys(dev, A, 4096, DMA_FROM_DEVICE);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(DmaDebugError);
    const err = caught as DmaDebugError;
    expect(err.rule).toBe('direction-mismatch');
    expect(err.report.device).toBe('dev0');
    expect(err.message).toContain('different direction');
    // The entry was removed before the throw, and the report was collected.
    expect(dbg.entries).toBe(0);
    expect(dbg.reports).toHaveLength(1);
    expect(() => {
      dbg.report('invalid-direction', dev, 'BUG: invalid direction 7');
    }).toThrow(DmaDebugError);
  });

  it('warn mode collects, newest last, and counts', () => {
    const { dbg, dev } = setup('warn');
    dbg.unmapPhys(dev, A, 1, DMA_TO_DEVICE);
    dbg.report('no-dma-mask', dev, 'no mask');
    expect(rules(dbg)).toEqual(['unmap-not-mapped', 'no-dma-mask']);
    expect(dbg.errorCount).toBe(2);
  });

  it("'off' records nothing", () => {
    const { dbg, dev } = setup('off');
    expect(dbg.enabled).toBe(false);
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.unmapPhys(dev, A + 1, 4096, DMA_TO_DEVICE);
    dbg.report('invalid-argument', dev, 'x');
    expect(dbg.entries).toBe(0);
    expect(dbg.reports).toEqual([]);
    expect(dbg.errorCount).toBe(0);
  });

  it('driverFilter reports only for that device but counts everything', () => {
    const { m, dbg, dev } = setup('warn');
    const other = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
    dbg.driverFilter = 'nvme0';
    dbg.unmapPhys(dev, A, 1, DMA_TO_DEVICE);
    dbg.unmapPhys(other, A, 1, DMA_TO_DEVICE);
    expect(dbg.reports.map((r) => r.device)).toEqual(['nvme0']);
    expect(dbg.errorCount).toBe(2);
  });

  it('allErrors = false keeps only num_errors reports (the kernel default), reset() clears', () => {
    const { dbg, dev } = setup('warn');
    dbg.allErrors = false;
    for (let i = 0; i < 3; i++) dbg.unmapPhys(dev, A, 1, DMA_TO_DEVICE);
    expect(dbg.reports).toHaveLength(1);
    expect(dbg.errorCount).toBe(3);
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    dbg.reset();
    expect(dbg.reports).toHaveLength(0);
    expect(dbg.errorCount).toBe(0);
    expect(dbg.entries).toBe(0);
  });

  it('captureStacks records a JS stack in the origin', () => {
    const { dbg, dev } = setup('warn');
    dbg.captureStacks = true;
    dbg.mapPhys(dev, A, 4096, DMA_TO_DEVICE, A, 0);
    expect(dbg.dumpMappings()[0]?.origin.stack).toContain('debug.test');
  });

  it('property: balanced random map/unmap sequences never report and leave no entries', () => {
    fc.assert(dmaDebugBalancedProperty());
  });
});

describe('dma-debug: the two-step IOVA API (beyond the kernel)', () => {
  /** A device with IOMMU ops whose only used method is getMergeBoundary (4 KiB granule). */
  function iovaSetup(mode: DmaDebugMode = 'warn') {
    const s = setup(mode);
    s.dev.dmaOps = { name: 'fake', getMergeBoundary: () => 4095 } as unknown as DmaMapOps;
    const state = new DmaIovaState();
    state.addr = 0x1000_0000;
    state.size = 4 * 4096;
    s.dbg.iovaTryAlloc(s.dev, state);
    return { ...s, state };
  }

  it('a correct try_alloc / link / sync / destroy sequence reports nothing', () => {
    const { dbg, dev, state } = iovaSetup('strict');
    expect(dbg.iovaStates).toBe(1);
    for (let i = 0; i < 4; i++) dbg.iovaLink(dev, state, A + i * 0x10000, i * 4096, 4096, DMA_TO_DEVICE, 0);
    dbg.iovaSync(dev, state, 0, 4 * 4096);
    expect(dbg.dumpIovaStates(dev)[0]).toMatchObject({ linkedBytes: 16384, linked: [[0, 16384]], granule: 4096 });
    dbg.iovaUnlink(dev, state, 4096, 4096, DMA_TO_DEVICE);
    dbg.iovaLink(dev, state, A, 4096, 4096, DMA_TO_DEVICE, 0);
    dbg.iovaDestroy(dev, state, 4 * 4096, DMA_TO_DEVICE);
    expect(dbg.iovaStates).toBe(0);
  });

  it('every IOVA report says the kernel does not check it', () => {
    const { dbg, dev, state } = iovaSetup();
    dbg.iovaLink(dev, state, A, 3 * 4096, 2 * 4096, DMA_TO_DEVICE, 0);
    expect(rules(dbg)).toEqual(['iova-link-out-of-range']);
    expect(dbg.reports[0]?.message).toContain("(not checked by the kernel's dma-debug)");
    expect(dbg.reports[0]).toMatchObject({ iova: { size: 16384 }, iovaCall: { call: 'dma_iova_link', offset: 3 * 4096, size: 8192 } });
  });

  it('iova-link-unaligned: offset > 0 off the granule', () => {
    const { dbg, dev, state } = iovaSetup();
    dbg.iovaLink(dev, state, A, 100, 4096, DMA_TO_DEVICE, 0);
    expect(rules(dbg)[0]).toBe('iova-link-unaligned');
  });

  it('iova-link-unaligned: a range that is not the last ends mid-granule', () => {
    const { dbg, dev, state } = iovaSetup();
    dbg.iovaLink(dev, state, A, 0, 100, DMA_TO_DEVICE, 0);
    expect(dbg.reports).toEqual([]);
    dbg.iovaLink(dev, state, A, 4096, 4096, DMA_TO_DEVICE, 0);
    expect(rules(dbg)).toEqual(['iova-link-unaligned']);
  });

  it('iova-link-overlap', () => {
    const { dbg, dev, state } = iovaSetup();
    dbg.iovaLink(dev, state, A, 0, 8192, DMA_TO_DEVICE, 0);
    dbg.iovaLink(dev, state, A, 4096, 4096, DMA_TO_DEVICE, 0);
    expect(rules(dbg)).toEqual(['iova-link-overlap']);
  });

  it('iova-unlink-not-linked', () => {
    const { dbg, dev, state } = iovaSetup();
    dbg.iovaLink(dev, state, A, 0, 4096, DMA_TO_DEVICE, 0);
    dbg.iovaUnlink(dev, state, 0, 8192, DMA_TO_DEVICE);
    expect(rules(dbg)).toEqual(['iova-unlink-not-linked']);
  });

  it('iova-destroy-size-mismatch', () => {
    const { dbg, dev, state } = iovaSetup();
    dbg.iovaLink(dev, state, A, 0, 8192, DMA_TO_DEVICE, 0);
    dbg.iovaDestroy(dev, state, 16384, DMA_TO_DEVICE);
    expect(dbg.reports[0]).toMatchObject({ rule: 'iova-destroy-size-mismatch', iova: { linkedBytes: 8192 }, iovaCall: { size: 16384 } });
    expect(dbg.iovaStates).toBe(0);
  });

  it('iova-free-with-links', () => {
    const { dbg, dev, state } = iovaSetup();
    dbg.iovaLink(dev, state, A, 0, 4096, DMA_TO_DEVICE, 0);
    dbg.iovaFree(dev, state);
    expect(rules(dbg)).toEqual(['iova-free-with-links']);
    expect(dbg.iovaStates).toBe(0);
  });

  it('iova-not-allocated: link/sync/unlink/destroy/free on a state try_alloc did not allocate', () => {
    const { dbg, dev } = setup();
    const s = new DmaIovaState();
    dbg.iovaTryAlloc(dev, s); // size 0: try_alloc failed, nothing tracked
    dbg.iovaLink(dev, s, A, 0, 4096, DMA_TO_DEVICE, 0);
    dbg.iovaSync(dev, s, 0, 4096);
    dbg.iovaUnlink(dev, s, 0, 4096, DMA_TO_DEVICE);
    dbg.iovaDestroy(dev, s, 4096, DMA_TO_DEVICE);
    dbg.iovaFree(dev, s);
    expect(rules(dbg)).toEqual(Array<DmaDebugRule>(5).fill('iova-not-allocated'));
  });

  it('iova-leak-at-unbind', () => {
    const { m, dbg, dev, state } = iovaSetup();
    dbg.iovaLink(dev, state, A, 0, 4096, DMA_TO_DEVICE, 0);
    m.unbindDevice(dev);
    expect(dbg.reports[0]).toMatchObject({ rule: 'iova-leak-at-unbind', count: 1, iova: { linkedBytes: 4096 } });
    expect(dbg.iovaStates).toBe(0);
  });

  it('property: link/unlink reports match a byte-map model of the linked set', () => {
    fc.assert(dmaDebugIovaLinkProperty());
  });
});

import { describe, expect, it } from 'vitest';
import {
  createMachine,
  DMA_ATTR_REQUIRE_COHERENT,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  DmaIovaState,
  dmaAddressingLimited,
  dmaAllocCoherent,
  dmaAllocNoncoherent,
  dmaBitMask,
  dmaFreeCoherent,
  dmaFreeNoncoherent,
  dmaGetCacheAlignment,
  dmaGetMask,
  dmaGetMaxSegSize,
  dmaGetMergeBoundary,
  dmaGetMinAlignMask,
  dmaGetRequiredMask,
  dmaGetSegBoundary,
  dmaGetSegBoundaryNrPages,
  dmaIovaDestroy,
  dmaIovaFree,
  dmaIovaLink,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaIovaUnlink,
  dmaMapPage,
  dmaMapPhys,
  dmaMappingError,
  dmaMapSg,
  dmaMapSgtable,
  dmaMaxMappingSize,
  dmaNeedSync,
  dmaNeedUnmap,
  dmaOptMappingSize,
  dmaPciP2pdmaSupported,
  dmaSetCoherentMask,
  dmaSetMask,
  dmaSetMaskAndCoherent,
  dmaSetMaxSegSize,
  dmaSetMinAlignMask,
  dmaSetSegBoundary,
  dmaSyncSgtableForCpu,
  dmaSyncSingleForCpu,
  dmaUnmapPhys,
  dmaUnmapSg,
  dmaUnmapSgtable,
  dmaUseIova,
  forEachSgDmaSegment,
  PAGE_SIZE,
  SG_DMA_BUS_ADDRESS,
  sgAllocTable,
  sgAllocTableFromPages,
  sgSetPhys,
  SIZE_MAX,
  SZ_1G,
  SZ_4G,
  SZ_64K,
} from '@dmakit/dma-core';
import type { DmaDataDirection, Machine } from '@dmakit/dma-core';

function machine(): Machine {
  return createMachine({ ramBytes: 8 * SZ_1G });
}

describe('DMA masks and limits', () => {
  it('sets, gets and refuses masks like the kernel', () => {
    const m = machine();
    const dev = m.pci.addDevice({ name: 'd', dmaMaskBits: 32 });
    expect(dmaGetMask(dev)).toBe(dmaBitMask(32));
    expect(dmaSetMask(dev, 64)).toBe(0);
    expect(dmaGetMask(dev)).toBe(dmaBitMask(64));
    expect(dmaSetMask(dev, 24)).toBe(0); // ZONE_DMA is reachable
    expect(dmaSetMask(dev, 23)).toBe(-5); // -EIO: cannot cover the lowest zone
    expect(dev.dmaMaskBits).toBe(24);
    expect(dmaSetMaskAndCoherent(dev, 40)).toBe(0);
    expect(dev.coherentDmaMaskBits).toBe(40);
    expect(dmaSetCoherentMask(dev, 20)).toBe(-5);
    expect(dmaSetMaskAndCoherent(dev, 12)).toBe(-5);
    expect(dev.coherentDmaMaskBits).toBe(40); // untouched when the streaming mask failed
    // Setting a mask recomputes dma_skip_sync from coherence.
    dev.dmaSkipSync = false;
    expect(dmaSetMask(dev, 64)).toBe(0);
    expect(dev.dmaSkipSync).toBe(true);
  });

  it('reports the required mask, addressing limits and mapping sizes', () => {
    const m = machine();
    const dev32 = m.pci.addDevice({ name: 'd32', dmaMaskBits: 32 });
    const dev64 = m.pci.addDevice({ name: 'd64', dmaMaskBits: 64 });
    // RAM tops out at 9 GiB: a 34-bit mask covers it.
    expect(dmaGetRequiredMask(dev32)).toBe(dmaBitMask(34));
    expect(dmaAddressingLimited(dev32)).toBe(true);
    expect(dmaAddressingLimited(dev64)).toBe(false);
    expect(dmaMaxMappingSize(dev64)).toBe(SIZE_MAX);
    expect(dmaMaxMappingSize(dev32)).toBe(256 * 1024);
    expect(dmaOptMappingSize(dev32)).toBe(256 * 1024);
    expect(dmaGetMergeBoundary(dev64)).toBe(0);
    expect(dmaPciP2pdmaSupported(dev64)).toBe(true);
    expect(dmaGetCacheAlignment()).toBe(1);
    expect(dmaNeedUnmap(dev64)).toBe(true); // dma-debug is on under vitest
  });

  it('dma_parms accessors and setters (no dma_parms → report, nothing changes)', () => {
    const m = machine();
    m.dmaDebug.mode = 'warn';
    const dev = m.pci.addDevice({ name: 'd', dmaMaskBits: 64 });
    expect(dmaGetMaxSegSize(dev)).toBe(SZ_64K);
    dmaSetMaxSegSize(dev, 1 << 20);
    expect(dmaGetMaxSegSize(dev)).toBe(1 << 20);
    expect(dmaGetSegBoundary(dev)).toBe(Number.MAX_SAFE_INTEGER);
    dmaSetSegBoundary(dev, 0xffff_ffff);
    expect(dmaGetSegBoundary(dev)).toBe(0xffff_ffff);
    expect(dmaGetSegBoundaryNrPages(dev, 12)).toBe(0x10_0000);
    dmaSetSegBoundary(dev, 0x1234); // not 2^n - 1
    expect(dmaGetSegBoundary(dev)).toBe(0xffff_ffff);
    dmaSetMinAlignMask(dev, 0xfff);
    expect(dmaGetMinAlignMask(dev)).toBe(0xfff);
    const bare = m.pci.addDevice({ name: 'bare', dmaMaskBits: 64, noDmaParms: true });
    dmaSetMaxSegSize(bare, 1 << 20);
    dmaSetMinAlignMask(bare, 0xfff);
    expect(dmaGetMaxSegSize(bare)).toBe(SZ_64K);
    expect(dmaGetMinAlignMask(bare)).toBe(0);
    expect(m.dmaDebug.reports.filter((r) => r.device === 'bare').length).toBe(2);
  });
});

describe('coherent and non-coherent allocations', () => {
  it('a coherent buffer: zeroed, below the coherent mask, device writes seen by the CPU at once', () => {
    const m = machine();
    const dev = m.pci.addDevice({ name: 'd', dmaMaskBits: 32 });
    const buf = dmaAllocCoherent(dev, 3 * PAGE_SIZE);
    expect(buf).not.toBeNull();
    if (buf === null) return;
    expect(buf.dmaAddr + 3 * PAGE_SIZE - 1).toBeLessThanOrEqual(dev.coherentDmaMask);
    expect(m.memory.read(buf.phys, 3 * PAGE_SIZE).every((b) => b === 0)).toBe(true);
    const data = m.rng.fill(new Uint8Array(3 * PAGE_SIZE));
    dev.dmaWrite(buf.dmaAddr, data);
    expect(m.memory.read(buf.cpuAddr, data.length)).toEqual(data);
    m.memory.write(buf.cpuAddr, Uint8Array.of(9, 8, 7));
    expect([...dev.dmaRead(buf.dmaAddr, 3)]).toEqual([9, 8, 7]);
    dmaFreeCoherent(dev, 3 * PAGE_SIZE, buf.cpuAddr, buf.dmaAddr);
    expect(m.dmaDebug.reports).toEqual([]);
  });

  it('a free with the wrong address frees nothing and is reported', () => {
    const m = machine();
    m.dmaDebug.mode = 'warn';
    const dev = m.pci.addDevice({ name: 'd', dmaMaskBits: 32 });
    const buf = dmaAllocCoherent(dev, PAGE_SIZE);
    if (buf === null) throw new Error('alloc failed');
    dmaFreeCoherent(dev, PAGE_SIZE, buf.cpuAddr + PAGE_SIZE, buf.dmaAddr);
    expect(m.dmaDebug.reports.length).toBeGreaterThan(0);
    dmaFreeCoherent(dev, PAGE_SIZE, buf.cpuAddr, buf.dmaAddr);
    expect(dmaAllocCoherent(dev, 0)).toBeNull();
  });

  it('dma_alloc_noncoherent needs syncs like a streaming mapping', () => {
    const m = machine();
    const dev = m.pci.addDevice({ name: 'd', dmaMaskBits: 32 });
    const buf = dmaAllocNoncoherent(dev, 100, DMA_FROM_DEVICE);
    if (buf === null) throw new Error('alloc failed');
    expect(buf.size).toBe(PAGE_SIZE);
    dev.dmaWrite(buf.dmaAddr, Uint8Array.of(1, 2));
    dmaSyncSingleForCpu(dev, buf.dmaAddr, PAGE_SIZE, DMA_FROM_DEVICE);
    expect([...m.memory.read(buf.cpuAddr, 2)]).toEqual([1, 2]);
    dmaFreeNoncoherent(dev, 100, buf.cpuAddr, buf.dmaAddr, DMA_FROM_DEVICE);
    expect(m.dmaDebug.reports).toEqual([]);
  });
});

describe('the two-step IOVA API on a dma-direct device', () => {
  it('try_alloc fails so the driver falls back to dma_map_phys per page', () => {
    const m = machine();
    const dev = m.pci.addDevice({ name: 'nvme', dmaMaskBits: 64 });
    const phys = m.memory.allocPages(3);
    const data = m.rng.fill(new Uint8Array(8 * PAGE_SIZE));
    m.memory.write(phys, data);
    const state = new DmaIovaState();
    state.size = 123; // stale contents are zeroed first
    expect(dmaIovaTryAlloc(dev, state, phys, 8 * PAGE_SIZE)).toBe(false);
    expect(dmaUseIova(state)).toBe(false);
    expect(state.size).toBe(0);
    for (let i = 0; i < 8; i++) {
      const dma = dmaMapPhys(dev, phys + i * PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE);
      expect(dmaMappingError(dev, dma)).toBe(0);
      expect(dev.dmaRead(dma, PAGE_SIZE)).toEqual(data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
      dmaUnmapPhys(dev, dma, PAGE_SIZE, DMA_TO_DEVICE);
    }
  });

  it('calls on an unallocated state return the stub values and are reported', () => {
    const m = machine();
    m.dmaDebug.mode = 'warn';
    const dev = m.pci.addDevice({ name: 'nvme', dmaMaskBits: 64 });
    const state = new DmaIovaState();
    expect(dmaIovaLink(dev, state, 0, 0, PAGE_SIZE, DMA_TO_DEVICE)).toBe(-95);
    expect(dmaIovaSync(dev, state, 0, PAGE_SIZE)).toBe(-95);
    dmaIovaUnlink(dev, state, 0, PAGE_SIZE, DMA_TO_DEVICE);
    dmaIovaDestroy(dev, state, PAGE_SIZE, DMA_TO_DEVICE);
    dmaIovaFree(dev, state);
    expect(dmaIovaLink(dev, state, 0, 0, PAGE_SIZE, 7 as DmaDataDirection)).toBe(-22);
    const rules = m.dmaDebug.reports.map((r) => r.rule);
    expect(rules).toContain('iova-not-allocated');
    expect(rules).toContain('invalid-direction');
  });
});

describe('scatterlists on dma-direct', () => {
  it('sg_alloc_table_from_pages merges contiguous pages up to the max segment', () => {
    const pages = [0x10000, 0x11000, 0x12000, 0x20000, 0x21000];
    const sgt = sgAllocTableFromPages(pages, 5, 0x100, 5 * PAGE_SIZE - 0x200);
    expect(sgt).not.toBeNull();
    if (sgt === null) return;
    expect(sgt.origNents).toBe(2);
    expect([sgt.sgPhys(0), sgt.length[0]]).toEqual([0x10100, 3 * PAGE_SIZE - 0x100]);
    expect([sgt.sgPhys(1), sgt.length[1]]).toEqual([0x20000, 2 * PAGE_SIZE - 0x100]);
    const capped = sgAllocTableFromPages(pages, 5, 0, 5 * PAGE_SIZE, 2 * PAGE_SIZE);
    expect(capped?.origNents).toBe(3);
    expect(sgAllocTableFromPages(pages, 5, PAGE_SIZE, 10)).toBeNull();
    expect(sgAllocTableFromPages(pages, 0, 0, 10)).toBeNull();
  });

  it('maps each entry on its own (no merging), bounces what it must, unmaps with orig nents', () => {
    const m = machine();
    const dev = m.pci.addDevice({ name: 'hba', dmaMaskBits: 32 });
    const sgt = sgAllocTable(3);
    if (sgt === null) throw new Error('alloc failed');
    const low = m.memory.allocPages(1);
    const high = SZ_4G + 3 * PAGE_SIZE;
    sgSetPhys(sgt, 0, low, PAGE_SIZE);
    sgSetPhys(sgt, 1, low + PAGE_SIZE, PAGE_SIZE);
    sgSetPhys(sgt, 2, high, 512);
    m.memory.write(high, Uint8Array.of(5, 6, 7));
    expect(dmaMapSgtable(dev, sgt, DMA_BIDIRECTIONAL)).toBe(0);
    expect(sgt.nents).toBe(3);
    const segs: number[] = [];
    forEachSgDmaSegment(sgt, (addr, len) => segs.push(addr, len));
    expect(segs.slice(0, 4)).toEqual([low, PAGE_SIZE, low + PAGE_SIZE, PAGE_SIZE]);
    expect(m.swiotlb.isSwiotlbBuffer(sgt.sgDmaAddress(2))).toBe(true);
    expect([...dev.dmaRead(sgt.sgDmaAddress(2), 3)]).toEqual([5, 6, 7]);
    dev.dmaWrite(sgt.sgDmaAddress(2), Uint8Array.of(1, 1, 1));
    dmaSyncSgtableForCpu(dev, sgt, DMA_BIDIRECTIONAL);
    expect([...m.memory.read(high, 3)]).toEqual([1, 1, 1]);
    dmaUnmapSgtable(dev, sgt, DMA_BIDIRECTIONAL);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
    expect(dmaMapSg(dev, sgt, 3, DMA_TO_DEVICE)).toBe(3);
    dmaUnmapSg(dev, sgt, 3, DMA_TO_DEVICE);
    expect(m.dmaDebug.reports).toEqual([]);
  });

  it('a failing entry unmaps the earlier ones: -EIO from sgtable, 0 from map_sg', () => {
    const m = createMachine({ ramBytes: 8 * SZ_1G, swiotlbBytes: 0 });
    const dev = m.pci.addDevice({ name: 'hba', dmaMaskBits: 32 });
    const sgt = sgAllocTable(2);
    if (sgt === null) throw new Error('alloc failed');
    sgSetPhys(sgt, 0, m.memory.allocPages(0), PAGE_SIZE);
    sgSetPhys(sgt, 1, SZ_4G, PAGE_SIZE);
    expect(dmaMapSgtable(dev, sgt, DMA_TO_DEVICE)).toBe(-5);
    expect(dmaMapSg(dev, sgt, 2, DMA_TO_DEVICE)).toBe(0);
  });

  it('a double dma_unmap_sgtable is reported and frees no slot another mapping owns', () => {
    const m = createMachine({ ramBytes: 8 * SZ_1G, swiotlbBytes: PAGE_SIZE }); // two slots
    m.dmaDebug.mode = 'warn';
    const dev = m.pci.addDevice({ name: 'hba', dmaMaskBits: 32 });
    const sgt = sgAllocTable(1);
    if (sgt === null) throw new Error('alloc failed');
    sgSetPhys(sgt, 0, SZ_4G, PAGE_SIZE);
    expect(dmaMapSgtable(dev, sgt, DMA_TO_DEVICE)).toBe(0);
    const bounce = sgt.sgDmaAddress(0);
    dmaUnmapSgtable(dev, sgt, DMA_TO_DEVICE);
    const other = dmaMapPhys(dev, SZ_4G + 8 * PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, other)).toBe(0);
    expect(other).toBe(bounce); // the only page-sized hole: same bounce address
    dmaUnmapSgtable(dev, sgt, DMA_TO_DEVICE);
    expect(m.swiotlb.stats().usedSlots).toBe(2);
    // dma-debug finds the phy mapping now living at that address: "mapped as phy, unmapped as sg"
    expect(m.dmaDebug.reports.map((r) => r.rule)).toContain('type-mismatch');
    dmaUnmapPhys(dev, other, PAGE_SIZE, DMA_TO_DEVICE);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });

  it('P2P: a peer BAR below the same switch is programmed with its bus address', () => {
    const m = machine();
    const rp = m.pci.addRootPort();
    const sw = m.pci.addSwitch(rp, { downstreamPorts: 2 });
    const [p0, p1] = sw.downstreamPorts;
    if (p0 === undefined || p1 === undefined) throw new Error('no ports');
    const gpu = m.pci.addDevice({ name: 'gpu', dmaMaskBits: 64, parent: p0, bars: [{ size: 1 << 20, prefetch: true, p2p: true }] });
    const nvme = m.pci.addDevice({ name: 'nvme', dmaMaskBits: 64, parent: p1 });
    const bar = (gpu.bus as { bars: { start: number; busAddr: number }[] }).bars[0];
    if (bar === undefined) throw new Error('no BAR');
    const sgt = sgAllocTable(2);
    if (sgt === null) throw new Error('alloc failed');
    sgSetPhys(sgt, 0, m.memory.allocPages(0), PAGE_SIZE);
    sgSetPhys(sgt, 1, bar.start + PAGE_SIZE, PAGE_SIZE);
    expect(dmaMapSgtable(nvme, sgt, DMA_FROM_DEVICE)).toBe(0);
    expect((sgt.dmaFlags[1] ?? 0) & SG_DMA_BUS_ADDRESS).toBe(SG_DMA_BUS_ADDRESS);
    expect(sgt.sgDmaAddress(1)).toBe(bar.busAddr + PAGE_SIZE);
    dmaUnmapSgtable(nvme, sgt, DMA_FROM_DEVICE);
    expect(sgt.dmaFlags[1]).toBe(0);
  });
});

describe('bad input returns the kernel failure value and is reported', () => {
  it('single mappings', () => {
    const m = machine();
    m.dmaDebug.mode = 'warn';
    const dev = m.pci.addDevice({ name: 'd', dmaMaskBits: 64 });
    const phys = m.memory.allocPages(0);
    const E = DMA_MAPPING_ERROR;
    expect(dmaMapPhys(dev, phys, 64, 3)).toBe(E);
    expect(dmaMapPhys(dev, phys, 64, -1 as DmaDataDirection)).toBe(E);
    for (const size of [0, -1, 1.5, Number.NaN, 2 ** 53, '64' as unknown as number]) {
      expect(dmaMapPhys(dev, phys, size, DMA_TO_DEVICE)).toBe(E);
    }
    expect(dmaMapPhys(dev, -4096, 64, DMA_TO_DEVICE)).toBe(E);
    expect(dmaMapPhys(dev, 2 ** 60, 64, DMA_TO_DEVICE)).toBe(E);
    expect(dmaMapPage(dev, phys, -1, 64, DMA_TO_DEVICE)).toBe(E);
    const nomask = m.pci.addDevice({ name: 'nomask', dmaMaskBits: 0 });
    expect(dmaMapPhys(nomask, phys, 64, DMA_TO_DEVICE)).toBe(E);
    const nc = m.pci.addDevice({ name: 'nc', dmaMaskBits: 64, coherent: false });
    expect(dmaMapPhys(nc, phys, 64, DMA_TO_DEVICE, DMA_ATTR_REQUIRE_COHERENT)).toBe(E);
    const sgt = sgAllocTable(1);
    if (sgt === null) throw new Error('alloc failed');
    sgSetPhys(sgt, 0, phys, 64);
    expect(dmaMapSgtable(nc, sgt, DMA_TO_DEVICE, DMA_ATTR_REQUIRE_COHERENT)).toBe(-95);
    expect(dmaMapSgtable(dev, sgt, 9 as DmaDataDirection)).toBe(-22);
    expect(dmaMapSg(dev, sgt, 2, DMA_TO_DEVICE)).toBe(0);
    expect(dmaMapSgtable(nomask, sgt, DMA_TO_DEVICE)).toBe(0); // kernel edge: 0 with nents 0
    expect(sgt.nents).toBe(0);
    dmaUnmapPhys(dev, phys, 0, DMA_TO_DEVICE);
    dmaUnmapPhys(dev, phys, 64, 4 as DmaDataDirection);
    dmaUnmapPhys(dev, DMA_MAPPING_ERROR, 64, DMA_TO_DEVICE);
    dmaSyncSingleForCpu(dev, phys, -3, DMA_TO_DEVICE);
    expect(dmaIovaTryAlloc(dev, new DmaIovaState(), 0, 0)).toBe(false);
    expect(dmaNeedSync(dev, phys)).toBe(false); // coherent, never bounced (debug on → checks address)
    const rules = new Set(m.dmaDebug.reports.map((r) => r.rule));
    for (const r of ['invalid-direction', 'invalid-argument', 'no-dma-mask', 'unmap-error-address']) expect(rules).toContain(r);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });
});

describe('the folded hot-path checks report the same problem as the step-by-step ones', () => {
  it('each malformed map or unmap names its argument, once, and reaches no backend', () => {
    const m = machine();
    m.dmaDebug.mode = 'warn';
    const dev = m.pci.addDevice({ name: 'd', dmaMaskBits: 64 });
    const phys = m.memory.allocPages(0);
    const messages = (): string[] => m.dmaDebug.reports.map((r) => `${r.rule}: ${r.message}`);
    expect(dmaMapPhys(dev, phys, 64, DMA_TO_DEVICE, 2 ** 33)).toBe(DMA_MAPPING_ERROR);
    expect(dmaMapPhys(dev, phys + 0.5, 64, DMA_TO_DEVICE)).toBe(DMA_MAPPING_ERROR);
    dmaUnmapPhys(dev, -4096, 64, DMA_TO_DEVICE);
    dmaUnmapPhys(dev, phys, 64, DMA_TO_DEVICE, -1);
    expect(messages()).toEqual([
      'invalid-argument: dma_map_phys: invalid attrs 8589934592',
      `invalid-argument: dma_map_phys: address 0x${(phys + 0.5).toString(16)}+64 outside the physical address space`,
      'invalid-argument: dma_unmap_phys: invalid DMA address -4096',
      'invalid-argument: dma_unmap_phys: invalid attrs -1',
    ]);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });
});

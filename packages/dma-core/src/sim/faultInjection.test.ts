import { describe, expect, it } from 'vitest';
import {
  createMachine,
  DMA_TO_DEVICE,
  dmaMapPhys,
  dmaMappingError,
  dmaPoolAlloc,
  dmaPoolCreate,
  dmaPoolDestroy,
  dmaPoolFree,
  dmaUnmapPhys,
  FaultInjection,
  resourceCountChanges,
  SZ_4G,
} from '@dmakit/dma-core';

describe('FaultInjection.failNth (the fail-nth counter over every site)', () => {
  it('fails exactly the nth call counted across all sites, once, and reads back 0 after it fired', () => {
    const f = new FaultInjection();
    f.failNth(3);
    expect(f.failNthPending).toBe(3);
    const got = ['alloc_pages', 'iova', 'pgtable', 'iova', 'alloc_pages'].map((s) => f.shouldFail(s));
    expect(got).toEqual([false, false, true, false, false]);
    expect(f.failNthPending).toBe(0);
    expect(f.lastInjected).toEqual({ site: 'pgtable', call: 3 });
    expect(f.injected.get('pgtable')).toBe(1);
    expect(f.totalCalls).toBe(5);
    expect([...f.sites()]).toEqual([
      ['alloc_pages', 2],
      ['iova', 2],
      ['pgtable', 1],
    ]);
  });

  it('stays pending when the run passes fewer sites than n, and 0 disarms it', () => {
    const f = new FaultInjection();
    f.failNth(10);
    for (let i = 0; i < 4; i++) expect(f.shouldFail('swiotlb')).toBe(false);
    expect(f.failNthPending).toBe(6);
    f.failNth(0);
    expect(f.failNthPending).toBe(0);
    f.failNth(2);
    f.disarm();
    expect(f.shouldFail('swiotlb') || f.shouldFail('swiotlb')).toBe(false);
  });

  it('keeps per-site arms working beside the counter', () => {
    const f = new FaultInjection();
    f.arm('iova', 2);
    f.failNth(1);
    expect([f.shouldFail('alloc_pages'), f.shouldFail('iova'), f.shouldFail('iova')]).toEqual([true, false, true]);
  });

  it('tells an observer every call with its number', () => {
    const f = new FaultInjection();
    const seen: string[] = [];
    f.onCall = (site, call) => seen.push(`${call}:${site}`);
    f.shouldFail('a');
    f.shouldFail('b');
    expect(seen).toEqual(['1:a', '2:b']);
  });

  it('refuses a negative or fractional n', () => {
    const f = new FaultInjection();
    expect(() => {
      f.failNth(-1);
    }).toThrow(RangeError);
    expect(() => {
      f.failNth(1.5);
    }).toThrow(RangeError);
  });

  it('fails the nth allocation of a machine: the page allocator returns 0', () => {
    const m = createMachine({ ramBytes: 64 * 1024 * 1024 });
    m.faultInjection.failNth(2);
    expect(m.memory.allocPages(0)).not.toBe(0);
    expect(m.memory.allocPages(0)).toBe(0);
    expect(m.memory.allocPages(0)).not.toBe(0);
  });
});

describe('machine.resourceCounts()', () => {
  it('counts pages, dma-debug mappings, swiotlb slots and pool blocks, and is back to the start after teardown', () => {
    const m = createMachine({ ramBytes: 2 * SZ_4G, dmaDebug: 'strict' });
    const dev = m.pci.addDevice({ name: 'legacy32', dmaMaskBits: 32 });
    const start = m.resourceCounts();
    expect(start).toMatchObject({ allocatedPages: 0, dmaDebugEntries: 0, dmaDebugIovaStates: 0, swiotlbSlots: 0, dmaPools: 0, dmaPoolBlocks: 0 });
    const phys = m.memory.allocPagesAbove(0, SZ_4G);
    const dma = dmaMapPhys(dev, phys, 4096, DMA_TO_DEVICE, 0);
    expect(dmaMappingError(dev, dma)).toBe(0);
    const pool = dmaPoolCreate('prp', dev, 256, 256, 0);
    const blk = pool === null ? null : dmaPoolAlloc(pool);
    const during = m.resourceCounts();
    expect(during.dmaDebugEntries).toBeGreaterThanOrEqual(2); // the mapping and the pool's coherent page
    expect(during.swiotlbSlots).toBeGreaterThan(0);
    expect(during.dmaPools).toBe(1);
    expect(during.dmaPoolBlocks).toBe(1);
    expect(resourceCountChanges(start, during)).toContain('dmaPoolBlocks: 0 -> 1');
    if (pool !== null && blk !== null) dmaPoolFree(pool, blk.vaddr, blk.dma);
    dmaPoolDestroy(pool);
    dmaUnmapPhys(dev, dma, 4096, DMA_TO_DEVICE, 0);
    m.memory.freePages(phys, 0);
    expect(resourceCountChanges(start, m.resourceCounts())).toEqual([]);
  });

  it('does not count the zero page (a boot-time page the model allocates at first use)', () => {
    const m = createMachine({ ramBytes: 64 * 1024 * 1024 });
    const start = m.resourceCounts();
    expect(m.memory.zeroPagePhys).toBeGreaterThan(0);
    expect(m.memory.allocatedPageCount).toBe(1);
    expect(m.resourceCounts().allocatedPages).toBe(start.allocatedPages);
  });

  it('includes the counters subsystems register', () => {
    const m = createMachine({ ramBytes: 64 * 1024 * 1024 });
    let held = 0;
    m.registerResourceCounter('widgets', () => held);
    held = 3;
    expect(m.resourceCounts().widgets).toBe(3);
  });
});

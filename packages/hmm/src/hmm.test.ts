// hmm_range_fault request semantics and the HMM DMA helpers, unit level.
import { describe, expect, it } from 'vitest';
import {
  DMA_MAPPING_ERROR,
  Errno,
  HMM_PFN_DMA_MAPPED,
  HMM_PFN_ERROR,
  HMM_PFN_P2PDMA,
  HMM_PFN_REQ_FAULT,
  HMM_PFN_REQ_WRITE,
  HMM_PFN_VALID,
  HMM_PFN_VALID_U64,
  HMM_RANGE_DEFAULT_TIMEOUT,
  HMM_PFN_WRITE,
  HmmDmaMap,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MmuIntervalNotifier,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  createMachine,
  dmaUseIova,
  hmmPfnFlags,
  hmmPfnHi,
  hmmPfnSet,
  hmmPfnSetFlags,
  hmmPfnToMapOrder,
  hmmPfnToPfn,
  hmmPfnWord,
  hmmPfnsAlloc,
  hmmPfnsAsU64,
  mmuIntervalNotifierInsert,
  mmuIntervalReadBegin,
  mmuIntervalSetSeq,
} from '@dmakit/dma-core';
import type { HmmRange, Machine, MmStruct } from '@dmakit/dma-core';
import { hmmDmaMapAlloc, hmmDmaMapFree, hmmDmaMapPfn, hmmDmaUnmapPfn, hmmPort, hmmRangeFault, hmmRangeFaultUnlockedTimeout } from '@dmakit/hmm';
import { FakeIommu } from '@dmakit/testkit';

function notifierFor(mm: MmStruct, start: number, len: number): MmuIntervalNotifier {
  const sub = new MmuIntervalNotifier();
  expect(
    mmuIntervalNotifierInsert(sub, mm, start, len, {
      invalidate: (s, _r, seq) => {
        mmuIntervalSetSeq(s, seq);
        return true;
      },
    }),
  ).toBe(0);
  return sub;
}

function rangeOf(sub: MmuIntervalNotifier, start: number, npages: number, defaultFlags: number, pfnFlagsMask = 0): HmmRange {
  return { notifier: sub, notifierSeq: mmuIntervalReadBegin(sub), start, end: start + npages * PAGE_SIZE, hmmPfns: hmmPfnsAlloc(npages), defaultFlags, pfnFlagsMask };
}

function proc(): { machine: Machine; mm: MmStruct } {
  const machine = createMachine({ ramBytes: 64 << 20, dmaDebug: 'strict' });
  return { machine, mm: machine.createProcess().mm };
}

describe('HMM_PFN word layout (split 32-bit words)', () => {
  it('matches the kernel u64 layout and keeps the sticky bits on rewrite', () => {
    const pfns = hmmPfnsAlloc(2);
    hmmPfnSet(pfns, 0, 0x3_1234_5678, HMM_PFN_VALID | HMM_PFN_WRITE | (9 << 21));
    expect(hmmPfnToPfn(pfns, 0)).toBe(0x3_1234_5678);
    expect(hmmPfnToMapOrder(pfns, 0)).toBe(9);
    expect(hmmPfnWord(pfns, 0)).toBe(HMM_PFN_VALID_U64 | (1n << 62n) | (9n << 53n) | 0x3_1234_5678n);
    expect(hmmPfnsAsU64(pfns)[0]).toBe(hmmPfnWord(pfns, 0));
    hmmPfnSetFlags(pfns, 0, HMM_PFN_DMA_MAPPED | HMM_PFN_P2PDMA);
    hmmPfnSet(pfns, 0, 7, HMM_PFN_VALID);
    expect(hmmPfnFlags(pfns, 0)).toBe((HMM_PFN_VALID | HMM_PFN_DMA_MAPPED | HMM_PFN_P2PDMA) >>> 0);
    expect(hmmPfnToPfn(pfns, 0)).toBe(7);
  });
});

describe('hmmRangeFault', () => {
  it('snapshot mode (no REQ_FAULT) never faults: holes 0, no VMA ERROR', () => {
    const { mm } = proc();
    const a = mm.mmap({ length: 4 * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    mm.write(a, new Uint8Array([1]));
    const sub = notifierFor(mm, a - PAGE_SIZE, 6 * PAGE_SIZE);
    const r = rangeOf(sub, a - PAGE_SIZE, 6, 0);
    expect(hmmRangeFault(r)).toBe(0);
    expect(hmmPfnHi(r.hmmPfns, 0)).toBe(HMM_PFN_ERROR);
    expect(hmmPfnFlags(r.hmmPfns, 1)).toBe((HMM_PFN_VALID | HMM_PFN_WRITE) >>> 0);
    expect(hmmPfnHi(r.hmmPfns, 2)).toBe(0);
    expect(hmmPfnHi(r.hmmPfns, 5)).toBe(HMM_PFN_ERROR);
    expect(mm.rssPages).toBe(1);
  });

  it('request = defaultFlags | (pfn & pfnFlagsMask): one page asked writable, the rest readable', () => {
    const { mm } = proc();
    const a = mm.mmap({ length: 4 * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    const sub = notifierFor(mm, a, 4 * PAGE_SIZE);
    const r = rangeOf(sub, a, 4, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE);
    r.hmmPfns[2 * 2 + 1] = HMM_PFN_REQ_WRITE;
    // The read faults map the zero page; the write request then breaks COW, which invalidates
    // the caller's own interval: -EBUSY, and the driver retries (entries keep their inputs).
    expect(hmmRangeFault(r)).toBe(-Errno.EBUSY);
    r.notifierSeq = mmuIntervalReadBegin(sub);
    expect(hmmRangeFault(r)).toBe(0);
    const zero = mm.memory.zeroPagePhys / PAGE_SIZE;
    expect(hmmPfnToPfn(r.hmmPfns, 0)).toBe(zero);
    expect(hmmPfnFlags(r.hmmPfns, 0)).toBe(HMM_PFN_VALID >>> 0);
    expect(hmmPfnFlags(r.hmmPfns, 2)).toBe((HMM_PFN_VALID | HMM_PFN_WRITE) >>> 0);
    expect(hmmPfnToPfn(r.hmmPfns, 2)).not.toBe(zero);
  });

  it('-EBUSY when an invalidation ran after read_begin; -EPERM for write on read-only; -EFAULT on a hole', () => {
    const { mm } = proc();
    const a = mm.mmap({ length: 2 * PAGE_SIZE, prot: PROT_READ, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    mm.read(a, 2 * PAGE_SIZE);
    const sub = notifierFor(mm, a, 2 * PAGE_SIZE);
    const r = rangeOf(sub, a, 2, HMM_PFN_REQ_FAULT);
    mm.munmap(a + PAGE_SIZE, PAGE_SIZE);
    expect(hmmRangeFault(r)).toBe(-Errno.EBUSY);
    r.notifierSeq = mmuIntervalReadBegin(sub);
    expect(hmmRangeFault(r)).toBe(-Errno.EFAULT);
    const w = rangeOf(sub, a, 1, HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE);
    expect(hmmRangeFault(w)).toBe(-Errno.EPERM);
    expect(hmmRangeFault({ ...w, start: a + 1 })).toBe(-Errno.EINVAL);
  });

  it('hmm_range_fault_unlocked_timeout: retries -EBUSY itself, gives up after the timeout', () => {
    const { machine, mm } = proc();
    const a = mm.mmap({ length: PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    mm.read(a, 1);
    const sub = notifierFor(mm, a, PAGE_SIZE);
    const r = rangeOf(sub, a, 1, HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE);
    expect(hmmRangeFaultUnlockedTimeout(r, HMM_RANGE_DEFAULT_TIMEOUT)).toBe(0); // the COW -EBUSY is absorbed
    expect(hmmPfnFlags(r.hmmPfns, 0)).toBe((HMM_PFN_VALID | HMM_PFN_WRITE) >>> 0);
    // An invalidation that never ends: every attempt is -EBUSY until the timeout.
    const open = mm.notifierRange(0, a, a + PAGE_SIZE);
    mm.invalidateRangeStart(open);
    const t0 = machine.clock.now();
    expect(hmmRangeFaultUnlockedTimeout(r, 5)).toBe(-Errno.EBUSY);
    expect(machine.clock.now() - t0).toBeGreaterThanOrEqual(5e6);
    mm.invalidateRangeEnd(open);
    expect(hmmRangeFaultUnlockedTimeout(r, 5)).toBe(0);
  });

  it('a COW break during the fault invalidates the caller itself: -EBUSY, then success', () => {
    const { mm } = proc();
    const a = mm.mmap({ length: PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    mm.read(a, 1); // zero page
    const sub = notifierFor(mm, a, PAGE_SIZE);
    const r = rangeOf(sub, a, 1, HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE);
    expect(hmmRangeFault(r)).toBe(-Errno.EBUSY);
    r.notifierSeq = mmuIntervalReadBegin(sub);
    expect(hmmRangeFault(r)).toBe(0);
    expect(hmmPfnFlags(r.hmmPfns, 0)).toBe((HMM_PFN_VALID | HMM_PFN_WRITE) >>> 0);
  });
});

describe('HMM DMA helpers', () => {
  it('IOVA mode: fixed slots, re-map returns the same address, unmap once, no dma list', () => {
    const { machine, mm } = proc();
    const dev = machine.pci.addDevice({ name: 'rnic', dmaMaskBits: 64 });
    const ops = new FakeIommu();
    dev.dmaOps = ops;
    const a = mm.mmap({ length: 8 * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    mm.write(a + 3 * PAGE_SIZE, new Uint8Array([42]));
    const map = new HmmDmaMap();
    expect(hmmDmaMapAlloc(dev, map, 8, PAGE_SIZE)).toBe(0);
    expect(dmaUseIova(map.state)).toBe(true);
    expect(map.dmaList).toBeNull();
    expect(map.pfnList.byteLength / 8).toBe(8); // 8 bytes of metadata per page
    const sub = notifierFor(mm, a, 8 * PAGE_SIZE);
    const r: HmmRange = { notifier: sub, notifierSeq: mmuIntervalReadBegin(sub), start: a, end: a + 8 * PAGE_SIZE, hmmPfns: map.pfnList, defaultFlags: HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE, pfnFlagsMask: 0 };
    expect(hmmRangeFault(r)).toBe(0); // fresh write faults: no COW break, no invalidation
    const addr3 = hmmDmaMapPfn(dev, map, 3, null);
    expect(addr3).toBe(map.state.addr + 3 * PAGE_SIZE);
    expect(hmmDmaMapPfn(dev, map, 3, null)).toBe(addr3);
    expect(ops.counts.sync).toBe(1);
    expect(ops.counts.mapPhys).toBe(0); // IOVA mode links; it never maps page by page
    expect(dev.dmaRead(addr3, 1)[0]).toBe(42);
    // A range fault rewrites the word and keeps DMA_MAPPED.
    r.notifierSeq = mmuIntervalReadBegin(sub);
    expect(hmmRangeFault(r)).toBe(0);
    expect(hmmPfnHi(map.pfnList, 3) & HMM_PFN_DMA_MAPPED).not.toBe(0);
    expect(hmmDmaUnmapPfn(dev, map, 3)).toBe(true);
    expect(hmmDmaUnmapPfn(dev, map, 3)).toBe(false);
    expect(ops.pte.size).toBe(0);
    expect(machine.dmaDebug.reports.map((x) => x.rule)).toEqual([]);
    // Bad input is a dma-debug report (thrown in strict mode), DMA_MAPPING_ERROR otherwise.
    expect(() => hmmDmaMapPfn(dev, map, 99, null)).toThrow(/outside the 8-entry map/);
    machine.dmaDebug.mode = 'warn';
    expect(hmmDmaMapPfn(dev, map, 99, null)).toBe(DMA_MAPPING_ERROR);
    hmmDmaMapFree(dev, map);
  });

  it('misuse is a dma-debug report: freeing the map with a linked entry', () => {
    const { machine, mm } = proc();
    machine.dmaDebug.mode = 'warn';
    const dev = machine.pci.addDevice({ name: 'leaky', dmaMaskBits: 64 });
    dev.dmaOps = new FakeIommu();
    const a = mm.mmap({ length: 2 * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    mm.write(a, new Uint8Array([1]));
    const map = new HmmDmaMap();
    expect(hmmDmaMapAlloc(dev, map, 2, PAGE_SIZE)).toBe(0);
    const sub = notifierFor(mm, a, 2 * PAGE_SIZE);
    expect(hmmRangeFault({ notifier: sub, notifierSeq: mmuIntervalReadBegin(sub), start: a, end: a + PAGE_SIZE, hmmPfns: map.pfnList, defaultFlags: HMM_PFN_REQ_FAULT, pfnFlagsMask: 0 })).toBe(0);
    expect(hmmDmaMapPfn(dev, map, 0, null)).toBe(map.state.addr);
    // Entry 1 was never faulted: mapping it is refused, not a crash.
    expect(hmmDmaMapPfn(dev, map, 1, null)).toBe(DMA_MAPPING_ERROR);
    hmmDmaMapFree(dev, map);
    expect(machine.dmaDebug.reports.map((r) => r.rule)).toEqual(['invalid-argument', 'iova-free-with-links']);
  });

  it('dma-direct with dma-debug: a dma list per entry, 16 bytes per page of metadata', () => {
    const { machine, mm } = proc();
    const dev = machine.pci.addDevice({ name: 'd', dmaMaskBits: 64 });
    const a = mm.mmap({ length: 4 * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    mm.write(a, new Uint8Array(4 * PAGE_SIZE).fill(7));
    const map = new HmmDmaMap();
    expect(hmmPort.hmmDmaMapAlloc(dev, map, 4, PAGE_SIZE)).toBe(0);
    expect(map.dmaList?.length).toBe(4);
    const sub = notifierFor(mm, a, 4 * PAGE_SIZE);
    const r: HmmRange = { notifier: sub, notifierSeq: mmuIntervalReadBegin(sub), start: a, end: a + 4 * PAGE_SIZE, hmmPfns: map.pfnList, defaultFlags: HMM_PFN_REQ_FAULT, pfnFlagsMask: 0 };
    expect(hmmRangeFault(r)).toBe(0);
    for (let i = 0; i < 4; i++) expect(hmmDmaMapPfn(dev, map, i, null)).toBe(map.dmaList?.[i]);
    expect(machine.dmaDebug.entries).toBe(4);
    for (let i = 0; i < 4; i++) expect(hmmDmaUnmapPfn(dev, map, i)).toBe(true);
    expect(machine.dmaDebug.entries).toBe(0);
    hmmDmaMapFree(dev, map);
  });

  it("fails with -ENOMEM when its pfn list cannot be allocated (fault-injection site 'hmm_dma_map_alloc'), holding nothing", () => {
    const machine = createMachine({ ramBytes: 256 * 2 ** 20, dmaDebug: 'strict' });
    const dev = machine.pci.addDevice({ name: 'ok', dmaMaskBits: 64 });
    const map = new HmmDmaMap();
    const before = machine.resourceCounts();
    machine.faultInjection.arm('hmm_dma_map_alloc', 1);
    expect(hmmDmaMapAlloc(dev, map, 16, PAGE_SIZE)).toBe(-Errno.ENOMEM);
    expect(machine.resourceCounts()).toEqual(before);
    expect(hmmDmaMapAlloc(dev, map, 16, PAGE_SIZE)).toBe(0);
    hmmDmaMapFree(dev, map);
  });

  it('refuses devices that need syncs or could bounce (-EOPNOTSUPP) and bad sizes (-EINVAL)', () => {
    const machine = createMachine({ ramBytes: 6 * 2 ** 30, dmaDebug: 'warn' });
    const nc = machine.pci.addDevice({ name: 'nc', dmaMaskBits: 64, coherent: false });
    const d32 = machine.pci.addDevice({ name: 'd32', dmaMaskBits: 32 });
    const ok = machine.pci.addDevice({ name: 'ok', dmaMaskBits: 64 });
    expect(hmmDmaMapAlloc(nc, new HmmDmaMap(), 16, PAGE_SIZE)).toBe(-Errno.EOPNOTSUPP);
    expect(hmmDmaMapAlloc(d32, new HmmDmaMap(), 16, PAGE_SIZE)).toBe(-Errno.EOPNOTSUPP);
    expect(hmmDmaMapAlloc(ok, new HmmDmaMap(), 16, 3000)).toBe(-Errno.EINVAL);
    expect(hmmDmaMapAlloc(ok, new HmmDmaMap(), 1, 2 << 20)).toBe(-Errno.EINVAL);
    expect(hmmDmaMapAlloc(ok, new HmmDmaMap(), 1024, 2 << 20)).toBe(0);
  });
});

// hmm_dma_map_pfn on peer-to-peer pages (a process mapping another device's P2P BAR memory).
import { describe, expect, it } from 'vitest';
import {
  DMA_MAPPING_ERROR,
  HMM_PFN_DMA_MAPPED,
  HMM_PFN_P2PDMA,
  HMM_PFN_P2PDMA_BUS,
  HMM_PFN_REQ_FAULT,
  HmmDmaMap,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MmuIntervalNotifier,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  PTE_PRESENT,
  PTE_WRITE,
  hmmPfnHi,
  mmuIntervalNotifierInsert,
  mmuIntervalReadBegin,
  mmuIntervalSetSeq,
  pciP2pdmaMapStateInit,
} from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';
import { hmmDmaMapAlloc, hmmDmaMapFree, hmmDmaMapPfn, hmmDmaUnmapPfn, hmmRangeFault } from '@dmakit/hmm';
import { buildP2pSwitch } from '@dmakit/testkit';

function topology(acs: boolean): { m: Machine; nic: Device; barPhys: number } {
  const t = buildP2pSwitch({ acs, allowed: true, clientName: 'nic' });
  return { m: t.machine, nic: t.client, barPhys: t.barPhys };
}

describe('hmm_dma_map_pfn and P2P pages', () => {
  it.each([
    { title: 'behind one switch: P2PDMA_BUS, the PCI bus address, nothing to unmap', acs: false, set: HMM_PFN_P2PDMA_BUS, clear: 0, entries: 1 /* only the RAM page was mapped */ },
    { title: 'through the host bridge: P2PDMA flag, mapped with DMA_ATTR_MMIO, unmapped', acs: true, set: HMM_PFN_P2PDMA, clear: HMM_PFN_P2PDMA_BUS, entries: 2 },
  ])('$title', ({ acs, set, clear, entries }) => {
    const { m, nic, barPhys } = topology(acs);
    const mm = m.createProcess().mm;
    const addr = mm.mmap({ length: 2 * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    // p2pmem_alloc_mmap: the process maps a page of the GPU's BAR (and a RAM page after it).
    m.memory.pageGet(barPhys);
    mm.setPte(addr, barPhys / PAGE_SIZE, PTE_PRESENT | PTE_WRITE);
    m.memory.write(barPhys, new Uint8Array([0xb0, 0xa7]));
    mm.write(addr + PAGE_SIZE, new Uint8Array([0x42]));
    const sub = new MmuIntervalNotifier();
    mmuIntervalNotifierInsert(sub, mm, addr, 2 * PAGE_SIZE, { invalidate: (s, _r, seq) => (mmuIntervalSetSeq(s, seq), true) });
    const map = new HmmDmaMap();
    expect(hmmDmaMapAlloc(nic, map, 2, PAGE_SIZE)).toBe(0);
    expect(hmmRangeFault({ notifier: sub, notifierSeq: mmuIntervalReadBegin(sub), start: addr, end: addr + 2 * PAGE_SIZE, hmmPfns: map.pfnList, defaultFlags: HMM_PFN_REQ_FAULT, pfnFlagsMask: 0 })).toBe(0);
    const st = pciP2pdmaMapStateInit();
    const a0 = hmmDmaMapPfn(nic, map, 0, st);
    const a1 = hmmDmaMapPfn(nic, map, 1, st);
    expect(a0).not.toBe(DMA_MAPPING_ERROR);
    expect(a1).not.toBe(DMA_MAPPING_ERROR);
    const hi = hmmPfnHi(map.pfnList, 0);
    expect(hi & set).toBe(set);
    expect(hi & clear).toBe(0);
    expect(m.dmaDebug.entries).toBe(entries);
    expect(hi & HMM_PFN_DMA_MAPPED).not.toBe(0);
    // The NIC reads the peer page and the RAM page through what hmm_dma_map_pfn returned.
    expect([...nic.dmaRead(a0, 2)]).toEqual([0xb0, 0xa7]);
    expect(nic.dmaRead(a1, 1)[0]).toBe(0x42);
    expect(hmmDmaUnmapPfn(nic, map, 0)).toBe(true);
    expect(hmmDmaUnmapPfn(nic, map, 1)).toBe(true);
    expect(hmmPfnHi(map.pfnList, 0) & (HMM_PFN_DMA_MAPPED | HMM_PFN_P2PDMA | HMM_PFN_P2PDMA_BUS)).toBe(0);
    expect(m.dmaDebug.entries).toBe(0);
    hmmDmaMapFree(nic, map);
    mm.munmap(addr, 2 * PAGE_SIZE);
    expect(m.dmaDebug.reports).toEqual([]);
  });
});

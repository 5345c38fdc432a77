/**
 * A small fake of dma-core's HMM port for this package's tests (a subsystem package may import
 * only @dmakit/dma-core; the real @dmakit/hmm is wired in by apps/demo's end-to-end tests). It
 * follows mm/hmm.c closely enough for ODP: request flags, faults through handleMmFault, -EBUSY
 * on an overlapping invalidation, -EPERM/-EFAULT, orders of huge mappings, sticky DMA bits, and
 * the hmm_dma_map_* helpers on the two-step API (or dma_map_phys without an IOMMU).
 */
import {
  DMA_BIDIRECTIONAL,
  DMA_MAPPING_ERROR,
  Errno,
  HMM_PFN_DMA_MAPPED,
  HMM_PFN_ERROR,
  HMM_PFN_INOUT_FLAGS,
  HMM_PFN_ORDER_SHIFT_HI,
  HMM_PFN_REQ_FAULT,
  HMM_PFN_REQ_WRITE,
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  PAGE_SIZE,
  PROT_NONE,
  PROT_WRITE,
  PTE_PRESENT,
  PTE_WRITE,
  dmaAddressingLimited,
  dmaIovaFree,
  dmaIovaLink,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaIovaUnlink,
  dmaMapPhys,
  dmaMappingError,
  dmaNeedUnmap,
  dmaUnmapPhys,
  dmaUseIova,
  hmmPfnClearFlags,
  hmmPfnHi,
  hmmPfnSet,
  hmmPfnSetFlags,
  hmmPfnToPhys,
  hmmPfnsAlloc,
  hmmPfnsLength,
  mmuIntervalCheckRetry,
} from '@dmakit/dma-core';
import type { Device, HmmDmaMap, HmmPort, HmmRange } from '@dmakit/dma-core';

export interface FakeHmm extends HmmPort {
  readonly stats: { rangeFaults: number; cpuFaults: number; links: number; unlinks: number; maps: number };
}

export function createFakeHmm(): FakeHmm {
  const stats = { rangeFaults: 0, cpuFaults: 0, links: 0, unlinks: 0, maps: 0 };
  return {
    stats,
    hmmRangeFault(range: HmmRange): number {
      stats.rangeFaults++;
      const sub = range.notifier;
      const mm = sub.mm;
      if (mm === undefined || range.end <= range.start || range.start % PAGE_SIZE !== 0) return -Errno.EINVAL;
      if (hmmPfnsLength(range.hmmPfns) < (range.end - range.start) / PAGE_SIZE) return -Errno.EINVAL;
      const pfns = range.hmmPfns;
      for (let i = 0, addr = range.start; addr < range.end; i++, addr += PAGE_SIZE) {
        if (mmuIntervalCheckRetry(sub, range.notifierSeq)) return -Errno.EBUSY;
        const req = (range.defaultFlags | (hmmPfnHi(pfns, i) & range.pfnFlagsMask)) >>> 0;
        const wantFault = (req & HMM_PFN_REQ_FAULT) !== 0;
        const wantWrite = wantFault && (req & HMM_PFN_REQ_WRITE) !== 0;
        const v = mm.findVma(addr);
        if (v === undefined || v.prot === PROT_NONE) {
          if (wantFault) return -Errno.EFAULT;
          hmmPfnSet(pfns, i, 0, v === undefined ? HMM_PFN_ERROR : 0);
          continue;
        }
        let f = mm.pteFlags(addr);
        if (wantFault && ((f & PTE_PRESENT) === 0 || (wantWrite && (f & PTE_WRITE) === 0))) {
          if (wantWrite && (v.prot & PROT_WRITE) === 0) return -Errno.EPERM;
          stats.cpuFaults++;
          const r = mm.handleMmFault(addr, wantWrite);
          if (r < 0) return r === -Errno.ENOMEM ? r : -Errno.EFAULT;
          // The fault may have invalidated (COW break): the walk restarts.
          if (mmuIntervalCheckRetry(sub, range.notifierSeq)) return -Errno.EBUSY;
          f = mm.pteFlags(addr);
        }
        if ((f & PTE_PRESENT) === 0) {
          hmmPfnSet(pfns, i, 0, 0);
          continue;
        }
        const order = mm.pteOrder(addr);
        hmmPfnSet(pfns, i, mm.walkPte(addr), HMM_PFN_VALID | ((f & PTE_WRITE) !== 0 ? HMM_PFN_WRITE : 0) | (order << HMM_PFN_ORDER_SHIFT_HI));
      }
      return mmuIntervalCheckRetry(sub, range.notifierSeq) ? -Errno.EBUSY : 0;
    },

    hmmDmaMapAlloc(dev: Device, map: HmmDmaMap, nrEntries: number, dmaEntrySize: number): number {
      if (!Number.isSafeInteger(nrEntries) || nrEntries <= 0 || Math.floor((nrEntries * PAGE_SIZE) / dmaEntrySize) === 0) return -Errno.EINVAL;
      if (!dev.coherent || dev.forceSwiotlb || dmaAddressingLimited(dev)) return -Errno.EOPNOTSUPP;
      map.pfnList = hmmPfnsAlloc(nrEntries);
      map.nrEntries = nrEntries;
      map.dmaEntrySize = dmaEntrySize;
      const useIova = dmaIovaTryAlloc(dev, map.state, 0, nrEntries * PAGE_SIZE);
      map.dmaList = !useIova && dmaNeedUnmap(dev) ? new Float64Array(nrEntries) : null;
      return 0;
    },

    hmmDmaMapFree(dev: Device, map: HmmDmaMap): void {
      if (dmaUseIova(map.state)) dmaIovaFree(dev, map.state);
      map.state.reset();
      map.pfnList = new Uint32Array(0);
      map.dmaList = null;
      map.nrEntries = 0;
    },

    hmmDmaMapPfn(dev: Device, map: HmmDmaMap, idx: number): number {
      const pfns = map.pfnList;
      const hi = hmmPfnHi(pfns, idx);
      const size = map.dmaEntrySize;
      const iova = dmaUseIova(map.state);
      if ((hi & HMM_PFN_DMA_MAPPED) !== 0) {
        if (iova) return map.state.addr + idx * size;
        if (map.dmaList !== null) return map.dmaList[idx] ?? DMA_MAPPING_ERROR;
      }
      const phys = hmmPfnToPhys(pfns, idx);
      let dma: number;
      if (iova) {
        const off = idx * size;
        if (dmaIovaLink(dev, map.state, phys, off, size, DMA_BIDIRECTIONAL, 0) < 0) return DMA_MAPPING_ERROR;
        stats.links++;
        if (dmaIovaSync(dev, map.state, off, size) < 0) {
          dmaIovaUnlink(dev, map.state, off, size, DMA_BIDIRECTIONAL, 0);
          return DMA_MAPPING_ERROR;
        }
        dma = map.state.addr + off;
      } else {
        dma = dmaMapPhys(dev, phys, size, DMA_BIDIRECTIONAL, 0);
        stats.maps++;
        if (dmaMappingError(dev, dma) !== 0) return DMA_MAPPING_ERROR;
        if (map.dmaList !== null) map.dmaList[idx] = dma;
      }
      hmmPfnSetFlags(pfns, idx, HMM_PFN_DMA_MAPPED);
      return dma;
    },

    hmmDmaUnmapPfn(dev: Device, map: HmmDmaMap, idx: number): boolean {
      const pfns = map.pfnList;
      const hi = hmmPfnHi(pfns, idx);
      if ((hi & HMM_PFN_VALID) === 0 || (hi & HMM_PFN_DMA_MAPPED) === 0) return false;
      const size = map.dmaEntrySize;
      if (dmaUseIova(map.state)) {
        dmaIovaUnlink(dev, map.state, idx * size, size, DMA_BIDIRECTIONAL, 0);
        stats.unlinks++;
      } else if (map.dmaList !== null) {
        dmaUnmapPhys(dev, map.dmaList[idx] ?? 0, size, DMA_BIDIRECTIONAL, 0);
        map.dmaList[idx] = 0;
      }
      hmmPfnClearFlags(pfns, idx, HMM_PFN_INOUT_FLAGS);
      return true;
    },
  };
}

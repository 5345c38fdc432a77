// kernel: mm/hmm.c (hmm_dma_map_alloc, hmm_dma_map_free, hmm_dma_map_pfn, hmm_dma_unmap_pfn),
// include/linux/hmm-dma.h
import {
  DMA_ATTR_MMIO as DMA_ATTR_MMIO_,
  DMA_BIDIRECTIONAL as DMA_BIDIRECTIONAL_,
  DMA_MAPPING_ERROR as DMA_MAPPING_ERROR_,
  Errno,
  HMM_PFN_DMA_MAPPED as HMM_PFN_DMA_MAPPED_,
  HMM_PFN_P2PDMA as HMM_PFN_P2PDMA_,
  HMM_PFN_P2PDMA_BUS as HMM_PFN_P2PDMA_BUS_,
  HMM_PFN_PFN_HI_MASK as HMM_PFN_PFN_HI_MASK_,
  HMM_PFN_VALID as HMM_PFN_VALID_,
  HmmDmaMap,
  PAGE_SIZE as PAGE_SIZE_,
  PCI_P2PDMA_MAP_BUS_ADDR as PCI_P2PDMA_MAP_BUS_ADDR_,
  PCI_P2PDMA_MAP_NONE as PCI_P2PDMA_MAP_NONE_,
  PCI_P2PDMA_MAP_THRU_HOST_BRIDGE as PCI_P2PDMA_MAP_THRU_HOST_BRIDGE_,
  dmaAddressingLimited,
  dmaIovaFree,
  dmaIovaLink as dmaIovaLink_,
  dmaIovaSync as dmaIovaSync_,
  dmaIovaTryAlloc,
  dmaIovaUnlink as dmaIovaUnlink_,
  dmaMapPhys as dmaMapPhys_,
  dmaMappingError as dmaMappingError_,
  dmaNeedUnmap as dmaNeedUnmap_,
  dmaUnmapPhys as dmaUnmapPhys_,
  dmaUseIova as dmaUseIova_,
  hmmPfnsAlloc,
  pciP2pdmaBusAddrMap as pciP2pdmaBusAddrMap_,
  pciP2pdmaMapStateInit,
  pciP2pdmaState as pciP2pdmaState_,
} from '@dmakit/dma-core';
import type { Device, PciP2pdmaMapState } from '@dmakit/dma-core';

// Module-local copies of the imported constants and functions: toolchains that lower ESM to getters (tsx,
// esbuild interop) would otherwise make every use on the hot path a property get.
const DMA_ATTR_MMIO = DMA_ATTR_MMIO_;
const DMA_BIDIRECTIONAL = DMA_BIDIRECTIONAL_;
const DMA_MAPPING_ERROR = DMA_MAPPING_ERROR_;
const HMM_PFN_DMA_MAPPED = HMM_PFN_DMA_MAPPED_;
const HMM_PFN_P2PDMA = HMM_PFN_P2PDMA_;
const HMM_PFN_P2PDMA_BUS = HMM_PFN_P2PDMA_BUS_;
const HMM_PFN_PFN_HI_MASK = HMM_PFN_PFN_HI_MASK_;
const HMM_PFN_VALID = HMM_PFN_VALID_;
const PAGE_SIZE = PAGE_SIZE_;
const PCI_P2PDMA_MAP_BUS_ADDR = PCI_P2PDMA_MAP_BUS_ADDR_;
const PCI_P2PDMA_MAP_NONE = PCI_P2PDMA_MAP_NONE_;
const PCI_P2PDMA_MAP_THRU_HOST_BRIDGE = PCI_P2PDMA_MAP_THRU_HOST_BRIDGE_;
const dmaIovaLink = dmaIovaLink_;
const dmaIovaSync = dmaIovaSync_;
const dmaIovaUnlink = dmaIovaUnlink_;
const dmaMapPhys = dmaMapPhys_;
const dmaMappingError = dmaMappingError_;
const dmaNeedUnmap = dmaNeedUnmap_;
const dmaUnmapPhys = dmaUnmapPhys_;
const dmaUseIova = dmaUseIova_;
const pciP2pdmaBusAddrMap = pciP2pdmaBusAddrMap_;
const pciP2pdmaState = pciP2pdmaState_;

const TWO32 = 0x1_0000_0000;
const VALID_DMA = (HMM_PFN_VALID | HMM_PFN_DMA_MAPPED) >>> 0;
const STICKY_CLEAR = ~(HMM_PFN_DMA_MAPPED | HMM_PFN_P2PDMA | HMM_PFN_P2PDMA_BUS);

/** Counters for the DMA helpers (tests, demos, benchmarks). */
export interface HmmDmaStats {
  /** hmm_dma_map_pfn calls that linked or mapped a page. */
  mapped: number;
  /** Re-map of an already mapped entry (flag resync): same address, nothing linked. */
  remapped: number;
  /** BUS_ADDR peer pages (no IOMMU mapping). */
  p2pBus: number;
  /** THRU_HOST_BRIDGE peer pages (mapped with DMA_ATTR_MMIO). */
  p2pHostBridge: number;
  unmapped: number;
  errors: number;
}

/**
 * Counters of the HMM DMA helpers (mapped, remapped, P2P, unmapped, errors); reset with
 * hmmDmaStatsReset().
 */
export const hmmDmaStats: HmmDmaStats = { mapped: 0, remapped: 0, p2pBus: 0, p2pHostBridge: 0, unmapped: 0, errors: 0 };

/** Zeroes hmmDmaStats. */
export function hmmDmaStatsReset(): void {
  hmmDmaStats.mapped = 0;
  hmmDmaStats.remapped = 0;
  hmmDmaStats.p2pBus = 0;
  hmmDmaStats.p2pHostBridge = 0;
  hmmDmaStats.unmapped = 0;
  hmmDmaStats.errors = 0;
}

function isPow2(x: number): boolean {
  return Number.isSafeInteger(x) && x > 0 && 2 ** Math.round(Math.log2(x)) === x;
}

/**
 * `hmm_dma_map_alloc(dev, map, nr_entries, dma_entry_size)`: 0, -EOPNOTSUPP (the device needs
 * DMA syncs or is addressing limited, i.e. swiotlb could bounce: HMM lets CPU and device share
 * pages live, so bouncing or cache maintenance would corrupt data), -EINVAL (bad sizes; the
 * kernel WARNs), -ENOMEM. One IOVA window covers the whole range (phys hint 0); if none can be
 * had and unmap is needed, a dma list with one address per entry.
 */
export function hmmDmaMapAlloc(dev: Device, map: HmmDmaMap, nrEntries: number, dmaEntrySize: number): number {
  if (!(map instanceof HmmDmaMap)) {
    dev.host.dmaDebug.report('invalid-argument', dev, 'hmm_dma_map_alloc: map is not an HmmDmaMap');
    return -Errno.EINVAL;
  }
  if (!Number.isSafeInteger(nrEntries) || nrEntries <= 0 || !isPow2(dmaEntrySize) || dmaEntrySize < PAGE_SIZE) {
    dev.host.dmaDebug.report('invalid-argument', dev, `hmm_dma_map_alloc: invalid nr_entries ${String(nrEntries)} or dma_entry_size ${String(dmaEntrySize)}`);
    return -Errno.EINVAL;
  }
  // kernel: WARN_ON_ONCE(!(nr_entries * PAGE_SIZE / dma_entry_size))
  if (Math.floor((nrEntries * PAGE_SIZE) / dmaEntrySize) === 0) {
    dev.host.dmaDebug.report('invalid-argument', dev, `hmm_dma_map_alloc: ${nrEntries} pages hold no ${dmaEntrySize}-byte entry`);
    return -Errno.EINVAL;
  }
  // kernel: dma_need_sync = !dev->dma_skip_sync (CONFIG_DMA_NEED_SYNC); dma_addressing_limited.
  if (!dev.dmaSkipSync || dmaAddressingLimited(dev)) return -Errno.EOPNOTSUPP;
  // kernel: mm/hmm.c kvcalloc() of map->pfn_list (fault-injection site 'hmm_dma_map_alloc').
  if (dev.host.faultInjection?.shouldFail('hmm_dma_map_alloc') === true) return -Errno.ENOMEM;
  map.dmaEntrySize = dmaEntrySize;
  map.nrEntries = nrEntries;
  map.pfnList = hmmPfnsAlloc(nrEntries);
  map.dmaList = null;
  const useIova = dmaIovaTryAlloc(dev, map.state, 0, nrEntries * PAGE_SIZE);
  if (!useIova && dmaNeedUnmap(dev)) map.dmaList = new Float64Array(nrEntries);
  return 0;
}

/**
 * `hmm_dma_map_free(dev, map)`: free the IOVA window (every entry must already be unmapped;
 * dma-debug reports links left behind) and both arrays.
 */
export function hmmDmaMapFree(dev: Device, map: HmmDmaMap): void {
  if (dmaUseIova(map.state)) dmaIovaFree(dev, map.state);
  map.state.reset();
  map.pfnList = new Uint32Array(0);
  map.dmaList = null;
  map.nrEntries = 0;
}

// One scratch P2P state for callers that pass none (the kernel requires one).
const scratchP2p = pciP2pdmaMapStateInit();

/**
 * `hmm_dma_map_pfn(dev, map, idx, p2pdma_state)`: DMA-map the page of entry idx (which must be
 * VALID, under the driver lock after a successful read_retry). Returns the DMA address
 * (`state.addr + idx * dmaEntrySize` in IOVA mode) or DMA_MAPPING_ERROR.
 */
export function hmmDmaMapPfn(dev: Device, map: HmmDmaMap, idx: number, p2pdmaState: PciP2pdmaMapState | null): number {
  const pfns = map.pfnList;
  const size = map.dmaEntrySize;
  if (!Number.isSafeInteger(idx) || idx < 0 || 2 * idx + 1 >= pfns.length || size === 0) {
    dev.host.dmaDebug.report('invalid-argument', dev, `hmm_dma_map_pfn: index ${String(idx)} outside the ${map.nrEntries}-entry map`);
    hmmDmaStats.errors++;
    return DMA_MAPPING_ERROR;
  }
  const hiIdx = 2 * idx + 1;
  let hi = pfns[hiIdx] ?? 0;
  if ((hi & HMM_PFN_VALID) === 0) {
    dev.host.dmaDebug.report('invalid-argument', dev, `hmm_dma_map_pfn: entry ${idx} is not HMM_PFN_VALID`);
    hmmDmaStats.errors++;
    return DMA_MAPPING_ERROR;
  }
  const state = map.state;
  const offset = idx * size;
  const useIova = dmaUseIova(state);
  if ((hi & HMM_PFN_DMA_MAPPED) !== 0 && (hi & HMM_PFN_P2PDMA_BUS) === 0) {
    // A flag resync (e.g. prefetched read-only, now needed writable): the mapping stands.
    if (useIova) {
      hmmDmaStats.remapped++;
      return state.addr + offset;
    }
    if (map.dmaList !== null) {
      hmmDmaStats.remapped++;
      return map.dmaList[idx] ?? DMA_MAPPING_ERROR;
    }
    // dma-direct without unmap: recompute (the mapping is stateless).
  }
  const paddr = ((hi & HMM_PFN_PFN_HI_MASK) * TWO32 + (pfns[2 * idx] ?? 0)) * PAGE_SIZE;
  let attrs = 0;
  const st = p2pdmaState ?? scratchP2p;
  const p2p = pciP2pdmaState(st, dev, paddr);
  if (p2p !== PCI_P2PDMA_MAP_NONE) {
    if (p2p === PCI_P2PDMA_MAP_THRU_HOST_BRIDGE) {
      attrs |= DMA_ATTR_MMIO;
      hi |= HMM_PFN_P2PDMA;
      pfns[hiIdx] = hi;
      hmmDmaStats.p2pHostBridge++;
    } else if (p2p === PCI_P2PDMA_MAP_BUS_ADDR && st.mem !== null) {
      pfns[hiIdx] = hi | HMM_PFN_P2PDMA_BUS | HMM_PFN_DMA_MAPPED;
      hmmDmaStats.p2pBus++;
      return pciP2pdmaBusAddrMap(st.mem, paddr);
    } else {
      hmmDmaStats.errors++;
      return DMA_MAPPING_ERROR;
    }
  }
  let dmaAddr: number;
  if (useIova) {
    let ret = dmaIovaLink(dev, state, paddr, offset, size, DMA_BIDIRECTIONAL, attrs);
    if (ret === 0) {
      // One IOTLB sync per entry: ODP faults page by page.
      ret = dmaIovaSync(dev, state, offset, size);
      if (ret !== 0) dmaIovaUnlink(dev, state, offset, size, DMA_BIDIRECTIONAL, attrs);
    }
    if (ret !== 0) return mapError(pfns, hiIdx);
    dmaAddr = state.addr + offset;
  } else {
    const needUnmap = dmaNeedUnmap(dev);
    if (needUnmap && map.dmaList === null) {
      dev.host.dmaDebug.report('invalid-argument', dev, 'hmm_dma_map_pfn: unmap is needed but the map has no dma list (WARN_ON_ONCE)');
      return mapError(pfns, hiIdx);
    }
    dmaAddr = dmaMapPhys(dev, paddr, size, DMA_BIDIRECTIONAL, attrs);
    if (dmaMappingError(dev, dmaAddr) !== 0) return mapError(pfns, hiIdx);
    if (needUnmap && map.dmaList !== null) map.dmaList[idx] = dmaAddr;
  }
  pfns[hiIdx] = (pfns[hiIdx] ?? 0) | HMM_PFN_DMA_MAPPED;
  hmmDmaStats.mapped++;
  return dmaAddr;
}

function mapError(pfns: Uint32Array, hiIdx: number): number {
  pfns[hiIdx] = (pfns[hiIdx] ?? 0) & ~HMM_PFN_P2PDMA;
  hmmDmaStats.errors++;
  return DMA_MAPPING_ERROR;
}

/**
 * `hmm_dma_unmap_pfn(dev, map, idx)`: undo hmm_dma_map_pfn. False when the entry is not VALID and
 * DMA_MAPPED (nothing to do). Unlinks the IOVA slot (the IOMMU layer flushes the IOTLB for it),
 * or unmaps the dma list address; bus-address P2P entries need nothing. Clears the sticky bits.
 */
export function hmmDmaUnmapPfn(dev: Device, map: HmmDmaMap, idx: number): boolean {
  const pfns = map.pfnList;
  if (!Number.isSafeInteger(idx) || idx < 0 || 2 * idx + 1 >= pfns.length) {
    dev.host.dmaDebug.report('invalid-argument', dev, `hmm_dma_unmap_pfn: index ${String(idx)} outside the ${map.nrEntries}-entry map`);
    return false;
  }
  const hiIdx = 2 * idx + 1;
  const hi = pfns[hiIdx] ?? 0;
  if (((hi & VALID_DMA) >>> 0) !== VALID_DMA) return false;
  const size = map.dmaEntrySize;
  const attrs = (hi & HMM_PFN_P2PDMA) !== 0 ? DMA_ATTR_MMIO : 0;
  if ((hi & HMM_PFN_P2PDMA_BUS) !== 0) {
    // Bus-address P2P: nothing was mapped.
  } else if (dmaUseIova(map.state)) {
    dmaIovaUnlink(dev, map.state, idx * size, size, DMA_BIDIRECTIONAL, attrs);
  } else if (dmaNeedUnmap(dev)) {
    const addr = map.dmaList?.[idx];
    if (addr !== undefined) dmaUnmapPhys(dev, addr, size, DMA_BIDIRECTIONAL, attrs);
  }
  pfns[hiIdx] = hi & STICKY_CLEAR;
  hmmDmaStats.unmapped++;
  return true;
}

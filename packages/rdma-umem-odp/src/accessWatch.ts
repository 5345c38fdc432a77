/**
 * The ODP coherence rule, checked on every DMA an HCA issues: the device may only reach the page
 * the CPU maps at that virtual address right now. After an mmu notifier invalidation the driver
 * zaps the MTT entries (drivers/infiniband/hw/mlx5/odp.c `mlx5_ib_invalidate_range`) and unmaps
 * the DMA (drivers/infiniband/core/umem_odp.c `ib_umem_odp_unmap_dma_pages`) before the pages can
 * be freed, so an access through a stale translation would be a use-after-free on real hardware.
 */
import { PAGE_SIZE, PTE_PRESENT, PTE_WRITE } from '@dmakit/dma-core';
import type { MmStruct } from '@dmakit/dma-core';
import type { Hca } from './hca.js';

/** The running counts of an `watchOdpAccesses` watch. */
export interface OdpAccessWatch {
  /** HCA DMA accesses seen. */
  readonly accesses: number;
  /** Accesses that reached a page the CPU does not map at that address now (or wrote a read-only one). */
  readonly stale: number;
  /** Stop watching (the HCA's access hook is cleared). */
  stop(): void;
}

/**
 * Watch every DMA access `hca` makes through its memory keys against `mm`, the address space its
 * MRs cover: an access is stale when the page is not present, the device address translates to
 * another page than the CPU's PTE, or a write hits a page the CPU maps read-only.
 * `dmaToPhys` is the device-side translation without side effects (behind an IOMMU, the IOMMU
 * page-table walk, e.g. iommu-dma's `iommuIovaToPhys` on the device's domain); the default is
 * dma-direct without an offset (the DMA address is the physical address).
 * The watch takes the HCA's `onAccess` hook (one watch per HCA).
 */
export function watchOdpAccesses(hca: Hca, mm: MmStruct, dmaToPhys: (dma: number) => number = (dma) => dma): OdpAccessWatch {
  let accesses = 0;
  let stale = 0;
  hca.onAccess = (_mkey, va, dma, _len, write) => {
    accesses++;
    const flags = mm.pteFlags(va);
    if ((flags & PTE_PRESENT) === 0 || dmaToPhys(dma) !== mm.walkPte(va) * PAGE_SIZE + (va % PAGE_SIZE) || (write && (flags & PTE_WRITE) === 0)) stale++;
  };
  return {
    get accesses() {
      return accesses;
    },
    get stale() {
      return stale;
    },
    stop() {
      hca.onAccess = undefined;
    },
  };
}

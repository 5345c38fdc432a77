// kernel: include/linux/dma-map-ops.h, drivers/iommu/dma-iommu.c (iommu_dma_* entry points)
import type { DmaIovaState } from '../dma/iovaState.js';
import type { SgTable } from '../dma/scatterlist.js';
import type { DmaDataDirection } from '../units/direction.js';

/**
 * A coherent DMA allocation: CPU address, physical address, DMA address, size (kernel: what
 * dma_alloc_attrs() returns).
 */
export interface DmaCoherentBuffer {
  /** Kernel virtual address stand-in: the linear-map address (equal to `phys` here). */
  readonly cpuAddr: number;
  /** Physical address of the first byte (the buffer is physically contiguous unless stated). */
  readonly phys: number;
  readonly dmaAddr: number;
  readonly size: number;
  /** Physical address of each page when the allocation is not physically contiguous. */
  readonly pages?: readonly number[];
}

// `struct dma_map_ops`: device/device.ts names it (the device holds a pointer to it) with the
// part the device-side port calls; the DMA API's part is declared here.
export type { DmaMapOps } from '../device/device.js';

declare module '../device/device.js' {
  // The DMA API's part of `struct dma_map_ops` (the interface's description is in device.ts).
  interface DmaMapOps {
    /** `iommu_dma_map_phys`: DMA address or DMA_MAPPING_ERROR. */
    mapPhys(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs: number): number;
    /** `iommu_dma_unmap_phys`: undo mapPhys (swiotlb copy-back and free for a bounced mapping). */
    unmapPhys(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection, attrs: number): void;
    /** `iommu_dma_map_sg`: number of DMA segments (> 0) or a negative errno. Fills sgt.dma*. */
    mapSg(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection, attrs: number): number;
    /** `iommu_dma_unmap_sg`: undo mapSg. */
    unmapSg(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection, attrs: number): void;
    /** `iommu_dma_sync_single_for_cpu`. */
    syncSingleForCpu(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection): void;
    /** `iommu_dma_sync_single_for_device`. */
    syncSingleForDevice(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection): void;
    /** `iommu_dma_sync_sg_for_cpu`. */
    syncSgForCpu(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection): void;
    /** `iommu_dma_sync_sg_for_device`. */
    syncSgForDevice(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection): void;
    /** `iommu_dma_alloc`: zeroed memory mapped bidirectionally, or null. */
    alloc(dev: Device, size: number, attrs: number): DmaCoherentBuffer | null;
    /** `iommu_dma_free`: unmap and free a coherent allocation. */
    free(dev: Device, buf: DmaCoherentBuffer, attrs: number): void;

    /** The two-step API. dma-core has already zeroed `state` and rejected size 0 / oversize. */
    iovaTryAlloc(dev: Device, state: DmaIovaState, phys: number, size: number): boolean;
    /**
     * `dma_iova_link` (drivers/iommu/dma-iommu.c): link a physically contiguous range at offset; 0 or
     * -errno.
     */
    iovaLink(dev: Device, state: DmaIovaState, phys: number, offset: number, size: number, dir: DmaDataDirection, attrs: number): number;
    /** `dma_iova_sync`: sync the IOTLB for a linked range; 0 or -errno. */
    iovaSync(dev: Device, state: DmaIovaState, offset: number, size: number): number;
    /** `dma_iova_unlink`: unlink a range, always strictly. */
    iovaUnlink(dev: Device, state: DmaIovaState, offset: number, size: number, dir: DmaDataDirection, attrs: number): void;
    /** `dma_iova_destroy`: unlink [0, mappedLen) and free the IOVA range. */
    iovaDestroy(dev: Device, state: DmaIovaState, mappedLen: number, dir: DmaDataDirection, attrs: number): void;
    /** `dma_iova_free`: free the IOVA range (nothing may still be linked). */
    iovaFree(dev: Device, state: DmaIovaState): void;

    /** `dma_get_merge_boundary`: granule - 1. */
    getMergeBoundary(dev: Device): number;
    /** `dma_max_mapping_size` for this backend (iommu: `iommu_dma_max_mapping_size`). */
    maxMappingSize(dev: Device): number;
    /** `dma_opt_mapping_size` for this backend (iommu: `iommu_dma_opt_mapping_size`). */
    optMappingSize(dev: Device): number;
    /** `dma_get_required_mask` for this backend (iommu: 32 bits). */
    getRequiredMask(dev: Device): number;
    /** Called when the ops are detached from a device. */
    detach?(dev: Device): void;
  }
}

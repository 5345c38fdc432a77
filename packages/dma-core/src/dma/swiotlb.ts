// kernel: kernel/dma/swiotlb.c
// SKELETON: the function signatures are fixed (dma-direct and iommu-dma call them); the dma room
// owner implements the slot pool behind them.
import type { Device } from '../device/device.js';
import type { DmaDataDirection } from '../units/direction.js';
import { DMA_MAPPING_ERROR } from '../units/dmaAddr.js';

export class Swiotlb {
  readonly base: number;
  readonly bytes: number;

  constructor(base: number, bytes: number) {
    this.base = base;
    this.bytes = bytes;
  }

  /** `is_swiotlb_buffer`. */
  isSwiotlbBuffer(phys: number): boolean {
    return phys >= this.base && phys < this.base + this.bytes;
  }
}

/**
 * `swiotlb_tbl_map_single`: bounce `[origPhys, +mappingSize)` into the pool; returns the bounce
 * buffer's physical address or DMA_MAPPING_ERROR ("buffer is full", no retry).
 */
export function swiotlbTblMapSingle(_dev: Device, _origPhys: number, _mappingSize: number, _allocAlignMask: number, _dir: DmaDataDirection, _attrs: number): number {
  return DMA_MAPPING_ERROR;
}
/** `swiotlb_tbl_unmap_single`: copy back per direction (unless SKIP_CPU_SYNC) and free the slots. */
export function swiotlbTblUnmapSingle(_dev: Device, _tlbPhys: number, _mappingSize: number, _dir: DmaDataDirection, _attrs: number): void {}
/** `swiotlb_sync_single_for_cpu`. */
export function swiotlbSyncSingleForCpu(_dev: Device, _tlbPhys: number, _size: number, _dir: DmaDataDirection): void {}
/** `swiotlb_sync_single_for_device`. */
export function swiotlbSyncSingleForDevice(_dev: Device, _tlbPhys: number, _size: number, _dir: DmaDataDirection): void {}
/** `is_swiotlb_buffer(dev, phys)`. */
export function isSwiotlbBuffer(dev: Device, phys: number): boolean {
  return dev.host.swiotlb.isSwiotlbBuffer(phys);
}
/** `swiotlb_max_mapping_size(dev)`. */
export function swiotlbMaxMappingSize(_dev: Device): number {
  return 256 * 1024;
}

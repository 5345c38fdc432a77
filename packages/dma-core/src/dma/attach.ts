// kernel: drivers/iommu/dma-iommu.c (iommu_setup_dma_ops), include/linux/dma-map-ops.h
import type { DmaMapOps } from '../contracts/dmaMapOps.js';
import type { Device } from '../device/device.js';

/** Route a device's DMA API calls through an IOMMU implementation (`dev->dma_iommu = true`). */
export function attachDmaOps(dev: Device, ops: DmaMapOps): void {
  dev.dmaOps = ops;
}

/** Back to dma-direct (the device leaves its IOMMU DMA domain; kernel: dev->dma_iommu = false). */
export function detachDmaOps(dev: Device): void {
  const ops = dev.dmaOps;
  dev.dmaOps = null;
  ops?.detach?.(dev);
}

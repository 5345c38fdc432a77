/**
 * @dmakit/iommu-dma: the IOMMU under the DMA API — IOVA allocator with per-CPU rcaches, IOMMU
 * domains with a real multi-level page table, an IOTLB whose staleness is visible, strict and lazy
 * (flush-queue) invalidation, and the dma-iommu DMA ops including the two-step IOVA API.
 * Kernel counterpart: drivers/iommu/dma-iommu.c, drivers/iommu/iova.c, drivers/iommu/iommu.c,
 * drivers/iommu/generic_pt/.
 */
export * from './iova/index.js';
export { iommuPgsize } from './pgsize.js';
export type { PgsizeResult } from './pgsize.js';
export { IoPageTable, IOMMU_READ, IOMMU_WRITE, IOMMU_CACHE, IOMMU_NOEXEC, IOMMU_MMIO, IOMMU_PRIV, TABLE_PAGE_BYTES } from './pageTable.js';
export type { IoPageTableOptions, IoPageTableOccupancy, IoPageTableLevelOccupancy } from './pageTable.js';
export { Iotlb } from './iotlb.js';
export {
  IOMMU_DRIVERS,
  VTD_DEFAULT_MAX_ADDRESS_MASK,
  amdInvalidationBlock,
  calculatePsiAlignedAddress,
  iotlbInvalidationBlock,
  iotlbInvalidationBlockInit,
} from './invalidation.js';
export type { IommuDriver, IotlbInvalidationBlock } from './invalidation.js';
export type { IotlbStats } from './iotlb.js';
export {
  IommuDomain,
  iommuIotlbGatherInit,
  iommuMap,
  iommuMapNosync,
  iommuSyncMap,
  iommuUnmap,
  iommuUnmapFast,
  iommuIotlbSync,
  iommuFlushIotlbAll,
  iommuIovaToPhys,
} from './iommuDomain.js';
export type { IommuDomainType, IommuIotlbGather, IommuFaultRecord, IommuDomainStats } from './iommuDomain.js';
export { FlushQueue, IOVA_DEFAULT_FQ_SIZE, IOVA_DEFAULT_FQ_TIMEOUT_MS, IOVA_SINGLE_FQ_SIZE, IOVA_SINGLE_FQ_TIMEOUT_MS } from './flushQueue.js';
export type { FlushQueueKind, FlushQueueStats } from './flushQueue.js';
export { IommuDmaOps, IommuDmaCookie, dmaInfoToProt } from './dmaIommu.js';
export type { IommuDevState } from './dmaIommu.js';
export type { IommuDmaContext } from './dmaIommu.js';
export type { FlushQueueHooks } from './flushQueue.js';
export type { IommuDomainHost } from './iommuDomain.js';
export type { TableFreelist, UnmapGather } from './pageTable.js';
export { Iommu, IommuIdentityDomain, createIommu, iommuDeviceList } from './iommu.js';
export { IOMMU_DEFAULT_COST_MODEL, iommuSimulatedNs } from './costModel.js';
export type { IommuCostModel, IommuCostCounters } from './costModel.js';
export type { IommuOptions, IommuAttachOptions, IommuStats } from './iommu.js';
export { UnmanagedIommuDomain, createUnmanagedDomain, type UnmanagedDomainOptions, type UnmanagedDomainStats } from './unmanagedDomain.js';

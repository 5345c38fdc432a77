/**
 * @dmakit/iommu-dma: not implemented yet.
 *
 * Will model: The IOVA allocator with per-CPU rcaches, IOMMU domains with a real multi-level page table, an IOTLB whose staleness is visible, strict and lazy (flush-queue) invalidation, and the dma-iommu DMA ops including the two-step IOVA API.
 * Kernel counterpart: drivers/iommu/dma-iommu.c, drivers/iommu/iova.c, drivers/iommu/iommu.c, drivers/iommu/generic_pt/
 */
export const NOT_IMPLEMENTED = true as const;

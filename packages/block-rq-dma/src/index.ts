/**
 * @dmakit/block-rq-dma: not implemented yet.
 *
 * Will model: Bios, bvecs and block requests under queue limits, and request DMA mapping without a scatterlist (blk_rq_dma_map_iter_start/next, one IOVA range per request on an IOMMU).
 * Kernel counterpart: block/blk-mq-dma.c, block/blk-merge.c
 */
export const NOT_IMPLEMENTED = true as const;

/**
 * @dmakit/hmm: not implemented yet.
 *
 * Will model: hmm_range_fault over simulated address spaces, the HMM DMA helpers (hmm_dma_map_alloc, hmm_dma_map_pfn, ...), device-private memory and migration, and the dmirror test device.
 * Kernel counterpart: mm/hmm.c, mm/migrate_device.c, lib/test_hmm.c
 */
export const NOT_IMPLEMENTED = true as const;

// kernel: include/linux/dma-mapping.h (DMA_ATTR_* bit numbers)
/** Allow the bus to reorder the transfer. kernel: DMA_ATTR_WEAK_ORDERING in include/linux/dma-mapping.h. */
export const DMA_ATTR_WEAK_ORDERING = 1 << 1;
/** Map the buffer write-combined. kernel: DMA_ATTR_WRITE_COMBINE in include/linux/dma-mapping.h. */
export const DMA_ATTR_WRITE_COMBINE = 1 << 2;
/**
 * Coherent allocation needs no kernel virtual mapping. kernel: DMA_ATTR_NO_KERNEL_MAPPING in
 * include/linux/dma-mapping.h.
 */
export const DMA_ATTR_NO_KERNEL_MAPPING = 1 << 4;
/**
 * Skip the CPU cache sync (and the swiotlb bounce copy) on map and unmap. kernel: DMA_ATTR_SKIP_CPU_SYNC
 * in include/linux/dma-mapping.h.
 */
export const DMA_ATTR_SKIP_CPU_SYNC = 1 << 5;
/**
 * Allocate physically contiguous memory even behind an IOMMU. kernel: DMA_ATTR_FORCE_CONTIGUOUS in
 * include/linux/dma-mapping.h.
 */
export const DMA_ATTR_FORCE_CONTIGUOUS = 1 << 6;
/**
 * Hint to build an allocation from single pages. kernel: DMA_ATTR_ALLOC_SINGLE_PAGES in
 * include/linux/dma-mapping.h.
 */
export const DMA_ATTR_ALLOC_SINGLE_PAGES = 1 << 7;
/**
 * Do not warn when the mapping or allocation fails. kernel: DMA_ATTR_NO_WARN in
 * include/linux/dma-mapping.h.
 */
export const DMA_ATTR_NO_WARN = 1 << 8;
/**
 * Buffer is only accessible at elevated device privilege (IOMMU_PRIV). kernel: DMA_ATTR_PRIVILEGED in
 * include/linux/dma-mapping.h.
 */
export const DMA_ATTR_PRIVILEGED = 1 << 9;
/** Physical address is not RAM (P2P BAR, MMIO): no cache sync, no swiotlb, IOMMU_MMIO. */
export const DMA_ATTR_MMIO = 1 << 10;
/** Tells dma-debug that overlapping cachelines are intended. kernel: DMA_ATTR_DEBUGGING_IGNORE_CACHELINES (~7.0) in include/linux/dma-mapping.h. */
export const DMA_ATTR_DEBUGGING_IGNORE_CACHELINES = 1 << 11;
/** Mapping must not use swiotlb or cache maintenance; fails on non-coherent devices. kernel: DMA_ATTR_REQUIRE_COHERENT in include/linux/dma-mapping.h. */
export const DMA_ATTR_REQUIRE_COHERENT = 1 << 12;

const ATTR_NAMES: readonly (readonly [number, string])[] = [
  [DMA_ATTR_WEAK_ORDERING, 'WEAK_ORDERING'],
  [DMA_ATTR_WRITE_COMBINE, 'WRITE_COMBINE'],
  [DMA_ATTR_NO_KERNEL_MAPPING, 'NO_KERNEL_MAPPING'],
  [DMA_ATTR_SKIP_CPU_SYNC, 'SKIP_CPU_SYNC'],
  [DMA_ATTR_FORCE_CONTIGUOUS, 'FORCE_CONTIGUOUS'],
  [DMA_ATTR_ALLOC_SINGLE_PAGES, 'ALLOC_SINGLE_PAGES'],
  [DMA_ATTR_NO_WARN, 'NO_WARN'],
  [DMA_ATTR_PRIVILEGED, 'PRIVILEGED'],
  [DMA_ATTR_MMIO, 'MMIO'],
  [DMA_ATTR_DEBUGGING_IGNORE_CACHELINES, 'CACHELINES_OVERLAP'],
  [DMA_ATTR_REQUIRE_COHERENT, 'REQUIRE_COHERENT'],
];

/** Flag list as the `dma:*` tracepoints print it, e.g. `SKIP_CPU_SYNC|MMIO`. */
export function dmaAttrsName(attrs: number): string {
  if (attrs === 0) return '0';
  const parts = ATTR_NAMES.filter(([bit]) => (attrs & bit) !== 0).map(([, n]) => n);
  return parts.length > 0 ? parts.join('|') : `0x${attrs.toString(16)}`;
}

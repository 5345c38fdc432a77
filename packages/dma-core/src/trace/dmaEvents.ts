// kernel: include/trace/events/dma.h, include/trace/events/swiotlb.h, include/trace/events/iommu.h
// The signatures of the existing emitters are fixed (the DMA API calls them behind
// `if (trace.enabled)`); new parameters are optional and trailing.
import type { Trace } from './trace.js';

/**
 * Emits dma:dma_map_phys. kernel: trace_dma_map_phys() (the dma_map event class) in
 * include/trace/events/dma.h.
 */
export function traceDmaMapPhys(t: Trace, dev: string, physAddr: number, dmaAddr: number, size: number, dir: number, attrs: number): void {
  t.emit('dma:dma_map_phys', dev, { phys_addr: physAddr, dma_addr: dmaAddr, size, dir, attrs });
}
/** Emits dma:dma_unmap_phys. kernel: trace_dma_unmap_phys() in include/trace/events/dma.h. */
export function traceDmaUnmapPhys(t: Trace, dev: string, addr: number, size: number, dir: number, attrs: number): void {
  t.emit('dma:dma_unmap_phys', dev, { addr, size, dir, attrs });
}
/** Emits dma:dma_map_sg. kernel: trace_dma_map_sg() in include/trace/events/dma.h. */
export function traceDmaMapSg(t: Trace, dev: string, physAddrs: readonly number[], dmaAddrs: readonly number[], lengths: readonly number[], dir: number, attrs: number): void {
  t.emit('dma:dma_map_sg', dev, { phys_addrs: physAddrs, dma_addrs: dmaAddrs, lengths, dir, attrs });
}
/** Emits dma:dma_map_sg_err. kernel: trace_dma_map_sg_err() in include/trace/events/dma.h. */
export function traceDmaMapSgErr(t: Trace, dev: string, physAddrs: readonly number[], err: number, dir: number, attrs: number): void {
  t.emit('dma:dma_map_sg_err', dev, { phys_addrs: physAddrs, err, dir, attrs });
}
/** Emits dma:dma_unmap_sg. kernel: trace_dma_unmap_sg() in include/trace/events/dma.h. */
export function traceDmaUnmapSg(t: Trace, dev: string, addrs: readonly number[], dir: number, attrs: number): void {
  t.emit('dma:dma_unmap_sg', dev, { addrs, dir, attrs });
}
/** `flags` is the gfp mask (0 when the caller has none). */
export function traceDmaAlloc(
  t: Trace,
  dev: string,
  virtAddr: number,
  dmaAddr: number,
  size: number,
  dir: number,
  attrs: number,
  kind: 'dma_alloc' | 'dma_alloc_pages' | 'dma_alloc_sgt_err' = 'dma_alloc',
  flags = 0,
): void {
  t.emit(`dma:${kind}`, dev, { virt_addr: virtAddr, dma_addr: dmaAddr, size, dir, flags, attrs });
}
/**
 * Emits dma:dma_free or dma:dma_free_pages. kernel: trace_dma_free() / trace_dma_free_pages() in
 * include/trace/events/dma.h.
 */
export function traceDmaFree(t: Trace, dev: string, virtAddr: number, dmaAddr: number, size: number, dir: number, attrs: number, kind: 'dma_free' | 'dma_free_pages' = 'dma_free'): void {
  t.emit(`dma:${kind}`, dev, { virt_addr: virtAddr, dma_addr: dmaAddr, size, dir, attrs });
}
/** `dma_alloc_sgt`: `dmaAddr` is the first segment's DMA address. */
export function traceDmaAllocSgt(t: Trace, dev: string, physAddrs: readonly number[], dmaAddr: number, size: number, dir: number, flags: number, attrs: number): void {
  t.emit('dma:dma_alloc_sgt', dev, { phys_addrs: physAddrs, dma_addr: dmaAddr, size, dir, flags, attrs });
}
/** `dma_free_sgt`. */
export function traceDmaFreeSgt(t: Trace, dev: string, physAddrs: readonly number[], dmaAddr: number, size: number, dir: number): void {
  t.emit('dma:dma_free_sgt', dev, { phys_addrs: physAddrs, dma_addr: dmaAddr, size, dir });
}
/**
 * Emits dma:dma_sync_single_for_cpu or _for_device. kernel: trace_dma_sync_single_for_cpu() /
 * _for_device() in include/trace/events/dma.h.
 */
export function traceDmaSyncSingle(t: Trace, dev: string, forCpu: boolean, dmaAddr: number, size: number, dir: number): void {
  t.emit(forCpu ? 'dma:dma_sync_single_for_cpu' : 'dma:dma_sync_single_for_device', dev, { dma_addr: dmaAddr, size, dir });
}
/**
 * Emits dma:dma_sync_sg_for_cpu or _for_device. kernel: trace_dma_sync_sg_for_cpu() / _for_device() in
 * include/trace/events/dma.h.
 */
export function traceDmaSyncSg(t: Trace, dev: string, forCpu: boolean, dmaAddrs: readonly number[], lengths: readonly number[], dir: number): void {
  t.emit(forCpu ? 'dma:dma_sync_sg_for_cpu' : 'dma:dma_sync_sg_for_device', dev, { dma_addrs: dmaAddrs, lengths, dir });
}
/** Emits swiotlb:swiotlb_bounced. kernel: trace_swiotlb_bounced() in include/trace/events/swiotlb.h. */
export function traceSwiotlbBounced(t: Trace, dev: string, dmaMask: number, devAddr: number, size: number, force: boolean): void {
  t.emit('swiotlb:swiotlb_bounced', dev, { dma_mask: dmaMask, dev_addr: devAddr, size, force });
}
/** iommu.h `map` (fired by iommu_map for every mapping, including dma_iova_link's). */
export function traceIommuMap(t: Trace, dev: string, iova: number, paddr: number, size: number): void {
  t.emit('iommu:map', dev, { iova, paddr, size });
}
/** iommu.h `unmap`. */
export function traceIommuUnmap(t: Trace, dev: string, iova: number, size: number, unmappedSize: number): void {
  t.emit('iommu:unmap', dev, { iova, size, unmapped_size: unmappedSize });
}
/** iommu.h `io_page_fault` (`report_iommu_fault`); `flags` are IOMMU_FAULT_READ/WRITE. */
export function traceIommuIoPageFault(t: Trace, dev: string, iova: number, flags: number, driver = ''): void {
  t.emit('iommu:io_page_fault', dev, { iova, flags, driver });
}

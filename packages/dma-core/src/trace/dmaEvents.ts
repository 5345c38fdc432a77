// kernel: include/trace/events/dma.h, include/trace/events/swiotlb.h
// SKELETON: the signatures are fixed (the DMA API calls them behind `if (trace.enabled)`).
import type { Trace } from './trace.js';

export function traceDmaMapPhys(t: Trace, dev: string, physAddr: number, dmaAddr: number, size: number, dir: number, attrs: number): void {
  t.emit('dma:dma_map_phys', dev, { phys_addr: physAddr, dma_addr: dmaAddr, size, dir, attrs });
}
export function traceDmaUnmapPhys(t: Trace, dev: string, addr: number, size: number, dir: number, attrs: number): void {
  t.emit('dma:dma_unmap_phys', dev, { addr, size, dir, attrs });
}
export function traceDmaMapSg(t: Trace, dev: string, physAddrs: readonly number[], dmaAddrs: readonly number[], lengths: readonly number[], dir: number, attrs: number): void {
  t.emit('dma:dma_map_sg', dev, { phys_addrs: physAddrs, dma_addrs: dmaAddrs, lengths, dir, attrs });
}
export function traceDmaMapSgErr(t: Trace, dev: string, physAddrs: readonly number[], err: number, dir: number, attrs: number): void {
  t.emit('dma:dma_map_sg_err', dev, { phys_addrs: physAddrs, err, dir, attrs });
}
export function traceDmaUnmapSg(t: Trace, dev: string, addrs: readonly number[], dir: number, attrs: number): void {
  t.emit('dma:dma_unmap_sg', dev, { addrs, dir, attrs });
}
export function traceDmaAlloc(t: Trace, dev: string, virtAddr: number, dmaAddr: number, size: number, dir: number, attrs: number, kind: 'dma_alloc' | 'dma_alloc_pages' = 'dma_alloc'): void {
  t.emit(`dma:${kind}`, dev, { virt_addr: virtAddr, dma_addr: dmaAddr, size, dir, attrs });
}
export function traceDmaFree(t: Trace, dev: string, virtAddr: number, dmaAddr: number, size: number, dir: number, attrs: number, kind: 'dma_free' | 'dma_free_pages' = 'dma_free'): void {
  t.emit(`dma:${kind}`, dev, { virt_addr: virtAddr, dma_addr: dmaAddr, size, dir, attrs });
}
export function traceDmaSyncSingle(t: Trace, dev: string, forCpu: boolean, dmaAddr: number, size: number, dir: number): void {
  t.emit(forCpu ? 'dma:dma_sync_single_for_cpu' : 'dma:dma_sync_single_for_device', dev, { dma_addr: dmaAddr, size, dir });
}
export function traceDmaSyncSg(t: Trace, dev: string, forCpu: boolean, dmaAddrs: readonly number[], lengths: readonly number[], dir: number): void {
  t.emit(forCpu ? 'dma:dma_sync_sg_for_cpu' : 'dma:dma_sync_sg_for_device', dev, { dma_addrs: dmaAddrs, lengths, dir });
}
export function traceSwiotlbBounced(t: Trace, dev: string, dmaMask: number, devAddr: number, size: number, force: boolean): void {
  t.emit('swiotlb:swiotlb_bounced', dev, { dma_mask: dmaMask, dev_addr: devAddr, size, force });
}

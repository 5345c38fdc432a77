/**
 * A minimal IOMMU behind dma-core's `DmaMapOps` contract, for subsystem tests that need IOVA mode
 * (the two-step API, mapped scatterlists) but may not import `@dmakit/iommu-dma`: a 4 KiB granule,
 * one flat page map, a bump IOVA allocator that never reuses addresses, and a counter for every call.
 * Translation goes through the page map, so a device access after an unlink faults as it would
 * behind a real IOMMU. The real model (page tables, IOTLB, flush queues) is @dmakit/iommu-dma.
 */
import { DmaFaultReason, Errno, PAGE_SIZE } from '@dmakit/dma-core';
import type { Device, DmaCoherentBuffer, DmaDataDirection, DmaIovaState, DmaMapOps, SgTable } from '@dmakit/dma-core';

const P = PAGE_SIZE;

/** Calls the fake has seen, by operation. */
export interface FakeIommuCounts {
  tryAlloc: number;
  link: number;
  sync: number;
  destroy: number;
  free: number;
  mapPhys: number;
  unmapPhys: number;
  mapSg: number;
}

/** See the module comment. Attach it with `attachDmaOps(dev, new FakeIommu())`. */
export class FakeIommu implements DmaMapOps {
  readonly name = 'fake-iommu';
  /** IOVA page frame number → physical page frame number, for every mapped page. */
  readonly pte = new Map<number, number>();
  readonly counts: FakeIommuCounts = { tryAlloc: 0, link: 0, sync: 0, destroy: 0, free: 0, mapPhys: 0, unmapPhys: 0, mapSg: 0 };
  /** The next IOVA the bump allocator hands out (a guard page separates allocations). */
  next = 0x1_0000_0000;
  /** IOVA ranges allocated by `iovaTryAlloc` and not yet freed. */
  live = 0;
  /** Make `iovaTryAlloc` fail (the caller falls back to per-page mapping). */
  failTryAlloc = false;
  /** Fail the Nth `iovaLink` from now with -ENOMEM (1-based); 0 = never. */
  failLinkAt = 0;

  #map(iova: number, phys: number, size: number): void {
    for (let o = 0; o < size + (iova % P); o += P) this.pte.set(Math.floor((iova + o) / P), Math.floor((phys + o) / P));
  }
  #unmap(iova: number, size: number): void {
    for (let o = 0; o < size + (iova % P); o += P) this.pte.delete(Math.floor((iova + o) / P));
  }
  #alloc(phys: number, size: number): number {
    const base = this.next;
    this.next += Math.ceil(((phys % P) + size) / P) * P + P;
    return base + (phys % P);
  }
  mapPhys(_d: Device, phys: number, size: number): number {
    this.counts.mapPhys++;
    const iova = this.#alloc(phys, size);
    this.#map(iova, phys, size);
    return iova;
  }
  unmapPhys(_d: Device, dma: number, size: number): void {
    this.counts.unmapPhys++;
    this.#unmap(dma, size);
  }
  /** One IOVA per entry (no merging): `nents` in, `nents` out. */
  mapSg(d: Device, sgt: SgTable, nents: number, _dir: DmaDataDirection, _attrs: number): number {
    this.counts.mapSg++;
    for (let i = 0; i < nents; i++) {
      const len = sgt.length[i] ?? 0;
      sgt.dmaAddress[i] = this.mapPhys(d, sgt.phys[i] ?? 0, len);
      sgt.dmaLength[i] = len;
    }
    return nents;
  }
  unmapSg(d: Device, sgt: SgTable, nents: number): void {
    for (let i = 0; i < nents; i++) this.unmapPhys(d, sgt.dmaAddress[i] ?? 0, sgt.dmaLength[i] ?? 0);
  }
  syncSingleForCpu(): void {}
  syncSingleForDevice(): void {}
  syncSgForCpu(): void {}
  syncSgForDevice(): void {}
  /** No coherent allocations through the fake. */
  alloc(): DmaCoherentBuffer | null {
    return null;
  }
  free(): void {}
  iovaTryAlloc(_d: Device, state: DmaIovaState, phys: number, size: number): boolean {
    this.counts.tryAlloc++;
    if (this.failTryAlloc) return false;
    state.addr = this.#alloc(phys, size);
    state.size = size;
    this.live++;
    return true;
  }
  /** Links `size` bytes at `offset`; -EINVAL when the IOVA and physical page offsets differ. */
  iovaLink(_d: Device, state: DmaIovaState, phys: number, offset: number, size: number): number {
    this.counts.link++;
    if (this.failLinkAt > 0 && --this.failLinkAt === 0) return -Errno.ENOMEM;
    if ((state.addr + offset) % P !== phys % P) return -Errno.EINVAL;
    this.#map(state.addr + offset, phys, size);
    return 0;
  }
  iovaSync(): number {
    this.counts.sync++;
    return 0;
  }
  iovaUnlink(_d: Device, state: DmaIovaState, offset: number, size: number): void {
    this.#unmap(state.addr + offset, size);
  }
  iovaDestroy(d: Device, state: DmaIovaState, mappedLen: number): void {
    this.counts.destroy++;
    if (mappedLen > 0) this.#unmap(state.addr, mappedLen);
    this.iovaFree(d, state);
  }
  iovaFree(_d: Device, _s: DmaIovaState): void {
    this.counts.free++;
    this.live--;
  }
  /** The physical address behind `dma`, or DmaFaultReason.NOT_PRESENT. */
  translate(_d: Device, dma: number): number {
    const pfn = this.pte.get(Math.floor(dma / P));
    return pfn === undefined ? DmaFaultReason.NOT_PRESENT : pfn * P + (dma % P);
  }
  getMergeBoundary(): number {
    return P - 1;
  }
  maxMappingSize(): number {
    return Number.MAX_SAFE_INTEGER;
  }
  optMappingSize(): number {
    return Number.MAX_SAFE_INTEGER;
  }
  getRequiredMask(): number {
    return 0xffff_ffff;
  }
}

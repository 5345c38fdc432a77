// kernel: drivers/iommu/iommu.c (iommu_domain_alloc of IOMMU_DOMAIN_UNMANAGED, iommu_attach_device),
// drivers/iommu/iommufd/hw_pagetable.c + io_pagetable.c (dirty tracking: set_dirty_tracking,
// read_and_clear_dirty), drivers/iommu/intel/iommu.c (intel_iommu_read_and_clear_dirty)
// The unmanaged domain VFIO uses for device assignment. It reuses a paging IommuDomain of the IOMMU
// (real page table and IOTLB, counted in iommu.stats()) but not its dma-iommu cookie: the guest
// decides the IOVA layout. An assigned device is given small DmaMapOps whose only real job is the
// device-side translation (plus dirty-bit setting); the DMA API for that device is refused, as the
// kernel's DMA API is not used for a device owned by VFIO.
import {
  DMA_MAPPING_ERROR,
  Errno,
  IOMMU_DIRTY_NO_CLEAR,
  attachDmaOps,
  detachDmaOps,
  isAligned,
} from '@dmakit/dma-core';
import type { DmaCoherentBuffer, DmaMapOps, Device, IommuUnmanagedDomain } from '@dmakit/dma-core';
import type { Iommu } from './iommu.js';
import type { IommuDomain } from './iommuDomain.js';

/** Options of an unmanaged domain (whether the IOMMU tracks dirty pages). */
export interface UnmanagedDomainOptions {
  /** The IOMMU tracks dirty pages for this domain (VT-d SLADS / AMD HD / SMMUv3 HTTU). Default true. */
  dirtyTracking?: boolean;
}

/** Granules per dirty-bitmap chunk (sparse: only chunks with a dirty page cost memory). */
const CHUNK_PAGES = 32768;

/** Unmanaged-domain counters: maps, unmaps, mapped bytes, dirty bits set and read, attached devices. */
export interface UnmanagedDomainStats {
  maps: number;
  unmaps: number;
  mappedBytes: number;
  dirtySet: number;
  dirtyReads: number;
  attachedDevices: number;
}

/** `struct iommu_domain` of type IOMMU_DOMAIN_UNMANAGED with optional `dirty_ops`. */
export class UnmanagedIommuDomain implements IommuUnmanagedDomain {
  readonly name: string;
  readonly granule: number;
  readonly apertureEnd: number;
  readonly dirtyTrackingSupported: boolean;
  /** The paging domain underneath (page table, IOTLB, counters). */
  readonly domain: IommuDomain;
  readonly #iommu: Iommu;
  readonly #attached = new Map<Device, DmaMapOps | null>();
  readonly #ops: DmaMapOps;
  #tracking = false;
  /** Dirty bits, one per granule, chunked by CHUNK_PAGES. */
  readonly #dirty = new Map<number, Uint8Array>();
  readonly #stats: UnmanagedDomainStats = { maps: 0, unmaps: 0, mappedBytes: 0, dirtySet: 0, dirtyReads: 0, attachedDevices: 0 };

  constructor(iommu: Iommu, opts: UnmanagedDomainOptions = {}) {
    this.#iommu = iommu;
    // Unmanaged domains invalidate on every unmap (no flush queue): a strict paging domain.
    this.domain = iommu.allocDomain('strict');
    this.name = `${this.domain.name}-unmanaged`;
    this.granule = this.domain.granule;
    this.apertureEnd = this.domain.pgtable.iovaLimit;
    this.dirtyTrackingSupported = opts.dirtyTracking ?? true;
    this.#ops = this.#makeOps();
  }

  /** True while dirty tracking is enabled (kernel: iommu_dirty_ops.set_dirty_tracking()). */
  get dirtyTracking(): boolean {
    return this.#tracking;
  }

  /** Snapshot of the domain counters. */
  stats(): UnmanagedDomainStats {
    return { ...this.#stats, attachedDevices: this.#attached.size };
  }

  attachDevice(dev: Device): number {
    if (this.#attached.has(dev)) return -Errno.EBUSY;
    if (dev.dmaOps === this.#ops) return -Errno.EBUSY;
    // The device leaves its default domain (its DMA API ops are parked until detach).
    this.#attached.set(dev, dev.dmaOps);
    dev.dmaOps = null;
    attachDmaOps(dev, this.#ops);
    return 0;
  }

  detachDevice(dev: Device): void {
    if (!this.#attached.has(dev)) return;
    const prev = this.#attached.get(dev) ?? null;
    this.#attached.delete(dev);
    detachDmaOps(dev);
    if (prev !== null) attachDmaOps(dev, prev);
  }

  map(iova: number, paddr: number, size: number, prot: number): number {
    if (!Number.isSafeInteger(prot) || prot < 0 || prot > 0xff) return -Errno.EINVAL;
    if (!Number.isSafeInteger(size) || size <= 0) return -Errno.EINVAL;
    const ret = this.domain.map(iova, paddr, size, prot);
    if (ret === 0) {
      this.#stats.maps++;
      this.#stats.mappedBytes += size;
    }
    return ret;
  }

  unmap(iova: number, size: number): number {
    const n = this.domain.unmap(iova, size);
    if (n > 0) {
      this.#stats.unmaps++;
      this.#stats.mappedBytes -= n;
    }
    return n;
  }

  iovaToPhys(iova: number): number {
    return this.domain.iovaToPhys(iova);
  }

  setDirtyTracking(enable: boolean): number {
    if (!this.dirtyTrackingSupported) return -Errno.EOPNOTSUPP;
    // iommufd: enabling starts from a clean bitmap (the driver clears the dirty bits it set).
    if (enable && !this.#tracking) this.#dirty.clear();
    this.#tracking = enable;
    return 0;
  }

  readAndClearDirty(iova: number, size: number, flags: number, bitmap: Uint8Array): number {
    if (!this.dirtyTrackingSupported || !this.#tracking) return -Errno.EOPNOTSUPP;
    const g = this.granule;
    if (!Number.isSafeInteger(iova) || !Number.isSafeInteger(size) || iova < 0 || size <= 0) return -Errno.EINVAL;
    if (!isAligned(iova, g) || !isAligned(size, g) || iova + size > this.apertureEnd) return -Errno.EINVAL;
    if (!(bitmap instanceof Uint8Array)) return -Errno.EINVAL;
    const pages = size / g;
    if (bitmap.length * 8 < pages) return -Errno.EINVAL;
    if (!Number.isInteger(flags) || (flags & ~IOMMU_DIRTY_NO_CLEAR) !== 0) return -Errno.EINVAL;
    const clear = (flags & IOMMU_DIRTY_NO_CLEAR) === 0;
    const first = iova / g;
    let found = 0;
    let p = first;
    const end = first + pages;
    while (p < end) {
      const ci = Math.floor(p / CHUNK_PAGES);
      const chunkEnd = Math.min(end, (ci + 1) * CHUNK_PAGES);
      const chunk = this.#dirty.get(ci);
      if (chunk !== undefined) {
        for (let q = p; q < chunkEnd; q++) {
          const s = q - ci * CHUNK_PAGES;
          const byte = chunk[s >> 3] ?? 0;
          const bit = 1 << (s & 7);
          if ((byte & bit) !== 0) {
            found++;
            const o = q - first;
            bitmap[o >> 3] = (bitmap[o >> 3] ?? 0) | (1 << (o & 7));
            if (clear) chunk[s >> 3] = byte & ~bit;
          }
        }
      }
      p = chunkEnd;
    }
    this.#stats.dirtyReads++;
    return found;
  }

  /** The IOMMU sets the dirty bit of the PTE a device write went through. */
  #markDirty(iova: number): void {
    const pfn = Math.floor(iova / this.granule);
    const ci = Math.floor(pfn / CHUNK_PAGES);
    let chunk = this.#dirty.get(ci);
    if (chunk === undefined) {
      chunk = new Uint8Array(CHUNK_PAGES / 8);
      this.#dirty.set(ci, chunk);
    }
    const s = pfn - ci * CHUNK_PAGES;
    const byte = chunk[s >> 3] ?? 0;
    const bit = 1 << (s & 7);
    if ((byte & bit) === 0) {
      chunk[s >> 3] = byte | bit;
      this.#stats.dirtySet++;
    }
  }

  #makeOps(): DmaMapOps {
    const refuse = (dev: Device, fn: string): void => {
      this.#iommu.warn(dev, `${fn}: device is assigned (unmanaged domain ${this.name}); the DMA API is not used for it`);
    };
    return {
      name: 'iommu-unmanaged',
      mapPhys: (dev) => {
        refuse(dev, 'dma_map_phys');
        return DMA_MAPPING_ERROR;
      },
      unmapPhys: (dev) => {
        refuse(dev, 'dma_unmap_phys');
      },
      mapSg: (dev) => {
        refuse(dev, 'dma_map_sg');
        return -Errno.EINVAL;
      },
      unmapSg: (dev) => {
        refuse(dev, 'dma_unmap_sg');
      },
      syncSingleForCpu: () => undefined,
      syncSingleForDevice: () => undefined,
      syncSgForCpu: () => undefined,
      syncSgForDevice: () => undefined,
      alloc: (dev): DmaCoherentBuffer | null => {
        refuse(dev, 'dma_alloc');
        return null;
      },
      free: (dev) => {
        refuse(dev, 'dma_free');
      },
      iovaTryAlloc: () => false,
      iovaLink: () => -Errno.EOPNOTSUPP,
      iovaSync: () => -Errno.EOPNOTSUPP,
      iovaUnlink: () => undefined,
      iovaDestroy: () => undefined,
      iovaFree: () => undefined,
      translate: (dev, dmaAddr, write) => {
        const phys = this.domain.translate(dev, dmaAddr, write);
        if (write && phys >= 0 && this.#tracking) this.#markDirty(dmaAddr);
        return phys;
      },
      getMergeBoundary: () => this.granule - 1,
      maxMappingSize: () => Number.MAX_SAFE_INTEGER,
      optMappingSize: () => Number.MAX_SAFE_INTEGER,
      getRequiredMask: () => 2 ** 32 - 1,
      detach: () => undefined,
    };
  }
}

/**
 * `iommu_paging_domain_alloc` for VFIO (an unmanaged domain) on `iommu`: map guest memory into it,
 * attach the assigned device, optionally track dirty pages.
 */
export function createUnmanagedDomain(iommu: Iommu, opts: UnmanagedDomainOptions = {}): UnmanagedIommuDomain {
  return new UnmanagedIommuDomain(iommu, opts);
}

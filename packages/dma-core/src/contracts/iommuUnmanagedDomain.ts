// kernel: include/linux/iommu.h (IOMMU_DOMAIN_UNMANAGED, iommu_map/iommu_unmap, iommu_dirty_ops),
// drivers/iommu/iommufd/hw_pagetable.c (IOMMU_HWPT_SET_DIRTY_TRACKING, IOMMU_HWPT_GET_DIRTY_BITMAP),
// drivers/vfio/vfio_iommu_type1.c (vfio_iommu_map / vfio_unmap_unpin)
import type { Device } from '../device/device.js';

/** `IOMMU_READ` / `IOMMU_WRITE` as the unmanaged-domain port takes them (same bits as iommu-dma). */
export const IOMMU_UNMANAGED_READ = 1 << 0;
/** IOMMU_WRITE as the unmanaged-domain port takes it. */
export const IOMMU_UNMANAGED_WRITE = 1 << 1;

/** `IOMMU_DIRTY_NO_CLEAR`: report dirty bits without clearing them. */
export const IOMMU_DIRTY_NO_CLEAR = 1 << 0;

/**
 * The unmanaged IOMMU domain that VFIO (type1 or iommufd) uses for device assignment: userspace
 * decides the IOVA layout (guest-physical addresses) and which host pages back it; the DMA API is
 * not involved for guest memory. An assigned device's DMA is translated by this domain. If the
 * IOMMU supports dirty tracking (VT-d SLADS, AMD HD, SMMUv3 HTTU), writes through the domain set
 * dirty bits that `readAndClearDirty` returns.
 *
 * Return conventions are the kernel's: 0 or a negative errno; `unmap` returns bytes unmapped.
 */
export interface IommuUnmanagedDomain {
  readonly name: string;
  /** Smallest IOMMU page size (`1 << __ffs(pgsize_bitmap)`); map/unmap must be aligned to it. */
  readonly granule: number;
  /** Highest IOVA + 1 the domain can map (the aperture end). */
  readonly apertureEnd: number;
  /** True if the IOMMU can track dirty pages for this domain (`domain->dirty_ops != NULL`). */
  readonly dirtyTrackingSupported: boolean;

  /** `iommu_attach_device`: route `dev`'s DMA through this domain. 0, -EBUSY (already attached), -EINVAL. */
  attachDevice(dev: Device): number;
  /** `iommu_detach_device`: the device goes back to its default domain (or dma-direct). */
  detachDevice(dev: Device): void;
  /** `iommu_map(domain, iova, paddr, size, prot)`: 0 or -EINVAL (also for a `prot` with neither read nor write) / -ERANGE / -ENOMEM / -EADDRINUSE (generic_pt's errno for a live entry); nothing changes on error. */
  map(iova: number, paddr: number, size: number, prot: number): number;
  /** `iommu_unmap(domain, iova, size)`: bytes unmapped (0 for bad or unaligned input); the IOTLB is flushed. */
  unmap(iova: number, size: number): number;
  /** `iommu_iova_to_phys`: host physical address or 0. */
  iovaToPhys(iova: number): number;
  /** `set_dirty_tracking(domain, enable)`: 0 or -EOPNOTSUPP. Enabling clears every dirty bit. */
  setDirtyTracking(enable: boolean): number;
  /**
   * `read_and_clear_dirty(domain, iova, size, flags, dirty)`: for each granule of `[iova, iova+size)`
   * written by a device since the last read, set bit `(page - iova) / granule` of `bitmap` (LSB
   * first) and clear it in the IOMMU unless `IOMMU_DIRTY_NO_CLEAR`. Returns the number of dirty
   * granules reported, or -EINVAL (bad range, bitmap too small) / -EOPNOTSUPP (not tracking).
   */
  readAndClearDirty(iova: number, size: number, flags: number, bitmap: Uint8Array): number;
}

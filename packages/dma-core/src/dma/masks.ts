// kernel: kernel/dma/mapping.c (dma_set_mask, dma_get_required_mask, dma_max_mapping_size, ...),
// kernel/dma/direct.c (dma_direct_supported), include/linux/dma-mapping.h (dma_parms accessors)
// Masks are given in BITS (DESIGN.md section 4).
import type { Device } from '../device/device.js';
import { SIZE_MAX, dmaBitMask, minNotZero } from '../units/dmaAddr.js';
import { Errno } from '../units/errno.js';
import { SZ_64K, isPowerOfTwo } from '../units/page.js';
import { dmaDirectAllRamMapped, dmaDirectGetRequiredMask, dmaDirectMaxMappingSize, physToDma } from './direct.js';

/** x86 ZONE_DMA: the lowest zone a dma-direct mask must cover (`zone_dma_limit`). */
const ZONE_DMA_BITS = 24;

function validBits(bits: unknown): bits is number {
  return typeof bits === 'number' && Number.isInteger(bits) && bits >= 0 && bits <= 64;
}

/** `dma_supported(dev, mask)`: iommu always; dma-direct must cover the lowest zone. */
function dmaSupported(dev: Device, bits: number): boolean {
  if (bits === 0) return false;
  if (dev.dmaOps !== null) return true;
  // kernel: kernel/dma/direct.c dma_direct_supported: min_mask = min((max_pfn-1) << PAGE_SHIFT, zone_dma_limit)
  const top = dev.host.ramTop();
  const minMask = Math.min(Math.max(top - 4096, 0), dmaBitMask(ZONE_DMA_BITS));
  return dmaBitMask(bits) >= physToDma(dev, minMask);
}

/** `dma_set_mask(dev, mask)`: 0 or -EIO; recomputes dma_skip_sync. */
export function dmaSetMask(dev: Device, bits: number): number {
  if (!validBits(bits)) {
    dev.host.dmaDebug.report('invalid-argument', dev, `dma_set_mask: mask width must be an integer 0..64 bits, got ${String(bits)}`);
    return -Errno.EIO;
  }
  // A device with no dma_mask pointer (modelled as 0 bits) cannot take a streaming mask.
  if (dev.dmaMaskBits === 0 || !dmaSupported(dev, bits)) return -Errno.EIO;
  dev.dmaMaskBits = bits;
  // kernel: dma_setup_need_sync: direct and iommu skip syncs iff the device is coherent
  dev.dmaSkipSync = dev.coherent;
  return 0;
}

/** `dma_set_coherent_mask(dev, mask)`: 0 or -EIO. */
export function dmaSetCoherentMask(dev: Device, bits: number): number {
  if (!validBits(bits)) {
    dev.host.dmaDebug.report('invalid-argument', dev, `dma_set_coherent_mask: mask width must be an integer 0..64 bits, got ${String(bits)}`);
    return -Errno.EIO;
  }
  if (!dmaSupported(dev, bits)) return -Errno.EIO;
  dev.coherentDmaMaskBits = bits;
  return 0;
}

/** `dma_set_mask_and_coherent`: the coherent mask is set only if the streaming one was. */
export function dmaSetMaskAndCoherent(dev: Device, bits: number): number {
  const rc = dmaSetMask(dev, bits);
  if (rc === 0) dmaSetCoherentMask(dev, bits);
  return rc;
}

/** `dma_get_mask(dev)`: the streaming mask, or the 32-bit default when unset. */
export function dmaGetMask(dev: Device): number {
  return dev.dmaMaskBits !== 0 ? dev.dmaMask : dmaBitMask(32);
}

/** `dma_get_required_mask(dev)`: direct → mask covering the top of RAM; iommu → the backend's. */
export function dmaGetRequiredMask(dev: Device): number {
  const ops = dev.dmaOps;
  return ops === null ? dmaDirectGetRequiredMask(dev) : ops.getRequiredMask(dev);
}

/** `dma_addressing_limited(dev)`: the device cannot reach all of RAM without help. */
export function dmaAddressingLimited(dev: Device): boolean {
  if (minNotZero(dmaGetMask(dev), dev.busDmaLimit) < dmaGetRequiredMask(dev)) return true;
  if (dev.dmaOps !== null) return false;
  return !dmaDirectAllRamMapped(dev);
}

/** `dma_max_mapping_size(dev)`. */
export function dmaMaxMappingSize(dev: Device): number {
  const ops = dev.dmaOps;
  return ops === null ? dmaDirectMaxMappingSize(dev, dmaAddressingLimited(dev)) : ops.maxMappingSize(dev);
}

/** `dma_opt_mapping_size(dev)`: the backend's optimum, capped by the max mapping size. */
export function dmaOptMappingSize(dev: Device): number {
  const ops = dev.dmaOps;
  const size = ops === null ? SIZE_MAX : ops.optMappingSize(dev);
  return Math.min(dmaMaxMappingSize(dev), size);
}

/** `dma_get_merge_boundary(dev)`: 0 for dma-direct ("cannot merge"), granule - 1 for iommu. */
export function dmaGetMergeBoundary(dev: Device): number {
  const ops = dev.dmaOps;
  return ops === null ? 0 : ops.getMergeBoundary(dev);
}

function noParms(dev: Device, fn: string): boolean {
  if (dev.dmaParms !== null) return false;
  // kernel: WARN_ON_ONCE(!dev->dma_parms) and return
  dev.host.dmaDebug.report('invalid-argument', dev, `${fn}: device has no dma_parms`);
  return true;
}

/** `dma_get_max_seg_size(dev)`: 64 KiB when unset. */
export function dmaGetMaxSegSize(dev: Device): number {
  const v = dev.dmaParms?.maxSegmentSize ?? 0;
  return v !== 0 ? v : SZ_64K;
}

/** `dma_set_max_seg_size(dev, size)`. */
export function dmaSetMaxSegSize(dev: Device, size: number): void {
  if (noParms(dev, 'dma_set_max_seg_size')) return;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size > 0xffff_ffff) {
    dev.host.dmaDebug.report('invalid-argument', dev, `dma_set_max_seg_size: invalid size ${String(size)}`);
    return;
  }
  if (dev.dmaParms !== null) dev.dmaParms.maxSegmentSize = size;
}

/** `dma_get_seg_boundary(dev)`: ULONG_MAX (here 2^53 - 1) when unset. */
export function dmaGetSegBoundary(dev: Device): number {
  const v = dev.dmaParms?.segmentBoundaryMask ?? 0;
  return v !== 0 ? v : Number.MAX_SAFE_INTEGER;
}

/** `dma_set_seg_boundary(dev, mask)`: mask must be 2^n - 1. */
export function dmaSetSegBoundary(dev: Device, mask: number): void {
  if (noParms(dev, 'dma_set_seg_boundary')) return;
  if (typeof mask !== 'number' || !Number.isSafeInteger(mask) || mask <= 0 || (mask !== Number.MAX_SAFE_INTEGER && !isPowerOfTwo(mask + 1))) {
    dev.host.dmaDebug.report('invalid-argument', dev, `dma_set_seg_boundary: mask ${String(mask)} is not 2^n - 1`);
    return;
  }
  if (dev.dmaParms !== null) dev.dmaParms.segmentBoundaryMask = mask;
}

/** `dma_get_seg_boundary_nr_pages(dev, page_shift)`: pages per boundary window. */
export function dmaGetSegBoundaryNrPages(dev: Device | null, pageShift: number): number {
  if (dev === null) return Math.floor(0xffff_ffff / 2 ** pageShift) + 1;
  return Math.floor(dmaGetSegBoundary(dev) / 2 ** pageShift) + 1;
}

/** `dma_get_min_align_mask(dev)`. */
export function dmaGetMinAlignMask(dev: Device): number {
  return dev.dmaParms?.minAlignMask ?? 0;
}

/** `dma_set_min_align_mask(dev, mask)`: mask must be 2^n - 1 (below 2 GiB here). */
export function dmaSetMinAlignMask(dev: Device, mask: number): void {
  if (noParms(dev, 'dma_set_min_align_mask')) return;
  if (typeof mask !== 'number' || !Number.isSafeInteger(mask) || mask < 0 || mask >= 2 ** 31 || !isPowerOfTwo(mask + 1)) {
    dev.host.dmaDebug.report('invalid-argument', dev, `dma_set_min_align_mask: mask ${String(mask)} is not 2^n - 1`);
    return;
  }
  if (dev.dmaParms !== null) dev.dmaParms.minAlignMask = mask;
}

/** `dma_pci_p2pdma_supported(dev)`: dma-direct and dma-iommu both support P2PDMA. */
export function dmaPciP2pdmaSupported(_dev: Device): boolean {
  return true;
}

/** `dma_get_cache_alignment()`: x86 has no ARCH_DMA_MINALIGN, so 1. */
export function dmaGetCacheAlignment(): number {
  return 1;
}

// kernel: block/blk-settings.c (blk_validate_limits, defaults), include/linux/blkdev.h,
// block/blk.h (get_max_segment_size, bvec_gap_to_prev), block/blk-merge.c (biovec_phys_mergeable)
import { Errno, SECTOR_SIZE } from '@dmakit/dma-core';
import type { QueueLimits } from '@dmakit/dma-core';

/** `BLK_MAX_SEGMENTS`. */
export const BLK_MAX_SEGMENTS = 128;
/** `BLK_MAX_SEGMENT_SIZE`. */
export const BLK_MAX_SEGMENT_SIZE = 65536;
/** `BLK_SEG_BOUNDARY_MASK`. */
export const BLK_SEG_BOUNDARY_MASK = 0xffff_ffff;
/** `BLK_SAFE_MAX_SECTORS`. */
export const BLK_SAFE_MAX_SECTORS = 255;
/** `BLK_DEF_MAX_SECTORS_CAP` (1280 KiB). */
export const BLK_DEF_MAX_SECTORS_CAP = 2560;
export const UINT_MAX = 0xffff_ffff;

function isPow2(x: number): boolean {
  return Number.isSafeInteger(x) && x > 0 && 2 ** Math.round(Math.log2(x)) === x;
}

/** A mask of the form 2^n - 1 (0 allowed when `zeroOk`). */
function isLowMask(x: number, zeroOk: boolean): boolean {
  if (x === 0) return zeroOk;
  return Number.isSafeInteger(x) && x > 0 && (x === Number.MAX_SAFE_INTEGER || isPow2(x + 1));
}

/**
 * Fill in defaults and check `lim` like `blk_validate_limits`; the filled limits or a negative
 * errno (-EINVAL). With a virt boundary, max_segment_size becomes UINT_MAX (the virt boundary
 * already bounds segments), as the kernel does.
 */
export function blkValidateLimits(lim: Partial<QueueLimits> = {}): QueueLimits | number {
  const logicalBlockSize = lim.logicalBlockSize ?? SECTOR_SIZE;
  if (!isPow2(logicalBlockSize) || logicalBlockSize < SECTOR_SIZE || logicalBlockSize > 65536) return -Errno.EINVAL;
  const maxHwSectors = lim.maxHwSectors ?? BLK_SAFE_MAX_SECTORS;
  if (!Number.isSafeInteger(maxHwSectors) || maxHwSectors < logicalBlockSize / SECTOR_SIZE || maxHwSectors > UINT_MAX) return -Errno.EINVAL;
  const maxSectors = Math.min(lim.maxSectors ?? Math.min(maxHwSectors, BLK_DEF_MAX_SECTORS_CAP), maxHwSectors);
  if (!Number.isSafeInteger(maxSectors) || maxSectors < logicalBlockSize / SECTOR_SIZE) return -Errno.EINVAL;
  const maxSegments = lim.maxSegments ?? BLK_MAX_SEGMENTS;
  if (!Number.isSafeInteger(maxSegments) || maxSegments < 1 || maxSegments > 65535) return -Errno.EINVAL;
  const virtBoundaryMask = lim.virtBoundaryMask ?? 0;
  if (!isLowMask(virtBoundaryMask, true) || virtBoundaryMask > UINT_MAX) return -Errno.EINVAL;
  let maxSegmentSize = lim.maxSegmentSize ?? (virtBoundaryMask !== 0 ? UINT_MAX : BLK_MAX_SEGMENT_SIZE);
  if (virtBoundaryMask !== 0) {
    // kernel: WARN_ON_ONCE(lim->max_segment_size && lim->max_segment_size != UINT_MAX)
    if (lim.maxSegmentSize !== undefined && lim.maxSegmentSize !== UINT_MAX) return -Errno.EINVAL;
    maxSegmentSize = UINT_MAX;
  }
  // kernel: the segment size must be at least a page (BLK_MIN_SEGMENT_SIZE) and fit in u32.
  if (!Number.isSafeInteger(maxSegmentSize) || maxSegmentSize < 4096 || maxSegmentSize > UINT_MAX) return -Errno.EINVAL;
  const segBoundaryMask = lim.segBoundaryMask ?? BLK_SEG_BOUNDARY_MASK;
  // kernel: seg_boundary_mask must be at least PAGE_SIZE - 1
  if (!isLowMask(segBoundaryMask, false) || segBoundaryMask < 4095) return -Errno.EINVAL;
  const dmaAlignment = lim.dmaAlignment ?? SECTOR_SIZE - 1;
  if (!isLowMask(dmaAlignment, true) || dmaAlignment > 4095) return -Errno.EINVAL;
  const integrityTupleSize = lim.integrityTupleSize ?? 0;
  if (!Number.isSafeInteger(integrityTupleSize) || integrityTupleSize < 0 || integrityTupleSize > 255) return -Errno.EINVAL;
  const integrityIntervalExp = lim.integrityIntervalExp ?? Math.round(Math.log2(logicalBlockSize));
  if (!Number.isSafeInteger(integrityIntervalExp) || integrityIntervalExp < 9 || integrityIntervalExp > 16) return -Errno.EINVAL;
  const maxIntegritySegments = lim.maxIntegritySegments ?? (integrityTupleSize > 0 ? 1 : 0);
  if (!Number.isSafeInteger(maxIntegritySegments) || maxIntegritySegments < 0 || maxIntegritySegments > 65535) return -Errno.EINVAL;
  return {
    logicalBlockSize,
    maxHwSectors,
    maxSectors,
    maxSegments,
    maxSegmentSize,
    segBoundaryMask,
    virtBoundaryMask,
    dmaAlignment,
    maxIntegritySegments,
    integrityTupleSize,
    integrityIntervalExp,
  };
}

/** `blkValidateLimits` (kernel: blk_validate_limits() in block/blk-settings.c) for configuration code: throws a RangeError naming the limits on -EINVAL. */
export function queueLimits(lim: Partial<QueueLimits> = {}): QueueLimits {
  const r = blkValidateLimits(lim);
  if (typeof r === 'number') throw new RangeError(`queueLimits: invalid queue limits ${JSON.stringify(lim)}`);
  return r;
}

/**
 * The limits nvme-pci sets (drivers/nvme/host/pci.c, nvme_pci_alloc_dev + nvme_set_ctrl_limits):
 * virt boundary = NVME_CTRL_PAGE_SIZE - 1, max_hw_sectors from MDTS (default 8 MiB, NVME_MAX_BYTES),
 * max_segments = NVME_MAX_SEGS (256), dma_alignment 3.
 */
export function nvmeQueueLimits(over: Partial<QueueLimits> = {}): QueueLimits {
  return queueLimits({
    maxHwSectors: (8 << 20) >> 9,
    maxSectors: (8 << 20) >> 9,
    maxSegments: 256,
    virtBoundaryMask: 4095,
    dmaAlignment: 3,
    ...over,
  });
}

/** `mask - (paddr & mask)` without 32-bit bitwise truncation (mask = 2^n - 1, up to 2^53 - 1). */
function toBoundary(mask: number, paddr: number): number {
  return mask - (paddr % (mask + 1));
}

/**
 * `get_max_segment_size(lim, paddr, len)`: min(len, bytes to the next seg_boundary_mask line,
 * max_segment_size).
 */
export function getMaxSegmentSize(lim: QueueLimits, paddr: number, len: number): number {
  return Math.min(len, Math.min(toBoundary(lim.segBoundaryMask, paddr), lim.maxSegmentSize - 1) + 1);
}

/**
 * `biovec_phys_mergeable(q, vec1, vec2)`: physically contiguous and the merged range stays in
 * one seg_boundary_mask window. (The kernel's Xen and KMSAN exceptions do not apply here.)
 */
export function biovecPhysMergeable(lim: QueueLimits, addr1: number, len1: number, addr2: number, len2: number): boolean {
  if (addr1 + len1 !== addr2) return false;
  const win = lim.segBoundaryMask + 1;
  return Math.floor(addr1 / win) === Math.floor((addr2 + len2 - 1) / win);
}

/**
 * `bvec_gap_to_prev(lim, bprv, offset)`: would a segment starting at page offset `offset` after
 * one ending at page offset `prvEnd` (bv_offset + bv_len) leave a virt-boundary gap?
 */
export function bvecGapToPrev(lim: QueueLimits, prvEnd: number, offset: number): boolean {
  const m = lim.virtBoundaryMask;
  if (m === 0) return false;
  return (offset & m) !== 0 || (prvEnd & m) !== 0;
}

/** `bio_integrity_bytes(bi, sectors)`: PI bytes for `sectors` 512-byte sectors. */
export function bioIntegrityBytes(lim: QueueLimits, sectors: number): number {
  if (lim.integrityTupleSize === 0) return 0;
  return Math.floor(sectors / 2 ** (lim.integrityIntervalExp - 9)) * lim.integrityTupleSize;
}

// kernel: drivers/iommu/iommufd/iova_bitmap.c (iova_bitmap_set), drivers/vfio/vfio_main.c
// (vfio_combine_iova_ranges)
import { PAGE_SIZE, isPowerOfTwo } from '@dmakit/dma-core';

/** One range of `VFIO_DEVICE_FEATURE_DMA_LOGGING_START` (`struct vfio_device_feature_dma_logging_range`). */
export interface VfioIovaRange {
  iova: number;
  length: number;
}

/**
 * `struct iova_bitmap`: the userspace dirty bitmap of a DMA logging report, one bit per
 * `pageSize` page of `[iova, iova + length)`, LSB first.
 */
export class IovaBitmap {
  readonly iova: number;
  readonly length: number;
  readonly pageSize: number;
  readonly bits: Uint8Array;

  constructor(iova: number, length: number, pageSize: number = PAGE_SIZE) {
    if (!isPowerOfTwo(pageSize)) throw new RangeError(`IovaBitmap: page size must be a power of two, got ${pageSize}`);
    if (!Number.isSafeInteger(iova) || iova < 0 || !Number.isSafeInteger(length) || length <= 0) throw new RangeError('IovaBitmap: bad range');
    this.iova = iova;
    this.length = length;
    this.pageSize = pageSize;
    this.bits = new Uint8Array(Math.ceil(Math.ceil(length / pageSize) / 8));
  }

  /** `iova_bitmap_set(bitmap, iova, length)`: mark every page of `[iova, iova+length)` that lies in the bitmap. */
  set(iova: number, length: number): void {
    const start = Math.max(iova, this.iova);
    const end = Math.min(iova + length, this.iova + this.length);
    if (end <= start) return;
    const first = Math.floor((start - this.iova) / this.pageSize);
    const last = Math.floor((end - 1 - this.iova) / this.pageSize);
    for (let b = first; b <= last; b++) this.bits[b >> 3] = (this.bits[b >> 3] ?? 0) | (1 << (b & 7));
  }

  /** True if the page holding iova is marked dirty. */
  test(iova: number): boolean {
    if (iova < this.iova || iova >= this.iova + this.length) return false;
    const b = Math.floor((iova - this.iova) / this.pageSize);
    return ((this.bits[b >> 3] ?? 0) & (1 << (b & 7))) !== 0;
  }

  /** Number of set bits. */
  count(): number {
    let n = 0;
    for (const byte of this.bits) {
      let v = byte;
      while (v !== 0) {
        v &= v - 1;
        n++;
      }
    }
    return n;
  }

  /** Every dirty page address, ascending. */
  dirtyPages(): number[] {
    const out: number[] = [];
    const pages = Math.ceil(this.length / this.pageSize);
    for (let b = 0; b < pages; b++) if (((this.bits[b >> 3] ?? 0) & (1 << (b & 7))) !== 0) out.push(this.iova + b * this.pageSize);
    return out;
  }
}

/**
 * `vfio_combine_iova_ranges(root, cur_nodes, req_nodes)`: while there are more ranges than the
 * device can track, merge the two neighbours with the smallest gap. Input need not be sorted;
 * returns new sorted ranges.
 */
export function vfioCombineIovaRanges(ranges: readonly VfioIovaRange[], reqNodes: number): VfioIovaRange[] {
  const r = ranges.map((x) => ({ iova: x.iova, length: x.length })).sort((a, b) => a.iova - b.iova);
  if (reqNodes < 1) return r;
  while (r.length > reqNodes) {
    let best = 1;
    let minGap = Number.POSITIVE_INFINITY;
    for (let i = 1; i < r.length; i++) {
      const prev = r[i - 1];
      const cur = r[i];
      if (prev === undefined || cur === undefined) continue;
      const gap = cur.iova - (prev.iova + prev.length);
      if (gap < minGap) {
        minGap = gap;
        best = i;
      }
    }
    const prev = r[best - 1];
    const cur = r[best];
    if (prev === undefined || cur === undefined) break;
    prev.length = Math.max(prev.iova + prev.length, cur.iova + cur.length) - prev.iova;
    r.splice(best, 1);
  }
  return r;
}

// kernel: include/linux/iova.h — the inline helpers, on numbers exact below 2^53.
import { Errno, errnoName } from '@dmakit/dma-core';

/** log of the largest IOVA range size (in granules) the rcaches hold: bins 2^0..2^5. kernel: IOVA_RANGE_CACHE_MAX_SIZE in drivers/iommu/iova.c. */
export const IOVA_RANGE_CACHE_MAX_SIZE = 6;
/** pfns per magazine, so that `struct iova_magazine` is 1024 bytes. */
export const IOVA_MAG_SIZE = 127;
/** Period of the depot trim worker (`IOVA_DEPOT_DELAY`). */
export const IOVA_DEPOT_DELAY_MS = 100;

/** What the iova.h helpers need from a domain. */
export interface IovaGranularity {
  readonly granule: number;
  readonly shift: number;
}

/** Bad input to the IOVA allocator (what the kernel BUG()s or WARNs on). Thrown before any state changes. */
export class IovaDomainError extends Error {
  /** Negative errno, e.g. `-Errno.EINVAL`. */
  readonly errno: number;
  constructor(message: string, errno: number = -Errno.EINVAL) {
    super(`${message} (${errnoName(errno)})`);
    this.name = 'IovaDomainError';
    this.errno = errno;
  }
}

/** `iova_shift`: `__ffs(granule)`. */
export function iovaShift(d: IovaGranularity): number {
  return d.shift;
}

/** `iova_mask`: `granule - 1`. */
export function iovaMask(d: IovaGranularity): number {
  return d.granule - 1;
}

/** `iova_offset(iovad, iova)`: offset inside the granule. */
export function iovaOffset(d: IovaGranularity, x: number): number {
  return x % d.granule;
}

/** `iova_align(iovad, size)`: round up to the granule. */
export function iovaAlign(d: IovaGranularity, x: number): number {
  const r = x % d.granule;
  return r === 0 ? x : x + (d.granule - r);
}

/** `iova_align_down(iovad, size)`. */
export function iovaAlignDown(d: IovaGranularity, x: number): number {
  return x - (x % d.granule);
}

/** `iova_pfn(iovad, iova)`: `iova >> shift`. */
export function iovaPfn(d: IovaGranularity, x: number): number {
  return Math.floor(x / d.granule);
}

/**
 * `iova_rcache_range()`: the largest mapping size (bytes) the rcaches serve,
 * `PAGE_SIZE << (IOVA_RANGE_CACHE_MAX_SIZE - 1)`; dma-iommu uses it for `dma_opt_mapping_size`.
 */
export function iovaRcacheRange(pageSize = 4096): number {
  return pageSize * 2 ** (IOVA_RANGE_CACHE_MAX_SIZE - 1);
}

/** `roundup_pow_of_two` for positive integers, exact above 2^32. */
export function roundupPow2(n: number): number {
  if (n <= 1) return 1;
  if (n <= 0x8000_0000) return 2 ** (32 - Math.clz32(n - 1));
  let p = 0x1_0000_0000;
  while (p < n) p *= 2;
  return p;
}

/** `order_base_2` for positive integers. */
export function orderBase2(n: number): number {
  if (n <= 1) return 0;
  if (n <= 0x8000_0000) return 32 - Math.clz32(n - 1);
  return Math.log2(roundupPow2(n));
}

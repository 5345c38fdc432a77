// kernel: drivers/iommu/iommu.c (iommu_pgsize)

/** Result slot for `iommuPgsize` (reused by callers so the map loop allocates nothing). */
export interface PgsizeResult {
  pgsize: number;
  count: number;
}

/**
 * `iommu_pgsize(domain, iova, paddr, size, &count)`: the largest supported page size that fits
 * both the alignment of `iova | paddr` and `size`; `count` is how many of them fit before `size`
 * runs out or the next larger page size becomes usable, so an unaligned large range is mapped as
 * 4K..., then 2M..., then 1G... pages. `pageSizes` is the domain's pgsize_bitmap as an ascending
 * list. Returns 0 (and count 0) when nothing fits (size below the smallest page).
 */
export function iommuPgsize(pageSizes: readonly number[], iova: number, paddr: number, size: number, out: PgsizeResult): number {
  // Largest size <= size that both iova and paddr are aligned to (addr_merge = paddr | iova).
  let idx = -1;
  for (let i = pageSizes.length - 1; i >= 0; i--) {
    const p = pageSizes[i] ?? 0;
    if (p <= size && iova % p === 0 && paddr % p === 0) {
      idx = i;
      break;
    }
  }
  if (idx < 0) {
    out.pgsize = 0;
    out.count = 0;
    return 0;
  }
  const pgsize = pageSizes[idx] ?? 0;
  let span = size;
  const next = pageSizes[idx + 1];
  if (next !== undefined) {
    // Offset to the next larger page size's alignment boundary (of iova | paddr: both advance together).
    const mergeLow = Math.max(iova % next, paddr % next);
    const offset = iova % next === paddr % next ? next - mergeLow : Infinity;
    // If the range is big enough to hold the larger page after that offset, stop there.
    if (offset !== Infinity && offset + next <= size) span = offset;
  }
  out.pgsize = pgsize;
  out.count = Math.floor(span / pgsize);
  return pgsize;
}

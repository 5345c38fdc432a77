// kernel: drivers/iommu/intel/cache.c (calculate_psi_aligned_address, cache_tag_flush_iotlb),
// drivers/iommu/intel/iommu.c before 6.10 (iommu_flush_iotlb_psi), drivers/iommu/amd/iommu.c
// (build_inv_address), drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c (__arm_smmu_tlb_inv_range).
// What one ranged IOTLB invalidation (ops->iotlb_sync for a gathered range) really covers, per
// IOMMU driver.

/**
 * Which IOMMU driver's invalidation rule a domain follows:
 * - `'intel-vtd'`: page-selective invalidation (PSI) with an address mask: the naturally aligned
 *   power-of-two block of 4 KiB pages that covers the range; a domain-selective flush (DSI) when
 *   the mask exceeds the unit's MAMV (`cap_max_amask_val`).
 * - `'amd-vi'`: INVALIDATE_IOMMU_PAGES with the S bit: the naturally aligned power-of-two block
 *   that holds both ends of the range; everything when bit 51 differs.
 * - `'arm-smmu-v3'`: TLBI by VA per granule, or range TLBI (RIL): exactly the range.
 */
export type IommuDriver = 'intel-vtd' | 'amd-vi' | 'arm-smmu-v3';

/** Every driver name IommuOptions.driver accepts. */
export const IOMMU_DRIVERS: readonly IommuDriver[] = Object.freeze(['intel-vtd', 'amd-vi', 'arm-smmu-v3']);

/**
 * The default `cap_max_amask_val` (MAMV): 18, what QEMU's intel-iommu reports (VTD_MAMV) and
 * what many VT-d units advertise; a PSI of up to 2^18 pages (1 GiB) stays page-selective.
 */
export const VTD_DEFAULT_MAX_ADDRESS_MASK = 18;

const VTD_PAGE_SHIFT = 12;
const VTD_PAGE_SIZE = 4096;
/** drivers/iommu/intel/iommu.h: MAX_AGAW_PFN_WIDTH (mask when no PSI can express the range). */
const MAX_AGAW_PFN_WIDTH = 52;
/** 2^53: block sizes from here on exceed exact JavaScript integers (and any 52-bit IOVA space). */
const EXACT_LIMIT = 2 ** 53;

/** The block an invalidation covers: `[start, end]` inclusive, or the whole domain (`all`). */
export interface IotlbInvalidationBlock {
  /** First byte covered (inclusive). */
  start: number;
  /** Last byte covered (inclusive). */
  end: number;
  /** A domain-wide flush (VT-d DSI fallback, AMD all-pages address): every entry of the domain. */
  all: boolean;
  /** VT-d: the address mask (order in 4 KiB pages) of the PSI; other drivers: the block's order. */
  mask: number;
}

/** A fresh block record (callers reuse it so the hot path allocates nothing). */
export function iotlbInvalidationBlockInit(): IotlbInvalidationBlock {
  return { start: 0, end: 0, all: false, mask: 0 };
}

/** 2^0 .. 2^127, exact: `2 ** n` with a variable n is a Math.pow call, and this runs per unmap. */
const POW2 = Float64Array.from({ length: 128 }, (_, n) => 2 ** n);

function pow2(n: number): number {
  return n >= 0 && n < 128 ? (POW2[n] ?? 2 ** n) : 2 ** n;
}

/** The smallest m >= m0 for which pfn and endPfn lie in the same naturally aligned block of 2^m pages. */
function sharedBlockOrder(pfn: number, endPfn: number, m0: number, limit: number): number {
  let m = m0;
  while (m < limit && Math.floor(pfn / pow2(m)) !== Math.floor(endPfn / pow2(m))) m++;
  return m;
}

/**
 * VT-d `calculate_psi_aligned_address(start, end, &pages, &mask)` (drivers/iommu/intel/cache.c,
 * 6.10+; the same computation sat in iommu_flush_iotlb_psi in drivers/iommu/intel/iommu.c up to
 * 6.9): pages = aligned_nrpages(start, end - start + 1), rounded up to a power of two; when the
 * first pfn is not aligned to it, the mask grows to the first bit above it where the first and
 * last pfn agree (carries only flip a run of bits), MAX_AGAW_PFN_WIDTH if there is none. The
 * address is ALIGN_DOWN(start, VTD_PAGE_SIZE << mask). cache_tag_flush_iotlb then falls back
 * to a domain-selective flush when mask > cap_max_amask_val.
 * Integer arithmetic instead of the kernel's bit tricks (JavaScript bitwise ops are 32-bit).
 */
export function calculatePsiAlignedAddress(start: number, end: number, maxAddressMask: number, out: IotlbInvalidationBlock): IotlbInvalidationBlock {
  const pfn = Math.floor(start / VTD_PAGE_SIZE);
  const endPfn = Math.floor(end / VTD_PAGE_SIZE);
  const pages = endPfn - pfn + 1;
  // mask = ilog2(__roundup_pow_of_two(pages))
  let mask = 0;
  while (pow2(mask) < pages) mask++;
  if (pfn % pow2(mask) !== 0) mask = sharedBlockOrder(pfn, endPfn, mask, MAX_AGAW_PFN_WIDTH);
  out.mask = mask;
  const blockBytes = pow2(mask + VTD_PAGE_SHIFT);
  if (mask > maxAddressMask || blockBytes >= EXACT_LIMIT) {
    // cache_tag_flush_iotlb: "Fallback to domain selective flush if no PSI support or the size is too big."
    out.all = true;
    out.start = 0;
    out.end = 0;
    return out;
  }
  out.all = false;
  out.start = Math.floor(start / blockBytes) * blockBytes;
  out.end = out.start + blockBytes - 1;
  return out;
}

/**
 * AMD `build_inv_address(address, size)` (drivers/iommu/amd/iommu.c): one page is invalidated
 * alone; more set the S bit with every bit below the most significant bit that differs between
 * start and end, i.e. the naturally aligned block of 2^(msb_diff + 1) bytes; if bit 51 or above
 * differs, CMD_INV_IOMMU_ALL_PAGES_ADDRESS (everything).
 */
export function amdInvalidationBlock(start: number, end: number, out: IotlbInvalidationBlock): IotlbInvalidationBlock {
  const first = Math.floor(start / VTD_PAGE_SIZE);
  const last = Math.floor(end / VTD_PAGE_SIZE);
  out.all = false;
  if (first === last) {
    out.mask = 0;
    out.start = first * VTD_PAGE_SIZE;
    out.end = out.start + VTD_PAGE_SIZE - 1;
    return out;
  }
  // msb_diff = fls64(end ^ address) - 1: the block of 2^(msb_diff + 1) bytes holding both ends.
  let order = VTD_PAGE_SHIFT;
  while (order < 64 && Math.floor(start / pow2(order)) !== Math.floor(end / pow2(order))) order++;
  const msbDiff = order - 1;
  out.mask = order - VTD_PAGE_SHIFT;
  if (msbDiff > 51 || pow2(order) >= EXACT_LIMIT) {
    out.all = true;
    out.start = 0;
    out.end = 0;
    return out;
  }
  out.start = Math.floor(start / pow2(order)) * pow2(order);
  out.end = out.start + pow2(order) - 1;
  return out;
}

/**
 * What the driver's iotlb_sync invalidates for the gathered range `[start, end]` (inclusive
 * bytes): VT-d's PSI block (or DSI), AMD's S-bit block (or all pages), SMMUv3's exact range
 * widened to whole 4 KiB pages (the IOTLB's granule here).
 */
export function iotlbInvalidationBlock(driver: IommuDriver, start: number, end: number, maxAddressMask: number, out: IotlbInvalidationBlock): IotlbInvalidationBlock {
  switch (driver) {
    case 'intel-vtd':
      return calculatePsiAlignedAddress(start, end, maxAddressMask, out);
    case 'amd-vi':
      return amdInvalidationBlock(start, end, out);
    case 'arm-smmu-v3': {
      const first = Math.floor(start / VTD_PAGE_SIZE);
      const last = Math.floor(end / VTD_PAGE_SIZE);
      out.all = false;
      out.mask = 0;
      out.start = first * VTD_PAGE_SIZE;
      out.end = last * VTD_PAGE_SIZE + VTD_PAGE_SIZE - 1;
      return out;
    }
  }
}

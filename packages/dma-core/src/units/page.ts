// kernel: include/asm-generic/page.h, include/linux/align.h, include/linux/sizes.h
/** log2 of the page size (4 KiB pages). kernel: PAGE_SHIFT (x86-64). */
export const PAGE_SHIFT = 12;
/** Page size in bytes. kernel: PAGE_SIZE. */
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/** Low bits inside a page (the kernel's PAGE_MASK is the complement; we keep the offset mask). */
export const PAGE_OFFSET_MASK = PAGE_SIZE - 1;
/** log2 of a PMD huge page (2 MiB). kernel: HPAGE_PMD_SHIFT (x86-64). */
export const HPAGE_PMD_SHIFT = 21;
/** PMD huge page size in bytes. kernel: HPAGE_PMD_SIZE. */
export const HPAGE_PMD_SIZE = 1 << HPAGE_PMD_SHIFT;
/** log2 of a PUD huge page (1 GiB). kernel: HPAGE_PUD_SHIFT (x86-64). */
export const HPAGE_PUD_SHIFT = 30;

/** 1 KiB. kernel: SZ_1K in include/linux/sizes.h. */
export const SZ_1K = 1024;
/** 2 KiB. kernel: SZ_2K in include/linux/sizes.h. */
export const SZ_2K = 2048;
/** 4 KiB. kernel: SZ_4K in include/linux/sizes.h. */
export const SZ_4K = 4096;
/** 64 KiB. kernel: SZ_64K in include/linux/sizes.h. */
export const SZ_64K = 64 * 1024;
/** 128 KiB. kernel: SZ_128K in include/linux/sizes.h. */
export const SZ_128K = 128 * 1024;
/** 256 KiB. kernel: SZ_256K in include/linux/sizes.h. */
export const SZ_256K = 256 * 1024;
/** 1 MiB. kernel: SZ_1M in include/linux/sizes.h. */
export const SZ_1M = 1024 * 1024;
/** 2 MiB. kernel: SZ_2M in include/linux/sizes.h. */
export const SZ_2M = 2 * 1024 * 1024;
/** 4 MiB. kernel: SZ_4M in include/linux/sizes.h. */
export const SZ_4M = 4 * 1024 * 1024;
/** 64 MiB. kernel: SZ_64M in include/linux/sizes.h. */
export const SZ_64M = 64 * 1024 * 1024;
/** 1 GiB. kernel: SZ_1G in include/linux/sizes.h. */
export const SZ_1G = 1024 * 1024 * 1024;
/** 4 GiB. kernel: SZ_4G in include/linux/sizes.h. */
export const SZ_4G = 4 * SZ_1G;
/** 1 TiB. kernel: SZ_1T in include/linux/sizes.h. */
export const SZ_1T = 1024 * SZ_1G;

/**
 * Largest address the model represents exactly. Addresses are plain numbers (DESIGN.md section 4):
 * exact below 2^53, enough for 48-bit IOVA and 52-bit physical spaces.
 */
export const MAX_ADDRESS = Number.MAX_SAFE_INTEGER;

/**
 * `x mod a` that works above 2^32 (the `&` operator truncates to 32 bits). Hot: the common case
 * (a small address, a power-of-two `a`) is one integer `&`; `%` on large doubles is an fmod.
 */
function lowBits(x: number, a: number): number {
  if (a <= 0x4000_0000 && (a & (a - 1)) === 0) {
    if ((x | 0) === x && x >= 0) return x & (a - 1);
    // Exact for a power of two: the division and the product only move the exponent.
    if (x > 0) return x - Math.floor(x / a) * a;
  }
  return a <= 0x4000_0000 ? x % a : x - Math.floor(x / a) * a;
}

/** Round `x` up to a multiple of the power of two `a` (kernel: ALIGN() in include/linux/align.h). */
export function alignUp(x: number, a: number): number {
  const r = lowBits(x, a);
  return r === 0 ? x : x + (a - r);
}

/** Round `x` down to a multiple of the power of two `a` (`ALIGN_DOWN`). */
export function alignDown(x: number, a: number): number {
  return x - lowBits(x, a);
}

/** `IS_ALIGNED(x, a)`. */
export function isAligned(x: number, a: number): boolean {
  return lowBits(x, a) === 0;
}

/** `offset_in_page(x)`. */
export function offsetInPage(x: number): number {
  return x % PAGE_SIZE;
}

/** `x & (a - 1)` for a power-of-two `a`, exact above 2^32. */
export function offsetIn(x: number, a: number): number {
  return lowBits(x, a);
}

/** `PFN_DOWN(x)` / `PHYS_PFN`. */
export function physToPfn(phys: number): number {
  return Math.floor(phys / PAGE_SIZE);
}

/** `PFN_PHYS(pfn)`. */
export function pfnToPhys(pfn: number): number {
  return pfn * PAGE_SIZE;
}

/** `PAGE_ALIGN(x)`. */
export function pageAlign(x: number): number {
  return alignUp(x, PAGE_SIZE);
}

/**
 * True for a positive safe integer that is a power of two. kernel: is_power_of_2() in
 * include/linux/log2.h.
 */
export function isPowerOfTwo(x: number): boolean {
  return Number.isSafeInteger(x) && x > 0 && Number.isInteger(Math.log2(x));
}

/** `roundup_pow_of_two`. */
export function roundupPowOfTwo(x: number): number {
  return x <= 1 ? 1 : 2 ** Math.ceil(Math.log2(x));
}

/** `order_base_2`: smallest order with 2^order >= x. */
export function orderBase2(x: number): number {
  return x <= 1 ? 0 : Math.ceil(Math.log2(x));
}

/** `fls()`: index (1-based) of the highest set bit, 0 for 0 (kernel: include/asm-generic/bitops/fls.h). */
export function fls(x: number): number {
  return x <= 0 ? 0 : Math.floor(Math.log2(x)) + 1;
}

/** `__ffs()`: index (0-based) of the lowest set bit of a positive integer (kernel: include/asm-generic/bitops/__ffs.h). */
export function ffs0(x: number): number {
  if (x <= 0) return -1;
  let n = 0;
  let v = x;
  while (lowBits(v, 2) === 0) {
    v /= 2;
    n++;
  }
  return n;
}

/** `get_order(size)`: page order that holds `size` bytes. */
export function getOrder(size: number): number {
  return orderBase2(Math.ceil(size / PAGE_SIZE));
}

/** True if `x` is a non-negative integer the model represents exactly. */
export function isValidAddress(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

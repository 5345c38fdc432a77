// kernel: include/linux/dma-mapping.h
/**
 * `DMA_MAPPING_ERROR` is `~(dma_addr_t)0` in the kernel. Addresses here are numbers exact below
 * 2^53, so the sentinel is 2^64 - 1 rounded to a double (2^64): outside every valid address and
 * compared with `===` (or `dmaMappingError`).
 */
export const DMA_MAPPING_ERROR = 2 ** 64 - 1;

/**
 * `DMA_BIT_MASK(n)`: the highest address a device with an n-bit mask can reach. Exact for n <= 53;
 * above that the value is the nearest double, which still compares correctly against every
 * representable address.
 */
export function dmaBitMask(bits: number): number {
  // A table, not `2 ** bits`: masks are read on every map (dma_capable), and pow is not cheap.
  const mask = DMA_BIT_MASKS[bits];
  if (mask === undefined) throw new RangeError(`dmaBitMask: mask width must be an integer in 0..64, got ${bits}`);
  return mask;
}

const DMA_BIT_MASKS: readonly number[] = Array.from({ length: 65 }, (_, n) => (n === 0 ? 0 : 2 ** n - 1));

/** `min_not_zero(a, b)`. */
export function minNotZero(a: number, b: number): number {
  if (a === 0) return b;
  if (b === 0) return a;
  return Math.min(a, b);
}

/** `SIZE_MAX` stand-in for "no limit". */
export const SIZE_MAX = Number.MAX_SAFE_INTEGER;

/** Bit 63 of a size (the kernel's guard against SIZE_MAX-like values) is out of range here. */
export function isValidDmaSize(size: unknown): size is number {
  return typeof size === 'number' && Number.isSafeInteger(size) && size > 0;
}

/** Formats an address as hex for messages and traces (DMA_MAPPING_ERROR by name); dmakit helper. */
export function hex(x: number): string {
  if (x === DMA_MAPPING_ERROR) return 'DMA_MAPPING_ERROR';
  return Number.isFinite(x) && x >= 0 ? `0x${x.toString(16)}` : String(x);
}

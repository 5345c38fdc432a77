// kernel: include/linux/dma-mapping.h (struct dma_iova_state)
/** Bit 63 of `__size` in the kernel: some link of this state bounced through swiotlb. */
export const DMA_IOVA_USE_SWIOTLB = 1n << 63n;

/**
 * `struct dma_iova_state { dma_addr_t addr; u64 __size; }`. A JS number cannot hold bit 63 next to
 * an exact size, so the USE_SWIOTLB bit is kept in `useSwiotlb`; `__size` recombines them as the
 * kernel's 64-bit word for display and comparison.
 */
export class DmaIovaState {
  /** IOVA handed to the device for offset 0 (allocated base + granule offset of the phys hint). */
  addr = 0;
  /** Requested size in bytes (the low 63 bits of `__size`). 0 means "try_alloc did not succeed". */
  size = 0;
  /** The DMA_IOVA_USE_SWIOTLB bit: sticky until the state is reinitialised. */
  useSwiotlb = false;

  /** The kernel's `__size` word (size | USE_SWIOTLB). */
  get __size(): bigint {
    return BigInt(this.size) | (this.useSwiotlb ? DMA_IOVA_USE_SWIOTLB : 0n);
  }

  /**
   * Bytes of mapping state this object holds: two 64-bit words, `addr` and `__size` (the
   * USE_SWIOTLB flag lives in `__size`'s top bit), the layout of `struct dma_iova_state`.
   */
  get byteLength(): number {
    return 2 * Float64Array.BYTES_PER_ELEMENT;
  }

  /** Zero the state, as `dma_iova_try_alloc` does first. */
  reset(): void {
    this.addr = 0;
    this.size = 0;
    this.useSwiotlb = false;
  }
}

/** `dma_use_iova(state)`: true iff try_alloc succeeded (`__size != 0`). */
export function dmaUseIova(state: DmaIovaState): boolean {
  return state.size !== 0;
}

/** `dma_iova_size(state)`: the requested size without the USE_SWIOTLB bit. */
export function dmaIovaSize(state: DmaIovaState): number {
  return state.size;
}

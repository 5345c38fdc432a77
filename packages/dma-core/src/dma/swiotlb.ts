// kernel: kernel/dma/swiotlb.c
/** Skeleton: the dma room owner implements the pool. */
export class Swiotlb {
  readonly base: number;
  readonly bytes: number;

  constructor(base: number, bytes: number) {
    this.base = base;
    this.bytes = bytes;
  }

  /** `is_swiotlb_buffer`. */
  isSwiotlbBuffer(phys: number): boolean {
    return phys >= this.base && phys < this.base + this.bytes;
  }
}

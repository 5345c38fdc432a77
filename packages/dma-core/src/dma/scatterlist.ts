// kernel: include/linux/scatterlist.h, lib/scatterlist.c
/**
 * A scatterlist table kept in typed arrays (no object per entry). CPU side: `phys[i]` and
 * `length[i]` for `origNents` entries. DMA side after mapping: `dmaAddress[i]`, `dmaLength[i]`
 * for `nents` segments, plus per-entry flags (bus address for P2P, swiotlb-mapped list).
 */
export class SgTable {
  /** CPU entries (`orig_nents`). */
  origNents: number;
  /** DMA segments after `dmaMapSgtable` (`nents`); equals origNents before mapping. */
  nents: number;
  readonly phys: Float64Array;
  readonly length: Uint32Array;
  readonly dmaAddress: Float64Array;
  readonly dmaLength: Uint32Array;
  /** Per-entry flags: SG_DMA_BUS_ADDRESS, SG_DMA_SWIOTLB. */
  readonly dmaFlags: Uint8Array;

  constructor(capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity <= 0) {
      throw new RangeError(`SgTable: capacity must be a positive integer, got ${capacity}`);
    }
    this.origNents = 0;
    this.nents = 0;
    this.phys = new Float64Array(capacity);
    this.length = new Uint32Array(capacity);
    this.dmaAddress = new Float64Array(capacity);
    this.dmaLength = new Uint32Array(capacity);
    this.dmaFlags = new Uint8Array(capacity);
  }

  get capacity(): number {
    return this.phys.length;
  }

  /** Append a CPU entry (`sg_set_page` / `sg_set_phys` on the next free slot). */
  push(phys: number, length: number): void {
    const i = this.origNents;
    if (i >= this.capacity) throw new RangeError(`SgTable: full (${this.capacity} entries)`);
    this.phys[i] = phys;
    this.length[i] = length;
    this.origNents = i + 1;
    this.nents = this.origNents;
  }

  /** `sg_phys(sg)` */
  sgPhys(i: number): number {
    return this.phys[i] ?? 0;
  }

  /** `sg_dma_address(sg)` */
  sgDmaAddress(i: number): number {
    return this.dmaAddress[i] ?? 0;
  }

  /** `sg_dma_len(sg)` */
  sgDmaLen(i: number): number {
    return this.dmaLength[i] ?? 0;
  }

  /** Total CPU bytes. */
  totalLength(): number {
    let t = 0;
    for (let i = 0; i < this.origNents; i++) t += this.length[i] ?? 0;
    return t;
  }

  /** Bytes of metadata this table holds (the real array sizes), for memory comparisons. */
  metadataBytes(): number {
    return this.phys.byteLength + this.length.byteLength + this.dmaAddress.byteLength + this.dmaLength.byteLength + this.dmaFlags.byteLength;
  }
}

/** `sg_dma_is_bus_address`: a P2P segment programmed with a PCI bus address (never unmapped). */
export const SG_DMA_BUS_ADDRESS = 1;
/** `sg_dma_is_swiotlb`: the list was mapped per segment through swiotlb. */
export const SG_DMA_SWIOTLB = 2;

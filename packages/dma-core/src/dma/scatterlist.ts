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

  /** Entries the table can hold. */
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

  /**
   * Bytes one entry takes across the table's arrays (CPU address and length, DMA address and
   * length, flags): the per-entry metadata a mapping of `origNents` entries occupies is
   * `origNents * entryBytes`.
   */
  get entryBytes(): number {
    return this.phys.BYTES_PER_ELEMENT + this.length.BYTES_PER_ELEMENT + this.dmaAddress.BYTES_PER_ELEMENT + this.dmaLength.BYTES_PER_ELEMENT + this.dmaFlags.BYTES_PER_ELEMENT;
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
/** Model flag: a THRU_HOST_BRIDGE P2P segment mapped with DMA_ATTR_MMIO (no sync, no swiotlb). */
export const SG_DMA_MMIO = 4;

/** `sg_dma_is_bus_address(sg)`. */
export function sgDmaIsBusAddress(sgt: SgTable, i: number): boolean {
  return ((sgt.dmaFlags[i] ?? 0) & SG_DMA_BUS_ADDRESS) !== 0;
}

/** `sg_dma_mark_bus_address(sg)`. */
export function sgDmaMarkBusAddress(sgt: SgTable, i: number): void {
  sgt.dmaFlags[i] = (sgt.dmaFlags[i] ?? 0) | SG_DMA_BUS_ADDRESS;
}

/** `sg_dma_unmark_bus_address(sg)`. */
export function sgDmaUnmarkBusAddress(sgt: SgTable, i: number): void {
  sgt.dmaFlags[i] = (sgt.dmaFlags[i] ?? 0) & ~SG_DMA_BUS_ADDRESS;
}

/** `sg_dma_is_swiotlb(sg)` (set on the first entry of a list mapped per segment). */
export function sgDmaIsSwiotlb(sgt: SgTable): boolean {
  return ((sgt.dmaFlags[0] ?? 0) & SG_DMA_SWIOTLB) !== 0;
}

/** `sg_dma_mark_swiotlb(sg)`. */
export function sgDmaMarkSwiotlb(sgt: SgTable): void {
  sgt.dmaFlags[0] = (sgt.dmaFlags[0] ?? 0) | SG_DMA_SWIOTLB;
}

/** `sg_dma_unmark_swiotlb(sg)`. */
export function sgDmaUnmarkSwiotlb(sgt: SgTable): void {
  sgt.dmaFlags[0] = (sgt.dmaFlags[0] ?? 0) & ~SG_DMA_SWIOTLB;
}

/**
 * `sg_alloc_table(table, nents, gfp)`: a table of `nents` empty CPU entries (set them with
 * `sgSetPhys`). Null for a bad count (the kernel's -EINVAL).
 */
export function sgAllocTable(nents: number): SgTable | null {
  if (!Number.isSafeInteger(nents) || nents <= 0 || nents > 2 ** 24) return null;
  const sgt = new SgTable(nents);
  sgt.origNents = nents;
  sgt.nents = nents;
  return sgt;
}

/** `sg_set_page(sg, page, len, offset)` / `sg_set_phys` on entry `i`. False on bad input. */
export function sgSetPhys(sgt: SgTable, i: number, phys: number, length: number): boolean {
  if (!Number.isInteger(i) || i < 0 || i >= sgt.capacity) return false;
  if (!Number.isSafeInteger(phys) || phys < 0 || !Number.isSafeInteger(length) || length < 0 || length > 0xffff_ffff) return false;
  sgt.phys[i] = phys;
  sgt.length[i] = length;
  if (i >= sgt.origNents) {
    sgt.origNents = i + 1;
    sgt.nents = sgt.origNents;
  }
  return true;
}

/**
 * `sg_alloc_table_from_pages_segment(sgt, pages, n_pages, offset, size, max_segment, gfp)`:
 * physically contiguous pages merge into one entry of at most `maxSegment` bytes (aligned down to
 * PAGE_SIZE; default UINT_MAX as `sg_alloc_table_from_pages`). The first entry starts `offset`
 * bytes into its page. Null on bad input (the kernel's -EINVAL).
 */
export function sgAllocTableFromPages(pagesPhys: ArrayLike<number>, nPages: number, offset: number, size: number, maxSegmentIn = 0xffff_ffff): SgTable | null {
  const PAGE = 4096;
  if (!Number.isSafeInteger(nPages) || nPages <= 0 || nPages > pagesPhys.length) return null;
  if (!Number.isSafeInteger(offset) || offset < 0 || offset >= PAGE) return null;
  if (!Number.isSafeInteger(size) || size <= 0 || offset + size > nPages * PAGE) return null;
  if (!Number.isSafeInteger(maxSegmentIn) || maxSegmentIn < PAGE) return null; // kernel: WARN_ON(max_segment < PAGE_SIZE)
  const maxSegment = Math.min(Math.floor(maxSegmentIn / PAGE) * PAGE, 0xffff_f000);
  for (let i = 0; i < nPages; i++) {
    const p = pagesPhys[i];
    if (p === undefined || !Number.isSafeInteger(p) || p < 0 || p % PAGE !== 0) return null;
  }
  const contiguous = (j: number): boolean => (pagesPhys[j] ?? -1) === (pagesPhys[j - 1] ?? -1) + PAGE;
  // Count the chunks first (the kernel sizes the table from this).
  let chunks = 1;
  let segLen = 0;
  for (let i = 1; i < nPages; i++) {
    segLen += PAGE;
    if (segLen >= maxSegment || !contiguous(i)) {
      chunks++;
      segLen = 0;
    }
  }
  const sgt = new SgTable(chunks);
  let cur = 0;
  let left = size;
  let off = offset;
  for (let c = 0; c < chunks && left > 0; c++) {
    let j = cur + 1;
    segLen = 0;
    for (; j < nPages; j++) {
      segLen += PAGE;
      if (segLen >= maxSegment || !contiguous(j)) break;
    }
    const chunkSize = (j - cur) * PAGE - off;
    sgt.push((pagesPhys[cur] ?? 0) + off, Math.min(left, chunkSize));
    left -= chunkSize;
    off = 0;
    cur = j;
  }
  return sgt;
}

/** `for_each_sgtable_sg`: every CPU entry (phys, length, index). */
export function forEachSg(sgt: SgTable, fn: (phys: number, length: number, i: number) => void): void {
  for (let i = 0; i < sgt.origNents; i++) fn(sgt.phys[i] ?? 0, sgt.length[i] ?? 0, i);
}

/** `for_each_sgtable_dma_sg`: every mapped DMA segment (dma address, length, index). */
export function forEachSgDmaSegment(sgt: SgTable, fn: (dmaAddr: number, length: number, i: number) => void): void {
  for (let i = 0; i < sgt.nents; i++) fn(sgt.dmaAddress[i] ?? 0, sgt.dmaLength[i] ?? 0, i);
}

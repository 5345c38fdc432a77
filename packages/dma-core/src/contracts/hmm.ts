// kernel: include/linux/hmm.h, include/linux/hmm-dma.h, mm/hmm.c (hmm_range_fault, hmm_dma_map_*)
// The HMM port a mirroring driver consumes (RDMA ODP, GPU SVM). @dmakit/hmm implements it; a
// consumer takes an `HmmPort` as a constructor argument and apps/demo wires the two together.
import type { Device } from '../device/device.js';
import type { PciP2pdmaMapState } from '../bus/p2pdma.js';
import { DmaIovaState } from '../dma/iovaState.js';
import type { MmuIntervalNotifier } from '../mm/mmuNotifier.js';
import { PAGE_SIZE } from '../units/page.js';

/*
 * ---- The PFN word -------------------------------------------------------------------------------
 *
 * The kernel's `unsigned long hmm_pfns[]` holds one 64-bit word per PAGE_SIZE page:
 *
 *   bit 63 VALID (out) / REQ_FAULT (in)      bit 60 DMA_MAPPED (sticky)
 *   bit 62 WRITE (out) / REQ_WRITE (in)      bit 59 P2PDMA     (sticky)
 *   bit 61 ERROR (out)                       bit 58 P2PDMA_BUS (sticky)
 *   bit 57 reserved (2026-dev: DEVICE_PRIVATE / MIGRATE)
 *   bits 53..57 order (HMM_PFN_ORDER_SHIFT = 53, 5 bits)     bits 0..52 pfn
 *
 * Model: a JS number cannot hold 64 bits and bigint is too slow for the fault and map paths, so a
 * PFN array is an `HmmPfns` = `Uint32Array` of 2 words per entry, little-endian like the kernel's
 * u64 in memory: `pfns[2*i]` = bits 0..31 (low pfn bits), `pfns[2*i+1]` = bits 32..63 (the high
 * word: every flag plus pfn bits 32..52). A `BigUint64Array` over the same buffer
 * (`hmmPfnsAsU64`) shows the exact kernel words. All HMM_PFN_* constants below are HIGH-WORD bit
 * masks (kernel bit b = high-word bit b - 32); `HMM_PFN_*_U64` give the kernel's 64-bit values.
 * `range.defaultFlags` and `range.pfnFlagsMask` are high-word masks too.
 */
/**
 * HMM PFN array: two 32-bit words per entry (low word: pfn bits 0..31; high word: the flags and pfn
 * bits 32..52). Models the kernel's `unsigned long *hmm_pfns` of struct hmm_range (include/linux/hmm.h).
 */
export type HmmPfns = Uint32Array;

/** Output: the pfn field is valid and the page is at least readable. (kernel bit 63) */
export const HMM_PFN_VALID = 0x8000_0000;
/** Output: writable (requires VALID). (kernel bit 62) */
export const HMM_PFN_WRITE = 0x4000_0000;
/** Output: inaccessible (no VMA, VM_IO/VM_PFNMAP, special pte, poisoned). (kernel bit 61) */
export const HMM_PFN_ERROR = 0x2000_0000;
/** Sticky: the entry is DMA-mapped (set by hmm_dma_map_pfn). (kernel bit 60) */
export const HMM_PFN_DMA_MAPPED = 0x1000_0000;
/** Sticky: mapped peer-to-peer through the host bridge (DMA_ATTR_MMIO). (kernel bit 59) */
export const HMM_PFN_P2PDMA = 0x0800_0000;
/** Sticky: mapped by PCI bus address, nothing to unmap. (kernel bit 58) */
export const HMM_PFN_P2PDMA_BUS = 0x0400_0000;
/** Reserved (kernel bit 57): the 2026 development trees use it for DEVICE_PRIVATE / MIGRATE. */
export const HMM_PFN_RESERVED_57 = 0x0200_0000;
/** `HMM_PFN_ORDER_SHIFT` = 53 in the kernel word = 21 in the high word. */
export const HMM_PFN_ORDER_SHIFT = 53;
/** HMM_PFN_ORDER_SHIFT in the high word (21). */
export const HMM_PFN_ORDER_SHIFT_HI = HMM_PFN_ORDER_SHIFT - 32;
/** The 5-bit order field, high-word mask. */
export const HMM_PFN_ORDER_MASK = 0x1f << HMM_PFN_ORDER_SHIFT_HI;

/** Input: the output must end VALID or the call fails (alias of VALID). */
export const HMM_PFN_REQ_FAULT = HMM_PFN_VALID;
/** Input: the output must be WRITE; needs REQ_FAULT (alias of WRITE). */
export const HMM_PFN_REQ_WRITE = HMM_PFN_WRITE;

/** `HMM_PFN_FLAGS`: every bit from ORDER_SHIFT up (high-word mask 0xffe00000). */
export const HMM_PFN_FLAGS = 0xffe0_0000;
/** `HMM_PFN_INOUT_FLAGS`: the three sticky bits every output rewrite preserves. */
export const HMM_PFN_INOUT_FLAGS = HMM_PFN_DMA_MAPPED | HMM_PFN_P2PDMA | HMM_PFN_P2PDMA_BUS;
/** High-word bits that hold pfn bits 32..52. */
export const HMM_PFN_PFN_HI_MASK = 0x001f_ffff;

/** The kernel's 64-bit values (display, tests, exports; never on hot paths). */
export const HMM_PFN_VALID_U64 = 1n << 63n;
/** Kernel 64-bit value of HMM_PFN_WRITE (include/linux/hmm.h). */
export const HMM_PFN_WRITE_U64 = 1n << 62n;
/** Kernel 64-bit value of HMM_PFN_ERROR (include/linux/hmm.h). */
export const HMM_PFN_ERROR_U64 = 1n << 61n;
/** Kernel 64-bit value of HMM_PFN_DMA_MAPPED (include/linux/hmm.h). */
export const HMM_PFN_DMA_MAPPED_U64 = 1n << 60n;
/** Kernel 64-bit value of HMM_PFN_P2PDMA (include/linux/hmm.h). */
export const HMM_PFN_P2PDMA_U64 = 1n << 59n;
/** Kernel 64-bit value of HMM_PFN_P2PDMA_BUS (include/linux/hmm.h). */
export const HMM_PFN_P2PDMA_BUS_U64 = 1n << 58n;
/** Kernel 64-bit value of HMM_PFN_FLAGS (include/linux/hmm.h). */
export const HMM_PFN_FLAGS_U64 = ~((1n << 53n) - 1n) & ((1n << 64n) - 1n);

/** `HMM_RANGE_DEFAULT_TIMEOUT` (ms): how long a driver keeps retrying -EBUSY. */
export const HMM_RANGE_DEFAULT_TIMEOUT = 1000;

/** A zeroed PFN array of `nrEntries` entries (what a driver kvcalloc()s for hmm_range.hmm_pfns). */
export function hmmPfnsAlloc(nrEntries: number): HmmPfns {
  return new Uint32Array(nrEntries * 2);
}

/** Number of entries in a PFN array. */
export function hmmPfnsLength(pfns: HmmPfns): number {
  return pfns.length >>> 1;
}

/** A view of entries [first, first + n) sharing storage (the kernel's `&map->pfn_list[first]`). */
export function hmmPfnsSlice(pfns: HmmPfns, first: number, n: number): HmmPfns {
  return pfns.subarray(first * 2, (first + n) * 2);
}

/** The kernel's u64 words over the same storage (for display and exports). */
export function hmmPfnsAsU64(pfns: HmmPfns): BigUint64Array {
  return new BigUint64Array(pfns.buffer, pfns.byteOffset, pfns.length >>> 1);
}

/** High word (flags | pfn bits 32..52) of entry i. */
export function hmmPfnHi(pfns: HmmPfns, i: number): number {
  return pfns[2 * i + 1] ?? 0;
}

/** The kernel word of entry i as a bigint (display/tests). */
export function hmmPfnWord(pfns: HmmPfns, i: number): bigint {
  return (BigInt(pfns[2 * i + 1] ?? 0) << 32n) | BigInt(pfns[2 * i] ?? 0);
}

/** The flag bits of entry i (high-word mask, HMM_PFN_FLAGS part only), as an unsigned number. */
export function hmmPfnFlags(pfns: HmmPfns, i: number): number {
  return ((pfns[2 * i + 1] ?? 0) & HMM_PFN_FLAGS) >>> 0;
}

/** The pfn field of entry i (`v & ~HMM_PFN_FLAGS`). */
export function hmmPfnToPfn(pfns: HmmPfns, i: number): number {
  return ((pfns[2 * i + 1] ?? 0) & HMM_PFN_PFN_HI_MASK) * 0x1_0000_0000 + (pfns[2 * i] ?? 0);
}

/** `hmm_pfn_to_phys`: physical address of the page of entry i (call on VALID entries only). */
export function hmmPfnToPhys(pfns: HmmPfns, i: number): number {
  return hmmPfnToPfn(pfns, i) * PAGE_SIZE;
}

/** `hmm_pfn_to_map_order`: order of the CPU mapping (0 = 4 KiB, 9 = 2 MiB PMD, 18 = 1 GiB PUD). */
export function hmmPfnToMapOrder(pfns: HmmPfns, i: number): number {
  return ((pfns[2 * i + 1] ?? 0) >>> HMM_PFN_ORDER_SHIFT_HI) & 0x1f;
}

/**
 * Write entry i as an output: `(old & HMM_PFN_INOUT_FLAGS) | pfn | flags` (flags: high-word mask
 * of VALID/WRITE/ERROR/order). The three sticky bits survive, everything else is replaced.
 */
export function hmmPfnSet(pfns: HmmPfns, i: number, pfn: number, flags: number): void {
  const hi = 2 * i + 1;
  const lo = pfn % 0x1_0000_0000;
  pfns[2 * i] = lo;
  pfns[hi] = ((pfns[hi] ?? 0) & HMM_PFN_INOUT_FLAGS) | (flags & HMM_PFN_FLAGS & ~HMM_PFN_INOUT_FLAGS) | (((pfn - lo) / 0x1_0000_0000) & HMM_PFN_PFN_HI_MASK);
}

/** Set flag bits (high-word mask) on entry i. */
export function hmmPfnSetFlags(pfns: HmmPfns, i: number, flags: number): void {
  pfns[2 * i + 1] = (pfns[2 * i + 1] ?? 0) | flags;
}

/** Clear flag bits (high-word mask) on entry i; `HMM_PFN_FLAGS` leaves a bare pfn. */
export function hmmPfnClearFlags(pfns: HmmPfns, i: number, flags: number): void {
  pfns[2 * i + 1] = (pfns[2 * i + 1] ?? 0) & ~flags;
}

// ---- hmm_range ------------------------------------------------------------------------------------

/**
 * `struct hmm_range`. `hmmPfns` holds one entry per page of [start, end): input request flags
 * (with pfnFlagsMask) before the call, outputs after it. A consumer that keeps its state in a
 * larger array passes `hmmPfnsSlice(map.pfnList, first, n)`.
 */
export interface HmmRange {
  notifier: MmuIntervalNotifier;
  /** From `mmuIntervalReadBegin(notifier)` just before the call. */
  notifierSeq: number;
  /** Page aligned, end exclusive. */
  start: number;
  end: number;
  hmmPfns: HmmPfns;
  /** Range-wide request (high-word mask: HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE). */
  defaultFlags: number;
  /** Which per-entry input bits count: request = defaultFlags | (hmmPfns[i] & pfnFlagsMask). */
  pfnFlagsMask: number;
  /** Device-private pages whose pgmap owner is this cookie are reported, not faulted back. */
  devPrivateOwner?: unknown;
}

// ---- hmm_dma_map ----------------------------------------------------------------------------------

/**
 * `struct hmm_dma_map`: the PFN list of a mirrored range plus how its entries are DMA-mapped:
 * one IOVA window (`state`, slot i at `state.addr + i * dmaEntrySize`), or, when no IOVA could be
 * allocated and unmap is needed, `dmaList` with one DMA address per entry. Filled by
 * `hmmDmaMapAlloc`; a fresh one is empty.
 */
export class HmmDmaMap {
  state = new DmaIovaState();
  /** One PFN word per PAGE_SIZE page of the range (regardless of dmaEntrySize). */
  pfnList: HmmPfns = new Uint32Array(0);
  /** Only when the IOVA window failed and `dmaNeedUnmap(dev)`; otherwise null. */
  dmaList: Float64Array | null = null;
  /** Bytes mapped per DMA entry: PAGE_SIZE, or the huge page size for hugetlb ODP. */
  dmaEntrySize = 0;
  /** Number of PFN entries (pages). */
  nrEntries = 0;
}

/**
 * Bytes of mapping metadata a map holds (pfn words + the dma list), from the real array sizes:
 * 8 per page in IOVA mode, 16 with a dma list.
 */
export function hmmDmaMapMetadataBytes(map: HmmDmaMap): number {
  return map.pfnList.byteLength + (map.dmaList?.byteLength ?? 0);
}

// ---- the port -------------------------------------------------------------------------------------

/**
 * What a mirroring driver (RDMA ODP, a GPU driver) needs of HMM. Return conventions are the
 * kernel's: negative errno, DMA_MAPPING_ERROR, booleans.
 */
export interface HmmPort {
  /**
   * `hmm_range_fault(range)`: snapshot (and fault as requested) the CPU page table for
   * [range.start, range.end) into range.hmmPfns. 0, -EBUSY (an invalidation overlapped: redo
   * mmuIntervalReadBegin and call again), -EFAULT (a requested page cannot be made valid), -EPERM
   * (write requested on a read-only VMA), -ENOMEM, -EINVAL (bad range).
   */
  hmmRangeFault(range: HmmRange): number;
  /**
   * `hmm_dma_map_alloc(dev, map, nr_entries, dma_entry_size)`: 0, -EOPNOTSUPP (the device needs
   * DMA syncs or could bounce through swiotlb: HMM shares memory with the CPU live), -EINVAL,
   * -ENOMEM. Reserves one IOVA window for the whole range when the device has an IOMMU.
   */
  hmmDmaMapAlloc(dev: Device, map: HmmDmaMap, nrEntries: number, dmaEntrySize: number): number;
  /** `hmm_dma_map_free(dev, map)`: frees the IOVA window (everything must be unmapped) and the arrays. */
  hmmDmaMapFree(dev: Device, map: HmmDmaMap): void;
  /**
   * `hmm_dma_map_pfn(dev, map, idx, p2pdma_state)`: DMA-map the VALID entry idx; its DMA address
   * (the fixed slot `state.addr + idx * dmaEntrySize` in IOVA mode; the same address again if the
   * entry is already mapped; a PCI bus address for BUS_ADDR peers) or DMA_MAPPING_ERROR. Sets
   * HMM_PFN_DMA_MAPPED (and P2PDMA / P2PDMA_BUS). Pass one state per batch of calls.
   */
  hmmDmaMapPfn(dev: Device, map: HmmDmaMap, idx: number, p2pdmaState: PciP2pdmaMapState | null): number;
  /** `hmm_dma_unmap_pfn(dev, map, idx)`: false if the entry was not VALID+DMA_MAPPED; clears the sticky bits. */
  hmmDmaUnmapPfn(dev: Device, map: HmmDmaMap, idx: number): boolean;
}

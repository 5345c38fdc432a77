// kernel: mm/hmm.c (hmm_range_fault, hmm_vma_walk_*, hmm_pte_need_fault, hmm_vma_fault)
import {
  Errno,
  HMM_PFN_ERROR as HMM_PFN_ERROR_,
  HMM_PFN_INOUT_FLAGS as HMM_PFN_INOUT_FLAGS_,
  HMM_PFN_ORDER_SHIFT_HI as HMM_PFN_ORDER_SHIFT_HI_,
  HMM_PFN_PFN_HI_MASK as HMM_PFN_PFN_HI_MASK_,
  HMM_PFN_REQ_FAULT as HMM_PFN_REQ_FAULT_,
  HMM_PFN_REQ_WRITE as HMM_PFN_REQ_WRITE_,
  HMM_PFN_VALID as HMM_PFN_VALID_,
  HMM_PFN_WRITE as HMM_PFN_WRITE_,
  HPAGE_PMD_ORDER as HPAGE_PMD_ORDER_,
  PAGE_SIZE as PAGE_SIZE_,
  PROT_READ as PROT_READ_,
  PROT_WRITE as PROT_WRITE_,
  PTE_DEVICE_PRIVATE as PTE_DEVICE_PRIVATE_,
  PTE_HUGE as PTE_HUGE_,
  PTE_PRESENT as PTE_PRESENT_,
  PTE_WRITE as PTE_WRITE_,
  VM_IO as VM_IO_,
  VM_PFNMAP as VM_PFNMAP_,
  mmuIntervalCheckRetry as mmuIntervalCheckRetry_,
  mmuIntervalReadBegin,
} from '@dmakit/dma-core';
import type { HmmPfns, HmmRange, MmStruct, VmArea } from '@dmakit/dma-core';
import { pagePgmap } from './devmem.js';

// Module-local copies of the imported constants: toolchains that lower ESM to getters (tsx,
// esbuild interop) would otherwise make every use on the hot path a property get.
const HMM_PFN_ERROR = HMM_PFN_ERROR_;
const HMM_PFN_INOUT_FLAGS = HMM_PFN_INOUT_FLAGS_;
const HMM_PFN_ORDER_SHIFT_HI = HMM_PFN_ORDER_SHIFT_HI_;
const HMM_PFN_PFN_HI_MASK = HMM_PFN_PFN_HI_MASK_;
const HMM_PFN_REQ_FAULT = HMM_PFN_REQ_FAULT_;
const HMM_PFN_REQ_WRITE = HMM_PFN_REQ_WRITE_;
const HMM_PFN_VALID = HMM_PFN_VALID_;
const HMM_PFN_WRITE = HMM_PFN_WRITE_;
const HPAGE_PMD_ORDER = HPAGE_PMD_ORDER_;
const PAGE_SIZE = PAGE_SIZE_;
const PROT_READ = PROT_READ_;
const PROT_WRITE = PROT_WRITE_;
const PTE_DEVICE_PRIVATE = PTE_DEVICE_PRIVATE_;
const PTE_HUGE = PTE_HUGE_;
const PTE_PRESENT = PTE_PRESENT_;
const PTE_WRITE = PTE_WRITE_;
const VM_IO = VM_IO_;
const VM_PFNMAP = VM_PFNMAP_;
const mmuIntervalCheckRetry = mmuIntervalCheckRetry_;

const NEED_FAULT = 1;
const NEED_WRITE_FAULT = 2;
const TWO32 = 0x1_0000_0000;
const PMD_PAGES = 512;

/** Counters (what the walk did), for tests, demos and benchmarks. */
export interface HmmStats {
  /** hmm_range_fault calls. */
  calls: number;
  /** Walk passes (1 + restarts after faults). */
  walks: number;
  /** Pages handed to handle_mm_fault. */
  faultedPages: number;
  /** Calls that returned -EBUSY because the notifier sequence moved. */
  busy: number;
}

export const hmmStats: HmmStats = { calls: 0, walks: 0, faultedPages: 0, busy: 0 };

/** Reset the counters (tests, benchmarks). */
export function hmmStatsReset(): void {
  hmmStats.calls = 0;
  hmmStats.walks = 0;
  hmmStats.faultedPages = 0;
  hmmStats.busy = 0;
}

/** Per-call walk state (`struct hmm_vma_walk`), reused: the model is single threaded. */
let wLast = 0;
let wFaultPossible = false;

/** `hmm_pte_need_fault`: request = defaultFlags | (input & pfnFlagsMask). */
function pteNeedFault(range: HmmRange, reqHi: number, cpuFlags: number): number {
  if (!wFaultPossible) return 0;
  const req = (reqHi & range.pfnFlagsMask) | range.defaultFlags;
  if ((req & HMM_PFN_REQ_FAULT) === 0) return 0;
  if ((req & HMM_PFN_REQ_WRITE) !== 0 && (cpuFlags & HMM_PFN_WRITE) === 0) return NEED_FAULT | NEED_WRITE_FAULT;
  if ((cpuFlags & HMM_PFN_VALID) === 0) return NEED_FAULT;
  return 0;
}

/** `hmm_range_need_fault`: OR over entries [i0, i1). */
function rangeNeedFault(range: HmmRange, pfns: HmmPfns, i0: number, i1: number, cpuFlags: number): number {
  if (!wFaultPossible) return 0;
  // Fast path: every page gets the same request when the mask selects nothing.
  if (range.pfnFlagsMask === 0) return pteNeedFault(range, 0, cpuFlags);
  let r = 0;
  for (let i = i0; i < i1; i++) {
    r |= pteNeedFault(range, pfns[2 * i + 1] ?? 0, cpuFlags);
    if (r === (NEED_FAULT | NEED_WRITE_FAULT)) break;
  }
  return r;
}

/** Write an output: keep the sticky bits, replace the rest (`(old & INOUT) | pfn | flags`). */
function setOut(pfns: HmmPfns, i: number, pfn: number, flags: number): void {
  const hi = 2 * i + 1;
  if (pfn >= 0 && pfn < TWO32) {
    // Every pfn below 16 TiB: the low word is the pfn (no float modulo per page).
    pfns[2 * i] = pfn;
    pfns[hi] = ((pfns[hi] ?? 0) & HMM_PFN_INOUT_FLAGS) | flags;
    return;
  }
  const lo = pfn % TWO32;
  pfns[2 * i] = lo;
  pfns[hi] = ((pfns[hi] ?? 0) & HMM_PFN_INOUT_FLAGS) | flags | (((pfn - lo) / TWO32) & HMM_PFN_PFN_HI_MASK);
}

/** `hmm_pfns_fill`: entries [i0, i1) get `flags` with pfn 0 (sticky bits kept). */
function fill(pfns: HmmPfns, i0: number, i1: number, flags: number): void {
  for (let i = i0; i < i1; i++) {
    pfns[2 * i] = 0;
    pfns[2 * i + 1] = ((pfns[2 * i + 1] ?? 0) & HMM_PFN_INOUT_FLAGS) | flags;
  }
}

/**
 * `hmm_vma_fault`: fault every page of [addr, end) (the rest of the PMD, as the kernel does),
 * then -EBUSY so the walk restarts from `addr`. -EPERM for a write fault on a VMA without
 * VM_WRITE; -EFAULT when handle_mm_fault fails.
 */
function vmaFault(mm: MmStruct, vma: VmArea, addr: number, end: number, required: number): number {
  wLast = addr;
  const write = (required & NEED_WRITE_FAULT) !== 0;
  if (write && (vma.prot & PROT_WRITE) === 0) return -Errno.EPERM;
  for (let a = addr; a < end; a += PAGE_SIZE) {
    hmmStats.faultedPages++;
    if (mm.handleMmFault(a, write) < 0) return -Errno.EFAULT;
  }
  return -Errno.EBUSY;
}

/** First VMA whose end is above `addr` (index into mm.vmas). */
function vmaIndexAtOrAfter(vmas: readonly VmArea[], addr: number): number {
  let lo = 0;
  let hi = vmas.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((vmas[mid]?.end ?? 0) <= addr) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** One pass of walk_page_range from `wLast` to range.end: 0, -EBUSY (restart at wLast), or an error. */
function walk(range: HmmRange, mm: MmStruct): number {
  const pfns = range.hmmPfns;
  const rstart = range.start;
  const end = range.end;
  const vmas = mm.vmas;
  let addr = wLast;
  let vi = vmaIndexAtOrAfter(vmas, addr);
  while (addr < end) {
    const vma = vmas[vi];
    const i0 = (addr - rstart) / PAGE_SIZE;
    if (vma === undefined || vma.start >= end || vma.start > addr) {
      // hmm_vma_walk_hole without a VMA.
      const holeEnd = vma === undefined ? end : Math.min(end, vma.start);
      const i1 = (holeEnd - rstart) / PAGE_SIZE;
      if (rangeNeedFault(range, pfns, i0, i1, 0) !== 0) return -Errno.EFAULT;
      fill(pfns, i0, i1, HMM_PFN_ERROR);
      addr = holeEnd;
      continue;
    }
    const segEnd = Math.min(end, vma.end);
    const i1 = (segEnd - rstart) / PAGE_SIZE;
    // hmm_vma_walk_test: no struct pages behind VM_IO/VM_PFNMAP, or no VM_READ.
    if ((vma.vmFlags & (VM_IO | VM_PFNMAP)) !== 0 || (vma.prot & PROT_READ) === 0) {
      if (rangeNeedFault(range, pfns, i0, i1, 0) !== 0) return -Errno.EFAULT;
      fill(pfns, i0, i1, HMM_PFN_ERROR);
    } else {
      const r = vma.order > 0 ? walkHugetlb(range, mm, vma, addr, segEnd) : walkPtes(range, mm, vma, addr, segEnd);
      if (r !== 0) return r;
    }
    addr = segEnd;
    vi++;
  }
  return 0;
}

/** hmm_vma_walk_pmd + hmm_vma_handle_pte over [addr, segEnd) of one VMA. */
function walkPtes(range: HmmRange, mm: MmStruct, vma: VmArea, start: number, segEnd: number): number {
  const pfns = range.hmmPfns;
  const rstart = range.start;
  const owner = range.devPrivateOwner;
  for (let addr = start; addr < segEnd; addr += PAGE_SIZE) {
    const i = (addr - rstart) / PAGE_SIZE;
    const reqHi = pfns[2 * i + 1] ?? 0;
    const f = mm.pteFlags(addr);
    if ((f & PTE_HUGE) !== 0) {
      // A THP PMD (present, huge zero, or device-private): the whole rest of the PMD at once.
      const e = pmdEnd(addr, segEnd);
      const r = walkPmd(range, mm, vma, addr, e, f);
      if (r !== 0) return r;
      addr = e - PAGE_SIZE;
      continue;
    }
    let cpu = 0;
    let pfn = 0;
    if (f === 0) {
      // pte_none
      const rf = pteNeedFault(range, reqHi, 0);
      if (rf !== 0) return vmaFault(mm, vma, addr, pmdEnd(addr, segEnd), rf);
    } else if ((f & PTE_PRESENT) === 0) {
      if ((f & PTE_DEVICE_PRIVATE) !== 0) {
        pfn = mm.walkPte(addr);
        const pgmap = owner === undefined ? undefined : pagePgmap(mm.memory, pfn * PAGE_SIZE);
        if (pgmap !== undefined && pgmap.owner === owner) {
          // Never fault in device-private pages of the caller: report them.
          setOut(pfns, i, pfn, HMM_PFN_VALID | ((f & PTE_WRITE) !== 0 ? HMM_PFN_WRITE : 0));
          continue;
        }
        pfn = 0;
        const rf = pteNeedFault(range, reqHi, 0);
        // Another owner's device-private page: handle_mm_fault migrates it back (migrate_to_ram).
        if (rf !== 0) return vmaFault(mm, vma, addr, pmdEnd(addr, segEnd), rf);
      } else if (pteNeedFault(range, reqHi, 0) !== 0) {
        return -Errno.EFAULT; // a non-present entry the model does not know
      }
    } else {
      cpu = HMM_PFN_VALID | ((f & PTE_WRITE) !== 0 ? HMM_PFN_WRITE : 0);
      const rf = pteNeedFault(range, reqHi, cpu);
      if (rf !== 0) return vmaFault(mm, vma, addr, pmdEnd(addr, segEnd), rf);
      // The zero page is treated like a normal page.
      pfn = mm.walkPte(addr);
    }
    setOut(pfns, i, pfn, cpu);
  }
  return 0;
}

/**
 * `hmm_vma_handle_pmd` for a present THP PMD (the huge zero folio included): every entry of
 * [addr, end) gets the PMD's pfn + offset, VALID, WRITE when the PMD is writable and the PMD order
 * (HMM_PFN_ORDER); a needed fault faults the range. A device-private PMD
 * (`hmm_vma_handle_absent_pmd`, Linux 6.19) is reported the same way to its owner and faulted
 * back (migrate_to_ram) for anyone else who asks for a fault.
 */
function walkPmd(range: HmmRange, mm: MmStruct, vma: VmArea, addr: number, end: number, f: number): number {
  const pfns = range.hmmPfns;
  const i0 = (addr - range.start) / PAGE_SIZE;
  const i1 = (end - range.start) / PAGE_SIZE;
  const orderFlags = (HPAGE_PMD_ORDER & 0x1f) << HMM_PFN_ORDER_SHIFT_HI;
  let pfn = mm.walkPte(addr);
  let cpu = 0;
  if ((f & PTE_PRESENT) !== 0) {
    cpu = HMM_PFN_VALID | ((f & PTE_WRITE) !== 0 ? HMM_PFN_WRITE : 0) | orderFlags;
  } else if ((f & PTE_DEVICE_PRIVATE) !== 0) {
    const owner = range.devPrivateOwner;
    const pgmap = owner === undefined ? undefined : pagePgmap(mm.memory, pfn * PAGE_SIZE);
    if (pgmap !== undefined && pgmap.owner === owner) cpu = HMM_PFN_VALID | ((f & PTE_WRITE) !== 0 ? HMM_PFN_WRITE : 0) | orderFlags;
  }
  const rf = rangeNeedFault(range, pfns, i0, i1, cpu);
  if (rf !== 0) return vmaFault(mm, vma, addr, end, rf);
  if (cpu === 0) {
    fill(pfns, i0, i1, 0);
    return 0;
  }
  for (let i = i0; i < i1; i++, pfn++) setOut(pfns, i, pfn, cpu);
  return 0;
}

function pmdEnd(addr: number, segEnd: number): number {
  const next = (Math.floor(addr / (PMD_PAGES * PAGE_SIZE)) + 1) * PMD_PAGES * PAGE_SIZE;
  return Math.min(next, segEnd);
}

/** hmm_vma_walk_hugetlb_entry: one request per huge page (its first entry), order in the output. */
function walkHugetlb(range: HmmRange, mm: MmStruct, vma: VmArea, start: number, segEnd: number): number {
  const pfns = range.hmmPfns;
  const rstart = range.start;
  const unit = PAGE_SIZE * 2 ** vma.order;
  const orderFlags = (vma.order & 0x1f) << HMM_PFN_ORDER_SHIFT_HI;
  for (let addr = start; addr < segEnd; ) {
    const uEnd = Math.min(segEnd, (Math.floor(addr / unit) + 1) * unit);
    const i0 = (addr - rstart) / PAGE_SIZE;
    const i1 = (uEnd - rstart) / PAGE_SIZE;
    const f = mm.pteFlags(addr);
    if ((f & PTE_PRESENT) === 0) {
      // pte_hole
      const rf = rangeNeedFault(range, pfns, i0, i1, 0);
      if (rf !== 0) return vmaFault(mm, vma, addr, uEnd, rf);
      fill(pfns, i0, i1, 0);
    } else {
      const cpu = HMM_PFN_VALID | ((f & PTE_WRITE) !== 0 ? HMM_PFN_WRITE : 0) | ((f & PTE_HUGE) !== 0 ? orderFlags : HPAGE_PMD_ORDER << HMM_PFN_ORDER_SHIFT_HI);
      const rf = pteNeedFault(range, pfns[2 * i0 + 1] ?? 0, cpu);
      if (rf !== 0) return vmaFault(mm, vma, addr, uEnd, rf);
      let pfn = mm.walkPte(addr);
      for (let i = i0; i < i1; i++, pfn++) setOut(pfns, i, pfn, cpu);
    }
    addr = uEnd;
  }
  return 0;
}

/**
 * `hmm_range_fault(range)`. The caller holds the mmap read lock (not modelled: the model is single
 * threaded) and took `range.notifierSeq` from mmuIntervalReadBegin just before. Entries below the
 * restart point hold outputs, the rest still hold their inputs (the kernel's invariant).
 *
 * Returns 0, -EBUSY (invalidated: read_begin again and retry), -EFAULT, -EPERM, -EINVAL.
 */
export function hmmRangeFault(range: HmmRange): number {
  hmmStats.calls++;
  const sub = range.notifier;
  const mm = sub.mm;
  const { start, end } = range;
  if (mm === undefined) return -Errno.EINVAL;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end <= start || start % PAGE_SIZE !== 0 || end % PAGE_SIZE !== 0) {
    return -Errno.EINVAL;
  }
  if (!(range.hmmPfns instanceof Uint32Array) || range.hmmPfns.length < ((end - start) / PAGE_SIZE) * 2) return -Errno.EINVAL;
  if (!Number.isInteger(range.defaultFlags) || !Number.isInteger(range.pfnFlagsMask)) return -Errno.EINVAL;
  // Reentrancy (a fault that runs another mirror's code): save the outer walk's state.
  const savedLast = wLast;
  const savedFaultPossible = wFaultPossible;
  wLast = start;
  // Fast path of hmm_range_need_fault: nothing can request a fault.
  wFaultPossible = ((range.defaultFlags | range.pfnFlagsMask) & HMM_PFN_REQ_FAULT) !== 0;
  // Model guard (the kernel loops as long as faults succeed): each restart makes progress.
  let budget = ((end - start) / PAGE_SIZE) * 4 + 16;
  let ret: number;
  do {
    if (mmuIntervalCheckRetry(sub, range.notifierSeq)) {
      hmmStats.busy++;
      ret = -Errno.EBUSY;
      break;
    }
    hmmStats.walks++;
    ret = walk(range, mm);
    if (--budget <= 0 && ret === -Errno.EBUSY) {
      ret = -Errno.EFAULT;
      break;
    }
  } while (ret === -Errno.EBUSY);
  wLast = savedLast;
  wFaultPossible = savedFaultPossible;
  return ret;
}

/** Simulated time one -EBUSY retry costs (rescheduling before mmu_interval_read_begin again). */
export const HMM_RETRY_COST_NS = 1_000;

/**
 * `hmm_range_fault_unlocked_timeout(range, timeout)` (2026 development trees): takes the mmap
 * lock itself (implicit here), calls mmu_interval_read_begin before every attempt, and retries
 * -EBUSY until `timeoutMs` of simulated time pass (0 = forever, bounded by the model's guard).
 * Each retry charges HMM_RETRY_COST_NS to the simulation clock. The caller still checks
 * mmu_interval_read_retry under its own lock afterwards. Returns what hmmRangeFault returns.
 */
export function hmmRangeFaultUnlockedTimeout(range: HmmRange, timeoutMs: number): number {
  const mm = range.notifier.mm;
  if (mm === undefined || !Number.isFinite(timeoutMs) || timeoutMs < 0) return -Errno.EINVAL;
  const clock = mm.process.host.clock;
  const deadline = clock.now() + timeoutMs * 1e6;
  for (let attempt = 0; attempt < 1_000_000; attempt++) {
    range.notifierSeq = mmuIntervalReadBegin(range.notifier);
    const r = hmmRangeFault(range);
    if (r !== -Errno.EBUSY) return r;
    clock.charge(HMM_RETRY_COST_NS);
    if (timeoutMs !== 0 && clock.now() >= deadline) return -Errno.EBUSY;
  }
  return -Errno.EBUSY;
}

// kernel: mm/huge_memory.c (do_huge_pmd_anonymous_page, do_huge_pmd_wp_page, do_huge_zero_wp_pmd,
// __split_huge_pmd / __split_huge_pmd_locked, __split_huge_zero_page_pmd, split_huge_page_to_list_to_order,
// the huge zero folio, /sys/kernel/mm/transparent_hugepage), include/linux/huge_mm.h
// (thp_vma_allowable_order, thp_vma_suitable_order), mm/khugepaged.c (collapse_huge_page for
// MADV_COLLAPSE).
//
// Anonymous transparent huge pages, PMD-mapped. The model's page table has no separate PMD level:
// a PMD mapping is the 512 entries of one 2 MiB-aligned PTE table, all flagged PTE_HUGE and
// mapping head + i of one order-9 compound page (a present folio, the huge zero folio, or a
// device-private folio). The PMD holds one reference on the folio; splitting it leaves 512 PTEs
// that hold one reference each (folio_ref_add(folio, HPAGE_PMD_NR - 1)), as the kernel does.
import { PageFlag } from '../mem/pageMeta.js';
import { GFP_COMP, GFP_ZERO } from '../mem/systemMemory.js';
import type { SystemMemory } from '../mem/systemMemory.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import {
  HPAGE_PMD_ORDER,
  PROT_WRITE,
  PTE_DEVICE_PRIVATE,
  PTE_DIRTY,
  PTE_HUGE,
  PTE_PRESENT,
  PTE_WRITE,
  PTE_YOUNG,
  PTE_ZERO,
  VM_HUGEPAGE,
  VM_IO,
  VM_NOHUGEPAGE,
  VM_PFNMAP,
} from './constants.js';
import type { MmCore } from './mmCore.js';
import { MMU_NOTIFY_CLEAR } from './mmuNotifier.js';
import { PTE_CHUNK } from './pageTable.js';
import type { VmArea } from './vmaTree.js';

/** Pages per PMD mapping (HPAGE_PMD_NR). */
export const HPAGE_PMD_NR = 2 ** HPAGE_PMD_ORDER;
const HPAGE_PMD_BYTES = HPAGE_PMD_NR * PAGE_SIZE;

/** What a fault path returns when the huge path cannot serve it (kernel: VM_FAULT_FALLBACK). */
export const VM_FAULT_FALLBACK = 1;

/** `/sys/kernel/mm/transparent_hugepage/enabled`. */
export type TransparentHugepageMode = 'always' | 'madvise' | 'never';

/**
 * The machine-wide THP knobs (`/sys/kernel/mm/transparent_hugepage/`). `enabled` defaults to
 * 'madvise' (CONFIG_TRANSPARENT_HUGEPAGE_MADVISE, what most distributions ship): only VMAs given
 * MADV_HUGEPAGE get huge pages at fault time, so every 4 KiB scenario of the model is unchanged.
 */
export interface TransparentHugepageSettings {
  enabled: TransparentHugepageMode;
  /** `use_zero_page`: a read fault maps the huge zero folio instead of allocating. Default true. */
  useZeroPage: boolean;
}

/** THP events of `/proc/vmstat` (thp_fault_alloc, thp_split_pmd, …). */
export interface ThpVmstat {
  faultAlloc: number;
  faultFallback: number;
  zeroPageAlloc: number;
  splitPmd: number;
  splitPage: number;
  splitPageFailed: number;
  collapseAlloc: number;
}

interface ThpState {
  readonly settings: TransparentHugepageSettings;
  readonly stats: ThpVmstat;
  hugeZero: number;
}

const states = new WeakMap<SystemMemory, ThpState>();

function stateOf(memory: SystemMemory): ThpState {
  let s = states.get(memory);
  if (s === undefined) {
    s = {
      settings: { enabled: 'madvise', useZeroPage: true },
      stats: { faultAlloc: 0, faultFallback: 0, zeroPageAlloc: 0, splitPmd: 0, splitPage: 0, splitPageFailed: 0, collapseAlloc: 0 },
      hugeZero: 0,
    };
    states.set(memory, s);
  }
  return s;
}

/** The machine's THP settings (mutable, like writing the sysfs files). */
export function transparentHugepageSettings(memory: SystemMemory): TransparentHugepageSettings {
  return stateOf(memory).settings;
}

/** The machine's THP counters (`grep thp /proc/vmstat`). */
export function thpVmstat(memory: SystemMemory): Readonly<ThpVmstat> {
  return stateOf(memory).stats;
}

/**
 * The huge zero folio (`mm_get_huge_zero_folio`): an order-9 zeroed compound page, allocated on
 * the first read fault that wants it and never freed; 0 when it cannot be allocated.
 */
export function hugeZeroFolio(memory: SystemMemory): number {
  const st = stateOf(memory);
  if (st.hugeZero === 0) {
    const phys = memory.allocPages(HPAGE_PMD_ORDER, GFP_ZERO | GFP_COMP);
    if (phys === 0) return 0;
    memory.setPageFlags(phys, PageFlag.ZERO_PAGE);
    memory.setPageOwner(phys, 'huge_zero_folio');
    st.hugeZero = phys;
    st.stats.zeroPageAlloc++;
  }
  return st.hugeZero;
}

/** Start of the 2 MiB block holding `addr` (`addr & HPAGE_PMD_MASK`). */
export function pmdAlignDown(addr: number): number {
  return addr - (addr % HPAGE_PMD_BYTES);
}

/**
 * `thp_vma_allowable_order(vma, …, PMD_ORDER)` + `thp_vma_suitable_order` for an anonymous fault
 * at `addr`: a private anonymous VMA (shmem THP is not modelled: its default, shmem_enabled=never,
 * allows none), not VM_NOHUGEPAGE, THP enabled for it (always, or madvise with VM_HUGEPAGE), and
 * the whole 2 MiB block around `addr` inside the VMA. `forced` is MADV_COLLAPSE, which ignores the
 * sysfs mode (but not VM_NOHUGEPAGE).
 */
export function thpVmaAllowable(memory: SystemMemory, v: VmArea, addr: number, forced = false): boolean {
  // Anonymous private VMAs only (vma_is_anonymous): shmem and file-backed VMAs are refused here
  // (file and shmem THPs are not modelled).
  if (v.order !== 0 || !v.anonymous) return false;
  if ((v.vmFlags & (VM_IO | VM_PFNMAP | VM_NOHUGEPAGE)) !== 0) return false;
  if (!forced) {
    const mode = stateOf(memory).settings.enabled;
    if (mode === 'never' || (mode === 'madvise' && (v.vmFlags & VM_HUGEPAGE) === 0)) return false;
  }
  const haddr = pmdAlignDown(addr);
  return haddr >= v.start && haddr + HPAGE_PMD_BYTES <= v.end;
}

/** `pmd_none`: no entry at all in the 2 MiB block at `haddr` (the model frees empty PTE tables). */
export function pmdNone(mm: MmCore, haddr: number): boolean {
  return mm.pt.chunks.get(haddr / HPAGE_PMD_BYTES) === undefined;
}

/** True when the 2 MiB block holding `addr` is mapped by a PMD (a huge entry) in a non-hugetlb VMA. */
export function pmdTransHuge(mm: MmCore, addr: number): boolean {
  if ((mm.pt.flags(addr) & PTE_HUGE) === 0) return false;
  const v = mm.vmas.find(addr);
  return v !== undefined && v.order === 0;
}

/**
 * `do_huge_pmd_anonymous_page`: a fault on a none PMD of a THP-eligible VMA. A read fault maps the
 * huge zero folio (use_zero_page); otherwise an order-9 zeroed folio is allocated and mapped
 * (writable and dirty when the VMA is writable, as __do_huge_pmd_anonymous_page). Returns 0, or
 * VM_FAULT_FALLBACK when the huge page cannot be had (the caller maps 4 KiB pages).
 */
export function doHugePmdAnonymousPage(mm: MmCore, v: VmArea, addr: number, write: boolean): number {
  const mem = mm.memory;
  const st = stateOf(mem);
  const haddr = pmdAlignDown(addr);
  const vpn = haddr / PAGE_SIZE;
  if (!write && st.settings.useZeroPage) {
    const hz = hugeZeroFolio(mem);
    if (hz !== 0) {
      mm.pt.mapUnit(vpn, HPAGE_PMD_NR, hz / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | PTE_ZERO | PTE_HUGE);
      return 0;
    }
  }
  const head = mem.allocPages(HPAGE_PMD_ORDER, GFP_ZERO | GFP_COMP);
  if (head === 0) {
    st.stats.faultFallback++;
    return VM_FAULT_FALLBACK;
  }
  mem.setPageFlags(head, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
  const writable = (v.prot & PROT_WRITE) !== 0 ? PTE_WRITE | PTE_DIRTY : 0;
  mm.pt.mapUnit(vpn, HPAGE_PMD_NR, head / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | PTE_HUGE | writable);
  st.stats.faultAlloc++;
  return 0;
}

/**
 * `do_huge_pmd_wp_page`: a write fault on a read-only PMD in a writable VMA. The huge zero folio
 * is replaced by a new zeroed THP (do_huge_zero_wp_pmd, Linux 6.12+); a folio this mm holds
 * exclusively is reused; anything else (shared with a forked child) has its PMD split and the
 * fault falls back to 4 KiB copy-on-write. Returns 0 or VM_FAULT_FALLBACK.
 */
export function doHugePmdWpPage(mm: MmCore, addr: number): number {
  const mem = mm.memory;
  const pt = mm.pt;
  const haddr = pmdAlignDown(addr);
  const vpn = haddr / PAGE_SIZE;
  const f = pt.flags(haddr);
  if ((f & PTE_ZERO) !== 0) {
    const head = mem.allocPages(HPAGE_PMD_ORDER, GFP_ZERO | GFP_COMP);
    if (head === 0) {
      stateOf(mem).stats.faultFallback++;
      splitHugePmd(mm, haddr, true);
      return VM_FAULT_FALLBACK;
    }
    mem.setPageFlags(head, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
    mm.rangeStart(MMU_NOTIFY_CLEAR, haddr, haddr + HPAGE_PMD_BYTES);
    pt.mapUnit(vpn, HPAGE_PMD_NR, head / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | PTE_HUGE | PTE_WRITE | PTE_DIRTY);
    mm.rangeEnd();
    stateOf(mem).stats.faultAlloc++;
    return 0;
  }
  const head = pt.walk(haddr) * PAGE_SIZE;
  if ((mem.pageFlags(head) & PageFlag.ANON_EXCLUSIVE) !== 0 || mem.getPageRef(head) === 1) {
    mem.setPageFlags(head, PageFlag.ANON_EXCLUSIVE);
    pt.protUnit(vpn, HPAGE_PMD_NR, PTE_WRITE | PTE_DIRTY, 0);
    return 0;
  }
  splitHugePmd(mm, haddr, true);
  return VM_FAULT_FALLBACK;
}

/**
 * `__split_huge_pmd` / `__split_huge_pmd_locked`: turn the PMD mapping of the 2 MiB block holding
 * `addr` into 512 PTEs. A huge zero PMD becomes 512 read-only PTEs of the small zero page
 * (__split_huge_zero_page_pmd); an anonymous or device-private folio keeps its pages, each PTE
 * holding a folio reference (folio_ref_add(folio, HPAGE_PMD_NR - 1)). Mirrors see
 * MMU_NOTIFY_CLEAR over the block when `notify`. Returns true when a PMD was split.
 */
export function splitHugePmd(mm: MmCore, addr: number, notify: boolean): boolean {
  if (!pmdTransHuge(mm, addr)) return false;
  const pt = mm.pt;
  const mem = mm.memory;
  const haddr = pmdAlignDown(addr);
  const vpn = haddr / PAGE_SIZE;
  const c = pt.chunkFor(vpn, false);
  if (c === undefined) return false;
  if (notify) mm.rangeStart(MMU_NOTIFY_CLEAR, haddr, haddr + HPAGE_PMD_BYTES);
  const f0 = c.flags[0] ?? 0;
  if ((f0 & PTE_ZERO) !== 0) {
    const zero = mem.zeroPagePhys / PAGE_SIZE;
    for (let s = 0; s < PTE_CHUNK; s++) {
      c.pfn[s] = zero;
      c.flags[s] = ((c.flags[s] ?? 0) & ~(PTE_HUGE | PTE_WRITE | PTE_DIRTY)) | PTE_ZERO;
    }
  } else {
    for (let s = 0; s < PTE_CHUNK; s++) c.flags[s] = (c.flags[s] ?? 0) & ~PTE_HUGE;
    const head = (c.pfn[0] ?? 0) * PAGE_SIZE;
    if ((f0 & (PTE_PRESENT | PTE_DEVICE_PRIVATE)) !== 0) mem.pageGet(head, HPAGE_PMD_NR - 1);
  }
  stateOf(mem).stats.splitPmd++;
  if (notify) mm.rangeEnd();
  return true;
}

/**
 * `split_huge_pmd_address` at a boundary: split the PMD holding `addr` unless `addr` is 2 MiB
 * aligned (vma_adjust_trans_huge, zap_pmd_range and change_pmd_range for a range that covers part
 * of a PMD).
 */
export function splitHugePmdAt(mm: MmCore, addr: number): void {
  if (addr % HPAGE_PMD_BYTES !== 0) splitHugePmd(mm, addr, true);
}

/** Split every PMD mapping in [start, end). */
export function splitHugePmdRange(mm: MmCore, start: number, end: number): void {
  for (let a = pmdAlignDown(start); a < end; a += HPAGE_PMD_BYTES) splitHugePmd(mm, a, true);
}

/**
 * `split_folio` (split_huge_page_to_list_to_order(…, 0)) of the large folio mapped at `addr`: the
 * PMD is split first, then the folio becomes order-0 pages, each keeping the references of the
 * PTEs that map it (pages no PTE maps are freed). The model has no rmap, so it counts the PTEs of
 * this mm that map the folio where the entry at `addr` puts it; other references (a second mm
 * after fork, GUP pins) make the split fail with -EBUSY, as can_split_folio() refuses extra
 * references. Returns 0 (also for a page that is not part of a large folio) or -EBUSY.
 */
export function splitHugePage(mm: MmCore, addr: number): number {
  const pt = mm.pt;
  const mem = mm.memory;
  splitHugePmd(mm, addr, true);
  const f = pt.flags(addr);
  if ((f & (PTE_PRESENT | PTE_DEVICE_PRIVATE)) === 0 || (f & PTE_ZERO) !== 0) return 0;
  const pfn = pt.walk(addr);
  const head = mem.compoundHead(pfn * PAGE_SIZE);
  const order = mem.folioOrder(head);
  if (order === 0) return 0;
  const n = 2 ** order;
  const headPfn = head / PAGE_SIZE;
  const baseVpn = Math.floor(addr / PAGE_SIZE) - (pfn - headPfn);
  const mapped = new Uint8Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const a = (baseVpn + i) * PAGE_SIZE;
    if (a < 0) continue;
    const fi = pt.flags(a);
    if ((fi & (PTE_PRESENT | PTE_DEVICE_PRIVATE)) !== 0 && (fi & PTE_HUGE) === 0 && pt.walk(a) === headPfn + i) {
      mapped[i] = 1;
      total++;
    }
  }
  const st = stateOf(mem).stats;
  if (mem.getPageRef(head) !== total) {
    st.splitPageFailed++;
    return -Errno.EBUSY;
  }
  mem.splitFolio(head, (i) => mapped[i] ?? 0);
  st.splitPage++;
  return 0;
}

/**
 * `collapse_huge_page` for MADV_COLLAPSE over the 2 MiB block at `haddr`: copy its 4 KiB pages
 * (none and zero-page entries read as zeroes) into a new order-9 folio and map it with one PMD.
 * Returns 0 (also when the block is already PMD-mapped), -EINVAL (a non-present entry: swap-like
 * or device-private), -EAGAIN (a page with extra references, e.g. shared after fork or pinned),
 * or -ENOMEM (no huge page). kernel: madvise_collapse / hpage_collapse_scan_pmd in mm/khugepaged.c.
 */
export function collapseHugePage(mm: MmCore, v: VmArea, haddr: number): number {
  const pt = mm.pt;
  const mem = mm.memory;
  if (pmdTransHuge(mm, haddr)) return 0;
  const vpn0 = haddr / PAGE_SIZE;
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    const a = haddr + i * PAGE_SIZE;
    const f = pt.flags(a);
    if (f === 0 || (f & PTE_ZERO) !== 0) continue;
    if ((f & PTE_PRESENT) === 0) return -Errno.EINVAL;
    if (mem.getPageRef(pt.walk(a) * PAGE_SIZE) !== 1) return -Errno.EAGAIN;
  }
  const head = mem.allocPages(HPAGE_PMD_ORDER, GFP_COMP);
  if (head === 0) return -Errno.ENOMEM;
  mem.setPageFlags(head, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
  mm.rangeStart(MMU_NOTIFY_CLEAR, haddr, haddr + HPAGE_PMD_BYTES);
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    const a = haddr + i * PAGE_SIZE;
    const f = pt.flags(a);
    const dst = head + i * PAGE_SIZE;
    if (f === 0 || (f & PTE_ZERO) !== 0) mem.fill(dst, PAGE_SIZE, 0);
    else mem.copy(dst, pt.walk(a) * PAGE_SIZE, PAGE_SIZE);
  }
  pt.zapRange(haddr, haddr + HPAGE_PMD_BYTES, mm.putLater);
  const writable = (v.prot & PROT_WRITE) !== 0 ? PTE_WRITE | PTE_DIRTY : 0;
  pt.mapUnit(vpn0, HPAGE_PMD_NR, head / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | PTE_HUGE | writable);
  mm.rangeEnd();
  mm.flushPuts();
  stateOf(mem).stats.collapseAlloc++;
  return 0;
}

// kernel: mm/gup.c (__get_user_pages, check_vma_flags, follow_page_pte, faultin_page,
// gup_must_unshare, gup_fast, get_user_pages, pin_user_pages, pin_user_pages_fast,
// check_and_migrate_movable_pages, unpin_user_pages), include/linux/mm_types.h (FOLL_*),
// mm/internal.h (FOLL_PIN), include/linux/mm.h (GUP_PIN_COUNTING_BIAS, folio_is_longterm_pinnable)
//
// get_user_pages: take a reference on the pages behind a user range, faulting them in first. A pin
// (FOLL_PIN) adds GUP_PIN_COUNTING_BIAS to the refcount, so folio_maybe_dma_pinned sees it: fork
// then copies the page for the child, and migration refuses it (a pinned page has more references
// than its mappings explain: migrate_vma_check_page / folio_expected_refs). A page that is not
// CPU-present (device-private or device-exclusive entry) is faulted first: do_swap_page runs the
// pgmap's migrate_to_ram, so GUP only ever returns system RAM pages.
import { PageFlag } from '../mem/pageMeta.js';
import { GUP_PIN_COUNTING_BIAS } from '../mem/systemMemory.js';
import type { SystemMemory } from '../mem/systemMemory.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import { HPAGE_PMD_ORDER, PROT_NONE, PROT_WRITE, PTE_HUGE, PTE_PRESENT, PTE_WRITE, VM_IO, VM_PFNMAP } from './constants.js';
import type { MmStruct } from './mmStruct.js';
import type { VmArea } from './vmaTree.js';

/** Fault the pages writable (breaking COW). kernel: FOLL_WRITE in include/linux/mm_types.h. */
export const FOLL_WRITE = 1 << 0;
/** Take a page reference (get_user_pages). kernel: FOLL_GET in include/linux/mm_types.h. */
export const FOLL_GET = 1 << 1;
/** Write through a read-only mapping (ptrace). kernel: FOLL_FORCE in include/linux/mm_types.h. */
export const FOLL_FORCE = 1 << 3;
/** Do not fault: fail on pages not present. kernel: FOLL_NOFAULT in include/linux/mm_types.h. */
export const FOLL_NOFAULT = 1 << 5;
/**
 * The pin may be held indefinitely (RDMA, VFIO): the page must be longterm-pinnable. kernel:
 * FOLL_LONGTERM in include/linux/mm_types.h.
 */
export const FOLL_LONGTERM = 1 << 8;
/** Internal: a pin (pin_user_pages*), set by the entry point. kernel: FOLL_PIN in mm/internal.h. */
export const FOLL_PIN = 1 << 19;

/** The flags a caller may pass (the rest, FOLL_PIN and FOLL_GET included, are set internally). */
const FOLL_CALLER = FOLL_WRITE | FOLL_FORCE | FOLL_NOFAULT | FOLL_LONGTERM;

/** Counters (tests, demos). */
export const gupStats = { calls: 0, pages: 0, pins: 0, faults: 0, fastPages: 0, unshares: 0 };

/**
 * `is_valid_gup_args`: callers pass only FOLL_WRITE/NOFAULT/LONGTERM (FOLL_PIN and FOLL_GET are set
 * by the entry point) and FOLL_LONGTERM only when pinning. FOLL_FORCE (writing through a read-only
 * mapping, for ptrace) is accepted by the kernel; the model does not implement it and refuses it.
 */
function validFlags(gupFlags: number, toSet: number): boolean {
  if (!Number.isInteger(gupFlags) || (gupFlags & ~FOLL_CALLER) !== 0) return false;
  if ((gupFlags & FOLL_FORCE) !== 0) return false;
  return (gupFlags & FOLL_LONGTERM) === 0 || (toSet & FOLL_PIN) !== 0;
}

/** `check_vma_flags`: -EFAULT for VM_IO/VM_PFNMAP, a write to a read-only VMA, PROT_NONE. */
function checkVmaFlags(vma: VmArea, gupFlags: number): number {
  if ((vma.vmFlags & (VM_IO | VM_PFNMAP)) !== 0) return -Errno.EFAULT;
  if ((gupFlags & FOLL_WRITE) !== 0 ? (vma.prot & PROT_WRITE) === 0 : vma.prot === PROT_NONE) return -Errno.EFAULT;
  return 0;
}

/**
 * `follow_page_pte` without faulting: the head page (physical) to reference, or -1 when the page
 * must be faulted (no PTE, a non-present device entry, a write to a read-only PTE, or a pin of an
 * anonymous page still shared after fork: gup_must_unshare).
 */
function followPage(mm: MmStruct, vma: VmArea, addr: number, gupFlags: number): number {
  const f = mm.pteFlags(addr);
  if ((f & PTE_PRESENT) === 0) return -1;
  if ((gupFlags & FOLL_WRITE) !== 0 && (f & PTE_WRITE) === 0) return -1;
  const pfn = mm.walkPte(addr);
  const head = (f & PTE_HUGE) !== 0 ? (pfn - (pfn % 2 ** HPAGE_PMD_ORDER)) * PAGE_SIZE : pfn * PAGE_SIZE;
  if ((gupFlags & FOLL_PIN) !== 0 && (gupFlags & FOLL_WRITE) === 0 && !vma.shared && (vma.prot & PROT_WRITE) !== 0) {
    const pf = mm.memory.pageFlags(head);
    // gup_must_unshare: a pinned anonymous page must be exclusive to this mm; a FOLL_LONGTERM
    // read-only pin of a page that is not anonymous (page cache, the zero page) in a COW mapping
    // gets a private anonymous copy, so later writes by the process reach the pinned page. The
    // model unshares with a write fault (the kernel's FAULT_FLAG_UNSHARE copies without granting
    // write).
    if ((pf & PageFlag.ANON) !== 0) {
      if ((pf & PageFlag.ANON_EXCLUSIVE) === 0) return -1;
    } else if ((gupFlags & FOLL_LONGTERM) !== 0) return -1;
  }
  return head;
}

/**
 * `__get_user_pages`: walk [start, start + nrPages pages), fault what is missing, and take `refs`
 * on each page (recorded in `pages`, one physical address per 4 KiB page). Returns the number of
 * pages taken, or a negative errno when the first page fails.
 */
function getUserPagesSlow(mm: MmStruct, start: number, nrPages: number, gupFlags: number, refs: number, pages: Float64Array | undefined, from: number): number {
  const mem = mm.memory;
  let i = from;
  while (i < nrPages) {
    const addr = start + i * PAGE_SIZE;
    const vma = mm.exited ? undefined : mm.findVma(addr);
    if (vma === undefined) return i > 0 ? i : -Errno.EFAULT;
    const bad = checkVmaFlags(vma, gupFlags);
    if (bad < 0) return i > 0 ? i : bad;
    let head = followPage(mm, vma, addr, gupFlags);
    for (let tries = 0; head < 0 && tries < 3; tries++) {
      if ((gupFlags & FOLL_NOFAULT) !== 0) return i > 0 ? i : -Errno.EFAULT;
      // faultin_page -> handle_mm_fault: a device-private entry comes back to RAM here.
      const unshare = (mm.pteFlags(addr) & PTE_PRESENT) !== 0 && (gupFlags & FOLL_WRITE) === 0;
      if (unshare) gupStats.unshares++;
      gupStats.faults++;
      const r = mm.handleMmFault(addr, (gupFlags & FOLL_WRITE) !== 0 || unshare);
      if (r < 0) return i > 0 ? i : r;
      head = followPage(mm, vma, addr, gupFlags);
    }
    if (head < 0) return i > 0 ? i : -Errno.EFAULT;
    mem.pageGet(head, refs);
    if (pages !== undefined) pages[i] = mm.walkPte(addr) * PAGE_SIZE;
    i++;
  }
  return i;
}

/**
 * `gup_fast`: the lockless walk of present PTEs that already allow the access; stops at the first
 * page that would need a fault (or an unshare), where the caller falls back to the slow path.
 */
function gupFast(mm: MmStruct, start: number, nrPages: number, gupFlags: number, refs: number, pages: Float64Array | undefined): number {
  const mem = mm.memory;
  let i = 0;
  for (; i < nrPages; i++) {
    const addr = start + i * PAGE_SIZE;
    const vma = mm.findVma(addr);
    if (vma === undefined || checkVmaFlags(vma, gupFlags) < 0) break;
    const head = followPage(mm, vma, addr, gupFlags);
    if (head < 0) break;
    mem.pageGet(head, refs);
    if (pages !== undefined) pages[i] = mm.walkPte(addr) * PAGE_SIZE;
  }
  gupStats.fastPages += i;
  return i;
}

function checkArgs(mm: MmStruct, start: number, nrPages: number, pages: Float64Array | undefined): number {
  if (!Number.isSafeInteger(start) || start < 0 || start % PAGE_SIZE !== 0) return -Errno.EINVAL;
  if (!Number.isSafeInteger(nrPages) || nrPages < 0) return -Errno.EINVAL;
  if (pages !== undefined && pages.length < nrPages) return -Errno.EINVAL;
  if (mm.exited) return -Errno.EFAULT;
  return 0;
}

function gup(mm: MmStruct, start: number, nrPages: number, gupFlags: number, pages: Float64Array | undefined, toSet: number, fast: boolean): number {
  gupStats.calls++;
  if (!validFlags(gupFlags, toSet)) return -Errno.EINVAL;
  const bad = checkArgs(mm, start, nrPages, pages);
  if (bad < 0) return bad;
  if (nrPages === 0) return 0;
  const flags = gupFlags | toSet;
  const refs = (toSet & FOLL_PIN) !== 0 ? GUP_PIN_COUNTING_BIAS : 1;
  const done = fast ? gupFast(mm, start, nrPages, flags, refs, pages) : 0;
  const n = done === nrPages ? done : getUserPagesSlow(mm, start, nrPages, flags, refs, pages, done);
  if (n > 0) {
    gupStats.pages += n;
    if (refs !== 1) gupStats.pins += n;
  }
  // check_and_migrate_movable_pages (FOLL_LONGTERM): the model has no ZONE_MOVABLE, CMA or
  // device-coherent memory, and the pages GUP returns are RAM (device-private pages came back
  // through migrate_to_ram above), so every page is folio_is_longterm_pinnable.
  return n;
}

/**
 * `get_user_pages(start, nrPages, gupFlags, pages)`: a reference (get_page) on each page, faulting
 * as needed. Returns the number of pages (fewer when the range ends early), or -EINVAL (bad
 * arguments, FOLL_LONGTERM without a pin), -EFAULT, -ENOMEM for the first page. Release with
 * `memory.pagePut(head)` per page, or putUserPages.
 */
export function getUserPages(mm: MmStruct, start: number, nrPages: number, gupFlags: number, pages?: Float64Array): number {
  return gup(mm, start, nrPages, gupFlags, pages, FOLL_GET, false);
}

/** `get_user_pages_fast`: the lockless walk first, then get_user_pages for the rest. */
export function getUserPagesFast(mm: MmStruct, start: number, nrPages: number, gupFlags: number, pages?: Float64Array): number {
  return gup(mm, start, nrPages, gupFlags, pages, FOLL_GET, true);
}

/**
 * `pin_user_pages(start, nrPages, gupFlags, pages)`: pin each page (refcount +
 * GUP_PIN_COUNTING_BIAS), faulting as needed; FOLL_LONGTERM allowed. Same returns as
 * getUserPages. Release with unpinUserPages.
 */
export function pinUserPages(mm: MmStruct, start: number, nrPages: number, gupFlags: number, pages?: Float64Array): number {
  return gup(mm, start, nrPages, gupFlags, pages, FOLL_PIN, false);
}

/** `pin_user_pages_fast`: the lockless walk first, then pin_user_pages for the rest. */
export function pinUserPagesFast(mm: MmStruct, start: number, nrPages: number, gupFlags: number, pages?: Float64Array): number {
  return gup(mm, start, nrPages, gupFlags, pages, FOLL_PIN, true);
}

/** The head of the block holding `phys` (an order-0 page, or a 2 MiB huge page's head). */
function folioHead(memory: SystemMemory, phys: number): number {
  const page = phys - (phys % PAGE_SIZE);
  if ((memory.pageFlags(page) & PageFlag.HEAD) !== 0) return page;
  const huge = PAGE_SIZE * 2 ** HPAGE_PMD_ORDER;
  const cand = page - (page % huge);
  return (memory.pageFlags(cand) & PageFlag.HEAD) !== 0 && memory.pageInfo(cand).order >= HPAGE_PMD_ORDER ? cand : page;
}

/** `unpin_user_pages(pages, nrPages)`: drop the pins pin_user_pages* took. */
export function unpinUserPages(memory: SystemMemory, pages: ArrayLike<number>, nrPages: number): void {
  for (let i = 0; i < nrPages; i++) memory.pagePut(folioHead(memory, pages[i] ?? 0), GUP_PIN_COUNTING_BIAS);
}

/** `put_page` on each page get_user_pages* returned. */
export function putUserPages(memory: SystemMemory, pages: ArrayLike<number>, nrPages: number): void {
  for (let i = 0; i < nrPages; i++) memory.pagePut(folioHead(memory, pages[i] ?? 0));
}

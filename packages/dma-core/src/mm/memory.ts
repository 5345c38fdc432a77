// kernel: mm/memory.c (handle_mm_fault, do_anonymous_page, do_wp_page, wp_page_reuse,
// wp_page_copy, do_swap_page for device-private entries), mm/shmem.c (shmem_fault)
import { PageFlag } from '../mem/pageMeta.js';
import { GFP_ZERO } from '../mem/systemMemory.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import { PROT_NONE, PROT_WRITE, PTE_DEVICE_PRIVATE, PTE_DIRTY, PTE_HUGE, PTE_PRESENT, PTE_WRITE, PTE_YOUNG, PTE_ZERO } from './constants.js';
import { doFileFault } from './file.js';
import type { MmCore } from './mmCore.js';
import { MMU_NOTIFY_CLEAR } from './mmuNotifier.js';
import { VM_FAULT_FALLBACK, doHugePmdAnonymousPage, doHugePmdWpPage, pmdAlignDown, pmdNone, thpVmaAllowable } from './thp.js';
import type { VmArea } from './vmaTree.js';

/**
 * `handle_mm_fault` for a fault at `addr`: returns 0 or a negative errno (-EFAULT: no VMA or the
 * VMA forbids the access, as GUP/HMM check; -ENOMEM: out of memory). Unlike the kernel's
 * handle_mm_fault this also checks VMA permissions, so HMM can call it directly.
 */
export function handleMmFault(mm: MmCore, addr: number, write: boolean): number {
  if (mm.exited || !Number.isSafeInteger(addr) || addr < 0) return -Errno.EFAULT;
  const v = mm.vmas.find(addr);
  if (v === undefined) return -Errno.EFAULT;
  if (write ? (v.prot & PROT_WRITE) === 0 : v.prot === PROT_NONE) return -Errno.EFAULT;
  return doFault(mm, v, addr, write);
}

/** The fault in a VMA whose permissions allow the access: fill or break COW. 0 or -errno. */
export function doFault(mm: MmCore, v: VmArea, addr: number, write: boolean): number {
  const pt = mm.pt;
  const unitPages = 2 ** v.order;
  const vpn = Math.floor(addr / PAGE_SIZE);
  const uvpn = vpn - (vpn % unitPages);
  const flags = pt.flags(addr);
  const mem = mm.memory;
  const huge = v.order > 0 ? PTE_HUGE : 0;
  if ((flags & PTE_DEVICE_PRIVATE) !== 0) {
    // kernel: do_swap_page -> pgmap->ops->migrate_to_ram
    const r = mm.migrateToRam(addr, pt.walk(addr));
    if (r < 0) return r;
    return (pt.flags(addr) & PTE_PRESENT) !== 0 ? doFault(mm, v, addr, write) : -Errno.EFAULT;
  }
  // File-backed VMAs (mm/file.ts): missing PTEs, and writes to a read-only page-cache (or
  // driver-inserted) page; their anonymous COW copies take the path below.
  if (v.file !== undefined && ((flags & PTE_PRESENT) === 0 || (write && (flags & PTE_WRITE) === 0 && (mem.pageFlags(pt.walk(addr) * PAGE_SIZE) & PageFlag.ANON) === 0))) {
    return doFileFault(mm, v, addr, write);
  }
  if ((flags & PTE_PRESENT) === 0) {
    const writable = (v.prot & PROT_WRITE) !== 0 ? PTE_WRITE : 0;
    if (v.shmem !== undefined) {
      // kernel: shmem_fault — one page per index, shared by every mapping of the object.
      const idx = (v.pgoff + (uvpn - v.start / PAGE_SIZE)) / unitPages;
      let head = v.shmem.pages.get(idx);
      if (head === undefined) {
        head = mem.allocPages(v.order, GFP_ZERO);
        if (head === 0) return -Errno.ENOMEM;
        v.shmem.pages.set(idx, head);
      }
      mem.pageGet(head);
      pt.mapUnit(uvpn, unitPages, head / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | writable | huge | (write ? PTE_DIRTY : 0));
      return 0;
    }
    // kernel: __handle_mm_fault — a none PMD in a THP-eligible VMA faults a huge page in
    // (create_huge_pmd -> do_huge_pmd_anonymous_page), else falls back to PTEs.
    if (v.order === 0 && flags === 0 && thpVmaAllowable(mem, v, addr) && pmdNone(mm, pmdAlignDown(addr))) {
      const r = doHugePmdAnonymousPage(mm, v, addr, write);
      if (r !== VM_FAULT_FALLBACK) return r;
    }
    if (!write && v.order === 0) {
      // kernel: do_anonymous_page — read fault maps the zero page read-only.
      pt.set(vpn, mem.zeroPagePhys / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | PTE_ZERO);
      return 0;
    }
    const head = mem.allocPages(v.order, GFP_ZERO);
    if (head === 0) return -Errno.ENOMEM;
    mem.setPageFlags(head, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
    pt.mapUnit(uvpn, unitPages, head / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | writable | huge | (write ? PTE_DIRTY : 0));
    return 0;
  }
  if (!write || (flags & PTE_WRITE) !== 0) return 0;
  // Write to a present read-only entry in a writable VMA: do_wp_page.
  if (v.shmem !== undefined) {
    pt.protUnit(uvpn, unitPages, PTE_WRITE | PTE_DIRTY, 0);
    return 0;
  }
  if (v.order === 0 && (flags & PTE_HUGE) !== 0) {
    // A PMD-mapped THP: do_huge_pmd_wp_page (reuse, or split and fall back to the PTE below).
    if (doHugePmdWpPage(mm, addr) !== VM_FAULT_FALLBACK) return 0;
    return doFault(mm, v, addr, write);
  }
  const oldHeadPfn = pt.walk(uvpn * PAGE_SIZE);
  const oldHead = oldHeadPfn * PAGE_SIZE;
  // A page of a PTE-mapped large folio: the folio's flags and count decide (folio_test_anon,
  // PageAnonExclusive is propagated to every page when a PMD is split).
  const folio = mem.compoundHead(oldHead);
  if ((flags & PTE_ZERO) === 0 && ((mem.pageFlags(folio) & PageFlag.ANON_EXCLUSIVE) !== 0 || mem.getPageRef(oldHead) === 1)) {
    // do_wp_page -> wp_page_reuse: PageAnonExclusive, or we hold the only reference.
    mem.setPageFlags(folio, PageFlag.ANON_EXCLUSIVE);
    pt.protUnit(uvpn, unitPages, PTE_WRITE | PTE_DIRTY, 0);
    return 0;
  }
  // wp_page_copy: allocate first, then invalidate, copy, remap, and put the old page.
  const zero = (flags & PTE_ZERO) !== 0;
  const head = mem.allocPages(v.order, zero ? GFP_ZERO : 0);
  if (head === 0) return -Errno.ENOMEM;
  mem.setPageFlags(head, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
  const ustart = uvpn * PAGE_SIZE;
  const uend = ustart + unitPages * PAGE_SIZE;
  mm.rangeStart(MMU_NOTIFY_CLEAR, ustart, uend);
  if (!zero) mem.copy(head, oldHead, unitPages * PAGE_SIZE);
  pt.mapUnit(uvpn, unitPages, head / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | PTE_WRITE | PTE_DIRTY | huge);
  mm.rangeEnd();
  if (!zero) mem.pagePut(oldHead);
  return 0;
}

// kernel: mm/madvise.c (do_madvise, madvise_dontneed_single_vma, madvise_free_single_vma,
// madvise_collapse), mm/huge_memory.c (hugepage_madvise)
import { PageFlag } from '../mem/pageMeta.js';
import { Errno } from '../units/errno.js';
import { HPAGE_PMD_SIZE, PAGE_SIZE, alignUp } from '../units/page.js';
import {
  MADV_COLLAPSE,
  MADV_DONTNEED,
  MADV_FREE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  PTE_DIRTY,
  PTE_PRESENT,
  PTE_ZERO,
  TASK_SIZE,
  VM_HUGEPAGE,
  VM_IO,
  VM_NOHUGEPAGE,
  VM_PFNMAP,
} from './constants.js';
import type { MmCore } from './mmCore.js';
import { MMU_NOTIFY_CLEAR } from './mmuNotifier.js';
import { collapseHugePage, pmdAlignDown, splitHugePmdAt, thpVmaAllowable } from './thp.js';

/**
 * `madvise(addr, length, advice)` for the advice the model implements: MADV_HUGEPAGE /
 * MADV_NOHUGEPAGE (set VM_HUGEPAGE / VM_NOHUGEPAGE on the range, splitting VMAs), MADV_DONTNEED
 * (zap the range: MMU_NOTIFY_CLEAR, later accesses fault in zero-filled pages), MADV_FREE (private
 * anonymous pages become clean lazy-free pages; without reclaim in the model their content stays),
 * MADV_COLLAPSE (collapse every 2 MiB block of the range into a THP now). Returns 0, -EINVAL
 * (unaligned, unknown advice, MADV_FREE/MADV_COLLAPSE on a mapping that is not private anonymous),
 * -ENOMEM (part of the range is not mapped; the model changes nothing then), or MADV_COLLAPSE's
 * -EAGAIN / -ENOMEM.
 */
export function doMadvise(mm: MmCore, addr: number, length: number, advice: number): number {
  if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) return -Errno.EINVAL;
  if (!Number.isSafeInteger(length) || length < 0) return -Errno.EINVAL;
  if (advice !== MADV_HUGEPAGE && advice !== MADV_NOHUGEPAGE && advice !== MADV_DONTNEED && advice !== MADV_FREE && advice !== MADV_COLLAPSE) return -Errno.EINVAL;
  if (length === 0) return 0;
  const end = addr + alignUp(length, PAGE_SIZE);
  if (end > TASK_SIZE) return -Errno.EINVAL;
  if (mm.exited) return -Errno.ENOMEM;
  const vmas = mm.vmas;
  for (let a = addr; a < end; ) {
    const v = vmas.find(a);
    if (v === undefined) return -Errno.ENOMEM;
    if ((advice === MADV_FREE || advice === MADV_COLLAPSE) && (v.shared || v.hugetlb || (v.vmFlags & (VM_IO | VM_PFNMAP)) !== 0)) return -Errno.EINVAL;
    if (advice === MADV_DONTNEED && v.hugetlb && (a % HPAGE_PMD_SIZE !== 0 || Math.min(end, v.end) % HPAGE_PMD_SIZE !== 0)) return -Errno.EINVAL;
    if (advice === MADV_COLLAPSE && (v.vmFlags & VM_NOHUGEPAGE) !== 0) return -Errno.EINVAL;
    a = v.end;
  }
  switch (advice) {
    case MADV_HUGEPAGE:
    case MADV_NOHUGEPAGE:
      return hugepageMadvise(mm, addr, end, advice);
    case MADV_DONTNEED:
      return madviseDontneed(mm, addr, end);
    case MADV_FREE:
      return madviseFree(mm, addr, end);
    case MADV_COLLAPSE:
      return madviseCollapse(mm, addr, end);
  }
}

/** `hugepage_madvise` over [addr, end): VM_HUGEPAGE / VM_NOHUGEPAGE on the (split) VMAs. */
function hugepageMadvise(mm: MmCore, addr: number, end: number, advice: number): number {
  const vmas = mm.vmas;
  splitHugePmdAt(mm, addr);
  splitHugePmdAt(mm, end);
  vmas.splitAt(addr);
  vmas.splitAt(end);
  const vs = vmas.list;
  for (let i = vmas.indexAtOrAfter(addr); i < vs.length; i++) {
    const v = vs[i];
    if (v === undefined || v.start >= end) break;
    if (advice === MADV_HUGEPAGE) v.vmFlags = (v.vmFlags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE;
    else v.vmFlags = (v.vmFlags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE;
  }
  return 0;
}

/** `madvise_dontneed_single_vma` -> zap_page_range_single over [addr, end). */
function madviseDontneed(mm: MmCore, addr: number, end: number): number {
  splitHugePmdAt(mm, addr);
  splitHugePmdAt(mm, end);
  if (!mm.pt.anyIn(addr, end)) return 0;
  mm.rangeStart(MMU_NOTIFY_CLEAR, addr, end);
  mm.pt.zapRange(addr, end, mm.putLater);
  mm.rangeEnd();
  mm.flushPuts();
  return 0;
}

/**
 * `madvise_free_single_vma`: present private pages this mm holds alone lose their dirty bit (the
 * folio becomes lazy-free, reclaim may drop it; the model has no reclaim, so the data stays, as it
 * does on a machine without memory pressure). Non-present entries (device-private) are skipped.
 */
function madviseFree(mm: MmCore, addr: number, end: number): number {
  splitHugePmdAt(mm, addr);
  splitHugePmdAt(mm, end);
  if (!mm.pt.anyIn(addr, end)) return 0;
  const mem = mm.memory;
  mm.rangeStart(MMU_NOTIFY_CLEAR, addr, end);
  mm.pt.forEachIn(addr, end, (c, s) => {
    const f = c.flags[s] ?? 0;
    if ((f & PTE_PRESENT) === 0 || (f & PTE_ZERO) !== 0) return;
    const folio = mem.compoundHead((c.pfn[s] ?? 0) * PAGE_SIZE);
    if ((mem.pageFlags(folio) & PageFlag.ANON_EXCLUSIVE) === 0) return;
    c.flags[s] = f & ~PTE_DIRTY;
    mem.clearPageFlags(folio, PageFlag.DIRTY);
  });
  mm.rangeEnd();
  return 0;
}

/** `madvise_collapse`: every 2 MiB block of [addr, end) inside a VMA becomes one THP. */
function madviseCollapse(mm: MmCore, addr: number, end: number): number {
  let last = 0;
  for (let h = pmdAlignDown(addr + HPAGE_PMD_SIZE - 1); h + HPAGE_PMD_SIZE <= end; h += HPAGE_PMD_SIZE) {
    const v = mm.vmas.find(h);
    if (v === undefined || !thpVmaAllowable(mm.memory, v, h, true)) {
      last = -Errno.EINVAL;
      continue;
    }
    const r = collapseHugePage(mm, v, h);
    if (r !== 0) last = r;
  }
  return last;
}

// kernel: kernel/fork.c (dup_mm, dup_mmap), mm/memory.c (copy_page_range, copy_present_page,
// page_needs_cow_for_dma)
import { PageFlag } from '../mem/pageMeta.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import { GFP_COMP } from '../mem/systemMemory.js';
import { PTE_DEVICE_PRIVATE, PTE_HUGE, PTE_PRESENT, PTE_WRITE, PTE_ZERO } from './constants.js';
import { exitMmap } from './mmap.js';
import type { MmCore } from './mmCore.js';
import { MMU_NOTIFY_PROTECTION_PAGE } from './mmuNotifier.js';
import { HPAGE_PMD_NR, splitHugePmd } from './thp.js';
import { VmArea } from './vmaTree.js';

/**
 * `dup_mmap` into `child` (an empty mm): shared VMAs share their pages; private pages become
 * copy-on-write (write-protected in both, refcount +1), except pages that may be DMA-pinned,
 * which the child gets a copy of at once (kernel: copy_present_page / page_needs_cow_for_dma).
 * Returns 0 or -ENOMEM (the child is then torn down).
 */
export function dupMmap(mm: MmCore, child: MmCore): number {
  if (mm.exited) return -Errno.ENOMEM;
  const mem = mm.memory;
  const cpt = child.pt;
  for (const v of mm.vmas.list) {
    if (v.shmem !== undefined) v.shmem.users++;
    const cv = new VmArea(v.start, v.end, v.prot, v.flags, v.order, v.shmem, v.pgoff);
    cv.vmFlags = v.vmFlags;
    cv.file = v.file;
    v.file?.vmaLink(cv, child);
    child.vmas.insert(cv);
    const cow = !v.shared;
    const notify = cow && mm.pt.anyIn(v.start, v.end);
    // kernel: copy_page_range on a COW mapping write-protects the parent under PROTECTION_PAGE.
    if (notify) mm.rangeStart(MMU_NOTIFY_PROTECTION_PAGE, v.start, v.end);
    const st = { failed: false };
    mm.pt.forEachIn(v.start, v.end, (c, s, vpn) => {
      if (st.failed) return;
      let f = c.flags[s] ?? 0;
      const pfn = c.pfn[s] ?? 0;
      // A mapped unit is a PTE, or a PMD (hugetlb page or THP: 512 PTE_HUGE entries, one reference).
      let unitPages = (f & PTE_HUGE) !== 0 ? HPAGE_PMD_NR : 1;
      let isHead = vpn % unitPages === 0;
      if (cow && v.order === 0 && isHead && (f & PTE_HUGE) !== 0 && (f & PTE_PRESENT) !== 0 && (f & PTE_ZERO) === 0 && mem.pageMaybeDmaPinned(pfn * PAGE_SIZE)) {
        // kernel: copy_huge_pmd — a THP that may be DMA-pinned is split and copied page by page
        // (copy_present_page) below.
        splitHugePmd(mm, vpn * PAGE_SIZE, false);
        f = c.flags[s] ?? 0;
        unitPages = 1;
        isHead = true;
      }
      if ((f & PTE_PRESENT) === 0) {
        if ((f & PTE_DEVICE_PRIVATE) !== 0) {
          // Device-private entries are copied (copy_nonpresent_pte, copy_huge_pmd for a
          // device-private PMD): the child reaches the same migrate_to_ram; both read-only.
          if (isHead) mem.pageGet(pfn * PAGE_SIZE);
          cpt.set(vpn, pfn, f & ~PTE_WRITE);
          c.flags[s] = f & ~PTE_WRITE;
        }
        return;
      }
      if ((f & PTE_ZERO) !== 0) {
        cpt.set(vpn, pfn, f);
        return;
      }
      const head = (pfn - (vpn % unitPages)) * PAGE_SIZE;
      if (!cow) {
        if (isHead) mem.pageGet(head);
        cpt.set(vpn, pfn, f);
        return;
      }
      if (mem.pageMaybeDmaPinned(head)) {
        if (isHead) {
          const copy = mem.allocPages(v.order, v.order > 0 ? GFP_COMP : 0);
          if (copy === 0) {
            st.failed = true;
            return;
          }
          mem.setPageFlags(copy, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
          mem.copy(copy, head, unitPages * PAGE_SIZE);
          cpt.mapUnit(vpn, unitPages, copy / PAGE_SIZE, f);
        }
        return;
      }
      if (isHead) {
        mem.pageGet(head);
        // Now shared with the child (the folio's flag: a page of a PTE-mapped large folio too).
        mem.clearPageFlags(mem.compoundHead(head), PageFlag.ANON_EXCLUSIVE);
      }
      c.flags[s] = f & ~PTE_WRITE;
      cpt.set(vpn, pfn, f & ~PTE_WRITE);
    });
    if (notify) mm.rangeEnd();
    if (st.failed) {
      exitMmap(child);
      return -Errno.ENOMEM;
    }
  }
  return 0;
}

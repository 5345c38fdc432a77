// kernel: kernel/fork.c (dup_mm, dup_mmap), mm/memory.c (copy_page_range, copy_present_page,
// page_needs_cow_for_dma)
import { PageFlag } from '../mem/pageMeta.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import { PTE_DEVICE_PRIVATE, PTE_PRESENT, PTE_WRITE, PTE_ZERO } from './constants.js';
import { exitMmap } from './mmap.js';
import type { MmCore } from './mmCore.js';
import { MMU_NOTIFY_PROTECTION_PAGE } from './mmuNotifier.js';
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
    const unitPages = 2 ** v.order;
    mm.pt.forEachIn(v.start, v.end, (c, s, vpn) => {
      if (st.failed) return;
      const f = c.flags[s] ?? 0;
      const pfn = c.pfn[s] ?? 0;
      const isHead = vpn % unitPages === 0;
      if ((f & PTE_PRESENT) === 0) {
        if ((f & PTE_DEVICE_PRIVATE) !== 0) {
          // Device-private entries are copied: the child reaches the same migrate_to_ram.
          mem.pageGet(pfn * PAGE_SIZE);
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
          const copy = mem.allocPages(v.order);
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
        mem.clearPageFlags(head, PageFlag.ANON_EXCLUSIVE); // now shared with the child
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

// kernel: mm/mprotect.c (do_mprotect_pkey, mprotect_fixup, change_pte_range)
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import { PROT_EXEC, PROT_READ, PROT_WRITE, PTE_WRITE } from './constants.js';
import { checkRange } from './mmap.js';
import type { MmCore } from './mmCore.js';
import { MMU_NOTIFY_PROTECTION_VMA } from './mmuNotifier.js';
import { splitHugePmdAt } from './thp.js';

/**
 * `mprotect`: returns 0, -EINVAL (unaligned, bad prot), or -ENOMEM (range not fully mapped; the
 * model checks before changing anything, the kernel may have changed a prefix).
 */
export function doMprotect(mm: MmCore, addr: number, length: number, prot: number): number {
  if (!Number.isInteger(prot) || (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0) return -Errno.EINVAL;
  if (length === 0 && Number.isSafeInteger(addr) && addr % PAGE_SIZE === 0) return 0;
  const end = checkRange(mm, addr, length);
  if (end < 0) return end;
  if (mm.exited) return -Errno.ENOMEM;
  const vmas = mm.vmas;
  for (let a = addr; a < end; ) {
    const v = vmas.find(a);
    if (v === undefined) return -Errno.ENOMEM;
    a = v.end;
  }
  // kernel: change_pmd_range — a THP PMD only partly inside the range is split; a whole one keeps
  // its PMD (change_huge_pmd) and loses its write bit below like every PTE.
  splitHugePmdAt(mm, addr);
  splitHugePmdAt(mm, end);
  vmas.splitAt(addr);
  vmas.splitAt(end);
  const notify = mm.pt.anyIn(addr, end);
  if (notify) mm.rangeStart(MMU_NOTIFY_PROTECTION_VMA, addr, end);
  const vs = vmas.list;
  for (let i = vmas.indexAtOrAfter(addr); i < vs.length; i++) {
    const v = vs[i];
    if (v === undefined || v.start >= end) break;
    v.prot = prot;
  }
  // change_pte_range: drop write permission; added permissions are granted by later faults.
  if ((prot & PROT_WRITE) === 0) mm.pt.forEachIn(addr, end, (c, s) => {
    c.flags[s] = (c.flags[s] ?? 0) & ~PTE_WRITE;
  });
  if (notify) mm.rangeEnd();
  return 0;
}

// kernel: mm/mremap.c (do_mremap, mremap_to, vma_expandable, move_vma, move_page_tables,
// move_huge_pmd, MREMAP_DONTUNMAP)
import { Errno } from '../units/errno.js';
import { HPAGE_PMD_SIZE, PAGE_SIZE, alignUp } from '../units/page.js';
import { MMAP_MIN_ADDR, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, TASK_SIZE } from './constants.js';
import { doMunmap } from './mmap.js';
import type { MmCore } from './mmCore.js';
import { MMU_NOTIFY_UNMAP } from './mmuNotifier.js';
import { splitHugePmdAt, splitHugePmdRange } from './thp.js';
import { VmArea } from './vmaTree.js';

/**
 * `mremap(old, oldLen, newLen, flags, newAddr)` of one VMA: shrink (the tail is unmapped), grow
 * in place when the space after it is free, or move (MREMAP_MAYMOVE, or MREMAP_FIXED to
 * `newAddr`): the PTEs move with their pages (mirrors see MMU_NOTIFY_UNMAP on the old range).
 * Returns the new address or -EINVAL (bad flags or alignment, hugetlb), -EFAULT (the range is
 * not inside one VMA), -ENOMEM (cannot grow in place without MREMAP_MAYMOVE, or no room).
 */
export function doMremap(mm: MmCore, oldAddr: number, oldLength: number, newLength: number, flags: number, newAddr: number | undefined): number {
  if (mm.exited) return -Errno.ENOMEM;
  if (!Number.isInteger(flags) || (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP)) !== 0) return -Errno.EINVAL;
  if ((flags & MREMAP_FIXED) !== 0 && (flags & MREMAP_MAYMOVE) === 0) return -Errno.EINVAL;
  // kernel: MREMAP_DONTUNMAP needs MREMAP_MAYMOVE and an unchanged size.
  const dontUnmap = (flags & MREMAP_DONTUNMAP) !== 0;
  if (dontUnmap && ((flags & MREMAP_MAYMOVE) === 0 || oldLength !== newLength)) return -Errno.EINVAL;
  if (!Number.isSafeInteger(oldAddr) || oldAddr < 0 || oldAddr % PAGE_SIZE !== 0) return -Errno.EINVAL;
  if (!Number.isSafeInteger(oldLength) || oldLength <= 0 || !Number.isSafeInteger(newLength) || newLength <= 0) return -Errno.EINVAL;
  const vmas = mm.vmas;
  const pt = mm.pt;
  const oldLen = alignUp(oldLength, PAGE_SIZE);
  const newLen = alignUp(newLength, PAGE_SIZE);
  const oldEnd = oldAddr + oldLen;
  const v = vmas.find(oldAddr);
  if (v === undefined || oldEnd > v.end) return -Errno.EFAULT;
  // Model: hugetlb VMAs are not remapped (the kernel needs huge alignment for them).
  if (v.hugetlb) return -Errno.EINVAL;
  // Model: MREMAP_DONTUNMAP for private anonymous mappings only (its first form, Linux 5.7).
  if (dontUnmap && v.shared) return -Errno.EINVAL;
  if ((flags & MREMAP_FIXED) !== 0) {
    const a = newAddr ?? -1;
    if (!Number.isSafeInteger(a) || a < MMAP_MIN_ADDR || a % PAGE_SIZE !== 0 || a + newLen > TASK_SIZE) return -Errno.EINVAL;
    if (a < oldEnd && oldAddr < a + newLen) return -Errno.EINVAL; // overlapping ranges
  }
  if ((flags & MREMAP_FIXED) === 0 && !dontUnmap) {
    if (newLen <= oldLen) {
      if (newLen < oldLen) {
        const r = doMunmap(mm, oldAddr + newLen, oldLen - newLen);
        if (r < 0) return r;
      }
      return oldAddr;
    }
    // Grow in place when the old range ends the VMA and the space after it is free.
    if (oldEnd === v.end && oldEnd + (newLen - oldLen) <= TASK_SIZE && vmas.rangeFree(oldEnd, oldEnd + (newLen - oldLen))) {
      v.end = oldEnd + (newLen - oldLen);
      return oldAddr;
    }
    if ((flags & MREMAP_MAYMOVE) === 0) return -Errno.ENOMEM;
  }
  // Move: pick the destination, then carry the VMA part and its PTEs over.
  let dst: number;
  if ((flags & MREMAP_FIXED) !== 0) {
    dst = newAddr ?? 0;
    const r = doMunmap(mm, dst, newLen);
    if (r < 0) return r;
  } else {
    dst = vmas.getUnmappedArea(newLen, PAGE_SIZE);
    if (dst < 0) return dst;
  }
  const keep = Math.min(oldLen, newLen);
  // kernel: move_huge_pmd moves a whole THP PMD only between 2 MiB-aligned addresses; a PMD cut by
  // the range (or by the shrunk tail) or moved to an unaligned place is split first.
  splitHugePmdAt(mm, oldAddr);
  splitHugePmdAt(mm, oldEnd);
  splitHugePmdAt(mm, oldAddr + keep);
  if ((dst - oldAddr) % HPAGE_PMD_SIZE !== 0) splitHugePmdRange(mm, oldAddr, oldEnd);
  vmas.splitAt(oldAddr);
  vmas.splitAt(oldEnd);
  const src = vmas.find(oldAddr);
  if (src === undefined) return -Errno.EFAULT;
  const notify = pt.anyIn(oldAddr, oldEnd);
  if (notify) mm.rangeStart(MMU_NOTIFY_UNMAP, oldAddr, oldEnd);
  // move_page_tables: every PTE of the kept part moves with its page reference.
  const moved: number[] = [];
  pt.forEachIn(oldAddr, oldAddr + keep, (c, s, vpn) => {
    moved.push(vpn, c.pfn[s] ?? 0, c.flags[s] ?? 0);
  });
  for (let i = 0; i < moved.length; i += 3) pt.clearVpn(moved[i] ?? 0);
  for (let i = 0; i < moved.length; i += 3) {
    const vpn = moved[i] ?? 0;
    pt.set(dst / PAGE_SIZE + (vpn - oldAddr / PAGE_SIZE), moved[i + 1] ?? 0, moved[i + 2] ?? 0);
  }
  if (newLen < oldLen) pt.zapRange(oldAddr + keep, oldEnd, mm.putLater);
  const nv = new VmArea(dst, dst + newLen, src.prot, src.flags, src.order, src.shmem, src.pgoff);
  nv.vmFlags = src.vmFlags;
  nv.file = src.file;
  src.file?.vmaLink(nv, mm);
  // MREMAP_DONTUNMAP keeps the old VMA, now empty: later accesses fault in fresh zero pages.
  if (!dontUnmap) {
    src.file?.vmaUnlink(src);
    vmas.remove(src);
  }
  vmas.insert(nv);
  if (notify) mm.rangeEnd();
  mm.flushPuts();
  return dst;
}

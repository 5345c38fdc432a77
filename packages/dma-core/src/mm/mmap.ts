// kernel: mm/mmap.c (do_mmap, exit_mmap), mm/vma.c (do_vmi_munmap, vms_complete_munmap_vmas),
// mm/gup.c (populate_vma_page_range for MAP_POPULATE), mm/hugetlb.c (hugetlb_vm_op_split)
import { Errno } from '../units/errno.js';
import { HPAGE_PMD_SIZE, PAGE_SIZE, alignUp } from '../units/page.js';
import {
  HPAGE_PMD_ORDER,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_HUGETLB,
  MAP_KNOWN_FLAGS,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MAP_SHARED_VALIDATE,
  MAP_TYPE,
  MMAP_MIN_ADDR,
  PROT_EXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  TASK_SIZE,
} from './constants.js';
import { fileMmapCheck, fileMmapSetup } from './file.js';
import type { VfsFile } from './file.js';
import { doFault } from './memory.js';
import type { MmCore } from './mmCore.js';
import { MMU_NOTIFY_RELEASE, MMU_NOTIFY_UNMAP } from './mmuNotifier.js';
import { splitHugePmdAt } from './thp.js';
import { ShmemObject, VmArea } from './vmaTree.js';

/** Arguments of mmap: length, protection, flags and an optional address hint. */
export interface MmapArgs {
  length: number;
  prot: number;
  flags: number;
  /** Hint (or the exact address with MAP_FIXED / MAP_FIXED_NOREPLACE). */
  addr?: number;
  /** The open file to map (the fd of mmap(2)); ignored with MAP_ANONYMOUS. See mm/file.ts. */
  file?: VfsFile;
  /** Byte offset into the file (page aligned). Default 0. */
  offset?: number;
}

/**
 * `do_mmap` of anonymous memory or of a file (`args.file`, mm/file.ts). Returns the start address,
 * or a negative errno: -EINVAL (zero length, bad flags, unaligned MAP_FIXED or offset), -EBADF
 * (no file without MAP_ANONYMOUS), -EACCES (file mode forbids the mapping), -ENODEV,
 * -ENOMEM (no room / above TASK_SIZE), -EEXIST (MAP_FIXED_NOREPLACE over a mapping),
 * -EPERM (below mmap_min_addr). A non-fixed hint that does not fit is ignored, as in the kernel.
 */
export function doMmap(mm: MmCore, args: MmapArgs): number {
  const { length, prot, flags } = args;
  if (mm.exited) return -Errno.ENOMEM;
  if (!Number.isSafeInteger(length) || length <= 0) return -Errno.EINVAL;
  if ((prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0 || !Number.isInteger(prot)) return -Errno.EINVAL;
  if (!Number.isInteger(flags)) return -Errno.EINVAL;
  const type = flags & MAP_TYPE;
  if (type !== MAP_SHARED && type !== MAP_PRIVATE && type !== MAP_SHARED_VALIDATE) return -Errno.EINVAL;
  // kernel: legacy MAP_SHARED/MAP_PRIVATE ignore unknown flags; MAP_SHARED_VALIDATE refuses them.
  if (type === MAP_SHARED_VALIDATE && (flags & ~MAP_KNOWN_FLAGS) !== 0) return -Errno.EOPNOTSUPP;
  const file = (flags & MAP_ANONYMOUS) === 0 ? args.file : undefined;
  if ((flags & MAP_ANONYMOUS) === 0) {
    const r = fileMmapCheck(args.file, prot, flags, args.offset ?? 0);
    if (r < 0) return r;
  }
  const order = (flags & MAP_HUGETLB) !== 0 ? HPAGE_PMD_ORDER : 0;
  const unit = PAGE_SIZE * 2 ** order;
  const len = alignUp(length, unit);
  if (len > TASK_SIZE) return -Errno.ENOMEM;
  const fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) !== 0;
  const vmas = mm.vmas;
  let addr: number;
  if (fixed) {
    const a = args.addr ?? -1;
    if (!Number.isSafeInteger(a) || a < 0 || a % unit !== 0) return -Errno.EINVAL;
    if (a + len > TASK_SIZE) return -Errno.ENOMEM;
    if (a < MMAP_MIN_ADDR) return -Errno.EPERM;
    if ((flags & MAP_FIXED_NOREPLACE) !== 0 && (flags & MAP_FIXED) === 0) {
      if (!vmas.rangeFree(a, a + len)) return -Errno.EEXIST;
    } else {
      const r = doMunmap(mm, a, len);
      if (r < 0) return r;
    }
    addr = a;
  } else {
    const hint = args.addr === undefined ? 0 : alignUp(args.addr, unit);
    if (hint >= MMAP_MIN_ADDR && Number.isSafeInteger(hint) && hint + len <= TASK_SIZE && vmas.rangeFree(hint, hint + len)) addr = hint;
    else {
      // kernel: __get_unmapped_area -> thp_get_unmapped_area — a private anonymous mapping whose
      // length is a multiple of PMD_SIZE is placed 2 MiB-aligned so THPs can back it (Linux 6.7,
      // limited to PMD-multiple lengths in 6.13).
      const thpAlign = order === 0 && type === MAP_PRIVATE && (flags & MAP_ANONYMOUS) !== 0 && args.addr === undefined && len % HPAGE_PMD_SIZE === 0 ? HPAGE_PMD_SIZE : unit;
      addr = vmas.getUnmappedArea(len, thpAlign);
      if (addr < 0) return addr;
    }
  }
  const shared = type !== MAP_PRIVATE;
  const shmem = shared && file === undefined ? new ShmemObject(order) : undefined;
  const pgoff = file === undefined ? 0 : (args.offset ?? 0) / PAGE_SIZE;
  const v = new VmArea(addr, addr + len, prot, (shared ? MAP_SHARED : MAP_PRIVATE) | (flags & MAP_HUGETLB), order, shmem, pgoff);
  vmas.insert(v);
  if (file !== undefined) {
    const r = fileMmapSetup(mm, v, file);
    if (r < 0) {
      doMunmap(mm, addr, len);
      return r;
    }
  }
  if ((flags & MAP_POPULATE) !== 0 && prot !== PROT_NONE) {
    // kernel: populate_vma_page_range — write faults for private writable mappings.
    const write = (prot & PROT_WRITE) !== 0 && !shared;
    for (let a = addr; a < addr + len; a += unit) {
      if (doFault(mm, v, a, write) < 0) break; // MAP_POPULATE failures are not reported
    }
  }
  return addr;
}

/**
 * Check a range [addr, addr + length) for munmap/mprotect: the page-aligned end, or -EINVAL
 * (unaligned, empty, above TASK_SIZE, or a hugetlb VMA would be split off a huge boundary).
 */
export function checkRange(mm: MmCore, addr: number, length: number): number {
  if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) return -Errno.EINVAL;
  if (!Number.isSafeInteger(length) || length <= 0) return -Errno.EINVAL;
  const end = addr + alignUp(length, PAGE_SIZE);
  if (end > TASK_SIZE) return -Errno.EINVAL;
  // kernel: hugetlb_vm_op_split refuses splits off a huge page boundary.
  for (const cut of [addr, end]) {
    const v = mm.vmas.find(cut);
    if (v !== undefined && v.hugetlb && v.start !== cut && cut % (PAGE_SIZE * 2 ** v.order) !== 0) return -Errno.EINVAL;
  }
  return end;
}

/** `do_munmap`: returns 0 or -EINVAL. Partial unmaps split VMAs. */
export function doMunmap(mm: MmCore, addr: number, length: number): number {
  const end = checkRange(mm, addr, length);
  if (end < 0) return end;
  const vmas = mm.vmas;
  if (vmas.rangeFree(addr, end)) return 0;
  // kernel: vma_adjust_trans_huge / zap_pmd_range — a THP PMD cut by the range is split first.
  splitHugePmdAt(mm, addr);
  splitHugePmdAt(mm, end);
  vmas.splitAt(addr);
  vmas.splitAt(end);
  const notify = mm.pt.anyIn(addr, end);
  if (notify) mm.rangeStart(MMU_NOTIFY_UNMAP, addr, end);
  mm.pt.zapRange(addr, end, mm.putLater);
  const vs = vmas.list;
  const i = vmas.indexAtOrAfter(addr);
  let j = i;
  while (j < vs.length && (vs[j]?.start ?? end) < end) {
    const v = vs[j];
    if (v !== undefined) dropVmaObject(mm, v);
    j++;
  }
  vs.splice(i, j - i);
  if (notify) mm.rangeEnd();
  mm.flushPuts();
  return 0;
}

/** Drop a VMA's reference on its shmem object; the last one queues the object's pages. */
function dropVmaObject(mm: MmCore, v: VmArea): void {
  v.file?.vmaUnlink(v);
  const s = v.shmem;
  if (s === undefined) return;
  s.users--;
  if (s.users === 0) {
    for (const head of s.pages.values()) mm.putLater.push(head);
    s.pages.clear();
  }
}

/**
 * `exit_mmap`: RELEASE to every interval notifier (mn_itree_release), then unmap everything.
 * Afterwards the mm refuses faults and new mappings.
 */
export function exitMmap(mm: MmCore): void {
  if (mm.exited) return;
  const subs = mm.subs;
  if (subs.itree.length > 0) {
    subs.invalidateStart({ mm: mm.mm, start: 0, end: TASK_SIZE, event: MMU_NOTIFY_RELEASE });
    subs.invalidateEnd();
  }
  const vs = mm.vmas.list;
  const first = vs[0];
  const last = vs[vs.length - 1];
  if (first !== undefined && last !== undefined) doMunmap(mm, first.start, last.end - first.start);
  mm.exited = true;
}

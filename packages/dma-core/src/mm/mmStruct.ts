// kernel: mm/mmap.c, mm/vma.c, mm/memory.c, mm/mprotect.c, mm/shmem.c (anonymous shared), mm/hugetlb.c
import type { SystemMemory } from '../mem/systemMemory.js';
import { GFP_ZERO } from '../mem/systemMemory.js';
import { PageFlag } from '../mem/pageMeta.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE, alignDown, alignUp } from '../units/page.js';
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
  MMAP_BASE,
  MMAP_MIN_ADDR,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PROT_EXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  PTE_DEVICE_PRIVATE,
  PTE_DIRTY,
  PTE_HUGE,
  PTE_PRESENT,
  PTE_WRITE,
  PTE_YOUNG,
  PTE_ZERO,
  TASK_SIZE,
} from './constants.js';
import {
  MMU_NOTIFY_CLEAR,
  MMU_NOTIFY_PROTECTION_PAGE,
  MMU_NOTIFY_PROTECTION_VMA,
  MMU_NOTIFY_RELEASE,
  MMU_NOTIFY_UNMAP,
  MmuNotifierSubscriptions,
} from './mmuNotifier.js';
import type { MmuNotifierEvent, MmuNotifierRange } from './mmuNotifier.js';
import type { Process } from './process.js';

/** A CPU access the address space refuses (the process would get SIGSEGV, or SIGBUS on OOM). */
export class SegvError extends Error {
  readonly addr: number;
  readonly write: boolean;
  /** SEGV_MAPERR (nothing mapped), SEGV_ACCERR (protection), or 'oom' (VM_FAULT_OOM/SIGBUS). */
  readonly reason: 'maperr' | 'accerr' | 'oom';

  constructor(addr: number, write: boolean, reason: 'maperr' | 'accerr' | 'oom') {
    super(`${reason === 'oom' ? 'SIGBUS' : 'SIGSEGV'} (${reason}) on ${write ? 'write' : 'read'} at 0x${addr.toString(16)}`);
    this.name = 'SegvError';
    this.addr = addr;
    this.write = write;
    this.reason = reason;
  }
}

/**
 * The pages behind a MAP_SHARED|MAP_ANONYMOUS mapping (a shmem inode): indexed by unit
 * (page or huge page), each entry holds one reference; mappings hold their own.
 */
export class ShmemObject {
  readonly pages = new Map<number, number>();
  /** VMAs referencing this object. */
  users = 1;
  readonly order: number;

  constructor(order: number) {
    this.order = order;
  }
}

/** `struct vm_area_struct` (anonymous memory only). */
export class VmArea {
  start: number;
  end: number;
  prot: number;
  /** MAP_SHARED / MAP_PRIVATE plus MAP_HUGETLB. */
  readonly flags: number;
  /** Page offset into the shared object. */
  pgoff: number;
  /** 0, or HPAGE_PMD_ORDER for MAP_HUGETLB. */
  readonly order: number;
  /** The shared object behind a MAP_SHARED mapping. */
  readonly shmem: ShmemObject | undefined;
  /**
   * Extra `vm_flags` bits the model does not derive from prot/flags (VM_IO, VM_PFNMAP: what a
   * driver's mmap with remap_pfn_range sets). Kept across splits and fork.
   */
  vmFlags = 0;

  constructor(start: number, end: number, prot: number, flags: number, order: number, shmem: ShmemObject | undefined, pgoff: number) {
    this.start = start;
    this.end = end;
    this.prot = prot;
    this.flags = flags;
    this.order = order;
    this.shmem = shmem;
    this.pgoff = pgoff;
  }

  /** True for a shared mapping (MAP_SHARED). */
  get shared(): boolean {
    return this.shmem !== undefined;
  }

  /** True for a huge-page mapping (MAP_HUGETLB). */
  get hugetlb(): boolean {
    return this.order > 0;
  }
}

/** Arguments of mmap: length, protection, flags and an optional address hint. */
export interface MmapArgs {
  length: number;
  prot: number;
  flags: number;
  /** Hint (or the exact address with MAP_FIXED / MAP_FIXED_NOREPLACE). */
  addr?: number;
}

const PTE_CHUNK = 512;

/** One PTE table: 512 entries = 2 MiB of virtual space. */
class PteChunk {
  readonly pfn = new Float64Array(PTE_CHUNK);
  readonly flags = new Uint8Array(PTE_CHUNK);
  used = 0;
}

/** Callback for CPU faults on device-private entries (`dev_pagemap_ops.migrate_to_ram`). */
export type MigrateToRam = (mm: MmStruct, addr: number, devicePfn: number) => number;

/**
 * `struct mm_struct`: VMAs, the CPU page table, faults, and the mmu notifier subscriptions.
 *
 * Placement: top-down from MMAP_BASE, like x86-64's default (arch_get_unmapped_area_topdown).
 * Syscall-like methods return a negative errno on bad input (never throw); CPU accesses
 * (`read`/`write`) throw SegvError. Adjacent VMAs are not merged (vma_merge is not modelled).
 */
export class MmStruct {
  readonly memory: SystemMemory;
  readonly notifierSubscriptions = new MmuNotifierSubscriptions();
  /** Called on CPU access to a device-private entry; returns 0 once the page is back in RAM. */
  migrateToRam: MigrateToRam | undefined;
  readonly #owner: Process;
  readonly #vmas: VmArea[] = [];
  readonly #pt = new Map<number, PteChunk>();
  #exited = false;
  #rss = 0;
  /** Heads to put_page after the notifier range ends (tlb_finish_mmu). Reused. */
  readonly #putLater: number[] = [];
  #lastChunkIdx = -1;
  #lastChunk: PteChunk | undefined;

  constructor(memory: SystemMemory, owner: Process) {
    this.memory = memory;
    this.#owner = owner;
  }

  /** Pid of the owning process. */
  get pid(): number {
    return this.#owner.pid;
  }

  /** The owning process. */
  get process(): Process {
    return this.#owner;
  }

  /** `fork()` of the owning process: the child, or -ENOMEM. */
  fork(): Process | number {
    return this.#owner.fork();
  }

  /** True once the owning process has exited (the mm is torn down). */
  get exited(): boolean {
    return this.#exited;
  }

  /** Pages mapped (present PTEs, zero page included). */
  get rssPages(): number {
    return this.#rss;
  }

  /** The VMAs of this address space, sorted by start. */
  get vmas(): readonly VmArea[] {
    return this.#vmas;
  }

  /** The mm's notifier sequence (odd while an invalidation is open). */
  get invalidateSeq(): number {
    return this.notifierSubscriptions.invalidateSeq;
  }

  // ---- VMAs -------------------------------------------------------------------------------

  /** `vma_lookup`: the VMA containing `addr`, or undefined (O(log n)). */
  findVma(addr: number): VmArea | undefined {
    const i = this.#indexAtOrAfter(addr);
    const v = this.#vmas[i];
    return v !== undefined && v.start <= addr ? v : undefined;
  }

  /** Index of the first VMA whose end is above `addr`. */
  #indexAtOrAfter(addr: number): number {
    const vs = this.#vmas;
    let lo = 0;
    let hi = vs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((vs[mid]?.end ?? 0) <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #insertVma(v: VmArea): void {
    this.#vmas.splice(this.#indexAtOrAfter(v.start), 0, v);
  }

  #rangeFree(start: number, end: number): boolean {
    const v = this.#vmas[this.#indexAtOrAfter(start)];
    return v === undefined || v.start >= end;
  }

  #getUnmappedArea(len: number, align: number): number {
    let high = MMAP_BASE;
    const vs = this.#vmas;
    for (let i = this.#indexAtOrAfter(high) - 1; i >= -1; i--) {
      const v = vs[i];
      const low = v === undefined ? MMAP_MIN_ADDR : v.end;
      if (v !== undefined && v.end > high) {
        high = Math.min(high, v.start);
        continue;
      }
      const start = alignDown(high - len, align);
      if (start >= low && start >= MMAP_MIN_ADDR) return start;
      if (v !== undefined) high = v.start;
    }
    return -Errno.ENOMEM;
  }

  /**
   * `mmap` of anonymous memory. Returns the start address, or a negative errno:
   * -EINVAL (zero length, bad flags, unaligned MAP_FIXED), -EBADF (file mappings are not modelled),
   * -ENOMEM (no room / above TASK_SIZE), -EEXIST (MAP_FIXED_NOREPLACE over a mapping),
   * -EPERM (below mmap_min_addr). A non-fixed hint that does not fit is ignored, as in the kernel.
   */
  mmap(args: MmapArgs): number {
    const { length, prot, flags } = args;
    if (this.#exited) return -Errno.ENOMEM;
    if (!Number.isSafeInteger(length) || length <= 0) return -Errno.EINVAL;
    if ((prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0 || !Number.isInteger(prot)) return -Errno.EINVAL;
    if (!Number.isInteger(flags)) return -Errno.EINVAL;
    const type = flags & MAP_TYPE;
    if (type !== MAP_SHARED && type !== MAP_PRIVATE && type !== MAP_SHARED_VALIDATE) return -Errno.EINVAL;
    // kernel: legacy MAP_SHARED/MAP_PRIVATE ignore unknown flags; MAP_SHARED_VALIDATE refuses them.
    if (type === MAP_SHARED_VALIDATE && (flags & ~MAP_KNOWN_FLAGS) !== 0) return -Errno.EOPNOTSUPP;
    if ((flags & MAP_ANONYMOUS) === 0) return -Errno.EBADF;
    const order = (flags & MAP_HUGETLB) !== 0 ? HPAGE_PMD_ORDER : 0;
    const unit = PAGE_SIZE * 2 ** order;
    const len = alignUp(length, unit);
    if (len > TASK_SIZE) return -Errno.ENOMEM;
    const fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) !== 0;
    let addr: number;
    if (fixed) {
      const a = args.addr ?? -1;
      if (!Number.isSafeInteger(a) || a < 0 || a % unit !== 0) return -Errno.EINVAL;
      if (a + len > TASK_SIZE) return -Errno.ENOMEM;
      if (a < MMAP_MIN_ADDR) return -Errno.EPERM;
      if ((flags & MAP_FIXED_NOREPLACE) !== 0 && (flags & MAP_FIXED) === 0) {
        if (!this.#rangeFree(a, a + len)) return -Errno.EEXIST;
      } else {
        const r = this.munmap(a, len);
        if (r < 0) return r;
      }
      addr = a;
    } else {
      const hint = args.addr === undefined ? 0 : alignUp(args.addr, unit);
      if (hint >= MMAP_MIN_ADDR && Number.isSafeInteger(hint) && hint + len <= TASK_SIZE && this.#rangeFree(hint, hint + len)) addr = hint;
      else {
        addr = this.#getUnmappedArea(len, unit);
        if (addr < 0) return addr;
      }
    }
    const shared = type !== MAP_PRIVATE;
    const v = new VmArea(addr, addr + len, prot, (shared ? MAP_SHARED : MAP_PRIVATE) | (flags & MAP_HUGETLB), order, shared ? new ShmemObject(order) : undefined, 0);
    this.#insertVma(v);
    if ((flags & MAP_POPULATE) !== 0 && prot !== PROT_NONE) {
      // kernel: populate_vma_page_range — write faults for private writable mappings.
      const write = (prot & PROT_WRITE) !== 0 && !shared;
      for (let a = addr; a < addr + len; a += unit) {
        if (this.#fault(v, a, write) < 0) break; // MAP_POPULATE failures are not reported
      }
    }
    return addr;
  }

  /** Check a range [start, end) and that no hugetlb VMA would be split off a huge boundary. */
  #checkRange(addr: number, length: number): number {
    if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) return -Errno.EINVAL;
    if (!Number.isSafeInteger(length) || length <= 0) return -Errno.EINVAL;
    const end = addr + alignUp(length, PAGE_SIZE);
    if (end > TASK_SIZE) return -Errno.EINVAL;
    // kernel: hugetlb_vm_op_split refuses splits off a huge page boundary.
    for (const cut of [addr, end]) {
      const v = this.findVma(cut);
      if (v !== undefined && v.hugetlb && v.start !== cut && cut % (PAGE_SIZE * 2 ** v.order) !== 0) return -Errno.EINVAL;
    }
    return end;
  }

  /** Split the VMA containing `addr` so a VMA boundary falls on it (`split_vma`). */
  #splitAt(addr: number): void {
    const v = this.findVma(addr);
    if (v === undefined || v.start === addr) return;
    if (v.shmem !== undefined) v.shmem.users++;
    const upper = new VmArea(addr, v.end, v.prot, v.flags, v.order, v.shmem, v.pgoff + (addr - v.start) / PAGE_SIZE);
    upper.vmFlags = v.vmFlags;
    v.end = addr;
    this.#insertVma(upper);
  }

  /** `munmap`: returns 0 or -EINVAL. Partial unmaps split VMAs. */
  munmap(addr: number, length: number): number {
    const end = this.#checkRange(addr, length);
    if (end < 0) return end;
    if (this.#rangeFree(addr, end)) return 0;
    this.#splitAt(addr);
    this.#splitAt(end);
    const notify = this.#anyPresent(addr, end);
    if (notify) this.#rangeStart(MMU_NOTIFY_UNMAP, addr, end);
    this.#zapRange(addr, end);
    const vs = this.#vmas;
    const i = this.#indexAtOrAfter(addr);
    let j = i;
    while (j < vs.length && (vs[j]?.start ?? end) < end) {
      const v = vs[j];
      if (v !== undefined) this.#dropVmaObject(v);
      j++;
    }
    vs.splice(i, j - i);
    if (notify) this.#rangeEnd(MMU_NOTIFY_UNMAP, addr, end);
    this.#flushPuts();
    return 0;
  }

  /**
   * `mremap(old, oldLen, newLen, flags, newAddr)` of one VMA: shrink (the tail is unmapped), grow
   * in place when the space after it is free, or move (MREMAP_MAYMOVE, or MREMAP_FIXED to
   * `newAddr`): the PTEs move with their pages (mirrors see MMU_NOTIFY_UNMAP on the old range).
   * Returns the new address or -EINVAL (bad flags or alignment, hugetlb), -EFAULT (the range is
   * not inside one VMA), -ENOMEM (cannot grow in place without MREMAP_MAYMOVE, or no room).
   */
  mremap(oldAddr: number, oldLength: number, newLength: number, flags = 0, newAddr?: number): number {
    if (this.#exited) return -Errno.ENOMEM;
    if (!Number.isInteger(flags) || (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED)) !== 0) return -Errno.EINVAL;
    if ((flags & MREMAP_FIXED) !== 0 && (flags & MREMAP_MAYMOVE) === 0) return -Errno.EINVAL;
    if (!Number.isSafeInteger(oldAddr) || oldAddr < 0 || oldAddr % PAGE_SIZE !== 0) return -Errno.EINVAL;
    if (!Number.isSafeInteger(oldLength) || oldLength <= 0 || !Number.isSafeInteger(newLength) || newLength <= 0) return -Errno.EINVAL;
    const oldLen = alignUp(oldLength, PAGE_SIZE);
    const newLen = alignUp(newLength, PAGE_SIZE);
    const oldEnd = oldAddr + oldLen;
    const v = this.findVma(oldAddr);
    if (v === undefined || oldEnd > v.end) return -Errno.EFAULT;
    // Model: hugetlb VMAs are not remapped (the kernel needs huge alignment for them).
    if (v.hugetlb) return -Errno.EINVAL;
    if ((flags & MREMAP_FIXED) !== 0) {
      const a = newAddr ?? -1;
      if (!Number.isSafeInteger(a) || a < MMAP_MIN_ADDR || a % PAGE_SIZE !== 0 || a + newLen > TASK_SIZE) return -Errno.EINVAL;
      if (a < oldEnd && oldAddr < a + newLen) return -Errno.EINVAL; // overlapping ranges
    }
    if ((flags & MREMAP_FIXED) === 0) {
      if (newLen <= oldLen) {
        if (newLen < oldLen) {
          const r = this.munmap(oldAddr + newLen, oldLen - newLen);
          if (r < 0) return r;
        }
        return oldAddr;
      }
      // Grow in place when the old range ends the VMA and the space after it is free.
      if (oldEnd === v.end && oldEnd + (newLen - oldLen) <= TASK_SIZE && this.#rangeFree(oldEnd, oldEnd + (newLen - oldLen))) {
        v.end = oldEnd + (newLen - oldLen);
        return oldAddr;
      }
      if ((flags & MREMAP_MAYMOVE) === 0) return -Errno.ENOMEM;
    }
    // Move: pick the destination, then carry the VMA part and its PTEs over.
    let dst: number;
    if ((flags & MREMAP_FIXED) !== 0) {
      dst = newAddr ?? 0;
      const r = this.munmap(dst, newLen);
      if (r < 0) return r;
    } else {
      dst = this.#getUnmappedArea(newLen, PAGE_SIZE);
      if (dst < 0) return dst;
    }
    this.#splitAt(oldAddr);
    this.#splitAt(oldEnd);
    const src = this.findVma(oldAddr);
    if (src === undefined) return -Errno.EFAULT;
    const keep = Math.min(oldLen, newLen);
    const notify = this.#anyPresent(oldAddr, oldEnd);
    if (notify) this.#rangeStart(MMU_NOTIFY_UNMAP, oldAddr, oldEnd);
    // move_page_tables: every PTE of the kept part moves with its page reference.
    const moved: number[] = [];
    this.#forEachPte(oldAddr, oldAddr + keep, (c, s, vpn) => {
      moved.push(vpn, c.pfn[s] ?? 0, c.flags[s] ?? 0);
    });
    for (let i = 0; i < moved.length; i += 3) {
      const vpn = moved[i] ?? 0;
      const ci = Math.floor(vpn / PTE_CHUNK);
      const c = this.#pt.get(ci);
      if (c !== undefined) this.#clearPte(c, vpn % PTE_CHUNK, ci);
    }
    for (let i = 0; i < moved.length; i += 3) {
      const vpn = moved[i] ?? 0;
      this.#setPte(dst / PAGE_SIZE + (vpn - oldAddr / PAGE_SIZE), moved[i + 1] ?? 0, moved[i + 2] ?? 0);
    }
    if (newLen < oldLen) this.#zapRange(oldAddr + keep, oldEnd);
    const nv = new VmArea(dst, dst + newLen, src.prot, src.flags, src.order, src.shmem, src.pgoff);
    nv.vmFlags = src.vmFlags;
    const i = this.#vmas.indexOf(src);
    if (i >= 0) this.#vmas.splice(i, 1);
    this.#insertVma(nv);
    if (notify) this.#rangeEnd(MMU_NOTIFY_UNMAP, oldAddr, oldEnd);
    this.#flushPuts();
    return dst;
  }

  #dropVmaObject(v: VmArea): void {
    const s = v.shmem;
    if (s === undefined) return;
    s.users--;
    if (s.users === 0) {
      for (const head of s.pages.values()) this.#putLater.push(head);
      s.pages.clear();
    }
  }

  /**
   * `mprotect`: returns 0, -EINVAL (unaligned, bad prot), or -ENOMEM (range not fully mapped; the
   * model checks before changing anything, the kernel may have changed a prefix).
   */
  mprotect(addr: number, length: number, prot: number): number {
    if (!Number.isInteger(prot) || (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0) return -Errno.EINVAL;
    if (length === 0 && Number.isSafeInteger(addr) && addr % PAGE_SIZE === 0) return 0;
    const end = this.#checkRange(addr, length);
    if (end < 0) return end;
    if (this.#exited) return -Errno.ENOMEM;
    for (let a = addr; a < end; ) {
      const v = this.findVma(a);
      if (v === undefined) return -Errno.ENOMEM;
      a = v.end;
    }
    this.#splitAt(addr);
    this.#splitAt(end);
    const notify = this.#anyPresent(addr, end);
    if (notify) this.#rangeStart(MMU_NOTIFY_PROTECTION_VMA, addr, end);
    for (let i = this.#indexAtOrAfter(addr); i < this.#vmas.length; i++) {
      const v = this.#vmas[i];
      if (v === undefined || v.start >= end) break;
      v.prot = prot;
    }
    // change_pte_range: drop write permission; added permissions are granted by later faults.
    if ((prot & PROT_WRITE) === 0) this.#forEachPte(addr, end, (c, s) => {
      c.flags[s] = (c.flags[s] ?? 0) & ~PTE_WRITE;
    });
    if (notify) this.#rangeEnd(MMU_NOTIFY_PROTECTION_VMA, addr, end);
    return 0;
  }

  // ---- notifier plumbing ------------------------------------------------------------------

  /** `mmu_notifier_invalidate_range_start`. Tests and migration code may hold a range open. */
  invalidateRangeStart(range: MmuNotifierRange): void {
    this.notifierSubscriptions.invalidateStart(range);
  }

  /** `mmu_notifier_invalidate_range_end`. */
  invalidateRangeEnd(_range: MmuNotifierRange): void {
    this.notifierSubscriptions.invalidateEnd();
  }

  /** Build a range for this mm (`mmu_notifier_range_init[_owner]`). */
  notifierRange(event: MmuNotifierEvent, start: number, end: number, owner?: unknown): MmuNotifierRange {
    return owner === undefined ? { mm: this, start, end, event } : { mm: this, start, end, event, owner };
  }

  #rangeStart(event: MmuNotifierEvent, start: number, end: number): void {
    const subs = this.notifierSubscriptions;
    // Cheap path: nobody listens, only the counters move.
    if (subs.itree.length === 0) subs.activeInvalidateRanges++;
    else subs.invalidateStart(this.notifierRange(event, start, end));
  }

  #rangeEnd(_event: MmuNotifierEvent, _start: number, _end: number): void {
    this.notifierSubscriptions.invalidateEnd();
  }

  // ---- page table -------------------------------------------------------------------------

  #chunkFor(vpn: number, create: boolean): PteChunk | undefined {
    const idx = Math.floor(vpn / PTE_CHUNK);
    if (idx === this.#lastChunkIdx) return this.#lastChunk;
    let c = this.#pt.get(idx);
    if (c === undefined) {
      if (!create) return undefined;
      c = new PteChunk();
      this.#pt.set(idx, c);
    }
    this.#lastChunkIdx = idx;
    this.#lastChunk = c;
    return c;
  }

  #setPte(vpn: number, pfn: number, flags: number): void {
    const c = this.#chunkFor(vpn, true);
    if (c === undefined) return;
    const s = vpn % PTE_CHUNK;
    const old = c.flags[s] ?? 0;
    if (old === 0) c.used++;
    if ((old & PTE_PRESENT) === 0 && (flags & PTE_PRESENT) !== 0) this.#rss++;
    if ((old & PTE_PRESENT) !== 0 && (flags & PTE_PRESENT) === 0) this.#rss--;
    c.pfn[s] = pfn;
    c.flags[s] = flags;
  }

  #clearPte(c: PteChunk, s: number, idx: number): void {
    const old = c.flags[s] ?? 0;
    if (old === 0) return;
    if ((old & PTE_PRESENT) !== 0) this.#rss--;
    c.flags[s] = 0;
    c.pfn[s] = 0;
    c.used--;
    if (c.used === 0) {
      this.#pt.delete(idx);
      if (this.#lastChunkIdx === idx) {
        this.#lastChunkIdx = -1;
        this.#lastChunk = undefined;
      }
    }
  }

  /** Visit existing PTE slots in [start, end), skipping empty tables. */
  #forEachPte(start: number, end: number, fn: (c: PteChunk, slot: number, vpn: number) => void): void {
    const v0 = start / PAGE_SIZE;
    const v1 = end / PAGE_SIZE;
    for (let ci = Math.floor(v0 / PTE_CHUNK); ci * PTE_CHUNK < v1; ci++) {
      const c = this.#pt.get(ci);
      if (c === undefined) continue;
      const lo = Math.max(v0, ci * PTE_CHUNK);
      const hi = Math.min(v1, (ci + 1) * PTE_CHUNK);
      for (let vpn = lo; vpn < hi; vpn++) {
        const s = vpn - ci * PTE_CHUNK;
        if ((c.flags[s] ?? 0) !== 0) fn(c, s, vpn);
      }
    }
  }

  #anyPresent(start: number, end: number): boolean {
    const v0 = start / PAGE_SIZE;
    const v1 = end / PAGE_SIZE;
    const c0 = Math.floor(v0 / PTE_CHUNK);
    const c1 = Math.ceil(v1 / PTE_CHUNK);
    if (c1 - c0 > this.#pt.size) {
      for (const [ci, c] of this.#pt) if (ci >= c0 && ci < c1 && c.used > 0 && this.#chunkHasIn(c, ci, v0, v1)) return true;
      return false;
    }
    for (let ci = c0; ci < c1; ci++) {
      const c = this.#pt.get(ci);
      if (c !== undefined && this.#chunkHasIn(c, ci, v0, v1)) return true;
    }
    return false;
  }

  #chunkHasIn(c: PteChunk, ci: number, v0: number, v1: number): boolean {
    const lo = Math.max(v0, ci * PTE_CHUNK) - ci * PTE_CHUNK;
    const hi = Math.min(v1, (ci + 1) * PTE_CHUNK) - ci * PTE_CHUNK;
    for (let s = lo; s < hi; s++) if ((c.flags[s] ?? 0) !== 0) return true;
    return false;
  }

  /** Clear PTEs in [start, end) and queue the page references they held. */
  #zapRange(start: number, end: number): void {
    const v0 = start / PAGE_SIZE;
    const v1 = end / PAGE_SIZE;
    const c0 = Math.floor(v0 / PTE_CHUNK);
    const c1 = Math.ceil(v1 / PTE_CHUNK);
    const idxs: number[] = [];
    if (c1 - c0 > this.#pt.size) {
      for (const ci of this.#pt.keys()) if (ci >= c0 && ci < c1) idxs.push(ci);
    } else {
      for (let ci = c0; ci < c1; ci++) if (this.#pt.has(ci)) idxs.push(ci);
    }
    for (const ci of idxs) {
      const c = this.#pt.get(ci);
      if (c === undefined) continue;
      const lo = Math.max(v0, ci * PTE_CHUNK);
      const hi = Math.min(v1, (ci + 1) * PTE_CHUNK);
      for (let vpn = lo; vpn < hi; vpn++) {
        const s = vpn - ci * PTE_CHUNK;
        const f = c.flags[s] ?? 0;
        if (f === 0) continue;
        const pfn = c.pfn[s] ?? 0;
        // One reference per mapped unit: order-0 page, or the head of a huge page.
        if ((f & PTE_ZERO) === 0 && (f & PTE_DEVICE_PRIVATE) === 0) {
          if ((f & PTE_HUGE) === 0) this.#putLater.push(pfn * PAGE_SIZE);
          else if (vpn % 2 ** HPAGE_PMD_ORDER === 0) this.#putLater.push(pfn * PAGE_SIZE);
        } else if ((f & PTE_DEVICE_PRIVATE) !== 0) {
          this.#putLater.push(pfn * PAGE_SIZE);
        }
        this.#clearPte(c, s, ci);
      }
    }
  }

  #flushPuts(): void {
    const q = this.#putLater;
    for (const phys of q) this.memory.pagePut(phys);
    q.length = 0;
  }

  /**
   * Walk the CPU page table without faulting (HMM's hmm_vma_walk): the pfn mapped at `addr`, or -1
   * when nothing is there. Device-private entries return their device pfn (check pteFlags).
   */
  walkPte(addr: number): number {
    const vpn = Math.floor(addr / PAGE_SIZE);
    const c = this.#chunkFor(vpn, false);
    if (c === undefined) return -1;
    const s = vpn % PTE_CHUNK;
    return (c.flags[s] ?? 0) === 0 ? -1 : (c.pfn[s] ?? -1);
  }

  /** PTE_* bits at `addr` (0 when nothing is mapped). */
  pteFlags(addr: number): number {
    const vpn = Math.floor(addr / PAGE_SIZE);
    const c = this.#chunkFor(vpn, false);
    return c === undefined ? 0 : (c.flags[vpn % PTE_CHUNK] ?? 0);
  }

  /** Mapping order at `addr` (0 for 4 KiB, 9 for a 2 MiB huge page), as hmm_pfn_to_map_order. */
  pteOrder(addr: number): number {
    return (this.pteFlags(addr) & PTE_HUGE) !== 0 ? HPAGE_PMD_ORDER : 0;
  }

  /**
   * Raw PTE write for migrate_vma-style users (HMM): the caller runs the notifier range and owns
   * the page references. Pass flags 0 to clear.
   */
  setPte(addr: number, pfn: number, flags: number): void {
    const vpn = Math.floor(addr / PAGE_SIZE);
    if (flags === 0) {
      const ci = Math.floor(vpn / PTE_CHUNK);
      const c = this.#pt.get(ci);
      if (c !== undefined) this.#clearPte(c, vpn % PTE_CHUNK, ci);
      return;
    }
    this.#setPte(vpn, pfn, flags);
  }

  /** Every non-empty PTE (tests, dumps): callback gets (addr, pfn, flags). */
  forEachPte(fn: (addr: number, pfn: number, flags: number) => void): void {
    const idxs = [...this.#pt.keys()].sort((a, b) => a - b);
    for (const ci of idxs) {
      const c = this.#pt.get(ci);
      if (c === undefined) continue;
      for (let s = 0; s < PTE_CHUNK; s++) {
        const f = c.flags[s] ?? 0;
        if (f !== 0) fn((ci * PTE_CHUNK + s) * PAGE_SIZE, c.pfn[s] ?? 0, f);
      }
    }
  }

  // ---- faults -----------------------------------------------------------------------------

  /**
   * `handle_mm_fault` for a fault at `addr`: returns 0 or a negative errno (-EFAULT: no VMA or the
   * VMA forbids the access, as GUP/HMM check; -ENOMEM: out of memory). Unlike the kernel's
   * handle_mm_fault this also checks VMA permissions, so HMM can call it directly.
   */
  handleMmFault(addr: number, write: boolean): number {
    if (this.#exited || !Number.isSafeInteger(addr) || addr < 0) return -Errno.EFAULT;
    const v = this.findVma(addr);
    if (v === undefined) return -Errno.EFAULT;
    if (write ? (v.prot & PROT_WRITE) === 0 : v.prot === PROT_NONE) return -Errno.EFAULT;
    return this.#fault(v, addr, write);
  }

  #fault(v: VmArea, addr: number, write: boolean): number {
    const unitPages = 2 ** v.order;
    const vpn = Math.floor(addr / PAGE_SIZE);
    const uvpn = vpn - (vpn % unitPages);
    const flags = this.pteFlags(addr);
    const mem = this.memory;
    const huge = v.order > 0 ? PTE_HUGE : 0;
    if ((flags & PTE_DEVICE_PRIVATE) !== 0) {
      // kernel: do_swap_page -> pgmap->ops->migrate_to_ram
      const cb = this.migrateToRam;
      if (cb === undefined) return -Errno.EFAULT;
      const r = cb(this, addr, this.walkPte(addr));
      if (r < 0) return r;
      return (this.pteFlags(addr) & PTE_PRESENT) !== 0 ? this.#fault(v, addr, write) : -Errno.EFAULT;
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
        this.#mapUnit(uvpn, unitPages, head / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | writable | huge | (write ? PTE_DIRTY : 0));
        return 0;
      }
      if (!write && v.order === 0) {
        // kernel: do_anonymous_page — read fault maps the zero page read-only.
        this.#setPte(vpn, mem.zeroPagePhys / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | PTE_ZERO);
        return 0;
      }
      const head = mem.allocPages(v.order, GFP_ZERO);
      if (head === 0) return -Errno.ENOMEM;
      mem.setPageFlags(head, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
      this.#mapUnit(uvpn, unitPages, head / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | writable | huge | (write ? PTE_DIRTY : 0));
      return 0;
    }
    if (!write || (flags & PTE_WRITE) !== 0) return 0;
    // Write to a present read-only entry in a writable VMA: do_wp_page.
    if (v.shmem !== undefined) {
      this.#protUnit(uvpn, unitPages, PTE_WRITE | PTE_DIRTY, 0);
      return 0;
    }
    const oldHeadPfn = (this.walkPte(uvpn * PAGE_SIZE));
    const oldHead = oldHeadPfn * PAGE_SIZE;
    if ((flags & PTE_ZERO) === 0 && ((mem.pageFlags(oldHead) & PageFlag.ANON_EXCLUSIVE) !== 0 || mem.getPageRef(oldHead) === 1)) {
      // do_wp_page -> wp_page_reuse: PageAnonExclusive, or we hold the only reference.
      mem.setPageFlags(oldHead, PageFlag.ANON_EXCLUSIVE);
      this.#protUnit(uvpn, unitPages, PTE_WRITE | PTE_DIRTY, 0);
      return 0;
    }
    // wp_page_copy: allocate first, then invalidate, copy, remap, and put the old page.
    const zero = (flags & PTE_ZERO) !== 0;
    const head = mem.allocPages(v.order, zero ? GFP_ZERO : 0);
    if (head === 0) return -Errno.ENOMEM;
    mem.setPageFlags(head, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
    const ustart = uvpn * PAGE_SIZE;
    const uend = ustart + unitPages * PAGE_SIZE;
    this.#rangeStart(MMU_NOTIFY_CLEAR, ustart, uend);
    if (!zero) mem.copy(head, oldHead, unitPages * PAGE_SIZE);
    this.#mapUnit(uvpn, unitPages, head / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | PTE_WRITE | PTE_DIRTY | huge);
    this.#rangeEnd(MMU_NOTIFY_CLEAR, ustart, uend);
    if (!zero) mem.pagePut(oldHead);
    return 0;
  }

  #mapUnit(uvpn: number, n: number, headPfn: number, flags: number): void {
    for (let i = 0; i < n; i++) this.#setPte(uvpn + i, headPfn + i, flags);
  }

  #protUnit(uvpn: number, n: number, set: number, clear: number): void {
    for (let i = 0; i < n; i++) {
      const vpn = uvpn + i;
      const c = this.#chunkFor(vpn, false);
      if (c === undefined) continue;
      const s = vpn % PTE_CHUNK;
      c.flags[s] = ((c.flags[s] ?? 0) | set) & ~clear;
    }
  }

  // ---- CPU access -------------------------------------------------------------------------

  /** Resolve a CPU access to the physical address, faulting as needed; throws SegvError. */
  #translate(addr: number, write: boolean): number {
    const vpn = Math.floor(addr / PAGE_SIZE);
    const c = this.#chunkFor(vpn, false);
    const s = vpn % PTE_CHUNK;
    let f = c === undefined ? 0 : (c.flags[s] ?? 0);
    const v = this.findVma(addr);
    if (v === undefined || this.#exited) throw new SegvError(addr, write, 'maperr');
    // x86: any non-PROT_NONE mapping is readable.
    if (write ? (v.prot & PROT_WRITE) === 0 : v.prot === PROT_NONE) throw new SegvError(addr, write, 'accerr');
    if ((f & PTE_PRESENT) === 0 || (write && (f & PTE_WRITE) === 0)) {
      const r = this.#fault(v, addr, write);
      if (r === -Errno.ENOMEM) throw new SegvError(addr, write, 'oom');
      if (r < 0) throw new SegvError(addr, write, 'accerr');
      f = this.pteFlags(addr);
    }
    const c2 = this.#chunkFor(vpn, false);
    if (c2 === undefined) throw new SegvError(addr, write, 'maperr');
    c2.flags[s] = f | PTE_YOUNG | (write ? PTE_DIRTY : 0);
    return (c2.pfn[s] ?? 0) * PAGE_SIZE + (addr - vpn * PAGE_SIZE);
  }

  /** CPU read of user memory (faults pages in). Throws SegvError. */
  read(addr: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.readInto(addr, out);
    return out;
  }

  /**
   * Copies user memory at addr into out, as the CPU would read it (faults pages in; throws SegvError on
   * a bad address).
   */
  readInto(addr: number, out: Uint8Array, len = out.length): void {
    this.#checkUser(addr, len, false);
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const n = Math.min(PAGE_SIZE - (a % PAGE_SIZE), len - done);
      const phys = this.#translate(a, false);
      this.memory.readInto(phys, out, done, n);
      done += n;
    }
  }

  /** CPU write of user memory (faults pages in, breaks COW). Throws SegvError. */
  write(addr: number, bytes: Uint8Array): void {
    const len = bytes.length;
    this.#checkUser(addr, len, true);
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const n = Math.min(PAGE_SIZE - (a % PAGE_SIZE), len - done);
      const phys = this.#translate(a, true);
      this.memory.write(phys, bytes, done, n);
      done += n;
    }
  }

  #checkUser(addr: number, len: number, write: boolean): void {
    if (!Number.isSafeInteger(addr) || addr < 0 || !Number.isSafeInteger(len) || len < 0 || addr + len > TASK_SIZE) {
      throw new SegvError(Number.isSafeInteger(addr) ? addr : -1, write, 'maperr');
    }
  }

  // ---- fork / exit ------------------------------------------------------------------------

  /**
   * `dup_mmap` into `child` (an empty mm): shared VMAs share their pages; private pages become
   * copy-on-write (write-protected in both, refcount +1), except pages that may be DMA-pinned,
   * which the child gets a copy of at once (kernel: copy_present_page / page_needs_cow_for_dma).
   * Returns 0 or -ENOMEM (the child is then torn down).
   */
  dupInto(child: MmStruct): number {
    if (this.#exited) return -Errno.ENOMEM;
    const mem = this.memory;
    // Device-private entries are copied below: the child reaches the same migrate_to_ram.
    child.migrateToRam ??= this.migrateToRam;
    for (const v of this.#vmas) {
      if (v.shmem !== undefined) v.shmem.users++;
      const cv = new VmArea(v.start, v.end, v.prot, v.flags, v.order, v.shmem, v.pgoff);
      cv.vmFlags = v.vmFlags;
      child.#insertVma(cv);
      const cow = v.shmem === undefined;
      const notify = cow && this.#anyPresent(v.start, v.end);
      // kernel: copy_page_range on a COW mapping write-protects the parent under PROTECTION_PAGE.
      if (notify) this.#rangeStart(MMU_NOTIFY_PROTECTION_PAGE, v.start, v.end);
      const st = { failed: false };
      const unitPages = 2 ** v.order;
      this.#forEachPte(v.start, v.end, (c, s, vpn) => {
        if (st.failed) return;
        const f = c.flags[s] ?? 0;
        const pfn = c.pfn[s] ?? 0;
        const isHead = vpn % unitPages === 0;
        if ((f & PTE_PRESENT) === 0) {
          if ((f & PTE_DEVICE_PRIVATE) !== 0) {
            mem.pageGet(pfn * PAGE_SIZE);
            child.#setPte(vpn, pfn, f & ~PTE_WRITE);
            c.flags[s] = f & ~PTE_WRITE;
          }
          return;
        }
        if ((f & PTE_ZERO) !== 0) {
          child.#setPte(vpn, pfn, f);
          return;
        }
        const head = (pfn - (vpn % unitPages)) * PAGE_SIZE;
        if (!cow) {
          if (isHead) mem.pageGet(head);
          child.#setPte(vpn, pfn, f);
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
            child.#mapUnit(vpn, unitPages, copy / PAGE_SIZE, f);
          }
          return;
        }
        if (isHead) {
          mem.pageGet(head);
          mem.clearPageFlags(head, PageFlag.ANON_EXCLUSIVE); // now shared with the child
        }
        c.flags[s] = f & ~PTE_WRITE;
        child.#setPte(vpn, pfn, f & ~PTE_WRITE);
      });
      if (notify) this.#rangeEnd(MMU_NOTIFY_PROTECTION_PAGE, v.start, v.end);
      if (st.failed) {
        child.exitMmap();
        return -Errno.ENOMEM;
      }
    }
    return 0;
  }

  /**
   * `exit_mmap`: RELEASE to every interval notifier (mn_itree_release), then unmap everything.
   * Afterwards the mm refuses faults and new mappings.
   */
  exitMmap(): void {
    if (this.#exited) return;
    const subs = this.notifierSubscriptions;
    if (subs.itree.length > 0) {
      const range = this.notifierRange(MMU_NOTIFY_RELEASE, 0, TASK_SIZE);
      subs.invalidateStart(range);
      subs.invalidateEnd();
    }
    const first = this.#vmas[0];
    const last = this.#vmas[this.#vmas.length - 1];
    if (first !== undefined && last !== undefined) this.munmap(first.start, last.end - first.start);
    this.#exited = true;
  }
}

// kernel: include/linux/mm_types.h (struct mm_struct). The work is done in the files named after
// the kernel's: vmaTree.ts (the VMA tree), pageTable.ts (the CPU page table), memory.ts (faults),
// mmap.ts (mmap, munmap, exit_mmap), mremap.ts, mprotect.ts, fork.ts (dup_mmap), uaccess.ts
// (copy_to/from_user); mmCore.ts holds the state they share.
import type { SystemMemory } from '../mem/systemMemory.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import { HPAGE_PMD_ORDER, PTE_HUGE } from './constants.js';
import { dupMmap } from './fork.js';
import { handleMmFault } from './memory.js';
import { MmCore } from './mmCore.js';
import { doMmap, doMunmap, exitMmap } from './mmap.js';
import type { MmapArgs } from './mmap.js';
import { doMadvise } from './madvise.js';
import { doMprotect } from './mprotect.js';
import { doMremap } from './mremap.js';
import { MmuNotifierSubscriptions } from './mmuNotifier.js';
import type { MmuNotifierEvent, MmuNotifierRange } from './mmuNotifier.js';
import { splitHugePage, splitHugePmd } from './thp.js';
import { copyFromUser, copyToUser } from './uaccess.js';
import type { PageTable } from './pageTable.js';
import type { VmArea, VmaTree } from './vmaTree.js';

declare module './mmuNotifier.js' {
  // The notifier code's `mm` is this MmStruct (see the forward declaration in mmuNotifier.ts).
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type -- completes a forward declaration
  interface MmuNotifierMm extends MmStruct {}
}

/**
 * The task that owns an mm (`mm->owner`), forward-declared as mm_types.h does: the members used
 * here. mm/process.ts completes it to the whole `Process` (declaration merging), so this file
 * does not import the process model that creates it.
 */
export interface MmOwner {
  readonly pid: number;
  /** `fork()`: the child, or -ENOMEM. */
  fork(): MmOwner | number;
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
  readonly #owner: MmOwner;
  readonly #mm: MmCore;
  // The core's page table and VMA tree, held here too so lookups (walkPte, pteFlags, findVma:
  // HMM's per-page walk) cost one field load, as before the split.
  readonly #pt: PageTable;
  readonly #vmas: VmaTree;

  constructor(memory: SystemMemory, owner: MmOwner) {
    this.memory = memory;
    this.#owner = owner;
    this.#mm = new MmCore(memory, this, (addr, devicePfn) => {
      const cb = this.migrateToRam;
      return cb === undefined ? -Errno.EFAULT : cb(this, addr, devicePfn);
    });
    this.#pt = this.#mm.pt;
    this.#vmas = this.#mm.vmas;
  }

  /** Pid of the owning process. */
  get pid(): number {
    return this.#owner.pid;
  }

  /** The owning process. */
  get process(): MmOwner {
    return this.#owner;
  }

  /** `fork()` of the owning process: the child, or -ENOMEM. */
  fork(): MmOwner | number {
    return this.#owner.fork();
  }

  /** True once the owning process has exited (the mm is torn down). */
  get exited(): boolean {
    return this.#mm.exited;
  }

  /** Pages mapped (present PTEs, zero page included). */
  get rssPages(): number {
    return this.#pt.rss;
  }

  /** The VMAs of this address space, sorted by start. */
  get vmas(): readonly VmArea[] {
    return this.#vmas.list;
  }

  /** The mm's notifier sequence (odd while an invalidation is open). */
  get invalidateSeq(): number {
    return this.notifierSubscriptions.invalidateSeq;
  }

  // ---- VMAs (vmaTree.ts, mmap.ts, mremap.ts, mprotect.ts) ------------------------------------

  /** `vma_lookup`: the VMA containing `addr`, or undefined (O(log n)). */
  findVma(addr: number): VmArea | undefined {
    return this.#vmas.find(addr);
  }

  /**
   * `mmap` of anonymous memory, or of a file (`args.file` with `args.offset`: tmpfs files and device
   * files, mm/file.ts). Returns the start address, or a negative errno: -EINVAL (zero length, bad
   * flags, unaligned MAP_FIXED or offset), -EBADF (no open file without MAP_ANONYMOUS), -EACCES (the
   * file's mode forbids the mapping), an error of the file's mmap, -ENOMEM (no room / above
   * TASK_SIZE), -EEXIST (MAP_FIXED_NOREPLACE over a mapping), -EPERM (below mmap_min_addr). A non-fixed hint that does not fit is ignored, as in the kernel.
   */
  mmap(args: MmapArgs): number {
    return doMmap(this.#mm, args);
  }

  /** `munmap`: returns 0 or -EINVAL. Partial unmaps split VMAs. */
  munmap(addr: number, length: number): number {
    return doMunmap(this.#mm, addr, length);
  }

  /**
   * `mremap(old, oldLen, newLen, flags, newAddr)` of one VMA: shrink (the tail is unmapped), grow
   * in place when the space after it is free, or move (MREMAP_MAYMOVE, or MREMAP_FIXED to
   * `newAddr`): the PTEs move with their pages (mirrors see MMU_NOTIFY_UNMAP on the old range).
   * Returns the new address or -EINVAL (bad flags or alignment, hugetlb), -EFAULT (the range is
   * not inside one VMA), -ENOMEM (cannot grow in place without MREMAP_MAYMOVE, or no room).
   */
  mremap(oldAddr: number, oldLength: number, newLength: number, flags = 0, newAddr?: number): number {
    return doMremap(this.#mm, oldAddr, oldLength, newLength, flags, newAddr);
  }

  /**
   * `mprotect`: returns 0, -EINVAL (unaligned, bad prot), or -ENOMEM (range not fully mapped; the
   * model checks before changing anything, the kernel may have changed a prefix).
   */
  mprotect(addr: number, length: number, prot: number): number {
    return doMprotect(this.#mm, addr, length, prot);
  }

  /**
   * `madvise`: MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTNEED, MADV_FREE, MADV_COLLAPSE. Returns 0
   * or a negative errno (see mm/madvise.ts).
   */
  madvise(addr: number, length: number, advice: number): number {
    return doMadvise(this.#mm, addr, length, advice);
  }

  // ---- transparent huge pages (thp.ts) --------------------------------------------------------

  /**
   * `split_huge_pmd_address`: turn the THP PMD mapping the 2 MiB block holding `addr` into 512 PTEs
   * (mirrors see MMU_NOTIFY_CLEAR). Returns true when a PMD was split.
   */
  splitHugePmd(addr: number): boolean {
    return splitHugePmd(this.#mm, addr, true);
  }

  /**
   * `split_folio` of the large folio mapped at `addr` (its PMD split first): 0 (also when the page
   * is not part of a large folio) or -EBUSY when references other than this mm's PTEs hold it.
   */
  splitHugePage(addr: number): number {
    return splitHugePage(this.#mm, addr);
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

  // ---- page table (pageTable.ts) -------------------------------------------------------------

  /**
   * Walk the CPU page table without faulting (HMM's hmm_vma_walk): the pfn mapped at `addr`, or -1
   * when nothing is there. Device-private entries return their device pfn (check pteFlags).
   */
  walkPte(addr: number): number {
    return this.#pt.walk(addr);
  }

  /** PTE_* bits at `addr` (0 when nothing is mapped). */
  pteFlags(addr: number): number {
    return this.#pt.flags(addr);
  }

  /** Mapping order at `addr` (0 for 4 KiB, 9 for a 2 MiB huge page), as hmm_pfn_to_map_order. */
  pteOrder(addr: number): number {
    return (this.#pt.flags(addr) & PTE_HUGE) !== 0 ? HPAGE_PMD_ORDER : 0;
  }

  /**
   * Raw PTE write for migrate_vma-style users (HMM): the caller runs the notifier range and owns
   * the page references. Pass flags 0 to clear.
   */
  setPte(addr: number, pfn: number, flags: number): void {
    const vpn = Math.floor(addr / PAGE_SIZE);
    if (flags === 0) this.#pt.clearVpn(vpn);
    else this.#pt.set(vpn, pfn, flags);
  }

  /** Is any entry (present or not) set in [start, end)? (`pmd_none` for a whole 2 MiB block.) */
  pteAnyIn(start: number, end: number): boolean {
    return this.#pt.anyIn(start, end);
  }

  /** Every non-empty PTE (tests, dumps): callback gets (addr, pfn, flags). */
  forEachPte(fn: (addr: number, pfn: number, flags: number) => void): void {
    this.#pt.forEach(fn);
  }

  // ---- faults (memory.ts) ---------------------------------------------------------------------

  /**
   * `handle_mm_fault` for a fault at `addr`: returns 0 or a negative errno (-EFAULT: no VMA or the
   * VMA forbids the access, as GUP/HMM check; -ENOMEM: out of memory). Unlike the kernel's
   * handle_mm_fault this also checks VMA permissions, so HMM can call it directly.
   */
  handleMmFault(addr: number, write: boolean): number {
    return handleMmFault(this.#mm, addr, write);
  }

  // ---- CPU access (uaccess.ts) ----------------------------------------------------------------

  /** CPU read of user memory (faults pages in). Throws SegvError. */
  read(addr: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    copyFromUser(this.#mm, addr, out, len);
    return out;
  }

  /**
   * Copies user memory at addr into out, as the CPU would read it (faults pages in; throws SegvError on
   * a bad address).
   */
  readInto(addr: number, out: Uint8Array, len = out.length): void {
    copyFromUser(this.#mm, addr, out, len);
  }

  /** CPU write of user memory (faults pages in, breaks COW). Throws SegvError. */
  write(addr: number, bytes: Uint8Array): void {
    copyToUser(this.#mm, addr, bytes);
  }

  // ---- fork / exit (fork.ts, mmap.ts) ---------------------------------------------------------

  /**
   * `dup_mmap` into `child` (an empty mm): shared VMAs share their pages; private pages become
   * copy-on-write (write-protected in both, refcount +1), except pages that may be DMA-pinned,
   * which the child gets a copy of at once (kernel: copy_present_page / page_needs_cow_for_dma).
   * Returns 0 or -ENOMEM (the child is then torn down).
   */
  dupInto(child: MmStruct): number {
    if (this.#mm.exited) return -Errno.ENOMEM;
    // Device-private entries are copied: the child reaches the same migrate_to_ram.
    child.migrateToRam ??= this.migrateToRam;
    return dupMmap(this.#mm, child.#mm);
  }

  /**
   * `exit_mmap`: RELEASE to every interval notifier (mn_itree_release), then unmap everything.
   * Afterwards the mm refuses faults and new mappings.
   */
  exitMmap(): void {
    exitMmap(this.#mm);
  }
}

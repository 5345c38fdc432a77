// kernel: include/linux/mm_types.h (struct vm_area_struct), mm/mmap.c (the VMA tree `mm->mm_mt`:
// vma_lookup, the top-down unmapped-area search), mm/vma.c (split_vma), mm/shmem.c (the object
// behind MAP_SHARED|MAP_ANONYMOUS)
import { Errno } from '../units/errno.js';
import { PAGE_SIZE, alignDown } from '../units/page.js';
import { MAP_SHARED, MMAP_BASE, MMAP_MIN_ADDR } from './constants.js';

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

/**
 * The mapped file of a VMA (`vma->vm_file`), forward-declared as the kernel's headers do: the
 * members used here. mm/file.ts completes it to the whole `VfsFile` (declaration merging), so this
 * file does not import the file model.
 */
export interface VmFile {
  /** split_vma: `upper` is the new half of `lower` and maps the file too. */
  vmaSplit(lower: VmArea, upper: VmArea): void;
}

/** `struct vm_area_struct`: anonymous, shared anonymous (shmem) or file-backed (`file`). */
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
  /** `vm_file`: the mapped file (mm/file.ts), undefined for anonymous memory. */
  file: VmFile | undefined = undefined;

  constructor(start: number, end: number, prot: number, flags: number, order: number, shmem: ShmemObject | undefined, pgoff: number) {
    this.start = start;
    this.end = end;
    this.prot = prot;
    this.flags = flags;
    this.order = order;
    this.shmem = shmem;
    this.pgoff = pgoff;
  }

  /** True for a shared mapping (MAP_SHARED, anonymous or file). */
  get shared(): boolean {
    return (this.flags & MAP_SHARED) !== 0;
  }

  /**
   * `vma_is_anonymous`: private anonymous memory (no shmem object, no file). Only such VMAs get
   * pages inserted into their holes by migration.
   */
  get anonymous(): boolean {
    return this.shmem === undefined && this.file === undefined;
  }

  /** True for a huge-page mapping (MAP_HUGETLB). */
  get hugetlb(): boolean {
    return this.order > 0;
  }
}

/**
 * The VMAs of one address space, sorted by start: the role of the kernel's maple tree
 * (`mm->mm_mt`). Lookups are binary searches; adjacent VMAs are not merged (vma_merge is not
 * modelled).
 */
export class VmaTree {
  readonly list: VmArea[] = [];

  /** `vma_lookup`: the VMA containing `addr`, or undefined (O(log n)). */
  find(addr: number): VmArea | undefined {
    const v = this.list[this.indexAtOrAfter(addr)];
    return v !== undefined && v.start <= addr ? v : undefined;
  }

  /** Index of the first VMA whose end is above `addr`. */
  indexAtOrAfter(addr: number): number {
    const vs = this.list;
    let lo = 0;
    let hi = vs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((vs[mid]?.end ?? 0) <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** `vma_iter_store`: insert a VMA that overlaps none. */
  insert(v: VmArea): void {
    this.list.splice(this.indexAtOrAfter(v.start), 0, v);
  }

  /** Remove one VMA (by identity). */
  remove(v: VmArea): void {
    const i = this.list.indexOf(v);
    if (i >= 0) this.list.splice(i, 1);
  }

  /** True when no VMA overlaps [start, end). */
  rangeFree(start: number, end: number): boolean {
    const v = this.list[this.indexAtOrAfter(start)];
    return v === undefined || v.start >= end;
  }

  /**
   * `arch_get_unmapped_area_topdown` (mm/mmap.c): the highest `align`-aligned gap of `len` bytes
   * below MMAP_BASE, or -ENOMEM.
   */
  getUnmappedArea(len: number, align: number): number {
    let high = MMAP_BASE;
    const vs = this.list;
    for (let i = this.indexAtOrAfter(high) - 1; i >= -1; i--) {
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

  /** `split_vma` (mm/vma.c): split the VMA containing `addr` so a VMA boundary falls on it. */
  splitAt(addr: number): void {
    const v = this.find(addr);
    if (v === undefined || v.start === addr) return;
    if (v.shmem !== undefined) v.shmem.users++;
    const upper = new VmArea(addr, v.end, v.prot, v.flags, v.order, v.shmem, v.pgoff + (addr - v.start) / PAGE_SIZE);
    upper.vmFlags = v.vmFlags;
    upper.file = v.file;
    v.file?.vmaSplit(v, upper);
    v.end = addr;
    this.insert(upper);
  }
}

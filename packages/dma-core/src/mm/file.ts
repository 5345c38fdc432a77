// kernel: include/linux/fs.h (struct file, struct inode, file_operations, FMODE_*),
// fs/read_write.c (vfs_read/vfs_write: FMODE_READ/FMODE_WRITE), fs/open.c (do_sys_ftruncate),
// mm/shmem.c (tmpfs files: shmem_file_read_iter, shmem_write_begin, shmem_fault, shmem_setattr),
// mm/mmap.c (do_mmap's file checks), mm/memory.c (do_read_fault, do_cow_fault, do_shared_fault,
// wp_page_copy / wp_page_shared for page-cache pages, vm_insert_page, unmap_mapping_range).
//
// Files here are tmpfs files (the kernel's shmem: pages live in the page cache, no backing store)
// and device files whose f_op->mmap inserts pages itself (vm_insert_page, as lib/test_hmm.c's
// dmirror_fops_mmap does). A file is reached through its `VfsFile` object, not a descriptor table:
// `mm.mmap({ file })` plays `mmap(..., fd, offset)` after the syscall layer's fdget.
import type { SystemMemory } from '../mem/systemMemory.js';
import { PageFlag } from '../mem/pageMeta.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import { MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED, MAP_TYPE, PROT_WRITE, PTE_DIRTY, PTE_PRESENT, PTE_WRITE, PTE_YOUNG, VM_MIXEDMAP, VM_PFNMAP } from './constants.js';
import type { MmCore } from './mmCore.js';
import { MMU_NOTIFY_CLEAR } from './mmuNotifier.js';
// The mm a VMA belongs to: MmuNotifierMm is MmStruct (completed by declaration merging in
// mmStruct.ts), named so because mmStruct.ts imports this file's users.
import type { MmuNotifierMm as MmStruct } from './mmuNotifier.js';
import { AddressSpace } from './pageCache.js';
import type { VmArea } from './vmaTree.js';

declare module './vmaTree.js' {
  // A VMA's file is this VfsFile (see the forward declaration in vmaTree.ts).
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type -- completes a forward declaration
  interface VmFile extends VfsFile {}
}

/** The file was opened for reading. kernel: FMODE_READ in include/linux/fs.h. */
export const FMODE_READ = 0x1;
/** The file was opened for writing. kernel: FMODE_WRITE in include/linux/fs.h. */
export const FMODE_WRITE = 0x2;
/** open(2) access mode: read only. kernel: O_RDONLY in include/uapi/asm-generic/fcntl.h. */
export const O_RDONLY = 0;
/** open(2) access mode: write only. kernel: O_WRONLY in include/uapi/asm-generic/fcntl.h. */
export const O_WRONLY = 1;
/** open(2) access mode: read and write. kernel: O_RDWR in include/uapi/asm-generic/fcntl.h. */
export const O_RDWR = 2;

/** `OPEN_FMODE(flags)` (fs/internal.h): the FMODE_READ/FMODE_WRITE bits of an access mode. */
function openFmode(accMode: number): number {
  return accMode === O_RDONLY ? FMODE_READ : accMode === O_WRONLY ? FMODE_WRITE : FMODE_READ | FMODE_WRITE;
}

/** The `file_operations` a file may provide (the model's subset). */
export interface FileOperations {
  /**
   * `f_op->mmap(file, vma)`: set the new VMA up (a driver may insert its pages with vmInsertPage).
   * `mm` is the VMA's address space (the kernel's vma->vm_mm). Returns 0 or a negative errno (the
   * mapping is then removed and mmap fails with it).
   */
  mmap?(file: VfsFile, vma: VmArea, mm: MmStruct): number;
  /** `f_op->release`: the last reference to the open file went away. */
  release?(file: VfsFile): void;
}

/**
 * `struct inode`: size, the page cache (`i_mapping`, for tmpfs files; a device file has none, so a
 * fault on a page its driver did not insert is SIGBUS), and the VMAs that map it (`i_mmap`, each
 * with the mm it belongs to: what unmap_mapping_range walks on truncation).
 */
export class Inode {
  /** `i_size` in bytes. */
  size = 0;
  readonly mapping: AddressSpace | undefined;
  /** @internal `i_mmap`: the VMAs mapping the inode, each with its mm (the model's rmap of file pages). */
  readonly iMmap = new Map<VmArea, MmCore>();
  readonly name: string;
  /** Open files and mappings referencing the inode; an unlinked (O_TMPFILE) inode is evicted at 0. */
  refs = 0;

  constructor(name: string, mapping: AddressSpace | undefined) {
    this.name = name;
    this.mapping = mapping;
  }
}

/** Counters (tests, demos). */
export const fileStats = { readFaults: 0, cowFaults: 0, sharedWriteFaults: 0, wpCopies: 0, truncatedPages: 0, insertedPages: 0 };

/**
 * `struct file`: an open file (mode, position, operations) on an inode. Each mapping holds a
 * reference (`vma->vm_file`); the file is released when `close()` and every mapping are gone.
 * Syscall-like methods return a byte count or 0 on success, a negative errno on failure.
 */
export class VfsFile {
  readonly inode: Inode;
  /** FMODE_READ / FMODE_WRITE. */
  readonly fMode: number;
  readonly fOp: FileOperations;
  /** `f_pos`. */
  pos = 0;
  /** Driver data (`file->private_data`). */
  privateData: unknown;
  #count = 1;
  #closed = false;

  constructor(inode: Inode, fMode: number, fOp: FileOperations) {
    this.inode = inode;
    this.fMode = fMode;
    this.fOp = fOp;
    inode.refs++;
  }

  /** True once close() ran (the fd is gone; mappings may still hold the file). */
  get closed(): boolean {
    return this.#closed;
  }

  /** `file_count`: the open fd plus one per VMA mapping the file. */
  get count(): number {
    return this.#count;
  }

  /** `read(fd, buf, len)`: read at `pos` and advance it. Bytes read, or -EBADF. */
  read(buf: Uint8Array): number {
    const n = this.pread(buf, this.pos);
    if (n > 0) this.pos += n;
    return n;
  }

  /** `write(fd, buf, len)`: write at `pos` and advance it. Bytes written, or a negative errno. */
  write(buf: Uint8Array): number {
    const n = this.pwrite(buf, this.pos);
    if (n > 0) this.pos += n;
    return n;
  }

  /**
   * `pread(fd, buf, len, offset)` (shmem_file_read_iter): bytes up to EOF; holes read as zeros
   * without allocating. -EBADF when closed or not opened for reading (vfs_read checks FMODE_READ),
   * -EINVAL for a device file or a bad offset.
   */
  pread(buf: Uint8Array, offset: number): number {
    if (this.#closed || (this.fMode & FMODE_READ) === 0) return -Errno.EBADF;
    const mapping = this.inode.mapping;
    if (mapping === undefined) return -Errno.EINVAL;
    if (!Number.isSafeInteger(offset) || offset < 0) return -Errno.EINVAL;
    const end = Math.min(this.inode.size, offset + buf.length);
    const mem = mapping.memory;
    let done = 0;
    for (let off = offset; off < end; ) {
      const inPage = off % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - inPage, end - off);
      const phys = mapping.findPage((off - inPage) / PAGE_SIZE);
      if (phys === undefined) buf.fill(0, done, done + n);
      else mem.readInto(phys + inPage, buf, done, n);
      done += n;
      off += n;
    }
    return done;
  }

  /**
   * `pwrite(fd, buf, len, offset)` (shmem_write_begin/end): page-cache pages are allocated as
   * needed and i_size grows. Bytes written, -EBADF (closed, or not opened for writing: vfs_write
   * checks FMODE_WRITE), -EINVAL (device file, bad offset), -ENOSPC when memory runs out first.
   */
  pwrite(buf: Uint8Array, offset: number): number {
    if (this.#closed || (this.fMode & FMODE_WRITE) === 0) return -Errno.EBADF;
    const mapping = this.inode.mapping;
    if (mapping === undefined) return -Errno.EINVAL;
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + buf.length)) return -Errno.EINVAL;
    const mem = mapping.memory;
    let done = 0;
    while (done < buf.length) {
      const off = offset + done;
      const inPage = off % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - inPage, buf.length - done);
      const phys = mapping.getPage((off - inPage) / PAGE_SIZE);
      if (phys === 0) break;
      mem.write(phys + inPage, buf, done, n);
      mapping.markDirty(phys);
      done += n;
      if (off + n > this.inode.size) this.inode.size = off + n;
    }
    return done === 0 && buf.length > 0 ? -Errno.ENOSPC : done;
  }

  /**
   * `ftruncate(fd, length)` (do_sys_ftruncate -> shmem_setattr): set i_size. Shrinking unmaps the
   * pages past the new end from every mapping, private copies included (unmap_mapping_range with
   * even_cows, mirrors see MMU_NOTIFY_CLEAR), zeroes the tail of the last page and drops the rest
   * from the page cache (truncate_pagecache). 0, -EINVAL (negative length, not open for writing,
   * not a regular file), -EBADF when closed.
   */
  ftruncate(length: number): number {
    if (this.#closed) return -Errno.EBADF;
    const mapping = this.inode.mapping;
    if (!Number.isSafeInteger(length) || length < 0 || (this.fMode & FMODE_WRITE) === 0 || mapping === undefined) return -Errno.EINVAL;
    const inode = this.inode;
    if (length < inode.size) {
      const keepPages = Math.ceil(length / PAGE_SIZE);
      unmapMappingRange(inode, keepPages);
      const tail = length % PAGE_SIZE;
      const last = tail === 0 ? undefined : mapping.findPage(keepPages - 1);
      if (last !== undefined) mapping.memory.fill(last + tail, PAGE_SIZE - tail, 0);
      fileStats.truncatedPages += mapping.truncateFrom(keepPages);
    }
    inode.size = length;
    return 0;
  }

  /** `close(fd)`: drop the descriptor's reference. 0, or -EBADF when already closed. */
  close(): number {
    if (this.#closed) return -Errno.EBADF;
    this.#closed = true;
    this.#put();
    return 0;
  }

  /** @internal A new VMA maps this file (`vma->vm_file = get_file(file)`, vma_link_file). */
  vmaLink(vma: VmArea, mm: MmCore): void {
    this.#count++;
    this.inode.iMmap.set(vma, mm);
  }

  /** split_vma: `upper` is the new half of `lower`, in the same mm. */
  vmaSplit(lower: VmArea, upper: VmArea): void {
    const mm = this.inode.iMmap.get(lower);
    if (mm !== undefined) this.vmaLink(upper, mm);
  }

  /** The VMA is gone (remove_vma -> fput). */
  vmaUnlink(vma: VmArea): void {
    if (!this.inode.iMmap.delete(vma)) return;
    this.#put();
  }

  #put(): void {
    this.#count--;
    if (this.#count > 0) return;
    this.fOp.release?.(this);
    const inode = this.inode;
    inode.refs--;
    // iput of an unlinked (O_TMPFILE) inode: evict, freeing its page cache (shmem_evict_inode).
    if (inode.refs === 0) inode.mapping?.truncateFrom(0);
  }
}

/** Options of openTmpfile(). */
export interface TmpfileOptions {
  /** O_RDONLY, O_WRONLY or O_RDWR (default O_RDWR). */
  readonly accMode?: number;
  /** Initial size (an ftruncate right after open), default 0. */
  readonly size?: number;
  readonly name?: string;
}

/**
 * `open("/tmp", O_TMPFILE | O_RDWR)` on tmpfs: an unnamed regular file whose pages live in the page
 * cache and go away with the last reference (hmm-tests' hmm_create_file). Returns the open file,
 * or -EINVAL (bad access mode or size).
 */
export function openTmpfile(memory: SystemMemory, opts: TmpfileOptions = {}): VfsFile | number {
  const acc = opts.accMode ?? O_RDWR;
  if (acc !== O_RDONLY && acc !== O_WRONLY && acc !== O_RDWR) return -Errno.EINVAL;
  const size = opts.size ?? 0;
  if (!Number.isSafeInteger(size) || size < 0) return -Errno.EINVAL;
  // kernel: O_TMPFILE requires write access (build_open_flags: O_TMPFILE without FMODE_WRITE is -EINVAL).
  if (acc === O_RDONLY) return -Errno.EINVAL;
  const inode = new Inode(opts.name ?? 'tmpfile', new AddressSpace(memory));
  inode.size = size;
  return new VfsFile(inode, openFmode(acc), {});
}

/** Options of openDeviceFile(). */
export interface DeviceFileOptions {
  readonly name: string;
  /** O_RDONLY, O_WRONLY or O_RDWR (default O_RDWR). */
  readonly accMode?: number;
  readonly fOp: FileOperations;
  readonly privateData?: unknown;
}

/** Open a character-device file (no page cache; its driver's f_op->mmap provides the pages). */
export function openDeviceFile(opts: DeviceFileOptions): VfsFile {
  const f = new VfsFile(new Inode(opts.name, undefined), openFmode(opts.accMode ?? O_RDWR), opts.fOp);
  f.privateData = opts.privateData;
  return f;
}

/**
 * do_mmap's checks for a file mapping (after ksys_mmap_pgoff's fdget): -EBADF (no file, or closed),
 * -EINVAL (offset not page aligned, MAP_HUGETLB on a non-hugetlbfs file), -EACCES (not open for
 * reading; MAP_SHARED with PROT_WRITE on a file not open for writing), -ENODEV (no mmap at all).
 */
export function fileMmapCheck(file: VfsFile | undefined, prot: number, flags: number, offset: number): number {
  if (file?.closed !== false) return -Errno.EBADF;
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % PAGE_SIZE !== 0) return -Errno.EINVAL;
  if ((flags & MAP_HUGETLB) !== 0) return -Errno.EINVAL;
  if ((file.fMode & FMODE_READ) === 0) return -Errno.EACCES;
  if ((flags & MAP_TYPE) !== MAP_PRIVATE && (prot & PROT_WRITE) !== 0 && (file.fMode & FMODE_WRITE) === 0) return -Errno.EACCES;
  if (file.inode.mapping === undefined && file.fOp.mmap === undefined) return -Errno.ENODEV;
  return 0;
}

/**
 * mmap_region's file part (`vma->vm_file = get_file(file)`, call_mmap): link the VMA into the
 * inode's i_mmap and run f_op->mmap. 0 or its negative errno (the caller removes the VMA).
 */
export function fileMmapSetup(mm: MmCore, vma: VmArea, file: VfsFile): number {
  vma.file = file;
  file.vmaLink(vma, mm);
  return file.fOp.mmap?.(file, vma, mm.mm) ?? 0;
}

/**
 * `unmap_mapping_range(mapping, from << PAGE_SHIFT, 0, even_cows = 1)`: zap, in every mm that maps
 * the inode, the PTEs of file pages from index `from` on (private COW copies too); the mirrors
 * of each mm see MMU_NOTIFY_CLEAR.
 */
function unmapMappingRange(inode: Inode, from: number): void {
  for (const [vma, mm] of inode.iMmap) {
    const vmaPages = (vma.end - vma.start) / PAGE_SIZE;
    if (vma.pgoff + vmaPages <= from) continue;
    const start = vma.start + Math.max(0, from - vma.pgoff) * PAGE_SIZE;
    if (!mm.pt.anyIn(start, vma.end)) continue;
    mm.rangeStart(MMU_NOTIFY_CLEAR, start, vma.end);
    mm.pt.zapRange(start, vma.end, mm.putLater);
    mm.rangeEnd();
    mm.flushPuts();
  }
}

/**
 * The fault path of a file-backed VMA for what the anonymous path does not handle: a missing PTE
 * (do_read_fault, do_cow_fault for a write to a private mapping, do_shared_fault) and a write to a
 * read-only PTE of a page that is not anonymous (wp_page_shared for MAP_SHARED, wp_page_copy for
 * MAP_PRIVATE). 0, -EFAULT (past EOF or nothing to fault from: VM_FAULT_SIGBUS), -ENOMEM.
 */
export function doFileFault(mm: MmCore, v: VmArea, addr: number, write: boolean): number {
  const file = v.file;
  if (file === undefined) return -Errno.EFAULT;
  const pt = mm.pt;
  const mem = mm.memory;
  const vpn = Math.floor(addr / PAGE_SIZE);
  const flags = pt.flags(addr);
  const writable = (v.prot & PROT_WRITE) !== 0;
  if ((flags & PTE_PRESENT) !== 0) {
    const old = pt.walk(addr) * PAGE_SIZE;
    if (v.shared) {
      // wp_page_shared: the page cache page itself becomes writable and dirty.
      pt.protUnit(vpn, 1, PTE_WRITE | PTE_DIRTY, 0);
      markDirty(mem, old);
      fileStats.sharedWriteFaults++;
      return 0;
    }
    return wpPageCopy(mm, vpn, old, true);
  }
  const mapping = file.inode.mapping;
  // No vm_ops->fault (a driver's inserted pages): VM_FAULT_SIGBUS, as for a fault past EOF.
  if (mapping === undefined) return -Errno.EFAULT;
  const index = v.pgoff + (vpn - v.start / PAGE_SIZE);
  if (index >= Math.ceil(file.inode.size / PAGE_SIZE)) return -Errno.EFAULT;
  const page = mapping.getPage(index);
  if (page === 0) return -Errno.ENOMEM;
  if (write && !v.shared) {
    // do_cow_fault: a private copy of the cached page, mapped writable.
    fileStats.cowFaults++;
    return wpPageCopy(mm, vpn, page, false);
  }
  // do_read_fault / do_shared_fault -> finish_fault: map the cached page (writable only in a
  // shared writable mapping; tmpfs needs no write notification).
  mem.pageGet(page);
  const w = v.shared && writable ? PTE_WRITE : 0;
  pt.set(vpn, page / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | w | (write ? PTE_DIRTY : 0));
  if (write) {
    markDirty(mem, page);
    fileStats.sharedWriteFaults++;
  } else fileStats.readFaults++;
  return 0;
}

function markDirty(mem: SystemMemory, phys: number): void {
  mem.setPageFlags(phys, PageFlag.DIRTY);
}

/**
 * `wp_page_copy`: a new anonymous page with the contents of `src`, mapped writable at `vpn`. When
 * `replace`, a PTE maps `src` now: mirrors see MMU_NOTIFY_CLEAR and the old reference is put.
 */
function wpPageCopy(mm: MmCore, vpn: number, src: number, replace: boolean): number {
  const mem = mm.memory;
  const page = mem.allocPages(0);
  if (page === 0) return -Errno.ENOMEM;
  mem.setPageFlags(page, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
  mem.copy(page, src, PAGE_SIZE);
  const a = vpn * PAGE_SIZE;
  if (replace) mm.rangeStart(MMU_NOTIFY_CLEAR, a, a + PAGE_SIZE);
  mm.pt.set(vpn, page / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | PTE_WRITE | PTE_DIRTY);
  if (replace) {
    mm.rangeEnd();
    mem.pagePut(src);
  }
  fileStats.wpCopies++;
  return 0;
}

/**
 * `vm_insert_page(vma, addr, page)` (mm/memory.c): a driver's f_op->mmap maps one of its pages
 * (an order-0 RAM page it holds a reference to) into the VMA, which becomes VM_MIXEDMAP. The PTE
 * takes its own reference and uses the VMA's page protection: writable only in a shared writable
 * mapping (a private one copies on write). Returns 0, -EFAULT (addr outside the VMA), -EINVAL
 * (anonymous page, VM_PFNMAP VMA, not a referenced RAM page), -EBUSY (a PTE is already there).
 */
export function vmInsertPage(mm: MmStruct, vma: VmArea, addr: number, phys: number): number {
  if (!Number.isSafeInteger(addr) || addr % PAGE_SIZE !== 0 || addr < vma.start || addr >= vma.end) return -Errno.EFAULT;
  const mem = mm.memory;
  if (!Number.isSafeInteger(phys) || phys % PAGE_SIZE !== 0 || !mem.isRam(phys, PAGE_SIZE) || mem.getPageRef(phys) <= 0) return -Errno.EINVAL;
  if ((mem.pageFlags(phys) & PageFlag.ANON) !== 0 || (vma.vmFlags & VM_PFNMAP) !== 0) return -Errno.EINVAL;
  vma.vmFlags |= VM_MIXEDMAP;
  if (mm.pteFlags(addr) !== 0) return -Errno.EBUSY;
  mem.pageGet(phys);
  const w = (vma.flags & MAP_SHARED) !== 0 && (vma.prot & PROT_WRITE) !== 0 ? PTE_WRITE : 0;
  mm.setPte(addr, phys / PAGE_SIZE, PTE_PRESENT | PTE_YOUNG | w);
  fileStats.insertedPages++;
  return 0;
}

// kernel: mm/migrate_device.c (migrate_vma_setup, migrate_vma_pages, migrate_vma_finalize),
// include/linux/migrate.h (MIGRATE_PFN_*, MIGRATE_VMA_SELECT_*)
import {
  Errno,
  MMU_NOTIFY_MIGRATE,
  PAGE_SIZE,
  PROT_WRITE,
  PTE_DEVICE_PRIVATE,
  PTE_DIRTY,
  PTE_PRESENT,
  PTE_WRITE,
  PTE_YOUNG,
  PTE_ZERO,
  PageFlag,
  VM_IO,
  VM_PFNMAP,
  folioMapping,
} from '@dmakit/dma-core';
import type { MmStruct, VmArea } from '@dmakit/dma-core';
import { installMigrateToRam, pagePgmap } from './devmem.js';

// A migrate pfn word is `pfn << MIGRATE_PFN_SHIFT | flags`; the model stores it in a Float64Array
// as `pfn * 64 + flags` (exact for pfn < 2^47), so no bigint is needed.
/** The entry holds a valid pfn. kernel: MIGRATE_PFN_VALID in include/linux/migrate.h. */
export const MIGRATE_PFN_VALID = 1 << 0;
/** The page is to be migrated. kernel: MIGRATE_PFN_MIGRATE in include/linux/migrate.h. */
export const MIGRATE_PFN_MIGRATE = 1 << 1;
/** The page was mapped writable. kernel: MIGRATE_PFN_WRITE in include/linux/migrate.h. */
export const MIGRATE_PFN_WRITE = 1 << 3;
/** Shift of the pfn within a migrate pfn word. kernel: MIGRATE_PFN_SHIFT in include/linux/migrate.h. */
export const MIGRATE_PFN_SHIFT = 6;
const MPFN_MUL = 2 ** MIGRATE_PFN_SHIFT;

/** Collect system-RAM pages. kernel: MIGRATE_VMA_SELECT_SYSTEM in include/linux/migrate.h. */
export const MIGRATE_VMA_SELECT_SYSTEM = 1 << 0;
/**
 * Collect device-private pages of the pgmap owner. kernel: MIGRATE_VMA_SELECT_DEVICE_PRIVATE in
 * include/linux/migrate.h.
 */
export const MIGRATE_VMA_SELECT_DEVICE_PRIVATE = 1 << 1;
/** Collect device-coherent pages. kernel: MIGRATE_VMA_SELECT_DEVICE_COHERENT in include/linux/migrate.h. */
export const MIGRATE_VMA_SELECT_DEVICE_COHERENT = 1 << 2;

/** `migrate_pfn(pfn)`: pfn | MIGRATE_PFN_VALID. */
export function migratePfn(pfn: number): number {
  return pfn * MPFN_MUL + MIGRATE_PFN_VALID;
}

/** `migrate_pfn_to_page` as a pfn (-1 when not VALID). */
export function migratePfnToPfn(mpfn: number): number {
  return (migratePfnFlags(mpfn) & MIGRATE_PFN_VALID) === 0 ? -1 : Math.floor(mpfn / MPFN_MUL);
}

/** The MIGRATE_PFN_* flag bits of a migrate pfn word. */
export function migratePfnFlags(mpfn: number): number {
  return mpfn % MPFN_MUL;
}

function setFlags(mpfn: number, set: number, clear: number): number {
  const f = migratePfnFlags(mpfn);
  return mpfn - f + ((f | set) & ~clear);
}

/**
 * `struct migrate_vma`. `src`/`dst` hold one migrate pfn per page of [start, end); the driver
 * fills `dst` between setup and pages. `mm` is the VMA's mm (the model's VmArea has no back
 * pointer).
 */
export class MigrateVma {
  mm: MmStruct;
  vma: VmArea | undefined;
  start: number;
  end: number;
  src: Float64Array;
  dst: Float64Array;
  flags: number;
  pgmapOwner: unknown;
  /** For migrate_to_ram: the device-private page being faulted on (phys), else 0. */
  faultPage = 0;
  /** Pages collected (MIGRATE set in src). */
  cpages = 0;
  /** Pages in the range. */
  npages = 0;
  /** Model: the CPU PTE flags of each collected page, restored if it is not migrated. */
  savedPte: Uint8Array;

  constructor(mm: MmStruct, vma: VmArea | undefined, start: number, end: number, flags: number, pgmapOwner: unknown) {
    this.mm = mm;
    this.vma = vma;
    this.start = start;
    this.end = end;
    this.flags = flags;
    this.pgmapOwner = pgmapOwner;
    const n = Number.isSafeInteger(end - start) && end > start ? Math.floor((end - start) / PAGE_SIZE) : 0;
    this.src = new Float64Array(n);
    this.dst = new Float64Array(n);
    this.savedPte = new Uint8Array(n);
  }
}

/** Counters (tests, demos). */
export const migrateStats = { setups: 0, collected: 0, migrated: 0, restored: 0, refusedFile: 0 };

/**
 * `migrate_vma_setup(args)`: collect the pages of [start, end) selected by `flags` (system RAM
 * and holes, or device-private pages of `pgmapOwner`), tell mirrors (MMU_NOTIFY_MIGRATE with the
 * owner, so a driver can skip its own), and unmap them from the CPU. Returns 0 or -EINVAL.
 *
 * Page-cache and shmem pages (file and MAP_SHARED mappings) are collected, as
 * migrate_vma_collect_pmd does, and refused later by migrateVmaPages; holes are collected only in
 * private anonymous VMAs (migrate_vma_collect_hole), and pages without a mapping that are not
 * anonymous (a driver's vm_insert_page pages) are skipped (`!page->mapping`).
 *
 * Model: there is no rmap, so an anonymous page mapped by more than this mm (refcount above 1,
 * e.g. shared with a forked child) is not collected, and a cached page is unmapped from this mm
 * only; device-private pages shared after fork are copied for
 * this mm only (the other keeps its reference). Migration runs to completion without yielding,
 * so CPU accesses never meet a migration entry.
 */
export function migrateVmaSetup(args: MigrateVma): number {
  migrateStats.setups++;
  const { mm, vma, start, end } = args;
  if (start % PAGE_SIZE !== 0 || end % PAGE_SIZE !== 0 || end <= start) return -Errno.EINVAL;
  if (vma === undefined || start < vma.start || end > vma.end) return -Errno.EINVAL;
  // kernel: hugetlb, VM_SPECIAL and DAX VMAs are refused.
  if (vma.hugetlb || (vma.vmFlags & (VM_IO | VM_PFNMAP)) !== 0) return -Errno.EINVAL;
  const n = (end - start) / PAGE_SIZE;
  if (args.src.length < n || args.dst.length < n) return -Errno.EINVAL;
  const mem = mm.memory;
  if (args.faultPage !== 0 && pagePgmap(mem, args.faultPage) === undefined) return -Errno.EINVAL;
  args.src.fill(0, 0, n);
  args.dst.fill(0, 0, n);
  args.savedPte.fill(0, 0, n);
  args.npages = n;
  args.cpages = 0;
  // kernel: vma_is_anonymous(): only private anonymous VMAs get pages inserted into holes.
  const anonPrivate = vma.anonymous;
  const range = mm.notifierRange(MMU_NOTIFY_MIGRATE, start, end, args.pgmapOwner);
  mm.invalidateRangeStart(range);
  for (let i = 0; i < n; i++) {
    const addr = start + i * PAGE_SIZE;
    const f = mm.pteFlags(addr);
    if (f === 0) {
      // migrate_vma_collect_hole: only anonymous memory gets a page inserted.
      if ((args.flags & MIGRATE_VMA_SELECT_SYSTEM) !== 0 && anonPrivate) {
        args.src[i] = MIGRATE_PFN_MIGRATE;
        args.cpages++;
      }
      continue;
    }
    const pfn = mm.walkPte(addr);
    const phys = pfn * PAGE_SIZE;
    if ((f & PTE_PRESENT) === 0) {
      if ((f & PTE_DEVICE_PRIVATE) === 0 || (args.flags & MIGRATE_VMA_SELECT_DEVICE_PRIVATE) === 0) continue;
      const pgmap = pagePgmap(mem, phys);
      if (pgmap === undefined || pgmap.owner !== args.pgmapOwner) continue;
      args.src[i] = migratePfn(pfn) + MIGRATE_PFN_MIGRATE + ((f & PTE_WRITE) !== 0 ? MIGRATE_PFN_WRITE : 0);
    } else {
      if ((args.flags & MIGRATE_VMA_SELECT_SYSTEM) === 0) continue;
      if ((f & PTE_ZERO) !== 0) {
        if (!anonPrivate) continue;
        args.src[i] = MIGRATE_PFN_MIGRATE;
        args.cpages++;
        continue;
      }
      if ((mem.pageFlags(phys) & PageFlag.ANON) !== 0) {
        // Anonymous pages we hold the single reference to (migrate_vma_check_page: a pinned page
        // has references its mappings do not explain).
        if (mem.getPageRef(phys) !== 1) continue;
      } else if ((vma.shmem === undefined && folioMapping(mem, phys) === undefined) || mem.pageMaybeDmaPinned(phys)) {
        // `!page->mapping` (a driver's inserted page), or a pinned cached page.
        continue;
      }
      args.src[i] = migratePfn(pfn) + MIGRATE_PFN_MIGRATE + ((f & PTE_WRITE) !== 0 ? MIGRATE_PFN_WRITE : 0);
      if ((f & PTE_DIRTY) !== 0) mem.setPageFlags(phys, PageFlag.DIRTY);
    }
    // Unmap: the PTE's reference now belongs to the migration.
    args.savedPte[i] = f;
    mm.setPte(addr, 0, 0);
    args.cpages++;
    migrateStats.collected++;
  }
  mm.invalidateRangeEnd(range);
  return 0;
}

/**
 * `migrate_vma_pages(args)`: commit the entries the driver gave a destination for. Holes and zero
 * pages get the new page inserted now; entries without a valid dst lose MIGRATE_PFN_MIGRATE.
 */
export function migrateVmaPages(args: MigrateVma): void {
  const { mm, vma } = args;
  if (vma === undefined) return;
  const n = args.npages;
  let notified = false;
  const range = mm.notifierRange(MMU_NOTIFY_MIGRATE, args.start, args.end, args.pgmapOwner);
  for (let i = 0; i < n; i++) {
    const src = args.src[i] ?? 0;
    if ((migratePfnFlags(src) & MIGRATE_PFN_MIGRATE) === 0) continue;
    const dst = args.dst[i] ?? 0;
    const dpfn = migratePfnToPfn(dst);
    if (dpfn < 0) {
      args.src[i] = setFlags(src, 0, MIGRATE_PFN_MIGRATE);
      continue;
    }
    if ((migratePfnFlags(src) & MIGRATE_PFN_VALID) !== 0) {
      // kernel: __migrate_device_pages — "for now only support anonymous memory migrating to
      // device private or coherent memory": a page with a mapping (page cache, shmem) stays.
      const spfn = migratePfnToPfn(src);
      if (pagePgmap(mm.memory, dpfn * PAGE_SIZE) !== undefined && (mm.memory.pageFlags(spfn * PAGE_SIZE) & PageFlag.ANON) === 0 && pagePgmap(mm.memory, spfn * PAGE_SIZE) === undefined) {
        args.src[i] = setFlags(src, 0, MIGRATE_PFN_MIGRATE);
        migrateStats.refusedFile++;
      }
      continue;
    }
    // migrate_vma_insert_page: only over a none or zero-page PTE.
    const addr = args.start + i * PAGE_SIZE;
    const f = mm.pteFlags(addr);
    if (f !== 0 && (f & PTE_ZERO) === 0) {
      args.src[i] = setFlags(src, 0, MIGRATE_PFN_MIGRATE);
      continue;
    }
    if (!notified) {
      mm.invalidateRangeStart(range);
      notified = true;
    }
    const writable = (vma.prot & PROT_WRITE) !== 0;
    installPte(args, addr, dpfn, writable);
    migrateStats.migrated++;
  }
  if (notified) mm.invalidateRangeEnd(range);
}

function installPte(args: MigrateVma, addr: number, pfn: number, writable: boolean): void {
  const mm = args.mm;
  const phys = pfn * PAGE_SIZE;
  if (pagePgmap(mm.memory, phys) !== undefined) {
    installMigrateToRam(mm);
    mm.setPte(addr, pfn, PTE_DEVICE_PRIVATE | (writable ? PTE_WRITE : 0));
  } else {
    mm.memory.setPageFlags(phys, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
    mm.setPte(addr, pfn, PTE_PRESENT | PTE_YOUNG | PTE_DIRTY | (writable ? PTE_WRITE : 0));
  }
}

/**
 * `migrate_vma_finalize(args)`: migrated entries map the new page and drop the old one; the rest
 * get their old mapping back and the driver's destination page is released.
 */
export function migrateVmaFinalize(args: MigrateVma): void {
  const { mm, vma } = args;
  const mem = mm.memory;
  const n = args.npages;
  for (let i = 0; i < n; i++) {
    const src = args.src[i] ?? 0;
    const dst = args.dst[i] ?? 0;
    const sflags = migratePfnFlags(src);
    const spfn = migratePfnToPfn(src);
    const dpfn = migratePfnToPfn(dst);
    const addr = args.start + i * PAGE_SIZE;
    if (spfn < 0) {
      // A hole: inserted by migrate_vma_pages, or the driver's page is unused.
      if ((sflags & MIGRATE_PFN_MIGRATE) === 0 && dpfn >= 0) mem.pagePut(dpfn * PAGE_SIZE);
      continue;
    }
    if ((sflags & MIGRATE_PFN_MIGRATE) !== 0 && dpfn >= 0) {
      installPte(args, addr, dpfn, (sflags & MIGRATE_PFN_WRITE) !== 0 && vma !== undefined && (vma.prot & PROT_WRITE) !== 0);
      mem.pagePut(spfn * PAGE_SIZE);
      migrateStats.migrated++;
    } else {
      // remove_migration_ptes: the old mapping comes back.
      const saved = args.savedPte[i] ?? 0;
      if (saved !== 0 && mm.pteFlags(addr) === 0) {
        mm.setPte(addr, spfn, saved);
      } else {
        mem.pagePut(spfn * PAGE_SIZE);
      }
      if (dpfn >= 0) mem.pagePut(dpfn * PAGE_SIZE);
      migrateStats.restored++;
    }
  }
}

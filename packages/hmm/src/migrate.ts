// kernel: mm/migrate_device.c (migrate_vma_setup, migrate_vma_pages, migrate_vma_finalize),
// include/linux/migrate.h (MIGRATE_PFN_*, MIGRATE_VMA_SELECT_*). Large folios follow Linux 6.19
// (device-private THP: MIGRATE_VMA_SELECT_COMPOUND, MIGRATE_PFN_COMPOUND,
// migrate_vma_collect_huge_pmd, migrate_vma_insert_huge_pmd_page,
// migrate_vma_split_unmapped_folio); before 6.19 every THP was split into 4 KiB pages first.
import {
  Errno,
  HPAGE_PMD_NR,
  MMU_NOTIFY_MIGRATE,
  PAGE_SIZE,
  PROT_WRITE,
  PTE_DEVICE_PRIVATE,
  PTE_HUGE,
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
/**
 * The entry is a whole PMD-sized folio (or a 2 MiB hole): the next HPAGE_PMD_NR - 1 entries are 0.
 * kernel: MIGRATE_PFN_COMPOUND in include/linux/migrate.h (Linux 6.19).
 */
export const MIGRATE_PFN_COMPOUND = 1 << 4;
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
/**
 * Collect PMD-mapped folios (and 2 MiB holes) whole instead of splitting them. kernel:
 * MIGRATE_VMA_SELECT_COMPOUND in include/linux/migrate.h (Linux 6.19).
 */
export const MIGRATE_VMA_SELECT_COMPOUND = 1 << 3;

const PMD_BYTES = HPAGE_PMD_NR * PAGE_SIZE;

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
export const migrateStats = { setups: 0, collected: 0, migrated: 0, restored: 0, compoundCollected: 0, compoundMigrated: 0, splitFolios: 0, refusedFile: 0 };

/**
 * `migrate_vma_setup(args)`: collect the pages of [start, end) selected by `flags` (system RAM
 * and holes, or device-private pages of `pgmapOwner`), tell mirrors (MMU_NOTIFY_MIGRATE with the
 * owner, so a driver can skip its own), and unmap them from the CPU. Returns 0 or -EINVAL.
 *
 * A PMD-mapped THP (system or device-private) or a 2 MiB hole wholly inside the range is collected
 * as one MIGRATE_PFN_COMPOUND entry when MIGRATE_VMA_SELECT_COMPOUND is given
 * (migrate_vma_collect_huge_pmd); otherwise, and for pages of a PTE-mapped large folio, the folio
 * is split first (migrate_vma_split_folio) and the pages are collected one by one; a folio that
 * cannot be split is skipped. The huge zero folio is collected as a hole.
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
  const range = mm.notifierRange(MMU_NOTIFY_MIGRATE, start, end, args.pgmapOwner);
  mm.invalidateRangeStart(range);
  for (let i = 0; i < n; ) {
    const addr = start + i * PAGE_SIZE;
    const blockEnd = Math.min(end, addr - (addr % PMD_BYTES) + PMD_BYTES);
    if ((mm.pteFlags(addr) & PTE_HUGE) !== 0) {
      const r = collectHugePmd(args, i, addr, blockEnd);
      if (r >= 0) {
        i = r;
        continue;
      }
      // -1: the PMD was split; collect its pages one by one below.
    }
    i = collectPtes(args, i, blockEnd);
  }
  mm.invalidateRangeEnd(range);
  return 0;
}

/** The whole-folio condition of migrate_vma_collect_huge_pmd: COMPOUND asked, block inside the range. */
function compoundOk(args: MigrateVma, addr: number, blockEnd: number): boolean {
  return (args.flags & MIGRATE_VMA_SELECT_COMPOUND) !== 0 && addr % PMD_BYTES === 0 && blockEnd - addr === PMD_BYTES;
}

/** Unmap the PMD at `addr` for migration, keeping its entries to restore. */
function unmapPmd(args: MigrateVma, i: number, addr: number): void {
  const mm = args.mm;
  for (let j = 0; j < HPAGE_PMD_NR; j++) {
    const a = addr + j * PAGE_SIZE;
    args.savedPte[i + j] = mm.pteFlags(a);
    mm.setPte(a, 0, 0);
  }
}

/**
 * migrate_vma_collect_huge_pmd for the PMD at `addr` (entry i). Returns the index after the block
 * when it is done with it (collected whole, as a hole, or skipped), or -1 when the PMD was split and
 * its PTEs are to be collected.
 */
function collectHugePmd(args: MigrateVma, i: number, addr: number, blockEnd: number): number {
  const mm = args.mm;
  const mem = mm.memory;
  const f = mm.pteFlags(addr);
  const next = i + (blockEnd - addr) / PAGE_SIZE;
  let write = 0;
  if ((f & PTE_PRESENT) !== 0) {
    if ((args.flags & MIGRATE_VMA_SELECT_SYSTEM) === 0) return next;
    if ((f & PTE_ZERO) !== 0) {
      // is_huge_zero_folio: collected as a hole (migrate_vma_collect_hole); the zero PMD stays
      // until the new folio replaces it (or is split by migrate_vma_insert_page for 4 KiB pages).
      if (compoundOk(args, addr, blockEnd)) {
        args.src[i] = MIGRATE_PFN_MIGRATE + MIGRATE_PFN_COMPOUND;
        args.cpages++;
      } else {
        for (let k = i; k < next; k++) args.src[k] = MIGRATE_PFN_MIGRATE;
        args.cpages += next - i;
      }
      return next;
    }
    if ((f & PTE_WRITE) !== 0) write = MIGRATE_PFN_WRITE;
  } else if ((f & PTE_DEVICE_PRIVATE) !== 0) {
    const pgmap = pagePgmap(mem, mm.walkPte(addr) * PAGE_SIZE);
    if ((args.flags & MIGRATE_VMA_SELECT_DEVICE_PRIVATE) === 0 || pgmap === undefined || pgmap.owner !== args.pgmapOwner) return next;
    if ((f & PTE_WRITE) !== 0) write = MIGRATE_PFN_WRITE;
  } else {
    return next;
  }
  const headPfn = mm.walkPte(addr - (addr % PMD_BYTES));
  // A system folio only when this PMD holds its one reference (migrate_vma_check_page); a device
  // folio shared after fork is migrated for this mm alone (see the model note above).
  const devicePrivate = (f & PTE_DEVICE_PRIVATE) !== 0;
  if (compoundOk(args, addr, blockEnd) && args.vma?.shared !== true && (devicePrivate || mem.getPageRef(headPfn * PAGE_SIZE) === 1)) {
    if ((f & PTE_DIRTY) !== 0) mem.setPageFlags(headPfn * PAGE_SIZE, PageFlag.DIRTY);
    args.src[i] = migratePfn(headPfn) + MIGRATE_PFN_MIGRATE + MIGRATE_PFN_COMPOUND + write;
    unmapPmd(args, i, addr);
    args.cpages++;
    migrateStats.collected++;
    migrateStats.compoundCollected++;
    return i + HPAGE_PMD_NR;
  }
  // fallback: split_folio; a folio that will not split is skipped (migrate_vma_collect_skip).
  if (mm.splitHugePage(addr) !== 0) return next;
  migrateStats.splitFolios++;
  return -1;
}

/** migrate_vma_collect_pmd's PTE loop over entries [i, index of blockEnd). Returns the next index. */
function collectPtes(args: MigrateVma, i0: number, blockEnd: number): number {
  const { mm, vma, start } = args;
  const mem = mm.memory;
  // kernel: vma_is_anonymous(): only private anonymous VMAs get pages inserted into holes.
  const anonPrivate = vma !== undefined && vma.anonymous;
  const iEnd = (blockEnd - start) / PAGE_SIZE;
  // A 2 MiB hole inside the range: one compound hole entry (migrate_vma_collect_hole).
  const a0 = start + i0 * PAGE_SIZE;
  if (compoundOk(args, a0, blockEnd) && (args.flags & MIGRATE_VMA_SELECT_SYSTEM) !== 0 && anonPrivate && !mm.pteAnyIn(a0, blockEnd)) {
    args.src[i0] = MIGRATE_PFN_MIGRATE + MIGRATE_PFN_COMPOUND;
    args.cpages++;
    return iEnd;
  }
  for (let i = i0; i < iEnd; i++) {
    const addr = start + i * PAGE_SIZE;
    let f = mm.pteFlags(addr);
    if (f === 0) {
      // migrate_vma_collect_hole: only anonymous memory gets a page inserted.
      if ((args.flags & MIGRATE_VMA_SELECT_SYSTEM) !== 0 && anonPrivate) {
        args.src[i] = MIGRATE_PFN_MIGRATE;
        args.cpages++;
      }
      continue;
    }
    let pfn = mm.walkPte(addr);
    let phys = pfn * PAGE_SIZE;
    const selected =
      (f & PTE_PRESENT) !== 0
        ? (args.flags & MIGRATE_VMA_SELECT_SYSTEM) !== 0
        : (f & PTE_DEVICE_PRIVATE) !== 0 && (args.flags & MIGRATE_VMA_SELECT_DEVICE_PRIVATE) !== 0 && pagePgmap(mem, phys)?.owner === args.pgmapOwner;
    if (selected && (f & PTE_ZERO) === 0 && mem.folioOrder(phys) > 0) {
      // A page of a PTE-mapped large folio: migrate_vma_split_folio, or skip the rest.
      if (mm.splitHugePage(addr) !== 0) return iEnd;
      migrateStats.splitFolios++;
      f = mm.pteFlags(addr);
      pfn = mm.walkPte(addr);
      phys = pfn * PAGE_SIZE;
      if (f === 0) {
        i--;
        continue;
      }
    }
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
      } else if ((vma?.shmem === undefined && folioMapping(mem, phys) === undefined) || mem.pageMaybeDmaPinned(phys)) {
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
  return iEnd;
}

/**
 * `migrate_vma_pages(args)`: commit the entries the driver gave a destination for. Holes and zero
 * pages get the new page inserted now (a compound destination as one PMD,
 * migrate_vma_insert_huge_pmd_page); entries without a valid dst lose MIGRATE_PFN_MIGRATE. A
 * compound source the driver gave 4 KiB destinations is split here
 * (migrate_vma_split_unmapped_folio) and migrated page by page.
 */
export function migrateVmaPages(args: MigrateVma): void {
  const { mm, vma } = args;
  if (vma === undefined) return;
  const n = args.npages;
  let notified = false;
  const range = mm.notifierRange(MMU_NOTIFY_MIGRATE, args.start, args.end, args.pgmapOwner);
  for (let i = 0; i < n; ) {
    const src = args.src[i] ?? 0;
    const sf = migratePfnFlags(src);
    const dst = args.dst[i] ?? 0;
    const df = migratePfnFlags(dst);
    const dpfn = migratePfnToPfn(dst);
    if (dpfn < 0) {
      if ((sf & MIGRATE_PFN_MIGRATE) !== 0) args.src[i] = setFlags(src, 0, MIGRATE_PFN_MIGRATE);
      i++;
      continue;
    }
    if ((sf & MIGRATE_PFN_MIGRATE) === 0) {
      i++;
      continue;
    }
    const spfn = migratePfnToPfn(src);
    if (spfn < 0) {
      if (!notified) {
        mm.invalidateRangeStart(range);
        notified = true;
      }
      const addr = args.start + i * PAGE_SIZE;
      if ((sf & MIGRATE_PFN_COMPOUND) !== 0 && (df & MIGRATE_PFN_COMPOUND) === 0) {
        // A 2 MiB hole filled with 4 KiB pages: each entry inserted on its own.
        args.src[i] = setFlags(src, 0, MIGRATE_PFN_COMPOUND);
        for (let j = 0; j < HPAGE_PMD_NR && i + j < n; j++) {
          args.src[i + j] = setFlags(args.src[i + j] ?? 0, MIGRATE_PFN_MIGRATE, 0);
          insertPage(args, i + j, addr + j * PAGE_SIZE);
        }
        i += HPAGE_PMD_NR;
        continue;
      }
      if ((df & MIGRATE_PFN_COMPOUND) !== 0) {
        insertHugePmd(args, i, addr, dpfn);
        i += HPAGE_PMD_NR;
        continue;
      }
      insertPage(args, i, addr);
      i++;
      continue;
    }
    // kernel: __migrate_device_pages — "for now only support anonymous memory migrating to
    // device private or coherent memory": a page with a mapping (page cache, shmem) stays.
    if (pagePgmap(mm.memory, dpfn * PAGE_SIZE) !== undefined && (mm.memory.pageFlags(spfn * PAGE_SIZE) & PageFlag.ANON) === 0 && pagePgmap(mm.memory, spfn * PAGE_SIZE) === undefined) {
      args.src[i] = setFlags(src, 0, MIGRATE_PFN_MIGRATE);
      migrateStats.refusedFile++;
      i++;
      continue;
    }
    let nr = (sf & MIGRATE_PFN_COMPOUND) !== 0 ? HPAGE_PMD_NR : 1;
    if ((sf & MIGRATE_PFN_COMPOUND) !== 0 && (df & MIGRATE_PFN_COMPOUND) === 0) {
      // migrate_vma_split_unmapped_folio: the unmapped source folio becomes 4 KiB pages, each
      // held by the migration; the saved entries lose their PMD bit.
      mm.memory.splitFolio(spfn * PAGE_SIZE, () => 1);
      migrateStats.splitFolios++;
      const flags = sf & ~MIGRATE_PFN_COMPOUND;
      args.src[i] = migratePfn(spfn) - MIGRATE_PFN_VALID + flags;
      for (let j = 1; j < HPAGE_PMD_NR && i + j < n; j++) args.src[i + j] = migratePfn(spfn + j) - MIGRATE_PFN_VALID + flags;
      for (let j = 0; j < HPAGE_PMD_NR && i + j < n; j++) args.savedPte[i + j] = (args.savedPte[i + j] ?? 0) & ~PTE_HUGE;
      for (let j = 0; j < HPAGE_PMD_NR && i + j < n; j++) {
        if (migratePfnToPfn(args.dst[i + j] ?? 0) < 0) args.src[i + j] = setFlags(args.src[i + j] ?? 0, 0, MIGRATE_PFN_MIGRATE);
      }
      nr = HPAGE_PMD_NR;
    } else if ((sf & MIGRATE_PFN_COMPOUND) === 0 && (df & MIGRATE_PFN_COMPOUND) !== 0) {
      args.src[i] = setFlags(src, 0, MIGRATE_PFN_MIGRATE);
    }
    i += nr;
  }
  if (notified) mm.invalidateRangeEnd(range);
}

/** migrate_vma_insert_page: one new page over a none (or zero-page) entry, else MIGRATE cleared. */
function insertPage(args: MigrateVma, i: number, addr: number): void {
  const { mm, vma } = args;
  const dpfn = migratePfnToPfn(args.dst[i] ?? 0);
  const src = args.src[i] ?? 0;
  if (dpfn < 0 || vma === undefined) {
    args.src[i] = setFlags(src, 0, MIGRATE_PFN_MIGRATE);
    return;
  }
  let f = mm.pteFlags(addr);
  if ((f & PTE_HUGE) !== 0 && (f & PTE_ZERO) !== 0) {
    mm.splitHugePmd(addr);
    f = mm.pteFlags(addr);
  }
  if (f !== 0 && (f & PTE_ZERO) === 0) {
    args.src[i] = setFlags(src, 0, MIGRATE_PFN_MIGRATE);
    return;
  }
  installPte(args, addr, dpfn, (vma.prot & PROT_WRITE) !== 0, 1);
  migrateStats.migrated++;
}

/** migrate_vma_insert_huge_pmd_page: a new folio mapped by one PMD over a none or huge zero PMD. */
function insertHugePmd(args: MigrateVma, i: number, addr: number, dpfn: number): void {
  const { mm, vma } = args;
  let ok = vma !== undefined && addr % PMD_BYTES === 0 && addr + PMD_BYTES <= vma.end;
  for (let j = 0; ok && j < HPAGE_PMD_NR; j++) {
    const f = mm.pteFlags(addr + j * PAGE_SIZE);
    if (f !== 0 && (f & PTE_ZERO) === 0) ok = false;
  }
  if (!ok || vma === undefined) {
    for (let j = 0; j < HPAGE_PMD_NR && i + j < args.npages; j++) args.src[i + j] = setFlags(args.src[i + j] ?? 0, 0, MIGRATE_PFN_MIGRATE);
    return;
  }
  installPte(args, addr, dpfn, (vma.prot & PROT_WRITE) !== 0, HPAGE_PMD_NR);
  migrateStats.migrated++;
  migrateStats.compoundMigrated++;
}

/** Map `nr` pages (1, or a PMD of HPAGE_PMD_NR) of the folio at `pfn` at `addr`. */
function installPte(args: MigrateVma, addr: number, pfn: number, writable: boolean, nr: number): void {
  const mm = args.mm;
  const phys = pfn * PAGE_SIZE;
  const huge = nr > 1 ? PTE_HUGE : 0;
  if (pagePgmap(mm.memory, phys) !== undefined) {
    installMigrateToRam(mm);
    for (let j = 0; j < nr; j++) mm.setPte(addr + j * PAGE_SIZE, pfn + j, PTE_DEVICE_PRIVATE | huge | (writable ? PTE_WRITE : 0));
  } else {
    mm.memory.setPageFlags(phys, PageFlag.ANON | PageFlag.ANON_EXCLUSIVE);
    for (let j = 0; j < nr; j++) mm.setPte(addr + j * PAGE_SIZE, pfn + j, PTE_PRESENT | PTE_YOUNG | PTE_DIRTY | huge | (writable ? PTE_WRITE : 0));
  }
}

/**
 * `migrate_vma_finalize(args)`: migrated entries map the new page (a compound one by one PMD) and
 * drop the old one; the rest get their old mapping back and the driver's destination is released.
 */
export function migrateVmaFinalize(args: MigrateVma): void {
  const { mm, vma } = args;
  const mem = mm.memory;
  const n = args.npages;
  for (let i = 0; i < n; ) {
    const src = args.src[i] ?? 0;
    const dst = args.dst[i] ?? 0;
    const sflags = migratePfnFlags(src);
    const spfn = migratePfnToPfn(src);
    const dpfn = migratePfnToPfn(dst);
    const addr = args.start + i * PAGE_SIZE;
    if (spfn < 0) {
      // A hole: inserted by migrate_vma_pages, or the driver's page is unused.
      if ((sflags & MIGRATE_PFN_MIGRATE) === 0 && dpfn >= 0) mem.pagePut(dpfn * PAGE_SIZE);
      i++;
      continue;
    }
    const nr = (sflags & MIGRATE_PFN_COMPOUND) !== 0 ? HPAGE_PMD_NR : 1;
    if ((sflags & MIGRATE_PFN_MIGRATE) !== 0 && dpfn >= 0) {
      installPte(args, addr, dpfn, (sflags & MIGRATE_PFN_WRITE) !== 0 && vma !== undefined && (vma.prot & PROT_WRITE) !== 0, nr);
      mem.pagePut(spfn * PAGE_SIZE);
      migrateStats.migrated++;
      if (nr > 1) migrateStats.compoundMigrated++;
    } else {
      // remove_migration_ptes: the old mapping comes back.
      const saved = args.savedPte[i] ?? 0;
      let free = true;
      for (let j = 0; j < nr; j++) if (mm.pteFlags(addr + j * PAGE_SIZE) !== 0) free = false;
      if (saved !== 0 && free) {
        for (let j = 0; j < nr; j++) mm.setPte(addr + j * PAGE_SIZE, spfn + j, args.savedPte[i + j] ?? saved);
      } else {
        mem.pagePut(spfn * PAGE_SIZE);
      }
      if (dpfn >= 0) mem.pagePut(dpfn * PAGE_SIZE);
      migrateStats.restored++;
    }
    i += nr;
  }
}

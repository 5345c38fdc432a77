// kernel: drivers/iommu/generic_pt/iommu_pt.h, drivers/iommu/generic_pt/fmt/amdv1.h, x86_64.h
// A multi-level radix IO page table. Each table page is 512 entries; all table pages live in one
// pooled arena of typed arrays (address word + flag byte per entry), so map/unmap/walk allocate
// nothing per page. Level 0 holds 4 KiB leaves, level 1 2 MiB leaves, level 2 1 GiB leaves.
import { Errno } from '@dmakit/dma-core';
import type { FaultInjection } from '@dmakit/dma-core';

/** `IOMMU_*` prot bits (include/linux/iommu.h). */
export const IOMMU_READ = 1 << 0;
/** The device may write. kernel: IOMMU_WRITE in include/linux/iommu.h. */
export const IOMMU_WRITE = 1 << 1;
/** Cache-coherent access. kernel: IOMMU_CACHE in include/linux/iommu.h. */
export const IOMMU_CACHE = 1 << 2;
/** No instruction fetch. kernel: IOMMU_NOEXEC in include/linux/iommu.h. */
export const IOMMU_NOEXEC = 1 << 3;
/** Device memory (MMIO, P2P BAR). kernel: IOMMU_MMIO in include/linux/iommu.h. */
export const IOMMU_MMIO = 1 << 4;
/** Privileged access only. kernel: IOMMU_PRIV in include/linux/iommu.h. */
export const IOMMU_PRIV = 1 << 5;
const PROT_MASK = 0x3f;
const PTE_PRESENT = 1 << 6;
const PTE_LEAF = 1 << 7;

const GRANULE_SHIFT = 12;
const BITS_PER_LEVEL = 9;
const ENTRIES = 1 << BITS_PER_LEVEL;
/** A table page is one 4 KiB page of 512 eight-byte PTEs. */
export const TABLE_PAGE_BYTES = 4096;

/** Options of an IO page table: IOVA width, leaf page sizes, fault injection. */
export interface IoPageTableOptions {
  /** IOVA width in bits (default 48 → 4 levels). */
  iovaBits?: number;
  /** Leaf sizes the format may use (pgsize_bitmap), ascending; each must be a level size. */
  pageSizes?: readonly number[];
  faults?: FaultInjection;
}

/** One level of `IoPageTable.occupancy()`. */
export interface IoPageTableLevelOccupancy {
  /** 0 = the leaf-table level (4 KiB entries), levels - 1 = the root. */
  readonly level: number;
  /** Bytes one entry at this level covers. */
  readonly entrySize: number;
  /** Table pages at this level reachable from the root. */
  readonly tables: number;
  /** Present entries (table pointers and leaves). */
  readonly entries: number;
  /** Present leaves (pages of `entrySize`). */
  readonly leaves: number;
}

/** `IoPageTable.occupancy()`: levels top first, and the table-page counters. */
export interface IoPageTableOccupancy {
  readonly levels: readonly IoPageTableLevelOccupancy[];
  readonly tablePagesLive: number;
  readonly tablePagesPeak: number;
  readonly entriesPerTable: number;
}

/** Receives detached table pages (an iotlb gather's freelist). */
export interface TableFreelist {
  freelist: number[];
}

/**
 * What `IoPageTable.unmapRange` adds to: the IOVA range cleared so far (`start`..`end`
 * inclusive, `end` 0 and `start` MAX_SAFE_INTEGER when empty), the largest leaf size, and the
 * detached table pages. `struct iommu_iotlb_gather` (IommuIotlbGather) is one.
 */
export interface UnmapGather extends TableFreelist {
  start: number;
  end: number;
  pgsize: number;
}

/**
 * The IO page table of one domain. PTE = output address + prot bits + present/leaf flags.
 * Table pages are counted (`tablePagesLive`, `tableBytes`); a table emptied by unmap is detached
 * from its parent and handed to the caller's freelist, and only returned to the pool by
 * `releaseTables` once the IOTLB no longer may walk it (after the sync, or from the flush queue).
 */
export class IoPageTable {
  readonly iovaBits: number;
  /** First IOVA past the table's reach. */
  readonly iovaLimit: number;
  readonly levels: number;
  readonly pageSizes: readonly number[];
  /** Bytes covered by one entry at each level. */
  readonly levelSize: Float64Array;
  readonly #leafOk: Uint8Array;
  readonly #faults: FaultInjection | undefined;

  #addr: Float64Array;
  #flags: Uint8Array;
  #used: Uint16Array;
  #free: number[] = [];
  #next = 0;
  readonly root: number;

  tablePagesLive = 0;
  tablePagesPeak = 0;
  pteWrites = 0;

  // Leaf-table cache for runs of 4 KiB pages (invalidated whenever a table is detached).
  #cacheTable = -1;
  #cacheBase = -1;
  // Walk scratch (no allocation).
  readonly #pathTable: Int32Array;
  readonly #pathEntry: Int32Array;
  /** Results of the last successful `walk`. */
  walkPhys = 0;
  walkProt = 0;
  walkSize = 0;

  constructor(opts: IoPageTableOptions = {}) {
    const bits = opts.iovaBits ?? 48;
    if (!Number.isInteger(bits) || bits < 21 || bits > 52) throw new RangeError(`IoPageTable: iovaBits must be an integer in 21..52, got ${bits}`);
    this.iovaBits = bits;
    this.iovaLimit = 2 ** bits;
    this.levels = Math.ceil((bits - GRANULE_SHIFT) / BITS_PER_LEVEL);
    this.levelSize = new Float64Array(this.levels);
    for (let l = 0; l < this.levels; l++) this.levelSize[l] = 2 ** (GRANULE_SHIFT + BITS_PER_LEVEL * l);
    const sizes = opts.pageSizes ?? [4096, 2 ** 21, 2 ** 30];
    this.#leafOk = new Uint8Array(this.levels);
    const sorted = [...sizes].sort((a, b) => a - b);
    for (const s of sorted) {
      const l = Math.log2(s) - GRANULE_SHIFT;
      if (!Number.isInteger(l) || l % BITS_PER_LEVEL !== 0 || l / BITS_PER_LEVEL >= this.levels) {
        throw new RangeError(`IoPageTable: page size ${s} is not a leaf size of this format (4K, 2M, 1G, ... below the top level)`);
      }
      this.#leafOk[l / BITS_PER_LEVEL] = 1;
    }
    if (sorted[0] !== 4096) throw new RangeError('IoPageTable: the 4 KiB granule must be among the page sizes');
    this.pageSizes = sorted;
    this.#faults = opts.faults;
    const cap = 16;
    this.#addr = new Float64Array(cap * ENTRIES);
    this.#flags = new Uint8Array(cap * ENTRIES);
    this.#used = new Uint16Array(cap);
    this.#pathTable = new Int32Array(this.levels);
    this.#pathEntry = new Int32Array(this.levels);
    // The root is allocated up front and never freed (not a fault-injection site).
    this.root = this.#take();
  }


  /** Bytes of table pages in use. */
  get tableBytes(): number {
    return this.tablePagesLive * TABLE_PAGE_BYTES;
  }

  #take(): number {
    let t = this.#free.pop();
    if (t === undefined) {
      t = this.#next++;
      if (t >= this.#used.length) this.#grow();
    }
    this.#used[t] = 0;
    this.tablePagesLive++;
    if (this.tablePagesLive > this.tablePagesPeak) this.tablePagesPeak = this.tablePagesLive;
    return t;
  }

  #grow(): void {
    const cap = this.#used.length * 2;
    const a = new Float64Array(cap * ENTRIES);
    a.set(this.#addr);
    const f = new Uint8Array(cap * ENTRIES);
    f.set(this.#flags);
    const u = new Uint16Array(cap);
    u.set(this.#used);
    this.#addr = a;
    this.#flags = f;
    this.#used = u;
  }

  /** Allocate a table page: the 'pgtable' fault-injection site. -1 on failure. */
  #allocTable(): number {
    if (this.#faults?.shouldFail('pgtable')) return -1;
    return this.#take();
  }

  /** Return detached table pages to the pool (they were already unlinked from the tree). */
  releaseTables(list: number[]): void {
    if (list.length === 0) return; // the common case: setting `length` is a builtin call
    for (const t of list) {
      this.#flags.fill(0, t * ENTRIES, (t + 1) * ENTRIES);
      this.#free.push(t);
      this.tablePagesLive--;
    }
    list.length = 0;
  }

  static #index(iova: number, levelSize: number): number {
    return Math.floor(iova / levelSize) % ENTRIES;
  }

  /**
   * Map `count` leaves of `pgsize` starting at `iova` → `paddr`. Returns the bytes mapped, or a
   * negative errno after mapping `this.partial` bytes (the caller unmaps them): -EADDRINUSE if
   * any target entry (or a covering large leaf) is present, -ENOMEM if a table page allocation
   * failed. kernel: the map_pages() op of the generic IO page table
   * (drivers/iommu/generic_pt/iommu_pt.h: __map_range, __map_range_leaf/clear_contig and
   * __do_map_single_page all return -EADDRINUSE for an entry already there).
   */
  mapPages(iova: number, paddr: number, pgsize: number, count: number, prot: number): number {
    const level = pgsize === 4096 ? 0 : (Math.log2(pgsize) - GRANULE_SHIFT) / BITS_PER_LEVEL;
    const flagsLeaf = (prot & PROT_MASK) | PTE_PRESENT | PTE_LEAF;
    let done = 0;
    for (let n = 0; n < count; n++) {
      const va = iova + done;
      let t: number;
      if (level === 0 && this.#cacheTable >= 0 && va - this.#cacheBase >= 0 && va - this.#cacheBase < (this.levelSize[1] ?? 0)) {
        t = this.#cacheTable;
      } else {
        t = this.#descend(va, level);
        if (t < 0) {
          this.partial = done;
          return t;
        }
      }
      const e = t * ENTRIES + IoPageTable.#index(va, pgsize);
      if (this.#flags[e] !== 0) {
        this.#prune(va, level);
        this.partial = done;
        return -Errno.EADDRINUSE;
      }
      this.#addr[e] = paddr + done;
      this.#flags[e] = flagsLeaf;
      this.#used[t] = (this.#used[t] ?? 0) + 1;
      this.pteWrites++;
      done += pgsize;
    }
    return done;
  }

  /** Bytes mapped by the failed `mapPages` before its error. */
  partial = 0;

  /**
   * The one-page case of `mapPages` when the leaf table for `iova` is the cached one and the entry
   * is empty: store the PTE and return true. Anything else (another 2 MiB block, a present entry,
   * an address that is not a 4 KiB-aligned integer) returns false having changed nothing, and the
   * caller takes `mapPages`, which applies every rule. Kept small: the whole dma_iova_link chain
   * (dma-core's front end, iovaLink, mapNosyncPage, this) must fit V8's cumulative inlining budget,
   * or the IOVA is passed to a real call as a boxed double on every page.
   */
  mapLeaf4k(iova: number, paddr: number, prot: number): boolean {
    const t = this.#cacheTable;
    // Integers in 0..511 and 0..2^32-1 exactly when iova is a 4 KiB-aligned integer inside the
    // cached block and paddr a 4 KiB-aligned integer below 2^44 (above, mapPages handles it).
    const idx = (iova - this.#cacheBase) * (1 / 4096); // exact: a power of two
    const ppn = paddr * (1 / 4096);
    if (t < 0 || idx >>> 0 !== idx || idx >= ENTRIES || ppn >>> 0 !== ppn) return false;
    const e = t * ENTRIES + idx;
    const flags = this.#flags;
    if (flags[e] !== 0) return false;
    this.#addr[e] = paddr;
    flags[e] = (prot & PROT_MASK) | PTE_PRESENT | PTE_LEAF;
    const used = this.#used;
    used[t] = (used[t] ?? 0) + 1;
    this.pteWrites++;
    return true;
  }

  /** Walk (allocating tables) down to the table that holds level-`level` entries for `va`. */
  #descend(va: number, level: number): number {
    let t = this.root;
    for (let l = this.levels - 1; l > level; l--) {
      const e = t * ENTRIES + IoPageTable.#index(va, this.levelSize[l] ?? 0);
      const f = this.#flags[e] ?? 0;
      if (f === 0) {
        const child = this.#allocTable();
        if (child < 0) {
          this.#prune(va, level);
          return -Errno.ENOMEM;
        }
        this.#addr[e] = child;
        this.#flags[e] = PTE_PRESENT;
        this.#used[t] = (this.#used[t] ?? 0) + 1;
        this.pteWrites++;
        t = child;
      } else if ((f & PTE_LEAF) !== 0) {
        // A larger leaf already covers this IOVA: generic_pt's __map_range finds an entry that is
        // neither empty nor a table and returns -EADDRINUSE.
        this.#prune(va, level);
        return -Errno.EADDRINUSE;
      } else {
        t = this.#addr[e] ?? 0;
      }
    }
    if (level === 0) {
      this.#cacheTable = t;
      this.#cacheBase = va - (va % (this.levelSize[1] ?? 1));
    }
    return t;
  }

  /** Free tables on the path to `va` that a failed map left empty (never visible to a device). */
  #prune(va: number, level: number): void {
    const scratch: number[] = [];
    this.#detachEmpty(va, level + 1, scratch);
    this.releaseTables(scratch);
  }

  /**
   * Starting at the table holding level-(fromLevel-1) entries on the path to `va`, detach every
   * table that is empty, bottom-up, into `out`.
   */
  #detachEmpty(va: number, fromLevel: number, out: number[]): void {
    // Record the path first.
    let t = this.root;
    let depth = 0;
    for (let l = this.levels - 1; l >= fromLevel; l--) {
      const e = t * ENTRIES + IoPageTable.#index(va, this.levelSize[l] ?? 0);
      const f = this.#flags[e] ?? 0;
      if (f === 0 || (f & PTE_LEAF) !== 0) break;
      this.#pathTable[depth] = t;
      this.#pathEntry[depth] = e;
      depth++;
      t = this.#addr[e] ?? 0;
    }
    // `t` is the deepest table reached; detach it and its ancestors while empty.
    for (let d = depth - 1; d >= 0; d--) {
      if ((this.#used[t] ?? 0) !== 0) break;
      const parent = this.#pathTable[d] ?? 0;
      const e = this.#pathEntry[d] ?? 0;
      this.#flags[e] = 0;
      this.#addr[e] = 0;
      this.#used[parent] = (this.#used[parent] ?? 1) - 1;
      this.pteWrites++;
      out.push(t);
      if (t === this.#cacheTable) this.#cacheTable = -1;
      t = parent;
    }
  }

  /**
   * Unmap from `iova` for up to `size` bytes, the generic_pt way: a leaf that starts at the
   * current IOVA is removed whole (a large leaf reports its full size even if the range ends inside
   * it); a range starting inside a large leaf unmaps nothing; a hole stops the walk. The unmapped
   * range is added to `gather` once at the end (start, end, largest leaf size) and emptied tables
   * go to `gather.freelist`, as generic_pt's unmap_pages does with gather_range_pages().
   * Returns the bytes unmapped.
   */
  unmapRange(iova: number, size: number, gather: UnmapGather): number {
    let done = 0;
    let pgsize = 0;
    const flags = this.#flags;
    const addr = this.#addr;
    while (done < size) {
      const va = iova + done;
      if (va >= this.iovaLimit) break;
      // Runs of 4 KiB leaves in the cached leaf table: clear them in one pass (no walk per page).
      const ct = this.#cacheTable;
      const rel = va - this.#cacheBase;
      if (ct >= 0 && rel >= 0 && rel < 0x20_0000) {
        const first = ct * ENTRIES + rel / 4096;
        const stop = Math.min(ct * ENTRIES + ENTRIES, first + Math.ceil((size - done) / 4096));
        let e = first;
        while (e < stop && ((flags[e] ?? 0) & PTE_LEAF) !== 0) {
          flags[e] = 0;
          addr[e] = 0;
          e++;
        }
        const n = e - first;
        if (n > 0) {
          this.#used[ct] = (this.#used[ct] ?? n) - n;
          this.pteWrites += n;
          if (pgsize < 4096) pgsize = 4096;
          done += n * 4096;
          if ((this.#used[ct] ?? 0) === 0 && ct !== this.root) this.#detachEmpty(va, 1, gather.freelist);
          continue;
        }
      }
      let t = this.root;
      let removed = 0;
      for (let l = this.levels - 1; l >= 0; l--) {
        const ls = this.levelSize[l] ?? 0;
        const e = t * ENTRIES + IoPageTable.#index(va, ls);
        const f = flags[e] ?? 0;
        if (f === 0) break; // hole
        if ((f & PTE_LEAF) !== 0) {
          if (va % ls !== 0) break; // starts inside a large leaf: -EINVAL in generic_pt, nothing unmapped
          flags[e] = 0;
          addr[e] = 0;
          this.#used[t] = (this.#used[t] ?? 1) - 1;
          this.pteWrites++;
          removed = ls;
          if ((this.#used[t] ?? 0) === 0 && t !== this.root) this.#detachEmpty(va, l + 1, gather.freelist);
          break;
        }
        t = addr[e] ?? 0;
      }
      if (removed === 0) break;
      if (removed > pgsize) pgsize = removed;
      done += removed;
    }
    if (done > 0) {
      // iommu_iotlb_gather_add_range (include/linux/iommu.h), plus the page size seen.
      if (iova < gather.start) gather.start = iova;
      if (iova + done - 1 > gather.end) gather.end = iova + done - 1;
      if (pgsize > gather.pgsize) gather.pgsize = pgsize;
    }
    return done;
  }

  /**
   * Translate `iova`: true if a leaf maps it, with `walkPhys` (the output address of `iova`),
   * `walkProt` and `walkSize` (the leaf size) set. kernel: the iova_to_phys() op of the generic IO page table.
   */
  walk(iova: number): boolean {
    if (iova < 0 || iova >= this.iovaLimit) return false;
    let t = this.root;
    for (let l = this.levels - 1; l >= 0; l--) {
      const ls = this.levelSize[l] ?? 0;
      const e = t * ENTRIES + IoPageTable.#index(iova, ls);
      const f = this.#flags[e] ?? 0;
      if (f === 0) return false;
      if ((f & PTE_LEAF) !== 0) {
        this.walkPhys = (this.#addr[e] ?? 0) + (iova % ls);
        this.walkProt = f & PROT_MASK;
        this.walkSize = ls;
        return true;
      }
      t = this.#addr[e] ?? 0;
    }
    return false;
  }

  /** Is `size` a leaf size of this table? */
  isLeafSize(size: number): boolean {
    const l = Math.log2(size) - GRANULE_SHIFT;
    return Number.isInteger(l) && l % BITS_PER_LEVEL === 0 && this.#leafOk[l / BITS_PER_LEVEL] === 1;
  }

  /**
   * Read-only occupancy snapshot (a full walk: for visualisers and checks, not hot paths). Per
   * level, top first: table pages reachable from the root, present entries, and leaves at that
   * level (a level-1 leaf is a 2 MiB page, a level-0 leaf a 4 KiB page).
   */
  occupancy(): IoPageTableOccupancy {
    const tables = new Array<number>(this.levels).fill(0);
    const entries = new Array<number>(this.levels).fill(0);
    const leaves = new Array<number>(this.levels).fill(0);
    const visit = (t: number, l: number): void => {
      tables[l] = (tables[l] ?? 0) + 1;
      for (let i = 0; i < ENTRIES; i++) {
        const e = t * ENTRIES + i;
        const f = this.#flags[e] ?? 0;
        if (f === 0) continue;
        entries[l] = (entries[l] ?? 0) + 1;
        if ((f & PTE_LEAF) !== 0) leaves[l] = (leaves[l] ?? 0) + 1;
        else if (l > 0) visit(this.#addr[e] ?? 0, l - 1);
      }
    };
    visit(this.root, this.levels - 1);
    const levels: IoPageTableLevelOccupancy[] = [];
    for (let l = this.levels - 1; l >= 0; l--) {
      levels.push({ level: l, entrySize: this.levelSize[l] ?? 0, tables: tables[l] ?? 0, entries: entries[l] ?? 0, leaves: leaves[l] ?? 0 });
    }
    return { levels, tablePagesLive: this.tablePagesLive, tablePagesPeak: this.tablePagesPeak, entriesPerTable: ENTRIES };
  }

  /** Number of present leaves (a full walk: for tests and checks, not hot paths). */
  countLeaves(): number {
    let n = 0;
    const visit = (t: number, l: number): void => {
      for (let i = 0; i < ENTRIES; i++) {
        const e = t * ENTRIES + i;
        const f = this.#flags[e] ?? 0;
        if (f === 0) continue;
        if ((f & PTE_LEAF) !== 0) n++;
        else if (l > 0) visit(this.#addr[e] ?? 0, l - 1);
      }
    };
    visit(this.root, this.levels - 1);
    return n;
  }
}

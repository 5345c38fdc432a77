// kernel: include/linux/fs.h (struct address_space: i_pages), mm/filemap.c (filemap_get_folio,
// __filemap_add_folio, filemap_read), mm/shmem.c (shmem_get_folio: a hole is allocated zeroed),
// mm/truncate.c (truncate_inode_pages_range)
import type { SystemMemory } from '../mem/systemMemory.js';
import { GFP_ZERO } from '../mem/systemMemory.js';
import { PageFlag } from '../mem/pageMeta.js';
import { PAGE_SIZE } from '../units/page.js';

/** Reverse map page -> page cache (`folio->mapping`), per machine. */
const mappingOf = new WeakMap<SystemMemory, Map<number, AddressSpace>>();

/**
 * `folio_mapping(folio)`: the page cache a RAM page belongs to, or undefined (anonymous pages,
 * pages a driver allocated and inserted with vm_insert_page, free pages).
 */
export function folioMapping(memory: SystemMemory, phys: number): AddressSpace | undefined {
  return mappingOf.get(memory)?.get(phys - (phys % PAGE_SIZE));
}

/**
 * `struct address_space` of a tmpfs (shmem) inode: its page cache, one order-0 page per page
 * index. Each cached page holds one reference of its own (the page cache's); every PTE that maps
 * it holds another, so a page stays while it is cached or mapped.
 */
export class AddressSpace {
  readonly memory: SystemMemory;
  /** `i_pages`: page index -> physical address. */
  readonly pages = new Map<number, number>();
  /** Pages added over the lifetime (stats). */
  added = 0;

  constructor(memory: SystemMemory) {
    this.memory = memory;
  }

  /** `mapping->nrpages`. */
  get nrpages(): number {
    return this.pages.size;
  }

  /** `filemap_get_folio`: the cached page at `index`, or undefined (a hole). */
  findPage(index: number): number | undefined {
    return this.pages.get(index);
  }

  /**
   * `shmem_get_folio(SGP_CACHE)`: the cached page at `index`, allocating a zeroed one for a hole.
   * Returns the physical address, or 0 when memory is exhausted.
   */
  getPage(index: number): number {
    const have = this.pages.get(index);
    if (have !== undefined) return have;
    const phys = this.memory.allocPages(0, GFP_ZERO);
    if (phys === 0) return 0;
    this.pages.set(index, phys);
    let m = mappingOf.get(this.memory);
    if (m === undefined) {
      m = new Map();
      mappingOf.set(this.memory, m);
    }
    m.set(phys, this);
    this.added++;
    return phys;
  }

  /** Mark the cached page dirty (`folio_mark_dirty`). */
  markDirty(phys: number): void {
    this.memory.setPageFlags(phys, PageFlag.DIRTY);
  }

  /**
   * `truncate_inode_pages_range(mapping, start << PAGE_SHIFT, -1)`: drop every cached page from
   * index `start` on (the cache's reference; a page still mapped somewhere lives on until unmapped).
   * Returns the number of pages dropped.
   */
  truncateFrom(start: number): number {
    const m = mappingOf.get(this.memory);
    let n = 0;
    for (const [index, phys] of [...this.pages]) {
      if (index < start) continue;
      this.pages.delete(index);
      m?.delete(phys);
      this.memory.clearPageFlags(phys, PageFlag.DIRTY);
      this.memory.pagePut(phys);
      n++;
    }
    return n;
  }
}

// kernel: include/linux/mm_types.h (struct page), include/linux/page-flags.h, mm/page_owner.c
/** Pages per metadata chunk: 512 pages = 2 MiB, like one PTE table. */
export const PAGE_META_CHUNK_PAGES = 512;
const CHUNK_SHIFT_DIV = PAGE_META_CHUNK_PAGES;

/** Per-page flag bits (a subset of the kernel's page flags, plus model-only ones). */
export const PageFlag = {
  /** Head of a block handed out by the buddy allocator (its order is recorded). */
  HEAD: 1 << 0,
  /** The shared zero page (ZERO_PAGE(0)): never freed, never written by the CPU. */
  ZERO_PAGE: 1 << 1,
  /** ZONE_DEVICE MEMORY_DEVICE_PRIVATE page (memremap_pages). */
  DEVICE_PRIVATE: 1 << 2,
  /** Anonymous page mapped by a process (PageAnon). */
  ANON: 1 << 3,
  /** Page is pinned for DMA by its owner's choice (model-only marker; pins also count in refcount). */
  PINNED: 1 << 4,
  /** Dirty (set_page_dirty). */
  DIRTY: 1 << 5,
  /** Anonymous page mapped by exactly one process (PageAnonExclusive): a write may reuse it. */
  ANON_EXCLUSIVE: 1 << 6,
} as const;

/**
 * One 2 MiB chunk of `struct page` fields, as typed arrays. Chunks exist only for ranges whose
 * metadata was written, so a 1 TiB machine with a few touched pages costs a few chunks.
 */
export class PageMetaChunk {
  readonly refcount = new Int32Array(PAGE_META_CHUNK_PAGES);
  readonly flags = new Uint8Array(PAGE_META_CHUNK_PAGES);
  /** Buddy order of an allocated head page; -1 elsewhere. */
  readonly order = new Int8Array(PAGE_META_CHUNK_PAGES).fill(-1);
  /** Owner id (0 = none), see PageMetaStore.ownerName. */
  readonly owner = new Int32Array(PAGE_META_CHUNK_PAGES);
  /**
   * Order of the compound page (folio) this page belongs to, head and tails alike; -1 for a page
   * that is not part of a compound page (kernel: PageHead/PageTail, folio_order()).
   */
  readonly compound = new Int8Array(PAGE_META_CHUNK_PAGES).fill(-1);
}

/** Lazily chunked per-page metadata, keyed by pfn. */
export class PageMetaStore {
  readonly #chunks = new Map<number, PageMetaChunk>();
  readonly #ownerIds = new Map<string, number>();
  readonly #ownerNames: string[] = [''];
  /** Last chunk looked up (hot paths walk neighbouring pages). */
  #lastIndex = -1;
  #last: PageMetaChunk | undefined;

  /** Number of materialised 2 MiB metadata chunks. */
  get chunkCount(): number {
    return this.#chunks.size;
  }

  /** Chunk holding `pfn`, or undefined (read path: never allocates). */
  peek(pfn: number): PageMetaChunk | undefined {
    const idx = Math.floor(pfn / CHUNK_SHIFT_DIV);
    if (idx === this.#lastIndex) return this.#last;
    const c = this.#chunks.get(idx);
    if (c !== undefined) {
      this.#lastIndex = idx;
      this.#last = c;
    }
    return c;
  }

  /** Chunk holding `pfn`, created on demand (write path). */
  chunk(pfn: number): PageMetaChunk {
    const idx = Math.floor(pfn / CHUNK_SHIFT_DIV);
    if (idx === this.#lastIndex && this.#last !== undefined) return this.#last;
    let c = this.#chunks.get(idx);
    if (c === undefined) {
      c = new PageMetaChunk();
      this.#chunks.set(idx, c);
    }
    this.#lastIndex = idx;
    this.#last = c;
    return c;
  }

  ownerId(name: string): number {
    let id = this.#ownerIds.get(name);
    if (id === undefined) {
      id = this.#ownerNames.length;
      this.#ownerNames.push(name);
      this.#ownerIds.set(name, id);
    }
    return id;
  }

  ownerName(id: number): string | undefined {
    return id === 0 ? undefined : this.#ownerNames[id];
  }
}

export function slot(pfn: number): number {
  return pfn % CHUNK_SHIFT_DIV;
}

// kernel: mm/page_alloc.c (buddy allocator), mm/memblock.c, include/linux/mm.h (get_page/put_page)
import { PAGE_SIZE, SZ_4G, SZ_1G, alignDown, alignUp, isPowerOfTwo } from '../units/page.js';
import type { FaultInjection } from '../sim/faultInjection.js';
import { PhysicalMemory } from './physicalMemory.js';
import { RegionMap } from './regions.js';
import type { MemRegion, MemRegionKind } from './regions.js';
import { FreeArea, MAX_BUDDY_ORDER, buddyPfn, largestFittingOrder } from './buddy.js';
import { PageFlag, PageMetaStore, slot } from './pageMeta.js';

/** Options of SystemMemory: RAM size, physical address width and the fault-injection sites. */
export interface SystemMemoryOptions {
  ramBytes: number;
  /** Physical address width; the address space is [0, 2^physBits). */
  physBits: number;
  faults?: FaultInjection;
}

/** `__GFP_ZERO`: hand the block out zero-filled. */
export const GFP_ZERO = 0x100;
/**
 * `__GFP_COMP`: hand a block of order > 0 out as a compound page (a large folio): one refcount on
 * the head for the whole block, tails resolve to it (kernel: prep_compound_page in mm/page_alloc.c).
 */
export const GFP_COMP = 0x4000;

// kernel: include/linux/mm.h — pin_user_pages() adds this to the refcount of an order-0 folio.
/** Refcount bias a pin adds to an order-0 page. kernel: GUP_PIN_COUNTING_BIAS in include/linux/mm.h. */
export const GUP_PIN_COUNTING_BIAS = 1024;

/** Kind of page-allocator misuse reported by PageAllocError (dmakit's checks). */
export type PageAllocErrorCode = 'bad-address' | 'bad-order' | 'not-allocated' | 'double-free' | 'wrong-order' | 'refcount';

/**
 * A misuse of the page allocator (what the kernel reports with "Bad page state" / VM_BUG_ON_PAGE).
 * Thrown before any state changes.
 */
export class PageAllocError extends Error {
  readonly code: PageAllocErrorCode;
  readonly phys: number;

  constructor(code: PageAllocErrorCode, phys: number, message: string) {
    super(`${code} at 0x${phys.toString(16)}: ${message}`);
    this.name = 'PageAllocError';
    this.code = code;
    this.phys = phys;
  }
}

/** Snapshot of a page's metadata (`dump_page`). */
export interface PageInfo {
  readonly pfn: number;
  readonly phys: number;
  readonly refcount: number;
  /** Region kind, or 'none' outside every region. */
  readonly kind: MemRegionKind | 'none';
  readonly owner: string | undefined;
  /** PageFlag bits. */
  readonly flags: number;
  readonly zeroPage: boolean;
  readonly devicePrivate: boolean;
  /** Inside a block handed out by the buddy allocator. */
  readonly allocated: boolean;
  /** Inside a free buddy block. */
  readonly free: boolean;
  /** Inside a memblock reservation. */
  readonly reserved: boolean;
  /** Buddy order when this is the head of an allocated block, else -1. */
  readonly order: number;
  /** Physical address of the compound head (`compound_head`); the page itself when not compound. */
  readonly compoundHead: number;
  /** Order of the compound page (folio) the page belongs to; 0 when not compound (`folio_order`). */
  readonly compoundOrder: number;
}

/** Page-allocator counters: total, free, allocated and reserved pages, free blocks per order. */
export interface PageAllocStats {
  readonly totalPages: number;
  readonly freePages: number;
  readonly allocatedPages: number;
  readonly reservedPages: number;
  /** Free blocks per order, index = order (`/proc/buddyinfo`). */
  readonly freeBlocks: readonly number[];
}

/** Physical memory + RAM layout + buddy page allocator + per-page metadata. */
export class SystemMemory extends PhysicalMemory {
  readonly regions = new RegionMap();
  readonly ramBytes: number;
  readonly #faults: FaultInjection | undefined;
  readonly #areas: FreeArea[] = [];
  readonly #meta = new PageMetaStore();
  readonly #reserved: { startPfn: number; endPfn: number }[] = [];
  #totalPages = 0;
  #freePages = 0;
  #allocatedPages = 0;
  #reservedPages = 0;
  #zeroPage = 0;

  constructor(opts: SystemMemoryOptions) {
    super(2 ** opts.physBits);
    this.ramBytes = opts.ramBytes;
    this.#faults = opts.faults;
    for (let k = 0; k <= MAX_BUDDY_ORDER; k++) this.#areas.push(new FreeArea());
    // x86-like layout: low RAM up to 3 GiB, the PCI hole, the rest above 4 GiB.
    const low = Math.min(opts.ramBytes, 3 * SZ_1G);
    this.addRegion({ start: 0, size: low, kind: 'ram', name: 'System RAM' });
    if (opts.ramBytes > low) this.addRegion({ start: SZ_4G, size: opts.ramBytes - low, kind: 'ram', name: 'System RAM (high)' });
  }

  // ---- regions ---------------------------------------------------------------------------

  /**
   * Add a region. RAM is handed to the buddy allocator (memory hotplug + online); 'device-private'
   * (memremap_pages MEMORY_DEVICE_PRIVATE), 'p2p-bar' (pci_p2pdma_add_resource) and 'mmio' are not.
   */
  addRegion(region: MemRegion): MemRegion {
    if (region.start + region.size > this.limit) {
      throw new RangeError(`region ${region.name} ends above the physical address limit 0x${this.limit.toString(16)}`);
    }
    if (region.kind === 'ram' && (region.start % PAGE_SIZE !== 0 || region.size % PAGE_SIZE !== 0)) {
      throw new RangeError(`RAM region ${region.name} must be page aligned`);
    }
    const r = this.regions.add(region);
    if (region.kind === 'ram') {
      // pfn 0 is never handed out (a NULL physical address means failure).
      const startPfn = Math.max(1, region.start / PAGE_SIZE);
      const endPfn = (region.start + region.size) / PAGE_SIZE;
      if (endPfn > startPfn) {
        this.#freeRange(startPfn, endPfn);
        this.#totalPages += endPfn - startPfn;
      }
    }
    return r;
  }

  /**
   * `request_free_mem_region`: place a region of `size` bytes in unused physical address space,
   * searching down from the top (kernel/resource.c), aligned to `align` (default 1 GiB or size).
   * Returns the region, or undefined if no gap is large enough.
   */
  requestFreeMemRegion(size: number, kind: MemRegionKind, name: string, owner?: string, align?: number): MemRegion | undefined {
    if (!Number.isSafeInteger(size) || size <= 0) return undefined;
    const a = align ?? Math.min(SZ_1G, 2 ** Math.ceil(Math.log2(size)));
    let end = this.limit;
    const rs = [...this.regions.all].sort((x, y) => y.start - x.start);
    for (let i = 0; i <= rs.length; i++) {
      const below = rs[i];
      const floor = below === undefined ? 0 : below.start + below.size;
      const start = alignDown(end - size, a);
      if (start >= floor && start >= 0) {
        const region: MemRegion = owner === undefined ? { start, size, kind, name } : { start, size, kind, name, owner };
        return this.addRegion(region);
      }
      if (below !== undefined) end = Math.min(end, below.start);
    }
    return undefined;
  }

  /** The memory region containing phys, if any. */
  regionOf(phys: number): MemRegion | undefined {
    return this.regions.find(phys);
  }

  /** True when [phys, phys + len) is all system RAM. */
  isRam(phys: number, len: number): boolean {
    return this.regions.covers(phys, len, 'ram');
  }

  /** True when [phys, phys + len) lies inside one region that is not MMIO (RAM, device memory or a BAR). */
  isAccessible(phys: number, len: number): boolean {
    const r = this.regions.find(phys);
    return r !== undefined && r.kind !== 'mmio' && phys + len <= r.start + r.size;
  }

  /** One past the highest RAM address. */
  ramTop(): number {
    let top = 0;
    for (const r of this.regions.all) if (r.kind === 'ram') top = Math.max(top, r.start + r.size);
    return top;
  }

  // ---- buddy allocator --------------------------------------------------------------------

  /** Allocate 2^order contiguous pages; returns the physical address or 0 (NULL) on failure. kernel: alloc_pages() in mm/page_alloc.c. */
  allocPages(order: number, gfp = 0): number {
    return this.allocPagesBelow(order, Number.POSITIVE_INFINITY, gfp);
  }

  /**
   * Allocate 2^order pages lying entirely below `limitPhys` (a GFP_DMA32-like zone limit; the model
   * has one zone and filters by address). Takes the smallest order with a fitting block, then the
   * lowest address in it (`__rmqueue_smallest` + `expand`). Returns 0 on failure.
   */
  allocPagesBelow(order: number, limitPhys: number, gfp = 0): number {
    if (!Number.isInteger(order) || order < 0 || order > MAX_BUDDY_ORDER) return 0;
    if (this.#faults?.shouldFail('alloc_pages') === true) return 0;
    return this.#alloc(order, limitPhys, gfp);
  }

  /**
   * Allocate 2^order pages lying entirely at or above `floorPhys` (e.g. a buffer above 4 GiB, to
   * show a 32-bit device bouncing or being remapped). The kernel has no such call: a driver gets
   * high memory from a zone (`ZONE_NORMAL` above `ZONE_DMA32`); the model has one zone and filters
   * by address, as `allocPagesBelow` does. It takes the smallest order that has a free block
   * reaching above the floor and, in it, the lowest address at or above the floor: a block wholly
   * above it is used from its start (`expand` keeps the lowest piece), a block straddling it gives
   * the 2^order-aligned piece just above the floor and the rest goes back to the free lists.
   * With no block straddling the floor this is the block the lowest-first allocator would hand
   * out once everything below the floor were taken. Returns 0 on failure.
   */
  allocPagesAbove(order: number, floorPhys: number, gfp = 0): number {
    if (!Number.isInteger(order) || order < 0 || order > MAX_BUDDY_ORDER) return 0;
    if (!Number.isFinite(floorPhys) || floorPhys < 0) return 0;
    if (this.#faults?.shouldFail('alloc_pages') === true) return 0;
    const want = 2 ** order;
    // Aligned start of the first 2^order piece at or above the floor.
    const firstPfn = Math.ceil(Math.ceil(floorPhys / PAGE_SIZE) / want) * want;
    for (let k = order; k <= MAX_BUDDY_ORDER; k++) {
      const area = this.#areaAt(k);
      if (area.size === 0) continue;
      const size = 2 ** k;
      let best = -1;
      let bestHead = -1;
      for (const head of area.values()) {
        // A block above the floor is used from its start; one straddling it from `firstPfn`.
        const start = head >= firstPfn ? head : firstPfn;
        if (start + want > head + size || (best >= 0 && start >= best)) continue;
        best = start;
        bestHead = head;
      }
      if (best < 0) continue;
      if (best === bestHead) {
        area.remove(bestHead);
        for (let j = k; j > order; j--) this.#areaAt(j - 1).add(bestHead + 2 ** (j - 1));
        this.#freePages -= want;
      } else this.#carve(best, best + want);
      return this.#claim(best, order, gfp);
    }
    return 0;
  }

  #alloc(order: number, limitPhys: number, gfp: number): number {
    const limitPfn = limitPhys / PAGE_SIZE;
    const want = 2 ** order;
    for (let k = order; k <= MAX_BUDDY_ORDER; k++) {
      const area = this.#areas[k];
      if (area === undefined || area.size === 0) continue;
      const pfn = area.min();
      // The lowest sub-block of a block starts at the block itself; it fits iff this holds.
      if (pfn < 0 || pfn + want > limitPfn) continue;
      area.remove(pfn);
      // expand(): give the upper halves back, keep the lowest piece.
      for (let j = k; j > order; j--) this.#areaAt(j - 1).add(pfn + 2 ** (j - 1));
      this.#freePages -= want;
      return this.#claim(pfn, order, gfp);
    }
    return 0;
  }

  /** Account a block just taken off the free lists as allocated (head page, refcount 1). */
  #claim(pfn: number, order: number, gfp: number): number {
    const want = 2 ** order;
    this.#allocatedPages += want;
    const c = this.#meta.chunk(pfn);
    const s = slot(pfn);
    c.order[s] = order;
    c.flags[s] = PageFlag.HEAD;
    c.refcount[s] = 1;
    c.owner[s] = 0;
    const phys = pfn * PAGE_SIZE;
    if ((gfp & GFP_ZERO) !== 0) this.fill(phys, want * PAGE_SIZE, 0);
    if ((gfp & GFP_COMP) !== 0 && order > 0) this.#setCompound(pfn, order, order);
    return phys;
  }

  /** Write the compound order of every page of [pfn, pfn + 2^order) (-1 clears). */
  #setCompound(pfn: number, order: number, value: number): void {
    const n = 2 ** order;
    for (let i = 0; i < n; i++) this.#meta.chunk(pfn + i).compound[slot(pfn + i)] = value;
  }

  /** pfn of the compound head of `pfn` (`compound_head`), or `pfn` itself. */
  #folioPfn(pfn: number): number {
    const k = this.#meta.peek(pfn)?.compound[slot(pfn)] ?? -1;
    if (k <= 0) return pfn;
    const n = 2 ** k;
    return pfn - (pfn % n);
  }

  /**
   * `__free_pages(page, order)`: drop the allocation reference; the block goes back to the buddy
   * lists when its refcount reaches zero (someone holding get_page keeps it alive).
   * Freeing a non-head, a free block or with the wrong order throws PageAllocError.
   */
  freePages(phys: number, order: number): void {
    const pfn = this.#checkHead(phys, order);
    const c = this.#meta.chunk(pfn);
    const s = slot(pfn);
    const ref = c.refcount[s] ?? 0;
    if (ref <= 0) throw new PageAllocError('refcount', phys, 'freeing a page whose refcount is already zero');
    c.refcount[s] = ref - 1;
    if (ref === 1) this.#releaseBlock(pfn, order);
  }

  #checkHead(phys: number, order: number): number {
    if (!Number.isSafeInteger(phys) || phys <= 0 || phys % PAGE_SIZE !== 0) {
      throw new PageAllocError('bad-address', phys, 'not a page-aligned, non-NULL physical address');
    }
    if (!Number.isInteger(order) || order < 0 || order > MAX_BUDDY_ORDER) {
      throw new PageAllocError('bad-order', phys, `order ${order} outside 0..${MAX_BUDDY_ORDER}`);
    }
    const pfn = phys / PAGE_SIZE;
    const c = this.#meta.peek(pfn);
    const s = slot(pfn);
    if (c === undefined || ((c.flags[s] ?? 0) & PageFlag.HEAD) === 0) {
      if (this.#freeBlockContaining(pfn) >= 0) throw new PageAllocError('double-free', phys, 'page is already free');
      throw new PageAllocError('not-allocated', phys, 'not the head of an allocated block');
    }
    const got = c.order[s] ?? -1;
    if (got !== order) throw new PageAllocError('wrong-order', phys, `allocated with order ${got}, freed with order ${order}`);
    return pfn;
  }

  #releaseBlock(pfn: number, order: number): void {
    const c = this.#meta.chunk(pfn);
    const s = slot(pfn);
    if ((c.compound[s] ?? -1) >= 0) this.#setCompound(pfn, order, -1);
    c.order[s] = -1;
    c.flags[s] = 0;
    c.owner[s] = 0;
    c.refcount[s] = 0;
    const n = 2 ** order;
    this.#allocatedPages -= n;
    this.#freeOne(pfn, order);
  }

  /** `__free_one_page`: merge with free buddies as far as possible. */
  #freeOne(pfn: number, order: number): void {
    let p = pfn;
    let k = order;
    this.#freePages += 2 ** order;
    while (k < MAX_BUDDY_ORDER) {
      const b = buddyPfn(p, k);
      const area = this.#areaAt(k);
      if (!area.has(b)) break;
      area.remove(b);
      p = Math.min(p, b);
      k++;
    }
    this.#areaAt(k).add(p);
  }

  /** Hand [startPfn, endPfn) to the allocator as maximal aligned blocks. */
  #freeRange(startPfn: number, endPfn: number): void {
    let p = startPfn;
    while (p < endPfn) {
      const k = largestFittingOrder(p, endPfn, MAX_BUDDY_ORDER);
      this.#freeOne(p, k);
      p += 2 ** k;
    }
  }

  /** Start pfn of the free block containing `pfn`, or -1 (the order goes to #foundOrder). */
  #freeBlockContaining(pfn: number): number {
    for (let k = 0; k <= MAX_BUDDY_ORDER; k++) {
      const head = pfn - (pfn % 2 ** k);
      if (this.#areaAt(k).has(head)) {
        this.#foundOrder = k;
        return head;
      }
    }
    return -1;
  }

  #foundOrder = 0;

  #areaAt(k: number): FreeArea {
    const a = this.#areas[k];
    if (a === undefined) throw new RangeError(`order ${k}`);
    return a;
  }

  #rangeIsFree(startPfn: number, endPfn: number): boolean {
    let p = startPfn;
    while (p < endPfn) {
      const head = this.#freeBlockContaining(p);
      if (head < 0) return false;
      p = head + 2 ** this.#foundOrder;
    }
    return true;
  }

  /** Take [startPfn, endPfn) (all free) out of the buddy lists. */
  #carve(startPfn: number, endPfn: number): void {
    let p = startPfn;
    while (p < endPfn) {
      const head = this.#freeBlockContaining(p);
      if (head < 0) throw new RangeError('carve: range not free');
      const k = this.#foundOrder;
      const blockEnd = head + 2 ** k;
      this.#areaAt(k).remove(head);
      this.#freePages -= 2 ** k;
      if (head < startPfn) this.#freeRange(head, startPfn);
      if (blockEnd > endPfn) this.#freeRange(endPfn, blockEnd);
      p = Math.min(blockEnd, endPfn);
    }
  }

  /**
   * Reserve a RAM range at boot (`memblock_alloc_low`), e.g. the swiotlb pool: the lowest free,
   * `align`-aligned range of `bytes` (rounded up to pages) is taken out of the allocator for good.
   * Returns its start, or 0 if no such range exists.
   */
  reserveLow(bytes: number, align: number): number {
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || !isPowerOfTwo(align)) return 0;
    const len = alignUp(bytes, PAGE_SIZE);
    const a = Math.max(align, PAGE_SIZE);
    for (const r of this.regions.all) {
      if (r.kind !== 'ram') continue;
      const end = r.start + r.size;
      for (let start = alignUp(Math.max(r.start, PAGE_SIZE), a); start + len <= end; start += a) {
        const s = start / PAGE_SIZE;
        const e = (start + len) / PAGE_SIZE;
        if (!this.#rangeIsFree(s, e)) continue;
        this.#carve(s, e);
        this.#reserved.push({ startPfn: s, endPfn: e });
        this.#reservedPages += e - s;
        return start;
      }
    }
    return 0;
  }

  #isReserved(pfn: number): boolean {
    for (const r of this.#reserved) if (pfn >= r.startPfn && pfn < r.endPfn) return true;
    return false;
  }

  /** Head pfn of the allocated block containing `pfn`, or -1. */
  #allocatedHead(pfn: number): number {
    for (let k = 0; k <= MAX_BUDDY_ORDER; k++) {
      const head = pfn - (pfn % 2 ** k);
      const c = this.#meta.peek(head);
      if (c === undefined) continue;
      const s = slot(head);
      if (((c.flags[s] ?? 0) & PageFlag.HEAD) !== 0 && (c.order[s] ?? -1) >= k) return head;
    }
    return -1;
  }

  /** Snapshot of the page allocator's counters (like /proc/buddyinfo and /proc/meminfo). */
  stats(): PageAllocStats {
    return {
      totalPages: this.#totalPages,
      freePages: this.#freePages,
      allocatedPages: this.#allocatedPages,
      reservedPages: this.#reservedPages,
      freeBlocks: this.#areas.map((a) => a.size),
    };
  }

  /** Pages currently free in the buddy allocator. */
  get freePageCount(): number {
    return this.#freePages;
  }

  /** Pages currently allocated. */
  get allocatedPageCount(): number {
    return this.#allocatedPages;
  }

  /** Materialised 2 MiB per-page metadata chunks (heap use scales with this, not with RAM). */
  get metadataChunks(): number {
    return this.#meta.chunkCount;
  }

  /** Free block start pfns of one order (tests, /proc/pagetypeinfo-like views). */
  freeBlocksOf(order: number): number[] {
    return [...this.#areaAt(order).values()].sort((a, b) => a - b);
  }

  // ---- per-page metadata ------------------------------------------------------------------

  /**
   * `folio_ref_count(page_folio(page))`: the reference count of the page, or of its compound head
   * for a tail page of a large folio (one count for the whole folio, as the kernel keeps it).
   */
  getPageRef(phys: number): number {
    const pfn = this.#folioPfn(Math.floor(phys / PAGE_SIZE));
    return this.#meta.peek(pfn)?.refcount[slot(pfn)] ?? 0;
  }

  /**
   * `get_page` (refs = 1) / `folio_ref_add` (pin_user_pages adds GUP_PIN_COUNTING_BIAS).
   * A RAM page must already be referenced (taking a reference on a free page is a bug);
   * ZONE_DEVICE pages (device-private, P2P BAR) start at zero and are refcounted by their owner.
   */
  pageGet(phys: number, refs = 1): void {
    const pfn = this.#folioPfn(this.#pfnChecked(phys));
    const r = this.regions.find(phys);
    const cur = this.getPageRef(phys);
    if (r === undefined || r.kind === 'mmio') throw new PageAllocError('bad-address', phys, 'no struct page here');
    if (r.kind === 'ram' && cur <= 0) throw new PageAllocError('refcount', phys, 'get_page on a page with refcount 0');
    this.#meta.chunk(pfn).refcount[slot(pfn)] = cur + refs;
  }

  /**
   * `put_page`: drop references; when an allocated head (order-0 page or compound head) reaches
   * zero it is freed. Putting a page whose refcount is already zero throws.
   */
  pagePut(phys: number, refs = 1): void {
    const pfn = this.#folioPfn(this.#pfnChecked(phys));
    const cur = this.getPageRef(phys);
    if (cur < refs) throw new PageAllocError('refcount', phys, `put_page: refcount ${cur} < ${refs}`);
    const c = this.#meta.chunk(pfn);
    const s = slot(pfn);
    c.refcount[s] = cur - refs;
    if (cur - refs === 0 && ((c.flags[s] ?? 0) & PageFlag.HEAD) !== 0) {
      this.#releaseBlock(pfn, c.order[s] ?? 0);
    }
  }

  // ---- compound pages (large folios) -------------------------------------------------------

  /** Physical address of the compound head of the page at `phys` (`compound_head`), or `phys` rounded down to its page. */
  compoundHead(phys: number): number {
    return this.#folioPfn(Math.floor(phys / PAGE_SIZE)) * PAGE_SIZE;
  }

  /** `folio_order(page_folio(page))`: 0 for a page outside any compound page. */
  folioOrder(phys: number): number {
    const pfn = Math.floor(phys / PAGE_SIZE);
    const k = this.#meta.peek(pfn)?.compound[slot(pfn)] ?? -1;
    return k < 0 ? 0 : k;
  }

  /**
   * `prep_compound_page` for pages the buddy allocator does not own (ZONE_DEVICE folios,
   * kernel: zone_device_folio_init with an order): make [phys, phys + 2^order pages) one folio.
   * The references stay on the head. Throws PageAllocError on a misaligned head or a bad order.
   */
  prepCompoundPage(phys: number, order: number): void {
    const pfn = this.#pfnChecked(phys);
    if (!Number.isInteger(order) || order < 1 || order > MAX_BUDDY_ORDER) throw new PageAllocError('bad-order', phys, `compound order ${order}`);
    if (pfn % 2 ** order !== 0) throw new PageAllocError('bad-address', phys, `compound head not aligned to order ${order}`);
    this.#setCompound(pfn, order, order);
  }

  /** Undo prepCompoundPage when a ZONE_DEVICE folio is freed (kernel: folio_reset_order). */
  clearCompoundPage(phys: number): void {
    const pfn = this.#folioPfn(this.#pfnChecked(phys));
    const k = this.#meta.peek(pfn)?.compound[slot(pfn)] ?? -1;
    if (k > 0) this.#setCompound(pfn, k, -1);
  }

  /**
   * Split the large folio headed at `phys` into order-0 pages (kernel: __split_folio_to_order in
   * mm/huge_memory.c, as split_huge_page_to_list_to_order(…, 0) ends). Page i gets `refs(i)`
   * references (the mappings and pins the caller counted for it) and the head's ANON, DIRTY and
   * DEVICE_PRIVATE flags (PageAnonExclusive goes to each mapped page). A buddy-allocated block
   * becomes 2^order order-0 allocations and the pages left with no reference are freed at once;
   * ZONE_DEVICE pages stay with their owner (which frees pages whose count is zero).
   * Throws PageAllocError when `phys` is not the head of a large folio.
   */
  splitFolio(phys: number, refs: (i: number) => number): void {
    const pfn = this.#pfnChecked(phys);
    const c = this.#meta.peek(pfn);
    const s = slot(pfn);
    const order = c?.compound[s] ?? -1;
    if (c === undefined || order <= 0 || this.#folioPfn(pfn) !== pfn) throw new PageAllocError('not-allocated', phys, 'not the head of a large folio');
    const headFlags = c.flags[s] ?? 0;
    const buddy = (headFlags & PageFlag.HEAD) !== 0;
    const keep = headFlags & (PageFlag.ANON | PageFlag.ANON_EXCLUSIVE | PageFlag.DIRTY | PageFlag.DEVICE_PRIVATE);
    const owner = c.owner[s] ?? 0;
    const n = 2 ** order;
    const free: number[] = [];
    for (let i = 0; i < n; i++) {
      const p = pfn + i;
      const ci = this.#meta.chunk(p);
      const si = slot(p);
      const r = refs(i);
      ci.compound[si] = -1;
      ci.refcount[si] = r;
      ci.owner[si] = owner;
      if (buddy) {
        ci.order[si] = 0;
        ci.flags[si] = PageFlag.HEAD | keep;
        if (r === 0) free.push(p);
      } else {
        ci.flags[si] = keep;
      }
    }
    for (const p of free) this.#releaseBlock(p, 0);
  }

  /** `folio_maybe_dma_pinned`: refcount says a DMA pin may be held. */
  pageMaybeDmaPinned(phys: number): boolean {
    return this.getPageRef(phys) >= GUP_PIN_COUNTING_BIAS;
  }

  /** page_owner: record who allocated or owns a page. */
  setPageOwner(phys: number, owner: string | undefined): void {
    const pfn = this.#pfnChecked(phys);
    this.#meta.chunk(pfn).owner[slot(pfn)] = owner === undefined ? 0 : this.#meta.ownerId(owner);
  }

  /** Sets page flags on the page at phys (kernel: SetPageXxx() helpers in include/linux/page-flags.h). */
  setPageFlags(phys: number, flags: number): void {
    const pfn = this.#pfnChecked(phys);
    const c = this.#meta.chunk(pfn);
    const s = slot(pfn);
    c.flags[s] = (c.flags[s] ?? 0) | (flags & ~PageFlag.HEAD);
  }

  /** Clears page flags on the page at phys (kernel: ClearPageXxx() helpers in include/linux/page-flags.h). */
  clearPageFlags(phys: number, flags: number): void {
    const pfn = this.#pfnChecked(phys);
    const c = this.#meta.peek(pfn);
    if (c === undefined) return;
    const s = slot(pfn);
    c.flags[s] = (c.flags[s] ?? 0) & ~(flags & ~PageFlag.HEAD);
  }

  /** Flags of the page at phys (0 for a page without metadata). */
  pageFlags(phys: number): number {
    const pfn = Math.floor(phys / PAGE_SIZE);
    return this.#meta.peek(pfn)?.flags[slot(pfn)] ?? 0;
  }

  /** Snapshot of one page's metadata (never allocates metadata). */
  pageInfo(phys: number): PageInfo {
    const pfn = Math.floor(phys / PAGE_SIZE);
    const c = this.#meta.peek(pfn);
    const s = slot(pfn);
    const flags = c?.flags[s] ?? 0;
    const region = this.regions.find(phys);
    const order = (flags & PageFlag.HEAD) !== 0 ? (c?.order[s] ?? -1) : -1;
    return {
      pfn,
      phys: pfn * PAGE_SIZE,
      refcount: c?.refcount[s] ?? 0,
      kind: region?.kind ?? 'none',
      owner: this.#meta.ownerName(c?.owner[s] ?? 0) ?? (region?.kind === 'device-private' ? region.owner : undefined),
      flags,
      zeroPage: (flags & PageFlag.ZERO_PAGE) !== 0,
      devicePrivate: (flags & PageFlag.DEVICE_PRIVATE) !== 0 || region?.kind === 'device-private',
      allocated: this.#allocatedHead(pfn) >= 0,
      free: this.#freeBlockContaining(pfn) >= 0,
      reserved: this.#isReserved(pfn),
      order,
      compoundHead: this.#folioPfn(pfn) * PAGE_SIZE,
      compoundOrder: Math.max(0, c?.compound[s] ?? -1),
    };
  }

  /** Alias of pageInfo (`pfn_to_page` + dump). */
  getPage(phys: number): PageInfo {
    return this.pageInfo(phys);
  }

  /** The machine's fault injection (for allocators built on this memory, e.g. a device pagemap). */
  get faultInjection(): FaultInjection | undefined {
    return this.#faults;
  }

  /** True once the zero page exists (allocated at its first use, kept for the machine's life). */
  get zeroPageAllocated(): boolean {
    return this.#zeroPage !== 0;
  }

  /**
   * The shared zero page (`ZERO_PAGE(0)`), allocated on first use and never freed. Read faults on
   * untouched private anonymous memory map it read-only.
   */
  get zeroPagePhys(): number {
    if (this.#zeroPage === 0) {
      // Boot-time allocation: not subject to fault injection.
      const phys = this.#alloc(0, Number.POSITIVE_INFINITY, GFP_ZERO);
      if (phys === 0) throw new RangeError('cannot allocate the zero page');
      this.setPageFlags(phys, PageFlag.ZERO_PAGE);
      this.setPageOwner(phys, 'zero_page');
      this.#zeroPage = phys;
    }
    return this.#zeroPage;
  }

  #pfnChecked(phys: number): number {
    if (!Number.isSafeInteger(phys) || phys < 0 || phys >= this.limit) {
      throw new PageAllocError('bad-address', phys, 'outside the physical address space');
    }
    return Math.floor(phys / PAGE_SIZE);
  }
}

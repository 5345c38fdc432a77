// kernel: mm/page_alloc.c (__rmqueue_smallest, expand, __free_one_page), include/linux/mmzone.h
/**
 * The kernel's MAX_PAGE_ORDER is 10 (4 MiB blocks). The model allows orders up to 18 (1 GiB) so a
 * 1 TiB machine starts with about a thousand free blocks, and 1 GiB / 2 MiB allocations (hugetlb,
 * big coherent buffers) come straight from the buddy lists instead of CMA/hugetlb_cma.
 */
export const MAX_BUDDY_ORDER = 18;

/**
 * One order's free list (`struct free_area`): a Set for O(1) buddy lookups plus a lazy min-heap so
 * allocation takes the lowest-address block of the order (deterministic; the kernel takes the list
 * head). Heap entries whose pfn left the Set are stale and skipped.
 */
export class FreeArea {
  readonly #set = new Set<number>();
  #heap: number[] = [];

  get size(): number {
    return this.#set.size;
  }

  has(pfn: number): boolean {
    return this.#set.has(pfn);
  }

  add(pfn: number): void {
    this.#set.add(pfn);
    const h = this.#heap;
    let i = h.length;
    h.push(pfn);
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pv = h[p] ?? 0;
      if (pv <= pfn) break;
      h[i] = pv;
      i = p;
    }
    h[i] = pfn;
  }

  remove(pfn: number): void {
    this.#set.delete(pfn);
    if (this.#heap.length > 2 * this.#set.size + 64) this.#rebuild();
  }

  /** Lowest free pfn of this order, or -1. */
  min(): number {
    const h = this.#heap;
    while (h.length > 0) {
      const top = h[0] ?? 0;
      if (this.#set.has(top)) return top;
      this.#popTop();
    }
    return -1;
  }

  values(): IterableIterator<number> {
    return this.#set.values();
  }

  #rebuild(): void {
    // A sorted array is a valid min-heap.
    this.#heap = [...this.#set].sort((a, b) => a - b);
  }

  #popTop(): void {
    const h = this.#heap;
    const last = h.pop();
    if (last === undefined || h.length === 0) return;
    let i = 0;
    const n = h.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let m = l;
      let mv = h[l] ?? 0;
      if (r < n) {
        const rv = h[r] ?? 0;
        if (rv < mv) {
          m = r;
          mv = rv;
        }
      }
      if (mv >= last) break;
      h[i] = mv;
      i = m;
    }
    h[i] = last;
  }
}

/** pfn of the buddy of the block at `pfn` of size 2^order (`__find_buddy_pfn`, exact above 2^32). */
export function buddyPfn(pfn: number, order: number): number {
  const size = 2 ** order;
  return Math.floor(pfn / size) % 2 === 0 ? pfn + size : pfn - size;
}

/** Largest order <= max for which `pfn` is aligned and the block fits before `end`. */
export function largestFittingOrder(pfn: number, end: number, max: number): number {
  let k = 0;
  while (k < max) {
    const next = 2 ** (k + 1);
    if (pfn % next !== 0 || pfn + next > end) break;
    k++;
  }
  return k;
}

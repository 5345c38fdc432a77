/**
 * Floors: the simplest typed-array code that does the same work as a dmakit hot path, with the
 * same data structure. A "vs floor" ratio then measures what the model adds on top of the work
 * itself (argument checks, dispatch, counters, tracing branches), never a different algorithm.
 */

const ENTRIES = 512;
const LEVELS = 4;
const PRESENT = 1;
const LEAF = 2;
/** Read permission bit of a floor PTE (the prot passed to link). */
export const FLOOR_READ = 4;
/** Write permission bit of a floor PTE. */
export const FLOOR_WRITE = 8;

/**
 * A 4-level radix IO page table (512 entries per table, 4 KiB leaves) in typed arrays, like
 * iommu-dma's IoPageTable: table pages from a free list, a used-entry count per table, empty
 * tables freed on unmap, and the last leaf table cached between consecutive pages.
 */
export class FloorPageTable {
  readonly addr: Float64Array;
  readonly flags: Uint8Array;
  readonly used: Uint16Array;
  readonly #free: Int32Array;
  #freeTop = 0;
  #cacheTable = -1;
  #cacheBase = -1;
  // Path of the last unmap descent (table, entry) per level, to free empty tables bottom-up.
  readonly #pathT = new Int32Array(LEVELS);
  readonly #pathE = new Int32Array(LEVELS);

  constructor(tables = 64) {
    this.addr = new Float64Array(tables * ENTRIES);
    this.flags = new Uint8Array(tables * ENTRIES);
    this.used = new Uint16Array(tables);
    this.#free = new Int32Array(tables);
    for (let t = tables - 1; t >= 1; t--) this.#free[this.#freeTop++] = t; // table 0 is the root
  }

  /** Map one 4 KiB page; false if something is already there. */
  link(va: number, pa: number, prot: number): boolean {
    let t: number;
    if (this.#cacheTable >= 0 && va - this.#cacheBase >= 0 && va - this.#cacheBase < 2 ** 21) t = this.#cacheTable;
    else {
      t = 0;
      for (let l = LEVELS - 1; l > 0; l--) {
        const e = t * ENTRIES + ((va / 2 ** (12 + 9 * l)) & (ENTRIES - 1));
        if (this.flags[e] === 0) {
          const child = this.#free[--this.#freeTop] ?? 0;
          this.addr[e] = child;
          this.flags[e] = PRESENT;
          this.used[t] = (this.used[t] ?? 0) + 1;
          t = child;
        } else t = this.addr[e] ?? 0;
      }
      this.#cacheTable = t;
      this.#cacheBase = va - (va % 2 ** 21);
    }
    const e = t * ENTRIES + ((va / 4096) & (ENTRIES - 1));
    if (this.flags[e] !== 0) return false;
    this.addr[e] = pa;
    this.flags[e] = prot | PRESENT | LEAF;
    this.used[t] = (this.used[t] ?? 0) + 1;
    return true;
  }

  /** Unmap `pages` 4 KiB pages from `va`, freeing tables that become empty; returns pages cleared. */
  unlink(va: number, pages: number): number {
    let cleared = 0;
    let p = 0;
    while (p < pages) {
      const at = va + p * 4096;
      let t = 0;
      for (let l = LEVELS - 1; l > 0; l--) {
        const e = t * ENTRIES + ((at / 2 ** (12 + 9 * l)) & (ENTRIES - 1));
        this.#pathT[l] = t;
        this.#pathE[l] = e;
        t = this.addr[e] ?? 0;
      }
      // Clear this leaf table's part of the range in one pass.
      const first = (at / 4096) & (ENTRIES - 1);
      const n = Math.min(pages - p, ENTRIES - first);
      for (let i = 0; i < n; i++) {
        const e = t * ENTRIES + first + i;
        if (this.flags[e] !== 0) {
          this.flags[e] = 0;
          this.addr[e] = 0;
          this.used[t] = (this.used[t] ?? 1) - 1;
          cleared++;
        }
      }
      // Free empty tables bottom-up.
      for (let l = 1; l < LEVELS && this.used[t] === 0; l++) {
        const parent = this.#pathT[l] ?? 0;
        const e = this.#pathE[l] ?? 0;
        this.flags[e] = 0;
        this.#free[this.#freeTop++] = t;
        if (t === this.#cacheTable) this.#cacheTable = -1;
        this.used[parent] = (this.used[parent] ?? 1) - 1;
        t = parent;
        if (t === 0) break;
      }
      p += n;
    }
    return cleared;
  }

  /** Flags of the leaf found by the last successful lookup. */
  lookupFlags = 0;

  /** Walk to the leaf for `va`: its output address, or -1. */
  lookup(va: number): number {
    let t = 0;
    for (let l = LEVELS - 1; l > 0; l--) {
      const e = t * ENTRIES + ((va / 2 ** (12 + 9 * l)) & (ENTRIES - 1));
      if (this.flags[e] === 0) return -1;
      t = this.addr[e] ?? 0;
    }
    const e = t * ENTRIES + ((va / 4096) & (ENTRIES - 1));
    this.lookupFlags = this.flags[e] ?? 0;
    return this.lookupFlags === 0 ? -1 : (this.addr[e] ?? 0);
  }
}

/** A set-associative IOTLB in typed arrays (tags, output pages, LRU stamps), like iommu-dma's Iotlb. */
export class FloorIotlb {
  readonly #tag: Float64Array;
  readonly #phys: Float64Array;
  readonly #prot: Uint8Array;
  readonly #stamp: Float64Array;
  readonly #sets: number;
  readonly #ways: number;
  #tick = 0;
  valid = 0;
  hitPhys = 0;
  hitProt = 0;

  constructor(entries = 512, ways = 8) {
    this.#tag = new Float64Array(entries);
    this.#phys = new Float64Array(entries);
    this.#prot = new Uint8Array(entries);
    this.#stamp = new Float64Array(entries);
    this.#ways = ways;
    this.#sets = entries / ways;
  }

  lookup(pfn: number): boolean {
    const base = (pfn % this.#sets) * this.#ways;
    for (let w = 0; w < this.#ways; w++) {
      if (this.#tag[base + w] === pfn + 1) {
        this.#stamp[base + w] = ++this.#tick;
        this.hitPhys = this.#phys[base + w] ?? 0;
        this.hitProt = this.#prot[base + w] ?? 0;
        return true;
      }
    }
    return false;
  }

  fill(pfn: number, physPage: number, prot: number): void {
    const base = (pfn % this.#sets) * this.#ways;
    let victim = base;
    for (let w = 1; w < this.#ways; w++) if ((this.#stamp[base + w] ?? 0) < (this.#stamp[victim] ?? 0)) victim = base + w;
    if (this.#tag[victim] === 0) this.valid++;
    this.#tag[victim] = pfn + 1;
    this.#phys[victim] = physPage;
    this.#prot[victim] = prot;
    this.#stamp[victim] = ++this.#tick;
  }

  invalidateRange(firstPfn: number, lastPfn: number): void {
    if (this.valid === 0) return;
    for (let pfn = firstPfn; pfn <= lastPfn; pfn++) {
      const base = (pfn % this.#sets) * this.#ways;
      for (let w = 0; w < this.#ways; w++) {
        if (this.#tag[base + w] === pfn + 1) {
          this.#tag[base + w] = 0;
          this.valid--;
        }
      }
    }
  }
}

/**
 * The floor of a device DMA read: IOTLB lookup (walking the page table on a miss), the read
 * permission test, the page's bytes looked up by pfn, and the copy.
 */
export function floorDeviceRead(tlb: FloorIotlb, pt: FloorPageTable, pages: Map<number, Uint8Array>, iova: number, out: Uint8Array, len: number): void {
  const pfn = Math.floor(iova / 4096);
  const off = iova - pfn * 4096;
  let phys: number;
  let prot: number;
  if (tlb.lookup(pfn)) {
    phys = tlb.hitPhys;
    prot = tlb.hitProt;
  } else {
    phys = pt.lookup(pfn * 4096);
    if (phys < 0) throw new Error('floor: not present');
    prot = pt.lookupFlags;
    tlb.fill(pfn, phys, prot);
  }
  if ((prot & FLOOR_READ) === 0) throw new Error('floor: permission');
  const page = pages.get(phys / 4096);
  if (page === undefined) out.fill(0, 0, len);
  else for (let i = 0; i < len; i++) out[i] = page[off + i] ?? 0;
}

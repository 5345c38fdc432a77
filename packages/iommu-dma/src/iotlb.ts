// kernel: the IOMMU's translation cache (VT-d IOTLB / AMD IOTLB / SMMU TLB); invalidated through
// ops->iotlb_sync (range) and ops->flush_iotlb_all (whole domain), drivers/iommu/iommu.c.
/** IOTLB counters: hits, misses, walks, fills, evictions, invalidations. */
export interface IotlbStats {
  hits: number;
  misses: number;
  /** Page-table walks done to fill the cache. */
  walks: number;
  fills: number;
  evictions: number;
  invalidationsRange: number;
  invalidationsFull: number;
  /** Entries actually dropped by invalidations. */
  entriesInvalidated: number;
  /** 4 KiB pages the ranged invalidations were asked for (the gathered ranges). */
  pagesRequested: number;
  /** 4 KiB pages the ranged invalidations covered (VT-d/AMD: the aligned power-of-two blocks). */
  pagesCovered: number;
  /** Ranged invalidations that became a whole-domain flush (VT-d DSI fallback, AMD all pages). */
  domainFallbacks: number;
}

const PAGE = 4096;

/**
 * A bounded, set-associative, LRU translation cache for one domain, at 4 KiB granularity (a
 * large-page leaf fills the entry for the 4 KiB page that was touched). Tags, output addresses,
 * permissions and LRU stamps live in typed arrays.
 * dmakit's model of the IOMMU's translation cache: stale entries stay visible until invalidated.
 */
export class Iotlb {
  readonly entries: number;
  readonly ways: number;
  readonly sets: number;
  /** pfn + 1 per entry (0 = invalid). */
  readonly #tag: Float64Array;
  readonly #phys: Float64Array;
  readonly #prot: Uint8Array;
  readonly #stamp: Float64Array;
  #tick = 0;
  #valid = 0;
  readonly stats: IotlbStats = { hits: 0, misses: 0, walks: 0, fills: 0, evictions: 0, invalidationsRange: 0, invalidationsFull: 0, entriesInvalidated: 0, pagesRequested: 0, pagesCovered: 0, domainFallbacks: 0 };
  /** Output page address and prot of the last hit. */
  hitPhys = 0;
  hitProt = 0;

  constructor(entries = 512, ways = 8) {
    if (!Number.isInteger(entries) || entries < 1 || (entries & (entries - 1)) !== 0 || entries > 1 << 20) {
      throw new RangeError(`Iotlb: entries must be a power of two in 1..2^20, got ${entries}`);
    }
    this.entries = entries;
    this.ways = Math.min(ways, entries);
    this.sets = entries / this.ways;
    this.#tag = new Float64Array(entries);
    this.#phys = new Float64Array(entries);
    this.#prot = new Uint8Array(entries);
    this.#stamp = new Float64Array(entries);
  }

  /** Number of valid entries. */
  get valid(): number {
    return this.#valid;
  }

  /** Look up the 4 KiB page `pfn`; true on a hit (`hitPhys`/`hitProt` set). Counts hit/miss. */
  lookup(pfn: number): boolean {
    const base = (pfn % this.sets) * this.ways;
    const tag = pfn + 1;
    for (let w = 0; w < this.ways; w++) {
      const i = base + w;
      if (this.#tag[i] === tag) {
        this.#stamp[i] = ++this.#tick;
        this.hitPhys = this.#phys[i] ?? 0;
        this.hitProt = this.#prot[i] ?? 0;
        this.stats.hits++;
        return true;
      }
    }
    this.stats.misses++;
    return false;
  }

  /** Cache the translation of page `pfn` → page address `physPage` with `prot` (LRU victim). */
  fill(pfn: number, physPage: number, prot: number): void {
    const base = (pfn % this.sets) * this.ways;
    let victim = base;
    let oldest = Infinity;
    for (let w = 0; w < this.ways; w++) {
      const i = base + w;
      const t = this.#tag[i] ?? 0;
      if (t === 0) {
        victim = i;
        oldest = -1;
        break;
      }
      const s = this.#stamp[i] ?? 0;
      if (s < oldest) {
        oldest = s;
        victim = i;
      }
    }
    if (oldest !== -1) this.stats.evictions++;
    else this.#valid++;
    this.#tag[victim] = pfn + 1;
    this.#phys[victim] = physPage;
    this.#prot[victim] = prot;
    this.#stamp[victim] = ++this.#tick;
    this.stats.fills++;
  }

  /**
   * Invalidate every entry translating an IOVA in `[start, end]` (inclusive, bytes): a ranged IOTLB
   * invalidation (kernel: what ops->iotlb_sync() issues). `reqStart`/`reqEnd` is the range that
   * was asked for when the driver's command covers more (VT-d's PSI block); both are counted.
   */
  invalidateRange(start: number, end: number, reqStart = start, reqEnd = end): void {
    this.stats.invalidationsRange++;
    if (end < start) return;
    const first = Math.floor(start / PAGE);
    const last = Math.floor(end / PAGE);
    this.stats.pagesCovered += last - first + 1;
    if (reqEnd >= reqStart) this.stats.pagesRequested += Math.floor(reqEnd / PAGE) - Math.floor(reqStart / PAGE) + 1;
    if (this.#valid === 0) return;
    if (last - first + 1 <= this.sets) {
      for (let pfn = first; pfn <= last; pfn++) {
        const base = (pfn % this.sets) * this.ways;
        for (let w = 0; w < this.ways; w++) {
          const i = base + w;
          if (this.#tag[i] === pfn + 1) this.#drop(i);
        }
      }
    } else {
      for (let i = 0; i < this.entries; i++) {
        const t = this.#tag[i] ?? 0;
        if (t !== 0 && t - 1 >= first && t - 1 <= last) this.#drop(i);
      }
    }
  }

  /**
   * Read-only snapshot of the valid entries as (IOVA page number, output page address) pairs, in
   * slot order (for visualisers; does not touch LRU state or counters).
   */
  validEntries(): { readonly pfns: number[]; readonly phys: number[] } {
    const pfns: number[] = [];
    const phys: number[] = [];
    for (let i = 0; i < this.entries; i++) {
      const t = this.#tag[i] ?? 0;
      if (t === 0) continue;
      pfns.push(t - 1);
      phys.push(this.#phys[i] ?? 0);
    }
    return { pfns, phys };
  }

  /**
   * A ranged invalidation of `[reqStart, reqEnd]` that the driver turned into a whole-domain flush
   * (VT-d: mask above cap_max_amask_val → DSI; AMD: CMD_INV_IOMMU_ALL_PAGES_ADDRESS). Counted as
   * the one ranged command it replaces, plus a fallback.
   */
  invalidateRangeAsDomain(reqStart: number, reqEnd: number): void {
    this.stats.invalidationsRange++;
    this.stats.domainFallbacks++;
    if (reqEnd >= reqStart) this.stats.pagesRequested += Math.floor(reqEnd / PAGE) - Math.floor(reqStart / PAGE) + 1;
    this.stats.entriesInvalidated += this.#valid;
    this.#tag.fill(0);
    this.#valid = 0;
  }

  /** `flush_iotlb_all`: drop everything. */
  invalidateAll(): void {
    this.stats.invalidationsFull++;
    this.stats.entriesInvalidated += this.#valid;
    this.#tag.fill(0);
    this.#valid = 0;
  }

  #drop(i: number): void {
    this.#tag[i] = 0;
    this.#valid--;
    this.stats.entriesInvalidated++;
  }
}

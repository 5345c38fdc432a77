// kernel: drivers/iommu/iova.c, include/linux/iova.h (~6.7+: rbtree, per-CPU magazines, depot)
// Over 600 lines on purpose: this file mirrors one kernel file, drivers/iommu/iova.c (~1,000 lines).
import { Errno, PAGE_SIZE } from '@dmakit/dma-core';
import {
  IOVA_MAG_SIZE,
  IOVA_RANGE_CACHE_MAX_SIZE,
  IovaDomainError,
  orderBase2,
  roundupPow2,
} from './helpers.js';
import { IOVA_CACHED, IOVA_INDEXED, IOVA_RESERVED, PfnIndex } from './pfnIndex.js';
import { IovaTree, gapFits, gapStart } from './tree.js';

/**
 * `struct iova`: an inclusive range of IOVA pfns (granules). The allocator hands out a copy of
 * the range's bounds (a plain value, not a handle into the tree).
 */
export interface Iova {
  readonly pfnLo: number;
  readonly pfnHi: number;
}

/** A range as the tree holds it, for tests and visualisers. */
export interface IovaRange extends Iova {
  /** From reserve_iova: never handed out. */
  readonly reserved: boolean;
  /** Freed by its owner into an rcache: still allocated from the tree's point of view. */
  readonly cached: boolean;
}

export interface IovaDomainOptions {
  /** Smallest IOMMU page size in bytes: a power of two <= PAGE_SIZE. */
  granule: number;
  /** Lowest pfn handed out; >= 1 so that IOVA 0 never is (iommu_dma_init_domain clamps it so). */
  startPfn: number;
  /** Simulated CPUs, each with its own magazines (default 2). */
  cpus?: number;
}

export interface IovaStats {
  /** Successful allocations (tree and rcache). */
  allocs: number;
  /** Successful frees (to the tree or into an rcache). */
  frees: number;
  rcacheHits: number;
  /** alloc_iova_fast calls with a cacheable size that the rcache could not serve. */
  rcacheMisses: number;
  /** Nodes in the tree, allocations + rcache-held + reserved (the anchor not counted). */
  treeNodes: number;
  treeInserts: number;
  treeRemoves: number;
  /** Granules in non-reserved nodes, including the ones sitting in rcaches. */
  allocatedGranules: number;
  /** Granules held by magazines and the depot. */
  cachedGranules: number;
  reservedGranules: number;
  /** Full magazines in the depots of all bins. */
  depotMagazines: number;
  /** `max32_alloc_size`: 32-bit requests of this size or more fail at once. */
  max32AllocSize: number;
  /** Requests refused by the max32_alloc_size fast-fail. */
  fastFails32: number;
  /** Allocation calls that returned nothing. */
  allocFailures: number;
  /** Times every CPU's magazines and the depot went back to the tree. */
  rcacheFlushes: number;
  /** Magazines returned to the tree by depotTrim. */
  depotTrimmed: number;
  /** Frees of a pfn that is not an allocation's start, is reserved, or is already in an rcache: ignored. */
  invalidFrees: number;
  /** free_iova_fast with a size whose bin does not match the allocation: sent to the tree instead. */
  sizeMismatchFrees: number;
}

/** One magazine: a typed array of pfns and its fill level (`struct iova_magazine`). */
class Magazine {
  readonly pfns = new Float64Array(IOVA_MAG_SIZE);
  size = 0;
}

/** Array element that exists by construction (indices are validated or computed in range). */
function at<T>(arr: readonly T[], i: number): T {
  const v = arr[i];
  if (v === undefined) throw new RangeError(`iova: internal index ${i} out of range`);
  return v;
}

/** `IOVA_ANCHOR`: a node above the usable space, so every walk has a node to start from. */
const IOVA_ANCHOR = Number.MAX_SAFE_INTEGER;
const MAX_CPUS = 4096;
/** Sizes below this are rounded up to a power of two by alloc_iova_fast. */
const FAST_ROUND_BELOW = 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1);

/**
 * `struct iova_domain`: the IOVA allocator of one IOMMU DMA domain. Sizes and pfns are in
 * granules. Every tree operation is O(log n); the rcache paths allocate nothing.
 */
export class IovaDomain {
  readonly granule: number;
  readonly shift: number;
  readonly startPfn: number;
  /** `dma_32bit_pfn = 1 << (32 - shift)`: the first pfn at or above 4 GiB. */
  readonly dma32bitPfn: number;
  /** Highest pfn whose whole granule is an exact number (model limit, far above 48-bit spaces). */
  readonly maxPfn: number;
  readonly cpus: number;
  /** CPU used when a fast-path call names none. */
  currentCpu = 0;

  /**
   * The ranges in pfn order with their gaps and flags (IOVA_RESERVED, IOVA_INDEXED): the rbtree.
   * Ranges are named by their first pfn.
   */
  #tree = new IovaTree();
  /** pfnHi and IOVA_CACHED of every range the fast path has seen (tree flag IOVA_INDEXED), by first pfn. */
  #nodes = new PfnIndex();
  /** `cached_node` and `cached32_node`, as the first pfn of the node they point to. */
  #cachedNode = IOVA_ANCHOR;
  #cached32Node = IOVA_ANCHOR;
  #max32AllocSize: number;
  /** Per (bin, cpu) magazines, index `bin * cpus + cpu`. */
  #loaded: Magazine[] = [];
  #prev: Magazine[] = [];
  /** Per-bin depot of full magazines (a stack, like the kernel's singly linked list). */
  #depot: Magazine[][] = [];
  /** Empty magazines ready for reuse (the kernel's kmem_cache). */
  #magPool: Magazine[] = [];
  #depotWorkPending = false;

  #allocs = 0;
  #frees = 0;
  #rcacheHits = 0;
  #rcacheMisses = 0;
  #treeInserts = 0;
  #treeRemoves = 0;
  #allocatedGranules = 0;
  #cachedGranules = 0;
  #reservedGranules = 0;
  #fastFails32 = 0;
  #allocFailures = 0;
  #rcacheFlushes = 0;
  #depotTrimmed = 0;
  #invalidFrees = 0;
  #sizeMismatchFrees = 0;

  // kernel: init_iova_domain() + iova_domain_init_rcaches()
  constructor(opts: IovaDomainOptions) {
    const { granule, startPfn } = opts;
    const cpus = opts.cpus ?? 2;
    // BUG_ON((granule > PAGE_SIZE) || !is_power_of_2(granule)): both must represent CPU pages exactly.
    if (!Number.isSafeInteger(granule) || granule <= 0 || granule > PAGE_SIZE || (granule & (granule - 1)) !== 0) {
      throw new IovaDomainError(`IOVA granule ${granule} must be a power of two <= PAGE_SIZE (${PAGE_SIZE})`);
    }
    this.granule = granule;
    this.shift = 31 - Math.clz32(granule);
    this.dma32bitPfn = 2 ** (32 - this.shift);
    this.maxPfn = Math.floor(Number.MAX_SAFE_INTEGER / granule) - 1;
    if (!Number.isSafeInteger(startPfn) || startPfn < 1 || startPfn > this.maxPfn) {
      // iommu_dma_init_domain uses max(1, aperture_start >> order): IOVA 0 is never handed out.
      throw new IovaDomainError(`IOVA startPfn ${startPfn} must be an integer >= 1`);
    }
    if (!Number.isSafeInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) {
      throw new IovaDomainError(`cpus ${cpus} must be an integer in 1..${MAX_CPUS}`);
    }
    this.startPfn = startPfn;
    this.cpus = cpus;
    this.#tree.insert(IOVA_ANCHOR, IOVA_ANCHOR, IOVA_RESERVED);
    this.#max32AllocSize = this.dma32bitPfn;
    for (let bin = 0; bin < IOVA_RANGE_CACHE_MAX_SIZE; bin++) {
      this.#depot.push([]);
      for (let cpu = 0; cpu < cpus; cpu++) {
        this.#loaded.push(new Magazine());
        this.#prev.push(new Magazine());
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Tree (slow path)

  /**
   * `alloc_iova`: `size` granules at or below `limitPfn` (inclusive), searched top-down from the
   * cached node; with `sizeAligned` the start is aligned to `roundup_pow_of_two(size)` (the length
   * stays `size`). Returns null when there is no room (or on a nonsensical size/limit).
   */
  allocIova(size: number, limitPfn: number, sizeAligned: boolean): Iova | null {
    if (!this.#validSize(size) || !this.#validPfn(limitPfn)) {
      this.#allocFailures++;
      return null;
    }
    const pfn = this.#allocAndInsert(size, limitPfn, sizeAligned, 0);
    if (pfn < 0) {
      this.#allocFailures++;
      return null;
    }
    this.#allocs++;
    return { pfnLo: pfn, pfnHi: pfn + size - 1 };
  }

  /**
   * `free_iova`: removes the whole node containing `pfn`. Model rule: a reserved range, a range
   * sitting in an rcache or an unknown pfn is left alone (counted in invalidFrees); the kernel
   * would silently corrupt its allocator in the first two cases.
   */
  freeIova(pfn: number): void {
    const tree = this.#tree;
    const lo = this.#validPfn(pfn) ? tree.findContaining(pfn) : -1;
    const flags = tree.foundFlags;
    if (lo < 0 || (flags & IOVA_RESERVED) !== 0 || ((flags & IOVA_INDEXED) !== 0 && this.#isCached(lo))) {
      this.#invalidFrees++;
      return;
    }
    this.#removeIova(lo, tree.foundHi, flags);
    this.#frees++;
  }

  /** `find_iova`: the range (allocated, cached or reserved) containing `pfn`. */
  findIova(pfn: number): Iova | null {
    if (!this.#validPfn(pfn)) return null;
    const lo = this.#tree.findContaining(pfn);
    return lo < 0 ? null : { pfnLo: lo, pfnHi: this.#tree.foundHi };
  }

  /**
   * `reserve_iova`: make [pfnLo, pfnHi] (inclusive) never handed out. Like the kernel, the range is
   * merged into overlapping reserved nodes (widening them downwards) and the remainder above the
   * last overlap becomes a new node. Model rule: a live allocation overlapped by the range keeps
   * its bounds (the kernel would widen it, and its later free would drop the reservation); the
   * uncovered parts around it become reserved nodes. Returns null for nonsensical pfns.
   */
  reserveIova(pfnLo: number, pfnHi: number): Iova | null {
    // kernel: WARN_ON((pfn_hi | pfn_lo) > (ULLONG_MAX >> iova_shift(iovad)))
    if (!this.#validPfn(pfnLo) || !this.#validPfn(pfnHi) || pfnLo > pfnHi) return null;
    const tree = this.#tree;
    let lo = pfnLo;
    let n = tree.firstEndingAtOrAbove(lo);
    while (n >= 0 && n <= pfnHi) {
      const nHi = tree.foundHi;
      const nFlags = tree.foundFlags;
      let nLo = n;
      if (lo < n) {
        if ((nFlags & IOVA_RESERVED) !== 0) {
          this.#reservedGranules += n - lo;
          this.#extendDown(n, lo); // __adjust_overlap_range
          nLo = lo;
        } else {
          this.#insertReserved(lo, n - 1);
        }
      }
      if (pfnHi <= nHi) return { pfnLo: nLo, pfnHi: nHi };
      lo = nHi + 1;
      n = tree.succAbove(nLo);
    }
    this.#insertReserved(lo, pfnHi);
    return { pfnLo: lo, pfnHi };
  }

  // ---------------------------------------------------------------------------------------------
  // Fast path (rcache)

  /**
   * `alloc_iova_fast`: sizes below 32 granules are rounded up to a power of two (so a later
   * free_iova_fast with the unrounded size finds the same bin); try this CPU's rcache, then the
   * tree (size-aligned); on failure with `flushRcache`, return every CPU's magazines and the depot
   * to the tree and retry once. Returns the first pfn, or 0.
   */
  allocIovaFast(size: number, limitPfn: number, flushRcache: boolean, cpu: number = this.currentCpu): number {
    this.#checkCpu(cpu);
    if (!this.#validSize(size) || !this.#validPfn(limitPfn)) {
      this.#allocFailures++;
      return 0;
    }
    let len = size;
    if (len < FAST_ROUND_BELOW) len = roundupPow2(len);
    if (len <= FAST_ROUND_BELOW) {
      // iova_rcache_get(iovad, size, limit_pfn + 1) pops a pfn <= limit_pfn + 1 - size.
      const pfn = this.#rcacheGet(orderBase2(len), limitPfn + 1 - len, cpu);
      if (pfn !== 0) {
        const slot = this.#nodes.find(pfn);
        if (slot >= 0) this.#nodes.setFlags(slot, 0);
        this.#cachedGranules -= len;
        this.#rcacheHits++;
        this.#allocs++;
        return pfn;
      }
      this.#rcacheMisses++;
    }
    // Only a range the rcache can hold needs a pfn-index record; a larger one goes back through
    // free_iova (the tree finds it by its first pfn), so it never grows the index.
    const flags = len <= FAST_ROUND_BELOW ? IOVA_INDEXED : 0;
    let pfn = this.#allocAndInsert(len, limitPfn, true, flags);
    if (pfn < 0 && flushRcache) {
      // Try replenishing IOVAs by flushing rcache.
      this.flushRcaches();
      pfn = this.#allocAndInsert(len, limitPfn, true, flags);
    }
    if (pfn < 0) {
      this.#allocFailures++;
      return 0;
    }
    this.#allocs++;
    return pfn;
  }

  /**
   * `free_iova_fast`: put the range into this CPU's rcache bin `order_base_2(size)`; ranges of
   * more than 32 granules go straight back to the tree. The range keeps its tree node.
   * Model rule: a pfn that is not an allocation's start (or is reserved, or already cached) is
   * ignored; an allocation whose length or alignment does not match the bin (the kernel would
   * cache it and later hand out an overlapping range) goes back to the tree instead.
   */
  freeIovaFast(pfn: number, size: number, cpu: number = this.currentCpu): void {
    this.#checkCpu(cpu);
    if (!this.#validSize(size) || !this.#validPfn(pfn)) {
      this.#invalidFrees++;
      return;
    }
    if (size > FAST_ROUND_BELOW) {
      this.freeIova(pfn);
      return;
    }
    const nodes = this.#nodes;
    const slot = nodes.find(pfn);
    let hi: number;
    if (slot >= 0) {
      if (nodes.flagsAt(slot) !== 0) {
        this.#invalidFrees++;
        return;
      }
      hi = nodes.hiAt(slot);
    } else {
      // A range the fast path has not seen (from alloc_iova): the tree knows it, by its first pfn.
      const tree = this.#tree;
      if (tree.lastAtOrBelow(pfn) !== pfn || (tree.foundFlags & IOVA_RESERVED) !== 0) {
        this.#invalidFrees++;
        return;
      }
      hi = tree.foundHi;
    }
    const len = roundupPow2(size);
    if (hi - pfn + 1 !== len || pfn % len !== 0) {
      this.#sizeMismatchFrees++;
      this.#removeIova(pfn, hi, slot >= 0 ? IOVA_INDEXED : 0);
      this.#frees++;
      return;
    }
    if (slot >= 0) {
      nodes.setFlags(slot, IOVA_CACHED);
    } else {
      this.#tree.setFlags(pfn, IOVA_INDEXED);
      nodes.add(pfn, hi, IOVA_CACHED);
    }
    this.#cachedGranules += len;
    this.#rcacheInsert(orderBase2(len), pfn, cpu);
    this.#frees++;
  }

  /** `free_cpu_cached_iovas`: return one CPU's loaded and prev magazines to the tree (CPU hot-unplug). */
  freeCpuCachedIovas(cpu: number): void {
    this.#checkCpu(cpu);
    for (let bin = 0; bin < IOVA_RANGE_CACHE_MAX_SIZE; bin++) {
      const i = bin * this.cpus + cpu;
      this.#magazineFreePfns(at(this.#loaded, i));
      this.#magazineFreePfns(at(this.#prev, i));
    }
  }

  /** Every CPU's magazines and then the depots back to the tree (alloc_iova_fast's flush). */
  flushRcaches(): void {
    this.#rcacheFlushes++;
    for (let cpu = 0; cpu < this.cpus; cpu++) this.freeCpuCachedIovas(cpu);
    // kernel: free_global_cached_iovas()
    for (let bin = 0; bin < IOVA_RANGE_CACHE_MAX_SIZE; bin++) {
      const depot = at(this.#depot, bin);
      for (let mag = depot.pop(); mag !== undefined; mag = depot.pop()) {
        this.#magazineFreePfns(mag);
        this.#magPool.push(mag);
      }
    }
  }

  /**
   * Body of `iova_depot_work_func`, for every bin: while a depot holds more magazines than there
   * are CPUs, one magazine per run goes back to the tree. The caller schedules it every
   * IOVA_DEPOT_DELAY_MS while `depotWorkPending`.
   */
  depotTrim(): void {
    let freed = false;
    for (let bin = 0; bin < IOVA_RANGE_CACHE_MAX_SIZE; bin++) {
      const depot = at(this.#depot, bin);
      if (depot.length > this.cpus) {
        const mag = at(depot, depot.length - 1);
        depot.pop();
        this.#magazineFreePfns(mag);
        this.#magPool.push(mag);
        this.#depotTrimmed++;
        freed = true;
      }
    }
    // The kernel's worker reschedules itself only when it freed something.
    this.#depotWorkPending = freed;
  }

  /** True when a magazine went to a depot (or depotTrim freed one) since the last idle depotTrim. */
  get depotWorkPending(): boolean {
    return this.#depotWorkPending;
  }

  /** Snapshot of the allocator counters (allocations, failures, rcache hits and misses, depot). */
  stats(): IovaStats {
    let depotMagazines = 0;
    for (const d of this.#depot) depotMagazines += d.length;
    return {
      allocs: this.#allocs,
      frees: this.#frees,
      rcacheHits: this.#rcacheHits,
      rcacheMisses: this.#rcacheMisses,
      treeNodes: this.#tree.size - 1,
      treeInserts: this.#treeInserts,
      treeRemoves: this.#treeRemoves,
      allocatedGranules: this.#allocatedGranules,
      cachedGranules: this.#cachedGranules,
      reservedGranules: this.#reservedGranules,
      depotMagazines,
      max32AllocSize: this.#max32AllocSize,
      fastFails32: this.#fastFails32,
      allocFailures: this.#allocFailures,
      rcacheFlushes: this.#rcacheFlushes,
      depotTrimmed: this.#depotTrimmed,
      invalidFrees: this.#invalidFrees,
      sizeMismatchFrees: this.#sizeMismatchFrees,
    };
  }

  /** Every range in the tree (allocated, rcache-held, reserved), in pfn order. Do not mutate the domain while iterating. */
  *liveRanges(): Generator<IovaRange> {
    for (const [pfnLo, pfnHi, , flags] of this.#tree.entries()) {
      if (pfnLo === IOVA_ANCHOR) continue;
      yield { pfnLo, pfnHi, reserved: (flags & IOVA_RESERVED) !== 0, cached: (flags & IOVA_INDEXED) !== 0 && this.#isCached(pfnLo) };
    }
  }

  /**
   * O(n) self-check for tests and fuzzers: tree structure, counters, rcache contents. Throws an
   * IovaDomainError naming the first inconsistency.
   */
  checkConsistency(): void {
    const fail = (msg: string): never => {
      throw new IovaDomainError(`IOVA domain inconsistent: ${msg}`, -Errno.EFAULT);
    };
    const problem = this.#tree.check();
    if (problem !== null) fail(problem);
    let indexed = 0;
    for (const [lo, hi, , flags] of this.#tree.entries()) {
      if ((flags & ~(IOVA_RESERVED | IOVA_INDEXED)) !== 0) fail(`range ${lo} has tree flags ${flags}`);
      if ((flags & IOVA_INDEXED) === 0) continue;
      indexed++;
      const slot = this.#nodes.find(lo);
      if ((flags & IOVA_RESERVED) !== 0) fail(`reserved range ${lo} is in the pfn index`);
      if (slot < 0) fail(`pfn index misses the range at ${lo}`);
      else if (this.#nodes.hiAt(slot) !== hi) fail(`pfn index says ${lo} ends at ${this.#nodes.hiAt(slot)}, tree ${hi}`);
    }
    if (this.#nodes.size !== indexed) fail(`pfn index holds ${this.#nodes.size} ranges, the tree marks ${indexed}`);
    if (this.#tree.lastAtOrBelow(IOVA_ANCHOR) !== IOVA_ANCHOR || (this.#tree.foundFlags & IOVA_RESERVED) === 0) fail('the anchor is missing');
    let allocated = 0;
    let cached = 0;
    let reserved = 0;
    for (const n of this.liveRanges()) {
      const len = n.pfnHi - n.pfnLo + 1;
      if (n.reserved) reserved += len;
      else allocated += len;
      if (n.cached) cached += len;
    }
    if (allocated !== this.#allocatedGranules) fail(`allocatedGranules ${this.#allocatedGranules}, tree says ${allocated}`);
    if (reserved !== this.#reservedGranules) fail(`reservedGranules ${this.#reservedGranules}, tree says ${reserved}`);
    if (cached !== this.#cachedGranules) fail(`cachedGranules ${this.#cachedGranules}, tree says ${cached}`);
    let inMags = 0;
    const seen = new Set<number>();
    const scan = (mag: Magazine, bin: number): void => {
      for (let j = 0; j < mag.size; j++) {
        const pfn = mag.pfns[j] ?? -1;
        const slot = this.#nodes.find(pfn);
        if (slot < 0 || this.#nodes.flagsAt(slot) !== IOVA_CACHED) fail(`magazine pfn ${pfn} is not a cached node`);
        else if (this.#nodes.hiAt(slot) - pfn + 1 !== 2 ** bin) fail(`magazine pfn ${pfn} in bin ${bin} has the wrong length`);
        if (seen.has(pfn)) fail(`pfn ${pfn} cached twice`);
        seen.add(pfn);
        inMags += 2 ** bin;
      }
    };
    for (let bin = 0; bin < IOVA_RANGE_CACHE_MAX_SIZE; bin++) {
      for (let cpu = 0; cpu < this.cpus; cpu++) {
        scan(at(this.#loaded, bin * this.cpus + cpu), bin);
        scan(at(this.#prev, bin * this.cpus + cpu), bin);
      }
      for (const mag of at(this.#depot, bin)) {
        if (mag.size !== IOVA_MAG_SIZE) fail(`depot magazine of bin ${bin} is not full`);
        scan(mag, bin);
      }
    }
    if (inMags !== cached) fail(`magazines hold ${inMags} granules, tree marks ${cached} cached`);
    if (this.#tree.lastAtOrBelow(this.#cachedNode) !== this.#cachedNode) fail('cached_node is not in the tree');
    if (this.#tree.lastAtOrBelow(this.#cached32Node) !== this.#cached32Node) fail('cached32_node is not in the tree');
  }

  // ---------------------------------------------------------------------------------------------
  // internals

  /** Is the indexed range at `lo` sitting in an rcache? */
  #isCached(lo: number): boolean {
    const slot = this.#nodes.find(lo);
    return slot >= 0 && (this.#nodes.flagsAt(slot) & IOVA_CACHED) !== 0;
  }

  #hiOf(lo: number): number {
    if (this.#tree.lastAtOrBelow(lo) !== lo) throw new IovaDomainError(`IOVA domain inconsistent: no range starts at ${lo}`, -Errno.EFAULT);
    return this.#tree.foundHi;
  }

  // kernel: __alloc_and_insert_iova_range(); returns the new range's first pfn, or -1.
  // `flags`: IOVA_INDEXED for the fast path (the range also gets a pfn-index record).
  #allocAndInsert(size: number, limitPfn: number, sizeAligned: boolean, flags: number): number {
    // alloc_iova passes limit_pfn + 1: from here on `lim` is exclusive.
    const lim = Math.min(limitPfn, this.maxPfn) + 1;
    const align = sizeAligned ? roundupPow2(size) : 1;
    const is32 = lim <= this.dma32bitPfn;
    if (is32 && size >= this.#max32AllocSize) {
      this.#fastFails32++;
      return -1;
    }
    const curr = is32 ? this.#cached32Node : this.#cachedNode;
    let pfn = this.#searchDown(curr, lim, this.startPfn, size, align);
    if (pfn < 0) {
      const retryPfn = this.#hiOf(curr);
      // Nothing below the cached node: one more pass from the real limit down to just above it.
      if (retryPfn < lim) pfn = this.#searchDown(-1, lim, Math.max(retryPfn + 1, this.startPfn), size, align);
    }
    if (pfn < 0) {
      // The kernel records the failed size whatever the limit; only 32-bit requests consult it.
      this.#max32AllocSize = size;
      return -1;
    }
    const hi = pfn + size - 1;
    this.#tree.insert(pfn, hi, flags);
    if (flags !== 0) this.#nodes.add(pfn, hi, 0);
    this.#treeInserts++;
    this.#allocatedGranules += size;
    // kernel: __cached_rbnode_insert_update()
    if (hi < this.dma32bitPfn) this.#cached32Node = pfn;
    else this.#cachedNode = pfn;
    return pfn;
  }

  /**
   * The kernel's backwards walk: starting at the node whose first pfn is `from` (or, when -1, at
   * the first node at or above `lim`, like iova_find_limit), find the highest gap below it whose
   * top (clipped to `lim`) holds `size` granules at an `align`-aligned start; the start must be
   * >= `low`. Returns -1 if none. The walk's early stop (candidate below `low`) gives the same
   * answer, since candidates only decrease as the walk goes down.
   */
  #searchDown(from: number, lim: number, low: number, size: number, align: number): number {
    const tree = this.#tree;
    let bound: number;
    if (from >= 0 && from < lim) {
      bound = from;
    } else {
      // Nodes at or above lim see the gap top clipped to lim; only the lowest of them can fit.
      // The anchor is above every usable pfn, so there always is one.
      const top = tree.lowestAtOrAbove(lim);
      if (gapFits(top - tree.foundGap - 1, lim, size, align)) {
        const start = gapStart(lim, size, align);
        return start >= low ? start : -1;
      }
      bound = top - 1;
    }
    const n = tree.findFit(bound, size, align);
    if (n < 0) return -1;
    const start = gapStart(n, size, align);
    return start >= low ? start : -1;
  }

  // kernel: remove_iova() = __cached_rbnode_delete_update() + rb_erase()
  #removeIova(lo: number, hi: number, flags: number): void {
    // rb_next(&iova->node): the anchor is above every node, so there always is one.
    const next = this.#tree.remove(lo);
    if ((flags & IOVA_INDEXED) !== 0) this.#nodes.delete(lo);
    const c32 = this.#cached32Node;
    if (lo === c32 || (hi < this.dma32bitPfn && lo >= c32)) this.#cached32Node = next;
    // Space below 4 GiB came back: the 32-bit fast-fail no longer holds.
    if (lo < this.dma32bitPfn) this.#max32AllocSize = this.dma32bitPfn;
    if (lo >= this.#cachedNode) this.#cachedNode = next;
    this.#treeRemoves++;
    const len = hi - lo + 1;
    if ((flags & IOVA_RESERVED) !== 0) this.#reservedGranules -= len;
    else this.#allocatedGranules -= len;
  }

  #insertReserved(lo: number, hi: number): void {
    this.#tree.insert(lo, hi, IOVA_RESERVED);
    this.#treeInserts++;
    this.#reservedGranules += hi - lo + 1;
  }

  /** A reserved range grows down into the free gap below it; cached-node pointers follow the node. */
  #extendDown(lo: number, newLo: number): void {
    this.#tree.extendDown(lo, newLo);
    if (this.#cachedNode === lo) this.#cachedNode = newLo;
    if (this.#cached32Node === lo) this.#cached32Node = newLo;
  }

  // kernel: __iova_rcache_insert()
  #rcacheInsert(bin: number, pfn: number, cpu: number): void {
    const i = bin * this.cpus + cpu;
    let mag = at(this.#loaded, i);
    if (mag.size === IOVA_MAG_SIZE) {
      const prev = at(this.#prev, i);
      if (prev.size < IOVA_MAG_SIZE) {
        this.#prev[i] = mag;
        this.#loaded[i] = prev;
        mag = prev;
      } else {
        // Loaded and prev both full: the loaded magazine goes to the depot, the trim worker is
        // scheduled, and a fresh one is loaded (the kernel's GFP_ATOMIC allocation never fails here).
        at(this.#depot, bin).push(mag);
        this.#depotWorkPending = true;
        mag = this.#magPool.pop() ?? new Magazine();
        this.#loaded[i] = mag;
      }
    }
    mag.pfns[mag.size++] = pfn;
  }

  // kernel: __iova_rcache_get() + iova_magazine_pop(); returns 0 on a miss
  #rcacheGet(bin: number, popLimit: number, cpu: number): number {
    const i = bin * this.cpus + cpu;
    let mag = at(this.#loaded, i);
    if (mag.size === 0) {
      const prev = at(this.#prev, i);
      if (prev.size > 0) {
        this.#prev[i] = mag;
        this.#loaded[i] = prev;
        mag = prev;
      } else {
        const full = at(this.#depot, bin).pop();
        if (full === undefined) return 0;
        this.#magPool.push(mag);
        this.#loaded[i] = full;
        mag = full;
      }
    }
    // Only fall back to the tree if no cached pfn fits below the limit at all.
    const pfns = mag.pfns;
    let j = mag.size - 1;
    while ((pfns[j] ?? 0) > popLimit) {
      if (j === 0) return 0;
      j--;
    }
    const pfn = pfns[j] ?? 0;
    pfns[j] = pfns[--mag.size] ?? 0;
    return pfn;
  }

  // kernel: iova_magazine_free_pfns()
  #magazineFreePfns(mag: Magazine): void {
    const nodes = this.#nodes;
    for (let j = 0; j < mag.size; j++) {
      const pfn = mag.pfns[j] ?? -1;
      const slot = nodes.find(pfn);
      if (slot < 0) continue; // WARN_ON(!iova) in the kernel; cannot happen here
      const hi = nodes.hiAt(slot);
      this.#cachedGranules -= hi - pfn + 1;
      this.#removeIova(pfn, hi, IOVA_INDEXED);
    }
    mag.size = 0;
  }

  #validSize(size: number): boolean {
    return Number.isSafeInteger(size) && size >= 1 && size <= this.maxPfn;
  }

  #validPfn(pfn: number): boolean {
    return Number.isSafeInteger(pfn) && pfn >= 0 && pfn <= this.maxPfn;
  }

  #checkCpu(cpu: number): void {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.cpus) {
      throw new IovaDomainError(`cpu ${cpu} is not one of this domain's ${this.cpus} CPUs`);
    }
  }
}

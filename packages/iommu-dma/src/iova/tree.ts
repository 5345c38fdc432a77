/**
 * The ordered set of IOVA ranges of one domain (the kernel's `iovad->rbroot`).
 *
 * The kernel keeps `struct iova` nodes in a red-black tree keyed by `pfn_lo` and finds free space
 * by walking it backwards node by node from a cached node. That walk is linear in the worst case
 * (a fragmented space). Here the ranges live in a B+ tree keyed by `pfnLo`: every entry carries
 * the free gap just below it, every child slot of an inner node the largest gap in that child, so
 * the same top-down answer is found in O(log n).
 *
 * Layout: all nodes live in one Float64Array, one fixed-size block per node, each in regions of
 * one field: a leaf holds up to 16 entries as pfnLo, gap below, pfnHi and flags regions (two
 * cache lines each), an inner node up to 32 children as separator key, largest gap and child id
 * regions. An operation on a leaf touches a few lines of each region, found without a chain of
 * dependent loads (the node search interpolates: pfns are spread evenly), and the tree is four
 * levels deep at 10^5 ranges. Nothing is allocated per operation (node ids are recycled through
 * a free list).
 *
 * Separators: for c >= 1, `A[c]` of an inner node is greater than every pfnLo in child c-1 and at
 * most the smallest pfnLo in child c; `A[0]` is never read. Removals keep that without touching
 * the separators, so only the largest gaps are propagated up (and the propagation stops at the
 * first level where nothing changed).
 * Internal to the iova room: ranges are named by their pfnLo; lookups return it (or -1) and leave
 * the entry's pfnHi, gap and flags in `foundHi` / `foundGap` / `foundFlags`.
 */

/** Entries per leaf: few, so an insertion or removal moves at most a few cache lines. */
export const IOVA_TREE_LEAF_ORDER = 16;
/** Children per inner node: many, so the tree stays shallow. */
export const IOVA_TREE_INNER_ORDER = 32;
const MAX_HEIGHT = 48;

/** `x & ~(align - 1)` for a power-of-two align, exact above 2^32. */
export function alignDownPow2(x: number, align: number): number {
  return align === 1 ? x : x - (x % align);
}

/**
 * Does the gap above `prevHi`, with its top clipped to `top`, hold `size` granules at the highest
 * `align`-aligned start? (`new_pfn = (high_pfn - size) & align_mask` and `new_pfn > prev->pfn_hi`
 * in the kernel walk.)
 */
export function gapFits(prevHi: number, top: number, size: number, align: number): boolean {
  if (top < size) return false;
  return alignDownPow2(top - size, align) > prevHi;
}

/** The start the kernel walk would pick in a gap whose top is clipped to `top`. */
export function gapStart(top: number, size: number, align: number): number {
  return alignDownPow2(top - size, align);
}

export class IovaTree {
  /** Entries per leaf, children per inner node, and the fill below which a node is merged. */
  readonly #lcap: number;
  readonly #icap: number;
  readonly #lmin: number;
  readonly #imin: number;
  readonly #stride: number;
  #s: Float64Array;
  #count: Int32Array;
  /** Largest gap in a node (-1 when empty). */
  #max: Float64Array;
  /** Leaf chain, in pfn order (-1 at the ends). */
  #next: Int32Array;
  #prev: Int32Array;
  #free: Int32Array;
  #nFree = 0;
  #nodes = 0;
  #root: number;
  /** Inner levels above the leaves (0: the root is a leaf). */
  #height = 0;
  #size = 0;
  /** The last descent: inner node and child slot per level, then the leaf and the position in it. */
  readonly #pathNode = new Int32Array(MAX_HEIGHT);
  readonly #pathIdx = new Int32Array(MAX_HEIGHT);
  #leaf = 0;
  #pos = -1;
  /**
   * The path, leaf and position above come from a lookup with no update since: an update at that
   * spot (free after find, insert after findFit) reuses them instead of descending again.
   */
  #cursorOk = false;

  /** pfnHi of the entry the last lookup returned. */
  foundHi = -1;
  /** Gap below the entry the last lookup returned. */
  foundGap = 0;
  /** Flags (the caller's small integer) of the entry the last lookup returned. */
  foundFlags = 0;

  /** Orders >= 8 (tests use small orders to build deep trees from few ranges). */
  constructor(leafOrder: number = IOVA_TREE_LEAF_ORDER, innerOrder: number = IOVA_TREE_INNER_ORDER) {
    for (const order of [leafOrder, innerOrder]) {
      if (!Number.isInteger(order) || order < 8 || order > 4096) throw new RangeError(`iova tree order ${order} must be an integer in 8..4096`);
    }
    this.#lcap = leafOrder;
    this.#icap = innerOrder;
    this.#lmin = leafOrder >> 2;
    this.#imin = innerOrder >> 2;
    this.#stride = Math.max(4 * leafOrder, 3 * innerOrder);
    const nodes = 16;
    this.#s = new Float64Array(nodes * this.#stride);
    this.#count = new Int32Array(nodes);
    this.#max = new Float64Array(nodes).fill(-1);
    this.#next = new Int32Array(nodes).fill(-1);
    this.#prev = new Int32Array(nodes).fill(-1);
    this.#free = new Int32Array(nodes);
    this.#root = this.#newNode();
  }

  get size(): number {
    return this.#size;
  }

  // ---------------------------------------------------------------------------------------------
  // lookups

  /** Range containing `pfn` (`private_find_iova`): its pfnLo, or -1. */
  findContaining(pfn: number): number {
    const lo = this.lastAtOrBelow(pfn);
    return lo >= 0 && this.foundHi >= pfn ? lo : -1;
  }

  /** Largest pfnLo <= key, or -1. */
  lastAtOrBelow(key: number): number {
    this.#descend(key);
    let leaf = this.#leaf;
    let i = this.#pos;
    if (i < 0) {
      // Every entry of this leaf is above key: the answer is the last entry before it.
      leaf = this.#prev[leaf] ?? -1;
      if (leaf < 0) return -1;
      i = (this.#count[leaf] ?? 0) - 1;
    }
    return this.#emit(leaf, i);
  }

  /** Largest pfnLo < key (`rb_prev` of a node with that key), or -1. */
  predBelow(key: number): number {
    return key <= 0 ? -1 : this.lastAtOrBelow(key - 1);
  }

  /** Smallest pfnLo > key (`rb_next` of a node with that key), or -1. */
  succAbove(key: number): number {
    this.#descend(key);
    let leaf = this.#leaf;
    let i = this.#pos + 1;
    if (i >= (this.#count[leaf] ?? 0)) {
      leaf = this.#next[leaf] ?? -1;
      if (leaf < 0) return -1;
      i = 0;
    }
    return this.#emit(leaf, i);
  }

  /** Smallest pfnLo >= key, or -1. */
  lowestAtOrAbove(key: number): number {
    return key <= 0 ? this.succAbove(-1) : this.succAbove(key - 1);
  }

  /** The first range with pfnHi >= pfn (the first that can overlap a range starting at pfn), or -1. */
  firstEndingAtOrAbove(pfn: number): number {
    // Ranges are disjoint and sorted, so pfnHi is ordered like pfnLo.
    const lo = this.lastAtOrBelow(pfn);
    if (lo >= 0 && this.foundHi >= pfn) return lo;
    return this.succAbove(pfn);
  }

  /**
   * Rightmost range with pfnLo <= bound whose gap holds `size` granules at a start aligned to
   * `align`, the start being as high as possible below the range: the top-down first fit of
   * `__alloc_and_insert_iova_range`. Children whose largest gap is smaller than `size` are skipped.
   * Returns its pfnLo, or -1.
   */
  findFit(bound: number, size: number, align: number): number {
    this.#cursorOk = false;
    if (!this.#fit(this.#root, 0, bound, size, align)) return -1;
    this.#cursorOk = true;
    return this.#emit(this.#leaf, this.#pos);
  }

  #fit(n: number, lvl: number, bound: number, size: number, align: number): boolean {
    const s = this.#s;
    const cap = this.#icap;
    const base = n * this.#stride;
    if (lvl === this.#height) {
      const gaps = base + this.#lcap;
      for (let i = leafUpperBound(s, base, this.#count[n] ?? 0, bound) - 1; i >= 0; i--) {
        const g = s[gaps + i] ?? 0;
        if (g < size) continue;
        const lo = s[base + i] ?? 0;
        if (gapFits(lo - g - 1, lo, size, align)) {
          this.#leaf = n;
          this.#pos = i;
          return true;
        }
      }
      return false;
    }
    let c = childFor(s, base, this.#count[n] ?? 0, bound);
    for (; c >= 0; c--) {
      if ((s[base + cap + c] ?? -1) < size) continue;
      this.#pathNode[lvl] = n;
      this.#pathIdx[lvl] = c;
      if (this.#fit(s[base + 2 * cap + c] ?? 0, lvl + 1, bound, size, align)) return true;
    }
    return false;
  }

  /** Every range in pfn order, as [pfnLo, pfnHi, gap, flags] (a reused array). Do not mutate while iterating. */
  *entries(): Generator<readonly [number, number, number, number]> {
    let leaf = this.#root;
    for (let l = 0; l < this.#height; l++) leaf = this.#s[leaf * this.#stride + 2 * this.#icap] ?? 0;
    const out: [number, number, number, number] = [0, 0, 0, 0];
    for (; leaf >= 0; leaf = this.#next[leaf] ?? -1) {
      const base = leaf * this.#stride;
      const n = this.#count[leaf] ?? 0;
      for (let i = 0; i < n; i++) {
        const L = this.#lcap;
        out[0] = this.#s[base + i] ?? 0;
        out[1] = this.#s[base + 2 * L + i] ?? 0;
        out[2] = this.#s[base + L + i] ?? 0;
        out[3] = this.#s[base + 3 * L + i] ?? 0;
        yield out;
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // updates

  /** Insert [lo, hi] with `flags`; it overlaps nothing. Sets its gap and its successor's. */
  insert(lo: number, hi: number, flags: number): void {
    this.#reserveNodes(this.#height + 2);
    if (!this.#cursorBelow(lo)) this.#descendForInsert(lo);
    this.#cursorOk = false;
    const s = this.#s;
    const leaf = this.#leaf;
    const base = leaf * this.#stride;
    const n = this.#count[leaf] ?? 0;
    const i = this.#pos + 1;
    const L = this.#lcap;
    const e = base + i;
    const predHi = i > 0 ? (s[e + 2 * L - 1] ?? 0) : this.#lastHiBefore(leaf);
    for (let r = base; r < base + 4 * L; r += L) for (let j = r + n - 1; j >= r + i; j--) s[j + 1] = s[j] ?? 0;
    const g = lo - predHi - 1;
    s[e] = lo;
    s[e + L] = g;
    s[e + 2 * L] = hi;
    s[e + 3 * L] = flags;
    this.#count[leaf] = n + 1;
    if (g > (this.#max[leaf] ?? -1)) this.#max[leaf] = g;
    let succLeaf = -1;
    if (i < n) {
      // The successor's gap shrinks to the space between this range and it.
      this.#setGap(leaf, e + 1, (s[e + 1] ?? 0) - hi - 1);
    } else {
      succLeaf = this.#next[leaf] ?? -1;
    }
    this.#fixUp(leaf);
    this.#size++;
    if (succLeaf >= 0) {
      const succLo = s[succLeaf * this.#stride] ?? 0;
      this.#setGapOf(succLo, succLo - hi - 1);
    }
  }

  /**
   * Erase the range starting at `lo` (`rb_erase`); the successor's gap grows over it. Returns the
   * successor's pfnLo (`rb_next` before the erase), or -1; `foundHi` is then the predecessor's
   * pfnHi (-1 when none).
   */
  remove(lo: number): number {
    if (!(this.#cursorOk && this.#pos >= 0 && this.#s[this.#leaf * this.#stride + this.#pos] === lo)) this.#descend(lo);
    this.#cursorOk = false;
    const leaf = this.#leaf;
    const i = this.#pos;
    const s = this.#s;
    const base = leaf * this.#stride;
    const L = this.#lcap;
    const e = base + i;
    if (i < 0 || s[e] !== lo) throw new RangeError(`iova tree: no range starts at ${lo}`);
    const n = (this.#count[leaf] ?? 0) - 1;
    const predHi = i > 0 ? (s[e + 2 * L - 1] ?? 0) : this.#lastHiBefore(leaf);
    const removedGap = s[e + L] ?? 0;
    for (let r = base; r < base + 4 * L; r += L) for (let j = r + i; j < r + n; j++) s[j] = s[j + 1] ?? 0;
    this.#count[leaf] = n;
    let succLo = -1;
    let succElsewhere = false;
    if (i < n) {
      succLo = s[e] ?? 0;
      // The successor's gap swallows the removed range and its gap: larger than either of them.
      const g = succLo - predHi - 1;
      s[e + L] = g;
      if (g > (this.#max[leaf] ?? -1)) this.#max[leaf] = g;
    } else {
      if (removedGap === this.#max[leaf]) this.#max[leaf] = this.#scanMax(leaf, true);
      const nx = this.#next[leaf] ?? -1;
      if (nx >= 0) {
        succLo = s[nx * this.#stride] ?? 0;
        succElsewhere = true;
      }
    }
    this.#fixUp(leaf);
    this.#size--;
    if (this.#height > 0 && n < this.#lmin) this.#rebalance(this.#height - 1);
    if (succElsewhere) this.#setGapOf(succLo, succLo - predHi - 1);
    this.foundHi = predHi;
    return succLo;
  }

  /** Move the start of the range at `lo` down to `newLo`, into the free gap below it (reserve_iova's merge). */
  extendDown(lo: number, newLo: number): void {
    this.#descend(lo);
    const leaf = this.#leaf;
    const i = this.#pos;
    const s = this.#s;
    const e = leaf * this.#stride + i;
    if (i < 0 || s[e] !== lo || newLo > lo) throw new RangeError(`iova tree: cannot extend ${lo} down to ${newLo}`);
    const g = (s[e + this.#lcap] ?? 0) - (lo - newLo);
    if (g < 0) throw new RangeError(`iova tree: extending ${lo} down to ${newLo} overlaps its predecessor`);
    s[e] = newLo;
    this.#setGap(leaf, e, g);
    this.#fixUp(leaf);
    // Keep each separator on the way down at most the smallest pfnLo of its child.
    for (let l = this.#height - 1; l >= 0; l--) {
      const p = (this.#pathNode[l] ?? 0) * this.#stride + (this.#pathIdx[l] ?? 0);
      if ((s[p] ?? 0) > newLo) s[p] = newLo;
    }
  }

  /** Replace the flags of the range starting at `lo`. */
  setFlags(lo: number, flags: number): void {
    this.#descend(lo);
    const e = this.#leaf * this.#stride + this.#pos;
    if (this.#pos < 0 || this.#s[e] !== lo) throw new RangeError(`iova tree: no range starts at ${lo}`);
    this.#s[e + 3 * this.#lcap] = flags;
  }

  // ---------------------------------------------------------------------------------------------
  // checks

  /**
   * Full structural check (O(n), for tests): order, disjointness, gaps, largest gaps, separators,
   * fill levels, equal leaf depth and the leaf chain. Returns a description of the first problem, or null.
   */
  check(): string | null {
    const s = this.#s;
    const cap = this.#icap;
    const leaves: number[] = [];
    // Returns [min lo, max lo, max gap] of a subtree, or a problem.
    const walk = (n: number, lvl: number): [number, number, number] | string => {
      const base = n * this.#stride;
      const cnt = this.#count[n] ?? 0;
      const [most, least] = lvl === this.#height ? [this.#lcap, this.#lmin] : [this.#icap, this.#imin];
      if (cnt > most) return `node ${n} holds ${cnt} > ${most}`;
      if (n !== this.#root && cnt < least) return `node ${n} holds ${cnt} < ${least}`;
      let mx = -1;
      if (lvl === this.#height) {
        leaves.push(n);
        for (let i = 0; i < cnt; i++) mx = Math.max(mx, s[base + this.#lcap + i] ?? 0);
        if (mx !== this.#max[n]) return `leaf ${n} records largest gap ${this.#max[n]}, holds ${mx}`;
        return [s[base] ?? 0, s[base + cnt - 1] ?? 0, mx];
      }
      if (cnt < 2) return `inner node ${n} has ${cnt} children`;
      let lo = 0;
      let prevHi = -1;
      for (let c = 0; c < cnt; c++) {
        const r = walk(s[base + 2 * cap + c] ?? 0, lvl + 1);
        if (typeof r === 'string') return r;
        if (c === 0) lo = r[0];
        else {
          const key = s[base + c] ?? 0;
          if (!(key > prevHi && key <= r[0])) return `separator ${key} of node ${n} slot ${c} not in (${prevHi}, ${r[0]}]`;
        }
        if ((s[base + cap + c] ?? 0) !== r[2]) return `node ${n} slot ${c} records largest gap ${s[base + cap + c]}, child holds ${r[2]}`;
        mx = Math.max(mx, r[2]);
        prevHi = r[1];
      }
      if (mx !== this.#max[n]) return `node ${n} records largest gap ${this.#max[n]}, holds ${mx}`;
      return [lo, prevHi, mx];
    };
    const r = walk(this.#root, 0);
    if (typeof r === 'string') return r;
    for (let k = 0; k < leaves.length; k++) {
      const want = leaves[k + 1] ?? -1;
      if ((this.#next[leaves[k] ?? 0] ?? -1) !== want) return `leaf chain broken after leaf ${leaves[k]}`;
      if (want >= 0 && (this.#prev[want] ?? -1) !== leaves[k]) return `leaf chain broken before leaf ${want}`;
    }
    let prevHi = -1;
    let count = 0;
    for (const [lo, hi, gap] of this.entries()) {
      count++;
      if (hi < lo) return `range [${lo},${hi}] is inverted`;
      if (lo <= prevHi) return `range [${lo},${hi}] overlaps the previous one ending at ${prevHi}`;
      if (gap !== lo - prevHi - 1) return `range [${lo},${hi}] has gap ${gap}, expected ${lo - prevHi - 1}`;
      prevHi = hi;
    }
    if (count !== this.#size) return `tree counts ${this.#size} ranges, holds ${count}`;
    return null;
  }

  // ---------------------------------------------------------------------------------------------
  // internals

  #emit(leaf: number, i: number): number {
    const L = this.#lcap;
    const e = leaf * this.#stride + i;
    this.foundHi = this.#s[e + 2 * L] ?? 0;
    this.foundGap = this.#s[e + L] ?? 0;
    this.foundFlags = this.#s[e + 3 * L] ?? 0;
    return this.#s[e] ?? 0;
  }

  /**
   * Can `lo` go in right before the cursor's entry, its predecessor being in the same leaf and the
   * leaf having room? Then the cursor is moved onto that predecessor, as #descendForInsert would
   * leave it, and the descent is skipped.
   */
  #cursorBelow(lo: number): boolean {
    if (!this.#cursorOk) return false;
    const p = this.#pos;
    const leaf = this.#leaf;
    if (p <= 0 || (this.#count[leaf] ?? 0) >= this.#lcap) return false;
    const e = leaf * this.#stride + p;
    if (!((this.#s[e] ?? 0) > lo && (this.#s[e - 1] ?? 0) < lo)) return false;
    this.#pos = p - 1;
    return true;
  }

  /** Root-to-leaf descent for `key`: path, leaf, and the position of the last entry <= key there (-1: none). */
  #descend(key: number): void {
    const s = this.#s;
    const cap = this.#icap;
    const stride = this.#stride;
    let n = this.#root;
    for (let l = 0; l < this.#height; l++) {
      const base = n * stride;
      const c = childFor(s, base, this.#count[n] ?? 0, key);
      this.#pathNode[l] = n;
      this.#pathIdx[l] = c;
      n = s[base + 2 * cap + c] ?? 0;
    }
    this.#leaf = n;
    this.#pos = leafUpperBound(s, n * stride, this.#count[n] ?? 0, key) - 1;
    this.#cursorOk = true;
  }

  /** Like #descend, splitting every full node on the way so the leaf has room for one more entry. */
  #descendForInsert(key: number): void {
    const cap = this.#icap;
    const stride = this.#stride;
    if ((this.#count[this.#root] ?? 0) === (this.#height === 0 ? this.#lcap : cap)) {
      // The tree grows at the top: a new root with the old one as its only child, then split.
      const r = this.#newNode();
      const old = this.#root;
      const rb = r * stride;
      this.#s[rb] = 0;
      this.#s[rb + cap] = this.#max[old] ?? -1;
      this.#s[rb + 2 * cap] = old;
      this.#count[r] = 1;
      this.#max[r] = this.#max[old] ?? -1;
      this.#root = r;
      this.#height++;
    }
    const s = this.#s;
    let n = this.#root;
    for (let l = 0; l < this.#height; l++) {
      const base = n * stride;
      let c = childFor(s, base, this.#count[n] ?? 0, key);
      let child = s[base + 2 * cap + c] ?? 0;
      const leaf = l + 1 === this.#height;
      if ((this.#count[child] ?? 0) === (leaf ? this.#lcap : cap)) {
        this.#splitChild(n, c, child, leaf, key);
        if (key >= (s[base + c + 1] ?? 0)) c++;
        child = s[base + 2 * cap + c] ?? 0;
      }
      this.#pathNode[l] = n;
      this.#pathIdx[l] = c;
      n = child;
    }
    this.#leaf = n;
    this.#pos = leafUpperBound(s, n * stride, this.#count[n] ?? 0, key) - 1;
  }

  /**
   * Split full child `x` (slot c of inner node p, which has room) in two, for an insertion of
   * `key`. Node storage must be reserved. In the middle, unless the key goes below or above every
   * key of x: then x keeps only the minimum fill on that side and the other node stays nearly
   * full, so a run of top-down (or bottom-up) allocations packs the nodes instead of leaving
   * half-empty ones behind.
   */
  #splitChild(p: number, c: number, x: number, leaf: boolean, key: number): void {
    const s = this.#s;
    const icap = this.#icap;
    const stride = this.#stride;
    const y = this.#newNode();
    const xcap = leaf ? this.#lcap : icap;
    const least = leaf ? this.#lmin : this.#imin;
    const xb = x * stride;
    // Slot 0 of an inner node has no key: compare with slot 1's.
    let half = xcap >> 1;
    if (key < (s[xb + 1] ?? 0)) half = Math.max(least, 1);
    else if (key >= (s[xb + xcap - 1] ?? 0)) half = xcap - Math.max(least, 1);
    const yb = y * stride;
    for (let r = 0; r < (leaf ? 4 : 3) * xcap; r += xcap) s.copyWithin(yb + r, xb + r + half, xb + r + xcap);
    this.#count[x] = half;
    this.#count[y] = xcap - half;
    this.#max[x] = this.#scanMax(x, leaf);
    this.#max[y] = this.#scanMax(y, leaf);
    if (leaf) {
      const nx = this.#next[x] ?? -1;
      this.#next[y] = nx;
      this.#prev[y] = x;
      if (nx >= 0) this.#prev[nx] = y;
      this.#next[x] = y;
    }
    const pb = p * stride;
    const pc = this.#count[p] ?? 0;
    for (let r = 0; r < 3 * icap; r += icap) s.copyWithin(pb + r + c + 2, pb + r + c + 1, pb + r + pc);
    s[pb + c + 1] = s[yb] ?? 0; // y's first key (a pfnLo, or a valid separator) separates it from x
    s[pb + icap + c + 1] = this.#max[y] ?? -1;
    s[pb + 2 * icap + c + 1] = y;
    s[pb + icap + c] = this.#max[x] ?? -1;
    this.#count[p] = pc + 1;
  }

  /**
   * The node at level lvl+1 on the last path (slot pathIdx[lvl] of pathNode[lvl]) holds too few
   * entries: merge it with a sibling, or even the two out. The parent's set of ranges, hence its
   * largest gap, does not change; the parent may underflow in turn.
   */
  #rebalance(lvl: number): void {
    const s = this.#s;
    const icap = this.#icap;
    const stride = this.#stride;
    const p = this.#pathNode[lvl] ?? 0;
    const pb = p * stride;
    const c = this.#pathIdx[lvl] ?? 0;
    const j = c > 0 ? c - 1 : 0;
    const ln = s[pb + 2 * icap + j] ?? 0;
    const rn = s[pb + 2 * icap + j + 1] ?? 0;
    const lb = ln * stride;
    const rb = rn * stride;
    const nl = this.#count[ln] ?? 0;
    const nr = this.#count[rn] ?? 0;
    const leaf = lvl + 1 === this.#height;
    // An inner node's slot-0 key is never read; the parent's separator becomes it before it moves.
    if (!leaf) s[rb] = s[pb + j + 1] ?? 0;
    const pc = this.#count[p] ?? 0;
    // Entries move slot by slot in each region: four in a leaf, three in an inner node.
    const cap = leaf ? this.#lcap : icap;
    const regions = (leaf ? 4 : 3) * cap;
    const step = cap;
    if (nl + nr <= cap) {
      for (let r = 0; r < regions; r += step) s.copyWithin(lb + r + nl, rb + r, rb + r + nr);
      this.#count[ln] = nl + nr;
      if ((this.#max[rn] ?? -1) > (this.#max[ln] ?? -1)) this.#max[ln] = this.#max[rn] ?? -1;
      if (leaf) {
        const nx = this.#next[rn] ?? -1;
        this.#next[ln] = nx;
        if (nx >= 0) this.#prev[nx] = ln;
      }
      this.#freeNode(rn);
      for (let r = 0; r < 3 * icap; r += icap) s.copyWithin(pb + r + j + 1, pb + r + j + 2, pb + r + pc);
      this.#count[p] = pc - 1;
      s[pb + icap + j] = this.#max[ln] ?? -1;
      if (lvl === 0) {
        if (pc - 1 === 1) {
          // The root has one child left: it becomes the root.
          this.#root = ln;
          this.#height--;
          this.#freeNode(p);
        }
      } else if (pc - 1 < this.#imin) {
        this.#rebalance(lvl - 1);
      }
      return;
    }
    // Even the two out.
    const total = nl + nr;
    const wantL = total >> 1;
    if (nl < wantL) {
      const k = wantL - nl;
      for (let r = 0; r < regions; r += step) {
        s.copyWithin(lb + r + nl, rb + r, rb + r + k);
        s.copyWithin(rb + r, rb + r + k, rb + r + nr);
      }
    } else {
      const k = nl - wantL;
      for (let r = 0; r < regions; r += step) {
        s.copyWithin(rb + r + k, rb + r, rb + r + nr);
        s.copyWithin(rb + r, lb + r + wantL, lb + r + nl);
      }
    }
    this.#count[ln] = wantL;
    this.#count[rn] = total - wantL;
    this.#max[ln] = this.#scanMax(ln, leaf);
    this.#max[rn] = this.#scanMax(rn, leaf);
    s[pb + j + 1] = s[rb] ?? 0;
    s[pb + icap + j] = this.#max[ln] ?? -1;
    s[pb + icap + j + 1] = this.#max[rn] ?? -1;
  }

  /** Propagate the largest gap of `leaf` (at the end of the last path) upwards; stops where nothing changes. */
  #fixUp(leaf: number): void {
    const s = this.#s;
    const cap = this.#icap;
    let mx = this.#max[leaf] ?? -1;
    for (let l = this.#height - 1; l >= 0; l--) {
      const p = this.#pathNode[l] ?? 0;
      const slot = p * this.#stride + cap + (this.#pathIdx[l] ?? 0);
      const old = s[slot] ?? -1;
      if (old === mx) return;
      s[slot] = mx;
      const pm = this.#max[p] ?? -1;
      if (mx >= pm) this.#max[p] = mx;
      else if (old === pm) this.#max[p] = this.#scanMax(p, false);
      else return;
      mx = this.#max[p] ?? -1;
    }
  }

  /** Set the gap of the leaf entry whose pfnLo is at word `e`, keeping the leaf's largest gap. */
  #setGap(leaf: number, e: number, g: number): void {
    const slot = e + this.#lcap;
    const old = this.#s[slot] ?? 0;
    this.#s[slot] = g;
    const m = this.#max[leaf] ?? -1;
    if (g >= m) this.#max[leaf] = g;
    else if (old === m) this.#max[leaf] = this.#scanMax(leaf, true);
  }

  /** Set the gap of the entry starting at `lo` (a fresh descent) and propagate it. */
  #setGapOf(lo: number, g: number): void {
    this.#descend(lo);
    const leaf = this.#leaf;
    this.#setGap(leaf, leaf * this.#stride + this.#pos, g);
    this.#fixUp(leaf);
  }

  /** pfnHi of the last entry before `leaf` (-1 when it is the first leaf). */
  #lastHiBefore(leaf: number): number {
    const pv = this.#prev[leaf] ?? -1;
    if (pv < 0) return -1;
    return this.#s[pv * this.#stride + 2 * this.#lcap + (this.#count[pv] ?? 0) - 1] ?? 0;
  }

  /** Largest gap in a node: over the entries' gaps in a leaf, over the children's in an inner node. */
  #scanMax(n: number, leaf: boolean): number {
    const s = this.#s;
    const cnt = this.#count[n] ?? 0;
    const b = n * this.#stride + (leaf ? this.#lcap : this.#icap);
    let m = -1;
    for (let i = 0; i < cnt; i++) {
      const g = s[b + i] ?? -1;
      if (g > m) m = g;
    }
    return m;
  }

  /** Make sure `k` more nodes can be taken without growing the storage mid-operation. */
  #reserveNodes(k: number): void {
    if (this.#nFree + (this.#count.length - this.#nodes) >= k) return;
    const cap = Math.max(this.#count.length * 2, this.#nodes + k);
    const grow = <T extends Float64Array | Int32Array>(a: T, make: (n: number) => T, fill?: number): T => {
      const b = make(cap);
      if (fill !== undefined) b.fill(fill);
      b.set(a);
      return b;
    };
    const s = new Float64Array(cap * this.#stride);
    s.set(this.#s);
    this.#s = s;
    this.#count = grow(this.#count, (n) => new Int32Array(n));
    this.#max = grow(this.#max, (n) => new Float64Array(n), -1);
    this.#next = grow(this.#next, (n) => new Int32Array(n), -1);
    this.#prev = grow(this.#prev, (n) => new Int32Array(n), -1);
    this.#free = grow(this.#free, (n) => new Int32Array(n));
  }

  #newNode(): number {
    this.#reserveNodes(1);
    const n = this.#nFree > 0 ? (this.#free[--this.#nFree] ?? 0) : this.#nodes++;
    this.#count[n] = 0;
    this.#max[n] = -1;
    this.#next[n] = -1;
    this.#prev[n] = -1;
    return n;
  }

  #freeNode(n: number): void {
    this.#count[n] = 0;
    this.#max[n] = -1;
    this.#next[n] = -1;
    this.#prev[n] = -1;
    this.#free[this.#nFree++] = n;
  }
}

/**
 * upperBound over the pfnLo region of a leaf, by interpolation: pfns in a leaf are often dense, so the guess from the
 * first and last key usually lands on the answer, and the scan from there reads one or two cache
 * lines instead of the chain of dependent loads of a binary search over a cold leaf.
 */
function leafUpperBound(s: Float64Array, base: number, count: number, key: number): number {
  if (count === 0) return 0;
  const first = s[base] ?? 0;
  if (key < first) return 0;
  const last = s[base + count - 1] ?? 0;
  if (key >= last) return count;
  // first <= key < last, so 0 <= guess < count - 1.
  let i = Math.floor(((key - first) / (last - first)) * (count - 1));
  if ((s[base + i] ?? 0) <= key) {
    while ((s[base + i + 1] ?? 0) <= key) i++;
    return i + 1;
  }
  while ((s[base + i] ?? 0) > key) i--;
  return i + 1;
}

/**
 * Child of an inner node to descend into for `key`: the last slot c >= 1 whose separator is <= key,
 * else 0 (slot 0 has no key). Interpolates between the separators of slots 1 and count-1 (pfns are
 * spread evenly in the common case), then steps to the answer: one or two cache lines of a cold
 * node instead of a chain of dependent loads.
 */
function childFor(s: Float64Array, base: number, count: number, key: number): number {
  if (count < 2) return 0;
  const first = s[base + 1] ?? 0;
  if (key < first) return 0;
  const last = s[base + count - 1] ?? 0;
  if (key >= last) return count - 1;
  // first <= key < last: the answer is in 1..count-2.
  let c = 1 + Math.floor(((key - first) / (last - first)) * (count - 2));
  if ((s[base + c] ?? 0) <= key) {
    while ((s[base + c + 1] ?? 0) <= key) c++;
    return c;
  }
  while ((s[base + c] ?? 0) > key) c--;
  return c;
}

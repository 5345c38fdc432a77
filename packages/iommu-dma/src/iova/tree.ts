/**
 * The ordered set of IOVA ranges of one domain (the kernel's `iovad->rbroot`).
 *
 * The kernel keeps `struct iova` nodes in a red-black tree keyed by `pfn_lo` and finds free space
 * by walking it backwards node by node from a cached node. That walk is linear in the worst case
 * (a fragmented space). Here the nodes live in a treap (deterministic priorities from a seeded
 * PRNG) keyed by `pfnLo`, and every node is augmented with the free gap just below it and the
 * largest such gap in its subtree, so the same top-down answer is found in O(log n).
 * Internal to the iova room.
 */
import { IntMap, Rng } from '@dmakit/dma-core';

/** One range in the tree: an allocation (possibly sitting in an rcache), a reservation or the anchor. */
export class IovaNode {
  pfnLo: number;
  pfnHi: number;
  /** Made by reserve_iova (or the anchor): never handed out, never freed. */
  reserved: boolean;
  /** Sitting in a per-CPU magazine or the depot: still in the tree, not owned by a caller. */
  cached = false;
  /** Treap priority (max-heap). */
  readonly prio: number;
  /** Free granules between the previous node's pfnHi and this pfnLo. */
  gap = 0;
  /** Largest `gap` in this subtree. */
  maxGap = 0;
  left: IovaNode | null = null;
  right: IovaNode | null = null;

  constructor(pfnLo: number, pfnHi: number, reserved: boolean, prio: number) {
    this.pfnLo = pfnLo;
    this.pfnHi = pfnHi;
    this.reserved = reserved;
    this.prio = prio;
  }
}

function pull(t: IovaNode): void {
  let m = t.gap;
  const l = t.left;
  const r = t.right;
  if (l !== null && l.maxGap > m) m = l.maxGap;
  if (r !== null && r.maxGap > m) m = r.maxGap;
  t.maxGap = m;
}

export class IovaTree {
  root: IovaNode | null = null;
  /** Exact-start index: the free paths look nodes up by their first pfn in O(1). */
  readonly byLo = new IntMap<IovaNode>();
  #rng: Rng;
  #splitL: IovaNode | null = null;
  #splitR: IovaNode | null = null;
  /** Reused stack for path refreshes (no allocation per operation). */
  #path: IovaNode[] = [];

  constructor(seed: number) {
    this.#rng = new Rng(seed);
  }

  get size(): number {
    return this.byLo.size;
  }

  newNode(pfnLo: number, pfnHi: number, reserved: boolean): IovaNode {
    return new IovaNode(pfnLo, pfnHi, reserved, this.#rng.nextU32());
  }

  /** Node whose range contains `pfn` (`private_find_iova`). */
  findContaining(pfn: number): IovaNode | null {
    let t = this.root;
    while (t !== null) {
      if (pfn < t.pfnLo) t = t.left;
      else if (pfn > t.pfnHi) t = t.right;
      else return t;
    }
    return null;
  }

  /** Largest node with pfnLo < key (`rb_prev` of a node with that key). */
  predBelow(key: number): IovaNode | null {
    let t = this.root;
    let best: IovaNode | null = null;
    while (t !== null) {
      if (t.pfnLo < key) {
        best = t;
        t = t.right;
      } else t = t.left;
    }
    return best;
  }

  /** Smallest node with pfnLo > key (`rb_next` of a node with that key). */
  succAbove(key: number): IovaNode | null {
    let t = this.root;
    let best: IovaNode | null = null;
    while (t !== null) {
      if (t.pfnLo > key) {
        best = t;
        t = t.left;
      } else t = t.right;
    }
    return best;
  }

  /** Neighbours of a node in the tree (`rb_prev`, `rb_next`), found in one descent: #nbPred, #nbSucc. */
  neighbours(x: IovaNode): void {
    let pred: IovaNode | null = null;
    let succ: IovaNode | null = null;
    let t = this.root;
    const key = x.pfnLo;
    while (t !== null && t !== x) {
      if (key < t.pfnLo) {
        succ = t;
        t = t.left;
      } else {
        pred = t;
        t = t.right;
      }
    }
    if (x.left !== null) {
      let l = x.left;
      while (l.right !== null) l = l.right;
      pred = l;
    }
    if (x.right !== null) {
      let r = x.right;
      while (r.left !== null) r = r.left;
      succ = r;
    }
    this.nbPred = pred;
    this.nbSucc = succ;
  }

  /** Results of neighbours(). */
  nbPred: IovaNode | null = null;
  nbSucc: IovaNode | null = null;

  /** Smallest node with pfnLo >= key. */
  lowestAtOrAbove(key: number): IovaNode | null {
    let t = this.root;
    let best: IovaNode | null = null;
    while (t !== null) {
      if (t.pfnLo >= key) {
        best = t;
        t = t.left;
      } else t = t.right;
    }
    return best;
  }

  /** Smallest node with pfnHi >= pfn: the first node that can overlap a range starting at pfn. */
  firstEndingAtOrAbove(pfn: number): IovaNode | null {
    // Ranges are disjoint and sorted, so pfnHi is ordered like pfnLo.
    let t = this.root;
    let best: IovaNode | null = null;
    while (t !== null) {
      if (t.pfnHi >= pfn) {
        best = t;
        t = t.left;
      } else t = t.right;
    }
    return best;
  }

  /** Insert a node that overlaps nothing. Fixes its gap and its successor's gap. */
  insert(x: IovaNode): void {
    const p = this.predBelow(x.pfnLo);
    const s = this.succAbove(x.pfnLo);
    x.gap = x.pfnLo - (p === null ? -1 : p.pfnHi) - 1;
    x.left = null;
    x.right = null;
    if (s !== null) s.gap = s.pfnLo - x.pfnHi - 1;
    // The successor lies on the search path for x.pfnLo, which #insert and #split pull on the way
    // back up, so its new gap reaches maxGap without a separate refresh.
    this.root = this.#insert(this.root, x);
    this.byLo.set(x.pfnLo, x);
  }

  /** Erase a node (`rb_erase`), given its neighbours as found before. */
  remove(x: IovaNode, pred: IovaNode | null, succ: IovaNode | null): void {
    this.root = this.#remove(this.root, x);
    x.left = null;
    x.right = null;
    this.byLo.delete(x.pfnLo);
    if (succ !== null) {
      succ.gap = succ.pfnLo - (pred === null ? -1 : pred.pfnHi) - 1;
      this.refresh(succ);
    }
  }

  /** Move a node's start down into the free gap below it (reserve_iova's merge); order is unchanged. */
  extendDown(x: IovaNode, newLo: number): void {
    this.byLo.delete(x.pfnLo);
    x.gap -= x.pfnLo - newLo;
    x.pfnLo = newLo;
    this.byLo.set(newLo, x);
    this.refresh(x);
  }

  /** Recompute maxGap on the path from the root to `x` after x.gap changed. */
  refresh(x: IovaNode): void {
    const path = this.#path;
    let n = 0;
    let t = this.root;
    const key = x.pfnLo;
    while (t !== null) {
      path[n++] = t;
      if (t === x) break;
      t = key < t.pfnLo ? t.left : t.right;
    }
    while (n > 0) {
      const p = path[--n];
      if (p !== undefined) pull(p);
    }
  }

  /**
   * Rightmost node with pfnLo <= bound whose gap holds `size` granules at a start aligned to
   * `align`, the start being as high as possible below the node: the top-down first fit of
   * `__alloc_and_insert_iova_range`. Subtrees whose largest gap is smaller than `size` are skipped.
   */
  findFit(bound: number, size: number, align: number): IovaNode | null {
    return this.#findFit(this.root, bound, size, align);
  }

  #findFit(t: IovaNode | null, bound: number, size: number, align: number): IovaNode | null {
    while (t !== null && t.maxGap >= size) {
      if (t.pfnLo > bound) {
        t = t.left;
        continue;
      }
      const r = this.#findFit(t.right, bound, size, align);
      if (r !== null) return r;
      if (t.gap >= size && gapFits(t, t.pfnLo, size, align)) return t;
      t = t.left;
    }
    return null;
  }

  /**
   * Full structural check (O(n), for tests): order, disjointness, heap order, gaps, maxGap and the
   * pfn index. Returns a description of the first problem, or null.
   */
  check(): string | null {
    let prevHi = -1;
    let count = 0;
    for (const n of this.inOrder()) {
      count++;
      if (n.pfnHi < n.pfnLo) return `node [${n.pfnLo},${n.pfnHi}] is inverted`;
      if (n.pfnLo <= prevHi) return `node [${n.pfnLo},${n.pfnHi}] overlaps the previous one ending at ${prevHi}`;
      if (n.gap !== n.pfnLo - prevHi - 1) return `node [${n.pfnLo},${n.pfnHi}] has gap ${n.gap}, expected ${n.pfnLo - prevHi - 1}`;
      let m = n.gap;
      for (const c of [n.left, n.right]) {
        if (c === null) continue;
        if (c.prio > n.prio) return `heap order broken at ${n.pfnLo}`;
        if (c.maxGap > m) m = c.maxGap;
      }
      if (n.left !== null && n.left.pfnLo >= n.pfnLo) return `BST order broken at ${n.pfnLo}`;
      if (n.right !== null && n.right.pfnLo <= n.pfnLo) return `BST order broken at ${n.pfnLo}`;
      if (n.maxGap !== m) return `node ${n.pfnLo} has maxGap ${n.maxGap}, expected ${m}`;
      if (this.byLo.get(n.pfnLo) !== n) return `pfn index misses node ${n.pfnLo}`;
      prevHi = n.pfnHi;
    }
    if (count !== this.byLo.size) return `pfn index holds ${this.byLo.size} nodes, tree ${count}`;
    return null;
  }

  /** In-order traversal (explicit stack). */
  *inOrder(): Generator<IovaNode> {
    const stack: IovaNode[] = [];
    let t = this.root;
    for (;;) {
      while (t !== null) {
        stack.push(t);
        t = t.left;
      }
      const n = stack.pop();
      if (n === undefined) return;
      yield n;
      t = n.right;
    }
  }

  #insert(t: IovaNode | null, x: IovaNode): IovaNode {
    if (t === null) {
      pull(x);
      return x;
    }
    if (x.prio > t.prio) {
      this.#split(t, x.pfnLo);
      x.left = this.#splitL;
      x.right = this.#splitR;
      pull(x);
      return x;
    }
    if (x.pfnLo < t.pfnLo) t.left = this.#insert(t.left, x);
    else t.right = this.#insert(t.right, x);
    pull(t);
    return t;
  }

  /** Split into keys < key (#splitL) and keys >= key (#splitR). */
  #split(t: IovaNode | null, key: number): void {
    if (t === null) {
      this.#splitL = null;
      this.#splitR = null;
      return;
    }
    if (t.pfnLo < key) {
      this.#split(t.right, key);
      t.right = this.#splitL;
      pull(t);
      this.#splitL = t;
    } else {
      this.#split(t.left, key);
      t.left = this.#splitR;
      pull(t);
      this.#splitR = t;
    }
  }

  #merge(a: IovaNode | null, b: IovaNode | null): IovaNode | null {
    if (a === null) return b;
    if (b === null) return a;
    if (a.prio > b.prio) {
      a.right = this.#merge(a.right, b);
      pull(a);
      return a;
    }
    b.left = this.#merge(a, b.left);
    pull(b);
    return b;
  }

  #remove(t: IovaNode | null, x: IovaNode): IovaNode | null {
    if (t === null) return null;
    if (t === x) return this.#merge(t.left, t.right);
    if (x.pfnLo < t.pfnLo) t.left = this.#remove(t.left, x);
    else t.right = this.#remove(t.right, x);
    pull(t);
    return t;
  }
}

/** `x & ~(align - 1)` for a power-of-two align, exact above 2^32. */
export function alignDownPow2(x: number, align: number): number {
  return align === 1 ? x : x - (x % align);
}

/**
 * Does the gap below node `n`, with its top clipped to `top` (<= n.pfnLo), hold `size` granules
 * at the highest `align`-aligned start? (`new_pfn = (high_pfn - size) & align_mask` and
 * `new_pfn > prev->pfn_hi` in the kernel walk.)
 */
export function gapFits(n: IovaNode, top: number, size: number, align: number): boolean {
  if (top < size) return false;
  const start = alignDownPow2(top - size, align);
  return start > n.pfnLo - n.gap - 1;
}

/** The start the kernel walk would pick in the gap below `n` with its top clipped to `top`. */
export function gapStart(top: number, size: number, align: number): number {
  return alignDownPow2(top - size, align);
}

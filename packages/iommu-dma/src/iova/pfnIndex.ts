/**
 * The fast path's records of an IOVA domain's ranges, keyed by first pfn: what free_iova_fast and
 * an rcache hit reach in O(1) (the kernel keeps a pfn in the magazine and finds its `struct iova`
 * with private_find_iova). Every range the fast path has allocated or cached has a record (and
 * the tree flag IOVA_INDEXED); alloc_iova/free_iova ranges need none, so the tree path touches
 * no hash table. Internal to the iova room.
 *
 * Open addressing with linear probing and backward-shift deletion over flat typed arrays: a
 * Float64Array of (key, pfnHi) pairs (16 bytes a slot, so a lookup reads one cache line and the
 * table stays small enough to stay in cache at 10^5 ranges) and a Uint8Array of flags. Nothing is
 * allocated per operation and no tombstones pile up, so a domain that frees and re-allocates the
 * same pfns forever costs the same per lookup after a million cycles as after the first.
 */

/** Made by reserve_iova (or the anchor): never handed out, never freed. */
export const IOVA_RESERVED = 1;
/** Sitting in a per-CPU magazine or the depot: still in the tree, not owned by a caller. */
export const IOVA_CACHED = 2;
/** Tree flag: the range has a record in the pfn index (the fast path has seen it). */
export const IOVA_INDEXED = 4;

const EMPTY = -1;
const MIN_SLOTS = 64;

/** Fibonacci hashing of a pfn (keys above 2^32 fold their high half in first), top bits kept. */
function home(key: number, shift: number): number {
  const lo = key > 0xffffffff ? (key >>> 0) ^ ((key / 4294967296) >>> 0) : key >>> 0;
  return Math.imul(lo, 0x9e3779b1) >>> shift;
}

export class PfnIndex {
  /** Slot i: key at 2i, pfnHi at 2i+1. */
  #t: Float64Array;
  #flags: Uint8Array;
  #mask: number;
  #shift: number;
  #size = 0;

  constructor() {
    this.#t = new Float64Array(MIN_SLOTS * 2).fill(EMPTY);
    this.#flags = new Uint8Array(MIN_SLOTS);
    this.#mask = MIN_SLOTS - 1;
    this.#shift = Math.clz32(MIN_SLOTS) + 1;
  }

  get size(): number {
    return this.#size;
  }

  /** Slot of `key`, or -1. Valid until the next add or delete. */
  find(key: number): number {
    const t = this.#t;
    const mask = this.#mask;
    let i = home(key, this.#shift);
    for (;;) {
      const k = t[2 * i] ?? EMPTY;
      if (k === key) return i;
      if (k === EMPTY) return -1;
      i = (i + 1) & mask;
    }
  }

  hiAt(slot: number): number {
    return this.#t[2 * slot + 1] ?? 0;
  }

  flagsAt(slot: number): number {
    return this.#flags[slot] ?? 0;
  }

  setFlags(slot: number, flags: number): void {
    this.#flags[slot] = flags;
  }

  /** Add a key that is not stored yet. */
  add(key: number, hi: number, flags: number): void {
    if ((this.#size + 1) * 2 > this.#mask + 1) this.#grow();
    const t = this.#t;
    const mask = this.#mask;
    let i = home(key, this.#shift);
    while (t[2 * i] !== EMPTY) i = (i + 1) & mask;
    t[2 * i] = key;
    t[2 * i + 1] = hi;
    this.#flags[i] = flags;
    this.#size++;
  }

  /** Remove `key`; false when it was not stored. Shifts the probe run back: no tombstone remains. */
  delete(key: number): boolean {
    let i = this.find(key);
    if (i < 0) return false;
    const t = this.#t;
    const flags = this.#flags;
    const mask = this.#mask;
    const shift = this.#shift;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const k = t[2 * j] ?? EMPTY;
      if (k === EMPTY) break;
      const h = home(k, shift);
      // Leave j where it is when its home lies cyclically in (i, j].
      if (i <= j ? h > i && h <= j : h > i || h <= j) continue;
      t[2 * i] = k;
      t[2 * i + 1] = t[2 * j + 1] ?? 0;
      flags[i] = flags[j] ?? 0;
      i = j;
    }
    t[2 * i] = EMPTY;
    this.#size--;
    return true;
  }

  #grow(): void {
    const old = this.#t;
    const oldFlags = this.#flags;
    const slots = (this.#mask + 1) * 2;
    this.#t = new Float64Array(slots * 2).fill(EMPTY);
    this.#flags = new Uint8Array(slots);
    this.#mask = slots - 1;
    this.#shift = Math.clz32(slots) + 1;
    this.#size = 0;
    for (let s = 0; s < oldFlags.length; s++) {
      const k = old[2 * s] ?? EMPTY;
      if (k !== EMPTY) this.add(k, old[2 * s + 1] ?? 0, oldFlags[s] ?? 0);
    }
  }
}

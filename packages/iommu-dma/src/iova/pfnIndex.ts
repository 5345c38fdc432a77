/**
 * The per-range records of one IOVA domain, keyed by first pfn: what the kernel reaches through a
 * `struct iova *` (its `pfn_hi`) plus the model's two flags. Internal to the iova room.
 *
 * One flat Float64Array of 4-word slots (key, pfnHi, flags, spare), open addressing with linear
 * probing and backward-shift deletion: a lookup reads one cache line, nothing is allocated per
 * operation, and no tombstones pile up, so a domain that frees and re-allocates the same pfns
 * forever costs the same per lookup after a million cycles as after the first.
 */

/** Made by reserve_iova (or the anchor): never handed out, never freed. */
export const IOVA_RESERVED = 1;
/** Sitting in a per-CPU magazine or the depot: still in the tree, not owned by a caller. */
export const IOVA_CACHED = 2;

const SLOT = 4;
const EMPTY = -1;
const MIN_SLOTS = 64;

/** Fibonacci hashing of a pfn (keys above 2^32 fold their high half in first), top bits kept. */
function home(key: number, shift: number): number {
  const lo = key > 0xffffffff ? (key >>> 0) ^ ((key / 4294967296) >>> 0) : key >>> 0;
  return Math.imul(lo, 0x9e3779b1) >>> shift;
}

export class PfnIndex<O extends object> {
  #t: Float64Array;
  /** An object per slot, when one was handed out for the range (moves with its slot). */
  #objs: (O | undefined)[];
  #mask: number;
  #shift: number;
  #size = 0;

  constructor() {
    this.#t = new Float64Array(MIN_SLOTS * SLOT).fill(EMPTY);
    this.#objs = new Array<O | undefined>(MIN_SLOTS).fill(undefined);
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
      const k = t[i * SLOT] ?? EMPTY;
      if (k === key) return i;
      if (k === EMPTY) return -1;
      i = (i + 1) & mask;
    }
  }

  hiAt(slot: number): number {
    return this.#t[slot * SLOT + 1] ?? 0;
  }

  flagsAt(slot: number): number {
    return this.#t[slot * SLOT + 2] ?? 0;
  }

  setFlags(slot: number, flags: number): void {
    this.#t[slot * SLOT + 2] = flags;
  }

  objAt(slot: number): O | undefined {
    return this.#objs[slot];
  }

  setObj(slot: number, obj: O): void {
    this.#objs[slot] = obj;
  }

  /** Add a key that is not stored yet; returns its slot. */
  add(key: number, hi: number, flags: number, obj?: O): number {
    if ((this.#size + 1) * 2 > this.#mask + 1) this.#grow();
    const t = this.#t;
    const mask = this.#mask;
    let i = home(key, this.#shift);
    while (t[i * SLOT] !== EMPTY) i = (i + 1) & mask;
    const b = i * SLOT;
    t[b] = key;
    t[b + 1] = hi;
    t[b + 2] = flags;
    this.#objs[i] = obj;
    this.#size++;
    return i;
  }

  /** Remove `key`; false when it was not stored. Shifts the probe run back: no tombstone remains. */
  delete(key: number): boolean {
    let i = this.find(key);
    if (i < 0) return false;
    const t = this.#t;
    const mask = this.#mask;
    const shift = this.#shift;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const k = t[j * SLOT] ?? EMPTY;
      if (k === EMPTY) break;
      const h = home(k, shift);
      // Leave j where it is when its home lies cyclically in (i, j].
      if (i <= j ? h > i && h <= j : h > i || h <= j) continue;
      const a = i * SLOT;
      const b = j * SLOT;
      t[a] = k;
      t[a + 1] = t[b + 1] ?? 0;
      t[a + 2] = t[b + 2] ?? 0;
      this.#objs[i] = this.#objs[j];
      i = j;
    }
    t[i * SLOT] = EMPTY;
    this.#objs[i] = undefined;
    this.#size--;
    return true;
  }

  #grow(): void {
    const old = this.#t;
    const oldObjs = this.#objs;
    const slots = (this.#mask + 1) * 2;
    this.#t = new Float64Array(slots * SLOT).fill(EMPTY);
    this.#objs = new Array<O | undefined>(slots).fill(undefined);
    this.#mask = slots - 1;
    this.#shift = Math.clz32(slots) + 1;
    this.#size = 0;
    for (let b = 0; b < old.length; b += SLOT) {
      const k = old[b] ?? EMPTY;
      if (k !== EMPTY) this.add(k, old[b + 1] ?? 0, old[b + 2] ?? 0, oldObjs[b / SLOT]);
    }
  }
}

/**
 * A hash map from integer keys to values whose cost does not depend on its history.
 *
 * Why not a JS `Map`: V8's ordered hash tables leave a deleted entry in its bucket chain until the
 * next rehash, so a map that deletes and re-inserts the same keys over and over (an allocator
 * handing the same IOVA or page back and forth while 10^5 other keys stay live) makes every lookup
 * in that bucket walk an ever longer chain: per-operation cost grows with the number of cycles
 * already run. This table uses linear probing with backward-shift deletion, which leaves no
 * tombstones, so a lookup costs the same after a million cycles as after the first.
 */

const EMPTY = 0;
const FULL = 1;
const MIN_CAPACITY = 16;

/**
 * Home slot of an integer key: Fibonacci hashing (multiply by 2^32/phi, keep the top bits), which
 * spreads runs of consecutive keys (pfns) evenly. Keys above 2^32 fold their high half in first.
 */
function hashKey(key: number, shift: number): number {
  const lo = key > 0xffffffff ? (key >>> 0) ^ ((key / 4294967296) >>> 0) : key >>> 0;
  return Math.imul(lo, 0x9e3779b1) >>> shift;
}

/**
 * Map from non-negative safe integers (pfns, DMA addresses, indices) to values: `get`, `set`,
 * `delete` and `has` in O(1) expected time, flat in the number of past deletions.
 */
export class IntMap<V> {
  #keys: Float64Array;
  #state: Uint8Array;
  #values: (V | undefined)[];
  #mask: number;
  /** 32 - log2(capacity): hashKey keeps the top bits. */
  #shift: number;
  #size = 0;

  constructor(initialCapacity = MIN_CAPACITY) {
    let cap = MIN_CAPACITY;
    while (cap < initialCapacity * 2) cap *= 2;
    this.#keys = new Float64Array(cap);
    this.#state = new Uint8Array(cap);
    this.#values = new Array<V | undefined>(cap).fill(undefined);
    this.#mask = cap - 1;
    this.#shift = Math.clz32(cap) + 1;
  }

  /** Number of keys stored. */
  get size(): number {
    return this.#size;
  }

  /** The value stored under `key`, or undefined. */
  get(key: number): V | undefined {
    const keys = this.#keys;
    const state = this.#state;
    const mask = this.#mask;
    let i = hashKey(key, this.#shift);
    while (state[i] === FULL) {
      if (keys[i] === key) return this.#values[i];
      i = (i + 1) & mask;
    }
    return undefined;
  }

  /** True when `key` is stored. */
  has(key: number): boolean {
    return this.#find(key) >= 0;
  }

  /** Store `value` under `key` (replacing any previous value). */
  set(key: number, value: V): this {
    if (!Number.isSafeInteger(key) || key < 0) throw new RangeError(`IntMap key ${key} is not a non-negative safe integer`);
    if ((this.#size + 1) * 2 > this.#mask + 1) this.#grow();
    const keys = this.#keys;
    const state = this.#state;
    const mask = this.#mask;
    let i = hashKey(key, this.#shift);
    while (state[i] === FULL) {
      if (keys[i] === key) {
        this.#values[i] = value;
        return this;
      }
      i = (i + 1) & mask;
    }
    state[i] = FULL;
    keys[i] = key;
    this.#values[i] = value;
    this.#size++;
    return this;
  }

  /** Remove `key`; true when it was stored. Shifts the probe run back so no tombstone remains. */
  delete(key: number): boolean {
    let i = this.#find(key);
    if (i < 0) return false;
    const keys = this.#keys;
    const state = this.#state;
    const values = this.#values;
    const mask = this.#mask;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      if (state[j] !== FULL) break;
      const home = hashKey(keys[j] ?? 0, this.#shift);
      // Move j back into the hole at i unless its home lies cyclically in (i, j].
      const homeInRange = i <= j ? home > i && home <= j : home > i || home <= j;
      if (homeInRange) continue;
      keys[i] = keys[j] ?? 0;
      values[i] = values[j];
      i = j;
    }
    state[i] = EMPTY;
    values[i] = undefined;
    this.#size--;
    return true;
  }

  /** Remove every key. */
  clear(): void {
    this.#state.fill(EMPTY);
    this.#values.fill(undefined);
    this.#size = 0;
  }

  /** Stored keys (unordered). */
  *keys(): Generator<number> {
    const state = this.#state;
    for (let i = 0; i < state.length; i++) if (state[i] === FULL) yield this.#keys[i] ?? 0;
  }

  /** Stored values (unordered). */
  *values(): Generator<V> {
    const state = this.#state;
    for (let i = 0; i < state.length; i++) if (state[i] === FULL) yield this.#values[i] as V;
  }

  /** Stored [key, value] pairs (unordered). */
  *entries(): Generator<[number, V]> {
    const state = this.#state;
    for (let i = 0; i < state.length; i++) if (state[i] === FULL) yield [this.#keys[i] ?? 0, this.#values[i] as V];
  }

  #find(key: number): number {
    const keys = this.#keys;
    const state = this.#state;
    const mask = this.#mask;
    let i = hashKey(key, this.#shift);
    while (state[i] === FULL) {
      if (keys[i] === key) return i;
      i = (i + 1) & mask;
    }
    return -1;
  }

  #grow(): void {
    const oldKeys = this.#keys;
    const oldState = this.#state;
    const oldValues = this.#values;
    const cap = (this.#mask + 1) * 2;
    this.#keys = new Float64Array(cap);
    this.#state = new Uint8Array(cap);
    this.#values = new Array<V | undefined>(cap).fill(undefined);
    this.#mask = cap - 1;
    this.#shift = Math.clz32(cap) + 1;
    this.#size = 0;
    for (let i = 0; i < oldState.length; i++) if (oldState[i] === FULL) this.set(oldKeys[i] ?? 0, oldValues[i] as V);
  }
}

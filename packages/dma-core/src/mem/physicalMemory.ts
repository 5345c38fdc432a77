import { PAGE_SHIFT, PAGE_SIZE } from '../units/page.js';
import { IntMap } from '../util/intMap.js';

/** Copies at or below this many bytes use a plain loop: a `subarray` view would cost more than the copy. */
const SMALL_COPY = 64;
// Module-local copies for the hot path: V8 folds a module's own constants (a division by PAGE
// becomes an exact multiply), but re-reads and TDZ-checks an imported binding at every use.
const PAGE = PAGE_SIZE;
const PAGE_MASK = PAGE_SIZE - 1;
/** Slots of the small-read page cache (a power of two). */
const READ_CACHE_SLOTS = 64;

/**
 * Copy `len` (at most SMALL_COPY) bytes, both ranges already checked: four bytes per step, then
 * the rest (a byte loop costs about 1 ns per byte in V8; unrolled it is about a third less).
 */
function copySmall(src: Uint8Array, from: number, dst: Uint8Array, to: number, len: number): void {
  let i = 0;
  for (; i + 4 <= len; i += 4) {
    const s = from + i;
    const d = to + i;
    dst[d] = src[s] ?? 0;
    dst[d + 1] = src[s + 1] ?? 0;
    dst[d + 2] = src[s + 2] ?? 0;
    dst[d + 3] = src[s + 3] ?? 0;
  }
  for (; i < len; i++) dst[to + i] = src[from + i] ?? 0;
}

/**
 * Sparse physical memory with real bytes. Pages are materialised on first write, so a 1 TiB
 * physical space with a few touched pages costs almost nothing; an untouched page reads as zeros.
 * Addresses are checked against `limit` (the top of the physical address space), not against RAM
 * regions: region policy (RAM, BAR, MMIO) lives in the region map.
 */
export class PhysicalMemory {
  // IntMap, not Map: pages are freed and re-touched constantly, and a Map's deleted entries would
  // make later lookups slower with every cycle (see util/intMap.ts).
  readonly #pages = new IntMap<Uint8Array>();
  // Small reads first look in a direct-mapped cache of present pages (slot = pfn mod
  // READ_CACHE_SLOTS): a hit skips the hash probe. Dropping a page clears its slot.
  readonly #cachedPfn = new Float64Array(READ_CACHE_SLOTS).fill(-1);
  readonly #cachedPage: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(READ_CACHE_SLOTS).fill(undefined);
  /** One past the highest physical address. */
  readonly limit: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Number of pages that hold bytes (touched by a write). */
  get touchedPages(): number {
    return this.#pages.size;
  }

  /** The backing page if it exists (read path: never allocates). */
  peekPage(pfn: number): Uint8Array | undefined {
    return this.#pages.get(pfn);
  }

  /** The backing page, materialised on demand (write path). */
  page(pfn: number): Uint8Array {
    let p = this.#pages.get(pfn);
    if (p === undefined) {
      p = new Uint8Array(PAGE_SIZE);
      this.#pages.set(pfn, p);
    }
    return p;
  }

  /** Drop a page's bytes (it reads as zeros again). */
  discardPage(pfn: number): void {
    this.#uncache(pfn);
    this.#pages.delete(pfn);
  }

  #uncache(pfn: number): void {
    const slot = pfn & (READ_CACHE_SLOTS - 1);
    if (this.#cachedPfn[slot] === pfn) {
      this.#cachedPfn[slot] = -1;
      this.#cachedPage[slot] = undefined;
    }
  }

  #check(phys: number, len: number): void {
    if (!Number.isSafeInteger(phys) || phys < 0 || !Number.isSafeInteger(len) || len < 0 || phys + len > this.limit) {
      throw new RangeError(`physical access [${phys}, +${len}) outside [0, ${this.limit})`);
    }
  }

  /** Copy `len` bytes starting at `phys` into `out` (at `outOffset`). */
  readInto(phys: number, out: Uint8Array, outOffset = 0, len = out.length - outOffset): void {
    const off = phys & PAGE_MASK; // exact for a safe integer (tested below)
    // Hot path: a small access inside one page (a device reading a descriptor or a PRP entry),
    // every check of #readIntoChecked folded into one test.
    if (
      len > 0 &&
      len <= SMALL_COPY &&
      off + len <= PAGE &&
      Number.isSafeInteger(len) &&
      Number.isSafeInteger(phys) &&
      phys >= 0 &&
      phys + len <= this.limit &&
      outOffset >= 0 &&
      outOffset + len <= out.length
    ) {
      const pfn = (phys - off) / PAGE;
      const slot = pfn & (READ_CACHE_SLOTS - 1);
      let p: Uint8Array | undefined;
      if (this.#cachedPfn[slot] === pfn) p = this.#cachedPage[slot];
      else if ((p = this.#pages.get(pfn)) !== undefined) {
        this.#cachedPfn[slot] = pfn;
        this.#cachedPage[slot] = p;
      }
      if (p === undefined) out.fill(0, outOffset, outOffset + len);
      else copySmall(p, off, out, outOffset, len);
      return;
    }
    this.#readIntoChecked(phys, out, outOffset, len);
  }

  #readIntoChecked(phys: number, out: Uint8Array, outOffset: number, len: number): void {
    this.#check(phys, len);
    if (!(outOffset >= 0 && outOffset + len <= out.length)) throw new RangeError(`read of ${len} bytes does not fit the buffer at offset ${outOffset}`);
    const off0 = phys & (PAGE_SIZE - 1); // exact: phys is a safe integer
    if (len <= SMALL_COPY && off0 + len <= PAGE_SIZE) {
      const p = this.#pages.get((phys - off0) / PAGE_SIZE);
      if (p === undefined) out.fill(0, outOffset, outOffset + len);
      else for (let i = 0; i < len; i++) out[outOffset + i] = p[off0 + i] ?? 0;
      return;
    }
    let done = 0;
    while (done < len) {
      const addr = phys + done;
      const pfn = Math.floor(addr / PAGE_SIZE);
      const off = addr - pfn * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, len - done);
      const p = this.#pages.get(pfn);
      const at = outOffset + done;
      if (p === undefined) out.fill(0, at, at + n);
      else if (n <= SMALL_COPY) for (let i = 0; i < n; i++) out[at + i] = p[off + i] ?? 0;
      else out.set(p.subarray(off, off + n), at);
      done += n;
    }
  }

  /** Copies len bytes from physical memory (untouched pages read as zero). */
  read(phys: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.readInto(phys, out, 0, len);
    return out;
  }

  /**
   * Compare `len` bytes of physical memory at `phys` with `bytes[srcOffset, srcOffset + len)`
   * without copying them out (untouched pages compare as zeros): the offset of the first byte
   * that differs, or -1 when all match. The check an end-to-end test makes after a device wrote
   * a buffer (the kernel's `memcmp` over the direct map).
   */
  mismatch(phys: number, bytes: Uint8Array, srcOffset = 0, len = bytes.length - srcOffset): number {
    this.#check(phys, len);
    if (!Number.isSafeInteger(srcOffset) || srcOffset < 0 || srcOffset + len > bytes.length) {
      throw new RangeError(`mismatch: [${srcOffset}, +${len}) outside the ${bytes.length}-byte buffer`);
    }
    let done = 0;
    while (done < len) {
      const addr = phys + done;
      const pfn = Math.floor(addr / PAGE_SIZE);
      const off = addr - pfn * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, len - done);
      const p = this.#pages.get(pfn);
      for (let i = 0; i < n; i++) if ((p === undefined ? 0 : (p[off + i] ?? 0)) !== bytes[srcOffset + done + i]) return done + i;
      done += n;
    }
    return -1;
  }

  /** Copies bytes into physical memory at phys. */
  write(phys: number, bytes: Uint8Array, srcOffset = 0, len = bytes.length - srcOffset): void {
    this.#check(phys, len);
    if (!(srcOffset >= 0 && srcOffset + len <= bytes.length)) throw new RangeError(`write of ${len} bytes reaches past the source buffer at offset ${srcOffset}`);
    let done = 0;
    while (done < len) {
      const addr = phys + done;
      const pfn = Math.floor(addr / PAGE_SIZE);
      const off = addr - pfn * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, len - done);
      const p = this.page(pfn);
      const from = srcOffset + done;
      if (n <= SMALL_COPY) for (let i = 0; i < n; i++) p[off + i] = bytes[from + i] ?? 0;
      else p.set(bytes.subarray(from, from + n), off);
      done += n;
    }
  }

  /** Fills len bytes of physical memory with value (like memset on the direct map). */
  fill(phys: number, len: number, value: number): void {
    this.#check(phys, len);
    let done = 0;
    while (done < len) {
      const addr = phys + done;
      const pfn = Math.floor(addr / PAGE_SIZE);
      const off = addr - pfn * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, len - done);
      if (value === 0 && off === 0 && n === PAGE_SIZE) this.discardPage(pfn);
      else {
        const p = value === 0 ? this.#pages.get(pfn) : this.page(pfn);
        p?.fill(value, off, off + n);
      }
      done += n;
    }
  }

  /** memmove within physical memory (overlap-safe). */
  copy(dst: number, src: number, len: number): void {
    this.#check(src, len);
    this.#check(dst, len);
    if (len === 0) return;
    const tmp = this.read(src, len);
    this.write(dst, tmp);
  }
}

/**
 * Shift from a physical address to its page frame number (equals PAGE_SHIFT; kernel: PHYS_PFN() shifts
 * by PAGE_SHIFT).
 */
export const PFN_SHIFT = PAGE_SHIFT;

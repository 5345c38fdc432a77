// kernel: include/linux/pgtable.h (pte accessors), arch/x86 4-level paging (a 512-entry PTE table
// per 2 MiB), mm/memory.c (zap_pte_range: clear entries, queue the pages they held)
import { PAGE_SIZE } from '../units/page.js';
import { HPAGE_PMD_ORDER, PTE_HUGE, PTE_PRESENT, PTE_ZERO } from './constants.js';

/** Entries per PTE table (PTRS_PER_PTE). */
export const PTE_CHUNK = 512;

/** One PTE table: 512 entries = 2 MiB of virtual space. */
export class PteChunk {
  readonly pfn = new Float64Array(PTE_CHUNK);
  readonly flags = new Uint8Array(PTE_CHUNK);
  used = 0;
}

/**
 * The CPU page table of one address space: PTE tables in typed arrays, created on first use and
 * freed when their last entry is cleared, plus the RSS counter (present entries). The last table
 * touched is cached, so a fault or an access that stays inside 2 MiB does one map lookup at most.
 */
export class PageTable {
  readonly chunks = new Map<number, PteChunk>();
  /** Present entries (MM_ANONPAGES + MM_SHMEMPAGES + the zero page). */
  rss = 0;
  #lastChunkIdx = -1;
  #lastChunk: PteChunk | undefined;

  /** The PTE table covering virtual page `vpn`, created when `create` (pte_alloc). */
  chunkFor(vpn: number, create: boolean): PteChunk | undefined {
    const idx = Math.floor(vpn / PTE_CHUNK);
    if (idx === this.#lastChunkIdx) return this.#lastChunk;
    let c = this.chunks.get(idx);
    if (c === undefined) {
      if (!create) return undefined;
      c = new PteChunk();
      this.chunks.set(idx, c);
    }
    this.#lastChunkIdx = idx;
    this.#lastChunk = c;
    return c;
  }

  /** `set_pte_at`. */
  set(vpn: number, pfn: number, flags: number): void {
    const c = this.chunkFor(vpn, true);
    if (c === undefined) return;
    const s = vpn % PTE_CHUNK;
    const old = c.flags[s] ?? 0;
    if (old === 0) c.used++;
    if ((old & PTE_PRESENT) === 0 && (flags & PTE_PRESENT) !== 0) this.rss++;
    if ((old & PTE_PRESENT) !== 0 && (flags & PTE_PRESENT) === 0) this.rss--;
    c.pfn[s] = pfn;
    c.flags[s] = flags;
  }

  /** `pte_clear` on slot `s` of table `idx`; frees the table when it becomes empty. */
  clear(c: PteChunk, s: number, idx: number): void {
    const old = c.flags[s] ?? 0;
    if (old === 0) return;
    if ((old & PTE_PRESENT) !== 0) this.rss--;
    c.flags[s] = 0;
    c.pfn[s] = 0;
    c.used--;
    if (c.used === 0) {
      this.chunks.delete(idx);
      if (this.#lastChunkIdx === idx) {
        this.#lastChunkIdx = -1;
        this.#lastChunk = undefined;
      }
    }
  }

  /** Clear the entry of virtual page `vpn`, if any. */
  clearVpn(vpn: number): void {
    const ci = Math.floor(vpn / PTE_CHUNK);
    const c = this.chunks.get(ci);
    if (c !== undefined) this.clear(c, vpn % PTE_CHUNK, ci);
  }

  /** The pfn mapped at `addr` (device pfn for device-private entries), or -1. */
  walk(addr: number): number {
    const vpn = Math.floor(addr / PAGE_SIZE);
    const c = this.chunkFor(vpn, false);
    if (c === undefined) return -1;
    const s = vpn % PTE_CHUNK;
    return (c.flags[s] ?? 0) === 0 ? -1 : (c.pfn[s] ?? -1);
  }

  /** PTE_* bits at `addr` (0 when nothing is mapped). */
  flags(addr: number): number {
    const vpn = Math.floor(addr / PAGE_SIZE);
    const c = this.chunkFor(vpn, false);
    return c === undefined ? 0 : (c.flags[vpn % PTE_CHUNK] ?? 0);
  }

  /** Map the `n` pages of one unit (a page or a huge page) from `headPfn` on. */
  mapUnit(uvpn: number, n: number, headPfn: number, flags: number): void {
    for (let i = 0; i < n; i++) this.set(uvpn + i, headPfn + i, flags);
  }

  /** Set and clear PTE bits over the `n` pages of one unit. */
  protUnit(uvpn: number, n: number, set: number, clear: number): void {
    for (let i = 0; i < n; i++) {
      const vpn = uvpn + i;
      const c = this.chunkFor(vpn, false);
      if (c === undefined) continue;
      const s = vpn % PTE_CHUNK;
      c.flags[s] = ((c.flags[s] ?? 0) | set) & ~clear;
    }
  }

  /** Visit existing PTE slots in [start, end), skipping empty tables. */
  forEachIn(start: number, end: number, fn: (c: PteChunk, slot: number, vpn: number) => void): void {
    const v0 = start / PAGE_SIZE;
    const v1 = end / PAGE_SIZE;
    for (let ci = Math.floor(v0 / PTE_CHUNK); ci * PTE_CHUNK < v1; ci++) {
      const c = this.chunks.get(ci);
      if (c === undefined) continue;
      const lo = Math.max(v0, ci * PTE_CHUNK);
      const hi = Math.min(v1, (ci + 1) * PTE_CHUNK);
      for (let vpn = lo; vpn < hi; vpn++) {
        const s = vpn - ci * PTE_CHUNK;
        if ((c.flags[s] ?? 0) !== 0) fn(c, s, vpn);
      }
    }
  }

  /** Every non-empty entry in address order: callback gets (addr, pfn, flags). */
  forEach(fn: (addr: number, pfn: number, flags: number) => void): void {
    const idxs = [...this.chunks.keys()].sort((a, b) => a - b);
    for (const ci of idxs) {
      const c = this.chunks.get(ci);
      if (c === undefined) continue;
      for (let s = 0; s < PTE_CHUNK; s++) {
        const f = c.flags[s] ?? 0;
        if (f !== 0) fn((ci * PTE_CHUNK + s) * PAGE_SIZE, c.pfn[s] ?? 0, f);
      }
    }
  }

  /** Is any entry (present or not) set in [start, end)? */
  anyIn(start: number, end: number): boolean {
    const v0 = start / PAGE_SIZE;
    const v1 = end / PAGE_SIZE;
    const c0 = Math.floor(v0 / PTE_CHUNK);
    const c1 = Math.ceil(v1 / PTE_CHUNK);
    if (c1 - c0 > this.chunks.size) {
      for (const [ci, c] of this.chunks) if (ci >= c0 && ci < c1 && c.used > 0 && chunkHasIn(c, ci, v0, v1)) return true;
      return false;
    }
    for (let ci = c0; ci < c1; ci++) {
      const c = this.chunks.get(ci);
      if (c !== undefined && chunkHasIn(c, ci, v0, v1)) return true;
    }
    return false;
  }

  /**
   * `zap_pte_range`: clear the entries in [start, end) and push the physical address of each page
   * reference they held onto `putLater` (put after the notifier range ends, as tlb_finish_mmu).
   */
  zapRange(start: number, end: number, putLater: number[]): void {
    const v0 = start / PAGE_SIZE;
    const v1 = end / PAGE_SIZE;
    const c0 = Math.floor(v0 / PTE_CHUNK);
    const c1 = Math.ceil(v1 / PTE_CHUNK);
    const idxs: number[] = [];
    if (c1 - c0 > this.chunks.size) {
      for (const ci of this.chunks.keys()) if (ci >= c0 && ci < c1) idxs.push(ci);
    } else {
      for (let ci = c0; ci < c1; ci++) if (this.chunks.has(ci)) idxs.push(ci);
    }
    for (const ci of idxs) {
      const c = this.chunks.get(ci);
      if (c === undefined) continue;
      const lo = Math.max(v0, ci * PTE_CHUNK);
      const hi = Math.min(v1, (ci + 1) * PTE_CHUNK);
      for (let vpn = lo; vpn < hi; vpn++) {
        const s = vpn - ci * PTE_CHUNK;
        const f = c.flags[s] ?? 0;
        if (f === 0) continue;
        const pfn = c.pfn[s] ?? 0;
        // One reference per mapped unit: a PTE (a page, or a page of a PTE-mapped large folio:
        // put_page goes to the folio), or the head of a PMD / hugetlb mapping, present or
        // device-private alike. The zero pages hold none.
        if ((f & PTE_ZERO) === 0 && ((f & PTE_HUGE) === 0 || vpn % 2 ** HPAGE_PMD_ORDER === 0)) putLater.push(pfn * PAGE_SIZE);
        this.clear(c, s, ci);
      }
    }
  }
}

function chunkHasIn(c: PteChunk, ci: number, v0: number, v1: number): boolean {
  const lo = Math.max(v0, ci * PTE_CHUNK) - ci * PTE_CHUNK;
  const hi = Math.min(v1, (ci + 1) * PTE_CHUNK) - ci * PTE_CHUNK;
  for (let s = lo; s < hi; s++) if ((c.flags[s] ?? 0) !== 0) return true;
  return false;
}

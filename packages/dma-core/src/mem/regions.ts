// kernel: include/linux/ioport.h (resources), include/linux/memremap.h (dev_pagemap types)
/** What occupies a physical range: RAM, device-private memory, a PCI BAR usable for P2P, or MMIO. */
export type MemRegionKind = 'ram' | 'device-private' | 'p2p-bar' | 'mmio';

/** A range of the physical address space and what sits there. */
export interface MemRegion {
  readonly start: number;
  readonly size: number;
  readonly kind: MemRegionKind;
  readonly name: string;
  /** Owning device or driver name (BAR owner, device-private owner). */
  readonly owner?: string;
}

/** Sorted, non-overlapping region list with O(log n) lookup. */
export class RegionMap {
  readonly #regions: MemRegion[] = [];
  /** The region the last successful find returned (device accesses hit the same one in runs). */
  #last: MemRegion | undefined = undefined;

  /** Every region, sorted by start address. */
  get all(): readonly MemRegion[] {
    return this.#regions;
  }

  /** Adds a region; throws if it is malformed or overlaps another. */
  add(region: MemRegion): MemRegion {
    if (!Number.isSafeInteger(region.start) || !Number.isSafeInteger(region.size) || region.start < 0 || region.size <= 0) {
      throw new RangeError(`region ${region.name}: bad range start=${region.start} size=${region.size}`);
    }
    const end = region.start + region.size;
    for (const r of this.#regions) {
      if (region.start < r.start + r.size && r.start < end) {
        throw new RangeError(`region ${region.name} [0x${region.start.toString(16)}, 0x${end.toString(16)}) overlaps ${r.name}`);
      }
    }
    this.#regions.push(region);
    this.#regions.sort((a, b) => a.start - b.start);
    return region;
  }

  /** Removes a region previously added. */
  remove(region: MemRegion): void {
    const i = this.#regions.indexOf(region);
    if (i >= 0) this.#regions.splice(i, 1);
    if (this.#last === region) this.#last = undefined;
  }

  /** The region containing `phys`, or undefined. */
  find(phys: number): MemRegion | undefined {
    const last = this.#last;
    if (last !== undefined && phys >= last.start && phys < last.start + last.size) return last;
    return this.#search(phys);
  }

  /** Binary search; remembers the region it finds. */
  #search(phys: number): MemRegion | undefined {
    const rs = this.#regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = rs[mid];
      if (r === undefined) break;
      if (phys < r.start) hi = mid - 1;
      else if (phys >= r.start + r.size) lo = mid + 1;
      else {
        this.#last = r;
        return r;
      }
    }
    return undefined;
  }

  /** Is the whole range inside one region (optionally of a given kind)? */
  covers(phys: number, len: number, kind?: MemRegionKind): boolean {
    const r = this.find(phys);
    return r !== undefined && phys + len <= r.start + r.size && (kind === undefined || r.kind === kind);
  }
}

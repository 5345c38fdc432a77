// kernel: mm/page_alloc.c (buddy allocator), mm/memblock.c
// SKELETON (to be replaced by the mem room owner with a buddy allocator and per-page metadata).
import { PAGE_SIZE, SZ_4G, SZ_1G } from '../units/page.js';
import type { FaultInjection } from '../sim/faultInjection.js';
import { PhysicalMemory } from './physicalMemory.js';
import { RegionMap } from './regions.js';

export interface SystemMemoryOptions {
  ramBytes: number;
  /** Physical address width; the address space is [0, 2^physBits). */
  physBits: number;
  faults?: FaultInjection;
}

/** Physical memory + RAM layout + page allocator. */
export class SystemMemory extends PhysicalMemory {
  readonly regions = new RegionMap();
  readonly ramBytes: number;
  #next: number;
  readonly #faults: FaultInjection | undefined;

  constructor(opts: SystemMemoryOptions) {
    super(2 ** opts.physBits);
    this.ramBytes = opts.ramBytes;
    this.#faults = opts.faults;
    const low = Math.min(opts.ramBytes, 3 * SZ_1G);
    this.regions.add({ start: 0, size: low, kind: 'ram', name: 'System RAM' });
    if (opts.ramBytes > low) this.regions.add({ start: SZ_4G, size: opts.ramBytes - low, kind: 'ram', name: 'System RAM (high)' });
    this.#next = PAGE_SIZE;
  }

  /** Allocate 2^order contiguous pages; returns the physical address or 0 (NULL) on failure. */
  allocPages(order: number): number {
    if (this.#faults?.shouldFail('alloc_pages')) return 0;
    const size = PAGE_SIZE * 2 ** order;
    const phys = Math.ceil(this.#next / size) * size;
    if (!this.regions.covers(phys, size, 'ram')) return 0;
    this.#next = phys + size;
    return phys;
  }

  freePages(_phys: number, _order: number): void {
    // skeleton
  }

  /** Reserve a RAM range at boot (memblock), e.g. the swiotlb pool. Returns its start. */
  reserveLow(bytes: number, align: number): number {
    const phys = Math.ceil(this.#next / align) * align;
    this.#next = phys + bytes;
    return phys;
  }

  isRam(phys: number, len: number): boolean {
    return this.regions.covers(phys, len, 'ram');
  }

  isAccessible(phys: number, len: number): boolean {
    const r = this.regions.find(phys);
    return r !== undefined && r.kind !== 'mmio' && phys + len <= r.start + r.size;
  }

  ramTop(): number {
    let top = 0;
    for (const r of this.regions.all) if (r.kind === 'ram') top = Math.max(top, r.start + r.size);
    return top;
  }
}

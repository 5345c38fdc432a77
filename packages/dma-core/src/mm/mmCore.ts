// kernel: include/linux/mm_types.h (struct mm_struct: mm_mt, pgd, rss_stat,
// notifier_subscriptions), include/linux/mmu_notifier.h (the range start/end every change runs)
import type { SystemMemory } from '../mem/systemMemory.js';
import type { MmuNotifierEvent, MmuNotifierMm, MmuNotifierSubscriptions } from './mmuNotifier.js';
import { PageTable } from './pageTable.js';
import { VmaTree } from './vmaTree.js';

/**
 * The state of one `struct mm_struct` that the mm functions work on (mm/mmap.ts, memory.ts,
 * mremap.ts, mprotect.ts, fork.ts, uaccess.ts), as the kernel's functions take an `mm`.
 * `MmStruct` is its public face: it owns one and delegates to those functions.
 */
export class MmCore {
  readonly memory: SystemMemory;
  /** The VMA tree (`mm->mm_mt`). */
  readonly vmas = new VmaTree();
  /** The CPU page table (`mm->pgd`) with the RSS counter. */
  readonly pt = new PageTable();
  /** The MmStruct this is the state of: what notifier ranges carry as `range.mm`. */
  readonly mm: MmuNotifierMm;
  readonly subs: MmuNotifierSubscriptions;
  /**
   * A CPU fault on a device-private entry (`do_swap_page` -> `pgmap->ops->migrate_to_ram`):
   * returns 0 once the page is back in RAM, or a negative errno.
   */
  readonly migrateToRam: (addr: number, devicePfn: number) => number;
  exited = false;
  /** Heads to put_page after the notifier range ends (tlb_finish_mmu). Reused. */
  readonly putLater: number[] = [];

  constructor(memory: SystemMemory, mm: MmuNotifierMm, migrateToRam: (addr: number, devicePfn: number) => number) {
    this.memory = memory;
    this.mm = mm;
    this.subs = mm.notifierSubscriptions;
    this.migrateToRam = migrateToRam;
  }

  /** `mmu_notifier_invalidate_range_start` for a change this mm makes. */
  rangeStart(event: MmuNotifierEvent, start: number, end: number): void {
    const subs = this.subs;
    // Cheap path: nobody listens, only the counters move.
    if (subs.itree.length === 0) subs.activeInvalidateRanges++;
    else subs.invalidateStart({ mm: this.mm, start, end, event });
  }

  /** `mmu_notifier_invalidate_range_end`. */
  rangeEnd(): void {
    this.subs.invalidateEnd();
  }

  /** put_page every reference queued by zap_pte_range (`tlb_finish_mmu`). */
  flushPuts(): void {
    const q = this.putLater;
    for (const phys of q) this.memory.pagePut(phys);
    q.length = 0;
  }
}

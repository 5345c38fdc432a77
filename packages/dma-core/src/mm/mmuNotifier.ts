// kernel: mm/mmu_notifier.c, include/linux/mmu_notifier.h (interval notifiers, v5.5+)
import { Errno } from '../units/errno.js';

// kernel: include/linux/mmu_notifier.h enum mmu_notifier_event
/**
 * Munmap of the range. kernel: MMU_NOTIFY_UNMAP in include/linux/mmu_notifier.h (enum
 * mmu_notifier_event).
 */
export const MMU_NOTIFY_UNMAP = 0;
/**
 * Pages cleared, e.g. by madvise or truncation. kernel: MMU_NOTIFY_CLEAR in include/linux/mmu_notifier.h
 * (enum mmu_notifier_event).
 */
export const MMU_NOTIFY_CLEAR = 1;
/**
 * Protection of the whole VMA changes (mprotect). kernel: MMU_NOTIFY_PROTECTION_VMA in
 * include/linux/mmu_notifier.h (enum mmu_notifier_event).
 */
export const MMU_NOTIFY_PROTECTION_VMA = 2;
/**
 * Protection of individual pages changes. kernel: MMU_NOTIFY_PROTECTION_PAGE in
 * include/linux/mmu_notifier.h (enum mmu_notifier_event).
 */
export const MMU_NOTIFY_PROTECTION_PAGE = 3;
/**
 * Soft-dirty tracking clears the write bits. kernel: MMU_NOTIFY_SOFT_DIRTY in
 * include/linux/mmu_notifier.h (enum mmu_notifier_event).
 */
export const MMU_NOTIFY_SOFT_DIRTY = 4;
/**
 * The mm is going away (process exit). kernel: MMU_NOTIFY_RELEASE in include/linux/mmu_notifier.h (enum
 * mmu_notifier_event).
 */
export const MMU_NOTIFY_RELEASE = 5;
/**
 * Pages are migrating (migrate_vma). kernel: MMU_NOTIFY_MIGRATE in include/linux/mmu_notifier.h (enum
 * mmu_notifier_event).
 */
export const MMU_NOTIFY_MIGRATE = 6;
/**
 * Pages become device-exclusive (make_device_exclusive). kernel: MMU_NOTIFY_EXCLUSIVE in
 * include/linux/mmu_notifier.h (enum mmu_notifier_event).
 */
export const MMU_NOTIFY_EXCLUSIVE = 7;
/** Why a range is invalidated. kernel: enum mmu_notifier_event in include/linux/mmu_notifier.h. */
export type MmuNotifierEvent = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7;

const EVENT_NAMES = ['UNMAP', 'CLEAR', 'PROTECTION_VMA', 'PROTECTION_PAGE', 'SOFT_DIRTY', 'RELEASE', 'MIGRATE', 'EXCLUSIVE'];

/** Name of an MMU notifier event, e.g. 'MMU_NOTIFY_UNMAP'; dmakit helper for traces and messages. */
export function mmuNotifierEventName(ev: MmuNotifierEvent): string {
  return `MMU_NOTIFY_${EVENT_NAMES[ev] ?? String(ev)}`;
}

/**
 * `struct mm_struct` as the notifier code sees it: the members this file uses. Like the kernel's
 * forward declaration in mmu_notifier.h, it names the type without importing it: mm/mmStruct.ts
 * completes it to the whole `MmStruct` (declaration merging), so `range.mm` and `sub.mm` are the
 * MmStruct with every method, while this file stays below it.
 */
export interface MmuNotifierMm {
  /** True once the owning process has exited. */
  readonly exited: boolean;
  readonly notifierSubscriptions: MmuNotifierSubscriptions;
}

/** `struct mmu_notifier_range`: [start, end) of user virtual addresses. */
export interface MmuNotifierRange {
  readonly mm: MmuNotifierMm;
  readonly start: number;
  readonly end: number;
  readonly event: MmuNotifierEvent;
  /** For MMU_NOTIFY_MIGRATE/EXCLUSIVE: the pgmap owner that started it (lets a driver skip its own). */
  readonly owner?: unknown;
}

/**
 * Callbacks of an interval notifier. kernel: struct mmu_interval_notifier_ops in
 * include/linux/mmu_notifier.h.
 */
export interface MmuIntervalNotifierOps {
  /**
   * Called under the (modelled) invalidation: the driver must stop using the range and call
   * `mmuIntervalSetSeq(sub, curSeq)` under its own lock. Returns false only for non-blockable
   * ranges (the model's ranges are always blockable).
   */
  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean;
}

/**
 * `struct mmu_interval_notifier`. Drivers may subclass it to carry their state (container_of).
 * Fields are maintained by the mmuInterval* functions.
 */
export class MmuIntervalNotifier {
  mm: MmuNotifierMm | undefined;
  ops: MmuIntervalNotifierOps | undefined;
  /** First covered address. */
  start = 0;
  /** Last covered address (inclusive, as the kernel's interval tree). */
  last = 0;
  invalidateSeq = 0;
  /** In the mm's interval tree (RB_EMPTY_NODE is false). */
  inTree = false;
  /** On the mm's deferred list (insert or remove pending the end of an invalidation). */
  deferred = false;
  /** Model: removed while an invalidation was open; gets no more callbacks. */
  removed = false;
}

/** Per-mm notifier state (`struct mmu_notifier_subscriptions`). */
export class MmuNotifierSubscriptions {
  /** Even when idle, odd while an invalidation touching some interval is open (starts at 2). */
  invalidateSeq = 2;
  activeInvalidateRanges = 0;
  /** Interval tree, kept as an array sorted by start (O(log n) insert point, scan for overlaps). */
  readonly itree: MmuIntervalNotifier[] = [];
  readonly deferredList: MmuIntervalNotifier[] = [];

  /**
   * True while an invalidation is open (odd sequence). kernel: mn_itree_is_invalidating() in
   * mm/mmu_notifier.c.
   */
  isInvalidating(): boolean {
    return this.invalidateSeq % 2 === 1;
  }

  /**
   * Inserts a notifier into the mm's interval tree (kernel: interval_tree_insert() on
   * subscriptions->itree).
   */
  treeInsert(sub: MmuIntervalNotifier): void {
    const t = this.itree;
    let lo = 0;
    let hi = t.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((t[mid]?.start ?? 0) <= sub.start) lo = mid + 1;
      else hi = mid;
    }
    t.splice(lo, 0, sub);
    sub.inTree = true;
  }

  /**
   * Removes a notifier from the mm's interval tree (kernel: interval_tree_remove() on
   * subscriptions->itree).
   */
  treeRemove(sub: MmuIntervalNotifier): void {
    const i = this.itree.indexOf(sub);
    if (i >= 0) this.itree.splice(i, 1);
    sub.inTree = false;
  }

  /** True if some interval overlaps [start, last]. */
  overlaps(start: number, last: number): boolean {
    for (const s of this.itree) {
      if (s.start > last) break;
      if (s.last >= start) return true;
    }
    return false;
  }

  /**
   * `mn_itree_invalidate`: open the invalidation and call every overlapping interval. Intervals
   * inserted or removed by callbacks go through the deferred list, so the tree is stable here.
   */
  invalidateStart(range: MmuNotifierRange): void {
    this.activeInvalidateRanges++;
    const last = range.end - 1;
    if (range.end <= range.start || !this.overlaps(range.start, last)) return;
    this.invalidateSeq |= 1; // odd: invalidating
    const curSeq = this.invalidateSeq;
    const t = this.itree;
    for (let i = 0; i < t.length; i++) {
      const s = t[i];
      if (s === undefined || s.start > last) break;
      if (s.last < range.start || s.removed || s.ops === undefined) continue;
      // kernel: WARN_ON(!ret) for blockable ranges; nothing else to do.
      s.ops.invalidate(s, range, curSeq);
    }
  }

  /** `mn_itree_inv_end`: close one invalidation; the last one makes the seq even again. */
  invalidateEnd(): void {
    if (this.activeInvalidateRanges <= 0) {
      throw new MmuNotifierError('invalidate_range_end without a matching invalidate_range_start');
    }
    this.activeInvalidateRanges--;
    if (this.activeInvalidateRanges > 0 || !this.isInvalidating()) return;
    this.invalidateSeq++;
    for (const s of this.deferredList) {
      s.deferred = false;
      if (s.inTree) this.treeRemove(s);
      else this.treeInsert(s);
    }
    this.deferredList.length = 0;
  }
}

/** Misuse of the notifier API that the kernel would WARN/BUG on. */
export class MmuNotifierError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MmuNotifierError';
  }
}

/**
 * `mmu_interval_notifier_insert`: watch [start, start + length) of `mm`.
 * Returns 0, -EOVERFLOW (zero length or wrap), -EINVAL (already inserted) or -EFAULT (mm exited).
 */
export function mmuIntervalNotifierInsert(
  sub: MmuIntervalNotifier,
  mm: MmuNotifierMm,
  start: number,
  length: number,
  ops: MmuIntervalNotifierOps,
): number {
  if (sub.inTree || sub.deferred) return -Errno.EINVAL;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length <= 0 || !Number.isSafeInteger(start + length - 1)) {
    return -Errno.EOVERFLOW;
  }
  if (mm.exited) return -Errno.EFAULT;
  const subs = mm.notifierSubscriptions;
  sub.mm = mm;
  sub.ops = ops;
  sub.start = start;
  sub.last = start + length - 1;
  sub.removed = false;
  // The starting seq is odd and differs from the mm's: see mmu_interval_read_begin().
  if (subs.activeInvalidateRanges > 0) {
    if (subs.isInvalidating()) {
      sub.deferred = true;
      subs.deferredList.push(sub);
    } else {
      subs.invalidateSeq |= 1;
      subs.treeInsert(sub);
    }
    sub.invalidateSeq = subs.invalidateSeq;
  } else {
    sub.invalidateSeq = subs.invalidateSeq - 1;
    subs.treeInsert(sub);
  }
  return 0;
}

/**
 * `mmu_interval_notifier_remove`. The kernel sleeps until an open invalidation finishes; the model
 * cannot sleep, so the removal completes at the end of that invalidation and the subscription gets
 * no further callbacks from now on (the caller-visible guarantee the kernel's wait provides).
 */
export function mmuIntervalNotifierRemove(sub: MmuIntervalNotifier): void {
  const mm = sub.mm;
  if (mm === undefined) return;
  const subs = mm.notifierSubscriptions;
  if (subs.isInvalidating()) {
    if (!sub.inTree) {
      // Insert deferred and not yet processed: just drop it from the deferred list.
      const i = subs.deferredList.indexOf(sub);
      if (i >= 0) subs.deferredList.splice(i, 1);
      sub.deferred = false;
    } else if (!sub.deferred) {
      sub.deferred = true;
      subs.deferredList.push(sub);
    }
    sub.removed = true;
  } else {
    subs.treeRemove(sub);
  }
}

/**
 * `mmu_interval_read_begin`: start a read-side critical section (e.g. before walking the CPU page
 * table for a device mapping). The kernel sleeps while an invalidation of this interval is open;
 * the model cannot sleep, so it returns a sequence number that mmuIntervalReadRetry always rejects
 * (an even number: subscriptions only ever hold odd ones). The caller retries, as it would anyway.
 */
export function mmuIntervalReadBegin(sub: MmuIntervalNotifier): number {
  const mm = sub.mm;
  const seq = sub.invalidateSeq;
  if (mm !== undefined && seq === mm.notifierSubscriptions.invalidateSeq) return seq - 1;
  return seq;
}

/** `mmu_interval_read_retry`: under the driver lock, true if an invalidation ran since read_begin. */
export function mmuIntervalReadRetry(sub: MmuIntervalNotifier, seq: number): boolean {
  return sub.invalidateSeq !== seq;
}

/** `mmu_interval_check_retry`: lockless early check (same test, may be stale in the kernel). */
export function mmuIntervalCheckRetry(sub: MmuIntervalNotifier, seq: number): boolean {
  return sub.invalidateSeq !== seq;
}

/** `mmu_interval_set_seq`: called by the invalidate callback under the driver lock. */
export function mmuIntervalSetSeq(sub: MmuIntervalNotifier, curSeq: number): void {
  sub.invalidateSeq = curSeq;
}

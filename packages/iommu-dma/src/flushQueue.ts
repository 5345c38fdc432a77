// kernel: drivers/iommu/dma-iommu.c (struct iova_fq, queue_iova, fq_ring_free_locked, fq_flush_iotlb,
// fq_flush_timeout; IOVA_DEFAULT_FQ_SIZE/TIMEOUT, IOVA_SINGLE_FQ_SIZE/TIMEOUT)
import type { SimTimer } from '@dmakit/dma-core';

/** Per-CPU queues (256 entries, 10 ms) or one shared queue (32768 entries, 1000 ms). */
export type FlushQueueKind = 'percpu' | 'single';

/** Entries per per-CPU flush queue. kernel: IOVA_DEFAULT_FQ_SIZE in drivers/iommu/dma-iommu.c. */
export const IOVA_DEFAULT_FQ_SIZE = 256;
/** Per-CPU flush-queue timeout (ms). kernel: IOVA_DEFAULT_FQ_TIMEOUT in drivers/iommu/dma-iommu.c. */
export const IOVA_DEFAULT_FQ_TIMEOUT_MS = 10;
/** Entries of the single shared flush queue. kernel: IOVA_SINGLE_FQ_SIZE in drivers/iommu/dma-iommu.c. */
export const IOVA_SINGLE_FQ_SIZE = 32768;
/** Single flush-queue timeout (ms). kernel: IOVA_SINGLE_FQ_TIMEOUT in drivers/iommu/dma-iommu.c. */
export const IOVA_SINGLE_FQ_TIMEOUT_MS = 1000;

/** Flush-queue counters: queued and reclaimed IOVAs, flushes (timer and full), entries pending. */
export interface FlushQueueStats {
  queued: number;
  reclaimed: number;
  /** flush_iotlb_all calls made by the queue (timer + full queue). */
  flushes: number;
  fullFlushes: number;
  timerFlushes: number;
  /** Entries currently waiting. */
  pending: number;
}

/** What a flush queue calls back into: the domain's IOTLB flush and the per-entry reclaim. */
export interface FlushQueueHooks {
  /** The domain's flush_iotlb_all. */
  flushIotlbAll(): void;
  /** free_iova_fast + put_pages_list for one reclaimed entry. */
  reclaim(pfn: number, pages: number, freelist: number[] | null, cpu: number): void;
  /** Arms the flush timer (kernel: the fq_timer timer of the cookie). */
  schedule(delayNs: number, fn: () => void): SimTimer;
}

/** One ring (`struct iova_fq`): power-of-two size, one slot kept empty to tell full from empty. */
class FqRing {
  readonly pfn: Float64Array;
  readonly pages: Float64Array;
  readonly counter: Float64Array;
  readonly freelist: (number[] | null)[];
  readonly mask: number;
  head = 0;
  tail = 0;

  constructor(size: number) {
    this.pfn = new Float64Array(size);
    this.pages = new Float64Array(size);
    this.counter = new Float64Array(size);
    this.freelist = new Array<number[] | null>(size).fill(null);
    this.mask = size - 1;
  }

  get full(): boolean {
    return ((this.tail + 1) & this.mask) === this.head;
  }

  get length(): number {
    return (this.tail - this.head) & this.mask;
  }
}

/**
 * The lazy-invalidation flush queue of one DMA_FQ domain. An unmapped IOVA (and the page-table
 * pages its unmap freed) waits here, stamped with `fq_flush_start_cnt`, until a full IOTLB flush
 * that started after it was queued has finished (`counter < fq_flush_finish_cnt`).
 */
export class FlushQueue {
  readonly kind: FlushQueueKind;
  readonly size: number;
  readonly timeoutNs: number;
  readonly #rings: FqRing[];
  readonly #hooks: FlushQueueHooks;
  /** `fq_flush_start_cnt` / `fq_flush_finish_cnt`. */
  flushStartCnt = 0;
  flushFinishCnt = 0;
  #timer: SimTimer | null = null;
  readonly stats: FlushQueueStats = { queued: 0, reclaimed: 0, flushes: 0, fullFlushes: 0, timerFlushes: 0, pending: 0 };

  constructor(kind: FlushQueueKind, cpus: number, hooks: FlushQueueHooks, size?: number) {
    this.kind = kind;
    this.size = size ?? (kind === 'single' ? IOVA_SINGLE_FQ_SIZE : IOVA_DEFAULT_FQ_SIZE);
    if (!Number.isInteger(this.size) || this.size < 2 || (this.size & (this.size - 1)) !== 0) {
      throw new RangeError(`FlushQueue: size must be a power of two >= 2, got ${this.size}`);
    }
    this.timeoutNs = (kind === 'single' ? IOVA_SINGLE_FQ_TIMEOUT_MS : IOVA_DEFAULT_FQ_TIMEOUT_MS) * 1e6;
    const n = kind === 'single' ? 1 : cpus;
    this.#rings = [];
    for (let i = 0; i < n; i++) this.#rings.push(new FqRing(this.size));
    this.#hooks = hooks;
  }

  /** Is the timer armed (`fq_timer_on`)? */
  get timerOn(): boolean {
    return this.#timer !== null;
  }

  /** `queue_iova`. */
  queueIova(pfn: number, pages: number, freelist: number[], cpu: number): void {
    const ringIdx = this.kind === 'single' ? 0 : cpu % this.#rings.length;
    const ring = this.#rings[ringIdx];
    if (ring === undefined) return;
    // First drop what other flushes have already covered, to make "full" less likely.
    this.#ringFree(ring, ringIdx);
    if (ring.full) {
      this.stats.fullFlushes++;
      this.#flushIotlb();
      this.#ringFree(ring, ringIdx);
    }
    const idx = ring.tail;
    ring.tail = (ring.tail + 1) & ring.mask;
    ring.pfn[idx] = pfn;
    ring.pages[idx] = pages;
    ring.counter[idx] = this.flushStartCnt;
    ring.freelist[idx] = freelist.length > 0 ? freelist.splice(0) : null;
    this.stats.queued++;
    this.stats.pending++;
    if (this.#timer === null) this.#timer = this.#hooks.schedule(this.timeoutNs, () => {
        this.#timeout();
      });
  }

  /** `fq_flush_iotlb`: start_cnt++, flush_iotlb_all, finish_cnt++. */
  #flushIotlb(): void {
    this.flushStartCnt++;
    this.#hooks.flushIotlbAll();
    this.flushFinishCnt++;
    this.stats.flushes++;
  }

  /** `fq_ring_free_locked`: reclaim every entry whose flush has completed. */
  #ringFree(ring: FqRing, ringIdx: number): void {
    const finished = this.flushFinishCnt;
    while (ring.head !== ring.tail) {
      const i = ring.head;
      if ((ring.counter[i] ?? 0) >= finished) break;
      const fl = ring.freelist[i] ?? null;
      ring.freelist[i] = null;
      ring.head = (ring.head + 1) & ring.mask;
      this.stats.reclaimed++;
      this.stats.pending--;
      this.#hooks.reclaim(ring.pfn[i] ?? 0, ring.pages[i] ?? 0, fl, ringIdx);
    }
  }

  /** `fq_flush_timeout`: one full flush, then reclaim every CPU's ring. */
  #timeout(): void {
    this.#timer = null;
    this.stats.timerFlushes++;
    this.#flushIotlb();
    for (let i = 0; i < this.#rings.length; i++) {
      const r = this.#rings[i];
      if (r !== undefined) this.#ringFree(r, i);
    }
  }

  /** Flush and reclaim everything now (domain teardown, tests). */
  drain(): void {
    this.#timer?.cancel();
    this.#timer = null;
    this.#flushIotlb();
    for (let i = 0; i < this.#rings.length; i++) {
      const r = this.#rings[i];
      if (r !== undefined) this.#ringFree(r, i);
    }
  }

  /** Entries waiting per ring. */
  lengths(): number[] {
    return this.#rings.map((r) => r.length);
  }
}

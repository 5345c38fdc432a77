/**
 * A simulated-time cost model for IOMMU work on the CPU side. It is computed from the counters
 * (never from wall time), so it is deterministic and cannot be tuned by the run it measures.
 *
 * The defaults are order-of-magnitude inputs for an Intel VT-d / AMD-Vi class IOMMU with queued
 * invalidation, not values fitted to any benchmark result:
 * - an IOTLB invalidation is a descriptor posted to the invalidation queue plus a wait descriptor
 *   the CPU spins on; published measurements put it in the low microseconds;
 * - a PTE write is a cached store (tens of ns including the walk);
 * - an IOVA allocation from the per-CPU rcache is a magazine pop; one from the rbtree takes the
 *   domain lock and walks the tree (kernel: drivers/iommu/iova.c).
 * `iotlb_sync_map` costs nothing on a non-caching-mode IOMMU (the default here).
 *
 * Two terms price what lazy (flush-queue) invalidation does instead of a ranged invalidation, each
 * one a counted event, priced from documented figures:
 * - `fqQueueNs`, per IOVA queued on a flush queue (`IommuCostCounters.fqQueued`). kernel:
 *   `queue_iova` in drivers/iommu/dma-iommu.c runs, for every lazily unmapped range, an `smp_mb()`,
 *   `spin_lock_irqsave(&fq->lock)` / `spin_unlock_irqrestore` on the per-CPU `struct iova_fq`,
 *   `fq_ring_free_locked` (an `atomic64_read` of `fq_flush_finish_cnt`), `fq_ring_add`, an
 *   `atomic64_read` of `fq_flush_start_cnt` and the `fq_timer_on` test. On x86 that is an MFENCE
 *   (about 33 cycles), a LOCK CMPXCHG (about 18), PUSHF/CLI and POPF (about 20), and the plain loads
 *   and stores: about 90 cycles (Agner Fog, "Instruction tables", Skylake), 30 ns at 3 GHz.
 *   The reclaim of each entry is `free_iova_fast`, already priced by `iovaFreeNs`; the full flush a
 *   full ring or the 10 ms `fq_flush_timeout` timer issues is priced by `iotlbInvalidateFullNs`
 *   (both are counted in `iotlbInvalidationsFull`).
 * - `iotlbWalkNs`, per IOTLB miss that walks the I/O page table (`IommuCostCounters.iotlbWalks`).
 *   Strict unmap invalidates the range and a lazy flush drops the whole IOTLB, so an I/O through an
 *   IOVA reused from the rcache (or a fresh one) misses and the IOMMU walks the table: on VT-d with
 *   a 48-bit address width, four dependent reads of second-level paging entries (Intel VT-d
 *   specification, "Second-Stage Translation"; the model's page table has the same 4 levels), each
 *   a DRAM access of about 80 ns (idle load latency of a Xeon-class server, as Intel Memory Latency
 *   Checker reports it): 320 ns. Neugebauer et al. ("Understanding PCIe performance for end host
 *   networking", SIGCOMM 2018, IOMMU section) measure an added DMA latency of this order once the
 *   IOTLB's reach is exceeded. This model charges the walk to the I/O's service time (serial with the I/O, as for a single polled queue): an
 *   assumption that overstates it when deep queues overlap the walks of many I/Os.
 */
export interface IommuCostModel {
  /** An IOVA allocation served by the rbtree (rcache miss). */
  readonly iovaTreeAllocNs: number;
  /** An IOVA allocation served by the per-CPU rcache. */
  readonly iovaRcacheHitNs: number;
  /** An IOVA free (into the rcache or the tree). */
  readonly iovaFreeNs: number;
  /** One PTE written or cleared. */
  readonly pteWriteNs: number;
  /** One `iotlb_sync_map` (caching-mode IOMMUs flush on map; others do nothing). */
  readonly iotlbSyncMapNs: number;
  /** One ranged IOTLB invalidation, waited for (strict unmap, `dma_iova_unlink`). */
  readonly iotlbInvalidateRangeNs: number;
  /** One whole-domain IOTLB flush, waited for (flush queue). */
  readonly iotlbInvalidateFullNs: number;
  /** One IOVA queued on a flush queue (`queue_iova`: barrier, fq lock, counters, ring add). */
  readonly fqQueueNs: number;
  /** One IOTLB miss: the IOMMU's page-table walk before the DMA can proceed. */
  readonly iotlbWalkNs: number;
}

/**
 * Default simulated costs of IOMMU work in ns: order-of-magnitude inputs for a VT-d / AMD-Vi class IOMMU
 * (dmakit's cost model, not fitted to measurements).
 */
export const IOMMU_DEFAULT_COST_MODEL: IommuCostModel = Object.freeze({
  iovaTreeAllocNs: 250,
  iovaRcacheHitNs: 30,
  iovaFreeNs: 30,
  pteWriteNs: 20,
  iotlbSyncMapNs: 0,
  iotlbInvalidateRangeNs: 2000,
  iotlbInvalidateFullNs: 2000,
  fqQueueNs: 30,
  iotlbWalkNs: 320,
});

/** The counters the cost model reads (a subset of `IommuStats`). */
export interface IommuCostCounters {
  readonly iovaAllocs: number;
  readonly rcacheHits: number;
  readonly iovaFrees: number;
  readonly pteWrites: number;
  readonly iotlbSyncMaps: number;
  readonly iotlbInvalidationsRange: number;
  readonly iotlbInvalidationsFull: number;
  /** IOVAs queued on flush queues (lazy unmaps). */
  readonly fqQueued: number;
  /** IOTLB misses that walked the page table. */
  readonly iotlbWalks: number;
}

/** Simulated CPU nanoseconds the counted IOMMU work costs under `model`. */
export function iommuSimulatedNs(c: IommuCostCounters, model: IommuCostModel = IOMMU_DEFAULT_COST_MODEL): number {
  const treeAllocs = Math.max(0, c.iovaAllocs - c.rcacheHits);
  return (
    treeAllocs * model.iovaTreeAllocNs +
    c.rcacheHits * model.iovaRcacheHitNs +
    c.iovaFrees * model.iovaFreeNs +
    c.pteWrites * model.pteWriteNs +
    c.iotlbSyncMaps * model.iotlbSyncMapNs +
    c.iotlbInvalidationsRange * model.iotlbInvalidateRangeNs +
    c.iotlbInvalidationsFull * model.iotlbInvalidateFullNs +
    c.fqQueued * model.fqQueueNs +
    c.iotlbWalks * model.iotlbWalkNs
  );
}

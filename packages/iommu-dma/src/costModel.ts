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
    c.iotlbInvalidationsFull * model.iotlbInvalidateFullNs
  );
}

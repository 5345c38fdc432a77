// kernel: drivers/nvme/host/pci.c before 6.17 (nvme_map_data: sg_alloc_table_chained from a
// mempool, blk_rq_map_sg, dma_map_sgtable), block/blk-mq-dma.c (__blk_rq_map_sg)
// The legacy path kept for comparison: build a scatterlist for every request, then map it.
import { BlkStatus, blkRqNrPhysSegments, dmaMapSgtable, dmaUnmapSgtable, Errno, rqDmaDir, SgTable } from '@dmakit/dma-core';
import type { BlkRequest, Device } from '@dmakit/dma-core';
import { blkRqDma } from './dmaMap.js';
import type { BlkRqDma } from './dmaMap.js';
import { traceBlkRqDmaMap } from './trace.js';

/** A request mapped the legacy way. */
export interface BlkRqSgMapping {
  readonly sgt: SgTable;
  /** BLK_STS_OK, or why the mapping failed (the table is then unmapped). */
  readonly status: BlkStatus;
}

/**
 * Allocate an SgTable of nr_phys_segments entries (`sg_alloc_table_chained`), fill it from the
 * request's physical segments (`blk_rq_map_sg`) and `dma_map_sgtable` it. As nvme did: a
 * mapping error is BLK_STS_RESOURCE, except -EREMOTEIO (P2P not supported) = BLK_STS_TARGET.
 */
export function blkRqMapSgtable(req: BlkRequest, dev: Device, attrs = 0, mapper: BlkRqDma = blkRqDma): BlkRqSgMapping {
  const nsegs = Math.max(1, blkRqNrPhysSegments(req));
  if (dev.host.trace.enabled) traceBlkRqDmaMap(dev, req);
  const sgt = new SgTable(nsegs);
  const n = mapper.blkRqMapSg(req, sgt);
  if (n === 0) return { sgt, status: BlkStatus.IOERR };
  const rc = dmaMapSgtable(dev, sgt, rqDmaDir(req), attrs);
  if (rc < 0) return { sgt, status: rc === -Errno.EREMOTEIO ? BlkStatus.TARGET : BlkStatus.RESOURCE };
  if (sgt.nents === 0) return { sgt, status: BlkStatus.RESOURCE };
  return { sgt, status: BlkStatus.OK };
}

/** `dma_unmap_sgtable` of a legacy mapping. */
export function blkRqUnmapSgtable(req: BlkRequest, dev: Device, m: BlkRqSgMapping, attrs = 0): void {
  if (m.status !== BlkStatus.OK) return;
  dmaUnmapSgtable(dev, m.sgt, rqDmaDir(req), attrs);
}

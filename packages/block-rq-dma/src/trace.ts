// dmakit tracepoint (no kernel counterpart): block:blk_rq_dma_map, modeled on
// include/trace/events/block.h (block_rq_issue), fired where block/blk-mq-dma.c starts mapping a
// request's data.
import type { BlkPhysVec, BlkRequest, Device } from '@dmakit/dma-core';
import { blkMapIterCreate, blkMapIterNext, blkRqMapIterInit } from './mapIter.js';

/**
 * Fields of `block:blk_rq_dma_map`: the request's physical segments as blk-mq-dma iterates them
 * (bvecs merged and clipped by `blk_map_iter_next`), one `phys_addrs[i]`/`lengths[i]` pair each.
 */
export type BlkRqDmaMapTraceFields = {
  /** The request's tag (`rq->tag`). */
  readonly tag: number;
  /** First sector (`blk_rq_pos`). */
  readonly sector: number;
  /** Payload bytes (`blk_rq_bytes`). */
  readonly bytes: number;
  /** Physical address of each segment. */
  readonly phys_addrs: readonly number[];
  /** Length of each segment in bytes. */
  readonly lengths: readonly number[];
};

declare module '@dmakit/dma-core' {
  interface TraceEventMap {
    /**
     * dmakit's tracepoint (the kernel has none of this name), modeled on block:block_rq_issue:
     * a request's physical segments where its DMA mapping starts.
     */
    'block:blk_rq_dma_map': BlkRqDmaMapTraceFields;
  }
}

const traceVec: BlkPhysVec = { paddr: 0, len: 0 };

/**
 * Emits `block:blk_rq_dma_map` for `req` on `dev`'s trace. dmakit's tracepoint (no kernel
 * tracepoint of this name), modeled on `block:block_rq_issue` (include/trace/events/block.h).
 * Callers guard with `if (dev.host.trace.enabled)`: this walks the segments and allocates.
 */
export function traceBlkRqDmaMap(dev: Device, req: BlkRequest): void {
  const it = blkMapIterCreate();
  blkRqMapIterInit(req, it);
  const physAddrs: number[] = [];
  const lengths: number[] = [];
  let bytes = 0;
  while (blkMapIterNext(req, it, traceVec)) {
    physAddrs.push(traceVec.paddr);
    lengths.push(traceVec.len);
    bytes += traceVec.len;
  }
  dev.host.trace.emit('block:blk_rq_dma_map', dev.name, { tag: req.tag, sector: req.sector, bytes, phys_addrs: physAddrs, lengths });
}

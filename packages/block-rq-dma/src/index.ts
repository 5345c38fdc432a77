/**
 * @dmakit/block-rq-dma: bios, bvecs and block requests under queue limits, and request DMA
 * mapping without a scatterlist (kernel: block/blk-mq-dma.c, block/blk-merge.c, block/bio.c).
 * Implements the dma-core `BlkRqDmaMapper` contract (`blkRqDma`, `createBlkRqDmaMapper`).
 */
export { BIO_MAX_VECS, BioIntegrity, BlkBio, bioAddPage, bioAddPhys, bioAlloc, bioFromRanges, bioIntegrityAddPhys, bioIntegrityAlloc, bioReset, bioSplit, bvecIterAdvance } from './bio.js';
export {
  BLK_DEF_MAX_SECTORS_CAP,
  BLK_MAX_SEGMENT_SIZE,
  BLK_MAX_SEGMENTS,
  BLK_SAFE_MAX_SECTORS,
  BLK_SEG_BOUNDARY_MASK,
  bioIntegrityBytes,
  biovecPhysMergeable,
  blkValidateLimits,
  bvecGapToPrev,
  getMaxSegmentSize,
  nvmeQueueLimits,
  queueLimits,
} from './limits.js';
export { blkMapIterCreate, blkMapIterNext, blkRqIntegrityMapIterInit, blkRqMapIterInit } from './mapIter.js';
export { BlkRq, bioSplitIoAt, bioWillGap, blkRqAlloc, blkRqFromBio, blkRqInitFromBio, blkRqSetSpecialPayload, blkRqsFromBios, reqPhysGapMask } from './request.js';
export type { BlkBuildOptions, BlkBuildResult } from './request.js';
export type { SplitResult } from './request.js';
export { BlkRqDma, blkRqDma, createBlkRqDmaMapper } from './dmaMap.js';
export type { BlkRqDmaMapperOptions, BlkRqDmaStats, IovaEligibility } from './dmaMap.js';
export { blkRqMapSgtable, blkRqUnmapSgtable } from './legacy.js';
export type { BlkRqSgMapping } from './legacy.js';
export { traceBlkRqDmaMap } from './trace.js';
export type { BlkRqDmaMapTraceFields } from './trace.js';
export { blkStatusName, blkStatusToErrno, errnoToBlkStatus } from './status.js';

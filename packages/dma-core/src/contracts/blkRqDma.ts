// kernel: include/linux/blk-mq-dma.h, include/linux/blk_types.h, include/linux/bvec.h,
// include/linux/blk-mq.h, include/linux/blkdev.h (struct queue_limits), block/blk-mq-dma.c
// The request-mapping port a storage driver consumes (nvme-pci), implemented by
// @dmakit/block-rq-dma and wired by apps/demo. Only shapes and header-inline helpers live here.
import type { PciP2pdmaMapState, PciP2pdmaMapType } from '../bus/p2pdma.js';
import type { Device } from '../device/device.js';
import type { DmaIovaState } from '../dma/iovaState.js';
import type { SgTable } from '../dma/scatterlist.js';
import { DMA_FROM_DEVICE, DMA_TO_DEVICE } from '../units/direction.js';
import type { DmaDataDirection } from '../units/direction.js';

/** `blk_status_t` with the kernel's values (include/linux/blk_types.h, 6.17). */
export const BlkStatus = {
  OK: 0,
  NOTSUPP: 1,
  TIMEOUT: 2,
  NOSPC: 3,
  TRANSPORT: 4,
  TARGET: 5,
  RESV_CONFLICT: 6,
  MEDIUM: 7,
  PROTECTION: 8,
  RESOURCE: 9,
  IOERR: 10,
  DM_REQUEUE: 11,
  AGAIN: 12,
  DEV_RESOURCE: 13,
  ZONE_OPEN_RESOURCE: 14,
  ZONE_ACTIVE_RESOURCE: 15,
  OFFLINE: 16,
  DURATION_LIMIT: 17,
  /** Invalid size or alignment (also: P2P memory the device cannot reach). */
  INVAL: 19,
} as const;
export type BlkStatus = (typeof BlkStatus)[keyof typeof BlkStatus];

/** Success. kernel: BLK_STS_OK in include/linux/blk_types.h. */
export const BLK_STS_OK = BlkStatus.OK;
/** Out of a resource; retry later. kernel: BLK_STS_RESOURCE in include/linux/blk_types.h. */
export const BLK_STS_RESOURCE = BlkStatus.RESOURCE;
/** I/O error. kernel: BLK_STS_IOERR in include/linux/blk_types.h. */
export const BLK_STS_IOERR = BlkStatus.IOERR;
/**
 * Invalid request (size, alignment or unreachable P2P memory). kernel: BLK_STS_INVAL in
 * include/linux/blk_types.h.
 */
export const BLK_STS_INVAL = BlkStatus.INVAL;

/** `enum req_op` (the values used here). */
export const ReqOp = {
  READ: 0,
  WRITE: 1,
  FLUSH: 2,
  DISCARD: 3,
  WRITE_ZEROES: 9,
} as const;
export type ReqOp = (typeof ReqOp)[keyof typeof ReqOp];

/** `op_is_write(op)`: odd ops move data to the device. */
export function opIsWrite(op: number): boolean {
  return (op & 1) !== 0;
}

// cmd_flags bits (model numbering; the kernel's bit positions are not observable here).
/** `REQ_FUA`. */
export const REQ_FUA = 1 << 0;
/** `REQ_P2PDMA`: set by the iterator when the request was mapped with PCI bus addresses. */
export const REQ_P2PDMA = 1 << 1;
/** `REQ_INTEGRITY`: the bios carry a protection-information payload. */
export const REQ_INTEGRITY = 1 << 2;

// rq_flags bits.
/** `RQF_SPECIAL_PAYLOAD`: the data is `special_vec` (e.g. discard ranges), not the bios. */
export const RQF_SPECIAL_PAYLOAD = 1 << 0;

/** `bip_flags`: `BIP_P2P_DMA`, integrity mapped with bus addresses. */
export const BIP_P2P_DMA = 1 << 0;

/** log2 of a 512-byte sector. kernel: SECTOR_SHIFT in include/linux/blk_types.h. */
export const SECTOR_SHIFT = 9;
/** Bytes per sector. kernel: SECTOR_SIZE in include/linux/blk_types.h. */
export const SECTOR_SIZE = 512;

/** `struct phys_vec { phys_addr_t paddr; u32 len; }` (file-local in block/blk-mq-dma.c; dma-buf has its own PhysVec). */
export interface BlkPhysVec {
  paddr: number;
  len: number;
}

/**
 * A table of `struct bio_vec { bv_page, bv_len, bv_offset }` kept in typed arrays: `bvPage[i]` is
 * the physical address of the (first) page, `bvOffset[i]` the byte offset into it, `bvLen[i]` the
 * length. Multi-page bvecs are allowed (offset + len may exceed a page; the pages are contiguous).
 */
export interface BvecTable {
  readonly bvPage: Float64Array;
  readonly bvOffset: Uint32Array;
  readonly bvLen: Uint32Array;
  /** `bi_vcnt`: entries in use. */
  readonly vcnt: number;
}

/** `struct bvec_iter`: position in a bvec table (bvecs are shared between split bios). */
export interface BvecIter {
  /** `bi_sector`: device address in 512-byte sectors. */
  sector: number;
  /** `bi_size`: residual bytes. */
  size: number;
  /** `bi_idx`: current index into the table. */
  idx: number;
  /** `bi_bvec_done`: bytes completed in the current bvec. */
  bvecDone: number;
}

/** `struct bio_integrity_payload`: the metadata (PI) vectors of one bio. */
export interface BioIntegrityPayload extends BvecTable {
  /** `bip_iter`. */
  readonly iter: BvecIter;
  /** `bip_flags` (BIP_P2P_DMA). */
  flags: number;
}

/** `struct bio`: data vectors, position, and the chain link `bi_next`. */
export interface Bio extends BvecTable {
  readonly op: ReqOp;
  /** `bi_iter`. */
  readonly iter: BvecIter;
  /** `bi_next`: next bio of the request. */
  next: Bio | null;
  /** `bi_integrity`, or null. */
  readonly integrity: BioIntegrityPayload | null;
}

/** The `struct queue_limits` fields the merge, split and map code reads. */
export interface QueueLimits {
  /** `logical_block_size` in bytes (512 or 4096). */
  readonly logicalBlockSize: number;
  /** `max_hw_sectors`: the device's transfer limit in 512-byte sectors. */
  readonly maxHwSectors: number;
  /** `max_sectors`: the soft limit (<= maxHwSectors). */
  readonly maxSectors: number;
  /** `max_segments`: physical segments per request. */
  readonly maxSegments: number;
  /** `max_segment_size` in bytes. */
  readonly maxSegmentSize: number;
  /** `seg_boundary_mask`: a segment may not cross a (mask + 1) boundary. */
  readonly segBoundaryMask: number;
  /** `virt_boundary_mask`: interior segment boundaries must be (mask + 1)-aligned (0: none). */
  readonly virtBoundaryMask: number;
  /** `dma_alignment`: buffer address and length alignment mask. */
  readonly dmaAlignment: number;
  /** `max_integrity_segments` (0: no integrity support). */
  readonly maxIntegritySegments: number;
  /** `integrity.tuple_size`: PI bytes per integrity interval (0: no integrity). */
  readonly integrityTupleSize: number;
  /** `integrity.interval_exp`: log2 of the integrity interval (default: log2 logical block size). */
  readonly integrityIntervalExp: number;
}

/** `rq_end_io_fn`: called by the driver when it completes the request (`blk_mq_end_request`). */
export type BlkRqEndIo = (rq: BlkRequest, status: BlkStatus) => void;

/** `struct request`: the fields a storage driver and the DMA iterator use. */
export interface BlkRequest {
  /** Tag (index among in-flight requests of the queue). */
  readonly tag: number;
  readonly op: ReqOp;
  /** `cmd_flags` (REQ_*); the iterator sets REQ_P2PDMA. */
  cmdFlags: number;
  /** `rq_flags` (RQF_*). */
  readonly rqFlags: number;
  /** `__sector`. */
  readonly sector: number;
  /** `__data_len` in bytes. */
  readonly dataLen: number;
  /** First bio of the chain (null for a flush without data). */
  readonly bio: Bio | null;
  /** `nr_phys_segments`, counted when the request was built. */
  readonly nrPhysSegments: number;
  /** `nr_integrity_segments`. */
  readonly nrIntegritySegments: number;
  /** `q->limits`. */
  readonly limits: QueueLimits;
  /** `special_vec` when RQF_SPECIAL_PAYLOAD is set. */
  readonly specialVec: BlkPhysVec | null;
  /** `blk_mq_rq_to_pdu(rq)`: the driver's per-request state (nvme_iod). */
  pdu: unknown;
  /** `end_io`, or null. */
  endIo: BlkRqEndIo | null;
}

/** `rq_dma_dir(rq)`. */
export function rqDmaDir(rq: BlkRequest): DmaDataDirection {
  return opIsWrite(rq.op) ? DMA_TO_DEVICE : DMA_FROM_DEVICE;
}

/** `blk_rq_bytes(rq)`. */
export function blkRqBytes(rq: BlkRequest): number {
  return rq.dataLen;
}

/** `blk_rq_sectors(rq)`. */
export function blkRqSectors(rq: BlkRequest): number {
  return rq.dataLen >>> SECTOR_SHIFT;
}

/** `blk_rq_payload_bytes(rq)`: the special payload's length, else the data length. */
export function blkRqPayloadBytes(rq: BlkRequest): number {
  if ((rq.rqFlags & RQF_SPECIAL_PAYLOAD) !== 0) return rq.specialVec?.len ?? 0;
  return rq.dataLen;
}

/** `blk_rq_nr_phys_segments(rq)`: 1 for a special payload. */
export function blkRqNrPhysSegments(rq: BlkRequest): number {
  if ((rq.rqFlags & RQF_SPECIAL_PAYLOAD) !== 0) return 1;
  return rq.nrPhysSegments;
}

/** `blk_integrity_rq(rq)`. */
export function blkIntegrityRq(rq: BlkRequest): boolean {
  return (rq.cmdFlags & REQ_INTEGRITY) !== 0;
}

/** `struct blk_map_iter`: the private walk over a request's bvecs (data or integrity). */
export interface BlkMapIter {
  /** The bvec_iter of the table being walked. */
  readonly iter: BvecIter;
  bio: Bio | null;
  bvecs: BvecTable | null;
  isIntegrity: boolean;
}

/**
 * `struct blk_dma_iter`. `addr`/`len` are the current mapped segment; `status` is valid only after
 * a map call returned false (BLK_STS_OK then means "no more segments"). `p2pdma` and `iter` are
 * internal to the iterator. `attrs` is the model's record of the DMA attrs used for the
 * mappings (DMA_ATTR_MMIO for host-bridge P2P; a 2026-dev variant keeps it in the iter too).
 */
export interface BlkDmaIter {
  addr: number;
  len: number;
  status: BlkStatus;
  readonly p2pdma: PciP2pdmaMapState;
  readonly iter: BlkMapIter;
  attrs: number;
}

/** A zeroed iterator (a stack `struct blk_dma_iter` the caller need not initialise). */
export function blkDmaIterInit(): BlkDmaIter {
  return {
    addr: 0,
    len: 0,
    status: BlkStatus.OK,
    p2pdma: { mem: null, map: 0 },
    iter: { iter: { sector: 0, size: 0, idx: 0, bvecDone: 0 }, bio: null, bvecs: null, isIntegrity: false },
    attrs: 0,
  };
}

/**
 * The block layer's request DMA mapping, as a storage driver sees it (block/blk-mq-dma.c).
 * Map calls return true when a segment was mapped (iter.addr/len valid), false when there is no
 * more segment or on error (iter.status says which).
 */
export interface BlkRqDmaMapper {
  readonly name: string;
  /**
   * `blk_rq_dma_map_iter_start(req, dma_dev, state, iter)`: classify P2P from the first segment,
   * then either reserve one IOVA range for the whole payload and link every segment into it
   * (one segment returned, `blkRqDmaMapCoalesce(state)` true) or map the first segment directly.
   */
  blkRqDmaMapIterStart(req: BlkRequest, dmaDev: Device, state: DmaIovaState, iter: BlkDmaIter): boolean;
  /** `blk_rq_dma_map_iter_next(req, dma_dev, state, iter)`: map the next physical segment. */
  blkRqDmaMapIterNext(req: BlkRequest, dmaDev: Device, state: DmaIovaState, iter: BlkDmaIter): boolean;
  /** `blk_rq_dma_map_coalesce(state)` = `dma_use_iova(state)`: everything is in one segment. */
  blkRqDmaMapCoalesce(state: DmaIovaState): boolean;
  /**
   * `blk_rq_dma_unmap(req, dma_dev, state, mapped_len[, map])`: true when nothing per segment is
   * left to undo (bus-address P2P; IOVA destroyed here; or `!dma_need_unmap`), false when the
   * driver must unmap every segment it recorded. `map` is the [6.18+] P2P type argument
   * (default: derived from REQ_P2PDMA).
   */
  blkRqDmaUnmap(req: BlkRequest, dmaDev: Device, state: DmaIovaState, mappedLen: number, map?: PciP2pdmaMapType): boolean;
  /** `blk_rq_integrity_dma_map_iter_start`: the same for the metadata (PI) stream. */
  blkRqIntegrityDmaMapIterStart(req: BlkRequest, dmaDev: Device, state: DmaIovaState, iter: BlkDmaIter): boolean;
  /** `blk_rq_integrity_dma_map_iter_next` (the kernel's signature has no state). */
  blkRqIntegrityDmaMapIterNext(req: BlkRequest, dmaDev: Device, iter: BlkDmaIter): boolean;
  /** `blk_rq_integrity_dma_unmap(req, dma_dev, state, mapped_len)`. */
  blkRqIntegrityDmaUnmap(req: BlkRequest, dmaDev: Device, state: DmaIovaState, mappedLen: number): boolean;
  /**
   * Legacy `blk_rq_map_sg(rq, sgl)`: fill `sgt` (capacity >= nr_phys_segments) with the
   * request's physical segments, same merge rules; returns the entry count (0 on bad input).
   * The driver then calls `dmaMapSgtable`.
   */
  blkRqMapSg(req: BlkRequest, sgt: SgTable): number;
  /** `blk_rq_map_integrity_sg(rq, sgl)`. */
  blkRqMapIntegritySg(req: BlkRequest, sgt: SgTable): number;
  /** `req_bvec(rq)`: the first bvec of the request at its current position; false if none. */
  reqBvec(req: BlkRequest, out: BlkPhysVec): boolean;
}

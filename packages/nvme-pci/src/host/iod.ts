// Per-request driver state, the blk-mq pdu. kernel: drivers/nvme/host/pci.c (struct nvme_iod)
import { blkDmaIterInit, DmaIovaState, dmaUseIova } from '@dmakit/dma-core';
import type { BlkDmaIter, BlkRequest, SgTable } from '@dmakit/dma-core';
import { IOD_LEGACY_SG, NVME_MAX_NR_DESCRIPTORS, NVME_MAX_SEGS } from './constants.js';
import { NVME_SQE_SIZE } from '../controller/spec.js';

/** What an admin command's submitter is told: the completion status (NVMe, with DNR) and DW0. */
export type NvmeAdminDone = (status: number, result: number) => void;

/**
 * `struct nvme_iod`, one per tag, allocated once with the queue (blk-mq's pdu) and reused, so the
 * I/O path allocates nothing per request: the SQE, the IOVA state, the iterator, the descriptor
 * list pages and the per-segment DMA vectors all live here in typed arrays.
 */
export class NvmeIod {
  readonly tag: number;
  /** The command (`iod->cmd`), built here then copied into the SQ. */
  readonly cmd = new Uint8Array(NVME_SQE_SIZE);
  readonly cmdDv = new DataView(this.cmd.buffer);
  /** IOD_ABORTED, IOD_SMALL_DESCRIPTOR, IOD_SINGLE_SEGMENT. */
  flags = 0;
  /** List pages in `descriptors` (`nr_descriptors`). */
  nrDescriptors = 0;
  /** Bytes mapped and described so far; the unmap length (`total_len`). */
  totalLen = 0;
  /**
   * Bytes the block iterator mapped (sum of the segments it returned). Model addition: on a failure
   * midway the unmap length is this, not `totalLen` (bytes described so far), because the IOVA path
   * links the whole payload up front and must unlink all of it.
   */
  mappedLen = 0;
  /** `dma_state`: zero means per-segment mode. */
  readonly dmaState = new DmaIovaState();
  /** The block layer's iterator (a stack variable in the kernel, kept here to allocate nothing). */
  readonly iter: BlkDmaIter = blkDmaIterInit();
  /** CPU addresses of the PRP/SGL list pages (`descriptors[]`); DMA addresses are recovered from the SQE and chain slots. */
  readonly descriptors = new Float64Array(NVME_MAX_NR_DESCRIPTORS);
  /** Physical addresses of the same pages (the CPU writes the lists there). */
  readonly descriptorsPhys = new Float64Array(NVME_MAX_NR_DESCRIPTORS);
  /** `dma_vecs`: (addr, len) per mapped segment when per-segment unmap is needed (PRP path). */
  readonly dmaVecAddr = new Float64Array(NVME_MAX_SEGS);
  readonly dmaVecLen = new Float64Array(NVME_MAX_SEGS);
  /** `nr_dma_vecs`; -1 when `dma_vecs` is not allocated. */
  nrDmaVecs = -1;
  /** Legacy path: the request's scatterlist (`iod->sgt`, pre-6.17) and the next entry to consume. */
  sgt: SgTable | null = null;
  sgIdx = 0;

  /** The request in flight on this tag (I/O queues), or null. */
  req: BlkRequest | null = null;
  /** The admin command's completion callback (admin queue). */
  adminDone: NvmeAdminDone | null = null;
  /** Generation counter of the command id (`nvme_cid` / NVME_CID_GENCTR). */
  genctr = 0;
  /** True between submission and completion. */
  inflight = false;
  /** Simulated time when the request times out (blk-mq deadline). */
  deadline = 0;
  /** `nvme_req(req)->retries`. */
  retries = 0;
  /** The NVMe status of the last completion (`nvme_req(req)->status`). */
  status = 0;

  constructor(tag: number) {
    this.tag = tag;
  }

  /**
   * Bytes of this iod's arrays and structures that hold the current request's DMA mapping, read
   * from them: the legacy path's scatterlist entries (`origNents` entries of the table's arrays),
   * else the IOVA state when the two-step path linked the request, plus the `dma_vecs` entries
   * recorded for per-segment unmap. 0 for the single-segment fast path (the command holds it).
   */
  mappingMetadataBytes(): number {
    let bytes = 0;
    const sgt = this.sgt;
    if ((this.flags & IOD_LEGACY_SG) !== 0 && sgt !== null) bytes += sgt.origNents * sgt.entryBytes;
    else if (dmaUseIova(this.dmaState)) bytes += this.dmaState.byteLength;
    if (this.nrDmaVecs > 0) bytes += this.nrDmaVecs * (this.dmaVecAddr.BYTES_PER_ELEMENT + this.dmaVecLen.BYTES_PER_ELEMENT);
    return bytes;
  }

  /** `nvme_prep_rq`: reset the per-request fields before mapping. */
  reset(): void {
    this.flags = 0;
    this.nrDescriptors = 0;
    this.totalLen = 0;
    this.mappedLen = 0;
    this.nrDmaVecs = -1;
    this.dmaState.reset();
    this.sgIdx = 0;
    this.cmd.fill(0);
  }
}

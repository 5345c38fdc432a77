// One submission/completion queue pair in coherent DMA memory.
// kernel: drivers/nvme/host/pci.c (struct nvme_queue, nvme_alloc_queue, nvme_init_queue,
// nvme_sq_copy_cmd, nvme_write_sq_db, nvme_cqe_pending, nvme_update_cq_head, nvme_ring_cq_doorbell)
import type { DmaCoherentBuffer, Machine } from '@dmakit/dma-core';
import { NVME_CQE_SIZE, NVME_SQE_SIZE } from '../controller/spec.js';
import { nvmeDoorbellOffset } from '../controller/registers.js';
import { NvmeIod } from './iod.js';
import type { NvmeBarMapping } from './mmio.js';

export type { NvmeBar } from './mmio.js';

/** CPU address (the linear map is phys here) of byte `off` of a coherent buffer, contiguous or not. */
export function coherentCpu(buf: DmaCoherentBuffer, off: number): number {
  const pages = buf.pages;
  if (pages === undefined) return buf.cpuAddr + off;
  return (pages[Math.floor(off / 4096)] ?? 0) + (off % 4096);
}

/** `struct nvme_queue`. The queue memory is coherent; the CPU reads and writes it directly. */
export class NvmeQueue {
  readonly qid: number;
  /** Entries (`q_depth`); at most depth - 1 commands are outstanding. */
  readonly depth: number;
  readonly sq: DmaCoherentBuffer;
  readonly cq: DmaCoherentBuffer;
  readonly cqVector: number;
  readonly sqDb: number;
  readonly cqDb: number;
  sqTail = 0;
  /** Tail at the last doorbell write (`last_sq_tail`). */
  lastSqTail = 0;
  cqHead = 0;
  cqPhase = 1;
  /** Queue is created on the controller and accepts commands. */
  enabled = false;
  /** One iod per tag (blk-mq's static requests). */
  readonly iods: NvmeIod[];
  /** Free tag stack. */
  readonly #freeTags: Int32Array;
  #nrFree: number;
  readonly #cqe = new Uint8Array(NVME_CQE_SIZE);
  readonly cqeDv = new DataView(this.#cqe.buffer);

  constructor(qid: number, depth: number, sq: DmaCoherentBuffer, cq: DmaCoherentBuffer, cqVector: number, dstrd: number) {
    this.qid = qid;
    this.depth = depth;
    this.sq = sq;
    this.cq = cq;
    this.cqVector = cqVector;
    this.sqDb = nvmeDoorbellOffset(qid, false, dstrd);
    this.cqDb = nvmeDoorbellOffset(qid, true, dstrd);
    const tags = depth - 1;
    this.iods = Array.from({ length: tags }, (_, t) => new NvmeIod(t));
    this.#freeTags = new Int32Array(tags);
    for (let t = 0; t < tags; t++) this.#freeTags[t] = tags - 1 - t;
    this.#nrFree = tags;
  }

  /** Tags in use. */
  get busy(): number {
    return this.iods.length - this.#nrFree;
  }

  /** A free tag's iod (blk-mq tag allocation), or null when the queue is full. */
  getTag(): NvmeIod | null {
    if (this.#nrFree === 0) return null;
    const t = this.#freeTags[--this.#nrFree] ?? 0;
    return this.iods[t] ?? null;
  }

  /** Returns an iod's tag to the free list (blk-mq tag free). */
  putTag(iod: NvmeIod): void {
    this.#freeTags[this.#nrFree++] = iod.tag;
  }

  /** `nvme_init_queue`: indexes to zero, phase 1, completion entries cleared. */
  init(m: Machine): void {
    this.sqTail = 0;
    this.lastSqTail = 0;
    this.cqHead = 0;
    this.cqPhase = 1;
    zeroCoherent(m, this.cq, this.depth * NVME_CQE_SIZE);
  }

  /** `nvme_sq_copy_cmd`: copy the 64-byte command to the tail slot. */
  copyCmd(m: Machine, cmd: Uint8Array): void {
    m.memory.write(coherentCpu(this.sq, this.sqTail * NVME_SQE_SIZE), cmd, 0, NVME_SQE_SIZE);
    if (++this.sqTail === this.depth) this.sqTail = 0;
  }

  /** `nvme_write_sq_db`: ring the SQ tail doorbell if new entries were copied. */
  writeSqDb(regs: NvmeBarMapping): boolean {
    if (this.sqTail === this.lastSqTail) return false;
    regs.writel(this.sqDb, this.sqTail);
    this.lastSqTail = this.sqTail;
    return true;
  }

  /** `nvme_cqe_pending`: the entry at the head carries the current phase. Reads it into `cqeDv`. */
  cqePending(m: Machine): boolean {
    m.memory.readInto(coherentCpu(this.cq, this.cqHead * NVME_CQE_SIZE), this.#cqe, 0, NVME_CQE_SIZE);
    return (this.cqeDv.getUint16(14, true) & 1) === this.cqPhase;
  }

  /** `nvme_update_cq_head`. */
  updateCqHead(): void {
    if (++this.cqHead === this.depth) {
      this.cqHead = 0;
      this.cqPhase ^= 1;
    }
  }
}

function zeroCoherent(m: Machine, buf: DmaCoherentBuffer, len: number): void {
  if (buf.pages === undefined) {
    m.memory.fill(buf.cpuAddr, len, 0);
    return;
  }
  for (let off = 0; off < len; off += 4096) m.memory.fill(coherentCpu(buf, off), Math.min(4096, len - off), 0);
}

// Controller-side queue state (QEMU: hw/nvme/nvme.h NvmeSQueue / NvmeCQueue).
import type { SimTimer } from '@dmakit/dma-core';
import { NVME_SQE_SIZE } from './spec.js';

/** A submission queue as the controller sees it: base, size, its head and the host's tail. */
export class NvmeSubQueue {
  readonly qid: number;
  /** DMA address of entry 0 (physically contiguous queue). */
  readonly base: number;
  /** Entries (1's based). */
  readonly size: number;
  readonly cqid: number;
  /** Next entry the controller fetches. */
  head = 0;
  /** Last tail written to the doorbell. */
  tail = 0;
  /** Pending fetch event, if any. */
  fetchTimer: SimTimer | null = null;
  /** Bound once per queue, so a doorbell allocates no closure. */
  readonly fetchFn: () => void;

  constructor(qid: number, base: number, size: number, cqid: number, fetch: (sq: NvmeSubQueue) => void) {
    this.qid = qid;
    this.base = base;
    this.size = size;
    this.cqid = cqid;
    this.fetchFn = () => {
      fetch(this);
    };
  }

  /** Guest-physical address of submission queue entry i. */
  entryAddr(i: number): number {
    return this.base + i * NVME_SQE_SIZE;
  }
}

/** A completion the controller could not post yet because its CQ was full. */
export interface NvmeBackloggedCqe {
  readonly dw0: number;
  readonly sqid: number;
  readonly cid: number;
  readonly status: number;
}

/** A completion queue: base, size, the controller's tail and phase, the host's head. */
export class NvmeCompQueue {
  readonly qid: number;
  readonly base: number;
  readonly size: number;
  /** MSI-X vector (IV) and Interrupts Enabled (IEN). */
  readonly vector: number;
  readonly ien: boolean;
  /** Last head written to the doorbell. */
  head = 0;
  /** Next slot the controller writes. */
  tail = 0;
  /** Phase tag written with the next entry: 1 on the first pass, inverted at every wrap. */
  phase = 1;
  /** Submission queues bound to this CQ (a CQ with SQs cannot be deleted). */
  sqRefs = 0;
  /** Completions waiting for the host to free a slot (the spec forbids overwriting). */
  readonly backlog: NvmeBackloggedCqe[] = [];

  constructor(qid: number, base: number, size: number, vector: number, ien: boolean) {
    this.qid = qid;
    this.base = base;
    this.size = size;
    this.vector = vector;
    this.ien = ien;
  }

  /** Full when advancing the tail would make it equal the head. */
  get full(): boolean {
    return (this.tail + 1) % this.size === this.head;
  }
}

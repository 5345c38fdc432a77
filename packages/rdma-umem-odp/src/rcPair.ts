// kernel: include/rdma/ib_verbs.h (ib_alloc_pd, ib_create_cq, ib_create_qp, ib_post_send,
// ib_poll_cq), the RC connection an RDMA application sets up (rdma_cm, or ibv_modify_qp to RTS).
// Two mlx5 devices joined by one reliable-connected QP pair (a loopback fabric): the peer HCA
// reads and writes the local HCA's MRs with RDMA READ/WRITE, one work request at a time, run to
// completion on the simulation clock. What a test or a demo needs to have "a remote machine" move
// bytes into and out of a registered MR (an ODP MR, or a dma-buf MR over GPU memory or a BAR).
// The connection itself (PDs, CQs, QPs, connect, reconnect) is rcConnection.ts's RcEndpoint /
// RcConnection, the one model of an RC connection; this class adds RDMA READ/WRITE between MRs.
import type { MmStruct } from '@dmakit/dma-core';
import { IB_WR_RDMA_READ, IB_WR_RDMA_WRITE, IbWcStatus } from './constants.js';
import type { HcaQp } from './hca.js';
import type { HcaCq, IbSendWr } from './ibVerbs.js';
import type { IbPd, Mlx5IbDev } from './mlx5.js';
import { RcConnection, RcEndpoint } from './rcConnection.js';

/** What a work request needs of an MR: its I/O virtual address and its keys. */
export interface IbMrKeys {
  /** I/O virtual address of byte 0 of the MR. */
  readonly iova: number;
  /** Local key (for the SGEs of the QP that owns it). */
  readonly lkey: number;
  /** Remote key (for RDMA from the other end). */
  readonly rkey: number;
}

/**
 * An RC connection between `local` and `remote` (each with a PD in `mm` and one CQ). The remote
 * end initiates: `rdmaRead` pulls bytes of a local MR into a remote MR, `rdmaWrite` pushes bytes
 * of a remote MR into a local MR. An access error moves the remote QP to the error state (as on
 * hardware); `reconnect()` creates a fresh QP pair, as an application would.
 */
export class Mlx5RcPair {
  /** The local end (its MRs are read and written). */
  readonly localEnd: RcEndpoint;
  /** The remote end (it initiates every transfer). */
  readonly remoteEnd: RcEndpoint;
  /** The connection between them (the remote end is the requester). */
  readonly connection: RcConnection;
  #wrId = 1;

  /**
   * @param local the device whose MRs are read and written (the NIC)
   * @param remote the device that initiates every transfer (its peer)
   * @param mm the process both PDs belong to
   */
  constructor(
    readonly local: Mlx5IbDev,
    readonly remote: Mlx5IbDev,
    mm: MmStruct,
  ) {
    this.localEnd = new RcEndpoint(local, mm);
    this.remoteEnd = new RcEndpoint(remote, mm);
    this.connection = new RcConnection(this.remoteEnd, this.localEnd);
  }

  /** The local end's PD (register the local MRs in it). */
  get pdLocal(): IbPd {
    return this.localEnd.pd;
  }

  /** The remote end's PD (register the remote MRs in it). */
  get pdRemote(): IbPd {
    return this.remoteEnd.pd;
  }

  /** The local end's completion queue. */
  get cqLocal(): HcaCq {
    return this.localEnd.cq;
  }

  /** The remote end's completion queue (every transfer completes here). */
  get cqRemote(): HcaCq {
    return this.remoteEnd.cq;
  }

  /** The local end's QP. */
  get qpLocal(): HcaQp {
    return this.localEnd.qp;
  }

  /** The remote end's QP (the requester of every transfer). */
  get qpRemote(): HcaQp {
    return this.remoteEnd.qp;
  }

  /** Destroy both QPs (flushing anything queued) and connect a new pair, e.g. after an access error. */
  reconnect(): void {
    this.connection.reconnect();
  }

  /**
   * The remote HCA RDMA-READs `len` bytes at `srcOff` of `src` (a local MR) into `dstOff` of `dst`
   * (a remote MR) and the simulation runs until idle. The completion status
   * (IB_WC_WR_FLUSH_ERR if the request could not be posted).
   */
  rdmaRead(src: IbMrKeys, srcOff: number, dst: IbMrKeys, dstOff: number, len: number): IbWcStatus {
    return this.#post(IB_WR_RDMA_READ, dst, dstOff, src, srcOff, len);
  }

  /**
   * The remote HCA RDMA-WRITEs `len` bytes at `srcOff` of `src` (a remote MR) to `dstOff` of `dst`
   * (a local MR) and the simulation runs until idle. The completion status.
   */
  rdmaWrite(src: IbMrKeys, srcOff: number, dst: IbMrKeys, dstOff: number, len: number): IbWcStatus {
    return this.#post(IB_WR_RDMA_WRITE, src, srcOff, dst, dstOff, len);
  }

  /**
   * Post one RDMA work request on the remote QP (`mine` is the remote end's MR, `theirs` the local
   * one's) and run the simulation until idle. Unlike RcConnection.postAndWait, an error completion
   * leaves the QPs in the error state (the caller decides when to reconnect).
   */
  #post(opcode: typeof IB_WR_RDMA_READ | typeof IB_WR_RDMA_WRITE, mine: IbMrKeys, mineOff: number, theirs: IbMrKeys, theirsOff: number, len: number): IbWcStatus {
    const wrId = this.#wrId++;
    const wr: IbSendWr = { wrId, opcode, sgList: [{ addr: mine.iova + mineOff, length: len, lkey: mine.lkey }], remoteAddr: theirs.iova + theirsOff, rkey: theirs.rkey };
    const rc = this.remote.postSend(this.remoteEnd.qp, wr);
    if (rc !== 0) return IbWcStatus.IB_WC_WR_FLUSH_ERR;
    this.remote.scheduler.runUntilIdle();
    const wc = this.remote.pollCq(this.remoteEnd.cq).find((w) => w.wrId === wrId);
    return wc?.status ?? IbWcStatus.IB_WC_WR_FLUSH_ERR;
  }
}

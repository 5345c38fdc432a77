/**
 * The user-space side of RC traffic, as a verbs application (rdma-core's perftest `ib_write_bw`,
 * `rping`) drives it: one endpoint per HCA (a PD over the process's mm, one CQ, an RC QP), two
 * endpoints connected, one work request posted and its completion polled. When a work request
 * completes in error the QP is in ERR, and like an application the connection recreates both QPs
 * and connects them again (IBTA 10.3.1: a QP in the error state must go through RESET).
 * Not a kernel file: it composes `ib_post_send` / `ib_poll_cq` / `ib_destroy_qp` / `ib_create_qp`
 * of drivers/infiniband/core/verbs.c over the simulated HCA.
 */
import { Errno } from '@dmakit/dma-core';
import type { MmStruct } from '@dmakit/dma-core';
import { IbWcStatus } from './constants.js';
import type { HcaQp } from './hca.js';
import type { HcaCq, IbSendWr, IbWc } from './ibVerbs.js';
import { Hca } from './hca.js';
import type { IbPd, Mlx5IbDev } from './mlx5.js';

/** One side of an RC connection: an IB device, a PD over a process's address space, one CQ and an RC QP. */
export class RcEndpoint {
  /** The IB device the endpoint's resources live on. */
  readonly ib: Mlx5IbDev;
  /** The protection domain, over the process's address space. */
  readonly pd: IbPd;
  /** One CQ for both the send and the receive queue. */
  readonly cq: HcaCq;
  #qp: HcaQp;

  /** `ibv_alloc_pd` over `mm`, `ibv_create_cq`, `ibv_create_qp` (RC, both queues on that CQ). */
  constructor(ib: Mlx5IbDev, mm: MmStruct) {
    this.ib = ib;
    this.pd = ib.allocPd(mm);
    this.cq = ib.createCq();
    this.#qp = ib.createQp(this.pd, this.cq, this.cq);
  }

  /** The current RC QP (replaced when its connection reconnects). */
  get qp(): HcaQp {
    return this.#qp;
  }

  /** `ibv_destroy_qp`: flushes outstanding work requests and disconnects the peer. */
  destroyQp(): void {
    this.ib.hca.destroyQp(this.#qp);
  }

  /** A new RC QP on the same PD and CQ, in RESET (connect it). */
  createQp(): HcaQp {
    this.#qp = this.ib.createQp(this.pd, this.cq, this.cq);
    return this.#qp;
  }
}

/** How `RcConnection.postAndWait` steps the simulation while it waits for a completion. */
export interface RcWaitOptions {
  /** Simulated ns per step (the scheduler advances, not to idle: an IOMMU may keep timers). Default 1000. */
  readonly stepNs?: number;
  /** Steps before giving up with -ETIMEDOUT. Default 1,000,000. */
  readonly maxSteps?: number;
}

/** Two connected RC endpoints: the requester posts, the responder's memory is the target. */
export class RcConnection {
  /** The side that posts work requests (its CQ gets the completions). */
  readonly requester: RcEndpoint;
  /** The side whose MRs RDMA WRITE and READ target. */
  readonly responder: RcEndpoint;
  /** Times the QPs were recreated after an error. */
  reconnects = 0;

  /** Connect the two endpoints' QPs (RESET -> RTS on both). */
  constructor(requester: RcEndpoint, responder: RcEndpoint) {
    this.requester = requester;
    this.responder = responder;
    Hca.connect(requester.qp, responder.qp);
  }

  /** Destroy both QPs, create new ones and connect them: what an application does after an error completion. */
  reconnect(): void {
    this.requester.destroyQp();
    this.responder.destroyQp();
    this.requester.createQp();
    this.responder.createQp();
    Hca.connect(this.requester.qp, this.responder.qp);
    this.reconnects++;
  }

  /**
   * Post one work request on the requester and step the simulation until its completion arrives:
   * the completion, the negative errno of `ib_post_send` (-EINVAL: QP not ready or a malformed
   * request), or -ETIMEDOUT when no completion came within `maxSteps`. Anything but a successful
   * completion leaves the QPs recreated and connected again.
   */
  postAndWait(wr: IbSendWr, opts: RcWaitOptions = {}): IbWc | number {
    const stepNs = opts.stepNs ?? 1000;
    const maxSteps = opts.maxSteps ?? 1_000_000;
    if (!Number.isFinite(stepNs) || stepNs <= 0) throw new RangeError(`postAndWait: stepNs must be > 0, got ${stepNs}`);
    if (!Number.isSafeInteger(maxSteps) || maxSteps < 0) throw new RangeError(`postAndWait: maxSteps must be an integer >= 0, got ${maxSteps}`);
    const { ib, cq } = this.requester;
    const posted = ib.postSend(this.requester.qp, wr);
    if (posted < 0) {
      this.reconnect();
      return posted;
    }
    for (let step = 0; cq.depth === 0 && step < maxSteps; step++) ib.scheduler.advance(stepNs);
    const wc = cq.poll()[0];
    if (wc === undefined || wc.status !== IbWcStatus.IB_WC_SUCCESS) this.reconnect();
    return wc ?? -Errno.ETIMEDOUT;
  }

  /** Destroy both QPs (the connection cannot be used afterwards). */
  disconnect(): void {
    this.requester.destroyQp();
    this.responder.destroyQp();
  }
}

// kernel: include/rdma/ib_verbs.h (struct ib_sge, ib_send_wr, ib_recv_wr, ib_wc, ib_cq,
// enum ib_qp_state) and the work-request checks of the verbs layer.
// The verbs vocabulary the simulated HCA (hca.ts) and the mlx5 driver (mlx5.ts) share: work
// requests, work completions, completion queues. Plain data and shape checks, no device state.
import {
  IB_WC_RDMA_READ,
  IB_WC_RDMA_WRITE,
  IB_WC_SEND,
  IB_WR_RDMA_READ,
  IB_WR_RDMA_WRITE,
  IB_WR_SEND,
} from './constants.js';
import type { IbWcOpcode, IbWcStatus, IbWrOpcode } from './constants.js';

/** A scatter/gather element (`struct ib_sge`). */
export interface IbSge {
  readonly addr: number;
  readonly length: number;
  readonly lkey: number;
}

/** `struct ib_send_wr` (+ `ib_rdma_wr`). */
export interface IbSendWr {
  readonly wrId: number;
  readonly opcode: IbWrOpcode;
  readonly sgList: readonly IbSge[];
  readonly remoteAddr?: number;
  readonly rkey?: number;
}

/** `struct ib_recv_wr`. */
export interface IbRecvWr {
  readonly wrId: number;
  readonly sgList: readonly IbSge[];
}

/** `struct ib_wc`. */
export interface IbWc {
  readonly wrId: number;
  readonly status: IbWcStatus;
  readonly opcode: IbWcOpcode;
  readonly byteLen: number;
  readonly qpNum: number;
}

/**
 * A completion queue of the simulated HCA. dmakit's device model (kernel counterpart: struct ib_cq, mlx5
 * CQ).
 */
export class HcaCq {
  readonly cqn: number;
  readonly #wcs: IbWc[] = [];
  constructor(cqn: number) {
    this.cqn = cqn;
  }
  /** Queues a work completion (what the HCA writes as a CQE). */
  push(wc: IbWc): void {
    this.#wcs.push(wc);
  }
  /** `ib_poll_cq`: up to n completions, oldest first. */
  poll(n = Number.MAX_SAFE_INTEGER): IbWc[] {
    return this.#wcs.splice(0, n);
  }
  /** Completions waiting to be polled. */
  get depth(): number {
    return this.#wcs.length;
  }
}

/** Queue-pair state the model uses (kernel: enum ib_qp_state IB_QPS_RESET, IB_QPS_RTS, IB_QPS_ERR). */
export type HcaQpState = 'RESET' | 'RTS' | 'ERR';

/** Maximum SGEs per work request (`max_send_sge`). */
export const HCA_MAX_SGE = 30;

function isU(x: unknown): boolean {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** Shape check of a work request from the caller (bad input is -EINVAL, never a crash). Internal: not exported from the package. */
export function validWr(wr: unknown, send: boolean): boolean {
  if (typeof wr !== 'object' || wr === null) return false;
  const w = wr as { wrId?: unknown; opcode?: unknown; sgList?: unknown; remoteAddr?: unknown; rkey?: unknown };
  if (!Array.isArray(w.sgList) || w.sgList.length > HCA_MAX_SGE) return false;
  for (const sge of w.sgList as unknown[]) {
    if (typeof sge !== 'object' || sge === null) return false;
    const s = sge as { addr?: unknown; length?: unknown; lkey?: unknown };
    if (!isU(s.addr) || !isU(s.length) || !isU(s.lkey)) return false;
  }
  if (!send) return true;
  if (w.opcode !== IB_WR_RDMA_WRITE && w.opcode !== IB_WR_RDMA_READ && w.opcode !== IB_WR_SEND) return false;
  if (w.opcode !== IB_WR_SEND && (!isU(w.remoteAddr) || !isU(w.rkey))) return false;
  return true;
}

/** The completion opcode of a work request's opcode (`ib_wc.opcode`). Internal. */
export function wcOpcode(op: IbWrOpcode): IbWcOpcode {
  switch (op) {
    case IB_WR_RDMA_WRITE:
      return IB_WC_RDMA_WRITE;
    case IB_WR_RDMA_READ:
      return IB_WC_RDMA_READ;
    case IB_WR_SEND:
      return IB_WC_SEND;
  }
}

// kernel: drivers/infiniband/hw/mlx5/ (the hardware side the driver programs: mkeys, MTT/KSM
// translation, UMR, page-fault EQ and PAGE_FAULT_RESUME); the verbs types it executes (WRs, WCs,
// CQs) are in ibVerbs.ts (include/rdma/ib_verbs.h)
// A simulated mlx5-like HCA. It never holds a pointer into memory: every payload byte crosses
// its PCI function's DMA port (dev.dmaRead/dmaWrite, through the IOMMU when one is attached) at
// the DMA addresses its MTTs hold. An access to an MTT entry that is not present (or not
// writable, for a write) raises a page-fault event and stalls the work request until the driver
// resumes it.
import { DmaFaultError, Errno } from '@dmakit/dma-core';
import type { Device, EventScheduler } from '@dmakit/dma-core';
import {
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_REMOTE_READ,
  IB_ACCESS_REMOTE_WRITE,
  IB_WC_RECV,
  IB_WR_RDMA_READ,
  IB_WR_RDMA_WRITE,
  IB_WR_SEND,
  IbWcStatus,
  MLX5_IB_MTT_READ,
  MLX5_IB_MTT_WRITE,
  MLX5_KSM_PAGE_SHIFT,
} from './constants.js';
import { HcaCq, validWr, wcOpcode } from './ibVerbs.js';
import type { HcaQpState, IbRecvWr, IbSendWr, IbSge, IbWc } from './ibVerbs.js';

/** A page-fault EQE (the RDMA / WQE fault subtypes collapsed to what the model needs). */
export interface HcaPageFault {
  readonly token: number;
  /** The key the work request used (for implicit MRs: the parent's). */
  readonly mkey: number;
  readonly va: number;
  readonly bcnt: number;
  readonly write: boolean;
  /** Responder-side fault (the rkey of an incoming request). */
  readonly responder: boolean;
  readonly qpn: number;
}

/** One hardware memory key of the simulated HCA: MTT (direct) or KSM (indirect, 1 GiB entries of child keys). dmakit's device model of an mlx5 mkey. */
export class HcaMkey {
  readonly key: number;
  readonly pdn: number;
  readonly access: number;
  readonly iova: number;
  readonly length: number;
  readonly kind: 'mtt' | 'ksm';
  readonly pageShift: number;
  /** Offset of `iova` inside MTT entry 0 (the MR start is not aligned to the page size). */
  pageOffset = 0;
  /** MTT entries: dma_addr + MLX5_IB_MTT_READ + MLX5_IB_MTT_WRITE (dma addresses are aligned). */
  readonly mtt: Float64Array;
  /** KSM entries: child mkey per 1 GiB, 0 = the null mkey. */
  readonly ksm: Int32Array;
  enabled = false;
  destroyed = false;

  constructor(key: number, pdn: number, access: number, iova: number, length: number, kind: 'mtt' | 'ksm', pageShift: number, entries: number) {
    this.key = key;
    this.pdn = pdn;
    this.access = access;
    this.iova = iova;
    this.length = length;
    this.kind = kind;
    this.pageShift = pageShift;
    this.mtt = kind === 'mtt' ? new Float64Array(entries) : new Float64Array(0);
    this.ksm = kind === 'ksm' ? new Int32Array(entries) : new Int32Array(0);
  }
}

/**
 * An RC queue pair of the simulated HCA: send and receive queues that move bytes through the device DMA
 * port. dmakit's device model (kernel counterpart: struct ib_qp).
 */
export class HcaQp {
  readonly qpn: number;
  readonly hca: Hca;
  readonly pdn: number;
  readonly sendCq: HcaCq;
  readonly recvCq: HcaCq;
  readonly sq: IbSendWr[] = [];
  readonly rq: IbRecvWr[] = [];
  state: HcaQpState = 'RESET';
  peer: HcaQp | null = null;
  /** A step event is pending. */
  scheduled = false;
  /** Waiting for a page fault to be resolved (its token), or for the responder's receive. */
  waitingFault = -1;
  waitingRnr = false;
  /** Page faults the head WQE has taken. */
  headFaults = 0;
  /** Status to complete the head WQE with after an unresolved fault. */
  headError: IbWcStatus = IbWcStatus.IB_WC_SUCCESS;
  /** The pending fault is on the responder side. */
  faultResponder = false;

  constructor(qpn: number, hca: Hca, pdn: number, sendCq: HcaCq, recvCq: HcaCq) {
    this.qpn = qpn;
    this.hca = hca;
    this.pdn = pdn;
    this.sendCq = sendCq;
    this.recvCq = recvCq;
  }
}

/** Translated chunks of one side of a transfer (reused; no allocation per page). */
class XlateList {
  dma = new Float64Array(64);
  len = new Float64Array(64);
  va = new Float64Array(64);
  readonly mkeys: HcaMkey[] = [];
  n = 0;
  total = 0;
  reset(): void {
    this.n = 0;
    this.total = 0;
  }
  push(mk: HcaMkey, va: number, dma: number, len: number): void {
    if (this.n === this.dma.length) {
      this.dma = grow(this.dma);
      this.len = grow(this.len);
      this.va = grow(this.va);
    }
    this.dma[this.n] = dma;
    this.len[this.n] = len;
    this.va[this.n] = va;
    this.mkeys[this.n] = mk;
    this.n++;
    this.total += len;
  }
}

function grow(a: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> {
  const b = new Float64Array(a.length * 2);
  b.set(a);
  return b;
}

/** HCA counters: work requests, completions, bytes moved, page faults, UMR posts, DMA port faults. */
export interface HcaStats {
  wqes: number;
  completions: number;
  completionErrors: number;
  bytesMoved: number;
  pageFaults: number;
  pageFaultResumes: number;
  pageFaultErrors: number;
  umrPosts: number;
  umrEntries: number;
  /** A translation the DMA port (IOMMU) refused: a stale MTT entry the driver failed to zap. */
  dmaPortFaults: number;
}

/** Per-chunk observer of every DMA the HCA issues (tests check invariants through it). */
export type HcaAccessObserver = (mkey: HcaMkey, va: number, dma: number, len: number, write: boolean) => void;

/** Options of the simulated HCA: time per work request, page-fault latency, fault budget per WQE. */
export interface HcaOptions {
  /** Simulated time per work request (ns). Default 1000. */
  wqeNs?: number;
  /** Page-fault interrupt to handler latency (ns). Default 2000. */
  pageFaultNs?: number;
  /** Faults one WQE may take before it completes with IB_WC_RETRY_EXC_ERR. Default 64. */
  maxFaultsPerWqe?: number;
}

type XlateResult = 0 | { fault: true; mkey: number; va: number; bcnt: number; write: boolean } | { error: IbWcStatus };

/**
 * The simulated HCA: mkey table (MTT / KSM), UMR, a page-fault EQ, QPs that execute work
 * requests on the simulation scheduler, and CQs.
 */
export class Hca {
  readonly dev: Device;
  readonly scheduler: EventScheduler;
  readonly stats: HcaStats = { wqes: 0, completions: 0, completionErrors: 0, bytesMoved: 0, pageFaults: 0, pageFaultResumes: 0, pageFaultErrors: 0, umrPosts: 0, umrEntries: 0, dmaPortFaults: 0 };
  /** Page-fault EQ consumer (the driver's handler). */
  onPageFault: ((pf: HcaPageFault) => void) | undefined;
  onAccess: HcaAccessObserver | undefined;
  readonly #mkeys = new Map<number, HcaMkey>();
  readonly #qps = new Map<number, HcaQp>();
  readonly #waiters = new Map<number, HcaQp[]>();
  #nextMkeyIdx = 1;
  #nextQpn = 0x100;
  #nextCqn = 1;
  #nextToken = 1;
  #variant = 0;
  readonly #wqeNs: number;
  readonly #pfNs: number;
  readonly #maxFaults: number;
  readonly #local = new XlateList();
  readonly #remote = new XlateList();
  #buf = new Uint8Array(4096);

  constructor(dev: Device, scheduler: EventScheduler, opts: HcaOptions = {}) {
    this.dev = dev;
    this.scheduler = scheduler;
    this.#wqeNs = opts.wqeNs ?? 1000;
    this.#pfNs = opts.pageFaultNs ?? 2000;
    this.#maxFaults = opts.maxFaultsPerWqe ?? 64;
  }

  // ---- mkeys and UMR -------------------------------------------------------------------------

  /** CREATE_MKEY: a disabled key with zeroed entries. */
  createMkey(pdn: number, access: number, iova: number, length: number, kind: 'mtt' | 'ksm', pageShift: number, entries: number): HcaMkey {
    const key = this.#nextMkeyIdx++ * 256 + (this.#variant++ & 0xff);
    const mk = new HcaMkey(key, pdn, access, iova, length, kind, pageShift, entries);
    this.#mkeys.set(key, mk);
    return mk;
  }

  /** DESTROY_MKEY: disables the key and forgets it (firmware command of the simulated HCA). */
  destroyMkey(mk: HcaMkey): void {
    mk.destroyed = true;
    mk.enabled = false;
    this.#mkeys.delete(mk.key);
  }

  /** The memory key with this key value, if it exists. */
  lookupMkey(key: number): HcaMkey | undefined {
    return this.#mkeys.get(key);
  }

  /** Number of live memory keys. */
  get mkeyCount(): number {
    return this.#mkeys.size;
  }

  /**
   * A UMR WQE updating MTT entries [start, start + n) of `mk` from `src` (null: zap to zero),
   * optionally enabling the key. Entries are written atomically with respect to the QPs.
   */
  umrUpdateMtt(mk: HcaMkey, start: number, n: number, src: Float64Array | null, enable: boolean): void {
    this.stats.umrPosts++;
    this.stats.umrEntries += n;
    if (src === null) mk.mtt.fill(0, start, start + n);
    else mk.mtt.set(src.subarray(0, n), start);
    if (enable) mk.enabled = true;
  }

  /** A UMR WQE updating KSM entries (MLX5_IB_UPD_XLT_INDIRECT). */
  umrUpdateKsm(mk: HcaMkey, start: number, keys: ArrayLike<number>, enable: boolean): void {
    this.stats.umrPosts++;
    this.stats.umrEntries += keys.length;
    for (let i = 0; i < keys.length; i++) mk.ksm[start + i] = keys[i] ?? 0;
    if (enable) mk.enabled = true;
  }

  // ---- CQs and QPs -------------------------------------------------------------------------

  /** CREATE_CQ on the simulated HCA. */
  createCq(): HcaCq {
    return new HcaCq(this.#nextCqn++);
  }

  /** CREATE_QP (RC, state RESET) on the simulated HCA. */
  createQp(pdn: number, sendCq: HcaCq, recvCq: HcaCq): HcaQp {
    const qp = new HcaQp(this.#nextQpn++, this, pdn, sendCq, recvCq);
    this.#qps.set(qp.qpn, qp);
    return qp;
  }

  /** DESTROY_QP: flushes outstanding work requests and disconnects the peer. */
  destroyQp(qp: HcaQp): void {
    this.#flush(qp);
    qp.state = 'RESET';
    this.#qps.delete(qp.qpn);
    if (qp.peer !== null) qp.peer.peer = null;
    qp.peer = null;
  }

  /** Connect two RC QPs (RESET -> RTS on both), possibly on different HCAs: a loopback fabric. */
  static connect(a: HcaQp, b: HcaQp): void {
    a.peer = b;
    b.peer = a;
    a.state = 'RTS';
    b.state = 'RTS';
  }

  /** `ib_post_send`: 0, or -EINVAL when the QP is not in RTS or the work request is malformed. */
  postSend(qp: HcaQp, wr: IbSendWr): number {
    if (qp.state !== 'RTS') return -Errno.EINVAL;
    if (!validWr(wr, true)) return -Errno.EINVAL;
    qp.sq.push(wr);
    this.#kick(qp);
    return 0;
  }

  /** `ib_post_recv`: 0, or -EINVAL when the QP is in RESET. */
  postRecv(qp: HcaQp, wr: IbRecvWr): number {
    if (qp.state === 'RESET') return -Errno.EINVAL;
    if (!validWr(wr, false)) return -Errno.EINVAL;
    qp.rq.push(wr);
    const peer = qp.peer;
    if (peer?.waitingRnr === true) {
      peer.waitingRnr = false;
      peer.hca.#kick(peer);
    }
    return 0;
  }

  #kick(qp: HcaQp): void {
    if (qp.scheduled || qp.sq.length === 0) return;
    qp.scheduled = true;
    this.scheduler.schedule(this.#wqeNs, () => {
      this.#step(qp);
    });
  }

  /** Are any work requests still queued on this HCA's QPs? */
  get busy(): boolean {
    for (const qp of this.#qps.values()) if (qp.state === 'RTS' && qp.sq.length > 0) return true;
    return false;
  }

  // ---- page faults -------------------------------------------------------------------------

  #raisePageFault(qp: HcaQp, fault: { mkey: number; va: number; bcnt: number; write: boolean }, responder: boolean): void {
    const token = this.#nextToken++;
    this.stats.pageFaults++;
    const pf: HcaPageFault = { token, mkey: fault.mkey, va: fault.va, bcnt: fault.bcnt, write: fault.write, responder, qpn: qp.qpn };
    qp.waitingFault = token;
    const list = this.#waiters.get(token);
    if (list === undefined) this.#waiters.set(token, [qp]);
    else list.push(qp);
    this.scheduler.schedule(this.#pfNs, () => {
      const h = this.onPageFault;
      if (h === undefined) this.pageFaultResume(token, true);
      else h(pf);
    });
  }

  /** PAGE_FAULT_RESUME: the waiting WQEs retry (or complete in error when `error`). */
  pageFaultResume(token: number, error: boolean): void {
    this.stats.pageFaultResumes++;
    if (error) this.stats.pageFaultErrors++;
    const list = this.#waiters.get(token);
    this.#waiters.delete(token);
    if (list === undefined) return;
    for (const qp of list) {
      if (qp.waitingFault !== token) continue;
      qp.waitingFault = -1;
      if (error) qp.headError = qp.faultResponder ? IbWcStatus.IB_WC_REM_ACCESS_ERR : IbWcStatus.IB_WC_LOC_PROT_ERR;
      qp.hca.#kick(qp);
    }
  }

  // ---- translation -------------------------------------------------------------------------

  /**
   * Translate [va, va + len) through `key` for an access from a QP in `pdn`. Appends chunks to
   * `out`. Returns 0, a fault to raise, or the completion error (bad key, other PD, outside the
   * MR, missing access right).
   */
  #xlate(pdn: number, key: number, va: number, len: number, write: boolean, remote: boolean, out: XlateList): XlateResult {
    const err = remote ? IbWcStatus.IB_WC_REM_ACCESS_ERR : IbWcStatus.IB_WC_LOC_PROT_ERR;
    const mk = this.#mkeys.get(key);
    if (mk === undefined || !mk.enabled || mk.pdn !== pdn) return { error: err };
    if (!Number.isSafeInteger(va) || !Number.isSafeInteger(len) || len < 0 || va < mk.iova || va + len > mk.iova + mk.length) return { error: err };
    const need = remote ? (write ? IB_ACCESS_REMOTE_WRITE : IB_ACCESS_REMOTE_READ) : write ? IB_ACCESS_LOCAL_WRITE : 0;
    if ((mk.access & need) !== need) return { error: err };
    let done = 0;
    while (done < len) {
      const a = va + done;
      const n = Math.min(4096 - (a % 4096), len - done);
      let leaf = mk;
      let off = a - mk.iova + mk.pageOffset;
      if (mk.kind === 'ksm') {
        const ci = Math.floor(off / 2 ** MLX5_KSM_PAGE_SHIFT);
        const child = this.#mkeys.get(mk.ksm[ci] ?? 0);
        if (child === undefined || !child.enabled) return { fault: true, mkey: key, va: a, bcnt: va + len - a, write };
        leaf = child;
        off = a - child.iova;
      }
      const ps = 2 ** leaf.pageShift;
      const e = leaf.mtt[Math.floor(off / ps)] ?? 0;
      const bits = e % 4;
      if ((bits & MLX5_IB_MTT_READ) === 0 || (write && (bits & MLX5_IB_MTT_WRITE) === 0)) {
        // The EQE reports the first page that faulted and what is left of the access.
        return { fault: true, mkey: key, va: a, bcnt: va + len - a, write };
      }
      const dma = e - bits + (off % ps);
      out.push(leaf, a, dma, n);
      done += n;
    }
    return 0;
  }

  #xlateSges(pdn: number, sges: readonly IbSge[], write: boolean, out: XlateList): XlateResult {
    out.reset();
    for (const s of sges) {
      const r = this.#xlate(pdn, s.lkey, s.addr, s.length, write, false, out);
      if (r !== 0) return r;
    }
    return 0;
  }

  // ---- execution ---------------------------------------------------------------------------

  #step(qp: HcaQp): void {
    qp.scheduled = false;
    if (qp.state !== 'RTS' || qp.waitingFault >= 0 || qp.waitingRnr) return;
    const wr = qp.sq[0];
    if (wr === undefined) return;
    let status: IbWcStatus = qp.headError;
    let bytes = 0;
    if (status === IbWcStatus.IB_WC_SUCCESS) {
      const r = this.#execute(qp, wr);
      if (r === 'stalled') return;
      status = r.status;
      bytes = r.bytes;
    }
    qp.sq.shift();
    qp.headFaults = 0;
    qp.headError = IbWcStatus.IB_WC_SUCCESS;
    this.stats.wqes++;
    this.#complete(qp.sendCq, { wrId: wr.wrId, status, opcode: wcOpcode(wr.opcode), byteLen: bytes, qpNum: qp.qpn });
    if (status !== IbWcStatus.IB_WC_SUCCESS) {
      this.#toError(qp);
      return;
    }
    this.#kick(qp);
  }

  #complete(cq: HcaCq, wc: IbWc): void {
    this.stats.completions++;
    if (wc.status !== IbWcStatus.IB_WC_SUCCESS) this.stats.completionErrors++;
    cq.push(wc);
  }

  /** QP to the error state: everything queued is flushed with IB_WC_WR_FLUSH_ERR. */
  #toError(qp: HcaQp): void {
    qp.state = 'ERR';
    this.#flush(qp);
  }

  #flush(qp: HcaQp): void {
    for (const wr of qp.sq.splice(0)) this.#complete(qp.sendCq, { wrId: wr.wrId, status: IbWcStatus.IB_WC_WR_FLUSH_ERR, opcode: wcOpcode(wr.opcode), byteLen: 0, qpNum: qp.qpn });
    for (const wr of qp.rq.splice(0)) this.#complete(qp.recvCq, { wrId: wr.wrId, status: IbWcStatus.IB_WC_WR_FLUSH_ERR, opcode: IB_WC_RECV, byteLen: 0, qpNum: qp.qpn });
  }

  #fault(qp: HcaQp, hca: Hca, r: { mkey: number; va: number; bcnt: number; write: boolean }, responder: boolean): 'stalled' | { status: IbWcStatus; bytes: number } {
    qp.headFaults++;
    if (qp.headFaults > this.#maxFaults) return { status: IbWcStatus.IB_WC_RETRY_EXC_ERR, bytes: 0 };
    qp.faultResponder = responder;
    hca.#raisePageFault(qp, r, responder);
    return 'stalled';
  }

  #execute(qp: HcaQp, wr: IbSendWr): 'stalled' | { status: IbWcStatus; bytes: number } {
    const peer = qp.peer;
    if (peer === null || peer.state !== 'RTS') return { status: IbWcStatus.IB_WC_RETRY_EXC_ERR, bytes: 0 };
    const rhca = peer.hca;
    const local = this.#local;
    const remote = this.#remote;
    switch (wr.opcode) {
      case IB_WR_RDMA_WRITE:
      case IB_WR_RDMA_READ: {
        const isWrite = wr.opcode === IB_WR_RDMA_WRITE;
        // Local side: the requester reads its SGEs for a WRITE, writes them for a READ.
        const l = this.#xlateSges(qp.pdn, wr.sgList, !isWrite, local);
        if (l !== 0) return 'error' in l ? { status: l.error, bytes: 0 } : this.#fault(qp, this, l, false);
        remote.reset();
        const r = rhca.#xlate(peer.pdn, wr.rkey ?? 0, wr.remoteAddr ?? -1, local.total, isWrite, true, remote);
        if (r !== 0) return 'error' in r ? { status: r.error, bytes: 0 } : this.#fault(qp, rhca, r, true);
        const ok = isWrite ? this.#move(this, local, rhca, remote) : this.#move(rhca, remote, this, local);
        return ok ? { status: IbWcStatus.IB_WC_SUCCESS, bytes: local.total } : { status: isWrite ? IbWcStatus.IB_WC_REM_ACCESS_ERR : IbWcStatus.IB_WC_LOC_PROT_ERR, bytes: 0 };
      }
      case IB_WR_SEND: {
        const l = this.#xlateSges(qp.pdn, wr.sgList, false, local);
        if (l !== 0) return 'error' in l ? { status: l.error, bytes: 0 } : this.#fault(qp, this, l, false);
        const recv = peer.rq[0];
        if (recv === undefined) {
          // RNR NAK with infinite rnr_retry: wait for the responder to post a receive.
          qp.waitingRnr = true;
          return 'stalled';
        }
        const r = rhca.#xlateSges(peer.pdn, recv.sgList, true, remote);
        if (r !== 0) {
          if ('fault' in r) return this.#fault(qp, rhca, r, true);
          peer.rq.shift();
          rhca.#complete(peer.recvCq, { wrId: recv.wrId, status: IbWcStatus.IB_WC_LOC_PROT_ERR, opcode: IB_WC_RECV, byteLen: 0, qpNum: peer.qpn });
          rhca.#toError(peer);
          return { status: IbWcStatus.IB_WC_REM_ACCESS_ERR, bytes: 0 };
        }
        if (remote.total < local.total) {
          peer.rq.shift();
          rhca.#complete(peer.recvCq, { wrId: recv.wrId, status: IbWcStatus.IB_WC_LOC_LEN_ERR, opcode: IB_WC_RECV, byteLen: 0, qpNum: peer.qpn });
          rhca.#toError(peer);
          return { status: IbWcStatus.IB_WC_REM_INV_REQ_ERR, bytes: 0 };
        }
        const ok = this.#move(this, local, rhca, remote);
        peer.rq.shift();
        rhca.#complete(peer.recvCq, { wrId: recv.wrId, status: ok ? IbWcStatus.IB_WC_SUCCESS : IbWcStatus.IB_WC_LOC_PROT_ERR, opcode: IB_WC_RECV, byteLen: ok ? local.total : 0, qpNum: peer.qpn });
        return ok ? { status: IbWcStatus.IB_WC_SUCCESS, bytes: local.total } : { status: IbWcStatus.IB_WC_REM_ACCESS_ERR, bytes: 0 };
      }
    }
  }

  /**
   * Gather from `src` chunks through `from`'s DMA port, scatter into `dst` chunks through `to`'s.
   * False if a DMA port refused an access (an IOMMU fault: a stale or missing mapping).
   */
  #move(from: Hca, src: XlateList, to: Hca, dst: XlateList): boolean {
    const total = Math.min(src.total, dst.total);
    if (this.#buf.length < total) this.#buf = new Uint8Array(Math.max(total, this.#buf.length * 2));
    const buf = this.#buf;
    try {
      let off = 0;
      for (let i = 0; i < src.n && off < total; i++) {
        const n = Math.min(src.len[i] ?? 0, total - off);
        const dma = src.dma[i] ?? 0;
        const mk = src.mkeys[i];
        if (from.onAccess !== undefined && mk !== undefined) from.onAccess(mk, src.va[i] ?? 0, dma, n, false);
        from.dev.dmaReadInto(dma, buf, off, n);
        off += n;
      }
      off = 0;
      for (let i = 0; i < dst.n && off < total; i++) {
        const n = Math.min(dst.len[i] ?? 0, total - off);
        const dma = dst.dma[i] ?? 0;
        const mk = dst.mkeys[i];
        if (to.onAccess !== undefined && mk !== undefined) to.onAccess(mk, dst.va[i] ?? 0, dma, n, true);
        to.dev.dmaWrite(dma, buf, off, n);
        off += n;
      }
    } catch (e) {
      if (!(e instanceof DmaFaultError)) throw e;
      this.stats.dmaPortFaults++;
      return false;
    }
    this.stats.bytesMoved += total;
    return true;
  }
}

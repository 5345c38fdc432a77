// Completion: the interrupt handler, the CQ walk with the phase bit, the command id check, and the
// request's end (unmap, then complete, retry or fail), plus blk-mq's requeue list.
// kernel: drivers/nvme/host/pci.c [6.17] (nvme_irq, nvme_poll_cq, nvme_cqe_pending and
// nvme_update_cq_head through NvmeQueue, nvme_handle_cqe, nvme_pci_complete_rq,
// nvme_pci_unmap_rq), drivers/nvme/host/core.c (nvme_find_rq, nvme_complete_rq,
// nvme_decide_disposition, nvme_retry_req, nvme_error_status), block/blk-mq.c (the requeue work).
// There are no polled queues (`nvme_poll`): every queue has an interrupt vector, and `nvmePollCq`
// is also what the timeout handler and the teardown call to reap completions.
//
// Internal: `nvmeErrorStatus` is public (re-exported by host/index.ts); the rest is not.
import { BlkStatus } from '@dmakit/dma-core';
import type { BlkRequest } from '@dmakit/dma-core';
import { NvmeStatus, nvmeStatusCode, SQE } from '../controller/spec.js';
import { NVME_CID_TAG_BITS, NVME_CID_TAG_MASK, NVME_SC_HOST_ABORTED_CMD } from './constants.js';
import { nvmeLog } from './dev.js';
import type { NvmeDevState } from './dev.js';
import type { NvmeIod } from './iod.js';
import { nvmeHasData, nvmeUnmapData } from './mapData.js';
import type { NvmeQueue } from './queue.js';

const DNR = NvmeStatus.DNR;
/** BLK_MQ_RESOURCE_DELAY (3 ms): how long blk-mq waits before re-running a queue after RESOURCE. */
const BLK_MQ_RESOURCE_DELAY_NS = 3_000_000;
/** Model bound on RESOURCE re-dispatches of one requeued request (blk-mq would retry forever). */
const MAX_RESOURCE_REDISPATCH = 64;

/** `nvme_error_status`: an NVMe status to the block layer's status. */
export function nvmeErrorStatus(status: number): BlkStatus {
  switch (nvmeStatusCode(status)) {
    case NvmeStatus.SUCCESS:
      return BlkStatus.OK;
    case NvmeStatus.CAP_EXCEEDED:
      return BlkStatus.NOSPC;
    case NvmeStatus.LBA_RANGE:
    case NvmeStatus.NS_NOT_READY:
      return BlkStatus.TARGET;
    case NvmeStatus.INVALID_OPCODE:
    case NvmeStatus.INVALID_FIELD:
    case NvmeStatus.INVALID_NS:
      return BlkStatus.NOTSUPP;
    case NvmeStatus.DATA_XFER_ERROR:
    default:
      return BlkStatus.IOERR;
  }
}

/** `nvme_irq`: the vector's queue (vector = qid), its completions. */
export function nvmeIrq(d: NvmeDevState, vector: number): void {
  d.stats.interrupts++;
  const q = vector === 0 ? d.adminq : d.queues[vector];
  if (q) nvmePollCq(d, q);
}

/** `nvme_poll_cq`: consume every entry with the current phase, then ring the CQ head doorbell once. */
export function nvmePollCq(d: NvmeDevState, q: NvmeQueue): number {
  if (d.inIrq) return 0;
  d.inIrq = true;
  const m = d.machine;
  let found = 0;
  try {
    while (q.cqePending(m)) {
      const dv = q.cqeDv;
      const dw0 = dv.getUint32(0, true);
      const cid = dv.getUint16(12, true);
      const status = dv.getUint16(14, true) >> 1;
      q.updateCqHead();
      found++;
      nvmeHandleCqe(d, q, cid, status, dw0);
    }
  } finally {
    d.inIrq = false;
  }
  if (found > 0) {
    d.regs.writel(q.cqDb, q.cqHead);
    d.stats.cqDoorbells++;
    if (d.requeue.length > 0 && d.state === 'live') nvmeScheduleKick(d, 0);
  }
  return found;
}

/** `nvme_handle_cqe` + `nvme_find_rq`: the command id's generation must match the tag's. */
export function nvmeHandleCqe(d: NvmeDevState, q: NvmeQueue, cid: number, status: number, dw0: number): void {
  const iod = q.iods[cid & NVME_CID_TAG_MASK];
  if (iod?.inflight !== true || iod.genctr !== cid >> NVME_CID_TAG_BITS) {
    d.stats.spuriousCompletions++;
    nvmeLog(d, `invalid id ${cid} completed on queue ${q.qid}`);
    return;
  }
  nvmeFinishIod(d, q, iod, status, dw0);
}

/** A command is over (completed by the controller, or cancelled by the host). */
export function nvmeFinishIod(d: NvmeDevState, q: NvmeQueue, iod: NvmeIod, status: number, dw0: number): void {
  iod.inflight = false;
  d.inflight--;
  const trace = d.machine.trace;
  if (trace.enabled) {
    // kernel: drivers/nvme/host/trace.h (nvme_complete_rq)
    trace.emit('nvme:nvme_complete_rq', d.device.name, { qid: q.qid, cid: iod.cmdDv.getUint16(SQE.CID, true), result: dw0, retries: iod.retries, status });
  }
  if (d.inflight === 0 && d.timeoutTimer !== null) {
    d.timeoutTimer.cancel();
    d.timeoutTimer = null;
  }
  if (q.qid === 0) {
    const done = iod.adminDone;
    iod.adminDone = null;
    q.putTag(iod);
    // Admin commands are REQ_FAILFAST_DRIVER: never retried.
    done?.(status, dw0);
    return;
  }
  const req = iod.req;
  iod.req = null;
  iod.status = status;
  if (req === null) {
    q.putTag(iod);
    return;
  }
  // nvme_pci_complete_rq → nvme_pci_unmap_rq
  if (nvmeHasData(req)) nvmeUnmapData(d, req, iod);
  req.pdu = null;
  const retries = iod.retries;
  q.putTag(iod);
  // nvme_complete_rq → nvme_decide_disposition
  if (status === 0) {
    nvmeEndRequest(d, req, BlkStatus.OK);
    return;
  }
  const dying = d.state === 'deleting' || d.state === 'dead';
  if ((status & DNR) !== 0 || retries >= d.opts.maxRetries || dying) {
    nvmeEndRequest(d, req, nvmeStatusCode(status) === NVME_SC_HOST_ABORTED_CMD ? BlkStatus.IOERR : nvmeErrorStatus(status));
    return;
  }
  // nvme_retry_req: requeue and kick the requeue list.
  d.retriesOf.set(req, retries + 1);
  d.stats.retries++;
  d.stats.requeued++;
  d.requeue.push(req);
  if (d.state === 'live') nvmeScheduleKick(d, 0);
}

/** `blk_mq_end_request` through `req.endIo`, with the driver's counters. */
export function nvmeEndRequest(d: NvmeDevState, req: BlkRequest, status: BlkStatus): void {
  if (status === BlkStatus.OK) d.stats.completedOk++;
  else d.stats.completedError++;
  d.retriesOf.delete(req);
  d.redispatchOf.delete(req);
  req.endIo?.(req, status);
}

/** `blk_mq_kick_requeue_list` / `blk_mq_delay_kick_requeue_list`. */
export function nvmeScheduleKick(d: NvmeDevState, delayNs: number): void {
  if (d.kickTimer === null) d.kickTimer = d.machine.schedule(delayNs, d.kickFn);
}

/** `blk_mq_requeue_work`: run the requeue list through `queueRq` again. */
export function nvmeRunRequeue(d: NvmeDevState): void {
  if (d.state !== 'live') return;
  const list = d.requeue.splice(0);
  let blocked = false;
  for (let i = 0; i < list.length; i++) {
    const req = list[i];
    if (req === undefined) continue;
    if (blocked) {
      d.requeue.push(req);
      continue;
    }
    const st = d.queueRq(req, 0, false);
    if (st === BlkStatus.OK) continue;
    if (st === BlkStatus.RESOURCE) {
      const n = (d.redispatchOf.get(req) ?? 0) + 1;
      if (n > MAX_RESOURCE_REDISPATCH) {
        nvmeEndRequest(d, req, BlkStatus.RESOURCE);
        continue;
      }
      d.redispatchOf.set(req, n);
      d.requeue.push(req);
      blocked = true;
      continue;
    }
    nvmeEndRequest(d, req, st);
  }
  d.commitRqs();
  // Nothing in flight to trigger a re-run: blk-mq re-runs the queue after a delay.
  if (d.requeue.length > 0 && d.inflight === 0) nvmeScheduleKick(d, BLK_MQ_RESOURCE_DELAY_NS);
}

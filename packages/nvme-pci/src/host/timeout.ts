// Timeouts: blk-mq's timeout scan and `nvme_timeout` (poll the CQ for a lost interrupt, then Abort,
// then reset the controller).
// kernel: drivers/nvme/host/pci.c [6.17] (nvme_timeout, nvme_should_reset, nvme_poll_irqdisable,
// abort_endio), block/blk-mq.c (blk_mq_timeout_work, BLK_EH_RESET_TIMER).
//
// Internal: not exported from the package.
import { NvmeAdminOpcode, NvmeStatus, SQE } from '../controller/spec.js';
import { NVME_REG_CSTS } from '../controller/registers.js';
import { IOD_ABORTED, NVME_SC_HOST_ABORTED_CMD } from './constants.js';
import { nvmeAdminCmd, nvmeLog } from './dev.js';
import type { NvmeDevState } from './dev.js';
import type { NvmeIod } from './iod.js';
import { nvmeFinishIod, nvmePollCq } from './completion.js';
import type { NvmeQueue } from './queue.js';

const DNR = NvmeStatus.DNR;
/** CSTS.CFS: controller fatal status. */
const CSTS_CFS = 1 << 1;

/** `blk_mq_timeout_work`: run `nvme_timeout` on every expired command, re-arm for the next deadline. */
export function nvmeCheckTimeouts(d: NvmeDevState): void {
  const now = d.machine.clock.now();
  const queues = [d.adminq, ...d.queues];
  for (const q of queues) {
    if (!q) continue;
    for (const iod of q.iods) if (iod.inflight && iod.deadline <= now) nvmeTimeout(d, q, iod);
  }
  let next = Number.POSITIVE_INFINITY;
  for (const q of queues) {
    if (!q) continue;
    for (const iod of q.iods) if (iod.inflight && iod.deadline < next) next = iod.deadline;
  }
  if (d.inflight > 0 && d.timeoutTimer === null && Number.isFinite(next)) {
    d.timeoutTimer = d.machine.schedule(Math.max(0, next - now), d.timeoutFn);
  }
}

/** `nvme_timeout` for one expired command. */
export function nvmeTimeout(d: NvmeDevState, q: NvmeQueue, iod: NvmeIod): void {
  const timeoutNs = q.qid === 0 ? d.opts.adminTimeoutNs : d.opts.ioTimeoutNs;
  const now = d.machine.clock.now();
  d.stats.timeouts++;
  const csts = d.regs.readl(NVME_REG_CSTS);
  // nvme_should_reset: a controller in fatal state needs a reset, nothing else helps.
  if ((csts & CSTS_CFS) !== 0) {
    nvmeLog(d, `controller is down; will reset: CSTS=0x${csts.toString(16)}`);
    iod.deadline = now + timeoutNs;
    nvmeResetFromTimeout(d);
    return;
  }
  // nvme_poll_irqdisable: maybe the completion is there and the interrupt was lost.
  nvmePollCq(d, q);
  if (!iod.inflight) {
    nvmeLog(d, `I/O tag ${iod.tag} QID ${q.qid} timeout, completion polled`);
    return;
  }
  if (d.state === 'connecting' || d.state === 'resetting') {
    if (q.qid === 0) {
      // A command of the bring-up itself: give up on it (the probe fails).
      nvmeLog(d, `I/O tag ${iod.tag} QID ${q.qid} timeout, disable controller`);
      nvmeFinishIod(d, q, iod, NVME_SC_HOST_ABORTED_CMD | DNR, 0);
    } else iod.deadline = now + timeoutNs; // the reset in progress cancels and requeues it
    return;
  }
  if (q.qid === 0 || (iod.flags & IOD_ABORTED) !== 0 || d.abortsOutstanding >= d.abortLimit) {
    nvmeLog(d, `I/O tag ${iod.tag} QID ${q.qid} timeout, reset controller`);
    iod.deadline = now + timeoutNs;
    nvmeResetFromTimeout(d);
    return;
  }
  // Send an Abort for the command and give it another timeout period (BLK_EH_RESET_TIMER).
  iod.flags |= IOD_ABORTED;
  const cid = iod.cmdDv.getUint16(SQE.CID, true);
  nvmeLog(d, `I/O tag ${iod.tag} (${cid.toString(16).padStart(4, '0')}) QID ${q.qid} timeout, aborting`);
  d.abortsOutstanding++;
  const r = nvmeAdminCmd(d, 
    (dv) => {
      dv.setUint8(SQE.OPC, NvmeAdminOpcode.ABORT_CMD);
      dv.setUint32(SQE.CDW10, ((cid << 16) | q.qid) >>> 0, true);
    },
    (status, result) => {
      d.abortsOutstanding = Math.max(0, d.abortsOutstanding - 1);
      nvmeLog(d, `Abort status: 0x${status.toString(16)} result ${result}`);
    },
  );
  if (r !== 0) {
    d.abortsOutstanding--;
    nvmeResetFromTimeout(d);
    return;
  }
  d.stats.aborts++;
  iod.deadline = now + timeoutNs;
}

/** `nvme_reset_ctrl` from the timeout handler: only a live controller is reset. */
export function nvmeResetFromTimeout(d: NvmeDevState): void {
  if (d.state === 'live') d.resetCtrl();
}


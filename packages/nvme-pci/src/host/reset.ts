// The reset work and teardown: disable, admin queue, enable, Identify, Set Features (Number of
// Queues), Create I/O CQ/SQ, all asynchronous on the simulation clock; and nvme_dev_disable, which
// cancels what is in flight so that it is requeued.
// kernel: drivers/nvme/host/pci.c [6.17] (nvme_reset_work, nvme_remove_dead_ctrl,
// nvme_pci_configure_admin_queue, nvme_alloc_queue, nvme_setup_io_queues, nvme_create_io_queues,
// nvme_create_queue, adapter_alloc_cq, adapter_alloc_sq, nvme_dev_disable, nvme_reap_pending_cqes),
// drivers/nvme/host/core.c (nvme_enable_ctrl, nvme_disable_ctrl, nvme_wait_ready,
// nvme_init_ctrl_finish, nvme_identify_ctrl, nvme_identify_ns, nvme_scan_ns_list,
// nvme_set_queue_count, nvme_cancel_request, nvme_cancel_tagset, nvme_cancel_admin_tagset).
//
// Internal: not exported from the package; `NvmeDev` (nvmeDev.ts) drives it.
import { BlkStatus, dmaAllocCoherent, dmaFreeCoherent, SECTOR_SHIFT } from '@dmakit/dma-core';
import {
  AQA,
  CAP,
  CC,
  CSTS,
  NVME_REG_ACQ,
  NVME_REG_AQA,
  NVME_REG_ASQ,
  NVME_REG_CAP,
  NVME_REG_CC,
  NVME_REG_CSTS,
  NVME_CC_SHN_NORMAL,
  NVME_CSTS_SHST_CMPLT,
  regGet,
  regSet,
} from '../controller/registers.js';
import {
  NVME_CQES_LOG2,
  NVME_CQ_IRQ_ENABLED,
  NVME_CTRL_SGLS_SUPPORTED,
  NVME_IDENTIFY_DATA_SIZE,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_SQES_LOG2,
  NvmeAdminOpcode,
  NvmeFeat,
  NvmeIdCns,
  SQE,
  nvmeStatusName,
  readLe64,
  writeLe64,
} from '../controller/spec.js';
import { NVME_AQ_DEPTH, NVME_CID_TAG_MASK, NVME_MAX_BYTES, NVME_SC_HOST_ABORTED_CMD } from './constants.js';
import { nvmeEndRequest, nvmeFinishIod, nvmePollCq, nvmeRunRequeue } from './completion.js';
import { nvmeAdminCmd, nvmeLog } from './dev.js';
import type { NvmeDevState } from './dev.js';
import { NVME_MMIO_ALL_ONES } from './mmio.js';
import { coherentCpu, NvmeQueue } from './queue.js';

/** `shutdown_timeout` module parameter default (5 s). */
const NVME_SHUTDOWN_TIMEOUT_NS = 5e9;
const CSTS_CFS = 1 << 1;

// ---- bring-up (nvme_reset_work) -----------------------------------------------------------

export function nvmeRemoveDeadCtrl(d: NvmeDevState, why: string): void {
  d.lastError = why;
  nvmeLog(d, `Removing after probe failure status: ${why}`);
  d.state = 'dead';
  // Nothing will run these again: fail them (blk_mq_end_request with an error).
  for (const req of d.requeue.splice(0)) nvmeEndRequest(d, req, BlkStatus.IOERR);
}

export function nvmeResetWork(d: NvmeDevState): void {
  const bar = d.regs;
  // nvme_pci_enable: `if (readl(dev->bar + NVME_REG_CSTS) == -1) { result = -ENODEV; goto disable; }`
  // (a surprise-removed function, or TEE MMIO the TDI refuses: every load reads all ones).
  if (bar.readl(NVME_REG_CSTS) === NVME_MMIO_ALL_ONES) {
    nvmeRemoveDeadCtrl(d, 'controller gone (CSTS reads all ones)');
    return;
  }
  d.cap = bar.readq(NVME_REG_CAP);
  d.dstrd = regGet(d.cap, CAP.DSTRD);
  // NVME_CAP_TIMEOUT: 500 ms units.
  d.ctrlTimeoutNs = (regGet(d.cap, CAP.TO) + 1) * 500e6;
  // nvme_pci_configure_admin_queue: disable first (nvme_disable_ctrl, shutdown = false).
  const cc = bar.readl(NVME_REG_CC);
  if ((cc & 1) !== 0) bar.writel(NVME_REG_CC, cc & ~1);
  nvmeWaitReady(d, false, () => {
    nvmePciConfigureAdminQueue(d);
  });
}

/** `nvme_wait_ready`: poll CSTS.RDY until it equals `rdy`, CAP.TO bounded. */
export function nvmeWaitReady(d: NvmeDevState, rdy: boolean, then: () => void): void {
  const deadline = d.machine.clock.now() + d.ctrlTimeoutNs;
  const poll = (): void => {
    if (d.state !== 'connecting') return;
    const csts = d.regs.readl(NVME_REG_CSTS);
    if (csts === NVME_MMIO_ALL_ONES) {
      nvmeRemoveDeadCtrl(d, 'controller gone (CSTS reads all ones)');
      return;
    }
    if (rdy && (csts & CSTS_CFS) !== 0) {
      nvmeRemoveDeadCtrl(d, 'controller fatal status during enable');
      return;
    }
    if ((regGet(csts, CSTS.RDY) === 1) === rdy) {
      then();
      return;
    }
    if (d.machine.clock.now() >= deadline) {
      nvmeRemoveDeadCtrl(d, `Device not ready; aborting ${rdy ? 'initialisation' : 'reset'}, CSTS=0x${csts.toString(16)}`);
      return;
    }
    d.machine.schedule(d.opts.pollIntervalNs, poll);
  };
  poll();
}

export function nvmeAllocQueue(d: NvmeDevState, qid: number, depth: number): NvmeQueue | null {
  const dev = d.device;
  const sq = dmaAllocCoherent(dev, depth << NVME_SQES_LOG2);
  if (sq === null) return null;
  const cq = dmaAllocCoherent(dev, depth << NVME_CQES_LOG2);
  if (cq === null) {
    dmaFreeCoherent(dev, sq.size, sq.cpuAddr, sq.dmaAddr);
    return null;
  }
  return new NvmeQueue(qid, depth, sq, cq, qid, d.dstrd);
}

export function nvmePciConfigureAdminQueue(d: NvmeDevState): void {
  const m = d.machine;
  const bar = d.regs;
  d.adminq ??= nvmeAllocQueue(d, 0, NVME_AQ_DEPTH);
  d.adminBuf ??= dmaAllocCoherent(d.device, NVME_IDENTIFY_DATA_SIZE);
  const aq = d.adminq;
  if (aq === null || d.adminBuf === null) {
    nvmeRemoveDeadCtrl(d, 'no memory for the admin queue');
    return;
  }
  aq.init(m);
  bar.writel(NVME_REG_AQA, regSet(regSet(0, AQA.ASQS, aq.depth - 1), AQA.ACQS, aq.depth - 1));
  bar.writeq(NVME_REG_ASQ, aq.sq.dmaAddr);
  bar.writeq(NVME_REG_ACQ, aq.cq.dmaAddr);
  // nvme_enable_ctrl: CSS NVM, MPS = controller page, round robin, IOSQES 6, IOCQES 4; then EN.
  let cc = regSet(0, CC.MPS, 0);
  cc = regSet(cc, CC.IOSQES, NVME_SQES_LOG2);
  cc = regSet(cc, CC.IOCQES, NVME_CQES_LOG2);
  bar.writel(NVME_REG_CC, cc);
  bar.writel(NVME_REG_CC, regSet(cc, CC.EN, 1));
  nvmeWaitReady(d, true, () => {
    aq.enabled = true;
    nvmeIdentifyCtrl(d);
  });
}

/** An admin step of the bring-up: a failed submission or a bad status fails the probe. */
export function nvmeAdminStep(d: NvmeDevState, what: string, fill: (dv: DataView) => void, then: (result: number) => void): void {
  const r = nvmeAdminCmd(d, fill, (status, result) => {
    if (d.state !== 'connecting') return;
    if (status !== 0) {
      nvmeRemoveDeadCtrl(d, `${what} failed: ${nvmeStatusName(status)}`);
      return;
    }
    then(result);
  });
  if (r !== 0) nvmeRemoveDeadCtrl(d, `${what}: cannot submit (${r})`);
}

export function nvmeAdminBufDv(d: NvmeDevState): DataView {
  const buf = d.adminBuf;
  const out = new Uint8Array(NVME_IDENTIFY_DATA_SIZE);
  if (buf !== null) d.machine.memory.readInto(coherentCpu(buf, 0), out, 0, NVME_IDENTIFY_DATA_SIZE);
  return new DataView(out.buffer);
}

export function nvmeIdentifyCmd(d: NvmeDevState, dv: DataView, cns: number, nsid: number): void {
  dv.setUint8(SQE.OPC, NvmeAdminOpcode.IDENTIFY);
  dv.setUint32(SQE.NSID, nsid, true);
  writeLe64(dv, SQE.PRP1, d.adminBuf?.dmaAddr ?? 0);
  dv.setUint32(SQE.CDW10, cns, true);
}

export function nvmeIdentifyCtrl(d: NvmeDevState): void {
  nvmeAdminStep(d, 
    'Identify Controller',
    (dv) => {
      nvmeIdentifyCmd(d, dv, NvmeIdCns.CTRL, 0);
    },
    () => {
      const id = nvmeAdminBufDv(d);
      d.mdts = id.getUint8(77);
      // nvme_init_ctrl_finish: max_hw_sectors from MDTS (units of CAP.MPSMIN pages), capped by NVME_MAX_BYTES.
      const mpsmin = 4096 << regGet(d.cap, CAP.MPSMIN);
      const mdtsBytes = d.mdts === 0 ? NVME_MAX_BYTES : Math.min(NVME_MAX_BYTES, 2 ** d.mdts * mpsmin);
      d.maxHwSectors = mdtsBytes >> SECTOR_SHIFT;
      d.abortLimit = id.getUint8(258) + 1;
      d.ctrlSgls = (id.getUint32(536, true) & NVME_CTRL_SGLS_SUPPORTED) !== 0;
      nvmeIdentifyNsList(d);
    },
  );
}

export function nvmeIdentifyNsList(d: NvmeDevState): void {
  nvmeAdminStep(d, 
    'Identify Active Namespace List',
    (dv) => {
      nvmeIdentifyCmd(d, dv, NvmeIdCns.NS_ACTIVE_LIST, 0);
    },
    () => {
      const id = nvmeAdminBufDv(d);
      const nsids: number[] = [];
      for (let i = 0; i < 1024; i++) {
        const n = id.getUint32(i * 4, true);
        if (n === 0) break;
        nsids.push(n);
      }
      d.namespaces = [];
      nvmeIdentifyNs(d, nsids, 0);
    },
  );
}

export function nvmeIdentifyNs(d: NvmeDevState, nsids: readonly number[], i: number): void {
  const nsid = nsids[i];
  if (nsid === undefined) {
    const want = d.opts.nsid;
    d.ns = (want === 0 ? d.namespaces[0] : d.namespaces.find((n) => n.nsid === want)) ?? null;
    if (d.ns === null) {
      nvmeRemoveDeadCtrl(d, want === 0 ? 'no active namespace' : `namespace ${want} not found`);
      return;
    }
    nvmeSetQueueCount(d);
    return;
  }
  nvmeAdminStep(d, 
    `Identify Namespace ${nsid}`,
    (dv) => {
      nvmeIdentifyCmd(d, dv, NvmeIdCns.NS, nsid);
    },
    () => {
      const id = nvmeAdminBufDv(d);
      const nsze = readLe64(id, 0);
      const flbas = id.getUint8(26) & 0xf;
      const lbads = (id.getUint32(128 + flbas * 4, true) >>> 16) & 0xff;
      if (nsze > 0 && lbads >= 9 && lbads <= 12) {
        d.namespaces.push({ nsid, capacityLbas: nsze, lbaShift: lbads, lbaSize: 1 << lbads });
      } else nvmeLog(d, `namespace ${nsid}: unsupported format (lbads ${lbads}), ignored`);
      nvmeIdentifyNs(d, nsids, i + 1);
    },
  );
}

/** `nvme_set_queue_count`. */
export function nvmeSetQueueCount(d: NvmeDevState): void {
  const want = d.opts.ioQueues;
  const q = ((want - 1) | ((want - 1) << 16)) >>> 0;
  nvmeAdminStep(d, 
    'Set Features (Number of Queues)',
    (dv) => {
      dv.setUint8(SQE.OPC, NvmeAdminOpcode.SET_FEATURES);
      dv.setUint32(SQE.CDW10, NvmeFeat.NUM_QUEUES, true);
      dv.setUint32(SQE.CDW11, q, true);
    },
    (result) => {
      const nr = Math.min(want, (result & 0xffff) + 1, (result >>> 16) + 1);
      d.nrIoQueues = nr;
      nvmeCreateIoQueues(d, 1);
    },
  );
}

/** `nvme_create_io_queues` / `nvme_create_queue`: CQ first, then the SQ bound to it. */
export function nvmeCreateIoQueues(d: NvmeDevState, qid: number): void {
  if (qid > d.nrIoQueues) {
    d.state = 'live';
    nvmeRunRequeue(d);
    return;
  }
  const mqes = regGet(d.cap, CAP.MQES) + 1;
  const depth = Math.min(d.opts.ioQueueDepth, mqes, NVME_CID_TAG_MASK + 1);
  let q = d.queues[qid];
  if (q !== undefined && q.depth !== depth) {
    const dev = d.device;
    dmaFreeCoherent(dev, q.sq.size, q.sq.cpuAddr, q.sq.dmaAddr);
    dmaFreeCoherent(dev, q.cq.size, q.cq.cpuAddr, q.cq.dmaAddr);
    q = undefined;
  }
  q ??= nvmeAllocQueue(d, qid, depth) ?? undefined;
  if (q === undefined) {
    nvmeRemoveDeadCtrl(d, `no memory for I/O queue ${qid}`);
    return;
  }
  d.queues[qid] = q;
  const nq = q;
  nq.init(d.machine);
  nvmeAdminStep(d, 
    `Create I/O CQ ${qid}`,
    (dv) => {
      dv.setUint8(SQE.OPC, NvmeAdminOpcode.CREATE_CQ);
      writeLe64(dv, SQE.PRP1, nq.cq.dmaAddr);
      dv.setUint32(SQE.CDW10, (((depth - 1) << 16) | qid) >>> 0, true);
      dv.setUint32(SQE.CDW11, ((nq.cqVector << 16) | NVME_QUEUE_PHYS_CONTIG | NVME_CQ_IRQ_ENABLED) >>> 0, true);
    },
    () => {
      nvmeAdminStep(d, 
        `Create I/O SQ ${qid}`,
        (dv) => {
          dv.setUint8(SQE.OPC, NvmeAdminOpcode.CREATE_SQ);
          writeLe64(dv, SQE.PRP1, nq.sq.dmaAddr);
          dv.setUint32(SQE.CDW10, (((depth - 1) << 16) | qid) >>> 0, true);
          dv.setUint32(SQE.CDW11, ((qid << 16) | NVME_QUEUE_PHYS_CONTIG) >>> 0, true);
        },
        () => {
          nq.enabled = true;
          nvmeCreateIoQueues(d, qid + 1);
        },
      );
    },
  );
}

// ---- teardown (nvme_dev_disable) ------------------------------------------------------------

/**
 * `nvme_dev_disable`: quiesce, disable the controller (which drops its queues), reap the
 * completions already posted, then cancel every request still in flight with "host aborted"
 * (`nvme_cancel_request`): they are unmapped and requeued (or failed when the device goes away).
 */
export function nvmeDevDisable(d: NvmeDevState, shutdown: boolean): void {
  const bar = d.regs;
  const queues = [d.adminq, ...d.queues];
  for (const q of queues) if (q) q.enabled = false;
  // nvme_pci_ctrl_is_dead: CSTS reading all ones (the function is gone, or a TDI refuses the
  // driver's mapping of its private BAR) means there is no controller to disable: skip straight
  // to cancelling what is in flight.
  if (bar.readl(NVME_REG_CSTS) === NVME_MMIO_ALL_ONES) {
    nvmeCancelInflight(d, queues);
    return;
  }
  const cc = bar.readl(NVME_REG_CC);
  if (shutdown && (cc & 1) !== 0) {
    // nvme_disable_ctrl(ctrl, shutdown = true): normal shutdown, then wait for CSTS.SHST
    // complete (shutdown_timeout, 5 s by default). In-flight commands finish meanwhile.
    bar.writel(NVME_REG_CC, regSet(cc, CC.SHN, NVME_CC_SHN_NORMAL));
    const deadline = d.machine.clock.now() + NVME_SHUTDOWN_TIMEOUT_NS;
    while (regGet(bar.readl(NVME_REG_CSTS), CSTS.SHST) !== NVME_CSTS_SHST_CMPLT && d.machine.clock.now() < deadline) {
      d.machine.advance(d.opts.pollIntervalNs);
    }
    if (regGet(bar.readl(NVME_REG_CSTS), CSTS.SHST) !== NVME_CSTS_SHST_CMPLT) nvmeLog(d, 'Device shutdown incomplete; abort shutdown');
  }
  // Model: always clear CC.EN too, so the controller drops its queues before their memory is freed.
  bar.writel(NVME_REG_CC, bar.readl(NVME_REG_CC) & ~1);
  nvmeCancelInflight(d, queues);
}

/** `nvme_reap_pending_cqes`, then `nvme_cancel_tagset` / `nvme_cancel_admin_tagset`. */
function nvmeCancelInflight(d: NvmeDevState, queues: readonly (NvmeQueue | null | undefined)[]): void {
  for (const q of queues) if (q) nvmePollCq(d, q);
  for (const q of queues) {
    if (!q) continue;
    for (const iod of q.iods) {
      if (!iod.inflight) continue;
      nvmeFinishIod(d, q, iod, NVME_SC_HOST_ABORTED_CMD, 0);
    }
  }
  d.abortsOutstanding = 0;
}
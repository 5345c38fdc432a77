// The queue and doorbell machinery both command sets share: doorbell writes, SQ fetch, command
// slots and their latency, completion posting with the phase bit and the CQ backlog, MSI-X
// interrupts, and the data pointer (PRP or SGL) walk with the device-to-host copy.
// QEMU hw/nvme/ctrl.c (nvme_process_db, nvme_process_sq, nvme_enqueue_req_completion,
// nvme_post_cqes, nvme_irq_assert / msix_notify, nvme_map_dptr, nvme_c2h); NVM Express Base
// Specification 1.4 section 4 (queues, doorbells, phase tag) and 7 (controller fatal status).
//
// Internal: not exported from the package.
import { DmaFaultError } from '@dmakit/dma-core';
import type { NvmeCompQueue, NvmeSubQueue } from './queues.js';
import { CSTS, NVME_CSTS_SHST_NORMAL, NVME_REG_DBS, regGet, regSet } from './registers.js';
import {
  NVME_CQE_SIZE,
  NVME_PSDT_PRP,
  NVME_SQE_SIZE,
  NvmeAdminOpcode,
  NvmeOpcode,
  NvmeStatus,
  SQE,
  nvmeStatusCode,
  readLe64,
} from './spec.js';
import { AERL, DNR, NvmeCmd } from './nvmeCtrl.js';
import type { NvmeCtrl } from './nvmeCtrl.js';

/** RDY set, EN set, not shutting down: the controller processes doorbells. */
export function nvmeRunning(n: NvmeCtrl): boolean {
  return (n.csts & 3) === 1 && (n.cc & 1) === 1 && regGet(n.csts, CSTS.SHST) === NVME_CSTS_SHST_NORMAL;
}

/** A queue access the DMA port refused: Controller Fatal Status, processing stops until reset. */
export function nvmeFatal(n: NvmeCtrl, why: string): void {
  n.stats.queueDmaFaults++;
  n.csts = regSet(n.csts, CSTS.CFS, 1);
  for (const sq of n.sqs) {
    sq?.fetchTimer?.cancel();
    if (sq) sq.fetchTimer = null;
  }
  for (const cmd of n.inflight) cmd.timer?.cancel();
  if (n.machine.trace.enabled) n.machine.trace.emit('nvme:ctrl_fatal', n.device.name, { reason: why });
}
// ---- doorbells, fetch, completion ------------------------------------------------------------------

/** `nvme_process_db`: a doorbell write moves a CQ head (draining its backlog) or an SQ tail (schedules a fetch). */
export function nvmeProcessDb(n: NvmeCtrl, off: number, v: number): void {
  const stride = 4 << n.dstrd;
  const rel = off - NVME_REG_DBS;
  if (rel % stride !== 0) {
    n.stats.badMmio++;
    return;
  }
  const idx = rel / stride;
  const qid = idx >> 1;
  if (!nvmeRunning(n)) {
    n.stats.ignoredDoorbells++;
    return;
  }
  if ((idx & 1) === 1) {
    const cq = n.cqs[qid];
    if (cq === undefined || v >= cq.size) {
      n.stats.badDoorbells++; // spec: an "Invalid Doorbell" asynchronous event
      return;
    }
    cq.head = v;
    if (cq.backlog.length > 0) nvmeDrainBacklog(n, cq);
    return;
  }
  const sq = n.sqs[qid];
  if (sq === undefined || v >= sq.size) {
    n.stats.badDoorbells++;
    return;
  }
  sq.tail = v;
  if (sq.fetchTimer === null && sq.head !== v) sq.fetchTimer = n.machine.schedule(n.lat.fetch, sq.fetchFn);
}

/** A pooled command slot (QEMU's per-SQ `NvmeRequest` array). */
export function nvmeAllocCmd(n: NvmeCtrl): NvmeCmd {
  return n.freeCmds.pop() ?? new NvmeCmd(n.exec);
}

/** Give a command slot back to the pool. */
export function nvmeReleaseCmd(n: NvmeCtrl, cmd: NvmeCmd): void {
  cmd.timer = null;
  n.freeCmds.push(cmd);
}

/** `nvme_process_sq`: fetch every entry between head and tail, and schedule each command's execution. */
export function nvmeProcessSq(n: NvmeCtrl, sq: NvmeSubQueue): void {
  sq.fetchTimer = null;
  if (!nvmeRunning(n) || n.sqs[sq.qid] !== sq) return;
  const dev = n.device;
  while (sq.head !== sq.tail) {
    const cmd = nvmeAllocCmd(n);
    try {
      dev.dmaReadInto(sq.entryAddr(sq.head), cmd.sqe, 0, NVME_SQE_SIZE);
    } catch (e) {
      n.freeCmds.push(cmd);
      if (e instanceof DmaFaultError) {
        nvmeFatal(n, `SQ ${sq.qid} entry fetch refused`);
        return;
      }
      throw e;
    }
    sq.head = sq.head + 1 === sq.size ? 0 : sq.head + 1;
    cmd.sqid = sq.qid;
    cmd.cid = cmd.dv.getUint16(SQE.CID, true);
    n.inflight.add(cmd);
    const opc = cmd.opcode;
    const byOpc = sq.qid === 0 ? n.stats.adminCommands : n.stats.ioCommands;
    byOpc[opc] = (byOpc[opc] ?? 0) + 1;
    if (n.machine.trace.enabled) {
      n.machine.trace.emit('nvme:ctrl_cmd', n.device.name, { sqid: sq.qid, cid: cmd.cid, opcode: opc, nsid: cmd.dv.getUint32(SQE.NSID, true) });
    }
    if (sq.qid === 0 && opc === NvmeAdminOpcode.ASYNC_EVENT && n.aerOutstanding <= AERL) {
      // Held until an event occurs (this model raises none) or the controller resets.
      n.aerOutstanding++;
      continue;
    }
    if (sq.qid !== 0 && n.stallBudget > 0) {
      n.stallBudget--;
      continue;
    }
    cmd.timer = n.machine.schedule(nvmeLatencyOf(n, cmd), cmd.run);
  }
}

/** Simulated execution time of a fetched command (the model's cost, not in QEMU). */
export function nvmeLatencyOf(n: NvmeCtrl, cmd: NvmeCmd): number {
  const lat = n.lat;
  if (cmd.sqid === 0) return lat.admin;
  const opc = cmd.opcode;
  if (opc === NvmeOpcode.READ || opc === NvmeOpcode.WRITE) {
    const ns = n.ns.get(cmd.dv.getUint32(SQE.NSID, true));
    const bytes = ns === undefined ? 0 : ((cmd.dv.getUint32(SQE.CDW12, true) & 0xffff) + 1) * ns.lbaSize;
    return (opc === NvmeOpcode.READ ? lat.read : lat.write) + bytes * lat.perByte;
  }
  return lat.write;
}
/** `nvme_enqueue_req_completion`: post a completion for a command of SQ `sqid` to the CQ that SQ is bound to. */
export function nvmeEnqueueReqCompletion(n: NvmeCtrl, sqid: number, cid: number, status: number, dw0: number): void {
  const sq = n.sqs[sqid];
  if (sq === undefined) return;
  const cq = n.cqs[sq.cqid];
  if (cq === undefined) return;
  if (cq.full || cq.backlog.length > 0) {
    cq.backlog.push({ dw0, sqid, cid, status });
    return;
  }
  nvmePostCqe(n, cq, dw0, sq.head, sqid, cid, status);
}

/** `nvme_post_cqes` for one entry: write it with the current phase, advance the tail, raise the vector. */
export function nvmePostCqe(n: NvmeCtrl, cq: NvmeCompQueue, dw0: number, sqhd: number, sqid: number, cid: number, status: number): boolean {
  const dv = n.cqeDv;
  dv.setUint32(0, dw0 >>> 0, true);
  dv.setUint32(4, 0, true);
  dv.setUint16(8, sqhd, true);
  dv.setUint16(10, sqid, true);
  dv.setUint16(12, cid, true);
  dv.setUint16(14, ((status << 1) | cq.phase) & 0xffff, true);
  try {
    n.device.dmaWrite(cq.base + cq.tail * NVME_CQE_SIZE, n.cqe, 0, NVME_CQE_SIZE);
  } catch (e) {
    if (e instanceof DmaFaultError) {
      nvmeFatal(n, `CQ ${cq.qid} entry write refused`);
      return false;
    }
    throw e;
  }
  if (++cq.tail === cq.size) {
    cq.tail = 0;
    cq.phase ^= 1;
  }
  const st = n.stats;
  st.completions++;
  if (status !== 0) {
    st.errors++;
    const code = nvmeStatusCode(status);
    st.errorsByStatus.set(code, (st.errorsByStatus.get(code) ?? 0) + 1);
  }
  if (n.machine.trace.enabled) {
    n.machine.trace.emit('nvme:ctrl_cqe', n.device.name, { cqid: cq.qid, sqid, cid, status, sqhd, phase: cq.phase });
  }
  if (cq.ien) nvmeIrqAssert(n, cq.vector);
  return true;
}

/** Post the completions that waited for room once the host moved the CQ head. */
export function nvmeDrainBacklog(n: NvmeCtrl, cq: NvmeCompQueue): void {
  let posted = 0;
  while (posted < cq.backlog.length && !cq.full) {
    const c = cq.backlog[posted];
    if (c === undefined) break;
    const sq = n.sqs[c.sqid];
    if (!nvmePostCqe(n, cq, c.dw0, sq?.head ?? 0, c.sqid, c.cid, c.status)) break;
    posted++;
  }
  cq.backlog.splice(0, posted);
}

/** `nvme_irq_assert`: one MSI-X message per vector in flight, delivered after the interrupt latency. */
export function nvmeIrqAssert(n: NvmeCtrl, vector: number): void {
  if (n.irqTimers[vector] !== null) return; // one message in flight per vector coalesces
  const fn = n.irqFns[vector];
  if (fn === undefined) return;
  n.irqTimers[vector] = n.machine.schedule(n.lat.interrupt, fn);
}

/** `msix_notify`: deliver the message, or set the pending bit while the vector is masked. */
export function nvmeMsixNotify(n: NvmeCtrl, vector: number): void {
  n.irqTimers[vector] = null;
  if (n.vecMasked[vector] === 1) {
    n.vecPending[vector] = 1;
    return;
  }
  n.stats.interrupts++;
  if (n.machine.trace.enabled) n.machine.trace.emit('nvme:ctrl_irq', n.device.name, { vector });
  for (const fn of n.handlers) fn(vector);
}

// ---- data pointers ----------------------------------------------------------------------------

/** `nvme_map_dptr`: walk the command's PRPs or SGL for `len` bytes. */
export function nvmeMapDptr(n: NvmeCtrl, cmd: NvmeCmd, len: number, isWrite: boolean): number {
  const dv = cmd.dv;
  const psdt = ((cmd.sqe[SQE.FLAGS] ?? 0) >> 6) & 3;
  if (psdt === NVME_PSDT_PRP) return n.walker.mapPrp(readLe64(dv, SQE.PRP1), readLe64(dv, SQE.PRP2), len, n.pageSize);
  // PSDT 11b is reserved; SGLs are for I/O commands only over PCIe.
  if (psdt === 3 || !n.sgl || cmd.sqid === 0) return NvmeStatus.INVALID_FIELD | DNR;
  return n.walker.mapSgl(dv, len, isWrite);
}

/** The staging buffer between namespace and host memory, grown on demand (reused across commands). */
export function nvmeEnsureStaging(n: NvmeCtrl, len: number): Uint8Array {
  if (n.staging.length < len) n.staging = new Uint8Array(Math.max(len, n.staging.length * 2, 4096));
  return n.staging;
}

/** `nvme_c2h`: device-to-host transfer of `src[0..len)` to the command's data buffer. */
export function nvmeC2h(n: NvmeCtrl, cmd: NvmeCmd, src: Uint8Array, len: number): number {
  const st = nvmeMapDptr(n, cmd, len, false);
  if (st !== NvmeStatus.SUCCESS) return st;
  return n.walker.scatter(src);
}

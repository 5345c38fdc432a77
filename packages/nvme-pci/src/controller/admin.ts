// The admin command set: Identify (controller, namespace, active namespace list, descriptor list),
// Create/Delete I/O SQ and CQ, Set/Get Features, Abort, Asynchronous Event Request.
// QEMU hw/nvme/ctrl.c (nvme_admin_cmd, nvme_identify, nvme_identify_ctrl, nvme_identify_ns,
// nvme_identify_nslist, nvme_identify_ns_descr_list, nvme_create_cq, nvme_create_sq, nvme_del_sq,
// nvme_del_cq, nvme_set_feature, nvme_get_feature, nvme_abort); NVM Express Base Specification
// 1.4 section 5.
//
// Internal: not exported from the package.
import type { NvmeNamespace } from './namespace.js';
import { NvmeCompQueue, NvmeSubQueue } from './queues.js';
import { nvmeVs } from './registers.js';
import {
  NVME_CQES_LOG2,
  NVME_CQ_IRQ_ENABLED,
  NVME_CTRL_SGLS_BITBUCKET,
  NVME_CTRL_SGLS_SUPPORTED,
  NVME_IDENTIFY_DATA_SIZE,
  NVME_NSID_ALL,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_SQES_LOG2,
  NvmeAdminOpcode,
  NvmeFeat,
  NvmeIdCns,
  NvmeStatus,
  SQE,
  readLe64,
  writeLe64,
} from './spec.js';
import { ACL, AERL, DNR, FID_NOT_SAVEABLE } from './nvmeCtrl.js';
import type { NvmeCmd, NvmeCtrl } from './nvmeCtrl.js';
import { nvmeC2h, nvmeEnqueueReqCompletion, nvmeProcessSq, nvmeReleaseCmd } from './doorbell.js';

/** `nvme_admin_cmd`: fused operations are refused, then dispatch on the opcode. */
export function nvmeAdminCmd(n: NvmeCtrl, cmd: NvmeCmd): number {
  const dv = cmd.dv;
  const flags = cmd.sqe[SQE.FLAGS] ?? 0;
  if ((flags & 3) !== 0) return NvmeStatus.INVALID_FIELD | DNR; // fused operations are not supported
  switch (cmd.opcode) {
    case NvmeAdminOpcode.IDENTIFY:
      return nvmeIdentify(n, cmd);
    case NvmeAdminOpcode.CREATE_CQ:
      return nvmeCreateCq(n, dv);
    case NvmeAdminOpcode.CREATE_SQ:
      return nvmeCreateSq(n, dv);
    case NvmeAdminOpcode.DELETE_SQ:
      return nvmeDelSq(n, dv);
    case NvmeAdminOpcode.DELETE_CQ:
      return nvmeDelCq(n, dv);
    case NvmeAdminOpcode.SET_FEATURES:
      return nvmeSetFeature(n, dv);
    case NvmeAdminOpcode.GET_FEATURES:
      return nvmeGetFeature(n, dv);
    case NvmeAdminOpcode.ABORT_CMD:
      return nvmeAbort(n, dv);
    case NvmeAdminOpcode.ASYNC_EVENT:
      return NvmeStatus.ASYNC_LIMIT | DNR; // more than AERL + 1 outstanding
    default:
      return NvmeStatus.INVALID_OPCODE | DNR;
  }
}

/** `nvme_identify`: the CNS selects the data structure, copied to the host through the data pointer. */
export function nvmeIdentify(n: NvmeCtrl, cmd: NvmeCmd): number {
  const dv = cmd.dv;
  const cns = dv.getUint32(SQE.CDW10, true) & 0xff;
  const nsid = dv.getUint32(SQE.NSID, true);
  const id = n.id;
  const idv = n.idDv;
  id.fill(0);
  switch (cns) {
    case NvmeIdCns.CTRL:
      nvmeFillIdCtrl(n, idv);
      break;
    case NvmeIdCns.NS: {
      // QEMU nvme_identify_ns: nsid 0 or broadcast or > NN is invalid; an inactive valid nsid
      // returns a zero-filled structure.
      if (nsid === 0 || nsid === NVME_NSID_ALL || nsid > n.maxNsid) return NvmeStatus.INVALID_NS | DNR;
      const ns = n.ns.get(nsid);
      if (ns !== undefined) nvmeFillIdNs(idv, ns);
      break;
    }
    case NvmeIdCns.NS_ACTIVE_LIST: {
      if (nsid >= NVME_NSID_ALL - 1) return NvmeStatus.INVALID_NS | DNR;
      const ids = [...n.ns.keys()].filter((n) => n > nsid).sort((a, b) => a - b);
      for (let i = 0; i < ids.length && i < 1024; i++) idv.setUint32(i * 4, ids[i] ?? 0, true);
      break;
    }
    case NvmeIdCns.NS_DESC_LIST:
      // No NGUID/EUI64/UUID descriptors: an empty list.
      if (nsid === 0 || nsid === NVME_NSID_ALL || !n.ns.has(nsid)) return NvmeStatus.INVALID_NS | DNR;
      break;
    default:
      return NvmeStatus.INVALID_FIELD | DNR;
  }
  return nvmeC2h(n, cmd, id, NVME_IDENTIFY_DATA_SIZE);
}

/** Identify Controller data structure (spec figure 247; kernel struct nvme_id_ctrl). */
export function nvmeFillIdCtrl(n: NvmeCtrl, dv: DataView): void {
  dv.setUint16(0, 0x1b36, true); // VID (QEMU's, Red Hat)
  dv.setUint16(2, 0x1af4, true); // SSVID
  putAscii(dv, 4, 20, n.serial); // SN
  putAscii(dv, 24, 40, n.model); // MN
  putAscii(dv, 64, 8, '1.0'); // FR
  dv.setUint8(72, 6); // RAB
  dv.setUint8(77, n.mdts); // MDTS
  dv.setUint16(78, 0, true); // CNTLID
  dv.setUint32(80, nvmeVs(1, 4, 0), true); // VER
  dv.setUint16(256, 0, true); // OACS: no optional admin commands
  dv.setUint8(258, ACL);
  dv.setUint8(259, AERL);
  dv.setUint8(512, (NVME_SQES_LOG2 << 4) | NVME_SQES_LOG2); // SQES max | min
  dv.setUint8(513, (NVME_CQES_LOG2 << 4) | NVME_CQES_LOG2); // CQES
  dv.setUint16(514, 0, true); // MAXCMD (fabrics only)
  dv.setUint32(516, n.maxNsid, true); // NN
  dv.setUint16(520, (1 << 2) | (1 << 3), true); // ONCS: Dataset Management, Write Zeroes
  dv.setUint8(525, 0); // VWC: no volatile write cache
  dv.setUint32(536, n.sgl ? NVME_CTRL_SGLS_SUPPORTED | NVME_CTRL_SGLS_BITBUCKET : 0, true); // SGLS
  putAscii(dv, 768, 256, `nqn.2024-01.io.dmakit:nvme:${n.serial}`, 0); // SUBNQN, NUL padded
}

/** Identify Namespace data structure (NVM command set; kernel struct nvme_id_ns). */
export function nvmeFillIdNs(dv: DataView, ns: NvmeNamespace): void {
  writeLe64(dv, 0, ns.capacityLbas); // NSZE
  writeLe64(dv, 8, ns.capacityLbas); // NCAP
  writeLe64(dv, 16, ns.capacityLbas); // NUSE
  dv.setUint8(25, 0); // NLBAF (0's based): one LBA format
  dv.setUint8(26, 0); // FLBAS: format 0, no metadata
  // DLFEAT: deallocated blocks read as zeros (001b); Write Zeroes may deallocate (bit 3).
  dv.setUint8(33, 0x01 | 0x08);
  dv.setUint32(128, ns.lbaShift << 16, true); // LBAF0: MS 0, LBADS, RP 0
}

/** `nvme_create_cq`. */
export function nvmeCreateCq(n: NvmeCtrl, dv: DataView): number {
  const cdw10 = dv.getUint32(SQE.CDW10, true);
  const cdw11 = dv.getUint32(SQE.CDW11, true);
  const qid = cdw10 & 0xffff;
  const qsize = cdw10 >>> 16; // 0's based
  const prp1 = readLe64(dv, SQE.PRP1);
  const vector = cdw11 >>> 16;
  // Check order as QEMU nvme_create_cq.
  if (qid === 0 || qid > n.allocCqs || n.cqs[qid] !== undefined) return NvmeStatus.QID_INVALID | DNR;
  if (qsize === 0 || qsize > n.mqes) return NvmeStatus.QUEUE_SIZE | DNR;
  if (prp1 % n.pageSize !== 0) return NvmeStatus.PRP_INVALID_OFFSET | DNR;
  if (vector >= n.msixVectors) return NvmeStatus.INVALID_VECTOR | DNR;
  if ((cdw11 & NVME_QUEUE_PHYS_CONTIG) === 0) return NvmeStatus.INVALID_FIELD | DNR; // CAP.CQR
  n.cqs[qid] = new NvmeCompQueue(qid, prp1, qsize + 1, vector, (cdw11 & NVME_CQ_IRQ_ENABLED) !== 0);
  n.qsCreated = true;
  return NvmeStatus.SUCCESS;
}

/** `nvme_create_sq`: bound to an existing CQ. */
export function nvmeCreateSq(n: NvmeCtrl, dv: DataView): number {
  const cdw10 = dv.getUint32(SQE.CDW10, true);
  const cdw11 = dv.getUint32(SQE.CDW11, true);
  const qid = cdw10 & 0xffff;
  const qsize = cdw10 >>> 16;
  const cqid = cdw11 >>> 16;
  const prp1 = readLe64(dv, SQE.PRP1);
  // Check order as QEMU nvme_create_sq.
  const cq = cqid === 0 ? undefined : n.cqs[cqid];
  if (cq === undefined) return NvmeStatus.CQ_INVALID | DNR;
  if (qid === 0 || qid > n.allocSqs || n.sqs[qid] !== undefined) return NvmeStatus.QID_INVALID | DNR;
  if (qsize === 0 || qsize > n.mqes) return NvmeStatus.QUEUE_SIZE | DNR;
  if (prp1 % n.pageSize !== 0) return NvmeStatus.PRP_INVALID_OFFSET | DNR;
  if ((cdw11 & NVME_QUEUE_PHYS_CONTIG) === 0) return NvmeStatus.INVALID_FIELD | DNR;
  n.sqs[qid] = new NvmeSubQueue(qid, prp1, qsize + 1, cqid, (sq) => {
    nvmeProcessSq(n, sq);
  });
  cq.sqRefs++;
  n.qsCreated = true;
  return NvmeStatus.SUCCESS;
}

/** `nvme_del_sq`: its outstanding commands complete with "Command Aborted due to SQ Deletion" first. */
export function nvmeDelSq(n: NvmeCtrl, dv: DataView): number {
  const qid = dv.getUint32(SQE.CDW10, true) & 0xffff;
  const sq = qid === 0 ? undefined : n.sqs[qid];
  if (sq === undefined) return NvmeStatus.QID_INVALID | DNR;
  sq.fetchTimer?.cancel();
  sq.fetchTimer = null;
  for (const cmd of n.inflight) {
    if (cmd.sqid !== qid) continue;
    cmd.timer?.cancel();
    n.inflight.delete(cmd);
    nvmeEnqueueReqCompletion(n, qid, cmd.cid, NvmeStatus.ABORT_QUEUE, 0);
    nvmeReleaseCmd(n, cmd);
    n.stats.aborted++;
  }
  n.sqs[qid] = undefined;
  const cq = n.cqs[sq.cqid];
  if (cq !== undefined) cq.sqRefs--;
  return NvmeStatus.SUCCESS;
}

/** `nvme_del_cq`: refused while an SQ is still bound to it. */
export function nvmeDelCq(n: NvmeCtrl, dv: DataView): number {
  const qid = dv.getUint32(SQE.CDW10, true) & 0xffff;
  const cq = qid === 0 ? undefined : n.cqs[qid];
  // The spec lists Invalid Queue Identifier here (QEMU answers Completion Queue Invalid).
  if (cq === undefined) return NvmeStatus.QID_INVALID | DNR;
  if (cq.sqRefs > 0) return NvmeStatus.INVALID_QUEUE | DNR; // Invalid Queue Deletion
  n.cqs[qid] = undefined;
  return NvmeStatus.SUCCESS;
}

/** `nvme_set_feature`: Number of Queues allocates; the other supported features are stored. */
export function nvmeSetFeature(n: NvmeCtrl, dv: DataView): number {
  const cdw10 = dv.getUint32(SQE.CDW10, true);
  const cdw11 = dv.getUint32(SQE.CDW11, true);
  const fid = cdw10 & 0xff;
  if ((cdw10 & 0x8000_0000) !== 0) return FID_NOT_SAVEABLE | DNR; // SV: nothing is saveable
  switch (fid) {
    case NvmeFeat.NUM_QUEUES: {
      // Only before any I/O queue is created (NVMe Base Specification 1.4 section 5.21.1.7; QEMU
      // nvme_set_feature checks n->qs_created): shrinking it under live queues would orphan them.
      if (n.qsCreated) return NvmeStatus.CMD_SEQ_ERROR | DNR;
      const nsqr = cdw11 & 0xffff;
      const ncqr = cdw11 >>> 16;
      if (nsqr === 0xffff || ncqr === 0xffff) return NvmeStatus.INVALID_FIELD | DNR;
      // Allocate what was asked, up to the maximum; the result reports it (0's based).
      n.allocSqs = Math.min(nsqr + 1, n.maxQueues);
      n.allocCqs = Math.min(ncqr + 1, n.maxQueues);
      n.result = (((n.allocCqs - 1) << 16) | (n.allocSqs - 1)) >>> 0;
      return NvmeStatus.SUCCESS;
    }
    case NvmeFeat.ARBITRATION:
    case NvmeFeat.POWER_MGMT:
    case NvmeFeat.TEMP_THRESH:
    case NvmeFeat.IRQ_COALESCE:
    case NvmeFeat.ASYNC_EVENT:
      n.features.set(fid, cdw11);
      return NvmeStatus.SUCCESS;
    default:
      // Includes Volatile Write Cache: Identify reports none.
      return NvmeStatus.INVALID_FIELD | DNR;
  }
}

/** `nvme_get_feature`. */
export function nvmeGetFeature(n: NvmeCtrl, dv: DataView): number {
  const fid = dv.getUint32(SQE.CDW10, true) & 0xff;
  switch (fid) {
    case NvmeFeat.NUM_QUEUES:
      n.result = (((n.allocCqs - 1) << 16) | (n.allocSqs - 1)) >>> 0;
      return NvmeStatus.SUCCESS;
    case NvmeFeat.VOLATILE_WC:
      n.result = 0;
      return NvmeStatus.SUCCESS;
    case NvmeFeat.ARBITRATION:
    case NvmeFeat.POWER_MGMT:
    case NvmeFeat.TEMP_THRESH:
    case NvmeFeat.IRQ_COALESCE:
    case NvmeFeat.ASYNC_EVENT:
      n.result = n.features.get(fid) ?? 0;
      return NvmeStatus.SUCCESS;
    default:
      return NvmeStatus.INVALID_FIELD | DNR;
  }
}

/** `nvme_abort` (best effort): a command still waiting to execute completes with "Command Abort Requested". */
export function nvmeAbort(n: NvmeCtrl, dv: DataView): number {
  const cdw10 = dv.getUint32(SQE.CDW10, true);
  const sqid = cdw10 & 0xffff;
  const cid = cdw10 >>> 16;
  n.result = 1; // DW0 bit 0 set: command not aborted
  for (const cmd of n.inflight) {
    if (cmd.sqid !== sqid || cmd.cid !== cid) continue;
    if (sqid === 0 && cmd.opcode === NvmeAdminOpcode.ASYNC_EVENT) n.aerOutstanding--;
    cmd.timer?.cancel();
    n.inflight.delete(cmd);
    nvmeEnqueueReqCompletion(n, sqid, cid, NvmeStatus.ABORT_REQ, 0);
    nvmeReleaseCmd(n, cmd);
    n.stats.aborted++;
    n.result = 0;
    break;
  }
  return NvmeStatus.SUCCESS;
}
/** Space-padded ASCII field (Identify strings are not NUL-terminated). */
function putAscii(dv: DataView, off: number, len: number, s: string, pad = 0x20): void {
for (let i = 0; i < len; i++) dv.setUint8(off + i, i < s.length ? s.charCodeAt(i) & 0x7f : pad);
}
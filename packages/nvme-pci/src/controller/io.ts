// The NVM (I/O) command set: Read, Write, Flush, Write Zeroes, Dataset Management.
// QEMU hw/nvme/ctrl.c (nvme_io_cmd, nvme_rw, nvme_flush, nvme_write_zeroes, nvme_dsm); NVM Express
// NVM Command Set Specification 1.0 (Base Specification 1.4 section 6).
//
// Internal: not exported from the package.
import type { NvmeNamespace } from './namespace.js';
import { NVME_DSMGMT_AD, NVME_DSM_RANGE_SIZE, NVME_NSID_ALL, NvmeOpcode, NvmeStatus, readLe64, SQE } from './spec.js';
import { DNR } from './nvmeCtrl.js';
import type { NvmeCmd, NvmeCtrl } from './nvmeCtrl.js';
import { nvmeEnsureStaging, nvmeMapDptr } from './doorbell.js';

/**
 * `nvme_io_cmd`: fused operations are refused, Flush needs no namespace lookup, every other opcode
 * needs an attached namespace, then the command's handler runs.
 */
export function nvmeIoCmd(n: NvmeCtrl, cmd: NvmeCmd): number {
  const dv = cmd.dv;
  if (((cmd.sqe[SQE.FLAGS] ?? 0) & 3) !== 0) return NvmeStatus.INVALID_FIELD | DNR;
  const nsid = dv.getUint32(SQE.NSID, true);
  const opc = cmd.opcode;
  if (opc === NvmeOpcode.FLUSH) return nvmeFlush(n, nsid);
  if (opc !== NvmeOpcode.READ && opc !== NvmeOpcode.WRITE && opc !== NvmeOpcode.WRITE_ZEROES && opc !== NvmeOpcode.DSM) {
    return NvmeStatus.INVALID_OPCODE | DNR;
  }
  const ns = n.ns.get(nsid);
  if (ns === undefined) return NvmeStatus.INVALID_NS | DNR;
  if (opc === NvmeOpcode.DSM) return nvmeDsm(n, cmd, ns);
  if (opc === NvmeOpcode.WRITE_ZEROES) return nvmeWriteZeroes(cmd, ns);
  return nvmeRw(n, cmd, ns, opc === NvmeOpcode.WRITE);
}

/** `nvme_flush`: no volatile write cache, data is already durable. The broadcast nsid flushes all. */
export function nvmeFlush(n: NvmeCtrl, nsid: number): number {
  return nsid === NVME_NSID_ALL || n.ns.has(nsid) ? NvmeStatus.SUCCESS : NvmeStatus.INVALID_NS | DNR;
}

/** `nvme_write_zeroes`: bounds, then the blocks read back as zeros (no data pointer). */
export function nvmeWriteZeroes(cmd: NvmeCmd, ns: NvmeNamespace): number {
  const dv = cmd.dv;
  const slba = readLe64(dv, SQE.CDW10);
  const nlb = (dv.getUint32(SQE.CDW12, true) & 0xffff) + 1;
  if (!ns.inBounds(slba, nlb)) return NvmeStatus.LBA_RANGE | DNR;
  ns.zeroBytes(slba * ns.lbaSize, nlb * ns.lbaSize);
  return NvmeStatus.SUCCESS;
}

/** `nvme_rw`: Read or Write of `nlb` blocks at `slba` through the command's PRPs or SGL. */
export function nvmeRw(n: NvmeCtrl, cmd: NvmeCmd, ns: NvmeNamespace, isWrite: boolean): number {
  const dv = cmd.dv;
  const slba = readLe64(dv, SQE.CDW10);
  const nlb = (dv.getUint32(SQE.CDW12, true) & 0xffff) + 1;
  const len = nlb * ns.lbaSize;
  // QEMU nvme_rw: MDTS first (Invalid Field), then bounds (LBA Out of Range), then the data pointer.
  if (len > n.mdtsBytes) return NvmeStatus.INVALID_FIELD | DNR;
  if (!ns.inBounds(slba, nlb)) return NvmeStatus.LBA_RANGE | DNR;
  const st = nvmeMapDptr(n, cmd, len, isWrite);
  if (st !== NvmeStatus.SUCCESS) return st;
  const buf = nvmeEnsureStaging(n, len);
  const pos = slba * ns.lbaSize;
  if (isWrite) {
    // Gather everything first: a fault leaves the namespace untouched.
    const g = n.walker.gather(buf);
    if (g !== NvmeStatus.SUCCESS) return g;
    ns.writeBytes(pos, buf, 0, len);
    n.stats.bytesWritten += len;
    return NvmeStatus.SUCCESS;
  }
  // Stored bytes inside one chunk go to the host straight from the namespace; otherwise staged.
  const view = ns.storedView(pos, len);
  let s: number;
  if (view !== null) s = n.walker.scatter(view, ns.viewOffset);
  else {
    ns.readBytes(pos, buf, 0, len);
    s = n.walker.scatter(buf);
  }
  if (s === NvmeStatus.SUCCESS) n.stats.bytesRead += len;
  return s;
}

/** `nvme_dsm`, Dataset Management: read the range list, check every range, then deallocate (AD). */
export function nvmeDsm(n: NvmeCtrl, cmd: NvmeCmd, ns: NvmeNamespace): number {
  const dv = cmd.dv;
  const nr = (dv.getUint32(SQE.CDW10, true) & 0xff) + 1;
  const attrs = dv.getUint32(SQE.CDW11, true);
  const len = nr * NVME_DSM_RANGE_SIZE;
  const st = nvmeMapDptr(n, cmd, len, true);
  if (st !== NvmeStatus.SUCCESS) return st;
  const buf = n.id; // 256 ranges * 16 bytes = 4096 bytes
  const g = n.walker.gather(buf);
  if (g !== NvmeStatus.SUCCESS) return g;
  const rdv = n.idDv;
  for (let i = 0; i < nr; i++) {
    const rnlb = rdv.getUint32(i * 16 + 4, true);
    const rslba = readLe64(rdv, i * 16 + 8);
    if (!ns.inBounds(rslba, rnlb)) return NvmeStatus.LBA_RANGE | DNR;
  }
  if ((attrs & NVME_DSMGMT_AD) !== 0) {
    for (let i = 0; i < nr; i++) {
      const rnlb = rdv.getUint32(i * 16 + 4, true);
      const rslba = readLe64(rdv, i * 16 + 8);
      ns.zeroBytes(rslba * ns.lbaSize, rnlb * ns.lbaSize);
    }
  }
  return NvmeStatus.SUCCESS;
}
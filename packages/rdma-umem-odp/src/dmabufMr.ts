// kernel: drivers/infiniband/core/umem_dmabuf.c (ib_umem_dmabuf_get, _map_pages, _unmap_pages,
// _release, _get_pinned), drivers/infiniband/hw/mlx5/mr.c (mlx5_ib_reg_user_mr_dmabuf),
// drivers/infiniband/hw/mlx5/odp.c (pagefault_dmabuf_mr, mlx5_ib_dmabuf_invalidate_cb)
// An RDMA MR backed by a dma-buf, reached only through dma-core's DmaBufPort: a dynamic importer
// that allows P2P. The whole buffer is mapped on the first page fault (or at registration for a
// pinned MR), the MTT is zapped and the mapping dropped on move_notify, and the next access
// faults and maps again, after waiting for the exporter's kernel fences.
import { DMA_BIDIRECTIONAL, DMA_RESV_USAGE_KERNEL, Errno, MAX_SCHEDULE_TIMEOUT, PAGE_SHIFT, PAGE_SIZE, alignDown, isErrPtr } from '@dmakit/dma-core';
import type { Device, DmaBuf, DmaBufAttachment, DmaBufPort, SgTable } from '@dmakit/dma-core';
import { IB_ACCESS_ON_DEMAND, IB_ACCESS_SUPPORTED, MLX5_IB_MTT_READ, MLX5_IB_MTT_WRITE, ibAccessWritable } from './constants.js';
import type { HcaMkey, HcaPageFault } from './hca.js';
import type { IbPd, Mlx5IbDev } from './mlx5.js';

/** `struct ib_umem_dmabuf`. */
export class IbUmemDmabuf {
  readonly port: DmaBufPort;
  readonly dmabuf: DmaBuf;
  readonly attach: DmaBufAttachment;
  /** Byte offset of the umem in the dma-buf, and its length. */
  readonly offset: number;
  readonly length: number;
  readonly writable: boolean;
  /** The mapping of the whole dma-buf while mapped, else null. */
  sgt: SgTable | null = null;
  /** DMA address of each PAGE_SIZE page of the umem (from ALIGN_DOWN(offset)), valid while mapped. */
  readonly dmaAddr: Float64Array;
  pinned = false;
  /** Set by a move_notify on a pinned umem: the exporter revoked it (`ib_umem_dmabuf_revoke`). */
  revoked = false;
  /** Called with the reservation lock held when the exporter moves the buffer. */
  onMove: ((umem: IbUmemDmabuf) => void) | null;
  readonly stats = { maps: 0, unmaps: 0, moveNotifies: 0, fenceWaits: 0 };

  constructor(port: DmaBufPort, dmabuf: DmaBuf, attach: DmaBufAttachment, offset: number, length: number, writable: boolean, onMove: ((umem: IbUmemDmabuf) => void) | null) {
    this.port = port;
    this.dmabuf = dmabuf;
    this.attach = attach;
    this.offset = offset;
    this.length = length;
    this.writable = writable;
    this.onMove = onMove;
    this.dmaAddr = new Float64Array(ibUmemDmabufNumPages(offset, length));
  }
}

/** Pages of the umem: from ALIGN_DOWN(offset) to PAGE_ALIGN(offset + length). */
export function ibUmemDmabufNumPages(offset: number, length: number): number {
  return Math.ceil((offset + length - alignDown(offset, PAGE_SIZE)) / PAGE_SIZE);
}

/**
 * `ib_umem_dmabuf_get(device, offset, size, fd, access, ops)`: a dynamic attachment to the dma-buf
 * behind `fd` that allows P2P. -EINVAL (overflow, beyond the buffer, bad flags), -EBADF, or the
 * exporter's refusal (-EOPNOTSUPP, -ENODEV).
 */
export function ibUmemDmabufGet(dev: Device, port: DmaBufPort, offset: number, size: number, fd: number, access: number, onMove: ((umem: IbUmemDmabuf) => void) | null): IbUmemDmabuf | number {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || offset < 0 || size <= 0 || !Number.isSafeInteger(offset + size)) return -Errno.EINVAL;
  if (!Number.isInteger(access) || (access & ~IB_ACCESS_SUPPORTED) !== 0) return -Errno.EINVAL;
  const dmabuf = port.dmaBufGet(fd);
  if (isErrPtr(dmabuf)) return dmabuf;
  if (dmabuf.size < offset + size) {
    port.dmaBufPut(dmabuf);
    return -Errno.EINVAL;
  }
  let umem: IbUmemDmabuf | null = null;
  const attach = port.dmaBufDynamicAttach(
    dmabuf,
    dev,
    {
      allowPeer2peer: true,
      moveNotify: () => {
        if (umem !== null) ibUmemDmabufMoveNotify(umem);
      },
    },
    null,
  );
  if (isErrPtr(attach)) {
    port.dmaBufPut(dmabuf);
    return attach;
  }
  umem = new IbUmemDmabuf(port, dmabuf, attach, offset, size, ibAccessWritable(access), onMove);
  attach.importerPriv = umem;
  return umem;
}

/** The importer's move_notify (resv held): pinned umems are revoked, others call the driver's hook. */
function ibUmemDmabufMoveNotify(umem: IbUmemDmabuf): void {
  umem.stats.moveNotifies++;
  if (umem.pinned) {
    // kernel: ib_umem_dmabuf_revoke for pinned umems the exporter still had to move.
    umem.revoked = true;
    ibUmemDmabufUnmapPages(umem);
    return;
  }
  if (umem.onMove !== null) umem.onMove(umem);
  else ibUmemDmabufUnmapPages(umem);
}

/**
 * `ib_umem_dmabuf_map_pages(umem)`: resv held. Map the whole dma-buf, fill the per-page DMA
 * addresses of the umem's window, then wait for the exporter's kernel fences (the buffer may
 * still be moving into place). 0 or -errno.
 */
export function ibUmemDmabufMapPages(umem: IbUmemDmabuf): number {
  if (umem.revoked) return -Errno.ENODEV;
  if (umem.sgt !== null) return 0;
  const sgt = umem.port.dmaBufMapAttachment(umem.attach, DMA_BIDIRECTIONAL);
  if (isErrPtr(sgt)) return sgt;
  // Walk the DMA segments once; page i of the umem is at byte `first + i * PAGE_SIZE` of the buffer.
  const first = alignDown(umem.offset, PAGE_SIZE);
  const n = umem.dmaAddr.length;
  let seg = 0;
  let segStart = 0;
  for (let i = 0; i < n; i++) {
    const pos = first + i * PAGE_SIZE;
    while (seg < sgt.nents && pos >= segStart + (sgt.dmaLength[seg] ?? 0)) {
      segStart += sgt.dmaLength[seg] ?? 0;
      seg++;
    }
    if (seg >= sgt.nents) {
      umem.port.dmaBufUnmapAttachment(umem.attach, sgt, DMA_BIDIRECTIONAL);
      return -Errno.EINVAL;
    }
    umem.dmaAddr[i] = (sgt.dmaAddress[seg] ?? 0) + (pos - segStart);
  }
  umem.sgt = sgt;
  umem.stats.maps++;
  // wait_fence: the mapping may only be used once the kernel fences (moves) have signaled.
  umem.stats.fenceWaits++;
  const r = umem.port.dmaResvWaitTimeout(umem.dmabuf.resv, DMA_RESV_USAGE_KERNEL, false, MAX_SCHEDULE_TIMEOUT);
  return r > 0 ? 0 : r < 0 ? r : -Errno.ETIMEDOUT;
}

/** `ib_umem_dmabuf_unmap_pages(umem)`: resv held. */
export function ibUmemDmabufUnmapPages(umem: IbUmemDmabuf): void {
  const sgt = umem.sgt;
  if (sgt === null) return;
  umem.port.dmaBufUnmapAttachment(umem.attach, sgt, DMA_BIDIRECTIONAL);
  umem.sgt = null;
  umem.dmaAddr.fill(0);
  umem.stats.unmaps++;
}

/**
 * `ib_umem_dmabuf_get_pinned`: attach, pin (the exporter will not move it) and map at once, for
 * devices without ODP. -errno on failure (nothing left attached).
 */
export function ibUmemDmabufGetPinned(dev: Device, port: DmaBufPort, offset: number, size: number, fd: number, access: number): IbUmemDmabuf | number {
  const umem = ibUmemDmabufGet(dev, port, offset, size, fd, access, null);
  if (isErrPtr(umem)) return umem;
  const resv = umem.dmabuf.resv;
  let ret = port.dmaResvLock(resv, `ib_umem_dmabuf ${dev.name}`);
  if (ret === 0) {
    ret = port.dmaBufPin(umem.attach);
    if (ret === 0) {
      umem.pinned = true;
      ret = ibUmemDmabufMapPages(umem);
      if (ret !== 0) {
        port.dmaBufUnpin(umem.attach);
        umem.pinned = false;
      }
    }
    port.dmaResvUnlock(resv);
  }
  if (ret !== 0) {
    ibUmemDmabufRelease(umem);
    return ret;
  }
  return umem;
}

/** `ib_umem_dmabuf_release(umem)`: unmap and unpin under the lock, detach, drop the reference. */
export function ibUmemDmabufRelease(umem: IbUmemDmabuf): void {
  const port = umem.port;
  const resv = umem.dmabuf.resv;
  if (port.dmaResvLock(resv, 'ib_umem_dmabuf_release') === 0) {
    ibUmemDmabufUnmapPages(umem);
    if (umem.pinned) {
      port.dmaBufUnpin(umem.attach);
      umem.pinned = false;
    }
    port.dmaResvUnlock(resv);
  }
  port.dmaBufDetach(umem.dmabuf, umem.attach);
  port.dmaBufPut(umem.dmabuf);
}

/** An mlx5 MR over a dma-buf (`struct mlx5_ib_mr` with a umem_dmabuf). */
export class Mlx5DmabufMr {
  readonly dev: Mlx5IbDev;
  readonly pd: IbPd;
  readonly mkey: HcaMkey;
  readonly umem: IbUmemDmabuf;
  readonly iova: number;
  readonly length: number;
  readonly access: number;
  dead = false;
  /** The -errno of the last failed page fault (e.g. -ENODEV while the exporter revoked the buffer), 0 if none failed. dmakit's record: the kernel only logs it. */
  lastError = 0;
  readonly stats = { pageFaults: 0, pageFaultErrors: 0, invalidations: 0 };
  constructor(dev: Mlx5IbDev, pd: IbPd, mkey: HcaMkey, umem: IbUmemDmabuf, iova: number, length: number, access: number) {
    this.dev = dev;
    this.pd = pd;
    this.mkey = mkey;
    this.umem = umem;
    this.iova = iova;
    this.length = length;
    this.access = access;
  }
  /** Local key of the MR (kernel: ib_mr.lkey). */
  get lkey(): number {
    return this.mkey.key;
  }
  /** Remote key of the MR (kernel: ib_mr.rkey). */
  get rkey(): number {
    return this.mkey.key;
  }
  /** The MR currently has a mapping (MTT populated). */
  get mapped(): boolean {
    return this.umem.sgt !== null;
  }
}

/**
 * Per-device table of dma-buf MRs and the page-fault hook. Model: the HCA's page-fault handler
 * belongs to Mlx5IbDev; dma-buf MR keys are routed here first and every other fault goes to the
 * device's own handler (the kernel keeps both in dev->odp_mkeys and pagefault_mr dispatches on
 * is_dmabuf_mr()).
 */
const tables = new WeakMap<Mlx5IbDev, Map<number, Mlx5DmabufMr>>();

function tableOf(dev: Mlx5IbDev): Map<number, Mlx5DmabufMr> {
  const known = tables.get(dev);
  if (known !== undefined) return known;
  const table = new Map<number, Mlx5DmabufMr>();
  tables.set(dev, table);
  const hca = dev.hca;
  const prev = hca.onPageFault;
  hca.onPageFault = (pf: HcaPageFault) => {
    const mr = table.get(pf.mkey);
    if (mr === undefined) {
      if (prev !== undefined) prev(pf);
      else hca.pageFaultResume(pf.token, true);
      return;
    }
    const ret = pagefaultDmabufMr(mr);
    hca.pageFaultResume(pf.token, ret < 0);
  };
  return table;
}

function mttEntries(mr: Mlx5DmabufMr): Float64Array {
  const umem = mr.umem;
  const bits = MLX5_IB_MTT_READ | (umem.writable ? MLX5_IB_MTT_WRITE : 0);
  const out = new Float64Array(umem.dmaAddr.length);
  for (let i = 0; i < out.length; i++) out[i] = (umem.dmaAddr[i] ?? 0) + bits;
  return out;
}

/**
 * `pagefault_dmabuf_mr`: under the reservation lock map the whole buffer, then one UMR populating
 * every MTT entry. Pages mapped (>= 0) or -errno (revoked: -ENODEV; MR dead: -EFAULT).
 */
export function pagefaultDmabufMr(mr: Mlx5DmabufMr): number {
  mr.stats.pageFaults++;
  if (mr.dead) {
    mr.stats.pageFaultErrors++;
    mr.lastError = -Errno.EFAULT;
    return -Errno.EFAULT;
  }
  const umem = mr.umem;
  const port = umem.port;
  const resv = umem.dmabuf.resv;
  let ret = port.dmaResvLock(resv, `pagefault_dmabuf_mr ${mr.dev.name}`);
  if (ret === 0) {
    ret = ibUmemDmabufMapPages(umem);
    if (ret === 0) mr.dev.hca.umrUpdateMtt(mr.mkey, 0, umem.dmaAddr.length, mttEntries(mr), true);
    port.dmaResvUnlock(resv);
  }
  if (ret < 0) {
    mr.stats.pageFaultErrors++;
    mr.lastError = ret;
    return ret;
  }
  return umem.dmaAddr.length;
}

/** Options of a dma-buf MR registration (kernel: mlx5_ib_reg_user_mr_dmabuf()): pinned or ODP. */
export interface RegDmabufMrOptions {
  /** Pin the buffer and map at registration (`ib_umem_dmabuf_get_pinned`, no ODP). Default false. */
  pinned?: boolean;
}

/**
 * `mlx5_ib_reg_user_mr_dmabuf(pd, offset, length, iova, fd, access)`: an MR over
 * [offset, offset + length) of the dma-buf behind `fd`, at `iova`. ODP (dynamic): nothing mapped
 * until the first access faults. Pinned: mapped now. The MR or -errno.
 */
export function mlx5IbRegUserMrDmabuf(dev: Mlx5IbDev, pd: IbPd, port: DmaBufPort, offset: number, length: number, iova: number, fd: number, access: number, opts: RegDmabufMrOptions = {}): Mlx5DmabufMr | number {
  if (pd.deallocated || pd.dev !== dev) return -Errno.EINVAL;
  if (!Number.isInteger(access) || (access & ~IB_ACCESS_SUPPORTED) !== 0) return -Errno.EINVAL;
  if (!Number.isSafeInteger(iova) || iova < 0 || !Number.isSafeInteger(iova + length)) return -Errno.EINVAL;
  const pinned = opts.pinned ?? false;
  // kernel: dma-buf MRs are ODP MRs unless pinned (IB_ACCESS_ON_DEMAND is implied, not required).
  const acc = pinned ? access & ~IB_ACCESS_ON_DEMAND : access;
  let mr: Mlx5DmabufMr | null = null;
  const umem = pinned
    ? ibUmemDmabufGetPinned(dev.dmaDevice, port, offset, length, fd, acc)
    : ibUmemDmabufGet(dev.dmaDevice, port, offset, length, fd, acc, () => {
        if (mr !== null) mlx5IbDmabufInvalidate(mr);
      });
  if (isErrPtr(umem)) return umem;
  const n = umem.dmaAddr.length;
  const mk = dev.hca.createMkey(pd.pdn, acc, iova, length, 'mtt', PAGE_SHIFT, n);
  mk.pageOffset = offset % PAGE_SIZE;
  mr = new Mlx5DmabufMr(dev, pd, mk, umem, iova, length, acc);
  if (pinned) dev.hca.umrUpdateMtt(mk, 0, n, mttEntries(mr), true);
  else mk.enabled = true; // MTT all zero: the first access faults
  tableOf(dev).set(mk.key, mr);
  return mr;
}

/**
 * `mlx5_ib_dmabuf_invalidate_cb` (move_notify, resv held): zap the MTT so the HCA stops using
 * the old addresses, then unmap. The next access faults and maps again.
 */
export function mlx5IbDmabufInvalidate(mr: Mlx5DmabufMr): void {
  const umem = mr.umem;
  if (umem.sgt === null) return;
  mr.stats.invalidations++;
  mr.dev.hca.umrUpdateMtt(mr.mkey, 0, umem.dmaAddr.length, null, false);
  ibUmemDmabufUnmapPages(umem);
}

/** `mlx5_ib_dereg_mr` of a dma-buf MR: revoke the key, release the umem. 0 or -EINVAL. */
export function mlx5IbDeregDmabufMr(mr: Mlx5DmabufMr): number {
  if (mr.dead) return -Errno.EINVAL;
  mr.dead = true;
  tables.get(mr.dev)?.delete(mr.mkey.key);
  mr.mkey.enabled = false;
  ibUmemDmabufRelease(mr.umem);
  mr.dev.hca.destroyMkey(mr.mkey);
  return 0;
}

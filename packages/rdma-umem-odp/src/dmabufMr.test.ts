// The RDMA dma-buf MR (ib_umem_dmabuf + mlx5 pagefault_dmabuf_mr / invalidate_cb) against the test
// kit's fake exporter behind dma-core's DmaBufPort; the real exporters (GPU VRAM, VFIO BAR, P2P) meet
// it in apps/demo's dmabuf-p2p e2e tests.
import { describe, expect, it } from 'vitest';
import { Errno } from '@dmakit/dma-core';
import {
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_ON_DEMAND,
  IB_ACCESS_REMOTE_READ,
  IB_ACCESS_REMOTE_WRITE,
  IB_WR_RDMA_READ,
  IB_WR_RDMA_WRITE,
  IbWcStatus,
  ibUmemDmabufGet,
  ibUmemDmabufRelease,
  mlx5IbDeregDmabufMr,
  mlx5IbRegUserMrDmabuf,
  pagefaultDmabufMr,
} from '@dmakit/rdma-umem-odp';
import type { Mlx5DmabufMr, Mlx5IbMr } from '@dmakit/rdma-umem-odp';
import { createFakeDmaBufExporter, mmapAnon, pattern, sameBytes } from '@dmakit/testkit';
import type { FakeDmaBufExporter } from '@dmakit/testkit';
import { createRig, debugReports, drain } from './testing/rig.js';
import type { OdpRig } from './testing/rig.js';

const RW = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_READ;
const SIZE = 64 * 1024;
const IOVA = 0x7000_0000;

/** Requester side: an ODP MR over process memory of `a`, holding `data`. */
function source(rig: OdpRig, len: number, data?: Uint8Array): { addr: number; mr: Mlx5IbMr } {
  const addr = mmapAnon(rig.a.proc, len);
  if (data !== undefined) rig.a.proc.mm.write(addr, data);
  const mr = rig.a.ib.regUserMr(rig.a.pd, addr, len, addr, RW | IB_ACCESS_ON_DEMAND);
  if (typeof mr === 'number') throw new Error(`reg_mr ${mr}`);
  return { addr, mr };
}

function regDmabuf(rig: OdpRig, exp: FakeDmaBufExporter, fd: number, offset = 0, len = SIZE, pinned = false): Mlx5DmabufMr {
  const mr = mlx5IbRegUserMrDmabuf(rig.b.ib, rig.b.pd, exp.port, offset, len, IOVA + (offset % 4096), fd, RW, { pinned });
  if (typeof mr === 'number') throw new Error(`reg_user_mr_dmabuf ${mr}`);
  return mr;
}

function statuses(rig: OdpRig): number[] {
  return rig.a.cq.poll().map((w) => w.status);
}

describe('RDMA MR over a dma-buf (ib_umem_dmabuf, mlx5 dma-buf MR)', () => {
  it('the first access faults and maps the whole buffer; an RDMA WRITE lands in the dma-buf', () => {
    const rig = createRig();
    const exp = createFakeDmaBufExporter(rig.machine);
    const { fd, buf } = exp.exportRam(SIZE);
    const mr = regDmabuf(rig, exp, fd);
    expect(mr.mapped).toBe(false);
    const data = pattern(SIZE, 1);
    const src = source(rig, SIZE, data);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src.addr, length: SIZE, lkey: src.mr.lkey }], remoteAddr: IOVA, rkey: mr.rkey });
    drain(rig);
    expect(statuses(rig)).toEqual([IbWcStatus.IB_WC_SUCCESS]);
    expect(sameBytes(exp.read(buf, 0, SIZE), data)).toBe(true);
    expect(mr.stats.pageFaults).toBe(1);
    expect(mr.umem.stats.maps).toBe(1);
    expect(mr.mapped).toBe(true);
    expect(exp.misuse).toEqual([]);
    expect(mlx5IbDeregDmabufMr(mr)).toBe(0);
    expect(mlx5IbDeregDmabufMr(mr)).toBe(-Errno.EINVAL);
    expect(exp.liveMaps()).toBe(0);
    expect(debugReports(rig)).toEqual([]);
  });

  it('move_notify zaps the MTT and unmaps; the next access faults, maps the new pages, reads the moved bytes', () => {
    const rig = createRig();
    const exp = createFakeDmaBufExporter(rig.machine);
    const { fd, buf } = exp.exportRam(SIZE);
    const mr = regDmabuf(rig, exp, fd);
    const data = pattern(SIZE, 2);
    exp.write(buf, 0, data);
    const dst = source(rig, SIZE);
    for (let round = 0; round < 3; round++) {
      rig.a.ib.postSend(rig.a.qp, { wrId: round, opcode: IB_WR_RDMA_READ, sgList: [{ addr: dst.addr, length: SIZE, lkey: dst.mr.lkey }], remoteAddr: IOVA, rkey: mr.rkey });
      drain(rig);
      expect(statuses(rig)).toEqual([IbWcStatus.IB_WC_SUCCESS]);
      expect(sameBytes(rig.a.proc.mm.read(dst.addr, SIZE), data)).toBe(true);
      exp.move(buf);
      expect(mr.mapped).toBe(false);
      expect(Array.from(mr.mkey.mtt).every((e) => e === 0)).toBe(true);
    }
    expect(mr.umem.stats).toMatchObject({ maps: 3, unmaps: 3, moveNotifies: 3 });
    expect(mr.stats.pageFaults).toBe(3);
    expect(exp.misuse).toEqual([]);
    mlx5IbDeregDmabufMr(mr);
    expect(exp.liveMaps()).toBe(0);
  });

  it('a sub-range at an unaligned offset: the MR window starts inside the first page', () => {
    const rig = createRig();
    const exp = createFakeDmaBufExporter(rig.machine);
    const { fd, buf } = exp.exportRam(SIZE);
    const off = 3 * 4096 + 100;
    const len = 20_000;
    const mr = regDmabuf(rig, exp, fd, off, len);
    const data = pattern(len, 3);
    const src = source(rig, 32 * 1024, new Uint8Array(32 * 1024));
    rig.a.proc.mm.write(src.addr, data);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src.addr, length: len, lkey: src.mr.lkey }], remoteAddr: IOVA + (off % 4096), rkey: mr.rkey });
    drain(rig);
    expect(statuses(rig)).toEqual([IbWcStatus.IB_WC_SUCCESS]);
    expect(sameBytes(exp.read(buf, off, len), data)).toBe(true);
    expect(sameBytes(exp.read(buf, off - 100, 100), new Uint8Array(100))).toBe(true);
    // Outside the MR window: remote access error.
    rig.a.ib.postSend(rig.a.qp, { wrId: 2, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src.addr, length: 64, lkey: src.mr.lkey }], remoteAddr: IOVA + (off % 4096) + len, rkey: mr.rkey });
    drain(rig);
    expect(statuses(rig)).toEqual([IbWcStatus.IB_WC_REM_ACCESS_ERR]);
    mlx5IbDeregDmabufMr(mr);
  });

  it('a pinned MR is mapped at registration and takes no faults; a forced move revokes it', () => {
    const rig = createRig();
    const exp = createFakeDmaBufExporter(rig.machine);
    const { fd, buf } = exp.exportRam(SIZE);
    const mr = regDmabuf(rig, exp, fd, 0, SIZE, true);
    expect(mr.mapped).toBe(true);
    const data = pattern(SIZE, 4);
    exp.write(buf, 0, data);
    const dst = source(rig, SIZE);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_READ, sgList: [{ addr: dst.addr, length: SIZE, lkey: dst.mr.lkey }], remoteAddr: IOVA, rkey: mr.rkey });
    drain(rig);
    expect(statuses(rig)).toEqual([IbWcStatus.IB_WC_SUCCESS]);
    expect(mr.stats.pageFaults).toBe(0);
    exp.move(buf);
    expect(mr.umem.revoked).toBe(true);
    mlx5IbDeregDmabufMr(mr);
    expect(exp.liveMaps()).toBe(0);
    expect(exp.misuse).toEqual([]);
  });

  it('bad input: unknown fd, beyond the buffer, overflowing, bad access flags', () => {
    const rig = createRig();
    const exp = createFakeDmaBufExporter(rig.machine);
    const { fd } = exp.exportRam(SIZE);
    const dev = rig.b.ib.dmaDevice;
    expect(ibUmemDmabufGet(dev, exp.port, 0, SIZE, 99, RW, null)).toBe(-Errno.EBADF);
    expect(ibUmemDmabufGet(dev, exp.port, 4096, SIZE, fd, RW, null)).toBe(-Errno.EINVAL);
    expect(ibUmemDmabufGet(dev, exp.port, 2 ** 53, SIZE, fd, RW, null)).toBe(-Errno.EINVAL);
    expect(ibUmemDmabufGet(dev, exp.port, 0, 0, fd, RW, null)).toBe(-Errno.EINVAL);
    expect(mlx5IbRegUserMrDmabuf(rig.b.ib, rig.b.pd, exp.port, 0, SIZE, IOVA, fd, 1 << 20)).toBe(-Errno.EINVAL);
    const umem = ibUmemDmabufGet(dev, exp.port, 0, SIZE, fd, RW, null);
    if (typeof umem === 'number') throw new Error('get');
    ibUmemDmabufRelease(umem);
    expect(exp.misuse).toEqual([]);
  });
});

describe('Mlx5DmabufMr.lastError', () => {
  it('is 0 while faults succeed and records the -errno of a failed page fault', () => {
    const rig = createRig();
    const exp = createFakeDmaBufExporter(rig.machine);
    const { fd } = exp.exportRam(SIZE);
    const mr = regDmabuf(rig, exp, fd);
    expect(pagefaultDmabufMr(mr)).toBe(SIZE / 4096);
    expect(mr.lastError).toBe(0);
    expect(mlx5IbDeregDmabufMr(mr)).toBe(0);
    // A fault racing the deregistration finds the MR dead.
    expect(pagefaultDmabufMr(mr)).toBe(-Errno.EFAULT);
    expect(mr.lastError).toBe(-Errno.EFAULT);
    expect(mr.stats.pageFaultErrors).toBe(1);
    expect(exp.liveMaps()).toBe(0);
  });
});

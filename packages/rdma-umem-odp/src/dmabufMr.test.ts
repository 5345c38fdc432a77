// The RDMA dma-buf MR (ib_umem_dmabuf + mlx5 pagefault_dmabuf_mr / invalidate_cb) against a small
// fake exporter behind dma-core's DmaBufPort; the real exporters (GPU VRAM, VFIO BAR, P2P) meet
// it in apps/demo's dmabuf-p2p e2e tests.
import { describe, expect, it } from 'vitest';
import { Errno, SgTable, dmaMapPhys, dmaMappingError, dmaUnmapPhys } from '@dmakit/dma-core';
import type { Device, DmaBuf, DmaBufAttachOps, DmaBufAttachment, DmaBufPort, DmaResv, Machine } from '@dmakit/dma-core';
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
import { bytesEqual, createRig, debugReports, drain, mmapRw, pattern } from './testing/rig.js';
import type { OdpRig } from './testing/rig.js';

// ---- a small fake exporter behind dma-core's DmaBufPort (the real one is @dmakit/dmabuf, which
// this package may not import; apps/demo e2e tests use it) -----------------------------------
interface FakeChunk {
  phys: number;
  order: number;
}

class FakeResv implements DmaResv {
  locked = false;
  lockOwner: string | null = null;
  fenceCount = 0;
}

class FakeAttach implements DmaBufAttachment {
  readonly maps = new Map<SgTable, FakeChunk[]>();
  importerPriv: unknown = null;
  constructor(
    readonly dmabuf: FakeBuf,
    readonly dev: Device,
    readonly importerOps: DmaBufAttachOps | null,
  ) {}
  get peer2peer(): boolean {
    return this.importerOps?.allowPeer2peer === true;
  }
}

class FakeBuf implements DmaBuf {
  readonly resv = new FakeResv();
  readonly expName = 'fake';
  readonly name = '';
  refcount = 1;
  readonly attachments: FakeAttach[] = [];
  /** Two chunks so mappings have two DMA segments. */
  chunks: FakeChunk[];
  constructor(
    readonly size: number,
    chunks: FakeChunk[],
  ) {
    this.chunks = chunks;
  }
  get attachmentCount(): number {
    return this.attachments.length;
  }
}

function asBuf(x: DmaBuf): FakeBuf {
  if (!(x instanceof FakeBuf)) throw new TypeError('not a fake dma-buf');
  return x;
}

function asAttach(x: DmaBufAttachment): FakeAttach {
  if (!(x instanceof FakeAttach)) throw new TypeError('not a fake attachment');
  return x;
}

function asResv(x: DmaResv): FakeResv {
  if (!(x instanceof FakeResv)) throw new TypeError('not a fake reservation object');
  return x;
}

interface FakeExporter {
  readonly port: DmaBufPort;
  readonly misuse: string[];
  /** Export `size` bytes (two RAM chunks); returns the fd. */
  exportRam(size: number): { fd: number; buf: FakeBuf };
  /** Move to new pages: move_notify under the lock, then copy and free the old chunks. */
  move(buf: FakeBuf): void;
  /** CPU view of the buffer. */
  read(buf: FakeBuf, off: number, len: number): Uint8Array;
  write(buf: FakeBuf, off: number, data: Uint8Array): void;
  liveMaps(): number;
}

function createFakeExporter(m: Machine): FakeExporter {
  const fds = new Map<number, FakeBuf>();
  const misuse: string[] = [];
  let nextFd = 3;
  let live = 0;
  const half = (size: number): number => size / 2;
  const alloc = (size: number): FakeChunk[] => {
    const order = Math.ceil(Math.log2(half(size) / 4096));
    const a = m.memory.allocPages(order);
    const b = m.memory.allocPages(order);
    return [
      { phys: a, order },
      { phys: b, order },
    ];
  };
  const physAt = (buf: FakeBuf, off: number): number => {
    const h = half(buf.size);
    const c = buf.chunks[off < h ? 0 : 1];
    return (c?.phys ?? 0) + (off % h);
  };
  const held = (buf: FakeBuf, what: string): void => {
    if (!buf.resv.locked) misuse.push(`${what} without the reservation lock`);
  };
  const port: DmaBufPort = {
    dmaBufGet(fd) {
      const b = fds.get(fd);
      if (b === undefined) return -Errno.EBADF;
      b.refcount++;
      return b;
    },
    dmaBufPut(dmabuf) {
      const b = asBuf(dmabuf);
      b.refcount--;
      if (b.refcount === 0) {
        if (b.attachments.length > 0) misuse.push('released while attached');
        for (const c of b.chunks) m.memory.freePages(c.phys, c.order);
      }
    },
    dmaBufAttach(dmabuf, dev) {
      return port.dmaBufDynamicAttach(dmabuf, dev, null);
    },
    dmaBufDynamicAttach(dmabuf, dev, ops) {
      const a = new FakeAttach(asBuf(dmabuf), dev, ops);
      asBuf(dmabuf).attachments.push(a);
      return a;
    },
    dmaBufDetach(dmabuf, attach) {
      const b = asBuf(dmabuf);
      const a = asAttach(attach);
      if (a.maps.size > 0) misuse.push('detached with live mappings');
      b.attachments.splice(b.attachments.indexOf(a), 1);
    },
    dmaBufPin(attach) {
      held(asBuf(attach.dmabuf), 'pin');
      return 0;
    },
    dmaBufUnpin(attach) {
      held(asBuf(attach.dmabuf), 'unpin');
    },
    dmaBufMapAttachment(attach, dir) {
      const a = asAttach(attach);
      const b = a.dmabuf;
      held(b, 'map');
      const sgt = new SgTable(2);
      for (let i = 0; i < 2; i++) {
        const c = b.chunks[i];
        const addr = dmaMapPhys(a.dev, c?.phys ?? 0, half(b.size), dir, 0);
        if (dmaMappingError(a.dev, addr) !== 0) {
          for (let j = 0; j < i; j++) dmaUnmapPhys(a.dev, sgt.dmaAddress[j] ?? 0, half(b.size), dir, 0);
          return -Errno.ENOMEM;
        }
        sgt.dmaAddress[i] = addr;
        sgt.dmaLength[i] = half(b.size);
      }
      sgt.nents = 2;
      a.maps.set(sgt, b.chunks);
      live++;
      return sgt;
    },
    dmaBufUnmapAttachment(attach, sgt, dir) {
      const a = asAttach(attach);
      held(a.dmabuf, 'unmap');
      if (!a.maps.delete(sgt)) {
        misuse.push('unmap of a table not mapped');
        return;
      }
      for (let i = 0; i < sgt.nents; i++) dmaUnmapPhys(a.dev, sgt.dmaAddress[i] ?? 0, sgt.dmaLength[i] ?? 0, dir, 0);
      live--;
    },
    dmaBufMapAttachmentUnlocked(attach, dir) {
      const r = asResv(attach.dmabuf.resv);
      r.locked = true;
      const s = port.dmaBufMapAttachment(attach, dir);
      r.locked = false;
      return s;
    },
    dmaBufUnmapAttachmentUnlocked(attach, sgt, dir) {
      const r = asResv(attach.dmabuf.resv);
      r.locked = true;
      port.dmaBufUnmapAttachment(attach, sgt, dir);
      r.locked = false;
    },
    dmaBufBeginCpuAccess: () => 0,
    dmaBufEndCpuAccess: () => 0,
    dmaResvLock(resv) {
      const r = asResv(resv);
      if (r.locked) {
        misuse.push('resv locked twice');
        return -Errno.EDEADLK;
      }
      r.locked = true;
      return 0;
    },
    dmaResvUnlock(resv) {
      asResv(resv).locked = false;
    },
    dmaResvWaitTimeout: (_r, _u, _i, t) => Math.max(1, t),
    dmaResvTestSignaled: () => true,
  };
  return {
    port,
    misuse,
    exportRam(size) {
      const buf = new FakeBuf(size, alloc(size));
      const fd = nextFd++;
      fds.set(fd, buf);
      return { fd, buf };
    },
    move(buf) {
      buf.resv.locked = true;
      for (const a of [...buf.attachments]) a.importerOps?.moveNotify(a);
      const old = buf.chunks;
      const next = alloc(buf.size);
      const h = half(buf.size);
      for (let i = 0; i < 2; i++) m.memory.copy(next[i]?.phys ?? 0, old[i]?.phys ?? 0, h);
      buf.chunks = next;
      // The old pages stay allocated while a stale mapping still points at them.
      const stale = buf.attachments.some((a) => [...a.maps.values()].some((c) => c === old));
      if (stale) misuse.push('stale mapping kept past move_notify');
      else for (const c of old) m.memory.freePages(c.phys, c.order);
      buf.resv.locked = false;
    },
    read(buf, off, len) {
      const out = new Uint8Array(len);
      const h = half(buf.size);
      for (let done = 0; done < len; ) {
        const n = Math.min(len - done, h - ((off + done) % h));
        m.memory.readInto(physAt(buf, off + done), out, done, n);
        done += n;
      }
      return out;
    },
    write(buf, off, data) {
      const h = half(buf.size);
      for (let done = 0; done < data.length; ) {
        const n = Math.min(data.length - done, h - ((off + done) % h));
        m.memory.write(physAt(buf, off + done), data, done, n);
        done += n;
      }
    },
    liveMaps: () => live,
  };
}

const RW = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_READ;
const SIZE = 64 * 1024;
const IOVA = 0x7000_0000;

/** Requester side: an ODP MR over process memory of `a`, holding `data`. */
function source(rig: OdpRig, len: number, data?: Uint8Array): { addr: number; mr: Mlx5IbMr } {
  const addr = mmapRw(rig.a.proc, len);
  if (data !== undefined) rig.a.proc.mm.write(addr, data);
  const mr = rig.a.ib.regUserMr(rig.a.pd, addr, len, addr, RW | IB_ACCESS_ON_DEMAND);
  if (typeof mr === 'number') throw new Error(`reg_mr ${mr}`);
  return { addr, mr };
}

function regDmabuf(rig: OdpRig, exp: FakeExporter, fd: number, offset = 0, len = SIZE, pinned = false): Mlx5DmabufMr {
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
    const exp = createFakeExporter(rig.machine);
    const { fd, buf } = exp.exportRam(SIZE);
    const mr = regDmabuf(rig, exp, fd);
    expect(mr.mapped).toBe(false);
    const data = pattern(1, SIZE);
    const src = source(rig, SIZE, data);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src.addr, length: SIZE, lkey: src.mr.lkey }], remoteAddr: IOVA, rkey: mr.rkey });
    drain(rig);
    expect(statuses(rig)).toEqual([IbWcStatus.IB_WC_SUCCESS]);
    expect(bytesEqual(exp.read(buf, 0, SIZE), data)).toBe(true);
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
    const exp = createFakeExporter(rig.machine);
    const { fd, buf } = exp.exportRam(SIZE);
    const mr = regDmabuf(rig, exp, fd);
    const data = pattern(2, SIZE);
    exp.write(buf, 0, data);
    const dst = source(rig, SIZE);
    for (let round = 0; round < 3; round++) {
      rig.a.ib.postSend(rig.a.qp, { wrId: round, opcode: IB_WR_RDMA_READ, sgList: [{ addr: dst.addr, length: SIZE, lkey: dst.mr.lkey }], remoteAddr: IOVA, rkey: mr.rkey });
      drain(rig);
      expect(statuses(rig)).toEqual([IbWcStatus.IB_WC_SUCCESS]);
      expect(bytesEqual(rig.a.proc.mm.read(dst.addr, SIZE), data)).toBe(true);
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
    const exp = createFakeExporter(rig.machine);
    const { fd, buf } = exp.exportRam(SIZE);
    const off = 3 * 4096 + 100;
    const len = 20_000;
    const mr = regDmabuf(rig, exp, fd, off, len);
    const data = pattern(3, len);
    const src = source(rig, 32 * 1024, new Uint8Array(32 * 1024));
    rig.a.proc.mm.write(src.addr, data);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src.addr, length: len, lkey: src.mr.lkey }], remoteAddr: IOVA + (off % 4096), rkey: mr.rkey });
    drain(rig);
    expect(statuses(rig)).toEqual([IbWcStatus.IB_WC_SUCCESS]);
    expect(bytesEqual(exp.read(buf, off, len), data)).toBe(true);
    expect(bytesEqual(exp.read(buf, off - 100, 100), new Uint8Array(100))).toBe(true);
    // Outside the MR window: remote access error.
    rig.a.ib.postSend(rig.a.qp, { wrId: 2, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src.addr, length: 64, lkey: src.mr.lkey }], remoteAddr: IOVA + (off % 4096) + len, rkey: mr.rkey });
    drain(rig);
    expect(statuses(rig)).toEqual([IbWcStatus.IB_WC_REM_ACCESS_ERR]);
    mlx5IbDeregDmabufMr(mr);
  });

  it('a pinned MR is mapped at registration and takes no faults; a forced move revokes it', () => {
    const rig = createRig();
    const exp = createFakeExporter(rig.machine);
    const { fd, buf } = exp.exportRam(SIZE);
    const mr = regDmabuf(rig, exp, fd, 0, SIZE, true);
    expect(mr.mapped).toBe(true);
    const data = pattern(4, SIZE);
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
    const exp = createFakeExporter(rig.machine);
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
    const exp = createFakeExporter(rig.machine);
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

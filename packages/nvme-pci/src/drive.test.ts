// NvmePremappedDrive and nvmePremappedRq through the package surface: a drive probed over the
// simulated controller does I/O into a registered dma-buf, follows the exporter's moves, and
// refuses bad ranges. The exporter is a minimal one behind dma-core's DmaBufPort (one RAM chunk,
// mapped with dma_map_phys); the real exporters meet the drive in apps/demo's dmabuf-p2p tests.
import { describe, expect, it } from 'vitest';
import { BlkStatus, Errno, ReqOp, SZ_1M, SgTable, createMachine, dmaMapPhys, dmaMappingError, dmaUnmapPhys } from '@dmakit/dma-core';
import type { BlkDmaIter, BlkPhysVec, BlkRequest, BlkRqDmaMapper, Device, DmaBuf, DmaBufAttachment, DmaBufPort, DmaIovaState, DmaResv, Machine } from '@dmakit/dma-core';
import { NVME_PREMAPPED_TOKEN_BASE, NvmePremappedDrive, nvmeBarSize, nvmePremappedRq } from '@dmakit/nvme-pci';

const SIZE = 256 * 1024;
const ORDER = 6; // 64 pages

interface MiniBuf extends DmaBuf {
  refcount: number;
  phys: number;
  readonly attachments: DmaBufAttachment[];
}

/**
 * One exported RAM chunk; `move` copies it to new pages after move_notify (no fences: the old
 * pages stay allocated until `reap`, for a mapping whose unmap was deferred).
 */
function miniExporter(m: Machine): { port: DmaBufPort; fd: number; buf: MiniBuf; move(): void; reap(): void; liveMaps(): number } {
  const stale: number[] = [];
  const resv: DmaResv = { locked: false, lockOwner: null, fenceCount: 0 };
  const buf: MiniBuf = {
    resv,
    expName: 'mini',
    name: '',
    size: SIZE,
    refcount: 1,
    get attachmentCount() {
      return this.attachments.length;
    },
    phys: m.memory.allocPages(ORDER),
    attachments: [],
  };
  let live = 0;
  const map = (a: DmaBufAttachment, dir: Parameters<DmaBufPort['dmaBufMapAttachment']>[1]): SgTable | number => {
    const addr = dmaMapPhys(a.dev, buf.phys, SIZE, dir, 0);
    if (dmaMappingError(a.dev, addr) !== 0) return -Errno.ENOMEM;
    const sgt = new SgTable(1);
    sgt.dmaAddress[0] = addr;
    sgt.dmaLength[0] = SIZE;
    sgt.nents = 1;
    live++;
    return sgt;
  };
  const unmap = (a: DmaBufAttachment, sgt: SgTable, dir: Parameters<DmaBufPort['dmaBufMapAttachment']>[1]): void => {
    dmaUnmapPhys(a.dev, sgt.dmaAddress[0] ?? 0, SIZE, dir, 0);
    live--;
  };
  const port: DmaBufPort = {
    dmaBufGet: (fd) => (fd === 3 ? (buf.refcount++, buf) : -Errno.EBADF),
    dmaBufPut: () => {
      buf.refcount--;
    },
    dmaBufAttach: (d, dev) => port.dmaBufDynamicAttach(d, dev, null),
    dmaBufDynamicAttach(_d, dev, ops) {
      const a: DmaBufAttachment = { dmabuf: buf, dev, importerPriv: null, peer2peer: ops?.allowPeer2peer === true, importerOps: ops };
      buf.attachments.push(a);
      return a;
    },
    dmaBufDetach(_d, a) {
      buf.attachments.splice(buf.attachments.indexOf(a), 1);
    },
    dmaBufPin: () => 0,
    dmaBufUnpin: () => undefined,
    dmaBufMapAttachment: map,
    dmaBufUnmapAttachment: unmap,
    dmaBufMapAttachmentUnlocked: map,
    dmaBufUnmapAttachmentUnlocked: unmap,
    dmaBufBeginCpuAccess: () => 0,
    dmaBufEndCpuAccess: () => 0,
    dmaResvLock: () => 0,
    dmaResvUnlock: () => undefined,
    dmaResvWaitTimeout: (_r, _u, _i, t) => Math.max(1, t),
    dmaResvTestSignaled: () => true,
  };
  return {
    port,
    fd: 3,
    buf,
    move() {
      for (const a of [...buf.attachments]) a.importerOps?.moveNotify(a);
      const next = m.memory.allocPages(ORDER);
      m.memory.copy(next, buf.phys, SIZE);
      stale.push(buf.phys);
      buf.phys = next;
    },
    reap() {
      for (const p of stale.splice(0)) m.memory.freePages(p, ORDER);
    },
    liveMaps: () => live,
  };
}

/** The block layer's mapper is never asked about pre-mapped requests: it refuses everything. */
class NoBlk implements BlkRqDmaMapper {
  readonly name = 'no-blk';
  calls = 0;
  #no(iter?: BlkDmaIter): boolean {
    this.calls++;
    if (iter !== undefined) iter.status = BlkStatus.IOERR;
    return false;
  }
  blkRqDmaMapIterStart(_r: BlkRequest, _d: Device, _s: DmaIovaState, iter: BlkDmaIter): boolean {
    return this.#no(iter);
  }
  blkRqDmaMapIterNext(_r: BlkRequest, _d: Device, _s: DmaIovaState, iter: BlkDmaIter): boolean {
    return this.#no(iter);
  }
  blkRqDmaMapCoalesce(): boolean {
    return false;
  }
  blkRqDmaUnmap(): boolean {
    return true;
  }
  blkRqIntegrityDmaMapIterStart(_r: BlkRequest, _d: Device, _s: DmaIovaState, iter: BlkDmaIter): boolean {
    return this.#no(iter);
  }
  blkRqIntegrityDmaMapIterNext(_r: BlkRequest, _d: Device, iter: BlkDmaIter): boolean {
    return this.#no(iter);
  }
  blkRqIntegrityDmaUnmap(): boolean {
    return true;
  }
  blkRqMapSg(): number {
    return this.#no() ? 1 : 0;
  }
  blkRqMapIntegritySg(): number {
    return 0;
  }
  reqBvec(_r: BlkRequest, _out: BlkPhysVec): boolean {
    return this.#no();
  }
}

function rig(lbaSize: 512 | 4096 = 4096): { m: Machine; drive: NvmePremappedDrive; blk: NoBlk; exp: ReturnType<typeof miniExporter> } {
  const m = createMachine({ ramBytes: 256 * SZ_1M, seed: 7, swiotlbBytes: 0 });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: nvmeBarSize(4), is64: true }] });
  const blk = new NoBlk();
  const drive = new NvmePremappedDrive(m, dev, blk, { lbaSize, capacityLbas: (4 * SZ_1M) / lbaSize });
  expect(drive.probe()).toBe(0);
  return { m, drive, blk, exp: miniExporter(m) };
}

describe('NvmePremappedDrive: I/O into a registered dma-buf', () => {
  it('writes buffer bytes to the namespace and reads them back elsewhere in the buffer, with no per-I/O mapping', () => {
    const { m, drive, blk, exp } = rig();
    const pre = drive.register(exp.port, exp.fd);
    if (typeof pre === 'number') throw new Error(`register ${pre}`);
    const entries = m.dmaDebug.entries;
    const data = m.rng.fill(new Uint8Array(64 * 1024));
    m.memory.write(exp.buf.phys, data);
    expect(drive.io(pre, ReqOp.WRITE, 10, 0, data.length)).toBe(BlkStatus.OK);
    expect(drive.ctrl.namespace(1)?.readLbas(10, 16)).toEqual(data);
    expect(drive.io(pre, ReqOp.READ, 10, 128 * 1024, data.length)).toBe(BlkStatus.OK);
    expect(m.memory.read(exp.buf.phys + 128 * 1024, data.length)).toEqual(data);
    expect(m.dmaDebug.entries).toBe(entries);
    expect(drive.statuses).toEqual([BlkStatus.OK, BlkStatus.OK]);
    expect(drive.submitted).toBe(2);
    expect(pre.stats.maps).toBe(1);
    expect(blk.calls).toBe(0);
    expect(drive.unregister(pre)).toBe(0);
    expect(exp.liveMaps()).toBe(0);
    drive.remove();
    expect(m.dmaDebug.entries).toBe(0);
    expect(m.dmaDebug.reports).toEqual([]);
  });

  it('follows the exporter: a move with I/O in flight defers the unmap; new I/O waits (RESOURCE), then maps the new pages', () => {
    const { m, drive, exp } = rig(512);
    const pre = drive.register(exp.port, exp.fd);
    if (typeof pre === 'number') throw new Error(`register ${pre}`);
    const file = m.rng.fill(new Uint8Array(8192));
    drive.ctrl.namespace(1)?.writeLbas(0, file);
    const seen: BlkStatus[] = [];
    expect(drive.submit(pre, ReqOp.READ, 0, 0, 8192, (_rq, st) => seen.push(st))).toBe(BlkStatus.OK);
    exp.move();
    expect(pre.stats.deferredUnmaps).toBe(1);
    expect(drive.submit(pre, ReqOp.READ, 16, 8192, 4096)).toBe(BlkStatus.RESOURCE);
    m.scheduler.runUntilIdle();
    expect(seen).toEqual([BlkStatus.OK]);
    expect(pre.sgt).toBeNull(); // unmapped when the in-flight READ completed
    exp.reap();
    // The next I/O maps the new pages and its bytes land there.
    expect(drive.io(pre, ReqOp.READ, 0, 16 * 1024, 8192)).toBe(BlkStatus.OK);
    expect(m.memory.read(exp.buf.phys + 16 * 1024, 8192)).toEqual(file);
    expect(pre.stats).toMatchObject({ maps: 2, moveNotifies: 1 });
    expect(drive.unregister(pre)).toBe(0);
    drive.remove();
    expect(m.dmaDebug.reports).toEqual([]);
  });

  it('bad input: ranges the queue limits refuse are INVAL, unknown fd is -EBADF, double unregister is -EINVAL', () => {
    const { drive, exp } = rig();
    expect(drive.register(exp.port, 42)).toBe(-Errno.EBADF);
    const pre = drive.register(exp.port, exp.fd);
    if (typeof pre === 'number') throw new Error(`register ${pre}`);
    expect(drive.submit(pre, ReqOp.READ, 0, 0, 1000)).toBe(BlkStatus.INVAL); // not whole blocks
    expect(drive.submit(pre, ReqOp.READ, 0, SIZE - 4096, 8192)).toBe(BlkStatus.INVAL); // beyond the buffer
    expect(drive.submit(pre, ReqOp.READ, -1, 0, 4096)).toBe(BlkStatus.INVAL);
    expect(drive.submit(pre, ReqOp.READ, 0.5, 0, 4096)).toBe(BlkStatus.INVAL);
    expect(drive.submitted).toBe(0);
    expect(drive.unregister(pre)).toBe(0);
    expect(drive.unregister(pre)).toBe(-Errno.EINVAL);
    drive.remove();
  });
});

describe('nvmePremappedRq: the block request of a dma-token I/O', () => {
  it('one bvec over the token window, one physical segment; null for what the limits refuse', () => {
    const { drive, exp } = rig();
    const pre = drive.register(exp.port, exp.fd);
    if (typeof pre === 'number') throw new Error(`register ${pre}`);
    const lim = drive.host.queueLimits();
    const rq = nvmePremappedRq(lim, pre, ReqOp.WRITE, 80, 8192 + 4096, 8192, 5);
    expect(rq).not.toBeNull();
    expect(rq?.bio?.vcnt).toBe(1);
    expect((rq?.bio?.bvPage[0] ?? 0) + (rq?.bio?.bvOffset[0] ?? 0)).toBe(pre.token + 12288);
    expect(pre.token).toBeGreaterThanOrEqual(NVME_PREMAPPED_TOKEN_BASE);
    expect(rq).toMatchObject({ tag: 5, op: ReqOp.WRITE, sector: 80, dataLen: 8192, nrPhysSegments: 1 });
    expect(nvmePremappedRq(lim, pre, ReqOp.READ, 0, 0, 0)).toBeNull();
    expect(nvmePremappedRq(lim, pre, ReqOp.READ, 1, 0, 4096)).toBeNull(); // sector not on a 4 KiB block
    expect(nvmePremappedRq(lim, pre, ReqOp.READ, 0, 2, 4096)).toBeNull(); // dma_alignment
    expect(nvmePremappedRq(lim, pre, ReqOp.READ, 0, 0, SIZE + 4096)).toBeNull();
    expect(nvmePremappedRq(lim, pre, ReqOp.READ, 0, 0, (lim.maxSectors + 8) * 512)).toBeNull();
    drive.unregister(pre);
    drive.remove();
  });
});

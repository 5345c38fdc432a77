// Property (real importers, real IOMMU): over seeded interleavings of GPU eviction / restore and
// importer traffic (NVMe pre-mapped READ/WRITE, RDMA READ through a dma-buf MR), every byte read
// is the last byte written, no importer uses a mapping from before a move_notify, and teardown
// leaves no mapping, IOVA range, pin or VRAM page behind.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BlkStatus, ReqOp, SZ_1G, SZ_1M, createMachine, isErrPtr } from '@dmakit/dma-core';
import { DmaBufFdTable, GpuVramExporter, SystemHeap, createDmaBufPort, dmaBufFd, dmaBufMappingIsStale, dmaBufMappingStats, dmaBufVmapUnlocked, dmaBufVunmapUnlocked } from '@dmakit/dmabuf';
import { IbWcStatus, mlx5IbDeregDmabufMr, mlx5IbRegUserMrDmabuf } from '@dmakit/rdma-umem-odp';
import { LBA, RDMA_RW, buildDmabufTopology, createDmabufDrive, createDmabufFabric } from './dmabufP2pRig.js';

const SIZE = SZ_1M;
const CH = 64 * 1024;
const CHUNKS = SIZE / CH;

type Op = { k: 'nvmeRead' | 'nvmeWrite' | 'rdmaRead'; c: number } | { k: 'evict' | 'restore' } | { k: 'evictInFlight'; c: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constantFrom('nvmeRead' as const, 'nvmeWrite' as const, 'rdmaRead' as const), c: fc.integer({ min: 0, max: CHUNKS - 1 }) }),
  fc.constantFrom({ k: 'evict' as const }, { k: 'restore' as const }),
  fc.record({ k: fc.constant('evictInFlight' as const), c: fc.integer({ min: 0, max: CHUNKS - 1 }) }),
);

describe('dmabuf-p2p interleavings (NVMe + RDMA importers, GPU moves, strict IOMMU)', () => {
  it('bytes are the last written, no stale mapping is used, nothing leaks', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 14 }), fc.integer({ min: 1, max: 1000 }), (ops, seed) => {
        const m = createMachine({ ramBytes: SZ_1G, seed });
        const rig = buildDmabufTopology(m, 'strict');
        const live0 = dmaBufMappingStats.live;
        const fds = new DmaBufFdTable();
        const port = createDmaBufPort(fds);
        const gpu = new GpuVramExporter(m, rig.gpuDev);
        const heap = new SystemHeap(m);
        const lbas = SIZE / LBA;
        const drive = createDmabufDrive(rig, 3 * lbas);
        const fileB = m.rng.fill(new Uint8Array(SIZE));
        drive.ctrl.namespace(1)?.writeLbas(lbas, fileB);
        const gbuf = gpu.exportBuffer(SIZE, { maxRange: 256 * 1024 });
        const sink = heap.allocate(SIZE);
        if (isErrPtr(gbuf) || isErrPtr(sink)) throw new Error('export');
        const fd = dmaBufFd(fds, gbuf);
        const sinkFd = dmaBufFd(fds, sink);
        const pre = drive.register(port, fd);
        if (isErrPtr(pre)) throw new Error('register');
        const fabric = createDmabufFabric(rig);
        const mrGpu = mlx5IbRegUserMrDmabuf(fabric.local, fabric.pdLocal, port, 0, SIZE, 0x1000_0000, fd, RDMA_RW);
        const mrSink = mlx5IbRegUserMrDmabuf(fabric.remote, fabric.pdRemote, port, 0, SIZE, 0x2000_0000, sinkFd, RDMA_RW);
        if (isErrPtr(mrGpu) || isErrPtr(mrSink)) throw new Error('reg mr');
        const view = dmaBufVmapUnlocked(sink);
        if (isErrPtr(view)) throw new Error('vmap');
        const shadow = new Uint8Array(SIZE); // the GPU buffer starts zeroed
        for (const o of ops) {
          switch (o.k) {
            case 'nvmeRead':
              expect(drive.io(pre, ReqOp.READ, lbas + (o.c * CH) / LBA, o.c * CH, CH)).toBe(BlkStatus.OK);
              shadow.set(fileB.subarray(o.c * CH, (o.c + 1) * CH), o.c * CH);
              break;
            case 'nvmeWrite': {
              expect(drive.io(pre, ReqOp.WRITE, 2 * lbas + (o.c * CH) / LBA, o.c * CH, CH)).toBe(BlkStatus.OK);
              const disk = drive.ctrl.namespace(1)?.readLbas(2 * lbas + (o.c * CH) / LBA, CH / LBA);
              expect(disk !== undefined && Buffer.compare(disk, shadow.subarray(o.c * CH, (o.c + 1) * CH)) === 0).toBe(true);
              break;
            }
            case 'rdmaRead':
              expect(fabric.rdmaRead(mrGpu, o.c * CH, mrSink, o.c * CH, CH)).toBe(IbWcStatus.IB_WC_SUCCESS);
              expect(Buffer.compare(view.read(o.c * CH, CH), shadow.subarray(o.c * CH, (o.c + 1) * CH))).toBe(0);
              break;
            case 'evict':
              expect(gpu.evict(gbuf)).toBe(0);
              break;
            case 'restore':
              expect(gpu.restore(gbuf)).toBe(0);
              break;
            case 'evictInFlight': {
              const mark = drive.statuses.length;
              expect(drive.submit(pre, ReqOp.READ, lbas + (o.c * CH) / LBA, o.c * CH, CH)).toBe(BlkStatus.OK);
              expect(gpu.placement(gbuf) === 'vram' ? gpu.evict(gbuf) : gpu.restore(gbuf)).toBe(0);
              m.scheduler.runUntilIdle();
              expect(drive.statuses.slice(mark).every((s) => s === BlkStatus.OK)).toBe(true);
              shadow.set(fileB.subarray(o.c * CH, (o.c + 1) * CH), o.c * CH);
              break;
            }
          }
          // No importer holds a mapping from before the last move_notify once its I/O is done.
          if (pre.sgt !== null && !pre.invalid) expect(dmaBufMappingIsStale(pre.attach, pre.sgt)).toBe(false);
          if (mrGpu.umem.sgt !== null) expect(dmaBufMappingIsStale(mrGpu.umem.attach, mrGpu.umem.sgt)).toBe(false);
        }
        const back = gpu.gpuRead(gbuf, 0, SIZE);
        expect(back instanceof Uint8Array && Buffer.compare(back, shadow) === 0).toBe(true);
        dmaBufVunmapUnlocked(sink, view);
        mlx5IbDeregDmabufMr(mrGpu);
        mlx5IbDeregDmabufMr(mrSink);
        expect(drive.unregister(pre)).toBe(0);
        drive.remove();
        fds.closeAll();
        rig.iommu?.flushQueues();
        const st = rig.iommu?.stats();
        expect(dmaBufMappingStats.live).toBe(live0);
        expect(gpu.stats.vramPagesUsed).toBe(0);
        expect(heap.liveBuffers).toBe(0);
        expect(m.dmaDebug.entries).toBe(0);
        expect(m.dmaDebug.iovaStates).toBe(0);
        expect(st?.iovaAllocs).toBe(st?.iovaFrees);
        expect(rig.iommu?.faults.length).toBe(0);
        expect(m.dmaDebug.reports).toEqual([]);
      }),
      { numRuns: 40, seed: 11 },
    );
  });
});

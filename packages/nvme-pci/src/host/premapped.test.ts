// Pre-mapped NVMe I/O into a registered dma-buf, against the simulated controller and the test
// kit's fake exporter behind dma-core's DmaBufPort (the real exporters and the IOMMU meet it in
// apps/demo's e2e tests). Every other request would go to the block layer's mapper.
import { describe, expect, it } from 'vitest';
import { BlkStatus, Errno, ReqOp, SZ_1M, createMachine } from '@dmakit/dma-core';
import type { BlkRequest, Device, Machine } from '@dmakit/dma-core';
import { NvmeController, NvmeDev, NvmePremappedMapper } from '@dmakit/nvme-pci';
import type { NvmePremappedBuffer } from '@dmakit/nvme-pci';
import { createFakeDmaBufExporter, pattern, sameBytes } from '@dmakit/testkit';
import type { FakeDmaBuf, FakeDmaBufExporter } from '@dmakit/testkit';
import { RefusingBlkMapper, TEST_LATENCY_NS, makeRequest } from '../testing/blockLayer.js';

const SIZE = 64 * 1024;

interface Rig {
  m: Machine;
  dev: Device;
  ctrl: NvmeController;
  host: NvmeDev;
  blk: RefusingBlkMapper;
  mapper: NvmePremappedMapper;
  exp: FakeDmaBufExporter;
  fd: number;
  fake: FakeDmaBuf;
  buf: NvmePremappedBuffer;
  ended: Map<BlkRequest, BlkStatus>;
  done: (rq: BlkRequest, st: BlkStatus) => void;
  /** dma-debug entries of the driver itself (queues, pools) before the registration. */
  base: number;
}

function rig(hostOpts: { sglThreshold?: number } = { sglThreshold: 0 }): Rig {
  const m = createMachine({ ramBytes: 256 * SZ_1M, swiotlbBytes: 0 });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: 0x4000 }] });
  const ctrl = new NvmeController(m, dev, { namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: 1 << 16 }], maxQueues: 4, latencyNs: TEST_LATENCY_NS });
  const blk = new RefusingBlkMapper();
  const mapper = new NvmePremappedMapper(blk);
  const host = new NvmeDev(m, dev, ctrl, mapper, hostOpts);
  expect(host.probe()).toBe(0);
  const base = m.dmaDebug.entries;
  const exp = createFakeDmaBufExporter(m);
  const { fd, buf: fake } = exp.exportRam(SIZE);
  const buf = mapper.register(exp.port, dev, fd);
  if (typeof buf === 'number') throw new Error(`register ${buf}`);
  const ended = new Map<BlkRequest, BlkStatus>();
  return { m, dev, ctrl, host, blk, mapper, exp, fd, fake, buf, ended, done: (rq, st) => ended.set(rq, st), base };
}

describe('NVMe pre-mapped I/O into a registered dma-buf', () => {
  it('writes and reads at offsets of the buffer with no per-I/O DMA mapping; bytes land on the namespace', () => {
    const r = rig();
    const lim = r.host.queueLimits();
    const entries = r.m.dmaDebug.entries;
    expect(entries).toBe(r.base + 2); // the registration's mapping (two chunks)
    const data = pattern(8192, 1);
    r.exp.write(r.fake, 28 * 1024, data); // spans both chunks: two DMA segments
    const w = makeRequest(lim, ReqOp.WRITE, 16, [[r.buf.addr(28 * 1024), 8192]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    expect(r.m.dmaDebug.entries).toBe(entries);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toBe(BlkStatus.OK);
    expect(sameBytes(r.ctrl.namespace(1)?.readLbas(16, 16), data)).toBe(true);
    // Read it back elsewhere in the buffer, 4 KiB in two bvecs.
    const rd = makeRequest(lim, ReqOp.READ, 16, [[r.buf.addr(4096), 2048], [r.buf.addr(6144), 6144]], r.done, 1);
    expect(r.host.queueRq(rd)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(rd)).toBe(BlkStatus.OK);
    expect(sameBytes(r.exp.read(r.fake, 4096, 8192), data)).toBe(true);
    expect(r.blk.calls).toBe(0);
    expect(r.mapper.stats.premappedRequests).toBe(2);
    expect(r.buf.stats.maps).toBe(1);
    expect(r.m.dmaDebug.entries).toBe(entries);
    expect(r.mapper.unregister(r.buf)).toBe(0);
    expect(r.m.dmaDebug.entries).toBe(r.base);
    expect(r.exp.misuse).toEqual([]);
    expect(r.m.dmaDebug.reports).toEqual([]);
  });

  it('move_notify with nothing in flight unmaps at once; the next I/O maps again and sees the moved bytes', () => {
    const r = rig();
    const lim = r.host.queueLimits();
    const data = pattern(4096, 2);
    r.exp.write(r.fake, 0, data);
    r.exp.move(r.fake);
    expect(r.buf.sgt).toBeNull();
    const w = makeRequest(lim, ReqOp.WRITE, 0, [[r.buf.addr(0), 4096]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toBe(BlkStatus.OK);
    expect(sameBytes(r.ctrl.namespace(1)?.readLbas(0, 8), data)).toBe(true);
    expect(r.buf.stats).toMatchObject({ maps: 2, unmaps: 1, moveNotifies: 1 });
    expect(r.mapper.stats.remaps).toBe(1);
    expect(r.exp.misuse).toEqual([]);
    r.mapper.unregister(r.buf);
  });

  it('move_notify with I/O in flight: new I/O waits (RESOURCE), the unmap happens when the last one completes', () => {
    const r = rig();
    const lim = r.host.queueLimits();
    const w = makeRequest(lim, ReqOp.WRITE, 0, [[r.buf.addr(0), 4096]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    expect(r.buf.inflight).toBe(1);
    r.exp.move(r.fake);
    // The old mapping is still held for the in-flight command; the fake saw no premature reuse.
    expect(r.buf.sgt).not.toBeNull();
    expect(r.buf.stats.deferredUnmaps).toBe(1);
    const w2 = makeRequest(lim, ReqOp.WRITE, 8, [[r.buf.addr(4096), 4096]], r.done, 1);
    expect(r.host.queueRq(w2)).toBe(BlkStatus.RESOURCE);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toBe(BlkStatus.OK);
    expect(r.buf.sgt).toBeNull();
    expect(r.host.queueRq(w2)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w2)).toBe(BlkStatus.OK);
    expect(r.buf.stats.maps).toBe(2);
    r.mapper.unregister(r.buf);
    // The fake flagged the move: a stale mapping was still live when it moved (expected here).
    expect(r.exp.misuse).toEqual(['stale mapping kept past move_notify']);
  });

  it('with SGLs, an I/O split by runs() at the DMA discontinuity moves every byte', () => {
    const r = rig({});
    const lim = r.host.queueLimits();
    const data = pattern(SIZE, 5);
    r.exp.write(r.fake, 0, data);
    const runs = r.buf.runs(0, SIZE);
    expect(runs).toEqual([
      [0, SIZE / 2],
      [SIZE / 2, SIZE / 2],
    ]);
    runs.forEach(([o, n], i) => {
      expect(r.host.queueRq(makeRequest(lim, ReqOp.WRITE, o / 512, [[r.buf.addr(o), n]], r.done, i))).toBe(BlkStatus.OK);
    });
    r.m.scheduler.runUntilIdle();
    expect([...r.ended.values()]).toEqual([BlkStatus.OK, BlkStatus.OK]);
    expect(r.host.stats.sglCommands).toBe(2);
    expect(sameBytes(r.ctrl.namespace(1)?.readLbas(0, SIZE / 512), data)).toBe(true);
    expect(r.mapper.ensureMapped(r.buf)).toBe(0);
    r.exp.move(r.fake);
    expect(r.mapper.ensureMapped(r.buf)).toBe(0);
    expect(r.buf.stats.maps).toBe(2);
    r.mapper.unregister(r.buf);
  });

  it('bad input: I/O beyond the buffer, another device, unregister while busy, unknown fd', () => {
    const r = rig();
    const lim = r.host.queueLimits();
    const over = makeRequest(lim, ReqOp.READ, 0, [[r.buf.addr(SIZE - 2048), 4096]], r.done);
    expect(r.host.queueRq(over)).toBe(BlkStatus.INVAL);
    expect(r.mapper.register(r.exp.port, r.dev, 99)).toBe(-Errno.EBADF);
    const w = makeRequest(lim, ReqOp.WRITE, 0, [[r.buf.addr(0), 4096]], r.done, 2);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    expect(r.mapper.unregister(r.buf)).toBe(-Errno.EBUSY);
    r.m.scheduler.runUntilIdle();
    expect(r.mapper.unregister(r.buf)).toBe(0);
    expect(r.mapper.unregister(r.buf)).toBe(-Errno.EINVAL);
    // After unregistering, the token is nobody's: the block layer's mapper gets (and refuses) it.
    const late = makeRequest(lim, ReqOp.WRITE, 0, [[r.buf.addr(0), 4096], [r.buf.addr(8192), 4096]], r.done, 3);
    expect(r.host.queueRq(late)).toBe(BlkStatus.IOERR);
    expect(r.blk.calls).toBeGreaterThan(0);
    expect(r.m.dmaDebug.entries).toBe(r.base);
  });
});

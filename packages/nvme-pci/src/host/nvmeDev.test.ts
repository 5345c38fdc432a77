// The host driver against the simulated controller, with a small fake of the block layer's DMA
// iterator (src/testing/blockLayer.ts: one direct mapping per bvec; the IOVA-backed combinations are in apps/demo e2e tests).
import { attachDmaOps, BlkStatus, createMachine, ReqOp, SgTable, SZ_1M } from '@dmakit/dma-core';
import type { BlkRequest, Device, DmaCoherentBuffer, DmaMapOps, Machine } from '@dmakit/dma-core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  IOD_SINGLE_SEGMENT,
  NvmeController,
  NvmeDev,
  NVME_MAX_BYTES,
  NvmeSglType,
  readLe64,
  SQE,
} from '@dmakit/nvme-pci';
import type { NvmeControllerOptions, NvmeDevOptions, NvmeIod } from '@dmakit/nvme-pci';
import { pattern, sameBytes } from '@dmakit/testkit';
import { DirectBlkMapper, TEST_LATENCY_NS, makeRequest } from '../testing/blockLayer.js';

const PAGE = 4096;

interface Rig {
  m: Machine;
  dev: Device;
  ctrl: NvmeController;
  host: NvmeDev;
  blk: DirectBlkMapper;
  ended: Map<BlkRequest, BlkStatus[]>;
  done: (rq: BlkRequest, st: BlkStatus) => void;
}

function rig(hostOpts: NvmeDevOptions = {}, ctrlOpts: Partial<NvmeControllerOptions> = {}): Rig {
  const m = createMachine({ ramBytes: 256 * SZ_1M, swiotlbBytes: 0 });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 32, bars: [{ size: 0x4000 }] });
  const ctrl = new NvmeController(m, dev, { namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: 1 << 16 }], maxQueues: 4, latencyNs: TEST_LATENCY_NS, ...ctrlOpts });
  const blk = new DirectBlkMapper();
  const host = new NvmeDev(m, dev, ctrl, blk, hostOpts);
  const ended = new Map<BlkRequest, BlkStatus[]>();
  const done = (rq: BlkRequest, st: BlkStatus): void => {
    const l = ended.get(rq) ?? [];
    l.push(st);
    ended.set(rq, l);
  };
  return { m, dev, ctrl, host, blk, ended, done };
}

function live(r: Rig): Rig {
  expect(r.host.probe()).toBe(0);
  expect(r.host.state).toBe('live');
  return r;
}

/** `n` physically contiguous pages (order-aligned block). */
function pages(m: Machine, n: number): number {
  const order = Math.ceil(Math.log2(n));
  const p = m.memory.allocPages(order);
  expect(p).not.toBe(0);
  return p;
}

/** Fill `len` bytes at `phys` with the kit's pattern for `seed`; returns them. */
function fill(m: Machine, phys: number, len: number, seed: number): Uint8Array {
  const b = pattern(len, seed);
  m.memory.write(phys, b);
  return b;
}

function iodOf(req: BlkRequest): NvmeIod {
  return req.pdu as NvmeIod;
}

/** The PRP entries of a list page (entries `n`). */
function listEntries(m: Machine, phys: number, n: number): number[] {
  const b = m.memory.read(phys, n * 8);
  const dv = new DataView(b.buffer);
  return Array.from({ length: n }, (_, i) => readLe64(dv, i * 8));
}

describe('NvmeDev bring-up (nvme_probe / nvme_reset_work)', () => {
  it('enables the controller, identifies it and its namespace, creates the I/O queues', () => {
    const r = live(rig({ ioQueues: 2, ioQueueDepth: 64 }));
    expect(r.ctrl.ready).toBe(true);
    expect(r.host.namespaces).toEqual([{ nsid: 1, capacityLbas: 1 << 16, lbaShift: 9, lbaSize: 512 }]);
    expect(r.host.ioQueueCount).toBe(2);
    expect(r.host.ioQueueDepth).toBe(64);
    expect(r.host.sglSupported).toBe(true);
    const lim = r.host.queueLimits();
    expect(lim.virtBoundaryMask).toBe(PAGE - 1);
    expect(lim.maxHwSectors).toBe(NVME_MAX_BYTES >> 9);
    // Identify x3, Set Features, Create CQ/SQ x2
    expect(r.host.stats.adminCommands).toBe(3 + 1 + 4);
  });

  it('gets the number of queues the controller grants', () => {
    const r = live(rig({ ioQueues: 8 }));
    expect(r.host.ioQueueCount).toBe(4);
  });

  it('fails the probe with a typed status when the controller never becomes ready', () => {
    const r = rig({}, { maxQueueEntries: 16 });
    // An admin queue deeper than MQES: the controller refuses to enable (CSTS.RDY stays 0).
    expect(r.host.probe()).toBeLessThan(0);
    expect(r.host.state).toBe('dead');
    expect(r.host.lastError).toMatch(/not ready/);
    const req = makeRequest(r.host.queueLimits(), ReqOp.READ, 0, [[pages(r.m, 1), PAGE]], r.done);
    expect(r.host.queueRq(req)).toBe(BlkStatus.IOERR);
  });
});

describe('nvme_map_data and the PRP builder', () => {
  it('single segment fast path: PRP1 only, or PRP1 + PRP2 when it crosses a page', () => {
    const r = live(rig());
    const lim = r.host.queueLimits();
    const buf = pages(r.m, 4);
    const data = fill(r.m, buf, 3 * PAGE, 1);
    const w = makeRequest(lim, ReqOp.WRITE, 8, [[buf + 0x200, PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    const iod = iodOf(w);
    expect(iod.flags & IOD_SINGLE_SEGMENT).toBe(IOD_SINGLE_SEGMENT);
    expect(readLe64(iod.cmdDv, SQE.PRP1)).toBe(buf + 0x200);
    expect(readLe64(iod.cmdDv, SQE.PRP2)).toBe(buf + PAGE);
    expect(r.blk.starts).toBe(0); // no iterator for a single segment
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
    expect(r.ctrl.namespace(1)?.readLbas(8, 8)).toEqual(data.subarray(0x200, 0x200 + PAGE));
  });

  it('unaligned first page then whole pages: a small-pool PRP list with hand-computed entries', () => {
    const r = live(rig({ sglThreshold: 0 }));
    const lim = r.host.queueLimits();
    const a = pages(r.m, 1);
    const b = pages(r.m, 4);
    const c = pages(r.m, 1);
    const segs = [[a + 0xe00, 0x200], [b, 4 * PAGE], [c, 0x800]] as const;
    const total = 0x200 + 4 * PAGE + 0x800;
    const w = makeRequest(lim, ReqOp.WRITE, 0, segs, r.done);
    const bytes = segs.map(([p, l], i) => fill(r.m, p, l, i + 2));
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    const iod = iodOf(w);
    expect(readLe64(iod.cmdDv, SQE.PRP1)).toBe(a + 0xe00);
    const prp2 = readLe64(iod.cmdDv, SQE.PRP2);
    expect(prp2 % 256).toBe(0);
    expect(iod.nrDescriptors).toBe(1);
    expect(listEntries(r.m, iod.descriptorsPhys[0] ?? 0, 5)).toEqual([b, b + PAGE, b + 2 * PAGE, b + 3 * PAGE, c]);
    expect(r.host.stats.smallDescriptors).toBe(1);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
    const onDisk = r.ctrl.namespace(1)?.readLbas(0, total / 512);
    const want = new Uint8Array(total);
    let off = 0;
    for (const x of bytes) {
      want.set(x, off);
      off += x.length;
    }
    expect(onDisk).toEqual(want);
    // Read it back into fresh buffers through the same PRP path.
    const d = pages(r.m, 8);
    const rd = makeRequest(lim, ReqOp.READ, 0, [[d + 0xe00, 0x200], [d + PAGE, 4 * PAGE + 0x800]], r.done);
    expect(r.host.queueRq(rd)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(rd)).toEqual([BlkStatus.OK]);
    expect(r.m.memory.read(d + 0xe00, 0x200)).toEqual(bytes[0]);
    expect(r.m.memory.read(d + PAGE, total - 0x200)).toEqual(want.subarray(0x200));
    const pools = r.host.pools;
    expect(pools.small?.stats.active).toBe(0);
  });

  it('exactly two pages in two segments: PRP2 is a direct pointer, no list', () => {
    const r = live(rig({ sglThreshold: 0 }));
    const a = pages(r.m, 1);
    const b = pages(r.m, 1);
    const w = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, [[a, PAGE], [b, PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    const iod = iodOf(w);
    expect([readLe64(iod.cmdDv, SQE.PRP1), readLe64(iod.cmdDv, SQE.PRP2)]).toEqual([a, b]);
    expect(iod.nrDescriptors).toBe(0);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
  });

  it('33 pages of list entries cross from the small to the large pool', () => {
    const r = live(rig({ sglThreshold: 0 }));
    const lim = r.host.queueLimits();
    const p = pages(r.m, 64);
    // Two segments so the fast path does not apply: 1 + 32 pages (32 list entries, small pool) ...
    const w32 = makeRequest(lim, ReqOp.WRITE, 0, [[p, PAGE], [p + PAGE, 32 * PAGE]], r.done);
    expect(r.host.queueRq(w32)).toBe(BlkStatus.OK);
    expect(iodOf(w32).descriptors.length).toBeGreaterThan(0);
    expect(r.host.stats.smallDescriptors).toBe(1);
    // ... and 1 + 33 pages (33 entries, large pool).
    const w33 = makeRequest(lim, ReqOp.WRITE, 256, [[p, PAGE], [p + PAGE, 33 * PAGE]], r.done);
    expect(r.host.queueRq(w33)).toBe(BlkStatus.OK);
    expect(r.host.stats.largeDescriptors).toBe(1);
    expect(listEntries(r.m, iodOf(w33).descriptorsPhys[0] ?? 0, 33)).toEqual(Array.from({ length: 33 }, (_, i) => p + (i + 1) * PAGE));
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w32)).toEqual([BlkStatus.OK]);
    expect(r.ended.get(w33)).toEqual([BlkStatus.OK]);
    expect(r.host.pools.small?.stats.active).toBe(0);
    expect(r.host.pools.large?.stats.active).toBe(0);
  });

  it('more than 512 entries chain through the last slot: 511 data entries per full page', () => {
    const r = live(rig({ sglThreshold: 0 }));
    const lim = r.host.queueLimits();
    const p = pages(r.m, 1024);
    const n = 1 + 513; // PRP1 + 513 list entries
    const data = fill(r.m, p, n * PAGE, 9);
    const w = makeRequest(lim, ReqOp.WRITE, 0, [[p, PAGE], [p + PAGE, 513 * PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    const iod = iodOf(w);
    expect(iod.nrDescriptors).toBe(2);
    const first = listEntries(r.m, iod.descriptorsPhys[0] ?? 0, 512);
    expect(first.slice(0, 511)).toEqual(Array.from({ length: 511 }, (_, i) => p + (i + 1) * PAGE));
    // The chain slot holds the DMA address of the second list page (dma = phys without an IOMMU).
    expect(first[511]).toBe(iod.descriptorsPhys[1]);
    expect(listEntries(r.m, iod.descriptorsPhys[1] ?? 0, 2)).toEqual([p + 512 * PAGE, p + 513 * PAGE]);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
    expect(r.ctrl.stats.prpListPages).toBe(2);
    expect(sameBytes(r.ctrl.namespace(1)?.readLbas(0, (n * PAGE) / 512), data)).toBe(true);
    expect(r.host.pools.large?.stats.active).toBe(0);
  });

  it('8 MiB uses at most 5 list pages; one block more is refused', () => {
    const r = live(rig({ sglThreshold: 0 }, { namespaces: [{ nsid: 1, lbaSize: 4096, capacityLbas: 1 << 12 }] }));
    const lim = r.host.queueLimits();
    const p = pages(r.m, 4096);
    const w = makeRequest(lim, ReqOp.WRITE, 0, [[p, PAGE], [p + PAGE, NVME_MAX_BYTES - PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    expect(iodOf(w).nrDescriptors).toBe(5); // 2047 entries = 4 * 511 + 3
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
    const big = makeRequest(lim, ReqOp.WRITE, 0, [[p, PAGE], [p + PAGE, NVME_MAX_BYTES]], r.done);
    expect(r.host.queueRq(big)).toBe(BlkStatus.IOERR);
    expect(r.host.pools.large?.stats.active).toBe(0);
  });

  it('a segment boundary inside a controller page is a bad SGL (BLK_STS_IOERR), nothing leaks', () => {
    const r = live(rig({ sglThreshold: 0 }));
    const p = pages(r.m, 4);
    const w = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, [[p, PAGE], [p + PAGE, 0x800], [p + 3 * PAGE, PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.IOERR);
    expect(r.host.log.some((l) => l.includes('Invalid SGL'))).toBe(true);
    expect(r.m.dmaDebug.dumpMappings(r.dev).filter((e) => e.type !== 'coherent')).toEqual([]);
  });
});

describe('the SGL builder', () => {
  it('one large segment: an inline data block descriptor (fast path)', () => {
    const r = live(rig());
    const p = pages(r.m, 16);
    const w = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, [[p, 16 * PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    const dv = iodOf(w).cmdDv;
    expect((dv.getUint8(SQE.FLAGS) >> 6) & 3).toBe(1);
    expect(dv.getUint8(SQE.DPTR + 15) >> 4).toBe(NvmeSglType.DATA_BLOCK);
    expect(dv.getUint32(SQE.DPTR + 8, true)).toBe(16 * PAGE);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
  });

  it('segments averaging >= sgl_threshold: one list behind a Last Segment descriptor', () => {
    const r = live(rig());
    const lim = r.host.queueLimits();
    const a = pages(r.m, 16);
    const b = pages(r.m, 16);
    const data = [fill(r.m, a, 16 * PAGE, 3), fill(r.m, b, 16 * PAGE, 4)];
    const w = makeRequest(lim, ReqOp.WRITE, 0, [[a, 16 * PAGE], [b, 16 * PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    const iod = iodOf(w);
    const dv = iod.cmdDv;
    expect(dv.getUint8(SQE.DPTR + 15) >> 4).toBe(NvmeSglType.LAST_SEGMENT);
    expect(dv.getUint32(SQE.DPTR + 8, true)).toBe(32);
    expect(r.host.stats.smallDescriptors).toBe(1);
    const l = new DataView(r.m.memory.read(iod.descriptorsPhys[0] ?? 0, 32).buffer);
    expect([readLe64(l, 0), l.getUint32(8, true), readLe64(l, 16), l.getUint32(24, true)]).toEqual([a, 16 * PAGE, b, 16 * PAGE]);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
    expect(r.ctrl.stats.sglSegments).toBe(1);
    const disk = r.ctrl.namespace(1)?.readLbas(0, 256);
    expect(sameBytes(disk?.subarray(0, 16 * PAGE), data[0] ?? new Uint8Array(0))).toBe(true);
    expect(sameBytes(disk?.subarray(16 * PAGE), data[1] ?? new Uint8Array(0))).toBe(true);
    expect(r.host.pools.small?.stats.active).toBe(0);
  });

  it('a controller without SGL support gets PRPs', () => {
    const r = live(rig({}, { sgl: false }));
    const a = pages(r.m, 16);
    const b = pages(r.m, 16);
    const w = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, [[a, 16 * PAGE], [b, 16 * PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    expect((iodOf(w).cmdDv.getUint8(SQE.FLAGS) >> 6) & 3).toBe(0);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
  });
});

/**
 * A stand-in for an IOMMU's dma_map_sg (iommu_dma_map_sg in drivers/iommu/dma-iommu.c): the
 * scatterlist gets one contiguous IOVA range, and page-aligned entries merge into DMA segments of
 * up to `maxSegment` bytes. Single mappings and coherent buffers are identity mapped. Only what the NVMe host
 * uses is implemented.
 */
function mergingIommuOps(m: Machine, maxSegment = Number.MAX_SAFE_INTEGER): DmaMapOps {
  const ranges: { iova: number; phys: number; len: number }[] = [];
  let next = 0x8000_0000;
  const unused = (): never => {
    throw new Error('mergingIommuOps: not used by this test');
  };
  return {
    name: 'merging-iommu-fake',
    translate(_dev, dma) {
      const r = ranges.find((x) => dma >= x.iova && dma < x.iova + x.len);
      return r === undefined ? dma : r.phys + (dma - r.iova); // unknown: an identity-mapped buffer
    },
    mapPhys: (_dev, phys) => phys,
    unmapPhys: () => undefined,
    mapSg(_dev, sgt, nents) {
      let ents = 0;
      for (let i = 0; i < nents; i++) {
        const phys = sgt.phys[i] ?? 0;
        const len = sgt.length[i] ?? 0;
        // __finalise_sg: merge into the previous DMA segment while it stays page-contiguous and
        // within the device's max segment size.
        const prevLen = sgt.dmaLength[ents - 1] ?? 0;
        const merge = ents > 0 && phys % PAGE === 0 && ((sgt.dmaAddress[ents - 1] ?? 0) + prevLen) % PAGE === 0 && prevLen + len <= maxSegment;
        const iova = next + (phys % PAGE);
        next += Math.ceil(((phys % PAGE) + len) / PAGE) * PAGE;
        for (let o = 0; o < len; o += PAGE) ranges.push({ iova: iova + o, phys: phys + o, len: Math.min(PAGE, len - o) });
        if (merge) sgt.dmaLength[ents - 1] = (sgt.dmaLength[ents - 1] ?? 0) + len;
        else {
          sgt.dmaAddress[ents] = iova;
          sgt.dmaLength[ents] = len;
          ents++;
        }
      }
      return ents;
    },
    unmapSg: () => undefined,
    syncSingleForCpu: () => undefined,
    syncSingleForDevice: () => undefined,
    syncSgForCpu: () => undefined,
    syncSgForDevice: () => undefined,
    alloc(_dev, size): DmaCoherentBuffer | null {
      const order = Math.max(0, Math.ceil(Math.log2(size / PAGE)));
      const phys = m.memory.allocPages(order);
      return phys === 0 ? null : { cpuAddr: phys, phys, dmaAddr: phys, size };
    },
    free: (_dev, buf) => {
      m.memory.freePages(buf.phys, Math.max(0, Math.ceil(Math.log2(buf.size / PAGE))));
    },
    iovaTryAlloc: () => false,
    iovaLink: unused,
    iovaSync: unused,
    iovaUnlink: unused,
    iovaDestroy: unused,
    iovaFree: unused,
    getMergeBoundary: () => PAGE - 1,
    maxMappingSize: () => Number.MAX_SAFE_INTEGER,
    optMappingSize: () => Number.MAX_SAFE_INTEGER,
    getRequiredMask: () => 2 ** 32 - 1,
  };
}

describe('the legacy sgtable path', () => {
  it('PRP vs SGL from the DMA-mapped entry count (6.3+, "nvme-pci: use mapped entries for sgl decision")', () => {
    // drivers/nvme/host/pci.c 6.3-6.16: nvme_pci_use_sgls(dev, req, iod->sgt.nents) averages the
    // payload over the mapped entries. 64 KiB in 4 x 16 KiB segments: dma-direct keeps 4 entries
    // (16 KiB average, below the 32 KiB sgl_threshold: a PRP list, as a 6.1 kernel sends it even
    // behind an IOMMU, since it divided by blk_rq_nr_phys_segments); an IOMMU that merges them
    // into one 64 KiB entry, or into two of 32 KiB (a 32 KiB max segment), makes it an SGL.
    const segs = (p: number): [number, number][] => [0, 2, 4, 6].map((i) => [p + i * 4 * PAGE, 4 * PAGE] as [number, number]);
    for (const [iommuMaxSegment, wantSgl] of [[0, false], [Number.MAX_SAFE_INTEGER, true], [8 * PAGE, true], [4 * PAGE, false]] as const) {
      const withIommu = iommuMaxSegment !== 0;
      const r = rig({ mapping: 'sg' });
      if (withIommu) attachDmaOps(r.dev, mergingIommuOps(r.m, iommuMaxSegment));
      live(r);
      expect(r.host.sglSupported).toBe(true);
      const p = pages(r.m, 32);
      const data = new Uint8Array(16 * PAGE);
      segs(p).forEach(([a], i) => {
        data.set(fill(r.m, a, 4 * PAGE, 9 + i), i * 4 * PAGE);
      });
      const w = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, segs(p), r.done);
      expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
      r.m.scheduler.runUntilIdle();
      expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
      expect(r.host.stats.legacySg).toBe(1);
      expect({ prp: r.host.stats.prpCommands, sgl: r.host.stats.sglCommands }).toEqual(wantSgl ? { prp: 0, sgl: 1 } : { prp: 1, sgl: 0 });
      expect(sameBytes(r.ctrl.namespace(1)?.readLbas(0, 128), data)).toBe(true);
    }
  });

  it('maps through an SgTable and dma_map_sgtable, then the same builders', () => {
    const r = live(rig({ mapping: 'sg', sglThreshold: 0 }));
    const p = pages(r.m, 8);
    const data = fill(r.m, p, 8 * PAGE, 5);
    const w = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, [[p, 4 * PAGE], [p + 4 * PAGE, 4 * PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
    expect(r.host.stats.legacySg).toBe(1);
    expect(r.host.stats.sgMetadataBytes).toBe(2 * 32);
    // Read from the table's arrays: two entries of (phys, length, dma address, dma length, flags).
    expect(r.host.stats.mapMetadataBytes).toBe(2 * new SgTable(1).entryBytes);
    expect(new SgTable(1).entryBytes).toBe(8 + 4 + 8 + 4 + 1);
    expect(r.ctrl.namespace(1)?.readLbas(0, 64)).toEqual(data);
    expect(r.m.dmaDebug.dumpMappings(r.dev).filter((e) => e.type !== 'coherent')).toEqual([]);
  });
});

describe('mapping metadata read from the iod', () => {
  it('counts the dma_vecs entries a two-segment PRP request recorded, and nothing for the fast path', () => {
    const r = live(rig({ sglThreshold: 0 }));
    const p = pages(r.m, 8);
    fill(r.m, p, 8 * PAGE, 3);
    const one = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, [[p, PAGE]], r.done);
    expect(r.host.queueRq(one)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    expect(r.host.stats.singleSegment).toBe(1);
    expect(r.host.stats.mapMetadataBytes).toBe(0);
    const two = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 8, [[p + 2 * PAGE, 2 * PAGE], [p + 5 * PAGE, 2 * PAGE]], r.done);
    expect(r.host.queueRq(two)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(two)).toEqual([BlkStatus.OK]);
    // dma-direct with dma-debug on needs per-segment unmap: one (addr, len) pair of float64 per segment.
    expect(r.host.stats.dmaVecs).toBe(2);
    expect(r.host.stats.mapMetadataBytes).toBe(2 * 16);
  });
});

describe('completion, timeouts, abort and reset', () => {
  it('an LBA past the end completes with the controller status (BLK_STS_TARGET); the namespace is intact', () => {
    const r = live(rig());
    const p = pages(r.m, 1);
    const w = makeRequest(r.host.queueLimits(), ReqOp.WRITE, (1 << 16) - 4, [[p, PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.TARGET]);
    expect(r.ctrl.namespace(1)?.residentBytes).toBe(0);
    expect(r.host.stats.completedError).toBe(1);
  });

  it('traces nvme_setup_cmd and nvme_complete_rq', () => {
    const r = live(rig());
    r.m.trace.record({ capacity: 64 });
    const p = pages(r.m, 1);
    const w = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, [[p, PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    const names = r.m.trace.events().map((e) => e.name);
    expect(names).toContain('nvme:nvme_setup_cmd');
    expect(names).toContain('nvme:nvme_complete_rq');
    const setup = r.m.trace.events().find((e) => e.name === 'nvme:nvme_setup_cmd');
    expect(setup?.fields).toMatchObject({ qid: 1, opcode: 0x01, prp1: p });
  });

  it('refuses a length that is not whole logical blocks (BLK_STS_INVAL) and unsupported ops', () => {
    const r = live(rig());
    const p = pages(r.m, 1);
    expect(r.host.queueRq(makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, [[p, 100]], r.done))).toBe(BlkStatus.INVAL);
    expect(r.host.queueRq(makeRequest(r.host.queueLimits(), ReqOp.DISCARD, 0, [[p, 512]], r.done))).toBe(BlkStatus.NOTSUPP);
    expect(r.host.queueRq(makeRequest(r.host.queueLimits(), ReqOp.READ, 0, [[p, 512]], r.done), 9)).toBe(BlkStatus.INVAL);
    expect(r.ended.size).toBe(0);
  });

  it('queue full answers BLK_STS_RESOURCE', () => {
    const r = live(rig({ ioQueueDepth: 4 }));
    const p = pages(r.m, 4);
    const lim = r.host.queueLimits();
    const sts = Array.from({ length: 4 }, (_, i) => r.host.queueRq(makeRequest(lim, ReqOp.READ, i, [[p + i * PAGE, 512]], r.done)));
    expect(sts).toEqual([BlkStatus.OK, BlkStatus.OK, BlkStatus.OK, BlkStatus.RESOURCE]);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.size).toBe(3);
  });

  it('a stuck command times out, is aborted, and the retry succeeds', () => {
    const r = live(rig({ ioTimeoutNs: 1_000_000 }));
    const p = pages(r.m, 1);
    const data = fill(r.m, p, PAGE, 6);
    r.ctrl.injectStall(1);
    const w = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, [[p, PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
    expect(r.host.stats.timeouts).toBe(1);
    expect(r.host.stats.aborts).toBe(1);
    expect(r.host.stats.retries).toBe(1);
    expect(r.ctrl.stats.aborted).toBe(1);
    expect(r.ctrl.namespace(1)?.readLbas(0, 8)).toEqual(data);
  });

  it('a command the controller never saw: abort finds nothing, the second timeout resets, the request is requeued', () => {
    const r = live(rig({ ioTimeoutNs: 1_000_000 }));
    const p = pages(r.m, 1);
    const data = fill(r.m, p, PAGE, 8);
    const w = makeRequest(r.host.queueLimits(), ReqOp.WRITE, 0, [[p, PAGE]], r.done);
    // last = false and no commitRqs: the SQ doorbell is never rung for it.
    expect(r.host.queueRq(w, 1, false)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
    expect(r.host.stats.timeouts).toBe(2);
    expect(r.host.stats.aborts).toBe(1);
    expect(r.host.stats.resets).toBe(1);
    expect(r.host.log.some((l) => l.includes('reset controller'))).toBe(true);
    expect(r.host.state).toBe('live');
    expect(sameBytes(r.ctrl.namespace(1)?.readLbas(0, 8), data)).toBe(true);
  });

  it('reset in the middle of a run: every request ends exactly once, bytes verified', () => {
    const r = live(rig({ ioQueueDepth: 64 }));
    const lim = r.host.queueLimits();
    const n = 40;
    const bufs = Array.from({ length: n }, (_, i) => {
      const p = pages(r.m, 2);
      return { p, data: fill(r.m, p, 2 * PAGE, 10 + i) };
    });
    const reqs = bufs.map((b, i) => makeRequest(lim, ReqOp.WRITE, i * 16, [[b.p + 0x400, PAGE - 0x400], [b.p + PAGE, PAGE]], r.done));
    for (const q of reqs.slice(0, 30)) expect(r.host.queueRq(q)).toBe(BlkStatus.OK);
    r.ctrl.injectStall(5);
    r.m.advance(150);
    expect(r.host.resetCtrl()).toBe(0);
    for (const q of reqs.slice(30)) expect(r.host.queueRq(q)).toBe(BlkStatus.OK);
    expect(r.host.resetCtrl()).toBe(-16); // -EBUSY while resetting
    r.m.scheduler.runUntilIdle();
    expect(r.host.state).toBe('live');
    for (const q of reqs) expect(r.ended.get(q)).toEqual([BlkStatus.OK]);
    expect(r.host.stats.resets).toBe(1);
    bufs.forEach((b, i) => {
      expect(sameBytes(r.ctrl.namespace(1)?.readLbas(i * 16, 14), b.data.subarray(0x400, 2 * PAGE))).toBe(true);
    });
    expect(r.host.pools.small?.stats.active).toBe(0);
    expect(r.m.dmaDebug.dumpMappings(r.dev).filter((e) => e.type !== 'coherent')).toEqual([]);
  });

  it('remove shuts down normally: in-flight commands finish first, then SHST reports complete', () => {
    const r = live(rig());
    const p = pages(r.m, 4);
    const lim = r.host.queueLimits();
    const reqs = [0, 1, 2].map((i) => makeRequest(lim, ReqOp.WRITE, i * 8, [[p + i * PAGE, PAGE]], r.done));
    for (const q of reqs) expect(r.host.queueRq(q)).toBe(BlkStatus.OK);
    r.m.advance(TEST_LATENCY_NS.fetch + 1); // fetched, still executing
    r.host.remove();
    for (const q of reqs) expect(r.ended.get(q)).toEqual([BlkStatus.OK]);
    expect(r.host.log.some((l) => l.includes('shutdown incomplete'))).toBe(false);
    expect(r.ctrl.ready).toBe(false);
  });

  it('remove frees queues and pools; dma-debug finds no leak at unbind', () => {
    const r = live(rig());
    const p = pages(r.m, 1);
    const w = makeRequest(r.host.queueLimits(), ReqOp.READ, 0, [[p, PAGE]], r.done);
    expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
    r.m.scheduler.runUntilIdle();
    r.host.remove();
    expect(r.host.state).toBe('deleting');
    r.m.unbindDevice(r.dev);
    expect(r.m.dmaDebug.reports).toEqual([]);
  });
});

describe('properties of the PRP and SGL builders', () => {
  /**
   * A virt-boundary-legal request: the first segment may start anywhere (512-aligned) but ends on a
   * page boundary when more follow; interior segments are whole pages; the last starts on a page.
   */
  const layout = fc
    .record({
      firstOff: fc.integer({ min: 0, max: 7 }),
      pages: fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 6 }),
      lastSectors: fc.integer({ min: 1, max: 8 }),
    })
    .map(({ firstOff, pages: segPages, lastSectors }) => ({ firstOff: firstOff * 512, segPages, lastBytes: lastSectors * 512 }));

  function buildSegs(m: Machine, l: { firstOff: number; segPages: number[]; lastBytes: number }): { segs: [number, number][]; total: number; frees: [number, number][] } {
    const segs: [number, number][] = [];
    const frees: [number, number][] = [];
    let total = 0;
    l.segPages.forEach((n, i) => {
      const order = Math.ceil(Math.log2(n + 1));
      const base = m.memory.allocPages(order);
      frees.push([base, order]);
      const first = i === 0;
      const last = i === l.segPages.length - 1;
      const startOff = first ? l.firstOff : 0;
      const start = base + startOff;
      const full = n * PAGE - startOff;
      const len = last ? Math.max(512, Math.min(full, (n - 1) * PAGE + l.lastBytes - startOff)) : full;
      segs.push([start, len]);
      total += len;
    });
    return { segs, total, frees };
  }

  for (const [name, opts] of [
    ['PRPs (sgl_threshold 0)', { sglThreshold: 0 }],
    ['SGLs (forced)', { forceSgl: true }],
  ] as const) {
    it(`${name}: bytes land in order, list pages as computed, everything given back`, () => {
      const r = live(rig(opts, { namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: 1 << 16 }] }));
      const lim = r.host.queueLimits();
      let sector = 0;
      fc.assert(
        fc.property(layout, (l) => {
          const { segs, total, frees } = buildSegs(r.m, l);
          // At most 6 x 300 pages: always under NVME_MAX_BYTES.
          if (sector + total / 512 > 1 << 16) sector = 0;
          const want = new Uint8Array(total);
          let off = 0;
          segs.forEach(([p, len], i) => {
            want.set(fill(r.m, p, len, i + 1), off);
            off += len;
          });
          const w = makeRequest(lim, ReqOp.WRITE, sector, segs, r.done);
          expect(r.host.queueRq(w)).toBe(BlkStatus.OK);
          const iod = iodOf(w);
          if (!('forceSgl' in opts)) {
            if (segs.length > 1) {
              const entries = Math.ceil((total - Math.min(total, PAGE - l.firstOff)) / PAGE);
              const pagesWant = entries <= 1 ? 0 : Math.ceil((entries - 1) / 511);
              expect(iod.nrDescriptors).toBe(pagesWant);
            }
          } else if (segs.length > 1) {
            expect(iod.cmdDv.getUint8(SQE.DPTR + 15) >> 4).toBe(NvmeSglType.LAST_SEGMENT);
            expect(iod.cmdDv.getUint32(SQE.DPTR + 8, true)).toBe(16 * segs.length);
          }
          r.m.scheduler.runUntilIdle();
          expect(r.ended.get(w)).toEqual([BlkStatus.OK]);
          expect(sameBytes(r.ctrl.namespace(1)?.readLbas(sector, total / 512), want)).toBe(true);
          sector += total / 512;
          expect(r.host.pools.small?.stats.active ?? 0).toBe(0);
          expect(r.host.pools.large?.stats.active ?? 0).toBe(0);
          expect(r.m.dmaDebug.dumpMappings(r.dev).filter((e) => e.type !== 'coherent')).toEqual([]);
          for (const [p, o] of frees) r.m.memory.freePages(p, o);
        }),
        { numRuns: 60, seed: 42 },
      );
    });
  }
});

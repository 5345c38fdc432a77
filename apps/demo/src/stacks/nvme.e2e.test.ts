// End-to-end: block request → blk-mq-dma → nvme-pci host → simulated controller → namespace, and
// back, under strict, lazy and no IOMMU, on the two-step path and the legacy sgtable path.
import { bioFromRanges, blkRqFromBio, createBlkRqDmaMapper } from '@dmakit/block-rq-dma';
import type { BlkRqDma } from '@dmakit/block-rq-dma';
import { BlkStatus, createMachine, ReqOp, SZ_1G, SZ_1M, toPciDev } from '@dmakit/dma-core';
import type { BlkDmaIter, BlkRequest, Device, DmaIovaState, Machine } from '@dmakit/dma-core';
import { createIommu } from '@dmakit/iommu-dma';
import type { Iommu } from '@dmakit/iommu-dma';
import { NvmeController, NvmeDev, nvmeBarSize } from '@dmakit/nvme-pci';
import type { NvmeDevOptions } from '@dmakit/nvme-pci';
import { describe, expect, it } from 'vitest';
import { compareIommuModes, runNvmeStack } from './nvme.js';
import type { NvmeStackResult } from './nvme.js';

const PAGE = 4096;

function strictMachine(seed = 1): Machine {
  return createMachine({ ramBytes: 2 * SZ_1G, seed, dmaDebug: 'strict' });
}

function expectClean(r: NvmeStackResult): void {
  expect(r.verified).toBe(true);
  expect(r.ioErrors).toBe(0);
  expect(r.mismatchedBlocks).toBe(0);
  expect(r.leaks).toEqual({ poolBlocks: 0, mappings: 0, iovaRanges: 0, dmaDebugReports: 0 });
  expect(r.iommuFaults).toBe(0);
}

describe('nvme stack: 10,000 random I/Os of mixed sizes, verified', () => {
  for (const iommu of ['strict', 'lazy', 'off'] as const) {
    it(`iommu ${iommu}`, () => {
      const r = runNvmeStack({ machine: strictMachine(), iommu, ios: 10_000, qd: 32, bs: 'mixed', rw: 'randrw', verify: true });
      expectClean(r);
      expect(r.ios).toBe(10_000);
      expect(r.reads).toBeGreaterThan(4000);
      expect(r.writes).toBeGreaterThan(4000);
      if (iommu === 'off') {
        expect(r.iommuStats).toBeNull();
        expect(r.host.iovaCoalesced).toBe(0);
      } else {
        // One IOVA range per request: every multi-segment request coalesced into one segment.
        expect(r.host.iovaCoalesced + r.host.singleSegment).toBe(r.host.submitted);
        expect(r.perIo.iovaAllocs).toBeCloseTo(1, 1);
      }
    });
  }

  it('legacy sgtable path (iommu strict)', () => {
    const r = runNvmeStack({ machine: strictMachine(), iommu: 'strict', mapping: 'sg', ios: 10_000, qd: 32, verify: true });
    expectClean(r);
    expect(r.host.legacySg).toBeGreaterThan(0);
    expect(r.host.sgMetadataBytes).toBeGreaterThan(0);
  });
});

describe('PRP and SGL paths', () => {
  it('no IOMMU, 128 KiB of scattered 4 KiB pages: 32 segments, average below sgl_threshold, PRPs', () => {
    const r = runNvmeStack({ machine: strictMachine(), iommu: 'off', ios: 300, bs: 128 * 1024, rw: 'randrw' });
    expectClean(r);
    expect(r.host.prpCommands).toBe(r.host.submitted);
    expect(r.perIo.segments).toBe(32);
    expect(r.host.smallDescriptors).toBe(r.host.submitted); // PRP1 + 31 list entries: the 256-byte pool
  });

  it('IOVA-coalesced 128 KiB requests: one inline SGL data block each (sgl_threshold 32 KiB)', () => {
    const r = runNvmeStack({ machine: strictMachine(), iommu: 'strict', ios: 300, bs: 128 * 1024, rw: 'randrw' });
    expectClean(r);
    expect(r.host.sglCommands).toBe(r.host.submitted);
    expect(r.host.smallDescriptors + r.host.largeDescriptors).toBe(0);
    expect(r.perIo.sglDescriptors).toBe(1);
  });

  it('sgl_threshold 0 keeps IOVA-coalesced requests on PRPs (list walked over one range)', () => {
    const r = runNvmeStack({ machine: strictMachine(), iommu: 'lazy', ios: 300, bs: 128 * 1024, sglThreshold: 0 });
    expectClean(r);
    expect(r.host.prpCommands).toBe(r.host.submitted);
    expect(r.host.smallDescriptors).toBe(r.host.submitted); // 31 entries after PRP1 fit the 256-byte pool
  });

  it('1 MiB I/Os without an IOMMU: PRP1 + 255 entries in one 4 KiB list page', () => {
    const r = runNvmeStack({ machine: strictMachine(), iommu: 'off', ios: 64, bs: SZ_1M, qd: 4 });
    expectClean(r);
    expect(r.host.largeDescriptors).toBe(r.host.submitted); // 255 entries: one page
    expect(r.perIo.prpListPages).toBe(1);
  });

  it('4 KiB I/Os take the single-segment fast path (no iterator)', () => {
    const r = runNvmeStack({ machine: strictMachine(), iommu: 'strict', ios: 500, bs: 4096, rw: 'randread' });
    expectClean(r);
    expect(r.host.singleSegment).toBe(500);
    expect(r.blk.starts).toBe(0);
  });
});

describe('several I/O queues', () => {
  it('requests spread round robin over 4 queue pairs, verified', () => {
    const r = runNvmeStack({ machine: strictMachine(), iommu: 'lazy', ioQueues: 4, ios: 2000, qd: 32, verify: true });
    expectClean(r);
    expect(r.perIo.interrupts).toBeGreaterThan(0);
  });
});

describe('controller reset in the middle of a run', () => {
  for (const iommu of ['strict', 'off'] as const) {
    it(`iommu ${iommu}: requests requeued, none lost, none completed twice, bytes verified`, () => {
      const r = runNvmeStack({ machine: strictMachine(), iommu, ios: 3000, qd: 32, resetAfter: 1000, verify: true });
      expectClean(r);
      expect(r.resets).toBe(1);
      expect(r.host.requeued).toBeGreaterThan(0);
      expect(r.ios).toBe(3000);
      expect(r.host.completedOk).toBe(3000);
    });
  }
});

describe('fault injection: requests fail with BLK_STS_RESOURCE and are retried; everything is given back', () => {
  it('every 7th DMA pool allocation and every 11th IOVA allocation fail once each', () => {
    const m = strictMachine();
    m.faultInjection.arm('dma_pool', 7);
    m.faultInjection.arm('iova', 11);
    const r = runNvmeStack({ machine: m, iommu: 'strict', ios: 2000, bs: 'mixed', sglThreshold: 0 });
    expectClean(r);
    expect(r.host.resource).toBeGreaterThan(0);
    expect(m.faultInjection.injected.get('dma_pool')).toBe(1);
  });
});

describe('untrusted device: sub-granule buffers bounce through swiotlb', () => {
  it('512-byte I/Os inside pages are bounced and verified; a failed swiotlb slot is retried', () => {
    const m = strictMachine();
    m.faultInjection.arm('swiotlb', 5);
    const r = runNvmeStack({ machine: m, iommu: 'strict', untrusted: true, ios: 1000, bs: 512, rw: 'randrw', verify: true });
    expectClean(r);
    expect(r.perIo.swiotlbBounces).toBeGreaterThan(0);
    expect(m.faultInjection.injected.get('swiotlb')).toBe(1);
    expect(r.host.resource).toBeGreaterThan(0);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });
});

describe('strict : lazy : off', () => {
  it('simulated IOPS order strict < lazy < off for 4 KiB random reads', () => {
    const rs = compareIommuModes({ ios: 2000, bs: 4096, rw: 'randread', qd: 32, verify: false });
    expect(rs.strict.simulated.cpuBoundIops).toBeLessThan(rs.lazy.simulated.cpuBoundIops);
    expect(rs.lazy.simulated.cpuBoundIops).toBeLessThan(rs.off.simulated.cpuBoundIops);
    expect(rs.strict.perIo.iotlbInvalidations).toBeCloseTo(1, 2);
    expect(rs.lazy.perIo.iotlbInvalidations).toBeLessThan(0.1);
  });
});

// ---- hand-built stacks for the misuse and P2P cases ---------------------------------------------

interface Hand {
  m: Machine;
  dev: Device;
  iommu: Iommu | null;
  ctrl: NvmeController;
  host: NvmeDev;
  blk: BlkRqDma;
}

function hand(iommuMode: 'strict' | 'off', blkOverride?: (inner: BlkRqDma) => BlkRqDma, devParent?: Parameters<Machine['pci']['addDevice']>[0]['parent'], hostOpts: NvmeDevOptions = {}): Hand {
  const m = strictMachine();
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: nvmeBarSize(4), is64: true }], ...(devParent !== undefined ? { parent: devParent } : {}) });
  let iommu: Iommu | null = null;
  if (iommuMode !== 'off') {
    iommu = createIommu(m, { mode: iommuMode });
    iommu.attachDevice(dev);
  }
  const ctrl = new NvmeController(m, dev, { namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: 1 << 16 }], maxQueues: 4 });
  const inner = createBlkRqDmaMapper();
  const blk = blkOverride ? blkOverride(inner) : inner;
  const host = new NvmeDev(m, dev, ctrl, blk, hostOpts);
  expect(host.probe()).toBe(0);
  return { m, dev, iommu, ctrl, host, blk };
}

function request(h: Hand, op: ReqOp, sector: number, ranges: number[], ended: Map<BlkRequest, BlkStatus[]>): BlkRequest {
  const bio = bioFromRanges(op, sector, ranges);
  expect(bio).not.toBeNull();
  const rq = bio === null ? null : blkRqFromBio(h.host.queueLimits(), bio);
  if (rq === null) throw new Error('request');
  rq.endIo = (r, st) => {
    ended.set(r, [...(ended.get(r) ?? []), st]);
  };
  return rq;
}

describe('a DMA fault in the middle of a transfer', () => {
  it('a read mapped with the wrong permission completes with an I/O error; the other requests are unaffected', () => {
    // A block layer that maps READ requests as if they were writes (device read-only mappings).
    const flipped = new WeakMap<BlkRequest, BlkRequest>();
    const asWrite = (r: BlkRequest): BlkRequest => {
      if (r.op !== ReqOp.READ || r.sector !== 64) return r;
      let f = flipped.get(r);
      if (f === undefined) {
        f = { ...r, op: ReqOp.WRITE };
        flipped.set(r, f);
      }
      return f;
    };
    const h = hand('strict', (inner) => {
      const o = Object.create(inner) as BlkRqDma;
      o.blkRqDmaMapIterStart = (r: BlkRequest, d: Device, s: DmaIovaState, it: BlkDmaIter) => inner.blkRqDmaMapIterStart(asWrite(r), d, s, it);
      o.blkRqDmaMapIterNext = (r: BlkRequest, d: Device, s: DmaIovaState, it: BlkDmaIter) => inner.blkRqDmaMapIterNext(asWrite(r), d, s, it);
      o.blkRqDmaUnmap = (r: BlkRequest, d: Device, s: DmaIovaState, len: number) => inner.blkRqDmaUnmap(asWrite(r), d, s, len);
      return o;
    });
    const ended = new Map<BlkRequest, BlkStatus[]>();
    // Every other page, so the two pages of a request are never contiguous (two segments).
    const pages = Array.from({ length: 12 }, () => h.m.memory.allocPages(0));
    const ranges = (a: number, b: number): number[] => [pages[a] ?? 0, PAGE, pages[b] ?? 0, PAGE];
    const good1 = request(h, ReqOp.READ, 0, ranges(0, 2), ended);
    const bad = request(h, ReqOp.READ, 64, ranges(4, 6), ended);
    const good2 = request(h, ReqOp.WRITE, 128, ranges(8, 10), ended);
    for (const r of [good1, bad, good2]) expect(h.host.queueRq(r)).toBe(BlkStatus.OK);
    h.m.scheduler.runUntilIdle();
    expect(ended.get(good1)).toEqual([BlkStatus.OK]);
    expect(ended.get(good2)).toEqual([BlkStatus.OK]);
    expect(ended.get(bad)).toEqual([BlkStatus.IOERR]);
    expect(h.iommu?.faults.length).toBeGreaterThan(0);
    expect(h.ctrl.stats.errorsByStatus.get(0x4)).toBeGreaterThan(0); // Data Transfer Error
    expect(h.ctrl.ready).toBe(true);
    h.host.remove();
    h.iommu?.flushQueues();
    h.m.unbindDevice(h.dev);
    expect(h.m.dmaDebug.reports).toEqual([]);
  });
});

describe('IOVA coalescing needs granule-aligned segment boundaries', () => {
  /** Two-segment writes with SGLs forced; `unaligned` puts the segment boundaries inside pages (6.19, no virt boundary). */
  function run(unaligned: boolean): { coalesced: number; directMaps: number; ok: boolean; iovaAllocs: number; sglList: number } {
    const m = strictMachine();
    const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: nvmeBarSize(4), is64: true }] });
    const iommu = createIommu(m, { mode: 'strict' });
    iommu.attachDevice(dev);
    const ctrl = new NvmeController(m, dev, { namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: 1 << 16 }], maxQueues: 4 });
    const blk = createBlkRqDmaMapper();
    const host = new NvmeDev(m, dev, ctrl, blk, { forceSgl: true });
    expect(host.probe()).toBe(0);
    const before = iommu.stats().iovaAllocs;
    const a = m.memory.allocPages(0);
    m.memory.allocPages(0);
    const b = m.memory.allocPages(0);
    const segs = unaligned ? [a, 2048, b + 1024, 2048] : [a, PAGE, b, PAGE];
    const total = (segs[1] ?? 0) + (segs[3] ?? 0);
    const data = m.rng.fill(new Uint8Array(total));
    m.memory.write(segs[0] ?? 0, data, 0, segs[1] ?? 0);
    m.memory.write(segs[2] ?? 0, data, segs[1] ?? 0, segs[3] ?? 0);
    const limits = { ...host.queueLimits(), virtBoundaryMask: unaligned ? 0 : PAGE - 1 };
    const bio = bioFromRanges(ReqOp.WRITE, 0, segs);
    const rq = bio === null ? null : blkRqFromBio(limits, bio);
    if (rq === null) throw new Error('request');
    let st: BlkStatus | undefined;
    rq.endIo = (_r, s) => {
      st = s;
    };
    expect(host.queueRq(rq)).toBe(BlkStatus.OK);
    m.scheduler.runUntilIdle();
    const ok = st === BlkStatus.OK && ctrl.namespace(1)?.readLbas(0, total / 512).every((x, i) => x === data[i]) === true;
    return { coalesced: host.stats.iovaCoalesced, directMaps: blk.stats.directMaps, ok, iovaAllocs: iommu.stats().iovaAllocs - before, sglList: host.stats.sglListDescriptors };
  }

  it('page-aligned boundaries: one IOVA range, one inline SGL data block', () => {
    expect(run(false)).toEqual({ coalesced: 1, directMaps: 0, ok: true, iovaAllocs: 1, sglList: 0 });
  });

  it('boundaries inside pages: the gap mask forbids it, one mapping per segment and an SGL list', () => {
    // Two IOVA allocations for the two mappings, one for the descriptor pool's first coherent page.
    expect(run(true)).toEqual({ coalesced: 0, directMaps: 2, ok: true, iovaAllocs: 3, sglList: 2 });
  });
});

describe('the nvme-pci README example', () => {
  it('runs as written', () => {
    const m = createMachine();
    const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: 0x4000 }] });
    const ctrl = new NvmeController(m, dev, { namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: 1 << 20 }] });
    const host = new NvmeDev(m, dev, ctrl, createBlkRqDmaMapper());
    if (host.probe() !== 0) throw new Error(host.lastError);
    const buf = m.memory.allocPages(0);
    m.memory.fill(buf, PAGE, 0xab);
    const bio = bioFromRanges(ReqOp.WRITE, 0, [buf, 4096]);
    const rq = bio === null ? null : blkRqFromBio(host.queueLimits(), bio);
    if (rq === null) throw new Error('request');
    let ok = false;
    rq.endIo = (_rq, st) => {
      ok = st === BlkStatus.OK;
    };
    expect(host.queueRq(rq)).toBe(BlkStatus.OK);
    m.scheduler.runUntilIdle();
    expect(ok).toBe(true);
    expect(ctrl.namespace(1)?.readLbas(0, 8).every((b) => b === 0xab)).toBe(true);
  });
});

describe('P2P: a read into another device BAR', () => {
  it('below one switch the data lands in the peer BAR with bus addresses, bypassing the IOMMU', () => {
    const h0 = (() => {
      const m = strictMachine();
      const rp = m.pci.addRootPort();
      const sw = m.pci.addSwitch(rp, { downstreamPorts: 2 });
      const [d0, d1] = sw.downstreamPorts;
      if (d0 === undefined || d1 === undefined) throw new Error('switch');
      const gpu = m.pci.addDevice({ name: 'gpu0', parent: d0, dmaMaskBits: 64, bars: [{ size: SZ_1M, prefetch: true, p2p: true }] });
      const dev = m.pci.addDevice({ name: 'nvme0', parent: d1, dmaMaskBits: 64, bars: [{ size: nvmeBarSize(4), is64: true }] });
      const iommu = createIommu(m, { mode: 'strict' });
      iommu.attachDevice(dev);
      const ctrl = new NvmeController(m, dev, { namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: 1 << 16 }], maxQueues: 4 });
      const blk = createBlkRqDmaMapper();
      const host = new NvmeDev(m, dev, ctrl, blk);
      expect(host.probe()).toBe(0);
      return { m, dev, iommu, ctrl, host, blk, gpu };
    })();
    const { m, ctrl, host, gpu } = h0;
    const bar = toPciDev(gpu)?.bars[0];
    if (bar === undefined) throw new Error('no BAR');
    const data = m.rng.fill(new Uint8Array(2 * PAGE));
    ctrl.namespace(1)?.writeLbas(0, data);
    const ended = new Map<BlkRequest, BlkStatus[]>();
    const rq = request(h0, ReqOp.READ, 0, [bar.start, PAGE, bar.start + PAGE, PAGE], ended);
    expect(host.queueRq(rq)).toBe(BlkStatus.OK);
    m.scheduler.runUntilIdle();
    expect(ended.get(rq)).toEqual([BlkStatus.OK]);
    expect(m.memory.read(bar.start, 2 * PAGE)).toEqual(data);
    expect(h0.blk.stats.busSegments).toBeGreaterThan(0);
  });
});

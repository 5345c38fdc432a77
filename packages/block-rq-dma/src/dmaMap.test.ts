// blk_rq_dma_map_iter_start/next, blk_rq_dma_unmap and the legacy sgtable path, on dma-direct
// and on the test kit's small IOMMU (a DmaMapOps fake: a subsystem test may not import iommu-dma).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  attachDmaOps,
  BlkStatus,
  blkDmaIterInit,
  createMachine,
  DMA_ATTR_MMIO,
  DmaIovaState,
  dmaUnmapPhys,
  PAGE_SIZE,
  pcimP2pdmaProvider,
  REQ_P2PDMA,
  ReqOp,
  SgTable,
  rqDmaDir,
  SZ_1G,
  SZ_1M,
  toPciDev,
} from '@dmakit/dma-core';
import type { BlkRequest, Device, Machine } from '@dmakit/dma-core';
import {
  bioFromRanges,
  bioIntegrityAddPhys,
  bioIntegrityAlloc,
  blkRqFromBio,
  blkRqMapSgtable,
  blkRqsFromBios,
  blkRqUnmapSgtable,
  createBlkRqDmaMapper,
  nvmeQueueLimits,
  queueLimits,
} from '@dmakit/block-rq-dma';
import { FakeIommu, buildP2pSwitch, sameBytes } from '@dmakit/testkit';

const P = PAGE_SIZE;

interface Rig {
  m: Machine;
  dev: Device;
  iommu: FakeIommu | null;
}

function rig(withIommu: boolean, ramBytes = SZ_1G): Rig {
  const m = createMachine({ ramBytes, swiotlbBytes: ramBytes >= SZ_1G ? 64 * SZ_1M : 0, dmaDebug: 'strict' });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
  let iommu: FakeIommu | null = null;
  if (withIommu) {
    iommu = new FakeIommu();
    attachDmaOps(dev, iommu);
  }
  return { m, dev, iommu };
}

/** `n` scattered single pages filled with deterministic bytes; returns [ranges, bytes]. */
function scattered(m: Machine, n: number, firstOffset = 0, lastLen = P): { ranges: number[]; data: Uint8Array } {
  const ranges: number[] = [];
  const parts: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const page = m.memory.allocPages(1); // order 1: the next page is never adjacent to the next alloc's
    const off = i === 0 ? firstOffset : 0;
    const len = i === n - 1 ? lastLen : P - off;
    const bytes = m.rng.fill(new Uint8Array(len));
    m.memory.write(page + off, bytes);
    ranges.push(page + off, len);
    parts.push(bytes);
  }
  const data = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    data.set(p, o);
    o += p.length;
  }
  return { ranges, data };
}

interface Mapped {
  segs: [number, number][];
  ok: boolean;
  status: BlkStatus;
}

function mapAll(mapper: ReturnType<typeof createBlkRqDmaMapper>, rq: BlkRequest, dev: Device, state: DmaIovaState): Mapped {
  const iter = blkDmaIterInit();
  const segs: [number, number][] = [];
  let ok = mapper.blkRqDmaMapIterStart(rq, dev, state, iter);
  while (ok) {
    segs.push([iter.addr, iter.len]);
    ok = mapper.blkRqDmaMapIterNext(rq, dev, state, iter);
  }
  return { segs, ok: iter.status === BlkStatus.OK, status: iter.status };
}

/** What the device reads through the segments, concatenated. */
function deviceReads(dev: Device, segs: [number, number][]): Uint8Array {
  const out = new Uint8Array(segs.reduce((a, s) => a + s[1], 0));
  let o = 0;
  for (const [addr, len] of segs) {
    dev.dmaReadInto(addr, out, o, len);
    o += len;
  }
  return out;
}

function unmapAll(mapper: ReturnType<typeof createBlkRqDmaMapper>, rq: BlkRequest, dev: Device, state: DmaIovaState, segs: [number, number][]): boolean {
  const total = segs.reduce((a, s) => a + s[1], 0);
  const done = mapper.blkRqDmaUnmap(rq, dev, state, total);
  if (!done) for (const [a, l] of segs) dmaUnmapPhys(dev, a, l, rqDmaDir(rq));
  return done;
}

describe('blk_rq_dma_map_iter on dma-direct', () => {
  it('maps one segment per physical segment; the device reads the bytes; unmap leaves nothing', () => {
    const { m, dev } = rig(false);
    const mapper = createBlkRqDmaMapper();
    const { ranges, data } = scattered(m, 5, 512, 1536);
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.WRITE, 0, ranges)!)!;
    const state = new DmaIovaState();
    const r = mapAll(mapper, rq, dev, state);
    expect(r.ok).toBe(true);
    expect(r.segs.map((s) => s[1])).toEqual([P - 512, P, P, P, 1536]);
    expect(mapper.blkRqDmaMapCoalesce(state)).toBe(false);
    expect(deviceReads(dev, r.segs)).toEqual(data);
    expect(mapper.stats.directMaps).toBe(5);
    expect(mapper.stats.iovaTryAllocs).toBe(0); // merge boundary 0: not even tried
    expect(m.dmaDebug.entries).toBe(5);
    // dma-debug is on, so dma_need_unmap is true: the driver must unmap each segment.
    expect(unmapAll(mapper, rq, dev, state, r.segs)).toBe(false);
    expect(m.dmaDebug.entries).toBe(0);
    expect(m.dmaDebug.reports).toEqual([]);
  });

  it('with dma-debug off and a coherent device, unmap says there is nothing to do', () => {
    const { m, dev } = rig(false);
    m.dmaDebug.mode = 'off';
    const mapper = createBlkRqDmaMapper();
    const { ranges } = scattered(m, 2);
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.READ, 0, ranges)!)!;
    const state = new DmaIovaState();
    const r = mapAll(mapper, rq, dev, state);
    expect(r.segs).toHaveLength(2);
    expect(mapper.blkRqDmaUnmap(rq, dev, state, 2 * P)).toBe(true);
  });

  it('a mapping failure is BLK_STS_RESOURCE', () => {
    const m = createMachine({ ramBytes: 8 * SZ_1G, swiotlbBytes: 0, dmaDebug: 'warn' });
    const dev = m.pci.addDevice({ name: 'old', dmaMaskBits: 32 });
    const high = 6 * SZ_1G; // above the 32-bit mask, no swiotlb to bounce through
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.READ, 0, [high, P])!)!;
    const r = mapAll(createBlkRqDmaMapper(), rq, dev, new DmaIovaState());
    expect(r.segs).toEqual([]);
    expect(r.status).toBe(BlkStatus.RESOURCE);
  });
});

describe('blk_rq_dma_map_iter with an IOMMU', () => {
  it('coalesces a multi-segment request into one IOVA segment: one try_alloc, a link per segment, one sync', () => {
    const { m, dev, iommu } = rig(true);
    const mapper = createBlkRqDmaMapper();
    const { ranges, data } = scattered(m, 8, 1024, 2048);
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.WRITE, 0, ranges)!)!;
    const state = new DmaIovaState();
    const r = mapAll(mapper, rq, dev, state);
    expect(r.ok).toBe(true);
    expect(r.segs).toHaveLength(1);
    expect(r.segs[0]![1]).toBe(rq.dataLen);
    expect(r.segs[0]![0] % P).toBe(1024); // the first page's offset is kept
    expect(mapper.blkRqDmaMapCoalesce(state)).toBe(true);
    expect(iommu!.counts).toMatchObject({ tryAlloc: 1, link: 8, sync: 1, mapPhys: 0 });
    expect(deviceReads(dev, r.segs)).toEqual(data);
    expect(unmapAll(mapper, rq, dev, state, r.segs)).toBe(true);
    expect(iommu!.counts.destroy).toBe(1);
    expect(iommu!.pte.size).toBe(0);
    expect(iommu!.live).toBe(0);
    expect(m.dmaDebug.dumpIovaStates(dev).filter((s) => s.size > 0)).toEqual([]);
    expect(m.dmaDebug.reports).toEqual([]);
  });

  it('falls back to one mapping per segment when the gap mask forbids coalescing', () => {
    const { m, dev, iommu } = rig(true);
    const mapper = createBlkRqDmaMapper();
    // No virt boundary (a SCSI-like queue): a 2 KiB segment then another: interior boundary mid-page.
    const a = m.memory.allocPages(1);
    const b = m.memory.allocPages(1);
    const lim = queueLimits({ maxSegmentSize: 1 << 20, maxHwSectors: 2048 });
    const rq = blkRqFromBio(lim, bioFromRanges(ReqOp.READ, 0, [a, 2048, b + 2048, 2048])!)!;
    const state = new DmaIovaState();
    const r = mapAll(mapper, rq, dev, state);
    expect(r.segs).toHaveLength(2);
    expect(mapper.blkRqDmaMapCoalesce(state)).toBe(false);
    expect(iommu!.counts).toMatchObject({ tryAlloc: 0, mapPhys: 2 });
    dev.dmaWrite(r.segs[1]![0], Uint8Array.of(7, 7, 7));
    expect([...m.memory.read(b + 2048, 3)]).toEqual([7, 7, 7]);
    expect(unmapAll(mapper, rq, dev, state, r.segs)).toBe(false);
    expect(iommu!.pte.size).toBe(0);
    // The 6.17 rule ((virt_boundary + 1) & merge_boundary) refuses too: no virt boundary at all.
    const v617 = createBlkRqDmaMapper({ iovaEligibility: 'virt-boundary' });
    const st2 = new DmaIovaState();
    const r2 = mapAll(v617, rq, dev, st2);
    expect(r2.segs).toHaveLength(2);
    unmapAll(v617, rq, dev, st2, r2.segs);
    expect(m.dmaDebug.entries).toBe(0);
  });

  it('try_alloc failing falls back to the direct path with a zeroed state', () => {
    const { m, dev, iommu } = rig(true);
    iommu!.failTryAlloc = true;
    const mapper = createBlkRqDmaMapper();
    const { ranges, data } = scattered(m, 3);
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.WRITE, 0, ranges)!)!;
    const state = new DmaIovaState();
    state.addr = 123;
    const r = mapAll(mapper, rq, dev, state);
    expect(r.segs).toHaveLength(3);
    expect(state.addr).toBe(0);
    expect(deviceReads(dev, r.segs)).toEqual(data);
    unmapAll(mapper, rq, dev, state, r.segs);
    expect(iommu!.pte.size).toBe(0);
  });

  it('a link failure unwinds what was linked and fails the request with the errno status', () => {
    const { m, dev, iommu } = rig(true);
    iommu!.failLinkAt = 3;
    const mapper = createBlkRqDmaMapper();
    const { ranges } = scattered(m, 5);
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.WRITE, 0, ranges)!)!;
    const state = new DmaIovaState();
    const r = mapAll(mapper, rq, dev, state);
    expect(r.segs).toEqual([]);
    expect(r.status).toBe(BlkStatus.RESOURCE);
    expect(mapper.blkRqDmaMapCoalesce(state)).toBe(false);
    expect(iommu!.pte.size).toBe(0);
    expect(iommu!.live).toBe(0);
    expect(m.dmaDebug.reports).toEqual([]);
  });

  it('legacy path: an SgTable per request, dma_map_sgtable, same bytes, one IOMMU map per entry', () => {
    const { m, dev, iommu } = rig(true);
    const { ranges, data } = scattered(m, 4, 0, 512);
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.WRITE, 0, ranges)!)!;
    const mp = blkRqMapSgtable(rq, dev);
    expect(mp.status).toBe(BlkStatus.OK);
    expect(mp.sgt.nents).toBe(4);
    const segs: [number, number][] = [];
    for (let i = 0; i < mp.sgt.nents; i++) segs.push([mp.sgt.dmaAddress[i]!, mp.sgt.dmaLength[i]!]);
    expect(deviceReads(dev, segs)).toEqual(data);
    expect(iommu!.counts).toMatchObject({ mapSg: 1, mapPhys: 4, tryAlloc: 0 });
    blkRqUnmapSgtable(rq, dev, mp);
    expect(iommu!.pte.size).toBe(0);
    expect(m.dmaDebug.entries).toBe(0);
  });

  it('integrity twin: the PI stream gets its own IOVA range', () => {
    const { m, dev, iommu } = rig(true);
    const mapper = createBlkRqDmaMapper();
    const lim = nvmeQueueLimits({ integrityTupleSize: 8, maxIntegritySegments: 1, logicalBlockSize: 4096 });
    const { ranges, data } = scattered(m, 4);
    const bio = bioFromRanges(ReqOp.WRITE, 0, ranges)!;
    const pi = m.memory.allocPages(0);
    m.memory.write(pi, m.rng.fill(new Uint8Array(32)));
    bioIntegrityAlloc(bio, 1);
    expect(bioIntegrityAddPhys(bio, pi, 32)).toBe(32);
    const rq = blkRqFromBio(lim, bio)!;
    expect(rq.nrIntegritySegments).toBe(1);
    const dState = new DmaIovaState();
    const d = mapAll(mapper, rq, dev, dState);
    expect(deviceReads(dev, d.segs)).toEqual(data);
    const iState = new DmaIovaState();
    const iter = blkDmaIterInit();
    expect(mapper.blkRqIntegrityDmaMapIterStart(rq, dev, iState, iter)).toBe(true);
    expect(iter.len).toBe(32); // 4 blocks x 8-byte tuples
    expect(dev.dmaRead(iter.addr, 32)).toEqual(m.memory.read(pi, 32));
    expect(mapper.blkRqIntegrityDmaMapIterNext(rq, dev, iter)).toBe(false);
    expect(iter.status).toBe(BlkStatus.OK);
    expect(iommu!.counts.tryAlloc).toBe(2);
    expect(mapper.blkRqIntegrityDmaUnmap(rq, dev, iState, 32)).toBe(true);
    expect(mapper.blkRqDmaUnmap(rq, dev, dState, rq.dataLen)).toBe(true);
    expect(iommu!.pte.size).toBe(0);
  });

  it('integrity map of a request without PI is a reported driver bug', () => {
    const { m, dev } = rig(true);
    m.dmaDebug.mode = 'warn';
    const { ranges } = scattered(m, 1);
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.WRITE, 0, ranges)!)!;
    const iter = blkDmaIterInit();
    expect(createBlkRqDmaMapper().blkRqIntegrityDmaMapIterStart(rq, dev, new DmaIovaState(), iter)).toBe(false);
    expect(iter.status).toBe(BlkStatus.INVAL);
    expect(m.dmaDebug.reports.map((r) => r.rule)).toEqual(['invalid-argument']);
  });
});

describe('P2P requests (classification from the first segment)', () => {
  function p2pRig(opts: { acs: boolean; allowed: boolean }): { m: Machine; gpu: Device; nvme: Device; bar: number } {
    const t = buildP2pSwitch({ ...opts, clientName: 'nvme' });
    const prov = pcimP2pdmaProvider(toPciDev(t.provider)!, 0)!;
    expect(prov.bar.start).toBe(t.barPhys);
    return { m: t.machine, gpu: t.provider, nvme: t.client, bar: prov.bar.start };
  }

  it('BUS_ADDR: bus addresses, REQ_P2PDMA, and unmap has nothing to do', () => {
    const { m, nvme, bar } = p2pRig({ acs: false, allowed: false });
    const mapper = createBlkRqDmaMapper();
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.READ, 0, [bar, P, bar + 3 * P, P])!)!;
    const state = new DmaIovaState();
    const r = mapAll(mapper, rq, nvme, state);
    expect(r.segs).toHaveLength(2);
    expect(rq.cmdFlags & REQ_P2PDMA).not.toBe(0);
    expect(mapper.stats.busSegments).toBe(2);
    // The device writes into the peer's BAR through the switch.
    nvme.dmaWrite(r.segs[1]![0], Uint8Array.of(1, 2, 3, 4));
    expect([...m.memory.read(bar + 3 * P, 4)]).toEqual([1, 2, 3, 4]);
    expect(mapper.blkRqDmaUnmap(rq, nvme, state, 2 * P)).toBe(true);
    expect(m.dmaDebug.entries).toBe(0);
  });

  it('THRU_HOST_BRIDGE: mapped like RAM with DMA_ATTR_MMIO', () => {
    const { m, nvme, bar } = p2pRig({ acs: true, allowed: true });
    const mapper = createBlkRqDmaMapper();
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.READ, 0, [bar, 2 * P])!)!;
    const state = new DmaIovaState();
    const iter = blkDmaIterInit();
    expect(mapper.blkRqDmaMapIterStart(rq, nvme, state, iter)).toBe(true);
    expect(iter.attrs).toBe(DMA_ATTR_MMIO);
    expect(rq.cmdFlags & REQ_P2PDMA).toBe(0);
    expect(m.dmaDebug.dumpMappings(nvme)[0]?.attrs).toBe(DMA_ATTR_MMIO);
    expect(mapper.blkRqDmaMapIterNext(rq, nvme, state, iter)).toBe(false);
    expect(mapper.blkRqDmaUnmap(rq, nvme, state, 2 * P)).toBe(false);
    dmaUnmapPhys(nvme, iter.addr, 2 * P, rqDmaDir(rq), DMA_ATTR_MMIO);
    expect(m.dmaDebug.entries).toBe(0);
  });

  it('NOT_SUPPORTED fails the request with BLK_STS_INVAL and maps nothing', () => {
    const { m, nvme, bar } = p2pRig({ acs: true, allowed: false });
    const mapper = createBlkRqDmaMapper();
    const rq = blkRqFromBio(nvmeQueueLimits(), bioFromRanges(ReqOp.READ, 0, [bar, P])!)!;
    const r = mapAll(mapper, rq, nvme, new DmaIovaState());
    expect(r.segs).toEqual([]);
    expect(r.status).toBe(BlkStatus.INVAL);
    expect(mapper.stats.p2pRefused).toBe(1);
    expect(m.dmaDebug.entries).toBe(0);
  });
});

// ---- properties ---------------------------------------------------------------------------------

/** The bytes a request covers, read bvec by bvec from its bios (independent of the iterator). */
function requestBytes(m: Machine, rq: BlkRequest): Uint8Array {
  const out = new Uint8Array(rq.dataLen);
  let o = 0;
  for (let bio = rq.bio; bio !== null; bio = bio.next) {
    let idx = bio.iter.idx;
    let done = bio.iter.bvecDone;
    let left = bio.iter.size;
    while (left > 0) {
      const len = Math.min(bio.bvLen[idx]! - done, left);
      out.set(m.memory.read(bio.bvPage[idx]! + bio.bvOffset[idx]! + done, len), o);
      o += len;
      left -= len;
      idx++;
      done = 0;
    }
  }
  return out;
}

describe('properties', () => {
  const limitsArb = fc.record({
    maxSegmentSize: fc.constantFrom(4096, 8192, 65536),
    segBoundaryMask: fc.constantFrom(0x3fff, 0xffff, 0xffff_ffff),
    virt: fc.boolean(),
    maxSegments: fc.integer({ min: 1, max: 16 }),
    maxHwSectors: fc.integer({ min: 8, max: 512 }),
  });
  // `contig`: start where the previous bvec ended (so the iterator has merging to do).
  const bvecArb = fc.record({ page: fc.integer({ min: 0, max: 50 }), off: fc.integer({ min: 0, max: 7 }), len: fc.integer({ min: 1, max: 16 }), contig: fc.boolean() });
  const biosArb = fc.array(fc.array(bvecArb, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 6 });

  it('segments cover each request exactly, respect the limits, move the right bytes, and nothing leaks after unmap', () => {
    fc.assert(
      fc.property(limitsArb, biosArb, fc.boolean(), fc.boolean(), (l, biosSpec, withIommu, mergeBvecs) => {
        const { m, dev, iommu } = rig(withIommu, 32 * SZ_1M);
        const base = m.memory.allocPages(6);
        m.memory.write(base, m.rng.fill(new Uint8Array(64 * P)));
        const lim = queueLimits({
          maxSegments: l.maxSegments,
          maxHwSectors: l.maxHwSectors,
          segBoundaryMask: l.segBoundaryMask,
          ...(l.virt ? { virtBoundaryMask: 4095 } : { maxSegmentSize: l.maxSegmentSize }),
        });
        let sector = 0;
        let inputBytes = 0;
        let prevEnd = -1;
        const bios = biosSpec.map((spec) => {
          const ranges: number[] = [];
          for (const b of spec) {
            const start = b.contig && prevEnd >= 0 && prevEnd + b.len * 512 <= base + 64 * P ? prevEnd : base + b.page * P + b.off * 512;
            ranges.push(start, b.len * 512);
            prevEnd = start + b.len * 512;
          }
          const bio = bioFromRanges(ReqOp.WRITE, sector, ranges, mergeBvecs)!;
          sector += bio.iter.size >> 9;
          inputBytes += bio.iter.size;
          return bio;
        });
        const built = blkRqsFromBios(lim, bios);
        expect(built.failed).toEqual([]);
        expect(built.requests.reduce((a, r) => a + r.dataLen, 0)).toBe(inputBytes);
        const mapper = createBlkRqDmaMapper();
        for (const rq of built.requests) {
          expect(rq.dataLen).toBeLessThanOrEqual(lim.maxSectors * 512);
          expect(rq.nrPhysSegments).toBeLessThanOrEqual(lim.maxSegments);
          // CPU-side segments (legacy path's table).
          const sgt = new SgTable(Math.max(1, rq.nrPhysSegments));
          const n = mapper.blkRqMapSg(rq, sgt);
          expect(n).toBeGreaterThan(0);
          expect(n).toBeLessThanOrEqual(rq.nrPhysSegments);
          let sum = 0;
          for (let i = 0; i < n; i++) {
            const p = sgt.phys[i]!;
            const len = sgt.length[i]!;
            sum += len;
            expect(len).toBeLessThanOrEqual(lim.maxSegmentSize);
            expect(Math.floor(p / (lim.segBoundaryMask + 1))).toBe(Math.floor((p + len - 1) / (lim.segBoundaryMask + 1)));
            if (l.virt && i > 0) expect(p % P).toBe(0);
            if (l.virt && i < n - 1) expect((p + len) % P).toBe(0);
          }
          expect(sum).toBe(rq.dataLen);
          // DMA side: the device reads exactly the request's bytes.
          const state = new DmaIovaState();
          const r = mapAll(mapper, rq, dev, state);
          expect(r.ok).toBe(true);
          if (withIommu && l.virt) expect(r.segs).toHaveLength(1);
          if (!withIommu) expect(r.segs).toHaveLength(n);
          expect(sameBytes(deviceReads(dev, r.segs), requestBytes(m, rq))).toBe(true);
          unmapAll(mapper, rq, dev, state, r.segs);
        }
        expect(m.dmaDebug.entries).toBe(0);
        expect(m.dmaDebug.reports).toEqual([]);
        if (iommu !== null) {
          expect(iommu.live).toBe(0);
          expect(iommu.pte.size).toBe(0);
        }
      }),
      { numRuns: 200, seed: 4 },
    );
  });
});

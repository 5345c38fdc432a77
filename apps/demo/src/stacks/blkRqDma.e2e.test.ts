// block-rq-dma against the real IOMMU model (@dmakit/iommu-dma): requests mapped with the
// iterator (one IOVA range per request) and with the legacy sgtable path, bytes moved by the
// device port through the IOMMU page table, nothing left behind; DMA pools under the IOMMU.
import { describe, expect, it } from 'vitest';
import {
  BlkStatus,
  blkDmaIterInit,
  createMachine,
  DmaFaultError,
  DmaIovaState,
  dmaPoolAlloc,
  dmaPoolCreate,
  dmaPoolDestroy,
  dmaPoolFree,
  dmaUnmapPhys,
  PAGE_SIZE,
  ReqOp,
  rqDmaDir,
  SZ_1G,
} from '@dmakit/dma-core';
import type { BlkRequest, Device, DmaPoolBlock, Machine } from '@dmakit/dma-core';
import { bioFromRanges, blkRqMapSgtable, blkRqsFromBios, blkRqUnmapSgtable, createBlkRqDmaMapper, nvmeQueueLimits } from '@dmakit/block-rq-dma';
import type { BlkRqDma } from '@dmakit/block-rq-dma';
import { createIommu } from '@dmakit/iommu-dma';
import type { Iommu } from '@dmakit/iommu-dma';

const P = PAGE_SIZE;

function stack(mode: 'strict' | 'lazy' | 'off'): { m: Machine; dev: Device; iommu: Iommu | null } {
  const m = createMachine({ ramBytes: SZ_1G, seed: 11, dmaDebug: 'strict' });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
  let iommu: Iommu | null = null;
  if (mode !== 'off') {
    iommu = createIommu(m, { mode });
    iommu.attachDevice(dev);
  }
  return { m, dev, iommu };
}

/** A write bio of `pages` scattered pages (some with sub-page first/last parts), filled with known bytes. */
function writeBio(m: Machine, pages: number, headSkip: number, tailLen: number): { ranges: number[]; data: Uint8Array } {
  const ranges: number[] = [];
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < pages; i++) {
    const page = m.memory.allocPages(0);
    m.memory.allocPages(0); // keep pages discontiguous
    const off = i === 0 ? headSkip : 0;
    const len = i === pages - 1 ? tailLen - (pages === 1 ? headSkip : 0) : P - off;
    const bytes = m.rng.fill(new Uint8Array(len));
    m.memory.write(page + off, bytes);
    ranges.push(page + off, len);
    chunks.push(bytes);
  }
  const data = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    data.set(c, o);
    o += c.length;
  }
  return { ranges, data };
}

function mapIter(mapper: BlkRqDma, rq: BlkRequest, dev: Device, state: DmaIovaState): [number, number][] {
  const iter = blkDmaIterInit();
  const segs: [number, number][] = [];
  let ok = mapper.blkRqDmaMapIterStart(rq, dev, state, iter);
  while (ok) {
    segs.push([iter.addr, iter.len]);
    ok = mapper.blkRqDmaMapIterNext(rq, dev, state, iter);
  }
  expect(iter.status).toBe(BlkStatus.OK);
  return segs;
}

function read(dev: Device, segs: readonly [number, number][]): Uint8Array {
  const out = new Uint8Array(segs.reduce((a, s) => a + s[1], 0));
  let o = 0;
  for (const [addr, len] of segs) {
    dev.dmaReadInto(addr, out, o, len);
    o += len;
  }
  return out;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

describe('block-rq-dma e2e with the IOMMU model', () => {
  for (const mode of ['strict', 'lazy', 'off'] as const) {
    it(`${mode}: 200 mixed requests through the iterator and the legacy path, bytes verified, nothing leaks`, () => {
      const { m, dev, iommu } = stack(mode);
      const mapper = createBlkRqDmaMapper();
      const lim = nvmeQueueLimits();
      const rng = m.rng.fork();
      let verified = 0;
      for (let n = 0; n < 200; n++) {
        const pages = 1 + rng.nextInt(64);
        const head = rng.nextInt(8) * 512;
        const tail = (1 + rng.nextInt(8)) * 512;
        const { ranges, data } = writeBio(m, pages, head, pages === 1 ? Math.max(tail, head + 512) : tail);
        const built = blkRqsFromBios(lim, [bioFromRanges(ReqOp.WRITE, n * 1024, ranges)!]);
        expect(built.failed).toEqual([]);
        // Requests split at gaps: concatenated, they carry the bio's bytes.
        const parts: Uint8Array[] = [];
        for (const rq of built.requests) {
          if (n % 2 === 0) {
            const state = new DmaIovaState();
            const segs = mapIter(mapper, rq, dev, state);
            if (iommu !== null) expect(segs).toHaveLength(1);
            parts.push(read(dev, segs));
            const total = segs.reduce((a, s) => a + s[1], 0);
            if (!mapper.blkRqDmaUnmap(rq, dev, state, total)) for (const [a, l] of segs) dmaUnmapPhys(dev, a, l, rqDmaDir(rq));
            if (iommu !== null && mode === 'strict') {
              // Unmapped means gone: the device faults on the old address.
              expect(() => dev.dmaRead(segs[0]![0], 1)).toThrow(DmaFaultError);
            }
          } else {
            const mp = blkRqMapSgtable(rq, dev);
            expect(mp.status).toBe(BlkStatus.OK);
            const segs: [number, number][] = [];
            for (let i = 0; i < mp.sgt.nents; i++) segs.push([mp.sgt.dmaAddress[i]!, mp.sgt.dmaLength[i]!]);
            parts.push(read(dev, segs));
            blkRqUnmapSgtable(rq, dev, mp);
          }
        }
        const got = new Uint8Array(data.length);
        let o = 0;
        for (const p of parts) {
          got.set(p, o);
          o += p.length;
        }
        expect(same(got, data)).toBe(true);
        verified += data.length;
      }
      expect(verified).toBeGreaterThan(200 * P);
      iommu?.flushQueues();
      expect(m.dmaDebug.entries).toBe(0);
      expect(m.dmaDebug.dumpIovaStates(dev).filter((s) => s.size > 0)).toEqual([]);
      if (iommu !== null) {
        const s = iommu.stats();
        // Iterator requests: one IOVA allocation each, no per-page allocations.
        expect(mapper.stats.iovaRequests).toBe(mapper.stats.iovaTryAllocs);
        expect(s.iovaAllocs).toBe(s.iovaFrees);
        expect(s.fqPending).toBe(0);
      }
      m.faults.length = 0;
      expect(m.dmaDebug.reports).toEqual([]);
    });
  }

  for (const site of ['iova', 'pgtable'] as const) {
    it(`fault injection at '${site}': failed requests report a status, the rest move their bytes, nothing leaks`, () => {
      const { m, dev, iommu } = stack('strict');
      const mapper = createBlkRqDmaMapper();
      const lim = nvmeQueueLimits();
      const rqs: { rq: BlkRequest; data: Uint8Array }[] = [];
      for (let n = 0; n < 60; n++) {
        const { ranges, data } = writeBio(m, 1 + (n % 40), 0, P);
        const rq = blkRqsFromBios(lim, [bioFromRanges(ReqOp.WRITE, 0, ranges)!]).requests[0]!;
        rqs.push({ rq, data });
      }
      // Table pages get allocated by the first mappings and then reused: warm up, then inject.
      m.faultInjection.arm(site, 3, true);
      let failed = 0;
      let moved = 0;
      for (const { rq, data } of rqs) {
        const state = new DmaIovaState();
        const iter = blkDmaIterInit();
        const segs: [number, number][] = [];
        let ok = mapper.blkRqDmaMapIterStart(rq, dev, state, iter);
        while (ok) {
          segs.push([iter.addr, iter.len]);
          ok = mapper.blkRqDmaMapIterNext(rq, dev, state, iter);
        }
        const total = segs.reduce((a, x) => a + x[1], 0);
        if (iter.status !== BlkStatus.OK) {
          failed++;
          expect([BlkStatus.RESOURCE, BlkStatus.INVAL, BlkStatus.IOERR]).toContain(iter.status);
        } else {
          expect(same(read(dev, segs), data)).toBe(true);
          moved++;
        }
        // The driver unmaps what it was given, whether the request failed half way or not.
        if (!mapper.blkRqDmaUnmap(rq, dev, state, total)) for (const [a, l] of segs) dmaUnmapPhys(dev, a, l, rqDmaDir(rq));
        if (failed + moved === 20) m.faultInjection.disarm(site);
      }
      expect(m.faultInjection.injected.get(site) ?? 0).toBeGreaterThan(0);
      expect(failed).toBeGreaterThan(0);
      expect(moved).toBeGreaterThanOrEqual(40); // everything after the disarm
      const s = iommu!.stats();
      expect(s.iovaAllocs).toBe(s.iovaFrees);
      expect(m.dmaDebug.entries).toBe(0);
      expect(m.dmaDebug.dumpIovaStates(dev).filter((x) => x.size > 0)).toEqual([]);
      expect(m.dmaDebug.reports).toEqual([]);
    });
  }

  it('the device writes a READ through the IOVA range into every scattered page', () => {
    const { m, dev } = stack('strict');
    const mapper = createBlkRqDmaMapper();
    const ranges: number[] = [];
    for (let i = 0; i < 33; i++) {
      ranges.push(m.memory.allocPages(0), P);
      m.memory.allocPages(0);
    }
    const rq = blkRqsFromBios(nvmeQueueLimits(), [bioFromRanges(ReqOp.READ, 0, ranges)!]).requests[0]!;
    const state = new DmaIovaState();
    const segs = mapIter(mapper, rq, dev, state);
    expect(segs).toHaveLength(1);
    const payload = m.rng.fill(new Uint8Array(33 * P));
    dev.dmaWrite(segs[0]![0], payload);
    for (let i = 0; i < 33; i++) expect(same(m.memory.read(ranges[2 * i]!, P), payload.subarray(i * P, (i + 1) * P))).toBe(true);
    expect(mapper.blkRqDmaUnmap(rq, dev, state, 33 * P)).toBe(true);
    expect(m.dmaDebug.entries).toBe(0);
  });

  it('DMA pools under a strict IOMMU: PRP-list-sized blocks the device can read, all returned', () => {
    const { m, dev, iommu } = stack('strict');
    const small = dmaPoolCreate('nvme descriptor small', dev, 256, 256, 0)!;
    const large = dmaPoolCreate('nvme descriptor page', dev, 4096, 4096, 0)!;
    const blocks: [typeof small, DmaPoolBlock][] = [];
    for (let i = 0; i < 40; i++) blocks.push([small, dmaPoolAlloc(small)!], [large, dmaPoolAlloc(large)!]);
    for (const [, b] of blocks) {
      m.memory.write(b.phys, Uint8Array.of(0xde, 0xad));
      expect([...dev.dmaRead(b.dma, 2)]).toEqual([0xde, 0xad]);
    }
    for (const [p, b] of blocks) dmaPoolFree(p, b.vaddr, b.dma);
    dmaPoolDestroy(small);
    dmaPoolDestroy(large);
    expect(m.dmaDebug.entries).toBe(0);
    expect(iommu!.stats().iovaAllocs).toBe(iommu!.stats().iovaFrees);
    expect(m.dmaDebug.reports).toEqual([]);
  });
});

// dma-buf on a real IOMMU (iommu-dma): the IOVA path of dma_buf_phys_vec_to_sgt (one range, MMIO
// links at running offsets, one sync), its per-range fallback, and fail-the-Nth sweeps over the map
// paths: every failure unwinds completely (no mapping, IOVA range or pin left behind).
import { describe, expect, it } from 'vitest';
import { DMA_BIDIRECTIONAL, DMA_RESV_USAGE_KERNEL, Errno, MAX_SCHEDULE_TIMEOUT, PAGE_SIZE, SZ_1G, SZ_1M, createMachine, isAligned, isErrPtr } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import {
  DmaBufFdTable,
  GpuVramExporter,
  VfioPciCoreDevice,
  createDmaBufPort,
  dmaBufMappingStats,
  dmaBufSgtIovaState,
  dmaBufSgtMode,
} from '@dmakit/dmabuf';
import { DmaBufImporter, buildDmabufTopology } from './dmabufP2p.js';

const port = createDmaBufPort(new DmaBufFdTable());

function rig(mode: 'strict' | 'lazy' = 'strict'): ReturnType<typeof buildDmabufTopology> & { m: Machine } {
  const m = createMachine({ ramBytes: SZ_1G, seed: 11 });
  return { m, ...buildDmabufTopology(m, mode) };
}

function noLeak(r: ReturnType<typeof rig>, live0: number): void {
  r.iommu?.flushQueues();
  const st = r.iommu?.stats();
  expect(dmaBufMappingStats.live).toBe(live0);
  expect(r.m.dmaDebug.entries).toBe(0);
  expect(r.m.dmaDebug.iovaStates).toBe(0);
  expect(st?.iovaAllocs).toBe(st?.iovaFrees);
}

describe('dma-buf MMIO mapping through the host bridge (IOMMU)', () => {
  it('IOVA mode: one range, each BAR range linked at its running offset, one IOTLB sync, page aligned', () => {
    const r = rig();
    const live0 = dmaBufMappingStats.live;
    const vdev = new VfioPciCoreDevice(r.m, r.vfioDev);
    const ranges = [{ offset: 3 * PAGE_SIZE, length: 2 * PAGE_SIZE }, { offset: SZ_1M, length: 5 * PAGE_SIZE }, { offset: 6 * SZ_1M, length: PAGE_SIZE }];
    const buf = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: ranges });
    if (isErrPtr(buf)) throw new Error('feature');
    const nic = new DmaBufImporter(port, buf, r.nic);
    const before = r.iommu?.stats();
    const sgt = nic.ensure();
    const after = r.iommu?.stats();
    expect(sgt).not.toBeNull();
    if (sgt === null || before === undefined || after === undefined) return;
    expect(dmaBufSgtMode(sgt)).toBe('iova');
    expect(sgt.nents).toBe(1);
    expect(sgt.dmaLength[0]).toBe(8 * PAGE_SIZE);
    expect(isAligned(sgt.dmaAddress[0]!, PAGE_SIZE)).toBe(true);
    expect(dmaBufSgtIovaState(sgt)?.size).toBe(8 * PAGE_SIZE);
    expect(after.iovaAllocs - before.iovaAllocs).toBe(1);
    expect(after.pteWrites - before.pteWrites).toBeGreaterThanOrEqual(8);
    // The NIC writes across the whole IOVA range; each byte lands in its BAR range.
    const data = r.m.rng.fill(new Uint8Array(8 * PAGE_SIZE));
    expect(nic.transfer(0, data.length, data, true)).toBe(0);
    const bar = (r.vfioDev.bus as { bar(i: number): { start: number } }).bar(1).start;
    let off = 0;
    for (const g of ranges) {
      expect(Buffer.compare(r.m.memory.read(bar + g.offset, g.length), data.subarray(off, off + g.length))).toBe(0);
      off += g.length;
    }
    nic.close();
    port.dmaBufPut(buf);
    noLeak(r, live0);
  });

  it('IOVA allocation fails → per-range dma_map_phys with MMIO, same bytes', () => {
    const r = rig();
    const live0 = dmaBufMappingStats.live;
    const vdev = new VfioPciCoreDevice(r.m, r.vfioDev);
    const buf = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }, { offset: 8 * PAGE_SIZE, length: 2 * PAGE_SIZE }] });
    if (isErrPtr(buf)) throw new Error('feature');
    const nic = new DmaBufImporter(port, buf, r.nic);
    r.m.faultInjection.arm('iova', 1); // dma_iova_try_alloc's allocation fails once
    const sgt = nic.ensure();
    expect(sgt === null ? null : dmaBufSgtMode(sgt)).toBe('map-phys');
    expect(sgt?.nents).toBe(2);
    const data = r.m.rng.fill(new Uint8Array(3 * PAGE_SIZE));
    expect(nic.transfer(0, data.length, data, true)).toBe(0);
    const out = new Uint8Array(3 * PAGE_SIZE);
    expect(nic.transfer(0, out.length, out, false)).toBe(0);
    expect(Buffer.compare(out, data)).toBe(0);
    nic.close();
    port.dmaBufPut(buf);
    noLeak(r, live0);
  });

  for (const site of ['iova', 'pgtable'] as const) {
    it(`fail-the-Nth '${site}' over the MMIO map paths: -errno or success, never a leak`, () => {
      const r = rig();
      const live0 = dmaBufMappingStats.live;
      const vdev = new VfioPciCoreDevice(r.m, r.vfioDev);
      const buf = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: 2 * SZ_1M }, { offset: 4 * SZ_1M, length: PAGE_SIZE }, { offset: 6 * SZ_1M, length: 3 * PAGE_SIZE }] });
      if (isErrPtr(buf)) throw new Error('feature');
      const nic = new DmaBufImporter(port, buf, r.nic);
      let failures = 0;
      for (let nth = 1; nth < 64; nth++) {
        const injected = r.m.faultInjection.injected.get(site) ?? 0;
        // 'iova': from the Nth allocation on, every one fails (try_alloc, then the fallback's maps).
        r.m.faultInjection.arm(site, nth, site === 'iova');
        const sgt = nic.ensure();
        r.m.faultInjection.disarm(site);
        const hit = (r.m.faultInjection.injected.get(site) ?? 0) > injected;
        if (sgt === null) {
          failures++;
          expect([-Errno.ENOMEM, -Errno.EIO, -Errno.EINVAL]).toContain(nic.lastError);
          expect(buf.mappedCount).toBe(0);
          noLeak(r, live0);
          continue;
        }
        // A success (maybe through the fallback) maps the whole buffer and is undone fully.
        const data = r.m.rng.fill(new Uint8Array(PAGE_SIZE));
        expect(nic.transfer(2 * SZ_1M, PAGE_SIZE, data, true)).toBe(0);
        if (nic.sgt !== null) port.dmaBufUnmapAttachmentUnlocked(nic.attach, nic.sgt, DMA_BIDIRECTIONAL);
        nic.sgt = null;
        noLeak(r, live0);
        if (!hit) break;
      }
      expect(failures).toBeGreaterThan(0);
      nic.close();
      port.dmaBufPut(buf);
      noLeak(r, live0);
    });
  }

  it("fail-the-Nth over the GPU's moves: eviction out of memory is -ENOMEM with no move_notify", () => {
    const r = rig('lazy');
    const live0 = dmaBufMappingStats.live;
    const gpu = new GpuVramExporter(r.m, r.gpuDev);
    const buf = gpu.exportBuffer(64 * 1024);
    if (isErrPtr(buf)) throw new Error('export');
    const nic = new DmaBufImporter(port, buf, r.nic);
    nic.ensure();
    const pages = r.m.memory.allocatedPageCount;
    r.m.faultInjection.arm('alloc_pages', 5);
    expect(gpu.evict(buf)).toBe(-Errno.ENOMEM);
    expect(nic.moveNotifies).toBe(0);
    expect(r.m.memory.allocatedPageCount).toBe(pages);
    expect(gpu.placement(buf)).toBe('vram');
    expect(gpu.evict(buf)).toBe(0);
    // The system-memory map path under IOVA failures: the NIC gets an errno or a full mapping.
    for (let nth = 1; nth <= 20; nth++) {
      r.m.faultInjection.arm('iova', nth);
      const s = nic.ensure();
      r.m.faultInjection.disarm('iova');
      if (s === null) expect(buf.mappedCount).toBe(0);
      else {
        port.dmaResvWaitTimeout(buf.resv, DMA_RESV_USAGE_KERNEL, false, MAX_SCHEDULE_TIMEOUT);
        if (nic.sgt !== null) port.dmaBufUnmapAttachmentUnlocked(nic.attach, nic.sgt, DMA_BIDIRECTIONAL);
        nic.sgt = null;
      }
    }
    nic.close();
    port.dmaBufPut(buf);
    noLeak(r, live0);
    expect(gpu.stats.vramPagesUsed).toBe(0);
  });
});

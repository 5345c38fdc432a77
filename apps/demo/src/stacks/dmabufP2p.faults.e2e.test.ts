// dma-buf on a real IOMMU (iommu-dma): the IOVA path of dma_buf_phys_vec_to_sgt (one range, MMIO
// links at running offsets, one sync), its per-range fallback, and fail-the-Nth sweeps over the map
// paths: every failure unwinds completely (no mapping, IOVA range or pin left behind). The importer
// is the RDMA core's (ib_umem_dmabuf of @dmakit/rdma-umem-odp) on the NIC; the NIC's DMA goes to
// the per-page addresses it filled in, as the HCA's MTT would.
import { Errno, PAGE_SIZE, SZ_1G, SZ_1M, createMachine, isAligned, isErrPtr } from '@dmakit/dma-core';
import type { DmaBuf, Machine } from '@dmakit/dma-core';
import { describe, expect, it } from 'vitest';
import {
  DmaBufFdTable,
  GpuVramExporter,
  VfioPciCoreDevice,
  createDmaBufPort,
  dmaBufFd,
  dmaBufMappingStats,
  dmaBufSgtIovaState,
  dmaBufSgtMode,
} from '@dmakit/dmabuf';
import { ibUmemDmabufGet, ibUmemDmabufMapPages, ibUmemDmabufRelease, ibUmemDmabufUnmapPages } from '@dmakit/rdma-umem-odp';
import type { IbUmemDmabuf } from '@dmakit/rdma-umem-odp';
import { RDMA_RW, buildDmabufTopology } from './dmabufP2pRig.js';

const fds = new DmaBufFdTable();
const port = createDmaBufPort(fds);

function rig(mode: 'strict' | 'lazy' = 'strict'): ReturnType<typeof buildDmabufTopology> & { m: Machine } {
  const m = createMachine({ ramBytes: SZ_1G, seed: 11 });
  return { m, ...buildDmabufTopology(m, mode) };
}

interface NicImport {
  readonly fd: number;
  readonly umem: IbUmemDmabuf;
}

/** The NIC imports the whole buffer (handed over by fd): a dynamic attachment that allows P2P. */
function nicImport(r: ReturnType<typeof rig>, buf: DmaBuf): NicImport {
  const fd = dmaBufFd(fds, buf);
  const umem = ibUmemDmabufGet(r.nic, port, 0, buf.size, fd, RDMA_RW, null);
  if (isErrPtr(umem)) throw new Error(`ib_umem_dmabuf_get: ${umem}`);
  return { fd, umem };
}

/** `ib_umem_dmabuf_map_pages` under the reservation lock: 0 or -errno. */
function mapLocked(u: IbUmemDmabuf): number {
  expect(port.dmaResvLock(u.dmabuf.resv, 'test')).toBe(0);
  const rc = ibUmemDmabufMapPages(u);
  port.dmaResvUnlock(u.dmabuf.resv);
  return rc;
}

function unmapLocked(u: IbUmemDmabuf): void {
  expect(port.dmaResvLock(u.dmabuf.resv, 'test')).toBe(0);
  ibUmemDmabufUnmapPages(u);
  port.dmaResvUnlock(u.dmabuf.resv);
}

/** The NIC moves bytes [off, off + data.length) of the buffer through its per-page DMA addresses. */
function nicDma(r: ReturnType<typeof rig>, u: IbUmemDmabuf, off: number, data: Uint8Array, write: boolean): void {
  for (let done = 0; done < data.length; ) {
    const pos = off + done;
    const n = Math.min(data.length - done, PAGE_SIZE - (pos % PAGE_SIZE));
    const addr = (u.dmaAddr[Math.floor(pos / PAGE_SIZE)] ?? 0) + (pos % PAGE_SIZE);
    if (write) r.nic.dmaWrite(addr, data, done, n);
    else r.nic.dmaReadInto(addr, data, done, n);
    done += n;
  }
}

function close(imp: NicImport): void {
  ibUmemDmabufRelease(imp.umem);
  expect(fds.close(imp.fd)).toBe(0);
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
    const nic = nicImport(r, buf);
    const before = r.iommu?.stats();
    expect(mapLocked(nic.umem)).toBe(0);
    const after = r.iommu?.stats();
    const sgt = nic.umem.sgt;
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
    nicDma(r, nic.umem, 0, data, true);
    const bar = (r.vfioDev.bus as { bar(i: number): { start: number } }).bar(1).start;
    let off = 0;
    for (const g of ranges) {
      expect(Buffer.compare(r.m.memory.read(bar + g.offset, g.length), data.subarray(off, off + g.length))).toBe(0);
      off += g.length;
    }
    close(nic);
    noLeak(r, live0);
  });

  it('IOVA allocation fails → per-range dma_map_phys with MMIO, same bytes', () => {
    const r = rig();
    const live0 = dmaBufMappingStats.live;
    const vdev = new VfioPciCoreDevice(r.m, r.vfioDev);
    const buf = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }, { offset: 8 * PAGE_SIZE, length: 2 * PAGE_SIZE }] });
    if (isErrPtr(buf)) throw new Error('feature');
    const nic = nicImport(r, buf);
    r.m.faultInjection.arm('iova', 1); // dma_iova_try_alloc's allocation fails once
    expect(mapLocked(nic.umem)).toBe(0);
    const sgt = nic.umem.sgt;
    expect(sgt === null ? null : dmaBufSgtMode(sgt)).toBe('map-phys');
    expect(sgt?.nents).toBe(2);
    const data = r.m.rng.fill(new Uint8Array(3 * PAGE_SIZE));
    nicDma(r, nic.umem, 0, data, true);
    const out = new Uint8Array(3 * PAGE_SIZE);
    nicDma(r, nic.umem, 0, out, false);
    expect(Buffer.compare(out, data)).toBe(0);
    const bar = (r.vfioDev.bus as { bar(i: number): { start: number } }).bar(1).start;
    expect(Buffer.compare(r.m.memory.read(bar + 8 * PAGE_SIZE, 2 * PAGE_SIZE), data.subarray(PAGE_SIZE))).toBe(0);
    close(nic);
    noLeak(r, live0);
  });

  for (const site of ['iova', 'pgtable'] as const) {
    it(`fail-the-Nth '${site}' over the MMIO map paths: -errno or success, never a leak`, () => {
      const r = rig();
      const live0 = dmaBufMappingStats.live;
      const vdev = new VfioPciCoreDevice(r.m, r.vfioDev);
      const buf = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: 2 * SZ_1M }, { offset: 4 * SZ_1M, length: PAGE_SIZE }, { offset: 6 * SZ_1M, length: 3 * PAGE_SIZE }] });
      if (isErrPtr(buf)) throw new Error('feature');
      const nic = nicImport(r, buf);
      let failures = 0;
      for (let nth = 1; nth < 64; nth++) {
        const injected = r.m.faultInjection.injected.get(site) ?? 0;
        // 'iova': from the Nth allocation on, every one fails (try_alloc, then the fallback's maps).
        r.m.faultInjection.arm(site, nth, site === 'iova');
        const rc = mapLocked(nic.umem);
        r.m.faultInjection.disarm(site);
        const hit = (r.m.faultInjection.injected.get(site) ?? 0) > injected;
        if (rc !== 0) {
          failures++;
          expect(nic.umem.sgt).toBeNull();
          expect([-Errno.ENOMEM, -Errno.EIO, -Errno.EINVAL]).toContain(rc);
          expect(buf.mappedCount).toBe(0);
          noLeak(r, live0);
          continue;
        }
        // A success (maybe through the fallback) maps the whole buffer and is undone fully.
        const data = r.m.rng.fill(new Uint8Array(PAGE_SIZE));
        nicDma(r, nic.umem, 2 * SZ_1M, data, true);
        const back = new Uint8Array(PAGE_SIZE);
        nicDma(r, nic.umem, 2 * SZ_1M, back, false);
        expect(Buffer.compare(back, data)).toBe(0);
        unmapLocked(nic.umem);
        noLeak(r, live0);
        if (!hit) break;
      }
      expect(failures).toBeGreaterThan(0);
      close(nic);
      noLeak(r, live0);
    });
  }

  it("fail-the-Nth over the GPU's moves: eviction out of memory is -ENOMEM with no move_notify", () => {
    const r = rig('lazy');
    const live0 = dmaBufMappingStats.live;
    const gpu = new GpuVramExporter(r.m, r.gpuDev);
    const buf = gpu.exportBuffer(64 * 1024);
    if (isErrPtr(buf)) throw new Error('export');
    const nic = nicImport(r, buf);
    expect(mapLocked(nic.umem)).toBe(0);
    const pages = r.m.memory.allocatedPageCount;
    r.m.faultInjection.arm('alloc_pages', 5);
    expect(gpu.evict(buf)).toBe(-Errno.ENOMEM);
    expect(nic.umem.stats.moveNotifies).toBe(0);
    expect(nic.umem.sgt).not.toBeNull();
    expect(r.m.memory.allocatedPageCount).toBe(pages);
    expect(gpu.placement(buf)).toBe('vram');
    expect(gpu.evict(buf)).toBe(0);
    // The system-memory map path under IOVA failures: the NIC gets an errno or a full mapping.
    for (let nth = 1; nth <= 20; nth++) {
      r.m.faultInjection.arm('iova', nth);
      const rc = mapLocked(nic.umem);
      r.m.faultInjection.disarm('iova');
      if (rc !== 0) expect(buf.mappedCount).toBe(0);
      else unmapLocked(nic.umem);
    }
    close(nic);
    noLeak(r, live0);
    expect(gpu.stats.vramPagesUsed).toBe(0);
  });
});

import { describe, expect, it } from 'vitest';
import { DMA_FROM_DEVICE, DMA_NONE, DMA_TO_DEVICE, Errno, PAGE_SIZE } from '@dmakit/dma-core';
import { mlx5vfAllocDataBuffer, mlx5vfFreeDataBuffer, mlx5vfGetDataBuffer, mlx5vfPutDataBuffer, VfioDeviceMigState as S } from './index.js';
import type { Mlx5VhcaDataBuffer as Buf , Mlx5VhcaDataBuffer} from './index.js';
import { configureAndRun, drain, makeHost } from './testing/host.js';

function ok(b: Buf | number): Buf {
  if (typeof b === 'number') throw new Error(`alloc failed ${b}`);
  return b;
}

describe('register_dma_pages: page array, one IOVA range, MTT in the mkey input', () => {
  it('IOVA path: one try_alloc, a link per page, ONE sync; MTT[i] = state.addr + i * PAGE_SIZE; device DMA lands in the pages', () => {
    const h = makeHost({ iommu: true });
    const ctx = h.drv.bufCtx;
    const syncs0 = h.iommu!.syncs;
    const b = ok(mlx5vfAllocDataBuffer(ctx, 64, DMA_FROM_DEVICE));
    expect(h.iommu!.syncs - syncs0).toBe(1);
    expect(h.iommu!.links).toBe(64);
    expect(ctx.stats.iovaRegistrations).toBe(1);
    expect(b.mtt).not.toBeNull();
    for (let i = 0; i < 64; i++) expect(b.mtt![i]).toBe(b.state.addr + i * PAGE_SIZE);
    // 16 bytes of metadata per page: the page array and the MTT entry.
    expect(b.metadataBytes() / 64).toBe(16);
    // The PF writes through the MTT address; the CPU reads the page.
    const data = new Uint8Array(PAGE_SIZE).fill(0x5a);
    h.pf.dmaWrite(b.mtt![10]!, data);
    expect(h.machine.memory.read(b.pagePhys(10), PAGE_SIZE)).toEqual(data);
    mlx5vfFreeDataBuffer(ctx, b);
    expect(h.iommu!.mapped.size).toBe(0);
    expect(ctx.stats.metadataBytes).toBe(0);
  });

  it('fallback without an IOMMU: dma_map_page per page, MTT holds each address', () => {
    const h = makeHost();
    const ctx = h.drv.bufCtx;
    const b = ok(mlx5vfAllocDataBuffer(ctx, 8, DMA_TO_DEVICE));
    expect(ctx.stats.fallbackRegistrations).toBe(1);
    for (let i = 0; i < 8; i++) expect(b.mtt![i]).toBe(b.pagePhys(i));
    mlx5vfFreeDataBuffer(ctx, b);
    expect(h.machine.dmaDebug.reports.length).toBe(0);
  });

  it('legacy path: an appended scatterlist per buffer and dma_map_sgtable (about 33 bytes per page here)', () => {
    const h = makeHost({ iommu: true, legacy: true });
    const ctx = h.drv.bufCtx;
    const b = ok(mlx5vfAllocDataBuffer(ctx, 64, DMA_FROM_DEVICE));
    expect(b.sgt).not.toBeNull();
    expect(b.pageList.length).toBe(0);
    expect(ctx.stats.sgtRegistrations).toBe(1);
    for (let i = 0; i < 64; i++) expect(b.mtt![i]).toBe(b.mtt![0]! + i * PAGE_SIZE);
    expect(b.metadataBytes() / 64).toBeGreaterThan(16);
    mlx5vfFreeDataBuffer(ctx, b);
    expect(h.iommu!.mapped.size).toBe(0);
  });

  it('DMA_NONE buffers are CPU only (no mapping, no mkey)', () => {
    const h = makeHost({ iommu: true });
    const b = ok(mlx5vfAllocDataBuffer(h.drv.bufCtx, 1, DMA_NONE));
    expect(b.mkeyIn).toBeNull();
    expect(h.iommu!.mapped.size).toBe(0);
    mlx5vfFreeDataBuffer(h.drv.bufCtx, b);
  });

  for (const site of ['alloc_pages', 'iova', 'fake_link'] as const) {
    it(`fail-the-Nth sweep on '${site}': every failure unwinds what was mapped and allocated`, () => {
      for (let nth = 1; nth <= 70; nth++) {
        const h = makeHost({ iommu: true });
        const ctx = h.drv.bufCtx;
        const pages0 = h.machine.memory.allocatedPageCount;
        h.machine.faultInjection.arm(site, nth);
        const b = mlx5vfAllocDataBuffer(ctx, 64, DMA_FROM_DEVICE);
        if (typeof b === 'number') {
          expect(b).toBe(-Errno.ENOMEM);
          expect(h.machine.memory.allocatedPageCount).toBe(pages0);
          expect(h.iommu!.mapped.size).toBe(0);
          expect(ctx.stats.metadataBytes).toBe(0);
          expect(h.fw.liveMkeys).toBe(0);
        } else {
          mlx5vfFreeDataBuffer(ctx, b);
          expect(h.machine.memory.allocatedPageCount).toBe(pages0);
        }
        h.machine.faultInjection.disarm();
      }
    });
  }

  it('recycling by direction and size: reuse a big-enough same-direction buffer, free smaller ones met on the way', () => {
    const h = makeHost({ iommu: true });
    const ctx = h.drv.bufCtx;
    const avail: Mlx5VhcaDataBuffer[] = [];
    const small = ok(mlx5vfAllocDataBuffer(ctx, 2, DMA_FROM_DEVICE));
    const other = ok(mlx5vfAllocDataBuffer(ctx, 16, DMA_TO_DEVICE));
    const big = ok(mlx5vfAllocDataBuffer(ctx, 16, DMA_FROM_DEVICE));
    mlx5vfPutDataBuffer(avail, small);
    mlx5vfPutDataBuffer(avail, other);
    mlx5vfPutDataBuffer(avail, big);
    const got = ok(mlx5vfGetDataBuffer(ctx, avail, 8, DMA_FROM_DEVICE));
    expect(got).toBe(big);
    expect(avail).toEqual([other]);
    expect(small.npages).toBe(0); // freed
    expect(ctx.stats.recycled).toBe(1);
    const fresh = ok(mlx5vfGetDataBuffer(ctx, avail, 32, DMA_FROM_DEVICE));
    expect(fresh).not.toBe(big);
    for (const b of [got, fresh, other]) mlx5vfFreeDataBuffer(ctx, b);
    expect(ctx.stats.livePages).toBe(0);
  });

  it('the legacy path produces the identical migration stream', () => {
    const run = (legacy: boolean): Uint8Array => {
      const h = makeHost({ seed: 21, iommu: true, legacy });
      configureAndRun(h, 100);
      const r = h.drv.vdev.setMigDeviceState(S.STOP_COPY);
      return drain(r.dataFd!).bytes;
    };
    const a = run(false);
    const b = run(true);
    expect(a.length).toBeGreaterThan(0);
    expect(b).toEqual(a);
  });
});

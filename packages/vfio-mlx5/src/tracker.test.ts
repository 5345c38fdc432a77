import { describe, expect, it } from 'vitest';
import { Errno, PAGE_SIZE } from '@dmakit/dma-core';
import { ENOTTY, IovaBitmap, VfioDevice, vfioCombineIovaRanges } from './index.js';
import { configureAndRun, makeHost } from './testing/host.js';

describe('vfio_combine_iova_ranges', () => {
  it('merges the closest neighbours until the device limit is met', () => {
    const r = vfioCombineIovaRanges(
      [
        { iova: 0x10000, length: 0x1000 },
        { iova: 0x0, length: 0x1000 },
        { iova: 0x3000, length: 0x1000 },
        { iova: 0x100000, length: 0x1000 },
        { iova: 0x12000, length: 0x1000 },
        { iova: 0x200000, length: 0x1000 },
      ],
      4,
    );
    expect(r).toEqual([
      { iova: 0x0, length: 0x4000 },
      { iova: 0x10000, length: 0x3000 },
      { iova: 0x100000, length: 0x1000 },
      { iova: 0x200000, length: 0x1000 },
    ]);
    expect(vfioCombineIovaRanges(r, 1)).toEqual([{ iova: 0, length: 0x201000 }]);
  });
});

describe('device dirty page tracker (VFIO_DEVICE_FEATURE_DMA_LOGGING_*)', () => {
  it('clamps the page size, merges ranges to pg_track_max_num_range, reads and clears', () => {
    const h = makeHost({ iommu: true, guestPages: 64 });
    const vdev = h.drv.vdev;
    const ranges = Array.from({ length: 8 }, (_, i) => ({ iova: i * 8 * PAGE_SIZE, length: 4 * PAGE_SIZE }));
    const ps = vdev.dmaLoggingStart(ranges, 512);
    expect(ps).toBe(PAGE_SIZE); // 512 is below log_min_page_size (12)
    expect(h.drv.trackedRanges.length).toBe(4);
    expect(h.drv.trackedPageSize).toBe(PAGE_SIZE);
    // The receive buffer is a registered migration-style buffer: one IOVA range, one sync.
    expect(h.drv.bufferStats.iovaRegistrations).toBe(1);
    configureAndRun(h, 40);
    const bm = vdev.dmaLoggingReport({ iova: 0, length: 64 * PAGE_SIZE, pageSize: PAGE_SIZE });
    if (typeof bm === 'number') throw new Error(`report ${bm}`);
    expect(bm.count()).toBeGreaterThan(0);
    // Every page the device reported was really written by it (the fake IOMMU's dirty bits agree).
    for (const p of bm.dirtyPages()) expect(h.domain.iovaToPhys(p)).toBeGreaterThan(0);
    expect(h.drv.stats.trackerMessages).toBeGreaterThan(0);
    // Read-and-clear: a second read returns nothing new.
    const again = vdev.dmaLoggingReport({ iova: 0, length: 64 * PAGE_SIZE, pageSize: PAGE_SIZE });
    if (typeof again === 'number') throw new Error('again');
    expect(again.count()).toBe(0);
    expect(vdev.dmaLoggingStart(ranges, PAGE_SIZE)).toBe(-Errno.EINVAL); // already active
    expect(vdev.dmaLoggingStop()).toBe(0);
    expect(h.fw.liveMkeys).toBe(0);
  });

  it('many dirty pages need several report messages (small message size)', () => {
    const h = makeHost({ guestPages: 256, caps: { pgTrackLogMaxMsgSize: 8 } });
    const vdev = h.drv.vdev;
    expect(vdev.dmaLoggingStart([{ iova: 0, length: 256 * PAGE_SIZE }], PAGE_SIZE)).toBe(PAGE_SIZE);
    for (let q = 0; q < 4; q++) h.fw.configureQueue(q, q * 64 * PAGE_SIZE, 64, PAGE_SIZE);
    for (let i = 0; i < 600; i++) h.fw.step();
    const bm = vdev.dmaLoggingReport({ iova: 0, length: 256 * PAGE_SIZE, pageSize: PAGE_SIZE });
    if (typeof bm === 'number') throw new Error('report');
    expect(bm.count()).toBeGreaterThan(100);
    expect(h.drv.stats.trackerMessages).toBeGreaterThan(bm.count() / 31);
  });

  it('bad input and tracker errors are errnos', () => {
    const h = makeHost();
    const vdev = h.drv.vdev;
    expect(vdev.dmaLoggingStart([], PAGE_SIZE)).toBe(-Errno.EINVAL);
    expect(vdev.dmaLoggingStart([{ iova: 0, length: 100 }], PAGE_SIZE)).toBe(-Errno.EINVAL);
    expect(vdev.dmaLoggingStart([{ iova: 0, length: PAGE_SIZE }], 3000)).toBe(-Errno.EINVAL);
    expect(vdev.dmaLoggingStart([{ iova: 0, length: 2 * PAGE_SIZE }, { iova: PAGE_SIZE, length: PAGE_SIZE }], PAGE_SIZE)).toBe(-Errno.EINVAL);
    expect(vdev.dmaLoggingStart(Array.from({ length: 300 }, (_, i) => ({ iova: i * 2 * PAGE_SIZE, length: PAGE_SIZE })), PAGE_SIZE)).toBe(-Errno.E2BIG);
    expect(vdev.dmaLoggingReport({ iova: 0, length: PAGE_SIZE, pageSize: PAGE_SIZE })).toBe(-Errno.EINVAL); // not started
    expect(vdev.dmaLoggingStart([{ iova: 0, length: 2 ** 50 }], PAGE_SIZE)).toBe(-Errno.EOPNOTSUPP); // address space beyond caps
    expect(vdev.dmaLoggingStart([{ iova: 0, length: 64 * PAGE_SIZE }], PAGE_SIZE)).toBe(PAGE_SIZE);
    expect(vdev.dmaLoggingReport({ iova: 0, length: 0, pageSize: PAGE_SIZE })).toBe(-Errno.EINVAL);
    h.fw.injectTrackerError();
    expect(vdev.dmaLoggingReport({ iova: 0, length: PAGE_SIZE, pageSize: PAGE_SIZE })).toBe(-Errno.EIO);
    expect(vdev.dmaLoggingStop()).toBe(0);
  });

  it('IovaBitmap.set marks partial pages at both ends', () => {
    const bm = new IovaBitmap(0x1000, 0x10000);
    bm.set(0x1fff, 2);
    expect(bm.dirtyPages()).toEqual([0x1000, 0x2000]);
    bm.set(0, 0x800); // outside
    expect(bm.count()).toBe(2);
  });
});

describe('a VFIO device without migration or logging support', () => {
  it('answers -ENOTTY to every migration and DMA-logging feature', () => {
    const v = new VfioDevice('plain', 0, null, null);
    expect(v.featureMigration()).toBe(-ENOTTY);
    expect(v.setMigDeviceState(1).ret).toBe(-ENOTTY);
    expect(v.getMigDeviceState()).toBe(-ENOTTY);
    expect(v.migDataSize()).toBe(-ENOTTY);
    expect(v.dmaLoggingStart([{ iova: 0, length: PAGE_SIZE }], PAGE_SIZE)).toBe(-ENOTTY);
    expect(v.dmaLoggingStop()).toBe(-ENOTTY);
    expect(v.dmaLoggingReport({ iova: 0, length: PAGE_SIZE, pageSize: PAGE_SIZE })).toBe(-ENOTTY);
  });

  it('MIG_DATA_SIZE reports the stop-copy estimate', () => {
    const h = makeHost({ stateBytes: 16 * 1024 });
    expect(h.drv.vdev.migDataSize()).toBeGreaterThan(16 * 1024);
  });
});

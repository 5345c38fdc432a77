import { describe, expect, it } from 'vitest';
import { RunModel, allocationSizes, countEvents, dataPointer, lazyWindows, mappings, nvmeRequests, sizeHistogram } from './model.js';
import type { Snapshot, WireEvent } from './protocol.js';

const ev = (n: string, t: number, d: string, f: WireEvent['f'] = {}): WireEvent => ({ n, t, d, f });

function snap(at: number, ranges: number[] = []): Snapshot {
  return {
    at,
    simNs: at * 10,
    iommu: null,
    progress: null,
    domains: [
      {
        name: 'dom1',
        type: 'lazy',
        iova: { granule: 4096, dma32bitPfn: 1 << 20, ranges, truncated: false, allocs: 0, frees: 0, rcacheHits: 0, rcacheMisses: 0, treeNodes: 0, allocatedGranules: 0, cachedGranules: 0 },
        pt: { levels: [], tablePagesLive: 1, tablePagesPeak: 1, entriesPerTable: 512 },
        tlb: { entries: 512, ways: 8, valid: 0, pfns: [], hits: 0, misses: 0, invalidationsRange: 0, invalidationsFull: 0, evictions: 0 },
        staleIotlbAccesses: 0,
        maps: 0,
        unmaps: 0,
        fqPending: 0,
      },
    ],
  };
}

describe('RunModel cursor', () => {
  it('follows the stream until paused; step moves one event or to just past the next I/O', () => {
    const m = new RunModel('nvme', 'test');
    m.addBatch([ev('iommu:map', 1, 'dom1'), ev('nvme:nvme_setup_cmd', 2, 'nvme0'), ev('nvme:ctrl_cmd', 3, 'nvme0'), ev('iommu:map', 4, 'dom1'), ev('nvme:nvme_setup_cmd', 5, 'nvme0')], snap(5));
    expect(m.visible).toBe(5);
    m.cursor = 0;
    expect(m.paused).toBe(true);
    expect(m.step('event')).toBe(1);
    expect(m.step('io')).toBe(2); // just past the first nvme_setup_cmd
    expect(m.step('io')).toBe(5);
    m.addBatch([ev('nvme:ctrl_cmd', 6, 'nvme0')], snap(6));
    expect(m.visible).toBe(5); // frozen while paused
    m.resume();
    expect(m.visible).toBe(6);
  });

  it('snapshotAt picks the latest snapshot at or before the cursor', () => {
    const m = new RunModel('x', 'x');
    m.addBatch([ev('a:b', 1, 'd'), ev('a:b', 2, 'd')], snap(2));
    m.addBatch([ev('a:b', 3, 'd')], snap(3));
    m.cursor = 2;
    expect(m.snapshotAt()?.at).toBe(2);
    m.cursor = 1;
    expect(m.snapshotAt()).toBeUndefined();
    m.resume();
    expect(m.snapshotAt()?.at).toBe(3);
  });
});

describe('derivations', () => {
  it('mappings replays iommu:map / iommu:unmap (a range unmap ends every mapping it covers)', () => {
    const events = [
      ev('iommu:map', 10, 'dom1', { iova: 0x1000, paddr: 0x9000, size: 0x1000 }),
      ev('iommu:map', 11, 'dom1', { iova: 0x2000, paddr: 0xa000, size: 0x1000 }),
      ev('iommu:map', 12, 'dom2', { iova: 0x1000, paddr: 0xb000, size: 0x1000 }),
      ev('iommu:unmap', 20, 'dom1', { iova: 0x1000, size: 0x2000, unmapped_size: 0x2000 }),
    ];
    const before = mappings(events, 3);
    expect(before.live.get('dom1')?.length).toBe(2);
    const after = mappings(events);
    expect(after.live.get('dom1')).toEqual([]);
    expect(after.live.get('dom2')?.length).toBe(1);
    expect(after.intervals.filter((m) => m.domain === 'dom1').map((m) => m.tUnmap)).toEqual([20, 20]);
  });

  it('lazyWindows: queue_iova opens, flush_iotlb_all closes, a stale access lands in the window that queued its IOVA', () => {
    const events = [
      ev('iommu:queue_iova', 100, 'dom1', { iova: 0x5000, size: 0x1000 }),
      ev('iommu:queue_iova', 110, 'dom1', { iova: 0x8000, size: 0x2000 }),
      ev('iommu:stale_iotlb_access', 120, 'nic0', { iova: 0x9004, phys: 0x77004, write: true }),
      ev('iommu:flush_iotlb_all', 150, 'dom1', { type: 'lazy' }),
      ev('iommu:flush_iotlb_all', 160, 'dom1', { type: 'lazy' }),
      ev('iommu:queue_iova', 200, 'dom1', { iova: 0x5000, size: 0x1000 }),
    ];
    const { windows, orphans } = lazyWindows(events);
    expect(orphans).toEqual([]);
    expect(windows).toHaveLength(2);
    expect(windows[0]).toMatchObject({ domain: 'dom1', tOpen: 100, tClose: 150, queued: [0x5000, 0x1000, 0x8000, 0x2000] });
    expect(windows[0]?.stale).toEqual([{ t: 120, index: 2, device: 'nic0', iova: 0x9004, phys: 0x77004, write: true }]);
    expect(windows[1]).toMatchObject({ tOpen: 200, tClose: null });
    // strict: no queue_iova, no window
    expect(lazyWindows([ev('iommu:unmap', 1, 'dom1', { iova: 0, size: 4096, unmapped_size: 4096 }), ev('iommu:map', 2, 'dom1')]).windows).toEqual([]);
  });

  it('nvmeRequests attaches the mappings traced before each I/O command and its completion', () => {
    const events = [
      ev('nvme:nvme_setup_cmd', 1, 'nvme0', { qid: 0, cid: 1, opcode: 6, flags: 0, prp1: 0x1000, prp2: 0 }),
      ev('iommu:map', 2, 'dom1', { iova: 0xfff00000, paddr: 0x42000, size: 0x1000 }),
      ev('dma:dma_map_phys', 3, 'nvme0', { dma_addr: 0xfff01000, phys_addr: 0x43000, size: 0x1000 }),
      ev('nvme:nvme_setup_cmd', 4, 'nvme0', { qid: 1, cid: 7, opcode: 2, flags: 0, prp1: 0xfff00000, prp2: 0xfff01000 }),
      ev('nvme:nvme_complete_rq', 9, 'nvme0', { qid: 1, cid: 7, status: 0 }),
    ];
    const reqs = nvmeRequests(events);
    expect(reqs).toHaveLength(1); // the admin command (qid 0) is not an I/O
    expect(reqs[0]).toMatchObject({ cid: 7, opcode: 2, tComplete: 9, status: 0 });
    expect(reqs[0]?.segments).toEqual([
      { kind: 'iommu_map', dma: 0xfff00000, phys: 0x42000, size: 0x1000 },
      { kind: 'map_phys', dma: 0xfff01000, phys: 0x43000, size: 0x1000 },
    ]);
  });

  it('nvmeRequests joins block:blk_rq_dma_map (the block segments) to the next I/O command on the same device', () => {
    const events = [
      ev('block:blk_rq_dma_map', 1, 'nvme1', { tag: 9, sector: 0, bytes: 0x1000, phys_addrs: [0x90000], lengths: [0x1000] }),
      ev('block:blk_rq_dma_map', 2, 'nvme0', { tag: 3, sector: 8, bytes: 0x3000, phys_addrs: [0x42000, 0x50000], lengths: [0x1000, 0x2000] }),
      ev('nvme:nvme_setup_cmd', 3, 'nvme0', { qid: 0, cid: 1, opcode: 6, flags: 0, prp1: 0x1000, prp2: 0 }),
      ev('dma:dma_map_phys', 4, 'nvme0', { dma_addr: 0x42000, phys_addr: 0x42000, size: 0x1000 }),
      ev('dma:dma_map_phys', 5, 'nvme0', { dma_addr: 0x50000, phys_addr: 0x50000, size: 0x2000 }),
      ev('nvme:nvme_setup_cmd', 6, 'nvme0', { qid: 1, cid: 3, opcode: 1, flags: 0, prp1: 0x42000, prp2: 0x50000 }),
      // The single-segment fast path traces no block segments: the next command gets none.
      ev('dma:dma_map_phys', 7, 'nvme0', { dma_addr: 0x60000, phys_addr: 0x60000, size: 0x1000 }),
      ev('nvme:nvme_setup_cmd', 8, 'nvme0', { qid: 2, cid: 4, opcode: 2, flags: 0, prp1: 0x60000, prp2: 0 }),
      ev('nvme:nvme_setup_cmd', 9, 'nvme1', { qid: 1, cid: 9, opcode: 2, flags: 0, prp1: 0x90000, prp2: 0 }),
    ];
    const reqs = nvmeRequests(events);
    expect(reqs.map((r) => [r.device, r.cid, r.rqTag])).toEqual([
      ['nvme0', 3, 3],
      ['nvme0', 4, null],
      ['nvme1', 9, 9],
    ]);
    expect(reqs[0]?.blockSegments).toEqual([
      { phys: 0x42000, len: 0x1000 },
      { phys: 0x50000, len: 0x2000 },
    ]);
    expect(reqs[1]?.blockSegments).toEqual([]);
    expect(reqs[2]?.blockSegments).toEqual([{ phys: 0x90000, len: 0x1000 }]);
  });

  it('dataPointer reads PRP1/PRP2 per the spec, and an SGL data block descriptor', () => {
    expect(dataPointer({ prp1: 0x1000, prp2: 0, flags: 0 }, 4096).entry2).toContain('unused');
    expect(dataPointer({ prp1: 0x1000, prp2: 0x2000, flags: 0 }, 8192).entry2).toContain('second data page 0x2000');
    expect(dataPointer({ prp1: 0x1800, prp2: 0x9000, flags: 0 }, 8192).entry2).toContain('PRP list @ 0x9000');
    const sgl = dataPointer({ prp1: 0xff990000, prp2: 0x10000, flags: 1 << 6 }, 65536);
    expect(sgl).toEqual({ kind: 'SGL', entry1: 'data block @ 0xff990000', entry2: 'length 65536 B: one descriptor covers the request' });
    expect(dataPointer({ prp1: 0x5000, prp2: 2 ** 56 * 0x30 + 48, flags: 1 << 6 }, 65536).entry1).toBe('last segment @ 0x5000');
  });

  it('allocationSizes counts each allocated range once across snapshots; rcache-held and reserved ranges are not allocations', () => {
    const s = [snap(1, [10, 10, 0, 20, 23, 0, 30, 31, 1]), snap(2, [10, 10, 0, 40, 40, 2, 50, 81, 0])];
    expect(allocationSizes(s, 'dom1').sort((a, b) => a - b)).toEqual([1, 4, 32]);
    expect(sizeHistogram([1, 4, 32]).map((b) => b.count)).toEqual([1, 0, 1, 0, 0, 1, 0, 0, 0]);
  });

  it('countEvents counts per tracepoint up to the cursor', () => {
    const c = countEvents([ev('a:x', 1, 'd'), ev('a:x', 2, 'd'), ev('b:y', 3, 'd')], 2);
    expect([...c]).toEqual([['a:x', 2]]);
  });
});

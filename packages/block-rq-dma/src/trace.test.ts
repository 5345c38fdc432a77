// block:blk_rq_dma_map (dmakit's tracepoint, modeled on block:block_rq_issue).
import { describe, expect, it } from 'vitest';
import { blkDmaIterInit, createMachine, DmaIovaState, isTraceEvent, ReqOp, SgTable } from '@dmakit/dma-core';
import { bioFromRanges, blkRqMapSgtable, blkRqUnmapSgtable, blkRqsFromBios, createBlkRqDmaMapper, nvmeQueueLimits } from '@dmakit/block-rq-dma';

function setup() {
  const m = createMachine({ dmaDebug: 'warn' });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
  // Three bvecs, none ending where the next starts: blk-mq-dma iterates them as three segments.
  const a = m.memory.allocPages(0);
  const b = m.memory.allocPages(1);
  const c = m.memory.allocPages(0);
  const ranges = [b, 8192, a, 4096, c, 4096];
  const bio = bioFromRanges(ReqOp.WRITE, 64, ranges)!;
  const rq = blkRqsFromBios(nvmeQueueLimits(), [bio], { firstTag: 7 }).requests[0]!;
  return { m, dev, rq, ranges };
}

describe('block:blk_rq_dma_map', () => {
  it('carries the request’s bvecs (phys address, length), its tag and sector when mapping starts', () => {
    const { m, dev, rq, ranges } = setup();
    m.trace.record({ events: 'block' });
    const blk = createBlkRqDmaMapper();
    const state = new DmaIovaState();
    const iter = blkDmaIterInit();
    expect(blk.blkRqDmaMapIterStart(rq, dev, state, iter)).toBe(true);
    m.trace.stop();
    const evs = m.trace.events();
    expect(evs.map((e) => e.name)).toEqual(['block:blk_rq_dma_map']);
    const ev = evs[0]!;
    expect(isTraceEvent(ev, 'block:blk_rq_dma_map')).toBe(true);
    if (!isTraceEvent(ev, 'block:blk_rq_dma_map')) return;
    expect(ev.device).toBe('nvme0');
    expect(ev.fields.phys_addrs).toEqual([ranges[0], ranges[2], ranges[4]]);
    expect(ev.fields.lengths).toEqual([ranges[1], ranges[3], ranges[5]]);
    expect(ev.fields.tag).toBe(7);
    expect(ev.fields.sector).toBe(64);
    expect(ev.fields.bytes).toBe(8192 + 4096 + 4096);
  });

  it('fires on the legacy blk_rq_map_sg path too, and not at all when tracing is off', () => {
    const { m, dev, rq, ranges } = setup();
    const off = blkRqMapSgtable(rq, dev);
    blkRqUnmapSgtable(rq, dev, off);
    expect(m.trace.enabled).toBe(false);
    m.trace.record();
    const mp = blkRqMapSgtable(rq, dev);
    expect(mp.sgt).toBeInstanceOf(SgTable);
    blkRqUnmapSgtable(rq, dev, mp);
    const ev = m.trace.events().find((e) => e.name === 'block:blk_rq_dma_map');
    expect(ev?.fields.phys_addrs).toEqual([ranges[0], ranges[2], ranges[4]]);
    expect(ev?.fields.lengths).toEqual([ranges[1], ranges[3], ranges[5]]);
  });
});

// The README example, kept honest.
import { describe, expect, it } from 'vitest';
import { blkDmaIterInit, createMachine, DmaIovaState, dmaUnmapPhys, ReqOp, rqDmaDir } from '@dmakit/dma-core';
import { bioFromRanges, blkRqsFromBios, createBlkRqDmaMapper, nvmeQueueLimits } from '@dmakit/block-rq-dma';

describe('README example', () => {
  it('maps a two-segment write on dma-direct and unmaps it', () => {
    const m = createMachine({ dmaDebug: 'warn' });
    const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
    const pages = [m.memory.allocPages(0), m.memory.allocPages(2)];
    const bio = bioFromRanges(ReqOp.WRITE, 0, [pages[0]!, 4096, pages[1]!, 8192])!;
    const [rq] = blkRqsFromBios(nvmeQueueLimits(), [bio]).requests;
    const blk = createBlkRqDmaMapper(),
      state = new DmaIovaState(),
      iter = blkDmaIterInit();
    const segs: [number, number][] = [];
    for (let ok = blk.blkRqDmaMapIterStart(rq!, dev, state, iter); ok; ok = blk.blkRqDmaMapIterNext(rq!, dev, state, iter)) segs.push([iter.addr, iter.len]);
    expect(segs.map((s) => s[1])).toEqual([4096, 8192]);
    expect(iter.status).toBe(0);
    expect(blk.blkRqDmaMapCoalesce(state)).toBe(false);
    if (!blk.blkRqDmaUnmap(rq!, dev, state, 12288)) for (const [a, l] of segs) dmaUnmapPhys(dev, a, l, rqDmaDir(rq!));
    expect(m.dmaDebug.entries).toBe(0);
    expect(m.dmaDebug.reports).toEqual([]);
  });
});

import { describe, expect, it } from 'vitest';
import {
  asKnownTraceEvent,
  createMachine,
  DMA_ATTR_SKIP_CPU_SYNC,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  formatTraceEvent,
  isTraceEvent,
  toChromeTrace,
  toChromeTraceJson,
  toFtraceText,
  Trace,
  TRACE_EVENT_NAMES,
  traceDmaAlloc,
  traceDmaMapPhys,
  traceDmaMapSg,
  traceDmaSyncSingle,
  traceDmaUnmapPhys,
  traceDmaUnmapSg,
  traceIommuIoPageFault,
  traceIommuMap,
  traceIommuUnmap,
  traceSwiotlbBounced,
} from '@dmakit/dma-core';
import type { TraceEvent } from '@dmakit/dma-core';

function clocked(): { t: Trace; set: (ns: number) => void } {
  const t = new Trace();
  let now = 0;
  t.now = () => now;
  return {
    t,
    set: (ns) => {
      now = ns;
    },
  };
}

describe('Trace hub', () => {
  it('enabled follows subscribers and recording', () => {
    const t = new Trace();
    expect(t.enabled).toBe(false);
    const seen: TraceEvent[] = [];
    const off = t.subscribe((ev) => seen.push(ev));
    expect(t.enabled).toBe(true);
    traceDmaMapPhys(t, 'nvme0', 0x1000, 0x2000, 4096, DMA_TO_DEVICE, 0);
    expect(seen).toHaveLength(1);
    off();
    expect(t.enabled).toBe(false);
    t.record({ capacity: 4 });
    expect(t.enabled).toBe(true);
    t.stop();
    expect(t.enabled).toBe(false);
  });

  it('the machine stamps events with simulated time', () => {
    const m = createMachine();
    m.trace.record({ capacity: 8 });
    m.clock.advanceTo(5000);
    traceDmaUnmapPhys(m.trace, 'dev0', 0x1000, 4096, DMA_TO_DEVICE, 0);
    expect(m.trace.events()[0]).toMatchObject({ name: 'dma:dma_unmap_phys', ts: 5000, device: 'dev0' });
  });

  it('a full ring overwrites the oldest and counts drops', () => {
    const { t } = clocked();
    t.record({ capacity: 3 });
    for (let i = 0; i < 5; i++) traceDmaSyncSingle(t, 'd', true, i, 64, DMA_FROM_DEVICE);
    expect(t.events().map((e) => e.fields.dma_addr)).toEqual([2, 3, 4]);
    expect(t.dropped).toBe(2);
    expect(t.written).toBe(5);
    t.stop();
    traceDmaSyncSingle(t, 'd', true, 9, 64, DMA_FROM_DEVICE);
    expect(t.events()).toHaveLength(3);
    t.clear();
    expect(t.events()).toEqual([]);
    expect(t.dropped).toBe(0);
  });

  it('filters by system, event and exclusion', () => {
    const { t } = clocked();
    t.record({ events: ['iommu', 'dma:*', '!dma:dma_unmap_phys'] });
    traceDmaMapPhys(t, 'd', 1, 1, 1, 0, 0);
    traceDmaUnmapPhys(t, 'd', 1, 1, 0, 0);
    traceIommuMap(t, 'd', 0x1000, 0x2000, 4096);
    traceSwiotlbBounced(t, 'd', 0xffffffff, 0x1000, 64, false);
    expect(t.events().map((e) => e.name)).toEqual(['dma:dma_map_phys', 'iommu:map']);

    const seen: string[] = [];
    t.subscribe((ev) => seen.push(ev.name), { events: 'swiotlb:swiotlb_bounced' });
    traceSwiotlbBounced(t, 'd', 0xffffffff, 0x1000, 64, true);
    traceIommuUnmap(t, 'd', 0x1000, 4096, 4096);
    expect(seen).toEqual(['swiotlb:swiotlb_bounced']);
  });

  it('typed events narrow on name', () => {
    const { t } = clocked();
    t.record();
    traceDmaMapSg(t, 'd', [0x1000, 0x3000], [0x8000], [8192], DMA_BIDIRECTIONAL, 0);
    const ev = t.events()[0];
    expect(ev).toBeDefined();
    if (ev !== undefined && isTraceEvent(ev, 'dma:dma_map_sg')) {
      const lens: readonly number[] = ev.fields.lengths;
      expect(lens).toEqual([8192]);
    }
    const k = ev === undefined ? undefined : asKnownTraceEvent(ev);
    if (k?.name === 'dma:dma_map_sg') expect(k.fields.dma_addrs).toEqual([0x8000]);
    expect(TRACE_EVENT_NAMES).toContain('iommu:io_page_fault');
  });
});

describe('exporters', () => {
  function sample(): TraceEvent[] {
    const { t, set } = clocked();
    t.record();
    set(12_345_678_000);
    traceDmaMapPhys(t, 'nvme0', 0x1234000, 0xfff0000, 4096, DMA_TO_DEVICE, DMA_ATTR_SKIP_CPU_SYNC);
    set(12_345_679_500);
    traceDmaUnmapPhys(t, 'nvme0', 0xfff0000, 4096, DMA_TO_DEVICE, 0);
    traceDmaMapSg(t, 'mlx5_0', [0x1000, 0x3000], [0x8000, 0x9000], [4096, 512], DMA_FROM_DEVICE, 0);
    traceIommuMap(t, 'mlx5_0', 0x8000, 0x1000, 4096);
    return t.events();
  }

  it('toChromeTrace: instant events, ts in µs, one track per device, hex args', () => {
    const parsed = JSON.parse(toChromeTraceJson(sample())) as {
      traceEvents: { name: string; ph: string; ts: number; pid: number; tid: number; cat?: string; args: Record<string, unknown> }[];
    };
    expect(Array.isArray(parsed.traceEvents)).toBe(true);
    const meta = parsed.traceEvents.filter((e) => e.ph === 'M' && e.name === 'thread_name');
    expect(meta.map((e) => e.args.name)).toEqual(['nvme0', 'mlx5_0']);
    const inst = parsed.traceEvents.filter((e) => e.ph === 'i');
    expect(inst).toHaveLength(4);
    const map = inst[0];
    expect(map).toMatchObject({ name: 'dma_map_phys', cat: 'dma', ph: 'i', ts: 12_345_678, pid: 1 });
    expect(map?.args).toMatchObject({ device: 'nvme0', phys_addr: '0x1234000', dma_addr: '0xfff0000', size: 4096, dir: 'TO_DEVICE', attrs: 'SKIP_CPU_SYNC' });
    const nvmeTid = meta[0]?.tid;
    const mlxTid = meta[1]?.tid;
    expect(nvmeTid).not.toBe(mlxTid);
    expect(inst[2]).toMatchObject({ tid: mlxTid, args: { dma_addrs: ['0x8000', '0x9000'], lengths: [4096, 512] } });
    expect(inst[3]).toMatchObject({ name: 'map', cat: 'iommu', args: { iova: '0x8000', paddr: '0x1000' } });
    // The object form is the same data.
    expect(toChromeTrace(sample()).traceEvents).toHaveLength(parsed.traceEvents.length);
  });

  it('toFtraceText: the kernel trace file layout and TP_printk formats', () => {
    const text = toFtraceText(sample());
    const lines = text.trimEnd().split('\n');
    expect(lines[0]).toBe('# tracer: nop');
    const body = lines.filter((l) => !l.startsWith('#'));
    expect(body[0]).toBe(
      '           nvme0-0       [000] .....    12.345678: dma_map_phys: nvme0 dir=TO_DEVICE dma_addr=fff0000 size=4096 phys_addr=1234000 attrs=SKIP_CPU_SYNC',
    );
    expect(body[1]).toBe('           nvme0-0       [000] .....    12.345679: dma_unmap_phys: nvme0 dir=TO_DEVICE addr=fff0000 size=4096 attrs=0');
    expect(body[2]).toContain('dma_map_sg: mlx5_0 dir=FROM_DEVICE dma_addrs={0x8000,0x9000} sizes={0x1000,0x200} phys_addrs={0x1000,0x3000} attrs=0');
    expect(body[3]).toContain('map: IOMMU: iova=0x0000000000008000 - 0x0000000000009000 paddr=0x0000000000001000 size=4096');
    expect(toFtraceText([], { header: false })).toBe('\n');
  });

  it('formats the remaining events like their TP_printk', () => {
    const { t } = clocked();
    t.record();
    traceDmaAlloc(t, 'd', 0x1000, 0x2000, 8192, DMA_BIDIRECTIONAL, 0);
    traceDmaUnmapSg(t, 'd', [0x1000], DMA_TO_DEVICE, 0);
    traceSwiotlbBounced(t, 'd', 0xffffffff, 0x1000, 64, true);
    traceIommuUnmap(t, 'd', 0x8000, 4096, 4096);
    traceIommuIoPageFault(t, 'd', 0x8000, 1, 'nvme');
    traceDmaMapPhys(t, 'd', 0x1000, DMA_MAPPING_ERROR, 64, DMA_TO_DEVICE, 0);
    expect(t.events().map(formatTraceEvent)).toEqual([
      'd dir=BIDIRECTIONAL dma_addr=2000 size=8192 virt_addr=0000000000001000 flags=none attrs=0',
      'd dir=TO_DEVICE phys_addrs={0x1000} attrs=0',
      'dev_name: d dma_mask=ffffffff dev_addr=1000 size=64 FORCE',
      'IOMMU: iova=0x0000000000008000 - 0x0000000000009000 size=4096 unmapped_size=4096',
      'IOMMU:nvme d iova=0x0000000000008000 flags=0x0001',
      'd dir=TO_DEVICE dma_addr=ffffffffffffffff size=64 phys_addr=1000 attrs=0',
    ]);
  });
});

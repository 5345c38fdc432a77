import { createMachine, toChromeTraceJson } from '@dmakit/dma-core';
import { describe, expect, it } from 'vitest';
import { TraceFileError, parseTraceFile } from './traceFile.js';

function cliLikeTrace(): { json: string; n: number } {
  const m = createMachine({ ramBytes: 64 * 2 ** 20 });
  m.trace.record();
  m.trace.emit('iommu:map', 'iommu-domain-1', { iova: 0xfffff000, paddr: 0x42000, size: 4096 });
  m.advance(1500);
  m.trace.emit('dma:dma_map_phys', 'nvme0', { phys_addr: 0x42000, dma_addr: 0xfffff000, size: 4096, dir: 1, attrs: 0 });
  m.trace.emit('iommu:stale_iotlb_access', 'nvme0', { iova: 0xfffff010, phys: 0x42010, write: true });
  return { json: toChromeTraceJson(m.trace.events()), n: 3 };
}

describe('parseTraceFile', () => {
  it('reads a Chrome trace as dma-core writes it: names, devices, simulated ns, hex addresses back to numbers', () => {
    const { json, n } = cliLikeTrace();
    const t = parseTraceFile(json);
    expect(t.events).toHaveLength(n);
    expect(t.devices).toEqual(['iommu-domain-1', 'nvme0']);
    expect(t.events[0]).toEqual({ n: 'iommu:map', t: 0, d: 'iommu-domain-1', f: { iova: 0xfffff000, paddr: 0x42000, size: 4096 } });
    expect(t.events[1]).toMatchObject({ n: 'dma:dma_map_phys', t: 1500, d: 'nvme0', f: { dir: 'TO_DEVICE', dma_addr: 0xfffff000 } });
    expect(t.events[2]).toMatchObject({ n: 'iommu:stale_iotlb_access', f: { write: true, iova: 0xfffff010 } });
  });

  it('refuses empty, non-JSON, truncated and non-trace input with a TraceFileError that says what is wrong', () => {
    const { json } = cliLikeTrace();
    expect(() => parseTraceFile('')).toThrow(TraceFileError);
    expect(() => parseTraceFile('')).toThrow(/empty/);
    expect(() => parseTraceFile(json.slice(0, json.length >> 1))).toThrow(/truncated/);
    expect(() => parseTraceFile('\u0089PNG\r\n')).toThrow(/not JSON/);
    expect(() => parseTraceFile('{"hello":"world"}')).toThrow(/Not a Chrome trace/);
    expect(() => parseTraceFile('{"traceEvents":[]}')).toThrow(/no events/);
    expect(() => parseTraceFile('{"traceEvents":[{"name":"x","ph":"i"}]}')).toThrow(/numeric "ts"/);
    expect(() => parseTraceFile('{"traceEvents":[42]}')).toThrow(/not an object/);
  });
});

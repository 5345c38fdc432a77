import { describe, expect, it } from 'vitest';
import { compareNvmePremapped, runNvmePremapped } from './dmabufP2pNvmePremapped.js';

describe('nvme --premapped (4 KiB random reads into a registered dma-buf)', () => {
  it('pre-mapped throughput does not depend on the IOMMU mode; per-I/O mapping does', () => {
    const c = compareNvmePremapped({ seed: 4, ios: 600, qd: 16 });
    expect(c.verified).toBe(true);
    const pre = (['strict', 'lazy', 'off'] as const).map((m) => c.premapped[m].simulated.simulatedIops);
    const spread = (Math.max(...pre) - Math.min(...pre)) / Math.max(...pre);
    expect(spread).toBeLessThan(0.05);
    // Per-I/O mapping under strict pays an IOTLB invalidation per I/O; pre-mapped pays none.
    expect(c.perIo.strict.perIo.iotlbInvalidations).toBeGreaterThanOrEqual(1);
    expect(c.premapped.strict.perIo.iotlbInvalidations).toBeLessThan(0.01);
    expect(c.premapped.strict.simulated.simulatedIops).toBeGreaterThan(3 * c.perIo.strict.simulated.simulatedIops);
    expect(c.perIo.strict.simulated.simulatedIops).toBeLessThan(c.perIo.lazy.simulated.simulatedIops);
    for (const m of ['strict', 'lazy', 'off'] as const) expect(c.premapped[m].leaks).toEqual({ dmaDebugEntries: 0, iovaRanges: 0, dmaDebugReports: 0 });
  });

  it('every read lands in its slot of the buffer (bytes checked against the namespace)', () => {
    const r = runNvmePremapped({ iommu: 'strict', seed: 9, ios: 300, qd: 8 });
    expect(r.verified).toBe(true);
    expect(r.verifiedBytes).toBe(300 * 4096);
    expect(r.registrationMaps).toBe(1);
    expect(r.mapping).toBe('iommu sg');
  });
});

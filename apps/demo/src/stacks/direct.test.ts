import { describe, expect, it } from 'vitest';
import { createMachine, SZ_1G } from '@dmakit/dma-core';
import { runDirectStack } from './direct.js';

describe('demo stack "direct" (end to end)', () => {
  it('moves bytes through dma-direct, swiotlb and a coherent buffer, and verifies them', () => {
    const machine = createMachine({ ramBytes: 8 * SZ_1G, seed: 7 });
    const r = runDirectStack({ machine });
    for (const s of r.steps) expect(s.verified, s.step).toBe(true);
    expect(r.verified).toBe(true);
    // The 32-bit device above 4 GiB really bounced, and every slot came back.
    expect(r.swiotlb.bounces).toBeGreaterThan(0);
    expect(r.swiotlb.usedSlots).toBe(0);
    expect(machine.dmaDebug.reports).toEqual([]);
  });

  it('is reproducible from its seed', () => {
    const a = runDirectStack({ machine: createMachine({ ramBytes: 8 * SZ_1G, seed: 3 }) });
    const b = runDirectStack({ machine: createMachine({ ramBytes: 8 * SZ_1G, seed: 3 }) });
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
  });

  for (const mode of ['strict', 'lazy'] as const) {
    it(`behind a ${mode} IOMMU: no bounce, counters, one fault provoked on purpose`, () => {
      const machine = createMachine({ ramBytes: 8 * SZ_1G, seed: 7 });
      const r = runDirectStack({ machine, iommu: mode });
      for (const s of r.steps) expect(s.verified, s.step).toBe(true);
      expect(r.swiotlb.bounces).toBe(0);
      expect(r.iommu?.mode).toBe(mode);
      const stats = r.iommu?.stats;
      expect(stats?.iovaAllocs).toBeGreaterThan(0);
      // The refused write, plus the read after the flush (and, strict, the read right after unmap).
      expect(r.iommu?.faults).toBe(mode === 'lazy' ? 2 : 3);
      expect(stats?.staleIotlbAccesses).toBe(mode === 'lazy' ? 1 : 0);
      if (mode === 'lazy') expect(stats?.fqFlushes).toBeGreaterThan(0);
      expect(machine.faults.length).toBe(r.iommu?.faults);
      expect(machine.dmaDebug.reports).toEqual([]);
    });
  }
});

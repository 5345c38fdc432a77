import { describe, expect, it } from 'vitest';
import { createMachine, SZ_1G } from '@dmakit/dma-core';
import { runDmabufP2pStack } from './dmabufP2p.js';

describe('demo stack "dmabuf-p2p" (end to end)', () => {
  for (const mode of ['strict', 'lazy'] as const) {
    it(`GPU memory shared with a drive and a NIC (IOMMU ${mode}): every step verified, nothing leaked`, () => {
      const machine = createMachine({ ramBytes: SZ_1G, seed: 5 });
      const r = runDmabufP2pStack({ machine, iommu: mode });
      for (const s of r.steps) expect(s.verified, `${s.step}: ${s.detail}`).toBe(true);
      expect(r.verified).toBe(true);
      expect(r.moveNotifies).toBe(4);
      expect(r.leaks).toEqual({ mappings: 0, iovaStates: 0, debugEntries: 0, vramPages: 0 });
      expect(r.iommu?.faults).toBe(0);
      expect(machine.dmaDebug.reports).toEqual([]);
    });
  }

  it('without an IOMMU the NIC gets a dma_map_phys per range (MMIO), still verified', () => {
    const machine = createMachine({ ramBytes: SZ_1G, seed: 2 });
    const r = runDmabufP2pStack({ machine, iommu: 'off', fileBytes: 1 << 21 });
    for (const s of r.steps) expect(s.verified, `${s.step}: ${s.detail}`).toBe(true);
    expect(r.iommu).toBeNull();
    expect(r.steps[1]?.detail).toMatch(/mapped map-phys/);
  });

  it('is reproducible from its seed', () => {
    const a = runDmabufP2pStack({ machine: createMachine({ ramBytes: SZ_1G, seed: 3 }), fileBytes: 1 << 20 });
    const b = runDmabufP2pStack({ machine: createMachine({ ramBytes: SZ_1G, seed: 3 }), fileBytes: 1 << 20 });
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
  });
});

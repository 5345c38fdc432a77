import { describe, expect, it } from 'vitest';
import { runGpuSvmStack, formatGpuSvm } from './gpuSvm.js';

describe('gpu-svm stack (HMM behind a strict IOMMU)', () => {
  it('faults, migrates, migrates back and verifies every byte; nothing leaks', () => {
    const r = runGpuSvmStack({ pages: 1024 });
    for (const s of r.steps) expect({ step: s.step, verified: s.verified, detail: s.detail }).toEqual({ step: s.step, verified: true, detail: s.detail });
    expect(r.verified).toBe(true);
    expect(r.leaks).toEqual({ dmaMappings: 0, devicePages: 0 });
    expect(r.iommu?.faults).toBe(0);
    // One IOVA allocation per 2 MiB window plus the migration copies.
    expect(r.iommu?.stats.iovaAllocs).toBeGreaterThanOrEqual(2);
    expect(r.hmmDma.remapped).toBeGreaterThan(0);
    expect(r.steps[0]?.mirror.metadataBytes).toBe(2 * 512 * 8); // 8 bytes per page, no dma list
    expect(formatGpuSvm(r)).toContain('verified: yes');
  });

  it('works in lazy mode and with another seed', () => {
    const r = runGpuSvmStack({ pages: 600, hotPages: 100, iommu: 'lazy', seed: 7 });
    expect(r.verified).toBe(true);
  });

  // Found by the seeded soak (`pnpm soak`, seed 7005: pnpm demo gpu-svm --seed 7005 --iommu strict
  // --size 517): a buffer of 513..517 pages starts 5 pages or fewer below a 2 MiB chunk boundary,
  // and the stack's own check wrongly expected page 5 in the same IOVA window as page 0.
  it.each([513, 514, 515, 516, 517])('a %i-page buffer whose first pages sit in the 2 MiB chunk below verifies (fixed slots per window)', (pages) => {
    for (const iommu of ['strict', 'lazy'] as const) {
      const r = runGpuSvmStack({ pages, iommu, seed: 7005 });
      const step = r.steps.find((s) => s.step === 'GPU reads the page again from RAM');
      expect(step?.detail).toMatch(/^IOVA slot 0x[0-9a-f]+ = window \+ \d+ pages \(the fixed slot it had before migrating\)/);
      expect({ pages, iommu, verified: r.verified, failed: r.steps.filter((s) => !s.verified).map((s) => s.step) }).toEqual({ pages, iommu, verified: true, failed: [] });
    }
  });

  it('works without an IOMMU: a dma list per entry (16 bytes of metadata per page)', () => {
    const r = runGpuSvmStack({ pages: 512, hotPages: 64, iommu: 'off' });
    expect(r.verified).toBe(true);
    expect(r.iommu).toBeNull();
    expect(r.steps[0]?.mirror.metadataBytes).toBe(512 * 16);
  });
});

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

  it('works without an IOMMU: a dma list per entry (16 bytes of metadata per page)', () => {
    const r = runGpuSvmStack({ pages: 512, hotPages: 64, iommu: 'off' });
    expect(r.verified).toBe(true);
    expect(r.iommu).toBeNull();
    expect(r.steps[0]?.mirror.metadataBytes).toBe(512 * 16);
  });
});

/**
 * rdma-odp end to end: rdma-umem-odp on the real @dmakit/hmm and the @dmakit/iommu-dma IOMMU.
 * Every byte verified, no stale HCA access, nothing left after teardown, and the two-step path
 * against the legacy per-page path side by side.
 */
import { describe, expect, it } from 'vitest';
import { createMachine, SZ_1G } from '@dmakit/dma-core';
import { runRdmaOdpStack } from './rdmaOdp.js';
import type { RdmaOdpResult } from './rdmaOdp.js';

function run(o: Parameters<typeof runRdmaOdpStack>[0] = {}): RdmaOdpResult {
  return runRdmaOdpStack({ machine: createMachine({ ramBytes: SZ_1G, seed: 5, dmaDebug: 'warn' }), mrBytes: 8 << 20, rounds: 4, ...o });
}

function expectClean(r: RdmaOdpResult): void {
  for (const s of r.steps) expect(s.verified, s.step).toBe(true);
  expect(r.staleAccesses).toBe(0);
  expect(r.leaks).toEqual({ mkeys: 0, mappedPages: 0, iovaOutstanding: 0, debugReports: 0 });
  expect(r.verified).toBe(true);
}

describe('demo stack "rdma-odp" (end to end, real hmm + IOMMU)', () => {
  it('two-step ODP under a strict IOMMU: faults, prefetch, invalidations, one IOVA window per MR', () => {
    const r = run();
    expectClean(r);
    expect(r.odp.pageFaults).toBeGreaterThan(0);
    expect(r.odp.invalidations).toBeGreaterThan(0);
    expect(r.odp.prefetchPages).toBeGreaterThan(0);
    expect(r.odp.seqRetries).toBeGreaterThan(0); // the raced invalidations forced retries
    expect(r.iova?.faults).toBe(0);
    // One IOVA window per umem (client MR + server MR), not one allocation per page.
    expect(r.iova?.iovaAllocs).toBe(2);
    expect(r.metadata.bytesPerPage).toBe(8);
  });

  it('the legacy path moves the same bytes with one IOVA per page and 16 bytes of metadata per page', () => {
    const a = run();
    const b = run({ legacy: true });
    expectClean(b);
    expect(b.verifiedBytes).toBe(a.verifiedBytes);
    expect(b.iova?.iovaAllocs ?? 0).toBeGreaterThan(1000 * (a.iova?.iovaAllocs ?? 0));
    expect(b.metadata.bytesPerPage).toBe(16);
  });

  it('implicit ODP over the whole address space', () => {
    const r = run({ implicit: true });
    expectClean(r);
    expect(r.odp.implicitChildrenCreated).toBeGreaterThan(0);
  });

  it('lazy IOMMU and no IOMMU', () => {
    expectClean(run({ iommu: 'lazy' }));
    const off = run({ iommu: 'off' });
    expectClean(off);
    expect(off.iova).toBeNull();
  });

  it('is reproducible from its seed', () => {
    expect(JSON.stringify(run())).toBe(JSON.stringify(run()));
  });
});

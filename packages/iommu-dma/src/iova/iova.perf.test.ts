import { describe, expect, it } from 'vitest';
import { IovaDomain } from './index.js';

// Budgets are loose multiples of what one core does, so a busy CI box does not flake; the
// measured numbers are printed.
function time(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

describe('IovaDomain performance', () => {
  it('1,000,000 alloc_iova_fast + free_iova_fast pairs of one granule', () => {
    const d = new IovaDomain({ granule: 4096, startPfn: 1 });
    const limit = 2 ** 36 - 1;
    // Some live allocations so the tree is not trivial.
    for (let i = 0; i < 1000; i++) d.allocIovaFast(1, limit, true);
    let sink = 0;
    const ms = time(() => {
      for (let i = 0; i < 1_000_000; i++) {
        const pfn = d.allocIovaFast(1, limit, true);
        sink += pfn;
        d.freeIovaFast(pfn, 1);
      }
    });
    console.log(`1M fast pairs: ${ms.toFixed(0)} ms`);
    expect(sink).toBeGreaterThan(0);
    expect(d.stats().rcacheHits).toBeGreaterThanOrEqual(999_999);
    expect(ms).toBeLessThan(1000);
  });

  it('100,000 live one-granule allocations through the tree, then freed', () => {
    const d = new IovaDomain({ granule: 4096, startPfn: 1 });
    const pfns = new Float64Array(100_000);
    const ms = time(() => {
      for (let i = 0; i < pfns.length; i++) pfns[i] = d.allocIova(1, d.dma32bitPfn - 1, false)?.pfnLo ?? 0;
      for (let i = 0; i < pfns.length; i++) d.freeIova(pfns[(i * 7919) % pfns.length] ?? 0);
    });
    console.log(`100k slow alloc + free: ${ms.toFixed(0)} ms`);
    expect(d.stats().treeNodes).toBe(0);
    expect(ms).toBeLessThan(1500);
  });

  it('a fragmented space (50,000 one-granule holes) does not make a larger allocation walk them', () => {
    const d = new IovaDomain({ granule: 4096, startPfn: 1 });
    const n = 100_000;
    // Bottom-up fill of [1, n], then every other granule freed: 1-granule holes only.
    for (let i = 0; i < n; i++) d.allocIova(1, n, false);
    for (let p = 2; p <= n; p += 2) d.freeIova(p);
    expect(d.stats().treeNodes).toBe(n / 2);
    const ms = time(() => {
      for (let i = 0; i < 2000; i++) {
        // The kernel's walk would visit ~50,000 nodes per call here before finding room above n.
        const r = d.allocIova(2, 2 * n, false);
        if (r === null || r.pfnLo <= n) throw new Error('expected room above the fragmented part');
      }
    });
    console.log(`2000 allocations over a fragmented space: ${ms.toFixed(0)} ms`);
    expect(ms).toBeLessThan(500);
  });
});

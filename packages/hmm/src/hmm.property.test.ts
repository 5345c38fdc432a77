// Property: under any interleaving of device faults, CPU accesses, munmap, mprotect, fork and
// migration and device-exclusive access, the device never maps a page the CPU does not map (no DMA_MAPPED word without a
// live mapping), every byte read is the last byte written, and nothing leaks. The property lives in
// src/testing/properties.ts, shared with the seeded soak (tools/soak).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { hmmMirrorProperty } from './testing/properties.js';
import type { HmmMirrorCoverage } from './testing/properties.js';

describe('hmm property', () => {
  it('mirror consistency and no leaks over random interleavings', () => {
    const seen: HmmMirrorCoverage = { devReads: 0, toDevice: 0, devmemFaults: 0, invalidations: 0, readRetries: 0 };
    fc.assert(hmmMirrorProperty(seen), { numRuns: 100, seed: 5 });
    // The interleavings really exercised every path.
    expect(seen.devReads).toBeGreaterThan(30);
    expect(seen.toDevice).toBeGreaterThan(50);
    expect(seen.devmemFaults).toBeGreaterThan(10);
    expect(seen.invalidations).toBeGreaterThan(100);
    expect(seen.readRetries).toBeGreaterThan(5);
  });
});

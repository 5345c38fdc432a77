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

  // Found by the seeded soak (pnpm soak --replay hmm/mirror --seed 8001): page 0 migrates to the
  // device, a fork makes its device entry read-only, then the CPU writes it between
  // hmm_range_fault and the driver lock of a device read. migrate_to_ram's invalidation is the
  // device's own MMU_NOTIFY_MIGRATE (skipped), so the read used to map the stale device page.
  it('a device read racing a CPU write that migrates a forked device page back retries and reads the new bytes', () => {
    fc.assert(hmmMirrorProperty(), {
      examples: [[[{ k: 'toDev', p: 0, n: 1 }, { k: 'fork', p: 0, v: 1 }, { k: 'race', p: 0, what: 'cpuW', v: 1 }]]],
      numRuns: 1,
    });
  });
});

import fc from 'fast-check';
import { describe, it } from 'vitest';
import { dmaApiProperty } from '../testing/properties.js';

describe('DMA API under random use and misuse (fast-check)', () => {
  it('keeps swiotlb accounting, moves the right bytes, never throws', () => {
    // The property (ops, model, checks) lives in src/testing/properties.ts, shared with the seeded soak.
    fc.assert(dmaApiProperty(), { numRuns: 150 });
  });
});

import { describe, it } from 'vitest';
import fc from 'fast-check';
import { iovaDomainProperty, iovaKernelWalkProperty } from '../testing/properties.js';

// The properties (arbitraries, the kernel-walk reference, the checks) live in src/testing/properties.ts,
// shared with the seeded soak (tools/soak).
describe('IovaDomain properties', () => {
  it('random alloc/free/reserve never overlaps, respects limits and alignment, and frees back to the reservations', () => {
    fc.assert(iovaDomainProperty(), { numRuns: 150 });
  });

  it('the O(log n) search picks exactly the pfns of the kernel\'s linear cached-node walk', () => {
    fc.assert(iovaKernelWalkProperty(), { numRuns: 300 });
  });
});

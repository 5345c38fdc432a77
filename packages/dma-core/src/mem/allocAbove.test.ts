import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { GFP_ZERO, PAGE_SIZE, SZ_1G, SZ_1M, SZ_4G, SystemMemory, bytesEqual } from '@dmakit/dma-core';

const mk = (ramBytes = 64 * SZ_1M): SystemMemory => new SystemMemory({ ramBytes, physBits: 46 });

/** The slow reference: take blocks lowest-first until one lies above the floor, give the rest back. */
function walkAbove(m: SystemMemory, order: number, floor: number): number {
  const held: number[] = [];
  let phys = m.allocPages(order);
  while (phys !== 0 && phys < floor) {
    held.push(phys);
    phys = m.allocPages(order);
  }
  for (const p of held) m.freePages(p, order);
  return phys;
}

describe('SystemMemory.allocPagesAbove', () => {
  it('takes the first pages above 4 GiB (past the PCI hole) and keeps them allocated', () => {
    const m = mk(8 * SZ_1G);
    const before = m.stats().freePages;
    const a = m.allocPagesAbove(2, SZ_4G);
    const b = m.allocPagesAbove(0, SZ_4G);
    expect(a).toBe(SZ_4G);
    expect(b).toBe(SZ_4G + 4 * PAGE_SIZE);
    expect(m.stats().freePages).toBe(before - 5);
    expect(m.pageInfo(a).order).toBe(2);
    m.freePages(a, 2);
    m.freePages(b, 0);
    expect(m.stats()).toEqual(mk(8 * SZ_1G).stats());
  });

  it('matches the lowest-first walk when no free block straddles the floor', () => {
    const twin = (): SystemMemory => {
      const m = mk(8 * SZ_1G);
      // Fragment the high RAM a little: a few blocks taken and some given back.
      const ps = [m.allocPagesAbove(3, SZ_4G), m.allocPagesAbove(0, SZ_4G), m.allocPagesAbove(5, SZ_4G), m.allocPagesAbove(1, SZ_4G)];
      m.freePages(ps[0] ?? 0, 3);
      m.freePages(ps[2] ?? 0, 5);
      return m;
    };
    // The walk takes every block of 3 GiB of low RAM first: orders from 2 keep it quick.
    for (const order of [2, 4, 6]) {
      const fast = twin();
      const slow = twin();
      expect(fast.allocPagesAbove(order, SZ_4G)).toBe(walkAbove(slow, order, SZ_4G));
      expect(fast.stats()).toEqual(slow.stats());
    }
  });

  it('splits a block straddling the floor and uses the aligned piece just above it', () => {
    const m = mk(64 * SZ_1M);
    const initial = m.stats();
    const floor = 48 * SZ_1M + PAGE_SIZE;
    const p = m.allocPagesAbove(1, floor);
    expect(p).toBe(48 * SZ_1M + 2 * PAGE_SIZE);
    expect(m.stats().freePages).toBe(initial.freePages - 2);
    // Below the floor nothing was taken: the lowest page is still free.
    expect(m.allocPages(0)).toBe(PAGE_SIZE);
    m.freePages(PAGE_SIZE, 0);
    m.freePages(p, 1);
    expect(m.stats()).toEqual(initial);
  });

  it('returns 0 with no RAM above the floor, a bad order or a bad floor; GFP_ZERO zeroes', () => {
    const m = mk(64 * SZ_1M);
    expect(m.allocPagesAbove(0, 64 * SZ_1M)).toBe(0);
    expect(m.allocPagesAbove(-1, 0)).toBe(0);
    expect(m.allocPagesAbove(0.5, 0)).toBe(0);
    expect(m.allocPagesAbove(0, Number.NaN)).toBe(0);
    expect(m.allocPagesAbove(0, -1)).toBe(0);
    const p = m.allocPagesAbove(0, 32 * SZ_1M);
    m.write(p, new Uint8Array(PAGE_SIZE).fill(7));
    m.freePages(p, 0);
    const z = m.allocPagesAbove(0, 32 * SZ_1M, GFP_ZERO);
    expect(z).toBe(p);
    expect(m.mismatch(z, new Uint8Array(PAGE_SIZE))).toBe(-1);
  });

  it('always gives an aligned, allocated block at or above the floor, and freeing it restores the lists', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 12 }), fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 16_383 }), (pre, order, floorPage) => {
        const m = mk(64 * SZ_1M);
        for (const o of pre) m.allocPages(o);
        const before = m.stats();
        const floor = floorPage * PAGE_SIZE;
        const p = m.allocPagesAbove(order, floor);
        if (p === 0) return m.stats().freePages === before.freePages;
        expect(p).toBeGreaterThanOrEqual(floor);
        expect(p % (PAGE_SIZE * 2 ** order)).toBe(0);
        expect(m.stats().freePages).toBe(before.freePages - 2 ** order);
        m.freePages(p, order);
        expect(m.stats()).toEqual(before);
        return true;
      }),
      { numRuns: 200 },
    );
  });
});

describe('PhysicalMemory.mismatch and bytesEqual', () => {
  it('finds the first differing byte without copying, untouched pages compare as zeros', () => {
    const m = mk();
    const data = new Uint8Array(3 * PAGE_SIZE).map((_, i) => (i * 7 + 1) & 0xff);
    const at = 5 * PAGE_SIZE + 100;
    m.write(at, data);
    expect(m.mismatch(at, data)).toBe(-1);
    expect(m.mismatch(at + PAGE_SIZE, data, PAGE_SIZE, PAGE_SIZE)).toBe(-1);
    m.write(at + 2 * PAGE_SIZE + 3, new Uint8Array([0]));
    expect(m.mismatch(at, data)).toBe(2 * PAGE_SIZE + 3);
    expect(m.mismatch(40 * PAGE_SIZE, new Uint8Array(2 * PAGE_SIZE))).toBe(-1);
    expect(m.mismatch(40 * PAGE_SIZE, new Uint8Array([0, 0, 9]))).toBe(2);
    expect(m.mismatch(at, data, 0, 0)).toBe(-1);
  });

  it('throws RangeError outside memory or outside the buffer', () => {
    const m = mk();
    expect(() => m.mismatch(-1, new Uint8Array(1))).toThrow(RangeError);
    expect(() => m.mismatch(m.limit, new Uint8Array(1))).toThrow(RangeError);
    expect(() => m.mismatch(0, new Uint8Array(4), 2, 4)).toThrow(RangeError);
  });

  it('bytesEqual compares length and contents', () => {
    expect(bytesEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true);
    expect(bytesEqual(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(bytesEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2, 0]))).toBe(false);
    expect(bytesEqual(new Uint8Array(0), new Uint8Array(0))).toBe(true);
  });
});

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  FaultInjection,
  GFP_ZERO,
  MAX_BUDDY_ORDER,
  PAGE_SIZE,
  PageAllocError,
  PageFlag,
  SZ_1G,
  SZ_1M,
  SZ_1T,
  SZ_4G,
  SystemMemory,
  createMachine,
} from '@dmakit/dma-core';

const mk = (ramBytes = 64 * SZ_1M, faults?: FaultInjection): SystemMemory =>
  faults === undefined ? new SystemMemory({ ramBytes, physBits: 46 }) : new SystemMemory({ ramBytes, physBits: 46, faults });

describe('SystemMemory buddy allocator', () => {
  it('never hands out pfn 0 and allocates lowest address first', () => {
    const m = mk();
    const a = m.allocPages(0);
    expect(a).toBe(PAGE_SIZE);
    const b = m.allocPages(0);
    expect(b).toBeGreaterThan(a);
    const big = m.allocPages(4);
    expect(big % (16 * PAGE_SIZE)).toBe(0);
    expect(m.stats().totalPages).toBe(64 * SZ_1M / PAGE_SIZE - 1);
  });

  it('splits and coalesces with buddies back to the initial free lists', () => {
    const m = mk();
    const before = m.stats();
    const ps = [m.allocPages(0), m.allocPages(3), m.allocPages(0), m.allocPages(9), m.allocPages(1)];
    expect(ps.every((p) => p > 0)).toBe(true);
    expect(m.stats().freePages).toBe(before.freePages - (1 + 8 + 1 + 512 + 2));
    const orders = [0, 3, 0, 9, 1];
    ps.forEach((p, i) => {
      m.freePages(p, orders[i] ?? 0);
    });
    expect(m.stats()).toEqual(before);
  });

  it('throws a typed PageAllocError on double free, wrong order and foreign addresses, changing nothing', () => {
    const m = mk();
    const p = m.allocPages(2);
    const s = m.stats();
    expect(() => {
      m.freePages(p, 1);
    }).toThrow(PageAllocError);
    expect(() => {
      m.freePages(p + PAGE_SIZE, 0);
    }).toThrow(PageAllocError);
    expect(() => {
      m.freePages(123, 0);
    }).toThrow(PageAllocError);
    expect(m.stats()).toEqual(s);
    m.freePages(p, 2);
    try {
      m.freePages(p, 2);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(PageAllocError);
      expect((e as PageAllocError).code).toBe('double-free');
    }
  });

  it('allocPagesBelow respects the limit (GFP_DMA32-like)', () => {
    const m = mk(8 * SZ_1G);
    const hi = m.reserveLow(3 * SZ_1G - 2 * SZ_1M, SZ_1M); // eat most of low RAM
    expect(hi).toBeGreaterThan(0);
    const p = m.allocPagesBelow(0, SZ_4G);
    expect(p).toBeGreaterThan(0);
    expect(p + PAGE_SIZE).toBeLessThanOrEqual(SZ_4G);
    expect(m.allocPagesBelow(10, 2 * SZ_1M)).toBe(0);
    const q = m.allocPages(18);
    expect(q).toBeGreaterThanOrEqual(SZ_4G);
  });

  it('fault injection at alloc_pages returns NULL', () => {
    const f = new FaultInjection();
    const m = mk(64 * SZ_1M, f);
    f.arm('alloc_pages', 2);
    expect(m.allocPages(0)).toBeGreaterThan(0);
    expect(m.allocPages(0)).toBe(0);
    expect(m.allocPages(0)).toBeGreaterThan(0);
    expect(f.injected.get('alloc_pages')).toBe(1);
  });

  it('reserveLow takes the range out of the allocator', () => {
    const m = mk();
    const r = m.reserveLow(4 * SZ_1M, SZ_1M);
    expect(r).toBe(SZ_1M);
    expect(m.pageInfo(r + 5 * PAGE_SIZE).reserved).toBe(true);
    for (let i = 0; i < 300; i++) {
      const p = m.allocPages(0);
      expect(p >= r && p < r + 4 * SZ_1M).toBe(false);
    }
    expect(m.stats().reservedPages).toBe(1024);
  });

  it('GFP_ZERO zeroes stale bytes; refcounts follow get_page/put_page', () => {
    const m = mk();
    const p = m.allocPages(0);
    m.write(p, Uint8Array.from([9, 9, 9]));
    m.freePages(p, 0);
    const q = m.allocPages(0, GFP_ZERO);
    expect(q).toBe(p);
    expect([...m.read(q, 3)]).toEqual([0, 0, 0]);
    m.pageGet(q);
    expect(m.getPageRef(q)).toBe(2);
    m.freePages(q, 0); // drops the allocation reference; still held
    expect(m.pageInfo(q).allocated).toBe(true);
    m.pagePut(q); // last reference frees it
    expect(m.pageInfo(q).free).toBe(true);
    expect(() => {
      m.pagePut(q);
    }).toThrow(PageAllocError);
    expect(() => {
      m.pageGet(q);
    }).toThrow(PageAllocError);
  });

  it('keeps page owner and flags; zero page is flagged and stays allocated', () => {
    const m = mk();
    const p = m.allocPages(0);
    m.setPageOwner(p, 'nvme0');
    m.setPageFlags(p, PageFlag.PINNED);
    const info = m.pageInfo(p);
    expect(info.owner).toBe('nvme0');
    expect(info.flags & PageFlag.PINNED).toBeTruthy();
    expect(info.order).toBe(0);
    const z = m.zeroPagePhys;
    expect(m.pageInfo(z).zeroPage).toBe(true);
    expect(m.zeroPagePhys).toBe(z);
  });

  it('adds device-private, P2P BAR and MMIO regions', () => {
    const m = mk();
    const dp = m.requestFreeMemRegion(SZ_1G, 'device-private', 'gpu0 vram', 'gpu0');
    expect(dp).toBeDefined();
    if (dp === undefined) return;
    expect(m.regionOf(dp.start + 5)?.kind).toBe('device-private');
    expect(m.pageInfo(dp.start).devicePrivate).toBe(true);
    expect(m.pageInfo(dp.start).owner).toBe('gpu0');
    m.addRegion({ start: 0xe000_0000, size: 16 * SZ_1M, kind: 'p2p-bar', name: 'nvme0 CMB', owner: 'nvme0' });
    m.addRegion({ start: 0xf000_0000, size: SZ_1M, kind: 'mmio', name: 'nvme0 BAR0', owner: 'nvme0' });
    expect(m.isAccessible(0xe000_0000, 4096)).toBe(true);
    expect(m.isAccessible(0xf000_0000, 4)).toBe(false);
    expect(m.isRam(0xe000_0000, 4)).toBe(false);
    m.write(0xe000_0010, Uint8Array.from([7]));
    expect(m.read(0xe000_0010, 1)[0]).toBe(7);
    m.pageGet(0xe000_0000); // ZONE_DEVICE pages start at refcount 0
    expect(m.getPageRef(0xe000_0000)).toBe(1);
    expect(() => m.addRegion({ start: 0xe000_1000, size: 4096, kind: 'mmio', name: 'x' })).toThrow(RangeError);
  });

  it('a 1 TiB machine is cheap: free lists of 1 GiB blocks, lazily chunked metadata', () => {
    const m = mk(SZ_1T);
    expect(m.stats().freeBlocks[MAX_BUDDY_ORDER]).toBeGreaterThanOrEqual(1020);
    const ps: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const p = m.allocPages(0);
      m.write(p, Uint8Array.from([i & 0xff]));
      ps.push(p);
    }
    expect(m.touchedPages).toBe(1000);
    expect(m.metadataChunks).toBeLessThanOrEqual(3);
    // any RAM address reads and writes like /dev/mem
    m.write(SZ_1T - 8, Uint8Array.from([1, 2]));
    expect([...m.read(SZ_1T - 8, 2)]).toEqual([1, 2]);
    for (const p of ps) m.freePages(p, 0);
    expect(m.stats().allocatedPages).toBe(0);
  });

  it('property: random alloc/free never overlaps; freeing everything restores and coalesces', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ alloc: fc.boolean(), order: fc.integer({ min: 0, max: 6 }), pick: fc.nat(), below: fc.boolean() }), {
          maxLength: 120,
        }),
        (ops) => {
          const m = mk(32 * SZ_1M);
          const initial = m.stats();
          const initialTop = m.freeBlocksOf(MAX_BUDDY_ORDER);
          const live: { p: number; o: number }[] = [];
          for (const op of ops) {
            if (op.alloc || live.length === 0) {
              const p = op.below ? m.allocPagesBelow(op.order, 8 * SZ_1M) : m.allocPages(op.order);
              if (p === 0) continue;
              const size = PAGE_SIZE * 2 ** op.order;
              expect(p % size).toBe(0);
              if (op.below) expect(p + size).toBeLessThanOrEqual(8 * SZ_1M);
              for (const l of live) {
                const ls = PAGE_SIZE * 2 ** l.o;
                expect(p + size <= l.p || l.p + ls <= p).toBe(true);
              }
              live.push({ p, o: op.order });
            } else {
              const [l] = live.splice(op.pick % live.length, 1);
              if (l !== undefined) m.freePages(l.p, l.o);
            }
          }
          for (const l of live) m.freePages(l.p, l.o);
          expect(m.stats()).toEqual(initial);
          expect(m.freeBlocksOf(MAX_BUDDY_ORDER)).toEqual(initialTop);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('the machine façade allocates, frees, reads and writes', () => {
    const mc = createMachine({ ramBytes: 256 * SZ_1M });
    const p = mc.memory.allocPages(0);
    expect(p).toBeGreaterThan(0);
    mc.memory.write(p, Uint8Array.from([4, 5]));
    expect([...mc.memory.read(p, 2)]).toEqual([4, 5]);
    mc.memory.freePages(p, 0);
    // swiotlb pool is reserved, not allocatable
    expect(mc.memory.stats().reservedPages).toBeGreaterThan(0);
  });
});

describe('PhysicalMemory byte copies', () => {
  it('copies small and large spans within and across pages, and untouched pages read as zeros', () => {
    const m = mk();
    const p = m.allocPages(1);
    const src = Uint8Array.from({ length: 6000 }, (_, i) => (i * 7 + 1) & 0xff);
    m.write(p + 4090, src.subarray(0, 12)); // small, crosses a page boundary
    m.write(p + 100, src, 20, 40); // small, inside a page, with a source offset
    expect([...m.read(p + 4090, 12)]).toEqual([...src.subarray(0, 12)]);
    expect([...m.read(p + 100, 40)]).toEqual([...src.subarray(20, 60)]);
    const q = m.allocPages(2);
    m.write(q + 10, src); // large, crosses a page
    expect(m.read(q + 10, 6000)).toEqual(src);
    expect([...m.read(q + 10 + 6000, 8)]).toEqual(Array(8).fill(0)); // just past what was written
    const out = new Uint8Array(8).fill(9);
    m.readInto(q + 3 * PAGE_SIZE, out, 0, 8);
    expect([...out]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('refuses a copy whose length runs past the caller buffer, moving no byte', () => {
    const m = mk();
    const p = m.allocPages(0);
    m.write(p, new Uint8Array(16).fill(5));
    expect(() => { m.write(p, new Uint8Array(4).fill(1), 2, 8); }).toThrow(RangeError);
    expect(() => { m.readInto(p, new Uint8Array(4), 1, 4); }).toThrow(RangeError);
    expect(() => { m.readInto(p + 0.5, new Uint8Array(4)); }).toThrow(RangeError);
    expect(() => { m.readInto(-8, new Uint8Array(4)); }).toThrow(RangeError);
    expect(() => { m.readInto(m.limit - 2, new Uint8Array(4)); }).toThrow(RangeError);
    expect([...m.read(p, 16)]).toEqual(Array(16).fill(5));
  });

  it('small reads of every length up to 64 bytes, at a page end and into a buffer offset, copy exactly', () => {
    const m = mk();
    const p = m.allocPages(0);
    const bytes = Uint8Array.from({ length: PAGE_SIZE }, (_, i) => (i * 13 + 5) & 0xff);
    m.write(p, bytes);
    for (let len = 0; len <= 64; len++) {
      const out = new Uint8Array(len + 3).fill(0xee);
      m.readInto(p + PAGE_SIZE - len, out, 3, len);
      expect([...out.subarray(0, 3)]).toEqual([0xee, 0xee, 0xee]);
      expect([...out.subarray(3)]).toEqual([...bytes.subarray(PAGE_SIZE - len)]);
    }
  });

  it('a small read never sees a dropped page: zeroed, discarded and re-touched pages read what they hold', () => {
    const m = mk();
    const p = m.allocPages(0);
    const pfn = p / PAGE_SIZE;
    const out = new Uint8Array(8);
    m.write(p, new Uint8Array(8).fill(3));
    m.readInto(p, out);
    expect([...out]).toEqual(Array(8).fill(3));
    m.fill(p, PAGE_SIZE, 0); // drops the page's bytes
    m.readInto(p, out);
    expect([...out]).toEqual(Array(8).fill(0));
    m.write(p, new Uint8Array(8).fill(4)); // a new page behind the same pfn
    m.readInto(p, out);
    expect([...out]).toEqual(Array(8).fill(4));
    m.discardPage(pfn);
    m.readInto(p, out);
    expect([...out]).toEqual(Array(8).fill(0));
    // Pages 64 frames apart share a slot of the read cache; each still reads its own bytes.
    const q = p + 64 * PAGE_SIZE;
    m.write(p, new Uint8Array(8).fill(5));
    m.write(q, new Uint8Array(8).fill(6));
    for (let i = 0; i < 3; i++) {
      m.readInto(p, out);
      expect([...out]).toEqual(Array(8).fill(5));
      m.readInto(q, out);
      expect([...out]).toEqual(Array(8).fill(6));
    }
  });

  it('a region removed from the map stops being found at once', () => {
    const m = mk();
    const bar = m.addRegion({ start: 0xe000_0000, size: SZ_1M, kind: 'p2p-bar', name: 'nvme0 CMB', owner: 'nvme0' });
    expect(m.isAccessible(0xe000_0040, 8)).toBe(true);
    expect(m.isAccessible(0xe000_0080, 8)).toBe(true); // found again (the last region found)
    m.regions.remove(bar);
    expect(m.isAccessible(0xe000_0040, 8)).toBe(false);
    expect(m.regionOf(0xe000_0040)).toBeUndefined();
    expect(m.isAccessible(PAGE_SIZE, 8)).toBe(true);
  });
});

import { describe, expect, it } from 'vitest';
import {
  createMachine,
  DMA_POOL_GFP_ZERO,
  DmaDebugError,
  dmaPoolAlloc,
  dmaPoolCreate,
  dmaPoolDestroy,
  dmaPoolFree,
  dmaPoolZalloc,
  POOL_POISON_ALLOCATED,
  SZ_1G,
} from '@dmakit/dma-core';
import type { DmaPoolBlock, Machine } from '@dmakit/dma-core';

function setup(mode: 'strict' | 'warn' = 'strict'): { m: Machine; dev: ReturnType<Machine['pci']['addDevice']> } {
  const m = createMachine({ ramBytes: SZ_1G, dmaDebug: mode });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
  return { m, dev };
}

describe('dma_pool (mm/dmapool.c)', () => {
  it('refuses bad geometry like the kernel', () => {
    const { m, dev } = setup('warn');
    expect(dmaPoolCreate('x', dev, 0, 8, 0)).toBeNull();
    expect(dmaPoolCreate('x', dev, 64, 3, 0)).toBeNull();
    expect(dmaPoolCreate('x', dev, 64, 8, 48)).toBeNull(); // not a power of two
    expect(dmaPoolCreate('x', dev, 64, 8, 32)).toBeNull(); // boundary < size
    expect(m.dmaDebug.reports.map((r) => r.rule)).toEqual(Array(4).fill('invalid-argument'));
    const p = dmaPoolCreate('ok', dev, 3, 0, 0);
    expect(p?.size).toBe(16); // at least sizeof(struct dma_block)
    expect(p?.allocation).toBe(4096);
  });

  it('carves aligned blocks from one coherent page, 16 x 256 B, the NVMe small pool', () => {
    const { m, dev } = setup();
    const pool = dmaPoolCreate('nvme descriptor small', dev, 256, 256, 0);
    if (pool === null) throw new Error('create failed');
    const blocks: DmaPoolBlock[] = [];
    for (let i = 0; i < 16; i++) {
      const b = dmaPoolAlloc(pool);
      if (b === null) throw new Error('alloc failed');
      blocks.push(b);
    }
    expect(pool.stats.pages).toBe(1);
    // Address order within a fresh page, all 256-aligned, DMA offset equal to CPU offset.
    for (let i = 0; i < 16; i++) {
      const b = blocks[i]!;
      expect(b.vaddr - blocks[0]!.vaddr).toBe(i * 256);
      expect(b.dma % 256).toBe(0);
      expect(b.dma - blocks[0]!.dma).toBe(i * 256);
    }
    // The 17th block needs a second page.
    const extra = dmaPoolAlloc(pool);
    expect(extra).not.toBeNull();
    expect(pool.stats.pages).toBe(2);
    // Poisoned when not zeroed; the device sees the same bytes through the DMA address.
    expect(m.memory.read(extra!.phys, 4)).toEqual(new Uint8Array(4).fill(POOL_POISON_ALLOCATED));
    const z = dmaPoolZalloc(pool);
    expect(dev.dmaRead(z!.dma, 256).every((x) => x === 0)).toBe(true);
    // LIFO reuse: the last freed block is handed out next.
    dmaPoolFree(pool, blocks[5]!.vaddr, blocks[5]!.dma);
    expect(dmaPoolAlloc(pool, DMA_POOL_GFP_ZERO)?.vaddr).toBe(blocks[5]!.vaddr);
    for (const b of [...blocks, extra!, z!]) dmaPoolFree(pool, b.vaddr, b.dma);
    expect(pool.stats.active).toBe(0);
    const before = m.dmaDebug.entries;
    dmaPoolDestroy(pool);
    expect(m.dmaDebug.entries).toBe(before - 2); // both coherent pages given back
    expect(m.dmaDebug.reports).toEqual([]);
  });

  it('a pool grown to 16 pages takes every block back: all freed, all handed out again, no new page', () => {
    // Regression (soak seed 190597143, nvme stack after a reset at QD 256): the free list was sized
    // one page long, frees beyond it were dropped, and allocations failed with every block free.
    for (const mode of ['off', 'warn'] as const) {
      const m = createMachine({ ramBytes: SZ_1G, dmaDebug: mode });
      const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
      const pool = dmaPoolCreate('nvme descriptor small', dev, 256, 256, 0);
      if (pool === null) throw new Error('create failed');
      for (let round = 0; round < 3; round++) {
        const blocks: DmaPoolBlock[] = [];
        for (let i = 0; i < 256; i++) {
          const b = dmaPoolAlloc(pool);
          if (b === null) throw new Error(`round ${round}: alloc ${i} failed with ${pool.stats.active} active`);
          blocks.push(b);
        }
        expect(new Set(blocks.map((b) => b.vaddr)).size).toBe(256);
        for (const b of blocks) dmaPoolFree(pool, b.vaddr, b.dma);
        expect(pool.stats.active).toBe(0);
      }
      expect(pool.stats.pages).toBe(16);
      expect(pool.stats.failures).toBe(0);
      expect(m.dmaDebug.reports).toEqual([]);
      dmaPoolDestroy(pool);
    }
  });

  it('never lets a block cross the boundary', () => {
    const { dev } = setup();
    const pool = dmaPoolCreate('b', dev, 96, 32, 1024);
    if (pool === null) throw new Error('create failed');
    // 10 blocks of 96 per 1 KiB window (960 bytes), 4 windows per page.
    expect(pool.blocksPerPage).toBe(40);
    for (let i = 0; i < 80; i++) {
      const b = dmaPoolAlloc(pool);
      if (b === null) throw new Error('alloc failed');
      expect(Math.floor(b.dma / 1024)).toBe(Math.floor((b.dma + 95) / 1024));
      expect(b.dma % 32).toBe(0);
    }
  });

  it('detects a double free, a foreign address, a wrong dma, and destroy while busy', () => {
    const { m, dev } = setup('warn');
    const pool = dmaPoolCreate('p', dev, 4096, 4096, 0);
    if (pool === null) throw new Error('create failed');
    const a = dmaPoolAlloc(pool)!;
    const b = dmaPoolAlloc(pool)!;
    dmaPoolFree(pool, a.vaddr, a.dma);
    dmaPoolFree(pool, a.vaddr, a.dma);
    dmaPoolFree(pool, a.vaddr + 8, a.dma + 8);
    dmaPoolFree(pool, b.vaddr, b.dma + 4096);
    expect(m.dmaDebug.reports.map((r) => r.rule)).toEqual(['pool-double-free', 'pool-bad-free', 'pool-bad-free']);
    expect(pool.stats.active).toBe(1);
    dmaPoolDestroy(pool);
    expect(m.dmaDebug.reports.at(-1)?.rule).toBe('pool-destroy-busy');
    // The busy page is leaked, not freed: its coherent mapping is still tracked.
    expect(m.dmaDebug.dumpMappings(dev).filter((e) => e.type === 'coherent').length).toBe(2);
    expect(dmaPoolAlloc(pool)).toBeNull();
  });

  it('throws the typed error in strict mode and reports a block written after its free', () => {
    const { m, dev } = setup();
    const pool = dmaPoolCreate('p', dev, 256, 256, 0)!;
    const a = dmaPoolAlloc(pool)!;
    dmaPoolFree(pool, a.vaddr, a.dma);
    expect(() => {
      dmaPoolFree(pool, a.vaddr, a.dma);
    }).toThrow(DmaDebugError);
    dev.dmaWrite(a.dma + 100, Uint8Array.of(1, 2, 3)); // the device writes a freed PRP list
    expect(() => dmaPoolAlloc(pool)).toThrow(/corrupted/);
    expect(m.dmaDebug.reports.map((r) => r.rule)).toEqual(['pool-double-free', 'pool-corrupted']);
  });

  it('fails cleanly under fault injection and recovers', () => {
    const { m, dev } = setup();
    const pool = dmaPoolCreate('p', dev, 256, 256, 0)!;
    m.faultInjection.arm('dma_pool', 2);
    expect(dmaPoolAlloc(pool)).not.toBeNull();
    expect(dmaPoolAlloc(pool)).toBeNull();
    expect(dmaPoolAlloc(pool)).not.toBeNull();
    expect(pool.stats.failures).toBe(1);
    expect(pool.stats.active).toBe(2);
  });
});

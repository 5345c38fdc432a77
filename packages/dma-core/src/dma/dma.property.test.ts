import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bytesEqual,
  createMachine,
  DMA_ATTR_SKIP_CPU_SYNC,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  dmaAllocCoherent,
  dmaFreeCoherent,
  dmaMapPhys,
  dmaMappingError,
  dmaSyncSingleForCpu,
  dmaSyncSingleForDevice,
  dmaUnmapPhys,
  SZ_1G,
  SZ_4G,
} from '@dmakit/dma-core';
import type { DmaCoherentBuffer, DmaDataDirection } from '@dmakit/dma-core';

type Op =
  | { k: 'map'; high: boolean; dev: number; size: number; dir: number; skip: boolean; off: number }
  | { k: 'unmap'; pick: number; wrong: 'none' | 'size' | 'dir' }
  | { k: 'double'; pick: number }
  | { k: 'devwrite'; pick: number; seed: number }
  | { k: 'sync'; pick: number; cpu: boolean }
  | { k: 'bogus'; what: number }
  | { k: 'alloc'; size: number }
  | { k: 'free'; pick: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constant('map' as const), high: fc.boolean(), dev: fc.integer({ min: 0, max: 1 }), size: fc.integer({ min: 1, max: 40_000 }), dir: fc.integer({ min: 0, max: 2 }), skip: fc.boolean(), off: fc.integer({ min: 0, max: 4095 }) }),
  fc.record({ k: fc.constant('unmap' as const), pick: fc.nat(), wrong: fc.constantFrom('none' as const, 'none' as const, 'size' as const, 'dir' as const) }),
  fc.record({ k: fc.constant('double' as const), pick: fc.nat() }),
  fc.record({ k: fc.constant('devwrite' as const), pick: fc.nat(), seed: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ k: fc.constant('sync' as const), pick: fc.nat(), cpu: fc.boolean() }),
  fc.record({ k: fc.constant('bogus' as const), what: fc.integer({ min: 0, max: 4 }) }),
  fc.record({ k: fc.constant('alloc' as const), size: fc.integer({ min: 1, max: 20_000 }) }),
  fc.record({ k: fc.constant('free' as const), pick: fc.nat() }),
);

interface Live {
  phys: number;
  dma: number;
  size: number;
  dir: DmaDataDirection;
  skip: boolean;
  devIdx: number;
  /** What the device last wrote (null: nothing); the CPU must see it after a copy-back. */
  written: Uint8Array | null;
}

describe('DMA API under random use and misuse (fast-check)', () => {
  it('keeps swiotlb accounting, moves the right bytes, never throws', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 60 }), fc.boolean(), (ops, tinyPool) => {
        const m = createMachine({ ramBytes: 8 * SZ_1G, dmaDebug: 'warn', swiotlbBytes: tinyPool ? 256 * 1024 : 64 * 1024 * 1024 });
        const devs = [m.pci.addDevice({ name: 'd32', dmaMaskBits: 32 }), m.pci.addDevice({ name: 'd64', dmaMaskBits: 64 })];
        const live: Live[] = [];
        const dead: Live[] = [];
        const bufs: { dev: number; buf: DmaCoherentBuffer; size: number }[] = [];
        let slot = 0;
        const checkCopyBack = (l: Live): void => {
          if (l.written !== null && !l.skip && l.dir !== DMA_TO_DEVICE) expect(bytesEqual(m.memory.read(l.phys, l.size), l.written)).toBe(true);
        };
        for (const op of ops) {
          switch (op.k) {
            case 'map': {
              const dev = devs[op.dev];
              if (dev === undefined) break;
              // Each mapping gets its own 64 KiB window, so expected bytes never alias.
              const base = (op.high ? SZ_4G + SZ_1G : 256 * 1024 * 1024) + slot++ * 65536 + op.off;
              const data = m.rng.fill(new Uint8Array(op.size));
              m.memory.write(base, data);
              const dir = op.dir as DmaDataDirection;
              const dma = dmaMapPhys(dev, base, op.size, dir, op.skip ? DMA_ATTR_SKIP_CPU_SYNC : 0);
              if (dmaMappingError(dev, dma) !== 0) {
                expect(op.dev === 0 && op.high).toBe(true); // only a bounce can fail (pool full)
                break;
              }
              // Map copies orig → device-visible memory for every direction.
              expect(bytesEqual(dev.dmaRead(dma, op.size), data)).toBe(true);
              live.push({ phys: base, dma, size: op.size, dir, skip: op.skip, devIdx: op.dev, written: null });
              break;
            }
            case 'devwrite': {
              const l = live[op.pick % Math.max(live.length, 1)];
              if (l === undefined || l.dir === DMA_TO_DEVICE) break;
              const bytes = new Uint8Array(l.size).fill(op.seed);
              devs[l.devIdx]?.dmaWrite(l.dma, bytes);
              l.written = bytes;
              break;
            }
            case 'sync': {
              const l = live[op.pick % Math.max(live.length, 1)];
              const dev = l === undefined ? undefined : devs[l.devIdx];
              if (l === undefined || dev === undefined) break;
              if (op.cpu) {
                dmaSyncSingleForCpu(dev, l.dma, l.size, l.dir);
                if (l.written !== null && l.dir !== DMA_TO_DEVICE) expect(bytesEqual(m.memory.read(l.phys, l.size), l.written)).toBe(true);
              } else {
                dmaSyncSingleForDevice(dev, l.dma, l.size, l.dir);
                if (l.dir !== DMA_FROM_DEVICE) {
                  expect(bytesEqual(dev.dmaRead(l.dma, l.size), m.memory.read(l.phys, l.size))).toBe(true);
                  l.written = null;
                }
              }
              break;
            }
            case 'unmap': {
              if (live.length === 0) break;
              const i = op.pick % live.length;
              const l = live[i];
              const dev = l === undefined ? undefined : devs[l.devIdx];
              if (l === undefined || dev === undefined) break;
              live.splice(i, 1);
              const size = op.wrong === 'size' ? l.size + 1 : l.size;
              const dir = op.wrong === 'dir' ? (((l.dir + 1) % 3) as DmaDataDirection) : l.dir;
              dmaUnmapPhys(dev, l.dma, size, dir, l.skip ? DMA_ATTR_SKIP_CPU_SYNC : 0);
              if (op.wrong === 'none') checkCopyBack(l);
              dead.push(l);
              break;
            }
            case 'double': {
              const l = dead[op.pick % Math.max(dead.length, 1)];
              const dev = l === undefined ? undefined : devs[l.devIdx];
              // Only when no live mapping reuses the address (the kernel would free it too).
              if (l === undefined || dev === undefined || live.some((x) => x.dma === l.dma)) break;
              dmaUnmapPhys(dev, l.dma, l.size, l.dir);
              break;
            }
            case 'bogus': {
              const dev = devs[0];
              if (dev === undefined) break;
              if (op.what === 0) expect(dmaMapPhys(dev, 0x10000, 64, 3)).toBe(DMA_MAPPING_ERROR);
              if (op.what === 1) expect(dmaMapPhys(dev, 0x10000, -5, DMA_BIDIRECTIONAL)).toBe(DMA_MAPPING_ERROR);
              if (op.what === 2) dmaSyncSingleForCpu(dev, 0x1234_5000, 100, DMA_FROM_DEVICE);
              if (op.what === 3) dmaUnmapPhys(dev, DMA_MAPPING_ERROR, 100, DMA_TO_DEVICE);
              if (op.what === 4) dmaFreeCoherent(dev, 4096, 0x777000, 0x777000);
              break;
            }
            case 'alloc': {
              const dev = devs[op.size % 2];
              if (dev === undefined) break;
              const buf = dmaAllocCoherent(dev, op.size);
              if (buf !== null) {
                const b = new Uint8Array(op.size).fill(op.size % 251);
                dev.dmaWrite(buf.dmaAddr, b);
                expect(bytesEqual(m.memory.read(buf.cpuAddr, op.size), b)).toBe(true);
                bufs.push({ dev: op.size % 2, buf, size: op.size });
              }
              break;
            }
            case 'free': {
              if (bufs.length === 0) break;
              const [b] = bufs.splice(op.pick % bufs.length, 1);
              const dev = b === undefined ? undefined : devs[b.dev];
              if (b !== undefined && dev !== undefined) dmaFreeCoherent(dev, b.size, b.buf.cpuAddr, b.buf.dmaAddr);
              break;
            }
          }
        }
        for (const l of live) {
          const dev = devs[l.devIdx];
          if (dev === undefined) continue;
          dmaUnmapPhys(dev, l.dma, l.size, l.dir, l.skip ? DMA_ATTR_SKIP_CPU_SYNC : 0);
          checkCopyBack(l);
        }
        for (const b of bufs) {
          const dev = devs[b.dev];
          if (dev !== undefined) dmaFreeCoherent(dev, b.size, b.buf.cpuAddr, b.buf.dmaAddr);
        }
        expect(m.swiotlb.stats().usedSlots).toBe(0);
        expect(m.dmaDebug.entries).toBe(0);
      }),
      { numRuns: 150 },
    );
  });
});

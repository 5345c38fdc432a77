/**
 * Test helper of @dmakit/dma-core (not shipped): the DMA API's model-checking properties, shared
 * by the package's own tests (dma/dma.property.test.ts, dma/debug.test.ts) and the seeded soak
 * (tools/soak), which runs them with fresh seeds: `fc.check(dmaApiProperty(), { seed, numRuns })`.
 * Each function returns a fresh fast-check property over the same arbitraries the tests always
 * used; a broken invariant throws (vitest's `expect`, which also runs outside the test runner).
 */
import fc from 'fast-check';
import { expect } from 'vitest';
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
  DmaIovaState,
  SZ_1G,
  SZ_4G,
} from '../index.js';
import type { DmaCoherentBuffer, DmaDataDirection, DmaMapOps } from '../index.js';

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

/**
 * The DMA API under random use and misuse (map with and without bounce, device writes, syncs,
 * unmaps with the wrong size or direction, double unmaps, bogus calls, coherent alloc/free), on a
 * 32-bit and a 64-bit device: the right bytes move, swiotlb's accounting returns to zero, dma-debug
 * holds no entry at the end, and nothing throws.
 */
export function dmaApiProperty(): fc.IPropertyWithHooks<[Op[], boolean]> {
  return fc.property(fc.array(opArb, { maxLength: 60 }), fc.boolean(), (ops, tinyPool) => {
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
  });
}

/** The address dma-debug's accounting properties map at (identity "DMA addresses"). */
const A = 0x10_0000;

/**
 * dma-debug's accounting (kernel/dma/debug.c): balanced random map / mapping_error / sync / unmap
 * sequences, unmapped in a random order, never report in strict mode and leave no entry.
 */
export function dmaDebugBalancedProperty(): fc.IPropertyWithHooks<[{ page: number; pages: number; dir: number }[], number[]]> {
  return fc.property(
    fc.array(fc.record({ page: fc.integer({ min: 0, max: 63 }), pages: fc.integer({ min: 1, max: 4 }), dir: fc.constantFrom(0, 1, 2) }), { maxLength: 40 }),
    fc.array(fc.nat(), { maxLength: 40 }),
    (maps, order) => {
      const m = createMachine({ dmaDebug: 'strict' });
      const dev = m.pci.addDevice({ name: 'dev0', dmaMaskBits: 64 });
      const dbg = m.dmaDebug;
      const live = maps.map((x) => ({ addr: A + x.page * 0x2_0000, size: x.pages * 4096, dir: x.dir }));
      for (const l of live) {
        dbg.mapPhys(dev, l.addr, l.size, l.dir, l.addr, DMA_ATTR_SKIP_CPU_SYNC);
        dbg.mappingError(dev, l.addr);
      }
      expect(dbg.entries).toBe(live.length);
      for (const l of live) dbg.syncSingleForCpu(dev, l.addr + l.size - 1, 1, l.dir === 0 ? 0 : l.dir);
      const pending = [...live];
      for (const o of order) {
        if (pending.length === 0) break;
        const [l] = pending.splice(o % pending.length, 1);
        if (l !== undefined) dbg.unmapPhys(dev, l.addr, l.size, l.dir);
      }
      for (const l of pending) dbg.unmapPhys(dev, l.addr, l.size, l.dir);
      expect(dbg.entries).toBe(0);
      expect(dbg.reports).toEqual([]);
    },
  );
}

/**
 * dma-debug's two-step IOVA checks (beyond the kernel): the reports of random dma_iova_link /
 * dma_iova_unlink calls match a byte-map model of the linked set (overlapping links and unlinks
 * of unlinked ranges reported, nothing else), and the linked byte count matches the model.
 */
export function dmaDebugIovaLinkProperty(): fc.IPropertyWithHooks<[{ link: boolean; g: number; n: number }[]]> {
  const G = 4096;
  return fc.property(fc.array(fc.record({ link: fc.boolean(), g: fc.integer({ min: 0, max: 15 }), n: fc.integer({ min: 1, max: 4 }) }), { maxLength: 30 }), (ops) => {
    const m = createMachine({ dmaDebug: 'warn' });
    const dev = m.pci.addDevice({ name: 'dev0', dmaMaskBits: 64 });
    const dbg = m.dmaDebug;
    // IOMMU ops whose only used method is getMergeBoundary (4 KiB granule).
    dev.dmaOps = { name: 'fake', getMergeBoundary: () => G - 1 } as unknown as DmaMapOps;
    const state = new DmaIovaState();
    state.size = 20 * G;
    dbg.iovaTryAlloc(dev, state);
    const linked = new Uint8Array(20);
    for (const op of ops) {
      const before = dbg.reports.length;
      const s = op.g;
      const e = op.g + op.n;
      let any = false;
      let all = true;
      for (let i = s; i < e; i++) {
        if (linked[i] === 1) any = true;
        else all = false;
      }
      if (op.link) {
        dbg.iovaLink(dev, state, A, s * G, op.n * G, DMA_TO_DEVICE, 0);
        expect(dbg.reports.slice(before).map((r) => r.rule)).toEqual(any ? ['iova-link-overlap'] : []);
        linked.fill(1, s, e);
      } else {
        dbg.iovaUnlink(dev, state, s * G, op.n * G, DMA_TO_DEVICE);
        expect(dbg.reports.slice(before).map((r) => r.rule)).toEqual(all ? [] : ['iova-unlink-not-linked']);
        linked.fill(0, s, e);
      }
      const total = linked.reduce((a, b) => a + b, 0) * G;
      expect(dbg.dumpIovaStates()[0]?.linkedBytes).toBe(total);
    }
  });
}

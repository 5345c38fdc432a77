/**
 * dma-core benchmarks (issue: dma-core).
 * - dmaMapPhys + dmaUnmapPhys on a direct device against the floor loop (target: <= 3x).
 * - swiotlb map + unmap of 4 KiB (ns/op, bytes copied per op).
 * - heap of a 1 TiB physical space with 1,000 touched pages (target: < 64 MiB).
 */
import {
  createMachine,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  dmaBitMask,
  dmaMapPhys,
  dmaUnmapPhys,
  PAGE_SIZE,
  SZ_1G,
  SZ_1T,
} from '@dmakit/dma-core';
import { check, sideBySide } from './harness.js';
import type { SuiteResult } from './harness.js';

function directMapUnmap(): SuiteResult {
  const m = createMachine({ ramBytes: SZ_1G, dmaDebug: 'off' });
  const dev = m.pci.addDevice({ name: 'bench0', dmaMaskBits: 64 });
  const phys = m.memory.allocPages(4);
  const sink = new Float64Array(1);
  const trace = m.trace;
  const mask = dmaBitMask(64);
  const offset = dev.dmaRangeOffset;
  const measured = sideBySide(
    [
      {
        name: 'floor: trace-off bookkeeping loop',
        run: (ops) => {
          for (let i = 0; i < ops; i++) {
            // What a direct map must do at least: trace branch, phys->dma, capability check.
            if (trace.enabled) sink[0] = -1;
            const p = phys + (i & 7) * 64;
            const dma = p + offset;
            if (dma + 64 - 1 > mask) sink[0] = -2;
            sink[0] = dma;
            if (trace.enabled) sink[0] = -1;
          }
        },
      },
      {
        name: 'floor + the argument checks of map and unmap (what the model adds to never crash)',
        run: (ops) => {
          const limit = m.memory.limit;
          for (let i = 0; i < ops; i++) {
            const p = phys + (i & 7) * 64;
            const dir: number = i & 3;
            if (trace.enabled) sink[0] = -1;
            if (!((dir === 0 || dir === 1 || dir === 2 || dir === 3) && Number.isSafeInteger(p) && p >= 0 && p + 64 <= limit)) sink[0] = -3;
            const dma = p + offset;
            if (dma + 64 - 1 > mask) sink[0] = -2;
            sink[0] = dma;
            if (!(Number.isSafeInteger(dma) && dma >= 0)) sink[0] = -3;
            if (dma - offset < 0) sink[0] = -4; // dma_to_phys + "is it a swiotlb buffer?"
            if (trace.enabled) sink[0] = -1;
          }
        },
      },
      {
        name: 'dmaMapPhys + dmaUnmapPhys (direct, debug off)',
        run: (ops) => {
          for (let i = 0; i < ops; i++) {
            const p = phys + (i & 7) * 64;
            const dma = dmaMapPhys(dev, p, 64, DMA_TO_DEVICE, 0);
            dmaUnmapPhys(dev, dma, 64, DMA_TO_DEVICE, 0);
            sink[0] = dma;
          }
        },
      },
    ],
    2_000_000,
  );
  const [floor, checked, api] = measured;
  const ratio = (api?.nsPerOp ?? 0) / (floor?.nsPerOp ?? 1);
  const ratioChecked = (api?.nsPerOp ?? 0) / (checked?.nsPerOp ?? 1);
  return {
    suite: 'dma-core-direct-map',
    measured,
    figures: { 'ratio api/floor': ratio, 'ratio api/(floor + checks)': ratioChecked },
    checks: [check('direct map+unmap vs floor', '<= 3x', ratio, ratio <= 3)],
  };
}

function swiotlbBounce(): SuiteResult {
  const m = createMachine({ ramBytes: 8 * SZ_1G, dmaDebug: 'off' });
  const dev = m.pci.addDevice({ name: 'legacy32', dmaMaskBits: 32 });
  // A buffer above 4 GiB so the 32-bit device must bounce.
  let phys = 0;
  while (phys < 4 * SZ_1G) phys = m.memory.allocPages(9);
  m.memory.fill(phys, PAGE_SIZE, 0x5a);
  const sink = new Float64Array(1);
  const before = m.swiotlb.stats();
  let n = 0;
  const measured = sideBySide(
    [
      {
        name: 'swiotlb map+unmap 4 KiB (FROM_DEVICE)',
        run: (ops) => {
          for (let i = 0; i < ops; i++) {
            const dma = dmaMapPhys(dev, phys, PAGE_SIZE, DMA_FROM_DEVICE, 0);
            dmaUnmapPhys(dev, dma, PAGE_SIZE, DMA_FROM_DEVICE, 0);
            sink[0] = dma;
          }
          n += ops;
        },
      },
    ],
    100_000,
  );
  const after = m.swiotlb.stats();
  const copied = after.bytesCopied - before.bytesCopied;
  return {
    suite: 'dma-core-swiotlb',
    measured,
    figures: { 'bytes copied per op': copied / n, 'slots in use after': after.usedSlots },
    checks: [check('swiotlb slots back to zero', '== 0', after.usedSlots, after.usedSlots === 0)],
  };
}

/** JS heap plus ArrayBuffer backing stores (page buffers are ArrayBuffers, outside heapUsed). */
function memoryInUse(): number {
  const u = process.memoryUsage();
  return u.heapUsed + u.arrayBuffers;
}

function sparseMemory(): SuiteResult {
  const gc = (globalThis as { gc?: () => void }).gc;
  // Runs first in the process, and after full collections, so no earlier garbage is freed inside the window.
  for (let i = 0; i < 3; i++) gc?.();
  const mem0 = memoryInUse();
  const m = createMachine({ ramBytes: SZ_1T, dmaDebug: 'off' });
  const stride = Math.floor(SZ_1T / 1000 / PAGE_SIZE) * PAGE_SIZE;
  const byte = Uint8Array.of(0xab);
  for (let i = 0; i < 1000; i++) m.memory.write(PAGE_SIZE + i * stride, byte);
  gc?.();
  const bytes = memoryInUse() - mem0;
  // The 1000 page buffers are live in `m`: a growth below their size means the window was disturbed.
  const pageBytes = m.memory.touchedPages * PAGE_SIZE;
  const ok = m.memory.touchedPages === 1000 && bytes >= pageBytes;
  const mib = bytes / (1024 * 1024);
  return {
    suite: 'dma-core-sparse-memory',
    measured: [],
    figures: {
      'touched pages': m.memory.touchedPages,
      'memory growth, JS heap + ArrayBuffers (MiB)': mib,
      'of which touched page buffers (MiB)': (m.memory.touchedPages * PAGE_SIZE) / (1024 * 1024),
      'gc exposed': gc ? 'yes' : 'no',
    },
    checks: [check('1 TiB machine, 1000 touched pages: memory (JS heap + ArrayBuffers, at least the page buffers)', '< 64 MiB', mib, ok && mib < 64)],
  };
}

export function runDmaCoreBenches(): SuiteResult[] {
  return [sparseMemory(), directMapUnmap(), swiotlbBounce()];
}

/**
 * dma-core benchmarks (issue: dma-core).
 * - dmaMapPhys + dmaUnmapPhys on a direct device against a like-for-like floor: the same checks,
 *   dispatch, dma-direct rules and trace/debug branches as plain code (target: <= 3x).
 * - swiotlb map + unmap of 4 KiB (ns/op, bytes copied per op).
 * - heap of a 1 TiB physical space with 1,000 touched pages (target: < 64 MiB).
 */
import {
  createMachine,
  DMA_ATTR_MMIO,
  DMA_ATTR_REQUIRE_COHERENT,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  IO_TLB_SIZE,
  dmaBitMask,
  dmaMapPhys,
  dmaUnmapPhys,
  PAGE_SIZE,
  SZ_1G,
  SZ_1T,
} from '@dmakit/dma-core';
import { check, sideBySide } from './harness.js';
import type { SuiteResult } from './harness.js';

// The constants as module-local values, for the floor and the API loop alike (V8 folds these; an
// imported binding is re-read and TDZ-checked at every use, which would only add noise).
const MAPPING_ERROR = DMA_MAPPING_ERROR;
const ATTR_MMIO = DMA_ATTR_MMIO;
const ATTR_REQUIRE_COHERENT = DMA_ATTR_REQUIRE_COHERENT;
const TO_DEVICE = DMA_TO_DEVICE;

/**
 * The dma-direct device as the floor sees it: the per-device state dma_direct_map_phys and
 * dma_direct_unmap_phys read (kernel/dma/direct.h), in a plain object.
 */
interface FloorDirectDevice {
  /** `get_dma_ops(dev)`: null for dma-direct. */
  ops: null | object;
  dmaMask: number;
  busDmaLimit: number;
  /** `dma_range_map` offset. */
  dmaRangeOffset: number;
  /** `is_swiotlb_force_bounce(dev)`. */
  forceBounce: boolean;
  coherent: boolean;
}

/** The machine state the same two calls read: the physical address limit, the swiotlb pool, trace and dma-debug switches. */
interface FloorDirectHost {
  physLimit: number;
  /** A CC guest (its DMA addresses carry a world bit and every mapping bounces). */
  ccGuest: boolean;
  swiotlbStart: number;
  swiotlbEnd: number;
  traceEnabled: boolean;
  debugEnabled: boolean;
}

/**
 * Floor of `dma_map_phys` on a dma-direct device, as plain code: the API checks (direction, size,
 * phys inside the physical address space, attrs, a DMA mask; REQUIRE_COHERENT on a non-coherent
 * device), the dispatch test, then dma_direct_map_phys (force-bounce test, MMIO test,
 * phys_to_dma with the range offset, dma_capable against min_not_zero(mask, bus limit)), then the
 * tracepoint and dma-debug branches. The bounce and MMIO branches are never taken here. The model
 * has no CPU cache, so arch_sync_dma_for_device of a non-coherent device is nothing in both.
 */
function floorDirectMap(dev: FloorDirectDevice, host: FloorDirectHost, phys: number, size: number, dir: number, attrs: number, sink: Float64Array): number {
  if (!((dir === 0 || dir === 1 || dir === 2) && Number.isSafeInteger(size) && size > 0 && Number.isSafeInteger(phys) && phys >= 0 && phys + size <= host.physLimit && attrs >>> 0 === attrs && dev.dmaMask !== 0)) {
    return MAPPING_ERROR;
  }
  if ((attrs & ATTR_REQUIRE_COHERENT) !== 0 && !dev.coherent) return MAPPING_ERROR;
  let dma = MAPPING_ERROR;
  if (dev.ops === null) {
    if (dev.forceBounce || host.ccGuest) return MAPPING_ERROR; // swiotlb_map (not taken)
    if ((attrs & ATTR_MMIO) !== 0) return MAPPING_ERROR; // MMIO: no offset (not taken)
    dma = phys + dev.dmaRangeOffset;
    const mask = dev.dmaMask;
    const bus = dev.busDmaLimit;
    if (dma + size - 1 > (bus === 0 || (mask !== 0 && mask < bus) ? mask : bus)) return MAPPING_ERROR; // bounce (not taken)
  }
  if (host.traceEnabled) sink[1] = dma;
  if (host.debugEnabled) sink[2] = dma;
  return dma;
}

/**
 * Floor of `dma_unmap_phys` on a dma-direct device: the API checks (direction, size, attrs, a
 * valid DMA address, the MAPPING_ERROR test), the dispatch test, dma_direct_unmap_phys (MMIO
 * test, dma_to_phys, is_swiotlb_buffer), the tracepoint and dma-debug branches.
 */
function floorDirectUnmap(dev: FloorDirectDevice, host: FloorDirectHost, dma: number, size: number, dir: number, attrs: number, sink: Float64Array): void {
  if (!((dir === 0 || dir === 1 || dir === 2) && Number.isSafeInteger(size) && size > 0 && attrs >>> 0 === attrs)) return;
  if (dma !== MAPPING_ERROR) {
    if (!(Number.isSafeInteger(dma) && dma >= 0)) return;
    if (dev.ops === null && (attrs & ATTR_MMIO) === 0) {
      const phys = dma - dev.dmaRangeOffset;
      if (phys >= host.swiotlbStart && phys < host.swiotlbEnd) sink[3] = phys; // swiotlb release (not taken)
    }
  }
  if (host.traceEnabled) sink[1] = dma;
  if (host.debugEnabled) sink[2] = dma;
}

function directMapUnmap(): SuiteResult {
  const m = createMachine({ ramBytes: SZ_1G, dmaDebug: 'off' });
  const dev = m.pci.addDevice({ name: 'bench0', dmaMaskBits: 64 });
  const phys = m.memory.allocPages(4);
  const sink = new Float64Array(4);
  const trace = m.trace;
  const mask = dmaBitMask(64);
  const offset = dev.dmaRangeOffset;
  const pool = m.swiotlb.stats();
  const fdev: FloorDirectDevice = { ops: null, dmaMask: dev.dmaMask, busDmaLimit: dev.busDmaLimit, dmaRangeOffset: offset, forceBounce: dev.forceSwiotlb, coherent: dev.coherent };
  const fhost: FloorDirectHost = {
    physLimit: m.memory.limit,
    ccGuest: m.cc !== null,
    swiotlbStart: m.swiotlb.base,
    swiotlbEnd: m.swiotlb.base + pool.totalSlots * IO_TLB_SIZE,
    traceEnabled: trace.enabled,
    debugEnabled: m.dmaDebug.enabled,
  };
  const measured = sideBySide(
    [
      {
        name: 'floor: dma_map_phys + dma_unmap_phys on dma-direct as plain code (API checks, dispatch, force-bounce/MMIO tests, phys_to_dma, dma_capable, is_swiotlb_buffer, trace and dma-debug branches)',
        run: (ops) => {
          for (let i = 0; i < ops; i++) {
            const p = phys + (i & 7) * 64;
            const dma = floorDirectMap(fdev, fhost, p, 64, TO_DEVICE, 0, sink);
            floorDirectUnmap(fdev, fhost, dma, 64, TO_DEVICE, 0, sink);
            sink[0] = dma;
          }
        },
      },
      {
        name: 'minimal loop (the former floor): trace branch, phys + offset, mask test; less than the kernel does',
        run: (ops) => {
          for (let i = 0; i < ops; i++) {
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
        name: 'dmaMapPhys + dmaUnmapPhys (direct, debug off)',
        run: (ops) => {
          for (let i = 0; i < ops; i++) {
            const p = phys + (i & 7) * 64;
            const dma = dmaMapPhys(dev, p, 64, TO_DEVICE, 0);
            dmaUnmapPhys(dev, dma, 64, TO_DEVICE, 0);
            sink[0] = dma;
          }
        },
      },
    ],
    2_000_000,
  );
  const [floor, minimal, api] = measured;
  const ratio = (api?.nsPerOp ?? 0) / (floor?.nsPerOp ?? 1);
  const ratioMinimal = (api?.nsPerOp ?? 0) / (minimal?.nsPerOp ?? 1);
  return {
    suite: 'dma-core-direct-map',
    measured,
    figures: { 'ratio api/floor (like-for-like)': ratio, 'ratio api/minimal loop (former floor)': ratioMinimal },
    checks: [
      check('direct map+unmap vs the like-for-like floor', '<= 3x', ratio, ratio <= 3, () => {
        for (let i = 0; i < 20_000_000; i++) {
          const dma = dmaMapPhys(dev, phys + (i & 7) * 64, 64, TO_DEVICE, 0);
          dmaUnmapPhys(dev, dma, 64, TO_DEVICE, 0);
          sink[0] = dma;
        }
      }),
    ],
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

/**
 * The "direct" stack: a machine without an IOMMU (or, with --iommu, behind one), two devices doing
 * streaming DMA, a swiotlb bounce for a 32-bit device above 4 GiB, a coherent buffer, and the
 * two-step IOVA API with its fallback. Every transfer is checked byte for byte.
 */
import {
  createMachine,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  DmaFaultError,
  DmaIovaState,
  dmaAllocCoherent,
  dmaFreeCoherent,
  dmaIovaDestroy,
  dmaIovaLink,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaMapPhys,
  dmaMappingError,
  dmaSyncSingleForCpu,
  dmaSyncSingleForDevice,
  dmaUnmapPhys,
  dmaUseIova,
  PAGE_SIZE,
  SZ_1G,
  SZ_4G,
} from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';
import { createIommu } from '@dmakit/iommu-dma';
import type { Iommu, IommuStats } from '@dmakit/iommu-dma';
import { table } from './format.js';
import { checkRequest } from './types.js';
import type { IommuMode, StackDef } from './types.js';

export type { IommuMode } from './types.js';

export interface StepResult {
  readonly step: string;
  readonly device: string;
  readonly bytes: number;
  readonly verified: boolean;
  readonly detail: string;
}

export interface DirectStackResult {
  readonly stack: 'direct';
  readonly verified: boolean;
  readonly verifiedBytes: number;
  readonly steps: StepResult[];
  readonly swiotlb: ReturnType<Machine['swiotlb']['stats']>;
  readonly dmaDebugReports: number;
  readonly simulatedNs: number;
  /** The IOMMU's mode and counters, or null when the devices use dma-direct. */
  readonly iommu: { readonly mode: 'strict' | 'lazy'; readonly stats: IommuStats; readonly faults: number } | null;
}

export interface DirectStackOptions {
  readonly seed?: number;
  readonly machine?: Machine;
  /** Put both devices behind an IOMMU in this mode (default 'off': dma-direct). */
  readonly iommu?: IommuMode;
  /** Progress in steps (5 with dma-direct, 6 behind an IOMMU). */
  readonly onProgress?: (done: number, total: number) => void;
}

function pattern(m: Machine, len: number): Uint8Array {
  return m.rng.fill(new Uint8Array(len));
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Allocate pages whose physical address is at or above `floor` (walks the allocator upwards). */
function allocAbove(m: Machine, order: number, floor: number): number {
  const held: number[] = [];
  let phys = m.memory.allocPages(order);
  while (phys !== 0 && phys < floor) {
    held.push(phys);
    phys = m.memory.allocPages(order);
  }
  for (const p of held) m.memory.freePages(p, order);
  if (phys === 0) throw new Error(`no RAM above 0x${floor.toString(16)}`);
  return phys;
}

export function runDirectStack(opts: DirectStackOptions = {}): DirectStackResult {
  const m = opts.machine ?? createMachine({ ramBytes: 8 * SZ_1G, seed: opts.seed ?? 1, dmaDebug: 'warn' });
  const steps: StepResult[] = [];
  const nic = m.pci.addDevice({ name: 'nic0', dmaMaskBits: 64 });
  const legacy = m.pci.addDevice({ name: 'legacy32', dmaMaskBits: 32 });
  const mode = opts.iommu ?? 'off';
  const iommu = mode === 'off' ? null : createIommu(m, { mode });
  if (iommu !== null) {
    iommu.attachDevice(nic);
    iommu.attachDevice(legacy);
  }

  const total = iommu === null ? 5 : 6;
  const step = (r: StepResult): void => {
    steps.push(r);
    opts.onProgress?.(steps.length, total);
  };
  step(streamToDevice(m, nic, iommu !== null));
  step(iommu === null ? bounceFromDevice(m, legacy, allocAbove(m, 2, SZ_4G)) : remapFromDevice(m, legacy, allocAbove(m, 2, SZ_4G)));
  step(bidirectionalRoundTrip(m, legacy, allocAbove(m, 0, SZ_4G)));
  step(coherentBuffer(m, legacy));
  step(iovaApiWithFallback(m, nic));
  if (iommu !== null) step(iommuFaultOnPurpose(m, iommu, nic));

  return {
    stack: 'direct',
    verified: steps.every((s) => s.verified),
    verifiedBytes: steps.reduce((t, s) => t + (s.verified ? s.bytes : 0), 0),
    steps,
    swiotlb: m.swiotlb.stats(),
    dmaDebugReports: m.dmaDebug.reports.length,
    simulatedNs: m.clock.now(),
    iommu: iommu === null || mode === 'off' ? null : { mode, stats: iommu.stats(), faults: iommu.faults.length },
  };
}

/** Behind an IOMMU the 32-bit device gets an IOVA below 4 GiB for a buffer above it: no bounce. */
function remapFromDevice(m: Machine, dev: Device, phys: number): StepResult {
  const len = 4 * PAGE_SIZE;
  m.memory.fill(phys, len, 0);
  const bouncesBefore = m.swiotlb.stats().bounces;
  const dma = dmaMapPhys(dev, phys, len, DMA_FROM_DEVICE, 0);
  const step = 'IOMMU remap FROM_DEVICE (32-bit device, buffer above 4 GiB)';
  if (dmaMappingError(dev, dma) !== 0) return { step, device: dev.name, bytes: len, verified: false, detail: 'map failed' };
  const data = pattern(m, len);
  dev.dmaWrite(dma, data);
  dmaUnmapPhys(dev, dma, len, DMA_FROM_DEVICE, 0);
  const ok = dma + len <= SZ_4G && m.swiotlb.stats().bounces === bouncesBefore && equal(m.memory.read(phys, len), data);
  m.memory.freePages(phys, 2);
  return { step, device: dev.name, bytes: len, verified: ok, detail: `phys=0x${phys.toString(16)} mapped at IOVA 0x${dma.toString(16)}, no swiotlb bounce` };
}

/**
 * Provoke an IOMMU fault: the device writes into a DMA_TO_DEVICE (read-only) mapping; the write is
 * refused and moves no byte. Then the unmap: strict faults at once, lazy still reaches the page
 * through the stale IOTLB entry until the flush queue is flushed.
 */
function iommuFaultOnPurpose(m: Machine, iommu: Iommu, dev: Device): StepResult {
  const phys = m.memory.allocPages(0);
  const data = pattern(m, PAGE_SIZE);
  m.memory.write(phys, data);
  const dma = dmaMapPhys(dev, phys, PAGE_SIZE, DMA_TO_DEVICE, 0);
  if (dmaMappingError(dev, dma) !== 0) return { step: 'IOMMU fault on purpose', device: dev.name, bytes: PAGE_SIZE, verified: false, detail: 'map failed' };
  const faultsBefore = iommu.faults.length;
  const refused = !tryDma(() => {
    dev.dmaWrite(dma, new Uint8Array(16).fill(0xee));
  });
  const untouched = equal(m.memory.read(phys, PAGE_SIZE), data);
  const readOk = tryDma(() => dev.dmaRead(dma, 16));
  dmaUnmapPhys(dev, dma, PAGE_SIZE, DMA_TO_DEVICE, 0);
  const afterUnmap = tryDma(() => dev.dmaRead(dma, 16));
  iommu.flushQueues();
  const afterFlush = tryDma(() => dev.dmaRead(dma, 16));
  m.memory.freePages(phys, 0);
  const lazy = iommu.mode === 'lazy';
  const ok = refused && untouched && readOk && afterUnmap === lazy && !afterFlush && iommu.faults.length === faultsBefore + (lazy ? 2 : 3);
  const fault = iommu.faults[faultsBefore];
  const detail =
    `write to a read-only mapping refused (${fault?.reasonName ?? '?'} at IOVA 0x${dma.toString(16)}), no byte moved; ` +
    (lazy ? 'after the lazy unmap the device still read the page via a stale IOTLB entry, faulted after the flush' : 'after the strict unmap the device faulted at once');
  return { step: 'IOMMU fault on purpose', device: dev.name, bytes: PAGE_SIZE, verified: ok, detail };
}

/** Run one device access; false when the IOMMU refused it (DmaFaultError). */
function tryDma(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch (err) {
    if (err instanceof DmaFaultError) return false;
    throw err;
  }
}

/** CPU fills a buffer, maps it TO_DEVICE, the device reads it through its DMA port. */
function streamToDevice(m: Machine, dev: Device, viaIommu: boolean): StepResult {
  const len = 3 * PAGE_SIZE + 100;
  const phys = m.memory.allocPages(2);
  const data = pattern(m, len);
  m.memory.write(phys + 100, data);
  const dma = dmaMapPhys(dev, phys + 100, len, DMA_TO_DEVICE, 0);
  const ok = dmaMappingError(dev, dma) === 0 && equal(dev.dmaRead(dma, len), data);
  dmaUnmapPhys(dev, dma, len, DMA_TO_DEVICE, 0);
  m.memory.freePages(phys, 2);
  const how = viaIommu ? `IOVA 0x${dma.toString(16)} -> phys 0x${(phys + 100).toString(16)}` : `dma=0x${dma.toString(16)} = phys, no bounce`;
  return { step: `stream TO_DEVICE (${viaIommu ? 'dma-iommu' : 'dma-direct'})`, device: dev.name, bytes: len, verified: ok, detail: how };
}

/** A 32-bit device writes into a buffer above 4 GiB: swiotlb bounces, the CPU sees it at unmap. */
function bounceFromDevice(m: Machine, dev: Device, phys: number): StepResult {
  const len = 4 * PAGE_SIZE;
  m.memory.fill(phys, len, 0);
  const dma = dmaMapPhys(dev, phys, len, DMA_FROM_DEVICE, 0);
  if (dmaMappingError(dev, dma) !== 0) return { step: 'swiotlb FROM_DEVICE', device: dev.name, bytes: len, verified: false, detail: 'map failed' };
  const data = pattern(m, len);
  dev.dmaWrite(dma, data);
  const beforeUnmap = m.memory.read(phys, len);
  dmaUnmapPhys(dev, dma, len, DMA_FROM_DEVICE, 0);
  const ok = dma < SZ_4G && !equal(beforeUnmap, data) && equal(m.memory.read(phys, len), data);
  m.memory.freePages(phys, 2);
  return {
    step: 'swiotlb bounce FROM_DEVICE (32-bit device, buffer above 4 GiB)',
    device: dev.name,
    bytes: len,
    verified: ok,
    detail: `phys=0x${phys.toString(16)} bounced to dma=0x${dma.toString(16)}; CPU sees the data only after unmap`,
  };
}

/** BIDIRECTIONAL: device reads what the CPU wrote, writes back, sync_for_cpu shows it. */
function bidirectionalRoundTrip(m: Machine, dev: Device, phys: number): StepResult {
  const len = PAGE_SIZE;
  const first = pattern(m, len);
  m.memory.write(phys, first);
  const dma = dmaMapPhys(dev, phys, len, DMA_BIDIRECTIONAL, 0);
  if (dmaMappingError(dev, dma) !== 0) return { step: 'swiotlb BIDIRECTIONAL', device: dev.name, bytes: len, verified: false, detail: 'map failed' };
  const seen = dev.dmaRead(dma, len);
  const reply = seen.map((b) => b ^ 0xff);
  dev.dmaWrite(dma, reply);
  dmaSyncSingleForCpu(dev, dma, len, DMA_BIDIRECTIONAL);
  const cpuSees = m.memory.read(phys, len);
  const second = pattern(m, len);
  m.memory.write(phys, second);
  dmaSyncSingleForDevice(dev, dma, len, DMA_BIDIRECTIONAL);
  const deviceSees = dev.dmaRead(dma, len);
  dmaUnmapPhys(dev, dma, len, DMA_BIDIRECTIONAL, 0);
  const ok = equal(seen, first) && equal(cpuSees, reply) && equal(deviceSees, second);
  m.memory.freePages(phys, 0);
  const step = m.swiotlb.isSwiotlbBuffer(dma) ? 'swiotlb BIDIRECTIONAL with syncs' : 'BIDIRECTIONAL with syncs (no bounce)';
  return { step, device: dev.name, bytes: 3 * len, verified: ok, detail: 'map, device r/w, sync_for_cpu, CPU write, sync_for_device, device read' };
}

/** Coherent memory: no syncs, both sides see each other's writes at once. */
function coherentBuffer(m: Machine, dev: Device): StepResult {
  const len = 2 * PAGE_SIZE;
  const buf = dmaAllocCoherent(dev, len);
  if (buf === null) return { step: 'coherent buffer', device: dev.name, bytes: len, verified: false, detail: 'allocation failed' };
  const data = pattern(m, len);
  dev.dmaWrite(buf.dmaAddr, data);
  const ok = equal(m.memory.read(buf.phys, len), data) && buf.dmaAddr + len - 1 <= dev.coherentDmaMask;
  dmaFreeCoherent(dev, len, buf.cpuAddr, buf.dmaAddr);
  return { step: 'coherent buffer (dma_alloc_coherent)', device: dev.name, bytes: len, verified: ok, detail: `dma=0x${buf.dmaAddr.toString(16)}` };
}

/** The two-step API: try_alloc fails on a direct device, so the driver falls back per page. */
function iovaApiWithFallback(m: Machine, dev: Device): StepResult {
  const pages = 8;
  const phys = m.memory.allocPages(3);
  const data = pattern(m, pages * PAGE_SIZE);
  m.memory.write(phys, data);
  const state = new DmaIovaState();
  let ok = true;
  let detail: string;
  if (dmaIovaTryAlloc(dev, state, phys, pages * PAGE_SIZE)) {
    for (let i = 0; i < pages; i++) ok &&= dmaIovaLink(dev, state, phys + i * PAGE_SIZE, i * PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE, 0) === 0;
    ok &&= dmaIovaSync(dev, state, 0, pages * PAGE_SIZE) === 0;
    ok &&= equal(dev.dmaRead(state.addr, pages * PAGE_SIZE), data);
    dmaIovaDestroy(dev, state, pages * PAGE_SIZE, DMA_TO_DEVICE, 0);
    detail = `one IOVA range at 0x${state.addr.toString(16)}, ${pages} links, one sync`;
  } else {
    ok &&= !dmaUseIova(state);
    for (let i = 0; i < pages; i++) {
      const dma = dmaMapPhys(dev, phys + i * PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE, 0);
      ok &&= dmaMappingError(dev, dma) === 0 && equal(dev.dmaRead(dma, PAGE_SIZE), data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
      dmaUnmapPhys(dev, dma, PAGE_SIZE, DMA_TO_DEVICE, 0);
    }
    detail = `dma_iova_try_alloc returned false (no IOMMU): fell back to ${pages} x dma_map_phys`;
  }
  m.memory.freePages(phys, 3);
  return { step: 'two-step IOVA API (or its fallback)', device: dev.name, bytes: pages * PAGE_SIZE, verified: ok, detail };
}

export const directStack: StackDef<DirectStackResult> = {
  name: 'direct',
  summary: 'dma-direct streaming DMA, swiotlb bouncing, a coherent buffer and the two-step API fallback (or the same behind an IOMMU).',
  help: `  direct        A device without an IOMMU: streaming DMA, swiotlb bouncing for a 32-bit
                device above 4 GiB, a coherent buffer, and the two-step IOVA API's fallback;
                with --iommu strict|lazy the same behind an IOMMU plus one fault on purpose.
                (default stack; a fixed workload)
`,
  defaultIommu: 'off',
  iommuModes: ['strict', 'lazy', 'off'],
  mappings: ['iova'],
  comparesMappings: false,
  verifyOption: false,
  size: { label: 'workload', unit: 'run', default: 1, min: 1, max: 1 },
  options: [],
  validate(req) {
    checkRequest(directStack, req);
  },
  run(req) {
    const c = checkRequest(directStack, req);
    const machine = createMachine({ ramBytes: 8 * SZ_1G, seed: c.seed, dmaDebug: 'warn' });
    req.onMachine?.(machine, 'host');
    return runDirectStack({ machine, iommu: c.iommu, ...(req.onProgress !== undefined ? { onProgress: req.onProgress } : {}) });
  },
  format: formatDirect,
};

/** The table the CLI prints for a direct-stack result. */
export function formatDirect(r: DirectStackResult): string {
  const rows = r.steps.map((s) => [s.verified ? 'ok' : 'FAIL', s.device, s.step, String(s.bytes), s.detail]);
  const sw = r.swiotlb;
  return [
    `dmakit demo: stack "${r.stack}"`,
    '',
    table(['', 'device', 'step', 'bytes', 'detail'], rows),
    '',
    `swiotlb: ${sw.bounces} bounces, ${sw.bytesCopied} bytes copied, ${sw.usedSlots}/${sw.totalSlots} slots in use, high-water ${sw.highWaterSlots} slots`,
    ...(r.iommu === null
      ? []
      : [
          `iommu (${r.iommu.mode}): ${r.iommu.stats.iovaAllocs} IOVA allocs (${r.iommu.stats.rcacheHits} rcache hits), ${r.iommu.stats.pteWrites} PTE writes, ` +
            `${r.iommu.stats.iotlbSyncs} IOTLB syncs, invalidations ${r.iommu.stats.iotlbInvalidationsRange} range / ${r.iommu.stats.iotlbInvalidationsFull} full, ` +
            `${r.iommu.stats.fqFlushes} flush-queue flushes, IOTLB ${r.iommu.stats.iotlbHits} hits / ${r.iommu.stats.iotlbMisses} misses, ` +
            `${r.iommu.stats.staleIotlbAccesses} stale-IOTLB accesses, ${r.iommu.faults} faults`,
        ]),
    `dma-debug reports: ${r.dmaDebugReports}`,
    `verified: ${r.verified ? 'yes' : 'NO'} (${r.verifiedBytes} bytes checked)`,
    '',
  ].join('\n');
}

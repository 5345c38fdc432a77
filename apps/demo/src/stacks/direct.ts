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
}

export interface DirectStackOptions {
  readonly seed?: number;
  readonly machine?: Machine;
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

  steps.push(streamToDevice(m, nic));
  steps.push(bounceFromDevice(m, legacy, allocAbove(m, 2, SZ_4G)));
  steps.push(bidirectionalRoundTrip(m, legacy, allocAbove(m, 0, SZ_4G)));
  steps.push(coherentBuffer(m, legacy));
  steps.push(iovaApiWithFallback(m, nic));

  return {
    stack: 'direct',
    verified: steps.every((s) => s.verified),
    verifiedBytes: steps.reduce((t, s) => t + (s.verified ? s.bytes : 0), 0),
    steps,
    swiotlb: m.swiotlb.stats(),
    dmaDebugReports: m.dmaDebug.reports.length,
    simulatedNs: m.clock.now(),
  };
}

/** CPU fills a buffer, maps it TO_DEVICE, the device reads it through its DMA port. */
function streamToDevice(m: Machine, dev: Device): StepResult {
  const len = 3 * PAGE_SIZE + 100;
  const phys = m.memory.allocPages(2);
  const data = pattern(m, len);
  m.memory.write(phys + 100, data);
  const dma = dmaMapPhys(dev, phys + 100, len, DMA_TO_DEVICE, 0);
  const ok = dmaMappingError(dev, dma) === 0 && equal(dev.dmaRead(dma, len), data);
  dmaUnmapPhys(dev, dma, len, DMA_TO_DEVICE, 0);
  m.memory.freePages(phys, 2);
  return { step: 'stream TO_DEVICE (dma-direct)', device: dev.name, bytes: len, verified: ok, detail: `dma=0x${dma.toString(16)} = phys, no bounce` };
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
  return { step: 'swiotlb BIDIRECTIONAL with syncs', device: dev.name, bytes: 3 * len, verified: ok, detail: 'map, device r/w, sync_for_cpu, CPU write, sync_for_device, device read' };
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

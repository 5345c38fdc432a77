/**
 * The "direct" stack's steps: each one maps a buffer, lets a device read or write it through its
 * DMA port, unmaps, and checks the bytes both sides see (dma-direct, swiotlb, coherent memory,
 * the two-step IOVA API or its fallback, and, behind an IOMMU, a remap and a fault on purpose).
 */
import {
  bytesEqual,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  DmaFaultError,
  DmaIovaState,
  dmaAllocCoherent,
  errnoName,
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
  SZ_4G,
} from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';
import type { Iommu } from '@dmakit/iommu-dma';

export interface StepResult {
  readonly step: string;
  readonly device: string;
  readonly bytes: number;
  readonly verified: boolean;
  readonly detail: string;
}

function pattern(m: Machine, len: number): Uint8Array {
  return m.rng.fill(new Uint8Array(len));
}

/**
 * A step that could not run: an allocation or mapping failed, the step gave back what it held,
 * and the stack stops with `error` (the errno a driver returns for it) as its result's failure.
 */
export class StepFailed extends Error {
  override readonly name = 'StepFailed';
  constructor(
    readonly step: string,
    readonly error: string,
  ) {
    super(`${step}: ${error}`);
  }
}

/** `alloc_pages()` or -ENOMEM. */
function allocPages(m: Machine, order: number, step: string): number {
  const phys = m.memory.allocPages(order);
  if (phys === 0) throw new StepFailed(step, '-ENOMEM (alloc_pages)');
  return phys;
}

/** A mapping, or (after `unwind`) -ENOMEM: what drivers return when dma_mapping_error() says so. */
function mapped(dev: Device, dma: number, step: string, unwind: () => void): number {
  if (dmaMappingError(dev, dma) === 0) return dma;
  unwind();
  throw new StepFailed(step, '-ENOMEM (dma_mapping_error)');
}

/** Pages at or above `floor` (above 4 GiB: out of a 32-bit device's reach); StepFailed (-ENOMEM) when there are none. */
export function allocAbove(m: Machine, order: number, floor: number): number {
  const phys = m.memory.allocPagesAbove(order, floor);
  if (phys === 0) throw new StepFailed(`alloc_pages above 0x${floor.toString(16)}`, '-ENOMEM (alloc_pages)');
  return phys;
}

/** Behind an IOMMU the 32-bit device gets an IOVA below 4 GiB for a buffer above it: no bounce. */
export function remapFromDevice(m: Machine, dev: Device, phys: number): StepResult {
  const len = 4 * PAGE_SIZE;
  m.memory.fill(phys, len, 0);
  const bouncesBefore = m.swiotlb.stats().bounces;
  const step = 'IOMMU remap FROM_DEVICE (32-bit device, buffer above 4 GiB)';
  const dma = mapped(dev, dmaMapPhys(dev, phys, len, DMA_FROM_DEVICE, 0), step, () => {
    m.memory.freePages(phys, 2);
  });
  const data = pattern(m, len);
  dev.dmaWrite(dma, data);
  dmaUnmapPhys(dev, dma, len, DMA_FROM_DEVICE, 0);
  const ok = dma + len <= SZ_4G && m.swiotlb.stats().bounces === bouncesBefore && m.memory.mismatch(phys, data) < 0;
  m.memory.freePages(phys, 2);
  return { step, device: dev.name, bytes: len, verified: ok, detail: `phys=0x${phys.toString(16)} mapped at IOVA 0x${dma.toString(16)}, no swiotlb bounce` };
}

/**
 * Provoke an IOMMU fault: the device writes into a DMA_TO_DEVICE (read-only) mapping; the write is
 * refused and moves no byte. Then the unmap: strict faults at once, lazy still reaches the page
 * through the stale IOTLB entry until the flush queue is flushed.
 */
export function iommuFaultOnPurpose(m: Machine, iommu: Iommu, dev: Device): StepResult {
  const phys = allocPages(m, 0, 'IOMMU fault on purpose');
  const data = pattern(m, PAGE_SIZE);
  m.memory.write(phys, data);
  const dma = mapped(dev, dmaMapPhys(dev, phys, PAGE_SIZE, DMA_TO_DEVICE, 0), 'IOMMU fault on purpose', () => {
    m.memory.freePages(phys, 0);
  });
  const faultsBefore = iommu.faults.length;
  const refused = !tryDma(() => {
    dev.dmaWrite(dma, new Uint8Array(16).fill(0xee));
  });
  const untouched = m.memory.mismatch(phys, data) < 0;
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
export function streamToDevice(m: Machine, dev: Device, viaIommu: boolean): StepResult {
  const len = 3 * PAGE_SIZE + 100;
  const step = `stream TO_DEVICE (${viaIommu ? 'dma-iommu' : 'dma-direct'})`;
  const phys = allocPages(m, 2, step);
  const data = pattern(m, len);
  m.memory.write(phys + 100, data);
  const dma = mapped(dev, dmaMapPhys(dev, phys + 100, len, DMA_TO_DEVICE, 0), step, () => {
    m.memory.freePages(phys, 2);
  });
  const ok = bytesEqual(dev.dmaRead(dma, len), data);
  dmaUnmapPhys(dev, dma, len, DMA_TO_DEVICE, 0);
  m.memory.freePages(phys, 2);
  const how = viaIommu ? `IOVA 0x${dma.toString(16)} -> phys 0x${(phys + 100).toString(16)}` : `dma=0x${dma.toString(16)} = phys, no bounce`;
  return { step, device: dev.name, bytes: len, verified: ok, detail: how };
}

/** A 32-bit device writes into a buffer above 4 GiB: swiotlb bounces, the CPU sees it at unmap. */
export function bounceFromDevice(m: Machine, dev: Device, phys: number): StepResult {
  const len = 4 * PAGE_SIZE;
  m.memory.fill(phys, len, 0);
  const dma = mapped(dev, dmaMapPhys(dev, phys, len, DMA_FROM_DEVICE, 0), 'swiotlb bounce FROM_DEVICE', () => {
    m.memory.freePages(phys, 2);
  });
  const data = pattern(m, len);
  dev.dmaWrite(dma, data);
  const seenBeforeUnmap = m.memory.mismatch(phys, data) < 0;
  dmaUnmapPhys(dev, dma, len, DMA_FROM_DEVICE, 0);
  const ok = dma < SZ_4G && !seenBeforeUnmap && m.memory.mismatch(phys, data) < 0;
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
export function bidirectionalRoundTrip(m: Machine, dev: Device, phys: number): StepResult {
  const len = PAGE_SIZE;
  const first = pattern(m, len);
  m.memory.write(phys, first);
  const dma = mapped(dev, dmaMapPhys(dev, phys, len, DMA_BIDIRECTIONAL, 0), 'BIDIRECTIONAL with syncs', () => {
    m.memory.freePages(phys, 0);
  });
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
  const ok = bytesEqual(seen, first) && bytesEqual(cpuSees, reply) && bytesEqual(deviceSees, second);
  m.memory.freePages(phys, 0);
  const step = m.swiotlb.isSwiotlbBuffer(dma) ? 'swiotlb BIDIRECTIONAL with syncs' : 'BIDIRECTIONAL with syncs (no bounce)';
  return { step, device: dev.name, bytes: 3 * len, verified: ok, detail: 'map, device r/w, sync_for_cpu, CPU write, sync_for_device, device read' };
}

/** Coherent memory: no syncs, both sides see each other's writes at once. */
export function coherentBuffer(m: Machine, dev: Device): StepResult {
  const len = 2 * PAGE_SIZE;
  const buf = dmaAllocCoherent(dev, len);
  if (buf === null) throw new StepFailed('coherent buffer (dma_alloc_coherent)', '-ENOMEM (dma_alloc_coherent)');
  const data = pattern(m, len);
  dev.dmaWrite(buf.dmaAddr, data);
  const ok = m.memory.mismatch(buf.phys, data) < 0 && buf.dmaAddr + len - 1 <= dev.coherentDmaMask;
  dmaFreeCoherent(dev, len, buf.cpuAddr, buf.dmaAddr);
  return { step: 'coherent buffer (dma_alloc_coherent)', device: dev.name, bytes: len, verified: ok, detail: `dma=0x${buf.dmaAddr.toString(16)}` };
}

/** The two-step API: try_alloc fails on a direct device, so the driver falls back per page. */
export function iovaApiWithFallback(m: Machine, dev: Device): StepResult {
  const pages = 8;
  const step = 'two-step IOVA API (or its fallback)';
  const phys = allocPages(m, 3, step);
  const data = pattern(m, pages * PAGE_SIZE);
  m.memory.write(phys, data);
  const state = new DmaIovaState();
  let ok = true;
  let detail: string;
  if (dmaIovaTryAlloc(dev, state, phys, pages * PAGE_SIZE)) {
    // kernel: a failed dma_iova_link() or dma_iova_sync() is unwound with dma_iova_destroy() over
    // what was linked (the blk_rq_dma_map_iter_start error path).
    let linked = 0;
    let err = 0;
    for (; linked < pages && err === 0; linked++) err = dmaIovaLink(dev, state, phys + linked * PAGE_SIZE, linked * PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE, 0);
    if (err !== 0) linked--;
    if (err === 0) err = dmaIovaSync(dev, state, 0, pages * PAGE_SIZE);
    if (err !== 0) {
      dmaIovaDestroy(dev, state, linked * PAGE_SIZE, DMA_TO_DEVICE, 0);
      m.memory.freePages(phys, 3);
      throw new StepFailed(step, `${errnoName(err)} (dma_iova_link/sync)`);
    }
    ok &&= bytesEqual(dev.dmaRead(state.addr, pages * PAGE_SIZE), data);
    dmaIovaDestroy(dev, state, pages * PAGE_SIZE, DMA_TO_DEVICE, 0);
    detail = `one IOVA range at 0x${state.addr.toString(16)}, ${pages} links, one sync`;
  } else {
    ok &&= !dmaUseIova(state);
    for (let i = 0; i < pages; i++) {
      const dma = mapped(dev, dmaMapPhys(dev, phys + i * PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE, 0), step, () => {
    m.memory.freePages(phys, 3);
  });
      ok &&= bytesEqual(dev.dmaRead(dma, PAGE_SIZE), data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
      dmaUnmapPhys(dev, dma, PAGE_SIZE, DMA_TO_DEVICE, 0);
    }
    detail = `dma_iova_try_alloc returned false (no IOMMU): fell back to ${pages} x dma_map_phys`;
  }
  m.memory.freePages(phys, 3);
  return { step, device: dev.name, bytes: pages * PAGE_SIZE, verified: ok, detail };
}

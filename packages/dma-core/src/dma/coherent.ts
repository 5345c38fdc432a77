// kernel: kernel/dma/mapping.c (dma_alloc_attrs, dma_free_attrs, dma_alloc_pages, ...),
// kernel/dma/direct.c (dma_direct_alloc, dma_direct_alloc_pages)
import type { DmaCoherentBuffer } from '../contracts/dmaMapOps.js';
import { forceDmaUnencrypted, setMemoryDecrypted, setMemoryEncrypted } from '../coco/setMemory.js';
import type { Device } from '../device/device.js';
import { traceDmaAlloc, traceDmaFree } from '../trace/dmaEvents.js';
import { DMA_BIDIRECTIONAL, validDmaDirection } from '../units/direction.js';
import type { DmaDataDirection } from '../units/direction.js';
import { DMA_MAPPING_ERROR } from '../units/dmaAddr.js';
import { PAGE_SIZE, getOrder, pageAlign } from '../units/page.js';
import { physToDma } from './direct.js';

interface Allocation {
  readonly buf: DmaCoherentBuffer;
  readonly order: number;
  /** 'coherent' (dma_alloc_attrs) or 'pages' (dma_alloc_pages / noncoherent). */
  readonly kind: 'coherent' | 'pages';
  readonly dir: DmaDataDirection;
  /**
   * CC guest: the pages were decrypted at allocation and are re-encrypted on free. The kernel asks
   * force_dma_unencrypted(dev) again at free; the model remembers, so a device accepted as a TDI
   * in between still gets its shared pages back to private.
   */
  readonly decrypted: boolean;
}

// Model: live allocations per device, so a free with a wrong address or size (a dma-debug report)
// cannot release pages the driver does not own. The kernel would free whatever it is handed.
const live = new WeakMap<Device, Map<number, Allocation>>();

function liveOf(dev: Device): Map<number, Allocation> {
  let m = live.get(dev);
  if (m === undefined) {
    m = new Map();
    live.set(dev, m);
  }
  return m;
}

function validSize(size: unknown): size is number {
  return typeof size === 'number' && Number.isSafeInteger(size) && size > 0;
}

/**
 * dma-direct page allocation below `limit` (inclusive, a DMA address), zeroed. Null when the
 * allocator cannot satisfy the mask (`dma_coherent_ok` failed and no lower zone helped).
 */
function directAllocPages(dev: Device, size: number, limit: number): { phys: number; order: number; decrypted: boolean } | null {
  const pa = dev.host.memory;
  const order = getOrder(size);
  const cc = dev.host.cc;
  // The CC address bit is not part of the zone limit (the kernel's dma_coherent_ok() checks
  // phys_to_dma_unencrypted); the device's mask still has to cover it (dma_capable at map time).
  const physLimit = (cc == null ? limit : cc.stripBit(limit)) - dev.dmaRangeOffset;
  const phys = pa.allocPagesBelow(order, physLimit);
  if (phys === 0) return null;
  const bytes = PAGE_SIZE * 2 ** order;
  if (phys + dev.dmaRangeOffset + bytes - 1 > limit) {
    pa.freePages(phys, order);
    return null;
  }
  // kernel/dma/direct.c dma_direct_alloc(): force_dma_unencrypted -> dma_set_decrypted(); on
  // failure the pages are leaked ("out_leak_pages"): their state is unknown. Then memset(0).
  const decrypted = forceDmaUnencrypted(dev);
  if (decrypted && setMemoryDecrypted(dev.host, phys, bytes / PAGE_SIZE) !== 0) return null;
  dev.host.memory.fill(phys, bytes, 0);
  return { phys, order, decrypted };
}

/**
 * dma_direct_free(): re-encrypt decrypted pages before they go back to the allocator; if that
 * fails the pages are leaked rather than handed out shared (kernel: `dma_set_encrypted()` failure
 * returns without freeing).
 */
function directFreePages(dev: Device, a: Allocation): void {
  if (a.decrypted && setMemoryEncrypted(dev.host, a.buf.phys, 2 ** a.order) !== 0) return;
  dev.host.memory.freePages(a.buf.phys, a.order);
}

/**
 * `dma_alloc_attrs(dev, size, &dma_handle, gfp, attrs)`: zeroed, physically contiguous memory both
 * the CPU and the device see at once (dma-direct: pages below the coherent mask; iommu: ops.alloc).
 * Null on failure. `gfp` is accepted for the kernel's signature; zone flags are ignored.
 */
export function dmaAllocAttrs(dev: Device, size: number, gfp = 0, attrs = 0): DmaCoherentBuffer | null {
  return allocAttrs(dev, size, gfp, attrs, 'dma_alloc_attrs');
}

function allocAttrs(dev: Device, size: number, _gfp: number, attrs: number, call: string): DmaCoherentBuffer | null {
  const host = dev.host;
  if (!validSize(size)) {
    host.dmaDebug.report('invalid-argument', dev, `dma_alloc_attrs: invalid size ${String(size)}`);
    return null;
  }
  if (dev.coherentDmaMaskBits === 0) host.dmaDebug.report('no-dma-mask', dev, 'dma_alloc_attrs: coherent_dma_mask is 0');
  let buf: DmaCoherentBuffer | null = null;
  let order = 0;
  let decrypted = false;
  const ops = dev.dmaOps;
  if (ops === null) {
    const limit = dev.coherentDmaMaskBits === 0 ? 0 : minNotZeroLimit(dev.coherentDmaMask, dev.busDmaLimit);
    const got = limit === 0 ? null : directAllocPages(dev, pageAlign(size), limit);
    if (got !== null) {
      order = got.order;
      decrypted = got.decrypted;
      buf = { cpuAddr: got.phys, phys: got.phys, dmaAddr: physToDma(dev, got.phys), size };
    }
  } else {
    buf = ops.alloc(dev, size, attrs);
  }
  if (host.trace.enabled) traceDmaAlloc(host.trace, dev.name, buf?.cpuAddr ?? 0, buf?.dmaAddr ?? 0, size, DMA_BIDIRECTIONAL, attrs);
  if (buf === null) return null;
  liveOf(dev).set(buf.cpuAddr, { buf, order, kind: 'coherent', dir: DMA_BIDIRECTIONAL, decrypted });
  const dbg = host.dmaDebug;
  if (dbg.enabled) dbg.allocCoherent(dev, size, buf.dmaAddr, buf.cpuAddr, attrs, call);
  return buf;
}

function minNotZeroLimit(a: number, b: number): number {
  if (a === 0) return b;
  if (b === 0) return a;
  return Math.min(a, b);
}

/** `dma_alloc_coherent(dev, size, &dma_handle, gfp)`. */
export function dmaAllocCoherent(dev: Device, size: number, gfp = 0): DmaCoherentBuffer | null {
  return allocAttrs(dev, size, gfp, 0, 'dma_alloc_coherent');
}

/** `dma_free_attrs(dev, size, cpu_addr, dma_handle, attrs)`: a 0 cpu address is a no-op. */
export function dmaFreeAttrs(dev: Device, size: number, cpuAddr: number, dmaAddr: number, attrs = 0): void {
  const host = dev.host;
  if (host.trace.enabled) traceDmaFree(host.trace, dev.name, cpuAddr, dmaAddr, size, DMA_BIDIRECTIONAL, attrs);
  if (cpuAddr === 0) return;
  const dbg = host.dmaDebug;
  if (dbg.enabled) dbg.freeCoherent(dev, size, cpuAddr, dmaAddr);
  const m = live.get(dev);
  const a = m?.get(cpuAddr);
  if (a === undefined || a.kind !== 'coherent' || a.buf.dmaAddr !== dmaAddr) return; // dma-debug reported it
  m?.delete(cpuAddr);
  const ops = dev.dmaOps;
  if (ops === null) directFreePages(dev, a);
  else ops.free(dev, a.buf, attrs);
}

/** `dma_free_coherent(dev, size, cpu_addr, dma_handle)`. */
export function dmaFreeCoherent(dev: Device, size: number, cpuAddr: number, dmaAddr: number): void {
  dmaFreeAttrs(dev, size, cpuAddr, dmaAddr, 0);
}

/**
 * `dma_alloc_pages(dev, size, &dma_handle, dir, gfp)`: pages owned by the device in direction
 * `dir`; the driver must sync like a streaming mapping (dma-debug type "noncoherent").
 */
export function dmaAllocPages(dev: Device, size: number, dir: DmaDataDirection, gfp = 0): DmaCoherentBuffer | null {
  return allocPages(dev, size, dir, gfp, 'dma_alloc_pages');
}

function allocPages(dev: Device, size: number, dir: DmaDataDirection, _gfp: number, call: string): DmaCoherentBuffer | null {
  const host = dev.host;
  if (!validDmaDirection(dir)) {
    host.dmaDebug.report('invalid-direction', dev, `dma_alloc_pages: invalid DMA direction ${String(dir)}`);
    return null;
  }
  if (!validSize(size)) {
    host.dmaDebug.report('invalid-argument', dev, `dma_alloc_pages: invalid size ${String(size)}`);
    return null;
  }
  if (dev.coherentDmaMaskBits === 0) {
    host.dmaDebug.report('no-dma-mask', dev, 'dma_alloc_pages: coherent_dma_mask is 0');
    return null;
  }
  const len = pageAlign(size);
  let buf: DmaCoherentBuffer | null = null;
  let order = 0;
  let decrypted = false;
  const ops = dev.dmaOps;
  if (ops === null) {
    const got = directAllocPages(dev, len, minNotZeroLimit(dev.coherentDmaMask, dev.busDmaLimit));
    if (got !== null) {
      order = got.order;
      decrypted = got.decrypted;
      buf = { cpuAddr: got.phys, phys: got.phys, dmaAddr: physToDma(dev, got.phys), size: len };
    }
  } else {
    // kernel: dma_common_alloc_pages: any pages, then map them through the IOMMU
    order = getOrder(len);
    const phys = host.memory.allocPages(order);
    if (phys !== 0) {
      host.memory.fill(phys, PAGE_SIZE * 2 ** order, 0);
      const dma = ops.mapPhys(dev, phys, len, dir, 0);
      if (dma === DMA_MAPPING_ERROR) host.memory.freePages(phys, order);
      else buf = { cpuAddr: phys, phys, dmaAddr: dma, size: len };
    }
  }
  if (host.trace.enabled) traceDmaAlloc(host.trace, dev.name, buf?.cpuAddr ?? 0, buf?.dmaAddr ?? 0, len, dir, 0, 'dma_alloc_pages');
  if (buf === null) return null;
  liveOf(dev).set(buf.cpuAddr, { buf, order, kind: 'pages', dir, decrypted });
  const dbg = host.dmaDebug;
  if (dbg.enabled) dbg.allocPages(dev, buf.phys, len, dir, buf.dmaAddr, call);
  return buf;
}

/** `dma_free_pages(dev, size, page, dma_handle, dir)`. */
export function dmaFreePages(dev: Device, size: number, phys: number, dmaAddr: number, dir: DmaDataDirection): void {
  const host = dev.host;
  const len = validSize(size) ? pageAlign(size) : size;
  if (host.trace.enabled) traceDmaFree(host.trace, dev.name, phys, dmaAddr, len, dir, 0, 'dma_free_pages');
  const dbg = host.dmaDebug;
  if (dbg.enabled) dbg.freePages(dev, phys, len, dir, dmaAddr);
  const m = live.get(dev);
  const a = m?.get(phys);
  if (a === undefined || a.kind !== 'pages' || a.buf.dmaAddr !== dmaAddr) return; // dma-debug reported it
  m?.delete(phys);
  const ops = dev.dmaOps;
  if (ops !== null) {
    ops.unmapPhys(dev, a.buf.dmaAddr, a.buf.size, a.dir, 0);
    dev.host.memory.freePages(a.buf.phys, a.order);
  } else {
    directFreePages(dev, a);
  }
}

/** `dma_alloc_noncoherent(dev, size, &dma_handle, dir, gfp)`: the CPU address of dma_alloc_pages. */
export function dmaAllocNoncoherent(dev: Device, size: number, dir: DmaDataDirection, gfp = 0): DmaCoherentBuffer | null {
  return allocPages(dev, size, dir, gfp, 'dma_alloc_noncoherent');
}

/** `dma_free_noncoherent(dev, size, vaddr, dma_handle, dir)`. */
export function dmaFreeNoncoherent(dev: Device, size: number, cpuAddr: number, dmaAddr: number, dir: DmaDataDirection): void {
  dmaFreePages(dev, size, cpuAddr, dmaAddr, dir);
}

/** `dma_coherent_ok(dev, phys, size)`: below min_not_zero(coherent mask, bus limit). */
export function dmaCoherentOk(dev: Device, phys: number, size: number): boolean {
  const limit = minNotZeroLimit(dev.coherentDmaMask, dev.busDmaLimit);
  return limit !== 0 && physToDma(dev, phys) + size - 1 <= limit;
}

// kernel: include/linux/dma-mapping.h (dma_iova_* and the !CONFIG_IOMMU_DMA stubs),
// drivers/iommu/dma-iommu.c (dma_iova_try_alloc .. dma_iova_free)
// The two-step IOVA API front end: validate, dispatch to the DmaMapOps contract, then tell
// dma-debug (the kernel's dma-debug does not track this API; the model does).
import type { Device } from '../device/device.js';
import { validDmaDirection } from '../units/direction.js';
import type { DmaDataDirection } from '../units/direction.js';
import { Errno } from '../units/errno.js';
import { DmaIovaState, dmaUseIova } from './iovaState.js';

/** A module-local alias: a shorter call in the hot paths' bytecode than `Number.isSafeInteger`. */
const isSafeInteger = Number.isSafeInteger;

function isSize(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x > 0;
}

function isOffset(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function isState(x: unknown): x is DmaIovaState {
  return x instanceof DmaIovaState;
}

/**
 * `dma_iova_try_alloc(dev, state, phys, size)`: zeroes `state`, then tries to reserve one IOVA
 * range of `size` bytes (only the granule offset of `phys` matters). False on a dma-direct device,
 * so the caller falls back to dma_map_phys per range.
 */
export function dmaIovaTryAlloc(dev: Device, state: DmaIovaState, phys: number, size: number): boolean {
  const dbg = dev.host.dmaDebug;
  if (!isState(state)) {
    dbg.report('invalid-argument', dev, 'dma_iova_try_alloc: state is not a DmaIovaState');
    return false;
  }
  state.reset();
  const ok = iovaTryAlloc(dev, state, phys, size);
  if (!ok) state.reset();
  // Always told, so it can flag a state reused while it still held an allocation.
  if (dbg.enabled) dbg.iovaTryAlloc(dev, state);
  return ok;
}

function iovaTryAlloc(dev: Device, state: DmaIovaState, phys: number, size: number): boolean {
  const ops = dev.dmaOps;
  if (ops === null) return false;
  const dbg = dev.host.dmaDebug;
  // kernel: WARN_ON_ONCE(!size) and WARN_ON_ONCE(size & DMA_IOVA_USE_SWIOTLB)
  if (!isSize(size)) {
    dbg.report('invalid-argument', dev, `dma_iova_try_alloc: invalid size ${String(size)}`);
    return false;
  }
  if (!isOffset(phys)) {
    dbg.report('invalid-argument', dev, `dma_iova_try_alloc: invalid phys ${String(phys)}`);
    return false;
  }
  return ops.iovaTryAlloc(dev, state, phys, size);
}

/** Common checks for calls that need an allocated state; returns 0 or the errno to return. */
function checkState(dev: Device, state: DmaIovaState, fn: string): number {
  const dbg = dev.host.dmaDebug;
  if (!isState(state)) {
    dbg.report('invalid-argument', dev, `${fn}: state is not a DmaIovaState`);
    return -Errno.EINVAL;
  }
  if (dev.dmaOps === null) {
    // The !CONFIG_IOMMU_DMA stubs: link/sync return -EOPNOTSUPP, the rest do nothing.
    dbg.report('iova-not-allocated', dev, `${fn}: the device uses dma-direct; dma_iova_try_alloc never succeeds`);
    return -Errno.EOPNOTSUPP;
  }
  if (!dmaUseIova(state)) {
    dbg.report('iova-not-allocated', dev, `${fn}: dma_use_iova(state) is false`);
    return -Errno.EINVAL;
  }
  return 0;
}

/** `[offset, offset + size)` must stay inside the allocated IOVA range (the kernel trusts it). */
function checkRange(dev: Device, state: DmaIovaState, offset: unknown, size: unknown, fn: string): boolean {
  if (!isOffset(offset) || !isSize(size)) {
    dev.host.dmaDebug.report('invalid-argument', dev, `${fn}: invalid offset ${String(offset)} or size ${String(size)}`);
    return false;
  }
  if (offset + size > state.size) {
    dev.host.dmaDebug.report('iova-link-out-of-range', dev, `${fn}: [${offset}, +${size}) outside the ${state.size}-byte IOVA range`);
    return false;
  }
  return true;
}

/**
 * `dma_iova_link(dev, state, phys, offset, size, dir, attrs)`: map `[phys, +size)` at
 * `state.addr + offset` without IOTLB sync. 0 or a negative errno.
 */
export function dmaIovaLink(dev: Device, state: DmaIovaState, phys: number, offset: number, size: number, dir: DmaDataDirection, attrs = 0): number {
  const ops = dev.dmaOps;
  const host = dev.host;
  // Hot path (one call per page, dma-debug off): every check of dmaIovaLinkSlow folded into one
  // test. Anything else, a failed check or dma-debug on (it must see each link), takes the slow
  // path, which applies the same rules and reports. Kept small: this function, the ops' iovaLink
  // and the page-table store must fit V8's inlining budget in the caller's loop, or every page
  // pays a real call with the IOVA boxed as a heap number (measured: 19 vs 15 ns per page).
  if (
    ops !== null &&
    !host.dmaDebug.enabled &&
    state instanceof DmaIovaState &&
    state.size !== 0 &&
    (dir === 0 || dir === 1 || dir === 2) &&
    isSafeInteger(offset) &&
    offset >= 0 &&
    isSafeInteger(size) &&
    size > 0 &&
    offset + size <= state.size &&
    isSafeInteger(phys) &&
    phys >= 0 &&
    phys + size <= host.memory.limit &&
    attrs >>> 0 === attrs
  ) {
    return ops.iovaLink(dev, state, phys, offset, size, dir, attrs);
  }
  return dmaIovaLinkSlow(dev, state, phys, offset, size, dir, attrs);
}

function dmaIovaLinkSlow(dev: Device, state: DmaIovaState, phys: number, offset: number, size: number, dir: DmaDataDirection, attrs: number): number {
  const dbg = dev.host.dmaDebug;
  if (!validDmaDirection(dir)) {
    dbg.report('invalid-direction', dev, `dma_iova_link: invalid DMA direction ${String(dir)}`);
    return -Errno.EINVAL;
  }
  const rc = checkState(dev, state, 'dma_iova_link');
  if (rc !== 0) return rc;
  if (!checkRange(dev, state, offset, size, 'dma_iova_link')) return -Errno.EINVAL;
  if (!isOffset(phys) || phys + size > dev.host.memory.limit || typeof attrs !== 'number' || attrs >>> 0 !== attrs) {
    dbg.report('invalid-argument', dev, `dma_iova_link: invalid phys ${String(phys)} or attrs ${String(attrs)}`);
    return -Errno.EINVAL;
  }
  const ops = dev.dmaOps;
  if (ops === null) return -Errno.EOPNOTSUPP;
  const ret = ops.iovaLink(dev, state, phys, offset, size, dir, attrs);
  if (ret === 0 && dbg.enabled) dbg.iovaLink(dev, state, phys, offset, size, dir, attrs);
  return ret;
}

/** `dma_iova_sync(dev, state, offset, size)`: make the new IOMMU entries visible. 0 or -errno. */
export function dmaIovaSync(dev: Device, state: DmaIovaState, offset: number, size: number): number {
  const ops = dev.dmaOps;
  // Hot path (HMM and ODP sync every page they fault in), dma-debug off: the checks below in one
  // test; anything else takes the slow path (same rules, and dma-debug is told).
  if (
    ops !== null &&
    !dev.host.dmaDebug.enabled &&
    state instanceof DmaIovaState &&
    state.size !== 0 &&
    isSafeInteger(offset) &&
    offset >= 0 &&
    isSafeInteger(size) &&
    size > 0 &&
    offset + size <= state.size
  ) {
    return ops.iovaSync(dev, state, offset, size);
  }
  return dmaIovaSyncSlow(dev, state, offset, size);
}

function dmaIovaSyncSlow(dev: Device, state: DmaIovaState, offset: number, size: number): number {
  const rc = checkState(dev, state, 'dma_iova_sync');
  if (rc !== 0) return rc;
  if (!checkRange(dev, state, offset, size, 'dma_iova_sync')) return -Errno.EINVAL;
  const ops = dev.dmaOps;
  if (ops === null) return -Errno.EOPNOTSUPP;
  const ret = ops.iovaSync(dev, state, offset, size);
  const dbg = dev.host.dmaDebug;
  if (dbg.enabled) dbg.iovaSync(dev, state, offset, size);
  return ret;
}

/** `dma_iova_unlink(dev, state, offset, size, dir, attrs)`: unmap (strict), keep the IOVA. */
export function dmaIovaUnlink(dev: Device, state: DmaIovaState, offset: number, size: number, dir: DmaDataDirection, attrs = 0): void {
  const dbg = dev.host.dmaDebug;
  if (!validDmaDirection(dir)) {
    dbg.report('invalid-direction', dev, `dma_iova_unlink: invalid DMA direction ${String(dir)}`);
    return;
  }
  if (checkState(dev, state, 'dma_iova_unlink') !== 0) return;
  if (!checkRange(dev, state, offset, size, 'dma_iova_unlink')) return;
  const ops = dev.dmaOps;
  if (ops === null) return;
  ops.iovaUnlink(dev, state, offset, size, dir, typeof attrs === 'number' ? attrs >>> 0 : 0);
  if (dbg.enabled) dbg.iovaUnlink(dev, state, offset, size, dir);
}

/** `dma_iova_free(dev, state)`: release the IOVA range (all links must be gone). */
export function dmaIovaFree(dev: Device, state: DmaIovaState): void {
  if (checkState(dev, state, 'dma_iova_free') !== 0) return;
  const ops = dev.dmaOps;
  if (ops === null) return;
  const dbg = dev.host.dmaDebug;
  // dma-debug first: it must see the links still recorded against this state.
  if (dbg.enabled) dbg.iovaFree(dev, state);
  ops.iovaFree(dev, state);
}

/**
 * `dma_iova_destroy(dev, state, mapped_len, dir, attrs)`: unlink `[0, mappedLen)` and free the
 * IOVA in one go; `mappedLen` 0 (first link failed) just frees.
 */
export function dmaIovaDestroy(dev: Device, state: DmaIovaState, mappedLen: number, dir: DmaDataDirection, attrs = 0): void {
  const dbg = dev.host.dmaDebug;
  if (!validDmaDirection(dir)) {
    dbg.report('invalid-direction', dev, `dma_iova_destroy: invalid DMA direction ${String(dir)}`);
    return;
  }
  if (checkState(dev, state, 'dma_iova_destroy') !== 0) return;
  if (mappedLen === 0) {
    dmaIovaFree(dev, state);
    return;
  }
  if (!checkRange(dev, state, 0, mappedLen, 'dma_iova_destroy')) return;
  const ops = dev.dmaOps;
  if (ops === null) return;
  if (dbg.enabled) dbg.iovaDestroy(dev, state, mappedLen, dir);
  ops.iovaDestroy(dev, state, mappedLen, dir, typeof attrs === 'number' ? attrs >>> 0 : 0);
}

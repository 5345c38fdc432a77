// kernel: kernel/dma/mapping.c, include/linux/dma-mapping.h
// The streaming DMA API: validate, dispatch (dma-direct when dev.dmaOps is null, else the
// DmaMapOps contract), trace, then tell dma-debug, in the kernel's order.
import type { Device } from '../device/device.js';
import { traceDmaMapPhys, traceDmaMapSg, traceDmaMapSgErr, traceDmaSyncSg, traceDmaSyncSingle, traceDmaUnmapPhys, traceDmaUnmapSg } from '../trace/dmaEvents.js';
import { DMA_ATTR_MMIO, DMA_ATTR_REQUIRE_COHERENT } from '../units/attrs.js';
import { validDmaDirection } from '../units/direction.js';
import type { DmaDataDirection } from '../units/direction.js';
import { DMA_MAPPING_ERROR, hex } from '../units/dmaAddr.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import {
  dmaDirectMapPhys,
  dmaDirectMapSg,
  dmaDirectNeedSync,
  dmaDirectSyncSgForCpu,
  dmaDirectSyncSgForDevice,
  dmaDirectSyncSingleForCpu,
  dmaDirectSyncSingleForDevice,
  dmaDirectUnmapPhys,
  dmaDirectUnmapSg,
} from './direct.js';
import { dmaWarn } from './log.js';
import { SgTable } from './scatterlist.js';

// Module-local copies for the hot paths: V8 folds a module's own constants into optimized code, but
// re-reads and TDZ-checks an imported binding at every use. (A local name for the builtin also
// keeps the hot functions' bytecode small enough to be inlined whole into their callers.)
const ATTR_REQUIRE_COHERENT = DMA_ATTR_REQUIRE_COHERENT;
const isSafeInteger = Number.isSafeInteger;

// ---- argument checks (the kernel BUG()s / WARNs; the model reports and fails cleanly) --------

function badDir(dev: Device, dir: unknown, fn: string): boolean {
  if (validDmaDirection(dir)) return false;
  dev.host.dmaDebug.report('invalid-direction', dev, `${fn}: invalid DMA direction ${String(dir)} (kernel: BUG)`);
  return true;
}

function invalid(dev: Device, fn: string, what: string): void {
  dev.host.dmaDebug.report('invalid-argument', dev, `${fn}: ${what}`);
}

/** A size the kernel can map: a positive integer without the bit-63 (here: 2^53) overflow. */
function badSize(dev: Device, size: unknown, fn: string): boolean {
  if (typeof size === 'number' && Number.isSafeInteger(size) && size > 0) return false;
  invalid(dev, fn, `invalid size ${String(size)}`);
  return true;
}

function badAttrs(dev: Device, attrs: unknown, fn: string): boolean {
  if (typeof attrs === 'number' && attrs >>> 0 === attrs) return false;
  invalid(dev, fn, `invalid attrs ${String(attrs)}`);
  return true;
}

/** `[phys, phys + size)` must lie in the physical address space (size already checked). */
function badRange(dev: Device, phys: unknown, size: number, fn: string): boolean {
  if (typeof phys === 'number' && Number.isSafeInteger(phys) && phys >= 0 && phys + size <= dev.host.memory.limit) return false;
  invalid(dev, fn, `address ${typeof phys === 'number' ? hex(phys) : String(phys)}+${size} outside the physical address space`);
  return true;
}

function badDmaAddr(dev: Device, addr: unknown, fn: string): boolean {
  if (typeof addr === 'number' && Number.isSafeInteger(addr) && addr >= 0) return false;
  invalid(dev, fn, `invalid DMA address ${String(addr)}`);
  return true;
}

/** `WARN_ON_ONCE(!dev->dma_mask)`. */
function noMask(dev: Device, fn: string): boolean {
  if (dev.dmaMaskBits !== 0) return false;
  dev.host.dmaDebug.report('no-dma-mask', dev, `${fn}: device has no DMA mask`);
  return true;
}

// ---- single mappings ----------------------------------------------------------------------------

/**
 * The argument checks of mapPhysSlow folded into one test: the hot path of every single map. A
 * failure takes the slow path, which finds and reports the exact problem.
 */
function mapArgsOk(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs: number): boolean {
  return (
    (dir === 0 || dir === 1 || dir === 2) &&
    isSafeInteger(size) &&
    size > 0 &&
    isSafeInteger(phys) &&
    phys >= 0 &&
    phys + size <= dev.host.memory.limit &&
    attrs >>> 0 === attrs &&
    dev.dmaMaskBits !== 0 &&
    ((attrs & ATTR_REQUIRE_COHERENT) === 0 || dev.coherent)
  );
}

/**
 * `dma_map_phys(dev, phys, size, dir, attrs)`: DMA address or DMA_MAPPING_ERROR. The kernel's
 * order: checks, dispatch (dma-direct or the DmaMapOps contract), trace, dma-debug.
 */
export function dmaMapPhys(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs = 0): number {
  if (!mapArgsOk(dev, phys, size, dir, attrs)) return mapPhysSlow(dev, phys, size, dir, attrs, 'dma_map_phys');
  const ops = dev.dmaOps;
  const addr = ops === null ? dmaDirectMapPhys(dev, phys, size, dir, attrs) : ops.mapPhys(dev, phys, size, dir, attrs);
  const host = dev.host;
  if (host.trace.enabled || host.dmaDebug.enabled) mapPhysObserved(dev, phys, size, dir, addr, attrs, 'dma_map_phys');
  return addr;
}

/** The body of dma_map_phys for the other entries; `call` names the entry for dma-debug's reports. */
function mapPhys(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs: number, call: string): number {
  if (!mapArgsOk(dev, phys, size, dir, attrs)) return mapPhysSlow(dev, phys, size, dir, attrs, call);
  const ops = dev.dmaOps;
  const addr = ops === null ? dmaDirectMapPhys(dev, phys, size, dir, attrs) : ops.mapPhys(dev, phys, size, dir, attrs);
  const host = dev.host;
  if (host.trace.enabled || host.dmaDebug.enabled) mapPhysObserved(dev, phys, size, dir, addr, attrs, call);
  return addr;
}

/** trace_dma_map_phys, then debug_dma_map_phys (out of line: the hot path pays one test for both). */
function mapPhysObserved(dev: Device, phys: number, size: number, dir: DmaDataDirection, addr: number, attrs: number, call: string): void {
  const host = dev.host;
  if (host.trace.enabled) traceDmaMapPhys(host.trace, dev.name, phys, addr, size, dir, attrs);
  const dbg = host.dmaDebug;
  if (dbg.enabled) dbg.mapPhys(dev, phys, size, dir, addr, attrs, call);
}

function mapPhysSlow(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs: number, call: string): number {
  if (badDir(dev, dir, call) || badSize(dev, size, call) || badRange(dev, phys, size, call) || badAttrs(dev, attrs, call) || noMask(dev, call)) {
    return DMA_MAPPING_ERROR;
  }
  if ((attrs & DMA_ATTR_REQUIRE_COHERENT) !== 0 && !dev.coherent) return DMA_MAPPING_ERROR;
  const ops = dev.dmaOps;
  const addr = ops === null ? dmaDirectMapPhys(dev, phys, size, dir, attrs) : ops.mapPhys(dev, phys, size, dir, attrs);
  mapPhysObserved(dev, phys, size, dir, addr, attrs, call);
  return addr;
}

/**
 * `dma_unmap_phys(dev, addr, size, dir, attrs)`: backend unmap, then the dma-debug check. Hot
 * path as in mapPhys: the checks of dmaUnmapPhysSlow in one test.
 */
export function dmaUnmapPhys(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection, attrs = 0): void {
  if ((dir === 0 || dir === 1 || dir === 2) && isSafeInteger(size) && size > 0 && attrs >>> 0 === attrs && isSafeInteger(dmaAddr) && dmaAddr >= 0) {
    const host = dev.host;
    const ops = dev.dmaOps;
    if (ops === null) dmaDirectUnmapPhys(dev, dmaAddr, size, dir, attrs);
    else ops.unmapPhys(dev, dmaAddr, size, dir, attrs);
    if (host.trace.enabled || host.dmaDebug.enabled) unmapPhysObserved(dev, dmaAddr, size, dir, attrs);
    return;
  }
  dmaUnmapPhysSlow(dev, dmaAddr, size, dir, attrs);
}

/** trace_dma_unmap_phys, then debug_dma_unmap_phys. */
function unmapPhysObserved(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection, attrs: number): void {
  const host = dev.host;
  if (host.trace.enabled) traceDmaUnmapPhys(host.trace, dev.name, dmaAddr, size, dir, attrs);
  const dbg = host.dmaDebug;
  if (dbg.enabled) dbg.unmapPhys(dev, dmaAddr, size, dir);
}

function dmaUnmapPhysSlow(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection, attrs: number): void {
  if (badDir(dev, dir, 'dma_unmap_phys') || badSize(dev, size, 'dma_unmap_phys') || badAttrs(dev, attrs, 'dma_unmap_phys')) return;
  // Unmapping DMA_MAPPING_ERROR reaches no backend state; dma-debug reports it.
  if (dmaAddr !== DMA_MAPPING_ERROR) {
    if (badDmaAddr(dev, dmaAddr, 'dma_unmap_phys')) return;
    const ops = dev.dmaOps;
    if (ops === null) dmaDirectUnmapPhys(dev, dmaAddr, size, dir, attrs);
    else ops.unmapPhys(dev, dmaAddr, size, dir, attrs);
  }
  unmapPhysObserved(dev, dmaAddr, size, dir, attrs);
}

/** `dma_map_page_attrs(dev, page, offset, size, dir, attrs)`; MMIO must use map_phys/resource. */
export function dmaMapPageAttrs(dev: Device, pagePhys: number, offset: number, size: number, dir: DmaDataDirection, attrs = 0): number {
  return mapPage(dev, pagePhys, offset, size, dir, attrs, 'dma_map_page_attrs');
}

function mapPage(dev: Device, pagePhys: number, offset: number, size: number, dir: DmaDataDirection, attrs: number, call: string): number {
  if (typeof attrs === 'number' && (attrs & DMA_ATTR_MMIO) !== 0) return DMA_MAPPING_ERROR;
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
    invalid(dev, call, `invalid offset ${String(offset)}`);
    return DMA_MAPPING_ERROR;
  }
  return mapPhys(dev, pagePhys + offset, size, dir, attrs, call);
}

/** `dma_unmap_page_attrs`: with MMIO it silently does nothing. */
export function dmaUnmapPageAttrs(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection, attrs = 0): void {
  if (typeof attrs === 'number' && (attrs & DMA_ATTR_MMIO) !== 0) return;
  dmaUnmapPhys(dev, dmaAddr, size, dir, attrs);
}

/** `dma_map_page(dev, page, offset, size, dir)` (attrs allowed for convenience). */
export const dmaMapPage = dmaMapPageAttrs;
/** `dma_unmap_page(dev, addr, size, dir)` (attrs allowed for convenience). */
export const dmaUnmapPage = dmaUnmapPageAttrs;

/** `dma_map_single_attrs(dev, ptr, size, dir, attrs)`: the CPU address is the linear-map phys here. */
export function dmaMapSingle(dev: Device, cpuAddr: number, size: number, dir: DmaDataDirection, attrs = 0): number {
  const off = typeof cpuAddr === 'number' && cpuAddr >= 0 ? cpuAddr % PAGE_SIZE : 0;
  return mapPage(dev, cpuAddr - off, off, size, dir, attrs, 'dma_map_single_attrs');
}

/** `dma_unmap_single_attrs(dev, addr, size, dir, attrs)`. kernel: include/linux/dma-mapping.h. */
export function dmaUnmapSingle(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection, attrs = 0): void {
  dmaUnmapPageAttrs(dev, dmaAddr, size, dir, attrs);
}

/** `dma_map_resource(dev, phys, size, dir, attrs)` = `dma_map_phys(..., attrs | DMA_ATTR_MMIO)`. */
export function dmaMapResource(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs = 0): number {
  if (badAttrs(dev, attrs, 'dma_map_resource')) return DMA_MAPPING_ERROR;
  return mapPhys(dev, phys, size, dir, attrs | DMA_ATTR_MMIO, 'dma_map_resource');
}

/**
 * `dma_unmap_resource(dev, addr, size, dir, attrs)`: unmaps a dma_map_resource() mapping. kernel:
 * kernel/dma/mapping.c.
 */
export function dmaUnmapResource(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection, attrs = 0): void {
  if (badAttrs(dev, attrs, 'dma_unmap_resource')) return;
  dmaUnmapPhys(dev, dmaAddr, size, dir, attrs | DMA_ATTR_MMIO);
}

/** `dma_mapping_error(dev, addr)`: -ENOMEM iff DMA_MAPPING_ERROR; tells dma-debug it was checked. */
export function dmaMappingError(dev: Device, dmaAddr: number): number {
  const dbg = dev.host.dmaDebug;
  if (dbg.enabled) dbg.mappingError(dev, dmaAddr);
  return dmaAddr === DMA_MAPPING_ERROR ? -Errno.ENOMEM : 0;
}

// ---- scatter-gather -------------------------------------------------------------------------------

function badSg(dev: Device, sgt: unknown, nents: unknown, fn: string): boolean {
  if (!(sgt instanceof SgTable)) {
    invalid(dev, fn, 'not an SgTable');
    return true;
  }
  if (typeof nents !== 'number' || !Number.isSafeInteger(nents) || nents <= 0 || nents > sgt.origNents) {
    invalid(dev, fn, `invalid nents ${String(nents)} (table has ${sgt.origNents} entries)`);
    return true;
  }
  const limit = dev.host.memory.limit;
  for (let i = 0; i < nents; i++) {
    const p = sgt.phys[i] ?? 0;
    if (!Number.isSafeInteger(p) || p + (sgt.length[i] ?? 0) > limit) {
      invalid(dev, fn, `entry ${i} outside the physical address space`);
      return true;
    }
  }
  return false;
}

function physList(sgt: SgTable, n: number): number[] {
  return Array.from(sgt.phys.subarray(0, n));
}

/** `__dma_map_sg_attrs`: DMA segment count, a negative errno, or 0 (no DMA mask). */
function mapSgAttrs(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection, attrs: number, fn: string): number {
  if (badDir(dev, dir, fn) || badAttrs(dev, attrs, fn) || badSg(dev, sgt, nents, fn)) return -Errno.EINVAL;
  if (noMask(dev, fn)) return 0;
  if ((attrs & DMA_ATTR_REQUIRE_COHERENT) !== 0 && !dev.coherent) return -Errno.EOPNOTSUPP;
  const ops = dev.dmaOps;
  let ents = ops === null ? dmaDirectMapSg(dev, sgt, nents, dir, attrs) : ops.mapSg(dev, sgt, nents, dir, attrs);
  const host = dev.host;
  if (ents > 0) {
    if (host.trace.enabled) {
      traceDmaMapSg(host.trace, dev.name, physList(sgt, nents), Array.from(sgt.dmaAddress.subarray(0, ents)), Array.from(sgt.dmaLength.subarray(0, ents)), dir, attrs);
    }
    const dbg = host.dmaDebug;
    if (dbg.enabled) dbg.mapSg(dev, sgt, nents, ents, dir, attrs, fn);
    return ents;
  }
  if (host.trace.enabled) traceDmaMapSgErr(host.trace, dev.name, physList(sgt, nents), ents, dir, attrs);
  // Only these errnos may reach drivers; anything else is a backend bug (WARN_ON_ONCE) → -EIO.
  if (ents !== -Errno.EINVAL && ents !== -Errno.ENOMEM && ents !== -Errno.EIO && ents !== -Errno.EREMOTEIO) {
    dmaWarn(dev, `${fn}: backend returned ${ents}, converted to -EIO`);
    ents = -Errno.EIO;
  }
  return ents;
}

/** `dma_map_sg_attrs(dev, sg, nents, dir, attrs)`: number of DMA segments, 0 on any error. */
export function dmaMapSg(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection, attrs = 0): number {
  const ret = mapSgAttrs(dev, sgt, nents, dir, attrs, 'dma_map_sg');
  return ret < 0 ? 0 : ret;
}

/**
 * `dma_map_sgtable(dev, sgt, dir, attrs)`: 0 and `sgt.nents` = DMA segments, or -EINVAL, -ENOMEM,
 * -EIO, -EREMOTEIO, -EOPNOTSUPP. Kernel edge kept: without a DMA mask it returns 0 with nents 0.
 */
export function dmaMapSgtable(dev: Device, sgt: SgTable, dir: DmaDataDirection, attrs = 0): number {
  if (!(sgt instanceof SgTable)) {
    invalid(dev, 'dma_map_sgtable', 'not an SgTable');
    return -Errno.EINVAL;
  }
  const nents = mapSgAttrs(dev, sgt, sgt.origNents, dir, attrs, 'dma_map_sgtable');
  if (nents < 0) return nents;
  sgt.nents = nents;
  return 0;
}

/** `dma_unmap_sg_attrs(dev, sg, nents, dir, attrs)`: `nents` is the ORIGINAL count. */
export function dmaUnmapSg(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection, attrs = 0): void {
  if (badDir(dev, dir, 'dma_unmap_sg') || badAttrs(dev, attrs, 'dma_unmap_sg') || badSg(dev, sgt, nents, 'dma_unmap_sg')) return;
  const host = dev.host;
  if (host.trace.enabled) traceDmaUnmapSg(host.trace, dev.name, physList(sgt, nents), dir, attrs);
  const dbg = host.dmaDebug;
  if (dbg.enabled) dbg.unmapSg(dev, sgt, nents, dir);
  const ops = dev.dmaOps;
  if (ops === null) dmaDirectUnmapSg(dev, sgt, nents, dir, attrs);
  else ops.unmapSg(dev, sgt, nents, dir, attrs);
}

/** `dma_unmap_sgtable(dev, sgt, dir, attrs)`. */
export function dmaUnmapSgtable(dev: Device, sgt: SgTable, dir: DmaDataDirection, attrs = 0): void {
  if (!(sgt instanceof SgTable)) {
    invalid(dev, 'dma_unmap_sgtable', 'not an SgTable');
    return;
  }
  dmaUnmapSg(dev, sgt, sgt.origNents, dir, attrs);
}

// ---- syncs ----------------------------------------------------------------------------------------

/** `dma_dev_need_sync(dev)`: `!dev->dma_skip_sync || CONFIG_DMA_API_DEBUG` (debug = mode not off). */
export function dmaDevNeedSync(dev: Device): boolean {
  return !dev.dmaSkipSync || dev.host.dmaDebug.enabled;
}

/** `dma_need_sync(dev, dma_addr)`. */
export function dmaNeedSync(dev: Device, dmaAddr: number): boolean {
  if (!dmaDevNeedSync(dev)) return false;
  return dev.dmaOps === null ? dmaDirectNeedSync(dev, dmaAddr) : true;
}

/** `dma_need_unmap(dev)`: false only for dma-direct with skip_sync and dma-debug off. */
export function dmaNeedUnmap(dev: Device): boolean {
  if (dev.dmaOps !== null) return true;
  if (!dev.dmaSkipSync) return true;
  return dev.host.dmaDebug.enabled;
}

function syncSingle(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection, forCpu: boolean): void {
  const fn = forCpu ? 'dma_sync_single_for_cpu' : 'dma_sync_single_for_device';
  if (badDir(dev, dir, fn) || badSize(dev, size, fn) || badDmaAddr(dev, dmaAddr, fn)) return;
  // The inline wrapper: nothing to do for a coherent device that never bounced (debug off).
  if (!dmaDevNeedSync(dev)) return;
  const ops = dev.dmaOps;
  if (forCpu) {
    if (ops === null) dmaDirectSyncSingleForCpu(dev, dmaAddr, size, dir);
    else ops.syncSingleForCpu(dev, dmaAddr, size, dir);
  } else if (ops === null) dmaDirectSyncSingleForDevice(dev, dmaAddr, size, dir);
  else ops.syncSingleForDevice(dev, dmaAddr, size, dir);
  const host = dev.host;
  if (host.trace.enabled) traceDmaSyncSingle(host.trace, dev.name, forCpu, dmaAddr, size, dir);
  const dbg = host.dmaDebug;
  if (dbg.enabled) {
    if (forCpu) dbg.syncSingleForCpu(dev, dmaAddr, size, dir);
    else dbg.syncSingleForDevice(dev, dmaAddr, size, dir);
  }
}

/** `dma_sync_single_for_cpu(dev, addr, size, dir)`: device → CPU ownership. */
export function dmaSyncSingleForCpu(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection): void {
  syncSingle(dev, dmaAddr, size, dir, true);
}

/** `dma_sync_single_for_device(dev, addr, size, dir)`: CPU → device ownership. */
export function dmaSyncSingleForDevice(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection): void {
  syncSingle(dev, dmaAddr, size, dir, false);
}

/** `dma_sync_single_range_for_cpu(dev, addr, offset, size, dir)` = sync at addr + offset. */
export function dmaSyncSingleRangeForCpu(dev: Device, dmaAddr: number, offset: number, size: number, dir: DmaDataDirection): void {
  syncSingle(dev, dmaAddr + offset, size, dir, true);
}

/** `dma_sync_single_range_for_device(dev, addr, offset, size, dir)` = sync at addr + offset. */
export function dmaSyncSingleRangeForDevice(dev: Device, dmaAddr: number, offset: number, size: number, dir: DmaDataDirection): void {
  syncSingle(dev, dmaAddr + offset, size, dir, false);
}

function syncSg(dev: Device, sgt: SgTable, nelems: number, dir: DmaDataDirection, forCpu: boolean): void {
  const fn = forCpu ? 'dma_sync_sg_for_cpu' : 'dma_sync_sg_for_device';
  if (badDir(dev, dir, fn) || badSg(dev, sgt, nelems, fn)) return;
  if (!dmaDevNeedSync(dev)) return;
  const ops = dev.dmaOps;
  if (forCpu) {
    if (ops === null) dmaDirectSyncSgForCpu(dev, sgt, nelems, dir);
    else ops.syncSgForCpu(dev, sgt, nelems, dir);
  } else if (ops === null) dmaDirectSyncSgForDevice(dev, sgt, nelems, dir);
  else ops.syncSgForDevice(dev, sgt, nelems, dir);
  const host = dev.host;
  if (host.trace.enabled) {
    traceDmaSyncSg(host.trace, dev.name, forCpu, Array.from(sgt.dmaAddress.subarray(0, nelems)), Array.from(sgt.length.subarray(0, nelems)), dir);
  }
  const dbg = host.dmaDebug;
  if (dbg.enabled) {
    if (forCpu) dbg.syncSgForCpu(dev, sgt, nelems, dir);
    else dbg.syncSgForDevice(dev, sgt, nelems, dir);
  }
}

/** `dma_sync_sg_for_cpu(dev, sg, nelems, dir)` (nelems = the original count). */
export function dmaSyncSgForCpu(dev: Device, sgt: SgTable, nelems: number, dir: DmaDataDirection): void {
  syncSg(dev, sgt, nelems, dir, true);
}

/** `dma_sync_sg_for_device(dev, sg, nelems, dir)` (nelems = the original count). */
export function dmaSyncSgForDevice(dev: Device, sgt: SgTable, nelems: number, dir: DmaDataDirection): void {
  syncSg(dev, sgt, nelems, dir, false);
}

/** `dma_sync_sgtable_for_cpu(dev, sgt, dir)`: uses orig_nents. */
export function dmaSyncSgtableForCpu(dev: Device, sgt: SgTable, dir: DmaDataDirection): void {
  if (!(sgt instanceof SgTable)) {
    invalid(dev, 'dma_sync_sgtable_for_cpu', 'not an SgTable');
    return;
  }
  syncSg(dev, sgt, sgt.origNents, dir, true);
}

/** `dma_sync_sgtable_for_device(dev, sgt, dir)`: uses orig_nents. */
export function dmaSyncSgtableForDevice(dev: Device, sgt: SgTable, dir: DmaDataDirection): void {
  if (!(sgt instanceof SgTable)) {
    invalid(dev, 'dma_sync_sgtable_for_device', 'not an SgTable');
    return;
  }
  syncSg(dev, sgt, sgt.origNents, dir, false);
}

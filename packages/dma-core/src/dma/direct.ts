// kernel: kernel/dma/direct.c, kernel/dma/direct.h, include/linux/dma-direct.h
// dma-direct: no IOMMU. DMA address = phys + dma_range_map offset; buffers the device cannot
// reach bounce through swiotlb. There is no CPU cache model: non-coherent devices move the same
// bytes (arch_sync_dma_* have nothing to flush here).
import { pciP2pdmaBusAddrMap, pciP2pdmaMapStateInit, pciP2pdmaState, PciP2pdmaMapType } from '../bus/p2pdma.js';
import type { PciP2pdmaMapState } from '../bus/p2pdma.js';
import { forceDmaUnencrypted } from '../coco/setMemory.js';
import type { Device } from '../device/device.js';
import { traceSwiotlbBounced } from '../trace/dmaEvents.js';
import { DMA_ATTR_MMIO, DMA_ATTR_REQUIRE_COHERENT, DMA_ATTR_SKIP_CPU_SYNC } from '../units/attrs.js';
import type { DmaDataDirection } from '../units/direction.js';
import { DMA_MAPPING_ERROR, SIZE_MAX } from '../units/dmaAddr.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import { dmaWarn } from './log.js';
import { SG_DMA_BUS_ADDRESS, SG_DMA_MMIO } from './scatterlist.js';
import type { SgTable } from './scatterlist.js';
import { swiotlbMaxMappingSize, swiotlbSyncSingleForCpu, swiotlbSyncSingleForDevice, swiotlbTblMapSingle, swiotlbTblUnmapSingle } from './swiotlb.js';

// Module-local copies for the hot paths: V8 folds a module's own constants into optimized code,
// but re-reads and TDZ-checks an imported binding at every use.
const MAPPING_ERROR = DMA_MAPPING_ERROR;
const ATTR_MMIO = DMA_ATTR_MMIO;

/**
 * `phys_to_dma(dev, phys)`. In a CC guest the address carries the world of the page
 * (include/linux/dma-direct.h: phys_to_dma() = `__sme_set(phys_to_dma_unencrypted())`, and
 * phys_to_dma_unencrypted() for decrypted memory; the TDX shared bit as cc_mkdec sets it).
 */
export function physToDma(dev: Device, phys: number): number {
  const cc = dev.host.cc;
  const dma = phys + dev.dmaRangeOffset;
  if (cc == null) return dma;
  return cc.isShared(phys) ? cc.ccMkdec(dma) : cc.ccMkenc(dma);
}

/** `dma_to_phys(dev, dma)` (without the CC address bit). */
export function dmaToPhys(dev: Device, dma: number): number {
  const cc = dev.host.cc;
  return (cc == null ? dma : cc.stripBit(dma)) - dev.dmaRangeOffset;
}

/** `dma_capable(dev, addr, size, is_ram)`: `addr + size - 1 <= min_not_zero(*dma_mask, bus_dma_limit)`. */
export function dmaCapable(dev: Device, addr: number, size: number): boolean {
  const mask = dev.dmaMask;
  const bus = dev.busDmaLimit;
  // min_not_zero(mask, bus), written out: no number crosses a call (a double would be boxed).
  return addr !== MAPPING_ERROR && addr + size - 1 <= (bus === 0 || (mask !== 0 && mask < bus) ? mask : bus);
}

/**
 * `is_swiotlb_force_bounce(dev)`: `swiotlb=force`, or a CC guest (x86 sets SWIOTLB_FORCE when
 * cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT); kernel/dma/direct.c bounces when
 * force_dma_unencrypted(dev)), except for an accepted TDI in RUN (coco/cc.ts).
 */
function forceBounceWanted(dev: Device): boolean {
  return dev.forceSwiotlb || forceDmaUnencrypted(dev);
}

function forceBounce(dev: Device): boolean {
  return forceBounceWanted(dev) && dev.host.swiotlb.active;
}

function warnOverflow(dev: Device, dmaAddr: number, size: number): void {
  dmaWarn(dev, `DMA addr 0x${dmaAddr.toString(16)}+${size} overflow (mask ${dev.dmaMask.toString(16)}, bus limit ${dev.busDmaLimit.toString(16)}).`);
}

/**
 * `swiotlb_map` (kernel/dma/swiotlb.c): bounce for dma-direct, then make sure the bounce buffer
 * itself is reachable (else release it and WARN "overflow").
 */
export function swiotlbMap(dev: Device, paddr: number, size: number, dir: DmaDataDirection, attrs: number): number {
  const host = dev.host;
  if (host.trace.enabled) {
    traceSwiotlbBounced(host.trace, dev.name, dev.dmaMask, physToDma(dev, paddr), size, dev.forceSwiotlb);
  }
  const tlb = swiotlbTblMapSingle(dev, paddr, size, 0, dir, attrs);
  if (tlb === DMA_MAPPING_ERROR) return DMA_MAPPING_ERROR;
  const dmaAddr = physToDma(dev, tlb);
  if (!dmaCapable(dev, dmaAddr, size)) {
    swiotlbTblUnmapSingle(dev, tlb, size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
    dmaWarn(dev, `swiotlb addr 0x${dmaAddr.toString(16)}+${size} overflow (mask ${dev.dmaMask.toString(16)}, bus limit ${dev.busDmaLimit.toString(16)}).`);
    return DMA_MAPPING_ERROR;
  }
  return dmaAddr;
}

/**
 * `dma_direct_map_phys` (kernel/dma/direct.h). Arguments are already validated by mapping.ts.
 * Hot path: RAM (no MMIO attr), no forced bounce (no `swiotlb=force`, not a CC guest), and the
 * address `phys_to_dma` gives is `dma_capable`: the mapping is that address. No cache model, so
 * `arch_sync_dma_for_device` of a non-coherent device has nothing to do. Anything else takes the
 * full path below, which applies the same rules and reports.
 */
export function dmaDirectMapPhys(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs: number): number {
  if ((attrs & ATTR_MMIO) === 0 && !dev.forceSwiotlb && dev.host.cc == null) {
    const dmaAddr = phys + dev.dmaRangeOffset; // phys_to_dma without a CC address bit
    if (dmaCapable(dev, dmaAddr, size)) return dmaAddr;
  }
  return dmaDirectMapPhysSlow(dev, phys, size, dir, attrs);
}

function dmaDirectMapPhysSlow(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs: number): number {
  const noBounce = (attrs & (DMA_ATTR_MMIO | DMA_ATTR_REQUIRE_COHERENT)) !== 0;
  if (forceBounceWanted(dev)) {
    // A force-bounce device (CoCo guest, restricted pool) cannot map MMIO at all.
    if (noBounce || !dev.host.swiotlb.active) return DMA_MAPPING_ERROR;
    return swiotlbMap(dev, phys, size, dir, attrs);
  }
  if ((attrs & DMA_ATTR_MMIO) !== 0) {
    // MMIO is not RAM: no dma_range_map translation, no swiotlb.
    if (!dmaCapable(dev, phys, size)) {
      warnOverflow(dev, phys, size);
      return DMA_MAPPING_ERROR;
    }
    return phys;
  }
  const dmaAddr = physToDma(dev, phys);
  if (!dmaCapable(dev, dmaAddr, size)) {
    if (!noBounce && dev.host.swiotlb.active) return swiotlbMap(dev, phys, size, dir, attrs);
    warnOverflow(dev, dmaAddr, size);
    return DMA_MAPPING_ERROR;
  }
  return dmaAddr;
}

/** `dma_direct_sync_single_for_cpu`. */
export function dmaDirectSyncSingleForCpu(dev: Device, addr: number, size: number, dir: DmaDataDirection): void {
  const paddr = dmaToPhys(dev, addr);
  if (dev.host.swiotlb.isSwiotlbBuffer(paddr)) swiotlbSyncSingleForCpu(dev, paddr, size, dir);
}

/** `dma_direct_sync_single_for_device`. */
export function dmaDirectSyncSingleForDevice(dev: Device, addr: number, size: number, dir: DmaDataDirection): void {
  const paddr = dmaToPhys(dev, addr);
  if (dev.host.swiotlb.isSwiotlbBuffer(paddr)) swiotlbSyncSingleForDevice(dev, paddr, size, dir);
}

/** `dma_direct_unmap_phys`: sync for the CPU (copy-back), then release a bounce buffer. */
export function dmaDirectUnmapPhys(dev: Device, addr: number, size: number, dir: DmaDataDirection, attrs: number): void {
  if ((attrs & ATTR_MMIO) !== 0) return;
  const host = dev.host;
  const cc = host.cc;
  const phys = (cc == null ? addr : cc.stripBit(addr)) - dev.dmaRangeOffset; // dma_to_phys
  // swiotlb_tbl_unmap_single's inline is_swiotlb_buffer test; the bounce release out of line.
  if (host.swiotlb.isSwiotlbBuffer(phys)) dmaDirectUnmapBounced(dev, phys, size, dir, attrs);
}

function dmaDirectUnmapBounced(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs: number): void {
  if ((attrs & DMA_ATTR_SKIP_CPU_SYNC) === 0) swiotlbSyncSingleForCpu(dev, phys, size, dir);
  swiotlbTblUnmapSingle(dev, phys, size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
}

/**
 * Model-only sg flag: this entry holds a live dma-direct mapping. Unmap and sync skip entries
 * without it, so a double dma_unmap_sg (reported by dma-debug) cannot release swiotlb slots that
 * another mapping owns by now. The kernel has no such guard.
 */
const SG_DMA_DIRECT_MAPPED = 8;

// Reused per call (single-threaded model): no allocation per sg map.
const p2pState: PciP2pdmaMapState = pciP2pdmaMapStateInit();

/** A zeroed `struct pci_p2pdma_map_state` for one sg call. */
function resetP2pState(): PciP2pdmaMapState {
  p2pState.mem = null;
  p2pState.map = PciP2pdmaMapType.UNKNOWN;
  return p2pState;
}

/**
 * The P2P class of the page at `phys` for `dev` (`pci_p2pdma_state`). The bus room's
 * `pciP2pdmaState` is the real rule; `state` caches the last provider as the kernel does.
 */
function p2pMapTypeOf(state: PciP2pdmaMapState, dev: Device, phys: number): PciP2pdmaMapType {
  return pciP2pdmaState(state, dev, phys);
}

/**
 * `dma_direct_map_sg`: each entry mapped on its own (dma-direct never merges). Returns `nents`,
 * or a negative errno after unmapping what was mapped (-EIO, -EREMOTEIO).
 */
export function dmaDirectMapSg(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection, attrs: number): number {
  const state = resetP2pState();
  const flags = sgt.dmaFlags;
  let i = 0;
  let ret = 0;
  for (; i < nents; i++) {
    const phys = sgt.phys[i] ?? 0;
    const len = sgt.length[i] ?? 0;
    flags[i] = 0;
    const type = p2pMapTypeOf(state, dev, phys);
    let dma: number;
    if (type === PciP2pdmaMapType.NONE) {
      dma = dmaDirectMapPhys(dev, phys, len, dir, attrs);
      flags[i] = SG_DMA_DIRECT_MAPPED;
    } else if (type === PciP2pdmaMapType.BUS_ADDR) {
      // The peer is programmed with the PCI bus address; nothing to map, never unmapped.
      sgt.dmaAddress[i] = state.mem === null ? phys : pciP2pdmaBusAddrMap(state.mem, phys);
      sgt.dmaLength[i] = len;
      flags[i] = SG_DMA_BUS_ADDRESS;
      continue;
    } else if (type === PciP2pdmaMapType.THRU_HOST_BRIDGE) {
      dma = dmaDirectMapPhys(dev, phys, len, dir, attrs | DMA_ATTR_MMIO);
      flags[i] = SG_DMA_MMIO | SG_DMA_DIRECT_MAPPED;
    } else {
      ret = -Errno.EREMOTEIO;
      break;
    }
    if (dma === DMA_MAPPING_ERROR) {
      flags[i] = 0;
      ret = -Errno.EIO;
      break;
    }
    sgt.dmaAddress[i] = dma;
    sgt.dmaLength[i] = len;
  }
  if (ret < 0) {
    dmaDirectUnmapSg(dev, sgt, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
    return ret;
  }
  return nents;
}

/** `dma_direct_unmap_sg`: bus-address entries are only unmarked. */
export function dmaDirectUnmapSg(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection, attrs: number): void {
  const flags = sgt.dmaFlags;
  for (let i = 0; i < nents; i++) {
    const f = flags[i] ?? 0;
    if ((f & SG_DMA_BUS_ADDRESS) !== 0) {
      flags[i] = f & ~SG_DMA_BUS_ADDRESS;
      continue;
    }
    if ((f & SG_DMA_DIRECT_MAPPED) !== 0) {
      dmaDirectUnmapPhys(dev, sgt.dmaAddress[i] ?? 0, sgt.dmaLength[i] ?? 0, dir, (f & SG_DMA_MMIO) !== 0 ? attrs | DMA_ATTR_MMIO : attrs);
    }
    flags[i] = 0;
  }
}

/** `dma_direct_sync_sg_for_cpu`. */
export function dmaDirectSyncSgForCpu(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection): void {
  for (let i = 0; i < nents; i++) {
    if (((sgt.dmaFlags[i] ?? 0) & (SG_DMA_BUS_ADDRESS | SG_DMA_MMIO | SG_DMA_DIRECT_MAPPED)) !== SG_DMA_DIRECT_MAPPED) continue;
    dmaDirectSyncSingleForCpu(dev, sgt.dmaAddress[i] ?? 0, sgt.length[i] ?? 0, dir);
  }
}

/** `dma_direct_sync_sg_for_device`. */
export function dmaDirectSyncSgForDevice(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection): void {
  for (let i = 0; i < nents; i++) {
    if (((sgt.dmaFlags[i] ?? 0) & (SG_DMA_BUS_ADDRESS | SG_DMA_MMIO | SG_DMA_DIRECT_MAPPED)) !== SG_DMA_DIRECT_MAPPED) continue;
    dmaDirectSyncSingleForDevice(dev, sgt.dmaAddress[i] ?? 0, sgt.length[i] ?? 0, dir);
  }
}

/** `dma_direct_need_sync`: non-coherent device, or the address is a bounce buffer. */
export function dmaDirectNeedSync(dev: Device, dmaAddr: number): boolean {
  return !dev.coherent || dev.host.swiotlb.isSwiotlbBuffer(dmaToPhys(dev, dmaAddr));
}

/** `dma_direct_get_required_mask`: mask covering the highest RAM page. */
export function dmaDirectGetRequiredMask(dev: Device): number {
  const top = dev.host.ramTop();
  if (top <= 0) return 0;
  const maxDma = physToDma(dev, top - PAGE_SIZE);
  // (1 << (fls64(max_dma) - 1)) * 2 - 1
  const bits = maxDma <= 0 ? 1 : Math.floor(Math.log2(maxDma)) + 1;
  return 2 ** bits - 1;
}

/** `dma_direct_all_ram_mapped`: every RAM range is reachable without bouncing. */
export function dmaDirectAllRamMapped(dev: Device): boolean {
  // The host exposes ramTop only; RAM is [0, ramTop) with holes, so checking the top suffices.
  const top = dev.host.ramTop();
  return top <= 0 || dmaCapable(dev, physToDma(dev, top - 1), 1);
}

/** `dma_direct_max_mapping_size`. */
export function dmaDirectMaxMappingSize(dev: Device, addressingLimited: boolean): number {
  if (dev.host.swiotlb.active && (addressingLimited || forceBounce(dev))) return swiotlbMaxMappingSize(dev);
  return SIZE_MAX;
}

// kernel: drivers/dma-buf/dma-buf-mapping.c (dma_buf_phys_vec_to_sgt, dma_buf_free_sgt, ~6.19)
// MMIO exporters (BARs, no struct page) describe their memory as phys_vec ranges; this maps them
// for one attachment by the PCI P2P route: bus addresses, one IOVA range with MMIO links, or a
// dma_map_phys per range with DMA_ATTR_MMIO.
import {
  DMA_ATTR_MMIO,
  DMA_MAPPING_ERROR,
  DmaIovaState,
  Errno,
  P2pdmaProvider,
  PAGE_SIZE,
  PciP2pdmaMapType,
  SG_DMA_BUS_ADDRESS,
  SG_DMA_MMIO,
  SgTable,
  dmaIovaDestroy,
  dmaIovaLink,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaMapPhys,
  dmaMappingError,
  dmaUnmapPhys,
  isAligned,
  pciP2pdmaBusAddrMap,
  pciP2pdmaMapType,
  validDmaDirection,
} from '@dmakit/dma-core';
import type { DmaBufAttachment, DmaDataDirection, PhysVec } from '@dmakit/dma-core';
import { toDmaBufAttachmentObject } from './dmaBuf.js';
import { dmaResvAssertHeld } from './resv.js';

/** `MAX_SG_ENT_SZ`: UINT_MAX rounded down to PAGE_SIZE (sg_dma_len is 32-bit). */
export const MAX_SG_ENT_SZ = 0xffff_ffff - (0xffff_ffff % PAGE_SIZE);

/** How a table from `dmaBufPhysVecToSgt` was mapped. */
export type DmaBufSgtMode = 'bus-addr' | 'iova' | 'map-phys';

/** `struct dma_buf_dma`: the private state behind the table, so free undoes the same thing. */
interface DmaBufDma {
  readonly mode: DmaBufSgtMode;
  readonly state: DmaIovaState | null;
  readonly size: number;
  readonly dir: DmaDataDirection;
  /** map-phys mode: the address and length of each mapped range (unmapped as mapped). */
  readonly rangeAddr: Float64Array;
  readonly rangeLen: Float64Array;
  readonly attachDev: object;
}

const tables = new WeakMap<SgTable, DmaBufDma>();

/** Counters for tests and benchmarks (model only). */
export const dmaBufMappingStats = { iovaTables: 0, mapPhysTables: 0, busAddrTables: 0, iovaSyncs: 0, iovaLinks: 0, mapPhysCalls: 0, live: 0 };

/** How `sgt` was mapped, or null if it is not a live table of `dmaBufPhysVecToSgt`. */
export function dmaBufSgtMode(sgt: SgTable): DmaBufSgtMode | null {
  return tables.get(sgt)?.mode ?? null;
}

/** The IOVA state behind an IOVA-mode table (for inspection), or null. */
export function dmaBufSgtIovaState(sgt: SgTable): DmaIovaState | null {
  return tables.get(sgt)?.state ?? null;
}

function sgCount(len: number): number {
  return Math.ceil(len / MAX_SG_ENT_SZ);
}

/** `calc_sg_nents`: 0 on overflow or bad input. */
function calcSgNents(iova: boolean, physVec: readonly PhysVec[], nrRanges: number, size: number): number {
  if (iova) return sgCount(size);
  let n = 0;
  for (let i = 0; i < nrRanges; i++) n += sgCount(physVec[i]?.len ?? 0);
  return Number.isSafeInteger(n) ? n : 0;
}

/** `fill_sg_entry`: one range as entries of at most MAX_SG_ENT_SZ. Returns the next entry. */
function fillSgEntry(sgt: SgTable, at: number, length: number, addr: number, flags: number): number {
  let i = at;
  let left = length;
  let a = addr;
  while (left > 0) {
    const len = Math.min(left, MAX_SG_ENT_SZ);
    sgt.dmaAddress[i] = a;
    sgt.dmaLength[i] = len;
    sgt.dmaFlags[i] = flags;
    a += len;
    left -= len;
    i++;
  }
  return i;
}

/**
 * `dma_buf_phys_vec_to_sgt(attach, provider, phys_vec, nr_ranges, size, dir)`: resv held. A table
 * with DMA addresses only (`origNents` 0: no CPU list), or -EINVAL (no provider, NOT_SUPPORTED
 * route, bad ranges), -ENOMEM / -EIO from the mapping calls. On failure nothing stays mapped.
 * Model: range i is linked at IOVA offset sum(len[0..i-1]); the snapshot read passed 0 for
 * every range (only right for one range), see kernel-consumers.md 6.3.
 */
export function dmaBufPhysVecToSgt(
  attach: DmaBufAttachment,
  provider: P2pdmaProvider | null,
  physVec: readonly PhysVec[],
  nrRanges: number,
  size: number,
  dir: DmaDataDirection,
): SgTable | number {
  const a = toDmaBufAttachmentObject(attach);
  if (a === null) return -Errno.EINVAL;
  const dev = a.dev;
  const dbg = dev.host.dmaDebug;
  dmaResvAssertHeld(a.dmabuf.resv, dev, 'dma_buf_phys_vec_to_sgt');
  if (!(provider instanceof P2pdmaProvider)) return -Errno.EINVAL;
  if (!validDmaDirection(dir)) {
    dbg.report('invalid-direction', dev, `dma_buf_phys_vec_to_sgt: invalid DMA direction ${String(dir)}`);
    return -Errno.EINVAL;
  }
  if (!Number.isSafeInteger(nrRanges) || nrRanges <= 0 || nrRanges > physVec.length || !Number.isSafeInteger(size) || size <= 0) return -Errno.EINVAL;
  // Model: the exporter validated its ranges; check again so a bad caller cannot map garbage.
  let total = 0;
  for (let i = 0; i < nrRanges; i++) {
    const v = physVec[i];
    if (v === undefined || !Number.isSafeInteger(v.paddr) || !Number.isSafeInteger(v.len) || v.paddr < 0 || v.len <= 0) return -Errno.EINVAL;
    if (!isAligned(v.paddr, PAGE_SIZE) || !isAligned(v.len, PAGE_SIZE)) return -Errno.EINVAL;
    total += v.len;
  }
  if (total !== size) return -Errno.EINVAL;

  const type = pciP2pdmaMapType(provider, dev);
  let state: DmaIovaState | null = null;
  let mode: DmaBufSgtMode;
  switch (type) {
    case PciP2pdmaMapType.BUS_ADDR:
      mode = 'bus-addr';
      break;
    case PciP2pdmaMapType.THRU_HOST_BRIDGE: {
      const s = new DmaIovaState();
      if (dmaIovaTryAlloc(dev, s, 0, size)) {
        state = s;
        mode = 'iova';
      } else {
        mode = 'map-phys';
      }
      break;
    }
    case PciP2pdmaMapType.UNKNOWN:
    case PciP2pdmaMapType.NONE:
    case PciP2pdmaMapType.NOT_SUPPORTED:
      return -Errno.EINVAL;
  }

  const nents = calcSgNents(state !== null, physVec, nrRanges, size);
  if (nents === 0) {
    if (state !== null) dmaIovaDestroy(dev, state, 0, dir, DMA_ATTR_MMIO);
    return -Errno.EINVAL;
  }
  const sgt = new SgTable(nents);
  const rangeAddr = new Float64Array(mode === 'map-phys' ? nrRanges : 0);
  const rangeLen = new Float64Array(mode === 'map-phys' ? nrRanges : 0);
  let mapped = 0;
  let ent = 0;
  let ret = 0;
  let i = 0;
  for (; i < nrRanges; i++) {
    const v = physVec[i];
    if (v === undefined) break;
    if (state !== null) {
      ret = dmaIovaLink(dev, state, v.paddr, mapped, v.len, dir, DMA_ATTR_MMIO);
      dmaBufMappingStats.iovaLinks++;
      if (ret !== 0) break;
    } else if (mode === 'bus-addr') {
      ent = fillSgEntry(sgt, ent, v.len, pciP2pdmaBusAddrMap(provider, v.paddr), SG_DMA_BUS_ADDRESS);
    } else {
      const addr = dmaMapPhys(dev, v.paddr, v.len, dir, DMA_ATTR_MMIO);
      dmaBufMappingStats.mapPhysCalls++;
      ret = dmaMappingError(dev, addr);
      if (ret !== 0 || addr === DMA_MAPPING_ERROR) {
        ret = ret !== 0 ? ret : -Errno.ENOMEM;
        break;
      }
      rangeAddr[i] = addr;
      rangeLen[i] = v.len;
      ent = fillSgEntry(sgt, ent, v.len, addr, SG_DMA_MMIO);
    }
    mapped += v.len;
  }
  if (ret === 0 && state !== null) {
    ret = dmaIovaSync(dev, state, 0, mapped);
    dmaBufMappingStats.iovaSyncs++;
    if (ret === 0) ent = fillSgEntry(sgt, 0, mapped, state.addr, SG_DMA_MMIO);
  }
  if (ret !== 0) {
    // err_unmap_dma. Model: the IOVA range is destroyed even when the first link failed (the
    // snapshot read skips dma_iova_destroy when i == 0, which leaks the try_alloc'd range).
    if (state !== null) dmaIovaDestroy(dev, state, mapped, dir, DMA_ATTR_MMIO);
    else if (mode === 'map-phys') for (let j = 0; j < i; j++) dmaUnmapPhys(dev, rangeAddr[j] ?? 0, rangeLen[j] ?? 0, dir, DMA_ATTR_MMIO);
    return ret;
  }
  if (mapped !== size) dbg.report('invalid-argument', dev, `dma_buf_phys_vec_to_sgt: mapped ${mapped} of ${size} bytes (WARN_ON)`);
  sgt.origNents = 0;
  sgt.nents = ent;
  tables.set(sgt, { mode, state, size, dir, rangeAddr, rangeLen, attachDev: dev });
  dmaBufMappingStats.live++;
  if (mode === 'iova') dmaBufMappingStats.iovaTables++;
  else if (mode === 'map-phys') dmaBufMappingStats.mapPhysTables++;
  else dmaBufMappingStats.busAddrTables++;
  return sgt;
}

/**
 * `dma_buf_free_sgt(attach, sgt, dir)`: BUS_ADDR nothing to undo; IOVA one dma_iova_destroy;
 * otherwise dma_unmap_phys per range with DMA_ATTR_MMIO. A table this helper did not make (or
 * already freed) is reported.
 */
export function dmaBufFreeSgt(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void {
  const a = toDmaBufAttachmentObject(attach);
  if (a === null) return;
  const dev = a.dev;
  const d = tables.get(sgt);
  if (d === undefined || d.attachDev !== dev) {
    dev.host.dmaDebug.report('dmabuf-unmap-not-mapped', dev, 'dma_buf_free_sgt: not a live table of dma_buf_phys_vec_to_sgt for this device');
    return;
  }
  tables.delete(sgt);
  dmaBufMappingStats.live--;
  if (d.dir !== dir) dev.host.dmaDebug.report('direction-mismatch', dev, `dma_buf_free_sgt: mapped with direction ${d.dir}, freed with ${String(dir)}`);
  if (d.mode === 'iova' && d.state !== null) {
    dmaIovaDestroy(dev, d.state, d.size, d.dir, DMA_ATTR_MMIO);
  } else if (d.mode === 'map-phys') {
    for (let j = 0; j < d.rangeAddr.length; j++) dmaUnmapPhys(dev, d.rangeAddr[j] ?? 0, d.rangeLen[j] ?? 0, d.dir, DMA_ATTR_MMIO);
  }
  sgt.nents = 0;
}

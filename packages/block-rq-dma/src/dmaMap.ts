// kernel: block/blk-mq-dma.c (blk_rq_dma_map_iter_start/next, blk_dma_map_iter_start,
// blk_rq_dma_map_iova, blk_dma_map_direct, blk_dma_map_bus, __blk_rq_map_sg,
// blk_rq_integrity_dma_map_iter_*, blk_rq_map_integrity_sg), include/linux/blk-mq-dma.h
// (blk_rq_dma_map_coalesce, blk_rq_dma_unmap), include/linux/blk-integrity.h
import {
  BIP_P2P_DMA,
  BlkStatus,
  blkRqSectors,
  DMA_ATTR_MMIO,
  DMA_MAPPING_ERROR,
  dmaGetMergeBoundary,
  dmaIovaDestroy,
  dmaIovaLink,
  dmaIovaSize,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaMapPhys,
  dmaMappingError,
  dmaNeedUnmap,
  dmaUseIova,
  PCI_P2PDMA_MAP_BUS_ADDR,
  PCI_P2PDMA_MAP_NONE,
  PCI_P2PDMA_MAP_NOT_SUPPORTED,
  PCI_P2PDMA_MAP_UNKNOWN,
  PCI_P2PDMA_MAP_THRU_HOST_BRIDGE,
  pciP2pdmaBusAddrMap,
  pciP2pdmaState,
  REQ_P2PDMA,
  rqDmaDir,
  blkRqPayloadBytes,
  SgTable,
} from '@dmakit/dma-core';
import type { BlkDmaIter, BlkPhysVec, BlkRequest, BlkRqDmaMapper, Device, DmaIovaState, PciP2pdmaMapType } from '@dmakit/dma-core';
import { bioIntegrityBytes } from './limits.js';
import { blkMapIterCreate, blkMapIterNext, blkRqIntegrityMapIterInit, blkRqMapIterInit } from './mapIter.js';
import { reqPhysGapMask } from './request.js';
import { errnoToBlkStatus } from './status.js';
import { traceBlkRqDmaMap } from './trace.js';

/** How IOVA eligibility is decided (`blk_can_dma_map_iova`). */
export type IovaEligibility =
  /** [6.17] `!((virt_boundary_mask + 1) & dma_get_merge_boundary(dev))`. */
  | 'virt-boundary'
  /** [6.19] `!(req_phys_gap_mask(req) & dma_get_merge_boundary(dev))`: every interior boundary granule-aligned. */
  | 'gap-mask'
  /** Never use the IOVA path (always one mapping per segment). */
  | 'never';

/** Options of createBlkRqDmaMapper(): when a request may use the IOVA path. */
export interface BlkRqDmaMapperOptions {
  /** Default 'gap-mask'. */
  iovaEligibility?: IovaEligibility;
}

/** Counters for the demo and the benchmarks (per mapper). */
export interface BlkRqDmaStats {
  /** map_iter_start calls. */
  starts: number;
  /** Requests mapped on the IOVA path (one try_alloc each). */
  iovaRequests: number;
  iovaTryAllocs: number;
  iovaLinks: number;
  iovaSyncs: number;
  iovaDestroys: number;
  /** dma_map_phys calls on the direct path. */
  directMaps: number;
  /** Segments handed out as PCI bus addresses. */
  busSegments: number;
  /** Requests refused as NOT_SUPPORTED P2P. */
  p2pRefused: number;
  /** Segments returned to the driver (start + next that returned true). */
  segments: number;
  /** Map failures (any non-OK status). */
  errors: number;
}

function newStats(): BlkRqDmaStats {
  return { starts: 0, iovaRequests: 0, iovaTryAllocs: 0, iovaLinks: 0, iovaSyncs: 0, iovaDestroys: 0, directMaps: 0, busSegments: 0, p2pRefused: 0, segments: 0, errors: 0 };
}

/** The implementation of the dma-core `BlkRqDmaMapper` contract, with counters. kernel: block/blk-mq-dma.c (blk_rq_dma_map_iter_start(), blk_rq_dma_map_iter_next(), blk_rq_dma_unmap()). */
export class BlkRqDma implements BlkRqDmaMapper {
  readonly name = 'blk-mq-dma';
  readonly eligibility: IovaEligibility;
  readonly stats: BlkRqDmaStats = newStats();
  readonly #vec: BlkPhysVec = { paddr: 0, len: 0 };

  constructor(opts: BlkRqDmaMapperOptions = {}) {
    this.eligibility = opts.iovaEligibility ?? 'gap-mask';
  }

  /** Zeroes the mapper's counters. */
  resetStats(): void {
    Object.assign(this.stats, newStats());
  }

  /** `blk_can_dma_map_iova(req, dma_dev)`. */
  canMapIova(req: BlkRequest, dev: Device): boolean {
    const mb = dmaGetMergeBoundary(dev);
    switch (this.eligibility) {
      case 'never':
        return false;
      case 'virt-boundary':
        return ((req.limits.virtBoundaryMask + 1) & mb) === 0;
      case 'gap-mask':
        // dma-direct has merge boundary 0: try_alloc would fail anyway; skip the walk.
        return mb !== 0 && (reqPhysGapMask(req) & mb) === 0;
    }
  }

  #mapBus(iter: BlkDmaIter, vec: BlkPhysVec): boolean {
    const mem = iter.p2pdma.mem;
    if (mem === null) {
      iter.status = BlkStatus.INVAL;
      return false;
    }
    iter.addr = pciP2pdmaBusAddrMap(mem, vec.paddr);
    iter.len = vec.len;
    this.stats.busSegments++;
    this.stats.segments++;
    return true;
  }

  #mapDirect(req: BlkRequest, dev: Device, iter: BlkDmaIter, vec: BlkPhysVec): boolean {
    const addr = dmaMapPhys(dev, vec.paddr, vec.len, rqDmaDir(req), iter.attrs);
    this.stats.directMaps++;
    if (dmaMappingError(dev, addr) !== 0 || addr === DMA_MAPPING_ERROR) {
      iter.status = BlkStatus.RESOURCE;
      this.stats.errors++;
      return false;
    }
    iter.addr = addr;
    iter.len = vec.len;
    this.stats.segments++;
    return true;
  }

  /**
   * `blk_rq_dma_map_iova`: link every remaining segment back to back, one sync. Model departure:
   * on a link or sync error the kernel can return a short (or unsynced) mapping; the model
   * destroys what it linked, zeroes the state and fails with the errno's status, so the driver
   * never holds a half-mapped request it cannot unmap exactly.
   */
  #mapIova(req: BlkRequest, dev: Device, state: DmaIovaState, iter: BlkDmaIter, vec: BlkPhysVec): boolean {
    const dir = rqDmaDir(req);
    const attrs = iter.attrs;
    iter.addr = state.addr;
    iter.len = dmaIovaSize(state);
    let mapped = 0;
    let error: number;
    do {
      error = dmaIovaLink(dev, state, vec.paddr, mapped, vec.len, dir, attrs);
      this.stats.iovaLinks++;
      if (error !== 0) break;
      mapped += vec.len;
    } while (blkMapIterNext(req, iter.iter, vec));
    if (error === 0) {
      error = dmaIovaSync(dev, state, 0, mapped);
      this.stats.iovaSyncs++;
    }
    if (error !== 0) {
      dmaIovaDestroy(dev, state, mapped, dir, attrs);
      this.stats.iovaDestroys++;
      state.reset();
      iter.status = errnoToBlkStatus(error);
      iter.len = 0;
      this.stats.errors++;
      return false;
    }
    this.stats.iovaRequests++;
    this.stats.segments++;
    return true;
  }

  /** `blk_dma_map_iter_start(req, dev, state, iter, total_len)`. */
  #start(req: BlkRequest, dev: Device, state: DmaIovaState, iter: BlkDmaIter, totalLen: number): boolean {
    const vec = this.#vec;
    iter.p2pdma.mem = null;
    iter.p2pdma.map = 0;
    iter.status = BlkStatus.OK;
    iter.attrs = 0;
    this.stats.starts++;
    if (!blkMapIterNext(req, iter.iter, vec)) return false;
    switch (pciP2pdmaState(iter.p2pdma, dev, vec.paddr)) {
      case PCI_P2PDMA_MAP_BUS_ADDR:
        if (iter.iter.isIntegrity) {
          const bip = req.bio?.integrity;
          if (bip) bip.flags |= BIP_P2P_DMA;
        } else req.cmdFlags |= REQ_P2PDMA;
        // Model: zero the state too, so blk_rq_dma_map_coalesce is false for a bus-address request.
        state.reset();
        return this.#mapBus(iter, vec);
      case PCI_P2PDMA_MAP_THRU_HOST_BRIDGE:
        // [6.18+] mapped like RAM, with DMA_ATTR_MMIO (no CPU sync, no swiotlb).
        iter.attrs = DMA_ATTR_MMIO;
        break;
      case PCI_P2PDMA_MAP_NONE:
        break;
      case PCI_P2PDMA_MAP_NOT_SUPPORTED:
      case PCI_P2PDMA_MAP_UNKNOWN:
        iter.status = BlkStatus.INVAL;
        this.stats.p2pRefused++;
        this.stats.errors++;
        return false;
    }
    if (this.canMapIova(req, dev)) {
      this.stats.iovaTryAllocs++;
      if (dmaIovaTryAlloc(dev, state, vec.paddr, totalLen)) return this.#mapIova(req, dev, state, iter, vec);
    }
    state.reset();
    return this.#mapDirect(req, dev, iter, vec);
  }

  blkRqDmaMapIterStart(req: BlkRequest, dmaDev: Device, state: DmaIovaState, iter: BlkDmaIter): boolean {
    if (dmaDev.host.trace.enabled) traceBlkRqDmaMap(dmaDev, req);
    blkRqMapIterInit(req, iter.iter);
    return this.#start(req, dmaDev, state, iter, blkRqPayloadBytes(req));
  }

  #next(req: BlkRequest, dev: Device, iter: BlkDmaIter): boolean {
    const vec = this.#vec;
    if (!blkMapIterNext(req, iter.iter, vec)) return false;
    if (iter.p2pdma.map === PCI_P2PDMA_MAP_BUS_ADDR) return this.#mapBus(iter, vec);
    return this.#mapDirect(req, dev, iter, vec);
  }

  blkRqDmaMapIterNext(req: BlkRequest, dmaDev: Device, _state: DmaIovaState, iter: BlkDmaIter): boolean {
    return this.#next(req, dmaDev, iter);
  }

  blkRqDmaMapCoalesce(state: DmaIovaState): boolean {
    return dmaUseIova(state);
  }

  blkRqDmaUnmap(req: BlkRequest, dmaDev: Device, state: DmaIovaState, mappedLen: number, map?: PciP2pdmaMapType): boolean {
    const bus = map === undefined ? (req.cmdFlags & REQ_P2PDMA) !== 0 : map === PCI_P2PDMA_MAP_BUS_ADDR;
    return this.#unmap(req, dmaDev, state, mappedLen, bus, map === PCI_P2PDMA_MAP_THRU_HOST_BRIDGE ? DMA_ATTR_MMIO : 0);
  }

  /** `__blk_rq_dma_unmap`: true when nothing per segment is left for the driver. */
  #unmap(req: BlkRequest, dev: Device, state: DmaIovaState, mappedLen: number, bus: boolean, attrs: number): boolean {
    if (bus) return true;
    if (dmaUseIova(state)) {
      dmaIovaDestroy(dev, state, mappedLen, rqDmaDir(req), attrs);
      this.stats.iovaDestroys++;
      return true;
    }
    return !dmaNeedUnmap(dev);
  }

  blkRqIntegrityDmaMapIterStart(req: BlkRequest, dmaDev: Device, state: DmaIovaState, iter: BlkDmaIter): boolean {
    iter.status = BlkStatus.OK;
    if (!blkRqIntegrityMapIterInit(req, iter.iter)) {
      // The kernel dereferences bio_integrity(req->bio); a request without PI is a driver bug.
      dmaDev.host.dmaDebug.report('invalid-argument', dmaDev, `blk_rq_integrity_dma_map_iter_start: request ${req.tag} has no integrity payload`);
      iter.status = BlkStatus.INVAL;
      return false;
    }
    const len = bioIntegrityBytes(req.limits, blkRqSectors(req));
    return this.#start(req, dmaDev, state, iter, len > 0 ? len : (req.bio?.integrity?.iter.size ?? 0));
  }

  blkRqIntegrityDmaMapIterNext(req: BlkRequest, dmaDev: Device, iter: BlkDmaIter): boolean {
    return this.#next(req, dmaDev, iter);
  }

  blkRqIntegrityDmaUnmap(req: BlkRequest, dmaDev: Device, state: DmaIovaState, mappedLen: number): boolean {
    const bus = ((req.bio?.integrity?.flags ?? 0) & BIP_P2P_DMA) !== 0;
    return this.#unmap(req, dmaDev, state, mappedLen, bus, 0);
  }

  /** `__blk_rq_map_sg`: 0 when the table is too small (the kernel would overrun it). */
  blkRqMapSg(req: BlkRequest, sgt: SgTable): number {
    const it = blkMapIterCreate();
    blkRqMapIterInit(req, it);
    return fillSg(req, it, sgt);
  }

  blkRqMapIntegritySg(req: BlkRequest, sgt: SgTable): number {
    const it = blkMapIterCreate();
    if (!blkRqIntegrityMapIterInit(req, it)) return 0;
    return fillSg(req, it, sgt);
  }

  reqBvec(req: BlkRequest, out: BlkPhysVec): boolean {
    const bio = req.bio;
    if (bio === null || bio.iter.size === 0) return false;
    const i = bio.iter.idx;
    out.paddr = (bio.bvPage[i] ?? 0) + (bio.bvOffset[i] ?? 0) + bio.iter.bvecDone;
    out.len = Math.min((bio.bvLen[i] ?? 0) - bio.iter.bvecDone, bio.iter.size);
    return out.len > 0;
  }
}

const sgVec: BlkPhysVec = { paddr: 0, len: 0 };

function fillSg(req: BlkRequest, it: ReturnType<typeof blkMapIterCreate>, sgt: SgTable): number {
  if (!(sgt instanceof SgTable)) return 0;
  sgt.origNents = 0;
  sgt.nents = 0;
  let n = 0;
  while (blkMapIterNext(req, it, sgVec)) {
    if (n >= sgt.capacity) {
      sgt.origNents = 0;
      sgt.nents = 0;
      return 0;
    }
    sgt.push(sgVec.paddr, sgVec.len);
    n++;
  }
  return n;
}

/** A new mapper (own counters); dmakit's wiring of the dma-core contract to block/blk-mq-dma.c. */
export function createBlkRqDmaMapper(opts: BlkRqDmaMapperOptions = {}): BlkRqDma {
  return new BlkRqDma(opts);
}

/** The default mapper (6.19 gap-mask eligibility), for code that needs no private counters. */
export const blkRqDma: BlkRqDma = new BlkRqDma();

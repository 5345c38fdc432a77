/**
 * Test helpers of @dmakit/nvme-pci only (not shipped: src/testing/ is excluded from the build and
 * the tarball): fakes of the block layer's `BlkRqDmaMapper` contract and a request builder, so the
 * host driver is tested without @dmakit/block-rq-dma (a subsystem may not import a sibling; the
 * real mapper meets the driver in apps/demo's e2e tests). Helpers other packages need too live in
 * @dmakit/testkit.
 */
import { BlkStatus, dmaMapPhys, dmaMappingError, dmaNeedUnmap, rqDmaDir } from '@dmakit/dma-core';
import type { Bio, BlkDmaIter, BlkPhysVec, BlkRequest, BlkRqDmaMapper, Device, DmaIovaState, QueueLimits, ReqOp, SgTable } from '@dmakit/dma-core';

const PAGE = 4096;

/** Controller latencies that keep the simulated clock short (no per-byte cost). */
export const TEST_LATENCY_NS = { fetch: 100, admin: 1000, read: 2000, write: 2000, perByte: 0, interrupt: 50, ready: 50_000, reset: 5_000, shutdown: 2_000 };

/**
 * A `BlkRqDmaMapper` that maps nothing: every iterator call ends the walk with status OK, unmap
 * has nothing to do. The fakes below override what they model.
 */
export class NullBlkMapper implements BlkRqDmaMapper {
  readonly name: string = 'null-blk';
  blkRqDmaMapIterStart(_req: BlkRequest, _dev: Device, _state: DmaIovaState, _iter: BlkDmaIter): boolean {
    return false;
  }
  blkRqDmaMapIterNext(_req: BlkRequest, _dev: Device, _state: DmaIovaState, _iter: BlkDmaIter): boolean {
    return false;
  }
  blkRqDmaMapCoalesce(state: DmaIovaState): boolean {
    return state.size !== 0;
  }
  blkRqDmaUnmap(_req: BlkRequest, _dev: Device, _state: DmaIovaState, _mappedLen: number): boolean {
    return true;
  }
  blkRqIntegrityDmaMapIterStart(_req: BlkRequest, _dev: Device, _state: DmaIovaState, _iter: BlkDmaIter): boolean {
    return false;
  }
  blkRqIntegrityDmaMapIterNext(_req: BlkRequest, _dev: Device, _iter: BlkDmaIter): boolean {
    return false;
  }
  blkRqIntegrityDmaUnmap(): boolean {
    return true;
  }
  blkRqMapSg(_req: BlkRequest, _sgt: SgTable): number {
    return 0;
  }
  blkRqMapIntegritySg(): number {
    return 0;
  }
  reqBvec(_req: BlkRequest, _out: BlkPhysVec): boolean {
    return false;
  }
}

/** One direct mapping per bvec (what blk-mq-dma does without an IOMMU); segments = bvecs. */
export class DirectBlkMapper extends NullBlkMapper {
  override readonly name = 'fake-blk';
  /** blk_rq_dma_map_iter_start calls. */
  starts = 0;

  #map(req: BlkRequest, dev: Device, iter: BlkDmaIter): boolean {
    const bio = req.bio;
    const i = iter.iter.iter.idx;
    if (bio === null || i >= bio.vcnt) {
      iter.status = BlkStatus.OK;
      return false;
    }
    const phys = (bio.bvPage[i] ?? 0) + (bio.bvOffset[i] ?? 0);
    const len = bio.bvLen[i] ?? 0;
    const dma = dmaMapPhys(dev, phys, len, rqDmaDir(req), 0);
    if (dmaMappingError(dev, dma) !== 0) {
      iter.status = BlkStatus.RESOURCE;
      return false;
    }
    iter.addr = dma;
    iter.len = len;
    iter.iter.iter.idx = i + 1;
    return true;
  }

  override blkRqDmaMapIterStart(req: BlkRequest, dev: Device, state: DmaIovaState, iter: BlkDmaIter): boolean {
    this.starts++;
    state.reset();
    iter.iter.iter.idx = 0;
    iter.status = BlkStatus.OK;
    return this.#map(req, dev, iter);
  }

  override blkRqDmaMapIterNext(req: BlkRequest, dev: Device, _state: DmaIovaState, iter: BlkDmaIter): boolean {
    return this.#map(req, dev, iter);
  }

  override blkRqDmaUnmap(_req: BlkRequest, dev: Device): boolean {
    return !dmaNeedUnmap(dev);
  }

  override blkRqMapSg(req: BlkRequest, sgt: SgTable): number {
    const bio = req.bio;
    if (bio === null) return 0;
    for (let i = 0; i < bio.vcnt; i++) sgt.push((bio.bvPage[i] ?? 0) + (bio.bvOffset[i] ?? 0), bio.bvLen[i] ?? 0);
    return bio.vcnt;
  }

  override reqBvec(req: BlkRequest, out: BlkPhysVec): boolean {
    const bio = req.bio;
    if (bio === null || bio.vcnt === 0) return false;
    out.paddr = (bio.bvPage[0] ?? 0) + (bio.bvOffset[0] ?? 0);
    out.len = bio.bvLen[0] ?? 0;
    return true;
  }
}

/** A mapper that must not be asked at all (pre-mapped requests bypass it): refuses everything and counts the calls. */
export class RefusingBlkMapper extends NullBlkMapper {
  override readonly name = 'refusing-blk';
  calls = 0;
  #no(iter?: BlkDmaIter): boolean {
    this.calls++;
    if (iter !== undefined) iter.status = BlkStatus.IOERR;
    return false;
  }
  override blkRqDmaMapIterStart(_r: BlkRequest, _d: Device, _s: DmaIovaState, iter: BlkDmaIter): boolean {
    return this.#no(iter);
  }
  override blkRqDmaMapIterNext(_r: BlkRequest, _d: Device, _s: DmaIovaState, iter: BlkDmaIter): boolean {
    return this.#no(iter);
  }
  override blkRqDmaUnmap(): boolean {
    this.calls++;
    return true;
  }
  override blkRqIntegrityDmaMapIterStart(_r: BlkRequest, _d: Device, _s: DmaIovaState, iter: BlkDmaIter): boolean {
    return this.#no(iter);
  }
  override blkRqIntegrityDmaMapIterNext(_r: BlkRequest, _d: Device, iter: BlkDmaIter): boolean {
    return this.#no(iter);
  }
  override blkRqMapSg(): number {
    this.calls++;
    return 0;
  }
  override reqBvec(_r: BlkRequest, _out: BlkPhysVec): boolean {
    return this.#no();
  }
}

/**
 * The block layer's DMA iterator over a fixed list of (DMA address, length) segments, for driving
 * the PRP/SGL builders directly: `start` loads the first segment as blk_rq_dma_map_iter_start
 * would, `blkRqDmaMapIterNext` hands out the rest. Never coalesces; nothing to unmap.
 */
export class ListBlkMapper extends NullBlkMapper {
  override readonly name = 'list-iter';
  segs: (readonly [number, number])[] = [];
  #next = 1;

  /** Loads the first segment into `iter`, as blk_rq_dma_map_iter_start would. */
  start(iter: BlkDmaIter, segs: (readonly [number, number])[]): void {
    this.segs = segs;
    this.#next = 1;
    const s = segs[0] ?? [0, 0];
    iter.addr = s[0];
    iter.len = s[1];
    iter.status = BlkStatus.OK;
  }

  override blkRqDmaMapIterNext(_req: BlkRequest, _dev: Device, _state: DmaIovaState, iter: BlkDmaIter): boolean {
    const s = this.segs[this.#next];
    if (s === undefined) {
      iter.status = BlkStatus.OK;
      return false;
    }
    this.#next++;
    iter.addr = s[0];
    iter.len = s[1];
    return true;
  }

  override blkRqDmaMapCoalesce(): boolean {
    return false;
  }
}

/**
 * A request of one bio over address ranges `[addr, len]` (physical addresses, or a registered
 * buffer's token addresses), each range one bvec and one physical segment.
 */
export function makeRequest(limits: QueueLimits, op: ReqOp, sector: number, segs: readonly (readonly [number, number])[], done: (rq: BlkRequest, st: BlkStatus) => void, tag = 0): BlkRequest {
  const bio: Bio = {
    op,
    iter: { sector, size: segs.reduce((t, s) => t + s[1], 0), idx: 0, bvecDone: 0 },
    next: null,
    integrity: null,
    bvPage: Float64Array.from(segs, (s) => s[0] - (s[0] % PAGE)),
    bvOffset: Uint32Array.from(segs, (s) => s[0] % PAGE),
    bvLen: Uint32Array.from(segs, (s) => s[1]),
    vcnt: segs.length,
  };
  return { tag, op, cmdFlags: 0, rqFlags: 0, sector, dataLen: bio.iter.size, bio, nrPhysSegments: segs.length, nrIntegritySegments: 0, limits, specialVec: null, pdu: null, endIo: done };
}

// kernel: block/blk-mq-dma.c (blk_rq_map_iter_init, __blk_map_iter_next, blk_map_iter_next)
// The physical segment iterator: walks a request's bvecs across its bio chain, clips each segment
// to max_segment_size and the seg_boundary_mask window, and merges following bvecs (of the same
// bio or the next one) that are physically contiguous. No allocation per call.
import { RQF_SPECIAL_PAYLOAD } from '@dmakit/dma-core';
import type { BlkMapIter, BlkPhysVec, BlkRequest, BvecIter, BvecTable } from '@dmakit/dma-core';
import { biovecPhysMergeable, getMaxSegmentSize } from './limits.js';

const UINT_MAX = 0xffff_ffff;

function setIter(dst: BvecIter, src: BvecIter): void {
  dst.sector = src.sector;
  dst.size = src.size;
  dst.idx = src.idx;
  dst.bvecDone = src.bvecDone;
}

/** A one-entry bvec table for `special_vec` (discard ranges). */
function specialTable(paddr: number, len: number): BvecTable {
  const off = paddr % 4096;
  return { bvPage: Float64Array.of(paddr - off), bvOffset: Uint32Array.of(off), bvLen: Uint32Array.of(len), vcnt: 1 };
}

/** A fresh, empty `struct blk_map_iter`. */
export function blkMapIterCreate(): BlkMapIter {
  return { iter: { sector: 0, size: 0, idx: 0, bvecDone: 0 }, bio: null, bvecs: null, isIntegrity: false };
}

/** `blk_rq_map_iter_init(rq, iter)`: the data stream (special payload, bio chain, or nothing). */
export function blkRqMapIterInit(rq: BlkRequest, it: BlkMapIter): void {
  it.isIntegrity = false;
  const bio = rq.bio;
  if ((rq.rqFlags & RQF_SPECIAL_PAYLOAD) !== 0 && rq.specialVec !== null) {
    it.bio = null;
    it.bvecs = specialTable(rq.specialVec.paddr, rq.specialVec.len);
    setIter(it.iter, { sector: 0, size: rq.specialVec.len, idx: 0, bvecDone: 0 });
  } else if (bio !== null) {
    it.bio = bio;
    it.bvecs = bio;
    setIter(it.iter, bio.iter);
  } else {
    // The internal flush request may have no bio.
    it.bio = null;
    it.bvecs = null;
    setIter(it.iter, { sector: 0, size: 0, idx: 0, bvecDone: 0 });
  }
}

/** The integrity stream's iterator start (the integrity side of blk_rq_map_iter_init() in block/blk-mq-dma.c); false when the request's first bio has no PI payload. */
export function blkRqIntegrityMapIterInit(rq: BlkRequest, it: BlkMapIter): boolean {
  const bip = rq.bio?.integrity ?? null;
  it.isIntegrity = true;
  it.bio = rq.bio;
  if (bip === null) {
    it.bvecs = null;
    setIter(it.iter, { sector: 0, size: 0, idx: 0, bvecDone: 0 });
    return false;
  }
  it.bvecs = bip;
  setIter(it.iter, bip.iter);
  return true;
}

/** `__blk_map_iter_next`: bytes left in this bio, or move to the next bio of the chain. */
function advanceBio(it: BlkMapIter): boolean {
  if (it.iter.size !== 0) return true;
  const bio = it.bio;
  if (bio === null || bio.next === null) return false;
  const next = bio.next;
  it.bio = next;
  if (it.isIntegrity) {
    const bip = next.integrity;
    if (bip === null) return false;
    it.bvecs = bip;
    setIter(it.iter, bip.iter);
  } else {
    it.bvecs = next;
    setIter(it.iter, next.iter);
  }
  return true;
}

/** `bvec_iter_advance_single`: advance inside the current bvec. */
function advanceSingle(t: BvecTable, iter: BvecIter, bytes: number): void {
  const done = iter.bvecDone + bytes;
  iter.size -= bytes;
  if (done === (t.bvLen[iter.idx] ?? 0)) {
    iter.idx++;
    iter.bvecDone = 0;
  } else iter.bvecDone = done;
}

/**
 * `blk_map_iter_next(req, iter, vec)`: the next physical segment into `vec`; false when the
 * stream is exhausted.
 */
export function blkMapIterNext(rq: BlkRequest, it: BlkMapIter, vec: BlkPhysVec): boolean {
  const t0 = it.bvecs;
  if (t0 === null || it.iter.size === 0) return false;
  const lim = rq.limits;
  // mp_bvec_iter_bvec: the rest of the current bvec, clipped to the residual size.
  let idx = it.iter.idx;
  const paddr = (t0.bvPage[idx] ?? 0) + (t0.bvOffset[idx] ?? 0) + it.iter.bvecDone;
  let len = Math.min((t0.bvLen[idx] ?? 0) - it.iter.bvecDone, it.iter.size);
  if (len <= 0) return false; // a malformed table (zero-length bvec): stop rather than spin
  const maxSize = getMaxSegmentSize(lim, paddr, UINT_MAX);
  len = Math.min(len, maxSize);
  advanceSingle(t0, it.iter, len);
  // Entirely done with this bvec: try to merge the following ones.
  while (it.iter.size === 0 || it.iter.bvecDone === 0) {
    if (!advanceBio(it)) break;
    const t = it.bvecs;
    if (t === null) break;
    idx = it.iter.idx;
    const np = (t.bvPage[idx] ?? 0) + (t.bvOffset[idx] ?? 0) + it.iter.bvecDone;
    const nl = Math.min((t.bvLen[idx] ?? 0) - it.iter.bvecDone, it.iter.size);
    if (nl <= 0) break;
    if (len + nl > maxSize || !biovecPhysMergeable(lim, paddr, len, np, nl)) break;
    len += nl;
    advanceSingle(t, it.iter, nl);
  }
  vec.paddr = paddr;
  vec.len = len;
  return true;
}

// kernel: block/blk-merge.c (bio_split_io_at / bio_split_rw_at, bvec_split_segs, bio_will_gap,
// ll_back_merge_fn, __bio_split_to_limits), block/blk-mq.c (blk_mq_bio_to_request, plug merge)
// Requests built from bios under queue limits: each bio is split where it would exceed
// max_sectors, max_segments, or leave a virt-boundary gap, then back-merged into the previous
// request when the sectors follow, the limits allow and no gap would appear.
import { BlkStatus, Errno, ReqOp, REQ_INTEGRITY, RQF_SPECIAL_PAYLOAD, SECTOR_SHIFT } from '@dmakit/dma-core';
import type { Bio, BlkPhysVec, BlkRequest, BlkRqEndIo, QueueLimits } from '@dmakit/dma-core';
import { bioSplit } from './bio.js';
import type { BlkBio } from './bio.js';
import { bioIntegrityBytes, biovecPhysMergeable, bvecGapToPrev, getMaxSegmentSize } from './limits.js';
import { blkMapIterCreate, blkMapIterNext, blkRqMapIterInit } from './mapIter.js';
import { errnoToBlkStatus } from './status.js';

/** `struct request` (the model's implementation of the dma-core shape). */
export class BlkRq implements BlkRequest {
  readonly tag: number;
  /** The operation (set again when the request is reinitialised by `blkRqInitFromBio`). */
  op: ReqOp;
  cmdFlags: number;
  rqFlags: number;
  sector: number;
  dataLen: number;
  bio: Bio | null;
  biotail: Bio | null;
  nrPhysSegments: number;
  nrIntegritySegments: number;
  readonly limits: QueueLimits;
  specialVec: BlkPhysVec | null = null;
  pdu: unknown = null;
  endIo: BlkRqEndIo | null = null;
  /**
   * OR of the low 32 bits of every interior physical segment boundary (each segment's end and
   * the next one's start): where segments can start and end (6.19 `req_phys_gap_mask`). -1 =
   * not computed yet.
   */
  physGapMask = -1;

  constructor(tag: number, op: ReqOp, limits: QueueLimits, sector: number) {
    this.tag = tag;
    this.op = op;
    this.cmdFlags = 0;
    this.rqFlags = 0;
    this.sector = sector;
    this.dataLen = 0;
    this.bio = null;
    this.biotail = null;
    this.nrPhysSegments = 0;
    this.nrIntegritySegments = 0;
    this.limits = limits;
  }
}

/** `blk_rq_init` for a request without data (flush) or with a special payload (discard). */
export function blkRqAlloc(limits: QueueLimits, op: ReqOp, sector = 0, tag = 0): BlkRq {
  return new BlkRq(tag, op, limits, sector);
}

/** Attach a special payload (`RQF_SPECIAL_PAYLOAD`, e.g. a DSM range list) of `len` bytes at `paddr`. */
export function blkRqSetSpecialPayload(rq: BlkRq, paddr: number, len: number): void {
  rq.specialVec = { paddr, len };
  rq.rqFlags |= RQF_SPECIAL_PAYLOAD;
}

const segScratch: BlkPhysVec = { paddr: 0, len: 0 };
const iterScratch = blkMapIterCreate();

/**
 * The request's gap mask: OR of the low 32 bits of each interior segment boundary. Walks the
 * physical segments once (cached on BlkRq instances).
 */
export function reqPhysGapMask(rq: BlkRequest): number {
  if (rq instanceof BlkRq && rq.physGapMask >= 0) return rq.physGapMask;
  blkRqMapIterInit(rq, iterScratch);
  let mask = 0;
  let prevEnd = -1;
  while (blkMapIterNext(rq, iterScratch, segScratch)) {
    if (prevEnd >= 0) mask |= (prevEnd >>> 0) | (segScratch.paddr >>> 0);
    prevEnd = segScratch.paddr + segScratch.len;
  }
  mask >>>= 0;
  if (rq instanceof BlkRq) rq.physGapMask = mask;
  return mask;
}

/** Result of `bioSplitIoAt`: `sectors` 0 = fits whole, > 0 = split after that many sectors, < 0 = errno; `segs` = segments counted. */
export interface SplitResult {
  sectors: number;
  segs: number;
}

/**
 * `bvec_split_segs`: count the segments of one bvec of `bvLen` bytes at `phys` (page offset
 * `bvOffset`) that still fit; returns [took bytes, segs, mustSplit].
 */
function bvecSplitSegs(lim: QueueLimits, phys: number, bvOffset: number, bvLen: number, state: { nsegs: number; bytes: number }, maxSegs: number, maxBytes: number): boolean {
  const maxLen = maxBytes - state.bytes;
  let len = Math.min(bvLen, maxLen);
  let total = 0;
  while (len > 0 && state.nsegs < maxSegs) {
    const seg = getMaxSegmentSize(lim, phys + total, len);
    state.nsegs++;
    total += seg;
    len -= seg;
    if (((bvOffset + total) & lim.virtBoundaryMask) !== 0) break;
  }
  state.bytes += total;
  return len > 0 || bvLen > maxLen;
}

const splitState = { nsegs: 0, bytes: 0 };

/**
 * `bio_split_io_at(bio, lim, &segs, max_bytes, len_align_mask)`: where `bio` must be split to fit
 * the limits (sectors, 0 = no split) and how many segments the (first part of the) bio has;
 * sectors = -EINVAL for a misaligned bvec.
 */
export function bioSplitIoAt(bio: Bio, lim: QueueLimits, maxBytes: number): SplitResult {
  const st = splitState;
  st.nsegs = 0;
  st.bytes = 0;
  const lenAlignMask = lim.logicalBlockSize - 1;
  let idx = bio.iter.idx;
  let done = bio.iter.bvecDone;
  let left = bio.iter.size;
  let havePrev = false;
  let prevEnd = 0; // bv_offset + bv_len of the previous bvec
  let split = false;
  while (left > 0) {
    const page = bio.bvPage[idx] ?? 0;
    const off = (bio.bvOffset[idx] ?? 0) + done;
    const len = Math.min((bio.bvLen[idx] ?? 0) - done, left);
    if (len <= 0) return { sectors: -Errno.EINVAL, segs: 0 };
    const phys = page + off;
    const pageOff = phys % 4096;
    if ((pageOff & lim.dmaAlignment) !== 0 || (len & lenAlignMask) !== 0) return { sectors: -Errno.EINVAL, segs: 0 };
    if (havePrev && bvecGapToPrev(lim, prevEnd, pageOff)) {
      split = true;
      break;
    }
    if (st.nsegs < lim.maxSegments && st.bytes + len <= maxBytes && pageOff + len <= 4096) {
      st.nsegs++;
      st.bytes += len;
    } else if (bvecSplitSegs(lim, phys, pageOff, len, st, lim.maxSegments, maxBytes)) {
      split = true;
      break;
    }
    prevEnd = pageOff + len;
    havePrev = true;
    left -= len;
    idx++;
    done = 0;
  }
  if (!split) return { sectors: 0, segs: st.nsegs };
  // Round down to the logical block size (bio_split_alignment).
  const bytes = st.bytes - (st.bytes % lim.logicalBlockSize);
  if (bytes === 0) return { sectors: -Errno.EINVAL, segs: 0 };
  return { sectors: bytes >> SECTOR_SHIFT, segs: st.nsegs };
}

/** `get_max_io_size(bio, lim)` in bytes: max_sectors rounded down to the logical block size. */
function maxIoBytes(lim: QueueLimits): number {
  const lbs = lim.logicalBlockSize >> SECTOR_SHIFT;
  const sectors = Math.max(lbs, lim.maxSectors - (lim.maxSectors % lbs));
  return sectors * 512;
}

/** What `blkRqsFromBios` built. */
export interface BlkBuildResult {
  readonly requests: BlkRq[];
  /** Bios (or split parts) that could not be turned into requests, with their status. */
  readonly failed: { bio: Bio; status: BlkStatus }[];
  /** `bio_split` calls made. */
  splits: number;
  /** Bios back-merged into an existing request. */
  merges: number;
}

/** Options of blkRqsFromBios(): plug merging and the first tag. */
export interface BlkBuildOptions {
  /** Back-merge contiguous bios into the previous request (plug merging). Default true. */
  merge?: boolean;
  /** First tag to hand out. Default 0. */
  firstTag?: number;
}

function bioSegsPi(lim: QueueLimits, bio: Bio): number {
  const bip = bio.integrity;
  if (bip === null) return 0;
  // Integrity segments: one per bvec that does not merge with the previous (blk_rq_count_integrity_sg).
  let n = 0;
  let prevEnd = -1;
  let idx = bip.iter.idx;
  let done = bip.iter.bvecDone;
  let left = bip.iter.size;
  while (left > 0) {
    const p = (bip.bvPage[idx] ?? 0) + (bip.bvOffset[idx] ?? 0) + done;
    const l = Math.min((bip.bvLen[idx] ?? 0) - done, left);
    if (l <= 0) break;
    if (prevEnd !== p || !biovecPhysMergeable(lim, p - 1, 1, p, l)) n++;
    prevEnd = p + l;
    left -= l;
    idx++;
    done = 0;
  }
  return n;
}

/** First bvec's page offset and last bvec's end offset of a bio (for the gap check). */
function firstOffset(bio: Bio): number {
  return ((bio.bvPage[bio.iter.idx] ?? 0) + (bio.bvOffset[bio.iter.idx] ?? 0) + bio.iter.bvecDone) % 4096;
}

function lastBvec(bio: Bio, out: BlkPhysVec): void {
  // Walk to the bvec holding the last byte.
  let idx = bio.iter.idx;
  let done = bio.iter.bvecDone;
  let left = bio.iter.size;
  let p = 0;
  let l = 0;
  while (left > 0) {
    p = (bio.bvPage[idx] ?? 0) + (bio.bvOffset[idx] ?? 0) + done;
    l = Math.min((bio.bvLen[idx] ?? 0) - done, left);
    if (l <= 0) break;
    left -= l;
    idx++;
    done = 0;
  }
  out.paddr = p;
  out.len = l;
}

const lastScratch: BlkPhysVec = { paddr: 0, len: 0 };

/** `bio_will_gap(q, rq, prev, next)`: would appending `next` after `prev` break the virt boundary? */
export function bioWillGap(lim: QueueLimits, rq: BlkRq, prev: Bio, next: Bio): boolean {
  if (lim.virtBoundaryMask === 0 || prev.iter.size === 0) return false;
  const first = rq.bio ?? prev;
  if ((firstOffset(first) & lim.virtBoundaryMask) !== 0) return true;
  lastBvec(prev, lastScratch);
  const np = (next.bvPage[next.iter.idx] ?? 0) + (next.bvOffset[next.iter.idx] ?? 0) + next.iter.bvecDone;
  const nl = Math.min((next.bvLen[next.iter.idx] ?? 0) - next.iter.bvecDone, next.iter.size);
  if (biovecPhysMergeable(lim, lastScratch.paddr, lastScratch.len, np, nl)) return false;
  const pEnd = (lastScratch.paddr % 4096) + lastScratch.len;
  return bvecGapToPrev(lim, pEnd, np % 4096);
}

function appendBio(rq: BlkRq, bio: Bio, segs: number, lim: QueueLimits): void {
  if (rq.biotail === null) rq.bio = bio;
  else rq.biotail.next = bio;
  bio.next = null;
  rq.biotail = bio;
  rq.dataLen += bio.iter.size;
  rq.nrPhysSegments += segs;
  if (bio.integrity !== null) {
    rq.cmdFlags |= REQ_INTEGRITY;
    rq.nrIntegritySegments += bioSegsPi(lim, bio);
  }
}

/**
 * Build requests from a list of bios (submit_bio of each, then plug flush): split every bio to
 * the queue limits, then back-merge it into the previous request when contiguous and allowed.
 * Bios with misaligned vectors fail with BLK_STS_INVAL; nothing throws.
 */
export function blkRqsFromBios(limits: QueueLimits, bios: readonly BlkBio[], opts: BlkBuildOptions = {}): BlkBuildResult {
  const merge = opts.merge ?? true;
  let tag = opts.firstTag ?? 0;
  const res: BlkBuildResult = { requests: [], failed: [], splits: 0, merges: 0 };
  const maxBytes = maxIoBytes(limits);
  let cur: BlkRq | null = null;
  for (const whole of bios) {
    if (whole.iter.size === 0 || whole.op === ReqOp.FLUSH) {
      res.failed.push({ bio: whole, status: BlkStatus.INVAL });
      continue;
    }
    const bio: BlkBio = whole;
    for (;;) {
      const r = bioSplitIoAt(bio, limits, maxBytes);
      if (r.sectors < 0) {
        res.failed.push({ bio, status: errnoToBlkStatus(r.sectors) });
        break;
      }
      let part: BlkBio = bio;
      let last = true;
      if (r.sectors > 0) {
        const pi = bioIntegrityBytes(limits, r.sectors);
        const s = bioSplit(bio, r.sectors, pi);
        if (s === null) {
          res.failed.push({ bio, status: BlkStatus.INVAL });
          break;
        }
        res.splits++;
        part = s;
        last = false;
      }
      const segs = r.segs === 0 ? 1 : r.segs;
      const sectors = part.iter.size >> SECTOR_SHIFT;
      const canMerge =
        merge &&
        cur !== null &&
        cur.op === part.op &&
        cur.biotail !== null &&
        cur.sector + (cur.dataLen >> SECTOR_SHIFT) === part.iter.sector &&
        (cur.dataLen >> SECTOR_SHIFT) + sectors <= limits.maxSectors &&
        cur.nrPhysSegments + segs <= limits.maxSegments &&
        (cur.bio?.integrity == null) === (part.integrity === null) &&
        (part.integrity === null || cur.nrIntegritySegments + bioSegsPi(limits, part) <= Math.max(1, limits.maxIntegritySegments)) &&
        !bioWillGap(limits, cur, cur.biotail, part);
      if (canMerge && cur !== null) {
        appendBio(cur, part, segs, limits);
        res.merges++;
      } else {
        cur = new BlkRq(tag++, part.op, limits, part.iter.sector);
        appendBio(cur, part, segs, limits);
        res.requests.push(cur);
      }
      if (last) break;
    }
  }
  for (const rq of res.requests) reqPhysGapMask(rq);
  return res;
}

/**
 * Reinitialise `rq` (its tag and queue limits kept) as the request of one bio that must fit the
 * limits without splitting, as blk-mq hands out the tag's preallocated request and reinitialises
 * it (`blk_mq_rq_ctx_init`, `blk_mq_bio_to_request`) instead of allocating one per I/O. The same
 * checks as `blkRqFromBio`: false, and `rq` untouched, when the bio is empty, a flush, misaligned,
 * needs a split, or is a chain. dmakit helper.
 */
export function blkRqInitFromBio(rq: BlkRq, bio: BlkBio): boolean {
  if (bio.iter.size === 0 || bio.op === ReqOp.FLUSH || bio.next !== null) return false;
  const limits = rq.limits;
  const r = bioSplitIoAt(bio, limits, maxIoBytes(limits));
  if (r.sectors !== 0) return false;
  rq.op = bio.op;
  rq.cmdFlags = 0;
  rq.rqFlags = 0;
  rq.sector = bio.iter.sector;
  rq.dataLen = 0;
  rq.bio = null;
  rq.biotail = null;
  rq.nrPhysSegments = 0;
  rq.nrIntegritySegments = 0;
  rq.specialVec = null;
  rq.pdu = null;
  rq.endIo = null;
  rq.physGapMask = -1;
  appendBio(rq, bio, r.segs === 0 ? 1 : r.segs, limits);
  reqPhysGapMask(rq);
  return true;
}

/** One request from one bio chain that must fit the limits without splitting; null if it does not. dmakit helper (the kernel builds requests in blk_mq_submit_bio()). */
export function blkRqFromBio(limits: QueueLimits, bio: BlkBio, tag = 0): BlkRq | null {
  const r = blkRqsFromBios(limits, [bio], { firstTag: tag });
  if (r.failed.length > 0 || r.requests.length !== 1 || r.splits > 0) return null;
  return r.requests[0] ?? null;
}

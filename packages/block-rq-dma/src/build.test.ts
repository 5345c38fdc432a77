// Bios, queue limits, splitting and the physical segment iterator (block/blk-merge.c, blk-mq-dma.c).
import { describe, expect, it } from 'vitest';
import { BlkStatus, blkDmaIterInit, blkRqNrPhysSegments, Errno, ReqOp, RQF_SPECIAL_PAYLOAD, SgTable } from '@dmakit/dma-core';
import type { BlkPhysVec, BlkRequest } from '@dmakit/dma-core';
import {
  BLK_MAX_SEGMENT_SIZE,
  bioAddPhys,
  bioAlloc,
  bioFromRanges,
  blkMapIterCreate,
  blkMapIterNext,
  blkRqAlloc,
  blkRqDma,
  blkRqFromBio,
  blkRqInitFromBio,
  bioReset,
  bioSplit,
  blkRqMapIterInit,
  blkRqIntegrityMapIterInit,
  blkRqSetSpecialPayload,
  bioIntegrityAddPhys,
  bioIntegrityAlloc,
  blkRqsFromBios,
  blkValidateLimits,
  getMaxSegmentSize,
  nvmeQueueLimits,
  queueLimits,
  reqPhysGapMask,
} from '@dmakit/block-rq-dma';

const K = 1024;
const P = 4096;

function segments(rq: BlkRequest): [number, number][] {
  const it = blkMapIterCreate();
  blkRqMapIterInit(rq, it);
  const v: BlkPhysVec = { paddr: 0, len: 0 };
  const out: [number, number][] = [];
  while (blkMapIterNext(rq, it, v)) out.push([v.paddr, v.len]);
  return out;
}

describe('queue limits (blk_validate_limits)', () => {
  it('fills the kernel defaults', () => {
    const l = queueLimits();
    expect(l.maxSegments).toBe(128);
    expect(l.maxSegmentSize).toBe(BLK_MAX_SEGMENT_SIZE);
    expect(l.segBoundaryMask).toBe(0xffff_ffff);
    expect(l.maxHwSectors).toBe(255);
    expect(l.maxSectors).toBe(255);
    expect(l.dmaAlignment).toBe(511);
  });

  it('a virt boundary makes max_segment_size UINT_MAX; bad values are -EINVAL', () => {
    expect(nvmeQueueLimits().maxSegmentSize).toBe(0xffff_ffff);
    expect(blkValidateLimits({ virtBoundaryMask: 4095, maxSegmentSize: 65536 })).toBe(-Errno.EINVAL);
    expect(blkValidateLimits({ segBoundaryMask: 0x1234 })).toBe(-Errno.EINVAL);
    expect(blkValidateLimits({ logicalBlockSize: 1000 })).toBe(-Errno.EINVAL);
    expect(blkValidateLimits({ maxSegments: 0 })).toBe(-Errno.EINVAL);
    expect(() => queueLimits({ maxSegmentSize: 100 })).toThrow(RangeError);
  });

  it('get_max_segment_size clips to max_segment_size and the boundary window', () => {
    const l = queueLimits({ segBoundaryMask: 0xffff, maxSegmentSize: 0x8000 });
    expect(getMaxSegmentSize(l, 0x10000, 0xffff_ffff)).toBe(0x8000);
    expect(getMaxSegmentSize(l, 0x1f000, 0xffff_ffff)).toBe(0x1000);
    expect(getMaxSegmentSize(l, 0x1f000, 100)).toBe(100);
    // 64-bit addresses: no 32-bit truncation.
    expect(getMaxSegmentSize(queueLimits({ segBoundaryMask: Number.MAX_SAFE_INTEGER, maxSegmentSize: 0xffff_ffff }), 2 ** 40 + 5, 0xffff_ffff)).toBe(0xffff_ffff);
  });
});

describe('bios and bvecs', () => {
  it('bio_add_page merges physically contiguous ranges into one multi-page bvec', () => {
    const bio = bioFromRanges(ReqOp.WRITE, 0, [0x10000, P, 0x11000, P, 0x20000, P])!;
    expect(bio.vcnt).toBe(2);
    expect(bio.bvLen[0]).toBe(2 * P);
    expect(bio.iter.size).toBe(3 * P);
    const nomerge = bioFromRanges(ReqOp.WRITE, 0, [0x10000, P, 0x11000, P], false)!;
    expect(nomerge.vcnt).toBe(2);
  });

  it('refuses bad input without throwing', () => {
    expect(bioAlloc(ReqOp.READ, -1)).toBeNull();
    expect(bioAlloc(7 as ReqOp, 0)).toBeNull();
    expect(bioAlloc(ReqOp.READ, 0, 0)).toBeNull();
    const bio = bioAlloc(ReqOp.READ, 0, 1)!;
    expect(bioAddPhys(bio, 0x1000, 0)).toBe(0);
    expect(bioAddPhys(bio, -5, 512)).toBe(0);
    expect(bioAddPhys(bio, 0x1000, 512)).toBe(512);
    expect(bioAddPhys(bio, 0x9000, 512)).toBe(0); // full
    expect(bioFromRanges(ReqOp.READ, 0, [1, 2, 3])).toBeNull();
  });
});

describe('building requests under the limits', () => {
  it('splits at max_sectors, rounded to the logical block size', () => {
    const lim = queueLimits({ maxHwSectors: 64, maxSegmentSize: 1 << 20, logicalBlockSize: 4096 }); // 32 KiB
    const bio = bioFromRanges(ReqOp.READ, 0, [0x100000, 100 * K])!;
    const r = blkRqsFromBios(lim, [bio]);
    expect(r.failed).toEqual([]);
    expect(r.requests.map((q) => q.dataLen)).toEqual([32 * K, 32 * K, 32 * K, 4 * K]);
    expect(r.requests.map((q) => q.sector)).toEqual([0, 64, 128, 192]);
    expect(r.splits).toBe(3);
  });

  it('splits at max_segments', () => {
    const lim = queueLimits({ maxSegments: 4, maxHwSectors: 1024 });
    const ranges: number[] = [];
    for (let i = 0; i < 10; i++) ranges.push(0x100000 + i * 2 * P, P); // 10 discontiguous pages
    const r = blkRqsFromBios(lim, [bioFromRanges(ReqOp.WRITE, 8, ranges)!]);
    expect(r.requests.map((q) => q.nrPhysSegments)).toEqual([4, 4, 2]);
    expect(r.requests.map((q) => q.dataLen)).toEqual([4 * P, 4 * P, 2 * P]);
    expect(r.requests.map((q) => q.sector)).toEqual([8, 40, 72]);
  });

  it('splits where a bvec would leave a virt-boundary gap', () => {
    const lim = nvmeQueueLimits();
    // Second bvec starts 512 bytes into a page: a gap after the first one.
    const bio = bioFromRanges(ReqOp.WRITE, 0, [0x100000, P, 0x200200, 512, 0x300000, P])!;
    const r = blkRqsFromBios(lim, [bio]);
    // The 512-byte piece starts and ends inside a page: a gap on both sides, three requests
    // (the split parts do not merge back, bio_will_gap refuses them).
    expect(r.requests.map((q) => q.dataLen)).toEqual([P, 512, P]);
    expect(r.splits).toBe(2);
    for (const q of r.requests) expect(segments(q)).toHaveLength(1);
  });

  it('back-merges contiguous bios, not across a gap or a sector hole', () => {
    const lim = nvmeQueueLimits();
    const a = bioFromRanges(ReqOp.READ, 0, [0x100000, P])!;
    const b = bioFromRanges(ReqOp.READ, 8, [0x101000, P])!; // physically contiguous with a
    const c = bioFromRanges(ReqOp.READ, 16, [0x300000, P])!;
    const d = bioFromRanges(ReqOp.READ, 100, [0x400000, P])!; // sector hole
    const e = bioFromRanges(ReqOp.WRITE, 101, [0x500000, P])!; // other op
    const r = blkRqsFromBios(lim, [a, b, c, d, e]);
    expect(r.requests.map((q) => q.dataLen)).toEqual([3 * P, P, P]);
    expect(r.merges).toBe(2);
    const first = r.requests[0]!;
    expect(first.nrPhysSegments).toBe(3);
    // The iterator merges a and b across the bio boundary: two physical segments.
    expect(segments(first)).toEqual([
      [0x100000, 2 * P],
      [0x300000, P],
    ]);
    const unaligned = bioFromRanges(ReqOp.READ, 0, [0x100200, 3584])!;
    const next = bioFromRanges(ReqOp.READ, 8, [0x300000, P])!;
    expect(blkRqsFromBios(lim, [unaligned, next]).requests).toHaveLength(2);
  });

  it('splits the integrity payload in proportion to the data', () => {
    const lim = queueLimits({ maxHwSectors: 8, integrityTupleSize: 8, maxIntegritySegments: 1 });
    const bio = bioFromRanges(ReqOp.WRITE, 0, [0x100000, 16 * K])!;
    bioIntegrityAlloc(bio, 1);
    expect(bioIntegrityAddPhys(bio, 0x900000, 32 * 8)).toBe(256);
    const r = blkRqsFromBios(lim, [bio]);
    expect(r.requests).toHaveLength(4);
    const it = blkMapIterCreate();
    const v: BlkPhysVec = { paddr: 0, len: 0 };
    r.requests.forEach((rq, i) => {
      expect(rq.nrIntegritySegments).toBe(1);
      expect(blkRqIntegrityMapIterInit(rq, it)).toBe(true);
      expect(blkMapIterNext(rq, it, v)).toBe(true);
      expect(v).toEqual({ paddr: 0x900000 + i * 64, len: 64 });
      expect(blkMapIterNext(rq, it, v)).toBe(false);
    });
  });

  it('fails misaligned bios with BLK_STS_INVAL and keeps the rest', () => {
    const lim = queueLimits();
    const ok = bioFromRanges(ReqOp.READ, 0, [0x100000, P])!;
    const odd = bioFromRanges(ReqOp.READ, 100, [0x200000, 100])!; // not a multiple of 512
    const r = blkRqsFromBios(lim, [ok, odd]);
    expect(r.requests).toHaveLength(1);
    expect(r.failed).toHaveLength(1);
    expect(r.failed[0]!.status).toBe(BlkStatus.INVAL);
    expect(blkRqFromBio(lim, bioFromRanges(ReqOp.READ, 0, [0x100000, 1 << 20])!)).toBeNull(); // needs a split
  });
});

describe('reusing bios and requests (bio_reset, a tag\'s preallocated request)', () => {
  const fields = (rq: BlkRequest): unknown => ({
    tag: rq.tag,
    op: rq.op,
    cmdFlags: rq.cmdFlags,
    rqFlags: rq.rqFlags,
    sector: rq.sector,
    dataLen: rq.dataLen,
    nrPhysSegments: rq.nrPhysSegments,
    gap: reqPhysGapMask(rq),
    segs: segments(rq),
  });

  it('a reset bio and a reinitialised request equal freshly built ones, I/O after I/O', () => {
    const lim = queueLimits({ maxSegmentSize: 16 * K, segBoundaryMask: 0xffff, maxHwSectors: 4096 });
    const bio = bioAlloc(ReqOp.WRITE, 0, 4)!;
    const rq = blkRqAlloc(lim, ReqOp.READ, 0, 7);
    const cases: [ReqOp, number, number[]][] = [
      [ReqOp.READ, 8, [0x10000, P]],
      [ReqOp.WRITE, 64, [0xf000, 2 * P, 0x40000, 10 * P]],
      [ReqOp.READ, 0, [0x90200, 512, 0x91000, 1024]],
    ];
    for (const [op, sector, ranges] of cases) {
      expect(bioReset(bio, op, sector)).toBe(true);
      for (let i = 0; i < ranges.length; i += 2) expect(bioAddPhys(bio, ranges[i]!, ranges[i + 1]!)).toBe(ranges[i + 1]);
      expect(blkRqInitFromBio(rq, bio)).toBe(true);
      const fresh = blkRqFromBio(lim, bioFromRanges(op, sector, ranges)!, 7)!;
      expect(fields(rq)).toEqual(fields(fresh));
      expect(rq.bio).toBe(bio);
      expect(rq.pdu).toBeNull();
      expect(rq.endIo).toBeNull();
    }
  });

  it('refuses what blkRqFromBio refuses and leaves the request untouched', () => {
    const lim = queueLimits();
    const rq = blkRqAlloc(lim, ReqOp.READ, 0, 1);
    const bio = bioAlloc(ReqOp.READ, 0, 2)!;
    expect(blkRqInitFromBio(rq, bio)).toBe(false); // empty bio
    expect(bioAddPhys(bio, 0x100000, 1 << 20)).toBe(1 << 20);
    expect(blkRqInitFromBio(rq, bio)).toBe(false); // needs a split
    expect(bioReset(bio, ReqOp.READ, 3)).toBe(true);
    expect(bioAddPhys(bio, 0x100000, 100)).toBe(100);
    expect(blkRqInitFromBio(rq, bio)).toBe(false); // not a multiple of the logical block size
    expect(fields(rq)).toEqual(fields(blkRqAlloc(lim, ReqOp.READ, 0, 1)));
  });

  it('bio_reset refuses a bad op or sector and a clone', () => {
    const bio = bioFromRanges(ReqOp.READ, 0, [0x100000, 4 * P])!;
    expect(bioReset(bio, 99 as ReqOp, 0)).toBe(false);
    expect(bioReset(bio, ReqOp.READ, -1)).toBe(false);
    expect(bio.iter.size).toBe(4 * P);
    const clone = bioSplit(bio, 8, 0)!;
    expect(clone).not.toBeNull();
    expect(bioReset(clone, ReqOp.READ, 0)).toBe(false);
  });
});

describe('the physical segment iterator (blk_map_iter_next)', () => {
  it('clips to max_segment_size and the segment boundary, merges contiguous bvecs', () => {
    const lim = queueLimits({ maxSegmentSize: 16 * K, segBoundaryMask: 0xffff, maxHwSectors: 4096 });
    // 0xf000..0x11000 crosses a 64 KiB line; then 40 KiB contiguous; then a separate page.
    const bio = bioFromRanges(ReqOp.READ, 0, [0xf000, 2 * P, 0x40000, 10 * P, 0x90000, P], false)!;
    const rq = blkRqFromBio(lim, bio)!;
    expect(segments(rq)).toEqual([
      [0xf000, P],
      [0x10000, P],
      [0x40000, 16 * K],
      [0x44000, 16 * K],
      [0x48000, 8 * K],
      [0x90000, P],
    ]);
    // bio_split_io_at counts per bvec, the iterator merges: nr_phys_segments is an upper bound.
    expect(rq.nrPhysSegments).toBeGreaterThanOrEqual(6);
    const sgt = new SgTable(rq.nrPhysSegments);
    expect(blkRqDma.blkRqMapSg(rq, sgt)).toBe(6);
    expect(Array.from(sgt.length.subarray(0, 6))).toEqual([P, P, 16 * K, 16 * K, 8 * K, P]);
    expect(blkRqDma.blkRqMapSg(rq, new SgTable(2))).toBe(0); // too small: refused, not overrun
  });

  it('the gap mask collects interior boundaries only', () => {
    const lim = queueLimits({ maxSegmentSize: 1 << 20, maxHwSectors: 4096 });
    const aligned = blkRqFromBio(lim, bioFromRanges(ReqOp.READ, 0, [0x10200, 3584, 0x30000, P, 0x50000, 1536])!)!;
    expect(reqPhysGapMask(aligned) & 0xfff).toBe(0);
    const gappy = blkRqFromBio(lim, bioFromRanges(ReqOp.READ, 0, [0x10000, 2048, 0x30000, 2048])!)!;
    expect(reqPhysGapMask(gappy) & 0xfff).toBe(0x800);
  });

  it('special payloads and requests without data', () => {
    const lim = queueLimits();
    const flush = blkRqAlloc(lim, ReqOp.FLUSH);
    expect(segments(flush)).toEqual([]);
    const dsm = blkRqAlloc(lim, ReqOp.DISCARD);
    blkRqSetSpecialPayload(dsm, 0x7000, 64);
    expect(dsm.rqFlags & RQF_SPECIAL_PAYLOAD).not.toBe(0);
    expect(blkRqNrPhysSegments(dsm)).toBe(1);
    expect(segments(dsm)).toEqual([[0x7000, 64]]);
    const v = { paddr: 0, len: 0 };
    expect(blkRqDma.reqBvec(flush, v)).toBe(false);
    expect(blkDmaIterInit().status).toBe(BlkStatus.OK);
  });
});

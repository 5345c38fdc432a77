// kernel: block/bio.c (bio_alloc, bio_add_page, bvec_try_merge_page, bio_split), include/linux/bvec.h,
// block/bio-integrity.c (bio_integrity_alloc, bio_integrity_add_page)
import { PAGE_SIZE, ReqOp, SECTOR_SHIFT } from '@dmakit/dma-core';
import type { Bio, BioIntegrityPayload, BvecIter, BvecTable } from '@dmakit/dma-core';

/** `BIO_MAX_VECS`. */
export const BIO_MAX_VECS = 256;

/** Typed-array bvec storage shared by a bio and every clone split from it. */
class BvecStore implements BvecTable {
  readonly bvPage: Float64Array;
  readonly bvOffset: Uint32Array;
  readonly bvLen: Uint32Array;
  vcnt = 0;

  constructor(maxVecs: number) {
    this.bvPage = new Float64Array(maxVecs);
    this.bvOffset = new Uint32Array(maxVecs);
    this.bvLen = new Uint32Array(maxVecs);
  }

  get maxVecs(): number {
    return this.bvPage.length;
  }

  /**
   * Append `[phys, +len)`; merge into the last bvec when physically contiguous
   * (`bvec_try_merge_page`) and `merge` allows. Returns false when the table is full.
   */
  add(phys: number, len: number, merge: boolean): boolean {
    const n = this.vcnt;
    if (merge && n > 0) {
      const last = n - 1;
      const end = (this.bvPage[last] ?? 0) + (this.bvOffset[last] ?? 0) + (this.bvLen[last] ?? 0);
      if (end === phys && (this.bvLen[last] ?? 0) + len <= 0xffff_ffff) {
        this.bvLen[last] = (this.bvLen[last] ?? 0) + len;
        return true;
      }
    }
    if (n >= this.bvPage.length) return false;
    const off = phys % PAGE_SIZE;
    this.bvPage[n] = phys - off;
    this.bvOffset[n] = off;
    this.bvLen[n] = len;
    this.vcnt = n + 1;
    return true;
  }
}

/** Integrity (PI) payload of one bio. kernel: struct bio_integrity_payload. */
export class BioIntegrity implements BioIntegrityPayload {
  readonly #store: BvecStore;
  readonly iter: BvecIter = { sector: 0, size: 0, idx: 0, bvecDone: 0 };
  flags = 0;

  /** @internal use bioIntegrityAlloc */
  constructor(store: BvecStore) {
    this.#store = store;
  }

  /** Physical address of each integrity bvec's page (kernel: bio_vec.bv_page). */
  get bvPage(): Float64Array {
    return this.#store.bvPage;
  }
  /** Offset of each integrity bvec within its page (kernel: bio_vec.bv_offset). */
  get bvOffset(): Uint32Array {
    return this.#store.bvOffset;
  }
  /** Length of each integrity bvec (kernel: bio_vec.bv_len). */
  get bvLen(): Uint32Array {
    return this.#store.bvLen;
  }
  get vcnt(): number {
    return this.#store.vcnt;
  }

  /** @internal */
  get store(): BvecStore {
    return this.#store;
  }
}

/** `struct bio`. Make one with `bioAlloc`, fill it with `bioAddPhys`. */
export class BlkBio implements Bio {
  /** `bi_opf`'s operation (set again by `bioReset`). */
  op: ReqOp;
  readonly iter: BvecIter;
  next: Bio | null = null;
  integrity: BioIntegrity | null = null;
  /** `bi_status` once ended. */
  status = 0;
  /** Set when the bio was split from a parent (a clone sharing its bvecs). */
  readonly parent: BlkBio | null;
  readonly #store: BvecStore;

  /** @internal use bioAlloc */
  constructor(op: ReqOp, sector: number, store: BvecStore, parent: BlkBio | null) {
    this.op = op;
    this.iter = { sector, size: 0, idx: 0, bvecDone: 0 };
    this.#store = store;
    this.parent = parent;
  }

  /** Physical address of each bvec's page (kernel: bio_vec.bv_page). */
  get bvPage(): Float64Array {
    return this.#store.bvPage;
  }
  /** Offset of each bvec within its page (kernel: bio_vec.bv_offset). */
  get bvOffset(): Uint32Array {
    return this.#store.bvOffset;
  }
  /** Length of each bvec (kernel: bio_vec.bv_len). */
  get bvLen(): Uint32Array {
    return this.#store.bvLen;
  }
  get vcnt(): number {
    return this.#store.vcnt;
  }
  /** @internal */
  get store(): BvecStore {
    return this.#store;
  }

  /** `bio_sectors(bio)`. */
  get sectors(): number {
    return Math.floor(this.iter.size / 2 ** SECTOR_SHIFT);
  }
}

function validOp(op: unknown): op is ReqOp {
  return op === ReqOp.READ || op === ReqOp.WRITE || op === ReqOp.FLUSH || op === ReqOp.DISCARD || op === ReqOp.WRITE_ZEROES;
}

/**
 * `bio_alloc(bdev, nr_vecs, opf, gfp)` + `bi_iter.bi_sector = sector`: an empty bio with room for
 * `maxVecs` bvecs (1..BIO_MAX_VECS). Null on a bad op, sector or count.
 */
export function bioAlloc(op: ReqOp, sector: number, maxVecs = BIO_MAX_VECS): BlkBio | null {
  if (!validOp(op) || !Number.isSafeInteger(sector) || sector < 0) return null;
  if (!Number.isSafeInteger(maxVecs) || maxVecs < 1 || maxVecs > BIO_MAX_VECS) return null;
  return new BlkBio(op, sector, new BvecStore(maxVecs), null);
}

function validRange(phys: unknown, len: unknown): boolean {
  return typeof phys === 'number' && Number.isSafeInteger(phys) && phys >= 0 && typeof len === 'number' && Number.isSafeInteger(len) && len > 0 && len <= 0xffff_ffff;
}

/**
 * `bio_add_page(bio, page, len, off)` with the page given by physical address: appends
 * `[phys, +len)`, merging into the previous bvec when physically contiguous (multi-page bvec).
 * Returns the bytes added: `len`, or 0 when the bio is full, cloned, or the range is invalid.
 */
export function bioAddPhys(bio: BlkBio, phys: number, len: number, merge = true): number {
  if (bio.parent !== null || !validRange(phys, len)) return 0;
  if (bio.iter.size + len > 0xffff_ffff) return 0; // bi_size is u32
  if (!bio.store.add(phys, len, merge)) return 0;
  bio.iter.size += len;
  return len;
}

/** `bio_add_page(bio, page, len, offset)`. */
export function bioAddPage(bio: BlkBio, pagePhys: number, len: number, offset: number, merge = true): number {
  if (!Number.isSafeInteger(offset) || offset < 0) return 0;
  return bioAddPhys(bio, pagePhys + offset, len, merge);
}

/**
 * A bio over physical ranges given as pairs [phys0, len0, phys1, len1, ...]. Null when it does
 * not fit BIO_MAX_VECS bvecs or a range is invalid.
 */
export function bioFromRanges(op: ReqOp, sector: number, ranges: ArrayLike<number>, merge = true): BlkBio | null {
  const n = ranges.length >> 1;
  if (n === 0 || ranges.length % 2 !== 0) return null;
  const bio = bioAlloc(op, sector, Math.min(BIO_MAX_VECS, n));
  if (bio === null) return null;
  for (let i = 0; i < n; i++) {
    const len = ranges[2 * i + 1] ?? 0;
    if (bioAddPhys(bio, ranges[2 * i] ?? -1, len, merge) !== len) return null;
  }
  return bio;
}

/**
 * `bio_reset(bio, bdev, opf)` + `bi_iter.bi_sector = sector`: make a finished bio empty again for
 * reuse, keeping its bvec table (as a driver or file system reuses bios from its own `bio_set`
 * mempool instead of allocating one per I/O): no bvecs, no integrity payload, no chain link,
 * status 0. False, and the bio untouched, on a bad op or sector, or for a clone split from a
 * parent (it shares the parent's bvecs).
 */
export function bioReset(bio: BlkBio, op: ReqOp, sector: number): boolean {
  if (bio.parent !== null || !validOp(op) || !Number.isSafeInteger(sector) || sector < 0) return false;
  bio.op = op;
  const it = bio.iter;
  it.sector = sector;
  it.size = 0;
  it.idx = 0;
  it.bvecDone = 0;
  bio.store.vcnt = 0;
  bio.next = null;
  bio.integrity = null;
  bio.status = 0;
  return true;
}

/** `bio_integrity_alloc(bio, gfp, nr_vecs)`: attach an empty PI payload. Null if one exists. */
export function bioIntegrityAlloc(bio: BlkBio, maxVecs = 1): BioIntegrity | null {
  if (bio.integrity !== null || bio.parent !== null) return null;
  if (!Number.isSafeInteger(maxVecs) || maxVecs < 1 || maxVecs > BIO_MAX_VECS) return null;
  const bip = new BioIntegrity(new BvecStore(maxVecs));
  bip.iter.sector = bio.iter.sector;
  bio.integrity = bip;
  return bip;
}

/** `bio_integrity_add_page`: append PI bytes; returns `len` or 0. */
export function bioIntegrityAddPhys(bio: BlkBio, phys: number, len: number): number {
  const bip = bio.integrity;
  if (bip === null || !validRange(phys, len)) return 0;
  if (!bip.store.add(phys, len, true)) return 0;
  bip.iter.size += len;
  return len;
}

/** `bvec_iter_advance(bv, iter, bytes)` over a table (bytes <= iter.size). */
export function bvecIterAdvance(t: BvecTable, iter: BvecIter, bytes: number): void {
  let left = bytes;
  iter.size -= bytes;
  iter.sector += Math.floor(bytes / 2 ** SECTOR_SHIFT);
  while (left > 0) {
    const avail = (t.bvLen[iter.idx] ?? 0) - iter.bvecDone;
    if (left < avail) {
      iter.bvecDone += left;
      return;
    }
    left -= avail;
    iter.idx++;
    iter.bvecDone = 0;
  }
}

/**
 * `bio_split(bio, sectors)`: a clone covering the first `sectors` of `bio` (sharing its bvecs),
 * with `bio` advanced past them. Integrity is split in proportion (`bio_integrity_trim` /
 * `bio_integrity_advance`) using `piBytes` for the clone. Null on a bad count.
 */
export function bioSplit(bio: BlkBio, sectors: number, piBytes = 0): BlkBio | null {
  const bytes = sectors * 512;
  if (!Number.isSafeInteger(sectors) || sectors <= 0 || bytes >= bio.iter.size) return null;
  const split = new BlkBio(bio.op, bio.iter.sector, bio.store, bio);
  split.iter.size = bytes;
  split.iter.idx = bio.iter.idx;
  split.iter.bvecDone = bio.iter.bvecDone;
  bvecIterAdvance(bio, bio.iter, bytes);
  const bip = bio.integrity;
  if (bip !== null) {
    const child = new BioIntegrity(bip.store);
    child.flags = bip.flags;
    child.iter.sector = bip.iter.sector;
    child.iter.idx = bip.iter.idx;
    child.iter.bvecDone = bip.iter.bvecDone;
    const take = Math.min(piBytes, bip.iter.size);
    child.iter.size = take;
    bvecIterAdvance(bip, bip.iter, take);
    split.integrity = child;
  }
  return split;
}

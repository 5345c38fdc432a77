// Data pointer parsing on the device side: PRP lists and SGLs turned into a flat list of
// (dma address, length) pieces, then data moved through the device's DMA port.
// QEMU: hw/nvme/ctrl.c nvme_map_prp, nvme_map_sgl, nvme_map_sgl_data (status codes follow it);
// NVM Express Base Specification 1.4 section 4.3 (PRP) and 4.4 (SGL).
import { DmaFaultError } from '@dmakit/dma-core';
import type { Device } from '@dmakit/dma-core';
import {
  NVME_SGL_DESC_SIZE,
  NVME_SGL_FMT_ADDRESS,
  NvmeSglType,
  NvmeStatus,
  SQE,
  readLe64,
} from './spec.js';

/** Largest memory page size the walker handles (the controller's CAP.MPSMAX is lower). */
export const NVME_MAX_PAGE_SIZE = 1 << 16;
/** QEMU reads a segment in chunks of 256 descriptors (one 4 KiB page). */
const SEG_CHUNK = 256;
/** Bound on segments per SGL so a segment chain that loops cannot hang the model. */
const MAX_SGL_SEGMENTS = 1 << 16;
/** Piece address of an SGL Bit Bucket on a read: the data is discarded. */
const BIT_BUCKET = -1;

const DNR = NvmeStatus.DNR;

/** Cumulative walker counters (read by the controller's stats). */
export interface DataWalkerCounters {
  prpListPages: number;
  prpEntries: number;
  sglDescriptors: number;
  sglSegments: number;
}

/**
 * Walks a command's data pointer into reusable typed arrays (no allocation per page once the
 * arrays have grown), then moves bytes with `dev.dmaReadInto` / `dev.dmaWrite`. Every list fetch
 * goes through the device port too, so a PRP list or SGL segment behind a refused IOMMU mapping
 * completes the command with Data Transfer Error.
 */
export class NvmeDataWalker {
  readonly #dev: Device;
  /** Piece addresses (BIT_BUCKET for discarded read data) and lengths; `count` are valid. */
  #addrs = new Float64Array(64);
  #lens = new Float64Array(64);
  count = 0;
  /** Bytes described by the pieces (bit buckets included). */
  total = 0;
  #remaining = 0;
  readonly #list = new Uint8Array(NVME_MAX_PAGE_SIZE);
  readonly #listDv = new DataView(this.#list.buffer);
  readonly counters: DataWalkerCounters;

  constructor(dev: Device, counters: DataWalkerCounters = { prpListPages: 0, prpEntries: 0, sglDescriptors: 0, sglSegments: 0 }) {
    this.#dev = dev;
    this.counters = counters;
  }

  /** Address of piece `i` (negative for a bit bucket). */
  addr(i: number): number {
    return this.#addrs[i] ?? 0;
  }

  /** Length of piece i. */
  len(i: number): number {
    return this.#lens[i] ?? 0;
  }

  #reset(len: number): void {
    this.count = 0;
    this.total = 0;
    this.#remaining = len;
  }

  #push(addr: number, len: number): void {
    const n = this.count;
    if (n > 0) {
      const last = n - 1;
      const la = this.#addrs[last] ?? 0;
      const ll = this.#lens[last] ?? 0;
      // Merge a piece that continues the previous one (QEMU's qsg merges the same way).
      if ((addr === BIT_BUCKET && la === BIT_BUCKET) || (addr >= 0 && la >= 0 && la + ll === addr)) {
        this.#lens[last] = ll + len;
        this.total += len;
        return;
      }
    }
    if (n === this.#addrs.length) {
      const a = new Float64Array(n * 2);
      a.set(this.#addrs);
      this.#addrs = a;
      const l = new Float64Array(n * 2);
      l.set(this.#lens);
      this.#lens = l;
    }
    this.#addrs[n] = addr;
    this.#lens[n] = len;
    this.count = n + 1;
    this.total += len;
  }

  #readList(addr: number, bytes: number): number {
    try {
      this.#dev.dmaReadInto(addr, this.#list, 0, bytes);
      return NvmeStatus.SUCCESS;
    } catch (e) {
      if (e instanceof DmaFaultError) return NvmeStatus.DATA_XFER_ERROR;
      throw e;
    }
  }

  #listEntry(i: number): number {
    return readLe64(this.#listDv, i * 8);
  }

  /**
   * Walk PRP1/PRP2 for a transfer of `len` bytes with memory page size `ps` (CC.MPS).
   * Returns a status; on success the pieces describe exactly `len` bytes.
   */
  mapPrp(prp1: number, prp2: number, len: number, ps: number): number {
    this.#reset(len);
    // Spec 4.3: the offset of every PRP entry is dword aligned; "PRP Offset Invalid" otherwise.
    if (prp1 % 4 !== 0) return NvmeStatus.PRP_INVALID_OFFSET | DNR;
    let trans = Math.min(len, ps - (prp1 % ps));
    this.#push(prp1, trans);
    this.counters.prpEntries++;
    len -= trans;
    if (len === 0) return NvmeStatus.SUCCESS;
    if (len <= ps) {
      // PRP2 is the second (and last) data page: it must start on a page boundary.
      if (prp2 % ps !== 0) return NvmeStatus.PRP_INVALID_OFFSET | DNR;
      this.#push(prp2, len);
      this.counters.prpEntries++;
      return NvmeStatus.SUCCESS;
    }
    // PRP2 points to a PRP list; it may carry an offset, which shortens the first list page.
    if (prp2 % 8 !== 0) return NvmeStatus.PRP_INVALID_OFFSET | DNR;
    const perPage = ps / 8;
    let nents = Math.min(Math.ceil(len / ps), (ps - (prp2 % ps)) / 8);
    let st = this.#readList(prp2, nents * 8);
    if (st !== NvmeStatus.SUCCESS) return st;
    this.counters.prpListPages++;
    let i = 0;
    while (len > 0) {
      let ent = this.#listEntry(i);
      if (i === nents - 1 && len > ps) {
        // The last slot of a full list page chains to the next list page.
        if (ent % ps !== 0) return NvmeStatus.PRP_INVALID_OFFSET | DNR;
        nents = Math.min(Math.ceil(len / ps), perPage);
        st = this.#readList(ent, nents * 8);
        if (st !== NvmeStatus.SUCCESS) return st;
        this.counters.prpListPages++;
        i = 0;
        ent = this.#listEntry(0);
      }
      // Every list entry after PRP1 must have a zero offset.
      if (ent % ps !== 0) return NvmeStatus.PRP_INVALID_OFFSET | DNR;
      trans = Math.min(len, ps);
      this.#push(ent, trans);
      this.counters.prpEntries++;
      len -= trans;
      i++;
    }
    return NvmeStatus.SUCCESS;
  }

  /**
   * Walk the SGL whose first descriptor (SGL1) sits in the SQE's DPTR, for a transfer of `len`
   * bytes. `isWrite`: host-to-device data (bit buckets are then ignored, as in QEMU).
   */
  mapSgl(sqe: DataView, len: number, isWrite: boolean): number {
    this.#reset(len);
    const d0 = SQE.DPTR;
    const id = sqe.getUint8(d0 + 15);
    let type = id >> 4;
    if (type === NvmeSglType.DATA_BLOCK) {
      // The whole transfer is described by one data block in the command.
      const st = this.#mapSglData(sqe, d0, 1, isWrite);
      if (st !== NvmeStatus.SUCCESS) return st;
      return this.#remaining === 0 ? NvmeStatus.SUCCESS : NvmeStatus.SGL_INVALID_DATA | DNR;
    }
    let segAddr = readLe64(sqe, d0);
    let segLen = sqe.getUint32(d0 + 8, true);
    let subtype = id & 0xf;
    for (let segments = 0; ; segments++) {
      if (type !== NvmeSglType.SEGMENT && type !== NvmeSglType.LAST_SEGMENT) {
        // QEMU answers a known non-segment type here with Invalid SGL Segment Descriptor; a type
        // the controller does not implement is "SGL Descriptor Type Invalid" (spec figure 128).
        return (type === NvmeSglType.BIT_BUCKET || type === NvmeSglType.DATA_BLOCK ? NvmeStatus.SGL_INVALID_LAST : NvmeStatus.SGL_INVALID_TYPE) | DNR;
      }
      if (subtype !== NVME_SGL_FMT_ADDRESS) return NvmeStatus.SGL_INVALID_TYPE | DNR;
      if (segLen === 0 || segLen % NVME_SGL_DESC_SIZE !== 0) return NvmeStatus.SGL_INVALID_LAST | DNR;
      if (segments >= MAX_SGL_SEGMENTS) return NvmeStatus.SGL_INVALID_COUNT | DNR;
      this.counters.sglSegments++;
      let nsgld = segLen / NVME_SGL_DESC_SIZE;
      let addr = segAddr;
      while (nsgld > SEG_CHUNK) {
        // Whole chunks before the last one hold data descriptors only.
        const st = this.#readList(addr, SEG_CHUNK * NVME_SGL_DESC_SIZE);
        if (st !== NvmeStatus.SUCCESS) return st;
        const st2 = this.#mapSglData(this.#listDv, 0, SEG_CHUNK, isWrite);
        if (st2 !== NvmeStatus.SUCCESS) return st2;
        nsgld -= SEG_CHUNK;
        addr += SEG_CHUNK * NVME_SGL_DESC_SIZE;
      }
      const st = this.#readList(addr, nsgld * NVME_SGL_DESC_SIZE);
      if (st !== NvmeStatus.SUCCESS) return st;
      const lastOff = (nsgld - 1) * NVME_SGL_DESC_SIZE;
      const lastId = this.#list[lastOff + 15] ?? 0;
      const lastType = lastId >> 4;
      if (lastType !== NvmeSglType.SEGMENT && lastType !== NvmeSglType.LAST_SEGMENT) {
        // The segment ends with a data descriptor: this is the last segment.
        const st2 = this.#mapSglData(this.#listDv, 0, nsgld, isWrite);
        if (st2 !== NvmeStatus.SUCCESS) return st2;
        return this.#remaining === 0 ? NvmeStatus.SUCCESS : NvmeStatus.SGL_INVALID_DATA | DNR;
      }
      // A Last Segment must not point to another segment.
      if (type === NvmeSglType.LAST_SEGMENT) return NvmeStatus.SGL_INVALID_LAST | DNR;
      this.counters.sglDescriptors++; // the segment descriptor itself
      const nextAddr = readLe64(this.#listDv, lastOff);
      const nextLen = this.#listDv.getUint32(lastOff + 8, true);
      const st2 = this.#mapSglData(this.#listDv, 0, nsgld - 1, isWrite);
      if (st2 !== NvmeStatus.SUCCESS) return st2;
      type = lastType;
      subtype = lastId & 0xf;
      segAddr = nextAddr;
      segLen = nextLen;
    }
  }

  /** `nvme_map_sgl_data`: map `n` data descriptors starting at byte `off` of `dv`. */
  #mapSglData(dv: DataView, off: number, n: number, isWrite: boolean): number {
    for (let i = 0; i < n; i++) {
      const o = off + i * NVME_SGL_DESC_SIZE;
      const id = dv.getUint8(o + 15);
      const type = id >> 4;
      this.counters.sglDescriptors++;
      if (type === NvmeSglType.SEGMENT || type === NvmeSglType.LAST_SEGMENT) {
        // A segment descriptor anywhere but in the last slot of a segment.
        return NvmeStatus.SGL_INVALID_COUNT | DNR;
      }
      if ((type !== NvmeSglType.DATA_BLOCK && type !== NvmeSglType.BIT_BUCKET) || (id & 0xf) !== NVME_SGL_FMT_ADDRESS) {
        return NvmeStatus.SGL_INVALID_TYPE | DNR;
      }
      // QEMU: a bit bucket in a write's SGL is skipped without consuming data.
      if (type === NvmeSglType.BIT_BUCKET && isWrite) continue;
      const dlen = dv.getUint32(o + 8, true);
      if (dlen === 0) continue;
      if (this.#remaining === 0) {
        // SGL longer than the transfer: SGLS bit 18 (excess length) is not advertised.
        return NvmeStatus.SGL_INVALID_DATA | DNR;
      }
      const trans = Math.min(this.#remaining, dlen);
      this.#push(type === NvmeSglType.BIT_BUCKET ? BIT_BUCKET : readLe64(dv, o), trans);
      this.#remaining -= trans;
    }
    return NvmeStatus.SUCCESS;
  }

  /** Device reads the mapped host buffers into `out[0 .. total)`, bit buckets skipped. */
  gather(out: Uint8Array): number {
    const dev = this.#dev;
    let off = 0;
    try {
      for (let i = 0; i < this.count; i++) {
        const a = this.#addrs[i] ?? 0;
        const l = this.#lens[i] ?? 0;
        if (a >= 0) dev.dmaReadInto(a, out, off, l);
        off += l;
      }
    } catch (e) {
      if (e instanceof DmaFaultError) return NvmeStatus.DATA_XFER_ERROR;
      throw e;
    }
    return NvmeStatus.SUCCESS;
  }

  /** Device writes `src[0 .. total)` into the mapped host buffers; bit-bucket bytes are dropped. */
  scatter(src: Uint8Array, srcOffset = 0): number {
    const dev = this.#dev;
    let off = srcOffset;
    try {
      for (let i = 0; i < this.count; i++) {
        const a = this.#addrs[i] ?? 0;
        const l = this.#lens[i] ?? 0;
        if (a >= 0) dev.dmaWrite(a, src, off, l);
        off += l;
      }
    } catch (e) {
      if (e instanceof DmaFaultError) return NvmeStatus.DATA_XFER_ERROR;
      throw e;
    }
    return NvmeStatus.SUCCESS;
  }
}

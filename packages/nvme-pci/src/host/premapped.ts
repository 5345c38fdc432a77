// Pre-mapped I/O buffers for NVMe: register a dma-buf once, then issue reads and writes into it
// with no per-I/O DMA mapping.
// kernel: the dma-buf registered-buffer series for io_uring / blk-mq (Pavel Begunkov, 2025:
// "dma-buf support for read/write", a premapped "dma token" carried by the bio and resolved by
// the driver instead of blk_rq_dma_map_iter_*), drivers/nvme/host/pci.c (nvme_map_data).
// Model: a registered buffer occupies a window of a reserved token address space; a request
// whose bvecs lie in that window is resolved from the buffer's mapping (one DMA segment per
// DMA-contiguous run). Everything else goes to the real block-layer mapper.
import { BlkStatus, DMA_BIDIRECTIONAL, PAGE_SIZE, SECTOR_SHIFT, DMA_RESV_USAGE_KERNEL, Errno, MAX_SCHEDULE_TIMEOUT, REQ_P2PDMA, SG_DMA_BUS_ADDRESS, isErrPtr } from '@dmakit/dma-core';
import type {
  Bio,
  BlkDmaIter,
  BlkPhysVec,
  BlkRequest,
  BlkRqDmaMapper,
  Device,
  DmaBuf,
  DmaBufAttachment,
  DmaBufPort,
  DmaIovaState,
  PciP2pdmaMapType,
  QueueLimits,
  ReqOp,
  SgTable,
} from '@dmakit/dma-core';

/** Start of the token address space (above any physical address of the model, below 2^53). */
export const NVME_PREMAPPED_TOKEN_BASE = 2 ** 50;
/** Each registered buffer gets a window of this size in the token space. */
export const NVME_PREMAPPED_TOKEN_WINDOW = 2 ** 40;

/** A dma-buf registered with an NVMe device for pre-mapped I/O. */
export class NvmePremappedBuffer {
  readonly port: DmaBufPort;
  readonly dmabuf: DmaBuf;
  readonly attach: DmaBufAttachment;
  readonly dev: Device;
  /** Token address of byte 0: build bios over [token + offset, +len) to do I/O into the buffer. */
  readonly token: number;
  readonly size: number;
  sgt: SgTable | null = null;
  /** move_notify came: the mapping must not be used for new I/O; dropped once in-flight I/O ends. */
  invalid = false;
  inflight = 0;
  registered = true;
  readonly stats = { maps: 0, unmaps: 0, moveNotifies: 0, ios: 0, deferredUnmaps: 0 };

  constructor(port: DmaBufPort, dmabuf: DmaBuf, attach: DmaBufAttachment, dev: Device, token: number) {
    this.port = port;
    this.dmabuf = dmabuf;
    this.attach = attach;
    this.dev = dev;
    this.token = token;
    this.size = dmabuf.size;
  }

  /** The token address of buffer offset `off` (for bio ranges). */
  addr(off: number): number {
    return this.token + off;
  }

  /**
   * Split [off, off + len) at the DMA discontinuities of the current mapping: one [offset, length]
   * pair per DMA-contiguous run. The block layer counts a request's segments in token space (one
   * for any contiguous range), so a request that must match its DMA segment count (the SGL path
   * sizes its list by nr_phys_segments) should stay within one run. Empty when not mapped.
   */
  runs(off: number, len: number): [number, number][] {
    const out: [number, number][] = [];
    const s = this.sgt;
    if (s === null || !Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len <= 0 || off + len > this.size) return out;
    let base = 0;
    let pos = off;
    let left = len;
    let prevEnd = -1;
    for (let i = 0; i < s.nents && left > 0; i++) {
      const segLen = s.dmaLength[i] ?? 0;
      const addr = s.dmaAddress[i] ?? 0;
      if (pos < base + segLen) {
        const n = Math.min(left, base + segLen - pos);
        const a = addr + (pos - base);
        const last = out[out.length - 1];
        if (last !== undefined && prevEnd === a) last[1] += n;
        else out.push([pos, n]);
        prevEnd = a + n;
        pos += n;
        left -= n;
      }
      base += segLen;
    }
    return out;
  }

  /** Mapped with PCI bus addresses (peer-to-peer through a switch)? */
  get busAddr(): boolean {
    const s = this.sgt;
    return s !== null && s.nents > 0 && ((s.dmaFlags[0] ?? 0) & SG_DMA_BUS_ADDRESS) !== 0;
  }
}

interface Cursor {
  buf: NvmePremappedBuffer;
  /** Segments of the current request (reused across requests of this iterator). */
  addr: Float64Array;
  len: Float64Array;
  n: number;
  next: number;
}

/**
 * A `BlkRqDmaMapper` that resolves requests into registered dma-bufs from their one-time
 * mapping and hands every other request to `inner`. Per pre-mapped I/O: no DMA API call, no
 * IOVA allocation, no IOTLB invalidation.
 */
export class NvmePremappedMapper implements BlkRqDmaMapper {
  readonly name: string;
  readonly inner: BlkRqDmaMapper;
  readonly #bufs: NvmePremappedBuffer[] = [];
  readonly #cursors = new WeakMap<BlkDmaIter, Cursor>();
  readonly #inflight = new WeakMap<BlkRequest, NvmePremappedBuffer>();
  #nextWindow = 0;
  readonly stats = { premappedRequests: 0, premappedSegments: 0, remaps: 0, refused: 0 };

  constructor(inner: BlkRqDmaMapper) {
    this.inner = inner;
    this.name = `premapped(${inner.name})`;
  }

  /**
   * Register the dma-buf behind `fd` for I/O by `dev`: a dynamic attachment allowing P2P, mapped
   * now (resv held) after waiting for the exporter's fences. The buffer or -errno.
   */
  register(port: DmaBufPort, dev: Device, fd: number): NvmePremappedBuffer | number {
    const dmabuf = port.dmaBufGet(fd);
    if (isErrPtr(dmabuf)) return dmabuf;
    if (dmabuf.size > NVME_PREMAPPED_TOKEN_WINDOW) {
      port.dmaBufPut(dmabuf);
      return -Errno.E2BIG;
    }
    let buf: NvmePremappedBuffer | null = null;
    const attach = port.dmaBufDynamicAttach(dmabuf, dev, {
      allowPeer2peer: true,
      moveNotify: () => {
        if (buf !== null) this.#moveNotify(buf);
      },
    });
    if (isErrPtr(attach)) {
      port.dmaBufPut(dmabuf);
      return attach;
    }
    buf = new NvmePremappedBuffer(port, dmabuf, attach, dev, NVME_PREMAPPED_TOKEN_BASE + this.#nextWindow++ * NVME_PREMAPPED_TOKEN_WINDOW);
    attach.importerPriv = buf;
    const rc = this.#map(buf, true);
    if (rc !== 0) {
      port.dmaBufDetach(dmabuf, attach);
      port.dmaBufPut(dmabuf);
      return rc;
    }
    this.#bufs.push(buf);
    return buf;
  }

  /** Unregister: -EBUSY while I/O is in flight, else unmap, detach, drop the reference. */
  unregister(buf: NvmePremappedBuffer): number {
    const i = this.#bufs.indexOf(buf);
    if (i < 0) return -Errno.EINVAL;
    if (buf.inflight > 0) return -Errno.EBUSY;
    this.#bufs.splice(i, 1);
    buf.registered = false;
    this.#unmap(buf, true);
    buf.port.dmaBufDetach(buf.dmabuf, buf.attach);
    buf.port.dmaBufPut(buf.dmabuf);
    return 0;
  }

  /**
   * Map again now if move_notify dropped the mapping (resv taken here), so `runs()` describes the
   * mapping the next I/O will use. 0, -EBUSY while old I/O drains, or the map's -errno.
   */
  ensureMapped(buf: NvmePremappedBuffer): number {
    if (!buf.registered) return -Errno.EINVAL;
    if (buf.sgt !== null && !buf.invalid) return 0;
    if (buf.inflight > 0) return -Errno.EBUSY;
    this.#unmap(buf, true);
    this.stats.remaps++;
    return this.#map(buf, true);
  }

  /** Number of registered buffers. */
  get registeredCount(): number {
    return this.#bufs.length;
  }

  /** Map the whole buffer (taking the resv lock unless `locked`), then wait for kernel fences. */
  #map(buf: NvmePremappedBuffer, takeLock: boolean): number {
    const port = buf.port;
    const resv = buf.dmabuf.resv;
    if (takeLock) {
      const rc = port.dmaResvLock(resv, `nvme premapped ${buf.dev.name}`);
      if (rc !== 0) return rc;
    }
    const sgt = port.dmaBufMapAttachment(buf.attach, DMA_BIDIRECTIONAL);
    if (takeLock) port.dmaResvUnlock(resv);
    if (isErrPtr(sgt)) return sgt;
    const w = port.dmaResvWaitTimeout(resv, DMA_RESV_USAGE_KERNEL, false, MAX_SCHEDULE_TIMEOUT);
    buf.sgt = sgt;
    buf.invalid = false;
    buf.stats.maps++;
    return w > 0 ? 0 : -Errno.ETIMEDOUT;
  }

  #unmap(buf: NvmePremappedBuffer, takeLock: boolean): void {
    const sgt = buf.sgt;
    if (sgt === null) return;
    const port = buf.port;
    const resv = buf.dmabuf.resv;
    const locked = takeLock && port.dmaResvLock(resv, `nvme premapped ${buf.dev.name}`) === 0;
    port.dmaBufUnmapAttachment(buf.attach, sgt, DMA_BIDIRECTIONAL);
    if (locked) port.dmaResvUnlock(resv);
    buf.sgt = null;
    buf.stats.unmaps++;
  }

  /** move_notify (resv held): no new I/O on the old mapping; unmap now or when in-flight I/O ends. */
  #moveNotify(buf: NvmePremappedBuffer): void {
    buf.stats.moveNotifies++;
    buf.invalid = true;
    if (buf.inflight === 0) this.#unmap(buf, false);
    else buf.stats.deferredUnmaps++;
  }

  /** The registered buffer whose token window holds `phys`, or null. */
  #bufOf(phys: number): NvmePremappedBuffer | null {
    if (phys < NVME_PREMAPPED_TOKEN_BASE) return null;
    for (const b of this.#bufs) if (phys >= b.token && phys < b.token + b.size) return b;
    return null;
  }

  #premappedOf(req: BlkRequest): NvmePremappedBuffer | null {
    const bio = req.bio;
    if (bio === null || bio.vcnt === 0) return null;
    return this.#bufOf((bio.bvPage[bio.iter.idx] ?? 0) + (bio.bvOffset[bio.iter.idx] ?? 0));
  }

  /** Resolve every bvec of `req` into DMA segments of the buffer's mapping. BlkStatus. */
  #resolve(req: BlkRequest, buf: NvmePremappedBuffer, c: Cursor): BlkStatus {
    const sgt = buf.sgt;
    if (sgt === null) return BlkStatus.IOERR;
    c.n = 0;
    c.next = 0;
    for (let bio = req.bio; bio !== null; bio = bio.next) {
      let left = bio.iter.size;
      let done = bio.iter.bvecDone;
      for (let i = bio.iter.idx; i < bio.vcnt && left > 0; i++) {
        const len = Math.min((bio.bvLen[i] ?? 0) - done, left);
        const phys = (bio.bvPage[i] ?? 0) + (bio.bvOffset[i] ?? 0) + done;
        done = 0;
        left -= len;
        if (phys < buf.token || phys + len > buf.token + buf.size) return BlkStatus.INVAL;
        if (!this.#emit(sgt, phys - buf.token, len, c)) return BlkStatus.IOERR;
      }
    }
    return c.n > 0 ? BlkStatus.OK : BlkStatus.IOERR;
  }

  /** Append the DMA runs of buffer bytes [off, off + len), merging with the previous segment. */
  #emit(sgt: SgTable, off: number, len: number, c: Cursor): boolean {
    let base = 0;
    let pos = off;
    let left = len;
    for (let i = 0; i < sgt.nents && left > 0; i++) {
      const segLen = sgt.dmaLength[i] ?? 0;
      if (pos < base + segLen) {
        const n = Math.min(left, base + segLen - pos);
        const addr = (sgt.dmaAddress[i] ?? 0) + (pos - base);
        const k = c.n;
        if (k > 0 && (c.addr[k - 1] ?? 0) + (c.len[k - 1] ?? 0) === addr && (c.len[k - 1] ?? 0) + n <= 0xffff_f000) {
          c.len[k - 1] = (c.len[k - 1] ?? 0) + n;
        } else {
          if (k >= c.addr.length) {
            const a = new Float64Array(c.addr.length * 2);
            const l = new Float64Array(c.addr.length * 2);
            a.set(c.addr);
            l.set(c.len);
            c.addr = a;
            c.len = l;
          }
          c.addr[k] = addr;
          c.len[k] = n;
          c.n = k + 1;
        }
        pos += n;
        left -= n;
      }
      base += segLen;
    }
    return left === 0;
  }

  #step(iter: BlkDmaIter, c: Cursor): boolean {
    if (c.next >= c.n) {
      iter.status = BlkStatus.OK;
      return false;
    }
    iter.addr = c.addr[c.next] ?? 0;
    iter.len = c.len[c.next] ?? 0;
    c.next++;
    this.stats.premappedSegments++;
    return true;
  }

  blkRqDmaMapIterStart(req: BlkRequest, dmaDev: Device, state: DmaIovaState, iter: BlkDmaIter): boolean {
    const buf = this.#premappedOf(req);
    if (buf === null) return this.inner.blkRqDmaMapIterStart(req, dmaDev, state, iter);
    state.reset();
    iter.status = BlkStatus.OK;
    if (dmaDev !== buf.dev) {
      this.stats.refused++;
      iter.status = BlkStatus.INVAL;
      return false;
    }
    if (buf.sgt === null || buf.invalid) {
      // The exporter moved the buffer: map again (once, for every I/O after it).
      if (buf.inflight > 0) {
        iter.status = BlkStatus.RESOURCE; // wait until the old mapping drains
        return false;
      }
      this.#unmap(buf, true);
      const rc = this.#map(buf, true);
      this.stats.remaps++;
      if (rc !== 0) {
        iter.status = rc === -Errno.ENOMEM ? BlkStatus.RESOURCE : BlkStatus.IOERR;
        return false;
      }
    }
    let c = this.#cursors.get(iter);
    if (c === undefined) {
      c = { buf, addr: new Float64Array(16), len: new Float64Array(16), n: 0, next: 0 };
      this.#cursors.set(iter, c);
    }
    c.buf = buf;
    const st = this.#resolve(req, buf, c);
    if (st !== BlkStatus.OK) {
      iter.status = st;
      return false;
    }
    if (buf.busAddr) req.cmdFlags |= REQ_P2PDMA;
    buf.inflight++;
    buf.stats.ios++;
    this.stats.premappedRequests++;
    this.#inflight.set(req, buf);
    return this.#step(iter, c);
  }

  blkRqDmaMapIterNext(req: BlkRequest, dmaDev: Device, state: DmaIovaState, iter: BlkDmaIter): boolean {
    if (!this.#inflight.has(req)) return this.inner.blkRqDmaMapIterNext(req, dmaDev, state, iter);
    const c = this.#cursors.get(iter);
    if (c === undefined) {
      iter.status = BlkStatus.IOERR;
      return false;
    }
    return this.#step(iter, c);
  }

  blkRqDmaMapCoalesce(state: DmaIovaState): boolean {
    return this.inner.blkRqDmaMapCoalesce(state);
  }

  /** Nothing per segment to undo for a pre-mapped request: the mapping outlives the I/O. */
  blkRqDmaUnmap(req: BlkRequest, dmaDev: Device, state: DmaIovaState, mappedLen: number, map?: PciP2pdmaMapType): boolean {
    const buf = this.#inflight.get(req);
    if (buf === undefined) return map === undefined ? this.inner.blkRqDmaUnmap(req, dmaDev, state, mappedLen) : this.inner.blkRqDmaUnmap(req, dmaDev, state, mappedLen, map);
    this.#inflight.delete(req);
    buf.inflight--;
    if (buf.inflight === 0 && buf.invalid && buf.sgt !== null) this.#unmap(buf, true);
    return true;
  }

  blkRqIntegrityDmaMapIterStart(req: BlkRequest, dmaDev: Device, state: DmaIovaState, iter: BlkDmaIter): boolean {
    return this.inner.blkRqIntegrityDmaMapIterStart(req, dmaDev, state, iter);
  }

  blkRqIntegrityDmaMapIterNext(req: BlkRequest, dmaDev: Device, iter: BlkDmaIter): boolean {
    return this.inner.blkRqIntegrityDmaMapIterNext(req, dmaDev, iter);
  }

  blkRqIntegrityDmaUnmap(req: BlkRequest, dmaDev: Device, state: DmaIovaState, mappedLen: number): boolean {
    return this.inner.blkRqIntegrityDmaUnmap(req, dmaDev, state, mappedLen);
  }

  /** The legacy sg path cannot carry a dma token: pre-mapped requests need the iterator ('iter'). */
  blkRqMapSg(req: BlkRequest, sgt: SgTable): number {
    if (this.#premappedOf(req) !== null) return 0;
    return this.inner.blkRqMapSg(req, sgt);
  }

  blkRqMapIntegritySg(req: BlkRequest, sgt: SgTable): number {
    return this.inner.blkRqMapIntegritySg(req, sgt);
  }

  /** No single-bvec shortcut (nvme_pci_setup_data_simple would dma_map the token): use the iterator. */
  reqBvec(req: BlkRequest, out: BlkPhysVec): boolean {
    if (this.#premappedOf(req) !== null) return false;
    return this.inner.reqBvec(req, out);
  }
}

/**
 * The block request for a dma-token I/O: `len` bytes at buffer offset `off` of `buf`, to or from
 * device sector `sector` (512-byte units). One bio with one bvec over the buffer's token window
 * (the token space is contiguous, so the block layer counts one physical segment); the mapper
 * resolves it from the buffer's mapping at `nvme_map_data` time. Null when the request breaks
 * `limits` (length not a multiple of the logical block, over `max_sectors`, beyond the buffer, or
 * misaligned for `dma_alignment`): the block layer would refuse or split it, and a token I/O is
 * never split here.
 * kernel: the dma-token series builds such a bio in the block layer (`bio` carrying the token
 * instead of pages); dmakit builds the request directly because the token space is this
 * package's model.
 */
export function nvmePremappedRq(limits: QueueLimits, buf: NvmePremappedBuffer, op: ReqOp, sector: number, off: number, len: number, tag = 0): BlkRequest | null {
  if (![sector, off, len, tag].every(Number.isSafeInteger) || sector < 0 || off < 0 || len <= 0 || tag < 0 || off + len > buf.size) return null;
  if (len % limits.logicalBlockSize !== 0 || len > limits.maxSectors * 2 ** SECTOR_SHIFT) return null;
  if ((sector * 2 ** SECTOR_SHIFT) % limits.logicalBlockSize !== 0 || (off & limits.dmaAlignment) !== 0) return null;
  const addr = buf.addr(off);
  const page = addr - (addr % PAGE_SIZE);
  const bio: Bio = {
    op,
    iter: { sector, size: len, idx: 0, bvecDone: 0 },
    next: null,
    integrity: null,
    bvPage: Float64Array.of(page),
    bvOffset: Uint32Array.of(addr - page),
    bvLen: Uint32Array.of(len),
    vcnt: 1,
  };
  return { tag, op, cmdFlags: 0, rqFlags: 0, sector, dataLen: len, bio, nrPhysSegments: 1, nrIntegritySegments: 0, limits, specialVec: null, pdu: null, endIo: null };
}

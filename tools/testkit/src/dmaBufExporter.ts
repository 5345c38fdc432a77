/**
 * A small fake dma-buf exporter behind dma-core's `DmaBufPort` contract, for importer tests in
 * packages that may not import `@dmakit/dmabuf` (nvme-pci's pre-mapped buffers, rdma-umem-odp's
 * dma-buf MR). The real exporters (system heap, GPU VRAM, VFIO BAR) meet the importers in
 * apps/demo's end-to-end tests.
 *
 * What it models of drivers/dma-buf/dma-buf.c and a dynamic exporter: reference-counted buffers
 * behind file descriptors, dynamic attachments with `move_notify`, map/unmap through the DMA API
 * (two RAM chunks, so a mapping has two DMA segments), the reservation lock, and a move to new
 * pages. What it checks: every locking or lifetime rule an importer breaks is recorded in
 * `misuse` (tests expect it empty), and pages a stale mapping still points at are never freed.
 */
import { Errno, PAGE_SIZE, SgTable, dmaMapPhys, dmaMappingError, dmaUnmapPhys } from '@dmakit/dma-core';
import type { Device, DmaBuf, DmaBufAttachOps, DmaBufAttachment, DmaBufPort, DmaResv, Machine } from '@dmakit/dma-core';

/** One physically contiguous chunk of a fake buffer (2^order pages at `phys`). */
export interface FakeDmaBufChunk {
  readonly phys: number;
  readonly order: number;
}

/** The reservation object of a fake buffer: a lock flag (`dma_resv_lock`) and no fences. */
export class FakeDmaResv implements DmaResv {
  locked = false;
  lockOwner: string | null = null;
  fenceCount = 0;
}

/** An attachment of a fake buffer to a device; remembers which chunks each live mapping covers. */
export class FakeDmaBufAttachment implements DmaBufAttachment {
  /** Live mappings of this attachment and the chunks they point at. */
  readonly maps = new Map<SgTable, FakeDmaBufChunk[]>();
  importerPriv: unknown = null;
  constructor(
    readonly dmabuf: FakeDmaBuf,
    readonly dev: Device,
    readonly importerOps: DmaBufAttachOps | null,
  ) {}
  /** Peer-to-peer is allowed when the (dynamic) importer says so. */
  get peer2peer(): boolean {
    return this.importerOps?.allowPeer2peer === true;
  }
}

/** A fake dma-buf: `size` bytes in two equal RAM chunks (so mappings have two DMA segments). */
export class FakeDmaBuf implements DmaBuf {
  readonly resv = new FakeDmaResv();
  readonly expName = 'fake';
  readonly name = '';
  refcount = 1;
  readonly attachments: FakeDmaBufAttachment[] = [];
  /** The current backing pages; replaced by {@link FakeDmaBufExporter.move}. */
  chunks: FakeDmaBufChunk[];
  constructor(
    readonly size: number,
    chunks: FakeDmaBufChunk[],
  ) {
    this.chunks = chunks;
  }
  get attachmentCount(): number {
    return this.attachments.length;
  }
}

/** The exporter side of the fake, plus the port importers are given. */
export interface FakeDmaBufExporter {
  /** The `DmaBufPort` to hand to the importer under test. */
  readonly port: DmaBufPort;
  /** Rules the importer broke (locking, lifetime, stale mappings), in order; expect `[]`. */
  readonly misuse: string[];
  /**
   * Export `size` bytes of RAM (two chunks of size/2; size a multiple of two pages); returns the
   * fd importers get the buffer by, and the buffer.
   */
  exportRam(size: number): { fd: number; buf: FakeDmaBuf };
  /**
   * Move the buffer to new pages as an evicting exporter does: under the reservation lock, call
   * every importer's `move_notify`, copy the bytes, then free the old pages unless a mapping still
   * points at them (then `misuse` records 'stale mapping kept past move_notify').
   */
  move(buf: FakeDmaBuf): void;
  /** CPU view of the buffer: `len` bytes at offset `off`. */
  read(buf: FakeDmaBuf, off: number, len: number): Uint8Array;
  /** CPU write of `data` at offset `off` of the buffer. */
  write(buf: FakeDmaBuf, off: number, data: Uint8Array): void;
  /** Mappings made and not yet unmapped, over all buffers. */
  liveMaps(): number;
}

function asBuf(x: DmaBuf): FakeDmaBuf {
  if (!(x instanceof FakeDmaBuf)) throw new TypeError('not a fake dma-buf');
  return x;
}

function asAttach(x: DmaBufAttachment): FakeDmaBufAttachment {
  if (!(x instanceof FakeDmaBufAttachment)) throw new TypeError('not a fake attachment');
  return x;
}

function asResv(x: DmaResv): FakeDmaResv {
  if (!(x instanceof FakeDmaResv)) throw new TypeError('not a fake reservation object');
  return x;
}

/** A fake exporter allocating from `m`'s RAM; see the module comment for what it checks. */
export function createFakeDmaBufExporter(m: Machine): FakeDmaBufExporter {
  const fds = new Map<number, FakeDmaBuf>();
  const misuse: string[] = [];
  let nextFd = 3;
  let live = 0;
  const half = (size: number): number => size / 2;
  const alloc = (size: number): FakeDmaBufChunk[] => {
    const order = Math.ceil(Math.log2(half(size) / PAGE_SIZE));
    const a = m.memory.allocPages(order);
    const b = m.memory.allocPages(order);
    if (a === 0 || b === 0) throw new Error(`fake dma-buf exporter: out of memory for ${size} bytes`);
    return [
      { phys: a, order },
      { phys: b, order },
    ];
  };
  const physAt = (buf: FakeDmaBuf, off: number): number => {
    const h = half(buf.size);
    const c = buf.chunks[off < h ? 0 : 1];
    return (c?.phys ?? 0) + (off % h);
  };
  const held = (buf: FakeDmaBuf, what: string): void => {
    if (!buf.resv.locked) misuse.push(`${what} without the reservation lock`);
  };
  const inRange = (buf: FakeDmaBuf, off: number, len: number): void => {
    if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len < 0 || off + len > buf.size) {
      throw new RangeError(`fake dma-buf: [${off}, ${off}+${len}) outside the ${buf.size}-byte buffer`);
    }
  };
  const port: DmaBufPort = {
    dmaBufGet(fd) {
      const b = fds.get(fd);
      if (b === undefined) return -Errno.EBADF;
      b.refcount++;
      return b;
    },
    dmaBufPut(dmabuf) {
      const b = asBuf(dmabuf);
      b.refcount--;
      if (b.refcount === 0) {
        if (b.attachments.length > 0) misuse.push('released while attached');
        for (const c of b.chunks) m.memory.freePages(c.phys, c.order);
      }
    },
    dmaBufAttach(dmabuf, dev) {
      return port.dmaBufDynamicAttach(dmabuf, dev, null);
    },
    dmaBufDynamicAttach(dmabuf, dev, ops) {
      const a = new FakeDmaBufAttachment(asBuf(dmabuf), dev, ops);
      asBuf(dmabuf).attachments.push(a);
      return a;
    },
    dmaBufDetach(dmabuf, attach) {
      const b = asBuf(dmabuf);
      const a = asAttach(attach);
      if (a.maps.size > 0) misuse.push('detached with live mappings');
      b.attachments.splice(b.attachments.indexOf(a), 1);
    },
    dmaBufPin(attach) {
      held(asBuf(attach.dmabuf), 'pin');
      return 0;
    },
    dmaBufUnpin(attach) {
      held(asBuf(attach.dmabuf), 'unpin');
    },
    dmaBufMapAttachment(attach, dir) {
      const a = asAttach(attach);
      const b = a.dmabuf;
      held(b, 'map');
      const sgt = new SgTable(2);
      for (let i = 0; i < 2; i++) {
        const c = b.chunks[i];
        const addr = dmaMapPhys(a.dev, c?.phys ?? 0, half(b.size), dir, 0);
        if (dmaMappingError(a.dev, addr) !== 0) {
          for (let j = 0; j < i; j++) dmaUnmapPhys(a.dev, sgt.dmaAddress[j] ?? 0, half(b.size), dir, 0);
          return -Errno.ENOMEM;
        }
        sgt.dmaAddress[i] = addr;
        sgt.dmaLength[i] = half(b.size);
      }
      sgt.nents = 2;
      a.maps.set(sgt, b.chunks);
      live++;
      return sgt;
    },
    dmaBufUnmapAttachment(attach, sgt, dir) {
      const a = asAttach(attach);
      held(a.dmabuf, 'unmap');
      if (!a.maps.delete(sgt)) {
        misuse.push('unmap of a table not mapped');
        return;
      }
      for (let i = 0; i < sgt.nents; i++) dmaUnmapPhys(a.dev, sgt.dmaAddress[i] ?? 0, sgt.dmaLength[i] ?? 0, dir, 0);
      live--;
    },
    dmaBufMapAttachmentUnlocked(attach, dir) {
      const r = asResv(attach.dmabuf.resv);
      r.locked = true;
      const s = port.dmaBufMapAttachment(attach, dir);
      r.locked = false;
      return s;
    },
    dmaBufUnmapAttachmentUnlocked(attach, sgt, dir) {
      const r = asResv(attach.dmabuf.resv);
      r.locked = true;
      port.dmaBufUnmapAttachment(attach, sgt, dir);
      r.locked = false;
    },
    dmaBufBeginCpuAccess: () => 0,
    dmaBufEndCpuAccess: () => 0,
    dmaResvLock(resv) {
      const r = asResv(resv);
      if (r.locked) {
        misuse.push('resv locked twice');
        return -Errno.EDEADLK;
      }
      r.locked = true;
      return 0;
    },
    dmaResvUnlock(resv) {
      asResv(resv).locked = false;
    },
    dmaResvWaitTimeout: (_r, _u, _i, t) => Math.max(1, t),
    dmaResvTestSignaled: () => true,
  };
  return {
    port,
    misuse,
    exportRam(size) {
      if (!Number.isSafeInteger(size) || size <= 0 || size % (2 * PAGE_SIZE) !== 0) {
        throw new RangeError(`fake dma-buf: size ${size} is not a positive multiple of two pages`);
      }
      const buf = new FakeDmaBuf(size, alloc(size));
      const fd = nextFd++;
      fds.set(fd, buf);
      return { fd, buf };
    },
    move(buf) {
      buf.resv.locked = true;
      for (const a of [...buf.attachments]) a.importerOps?.moveNotify(a);
      const old = buf.chunks;
      const next = alloc(buf.size);
      const h = half(buf.size);
      for (let i = 0; i < 2; i++) m.memory.copy(next[i]?.phys ?? 0, old[i]?.phys ?? 0, h);
      buf.chunks = next;
      // The old pages stay allocated while a stale mapping still points at them.
      const stale = buf.attachments.some((a) => [...a.maps.values()].some((c) => c === old));
      if (stale) misuse.push('stale mapping kept past move_notify');
      else for (const c of old) m.memory.freePages(c.phys, c.order);
      buf.resv.locked = false;
    },
    read(buf, off, len) {
      inRange(buf, off, len);
      const out = new Uint8Array(len);
      const h = half(buf.size);
      for (let done = 0; done < len; ) {
        const n = Math.min(len - done, h - ((off + done) % h));
        m.memory.readInto(physAt(buf, off + done), out, done, n);
        done += n;
      }
      return out;
    },
    write(buf, off, data) {
      inRange(buf, off, data.length);
      const h = half(buf.size);
      for (let done = 0; done < data.length; ) {
        const n = Math.min(data.length - done, h - ((off + done) % h));
        m.memory.write(physAt(buf, off + done), data, done, n);
        done += n;
      }
    },
    liveMaps: () => live,
  };
}

// kernel: drivers/gpu/drm/amd/amdgpu/amdgpu_dma_buf.c, drivers/gpu/drm/ttm/ttm_bo.c (eviction),
// drivers/gpu/drm/xe/xe_dma_buf.c — a GPU that exports buffers living in its VRAM BAR.
// The buffer can move between VRAM and system memory; every move calls move_notify, copies with
// the GPU's copy engine (a kernel fence in the reservation object) and frees the old placement
// only once the copy is done and no importer still maps it.
import {
  DMA_ATTR_DEBUGGING_IGNORE_CACHELINES,
  DMA_ATTR_SKIP_CPU_SYNC,
  DmaResvUsage,
  Errno,
  GFP_ZERO,
  MAX_SCHEDULE_TIMEOUT,
  PAGE_SIZE,
  PciP2pdmaMapType,
  SgTable,
  dmaMapPhys,
  dmaMapSgtable,
  dmaMappingError,
  dmaUnmapPhys,
  dmaUnmapSgtable,
  alignDown,
  pageAlign,
  SZ_64K,
  pciP2pdmaMapType,
  pcimP2pdmaInit,
  pcimP2pdmaProvider,
  toPciDev,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
} from '@dmakit/dma-core';
import type { Device, DmaBuf, DmaDataDirection, Machine, P2pdmaProvider, PciBar, PhysVec } from '@dmakit/dma-core';
import { dmaBufExport, dmaBufMoveNotify, toDmaBufObject } from './dmaBuf.js';
import type { DmaBufAttachmentObject, DmaBufObject, DmaBufOps, IosysMap } from './dmaBuf.js';
import { dmaBufFreeSgt, dmaBufPhysVecToSgt } from './physVec.js';
import { dmaFenceContextAlloc, dmaFenceCreate, dmaResvAddFence, dmaResvLock, dmaResvUnlock, dmaResvWaitTimeout } from './resv.js';

// Coherent GPU (no cache maintenance to skip); SKIP_CPU_SYNC is what exempts it from the overlap check.
const COPY_ATTRS = DMA_ATTR_DEBUGGING_IGNORE_CACHELINES | DMA_ATTR_SKIP_CPU_SYNC;

/** Largest sg entry the system-memory table builds (sg_dma_len is 32-bit, page aligned). */
const MAX_SG_SEG = 0xffff_f000;

/** Where a GPU buffer lives: device VRAM (behind a P2P BAR) or system pages. */
export type GpuPlacement = 'vram' | 'system';

/** One placement of a buffer: VRAM ranges or system pages. Freed when retired, copied and unmapped. */
interface Backing {
  readonly kind: GpuPlacement;
  /** VRAM: BAR ranges (CPU physical addresses). */
  readonly ranges: PhysVec[];
  /** System: one page per entry. */
  readonly pages: Float64Array;
  mapRefs: number;
  retired: boolean;
  /** The copy out of this backing has completed (or none was needed). */
  copied: boolean;
  freed: boolean;
}

interface GpuBo {
  readonly size: number;
  backing: Backing;
  pinCount: number;
  readonly maxRange: number;
}

/** Options of the GPU VRAM exporter: the VRAM BAR and the copy-engine bandwidth. */
export interface GpuVramOptions {
  /** BAR index of VRAM (must be a P2P-published memory BAR). Default: the largest BAR. */
  bar?: number;
  /** Copy engine bandwidth in bytes per ns (25 = 25 GB/s). */
  copyBytesPerNs?: number;
}

/** Options of one exported GPU buffer: name and the largest VRAM range (fragmentation). */
export interface GpuExportOptions {
  name?: string;
  /** Split the VRAM allocation into ranges of at most this many bytes (fragmented VRAM). */
  maxRange?: number;
}

/**
 * GPU exporter counters: evictions, restores, bytes copied, deferred frees, VRAM pages in use, CPU
 * fallbacks.
 */
export interface GpuVramStats {
  evictions: number;
  restores: number;
  bytesCopied: number;
  /** Frees that had to wait for an importer to unmap a stale mapping. */
  deferredFrees: number;
  vramPagesUsed: number;
  /** Copies or GPU accesses done by the CPU because the GPU could not map system memory. */
  cpuFallbacks: number;
}

/** A GPU exporting buffers from its VRAM BAR (a PCI P2P provider). */
export class GpuVramExporter {
  readonly machine: Machine;
  readonly gpu: Device;
  readonly bar: PciBar;
  readonly provider: P2pdmaProvider;
  readonly copyBytesPerNs: number;
  readonly stats: GpuVramStats = { evictions: 0, restores: 0, bytesCopied: 0, deferredFrees: 0, vramPagesUsed: 0, cpuFallbacks: 0 };
  readonly #used: Uint8Array;
  readonly #context = dmaFenceContextAlloc();
  #seqno = 0;
  readonly #tables = new WeakMap<SgTable, { backing: Backing; vram: boolean }>();

  /** Throws `RangeError` when the device is not a PCI function with a memory BAR. */
  constructor(machine: Machine, gpu: Device, opts: GpuVramOptions = {}) {
    const pdev = toPciDev(gpu);
    if (pdev === null) throw new RangeError(`gpu-vram: ${gpu.name} is not a PCI function`);
    const bar = opts.bar === undefined ? [...pdev.bars].sort((a, b) => b.size - a.size)[0] : pdev.bar(opts.bar);
    if (bar === undefined) throw new RangeError(`gpu-vram: ${gpu.name} has no such BAR`);
    pcimP2pdmaInit(pdev);
    const provider = pcimP2pdmaProvider(pdev, bar.index);
    if (provider === null) throw new RangeError(`gpu-vram: BAR${bar.index} of ${gpu.name} is not a P2P provider`);
    this.machine = machine;
    this.gpu = gpu;
    this.bar = bar;
    this.provider = provider;
    this.copyBytesPerNs = opts.copyBytesPerNs ?? 25;
    this.#used = new Uint8Array(bar.size / PAGE_SIZE);
  }

  /** VRAM bytes still free. */
  get vramFreeBytes(): number {
    return (this.#used.length - this.stats.vramPagesUsed) * PAGE_SIZE;
  }

  /** Allocate and export a buffer in VRAM (`amdgpu_gem_prime_export`). -EINVAL / -ENOMEM. */
  exportBuffer(len: number, opts: GpuExportOptions = {}): DmaBufObject | number {
    if (!Number.isSafeInteger(len) || len <= 0) return -Errno.EINVAL;
    const size = pageAlign(len);
    const maxRange = opts.maxRange === undefined ? size : Math.max(PAGE_SIZE, pageAlign(opts.maxRange));
    const ranges = this.#vramAlloc(size, maxRange);
    if (ranges === null) return -Errno.ENOMEM;
    for (const r of ranges) this.machine.memory.fill(r.paddr, r.len, 0);
    const bo: GpuBo = { size, backing: newBacking('vram', ranges, new Float64Array(0)), pinCount: 0, maxRange };
    const dmabuf = dmaBufExport({ exporter: this.gpu, expName: 'gpu-vram', ops: this.#ops(bo), size, priv: bo });
    if (typeof dmabuf === 'number') {
      this.#vramFree(ranges);
      return dmabuf;
    }
    dmabuf.name = opts.name ?? '';
    return dmabuf;
  }

  /** Where the buffer lives now. */
  placement(dmabuf: DmaBuf): GpuPlacement | null {
    return this.#bo(dmabuf)?.backing.kind ?? null;
  }

  /** The buffer's current VRAM ranges (empty when in system memory). */
  vramRanges(dmabuf: DmaBuf): readonly PhysVec[] {
    const bo = this.#bo(dmabuf);
    return bo?.backing.kind === 'vram' ? bo.backing.ranges : [];
  }

  /** TTM eviction to system memory: 0, -EBUSY (pinned), -ENOMEM, -EINVAL, -EDEADLK (resv held). */
  evict(dmabuf: DmaBuf): number {
    return this.#locked(dmabuf, (buf, bo) => (bo.backing.kind === 'system' ? 0 : this.#move(buf, bo, 'system')));
  }

  /** Bring an evicted buffer back to VRAM: 0, -EBUSY (pinned), -ENOMEM (VRAM full). */
  restore(dmabuf: DmaBuf): number {
    return this.#locked(dmabuf, (buf, bo) => (bo.backing.kind === 'vram' ? 0 : this.#move(buf, bo, 'vram')));
  }

  /**
   * The GPU itself writes the buffer (a shader or copy engine), wherever it lives: VRAM is local,
   * system memory is reached through the GPU's DMA port. Waits for pending moves first.
   */
  gpuWrite(dmabuf: DmaBuf, offset: number, bytes: Uint8Array): number {
    return this.#gpuAccess(dmabuf, offset, bytes.length, (phys, at, n, local) => {
      if (local) this.machine.memory.write(phys, bytes, at, n);
      else
        this.#dmaChunk(phys, n, DMA_FROM_DEVICE, (addr) => {
          this.gpu.dmaWrite(addr, bytes, at, n);
        }, () => {
          this.machine.memory.write(phys, bytes, at, n);
        });
    });
  }

  /** The GPU reads the buffer. Returns the bytes or -errno. */
  gpuRead(dmabuf: DmaBuf, offset: number, len: number): Uint8Array | number {
    const out = new Uint8Array(Math.max(0, len));
    const r = this.#gpuAccess(dmabuf, offset, len, (phys, at, n, local) => {
      if (local) this.machine.memory.readInto(phys, out, at, n);
      else
        this.#dmaChunk(phys, n, DMA_TO_DEVICE, (addr) => {
          this.gpu.dmaReadInto(addr, out, at, n);
        }, () => {
          this.machine.memory.readInto(phys, out, at, n);
        });
    });
    return r === 0 ? out : r;
  }

  // ---- internals ---------------------------------------------------------------------------

  #bo(dmabuf: DmaBuf): GpuBo | null {
    const buf = toDmaBufObject(dmabuf);
    if (buf === null || buf.released || buf.exporter !== this.gpu) return null;
    return buf.priv as GpuBo;
  }

  #locked(dmabuf: DmaBuf, fn: (buf: DmaBufObject, bo: GpuBo) => number): number {
    const buf = toDmaBufObject(dmabuf);
    const bo = this.#bo(dmabuf);
    if (buf === null || bo === null) return -Errno.EINVAL;
    const rc = dmaResvLock(buf.resv, 'gpu-vram');
    if (rc !== 0) return rc;
    try {
      return fn(buf, bo);
    } finally {
      dmaResvUnlock(buf.resv);
    }
  }

  /** Move `bo` to `to` (resv held): allocate, move_notify, fence the copy, retire the old one. */
  #move(buf: DmaBufObject, bo: GpuBo, to: GpuPlacement): number {
    if (bo.pinCount > 0) return -Errno.EBUSY;
    // Earlier moves must have landed before their destination becomes a source.
    dmaResvWaitTimeout(buf.resv, DmaResvUsage.KERNEL, false, MAX_SCHEDULE_TIMEOUT);
    let next: Backing;
    if (to === 'vram') {
      const ranges = this.#vramAlloc(bo.size, bo.maxRange);
      if (ranges === null) return -Errno.ENOMEM;
      next = newBacking('vram', ranges, new Float64Array(0));
    } else {
      const pages = this.#sysAlloc(bo.size);
      if (pages === null) return -Errno.ENOMEM;
      next = newBacking('system', [], pages);
    }
    // kernel: ttm_bo_move_* → dma_buf_move_notify before the old placement can be reused.
    dmaBufMoveNotify(buf);
    const old = bo.backing;
    bo.backing = next;
    old.retired = true;
    if (to === 'system') this.stats.evictions++;
    else this.stats.restores++;
    const clock = this.machine.clock;
    const fence = dmaFenceCreate(clock, this.#context, ++this.#seqno, clock.now() + Math.ceil(bo.size / this.copyBytesPerNs), () => {
      this.#copy(old, next, bo.size);
      old.copied = true;
      this.#maybeFree(old);
    });
    dmaResvAddFence(buf.resv, fence, DmaResvUsage.KERNEL);
    return 0;
  }

  /** The copy engine: VRAM is local to the GPU, system pages are written/read by its DMA port. */
  #copy(from: Backing, to: Backing, size: number): void {
    const chunk = new Uint8Array(PAGE_SIZE);
    for (let off = 0; off < size; off += PAGE_SIZE) {
      const src = physAt(from, off);
      const dst = physAt(to, off);
      if (from.kind === 'vram') this.machine.memory.readInto(src, chunk, 0, PAGE_SIZE);
      else
        this.#dmaChunk(src, PAGE_SIZE, DMA_TO_DEVICE, (addr) => {
          this.gpu.dmaReadInto(addr, chunk, 0, PAGE_SIZE);
        }, () => {
          this.machine.memory.readInto(src, chunk, 0, PAGE_SIZE);
        });
      if (to.kind === 'vram') this.machine.memory.write(dst, chunk, 0, PAGE_SIZE);
      else
        this.#dmaChunk(dst, PAGE_SIZE, DMA_FROM_DEVICE, (addr) => {
          this.gpu.dmaWrite(addr, chunk, 0, PAGE_SIZE);
        }, () => {
          this.machine.memory.write(dst, chunk, 0, PAGE_SIZE);
        });
    }
    this.stats.bytesCopied += size;
  }

  /**
   * Map one system chunk for the GPU, run the access, unmap. If the mapping fails (IOVA space or
   * page-table memory exhausted) the access is done by the CPU instead, as TTM falls back to
   * ttm_bo_move_memcpy when the copy engine cannot be used; counted in `stats.cpuFallbacks`.
   */
  #dmaChunk(phys: number, len: number, dir: DmaDataDirection, fn: (addr: number) => void, cpu: () => void): void {
    // The copy engine's transient mapping overlaps importers' mappings of the same pages on
    // purpose: tell dma-debug (DMA_ATTR_DEBUGGING_IGNORE_CACHELINES), as drivers do.
    const addr = dmaMapPhys(this.gpu, phys, len, dir, COPY_ATTRS);
    if (dmaMappingError(this.gpu, addr) !== 0) {
      this.stats.cpuFallbacks++;
      cpu();
      return;
    }
    try {
      fn(addr);
    } finally {
      dmaUnmapPhys(this.gpu, addr, len, dir, COPY_ATTRS);
    }
  }

  #gpuAccess(dmabuf: DmaBuf, offset: number, len: number, fn: (phys: number, at: number, n: number, local: boolean) => void): number {
    const buf = toDmaBufObject(dmabuf);
    const bo = this.#bo(dmabuf);
    if (buf === null || bo === null) return -Errno.EINVAL;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(len) || offset < 0 || len <= 0 || offset + len > bo.size) return -Errno.EINVAL;
    // The GPU's own command stream waits for its kernel fences (the pending move) first.
    dmaResvWaitTimeout(buf.resv, DmaResvUsage.KERNEL, false, MAX_SCHEDULE_TIMEOUT);
    const b = bo.backing;
    let done = 0;
    while (done < len) {
      const pos = offset + done;
      const n = Math.min(len - done, PAGE_SIZE - (pos % PAGE_SIZE));
      fn(physAt(b, pos), done, n, b.kind === 'vram');
      done += n;
    }
    return 0;
  }

  #maybeFree(b: Backing): void {
    if (b.freed || !b.retired || !b.copied) return;
    if (b.mapRefs > 0) {
      this.stats.deferredFrees++;
      return;
    }
    b.freed = true;
    if (b.kind === 'vram') this.#vramFree(b.ranges);
    else for (const p of b.pages) this.machine.memory.freePages(p, 0);
  }

  #sysAlloc(size: number): Float64Array | null {
    const n = size / PAGE_SIZE;
    const pages = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const p = this.machine.memory.allocPages(0, GFP_ZERO);
      if (p === 0) {
        for (let j = 0; j < i; j++) this.machine.memory.freePages(pages[j] ?? 0, 0);
        return null;
      }
      pages[i] = p;
    }
    return pages;
  }

  /** First-fit runs of free VRAM pages, each at most `maxRange` bytes. Null if VRAM is full. */
  #vramAlloc(size: number, maxRange: number): PhysVec[] | null {
    const used = this.#used;
    const want = size / PAGE_SIZE;
    const maxPages = maxRange / PAGE_SIZE;
    if (this.#used.length - this.stats.vramPagesUsed < want) return null;
    const ranges: PhysVec[] = [];
    let got = 0;
    for (let p = 0; p < used.length && got < want; p++) {
      if (used[p] !== 0) continue;
      let q = p;
      while (q < used.length && used[q] === 0 && q - p < maxPages && got + (q - p) < want) q++;
      for (let k = p; k < q; k++) used[k] = 1;
      ranges.push({ paddr: this.bar.start + p * PAGE_SIZE, len: (q - p) * PAGE_SIZE });
      got += q - p;
      p = q - 1;
    }
    this.stats.vramPagesUsed += got;
    return ranges;
  }

  #vramFree(ranges: readonly PhysVec[]): void {
    for (const r of ranges) {
      const first = (r.paddr - this.bar.start) / PAGE_SIZE;
      const n = r.len / PAGE_SIZE;
      this.#used.fill(0, first, first + n);
      this.stats.vramPagesUsed -= n;
    }
  }

  /** Can `attach` reach VRAM peer-to-peer (amdgpu_dmabuf_is_xgmi_accessible / p2p distance)? */
  #reachesVram(attach: DmaBufAttachmentObject): boolean {
    return attach.peer2peer && pciP2pdmaMapType(this.provider, attach.dev) !== PciP2pdmaMapType.NOT_SUPPORTED;
  }

  #ops(bo: GpuBo): DmaBufOps {
    return {
      pin: (attach) => {
        // amdgpu_dma_buf_pin: importers that cannot reach VRAM pin the buffer in system memory.
        if (bo.backing.kind === 'vram' && !this.#reachesVram(attach)) {
          const rc = this.#move(attach.dmabuf, bo, 'system');
          if (rc !== 0) return rc;
        }
        bo.pinCount++;
        return 0;
      },
      unpin: () => {
        if (bo.pinCount > 0) bo.pinCount--;
      },
      mapDmaBuf: (attach, dir) => {
        if (bo.backing.kind === 'vram' && !this.#reachesVram(attach)) {
          const rc = this.#move(attach.dmabuf, bo, 'system');
          if (rc !== 0) return rc;
        }
        const b = bo.backing;
        let sgt: SgTable | number;
        if (b.kind === 'vram') {
          sgt = dmaBufPhysVecToSgt(attach, this.provider, b.ranges, b.ranges.length, bo.size, dir);
        } else {
          // sg_alloc_table_from_pages_segment: physically contiguous pages share one entry, up to
          // the importer's max segment size.
          const maxSeg = Math.max(PAGE_SIZE, Math.min(MAX_SG_SEG, alignDown(attach.dev.dmaParms?.maxSegmentSize ?? SZ_64K, PAGE_SIZE)));
          const t = new SgTable(b.pages.length);
          let start = b.pages[0] ?? 0;
          let len = 0;
          for (const p of b.pages) {
            if (p === start + len && len + PAGE_SIZE <= maxSeg) {
              len += PAGE_SIZE;
              continue;
            }
            if (len > 0) t.push(start, len);
            start = p;
            len = PAGE_SIZE;
          }
          if (len > 0) t.push(start, len);
          const ret = dmaMapSgtable(attach.dev, t, dir, 0);
          sgt = ret === 0 ? t : ret;
        }
        if (typeof sgt === 'number') return sgt;
        b.mapRefs++;
        this.#tables.set(sgt, { backing: b, vram: b.kind === 'vram' });
        return sgt;
      },
      unmapDmaBuf: (attach, sgt, dir) => {
        const t = this.#tables.get(sgt);
        if (t === undefined) return;
        this.#tables.delete(sgt);
        if (t.vram) dmaBufFreeSgt(attach, sgt, dir);
        else dmaUnmapSgtable(attach.dev, sgt, dir, 0);
        t.backing.mapRefs--;
        this.#maybeFree(t.backing);
      },
      vmap: (dmabuf) => {
        // Pinned while vmapped so the CPU view stays valid.
        if (bo.backing.kind === 'vram' && bo.pinCount === 0) dmaResvWaitTimeout(dmabuf.resv, DmaResvUsage.KERNEL, false, MAX_SCHEDULE_TIMEOUT);
        bo.pinCount++;
        return this.#cpuMap(bo);
      },
      vunmap: () => {
        if (bo.pinCount > 0) bo.pinCount--;
      },
      release: (dmabuf) => {
        dmaResvWaitTimeout(dmabuf.resv, DmaResvUsage.KERNEL, false, MAX_SCHEDULE_TIMEOUT);
        bo.backing.retired = true;
        bo.backing.copied = true;
        this.#maybeFree(bo.backing);
      },
    };
  }

  #cpuMap(bo: GpuBo): IosysMap {
    const mem = this.machine.memory;
    const walk = (offset: number, len: number, fn: (phys: number, at: number, n: number) => void): void => {
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(len) || offset < 0 || len < 0 || offset + len > bo.size) {
        throw new RangeError(`iosys_map: [${offset}, +${len}) outside the ${bo.size}-byte buffer`);
      }
      let done = 0;
      while (done < len) {
        const pos = offset + done;
        const n = Math.min(len - done, PAGE_SIZE - (pos % PAGE_SIZE));
        fn(physAt(bo.backing, pos), done, n);
        done += n;
      }
    };
    return {
      get isIomem() {
        return bo.backing.kind === 'vram';
      },
      read(offset, len) {
        const out = new Uint8Array(len);
        walk(offset, len, (p, at, n) => {
          mem.readInto(p, out, at, n);
        });
        return out;
      },
      write(offset, bytes) {
        walk(offset, bytes.length, (p, at, n) => {
          mem.write(p, bytes, at, n);
        });
      },
    };
  }
}

function newBacking(kind: GpuPlacement, ranges: PhysVec[], pages: Float64Array): Backing {
  return { kind, ranges, pages, mapRefs: 0, retired: false, copied: false, freed: false };
}

/** Physical address of byte `off` of a backing. */
function physAt(b: Backing, off: number): number {
  if (b.kind === 'system') return (b.pages[Math.floor(off / PAGE_SIZE)] ?? 0) + (off % PAGE_SIZE);
  let base = 0;
  for (const r of b.ranges) {
    if (off < base + r.len) return r.paddr + (off - base);
    base += r.len;
  }
  return -1;
}

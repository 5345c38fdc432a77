// kernel: drivers/vfio/pci/mlx5/cmd.c (mlx5vf_alloc_data_buffer, mlx5vf_add_pages,
// mlx5vf_dma_data_buffer, register_dma_pages, unregister_dma_pages, mlx5vf_free_data_buffer,
// mlx5vf_get_data_buffer, mlx5vf_put_data_buffer); the legacy path is the pre-6.16 cmd.c
// (sg_alloc_append_table_from_pages + dma_map_sgtable + populate_mtt).
import {
  DMA_NONE,
  DMA_MAPPING_ERROR,
  DmaIovaState,
  Errno,
  PAGE_SIZE,
  dmaIovaDestroy,
  dmaIovaLink,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaMapPage,
  dmaMapSgtable,
  dmaMappingError,
  dmaUnmapPage,
  dmaUnmapSgtable,
  sgAllocTable,
  sgSetPhys,
} from '@dmakit/dma-core';
import type { Device, DmaDataDirection, Machine, SgTable } from '@dmakit/dma-core';
import { MLX5_CREATE_MKEY_IN_BYTES } from './mlx5Ifc.js';
import type { Mlx5SimFunction } from './mlx5Function.js';

/** Counters of the buffer layer (metadata bytes are measured from the live typed arrays). */
export interface Mlx5BufferStats {
  allocated: number;
  freed: number;
  recycled: number;
  /** Buffers registered through dma_iova_try_alloc + link + one sync. */
  iovaRegistrations: number;
  /** Buffers registered page by page with dma_map_page (no IOMMU, or the IOVA space was full). */
  fallbackRegistrations: number;
  /** Buffers mapped with dma_map_sgtable (legacy path). */
  sgtRegistrations: number;
  pagesRegistered: number;
  /** dma_iova_sync calls. */
  iovaSyncs: number;
  /** Live and peak metadata bytes (page array + MTT, or scatterlist + MTT). */
  metadataBytes: number;
  peakMetadataBytes: number;
  livePages: number;
  peakLivePages: number;
}

/** What the buffer helpers need from the driver (`mlx5vf_pci_core_device` + `mlx5_core_dev`). */
export interface Mlx5BufferCtx {
  readonly machine: Machine;
  /** `mdev->device`: the PF the migration buffers are DMA-mapped for. */
  readonly dev: Device;
  readonly fw: Mlx5SimFunction;
  /** Use the pre-conversion scatterlist path (`sg_append_table` + `dma_map_sgtable`). */
  readonly legacySg: boolean;
  /** `mvdev->mdev_detach`. */
  mdevDetached: boolean;
  readonly stats: Mlx5BufferStats;
}

/** Fresh zeroed buffer counters. */
export function newBufferStats(): Mlx5BufferStats {
  return {
    allocated: 0,
    freed: 0,
    recycled: 0,
    iovaRegistrations: 0,
    fallbackRegistrations: 0,
    sgtRegistrations: 0,
    pagesRegistered: 0,
    iovaSyncs: 0,
    metadataBytes: 0,
    peakMetadataBytes: 0,
    livePages: 0,
    peakLivePages: 0,
  };
}

/**
 * `struct mlx5_vhca_data_buffer`: one migration data chunk. `pageList` holds the pages (the
 * kernel's `struct page *` array; 8 bytes each here too); the per-page DMA addresses live only in
 * the MTT array of `mkeyIn`. On the legacy path `sgt` holds the pages instead and `pageList` is
 * empty (the kernel kept only the sg_append_table).
 */
export class Mlx5VhcaDataBuffer {
  pageList: Float64Array;
  npages: number;
  readonly state = new DmaIovaState();
  startPos = 0;
  length = 0;
  mkey = 0;
  /** CREATE_MKEY input; its MTT array (`mtt`) is the only record of the DMA addresses. */
  mkeyIn: ArrayBuffer | null = null;
  mtt: Float64Array | null = null;
  readonly dmaDir: DmaDataDirection;
  stopCopyChunkNum = 0;
  sgt: SgTable | null = null;
  /** Set when the buffer went through the per-page dma_map_page fallback. */
  fallback = false;

  constructor(npages: number, dir: DmaDataDirection) {
    this.npages = npages;
    this.pageList = new Float64Array(npages);
    this.dmaDir = dir;
  }

  /** Physical address of page `i`. */
  pagePhys(i: number): number {
    return this.sgt !== null ? this.sgt.sgPhys(i) : (this.pageList[i] ?? 0);
  }

  /** Metadata bytes this buffer holds for its pages: page array or scatterlist, plus MTT. */
  metadataBytes(): number {
    return this.pageList.byteLength + (this.mkeyIn !== null ? this.mkeyIn.byteLength - MLX5_CREATE_MKEY_IN_BYTES : 0) + (this.sgt?.metadataBytes() ?? 0);
  }

  /** CPU copy out of the buffer (kmap_local_page page by page). */
  copyOut(machine: Machine, off: number, out: Uint8Array, outOff: number, len: number): void {
    let done = 0;
    while (done < len) {
      const p = Math.floor((off + done) / PAGE_SIZE);
      const po = (off + done) % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - po, len - done);
      machine.memory.readInto(this.pagePhys(p) + po, out, outOff + done, n);
      done += n;
    }
  }

  /** CPU copy into the buffer. */
  copyIn(machine: Machine, off: number, src: Uint8Array, srcOff: number, len: number): void {
    let done = 0;
    while (done < len) {
      const p = Math.floor((off + done) / PAGE_SIZE);
      const po = (off + done) % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - po, len - done);
      machine.memory.write(this.pagePhys(p) + po, src, srcOff + done, n);
      done += n;
    }
  }
}

function account(ctx: Mlx5BufferCtx, delta: number): void {
  const s = ctx.stats;
  s.metadataBytes += delta;
  if (s.metadataBytes > s.peakMetadataBytes) s.peakMetadataBytes = s.metadataBytes;
}

/**
 * `register_dma_pages(mdev, npages, page_list, mtt, state, dir)`: one IOVA range for the whole
 * buffer, each page linked at its offset, MTT[i] = state.addr + offset, then ONE dma_iova_sync;
 * without an IOVA range, dma_map_page per page. On error everything done so far is undone.
 */
export function registerDmaPages(ctx: Mlx5BufferCtx, npages: number, pageList: Float64Array, mtt: Float64Array, state: DmaIovaState, dir: DmaDataDirection): number {
  const dev = ctx.dev;
  const size = npages * PAGE_SIZE;
  if (dmaIovaTryAlloc(dev, state, 0, size)) {
    let mapped = 0;
    for (let i = 0; i < npages; i++) {
      const err = dmaIovaLink(dev, state, pageList[i] ?? 0, mapped, PAGE_SIZE, dir, 0);
      if (err !== 0) {
        dmaIovaDestroy(dev, state, mapped, dir, 0);
        return err;
      }
      mtt[i] = state.addr + mapped;
      mapped += PAGE_SIZE;
    }
    const err = dmaIovaSync(dev, state, 0, mapped);
    ctx.stats.iovaSyncs++;
    if (err !== 0) {
      dmaIovaDestroy(dev, state, mapped, dir, 0);
      return err;
    }
    ctx.stats.iovaRegistrations++;
  } else {
    for (let i = 0; i < npages; i++) {
      const addr = dmaMapPage(dev, pageList[i] ?? 0, 0, PAGE_SIZE, dir, 0);
      if (addr === DMA_MAPPING_ERROR || dmaMappingError(dev, addr) !== 0) {
        for (let j = i - 1; j >= 0; j--) dmaUnmapPage(dev, mtt[j] ?? 0, PAGE_SIZE, dir, 0);
        return -Errno.ENOMEM;
      }
      mtt[i] = addr;
    }
    ctx.stats.fallbackRegistrations++;
  }
  ctx.stats.pagesRegistered += npages;
  return 0;
}

/** `unregister_dma_pages`: one dma_iova_destroy, or dma_unmap_page walking the MTT backwards. */
export function unregisterDmaPages(ctx: Mlx5BufferCtx, npages: number, mtt: Float64Array, state: DmaIovaState, dir: DmaDataDirection): void {
  const dev = ctx.dev;
  if (state.size !== 0) {
    dmaIovaDestroy(dev, state, npages * PAGE_SIZE, dir, 0);
    return;
  }
  for (let i = npages - 1; i >= 0; i--) dmaUnmapPage(dev, mtt[i] ?? 0, PAGE_SIZE, dir, 0);
}

/** Legacy: dma_map_sgtable over the appended scatterlist, then populate_mtt per DMA page. */
function registerDmaSgt(ctx: Mlx5BufferCtx, buf: Mlx5VhcaDataBuffer, mtt: Float64Array): number {
  const sgt = buf.sgt;
  if (sgt === null) return -Errno.EINVAL;
  const ret = dmaMapSgtable(ctx.dev, sgt, buf.dmaDir, 0);
  if (ret !== 0) return ret;
  let i = 0;
  for (let s = 0; s < sgt.nents; s++) {
    const a = sgt.sgDmaAddress(s);
    const len = sgt.sgDmaLen(s);
    for (let o = 0; o < len && i < buf.npages; o += PAGE_SIZE) mtt[i++] = a + o;
  }
  ctx.stats.sgtRegistrations++;
  ctx.stats.pagesRegistered += buf.npages;
  return 0;
}

/** `mlx5vf_dma_data_buffer`: allocate mkey_in, register the pages, create the mkey. */
export function mlx5vfDmaDataBuffer(ctx: Mlx5BufferCtx, buf: Mlx5VhcaDataBuffer): number {
  if (ctx.mdevDetached) return -107; // -ENOTCONN
  if (buf.mkeyIn !== null || buf.npages === 0) return -Errno.EINVAL;
  const mttEntries = buf.npages + (buf.npages % 2); // round_up(npages, 2)
  const mkeyIn = new ArrayBuffer(MLX5_CREATE_MKEY_IN_BYTES + mttEntries * 8);
  // The command header: access mode MTT, PD, length, translations_octword_size.
  const hdr = new DataView(mkeyIn, 0, MLX5_CREATE_MKEY_IN_BYTES);
  hdr.setUint16(0, 0x200, false); // MLX5_CMD_OP_CREATE_MKEY
  hdr.setUint32(0x10 + 0x14, mttEntries / 2, false);
  hdr.setFloat64(0x10 + 0x18, buf.npages * PAGE_SIZE, false);
  const mtt = new Float64Array(mkeyIn, MLX5_CREATE_MKEY_IN_BYTES, buf.npages);
  const ret = ctx.legacySg ? registerDmaSgt(ctx, buf, mtt) : registerDmaPages(ctx, buf.npages, buf.pageList, mtt, buf.state, buf.dmaDir);
  if (ret !== 0) return ret;
  const mkey = ctx.fw.createMkey(mkeyIn, buf.npages);
  if (mkey < 0) {
    if (ctx.legacySg && buf.sgt !== null) dmaUnmapSgtable(ctx.dev, buf.sgt, buf.dmaDir, 0);
    else unregisterDmaPages(ctx, buf.npages, mtt, buf.state, buf.dmaDir);
    return mkey;
  }
  buf.mkeyIn = mkeyIn;
  buf.mtt = mtt;
  buf.mkey = mkey;
  account(ctx, mkeyIn.byteLength - MLX5_CREATE_MKEY_IN_BYTES);
  return 0;
}

function freePages(ctx: Mlx5BufferCtx, buf: Mlx5VhcaDataBuffer, n: number): void {
  for (let i = n - 1; i >= 0; i--) ctx.machine.memory.freePages(buf.pagePhys(i), 0);
}

/**
 * `mlx5vf_alloc_data_buffer(migf, npages, dir)`: pages (alloc_pages_bulk), then the DMA mapping
 * unless `dir` is DMA_NONE. A buffer or -ENOMEM / the mapping errno; nothing is leaked on error.
 */
export function mlx5vfAllocDataBuffer(ctx: Mlx5BufferCtx, npages: number, dir: DmaDataDirection): Mlx5VhcaDataBuffer | number {
  if (!Number.isSafeInteger(npages) || npages < 0 || npages > 2 ** 26) return -Errno.EINVAL;
  const buf = new Mlx5VhcaDataBuffer(npages, dir);
  const mem = ctx.machine.memory;
  for (let i = 0; i < npages; i++) {
    const p = mem.allocPages(0);
    if (p === 0) {
      for (let j = i - 1; j >= 0; j--) mem.freePages(buf.pageList[j] ?? 0, 0);
      return -Errno.ENOMEM;
    }
    buf.pageList[i] = p;
  }
  if (ctx.legacySg && npages > 0) {
    // sg_alloc_append_table_from_pages: one entry per page (bulk-allocated pages are rarely
    // contiguous; the model does not merge so the per-page cost is what a scattered buffer pays).
    const sgt = sgAllocTable(npages);
    if (sgt === null) {
      for (let j = npages - 1; j >= 0; j--) mem.freePages(buf.pageList[j] ?? 0, 0);
      return -Errno.ENOMEM;
    }
    for (let i = 0; i < npages; i++) sgSetPhys(sgt, i, buf.pageList[i] ?? 0, PAGE_SIZE);
    buf.sgt = sgt;
    buf.pageList = new Float64Array(0); // the temporary page array is freed
  }
  account(ctx, buf.metadataBytes());
  if (dir !== DMA_NONE && npages > 0) {
    const ret = mlx5vfDmaDataBuffer(ctx, buf);
    if (ret !== 0) {
      account(ctx, -buf.metadataBytes());
      freePages(ctx, buf, npages);
      return ret;
    }
  }
  ctx.stats.allocated++;
  ctx.stats.livePages += npages;
  if (ctx.stats.livePages > ctx.stats.peakLivePages) ctx.stats.peakLivePages = ctx.stats.livePages;
  return buf;
}

/** `mlx5vf_free_data_buffer`: destroy the mkey, unregister, free mkey_in and the pages. */
export function mlx5vfFreeDataBuffer(ctx: Mlx5BufferCtx, buf: Mlx5VhcaDataBuffer): void {
  account(ctx, -buf.metadataBytes());
  if (buf.mkeyIn !== null && buf.mtt !== null) {
    ctx.fw.destroyMkey(buf.mkey);
    if (buf.sgt !== null) dmaUnmapSgtable(ctx.dev, buf.sgt, buf.dmaDir, 0);
    else unregisterDmaPages(ctx, buf.npages, buf.mtt, buf.state, buf.dmaDir);
    buf.mkeyIn = null;
    buf.mtt = null;
    buf.mkey = 0;
  }
  freePages(ctx, buf, buf.npages);
  ctx.stats.freed++;
  ctx.stats.livePages -= buf.npages;
  buf.npages = 0;
}

/**
 * `mlx5vf_get_data_buffer(migf, npages, dir)`: reuse the first recyclable buffer of the same
 * direction with at least `npages` pages; smaller same-direction buffers met on the way are freed.
 */
export function mlx5vfGetDataBuffer(ctx: Mlx5BufferCtx, availList: Mlx5VhcaDataBuffer[], npages: number, dir: DmaDataDirection): Mlx5VhcaDataBuffer | number {
  const toFree: Mlx5VhcaDataBuffer[] = [];
  let found: Mlx5VhcaDataBuffer | null = null;
  for (let i = 0; i < availList.length; ) {
    const b = availList[i];
    if (b === undefined) break;
    if (b.dmaDir === dir) {
      if (b.npages >= npages) {
        availList.splice(i, 1);
        found = b;
        break;
      }
      availList.splice(i, 1);
      toFree.push(b);
      continue;
    }
    i++;
  }
  for (const b of toFree) mlx5vfFreeDataBuffer(ctx, b);
  if (found !== null) {
    ctx.stats.recycled++;
    return found;
  }
  return mlx5vfAllocDataBuffer(ctx, npages, dir);
}

/** `mlx5vf_put_data_buffer`. */
export function mlx5vfPutDataBuffer(availList: Mlx5VhcaDataBuffer[], buf: Mlx5VhcaDataBuffer): void {
  buf.stopCopyChunkNum = 0;
  buf.length = 0;
  buf.startPos = 0;
  availList.push(buf);
}

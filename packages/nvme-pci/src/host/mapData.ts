// Request preparation and the data-mapping hot path: the command (nvme_setup_cmd), nvme_map_data
// with its single-segment fast path, the PRP and SGL builders over the iod, the legacy sgtable
// path, and nvme_unmap_data with the descriptor pools.
// kernel: drivers/nvme/host/pci.c [6.17] (nvme_pci_use_sgls, nvme_pci_avg_seg_size,
// nvme_pci_setup_data_simple, nvme_map_data, nvme_pci_prp_iter_next, nvme_pci_setup_data_prp,
// nvme_pci_sgl_set_data, nvme_pci_sgl_set_seg, nvme_pci_setup_data_sgl, nvme_unmap_data,
// nvme_free_prps, nvme_free_sgls, nvme_free_descriptors; the pre-6.17 blk_rq_map_sg +
// dma_map_sgtable path for `mapping: 'sg'`), drivers/nvme/host/core.c (nvme_setup_cmd,
// nvme_setup_rw, nvme_setup_flush, nvme_setup_write_zeroes).
//
// Internal: the builders are plain functions over the iod and the device state (the kernel's
// `struct nvme_dev`), exported for the other host files and for their direct unit tests
// (mapData.test.ts), not from the package.
import {
  BlkStatus,
  blkRqNrPhysSegments,
  blkRqPayloadBytes,
  dmaMapPhys,
  dmaMappingError,
  dmaMapSgtable,
  dmaNeedUnmap,
  dmaPoolAlloc,
  dmaPoolFree,
  dmaUnmapPage,
  dmaUnmapSgtable,
  dmaUseIova,
  Errno,
  isPciP2pdmaPage,
  REQ_FUA,
  ReqOp,
  rqDmaDir,
  SECTOR_SHIFT,
  SgTable,
} from '@dmakit/dma-core';
import type { BlkRequest, DmaDataDirection } from '@dmakit/dma-core';
import { NVME_SGL_DESC_SIZE, NvmeOpcode, NvmeSglType, readLe64, SQE, writeLe64 } from '../controller/spec.js';
import {
  IOD_LEGACY_SG,
  IOD_SINGLE_SEGMENT,
  IOD_SMALL_DESCRIPTOR,
  NVME_CTRL_PAGE_SIZE,
  NVME_MAX_NR_DESCRIPTORS,
  NVME_MAX_SEGS,
  NVME_PRPS_PER_PAGE,
  NVME_SMALL_POOL_PRPS,
  NVME_SMALL_POOL_SGLS,
  SGL_FORCED,
  SGL_SUPPORTED,
  SGL_UNSUPPORTED,
} from './constants.js';
import { nvmeLog } from './dev.js';
import type { NvmeDevState } from './dev.js';
import type { NvmeIod } from './iod.js';
import type { NvmeQueue } from './queue.js';

export { IOD_LEGACY_SG } from './constants.js';
/** `sizeof(struct scatterlist)` on 64-bit with CONFIG_NEED_SG_DMA_LENGTH: page_link, offset, length, dma_address, dma_length (+ flags). */
const SCATTERLIST_ENTRY_BYTES = 32;
/** PSDT 01b: SGL for data, MPTR a contiguous buffer (`NVME_CMD_SGL_METABUF`). */
export const NVME_CMD_SGL_METABUF = 1 << 6;

// ---- command setup (core.c) ------------------------------------------------------------------------

/** The request carries data to map (a read or write with physical segments). */
export function nvmeHasData(req: BlkRequest): boolean {
  return (req.op === ReqOp.READ || req.op === ReqOp.WRITE) && blkRqNrPhysSegments(req) > 0;
}

/** `nvme_setup_cmd` for the operations this model supports (read, write, flush, write zeroes). */
export function nvmeSetupCmd(d: NvmeDevState, req: BlkRequest, iod: NvmeIod): BlkStatus {
  const ns = d.ns;
  if (ns === null) return BlkStatus.IOERR;
  const dv = iod.cmdDv;
  dv.setUint32(SQE.NSID, ns.nsid, true);
  const op = req.op;
  if (op === ReqOp.FLUSH) {
    dv.setUint8(SQE.OPC, NvmeOpcode.FLUSH);
    return BlkStatus.OK;
  }
  if (op !== ReqOp.READ && op !== ReqOp.WRITE && op !== ReqOp.WRITE_ZEROES) return BlkStatus.NOTSUPP;
  const len = req.dataLen;
  const lbs = ns.lbaSize;
  const spl = lbs >> SECTOR_SHIFT;
  // The block layer guarantees logical-block granularity; a request that breaks it is refused.
  if (!Number.isSafeInteger(len) || len <= 0 || len % lbs !== 0 || !Number.isSafeInteger(req.sector) || req.sector < 0 || req.sector % spl !== 0) {
    return BlkStatus.INVAL;
  }
  const nlb = len / lbs;
  if (nlb > 0x10000 || len > d.maxHwSectors << SECTOR_SHIFT) return BlkStatus.IOERR;
  dv.setUint8(SQE.OPC, op === ReqOp.READ ? NvmeOpcode.READ : op === ReqOp.WRITE ? NvmeOpcode.WRITE : NvmeOpcode.WRITE_ZEROES);
  writeLe64(dv, SQE.CDW10, req.sector / spl);
  dv.setUint32(SQE.CDW12, ((nlb - 1) | ((req.cmdFlags & REQ_FUA) !== 0 ? 1 << 30 : 0)) >>> 0, true);
  return BlkStatus.OK;
}

// ---- nvme_map_data -------------------------------------------------------------------------------

/** `nvme_pci_use_sgls`. */
export function nvmePciUseSgls(d: NvmeDevState, q: NvmeQueue): number {
  if (q.qid === 0 || !d.ctrlSgls) return SGL_UNSUPPORTED;
  return d.opts.forceSgl ? SGL_FORCED : SGL_SUPPORTED;
}

/** `nvme_map_data`. */
export function nvmeMapData(d: NvmeDevState, q: NvmeQueue, iod: NvmeIod, req: BlkRequest): BlkStatus {
  const useSgl = nvmePciUseSgls(d, q);
  const nseg = blkRqNrPhysSegments(req);
  if (nseg === 1) {
    const st = nvmePciSetupDataSimple(d, iod, req, useSgl);
    if (st !== BlkStatus.AGAIN) return st;
  }
  d.stats.physSegments += nseg;
  if (d.opts.mapping === 'sg') return nvmeMapDataSg(d, iod, req, useSgl);
  const it = iod.iter;
  if (!d.blk.blkRqDmaMapIterStart(req, d.device, iod.dmaState, it)) return it.status === BlkStatus.OK ? BlkStatus.IOERR : it.status;
  iod.mappedLen = it.len;
  d.stats.dmaSegments++;
  const coalesced = d.blk.blkRqDmaMapCoalesce(iod.dmaState);
  if (coalesced) d.stats.iovaCoalesced++;
  // 6.17+: nvme_pci_avg_seg_size divides by the physical segment count, or 1 once the IOVA was coalesced.
  if (nvmeWantSgl(d, useSgl, req, coalesced ? 1 : nseg)) return nvmePciSetupDataSgl(d, iod, req, coalesced);
  return nvmePciSetupDataPrp(d, iod, req);
}

/**
 * SGL or PRP for this request: forced, or the average segment size (payload / `nseg`) at least
 * `sgl_threshold`. `nseg` is what the kernel version divides by: 6.17+ `nvme_pci_avg_seg_size`
 * (physical segments, 1 if the IOVA was coalesced); 6.3-6.16 the DMA-mapped entry count.
 */
export function nvmeWantSgl(d: NvmeDevState, useSgl: number, req: BlkRequest, nseg: number): boolean {
  if (useSgl === SGL_FORCED) return true;
  const thr = d.opts.sglThreshold;
  // nvme_pci_avg_seg_size
  return useSgl === SGL_SUPPORTED && thr !== 0 && Math.ceil(blkRqPayloadBytes(req) / nseg) >= thr;
}

/** `nvme_pci_setup_data_simple`: one segment mapped with `dma_map_bvec`, no iterator, no list. */
export function nvmePciSetupDataSimple(d: NvmeDevState, iod: NvmeIod, req: BlkRequest, useSgl: number): BlkStatus {
  const bv = d.bv;
  if (!d.blk.reqBvec(req, bv)) return BlkStatus.AGAIN;
  const off = bv.paddr % NVME_CTRL_PAGE_SIZE;
  const prpPossible = off + bv.len <= NVME_CTRL_PAGE_SIZE * 2;
  if (useSgl === SGL_UNSUPPORTED && !prpPossible) return BlkStatus.AGAIN;
  if (isPciP2pdmaPage(d.device, bv.paddr)) return BlkStatus.AGAIN;
  const dev = d.device;
  const dma = dmaMapPhys(dev, bv.paddr, bv.len, rqDmaDir(req), 0);
  if (dmaMappingError(dev, dma) !== 0) return BlkStatus.RESOURCE;
  iod.totalLen = bv.len;
  iod.flags |= IOD_SINGLE_SEGMENT;
  d.stats.singleSegment++;
  const dv = iod.cmdDv;
  if (useSgl === SGL_FORCED || !prpPossible) {
    iod.cmd[SQE.FLAGS] = NVME_CMD_SGL_METABUF;
    nvmePciSglSetData(dv, SQE.DPTR, dma, bv.len);
    d.stats.sglCommands++;
  } else {
    const first = NVME_CTRL_PAGE_SIZE - (dma % NVME_CTRL_PAGE_SIZE);
    writeLe64(dv, SQE.PRP1, dma);
    writeLe64(dv, SQE.PRP2, bv.len > first ? dma + first : 0);
    d.stats.prpCommands++;
  }
  return BlkStatus.OK;
}

/** The legacy path: `blk_rq_map_sg` + `dma_map_sgtable`, then the same PRP/SGL builders over the DMA segments. */
export function nvmeMapDataSg(d: NvmeDevState, iod: NvmeIod, req: BlkRequest, useSgl: number): BlkStatus {
  const nseg = blkRqNrPhysSegments(req);
  if (nseg > NVME_MAX_SEGS) return BlkStatus.IOERR;
  // The kernel allocated iod->sgt.sgl from a mempool per request; here one table per tag.
  let sgt = iod.sgt;
  if (sgt === null) {
    sgt = new SgTable(NVME_MAX_SEGS);
    iod.sgt = sgt;
  }
  sgt.origNents = 0;
  sgt.nents = 0;
  const n = d.blk.blkRqMapSg(req, sgt);
  if (n <= 0) return BlkStatus.IOERR;
  sgt.origNents = n;
  sgt.nents = n;
  const r = dmaMapSgtable(d.device, sgt, rqDmaDir(req), 0);
  if (r !== 0) return r === -Errno.ENOMEM ? BlkStatus.RESOURCE : r === -Errno.EREMOTEIO ? BlkStatus.TARGET : BlkStatus.IOERR;
  iod.flags |= IOD_LEGACY_SG;
  d.stats.legacySg++;
  d.stats.dmaSegments += sgt.nents;
  // Metadata the legacy path keeps per request: one scatterlist entry per segment.
  d.stats.sgMetadataBytes += n * SCATTERLIST_ENTRY_BYTES;
  const it = iod.iter;
  it.addr = sgt.dmaAddress[0] ?? 0;
  it.len = sgt.dmaLength[0] ?? 0;
  it.status = BlkStatus.OK;
  iod.sgIdx = 1;
  const coalesced = sgt.nents === 1;
  // Kernel-version-dependent rule, modelled as 6.3+: nvme_pci_use_sgls(dev, req, iod->sgt.nents)
  // averages the payload over the DMA-mapped entry count (commit ae5829350324 "nvme-pci: use mapped
  // entries for sgl decision", merged for 6.3), so a request an IOMMU merged into fewer IOVA ranges
  // counts as fewer, larger segments. Up to 6.2 (e.g. 6.1) the average used
  // blk_rq_nr_phys_segments(req): a 64 KiB request of 4 x 16 KiB segments stayed a PRP list
  // (16 KiB < sgl_threshold) even when the IOMMU mapped it as one range. From 6.17 the iterator path
  // above (nvme_pci_avg_seg_size) counts physical segments again unless the IOVA was coalesced.
  if (nvmeWantSgl(d, useSgl, req, sgt.nents)) return nvmePciSetupDataSgl(d, iod, req, coalesced);
  return nvmePciSetupDataPrp(d, iod, req);
}

/** Map the next segment: the block iterator, or the next DMA segment of the legacy sgtable. */
export function nvmeMapNext(d: NvmeDevState, req: BlkRequest, iod: NvmeIod): boolean {
  if ((iod.flags & IOD_LEGACY_SG) !== 0) {
    const sgt = iod.sgt;
    const it = iod.iter;
    if (sgt === null || iod.sgIdx >= sgt.nents) {
      it.status = BlkStatus.OK;
      return false;
    }
    it.addr = sgt.dmaAddress[iod.sgIdx] ?? 0;
    it.len = sgt.dmaLength[iod.sgIdx] ?? 0;
    iod.sgIdx++;
    return true;
  }
  if (!d.blk.blkRqDmaMapIterNext(req, d.device, iod.dmaState, iod.iter)) return false;
  iod.mappedLen += iod.iter.len;
  d.stats.dmaSegments++;
  return true;
}

/** `nvme_pci_prp_iter_next`: advance when the current segment is used up, recording it for unmap. */
export function nvmePciPrpIterNext(d: NvmeDevState, req: BlkRequest, iod: NvmeIod): boolean {
  const it = iod.iter;
  if (it.len !== 0) return true;
  if (!nvmeMapNext(d, req, iod)) return false;
  const n = iod.nrDmaVecs;
  if (n >= 0) {
    if (n >= NVME_MAX_SEGS) {
      // More segments than dma_vecs holds: the request broke max_segments. Keep the mapping
      // recorded in the last slot impossible; fail (the caller unmaps what was recorded).
      it.status = BlkStatus.IOERR;
      return false;
    }
    iod.dmaVecAddr[n] = it.addr;
    iod.dmaVecLen[n] = it.len;
    iod.nrDmaVecs = n + 1;
    d.stats.dmaVecs++;
  }
  return true;
}

/** One descriptor page from the small or large pool into `iod->descriptors`; its DMA address, or -1. */
export function nvmeDescriptorAlloc(d: NvmeDevState, iod: NvmeIod, small: boolean): number {
  const pool = small ? d.poolSmall : d.poolLarge;
  if (pool === null || iod.nrDescriptors >= NVME_MAX_NR_DESCRIPTORS) return -1;
  const blk = dmaPoolAlloc(pool, 0);
  if (blk === null) return -1;
  iod.descriptors[iod.nrDescriptors] = blk.vaddr;
  iod.descriptorsPhys[iod.nrDescriptors] = blk.phys;
  iod.nrDescriptors++;
  if (small) d.stats.smallDescriptors++;
  else d.stats.largeDescriptors++;
  return blk.dma;
}

/**
 * `nvme_pci_setup_data_prp`. PRP1 may start anywhere in a page; every later entry is page
 * aligned. PRP2 is the second page when the rest fits one page, else a PRP list: small pool for
 * up to 32 entries, large pages otherwise, each full page's last slot chaining to the next.
 */
export function nvmePciSetupDataPrp(d: NvmeDevState, iod: NvmeIod, req: BlkRequest): BlkStatus {
  const it = iod.iter;
  const m = d.machine;
  const list = d.listDv;
  let length = blkRqPayloadBytes(req);
  let status: BlkStatus = BlkStatus.OK;
  if ((iod.flags & IOD_LEGACY_SG) === 0 && !dmaUseIova(iod.dmaState) && dmaNeedUnmap(d.device)) {
    iod.dmaVecAddr[0] = it.addr;
    iod.dmaVecLen[0] = it.len;
    iod.nrDmaVecs = 1;
    d.stats.dmaVecs++;
  }
  const prp1 = it.addr;
  let prp2 = 0;
  let listPhys = 0;
  let i = 0;
  let prpLen = Math.min(length, NVME_CTRL_PAGE_SIZE - (it.addr % NVME_CTRL_PAGE_SIZE));
  iod.totalLen += prpLen;
  it.addr += prpLen;
  it.len -= prpLen;
  length -= prpLen;
  done: {
    if (length === 0) break done;
    if (!nvmePciPrpIterNext(d, req, iod)) {
      status = it.status === BlkStatus.OK ? nvmeBadSgl(d, req) : it.status;
      break done;
    }
    // PRP2 may be a direct data pointer.
    if (length <= NVME_CTRL_PAGE_SIZE) {
      if (it.len < length) {
        status = nvmeBadSgl(d, req);
        break done;
      }
      prp2 = it.addr;
      iod.totalLen += length;
      break done;
    }
    const small = Math.ceil(length / NVME_CTRL_PAGE_SIZE) <= NVME_SMALL_POOL_PRPS;
    if (small) iod.flags |= IOD_SMALL_DESCRIPTOR;
    const dma = nvmeDescriptorAlloc(d, iod, small);
    if (dma < 0) {
      status = BlkStatus.RESOURCE;
      break done;
    }
    prp2 = dma;
    listPhys = iod.descriptorsPhys[0] ?? 0;
    for (;;) {
      writeLe64(list, i * 8, it.addr);
      i++;
      prpLen = Math.min(length, NVME_CTRL_PAGE_SIZE);
      if (it.len < prpLen) {
        // A segment that ends inside a controller page: virt_boundary was not honoured.
        status = nvmeBadSgl(d, req);
        break done;
      }
      iod.totalLen += prpLen;
      it.addr += prpLen;
      it.len -= prpLen;
      length -= prpLen;
      d.stats.prpListEntries++;
      if (length === 0) break;
      if (!nvmePciPrpIterNext(d, req, iod)) {
        status = it.status === BlkStatus.OK ? nvmeBadSgl(d, req) : it.status;
        break done;
      }
      if (i === NVME_PRPS_PER_PAGE) {
        // Page full: move its last entry to slot 0 of a new page and chain to it from the last slot.
        const next = nvmeDescriptorAlloc(d, iod, false);
        if (next < 0) {
          status = BlkStatus.RESOURCE;
          break done;
        }
        const moved = readLe64(list, (i - 1) * 8);
        writeLe64(list, (i - 1) * 8, next);
        m.memory.write(listPhys, d.listBuf, 0, i * 8);
        listPhys = iod.descriptorsPhys[iod.nrDescriptors - 1] ?? 0;
        writeLe64(list, 0, moved);
        i = 1;
      }
    }
  }
  if (i > 0) m.memory.write(listPhys, d.listBuf, 0, i * 8);
  // Always written, even on failure: unmap reads them.
  writeLe64(iod.cmdDv, SQE.PRP1, prp1);
  writeLe64(iod.cmdDv, SQE.PRP2, prp2);
  if (status === BlkStatus.OK) d.stats.prpCommands++;
  else nvmeUnmapData(d, req, iod);
  return status;
}

/** The `bad_sgl` exit: the segments broke the queue limits (a WARN in the kernel). */
export function nvmeBadSgl(d: NvmeDevState, req: BlkRequest): BlkStatus {
  nvmeLog(d, `Invalid SGL for payload:${blkRqPayloadBytes(req)} nents:${blkRqNrPhysSegments(req)}`);
  return BlkStatus.IOERR;
}

/**
 * `nvme_pci_setup_data_sgl`: one data block descriptor inline in the command when the request is
 * one segment (or coalesced into one IOVA range), else one descriptor list behind a Last Segment
 * descriptor (16 entries from the small pool, up to 256 from a large page).
 */
export function nvmePciSetupDataSgl(d: NvmeDevState, iod: NvmeIod, req: BlkRequest, coalesced: boolean): BlkStatus {
  const it = iod.iter;
  const entries = blkRqNrPhysSegments(req);
  const dv = iod.cmdDv;
  iod.cmd[SQE.FLAGS] = NVME_CMD_SGL_METABUF;
  d.stats.sglCommands++;
  if (entries === 1 || coalesced) {
    nvmePciSglSetData(dv, SQE.DPTR, it.addr, it.len);
    iod.totalLen += it.len;
    return BlkStatus.OK;
  }
  if (entries > NVME_MAX_SEGS) {
    nvmeUnmapIterSegment(d, req, iod);
    return BlkStatus.IOERR;
  }
  const small = entries <= NVME_SMALL_POOL_SGLS;
  if (small) iod.flags |= IOD_SMALL_DESCRIPTOR;
  const sglDma = nvmeDescriptorAlloc(d, iod, small);
  if (sglDma < 0) {
    // The kernel returns here with the first segment still mapped; the model undoes it.
    nvmeUnmapIterSegment(d, req, iod);
    return BlkStatus.RESOURCE;
  }
  const list = d.listDv;
  let mapped = 0;
  let status: BlkStatus = BlkStatus.OK;
  do {
    if (mapped === entries) {
      status = BlkStatus.IOERR;
      break;
    }
    nvmePciSglSetData(list, mapped * NVME_SGL_DESC_SIZE, it.addr, it.len);
    iod.totalLen += it.len;
    mapped++;
  } while (nvmeMapNext(d, req, iod));
  if (status === BlkStatus.OK) status = it.status;
  d.stats.sglListDescriptors += mapped;
  d.machine.memory.write(iod.descriptorsPhys[0] ?? 0, d.listBuf, 0, mapped * NVME_SGL_DESC_SIZE);
  nvmePciSglSetSeg(dv, SQE.DPTR, sglDma, mapped);
  if (status !== BlkStatus.OK) nvmeUnmapData(d, req, iod);
  return status;
}

/** Undo a mapping made by iter_start before anything was recorded in the command. */
export function nvmeUnmapIterSegment(d: NvmeDevState, req: BlkRequest, iod: NvmeIod): void {
  const dir = rqDmaDir(req);
  if ((iod.flags & IOD_LEGACY_SG) !== 0) {
    if (iod.sgt !== null) dmaUnmapSgtable(d.device, iod.sgt, dir, 0);
    return;
  }
  if (!d.blk.blkRqDmaUnmap(req, d.device, iod.dmaState, iod.iter.len)) dmaUnmapPage(d.device, iod.iter.addr, iod.iter.len, dir);
}

// ---- unmap and completion ----------------------------------------------------------------------

// ---- nvme_unmap_data -----------------------------------------------------------------------------

/** `nvme_unmap_data`. */
export function nvmeUnmapData(d: NvmeDevState, req: BlkRequest, iod: NvmeIod): void {
  const dev = d.device;
  const dir = rqDmaDir(req);
  const dv = iod.cmdDv;
  if ((iod.flags & IOD_SINGLE_SEGMENT) !== 0) {
    // prp1 and sgl.addr share the offset in the data pointer union.
    dmaUnmapPage(dev, readLe64(dv, SQE.PRP1), iod.totalLen, dir);
    return;
  }
  if ((iod.flags & IOD_LEGACY_SG) !== 0) {
    if (iod.sgt !== null) dmaUnmapSgtable(dev, iod.sgt, dir, 0);
  } else if (!d.blk.blkRqDmaUnmap(req, dev, iod.dmaState, Math.max(iod.totalLen, iod.mappedLen))) {
    if (((iod.cmd[SQE.FLAGS] ?? 0) & 0xc0) !== 0) nvmeFreeSgls(d, iod, dir);
    else nvmeFreePrps(d, iod, dir);
  }
  if (iod.nrDescriptors > 0) nvmeFreeDescriptors(d, iod);
}

/** `nvme_free_sgls`: unmap every data block the command (or its list) describes. */
export function nvmeFreeSgls(d: NvmeDevState, iod: NvmeIod, dir: DmaDataDirection): void {
  const dev = d.device;
  const dv = iod.cmdDv;
  const addr = readLe64(dv, SQE.DPTR);
  const len = dv.getUint32(SQE.DPTR + 8, true);
  if (iod.nrDescriptors === 0) {
    dmaUnmapPage(dev, addr, len, dir);
    return;
  }
  const n = Math.min(len / NVME_SGL_DESC_SIZE, NVME_MAX_SEGS);
  d.machine.memory.readInto(iod.descriptorsPhys[0] ?? 0, d.listBuf, 0, n * NVME_SGL_DESC_SIZE);
  const list = d.listDv;
  for (let i = 0; i < n; i++) dmaUnmapPage(dev, readLe64(list, i * 16), list.getUint32(i * 16 + 8, true), dir);
}

/** `nvme_free_prps`: unmap every recorded segment (`dma_vecs`). */
export function nvmeFreePrps(d: NvmeDevState, iod: NvmeIod, dir: DmaDataDirection): void {
  const dev = d.device;
  for (let i = 0; i < iod.nrDmaVecs; i++) dmaUnmapPage(dev, iod.dmaVecAddr[i] ?? 0, iod.dmaVecLen[i] ?? 0, dir);
  iod.nrDmaVecs = -1;
}

/** `nvme_free_descriptors`: DMA addresses come from the SQE and from each page's chain slot. */
export function nvmeFreeDescriptors(d: NvmeDevState, iod: NvmeIod): void {
  const dv = iod.cmdDv;
  const m = d.machine;
  let dma = ((iod.cmd[SQE.FLAGS] ?? 0) & 0xc0) !== 0 ? readLe64(dv, SQE.DPTR) : readLe64(dv, SQE.PRP2);
  const n = iod.nrDescriptors;
  if (n === 1) {
    const pool = (iod.flags & IOD_SMALL_DESCRIPTOR) !== 0 ? d.poolSmall : d.poolLarge;
    if (pool !== null) dmaPoolFree(pool, iod.descriptors[0] ?? 0, dma);
    iod.nrDescriptors = 0;
    return;
  }
  const list = d.listDv;
  const pool = d.poolLarge;
  for (let i = 0; i < n; i++) {
    m.memory.readInto((iod.descriptorsPhys[i] ?? 0) + (NVME_PRPS_PER_PAGE - 1) * 8, d.listBuf, 0, 8);
    const next = readLe64(list, 0);
    if (pool !== null) dmaPoolFree(pool, iod.descriptors[i] ?? 0, dma);
    dma = next;
  }
  iod.nrDescriptors = 0;
}

// ---- SGL descriptors ----------------------------------------------------------------------------------

/** `nvme_pci_sgl_set_data`: a data block descriptor. */
export function nvmePciSglSetData(dv: DataView, off: number, addr: number, len: number): void {
writeLe64(dv, off, addr);
dv.setUint32(off + 8, len, true);
dv.setUint8(off + 12, 0);
dv.setUint16(off + 13, 0, true);
dv.setUint8(off + 15, NvmeSglType.DATA_BLOCK << 4);
}

/** `nvme_pci_sgl_set_seg`: a Last Segment descriptor for `entries` descriptors at `addr`. */
export function nvmePciSglSetSeg(dv: DataView, off: number, addr: number, entries: number): void {
writeLe64(dv, off, addr);
dv.setUint32(off + 8, entries * NVME_SGL_DESC_SIZE, true);
dv.setUint8(off + 12, 0);
dv.setUint16(off + 13, 0, true);
dv.setUint8(off + 15, NvmeSglType.LAST_SEGMENT << 4);
}

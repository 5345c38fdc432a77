// kernel: drivers/vfio/pci/mlx5/cmd.c, the device commands the variant driver sends to the
// function's firmware: mlx5vf_cmd_suspend_vhca, mlx5vf_cmd_resume_vhca,
// mlx5vf_cmd_query_vhca_migration_state, mlx5vf_cmd_save_vhca_state with mlx5vf_save_callback (and
// its error work, mlx5vf_mig_file_cleanup_cb), mlx5vf_cmd_load_vhca_state, and the device dirty
// page tracker (mlx5vf_start_page_tracker, mlx5vf_stop_page_tracker,
// _mlx5vf_free_page_tracker_resources, mlx5vf_tracker_read_and_clear). The data buffers of cmd.c
// are in dataBuffer.ts.
import { DMA_FROM_DEVICE, DMA_NONE, Errno, PAGE_SIZE, isPowerOfTwo } from '@dmakit/dma-core';
import { mlx5vfAllocDataBuffer, mlx5vfDmaDataBuffer, mlx5vfFreeDataBuffer, mlx5vfGetDataBuffer, mlx5vfPutDataBuffer } from './dataBuffer.js';
import type { Mlx5VhcaDataBuffer } from './dataBuffer.js';
import { vfioCombineIovaRanges } from './iovaBitmap.js';
import type { IovaBitmap, VfioIovaRange } from './iovaBitmap.js';
import { ENOTCONN, MLX5VF_MAX_NUM_CHUNKS, MLX5VF_TRACKER_RECV_WRS, Mlx5VfMigfState } from './mlx5Defs.js';
import { MLX5_CMD_STAT_BAD_RES_STATE_ERR } from './mlx5Ifc.js';
import type { Mlx5VfMigfDevice, Mlx5VfMigrationFile } from './mlx5MigFile.js';
import { MLX5_MIGF_HEADER_BYTES, MLX5_MIGF_HEADER_FLAGS_TAG_MANDATORY, MLX5_MIGF_HEADER_TAG_FW_DATA, writeMigrationHeader } from './stream.js';

/**
 * `struct mlx5_vhca_recv_buf` of the tracker's host QP: the receive buffer (registered with
 * register_dma_pages), its message slots and the next slot to read.
 */
export interface Mlx5VhcaRecvBuf {
  buf: Mlx5VhcaDataBuffer;
  slots: number;
  msgSize: number;
  nextSlot: number;
}

/** `struct mlx5_vhca_page_tracker`: page size, receive buffer, tracked ranges, error flag. */
export interface Mlx5VhcaPageTracker {
  pageSize: number;
  recv: Mlx5VhcaRecvBuf;
  ranges: VfioIovaRange[];
  isErr: boolean;
}

/** What the device commands use of `struct mlx5vf_pci_core_device` (mlx5Main.ts implements it). */
export interface Mlx5VfCmdDevice extends Mlx5VfMigfDevice {
  /** `mvdev->migrate_cap`. */
  readonly migrateCap: boolean;
  /** `mvdev->log_active`. */
  logActive: boolean;
  /** `mvdev->tracker` (null when not tracking). */
  tracker: Mlx5VhcaPageTracker | null;
}

/** `mlx5vf_cmd_suspend_vhca(mvdev, op_mod)`: SUSPEND_VHCA; 0 or -errno. */
export function mlx5vfCmdSuspendVhca(mvdev: Mlx5VfCmdDevice, opMod: number): number {
  return mvdev.fw.suspendVhca(opMod);
}

/** `mlx5vf_cmd_resume_vhca(mvdev, op_mod)`: RESUME_VHCA; 0 or -errno. */
export function mlx5vfCmdResumeVhca(mvdev: Mlx5VfCmdDevice, opMod: number): number {
  return mvdev.fw.resumeVhca(opMod);
}

/**
 * `mlx5vf_cmd_query_vhca_migration_state(mvdev, &state_size, &total_size, query_flags)`:
 * QUERY_VHCA_MIGRATION_STATE, incremental when `inc` (MLX5VF_QUERY_INC). Returns `state_size`
 * (the buffer the next SAVE needs, at most one chunk in chunk mode) when `chunk`, else
 * `total_size`; or -errno.
 */
export function mlx5vfCmdQueryVhcaMigrationState(mvdev: Mlx5VfCmdDevice, inc: boolean, chunk: boolean): number {
  return chunk ? mvdev.fw.queryRequiredUmemSize(inc) : mvdev.fw.queryVhcaMigrationState(inc);
}

/**
 * `mlx5vf_cmd_save_vhca_state(mvdev, migf, buf, inc, track)`: wait for the SAVE in flight, then
 * issue this one; the completion appends header + data to the stream.
 */
export function mlx5vfCmdSaveVhcaState(mvdev: Mlx5VfCmdDevice, migf: Mlx5VfMigrationFile, buf: Mlx5VhcaDataBuffer, incIn: boolean, track: boolean): number {
  if (mvdev.bufCtx.mdevDetached) return -ENOTCONN;
  mvdev.waitEvent(() => !migf.saveInFlight, migf); // wait_for_completion_interruptible(&migf->save_comp)
  if (migf.disabled) return -Errno.ENODEV;
  const preCopyCleanup = (migf.state === Mlx5VfMigfState.PRE_COPY || migf.state === Mlx5VfMigfState.PRE_COPY_ERROR) && !track && !incIn;
  const inc = migf.state === Mlx5VfMigfState.PRE_COPY_ERROR ? false : incIn;
  const stopCopyChunk = !track && !preCopyCleanup;
  let header: Mlx5VhcaDataBuffer | null = null;
  if (stopCopyChunk) {
    const idx = buf.stopCopyChunkNum > 0 ? buf.stopCopyChunkNum - 1 : 0;
    header = migf.bufHeader[idx] ?? null;
    migf.bufHeader[idx] = null;
  }
  if (header === null) {
    const h = mlx5vfGetDataBuffer(mvdev.bufCtx, migf.availList, 1, DMA_NONE);
    if (typeof h === 'number') return h;
    header = h;
    if (stopCopyChunk) header.stopCopyChunkNum = buf.stopCopyChunkNum;
  }
  if (stopCopyChunk) migf.state = Mlx5VfMigfState.SAVE_STOP_COPY_CHUNK;
  const hdr = header;
  migf.saveInFlight = true;
  mvdev.stats.saves++;
  const trace = mvdev.machine.trace;
  if (trace.enabled) trace.emit('mlx5_vfio:save_vhca_state', mvdev.vdev.name, { mkey: buf.mkey, size: buf.npages * PAGE_SIZE, inc, track, chunk: buf.stopCopyChunkNum });
  const ret = mvdev.fw.saveVhcaState({ mkey: buf.mkey, size: buf.npages * PAGE_SIZE, incremental: inc, setTrack: track }, (status, imageSize, next) => {
    mlx5vfSaveCallback(mvdev, migf, buf, hdr, status, imageSize, next, stopCopyChunk, track);
  });
  if (ret !== 0) {
    migf.saveInFlight = false;
    mlx5vfPutDataBuffer(migf.availList, hdr);
    return ret;
  }
  return 0;
}

/** `mlx5vf_save_callback` + the error work item (`mlx5vf_mig_file_cleanup_cb`). */
function mlx5vfSaveCallback(
  mvdev: Mlx5VfCmdDevice,
  migf: Mlx5VfMigrationFile,
  buf: Mlx5VhcaDataBuffer,
  header: Mlx5VhcaDataBuffer,
  status: number,
  imageSize: number,
  next: number,
  stopCopyChunk: boolean,
  track: boolean,
): void {
  migf.saveInFlight = false;
  if (migf.disabled) {
    // The fd was closed meanwhile: just free.
    mlx5vfFreeDataBuffer(mvdev.bufCtx, buf);
    mlx5vfFreeDataBuffer(mvdev.bufCtx, header);
    return;
  }
  if (status !== 0) {
    mvdev.stats.saveFailures++;
    if (buf.stopCopyChunkNum > 0) migf.buf[buf.stopCopyChunkNum - 1] = buf;
    else mlx5vfPutDataBuffer(migf.availList, buf);
    if (header.stopCopyChunkNum > 0) migf.bufHeader[header.stopCopyChunkNum - 1] = header;
    else mlx5vfPutDataBuffer(migf.availList, header);
    migf.state = !stopCopyChunk && status === MLX5_CMD_STAT_BAD_RES_STATE_ERR ? Mlx5VfMigfState.PRE_COPY_ERROR : Mlx5VfMigfState.ERROR;
    return;
  }
  // add_buf_header
  const rec = new Uint8Array(MLX5_MIGF_HEADER_BYTES);
  writeMigrationHeader(rec, 0, { recordSize: imageSize, flags: MLX5_MIGF_HEADER_FLAGS_TAG_MANDATORY, tag: MLX5_MIGF_HEADER_TAG_FW_DATA });
  header.copyIn(mvdev.machine, 0, rec, 0, rec.length);
  header.length = MLX5_MIGF_HEADER_BYTES;
  header.startPos = migf.maxPos;
  migf.maxPos += MLX5_MIGF_HEADER_BYTES;
  buf.length = imageSize;
  buf.startPos = migf.maxPos;
  migf.maxPos += imageSize;
  migf.bufList.push(header, buf);
  if (stopCopyChunk) {
    migf.nextRequiredUmemSize = mvdev.chunkMode ? next : 0;
    migf.numReadyChunks++;
    if (migf.nextRequiredUmemSize === 0) {
      migf.state = Mlx5VfMigfState.COMPLETE;
    } else if (migf.numReadyChunks < MLX5VF_MAX_NUM_CHUNKS) {
      migf.setSaveWork((buf.stopCopyChunkNum % MLX5VF_MAX_NUM_CHUNKS) + 1, migf.nextRequiredUmemSize);
    }
    // else: two chunks buffered; the next SAVE waits until userspace reads one.
  } else {
    if (track) migf.markPreCopyInitial();
    migf.state = Mlx5VfMigfState.PRE_COPY;
  }
}

/** `mlx5vf_cmd_load_vhca_state`: map lazily if needed, then LOAD_VHCA_STATE of `buf.length` bytes. */
export function mlx5vfCmdLoadVhcaState(mvdev: Mlx5VfCmdDevice, buf: Mlx5VhcaDataBuffer): number {
  if (mvdev.bufCtx.mdevDetached) return -ENOTCONN;
  if (buf.mkeyIn === null) {
    const ret = mlx5vfDmaDataBuffer(mvdev.bufCtx, buf);
    if (ret !== 0) return ret;
  }
  mvdev.stats.loads++;
  const trace = mvdev.machine.trace;
  if (trace.enabled) trace.emit('mlx5_vfio:load_vhca_state', mvdev.vdev.name, { mkey: buf.mkey, size: buf.length });
  return mvdev.fw.loadVhcaState(buf.mkey, buf.length);
}

// ---- the device dirty page tracker ----

/** `mlx5vf_start_page_tracker(vdev, ranges, nnodes, &page_size)`: the tracked page size or -errno. */
export function mlx5vfStartPageTracker(mvdev: Mlx5VfCmdDevice, rangesIn: readonly VfioIovaRange[], pageSizeIn: number): number {
  if (!mvdev.migrateCap) return -Errno.EOPNOTSUPP;
  mvdev.stateMutexLock();
  try {
    if (mvdev.logActive) return -Errno.EINVAL;
    if (mvdev.bufCtx.mdevDetached) return -ENOTCONN;
    const caps = mvdev.fw.caps;
    const ranges = rangesIn.length > caps.pgTrackMaxNumRange ? vfioCombineIovaRanges(rangesIn, caps.pgTrackMaxNumRange) : [...rangesIn];
    const first = ranges[0];
    const last = ranges[ranges.length - 1];
    if (first === undefined || last === undefined) return -Errno.EINVAL;
    const span = last.iova + last.length - first.iova;
    const logSpace = Math.ceil(Math.log2(span));
    if (logSpace < caps.pgTrackLogMinAddrSpace || logSpace > caps.pgTrackLogMaxAddrSpace) return -Errno.EOPNOTSUPP;
    if (!isPowerOfTwo(pageSizeIn)) return -Errno.EINVAL;
    const logPage = Math.min(Math.max(Math.log2(pageSizeIn), caps.pgTrackLogMinPageSize), caps.pgTrackLogMaxPageSize);
    const logMsg = Math.min(caps.pgTrackLogMaxMsgSize, 12);
    const msgSize = 2 ** logMsg;
    const npages = Math.ceil((MLX5VF_TRACKER_RECV_WRS * msgSize) / PAGE_SIZE);
    // mlx5vf_alloc_qp_recv_resources: the host QP's receive buffer, registered with register_dma_pages.
    const rb = mlx5vfAllocDataBuffer(mvdev.bufCtx, npages, DMA_FROM_DEVICE);
    if (typeof rb === 'number') return rb;
    const ret = mvdev.fw.createPageTracker({ ranges, logPageSize: logPage, logMsgSize: logMsg, recvMkey: rb.mkey, recvNpages: npages });
    if (ret !== 0) {
      mlx5vfFreeDataBuffer(mvdev.bufCtx, rb);
      return ret;
    }
    mvdev.tracker = { pageSize: 2 ** logPage, recv: { buf: rb, slots: (npages * PAGE_SIZE) / msgSize, msgSize, nextSlot: 0 }, ranges, isErr: false };
    mvdev.logActive = true;
    return 2 ** logPage;
  } finally {
    mvdev.stateMutexUnlock();
  }
}

/**
 * `_mlx5vf_free_page_tracker_resources` (state mutex held): destroy the tracker object if the
 * firmware still has it, unregister and free the receive buffer, mark logging inactive.
 */
export function mlx5vfFreePageTrackerResources(mvdev: Mlx5VfCmdDevice): void {
  const t = mvdev.tracker;
  if (t === null) return;
  if (mvdev.fw.trackerActive) mvdev.fw.destroyPageTracker();
  mlx5vfFreeDataBuffer(mvdev.bufCtx, t.recv.buf);
  mvdev.tracker = null;
  mvdev.logActive = false;
}

/** `mlx5vf_stop_page_tracker`: 0 (also when logging was not active). */
export function mlx5vfStopPageTracker(mvdev: Mlx5VfCmdDevice): number {
  mvdev.stateMutexLock();
  try {
    if (!mvdev.logActive) return 0;
    mlx5vfFreePageTrackerResources(mvdev);
    return 0;
  } finally {
    mvdev.stateMutexUnlock();
  }
}

/**
 * `mlx5vf_tracker_read_and_clear`: ask the firmware for a report of the range, then consume
 * its messages from the receive buffer (CPU reads of host memory), setting bitmap bits and
 * reposting receive WQEs, until the message flagged last. -EIO on a tracker error.
 */
export function mlx5vfTrackerReadAndClear(mvdev: Mlx5VfCmdDevice, iova: number, length: number, dirty: IovaBitmap): number {
  mvdev.stateMutexLock();
  try {
    const t = mvdev.tracker;
    if (!mvdev.logActive || t === null) return -Errno.EINVAL;
    if (t.isErr) return -Errno.EIO;
    let ret = mvdev.fw.trackerQueryReport(iova, length);
    if (ret !== 0) {
      t.isErr = true;
      return -Errno.EIO;
    }
    mvdev.stats.trackerReports++;
    const r = t.recv;
    const msg = new Uint8Array(r.msgSize);
    const dv = new DataView(msg.buffer);
    for (let guard = 0; guard < 1 << 24; guard++) {
      const slot = r.nextSlot;
      ret = mvdev.fw.trackerPostMessage(slot);
      if (ret < 0) {
        t.isErr = true;
        return -Errno.EIO;
      }
      r.nextSlot = (slot + 1) % r.slots; // repost the receive WQE
      const off = slot * r.msgSize;
      r.buf.copyOut(mvdev.machine, off, msg, 0, ret);
      const n = dv.getUint32(0, true);
      const lastMsg = (dv.getUint32(4, true) & 1) !== 0;
      for (let i = 0; i < n; i++) {
        const addr = dv.getUint32(8 + 8 * i, true) + dv.getUint32(12 + 8 * i, true) * 0x1_0000_0000;
        dirty.set(addr, t.pageSize);
      }
      mvdev.stats.trackerMessages++;
      if (lastMsg) return 0;
    }
    return -Errno.EIO;
  } finally {
    mvdev.stateMutexUnlock();
  }
}

// kernel: drivers/vfio/pci/mlx5/main.c, the driver's state machine: struct mlx5vf_pci_core_device
// (drivers/vfio/pci/mlx5/cmd.h), mlx5vf_pci_step_device_state_locked, mlx5vf_pci_set_device_state,
// mlx5vf_pci_get_device_state, mlx5vf_pci_get_data_size, mlx5vf_pci_save_device_data,
// mlx5vf_pci_save_device_inc_data, mlx5vf_prep_stop_copy, mlx5vf_add_stop_copy_header,
// mlx5vf_pci_resume_device_data, mlx5vf_disable_fds, mlx5vf_state_mutex_unlock,
// mlx5vf_pci_aer_reset_done and the vfio_migration_ops / vfio_log_ops it registers. The migration
// file's operations are in mlx5MigFile.ts, the device commands (cmd.c) in mlx5Cmd.ts.
import { DMA_FROM_DEVICE, DMA_NONE, DMA_TO_DEVICE, Errno, PAGE_SIZE } from '@dmakit/dma-core';
import type { DmaDataDirection, Machine } from '@dmakit/dma-core';
import { mlx5vfFreeDataBuffer, mlx5vfGetDataBuffer, newBufferStats } from './dataBuffer.js';
import type { Mlx5BufferCtx, Mlx5BufferStats, Mlx5VhcaDataBuffer } from './dataBuffer.js';
import type { IovaBitmap, VfioIovaRange } from './iovaBitmap.js';
import {
  mlx5vfCmdLoadVhcaState,
  mlx5vfCmdQueryVhcaMigrationState,
  mlx5vfCmdResumeVhca,
  mlx5vfCmdSaveVhcaState,
  mlx5vfCmdSuspendVhca,
  mlx5vfFreePageTrackerResources,
  mlx5vfStartPageTracker,
  mlx5vfStopPageTracker,
  mlx5vfTrackerReadAndClear,
} from './mlx5Cmd.js';
import type { Mlx5VfCmdDevice, Mlx5VhcaPageTracker } from './mlx5Cmd.js';
import { ENOTCONN, MLX5VF_MAX_LOAD_SIZE, MLX5VF_MAX_NUM_CHUNKS, Mlx5VfMigfState } from './mlx5Defs.js';
import type { Mlx5VfPciOptions, Mlx5VfStats } from './mlx5Defs.js';
import {
  MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR,
  MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER,
  MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR,
  MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER,
} from './mlx5Ifc.js';
import type { Mlx5SimFunction } from './mlx5Function.js';
import { Mlx5VfMigrationFile } from './mlx5MigFile.js';
import { VFIO_MIGRATION_P2P, VFIO_MIGRATION_PRE_COPY, VFIO_MIGRATION_STOP_COPY, VfioDeviceMigState, vfioMigGetNextState } from './migState.js';
import {
  MLX5_MIGF_HEADER_BYTES,
  MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL,
  MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE,
  MLX5_MIGF_STOP_COPY_SIZE_BYTES,
  writeMigrationHeader,
} from './stream.js';
import { VfioDevice } from './vfioDevice.js';
import type { VfioLogOps, VfioMigFile, VfioMigrationOps, VfioPrecopyInfo } from './vfioDevice.js';

/**
 * `struct mlx5vf_pci_core_device`: the mlx5 VFIO variant driver of one VF. Implements the VFIO
 * migration ops (the arcs) and log ops (the device dirty tracker) behind a `VfioDevice`.
 */
export class Mlx5VfPciCoreDevice implements Mlx5VfCmdDevice, VfioMigrationOps, VfioLogOps {
  readonly machine: Machine;
  readonly fw: Mlx5SimFunction;
  readonly vdev: VfioDevice;
  readonly bufCtx: Mlx5BufferCtx;
  readonly stats: Mlx5VfStats = { arcs: 0, saves: 0, saveFailures: 0, loads: 0, bytesRead: 0, bytesWritten: 0, deferredResets: 0, resets: 0, trackerReports: 0, trackerMessages: 0 };
  migState: VfioDeviceMigState = VfioDeviceMigState.RUNNING;
  readonly migrateCap: boolean;
  readonly chunkMode: boolean;
  deferredReset = false;
  logActive = false;
  savingMigf: Mlx5VfMigrationFile | null = null;
  resumingMigf: Mlx5VfMigrationFile | null = null;
  /** Which arcs ran, in order (for tests and the demo). */
  readonly arcLog: [VfioDeviceMigState, VfioDeviceMigState][] = [];
  #mutexHeld = false;
  /** `mvdev->tracker`: the device dirty page tracker while logging is active. */
  tracker: Mlx5VhcaPageTracker | null = null;

  constructor(opts: Mlx5VfPciOptions) {
    this.machine = opts.machine;
    this.fw = opts.fw;
    this.migrateCap = opts.fw.caps.migration;
    this.chunkMode = opts.fw.caps.chunkMode;
    this.bufCtx = { machine: opts.machine, dev: opts.pf ?? opts.fw.pf, fw: opts.fw, legacySg: opts.legacySgBuffers ?? false, mdevDetached: false, stats: newBufferStats() };
    let flags = VFIO_MIGRATION_STOP_COPY;
    if (opts.noP2p !== true) flags |= VFIO_MIGRATION_P2P;
    if (opts.fw.caps.preCopy && opts.noPreCopy !== true) flags |= VFIO_MIGRATION_PRE_COPY;
    this.vdev = new VfioDevice(opts.name ?? `vfio-mlx5-${opts.fw.vf.name}`, flags, this.migrateCap ? this : null, this.migrateCap ? this : null, () => {
      this.closeDevice();
    });
  }

  /**
   * `mlx5vf_pci_close_device` (drivers/vfio/pci/mlx5/main.c), run when the VMM closes the device
   * fd: `mlx5vf_cmd_close_migratable` (cmd.c: set_tracker_error, then under the state mutex
   * mlx5vf_disable_fds, which waits for a SAVE in flight and frees every buffer of both migration
   * files (mlx5fv_cmd_clean_migf_resources: mkeys destroyed, pages unmapped and freed), and
   * _mlx5vf_free_page_tracker_resources), then `vfio_pci_core_close_device`, whose
   * vfio_pci_core_disable resets the function (reset_done: back to RUNNING).
   */
  closeDevice(): void {
    if (this.migrateCap) {
      if (this.tracker !== null) this.tracker.isErr = true; // set_tracker_error
      this.stateMutexLock();
      this.#disableFds(null);
      mlx5vfFreePageTrackerResources(this);
      this.stateMutexUnlock();
    }
    this.reset();
  }

  /** VFIO_MIGRATION_* flags the device advertises. */
  get migrationFlags(): number {
    return this.vdev.migrationFlags;
  }

  /** Migration buffer counters. */
  get bufferStats(): Mlx5BufferStats {
    return this.bufCtx.stats;
  }

  /** True when the device advertises VFIO_MIGRATION_PRE_COPY. */
  get preCopySupported(): boolean {
    return (this.migrationFlags & VFIO_MIGRATION_PRE_COPY) !== 0;
  }

  // ---- state_mutex and deferred reset ----

  /** `mutex_lock(&mvdev->state_mutex)` (the model runs one thread: it only records the holder). */
  stateMutexLock(): void {
    this.#mutexHeld = true;
  }

  /** `mlx5vf_state_mutex_unlock`: a reset that arrived while the mutex was held runs now. */
  stateMutexUnlock(): void {
    while (this.deferredReset) {
      this.deferredReset = false;
      this.stats.deferredResets++;
      this.migState = VfioDeviceMigState.RUNNING;
      this.#disableFds(null);
    }
    this.#mutexHeld = false;
  }

  /** `mlx5vf_pci_aer_reset_done`: after a function reset; deferred if the state mutex is held. */
  resetDone(): void {
    this.deferredReset = true;
    if (this.#mutexHeld) return; // mutex_trylock failed: the holder will run it at unlock
    this.stateMutexLock();
    this.stateMutexUnlock();
  }

  /** A PCI function reset (FLR) of the VF followed by the driver's reset_done. */
  reset(): void {
    this.stats.resets++;
    this.fw.flr();
    if (this.tracker !== null) mlx5vfFreePageTrackerResources(this);
    this.resetDone();
  }

  /**
   * `wait_event*` stand-in: run simulated time (the firmware completes, work items run) until
   * `cond` holds or nothing more can happen. Returns whether `cond` holds.
   */
  waitEvent(cond: () => boolean, migf: Mlx5VfMigrationFile | null): boolean {
    for (let guard = 0; guard < 100_000; guard++) {
      if (cond()) return true;
      if (this.fw.saveInFlight) {
        this.machine.advance(Math.max(0, this.fw.saveDueAt - this.machine.clock.now()));
      } else if (migf !== null && migf.saveWork !== null) {
        this.machine.advance(0);
      } else {
        return cond();
      }
    }
    return cond();
  }

  // ---- VfioMigrationOps ----

  /** Current migration state. kernel: mlx5vf_pci_get_device_state() in drivers/vfio/pci/mlx5/main.c. */
  migrationGetState(): VfioDeviceMigState {
    return this.migState;
  }

  /** `mlx5vf_pci_get_data_size`. */
  migrationGetDataSize(): number {
    if (!this.migrateCap) return -Errno.EOPNOTSUPP;
    this.stateMutexLock();
    const total = mlx5vfCmdQueryVhcaMigrationState(this, false, false);
    this.stateMutexUnlock();
    if (total < 0) return total;
    return total + 2 * MLX5_MIGF_HEADER_BYTES + MLX5_MIGF_STOP_COPY_SIZE_BYTES;
  }

  /** `mlx5vf_pci_set_device_state`: walk vfio_mig_get_next_state arcs until the new state. */
  migrationSetState(newState: VfioDeviceMigState): VfioMigFile | null | number {
    this.stateMutexLock();
    let res: VfioMigFile | null | number = null;
    while (newState !== this.migState) {
      const next = vfioMigGetNextState(this.migrationFlags, this.migState, newState);
      if (next < 0) {
        res = next;
        break;
      }
      const nextState = next as VfioDeviceMigState;
      res = this.#stepDeviceStateLocked(nextState);
      if (typeof res === 'number') break;
      this.arcLog.push([this.migState, nextState]);
      this.stats.arcs++;
      const trace = this.machine.trace;
      if (trace.enabled) trace.emit('vfio:mig_arc', this.vdev.name, { from: this.migState, to: nextState });
      this.migState = nextState;
      if (res !== null && newState !== this.migState) {
        // WARN_ON(res && new_state != mvdev->mig_state): an fd only at the final state.
        res = -Errno.EINVAL;
        break;
      }
    }
    this.stateMutexUnlock();
    return res;
  }

  #suspend(opMod: number): number {
    return mlx5vfCmdSuspendVhca(this, opMod);
  }

  #resume(opMod: number): number {
    return mlx5vfCmdResumeVhca(this, opMod);
  }

  /** `mlx5vf_pci_step_device_state_locked`: one arc. */
  #stepDeviceStateLocked(next: VfioDeviceMigState): VfioMigFile | null | number {
    const cur = this.migState;
    const S = VfioDeviceMigState;
    let ret: number;
    if ((cur === S.RUNNING && next === S.RUNNING_P2P) || (cur === S.PRE_COPY && next === S.PRE_COPY_P2P)) {
      ret = this.#suspend(MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR);
      return ret !== 0 ? ret : null;
    }
    if ((cur === S.RUNNING_P2P && next === S.RUNNING) || (cur === S.PRE_COPY_P2P && next === S.PRE_COPY)) {
      ret = this.#resume(MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR);
      return ret !== 0 ? ret : null;
    }
    if (cur === S.RUNNING_P2P && next === S.STOP) {
      ret = this.#suspend(MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER);
      return ret !== 0 ? ret : null;
    }
    if (cur === S.STOP && next === S.RUNNING_P2P) {
      ret = this.#resume(MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER);
      return ret !== 0 ? ret : null;
    }
    // Without P2P support the core asks for the combined arcs.
    if (cur === S.RUNNING && next === S.STOP) {
      ret = this.#suspend(MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR);
      if (ret === 0) ret = this.#suspend(MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER);
      return ret !== 0 ? ret : null;
    }
    if (cur === S.STOP && next === S.RUNNING) {
      ret = this.#resume(MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER);
      if (ret === 0) ret = this.#resume(MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR);
      return ret !== 0 ? ret : null;
    }
    if (cur === S.STOP && next === S.STOP_COPY) {
      const migf = this.#saveDeviceData(false);
      if (typeof migf === 'number') return migf;
      this.savingMigf = migf;
      return migf;
    }
    if (cur === S.STOP_COPY && next === S.STOP) {
      this.#disableFds(null);
      return null;
    }
    if (cur === S.STOP && next === S.RESUMING) {
      if (this.bufCtx.mdevDetached) return -ENOTCONN;
      const migf = new Mlx5VfMigrationFile(this, false);
      this.resumingMigf = migf;
      return migf;
    }
    if (cur === S.RESUMING && next === S.STOP) {
      const migf = this.resumingMigf;
      if (migf === null || !migf.resumeComplete || !this.fw.loadComplete) {
        // A malformed or truncated stream: nothing partial may go live.
        this.fw.markBroken();
        if (migf !== null) migf.state = Mlx5VfMigfState.ERROR;
        return -Errno.EINVAL;
      }
      this.#disableFds(null);
      return null;
    }
    if ((cur === S.PRE_COPY && next === S.RUNNING) || (cur === S.PRE_COPY_P2P && next === S.RUNNING_P2P)) {
      this.#disableFds(null);
      return null;
    }
    if ((cur === S.RUNNING && next === S.PRE_COPY) || (cur === S.RUNNING_P2P && next === S.PRE_COPY_P2P)) {
      const migf = this.#saveDeviceData(true);
      if (typeof migf === 'number') return migf;
      this.savingMigf = migf;
      return migf;
    }
    if (cur === S.PRE_COPY_P2P && next === S.STOP_COPY) {
      ret = this.#suspend(MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER);
      if (ret !== 0) return ret;
      ret = this.#saveDeviceIncData();
      return ret !== 0 ? ret : null;
    }
    if (cur === S.PRE_COPY && next === S.STOP_COPY) {
      // No P2P: both suspends, then the final incremental save.
      ret = this.#suspend(MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR);
      if (ret === 0) ret = this.#suspend(MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER);
      if (ret === 0) ret = this.#saveDeviceIncData();
      return ret !== 0 ? ret : null;
    }
    // vfio_mig_get_next_state() does not use arcs other than the above.
    return -Errno.EINVAL;
  }

  // ---- saving ----

  /** `mlx5vf_pci_save_device_data(mvdev, track)`. */
  #saveDeviceData(track: boolean): Mlx5VfMigrationFile | number {
    if (this.bufCtx.mdevDetached) return -ENOTCONN;
    const migf = new Mlx5VfMigrationFile(this, true);
    const total = mlx5vfCmdQueryVhcaMigrationState(this, false, false);
    if (total < 0) return total;
    const length = track ? total : mlx5vfCmdQueryVhcaMigrationState(this, false, true);
    if (this.preCopySupported || this.chunkMode) {
      const ret = this.#prepStopCopy(migf, length, total, track);
      if (ret !== 0) {
        migf.freeResources(this.bufCtx);
        return ret;
      }
    }
    let buf: Mlx5VhcaDataBuffer;
    if (track) {
      const b = mlx5vfGetDataBuffer(this.bufCtx, migf.availList, Math.ceil(total / PAGE_SIZE), DMA_FROM_DEVICE);
      if (typeof b === 'number') {
        migf.freeResources(this.bufCtx);
        return b;
      }
      buf = b;
    } else {
      const b = migf.getStopCopyBuf(0, length);
      if (typeof b === 'number') {
        migf.freeResources(this.bufCtx);
        return b;
      }
      buf = b;
    }
    const ret = this.cmdSaveVhcaState(migf, buf, false, track);
    if (ret !== 0) {
      mlx5vfFreeDataBuffer(this.bufCtx, buf);
      migf.freeResources(this.bufCtx);
      return ret;
    }
    return migf;
  }

  /** `mlx5vf_prep_stop_copy`: preallocate the stop-copy buffers and emit the STOP_COPY_SIZE record. */
  #prepStopCopy(migf: Mlx5VfMigrationFile, stateSize: number, fullSize: number, track: boolean): number {
    let incStateSize: number;
    if (this.chunkMode) {
      const chunk = Math.min(this.fw.caps.chunkBytes, fullSize);
      incStateSize = Math.max(stateSize, chunk);
    } else {
      // Be ready for a stop-copy image that grew by 10 % since the query.
      incStateSize = track ? stateSize + Math.floor(stateSize / 10) : stateSize;
    }
    incStateSize = Math.min(incStateSize, MLX5VF_MAX_LOAD_SIZE - MLX5_MIGF_HEADER_BYTES);
    const numChunks = this.chunkMode ? MLX5VF_MAX_NUM_CHUNKS : 1;
    for (let i = 0; i < numChunks; i++) {
      const b = mlx5vfGetDataBuffer(this.bufCtx, migf.availList, Math.ceil(incStateSize / PAGE_SIZE), DMA_FROM_DEVICE);
      if (typeof b === 'number') return b;
      migf.buf[i] = b;
      const h = mlx5vfGetDataBuffer(this.bufCtx, migf.availList, 1, DMA_NONE);
      if (typeof h === 'number') return h;
      migf.bufHeader[i] = h;
      if (this.chunkMode) {
        b.stopCopyChunkNum = i + 1;
        h.stopCopyChunkNum = i + 1;
      }
    }
    // mlx5vf_add_stop_copy_header
    const hb = mlx5vfGetDataBuffer(this.bufCtx, migf.availList, 1, DMA_NONE);
    if (typeof hb === 'number') return hb;
    const rec = new Uint8Array(MLX5_MIGF_HEADER_BYTES + MLX5_MIGF_STOP_COPY_SIZE_BYTES);
    writeMigrationHeader(rec, 0, { recordSize: MLX5_MIGF_STOP_COPY_SIZE_BYTES, flags: MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL, tag: MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE });
    const dv = new DataView(rec.buffer);
    const b0 = migf.buf[0];
    dv.setBigUint64(MLX5_MIGF_HEADER_BYTES, BigInt((b0?.npages ?? 0) * PAGE_SIZE), true);
    hb.copyIn(this.machine, 0, rec, 0, rec.length);
    hb.length = rec.length;
    hb.startPos = migf.maxPos;
    migf.maxPos += rec.length;
    migf.bufList.push(hb);
    migf.stopCopyPrepSize = (b0?.npages ?? 0) * PAGE_SIZE;
    return 0;
  }

  /** `mlx5vf_pci_save_device_inc_data`: the final (incremental) save when leaving pre-copy. */
  #saveDeviceIncData(): number {
    const migf = this.savingMigf;
    if (migf === null) return -Errno.EINVAL;
    if (migf.state === Mlx5VfMigfState.ERROR) return -Errno.ENODEV;
    this.waitEvent(() => !migf.saveInFlight, migf);
    // Every error below ends in `err: mlx5vf_mark_err(migf)` (main.c): the file is in ERROR.
    const length = mlx5vfCmdQueryVhcaMigrationState(this, migf.state !== Mlx5VfMigfState.PRE_COPY_ERROR, true);
    if (length < 0) {
      migf.state = Mlx5VfMigfState.ERROR;
      return length;
    }
    const buf = migf.getStopCopyBuf(0, length);
    if (typeof buf === 'number') {
      migf.state = Mlx5VfMigfState.ERROR;
      return buf;
    }
    const ret = this.cmdSaveVhcaState(migf, buf, true, false);
    if (ret !== 0) {
      mlx5vfFreeDataBuffer(this.bufCtx, buf);
      migf.state = Mlx5VfMigfState.ERROR;
    }
    return ret;
  }

  // ---- device commands (cmd.c, mlx5Cmd.ts) and file operations (mlx5MigFile.ts) ----

  /** `mlx5vf_cmd_query_vhca_migration_state`: the next image's size (one chunk when `chunk`), or -errno. */
  cmdQueryVhcaMigrationState(inc: boolean, chunk: boolean): number {
    return mlx5vfCmdQueryVhcaMigrationState(this, inc, chunk);
  }

  /**
   * `mlx5vf_cmd_save_vhca_state(mvdev, migf, buf, inc, track)`: wait for the SAVE in flight, then
   * issue this one; the completion appends header + data to the stream.
   */
  cmdSaveVhcaState(migf: Mlx5VfMigrationFile, buf: Mlx5VhcaDataBuffer, incIn: boolean, track: boolean): number {
    return mlx5vfCmdSaveVhcaState(this, migf, buf, incIn, track);
  }

  /** `mlx5vf_cmd_load_vhca_state`: map lazily if needed, then LOAD_VHCA_STATE of `buf.length` bytes. */
  cmdLoadVhcaState(buf: Mlx5VhcaDataBuffer): number {
    return mlx5vfCmdLoadVhcaState(this, buf);
  }

  /** Called by read() when a buffer has been fully consumed (`mlx5vf_buf_read`'s tail). */
  bufferConsumed(migf: Mlx5VfMigrationFile, b: Mlx5VhcaDataBuffer): void {
    migf.bufferConsumed(b);
  }

  /** `mlx5vf_precopy_ioctl` on `migf`. */
  precopyIoctl(migf: Mlx5VfMigrationFile): VfioPrecopyInfo | number {
    return migf.precopyInfo();
  }

  // ---- fds ----

  /** `mlx5vf_disable_fds`. */
  #disableFds(_unused: null): void {
    for (const migf of [this.resumingMigf, this.savingMigf]) migf?.disable();
    this.resumingMigf = null;
    this.savingMigf = null;
  }

  /**
   * Frees every buffer a migration file holds and disables it (kernel: mlx5vf_disable_fd() plus
   * mlx5fv_cmd_clean_migf_resources()).
   */
  releaseFile(migf: Mlx5VfMigrationFile): void {
    migf.release();
  }

  // ---- VfioLogOps: the device dirty page tracker ----

  /** `mlx5vf_start_page_tracker(vdev, ranges, nnodes, &page_size)`: the tracked page size or -errno. */
  logStart(rangesIn: readonly VfioIovaRange[], pageSizeIn: number): number {
    return mlx5vfStartPageTracker(this, rangesIn, pageSizeIn);
  }

  /** The ranges the device tracks after merging (for tests and the demo). */
  get trackedRanges(): readonly VfioIovaRange[] {
    return this.tracker?.ranges ?? [];
  }

  /** Page size of the device dirty tracker, or 0 when not tracking. */
  get trackedPageSize(): number {
    return this.tracker?.pageSize ?? 0;
  }

  /** `mlx5vf_stop_page_tracker`. */
  logStop(): number {
    return mlx5vfStopPageTracker(this);
  }

  /**
   * `mlx5vf_tracker_read_and_clear`: ask the firmware for a report of the range, then consume
   * its messages from the receive buffer, setting bitmap bits, until the message flagged last.
   * -EIO on a tracker error.
   */
  logReadAndClear(iova: number, length: number, dirty: IovaBitmap): number {
    return mlx5vfTrackerReadAndClear(this, iova, length, dirty);
  }
}

/** Used by the legacy/IOVA comparison: the direction a migration buffer is mapped with. */
export function mlx5vfBufferDirection(saving: boolean): DmaDataDirection {
  return saving ? DMA_FROM_DEVICE : DMA_TO_DEVICE;
}

// kernel: drivers/vfio/pci/mlx5/main.c (mlx5vf_pci_step_device_state_locked, mlx5vf_pci_set_device_state,
// mlx5vf_save_read, mlx5vf_resume_write, mlx5vf_precopy_ioctl, mlx5vf_pci_save_device_data,
// mlx5vf_pci_save_device_inc_data, mlx5vf_prep_stop_copy, mlx5vf_add_stop_copy_header,
// mlx5vf_state_mutex_unlock, mlx5vf_pci_aer_reset_done), drivers/vfio/pci/mlx5/cmd.c
// (mlx5vf_cmd_save_vhca_state, mlx5vf_save_callback, mlx5vf_cmd_load_vhca_state,
// mlx5vf_start_page_tracker, mlx5vf_tracker_read_and_clear, mlx5vf_stop_page_tracker)
import { DMA_FROM_DEVICE, DMA_NONE, DMA_TO_DEVICE, Errno, PAGE_SIZE, isPowerOfTwo } from '@dmakit/dma-core';
import type { Device, DmaDataDirection, Machine } from '@dmakit/dma-core';
import {
  mlx5vfAllocDataBuffer,
  mlx5vfDmaDataBuffer,
  mlx5vfFreeDataBuffer,
  mlx5vfGetDataBuffer,
  mlx5vfPutDataBuffer,
  newBufferStats,
} from './dataBuffer.js';
import type { Mlx5BufferCtx, Mlx5BufferStats ,
  Mlx5VhcaDataBuffer} from './dataBuffer.js';
import { vfioCombineIovaRanges } from './iovaBitmap.js';
import type { IovaBitmap, VfioIovaRange } from './iovaBitmap.js';
import {
  MLX5_CMD_STAT_BAD_RES_STATE_ERR,
  MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR,
  MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER,
  MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR,
  MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER,
} from './mlx5Function.js';
import type { Mlx5SimFunction } from './mlx5Function.js';
import { VFIO_MIGRATION_P2P, VFIO_MIGRATION_PRE_COPY, VFIO_MIGRATION_STOP_COPY, VfioDeviceMigState, vfioMigGetNextState } from './migState.js';
import {
  MLX5_MIGF_HEADER_BYTES,
  MLX5_MIGF_HEADER_FLAGS_TAG_MANDATORY,
  MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL,
  MLX5_MIGF_HEADER_TAG_FW_DATA,
  MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE,
  MLX5_MIGF_STOP_COPY_SIZE_BYTES,
  readMigrationHeader,
  writeMigrationHeader,
} from './stream.js';
import { VfioDevice } from './vfioDevice.js';
import type { VfioLogOps, VfioMigFile, VfioMigrationOps, VfioPrecopyInfo } from './vfioDevice.js';

/** `enum mlx5_vf_migf_state` (0 = idle/none). */
export const Mlx5VfMigfState = {
  NONE: 0,
  ERROR: 1,
  PRE_COPY_ERROR: 2,
  PRE_COPY: 3,
  SAVE_STOP_COPY_CHUNK: 4,
  COMPLETE: 5,
} as const;
export type Mlx5VfMigfState = (typeof Mlx5VfMigfState)[keyof typeof Mlx5VfMigfState];

/** `enum mlx5_vf_load_state`. */
export const Mlx5VfLoadState = {
  READ_HEADER: 0,
  PREP_HEADER_DATA: 1,
  READ_HEADER_DATA: 2,
  PREP_IMAGE: 3,
  READ_IMAGE: 4,
  LOAD_IMAGE: 5,
} as const;
export type Mlx5VfLoadState = (typeof Mlx5VfLoadState)[keyof typeof Mlx5VfLoadState];

/** `MAX_NUM_CHUNKS`. */
export const MLX5VF_MAX_NUM_CHUNKS = 2;
/** `MAX_LOAD_SIZE` = BIT_ULL(__mlx5_bit_sz(load_vhca_state_in, size)) - 1 (a 32-bit size field). */
export const MLX5VF_MAX_LOAD_SIZE = 2 ** 32 - 1;
/** Receive WQEs of the tracker's host QP. */
export const MLX5VF_TRACKER_RECV_WRS = 4;

/**
 * Options of the mlx5 VFIO variant driver: machine, simulated function, PF, name, legacy scatterlist
 * buffers, hidden optional states.
 */
export interface Mlx5VfPciOptions {
  machine: Machine;
  fw: Mlx5SimFunction;
  /** `mdev->device` (default: the function's PF). */
  pf?: Device;
  name?: string;
  /** Pre-conversion buffers: an appended scatterlist per buffer and dma_map_sgtable. */
  legacySgBuffers?: boolean;
  /** Hide optional states from the VFIO core (what a device without them advertises). */
  noP2p?: boolean;
  noPreCopy?: boolean;
}

/** Driver counters: state arcs, saves, loads, bytes read and written, resets, tracker reports. */
export interface Mlx5VfStats {
  arcs: number;
  saves: number;
  saveFailures: number;
  loads: number;
  bytesRead: number;
  bytesWritten: number;
  deferredResets: number;
  resets: number;
  trackerReports: number;
  trackerMessages: number;
}

type SaveWork = { chunkNum: number; required: number } | null;

/**
 * `struct mlx5_vf_migration_file`: the data fd. Saving side: `bufList` holds filled buffers in
 * stream order, `availList` recyclable ones, at most one SAVE in flight; resuming side: the
 * `loadState` parser.
 */
export class Mlx5VfMigrationFile implements VfioMigFile {
  readonly #drv: Mlx5VfPciCoreDevice;
  readonly saving: boolean;
  state: Mlx5VfMigfState = Mlx5VfMigfState.NONE;
  loadState: Mlx5VfLoadState = Mlx5VfLoadState.READ_HEADER;
  /** `filp->f_pos`. */
  pos = 0;
  maxPos = 0;
  preCopyInitialBytes = 0;
  nextRequiredUmemSize = 0;
  numReadyChunks = 0;
  stopCopyPrepSize = 0;
  readonly buf: (Mlx5VhcaDataBuffer | null)[] = [null, null];
  readonly bufHeader: (Mlx5VhcaDataBuffer | null)[] = [null, null];
  readonly bufList: Mlx5VhcaDataBuffer[] = [];
  readonly availList: Mlx5VhcaDataBuffer[] = [];
  /** Saves issued and not yet completed (save_comp held). */
  saveInFlight = false;
  /** @internal A save work item queued on the callback workqueue. */
  saveWork: SaveWork = null;
  #initialPreCopyDone = false;
  disabled = false;
  // resume parser
  readonly #hdr = new Uint8Array(MLX5_MIGF_HEADER_BYTES);
  #hdrHave = 0;
  recordSize = 0;
  recordTag = 0;
  /** Flags of the record being parsed (TAG_OPTIONAL). */
  recordFlags = 0;
  #recordHave = 0;
  readonly #hdrData = new Uint8Array(MLX5_MIGF_STOP_COPY_SIZE_BYTES);
  #imageBuf: Mlx5VhcaDataBuffer | null = null;
  imagesLoaded = 0;

  constructor(drv: Mlx5VfPciCoreDevice, saving: boolean) {
    this.#drv = drv;
    this.saving = saving;
  }

  // ---- saving side ----

  /**
   * `mlx5vf_save_read`: copy stream bytes out in order. Blocks (advancing simulated time) while a
   * SAVE is in flight; -ENOMSG at the temporary end of pre-copy data; 0 at the end of the stream;
   * -ENODEV once the file is in error or disabled.
   */
  read(out: Uint8Array, off = 0, len = out.length - off): number {
    // The resume file is opened O_WRONLY (mlx5vf_pci_resume_device_data: anon_inode_getfile(...,
    // O_WRONLY)); vfs_read() refuses a file without FMODE_READ with -EBADF before anything else
    // (fs/read_write.c: `if (!(file->f_mode & FMODE_READ)) return -EBADF;`).
    if (!this.saving) return -Errno.EBADF;
    if (!(out instanceof Uint8Array) || !Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > out.length) return -Errno.EFAULT;
    // The kernel's wait_event condition; in PRE_COPY the model also lets a SAVE in flight finish
    // first, so -ENOMSG means "nothing more for now" rather than racing the firmware.
    this.#drv.waitEvent(
      () =>
        this.bufList.length > 0 ||
        this.state === Mlx5VfMigfState.ERROR ||
        ((this.state === Mlx5VfMigfState.PRE_COPY_ERROR || this.state === Mlx5VfMigfState.PRE_COPY) && !this.saveInFlight) ||
        this.state === Mlx5VfMigfState.COMPLETE ||
        this.disabled,
      this,
    );
    if (this.state === Mlx5VfMigfState.ERROR || this.disabled) return -Errno.ENODEV;
    let done = 0;
    let first = true;
    let left = len;
    while (left > 0) {
      const endOfData = this.bufList.length === 0;
      if (first) {
        first = false;
        if (endOfData && (this.state === Mlx5VfMigfState.PRE_COPY || this.state === Mlx5VfMigfState.PRE_COPY_ERROR)) return -ENOMSG;
        if (endOfData && this.state !== Mlx5VfMigfState.COMPLETE) return -Errno.EAGAIN;
      }
      if (endOfData) break;
      const b = this.bufList[0];
      if (b === undefined || this.pos < b.startPos || this.pos >= b.startPos + b.length) return done > 0 ? done : -Errno.EINVAL;
      const bo = this.pos - b.startPos;
      const n = Math.min(left, b.length - bo);
      b.copyOut(this.#drv.machine, bo, out, off + done, n);
      done += n;
      left -= n;
      this.pos += n;
      if (this.pos >= b.startPos + b.length) {
        this.bufList.shift();
        this.#drv.bufferConsumed(this, b);
      }
      // Keep reading while more data is already there (a chunk may complete meanwhile).
      if (this.bufList.length === 0) break;
    }
    this.#drv.stats.bytesRead += done;
    this.#drv.machine.clock.charge(Math.ceil(done / 8)); // CPU copy ~8 B/ns
    return done;
  }

  /** `mlx5vf_precopy_ioctl`. */
  precopyInfo(): VfioPrecopyInfo | number {
    return this.#drv.precopyIoctl(this);
  }

  // ---- resuming side ----

  /**
   * `mlx5vf_resume_write`: parse the stream records (header, optional STOP_COPY_SIZE data, image)
   * and LOAD each image. Bytes consumed, or -errno (the file is then in ERROR).
   */
  write(src: Uint8Array, off = 0, len = src.length - off): number {
    // The save file is opened O_RDONLY (mlx5vf_pci_save_device_data: anon_inode_getfile(...,
    // O_RDONLY)); vfs_write() refuses a file without FMODE_WRITE with -EBADF before anything else
    // (fs/read_write.c: `if (!(file->f_mode & FMODE_WRITE)) return -EBADF;`).
    if (this.saving) return -Errno.EBADF;
    if (!(src instanceof Uint8Array) || !Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > src.length) return -Errno.EFAULT;
    if (this.disabled || this.state === Mlx5VfMigfState.ERROR) return -Errno.ENODEV;
    const ret = this.#resumeWrite(src, off, len);
    if (ret < 0) {
      this.state = Mlx5VfMigfState.ERROR;
      this.#drv.fw.markBroken();
      return ret;
    }
    this.#drv.stats.bytesWritten += ret;
    this.#drv.machine.clock.charge(Math.ceil(ret / 8));
    return ret;
  }

  #resumeWrite(src: Uint8Array, off: number, len: number): number {
    let p = off;
    const end = off + len;
    const drv = this.#drv;
    while (p < end || this.loadState === Mlx5VfLoadState.LOAD_IMAGE || this.loadState === Mlx5VfLoadState.PREP_IMAGE || this.loadState === Mlx5VfLoadState.PREP_HEADER_DATA) {
      switch (this.loadState) {
        case Mlx5VfLoadState.READ_HEADER: {
          const n = Math.min(MLX5_MIGF_HEADER_BYTES - this.#hdrHave, end - p);
          this.#hdr.set(src.subarray(p, p + n), this.#hdrHave);
          this.#hdrHave += n;
          p += n;
          if (this.#hdrHave < MLX5_MIGF_HEADER_BYTES) break;
          this.#hdrHave = 0;
          const h = readMigrationHeader(this.#hdr);
          this.recordSize = h.recordSize;
          this.recordTag = h.tag;
          this.recordFlags = h.flags;
          this.#recordHave = 0;
          if ((h.flags & ~MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL) !== 0) return -Errno.EINVAL;
          if (h.tag === MLX5_MIGF_HEADER_TAG_FW_DATA) {
            if (h.recordSize === 0 || h.recordSize > MLX5VF_MAX_LOAD_SIZE) return -Errno.EINVAL;
            this.loadState = Mlx5VfLoadState.PREP_IMAGE;
          } else if (h.tag === MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE) {
            if (h.recordSize !== MLX5_MIGF_STOP_COPY_SIZE_BYTES) return -Errno.EINVAL;
            this.loadState = Mlx5VfLoadState.PREP_HEADER_DATA;
          } else if ((h.flags & MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL) !== 0) {
            if (h.recordSize > MLX5VF_MAX_LOAD_SIZE) return -Errno.EINVAL;
            this.loadState = h.recordSize === 0 ? Mlx5VfLoadState.READ_HEADER : Mlx5VfLoadState.READ_HEADER_DATA; // skip an unknown optional record
          } else {
            return -Errno.EOPNOTSUPP; // unknown mandatory tag
          }
          break;
        }
        case Mlx5VfLoadState.PREP_HEADER_DATA:
          this.loadState = Mlx5VfLoadState.READ_HEADER_DATA;
          break;
        case Mlx5VfLoadState.READ_HEADER_DATA: {
          const n = Math.min(this.recordSize - this.#recordHave, end - p);
          if (this.recordTag === MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE) this.#hdrData.set(src.subarray(p, p + n), this.#recordHave);
          this.#recordHave += n;
          p += n;
          if (this.#recordHave < this.recordSize) break;
          if (this.recordTag === MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE) {
            const dv = new DataView(this.#hdrData.buffer);
            const size = Number(dv.getBigUint64(0, true));
            // mlx5vf_resume_read_header_data: preallocate the image buffer for stop-copy.
            this.stopCopyPrepSize = Math.min(size, MLX5VF_MAX_LOAD_SIZE);
            if (this.stopCopyPrepSize > 0 && this.buf[0] === null) {
              const b = mlx5vfAllocDataBuffer(drv.bufCtx, Math.ceil(this.stopCopyPrepSize / PAGE_SIZE), DMA_TO_DEVICE);
              if (typeof b === 'number') return b;
              this.buf[0] = b;
            }
          }
          this.loadState = Mlx5VfLoadState.READ_HEADER;
          break;
        }
        case Mlx5VfLoadState.PREP_IMAGE: {
          const npages = Math.ceil(this.recordSize / PAGE_SIZE);
          let b = this.buf[0] ?? null;
          if (b === null || b.npages < npages) {
            if (b !== null) mlx5vfFreeDataBuffer(drv.bufCtx, b);
            this.buf[0] = null;
            const nb = mlx5vfAllocDataBuffer(drv.bufCtx, npages, DMA_TO_DEVICE);
            if (typeof nb === 'number') return nb;
            b = nb;
            this.buf[0] = nb;
          }
          this.#imageBuf = b;
          b.length = 0;
          this.loadState = Mlx5VfLoadState.READ_IMAGE;
          break;
        }
        case Mlx5VfLoadState.READ_IMAGE: {
          const b = this.#imageBuf;
          if (b === null) return -Errno.EINVAL;
          const n = Math.min(this.recordSize - b.length, end - p);
          b.copyIn(drv.machine, b.length, src, p, n);
          b.length += n;
          p += n;
          if (b.length === this.recordSize) this.loadState = Mlx5VfLoadState.LOAD_IMAGE;
          break;
        }
        case Mlx5VfLoadState.LOAD_IMAGE: {
          const b = this.#imageBuf;
          if (b === null) return -Errno.EINVAL;
          const ret = drv.cmdLoadVhcaState(b);
          if (ret !== 0) return ret;
          this.imagesLoaded++;
          this.#imageBuf = null;
          this.loadState = Mlx5VfLoadState.READ_HEADER;
          break;
        }
      }
      if (p >= end && this.loadState !== Mlx5VfLoadState.LOAD_IMAGE && this.loadState !== Mlx5VfLoadState.PREP_IMAGE && this.loadState !== Mlx5VfLoadState.PREP_HEADER_DATA) break;
    }
    return p - off;
  }

  /** The stream ended on a record boundary with at least one image loaded. */
  get resumeComplete(): boolean {
    return this.loadState === Mlx5VfLoadState.READ_HEADER && this.#hdrHave === 0 && this.imagesLoaded > 0 && this.state !== Mlx5VfMigfState.ERROR;
  }

  // ---- shared ----

  /** Records how many bytes the initial pre-copy image holds (once per file). */
  markPreCopyInitial(): void {
    if (!this.#initialPreCopyDone) {
      this.#initialPreCopyDone = true;
      this.preCopyInitialBytes = this.maxPos;
    }
  }

  /** `mlx5vf_mig_file_release`. */
  release(): void {
    this.#drv.releaseFile(this);
  }

  /** Free every buffer the file holds (`mlx5fv_cmd_clean_migf_resources`). */
  freeResources(ctx: Mlx5BufferCtx): void {
    const all = new Set<Mlx5VhcaDataBuffer>([...this.bufList, ...this.availList]);
    for (const b of [...this.buf, ...this.bufHeader]) if (b !== null) all.add(b);
    if (this.#imageBuf !== null) all.add(this.#imageBuf);
    this.bufList.length = 0;
    this.availList.length = 0;
    this.buf.fill(null);
    this.bufHeader.fill(null);
    this.#imageBuf = null;
    for (const b of all) mlx5vfFreeDataBuffer(ctx, b);
  }
}

/** `ENOMSG`: no more pre-copy data for now (not in dma-core's Errno list). */
export const ENOMSG = 42;
/** `ENOTCONN`: the mlx5 core device is detached. */
export const ENOTCONN = 107;

interface RecvBuf {
  buf: Mlx5VhcaDataBuffer;
  slots: number;
  msgSize: number;
  nextSlot: number;
}

/**
 * `struct mlx5vf_pci_core_device`: the mlx5 VFIO variant driver of one VF. Implements the VFIO
 * migration ops (the arcs) and log ops (the device dirty tracker) behind a `VfioDevice`.
 */
export class Mlx5VfPciCoreDevice implements VfioMigrationOps, VfioLogOps {
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
  #tracker: { pageSize: number; recv: RecvBuf; ranges: VfioIovaRange[]; isErr: boolean } | null = null;

  constructor(opts: Mlx5VfPciOptions) {
    this.machine = opts.machine;
    this.fw = opts.fw;
    this.migrateCap = opts.fw.caps.migration;
    this.chunkMode = opts.fw.caps.chunkMode;
    this.bufCtx = { machine: opts.machine, dev: opts.pf ?? opts.fw.pf, fw: opts.fw, legacySg: opts.legacySgBuffers ?? false, mdevDetached: false, stats: newBufferStats() };
    let flags = VFIO_MIGRATION_STOP_COPY;
    if (opts.noP2p !== true) flags |= VFIO_MIGRATION_P2P;
    if (opts.fw.caps.preCopy && opts.noPreCopy !== true) flags |= VFIO_MIGRATION_PRE_COPY;
    this.vdev = new VfioDevice(opts.name ?? `vfio-mlx5-${opts.fw.vf.name}`, flags, this.migrateCap ? this : null, this.migrateCap ? this : null);
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

  #lock(): void {
    this.#mutexHeld = true;
  }

  /** `mlx5vf_state_mutex_unlock`: a reset that arrived while the mutex was held runs now. */
  #unlock(): void {
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
    this.#lock();
    this.#unlock();
  }

  /** A PCI function reset (FLR) of the VF followed by the driver's reset_done. */
  reset(): void {
    this.stats.resets++;
    this.fw.flr();
    if (this.#tracker !== null) this.#stopTrackerLocked();
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
    this.#lock();
    const total = this.fw.queryVhcaMigrationState(false);
    this.#unlock();
    if (total < 0) return total;
    return total + 2 * MLX5_MIGF_HEADER_BYTES + MLX5_MIGF_STOP_COPY_SIZE_BYTES;
  }

  /** `mlx5vf_pci_set_device_state`: walk vfio_mig_get_next_state arcs until the new state. */
  migrationSetState(newState: VfioDeviceMigState): VfioMigFile | null | number {
    this.#lock();
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
    this.#unlock();
    return res;
  }

  #suspend(opMod: number): number {
    return this.fw.suspendVhca(opMod);
  }

  #resume(opMod: number): number {
    return this.fw.resumeVhca(opMod);
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
    const total = this.fw.queryVhcaMigrationState(false);
    if (total < 0) return total;
    const length = track ? total : this.fw.queryRequiredUmemSize(false);
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
      const b = this.#getStopCopyBuf(migf, 0, length);
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

  /** `mlx5vf_mig_file_get_stop_copy_buf(migf, index, required_length)`. */
  #getStopCopyBuf(migf: Mlx5VfMigrationFile, index: number, required: number): Mlx5VhcaDataBuffer | number {
    const b = migf.buf[index] ?? null;
    if (b !== null && b.npages * PAGE_SIZE >= required) {
      migf.buf[index] = null;
      return b;
    }
    if (b !== null) {
      migf.buf[index] = null;
      mlx5vfFreeDataBuffer(this.bufCtx, b);
    }
    const nb = mlx5vfAllocDataBuffer(this.bufCtx, Math.ceil(required / PAGE_SIZE), DMA_FROM_DEVICE);
    if (typeof nb === 'number') return nb;
    if (this.chunkMode) nb.stopCopyChunkNum = index + 1;
    return nb;
  }

  /** `mlx5vf_pci_save_device_inc_data`: the final (incremental) save when leaving pre-copy. */
  #saveDeviceIncData(): number {
    const migf = this.savingMigf;
    if (migf === null) return -Errno.EINVAL;
    if (migf.state === Mlx5VfMigfState.ERROR) return -Errno.ENODEV;
    this.waitEvent(() => !migf.saveInFlight, migf);
    const length = this.fw.queryRequiredUmemSize(migf.state !== Mlx5VfMigfState.PRE_COPY_ERROR);
    if (length < 0) return length;
    const buf = this.#getStopCopyBuf(migf, 0, length);
    if (typeof buf === 'number') return buf;
    const ret = this.cmdSaveVhcaState(migf, buf, true, false);
    if (ret !== 0) {
      mlx5vfFreeDataBuffer(this.bufCtx, buf);
      migf.state = Mlx5VfMigfState.ERROR;
    }
    return ret;
  }

  /**
   * `mlx5vf_cmd_save_vhca_state(mvdev, migf, buf, inc, track)`: wait for the SAVE in flight, then
   * issue this one; the completion appends header + data to the stream.
   */
  cmdSaveVhcaState(migf: Mlx5VfMigrationFile, buf: Mlx5VhcaDataBuffer, incIn: boolean, track: boolean): number {
    if (this.bufCtx.mdevDetached) return -ENOTCONN;
    this.waitEvent(() => !migf.saveInFlight, migf); // wait_for_completion_interruptible(&migf->save_comp)
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
      const h = mlx5vfGetDataBuffer(this.bufCtx, migf.availList, 1, DMA_NONE);
      if (typeof h === 'number') return h;
      header = h;
      if (stopCopyChunk) header.stopCopyChunkNum = buf.stopCopyChunkNum;
    }
    if (stopCopyChunk) migf.state = Mlx5VfMigfState.SAVE_STOP_COPY_CHUNK;
    const hdr = header;
    migf.saveInFlight = true;
    this.stats.saves++;
    const trace = this.machine.trace;
    if (trace.enabled) trace.emit('mlx5_vfio:save_vhca_state', this.vdev.name, { mkey: buf.mkey, size: buf.npages * PAGE_SIZE, inc, track, chunk: buf.stopCopyChunkNum });
    const ret = this.fw.saveVhcaState({ mkey: buf.mkey, size: buf.npages * PAGE_SIZE, incremental: inc, setTrack: track }, (status, imageSize, next) => {
      this.#saveCallback(migf, buf, hdr, status, imageSize, next, stopCopyChunk, track);
    });
    if (ret !== 0) {
      migf.saveInFlight = false;
      mlx5vfPutDataBuffer(migf.availList, hdr);
      return ret;
    }
    return 0;
  }

  /** `mlx5vf_save_callback` + the error work item. */
  #saveCallback(migf: Mlx5VfMigrationFile, buf: Mlx5VhcaDataBuffer, header: Mlx5VhcaDataBuffer, status: number, imageSize: number, next: number, stopCopyChunk: boolean, track: boolean): void {
    migf.saveInFlight = false;
    if (migf.disabled) {
      // The fd was closed meanwhile: just free.
      mlx5vfFreeDataBuffer(this.bufCtx, buf);
      mlx5vfFreeDataBuffer(this.bufCtx, header);
      return;
    }
    if (status !== 0) {
      this.stats.saveFailures++;
      if (buf.stopCopyChunkNum > 0) migf.buf[buf.stopCopyChunkNum - 1] = buf;
      else mlx5vfPutDataBuffer(migf.availList, buf);
      if (header.stopCopyChunkNum > 0) migf.bufHeader[header.stopCopyChunkNum - 1] = header;
      else mlx5vfPutDataBuffer(migf.availList, header);
      migf.state = !stopCopyChunk && status === MLX5_CMD_STAT_BAD_RES_STATE_ERR ? Mlx5VfMigfState.PRE_COPY_ERROR : Mlx5VfMigfState.ERROR;
      return;
    }
    const rec = new Uint8Array(MLX5_MIGF_HEADER_BYTES);
    writeMigrationHeader(rec, 0, { recordSize: imageSize, flags: MLX5_MIGF_HEADER_FLAGS_TAG_MANDATORY, tag: MLX5_MIGF_HEADER_TAG_FW_DATA });
    header.copyIn(this.machine, 0, rec, 0, rec.length);
    header.length = MLX5_MIGF_HEADER_BYTES;
    header.startPos = migf.maxPos;
    migf.maxPos += MLX5_MIGF_HEADER_BYTES;
    buf.length = imageSize;
    buf.startPos = migf.maxPos;
    migf.maxPos += imageSize;
    migf.bufList.push(header, buf);
    if (stopCopyChunk) {
      migf.nextRequiredUmemSize = this.chunkMode ? next : 0;
      migf.numReadyChunks++;
      if (migf.nextRequiredUmemSize === 0) {
        migf.state = Mlx5VfMigfState.COMPLETE;
      } else if (migf.numReadyChunks < MLX5VF_MAX_NUM_CHUNKS) {
        this.#queueSaveWork(migf, (buf.stopCopyChunkNum % MLX5VF_MAX_NUM_CHUNKS) + 1, migf.nextRequiredUmemSize);
      }
      // else: two chunks buffered; the next SAVE waits until userspace reads one.
    } else {
      if (track) migf.markPreCopyInitial();
      migf.state = Mlx5VfMigfState.PRE_COPY;
    }
  }

  /** `mlx5vf_mig_file_set_save_work`: queue the save of chunk `chunkNum` on the callback workqueue. */
  #queueSaveWork(migf: Mlx5VfMigrationFile, chunkNum: number, required: number): void {
    if (migf.saveWork !== null) return;
    migf.saveWork = { chunkNum, required };
    this.machine.schedule(0, () => {
      const w = migf.saveWork;
      migf.saveWork = null;
      if (w === null || migf.disabled || migf.state === Mlx5VfMigfState.ERROR) return;
      // mlx5vf_mig_file_save_work
      const buf = this.#getStopCopyBuf(migf, w.chunkNum - 1, w.required);
      if (typeof buf === 'number') {
        migf.state = Mlx5VfMigfState.ERROR;
        return;
      }
      if (this.cmdSaveVhcaState(migf, buf, true, false) !== 0) {
        mlx5vfFreeDataBuffer(this.bufCtx, buf);
        migf.state = Mlx5VfMigfState.ERROR;
      }
    });
  }

  /** Called by read() when a buffer has been fully consumed (`mlx5vf_buf_read`'s tail). */
  bufferConsumed(migf: Mlx5VfMigrationFile, b: Mlx5VhcaDataBuffer): void {
    const n = b.stopCopyChunkNum;
    if (n > 0) {
      if (b.dmaDir === DMA_NONE) {
        migf.bufHeader[n - 1] = b;
      } else {
        migf.buf[n - 1] = b;
        migf.numReadyChunks--;
        if (migf.state === Mlx5VfMigfState.SAVE_STOP_COPY_CHUNK && migf.nextRequiredUmemSize > 0 && !migf.saveInFlight) {
          this.#queueSaveWork(migf, n, migf.nextRequiredUmemSize);
        }
      }
      return;
    }
    mlx5vfPutDataBuffer(migf.availList, b);
  }

  /** `mlx5vf_precopy_ioctl`. */
  precopyIoctl(migf: Mlx5VfMigrationFile): VfioPrecopyInfo | number {
    const S = VfioDeviceMigState;
    if (this.migState !== S.PRE_COPY && this.migState !== S.PRE_COPY_P2P) return -Errno.EINVAL;
    if (migf !== this.savingMigf || migf.disabled) return -Errno.EINVAL;
    this.#lock();
    try {
      let incLength = 0;
      // No SAVE while suspended: in PRE_COPY_P2P there is nothing more to query.
      if (this.migState === S.PRE_COPY) {
        this.waitEvent(() => !migf.saveInFlight, migf);
        incLength = this.fw.queryVhcaMigrationState(migf.state !== Mlx5VfMigfState.PRE_COPY_ERROR);
        if (incLength < 0) return incLength;
        // An increment that is only a header (nothing dirty) is not worth a SAVE.
        if (incLength <= 36 && migf.state !== Mlx5VfMigfState.PRE_COPY_ERROR) incLength = 0;
      }
      if (migf.state === Mlx5VfMigfState.ERROR) return -Errno.ENODEV;
      const info: VfioPrecopyInfo = { initialBytes: 0, dirtyBytes: 0 };
      let endOfData = false;
      if (migf.preCopyInitialBytes > migf.pos) {
        info.initialBytes = migf.preCopyInitialBytes - migf.pos;
      } else {
        info.dirtyBytes = migf.maxPos - migf.pos;
        if (info.dirtyBytes === 0) endOfData = true;
        info.dirtyBytes += incLength;
      }
      if (!endOfData || incLength === 0) return info;
      // We finished transferring the current state and the device has dirty state: save it now.
      const buf = mlx5vfGetDataBuffer(this.bufCtx, migf.availList, Math.ceil(incLength / PAGE_SIZE), DMA_FROM_DEVICE);
      if (typeof buf === 'number') return buf;
      const ret = this.cmdSaveVhcaState(migf, buf, true, true);
      if (ret !== 0) {
        mlx5vfPutDataBuffer(migf.availList, buf);
        return ret;
      }
      return info;
    } finally {
      this.#unlock();
    }
  }

  // ---- resuming ----

  /** `mlx5vf_cmd_load_vhca_state`: map lazily if needed, then LOAD_VHCA_STATE of `buf.length` bytes. */
  cmdLoadVhcaState(buf: Mlx5VhcaDataBuffer): number {
    if (this.bufCtx.mdevDetached) return -ENOTCONN;
    if (buf.mkeyIn === null) {
      const ret = mlx5vfDmaDataBuffer(this.bufCtx, buf);
      if (ret !== 0) return ret;
    }
    this.stats.loads++;
    const trace = this.machine.trace;
    if (trace.enabled) trace.emit('mlx5_vfio:load_vhca_state', this.vdev.name, { mkey: buf.mkey, size: buf.length });
    return this.fw.loadVhcaState(buf.mkey, buf.length);
  }

  // ---- fds ----

  /** `mlx5vf_disable_fds`. */
  #disableFds(_unused: null): void {
    for (const migf of [this.resumingMigf, this.savingMigf]) {
      if (migf === null) continue;
      this.waitEvent(() => !migf.saveInFlight, migf);
      migf.disabled = true;
      migf.state = Mlx5VfMigfState.ERROR;
      migf.saveWork = null;
      migf.pos = 0;
      migf.freeResources(this.bufCtx);
    }
    this.resumingMigf = null;
    this.savingMigf = null;
  }

  /**
   * Frees every buffer a migration file holds and disables it (kernel: mlx5vf_disable_fd() plus
   * mlx5fv_cmd_clean_migf_resources()).
   */
  releaseFile(migf: Mlx5VfMigrationFile): void {
    if (migf.disabled) return;
    this.waitEvent(() => !migf.saveInFlight, migf);
    migf.disabled = true;
    migf.state = Mlx5VfMigfState.ERROR;
    migf.freeResources(this.bufCtx);
    if (this.savingMigf === migf) this.savingMigf = null;
    if (this.resumingMigf === migf) this.resumingMigf = null;
  }

  // ---- VfioLogOps: the device dirty page tracker ----

  /** `mlx5vf_start_page_tracker(vdev, ranges, nnodes, &page_size)`: the tracked page size or -errno. */
  logStart(rangesIn: readonly VfioIovaRange[], pageSizeIn: number): number {
    if (!this.migrateCap) return -Errno.EOPNOTSUPP;
    this.#lock();
    try {
      if (this.logActive) return -Errno.EINVAL;
      if (this.bufCtx.mdevDetached) return -ENOTCONN;
      const caps = this.fw.caps;
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
      const rb = mlx5vfAllocDataBuffer(this.bufCtx, npages, DMA_FROM_DEVICE);
      if (typeof rb === 'number') return rb;
      const ret = this.fw.createPageTracker({ ranges, logPageSize: logPage, logMsgSize: logMsg, recvMkey: rb.mkey, recvNpages: npages });
      if (ret !== 0) {
        mlx5vfFreeDataBuffer(this.bufCtx, rb);
        return ret;
      }
      this.#tracker = { pageSize: 2 ** logPage, recv: { buf: rb, slots: (npages * PAGE_SIZE) / msgSize, msgSize, nextSlot: 0 }, ranges, isErr: false };
      this.logActive = true;
      return 2 ** logPage;
    } finally {
      this.#unlock();
    }
  }

  /** The ranges the device tracks after merging (for tests and the demo). */
  get trackedRanges(): readonly VfioIovaRange[] {
    return this.#tracker?.ranges ?? [];
  }

  /** Page size of the device dirty tracker, or 0 when not tracking. */
  get trackedPageSize(): number {
    return this.#tracker?.pageSize ?? 0;
  }

  #stopTrackerLocked(): void {
    const t = this.#tracker;
    if (t === null) return;
    if (this.fw.trackerActive) this.fw.destroyPageTracker();
    mlx5vfFreeDataBuffer(this.bufCtx, t.recv.buf);
    this.#tracker = null;
    this.logActive = false;
  }

  /** `mlx5vf_stop_page_tracker`. */
  logStop(): number {
    this.#lock();
    try {
      if (!this.logActive) return 0;
      this.#stopTrackerLocked();
      return 0;
    } finally {
      this.#unlock();
    }
  }

  /**
   * `mlx5vf_tracker_read_and_clear`: ask the firmware for a report of the range, then consume
   * its messages from the receive buffer (CPU reads of host memory), setting bitmap bits and
   * reposting receive WQEs, until the message flagged last. -EIO on a tracker error.
   */
  logReadAndClear(iova: number, length: number, dirty: IovaBitmap): number {
    this.#lock();
    try {
      const t = this.#tracker;
      if (!this.logActive || t === null) return -Errno.EINVAL;
      if (t.isErr) return -Errno.EIO;
      let ret = this.fw.trackerQueryReport(iova, length);
      if (ret !== 0) {
        t.isErr = true;
        return -Errno.EIO;
      }
      this.stats.trackerReports++;
      const r = t.recv;
      const msg = new Uint8Array(r.msgSize);
      const dv = new DataView(msg.buffer);
      for (let guard = 0; guard < 1 << 24; guard++) {
        const slot = r.nextSlot;
        ret = this.fw.trackerPostMessage(slot);
        if (ret < 0) {
          t.isErr = true;
          return -Errno.EIO;
        }
        r.nextSlot = (slot + 1) % r.slots; // repost the receive WQE
        const off = slot * r.msgSize;
        r.buf.copyOut(this.machine, off, msg, 0, ret);
        const n = dv.getUint32(0, true);
        const lastMsg = (dv.getUint32(4, true) & 1) !== 0;
        for (let i = 0; i < n; i++) {
          const addr = dv.getUint32(8 + 8 * i, true) + dv.getUint32(12 + 8 * i, true) * 0x1_0000_0000;
          dirty.set(addr, t.pageSize);
        }
        this.stats.trackerMessages++;
        if (lastMsg) return 0;
      }
      return -Errno.EIO;
    } finally {
      this.#unlock();
    }
  }
}

/** Used by the legacy/IOVA comparison: the direction a migration buffer is mapped with. */
export function mlx5vfBufferDirection(saving: boolean): DmaDataDirection {
  return saving ? DMA_FROM_DEVICE : DMA_TO_DEVICE;
}

// kernel: drivers/vfio/pci/mlx5/main.c, the migration file and its file operations: the save file
// (mlx5vf_save_read, mlx5vf_buf_read, mlx5vf_precopy_ioctl, mlx5vf_mig_file_set_save_work,
// mlx5vf_mig_file_save_work, mlx5vf_mig_file_get_stop_copy_buf, mlx5vf_release_file,
// mlx5vf_disable_fd), the resume file (mlx5vf_resume_write, mlx5vf_resume_read_header,
// mlx5vf_resume_read_header_data, mlx5vf_resume_read_image) and struct mlx5_vf_migration_file
// (drivers/vfio/pci/mlx5/cmd.h); mlx5fv_cmd_clean_migf_resources (cmd.c).
import { DMA_FROM_DEVICE, DMA_NONE, DMA_TO_DEVICE, Errno, PAGE_SIZE } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import { mlx5vfAllocDataBuffer, mlx5vfFreeDataBuffer, mlx5vfGetDataBuffer, mlx5vfPutDataBuffer } from './dataBuffer.js';
import type { Mlx5BufferCtx, Mlx5VhcaDataBuffer } from './dataBuffer.js';
import { ENOMSG, MLX5VF_MAX_LOAD_SIZE, Mlx5VfLoadState, Mlx5VfMigfState } from './mlx5Defs.js';
import type { Mlx5VfStats } from './mlx5Defs.js';
import type { Mlx5SimFunction } from './mlx5Function.js';
import { VfioDeviceMigState } from './migState.js';
import {
  MLX5_MIGF_HEADER_BYTES,
  MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL,
  MLX5_MIGF_HEADER_TAG_FW_DATA,
  MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE,
  MLX5_MIGF_STOP_COPY_SIZE_BYTES,
  readMigrationHeader,
} from './stream.js';
import type { VfioDevice, VfioMigFile, VfioPrecopyInfo } from './vfioDevice.js';

/**
 * What a migration file uses of its `struct mlx5vf_pci_core_device` (mlx5Main.ts implements it):
 * the machine and function, the buffer context, the state mutex, the wait for the firmware, and
 * the device commands of cmd.c it issues from its file operations.
 */
export interface Mlx5VfMigfDevice {
  readonly machine: Machine;
  readonly fw: Mlx5SimFunction;
  readonly vdev: VfioDevice;
  readonly bufCtx: Mlx5BufferCtx;
  readonly stats: Mlx5VfStats;
  /** `mvdev->chunk_mode`. */
  readonly chunkMode: boolean;
  /** `mvdev->mig_state`. */
  readonly migState: VfioDeviceMigState;
  /** `mvdev->saving_migf`. */
  savingMigf: Mlx5VfMigrationFile | null;
  /** `mvdev->resuming_migf`. */
  resumingMigf: Mlx5VfMigrationFile | null;
  /** `mutex_lock(&mvdev->state_mutex)`. */
  stateMutexLock(): void;
  /** `mlx5vf_state_mutex_unlock`: runs a reset deferred while the mutex was held. */
  stateMutexUnlock(): void;
  /** `wait_event*` stand-in: run simulated time until `cond` holds or nothing more can happen. */
  waitEvent(cond: () => boolean, migf: Mlx5VfMigrationFile | null): boolean;
  /** `mlx5vf_cmd_query_vhca_migration_state`: the next image's size (one chunk when `chunk`), or -errno. */
  cmdQueryVhcaMigrationState(inc: boolean, chunk: boolean): number;
  /** `mlx5vf_cmd_save_vhca_state(mvdev, migf, buf, inc, track)`: 0 (issued) or -errno. */
  cmdSaveVhcaState(migf: Mlx5VfMigrationFile, buf: Mlx5VhcaDataBuffer, inc: boolean, track: boolean): number;
  /** `mlx5vf_cmd_load_vhca_state(mvdev, migf, buf)`: 0 or -errno. */
  cmdLoadVhcaState(buf: Mlx5VhcaDataBuffer): number;
}

type SaveWork = { chunkNum: number; required: number } | null;

/**
 * `struct mlx5_vf_migration_file`: the data fd. Saving side: `bufList` holds filled buffers in
 * stream order, `availList` recyclable ones, at most one SAVE in flight; resuming side: the
 * `loadState` parser. The save file is opened read-only and the resume file write-only, as the
 * kernel opens them.
 */
export class Mlx5VfMigrationFile implements VfioMigFile {
  readonly #mvdev: Mlx5VfMigfDevice;
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

  constructor(mvdev: Mlx5VfMigfDevice, saving: boolean) {
    this.#mvdev = mvdev;
    this.saving = saving;
  }

  // ---- saving side ----

  /**
   * `mlx5vf_save_read`: copy stream bytes out in order. Blocks (advancing simulated time) while a
   * SAVE is in flight; -ENOMSG at the temporary end of pre-copy data; 0 at the end of the stream;
   * -ENODEV once the file is in error or disabled; -EBADF on the (write-only) resume file.
   */
  read(out: Uint8Array, off = 0, len = out.length - off): number {
    // The resume file is opened O_WRONLY (mlx5vf_pci_resume_device_data: anon_inode_getfile(...,
    // O_WRONLY)); vfs_read() refuses a file without FMODE_READ with -EBADF before anything else
    // (fs/read_write.c: `if (!(file->f_mode & FMODE_READ)) return -EBADF;`).
    if (!this.saving) return -Errno.EBADF;
    if (!(out instanceof Uint8Array) || !Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > out.length) return -Errno.EFAULT;
    const mvdev = this.#mvdev;
    // The kernel's wait_event condition; in PRE_COPY the model also lets a SAVE in flight finish
    // first, so -ENOMSG means "nothing more for now" rather than racing the firmware.
    mvdev.waitEvent(
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
      b.copyOut(mvdev.machine, bo, out, off + done, n);
      done += n;
      left -= n;
      this.pos += n;
      if (this.pos >= b.startPos + b.length) {
        this.bufList.shift();
        this.bufferConsumed(b);
      }
      // Keep reading while more data is already there (a chunk may complete meanwhile).
      if (this.bufList.length === 0) break;
    }
    mvdev.stats.bytesRead += done;
    mvdev.machine.clock.charge(Math.ceil(done / 8)); // CPU copy ~8 B/ns
    return done;
  }

  /**
   * A buffer was read to its end (`mlx5vf_buf_read`'s tail): a stop-copy chunk buffer goes back to
   * its slot (and the next chunk's SAVE may start), any other to the recycling list.
   */
  bufferConsumed(b: Mlx5VhcaDataBuffer): void {
    const n = b.stopCopyChunkNum;
    if (n > 0) {
      if (b.dmaDir === DMA_NONE) {
        this.bufHeader[n - 1] = b;
      } else {
        this.buf[n - 1] = b;
        this.numReadyChunks--;
        if (this.state === Mlx5VfMigfState.SAVE_STOP_COPY_CHUNK && this.nextRequiredUmemSize > 0 && !this.saveInFlight) {
          this.setSaveWork(n, this.nextRequiredUmemSize);
        }
      }
      return;
    }
    mlx5vfPutDataBuffer(this.availList, b);
  }

  /**
   * `mlx5vf_mig_file_set_save_work`: queue the SAVE of chunk `chunkNum` on the callback workqueue;
   * the work (`mlx5vf_mig_file_save_work`) takes the chunk's buffer and issues the command.
   */
  setSaveWork(chunkNum: number, required: number): void {
    if (this.saveWork !== null) return;
    this.saveWork = { chunkNum, required };
    const mvdev = this.#mvdev;
    mvdev.machine.schedule(0, () => {
      const w = this.saveWork;
      this.saveWork = null;
      if (w === null || this.disabled || this.state === Mlx5VfMigfState.ERROR) return;
      const buf = this.getStopCopyBuf(w.chunkNum - 1, w.required);
      if (typeof buf === 'number') {
        this.state = Mlx5VfMigfState.ERROR;
        return;
      }
      if (mvdev.cmdSaveVhcaState(this, buf, true, false) !== 0) {
        mlx5vfFreeDataBuffer(mvdev.bufCtx, buf);
        this.state = Mlx5VfMigfState.ERROR;
      }
    });
  }

  /**
   * `mlx5vf_mig_file_get_stop_copy_buf(migf, index, required_length)`: the chunk buffer of `index`
   * if large enough, else a new one (the old one freed).
   */
  getStopCopyBuf(index: number, required: number): Mlx5VhcaDataBuffer | number {
    const ctx = this.#mvdev.bufCtx;
    const b = this.buf[index] ?? null;
    if (b !== null && b.npages * PAGE_SIZE >= required) {
      this.buf[index] = null;
      return b;
    }
    if (b !== null) {
      this.buf[index] = null;
      mlx5vfFreeDataBuffer(ctx, b);
    }
    const nb = mlx5vfAllocDataBuffer(ctx, Math.ceil(required / PAGE_SIZE), DMA_FROM_DEVICE);
    if (typeof nb === 'number') return nb;
    if (this.#mvdev.chunkMode) nb.stopCopyChunkNum = index + 1;
    return nb;
  }

  /**
   * `mlx5vf_precopy_ioctl` (VFIO_MIG_GET_PRECOPY_INFO): initial and dirty bytes left; when the
   * stream read so far is exhausted and the device has dirty state, the next incremental SAVE is
   * issued here.
   */
  precopyInfo(): VfioPrecopyInfo | number {
    const mvdev = this.#mvdev;
    const S = VfioDeviceMigState;
    if (mvdev.migState !== S.PRE_COPY && mvdev.migState !== S.PRE_COPY_P2P) return -Errno.EINVAL;
    if (this !== mvdev.savingMigf || this.disabled) return -Errno.EINVAL;
    mvdev.stateMutexLock();
    try {
      let incLength = 0;
      // No SAVE while suspended: in PRE_COPY_P2P there is nothing more to query.
      if (mvdev.migState === S.PRE_COPY) {
        mvdev.waitEvent(() => !this.saveInFlight, this);
        incLength = mvdev.cmdQueryVhcaMigrationState(this.state !== Mlx5VfMigfState.PRE_COPY_ERROR, false);
        if (incLength < 0) return incLength;
        // An increment that is only a header (nothing dirty) is not worth a SAVE.
        if (incLength <= 36 && this.state !== Mlx5VfMigfState.PRE_COPY_ERROR) incLength = 0;
      }
      if (this.state === Mlx5VfMigfState.ERROR) return -Errno.ENODEV;
      const info: VfioPrecopyInfo = { initialBytes: 0, dirtyBytes: 0 };
      let endOfData = false;
      if (this.preCopyInitialBytes > this.pos) {
        info.initialBytes = this.preCopyInitialBytes - this.pos;
      } else {
        info.dirtyBytes = this.maxPos - this.pos;
        if (info.dirtyBytes === 0) endOfData = true;
        info.dirtyBytes += incLength;
      }
      if (!endOfData || incLength === 0) return info;
      // We finished transferring the current state and the device has dirty state: save it now.
      // main.c mlx5vf_precopy_ioctl: a failed buffer allocation or SAVE marks the file in error
      // (mlx5vf_mark_err), so the next read() gets -ENODEV and the migration fails, instead of
      // the stream silently missing the increment.
      const buf = mlx5vfGetDataBuffer(mvdev.bufCtx, this.availList, Math.ceil(incLength / PAGE_SIZE), DMA_FROM_DEVICE);
      if (typeof buf === 'number') {
        this.state = Mlx5VfMigfState.ERROR;
        return buf;
      }
      const ret = mvdev.cmdSaveVhcaState(this, buf, true, true);
      if (ret !== 0) {
        this.state = Mlx5VfMigfState.ERROR;
        mlx5vfPutDataBuffer(this.availList, buf);
        return ret;
      }
      return info;
    } finally {
      mvdev.stateMutexUnlock();
    }
  }

  // ---- resuming side ----

  /**
   * `mlx5vf_resume_write`: parse the stream records (header, optional STOP_COPY_SIZE data, image)
   * and LOAD each image. Bytes consumed, or -errno (the file is then in ERROR); -EBADF on the
   * (read-only) save file.
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
      this.#mvdev.fw.markBroken();
      return ret;
    }
    this.#mvdev.stats.bytesWritten += ret;
    this.#mvdev.machine.clock.charge(Math.ceil(ret / 8));
    return ret;
  }

  #resumeWrite(src: Uint8Array, off: number, len: number): number {
    let p = off;
    const end = off + len;
    const mvdev = this.#mvdev;
    while (p < end || this.loadState === Mlx5VfLoadState.LOAD_IMAGE || this.loadState === Mlx5VfLoadState.PREP_IMAGE || this.loadState === Mlx5VfLoadState.PREP_HEADER_DATA) {
      switch (this.loadState) {
        case Mlx5VfLoadState.READ_HEADER: {
          // mlx5vf_resume_read_header
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
              const b = mlx5vfAllocDataBuffer(mvdev.bufCtx, Math.ceil(this.stopCopyPrepSize / PAGE_SIZE), DMA_TO_DEVICE);
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
            if (b !== null) mlx5vfFreeDataBuffer(mvdev.bufCtx, b);
            this.buf[0] = null;
            const nb = mlx5vfAllocDataBuffer(mvdev.bufCtx, npages, DMA_TO_DEVICE);
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
          // mlx5vf_resume_read_image
          const b = this.#imageBuf;
          if (b === null) return -Errno.EINVAL;
          const n = Math.min(this.recordSize - b.length, end - p);
          b.copyIn(mvdev.machine, b.length, src, p, n);
          b.length += n;
          p += n;
          if (b.length === this.recordSize) this.loadState = Mlx5VfLoadState.LOAD_IMAGE;
          break;
        }
        case Mlx5VfLoadState.LOAD_IMAGE: {
          const b = this.#imageBuf;
          if (b === null) return -Errno.EINVAL;
          const ret = mvdev.cmdLoadVhcaState(b);
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

  /**
   * `mlx5vf_release_file` (close): wait for the SAVE in flight, disable the file, free every buffer
   * it holds and detach it from the device.
   */
  release(): void {
    if (this.disabled) return;
    const mvdev = this.#mvdev;
    mvdev.waitEvent(() => !this.saveInFlight, this);
    this.disabled = true;
    this.state = Mlx5VfMigfState.ERROR;
    this.freeResources(mvdev.bufCtx);
    if (mvdev.savingMigf === this) mvdev.savingMigf = null;
    if (mvdev.resumingMigf === this) mvdev.resumingMigf = null;
  }

  /**
   * `mlx5vf_disable_fd` + `mlx5fv_cmd_clean_migf_resources` (from mlx5vf_disable_fds): wait for the
   * SAVE in flight, mark the file in error, rewind `f_pos`, drop pending work, free the buffers.
   */
  disable(): void {
    this.#mvdev.waitEvent(() => !this.saveInFlight, this);
    this.disabled = true;
    this.state = Mlx5VfMigfState.ERROR;
    this.saveWork = null;
    this.pos = 0;
    this.freeResources(this.#mvdev.bufCtx);
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

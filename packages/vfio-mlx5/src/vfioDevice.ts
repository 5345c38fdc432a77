// kernel: drivers/vfio/vfio_main.c (vfio_ioctl_device_feature_migration,
// vfio_ioctl_device_feature_mig_device_state, vfio_ioctl_device_feature_logging_start/stop/report),
// include/linux/vfio.h (struct vfio_migration_ops, struct vfio_log_ops), include/uapi/linux/vfio.h
import { Errno, PAGE_SIZE, isAligned, isPowerOfTwo } from '@dmakit/dma-core';
import { IovaBitmap } from './iovaBitmap.js';
import type { VfioIovaRange } from './iovaBitmap.js';
import { VFIO_MIGRATION_STOP_COPY, isVfioDeviceMigState } from './migState.js';
import type { VfioDeviceMigState } from './migState.js';

/** `struct vfio_precopy_info` (VFIO_MIG_GET_PRECOPY_INFO). */
export interface VfioPrecopyInfo {
  initialBytes: number;
  dirtyBytes: number;
}

/**
 * The migration data fd returned by a transition into STOP_COPY, PRE_COPY or RESUMING. `read`
 * (saving side) and `write` (resuming side) return bytes or a negative errno: -ENOMSG is the
 * temporary end of pre-copy data, 0 from `read` is the end of the stream.
 */
export interface VfioMigFile {
  /** read() on the migration data fd: bytes copied into out, or -errno. */
  read(out: Uint8Array, off?: number, len?: number): number;
  /** write() on the migration data fd: bytes consumed from src, or -errno. */
  write(src: Uint8Array, off?: number, len?: number): number;
  /** `ioctl(fd, VFIO_MIG_GET_PRECOPY_INFO)`. */
  precopyInfo(): VfioPrecopyInfo | number;
  /** The file position (`f_pos`). */
  readonly pos: number;
  /** close(): the driver's release. */
  release(): void;
}

/** `struct vfio_migration_ops`. */
export interface VfioMigrationOps {
  /** Drive the device to `newState`; the data fd if the final arc opened one, null, or -errno. */
  migrationSetState(newState: VfioDeviceMigState): VfioMigFile | null | number;
  /** `migration_get_state`: the device's current migration state. */
  migrationGetState(): VfioDeviceMigState;
  /** `migration_get_data_size`: estimated STOP_COPY bytes, or -errno. */
  migrationGetDataSize(): number;
}

/** `struct vfio_log_ops`. */
export interface VfioLogOps {
  /** Returns the page size the device will track at (> 0) or -errno. */
  logStart(ranges: readonly VfioIovaRange[], pageSize: number): number;
  /** `log_stop`: stop device dirty tracking; 0 or -errno. */
  logStop(): number;
  /**
   * `log_read_and_clear`: set the dirty pages of [iova, iova + length) in dirty and clear them on the
   * device; 0 or -errno.
   */
  logReadAndClear(iova: number, length: number, dirty: IovaBitmap): number;
}

/** `ENOTTY` (25, include/uapi/asm-generic/errno-base.h; not in dma-core's Errno list): the ioctl/feature is not supported. */
export const ENOTTY = 25;

/** `LOG_MAX_RANGES` of vfio_main.c. */
export const VFIO_LOG_MAX_RANGES = 256;

/**
 * One DMA-logging report request: IOVA range and page size. kernel: struct
 * vfio_device_feature_dma_logging_report in include/uapi/linux/vfio.h.
 */
export interface VfioDmaLoggingReport {
  iova: number;
  length: number;
  pageSize: number;
}

/**
 * `struct vfio_device` with its migration and DMA-logging features, the ioctl surface the VMM uses.
 */
export class VfioDevice {
  readonly name: string;
  /** `device->migration_flags`. */
  readonly migrationFlags: number;
  readonly migOps: VfioMigrationOps | null;
  readonly logOps: VfioLogOps | null;
  /** `vfio_device_ops.close_device`, run when the device fd is closed. */
  readonly #closeDevice: (() => void) | null;
  #closed = false;

  constructor(name: string, migrationFlags: number, migOps: VfioMigrationOps | null, logOps: VfioLogOps | null, closeDevice: (() => void) | null = null) {
    // vfio_register_group_dev: migration needs STOP_COPY and ops.
    if (migOps !== null && (migrationFlags & VFIO_MIGRATION_STOP_COPY) === 0) throw new RangeError('VfioDevice: migration requires VFIO_MIGRATION_STOP_COPY');
    this.name = name;
    this.migrationFlags = migrationFlags;
    this.migOps = migOps;
    this.logOps = logOps;
    this.#closeDevice = closeDevice;
  }

  /** True once the device fd was closed ({@link VfioDevice.close}). */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * close() of the device fd (kernel: vfio_device_fops_release -> vfio_df_close ->
   * device->ops->close_device, drivers/vfio/vfio_main.c). A second close does nothing; every ioctl
   * after it returns -EBADF.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeDevice?.();
  }

  /** `VFIO_DEVICE_FEATURE_MIGRATION` (GET): the flags, or -ENOTTY without migration support. */
  featureMigration(): { flags: number } | number {
    if (this.#closed) return -Errno.EBADF;
    if (this.migOps === null) return -ENOTTY;
    return { flags: this.migrationFlags };
  }

  /** `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` (GET). */
  getMigDeviceState(): number {
    if (this.#closed) return -Errno.EBADF;
    if (this.migOps === null) return -ENOTTY;
    return this.migOps.migrationGetState();
  }

  /**
   * `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` (SET): `ret` 0 or -errno, and the data fd when the
   * new state has one (STOP_COPY, PRE_COPY, RESUMING reached from a state without one).
   */
  setMigDeviceState(newState: number): { ret: number; dataFd: VfioMigFile | null } {
    if (this.#closed) return { ret: -Errno.EBADF, dataFd: null };
    if (this.migOps === null) return { ret: -ENOTTY, dataFd: null };
    if (!isVfioDeviceMigState(newState)) return { ret: -Errno.EINVAL, dataFd: null };
    const r = this.migOps.migrationSetState(newState);
    if (typeof r === 'number') return { ret: r, dataFd: null };
    return { ret: 0, dataFd: r };
  }

  /** `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`: `stop_copy_length`. */
  migDataSize(): number {
    if (this.#closed) return -Errno.EBADF;
    if (this.migOps === null) return -ENOTTY;
    return this.migOps.migrationGetDataSize();
  }

  /**
   * `VFIO_DEVICE_FEATURE_DMA_LOGGING_START`: validate the ranges (non-empty, at most
   * LOG_MAX_RANGES, aligned to the page size, no overflow, no overlap), then the driver's
   * log_start. Returns the page size the device tracks at, or -errno.
   */
  dmaLoggingStart(ranges: readonly VfioIovaRange[], pageSize: number): number {
    if (this.#closed) return -Errno.EBADF;
    if (this.logOps === null) return -ENOTTY;
    if (!(ranges as unknown instanceof Array) || ranges.length === 0) return -Errno.EINVAL;
    if (ranges.length > VFIO_LOG_MAX_RANGES) return -Errno.E2BIG;
    if (!isPowerOfTwo(pageSize)) return -Errno.EINVAL;
    const sorted = [...ranges].sort((a, b) => a.iova - b.iova);
    let prevEnd = -1;
    for (const r of sorted) {
      if (!Number.isSafeInteger(r.iova) || !Number.isSafeInteger(r.length) || r.iova < 0 || r.length <= 0) return -Errno.EINVAL;
      if (!isAligned(r.iova, pageSize) || !isAligned(r.length, pageSize)) return -Errno.EINVAL;
      if (!Number.isSafeInteger(r.iova + r.length)) return -Errno.EOVERFLOW;
      if (r.iova < prevEnd) return -Errno.EINVAL; // interval tree: overlapping ranges
      prevEnd = r.iova + r.length;
    }
    return this.logOps.logStart(sorted, pageSize);
  }

  /** `VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP`. */
  dmaLoggingStop(): number {
    if (this.#closed) return -Errno.EBADF;
    if (this.logOps === null) return -ENOTTY;
    return this.logOps.logStop();
  }

  /**
   * `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT`: read and clear the device's dirty pages of
   * `[iova, iova+length)` into a bitmap at `pageSize` granularity. The bitmap or -errno.
   */
  dmaLoggingReport(report: VfioDmaLoggingReport): IovaBitmap | number {
    if (this.#closed) return -Errno.EBADF;
    if (this.logOps === null) return -ENOTTY;
    const { iova, length, pageSize } = report;
    if (!Number.isSafeInteger(iova) || !Number.isSafeInteger(length) || iova < 0 || length <= 0) return -Errno.EINVAL;
    if (pageSize < PAGE_SIZE || !isPowerOfTwo(pageSize)) return -Errno.EINVAL;
    if (!Number.isSafeInteger(iova + length)) return -Errno.EOVERFLOW;
    const bm = new IovaBitmap(iova, length, pageSize);
    const ret = this.logOps.logReadAndClear(iova, length, bm);
    return ret < 0 ? ret : bm;
  }
}

// kernel: drivers/vfio/pci/mlx5/cmd.h (enum mlx5_vf_migf_state, enum mlx5_vf_load_state,
// MAX_NUM_CHUNKS, MAX_LOAD_SIZE) — the definitions the migration file (mlx5MigFile.ts), the device
// commands (mlx5Cmd.ts) and the driver's state machine (mlx5Main.ts) share. The record header
// part of cmd.h lives in stream.ts, the data buffers in dataBuffer.ts.
import type { Device, Machine } from '@dmakit/dma-core';
import type { Mlx5SimFunction } from './mlx5Function.js';

/** `enum mlx5_vf_migf_state` (0 = idle/none). */
export const Mlx5VfMigfState = {
  NONE: 0,
  ERROR: 1,
  PRE_COPY_ERROR: 2,
  PRE_COPY: 3,
  SAVE_STOP_COPY_CHUNK: 4,
  COMPLETE: 5,
} as const;
/** One of the `Mlx5VfMigfState` values. */
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
/** One of the `Mlx5VfLoadState` values. */
export type Mlx5VfLoadState = (typeof Mlx5VfLoadState)[keyof typeof Mlx5VfLoadState];

/** `MAX_NUM_CHUNKS`. */
export const MLX5VF_MAX_NUM_CHUNKS = 2;
/** `MAX_LOAD_SIZE` = BIT_ULL(__mlx5_bit_sz(load_vhca_state_in, size)) - 1 (a 32-bit size field). */
export const MLX5VF_MAX_LOAD_SIZE = 2 ** 32 - 1;
/** Receive WQEs of the tracker's host QP. */
export const MLX5VF_TRACKER_RECV_WRS = 4;

/** `ENOMSG`: no more pre-copy data for now (not in dma-core's Errno list). */
export const ENOMSG = 42;
/** `ENOTCONN`: the mlx5 core device is detached. */
export const ENOTCONN = 107;

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

// kernel: include/linux/mlx5/mlx5_ifc.h (the command layouts and capability fields the mlx5 VFIO
// driver uses: SUSPEND_VHCA / RESUME_VHCA op_mods, command status, CREATE_MKEY input, the
// migration and page-tracker HCA caps) as the simulated function (mlx5Function.ts) receives them.
import type { VfioIovaRange } from './iovaBitmap.js';

/**
 * SUSPEND_VHCA op_mod: suspend the initiator side. kernel: MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR
 * in include/linux/mlx5/mlx5_ifc.h.
 */
export const MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR = 0;
/**
 * SUSPEND_VHCA op_mod: suspend the responder side. kernel: MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER
 * in include/linux/mlx5/mlx5_ifc.h.
 */
export const MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER = 1;
/**
 * RESUME_VHCA op_mod: resume the responder side. kernel: MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER in
 * include/linux/mlx5/mlx5_ifc.h.
 */
export const MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER = 0;
/**
 * RESUME_VHCA op_mod: resume the initiator side. kernel: MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR in
 * include/linux/mlx5/mlx5_ifc.h.
 */
export const MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR = 1;
/** Command status the driver maps to PRE_COPY_ERROR (`MLX5_CMD_STAT_BAD_RES_STATE_ERR`). */
export const MLX5_CMD_STAT_BAD_RES_STATE_ERR = 0x9;
/** `MLX5_ST_SZ_BYTES(create_mkey_in)`: the CREATE_MKEY input before its MTT array. */
export const MLX5_CREATE_MKEY_IN_BYTES = 272;

/**
 * Migration capabilities of the simulated function: migratable, pre-copy, chunk mode, dirty-tracker
 * limits (kernel: the mlx5_ifc HCA capability fields the driver reads).
 */
export interface Mlx5FunctionCaps {
  /** `migratable`. */
  migration: boolean;
  /** `migration_tracking_state` (pre-copy with incremental saves). */
  preCopy: boolean;
  /** `migration_in_chunks`: the final image is saved in chunks bounded by `chunkBytes`. */
  chunkMode: boolean;
  chunkBytes: number;
  /** Device dirty tracker capabilities. */
  pgTrackMaxNumRange: number;
  pgTrackLogMinPageSize: number;
  pgTrackLogMaxPageSize: number;
  pgTrackLogMinMsgSize: number;
  pgTrackLogMaxMsgSize: number;
  pgTrackLogMinAddrSpace: number;
  pgTrackLogMaxAddrSpace: number;
}

/** Capabilities the simulated function has unless overridden: migratable with pre-copy and chunk mode. */
export const MLX5_DEFAULT_CAPS: Mlx5FunctionCaps = {
  migration: true,
  preCopy: true,
  chunkMode: true,
  chunkBytes: 64 * 1024,
  pgTrackMaxNumRange: 4,
  pgTrackLogMinPageSize: 12,
  pgTrackLogMaxPageSize: 21,
  pgTrackLogMinMsgSize: 8,
  pgTrackLogMaxMsgSize: 12,
  pgTrackLogMinAddrSpace: 12,
  pgTrackLogMaxAddrSpace: 48,
};

/**
 * A SAVE_VHCA_STATE command as the simulated firmware receives it: buffer mkey, size, incremental,
 * set-track.
 */
export interface Mlx5SaveCommand {
  mkey: number;
  size: number;
  incremental: boolean;
  setTrack: boolean;
}

/** Completion of SAVE_VHCA_STATE: status 0 or a command status, the image bytes written, next chunk size. */
export type Mlx5SaveCompletion = (status: number, imageSize: number, nextRequiredUmemSize: number) => void;

/**
 * Page-tracker object creation as the simulated firmware receives it: ranges, page and message sizes,
 * receive buffer.
 */
export interface Mlx5PageTrackerCreate {
  ranges: readonly VfioIovaRange[];
  logPageSize: number;
  logMsgSize: number;
  /** Receive buffer mkey and its size in pages. */
  recvMkey: number;
  recvNpages: number;
}

/** @internal A memory key of the simulated firmware: the MTT array read out of CREATE_MKEY's input. */
export interface Mlx5SimMkey {
  readonly mtt: Float64Array;
  readonly npages: number;
}

/**
 * @dmakit/vfio-mlx5: the VFIO migration uAPI v2 (state machine, data fd, pre-copy info, DMA
 * logging) and the mlx5 variant driver: page-array migration buffers registered through the
 * two-step IOVA API (or the legacy scatterlist path), SAVE/LOAD_VHCA_STATE with chunk mode, the
 * device dirty page tracker; plus a simulated mlx5 function and its firmware, and the guest side
 * of a migrating VM (guest RAM behind the unmanaged domain, vCPUs with the KVM dirty log) with the
 * VMM helpers that move the data fd's stream and sync dirty pages.
 * Kernel counterpart: drivers/vfio/vfio_main.c, include/uapi/linux/vfio.h, drivers/vfio/pci/mlx5/.
 */
export {
  VfioDeviceMigState,
  VFIO_DEVICE_NUM_STATES,
  VFIO_MIGRATION_STOP_COPY,
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  vfioMigStateName,
  isVfioDeviceMigState,
  vfioMigStateSupported,
  vfioMigGetNextState,
  vfioMigLegalArcs,
  vfioMigArcIsLegal,
  vfioMigPath,
} from './migState.js';
export { IovaBitmap, vfioCombineIovaRanges, type VfioIovaRange } from './iovaBitmap.js';
export {
  VfioDevice,
  ENOTTY,
  VFIO_LOG_MAX_RANGES,
  type VfioMigFile,
  type VfioPrecopyInfo,
  type VfioMigrationOps,
  type VfioLogOps,
  type VfioDmaLoggingReport,
} from './vfioDevice.js';
export {
  MLX5_MIGF_HEADER_BYTES,
  MLX5_MIGF_HEADER_FLAGS_TAG_MANDATORY,
  MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL,
  MLX5_MIGF_HEADER_TAG_FW_DATA,
  MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE,
  MLX5_MIGF_STOP_COPY_SIZE_BYTES,
  MLX5_SIM_IMAGE_MAGIC,
  MLX5_SIM_IMAGE_VERSION,
  MLX5_SIM_IMAGE_HEADER_BYTES,
  readMigrationHeader,
  writeMigrationHeader,
  type Mlx5MigrationHeader,
} from './stream.js';
export {
  MLX5_DEFAULT_CAPS,
  MLX5_CMD_STAT_BAD_RES_STATE_ERR,
  MLX5_CREATE_MKEY_IN_BYTES,
  MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR,
  MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER,
  MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR,
  MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER,
  type Mlx5FunctionCaps,
  type Mlx5SaveCommand,
  type Mlx5PageTrackerCreate,
  type Mlx5SaveCompletion,
} from './mlx5Ifc.js';
export { MLX5_SIM_STATE_BLOCK } from './mlx5SimImage.js';
export { Mlx5SimFunction, MLX5_FAULT_SAVE, type Mlx5SimFunctionOptions, type Mlx5SimFunctionStats } from './mlx5Function.js';
export {
  Mlx5VhcaDataBuffer,
  registerDmaPages,
  unregisterDmaPages,
  mlx5vfDmaDataBuffer,
  mlx5vfAllocDataBuffer,
  mlx5vfFreeDataBuffer,
  mlx5vfGetDataBuffer,
  mlx5vfPutDataBuffer,
  newBufferStats,
  type Mlx5BufferCtx,
  type Mlx5BufferStats,
} from './dataBuffer.js';
export {
  Mlx5VfMigfState,
  Mlx5VfLoadState,
  MLX5VF_MAX_NUM_CHUNKS,
  MLX5VF_MAX_LOAD_SIZE,
  MLX5VF_TRACKER_RECV_WRS,
  ENOMSG,
  ENOTCONN,
  type Mlx5VfPciOptions,
  type Mlx5VfStats,
} from './mlx5Defs.js';
export { Mlx5VfMigrationFile, type Mlx5VfMigfDevice } from './mlx5MigFile.js';
export {
  mlx5vfCmdSuspendVhca,
  mlx5vfCmdResumeVhca,
  mlx5vfCmdQueryVhcaMigrationState,
  mlx5vfCmdSaveVhcaState,
  mlx5vfCmdLoadVhcaState,
  mlx5vfStartPageTracker,
  mlx5vfStopPageTracker,
  mlx5vfFreePageTrackerResources,
  mlx5vfTrackerReadAndClear,
  type Mlx5VfCmdDevice,
  type Mlx5VhcaPageTracker,
  type Mlx5VhcaRecvBuf,
} from './mlx5Cmd.js';
export { Mlx5VfPciCoreDevice, mlx5vfBufferDirection } from './mlx5Main.js';
export {
  GuestMemory,
  KvmGuest,
  createGuestMemory,
  destroyGuestMemory,
  GUEST_RAM_BLOCK_BYTES,
  type KvmGuestOptions,
  type KvmGuestDevice,
} from './kvmGuest.js';
export { vfioMigReadAll, vfioMigWriteAll, vfioDeviceDirtySync, vfioVmmTeardown, VFIO_MIG_READ_MAX_CALLS, type VfioVmmTeardown } from './vmm.js';
export { mlx5GuestPostRxRings, type Mlx5GuestRingsOptions } from './mlx5Guest.js';

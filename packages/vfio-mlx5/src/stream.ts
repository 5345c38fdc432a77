// kernel: drivers/vfio/pci/mlx5/cmd.h (struct mlx5_vf_migration_header, MLX5_MIGF_HEADER_*),
// drivers/vfio/pci/mlx5/main.c (mlx5vf_add_stop_copy_header, mlx5vf_resume_read_header)

/** `struct mlx5_vf_migration_header`: le64 record_size, le32 flags, le32 tag. */
export const MLX5_MIGF_HEADER_BYTES = 16;
/**
 * Header flag: the record must be understood by the target. kernel: MLX5_MIGF_HEADER_FLAGS_TAG_MANDATORY
 * in drivers/vfio/pci/mlx5/cmd.h.
 */
export const MLX5_MIGF_HEADER_FLAGS_TAG_MANDATORY = 0;
/**
 * Header flag: the target may skip the record. kernel: MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL in
 * drivers/vfio/pci/mlx5/cmd.h.
 */
export const MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL = 1 << 0;
/** Header tag: firmware state data. kernel: MLX5_MIGF_HEADER_TAG_FW_DATA in drivers/vfio/pci/mlx5/cmd.h. */
export const MLX5_MIGF_HEADER_TAG_FW_DATA = 0;
/**
 * Header tag: stop-copy size record. kernel: MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE in
 * drivers/vfio/pci/mlx5/cmd.h.
 */
export const MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE = 1 << 0;
/** Payload of a STOP_COPY_SIZE record: le64 stop_copy_size. */
export const MLX5_MIGF_STOP_COPY_SIZE_BYTES = 8;

/**
 * Fields of a migration stream record header. kernel: struct mlx5_vf_migration_header in
 * drivers/vfio/pci/mlx5/cmd.h.
 */
export interface Mlx5MigrationHeader {
  recordSize: number;
  flags: number;
  tag: number;
}

/**
 * Writes a record header (le64 record_size, le32 flags, le32 tag) at out[off]. kernel: the header
 * mlx5vf_add_stop_copy_header() and the save path write.
 */
export function writeMigrationHeader(out: Uint8Array, off: number, h: Mlx5MigrationHeader): void {
  const dv = new DataView(out.buffer, out.byteOffset + off, MLX5_MIGF_HEADER_BYTES);
  dv.setBigUint64(0, BigInt(h.recordSize), true);
  dv.setUint32(8, h.flags >>> 0, true);
  dv.setUint32(12, h.tag >>> 0, true);
}

/** Reads a record header at bytes[off]. kernel: mlx5vf_resume_read_header(). */
export function readMigrationHeader(bytes: Uint8Array, off = 0): Mlx5MigrationHeader {
  const dv = new DataView(bytes.buffer, bytes.byteOffset + off, MLX5_MIGF_HEADER_BYTES);
  const size = dv.getBigUint64(0, true);
  return {
    recordSize: size > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(size),
    flags: dv.getUint32(8, true),
    tag: dv.getUint32(12, true),
  };
}

// ---- the simulated function's state image (opaque to the driver, versioned) ----

/** Magic of the simulated function's state image ("MLX5" little-endian). */
export const MLX5_SIM_IMAGE_MAGIC = 0x3558_4c4d;
/** Version of the simulated function's state image (dmakit's format, opaque to the driver). */
export const MLX5_SIM_IMAGE_VERSION = 1;
/** Bytes of the simulated function's state image header (dmakit's format). */
export const MLX5_SIM_IMAGE_HEADER_BYTES = 32;
export const MLX5_SIM_IMAGE_FULL = 1;
export const MLX5_SIM_IMAGE_INC = 2;

/** FNV-1a 32-bit over `bytes[off, off+len)`. */
export function fnv1a(bytes: Uint8Array, off = 0, len = bytes.length - off): number {
  let h = 0x811c_9dc5;
  for (let i = off; i < off + len; i++) {
    h ^= bytes[i] ?? 0;
    h = Math.imul(h, 0x0100_0193) >>> 0;
  }
  return h >>> 0;
}

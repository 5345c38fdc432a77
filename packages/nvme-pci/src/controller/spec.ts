// NVMe command set constants: opcodes, queue entry layouts, status codes, SGL descriptor types.
// kernel: include/linux/nvme.h (enum nvme_opcode, nvme_admin_opcode, NVME_SC_*, struct nvme_sgl_desc)
// QEMU: include/block/nvme.h; NVM Express Base Specification 1.4 sections 4.2-4.6 and 5.

/** Submission queue entry size in bytes (CC.IOSQES = 6). */
export const NVME_SQE_SIZE = 64;
/** Completion queue entry size in bytes (CC.IOCQES = 4). */
export const NVME_CQE_SIZE = 16;
/** log2 of the submission queue entry size (CC.IOSQES). kernel: NVME_NVM_IOSQES in include/linux/nvme.h. */
export const NVME_SQES_LOG2 = 6;
/** log2 of the completion queue entry size (CC.IOCQES). kernel: NVME_NVM_IOCQES in include/linux/nvme.h. */
export const NVME_CQES_LOG2 = 4;

/** Byte offsets in a submission queue entry (`struct nvme_common_command`). */
export const SQE = {
  /** CDW0 byte 0: opcode. */
  OPC: 0,
  /** CDW0 byte 1: FUSE bits 1:0, PSDT bits 7:6. */
  FLAGS: 1,
  /** CDW0 bytes 2-3: command identifier. */
  CID: 2,
  NSID: 4,
  CDW2: 8,
  CDW3: 12,
  /** Metadata pointer (64-bit). */
  MPTR: 16,
  /** Data pointer: PRP1 (64-bit) then PRP2 (64-bit), or one 16-byte SGL descriptor (SGL1). */
  DPTR: 24,
  PRP1: 24,
  PRP2: 32,
  CDW10: 40,
  CDW11: 44,
  CDW12: 48,
  CDW13: 52,
  CDW14: 56,
  CDW15: 60,
} as const;

/** CDW0.PSDT: PRP or SGL for Data Transfer (`NVME_CMD_SGL_*` in the kernel, shifted to bits 15:14). */
export const NVME_PSDT_PRP = 0;
/**
 * PSDT 01b: SGL for data, metadata pointer to a contiguous buffer (the kernel's NVME_CMD_SGL_METABUF,
 * shifted).
 */
export const NVME_PSDT_SGL_MPTR_CONTIG = 1;
/**
 * PSDT 10b: SGL for data, metadata pointer to an SGL segment (the kernel's NVME_CMD_SGL_METASEG,
 * shifted).
 */
export const NVME_PSDT_SGL_MPTR_SGL = 2;

/** Byte offsets in a completion queue entry (`struct nvme_completion`). */
export const CQE = {
  /** Command-specific result (DW0). */
  RESULT: 0,
  /** SQ Head Pointer (16 bits). */
  SQHD: 8,
  /** SQ Identifier (16 bits). */
  SQID: 10,
  CID: 12,
  /** Phase tag (bit 0) and status field (bits 15:1): `le16_to_cpu(cqe->status) >> 1` is the status. */
  STATUS: 14,
} as const;

/** Admin command opcodes (`enum nvme_admin_opcode`). */
export const NvmeAdminOpcode = {
  DELETE_SQ: 0x00,
  CREATE_SQ: 0x01,
  GET_LOG_PAGE: 0x02,
  DELETE_CQ: 0x04,
  CREATE_CQ: 0x05,
  IDENTIFY: 0x06,
  ABORT_CMD: 0x08,
  SET_FEATURES: 0x09,
  GET_FEATURES: 0x0a,
  ASYNC_EVENT: 0x0c,
} as const;
export type NvmeAdminOpcode = (typeof NvmeAdminOpcode)[keyof typeof NvmeAdminOpcode];

/** NVM command set I/O opcodes (`enum nvme_opcode`). */
export const NvmeOpcode = {
  FLUSH: 0x00,
  WRITE: 0x01,
  READ: 0x02,
  WRITE_ZEROES: 0x08,
  DSM: 0x09,
} as const;
export type NvmeOpcode = (typeof NvmeOpcode)[keyof typeof NvmeOpcode];

/** Identify CNS values (`enum nvme_identify_cns`, kernel NVME_ID_CNS_*). */
export const NvmeIdCns = {
  NS: 0x00,
  CTRL: 0x01,
  NS_ACTIVE_LIST: 0x02,
  NS_DESC_LIST: 0x03,
} as const;

/** Feature identifiers (kernel NVME_FEAT_*). */
export const NvmeFeat = {
  ARBITRATION: 0x01,
  POWER_MGMT: 0x02,
  TEMP_THRESH: 0x04,
  VOLATILE_WC: 0x06,
  NUM_QUEUES: 0x07,
  IRQ_COALESCE: 0x08,
  IRQ_CONFIG: 0x09,
  ASYNC_EVENT: 0x0b,
} as const;

/** Create I/O SQ/CQ CDW11 flags (`NVME_QUEUE_PHYS_CONTIG`, `NVME_CQ_IRQ_ENABLED`). */
export const NVME_QUEUE_PHYS_CONTIG = 1 << 0;
/** Create I/O CQ CDW11: interrupts enabled. kernel: NVME_CQ_IRQ_ENABLED in include/linux/nvme.h. */
export const NVME_CQ_IRQ_ENABLED = 1 << 1;

/** Dataset Management CDW11 attribute: deallocate (`NVME_DSMGMT_AD`). */
export const NVME_DSMGMT_AD = 1 << 2;
/** One DSM range (`struct nvme_dsm_range`): cattr u32, nlb u32, slba u64. */
export const NVME_DSM_RANGE_SIZE = 16;

/** The broadcast namespace id (`NVME_NSID_ALL`). */
export const NVME_NSID_ALL = 0xffffffff;
/** Identify data structures are 4 KiB (`NVME_IDENTIFY_DATA_SIZE`). */
export const NVME_IDENTIFY_DATA_SIZE = 4096;

/** SGL descriptor types, high nibble of byte 15 (`enum nvme_sgl_desc_type` / NVME_SGL_FMT_*). */
export const NvmeSglType = {
  DATA_BLOCK: 0x0,
  BIT_BUCKET: 0x1,
  SEGMENT: 0x2,
  LAST_SEGMENT: 0x3,
  KEYED_DATA_BLOCK: 0x4,
  TRANSPORT_DATA_BLOCK: 0x5,
} as const;
/** SGL descriptor subtype "Address" (low nibble of byte 15), the only one valid over PCIe. */
export const NVME_SGL_FMT_ADDRESS = 0x0;
/** Bytes per SGL descriptor (sizeof(struct nvme_sgl_desc) in include/linux/nvme.h). */
export const NVME_SGL_DESC_SIZE = 16;

/** Identify Controller SGLS: SGLs supported, no alignment requirement, bit bucket supported. */
export const NVME_CTRL_SGLS_SUPPORTED = 1 << 0;
/** Identify Controller SGLS bit 16: SGL Bit Bucket descriptors supported (NVMe Base Specification). */
export const NVME_CTRL_SGLS_BITBUCKET = 1 << 16;

/**
 * Completion status as the kernel keeps it: `(SCT << 8) | SC`, plus the More (0x2000) and Do Not
 * Retry (0x4000) bits; the CQE holds `status << 1 | phase` (kernel: include/linux/nvme.h NVME_SC_*).
 */
export const NvmeStatus = {
  // Generic command status (SCT 0)
  SUCCESS: 0x0,
  INVALID_OPCODE: 0x1,
  INVALID_FIELD: 0x2,
  CMDID_CONFLICT: 0x3,
  DATA_XFER_ERROR: 0x4,
  POWER_LOSS: 0x5,
  INTERNAL: 0x6,
  ABORT_REQ: 0x7,
  ABORT_QUEUE: 0x8,
  FUSED_FAIL: 0x9,
  FUSED_MISSING: 0xa,
  INVALID_NS: 0xb,
  CMD_SEQ_ERROR: 0xc,
  SGL_INVALID_LAST: 0xd,
  SGL_INVALID_COUNT: 0xe,
  SGL_INVALID_DATA: 0xf,
  SGL_INVALID_METADATA: 0x10,
  SGL_INVALID_TYPE: 0x11,
  CMB_INVALID_USE: 0x12,
  PRP_INVALID_OFFSET: 0x13,
  LBA_RANGE: 0x80,
  CAP_EXCEEDED: 0x81,
  NS_NOT_READY: 0x82,
  // Command specific status (SCT 1)
  CQ_INVALID: 0x100,
  QID_INVALID: 0x101,
  QUEUE_SIZE: 0x102,
  ABORT_LIMIT: 0x103,
  ASYNC_LIMIT: 0x105,
  INVALID_VECTOR: 0x108,
  INVALID_QUEUE: 0x10c,
  FID_NOT_SAVEABLE: 0x10d,
  // Status field flags
  MORE: 0x2000,
  DNR: 0x4000,
} as const;

/** The status without the More / Do Not Retry / CRD bits: `(SCT << 8) | SC`. */
export function nvmeStatusCode(status: number): number {
  return status & 0x7ff;
}

/** Status Code Type of a status. */
export function nvmeStatusType(status: number): number {
  return (status >> 8) & 0x7;
}

const STATUS_NAMES = new Map<number, string>();
for (const [k, v] of Object.entries(NvmeStatus)) if (k !== 'MORE' && k !== 'DNR') STATUS_NAMES.set(v, k);

/** "INVALID_FIELD", "LBA_RANGE", ... (or the hex value), with "|DNR" when Do Not Retry is set. */
export function nvmeStatusName(status: number): string {
  const code = nvmeStatusCode(status);
  const name = STATUS_NAMES.get(code) ?? `0x${code.toString(16)}`;
  return (status & NvmeStatus.DNR) !== 0 ? `${name}|DNR` : name;
}

/** Read a little-endian 64-bit field as a number (exact below 2^53; larger values fault on DMA). */
export function readLe64(dv: DataView, off: number): number {
  return dv.getUint32(off + 4, true) * 0x1_0000_0000 + dv.getUint32(off, true);
}

/** Write a number as a little-endian 64-bit field. */
export function writeLe64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, v >>> 0, true);
  dv.setUint32(off + 4, Math.floor(v / 0x1_0000_0000) >>> 0, true);
}

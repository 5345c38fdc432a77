// NVMe controller registers (NVM Express Base Specification, section 3.1 "Register Definition").
// kernel: include/linux/nvme.h (NVME_REG_*, NVME_CAP_*, NVME_CC_*, NVME_CSTS_*); QEMU: include/block/nvme.h

/** Register offsets in BAR0 (`enum nvme_regs` NVME_REG_*). */
export const NVME_REG_CAP = 0x00; // 64-bit Controller Capabilities
/** Version register. kernel: NVME_REG_VS in include/linux/nvme.h. */
export const NVME_REG_VS = 0x08; // Version
/** Interrupt Mask Set register. kernel: NVME_REG_INTMS in include/linux/nvme.h. */
export const NVME_REG_INTMS = 0x0c; // Interrupt Mask Set
/** Interrupt Mask Clear register. kernel: NVME_REG_INTMC in include/linux/nvme.h. */
export const NVME_REG_INTMC = 0x10; // Interrupt Mask Clear
/** Controller Configuration register. kernel: NVME_REG_CC in include/linux/nvme.h. */
export const NVME_REG_CC = 0x14; // Controller Configuration
/** Controller Status register. kernel: NVME_REG_CSTS in include/linux/nvme.h. */
export const NVME_REG_CSTS = 0x1c; // Controller Status
/** NVM Subsystem Reset register. kernel: NVME_REG_NSSR in include/linux/nvme.h. */
export const NVME_REG_NSSR = 0x20; // NVM Subsystem Reset
/** Admin Queue Attributes register. kernel: NVME_REG_AQA in include/linux/nvme.h. */
export const NVME_REG_AQA = 0x24; // Admin Queue Attributes
/** Admin Submission Queue base address (64-bit). kernel: NVME_REG_ASQ in include/linux/nvme.h. */
export const NVME_REG_ASQ = 0x28; // 64-bit Admin SQ Base Address
/** Admin Completion Queue base address (64-bit). kernel: NVME_REG_ACQ in include/linux/nvme.h. */
export const NVME_REG_ACQ = 0x30; // 64-bit Admin CQ Base Address
/** Controller Memory Buffer Location register. kernel: NVME_REG_CMBLOC in include/linux/nvme.h. */
export const NVME_REG_CMBLOC = 0x38; // Controller Memory Buffer Location
/** Controller Memory Buffer Size register. kernel: NVME_REG_CMBSZ in include/linux/nvme.h. */
export const NVME_REG_CMBSZ = 0x3c; // Controller Memory Buffer Size
/** First doorbell: SQ y tail at 0x1000 + (2y) * (4 << CAP.DSTRD), CQ y head at 0x1000 + (2y + 1) * (4 << CAP.DSTRD). */
export const NVME_REG_DBS = 0x1000;

/** A register bit field: `width` bits starting at bit `shift` (registers up to 64 bits, kept in numbers). */
export interface RegField {
  readonly shift: number;
  readonly width: number;
}

/** Read field `f` of a register value (works above bit 31, no bigint). */
export function regGet(value: number, f: RegField): number {
  if (f.shift + f.width <= 31) return (value >>> f.shift) & ((1 << f.width) - 1);
  return Math.floor(value / 2 ** f.shift) % 2 ** f.width;
}

/** Return `value` with field `f` replaced by `v` (v is truncated to the field width). */
export function regSet(value: number, f: RegField, v: number): number {
  const old = regGet(value, f);
  const nv = v % 2 ** f.width;
  return value + (nv - old) * 2 ** f.shift;
}

/** CAP, Controller Capabilities (64-bit, read-only). */
export const CAP = {
  /** Maximum Queue Entries Supported, 0's based. */
  MQES: { shift: 0, width: 16 },
  /** Contiguous Queues Required. */
  CQR: { shift: 16, width: 1 },
  /** Arbitration Mechanism Supported. */
  AMS: { shift: 17, width: 2 },
  /** Timeout: worst-case time to wait for CSTS.RDY to change, in 500 ms units. */
  TO: { shift: 24, width: 8 },
  /** Doorbell Stride: doorbells are (4 << DSTRD) bytes apart. */
  DSTRD: { shift: 32, width: 4 },
  /** NVM Subsystem Reset Supported. */
  NSSRS: { shift: 36, width: 1 },
  /** Command Sets Supported (bit 0: NVM command set). */
  CSS: { shift: 37, width: 8 },
  /** Memory Page Size Minimum: 2 ^ (12 + MPSMIN). */
  MPSMIN: { shift: 48, width: 4 },
  /** Memory Page Size Maximum: 2 ^ (12 + MPSMAX). */
  MPSMAX: { shift: 52, width: 4 },
} as const satisfies Record<string, RegField>;

/** CAP.CSS bit for the NVM command set (`NVME_CAP_CSS_NVM`). */
export const NVME_CAP_CSS_NVM = 1;

/** CC, Controller Configuration. */
export const CC = {
  /** Enable. */
  EN: { shift: 0, width: 1 },
  /** I/O Command Set Selected (0 = NVM). */
  CSS: { shift: 4, width: 3 },
  /** Memory Page Size: 2 ^ (12 + MPS). */
  MPS: { shift: 7, width: 4 },
  /** Arbitration Mechanism Selected (0 = round robin). */
  AMS: { shift: 11, width: 3 },
  /** Shutdown Notification: 01b normal, 10b abrupt. */
  SHN: { shift: 14, width: 2 },
  /** I/O Submission Queue Entry Size: 2 ^ IOSQES bytes (6 → 64). */
  IOSQES: { shift: 16, width: 4 },
  /** I/O Completion Queue Entry Size: 2 ^ IOCQES bytes (4 → 16). */
  IOCQES: { shift: 20, width: 4 },
} as const satisfies Record<string, RegField>;

/** Bits of CC the host may write (the rest is reserved and reads as zero). */
export const CC_WRITABLE_MASK = 0x00fffff1;
/** CC.SHN field value: no shutdown notification (the kernel's NVME_CC_SHN_NONE, unshifted). */
export const NVME_CC_SHN_NONE = 0;
/** CC.SHN field value: normal shutdown (the kernel's NVME_CC_SHN_NORMAL, unshifted). */
export const NVME_CC_SHN_NORMAL = 1;
/** CC.SHN field value: abrupt shutdown (the kernel's NVME_CC_SHN_ABRUPT, unshifted). */
export const NVME_CC_SHN_ABRUPT = 2;

/** CSTS, Controller Status (read-only to the host). */
export const CSTS = {
  /** Ready. */
  RDY: { shift: 0, width: 1 },
  /** Controller Fatal Status. */
  CFS: { shift: 1, width: 1 },
  /** Shutdown Status: 00b normal, 01b occurring, 10b complete. */
  SHST: { shift: 2, width: 2 },
  /** NVM Subsystem Reset Occurred. */
  NSSRO: { shift: 4, width: 1 },
  /** Processing Paused. */
  PP: { shift: 5, width: 1 },
} as const satisfies Record<string, RegField>;

/** CSTS.SHST field value: normal operation (the kernel's NVME_CSTS_SHST_NORMAL, unshifted). */
export const NVME_CSTS_SHST_NORMAL = 0;
/** CSTS.SHST field value: shutdown processing (the kernel's NVME_CSTS_SHST_OCCUR, unshifted). */
export const NVME_CSTS_SHST_OCCUR = 1;
/** CSTS.SHST field value: shutdown complete (the kernel's NVME_CSTS_SHST_CMPLT, unshifted). */
export const NVME_CSTS_SHST_CMPLT = 2;

/** AQA, Admin Queue Attributes (sizes are 0's based; at least 2 entries each). */
export const AQA = {
  /** Admin Submission Queue Size. */
  ASQS: { shift: 0, width: 12 },
  /** Admin Completion Queue Size. */
  ACQS: { shift: 16, width: 12 },
} as const satisfies Record<string, RegField>;

/** Version register value: major << 16 | minor << 8 | tertiary (`NVME_VS`). */
export function nvmeVs(major: number, minor: number, tertiary = 0): number {
  return ((major << 16) | (minor << 8) | tertiary) >>> 0;
}

/** Byte offset of the SQ tail (isCq false) or CQ head (isCq true) doorbell of queue `qid`. */
export function nvmeDoorbellOffset(qid: number, isCq: boolean, dstrd = 0): number {
  return NVME_REG_DBS + (2 * qid + (isCq ? 1 : 0)) * (4 << dstrd);
}

/** BAR0 size needed for the registers and the doorbells of `ioQueues` I/O queue pairs plus the admin pair (power of two, at least 16 KiB as QEMU's BAR). */
export function nvmeBarSize(ioQueues: number, dstrd = 0): number {
  const end = nvmeDoorbellOffset(ioQueues + 1, false, dstrd);
  let size = 0x4000;
  while (size < end) size *= 2;
  return size;
}

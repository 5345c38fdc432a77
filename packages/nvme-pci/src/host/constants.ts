// Host driver constants. kernel: drivers/nvme/host/pci.c [6.17], drivers/nvme/host/nvme.h
import { SZ_1M } from '@dmakit/dma-core';

/** Controller memory page, independent of the CPU page size (`NVME_CTRL_PAGE_SIZE`). */
export const NVME_CTRL_PAGE_SHIFT = 12;
/** Controller memory page size in bytes (4 KiB). kernel: NVME_CTRL_PAGE_SIZE in drivers/nvme/host/nvme.h. */
export const NVME_CTRL_PAGE_SIZE = 1 << NVME_CTRL_PAGE_SHIFT;
/** "optimisation for I/Os between 4k and 128k": 32 PRP entries or 16 SGL descriptors. */
export const NVME_SMALL_POOL_SIZE = 256;
/** Arbitrary upper bound on the bytes of one request (`NVME_MAX_BYTES`). */
export const NVME_MAX_BYTES = 8 * SZ_1M;
/** PRP list pages (or SGL descriptor pages) per request (`NVME_MAX_NR_DESCRIPTORS`). */
export const NVME_MAX_NR_DESCRIPTORS = 5;
/** PRP entries per list page; the last slot of a full page chains to the next page. */
export const NVME_PRPS_PER_PAGE = NVME_CTRL_PAGE_SIZE / 8;
/** Data entries per chained list page (`PRPS_PER_PAGE` in the kernel: 4096 / 8 - 1). */
export const PRPS_PER_PAGE = NVME_PRPS_PER_PAGE - 1;
/** PRP entries that fit the small pool. */
export const NVME_SMALL_POOL_PRPS = NVME_SMALL_POOL_SIZE / 8;
/** SGL descriptors that fit the small pool. */
export const NVME_SMALL_POOL_SGLS = NVME_SMALL_POOL_SIZE / 16;
/** `MAX_PRP_RANGE`: NVME_MAX_BYTES plus an unaligned head and tail. */
export const MAX_PRP_RANGE = NVME_MAX_BYTES + 2 * (NVME_CTRL_PAGE_SIZE - 1);
/** One large descriptor page of SGL entries: the data segment limit (`NVME_MAX_SEGS`). */
export const NVME_MAX_SEGS = NVME_CTRL_PAGE_SIZE / 16;
/** `sgl_threshold` module parameter default: SGLs for I/Os whose average segment is >= 32 KiB. */
export const NVME_DEFAULT_SGL_THRESHOLD = 32 * 1024;
/** blk-mq request timeout (`nvme_io_timeout`, 30 s) and admin timeout (`nvme_admin_timeout`, 60 s), in ns. */
export const NVME_IO_TIMEOUT_NS = 30e9;
/** Admin command timeout in ns (60 s; kernel: nvme_admin_timeout / NVME_ADMIN_TIMEOUT). */
export const NVME_ADMIN_TIMEOUT_NS = 60e9;
/** `nvme_max_retries` module parameter. */
export const NVME_MAX_RETRIES = 5;
/** Admin queue depth (`NVME_AQ_DEPTH`). */
export const NVME_AQ_DEPTH = 32;
/** Default I/O queue depth (`io_queue_depth` module parameter). */
export const NVME_IO_QUEUE_DEPTH = 1024;
/** Command identifier: tag in bits 11:0, generation counter in bits 15:12 (`nvme_cid`, `NVME_CID_GENCTR`). */
export const NVME_CID_TAG_BITS = 12;
/**
 * Mask of the 12 tag bits of a command identifier (kernel: nvme_tag_from_cid() in
 * drivers/nvme/host/nvme.h).
 */
export const NVME_CID_TAG_MASK = (1 << NVME_CID_TAG_BITS) - 1;
/**
 * Mask of the 4-bit generation counter of a command identifier (kernel: nvme_genctr_mask() in
 * drivers/nvme/host/nvme.h).
 */
export const NVME_CID_GENCTR_MASK = 0xf;

/** `iod->flags` (`enum nvme_iod_flags`). */
export const IOD_ABORTED = 1 << 0;
/**
 * iod flag: the command's descriptors came from the small DMA pool. kernel: IOD_SMALL_DESCRIPTOR in
 * drivers/nvme/host/pci.c.
 */
export const IOD_SMALL_DESCRIPTOR = 1 << 1;
/**
 * iod flag: the request maps as a single DMA segment. kernel: IOD_SINGLE_SEGMENT in
 * drivers/nvme/host/pci.c.
 */
export const IOD_SINGLE_SEGMENT = 1 << 2;
/** iod flag: mapped through the legacy sgtable path (model flag, not in the kernel). */
export const IOD_LEGACY_SG = 1 << 8;

/** `enum nvme_use_sgl`. */
export const SGL_UNSUPPORTED = 0;
/** SGLs usable but not required. kernel: SGL_SUPPORTED (enum nvme_use_sgl) in drivers/nvme/host/pci.c. */
export const SGL_SUPPORTED = 1;
/** SGLs required for this command. kernel: SGL_FORCED (enum nvme_use_sgl) in drivers/nvme/host/pci.c. */
export const SGL_FORCED = 2;

/** `NVME_SC_HOST_ABORTED_CMD`: the host cancelled the command (reset, teardown). */
export const NVME_SC_HOST_ABORTED_CMD = 0x371;
/** `NVME_SC_HOST_PATH_ERROR`. */
export const NVME_SC_HOST_PATH_ERROR = 0x370;

// Static checks the kernel makes with BUILD_BUG_ON.
if (MAX_PRP_RANGE / NVME_CTRL_PAGE_SIZE > 1 + NVME_MAX_NR_DESCRIPTORS * PRPS_PER_PAGE) {
  throw new Error('nvme-pci: MAX_PRP_RANGE does not fit NVME_MAX_NR_DESCRIPTORS list pages');
}

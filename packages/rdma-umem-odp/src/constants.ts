// kernel: include/rdma/ib_verbs.h (ib_access_flags, ib_wc_status, ib_wr_opcode),
// include/uapi/rdma/ib_user_ioctl_verbs.h (advise_mr), drivers/infiniband/hw/mlx5/odp.c, mlx5_ib.h,
// include/linux/mlx5/device.h
import { DMA_MAPPING_ERROR, HPAGE_PMD_SHIFT, PAGE_SHIFT, SZ_4M } from '@dmakit/dma-core';

// ---- ib_access_flags ------------------------------------------------------------------------------
/** Local write access. kernel: IB_ACCESS_LOCAL_WRITE (enum ib_access_flags) in include/rdma/ib_verbs.h. */
export const IB_ACCESS_LOCAL_WRITE = 1 << 0;
/** Remote write access. kernel: IB_ACCESS_REMOTE_WRITE in include/rdma/ib_verbs.h. */
export const IB_ACCESS_REMOTE_WRITE = 1 << 1;
/** Remote read access. kernel: IB_ACCESS_REMOTE_READ in include/rdma/ib_verbs.h. */
export const IB_ACCESS_REMOTE_READ = 1 << 2;
/** Remote atomic access. kernel: IB_ACCESS_REMOTE_ATOMIC in include/rdma/ib_verbs.h. */
export const IB_ACCESS_REMOTE_ATOMIC = 1 << 3;
/** Memory-window bind access. kernel: IB_ACCESS_MW_BIND in include/rdma/ib_verbs.h. */
export const IB_ACCESS_MW_BIND = 1 << 4;
/** Zero-based virtual addressing. kernel: IB_ACCESS_ZERO_BASED in include/rdma/ib_verbs.h. */
export const IB_ACCESS_ZERO_BASED = 1 << 5;
/** On-demand paging (ODP) MR. kernel: IB_ACCESS_ON_DEMAND in include/rdma/ib_verbs.h. */
export const IB_ACCESS_ON_DEMAND = 1 << 6;
/** Huge-page ODP entries. kernel: IB_ACCESS_HUGETLB in include/rdma/ib_verbs.h. */
export const IB_ACCESS_HUGETLB = 1 << 7;
/** Every access flag the model understands; others make registration fail with -EINVAL. */
export const IB_ACCESS_SUPPORTED =
  IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_REMOTE_ATOMIC | IB_ACCESS_MW_BIND | IB_ACCESS_ZERO_BASED | IB_ACCESS_ON_DEMAND | IB_ACCESS_HUGETLB;

/** `ib_access_writable()`: the umem may be written by the device. */
export function ibAccessWritable(access: number): boolean {
  return (access & (IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_ATOMIC | IB_ACCESS_MW_BIND)) !== 0;
}

/**
 * Length that asks for an implicit ODP MR (`start == 0 && length == U64_MAX`). Like dma-core's
 * DMA_MAPPING_ERROR, the JS number 2^64 - 1 rounds to 2^64; compare with `===`.
 */
export const IB_IMPLICIT_MR_LENGTH = DMA_MAPPING_ERROR;

// ---- ibv_advise_mr ---------------------------------------------------------------------------------
/**
 * Prefetch for read. kernel: IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH in
 * include/uapi/rdma/ib_user_ioctl_verbs.h.
 */
export const IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH = 0;
/**
 * Prefetch for write. kernel: IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE in
 * include/uapi/rdma/ib_user_ioctl_verbs.h.
 */
export const IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE = 1;
/**
 * Map only pages already present, without faulting. kernel: IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT
 * in include/uapi/rdma/ib_user_ioctl_verbs.h.
 */
export const IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT = 2;
/** The advice argument of ibv_advise_mr (kernel: enum ib_uverbs_advise_mr_advice). */
export type IbAdviseMrAdvice = 0 | 1 | 2;
/** Run the prefetch synchronously and return its first error. */
export const IB_UVERBS_ADVISE_MR_FLAG_FLUSH = 1;

// ---- work requests and completions -------------------------------------------------------------------
/** RDMA write work request. kernel: IB_WR_RDMA_WRITE (enum ib_wr_opcode) in include/rdma/ib_verbs.h. */
export const IB_WR_RDMA_WRITE = 0;
/** Send work request. kernel: IB_WR_SEND in include/rdma/ib_verbs.h. */
export const IB_WR_SEND = 2;
/** RDMA read work request. kernel: IB_WR_RDMA_READ in include/rdma/ib_verbs.h. */
export const IB_WR_RDMA_READ = 4;
/** Work-request opcodes the model implements (kernel: enum ib_wr_opcode). */
export type IbWrOpcode = typeof IB_WR_RDMA_WRITE | typeof IB_WR_SEND | typeof IB_WR_RDMA_READ;

/** Send completion. kernel: IB_WC_SEND (enum ib_wc_opcode) in include/rdma/ib_verbs.h. */
export const IB_WC_SEND = 0;
/** RDMA write completion. kernel: IB_WC_RDMA_WRITE in include/rdma/ib_verbs.h. */
export const IB_WC_RDMA_WRITE = 1;
/** RDMA read completion. kernel: IB_WC_RDMA_READ in include/rdma/ib_verbs.h. */
export const IB_WC_RDMA_READ = 2;
/** Receive completion. kernel: IB_WC_RECV in include/rdma/ib_verbs.h. */
export const IB_WC_RECV = 128;
/** Completion opcodes the model reports (kernel: enum ib_wc_opcode). */
export type IbWcOpcode = typeof IB_WC_SEND | typeof IB_WC_RDMA_WRITE | typeof IB_WC_RDMA_READ | typeof IB_WC_RECV;

/** Work-completion status codes the model reports. kernel: enum ib_wc_status in include/rdma/ib_verbs.h. */
export const IbWcStatus = {
  IB_WC_SUCCESS: 0,
  IB_WC_LOC_LEN_ERR: 1,
  IB_WC_LOC_QP_OP_ERR: 2,
  IB_WC_LOC_PROT_ERR: 4,
  IB_WC_WR_FLUSH_ERR: 5,
  IB_WC_LOC_ACCESS_ERR: 8,
  IB_WC_REM_INV_REQ_ERR: 9,
  IB_WC_REM_ACCESS_ERR: 10,
  IB_WC_REM_OP_ERR: 11,
  IB_WC_RETRY_EXC_ERR: 12,
  IB_WC_RNR_RETRY_EXC_ERR: 13,
} as const;
/** One work-completion status value (kernel: enum ib_wc_status). */
export type IbWcStatus = (typeof IbWcStatus)[keyof typeof IbWcStatus];

const WC_STATUS_NAMES = new Map<number, string>(Object.entries(IbWcStatus).map(([k, v]) => [v, k]));
/** `ib_wc_status_msg`-like name. */
export function ibWcStatusName(s: number): string {
  return WC_STATUS_NAMES.get(s) ?? `IB_WC_${s}`;
}

// ---- mlx5 ODP -----------------------------------------------------------------------------------------
/** `MLX5_IMR_MTT_BITS` = 30 - PAGE_SHIFT: each implicit child covers 1 GiB. */
export const MLX5_IMR_MTT_BITS = 30 - PAGE_SHIFT;
/**
 * Address bits covered by one implicit-ODP child MR (1 GiB). kernel: MLX5_IMR_MTT_SHIFT in
 * drivers/infiniband/hw/mlx5/odp.c.
 */
export const MLX5_IMR_MTT_SHIFT = MLX5_IMR_MTT_BITS + PAGE_SHIFT;
/** MTT entries per implicit-ODP child. kernel: MLX5_IMR_MTT_ENTRIES in drivers/infiniband/hw/mlx5/odp.c. */
export const MLX5_IMR_MTT_ENTRIES = 2 ** MLX5_IMR_MTT_BITS;
/** Bytes covered by one implicit-ODP child. kernel: MLX5_IMR_MTT_SIZE in drivers/infiniband/hw/mlx5/odp.c. */
export const MLX5_IMR_MTT_SIZE = 2 ** MLX5_IMR_MTT_SHIFT;
/**
 * Offset mask within an implicit-ODP child. kernel: MLX5_IMR_MTT_MASK in
 * drivers/infiniband/hw/mlx5/odp.c.
 */
export const MLX5_IMR_MTT_MASK = MLX5_IMR_MTT_SIZE - 1;
/** KSM entries of the implicit parent are 1 GiB each. */
export const MLX5_KSM_PAGE_SHIFT = MLX5_IMR_MTT_SHIFT;
/** `MAX_PREFETCH_LEN`: RDMA page faults prefetch up to 4 MiB around the faulting range. */
export const MAX_PREFETCH_LEN = SZ_4M;
/** `MMU_NOTIFIER_TIMEOUT` (ms). */
export const MMU_NOTIFIER_TIMEOUT = 1000;
/** `MLX5_UMR_MTT_NUM_ENTRIES_ALIGNMENT` = MLX5_UMR_FLEX_ALIGNMENT (0x40) / sizeof(struct mlx5_mtt) (8). */
export const MLX5_UMR_MTT_NUM_ENTRIES_ALIGNMENT = 8;

/** MTT entry bits: `be64(dma_addr | MLX5_IB_MTT_READ | MLX5_IB_MTT_WRITE)`. */
export const MLX5_IB_MTT_READ = 1 << 0;
/**
 * MTT entry bit: the device may write the page. kernel: MLX5_IB_MTT_WRITE in
 * drivers/infiniband/hw/mlx5/mlx5_ib.h.
 */
export const MLX5_IB_MTT_WRITE = 1 << 1;

/** `pagefault_mr` flags. */
export const MLX5_PF_FLAGS_DOWNGRADE = 1 << 1;
/**
 * pagefault_mr flag: map only pages already present (no fault). kernel: MLX5_PF_FLAGS_SNAPSHOT in
 * drivers/infiniband/hw/mlx5/odp.c.
 */
export const MLX5_PF_FLAGS_SNAPSHOT = 1 << 2;
/**
 * pagefault_mr flag: enable the MTT entries it writes. kernel: MLX5_PF_FLAGS_ENABLE in
 * drivers/infiniband/hw/mlx5/odp.c.
 */
export const MLX5_PF_FLAGS_ENABLE = 1 << 3;

/** `mlx5r_umr_update_xlt` flags. */
export const MLX5_IB_UPD_XLT_ZAP = 1 << 0;
/**
 * UMR translation-update (XLT) flag: mark the entries enabled. kernel: MLX5_IB_UPD_XLT_ENABLE
 * (drivers/infiniband/hw/mlx5).
 */
export const MLX5_IB_UPD_XLT_ENABLE = 1 << 1;
/**
 * UMR translation-update (XLT) flag: the update runs in atomic context (no sleeping allocation). kernel:
 * MLX5_IB_UPD_XLT_ATOMIC (drivers/infiniband/hw/mlx5).
 */
export const MLX5_IB_UPD_XLT_ATOMIC = 1 << 2;
/**
 * UMR translation-update (XLT) flag: write KSM (indirect) entries. kernel: MLX5_IB_UPD_XLT_INDIRECT
 * (drivers/infiniband/hw/mlx5).
 */
export const MLX5_IB_UPD_XLT_INDIRECT = 1 << 5;
/**
 * UMR translation-update (XLT) flag: drop write permission from the entries. kernel:
 * MLX5_IB_UPD_XLT_DOWNGRADE (drivers/infiniband/hw/mlx5).
 */
export const MLX5_IB_UPD_XLT_DOWNGRADE = 1 << 6;

/** Huge-page ODP entries (`IB_ACCESS_HUGETLB`): HPAGE_SHIFT on x86-64. */
export const ODP_HUGE_PAGE_SHIFT = HPAGE_PMD_SHIFT;

/** Legacy (pre-6.16) ODP: the low bits of each dma_list entry. */
export const ODP_READ_ALLOWED_BIT = 1 << 0;
/**
 * Legacy ODP dma_list bit: the device may write the page. kernel: ODP_WRITE_ALLOWED_BIT in
 * include/rdma/ib_umem_odp.h (before 6.16).
 */
export const ODP_WRITE_ALLOWED_BIT = 1 << 1;
/**
 * Legacy ODP dma_list permission bits, the ones the kernel's ODP_DMA_ADDR_MASK clears
 * (include/rdma/ib_umem_odp.h before 6.16).
 */
export const ODP_DMA_ADDR_MASK_BITS = ODP_READ_ALLOWED_BIT | ODP_WRITE_ALLOWED_BIT;

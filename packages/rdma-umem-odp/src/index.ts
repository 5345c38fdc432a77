/**
 * @dmakit/rdma-umem-odp: not implemented yet.
 *
 * Will model: RDMA on-demand paging (ib_umem_odp) on the two-step API, a simulated mlx5-like HCA with MRs, MTTs, page faults, prefetch and invalidation, and the legacy per-page path for comparison.
 * Kernel counterpart: drivers/infiniband/core/umem_odp.c, drivers/infiniband/hw/mlx5/odp.c
 */
export const NOT_IMPLEMENTED = true as const;

/**
 * @dmakit/rdma-umem-odp: RDMA on-demand paging (ib_umem_odp) on the HMM port and the two-step
 * DMA API, a simulated mlx5-like HCA (PDs, ODP MRs with MTT/KSM translation, UMR, page-fault
 * events, RC queue pairs moving bytes through the device DMA port), the mlx5 ODP driver flows
 * (page faults, prefetch, invalidation, implicit ODP) and the legacy per-page path.
 * Kernel counterpart: drivers/infiniband/core/umem_odp.c, drivers/infiniband/hw/mlx5/odp.c
 */
export * from './constants.js';
export {
  IbUmemOdp,
  UmemMutex,
  UmemOdpError,
  UmemOdpNotifier,
  ODP_RETRY_COST_NS,
  ibUmemOdpAllocChild,
  ibUmemOdpAllocImplicit,
  ibUmemOdpDmaAddr,
  ibUmemOdpGet,
  ibUmemOdpLegacyBits,
  ibUmemOdpMapDmaAndLock,
  ibUmemOdpMetadataBytes,
  ibUmemOdpNumPages,
  ibUmemOdpRelease,
  ibUmemOdpUnmapDmaPages,
} from './umemOdp.js';
export type { IbDevice, UmemOdpStats } from './umemOdp.js';
export { Hca, HcaMkey, HcaQp } from './hca.js';
export type { HcaAccessObserver, HcaOptions, HcaPageFault, HcaStats } from './hca.js';
export { HCA_MAX_SGE, HcaCq } from './ibVerbs.js';
export type { HcaQpState, IbRecvWr, IbSendWr, IbSge, IbWc } from './ibVerbs.js';
export { IbPd, Mlx5IbDev, Mlx5IbMr } from './mlx5.js';
export { MLX5_IMR_KSM_ENTRIES, MLX5_XLT_CHUNK_ENTRIES } from './mlx5Ib.js';
export type { Mlx5DevReport, Mlx5IbDevOptions, Mlx5OdpStats } from './mlx5Ib.js';
export * from './dmabufMr.js';
export { RcConnection, RcEndpoint } from './rcConnection.js';
export type { RcWaitOptions } from './rcConnection.js';
export { watchOdpAccesses } from './accessWatch.js';
export type { OdpAccessWatch } from './accessWatch.js';
export { Mlx5RcPair } from './rcPair.js';
export type { IbMrKeys } from './rcPair.js';

// kernel: drivers/infiniband/hw/mlx5/mlx5_ib.h (the driver's shared definitions: the implicit-ODP
// KSM geometry, the XLT chunk, the counters and options of struct mlx5_ib_dev).
// Definitions the mlx5 driver (mlx5.ts) and its users share, without the driver's state.
import { PAGE_SIZE, TASK_SIZE } from '@dmakit/dma-core';
import type { Device, EventScheduler, HmmPort } from '@dmakit/dma-core';
import { MLX5_IMR_MTT_SIZE } from './constants.js';
import type { Hca, HcaOptions } from './hca.js';

/** `mlx5_imr_ksm_entries`: 1 GiB KSM entries covering TASK_SIZE. */
export const MLX5_IMR_KSM_ENTRIES = Math.ceil(TASK_SIZE / MLX5_IMR_MTT_SIZE);
/** Entries per UMR translation update (one 4 KiB XLT page of 8-byte MTTs). */
export const MLX5_XLT_CHUNK_ENTRIES = PAGE_SIZE / 8;

/** dmakit's counters of the mlx5 ODP flows: page faults, prefetches, invalidations, implicit children. */
export interface Mlx5OdpStats {
  pageFaults: number;
  pageFaultErrors: number;
  /** PAGE_SIZE pages mapped by the fault handler. */
  faultPages: number;
  prefetches: number;
  prefetchPages: number;
  /** Invalidation callbacks that found mapped pages. */
  invalidations: number;
  /** MTT entries zapped by invalidation UMRs. */
  invalidatedMtts: number;
  invalidationUmrs: number;
  implicitChildrenCreated: number;
  implicitChildrenDestroyed: number;
}

/** Options of Mlx5IbDev: the DMA device, the HMM port, the scheduler and the HCA options. */
export interface Mlx5IbDevOptions extends HcaOptions {
  readonly dev: Device;
  readonly hmm: HmmPort;
  readonly scheduler: EventScheduler;
  readonly name?: string;
  /** The pre-6.16 ODP layout (page list + dma_addr_t list, dma_map_page per page). */
  readonly odpLegacy?: boolean;
}

/** Summary counters of the device, its umems and its HCA. */
export interface Mlx5DevReport {
  readonly odp: Mlx5OdpStats;
  readonly hca: Hca['stats'];
  readonly mrs: number;
  readonly mappedPages: number;
  readonly metadataBytes: number;
  readonly iovaWindowBytes: number;
}


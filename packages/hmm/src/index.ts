/**
 * @dmakit/hmm: hmm_range_fault over dma-core's address spaces, the HMM DMA helpers, device-private
 * memory with migrate_vma, and the dmirror test device (lib/test_hmm.c).
 * Kernel counterpart: mm/hmm.c, mm/migrate_device.c, mm/memremap.c, lib/test_hmm.c.
 */
export { HMM_RETRY_COST_NS, hmmRangeFault, hmmRangeFaultUnlockedTimeout, hmmStats, hmmStatsReset } from './hmmRange.js';
export type { HmmStats } from './hmmRange.js';
export { hmmDmaMapAlloc, hmmDmaMapFree, hmmDmaMapPfn, hmmDmaUnmapPfn, hmmDmaStats, hmmDmaStatsReset } from './hmmDma.js';
export type { HmmDmaStats } from './hmmDma.js';
export { hmmPort, createHmmPort } from './port.js';
export { DevPagemap, memremapPages, memunmapPages, pagePgmap, isDevicePrivatePage, installMigrateToRam } from './devmem.js';
export type { DevPagemapOps, MemremapPagesOptions, VmFault } from './devmem.js';
export { makeDeviceExclusive, exclusiveStats } from './exclusive.js';
export {
  MIGRATE_PFN_COMPOUND,
  MIGRATE_PFN_MIGRATE,
  MIGRATE_PFN_SHIFT,
  MIGRATE_PFN_VALID,
  MIGRATE_PFN_WRITE,
  MIGRATE_VMA_SELECT_COMPOUND,
  MIGRATE_VMA_SELECT_DEVICE_COHERENT,
  MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
  MIGRATE_VMA_SELECT_SYSTEM,
  MigrateVma,
  migratePfn,
  migratePfnFlags,
  migratePfnToPfn,
  migrateStats,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
} from './migrate.js';
export {
  DMIRROR_CHUNK_PAGES,
  Dmirror,
  DmirrorDevice,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_PUD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_ZERO,
  HMM_DMIRROR_FLAG_FAIL_ALLOC,
} from './dmirror.js';
export type { DmirrorCmd, DmirrorDeviceOptions, DmirrorStats, DmirrorSummary } from './dmirror.js';

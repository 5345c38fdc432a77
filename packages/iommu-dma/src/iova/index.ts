/**
 * The IOVA allocator (drivers/iommu/iova.c, include/linux/iova.h): an ordered tree of IOVA ranges
 * searched top-down below a limit, with per-CPU magazine caches (rcaches) and a depot.
 */
export { IovaDomain, type Iova, type IovaRange, type IovaDomainOptions, type IovaStats } from './iovaDomain.js';
export {
  IOVA_RANGE_CACHE_MAX_SIZE,
  IOVA_MAG_SIZE,
  IOVA_DEPOT_DELAY_MS,
  IovaDomainError,
  type IovaGranularity,
  iovaShift,
  iovaMask,
  iovaOffset,
  iovaAlign,
  iovaAlignDown,
  iovaPfn,
  iovaRcacheRange,
} from './helpers.js';

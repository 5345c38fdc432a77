/** The nvme stack's result: what one run reports, built from the counters of every layer. */
import type { BlkRqDmaStats } from '@dmakit/block-rq-dma';
import type { IommuStats } from '@dmakit/iommu-dma';
import type { NvmeControllerStats, NvmeHostStats } from '@dmakit/nvme-pci';
import { NVME_DEFAULT_COST_MODEL, nvmeSimulatedCost, PUBLISHED_IOPS } from '../nvmeCost.js';
import type { NvmeSimulatedCost, NvmeStackCostModel } from '../nvmeCost.js';
import type { NvmeRunConfig, NvmeIommuMode } from './options.js';
import type { FioRw } from './options.js';
import type { FioCounts } from './workload.js';
import type { StackFailure } from '../types.js';

export interface NvmePerIo {
  readonly iovaAllocs: number;
  readonly pteWrites: number;
  readonly iotlbSyncs: number;
  readonly iotlbInvalidations: number;
  readonly prpListPages: number;
  readonly sglDescriptors: number;
  readonly swiotlbBounces: number;
  readonly doorbells: number;
  readonly interrupts: number;
  readonly segments: number;
}

/** Leftovers after teardown: pool blocks, streaming mappings, IOVA states, dma-debug reports. */
export interface NvmeLeaks {
  readonly poolBlocks: number;
  readonly mappings: number;
  readonly iovaRanges: number;
  readonly dmaDebugReports: number;
}

export interface NvmeStackResult {
  readonly stack: 'nvme';
  readonly iommu: NvmeIommuMode;
  readonly mapping: 'iova' | 'sg';
  readonly rw: FioRw;
  readonly bs: number | 'mixed';
  readonly qd: number;
  readonly verify: boolean;
  /** All I/Os completed OK and every checked block matched. */
  readonly verified: boolean;
  readonly verifiedBytes: number;
  readonly ios: number;
  readonly reads: number;
  readonly writes: number;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  readonly ioErrors: number;
  readonly mismatchedBlocks: number;
  readonly resets: number;
  readonly wallMs: number;
  readonly wallIops: number;
  readonly simulated: NvmeSimulatedCost;
  readonly published: typeof PUBLISHED_IOPS;
  readonly perIo: NvmePerIo;
  readonly host: NvmeHostStats;
  readonly blk: BlkRqDmaStats;
  readonly iommuStats: IommuStats | null;
  readonly iommuFaults: number;
  /** Leftovers after teardown: pool blocks, streaming mappings, IOVA states, dma-debug reports. */
  readonly leaks: NvmeLeaks;
  readonly simulatedNs: number;
  readonly log: readonly string[];
  /** Where the run stopped and why (probe or buffer allocation failed, or I/Os failed). */
  readonly failure?: StackFailure;
}

/** Everything one run measured, taken before and after teardown. */
export interface NvmeRunMeasures {
  readonly cfg: NvmeRunConfig;
  /** The workload's counts, with the namespace check's mismatches and verified bytes added. */
  readonly counts: FioCounts;
  readonly verified: boolean;
  readonly wallMs: number;
  readonly host: NvmeHostStats;
  readonly blk: BlkRqDmaStats;
  readonly ctrl: NvmeControllerStats;
  readonly swiotlb: { readonly bounces: number; readonly bytesCopied: number };
  readonly iommuStats: IommuStats | null;
  readonly iommuFaults: number;
  readonly leaks: NvmeLeaks;
  readonly simulatedNs: number;
  readonly log: readonly string[];
  readonly costModel?: NvmeStackCostModel;
  readonly failure?: StackFailure;
}

/** The result object: simulated cost from the counters, per-I/O figures, the layers' stats. */
export function nvmeStackResult(x: NvmeRunMeasures): NvmeStackResult {
  const { cfg, counts: c, host: hs, blk: bs2, ctrl: cs, swiotlb: sw, iommuStats } = x;
  const completed = c.completed;
  const directMaps = bs2.directMaps + hs.singleSegment;
  const simulated = nvmeSimulatedCost(
    {
      ios: completed,
      bytes: c.bytesTotal,
      directMaps: cfg.mode === 'off' ? directMaps : 0,
      doorbells: hs.sqDoorbells + hs.cqDoorbells,
      interrupts: hs.interrupts,
      descriptors: hs.smallDescriptors + hs.largeDescriptors,
      bounceBytes: sw.bytesCopied,
      queueDepth: cfg.qd,
      iommu: iommuStats,
    },
    x.costModel ?? NVME_DEFAULT_COST_MODEL,
  );
  const per = (v: number): number => v / Math.max(1, completed);
  return {
    ...(x.failure !== undefined ? { failure: x.failure } : {}),
    stack: 'nvme',
    iommu: cfg.mode,
    mapping: cfg.mapping,
    rw: cfg.rw,
    bs: cfg.bs,
    qd: cfg.qd,
    verify: cfg.verify,
    verified: x.verified,
    verifiedBytes: c.verifiedBytes,
    ios: completed,
    reads: c.reads,
    writes: c.writes,
    bytesRead: c.bytesRead,
    bytesWritten: c.bytesWritten,
    ioErrors: c.ioErrors,
    mismatchedBlocks: c.mismatched,
    resets: hs.resets,
    wallMs: x.wallMs,
    wallIops: x.wallMs > 0 ? (completed * 1000) / x.wallMs : 0,
    simulated,
    published: PUBLISHED_IOPS,
    perIo: {
      iovaAllocs: per(iommuStats?.iovaAllocs ?? 0),
      pteWrites: per(iommuStats?.pteWrites ?? 0),
      iotlbSyncs: per(iommuStats?.iotlbSyncs ?? 0),
      iotlbInvalidations: per((iommuStats?.iotlbInvalidationsRange ?? 0) + (iommuStats?.iotlbInvalidationsFull ?? 0)),
      prpListPages: per(cs.prpListPages),
      sglDescriptors: per(cs.sglDescriptors),
      swiotlbBounces: per(sw.bounces),
      doorbells: per(hs.sqDoorbells + hs.cqDoorbells),
      interrupts: per(hs.interrupts),
      segments: per(bs2.segments + hs.singleSegment),
    },
    host: hs,
    blk: bs2,
    iommuStats,
    iommuFaults: x.iommuFaults,
    leaks: x.leaks,
    simulatedNs: x.simulatedNs,
    log: x.log,
  };
}

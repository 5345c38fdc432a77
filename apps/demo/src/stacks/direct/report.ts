/** The direct stack's result and the table the CLI prints for it. */
import type { Machine } from '@dmakit/dma-core';
import type { IommuStats } from '@dmakit/iommu-dma';
import { table } from '../format.js';
import type { StackFailure } from '../types.js';
import type { StepResult } from './steps.js';

export interface DirectStackResult {
  readonly stack: 'direct';
  readonly verified: boolean;
  /** Where the run stopped and the errno it got, when a step could not allocate or map. */
  readonly failure?: StackFailure;
  readonly verifiedBytes: number;
  readonly steps: StepResult[];
  readonly swiotlb: ReturnType<Machine['swiotlb']['stats']>;
  readonly dmaDebugReports: number;
  readonly simulatedNs: number;
  /** The IOMMU's mode and counters, or null when the devices use dma-direct. */
  readonly iommu: { readonly mode: 'strict' | 'lazy'; readonly stats: IommuStats; readonly faults: number } | null;
}


/** The table the CLI prints for a direct-stack result. */
export function formatDirect(r: DirectStackResult): string {
  const rows = r.steps.map((s) => [s.verified ? 'ok' : 'FAIL', s.device, s.step, String(s.bytes), s.detail]);
  const sw = r.swiotlb;
  return [
    `dmakit demo: stack "${r.stack}"`,
    '',
    table(['', 'device', 'step', 'bytes', 'detail'], rows),
    '',
    `swiotlb: ${sw.bounces} bounces, ${sw.bytesCopied} bytes copied, ${sw.usedSlots}/${sw.totalSlots} slots in use, high-water ${sw.highWaterSlots} slots`,
    ...(r.iommu === null
      ? []
      : [
          `iommu (${r.iommu.mode}): ${r.iommu.stats.iovaAllocs} IOVA allocs (${r.iommu.stats.rcacheHits} rcache hits), ${r.iommu.stats.pteWrites} PTE writes, ` +
            `${r.iommu.stats.iotlbSyncs} IOTLB syncs, invalidations ${r.iommu.stats.iotlbInvalidationsRange} range / ${r.iommu.stats.iotlbInvalidationsFull} full, ` +
            `${r.iommu.stats.fqFlushes} flush-queue flushes, IOTLB ${r.iommu.stats.iotlbHits} hits / ${r.iommu.stats.iotlbMisses} misses, ` +
            `${r.iommu.stats.staleIotlbAccesses} stale-IOTLB accesses, ${r.iommu.faults} faults`,
        ]),
    `dma-debug reports: ${r.dmaDebugReports}`,
    ...(r.failure !== undefined ? [`stopped: ${r.failure.step}: ${r.failure.error}`] : []),
    `verified: ${r.verified ? 'yes' : 'NO'} (${r.verifiedBytes} bytes checked)`,
    '',
  ].join('\n');
}

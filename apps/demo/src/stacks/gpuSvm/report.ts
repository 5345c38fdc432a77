/** The gpu-svm stack's result and the table the CLI prints for it. */
import type { StackFailure } from '../types.js';
import type { IommuStats } from '@dmakit/iommu-dma';
import type { DmirrorStats, DmirrorSummary, HmmDmaStats, HmmStats } from '@dmakit/hmm';

export interface GpuSvmStep {
  readonly step: string;
  readonly bytes: number;
  readonly verified: boolean;
  readonly detail: string;
  /** The mirror after the step. */
  readonly mirror: DmirrorSummary;
}

export interface GpuSvmResult {
  readonly stack: 'gpu-svm';
  readonly verified: boolean;
  /** Where the run stopped: the errno a dmirror call returned, or the signal the process got. */
  readonly failure?: StackFailure;
  readonly verifiedBytes: number;
  readonly steps: GpuSvmStep[];
  readonly gpu: DmirrorStats & { readonly devicePagesInUse: number; readonly copiesToDevice: number; readonly copiesToSystem: number };
  readonly hmm: HmmStats;
  readonly hmmDma: HmmDmaStats;
  /** The IOMMU's mode and counters, or null with --iommu off (dma-direct: a dma list per page). */
  readonly iommu: { readonly mode: 'strict' | 'lazy'; readonly stats: IommuStats; readonly faults: number } | null;
  readonly dmaDebugReports: number;
  /** Mappings and device pages left after teardown (both must be 0). */
  readonly leaks: { readonly dmaMappings: number; readonly devicePages: number };
}

/** Rows padded to their widest cell (the first row is the header; no rule under it). */
function pad(rows: string[][]): string {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

/** The table the CLI prints for a gpu-svm result. */
export function formatGpuSvm(r: GpuSvmResult): string {
  const rows = [['', 'step', 'bytes', 'DMA_MAPPED', 'local', 'detail'], ...r.steps.map((s) => [s.verified ? 'ok' : 'FAIL', s.step, String(s.bytes), String(s.mirror.dmaMapped), String(s.mirror.localPtes), s.detail])];
  const g = r.gpu;
  const io = r.iommu?.stats;
  return [
    `dmakit demo: stack "gpu-svm" (GPU shared virtual memory through HMM, ${r.iommu === null ? 'no IOMMU' : `IOMMU ${r.iommu.mode}`})`,
    '',
    pad(rows),
    '',
    `gpu: ${g.faults} faults, ${g.rangeFaultCalls} hmm_range_fault calls (${g.busyRetries} -EBUSY, ${g.readRetries} read_retry), ${g.pagesMapped} pages mapped, ` +
      `${g.invalidations} invalidations (${g.entriesZapped} PTEs zapped), ${g.migratedToDevice} pages to device / ${g.migratedToSystem} to RAM, ${g.devmemFaults} migrate_to_ram`,
    `hmm: ${r.hmm.walks} walks, ${r.hmm.faultedPages} pages faulted; dma: ${r.hmmDma.mapped} linked, ${r.hmmDma.remapped} re-mapped in place, ${r.hmmDma.unmapped} unlinked`,
    ...(io === undefined || r.iommu === null
      ? []
      : [`iommu: ${io.iovaAllocs} IOVA allocs, ${io.pteWrites} PTE writes, ${io.iotlbSyncs} IOTLB syncs, ${io.iotlbInvalidationsRange} range invalidations, ${r.iommu.faults} faults`]),
    `leaks after teardown: ${r.leaks.dmaMappings} DMA mappings, ${r.leaks.devicePages} device pages; dma-debug reports: ${r.dmaDebugReports}`,
    ...(r.failure !== undefined ? [`stopped: ${r.failure.step}: ${r.failure.error}`] : []),
    `verified: ${r.verified ? 'yes' : 'NO'} (${r.verifiedBytes} bytes checked)`,
    '',
  ].join('\n');
}

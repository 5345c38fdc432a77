/** The rdma-odp stack's result and its text form. */
import type { StackFailure } from '../types.js';
import type { IommuStats } from '@dmakit/iommu-dma';
import type { Mlx5DevReport } from '@dmakit/rdma-umem-odp';

export type RdmaOdpIommuMode = 'strict' | 'lazy' | 'off';

export interface RdmaOdpStep {
  readonly step: string;
  readonly bytes: number;
  readonly verified: boolean;
  readonly detail: string;
}

export interface RdmaOdpOdpCounts {
  readonly pageFaults: number;
  readonly pageFaultErrors: number;
  readonly faultPages: number;
  readonly prefetches: number;
  readonly prefetchPages: number;
  readonly invalidations: number;
  readonly invalidatedMtts: number;
  readonly umrPosts: number;
  readonly implicitChildrenCreated: number;
  readonly implicitChildrenDestroyed: number;
  readonly seqRetries: number;
  readonly busyRetries: number;
  readonly completionErrors: number;
  readonly bytesMoved: number;
}

export type RdmaOdpIova = Pick<IommuStats, 'iovaAllocs' | 'iovaFrees' | 'iotlbSyncs' | 'iotlbSyncMaps' | 'iotlbInvalidationsRange' | 'iotlbInvalidationsFull' | 'pteWrites' | 'staleIotlbAccesses' | 'faults' | 'simulatedNs'>;

export interface RdmaOdpResult {
  readonly stack: 'rdma-odp';
  readonly path: 'two-step' | 'legacy';
  readonly implicit: boolean;
  readonly iommuMode: RdmaOdpIommuMode;
  readonly verified: boolean;
  /** Where the run stopped: reg_mr's errno, a work completion's status, or the signal the CPU got. */
  readonly failure?: StackFailure;
  readonly verifiedBytes: number;
  readonly steps: RdmaOdpStep[];
  readonly odp: RdmaOdpOdpCounts;
  /** IOMMU counters for the two HCAs' traffic, or null with --iommu off. */
  readonly iova: RdmaOdpIova | null;
  /** Mapping metadata of the server's umems at their peak (PFN words + dma_addr_t lists) and the pages they cover. */
  readonly metadata: { readonly pages: number; readonly bytes: number; readonly bytesPerPage: number };
  /** HCA DMA that went to a page the CPU no longer mapped there (must be 0). */
  readonly staleAccesses: number;
  readonly leaks: { readonly mkeys: number; readonly mappedPages: number; readonly iovaOutstanding: number; readonly debugReports: number };
  readonly dmaDebugReports: number;
  /** Simulated time of the traffic (registration to the final verification). */
  readonly simulatedNs: number;
}

/** Both HCAs' ODP counters (prefetch and implicit children: the server's, where they happen). */
export function odpCounts(rep: Mlx5DevReport, cRep: Mlx5DevReport, retries: { readonly seq: number; readonly busy: number }): RdmaOdpOdpCounts {
  return {
    pageFaults: rep.odp.pageFaults + cRep.odp.pageFaults,
    pageFaultErrors: rep.odp.pageFaultErrors + cRep.odp.pageFaultErrors,
    faultPages: rep.odp.faultPages + cRep.odp.faultPages,
    prefetches: rep.odp.prefetches,
    prefetchPages: rep.odp.prefetchPages,
    invalidations: rep.odp.invalidations + cRep.odp.invalidations,
    invalidatedMtts: rep.odp.invalidatedMtts + cRep.odp.invalidatedMtts,
    umrPosts: rep.hca.umrPosts + cRep.hca.umrPosts,
    implicitChildrenCreated: rep.odp.implicitChildrenCreated,
    implicitChildrenDestroyed: rep.odp.implicitChildrenDestroyed,
    seqRetries: retries.seq,
    busyRetries: retries.busy,
    completionErrors: rep.hca.completionErrors + cRep.hca.completionErrors,
    bytesMoved: rep.hca.bytesMoved + cRep.hca.bytesMoved,
  };
}

/** The IOMMU counters the result reports. */
export function iovaCounts(st: IommuStats): RdmaOdpIova {
  return {
    iovaAllocs: st.iovaAllocs,
    iovaFrees: st.iovaFrees,
    iotlbSyncs: st.iotlbSyncs,
    iotlbSyncMaps: st.iotlbSyncMaps,
    iotlbInvalidationsRange: st.iotlbInvalidationsRange,
    iotlbInvalidationsFull: st.iotlbInvalidationsFull,
    pteWrites: st.pteWrites,
    staleIotlbAccesses: st.staleIotlbAccesses,
    faults: st.faults,
    simulatedNs: st.simulatedNs,
  };
}

/** The text the CLI prints for an rdma-odp result. */
export function formatRdmaOdp(r: RdmaOdpResult): string {
  const lines: string[] = [];
  lines.push(`rdma-odp: ${r.path} ODP${r.implicit ? ' (implicit MR)' : ''}, IOMMU ${r.iommuMode}`);
  lines.push('');
  for (const s of r.steps) lines.push(`  [${s.verified ? ' ok ' : 'FAIL'}] ${s.step}${s.detail !== '' ? ` — ${s.detail}` : ''}`);
  lines.push('');
  const o = r.odp;
  lines.push(`  page faults ${o.pageFaults} (${o.faultPages} pages, ${o.pageFaultErrors} failed), prefetches ${o.prefetches} (${o.prefetchPages} pages)`);
  lines.push(`  invalidations ${o.invalidations} (${o.invalidatedMtts} MTTs zapped), UMR posts ${o.umrPosts}, retries: seq ${o.seqRetries} busy ${o.busyRetries}`);
  if (r.implicit) lines.push(`  implicit children created ${o.implicitChildrenCreated}, destroyed ${o.implicitChildrenDestroyed}`);
  lines.push(`  completion errors ${o.completionErrors}, bytes moved ${o.bytesMoved}`);
  if (r.iova !== null) {
    const i = r.iova;
    lines.push(`  IOVA allocs ${i.iovaAllocs} (frees ${i.iovaFrees}), PTE writes ${i.pteWrites}, IOTLB syncs ${i.iotlbSyncs} (map ${i.iotlbSyncMaps}), invalidations range ${i.iotlbInvalidationsRange} full ${i.iotlbInvalidationsFull}, stale IOTLB ${i.staleIotlbAccesses}, faults ${i.faults}`);
    lines.push(`  IOMMU cost model: ${(i.simulatedNs / 1e6).toFixed(3)} ms of CPU time for the mapping work`);
  }
  lines.push(`  mapping metadata: ${r.metadata.bytes} bytes for ${r.metadata.pages} pages (${r.metadata.bytesPerPage.toFixed(2)} B/page)`);
  lines.push(`  stale HCA accesses ${r.staleAccesses}; after teardown: mkeys ${r.leaks.mkeys}, mapped pages ${r.leaks.mappedPages}, IOVA outstanding ${r.leaks.iovaOutstanding}, dma-debug ${r.leaks.debugReports}`);
  if (r.failure !== undefined) lines.push(`  stopped: ${r.failure.step}: ${r.failure.error}`);
  lines.push(`  verified ${r.verifiedBytes} bytes in ${(r.simulatedNs / 1e6).toFixed(3)} ms simulated: ${r.verified ? 'OK' : 'FAILED'}`);
  return `${lines.join('\n')}\n`;
}

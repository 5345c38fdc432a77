/** The text the CLI prints for an nvme result and for --compare. */
import { table } from '../format.js';
import type { NvmeIommuMode } from './options.js';
import type { NvmeStackResult } from './report.js';

function n(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return String(x);
  if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString('en-US');
  return x.toFixed(digits);
}

function bytes(x: number): string {
  if (x >= 1 << 20) return `${(x / (1 << 20)).toFixed(1)} MiB`;
  if (x >= 1 << 10) return `${(x / (1 << 10)).toFixed(1)} KiB`;
  return `${x} B`;
}

/** The table the CLI prints for one nvme run. */
export function formatNvme(r: NvmeStackResult): string {
  const s = r.simulated;
  const p = r.perIo;
  const rows: string[][] = [
    ['I/Os', `${r.ios} (${r.reads} reads, ${r.writes} writes, ${r.ioErrors} errors)`],
    ['bytes', `${bytes(r.bytesRead)} read, ${bytes(r.bytesWritten)} written`],
    ['verified', `${r.verified ? 'yes' : 'NO'}: ${bytes(r.verifiedBytes)} checked, ${r.mismatchedBlocks} mismatched blocks`],
    ...(r.failure !== undefined ? [['stopped', `${r.failure.step}: ${r.failure.error}`]] : []),
    ['wall IOPS', `${n(r.wallIops)} (${n(r.wallMs)} ms)`],
    ['simulated IOPS', `${n(s.simulatedIops)} (cpu-bound ${n(s.cpuBoundIops)}, device-bound ${n(s.deviceBoundIops)})`],
    ['sim ns per I/O', `block ${n(s.nsPerIo.block)}, driver ${n(s.nsPerIo.driver)}, dma ${n(s.nsPerIo.dma)}, iommu ${n(s.nsPerIo.iommu)}, swiotlb ${n(s.nsPerIo.swiotlb)} = ${n(s.nsPerIo.total)}`],
    ['published (one core)', `strict ${n(r.published.strict)} : lazy ${n(r.published.lazy)} : off ${n(r.published.off)} (4 KiB reads, Optane, fio t/io_uring)`],
  ];
  const perIo: string[][] = [
    ['IOVA allocations', n(p.iovaAllocs, 3)],
    ['PTE writes', n(p.pteWrites, 3)],
    ['IOTLB syncs', n(p.iotlbSyncs, 3)],
    ['IOTLB invalidations', n(p.iotlbInvalidations, 3)],
    ['DMA segments', n(p.segments, 3)],
    ['PRP list pages', n(p.prpListPages, 3)],
    ['SGL descriptors', n(p.sglDescriptors, 3)],
    ['swiotlb bounces', n(p.swiotlbBounces, 3)],
    ['doorbells', n(p.doorbells, 3)],
    ['interrupts', n(p.interrupts, 3)],
  ];
  const h = r.host;
  return [
    `dmakit demo: stack "nvme" (iommu ${r.iommu}, mapping ${r.mapping}, rw=${r.rw} bs=${String(r.bs)} qd=${r.qd}${r.verify ? ', verify' : ''})`,
    '',
    table(['metric', 'value'], rows),
    '',
    table(['per I/O', 'count'], perIo),
    '',
    `driver: ${h.singleSegment} single-segment, ${h.iovaCoalesced} IOVA-coalesced, ${h.prpCommands} PRP, ${h.sglCommands} SGL, ${h.legacySg} legacy sgtable; ${h.smallDescriptors} small + ${h.largeDescriptors} large descriptors; ${h.resets} resets, ${h.requeued} requeued, ${h.timeouts} timeouts, ${h.aborts} aborts`,
    `after teardown: ${r.leaks.poolBlocks} pool blocks, ${r.leaks.mappings} mappings, ${r.leaks.iovaRanges} IOVA ranges, ${r.leaks.dmaDebugReports} dma-debug reports, ${r.iommuFaults} IOMMU faults`,
    '',
  ].join('\n');
}

/** The table the CLI prints for --compare: strict, lazy and off side by side. */
export function formatNvmeCompare(rs: Record<NvmeIommuMode, NvmeStackResult>): string {
  const modes: NvmeIommuMode[] = ['strict', 'lazy', 'off'];
  const off = rs.off.simulated.simulatedIops;
  const rows = modes.map((m) => {
    const r = rs[m];
    return [m, r.verified ? 'ok' : 'FAIL', n(r.simulated.simulatedIops), n(r.simulated.simulatedIops / off, 3), n(r.published[m]), n(r.published[m] / r.published.off, 3), n(r.simulated.nsPerIo.total), n(r.wallIops)];
  });
  return [
    'dmakit demo: stack "nvme", strict vs lazy vs off (same workload and seed)',
    '',
    table(['iommu', 'verified', 'sim IOPS', 'sim ratio', 'published', 'pub ratio', 'sim ns/I/O', 'wall IOPS'], rows),
    '',
  ].join('\n');
}

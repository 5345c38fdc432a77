import type { DirectStackResult } from './direct.js';

/** A plain-text table: columns padded to their widest cell. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

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
    `verified: ${r.verified ? 'yes' : 'NO'} (${r.verifiedBytes} bytes checked)`,
    '',
  ].join('\n');
}

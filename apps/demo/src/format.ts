import type { DirectStackResult } from './stacks/direct.js';

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
    `dma-debug reports: ${r.dmaDebugReports}`,
    `verified: ${r.verified ? 'yes' : 'NO'} (${r.verifiedBytes} bytes checked)`,
    '',
  ].join('\n');
}

/** The cc-guest stack's table: one row per phase (before/after), the rogue device and the checks. */
import type { CcGuestResult } from './result.js';
import { table } from '../format.js';

function n(x: number, digits = 0): string {
  return x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** One line for the dma-buf-over-private-MMIO step. */
function privateMmioLine(r: CcGuestResult): string[] {
  const p = r.privateMmio;
  if (p === undefined) return [];
  return [
    `dma-buf over private MMIO: export before acceptance ${p.exportErrnos.join('/')}, ${n(p.cpuRefused)} private loads read all ones, ` +
    `${n(p.bytesMoved)} bytes moved P2P in RUN (${p.mode}, ${p.mismatches === 0 ? 'verified' : `${p.mismatches} BAD`}), ` +
    `TDISP error: ${n(p.moveNotifies)} move_notify, map ${p.mapAfterRevokeErrno}, ${n(p.p2pRefused)} peer requests refused, ${n(p.liveMappingsAfterRevoke)} mappings left`,
  ];
}

/** One line for the driver's mapping of BAR0: the worlds it went through and what the TDI refused. */
function driverMmioLine(r: CcGuestResult): string[] {
  const d = r.driverMmio;
  if (d === undefined) return [];
  return [`nvme0 BAR0 mapping: ${d.worlds.join(' -> ')}; ${n(d.refused)} register/doorbell accesses refused`];
}

/** The human-readable report of a cc-guest run. */
export function formatCcGuest(r: CcGuestResult): string {
  const rows = r.phases.map((p) => [
    p.phase,
    n(p.ios),
    n(p.bouncedBytesPerIo),
    n(p.swiotlbNsPerIo, 1),
    n(p.simulatedIops),
    n(p.privateAccesses),
    n(p.faults),
    `${n(p.ioErrors)}/${n(p.driverRetries)}`,
    p.mismatches === 0 ? 'ok' : `${p.mismatches} BAD`,
  ]);
  const lines = [
    `cc-guest: NVMe in a ${r.vendor.toUpperCase()} guest (DMA-address bit ${r.sharedBit}), ${n(r.bs)}-byte I/Os, QD ${r.qd}`,
    '',
    table(['phase', 'I/Os', 'bounced B/IO', 'swiotlb ns/IO', 'sim IOPS', 'private DMA', 'faults refused', 'err/retry', 'verify'], rows),
    '',
    `rogue device: ${r.rogue.refused}/${r.rogue.attempts} accesses to private memory refused, secret ${r.rogue.secretIntact ? 'intact' : 'CHANGED'} ` +
      `(attestation ${r.rogue.attestErrno}, accept ${r.rogue.acceptErrno})`,
    `TDISP: ${r.tdispHistory.join(' -> ')}`,
    ...driverMmioLine(r),
    `conversions: ${r.conversions.decrypt} set_memory_decrypted, ${r.conversions.encrypt} set_memory_encrypted; dma-debug reports: ${r.dmaDebugReports}`,
    ...privateMmioLine(r),
    '',
    ...r.checks.map((c) => `  [${c.ok ? 'ok' : 'FAIL'}] ${c.name}`),
    '',
    ...(r.failure !== undefined ? [`stopped: ${r.failure.step}: ${r.failure.error}`] : []),
    r.verified ? `verified: ${n(r.verifiedBytes)} bytes, every check passed` : 'NOT VERIFIED: a check failed',
    '',
  ];
  return lines.join('\n');
}

/**
 * The "vfio-migration" stack: live migration of an assigned mlx5 VF between two hosts (two
 * machines, each with its own IOMMU). The guest's memory is mapped into the VF's unmanaged IOMMU
 * domain; guest CPU and function both keep writing it while pre-copy rounds move dirty pages
 * (KVM-style CPU dirty log + the function's device dirty tracker) and the function's state
 * (incremental pre-copy images). Then STOP_COPY with chunked device state, the stream carried to
 * the target, RESUMING, RUNNING there, and the workload continues. Verified: the target's guest
 * memory and function state equal the source's at the moment of stop, byte for byte. Run once on
 * the two-step IOVA path and once on the legacy scatterlist path; both must give identical bytes.
 *
 * Files: vfioMigrationHost.ts builds a host, vfioMigrationPath.ts runs one path, this file compares
 * the paths and reports; the models (guest, dirty log, driver, function) are @dmakit/vfio-mlx5's.
 */
import { checkRequest, StackUsageError } from './types.js';
import type { StackDef, StackFailure } from './types.js';
import { runVfioMigrationPath } from './vfioMigrationPath.js';
import { VfioMigrationStop } from './vfioMigrationTypes.js';
import type { VfioMigrationOptions, VfioMigrationPathResult, VfioMigrationResult } from './vfioMigrationTypes.js';

export { runVfioMigrationPath } from './vfioMigrationPath.js';
export type { VfioMigrationIommuMode, VfioMigrationOptions, VfioMigrationPathResult, VfioMigrationResult, VfioMigrationRound } from './vfioMigrationTypes.js';

export function runVfioMigrationStack(opts: VfioMigrationOptions = {}): VfioMigrationResult {
  const which = opts.path ?? 'both';
  const paths: VfioMigrationPathResult[] = [];
  const runs: ('iova' | 'legacy')[] = which === 'both' ? ['iova', 'legacy'] : [which];
  const onProgress = opts.onProgress;
  let failure: StackFailure | undefined;
  runs.forEach((path, i) => {
    if (failure !== undefined) return;
    const progress =
      onProgress === undefined
        ? {}
        : {
            onProgress: (done: number, total: number) => {
              onProgress(i * total + done, runs.length * total);
            },
          };
    try {
      paths.push(runVfioMigrationPath(path, { ...opts, ...progress }));
    } catch (err) {
      if (!(err instanceof VfioMigrationStop)) throw err;
      failure = { step: `${path} path: ${err.step}`, error: err.error, dataIntact: true };
    }
  });
  const a = paths[0];
  const b = paths[1];
  const identical = a !== undefined && b !== undefined ? a.streamDigest === b.streamDigest && JSON.stringify(a.rounds) === JSON.stringify(b.rounds) : null;
  return {
    stack: 'vfio-migration',
    iommu: opts.iommu ?? 'strict',
    ...(failure !== undefined ? { failure } : {}),
    verified: failure === undefined && paths.every((p) => p.verified) && identical !== false,
    pathsIdentical: identical,
    paths,
  };
}

export function formatVfioMigration(r: VfioMigrationResult): string {
  const L: string[] = [];
  L.push(`vfio-migration: mlx5 VF live migration between two hosts, IOMMU ${r.iommu}`);
  for (const p of r.paths) {
    L.push('');
    L.push(`  path ${p.path} (${p.path === 'iova' ? 'page array + dma_iova_link, one sync per buffer' : 'sg_append_table + dma_map_sgtable'})`);
    L.push('    round      cpu-dirty  dev-dirty  iommu-dirty  pages-sent  device-bytes');
    for (const x of p.rounds) L.push(`    ${(x.phase === 'stop-copy' ? `${x.round} stop` : String(x.round)).padStart(9)}  ${String(x.cpuDirtyPages).padStart(9)}  ${String(x.deviceDirtyPages).padStart(9)}  ${String(x.iommuDirtyPages).padStart(11)}  ${String(x.pagesSent).padStart(10)}  ${String(x.deviceBytes).padStart(12)}`);
    L.push(`    bytes moved: ${p.bytesMoved.totalBytes} (RAM ${p.bytesMoved.ramBytes}, device ${p.bytesMoved.deviceBytes}); after stop ${p.bytesMoved.afterStopBytes}`);
    L.push(`    downtime: ${(p.downtime.simulatedNs / 1000).toFixed(1)} µs simulated (source ${(p.downtime.sourceNs / 1000).toFixed(1)}, wire ${(p.downtime.wireNs / 1000).toFixed(1)}, target ${(p.downtime.targetNs / 1000).toFixed(1)}), ${p.downtime.wallMs.toFixed(1)} ms wall`);
    L.push(`    buffers: ${p.buffers.registrations} registered, ${p.buffers.metadataBytesPerPage.toFixed(1)} metadata bytes/page, ${p.buffers.iotlbSyncsPerBuffer.toFixed(2)} IOTLB syncs/buffer, ${p.buffers.recycled} recycled`);
    L.push(`    device tracker: ${p.deviceTracker.requestedRanges} ranges requested, merged to ${p.deviceTracker.ranges}, page ${p.deviceTracker.pageSize}, ${p.deviceTracker.reports} reports in ${p.deviceTracker.messages} messages`);
    const v = p.verification;
    L.push(`    [${v.mismatchedPages === 0 ? ' ok ' : 'FAIL'}] target guest memory equals the source at stop (${v.guestPagesCompared} pages, ${v.mismatchedPages} differ)`);
    L.push(`    [${v.functionStateEqual ? ' ok ' : 'FAIL'}] target function state equals the source at stop (${v.functionStateBytes} bytes)`);
    L.push(`    [${v.targetContinued ? ' ok ' : 'FAIL'}] workload continues on the target (${v.targetPacketsAfterResume} packets DMAed)`);
    L.push(`    [${v.deviceTrackerCoversIommuDirty ? ' ok ' : 'FAIL'}] device tracker saw every page the IOMMU marked dirty`);
    L.push(`    [${v.sourceBuffersFreed ? ' ok ' : 'FAIL'}] source migration buffers all freed`);
    L.push(`    [${v.dmaDebugReports === 0 && v.iommuFaults === 0 ? ' ok ' : 'FAIL'}] no dma-debug report, no IOMMU fault (${v.dmaDebugReports} reports, ${v.iommuFaults} faults)`);
  }
  if (r.pathsIdentical !== null) L.push(`\n  [${r.pathsIdentical ? ' ok ' : 'FAIL'}] legacy path produced the identical stream and rounds`);
  if (r.failure !== undefined) L.push(`\n  stopped: ${r.failure.step}: ${r.failure.error}`);
  L.push(`\n${r.verified ? 'verified' : 'NOT verified'}`);
  return `${L.join('\n')}\n`;
}

export const vfioMigrationStack: StackDef<VfioMigrationResult> = {
  name: 'vfio-migration',
  summary: 'Live migration of an assigned mlx5 VF between two hosts with device dirty tracking; the IOVA and legacy paths compared.',
  help: `  vfio-migration
                Live migration of an assigned mlx5 VF between two hosts (each with an IOMMU):
                pre-copy rounds from the CPU dirty log and the device dirty tracker, STOP_COPY
                with chunked device state, RESUMING and RUNNING on the target; the IOVA path and
                the legacy scatterlist path compared (--mapping iova|legacy runs one of them).
                IOMMU strict by default (--iommu lazy). --size N: guest RAM in MiB (8..128,
                a multiple of 8; default 16).
`,
  defaultIommu: 'strict',
  iommuModes: ['strict', 'lazy'],
  mappings: ['iova', 'legacy'],
  comparesMappings: true,
  verifyOption: false,
  size: { label: 'guest RAM', unit: 'MiB', default: 16, min: 8, max: 128 },
  options: [],
  validate(req) {
    const c = checkRequest(vfioMigrationStack, req);
    // 8 guest regions, each a whole number of MiB (backed by 2 MiB and 1 MiB blocks).
    if (c.size % 8 !== 0) throw new StackUsageError(`--size (guest RAM in MiB) must be a multiple of 8, got ${c.size}`);
  },
  run(req) {
    vfioMigrationStack.validate(req);
    const c = checkRequest(vfioMigrationStack, req);
    return runVfioMigrationStack({
      seed: c.seed,
      iommu: c.iommu === 'lazy' ? 'lazy' : 'strict',
      guestMiB: c.size,
      path: c.mapping ?? 'both',
      ...(req.onMachine !== undefined ? { onMachine: req.onMachine } : {}),
      ...(req.onProgress !== undefined ? { onProgress: req.onProgress } : {}),
    });
  },
  format: formatVfioMigration,
};

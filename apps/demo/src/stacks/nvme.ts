/**
 * The "nvme" stack: a machine, a PCI root port with an NVMe function, optionally an IOMMU (strict
 * or lazy), the block layer's request DMA mapping (@dmakit/block-rq-dma), the NVMe host driver and
 * the simulated controller (@dmakit/nvme-pci), driven by a small fio-like workload generator
 * (nvme/workload.ts). Every write's bytes land on the namespace through the controller's DMA port;
 * every read comes back the same way and is checked against per-block checksums
 * (nvme/checksums.ts); the result (nvme/report.ts) prices the run with nvme-pci's cost model.
 */
import { createBlkRqDmaMapper } from '@dmakit/block-rq-dma';
import { BlkStatus, createMachine, errnoName, SZ_1G } from '@dmakit/dma-core';
import { createIommu } from '@dmakit/iommu-dma';
import type { Iommu } from '@dmakit/iommu-dma';
import { NvmeController, NvmeDev, nvmeBarSize } from '@dmakit/nvme-pci';
import { resolveNvmeOptions } from './nvme/options.js';
import type { NvmeIommuMode, NvmeStackOptions } from './nvme/options.js';
import { nvmeStackResult } from './nvme/report.js';
import type { NvmeStackResult } from './nvme/report.js';
import { SlotAllocError } from './nvme/slots.js';
import { FioWorkload } from './nvme/workload.js';
import type { FioCounts } from './nvme/workload.js';
import type { StackFailure } from './types.js';
import { wallNowMs } from './wallClock.js';

export type { NvmeIommuMode, NvmeStackOptions } from './nvme/options.js';
export type { NvmeLeaks, NvmePerIo, NvmeStackResult } from './nvme/report.js';
export { FIO_RW, MIXED_BSSPLIT } from './nvme/options.js';
export type { FioRw } from './nvme/options.js';


/** Build the stack, run the workload, tear it down and report. */
export function runNvmeStack(opts: NvmeStackOptions = {}): NvmeStackResult {
  const cfg = resolveNvmeOptions(opts);
  const { mode, lbaSize, qd, span } = cfg;

  // ---- topology: the NVMe function (behind an IOMMU unless 'off'), controller, host driver ----
  const m = opts.machine ?? createMachine({ ramBytes: 2 * SZ_1G, seed: opts.seed ?? 1, dmaDebug: 'warn' });
  const maxQueues = Math.max(4, opts.ioQueues ?? 1);
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, untrusted: opts.untrusted ?? false, bars: [{ size: nvmeBarSize(maxQueues), is64: true }] });
  let iommu: Iommu | null = null;
  if (mode !== 'off') {
    iommu = createIommu(m, { mode });
    iommu.attachDevice(dev);
  }
  const capacityLbas = Math.max(span / lbaSize, 2048);
  const ctrl = new NvmeController(m, dev, {
    namespaces: [{ nsid: 1, lbaSize, capacityLbas }],
    maxQueues,
    ...(opts.controllerLatency !== undefined ? { latencyNs: opts.controllerLatency } : {}),
  });
  const blk = createBlkRqDmaMapper();
  const host = new NvmeDev(m, dev, ctrl, blk, {
    ioQueues: opts.ioQueues ?? 1,
    ioQueueDepth: Math.max(64, qd + 1),
    mapping: cfg.mapping === 'sg' ? 'sg' : 'iter',
    ...(opts.sglThreshold !== undefined ? { sglThreshold: opts.sglThreshold } : {}),
  });
  // A failed probe or buffer allocation ends the run with the errno (the teardown below still runs).
  let failure: StackFailure | undefined;
  const probed = host.probe();
  if (probed !== 0) failure = { step: 'probe', error: `-${errnoName(probed)}: ${host.lastError}`, dataIntact: true };

  // ---- workload ----
  const workload = failure !== undefined ? null : newWorkload(() => new FioWorkload(m, host, {
    total: cfg.total,
    qd,
    bs: cfg.bs,
    rw: cfg.rw,
    lbaSize,
    spanBytes: span,
    verify: cfg.verify,
    resetAfter: cfg.resetAfter,
    ...(opts.onProgress !== undefined ? { onProgress: opts.onProgress } : {}),
  }), (err) => (failure = { step: 'I/O buffers', error: err, dataIntact: true }));
  const t0 = wallNowMs();
  const run = workload?.run() ?? NO_IO;
  const wallMs = wallNowMs() - t0;

  // ---- verify what the namespace holds (the controller's view), then tear down ----
  let verified = failure === undefined && run.ioErrors === 0 && run.mismatched === 0 && run.completed === cfg.total;
  let { mismatched, verifiedBytes } = run;
  if (workload !== null && cfg.verify && !workload.readOnly) {
    const ns = ctrl.namespace(1);
    if (ns === undefined) verified = false;
    else {
      const bad = workload.sums.namespaceMismatches(ns);
      if (bad > 0) verified = false;
      mismatched += bad;
      verifiedBytes += workload.sums.blocks * 512;
    }
  }
  const iommuStats = iommu?.stats() ?? null;
  const hs = { ...host.stats };
  const bs2 = { ...blk.stats };
  const sw = m.swiotlb.stats();
  const pools = host.pools;
  const liveBlocks = (pools.small?.stats.active ?? 0) + (pools.large?.stats.active ?? 0);
  host.remove();
  workload?.freeBuffers();
  iommu?.flushQueues();
  const after = iommu?.stats();
  const iovaRanges = after === undefined ? 0 : after.iovaAllocs - after.iovaFrees;
  const mappings = m.dmaDebug.enabled ? m.dmaDebug.dumpMappings(dev).length : 0;
  m.unbindDevice(dev);
  if (failure === undefined && run.ioErrors > 0) {
    const sts = Object.entries(BlkStatus).find(([, v]) => v === run.firstError)?.[0] ?? String(run.firstError);
    failure = { step: 'I/O', error: `${run.ioErrors} I/O(s) failed, the first with BLK_STS_${sts}`, dataIntact: mismatched === 0 };
  }

  return nvmeStackResult({
    ...(failure !== undefined ? { failure } : {}),
    cfg,
    counts: { ...run, mismatched, verifiedBytes },
    verified,
    wallMs,
    host: hs,
    blk: bs2,
    ctrl: ctrl.stats,
    swiotlb: sw,
    iommuStats,
    iommuFaults: iommu?.faults.length ?? 0,
    leaks: { poolBlocks: liveBlocks, mappings, iovaRanges, dmaDebugReports: m.dmaDebug.reports.length },
    simulatedNs: m.clock.now(),
    log: host.log.slice(0, 20),
    ...(opts.costModel !== undefined ? { costModel: opts.costModel } : {}),
  });
}

const NO_IO: FioCounts = { issued: 0, completed: 0, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, verifiedBytes: 0, ioErrors: 0, mismatched: 0, bytesTotal: 0, firstError: 0 };

/** The workload, or null after `onFail` got why its buffers could not be allocated. */
function newWorkload(make: () => FioWorkload, onFail: (error: string) => void): FioWorkload | null {
  try {
    return make();
  } catch (err) {
    if (!(err instanceof SlotAllocError)) throw err;
    onFail(err.message);
    return null;
  }
}

/** Run the same workload under strict, lazy and no IOMMU (fresh machines, same seed). */
export function compareIommuModes(opts: Omit<NvmeStackOptions, 'iommu' | 'machine'>): Record<NvmeIommuMode, NvmeStackResult> {
  return {
    strict: runNvmeStack({ ...opts, iommu: 'strict' }),
    lazy: runNvmeStack({ ...opts, iommu: 'lazy' }),
    off: runNvmeStack({ ...opts, iommu: 'off' }),
  };
}

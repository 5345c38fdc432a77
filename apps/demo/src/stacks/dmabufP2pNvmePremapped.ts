/**
 * `dmakit nvme --premapped`: the NVMe 4 KiB random-read workload into a pre-mapped dma-buf
 * (a system-heap buffer registered once with nvme-pci's `NvmePremappedDrive`), under strict, lazy and no
 * IOMMU, next to the same workload with per-I/O mapping (the nvme stack). The headline of the
 * dma-buf registered-buffer work: with pre-mapped buffers, NVMe throughput no longer depends on
 * the IOMMU mode (published on Optane: 570K / 1.93M / 5.01M IOPS per-I/O, 5.01M for all three
 * pre-mapped). Simulated IOPS come from the nvme stack's cost model (nvmeCost.ts) over the run's
 * counters; every read is checked against the namespace.
 */
import { createBlkRqDmaMapper } from '@dmakit/block-rq-dma';
import { BlkStatus, createMachine, isErrPtr, ReqOp, SZ_1G, SZ_1M } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import { DmaBufFdTable, SystemHeap, createDmaBufPort, dmaBufFd, dmaBufSgtMode, dmaBufVmapUnlocked, dmaBufVunmapUnlocked } from '@dmakit/dmabuf';
import { createIommu } from '@dmakit/iommu-dma';
import type { IommuStats } from '@dmakit/iommu-dma';
import { NvmePremappedDrive, nvmeBarSize } from '@dmakit/nvme-pci';
import { same } from './dmabufP2pRig.js';
import { runNvmeStack } from './nvme.js';
import type { NvmeIommuMode, NvmeStackResult } from './nvme.js';
import { NVME_DEFAULT_COST_MODEL, nvmeSimulatedCost, PUBLISHED_IOPS } from './nvmeCost.js';
import type { NvmeSimulatedCost } from './nvmeCost.js';
import { wallNowMs } from './wallClock.js';

/** Published pre-mapped IOPS (all three IOMMU modes). */
export const PUBLISHED_PREMAPPED_IOPS = 5_010_000;

const BS = 4096;
const LBA = 512;

export interface NvmePremappedOptions {
  readonly iommu: NvmeIommuMode;
  readonly seed?: number;
  readonly machine?: Machine;
  /** I/Os to complete. Default 2000. */
  readonly ios?: number;
  /** Outstanding I/Os (one 4 KiB slot of the registered buffer each). Default 32. */
  readonly qd?: number;
  /** Check every read against the namespace. Default true. */
  readonly verify?: boolean;
  /** Called every 1% of the run with (completed, total). */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface NvmePremappedResult {
  readonly stack: 'nvme-premapped';
  readonly iommu: NvmeIommuMode;
  readonly ios: number;
  readonly qd: number;
  readonly verified: boolean;
  readonly verifiedBytes: number;
  readonly ioErrors: number;
  readonly mismatched: number;
  /** How the registered buffer was mapped (once). */
  readonly mapping: string;
  readonly registrationMaps: number;
  readonly simulated: NvmeSimulatedCost;
  readonly perIo: { readonly iovaAllocs: number; readonly pteWrites: number; readonly iotlbInvalidations: number; readonly doorbells: number };
  readonly wallMs: number;
  readonly wallIops: number;
  readonly leaks: { readonly dmaDebugEntries: number; readonly iovaRanges: number; readonly dmaDebugReports: number };
}

/** 4 KiB random reads, QD `qd`, into slots of a registered system-heap dma-buf. */
export function runNvmePremapped(opts: NvmePremappedOptions): NvmePremappedResult {
  const mode = opts.iommu;
  const total = opts.ios ?? 2000;
  const qd = opts.qd ?? 32;
  const verify = opts.verify ?? true;
  if (!Number.isSafeInteger(total) || total < 1) throw new RangeError(`nvme --premapped: ios must be a positive integer, got ${total}`);
  if (!Number.isSafeInteger(qd) || qd < 1 || qd > 1023) throw new RangeError(`nvme --premapped: qd must be 1..1023, got ${qd}`);
  const m = opts.machine ?? createMachine({ ramBytes: SZ_1G, seed: opts.seed ?? 1, dmaDebug: 'warn' });
  const span = 16 * SZ_1M;
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: nvmeBarSize(4), is64: true }] });
  const iommu = mode === 'off' ? null : createIommu(m, { mode });
  iommu?.attachDevice(dev);
  const drive = new NvmePremappedDrive(m, dev, createBlkRqDmaMapper(), { lbaSize: LBA, capacityLbas: span / LBA, host: { ioQueues: 1, ioQueueDepth: Math.max(64, qd + 1) } });
  if (drive.probe() !== 0) throw new Error(`nvme --premapped: probe failed: ${drive.host.lastError}`);
  const { host, mapper } = drive;
  const ns = drive.ctrl.namespace(1);
  if (ns === undefined) throw new Error('nvme --premapped: no namespace');
  ns.writeLbas(0, m.rng.fill(new Uint8Array(span)));

  // Register the buffer once: userspace allocates it from the heap and hands the fd over.
  const fds = new DmaBufFdTable();
  const port = createDmaBufPort(fds);
  const heap = new SystemHeap(m);
  const buf = heap.allocate(qd * BS, 'nvme-fixed-buffers');
  if (isErrPtr(buf)) throw new Error('nvme --premapped: heap allocation failed');
  const fd = dmaBufFd(fds, buf);
  const pre = drive.register(port, fd);
  if (isErrPtr(pre)) throw new Error(`nvme --premapped: register failed (${pre})`);
  const mapping = pre.sgt === null ? 'unmapped' : (dmaBufSgtMode(pre.sgt) ?? (iommu === null ? 'dma-direct sg' : 'iommu sg'));
  const view = dmaBufVmapUnlocked(buf);
  if (isErrPtr(view)) throw new Error('nvme --premapped: vmap failed');
  const expect = new Uint8Array(BS);

  let issued = 0;
  let completed = 0;
  let ioErrors = 0;
  let mismatched = 0;
  let verifiedBytes = 0;
  const lbaOf = new Float64Array(qd);
  const progressStep = Math.max(1, Math.ceil(total / 100));
  const t0 = wallNowMs();
  const next = (slot: number): void => {
    if (issued >= total) return;
    const lba = m.rng.nextInt(span / BS) * (BS / LBA);
    lbaOf[slot] = lba;
    const done = (_r: unknown, st: BlkStatus): void => {
      completed++;
      if (st !== BlkStatus.OK) ioErrors++;
      else if (verify) {
        ns.readBytes((lbaOf[slot] ?? 0) * LBA, expect, 0, BS);
        const got = view.read(slot * BS, BS);
        if (!same(got, expect)) mismatched++;
        else verifiedBytes += BS;
      }
      if (opts.onProgress !== undefined && (completed % progressStep === 0 || completed === total)) opts.onProgress(completed, total);
      next(slot);
    };
    issued++;
    const st = drive.submit(pre, ReqOp.READ, lba, slot * BS, BS, done);
    if (st !== BlkStatus.OK) {
      completed++;
      ioErrors++;
      next(slot);
    }
  };
  for (let s = 0; s < qd; s++) next(s);
  for (let guard = 0; completed < issued; guard++) {
    m.scheduler.runUntilIdle();
    if (guard > total + 1000) throw new Error('nvme --premapped: the workload stopped making progress');
  }
  const wallMs = wallNowMs() - t0;

  const st: IommuStats | null = iommu?.stats() ?? null;
  const hs = { ...host.stats };
  const registrationMaps = pre.stats.maps;
  dmaBufVunmapUnlocked(buf, view);
  mapper.unregister(pre);
  fds.closeAll();
  drive.remove();
  iommu?.flushQueues();
  const after = iommu?.stats();
  // Nothing is mapped per I/O (directMaps 0) and nothing bounces.
  const counters = { ios: completed, bytes: completed * BS, directMaps: 0, doorbells: hs.sqDoorbells + hs.cqDoorbells, interrupts: hs.interrupts };
  const simulated = nvmeSimulatedCost({ ...counters, descriptors: hs.smallDescriptors + hs.largeDescriptors, bounceBytes: 0, queueDepth: qd, iommu: st }, NVME_DEFAULT_COST_MODEL);
  const per = (x: number): number => x / Math.max(1, completed);
  return {
    stack: 'nvme-premapped',
    iommu: mode,
    ios: completed,
    qd,
    verified: ioErrors === 0 && mismatched === 0 && completed === total,
    verifiedBytes,
    ioErrors,
    mismatched,
    mapping,
    registrationMaps,
    simulated,
    perIo: {
      iovaAllocs: per(st?.iovaAllocs ?? 0),
      pteWrites: per(st?.pteWrites ?? 0),
      iotlbInvalidations: per((st?.iotlbInvalidationsRange ?? 0) + (st?.iotlbInvalidationsFull ?? 0)),
      doorbells: per(hs.sqDoorbells + hs.cqDoorbells),
    },
    wallMs,
    wallIops: wallMs > 0 ? (completed * 1000) / wallMs : 0,
    leaks: {
      dmaDebugEntries: m.dmaDebug.dumpMappings(dev).length,
      iovaRanges: after === undefined ? 0 : after.iovaAllocs - after.iovaFrees,
      dmaDebugReports: m.dmaDebug.reports.length,
    },
  };
}

export interface NvmePremappedCompare {
  readonly premapped: Readonly<Record<NvmeIommuMode, NvmePremappedResult>>;
  readonly perIo: Readonly<Record<NvmeIommuMode, NvmeStackResult>>;
  readonly published: { readonly perIo: typeof PUBLISHED_IOPS; readonly premapped: number };
  readonly verified: boolean;
}

const MODES: readonly NvmeIommuMode[] = ['strict', 'lazy', 'off'];

export interface NvmePremappedCompareOptions {
  readonly seed?: number;
  readonly ios?: number;
  readonly qd?: number;
  readonly verify?: boolean;
  /** Called with each machine before it runs (roles 'strict premapped', 'strict per-I/O', ...). */
  readonly onMachine?: (machine: Machine, role: string) => void;
  /** Progress over the six runs, in completed I/Os. */
  readonly onProgress?: (done: number, total: number) => void;
}

/** The pre-mapped workload and the nvme stack's per-I/O workload (4 KiB randread), per IOMMU mode. */
export function compareNvmePremapped(opts: NvmePremappedCompareOptions = {}): NvmePremappedCompare {
  const premapped = {} as Record<NvmeIommuMode, NvmePremappedResult>;
  const perIo = {} as Record<NvmeIommuMode, NvmeStackResult>;
  const seed = opts.seed ?? 1;
  const ios = opts.ios ?? 2000;
  const onProgress = opts.onProgress;
  const progress = (run: number): { onProgress?: (done: number) => void } =>
    onProgress === undefined
      ? {}
      : {
          onProgress: (done: number) => {
            onProgress(run * ios + done, 2 * MODES.length * ios);
          },
        };
  MODES.forEach((mode, i) => {
    const common = { seed, ios, ...(opts.qd === undefined ? {} : { qd: opts.qd }), ...(opts.verify === undefined ? {} : { verify: opts.verify }) };
    // The same machines runNvmePremapped and runNvmeStack build by default, made here so the caller sees them.
    const m1 = createMachine({ ramBytes: SZ_1G, seed, dmaDebug: 'warn' });
    opts.onMachine?.(m1, `${mode} premapped`);
    premapped[mode] = runNvmePremapped({ iommu: mode, machine: m1, ...common, ...progress(2 * i) });
    const m2 = createMachine({ ramBytes: 2 * SZ_1G, seed, dmaDebug: 'warn' });
    opts.onMachine?.(m2, `${mode} per-I/O`);
    perIo[mode] = runNvmeStack({ iommu: mode, bs: BS, rw: 'randread', spanBytes: 16 * SZ_1M, machine: m2, ...common, ...progress(2 * i + 1) });
  });
  const verified = MODES.every((mo) => premapped[mo].verified && perIo[mo].verified);
  return { premapped, perIo, published: { perIo: PUBLISHED_IOPS, premapped: PUBLISHED_PREMAPPED_IOPS }, verified };
}

function iops(x: number): string {
  return x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : `${(x / 1e3).toFixed(0)}K`;
}

/** One table: simulated IOPS and IOTLB invalidations per I/O, per-I/O vs pre-mapped, per mode. */
export function formatNvmePremapped(c: NvmePremappedCompare): string {
  const lines = [
    `nvme --premapped: 4 KiB random reads, QD ${c.premapped.strict.qd}, ${c.premapped.strict.ios} I/Os per cell: ${c.verified ? 'every read verified' : 'VERIFICATION FAILED'}`,
    '',
    '  IOMMU   | per-I/O map: sim IOPS (published) | inval/IO | pre-mapped dma-buf: sim IOPS (published) | inval/IO | buffer mapping',
    '  ------- | --------------------------------- | -------- | ---------------------------------------- | -------- | --------------',
  ];
  for (const mode of MODES) {
    const a = c.perIo[mode];
    const b = c.premapped[mode];
    const left = `${iops(a.simulated.simulatedIops)} (${iops(c.published.perIo[mode])})`;
    const right = `${iops(b.simulated.simulatedIops)} (${iops(c.published.premapped)})`;
    lines.push(`  ${mode.padEnd(7)} | ${left.padEnd(33)} | ${a.perIo.iotlbInvalidations.toFixed(3).padStart(8)} | ${right.padEnd(40)} | ${b.perIo.iotlbInvalidations.toFixed(3).padStart(8)} | ${b.mapping}, once`);
  }
  lines.push('', '  Simulated IOPS: min(CPU-bound, device-bound) from the nvme stack cost model (nvmeCost.ts) over each run\'s counters.');
  return `${lines.join('\n')}\n`;
}

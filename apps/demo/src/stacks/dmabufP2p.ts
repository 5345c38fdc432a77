/**
 * The "dmabuf-p2p" stack: a GPU, an NVMe drive and an RDMA NIC in one PCI topology. The GPU and
 * the drive share a switch; the NIC sits under another root port of the same (allow-listed) host
 * bridge; every device is behind the IOMMU.
 *
 *   1. the drive reads a file straight into GPU memory (BUS_ADDR: the switch routes it, the IOMMU
 *      never sees it);
 *   2. the NIC reads the same buffer through the host bridge (one IOVA range, MMIO links, one sync);
 *   3. the GPU evicts the buffer to system memory and restores it while both keep transferring
 *      (move_notify, re-map, fence wait, bytes verified);
 *   4. a VFIO-owned function exports BAR ranges; memory decode off revokes them (-ENODEV) and on
 *      restores them;
 *   5. a machine whose host bridge is not on the P2P allow-list refuses the NIC the way the kernel
 *      does (-EINVAL from dma_buf_map_attachment, "cannot be used for peer-to-peer DMA").
 *
 * The drive is nvme-pci's `NvmePremappedDrive` (host driver + simulated controller) with the GPU
 * buffer registered as a pre-mapped I/O buffer (no per-I/O mapping); the NIC is the mlx5-like HCA
 * with a dma-buf MR (`mlx5IbRegUserMrDmabuf`: mapped on first fault, zapped on move_notify), read
 * and written by a second HCA over an RC QP pair (`Mlx5RcPair`). Every importer is a package's
 * own, each with its own move_notify, as in the kernel. This file runs the workload and reports;
 * the topology is in dmabufP2pRig.ts, steps 1-3 in dmabufP2pSteps.ts, steps 4-5 in
 * dmabufP2pEdges.ts.
 */
import { createMachine, errnoName, SZ_1G, SZ_1M } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import { DmaBufFdTable, GpuVramExporter, SystemHeap, createDmaBufPort, dmaBufFd, dmaBufMappingStats, dmaBufVmapUnlocked, dmaBufVunmapUnlocked } from '@dmakit/dmabuf';
import type { IommuStats } from '@dmakit/iommu-dma';
import { mlx5IbDeregDmabufMr, mlx5IbRegUserMrDmabuf } from '@dmakit/rdma-umem-odp';
import { notAllowListed, vfioRevoke } from './dmabufP2pEdges.js';
import { DmabufSetupError, LBA, RDMA_RW, Unwind, buildDmabufTopology, createDmabufDrive, createDmabufFabric } from './dmabufP2pRig.js';
import { TRAFFIC_ROUNDS, driveReadsFile, nicServesMr, trafficUnderEviction } from './dmabufP2pSteps.js';
import type { DmabufStepResult } from './dmabufP2pSteps.js';
import { checkRequest, progressReporter } from './types.js';
import type { StackDef, StackFailure } from './types.js';

export type { DmabufStepResult } from './dmabufP2pSteps.js';

export interface DmabufP2pResult {
  readonly stack: 'dmabuf-p2p';
  readonly verified: boolean;
  /** Where the run stopped (setup errno) or the first errno / status a step's operation got. */
  readonly failure?: StackFailure;
  readonly verifiedBytes: number;
  readonly steps: DmabufStepResult[];
  /** The IOMMU's mode and counters, or null with --iommu off (dma-direct: per-range MMIO maps). */
  readonly iommu: { readonly mode: 'strict' | 'lazy'; readonly stats: IommuStats; readonly faults: number } | null;
  readonly moveNotifies: number;
  readonly remaps: number;
  readonly dmaDebugReports: number;
  readonly simulatedNs: number;
  /** Live dma-buf mappings, IOVA states and dma-debug entries after teardown (all 0 = no leak). */
  readonly leaks: { readonly mappings: number; readonly iovaStates: number; readonly debugEntries: number; readonly vramPages: number };
}

export interface DmabufP2pOptions {
  readonly seed?: number;
  readonly machine?: Machine;
  /** IOMMU mode for every device (default strict); 'off' = dma-direct. */
  readonly iommu?: 'strict' | 'lazy' | 'off';
  /** Bytes of the "file" the drive reads into GPU memory (a multiple of 256 KiB up to 32 MiB, default 4 MiB). */
  readonly fileBytes?: number;
  /** Called with every machine the stack creates itself, before any DMA ('host' unless `machine` is given; 'not-allow-listed host'). */
  readonly onMachine?: (m: Machine, role: string) => void;
  /** Progress in units of work: steps 1 and 2, the 24 traffic rounds of step 3, steps 4, 5 and the teardown. */
  readonly onProgress?: (done: number, total: number) => void;
}

const DMABUF_P2P_UNITS = TRAFFIC_ROUNDS + 5;
const GPU_IOVA = 0x1000_0000;
const PEER_IOVA = 0x2000_0000;

export function runDmabufP2pStack(opts: DmabufP2pOptions = {}): DmabufP2pResult {
  const mode = opts.iommu ?? 'strict';
  const fileBytes = opts.fileBytes ?? 4 * SZ_1M;
  if (!Number.isSafeInteger(fileBytes) || fileBytes <= 0 || fileBytes % (256 * 1024) !== 0 || fileBytes > 32 * SZ_1M) {
    throw new RangeError(`dmabuf-p2p: fileBytes must be a multiple of 256 KiB up to 32 MiB, got ${fileBytes}`);
  }
  let m = opts.machine;
  if (m === undefined) {
    m = createMachine({ ramBytes: SZ_1G, seed: opts.seed ?? 1 });
    opts.onMachine?.(m, 'host');
  }
  const progress = progressReporter(opts.onProgress, DMABUF_P2P_UNITS);
  let unit = 0;
  const tick = (): void => {
    progress(++unit);
  };
  const rig = buildDmabufTopology(m, mode);
  const iommu = rig.iommu;
  const live0 = dmaBufMappingStats.live;
  const fds = new DmaBufFdTable();
  const port = createDmaBufPort(fds);
  const gpu = new GpuVramExporter(m, rig.gpuDev);
  const heap = new SystemHeap(m);

  // The drive holds two files (A at LBA 0, B after it) and a scratch region; the GPU buffer
  // (VRAM in 1 MiB ranges) is exported and handed around by fd, like userspace would.
  const fileA = m.rng.fill(new Uint8Array(fileBytes));
  const fileB = m.rng.fill(new Uint8Array(fileBytes));
  const fileLbas = fileBytes / LBA;
  // Setup and teardown as the kernel's goto-unwind: every acquisition pushes its release; an
  // errno on the way (probe, export, heap, register, reg_mr, vmap) becomes the stack's failure
  // and what was taken is given back in reverse.
  const undo = new Unwind();
  const steps: DmabufStepResult[] = [];
  let failure: StackFailure | undefined;
  let moveNotifies = 0;
  let remaps = 0;
  const must = <T extends object>(v: T | number, what: string): T => {
    if (typeof v === 'number') throw new DmabufSetupError(`${what} -${errnoName(v)}`);
    return v;
  };
  try {
    const drive = createDmabufDrive(rig, 3 * fileLbas);
    undo.push(() => {
      drive.remove();
    });
    drive.ctrl.namespace(1)?.writeLbas(0, fileA);
    drive.ctrl.namespace(1)?.writeLbas(fileLbas, fileB);
    const exported = must(gpu.exportBuffer(fileBytes, { name: 'frame', maxRange: SZ_1M }), 'GPU export');
    const fd = dmaBufFd(fds, exported);
    const sink = must(heap.allocate(fileBytes, 'rdma-sink'), 'system heap allocation');
    const sinkFd = dmaBufFd(fds, sink);
    const buf = must(port.dmaBufGet(fd), 'dma_buf_get');
    undo.push(() => {
      port.dmaBufPut(buf);
    });

    // The importers: the drive registers the buffer (mapped now); the NIC and its peer register MRs
    // (mapped on first access).
    const pre = must(drive.register(port, fd), 'nvme dma-buf register');
    undo.push(() => {
      drive.unregister(pre);
    });
    const fabric = createDmabufFabric(rig);
    const mrGpu = must(mlx5IbRegUserMrDmabuf(fabric.local, fabric.pdLocal, port, 0, fileBytes, GPU_IOVA, fd, RDMA_RW), 'ibv_reg_dmabuf_mr (GPU buffer)');
    undo.push(() => {
      mlx5IbDeregDmabufMr(mrGpu);
    });
    const mrSink = must(mlx5IbRegUserMrDmabuf(fabric.remote, fabric.pdRemote, port, 0, fileBytes, PEER_IOVA, sinkFd, RDMA_RW), 'ibv_reg_dmabuf_mr (sink)');
    undo.push(() => {
      mlx5IbDeregDmabufMr(mrSink);
    });
    const sinkMap = must(dmaBufVmapUnlocked(sink), 'dma_buf_vmap');
    undo.push(() => {
      dmaBufVunmapUnlocked(sink, sinkMap);
    });
    const w = { m, rig, gpu, buf, drive, pre, fabric, mrGpu, mrSink, sinkMap, fileA, fileB, fileBytes, tick };

    steps.push(driveReadsFile(w));
    tick();
    steps.push(nicServesMr(w));
    tick();
    steps.push(trafficUnderEviction(w));
    steps.push(vfioRevoke(m, fds, port, heap, rig, fabric));
    tick();
    steps.push(notAllowListed(opts.seed ?? 1, mode, opts.onMachine));
    tick();
    moveNotifies = pre.stats.moveNotifies + mrGpu.umem.stats.moveNotifies;
    remaps = pre.stats.maps + mrGpu.umem.stats.maps;
  } catch (err) {
    if (!(err instanceof DmabufSetupError)) throw err;
    failure = { step: 'setup', error: err.message, dataIntact: true };
  }
  undo.run();
  fds.closeAll();
  iommu?.flushQueues();
  // A step whose operation got an errno or status is not verified because of it: the first such
  // error is the stack's failure; every other step must have verified its bytes.
  const failed = steps.find((x) => x.error !== undefined);
  if (failure === undefined && failed?.error !== undefined) {
    failure = { step: failed.step, error: failed.error, dataIntact: steps.every((x) => x.verified || x.error !== undefined) };
  }
  const leaks = {
    mappings: dmaBufMappingStats.live - live0,
    iovaStates: m.dmaDebug.iovaStates,
    debugEntries: m.dmaDebug.entries,
    vramPages: gpu.stats.vramPagesUsed,
  };
  const noLeak = leaks.mappings === 0 && leaks.iovaStates === 0 && leaks.debugEntries === 0 && leaks.vramPages === 0 && heap.liveBuffers === 0;
  steps.push({ step: 'teardown: nothing leaked', device: '-', bytes: 0, verified: noLeak, detail: JSON.stringify(leaks) });
  tick();
  return {
    stack: 'dmabuf-p2p',
    ...(failure !== undefined ? { failure } : {}),
    verified: failure === undefined && steps.every((s) => s.verified),
    verifiedBytes: steps.reduce((n, s) => n + (s.verified ? s.bytes : 0), 0),
    steps,
    iommu: iommu === null || mode === 'off' ? null : { mode, stats: iommu.stats(), faults: iommu.faults.length },
    moveNotifies,
    remaps,
    dmaDebugReports: m.dmaDebug.reports.length,
    simulatedNs: m.clock.now(),
    leaks,
  };
}

/** The table the CLI prints. */
export function formatDmabufP2p(r: DmabufP2pResult): string {
  const lines: string[] = [];
  lines.push(`dmabuf-p2p stack (IOMMU ${r.iommu?.mode ?? 'off'}): ${r.verified ? 'every step verified' : 'VERIFICATION FAILED'}`);
  if (r.failure !== undefined) lines.push(`stopped: ${r.failure.step}: ${r.failure.error}`);
  lines.push('');
  const w = Math.max(...r.steps.map((s) => s.step.length));
  for (const s of r.steps) {
    lines.push(`  ${s.verified ? 'ok  ' : 'FAIL'}  ${s.step.padEnd(w)}  ${s.device.padEnd(8)} ${String(s.bytes).padStart(9)} B  ${s.detail}`);
  }
  lines.push('');
  const st = r.iommu?.stats;
  const io = st === undefined ? 'no IOMMU' : `IOMMU: ${st.iovaAllocs} IOVA allocs, ${st.pteWrites} PTE writes, ${st.iotlbInvalidationsRange} range invalidations, ${st.iotlbInvalidationsFull} full flushes, ${r.iommu?.faults ?? 0} faults`;
  lines.push(`  move_notify ${r.moveNotifies}, re-maps ${r.remaps}; ${io}`);
  lines.push(`  verified ${r.verifiedBytes} bytes in ${(r.simulatedNs / 1000).toFixed(1)} us simulated; dma-debug reports: ${r.dmaDebugReports}`);
  return `${lines.join('\n')}\n`;
}

export const dmabufP2pStack: StackDef<DmabufP2pResult> = {
  name: 'dmabuf-p2p',
  summary: 'A GPU buffer shared through dma-buf, written peer-to-peer by a disk and read by a NIC.',
  help: `  dmabuf-p2p    GPU memory shared through dma-buf: an NVMe drive writes it peer-to-peer (bus
                addresses), an RDMA NIC reads it through the host bridge (IOVA + MMIO), the GPU
                evicts and restores it under traffic, a VFIO BAR export is revoked and restored,
                and a host bridge off the P2P allow-list is refused. IOMMU strict by default.
                --size N: the file read into GPU memory, in MiB (1..32, default 4).
`,
  defaultIommu: 'strict',
  iommuModes: ['strict', 'lazy', 'off'],
  mappings: ['iova'],
  comparesMappings: false,
  verifyOption: false,
  size: { label: 'file', unit: 'MiB', default: 4, min: 1, max: 32 },
  options: [],
  validate(req) {
    checkRequest(dmabufP2pStack, req);
  },
  run(req) {
    const c = checkRequest(dmabufP2pStack, req);
    const machine = createMachine({ ramBytes: SZ_1G, seed: c.seed, dmaDebug: 'warn' });
    req.onMachine?.(machine, 'host');
    return runDmabufP2pStack({
      machine,
      seed: c.seed,
      iommu: c.iommu,
      fileBytes: c.size * SZ_1M,
      ...(req.onMachine !== undefined ? { onMachine: req.onMachine } : {}),
      ...(req.onProgress !== undefined ? { onProgress: req.onProgress } : {}),
    });
  },
  format: formatDmabufP2p,
};

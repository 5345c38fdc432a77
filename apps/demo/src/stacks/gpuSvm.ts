/**
 * The "gpu-svm" stack: a GPU-like device behind a strict IOMMU shares a process's address space
 * through HMM (shared virtual memory). The device faults system pages in (hmm_range_fault +
 * hmm_dma_map_pfn into one IOVA window per 2 MiB), computes into the buffer, migrates the hot
 * pages into its device-private memory, the CPU touches one of them and it migrates back
 * (migrate_to_ram), the device faults it in again at the same IOVA slot. After every step the
 * mirror is checked against the CPU page table and the HMM_PFN_DMA_MAPPED flags are counted.
 */
import { bytesEqual, createMachine, DMA_MAPPING_ERROR, Errno, errnoName, SegvError, MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, SZ_1G, SZ_2M } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import { createIommu } from '@dmakit/iommu-dma';
import {
  DMIRROR_CHUNK_PAGES,
  DmirrorDevice,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_WRITE,
  hmmDmaStats,
  hmmDmaStatsReset,
  hmmStats,
  hmmStatsReset,
} from '@dmakit/hmm';
import type { Dmirror } from '@dmakit/hmm';
import { formatGpuSvm } from './gpuSvm/report.js';
import type { GpuSvmResult, GpuSvmStep } from './gpuSvm/report.js';
import { checkRequest } from './types.js';
import type { StackDef, StackFailure } from './types.js';

export { formatGpuSvm } from './gpuSvm/report.js';
export type { GpuSvmResult, GpuSvmStep } from './gpuSvm/report.js';

export interface GpuSvmOptions {
  readonly seed?: number;
  readonly machine?: Machine;
  readonly iommu?: 'strict' | 'lazy' | 'off';
  /** Buffer size in pages (default 1024 = 4 MiB, two mirror chunks). */
  readonly pages?: number;
  /** Pages the GPU migrates to its memory (default a quarter of the buffer). */
  readonly hotPages?: number;
  /** Progress in steps (GPU_SVM_STEPS of them). */
  readonly onProgress?: (done: number, total: number) => void;
}

/** The steps the stack runs (each one pushes a GpuSvmStep). */
export const GPU_SVM_STEPS = 8;

export function runGpuSvmStack(opts: GpuSvmOptions = {}): GpuSvmResult {
  const m = opts.machine ?? createMachine({ ramBytes: 4 * SZ_1G, seed: opts.seed ?? 1, dmaDebug: 'warn' });
  const npages = opts.pages ?? 1024;
  const hot = Math.min(opts.hotPages ?? Math.floor(npages / 4), npages);
  const mode = opts.iommu ?? 'strict';
  const iommu = mode === 'off' ? null : createIommu(m, { mode });
  const dev = m.pci.addDevice({ name: 'gpu0', dmaMaskBits: 48 });
  iommu?.attachDevice(dev);
  const windows = iommu === null ? 0 : Math.ceil(npages / DMIRROR_CHUNK_PAGES);
  const gpu = DmirrorDevice.create({ dev, memory: m.memory, devmemBytes: Math.max(hot, 1) * PAGE_SIZE * 2, name: 'gpu0' });
  if (typeof gpu === 'number') throw new Error(`gpu-svm: device memory hot-plug failed (${gpu})`);
  hmmStatsReset();
  hmmDmaStatsReset();
  const proc = m.createProcess();
  const mm = proc.mm;
  const len = npages * PAGE_SIZE;
  const buf = mm.mmap({ length: len, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  if (buf < 0) throw new Error(`gpu-svm: mmap failed (${buf})`);
  const mirror: Dmirror = gpu.open(mm);
  const steps: GpuSvmStep[] = [];
  const push = (step: string, bytes: number, ok: boolean, detail: string): void => {
    const inv = mirror.checkInvariants();
    steps.push({ step, bytes, verified: ok && inv.length === 0, detail: inv.length === 0 ? detail : `${detail}; invariant broken: ${inv[0] ?? ''}`, mirror: mirror.summary() });
    opts.onProgress?.(steps.length, GPU_SVM_STEPS);
  };

  // A dmirror call that fails with an errno other than the one a step expects, or a CPU access the
  // kernel answers with a signal (SIGBUS on VM_FAULT_OOM), ends the run there: the mirror is
  // closed and the process exits (what the kernel does for a killed process), and the errno or
  // signal is the stack's failure.
  let failure: StackFailure | undefined;
  const must = (ret: number, step: string, expected = 0): void => {
    if (ret < 0 && ret !== expected) throw new GpuSvmStop(step, `-${errnoName(ret)}`);
  };
  try {
  // 1. The CPU fills the buffer.
  const data = m.rng.fill(new Uint8Array(len));
  mm.write(buf, data);

  // A helper process forks off and exits: fork write-protects the buffer (copy-on-write), so
  // the GPU first sees read-only pages.
  const helper = proc.fork();
  if (typeof helper === 'number') throw new GpuSvmStop('fork', `-${errnoName(helper)}`);
  const helperSaw = helper.mm.read(buf, PAGE_SIZE);
  helper.exit();

  // 2. The GPU reads it through its mirror: every page faults in through HMM and the IOMMU.
  const r1 = mirror.read(buf, npages);
  must(r1.ret, 'GPU reads the CPU buffer');
  const s1 = mirror.summary();
  const readOnly = mirror.lookup(buf)?.write === false;
  // kernel: hmm_dma_map_alloc() falls back to a dma_map_page() per page when dma_iova_try_alloc()
  // fails (e.g. no IOVA space): fewer windows, same data. The fixed-slot checks need the windows.
  const allWindows = s1.iovaWindows === windows;
  push(
    'GPU reads the CPU buffer (HMM fault-in, one IOVA window per 2 MiB)',
    len,
    r1.ret === 0 && bytesEqual(r1.data, data) && bytesEqual(helperSaw, data.subarray(0, PAGE_SIZE)) && readOnly && s1.dmaMapped === npages && s1.iovaWindows <= windows,
    `${r1.faults} device fault(s), ${s1.dmaMapped} PFN words DMA_MAPPED (read-only after the helper's fork), ${s1.iovaWindows} IOVA windows, ${s1.metadataBytes / npages} B/page of HMM metadata`,
  );

  // Fixed slots: page i of a 2 MiB chunk sits at its window's base + i * PAGE_SIZE. The buffer need
  // not start on a chunk boundary (mmap places it top-down, so a size that is not a multiple of
  // 512 pages puts its first pages at the top of the chunk below): the page step 7 reads back is
  // compared with a neighbour in its own chunk, and with the slot it had before it migrated.
  const target = Math.min(3, hot - 1);
  const chunkOf = (p: number): number => Math.floor((buf + p * PAGE_SIZE) / SZ_2M);
  const neighbour = [target + 1, target - 1].find((p) => p >= 0 && p < npages && chunkOf(p) === chunkOf(target));
  const slotOf = (p: number | undefined): number => (p === undefined ? DMA_MAPPING_ERROR : (mirror.lookup(buf + p * PAGE_SIZE)?.addr ?? DMA_MAPPING_ERROR));
  const slotTarget = slotOf(target);
  const slotsFixed = neighbour === undefined || slotOf(neighbour) - slotTarget === (neighbour - target) * PAGE_SIZE;

  // 3. The GPU computes (x ^ 0x5a) into the lower half; the CPU checks.
  const half = Math.floor(npages / 2);
  const upper = data.slice(0, half * PAGE_SIZE).map((x) => x ^ 0x5a);
  const w = mirror.write(buf, upper);
  must(w.ret, 'GPU writes results');
  const cpuUpper = mm.read(buf, upper.length);
  const remapped = hmmDmaStats.remapped;
  push(
    'GPU writes results, the CPU reads them',
    upper.length,
    w.ret === 0 && bytesEqual(cpuUpper, upper) && remapped >= half && mirror.lookup(buf)?.write === true,
    `${w.faults} write-upgrade fault(s): ${remapped} DMA_MAPPED entries kept their IOVA slot (hmm_dma_map_pfn flag resync)`,
  );
  data.set(upper, 0);

  // 4. Hot pages move to device memory: their DMA mappings go, device PTEs point at local memory.
  const mig = mirror.migrateToDevice(buf, hot);
  must(mig.ret, 'GPU migrates hot pages to device memory');
  const snap = mirror.snapshot(buf, hot);
  const allLocal = snap.data.every((p) => p === (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE));
  const s4 = mirror.summary();
  if (s4.localPtes < hot) {
    // migrate_vma is best effort: a page whose copy could not be mapped (-ENOMEM) stays in RAM.
    // The run stops; the CPU's view of the whole buffer must still be exactly the data.
    throw new GpuSvmStop('GPU migrates hot pages to device memory', `-ENOMEM: ${hot - s4.localPtes} of ${hot} pages stayed in RAM`, bytesEqual(mm.read(buf, len), data));
  }
  push(
    'GPU migrates hot pages to its device-private memory',
    hot * PAGE_SIZE,
    mig.ret === 0 && mig.cpages === hot && allLocal && bytesEqual(mig.data, data.subarray(0, hot * PAGE_SIZE)) && s4.localPtes === hot && s4.dmaMapped === npages - hot,
    `${mig.cpages} pages migrated by DMA, snapshot DEV_PRIVATE_LOCAL|WRITE, ${s4.dmaMapped} pages still DMA_MAPPED, ${gpu.devicePagesInUse} device pages in use`,
  );

  // 5. The GPU updates a hot page in its own memory (no DMA).
  const bumped = data.slice(target * PAGE_SIZE, (target + 1) * PAGE_SIZE).map((x) => (x + 1) & 0xff);
  const portWritesBefore = dev.portStats.writes;
  const w5 = mirror.write(buf + target * PAGE_SIZE, bumped);
  must(w5.ret, 'GPU updates a hot page');
  data.set(bumped, target * PAGE_SIZE);
  push('GPU updates a hot page in device memory', PAGE_SIZE, w5.ret === 0 && dev.portStats.writes === portWritesBefore, 'local access, no DMA through the IOMMU');

  // 6. The CPU touches that page: migrate_to_ram copies it back; the device's entry is gone.
  const before = mirror.stats.devmemFaults;
  const cpuView = mm.read(buf + target * PAGE_SIZE, PAGE_SIZE);
  const gone = mirror.lookup(buf + target * PAGE_SIZE) === undefined;
  push(
    'CPU touches a hot page: it migrates back to RAM',
    PAGE_SIZE,
    bytesEqual(cpuView, bumped) && mirror.stats.devmemFaults === before + 1 && gone,
    `migrate_to_ram ran ${mirror.stats.devmemFaults - before} time(s); the device PTE was invalidated`,
  );

  // 7. The GPU reads it again: faulted in through HMM at the same fixed IOVA slot.
  const r7 = mirror.read(buf + target * PAGE_SIZE, 1);
  must(r7.ret, 'GPU reads the page again');
  const e7 = mirror.lookup(buf + target * PAGE_SIZE);
  const slotOk = e7 !== undefined && !e7.local && e7.dmaMapped && (iommu === null || !allWindows || (e7.addr === slotTarget && slotsFixed));
  const inChunk = ((buf + target * PAGE_SIZE) % SZ_2M) / PAGE_SIZE;
  push(
    'GPU reads the page again from RAM',
    PAGE_SIZE,
    r7.ret === 0 && bytesEqual(r7.data, bumped) && slotOk,
    iommu === null
      ? `DMA address 0x${(e7?.addr ?? 0).toString(16)} (dma-direct, kept in the dma list), DMA_MAPPED again`
      : `IOVA slot 0x${(e7?.addr ?? 0).toString(16)} = window + ${inChunk} pages (the fixed slot it had before migrating), DMA_MAPPED again`,
  );

  // 8. The CPU unmaps part of the buffer while the GPU keeps working on the rest.
  const holeAt = half + 2;
  mm.munmap(buf + holeAt * PAGE_SIZE, 2 * PAGE_SIZE);
  const r8 = mirror.read(buf + half * PAGE_SIZE, npages - half);
  must(r8.ret, 'GPU reads across the hole', -Errno.EFAULT);
  const after = mirror.read(buf + (holeAt + 2) * PAGE_SIZE, npages - holeAt - 2);
  must(after.ret, 'GPU reads past the hole');
  push(
    'CPU unmaps two pages; the GPU keeps reading the rest',
    after.data.length,
    r8.ret === -14 && r8.cpages === 2 && after.ret === 0 && bytesEqual(after.data, data.subarray((holeAt + 2) * PAGE_SIZE)),
    `device read across the hole fails with -EFAULT after ${r8.cpages} pages, the rest reads back verified`,
  );

  // 9. Everything goes back: migrate the remaining hot pages home and verify the whole buffer.
  const back = mirror.migrateToSystem(buf, hot);
  must(back.ret, 'hot pages migrate back');
  const cpuAll = mm.read(buf, holeAt * PAGE_SIZE);
  push('hot pages migrate back, the CPU verifies the buffer', cpuAll.length, back.ret === 0 && bytesEqual(cpuAll, data.subarray(0, holeAt * PAGE_SIZE)), `${back.cpages} pages migrated back by DMA`);

  } catch (err) {
    if (err instanceof GpuSvmStop) failure = { step: err.step, error: err.error, dataIntact: err.dataIntact && steps.every((x) => x.verified) };
    else if (err instanceof SegvError) failure = { step: 'CPU access to the shared buffer', error: `${err.reason === 'oom' ? 'SIGBUS' : 'SIGSEGV'} (${err.message})`, dataIntact: steps.every((x) => x.verified) };
    else throw err;
  }
  const gpuStats = { ...mirror.stats, devicePagesInUse: gpu.devicePagesInUse, copiesToDevice: gpu.copies.toDevice, copiesToSystem: gpu.copies.toSystem };
  mirror.close();
  proc.exit();
  const leaks = { dmaMappings: m.dmaDebug.entries, devicePages: gpu.devicePagesInUse };
  return {
    stack: 'gpu-svm',
    ...(failure !== undefined ? { failure } : {}),
    verified: failure === undefined && steps.every((s) => s.verified) && leaks.dmaMappings === 0 && leaks.devicePages === 0,
    verifiedBytes: steps.reduce((t, s) => t + (s.verified ? s.bytes : 0), 0),
    steps,
    gpu: gpuStats,
    hmm: { ...hmmStats },
    hmmDma: { ...hmmDmaStats },
    iommu: iommu === null || mode === 'off' ? null : { mode, stats: iommu.stats(), faults: iommu.faults.length },
    dmaDebugReports: m.dmaDebug.reports.length,
    leaks,
  };
}

/** A step of the stack got an errno (or the process a signal): the run stops there. */
class GpuSvmStop extends Error {
  override readonly name = 'GpuSvmStop';
  constructor(
    readonly step: string,
    readonly error: string,
    readonly dataIntact = true,
  ) {
    super(`gpu-svm: ${step}: ${error}`);
  }
}

export const gpuSvmStack: StackDef<GpuSvmResult> = {
  name: 'gpu-svm',
  summary: 'A GPU mirroring a process through HMM, migrating pages to device-private memory and back.',
  help: `  gpu-svm       A GPU sharing a process's memory through HMM: it faults system pages in (one
                IOVA window per 2 MiB), migrates hot pages to device-private memory, the CPU
                touches one and it migrates back; DMA_MAPPED flags checked. IOMMU strict default.
                --size N: the shared buffer in pages (16..16384, default 1024).
`,
  defaultIommu: 'strict',
  iommuModes: ['strict', 'lazy', 'off'],
  mappings: ['iova'],
  comparesMappings: false,
  verifyOption: false,
  size: { label: 'shared buffer', unit: 'pages', default: 1024, min: 16, max: 16384 },
  options: [],
  validate(req) {
    checkRequest(gpuSvmStack, req);
  },
  run(req) {
    const c = checkRequest(gpuSvmStack, req);
    const machine = createMachine({ ramBytes: 4 * SZ_1G, seed: c.seed, dmaDebug: 'warn' });
    req.onMachine?.(machine, 'host');
    return runGpuSvmStack({ machine, iommu: c.iommu, pages: c.size, ...(req.onProgress !== undefined ? { onProgress: req.onProgress } : {}) });
  },
  format: formatGpuSvm,
};

/**
 * The "nvme" stack: a machine, a PCI root port with an NVMe function, optionally an IOMMU (strict
 * or lazy), the block layer's request DMA mapping (@dmakit/block-rq-dma), the NVMe host driver and
 * the simulated controller (@dmakit/nvme-pci), driven by a small fio-like workload generator.
 * Every write's bytes land on the namespace through the controller's DMA port; every read comes
 * back the same way and is checked against per-block checksums.
 */
import { createBlkRqDmaMapper, bioFromRanges, blkRqFromBio } from '@dmakit/block-rq-dma';
import type { BlkRqDmaStats } from '@dmakit/block-rq-dma';
import { BlkStatus, createMachine, ReqOp, SZ_1G, SZ_1M } from '@dmakit/dma-core';
import type { BlkRequest, Machine } from '@dmakit/dma-core';
import { createIommu } from '@dmakit/iommu-dma';
import type { Iommu, IommuStats } from '@dmakit/iommu-dma';
import { NvmeController, NvmeDev, nvmeBarSize } from '@dmakit/nvme-pci';
import type { NvmeControllerLatency, NvmeHostStats } from '@dmakit/nvme-pci';
import { NVME_DEFAULT_COST_MODEL, nvmeSimulatedCost, PUBLISHED_IOPS } from './nvmeCost.js';
import type { NvmeCostModel, NvmeSimulatedCost } from './nvmeCost.js';
import { wallNowMs } from './wallClock.js';

export type NvmeIommuMode = 'strict' | 'lazy' | 'off';
/** fio's `rw=`: sequential or random, read, write or mixed (50/50). */
export type FioRw = 'read' | 'write' | 'rw' | 'randread' | 'randwrite' | 'randrw';
export const FIO_RW: readonly FioRw[] = ['read', 'write', 'rw', 'randread', 'randwrite', 'randrw'];

/** `bssplit` of the 'mixed' block size: [bytes, weight]; mostly small, a few up to 1 MiB. */
export const MIXED_BSSPLIT: readonly (readonly [number, number])[] = [
  [512, 10],
  [4096, 40],
  [8192, 15],
  [16384, 10],
  [65536, 10],
  [131072, 10],
  [262144, 4],
  [1048576, 1],
];

export interface NvmeStackOptions {
  readonly machine?: Machine;
  readonly seed?: number;
  readonly iommu?: NvmeIommuMode;
  /** 'iova' (default): blk_rq_dma_map_iter_*; 'sg': the legacy blk_rq_map_sg + dma_map_sgtable path. */
  readonly mapping?: 'iova' | 'sg';
  /** Check every read against the per-block checksums of what was written. Default true. */
  readonly verify?: boolean;
  /** I/Os to complete. Default 2000. */
  readonly ios?: number;
  /** Outstanding I/Os. Default 32. */
  readonly qd?: number;
  /** Block size in bytes (a multiple of the LBA size, up to 1 MiB) or 'mixed'. Default 'mixed'. */
  readonly bs?: number | 'mixed';
  readonly rw?: FioRw;
  /** Namespace logical block size. Default 512. */
  readonly lbaSize?: 512 | 4096;
  /** Bytes of the namespace the workload touches. Default 64 MiB. */
  readonly spanBytes?: number;
  /** Reset the controller after this many completions (0: never). */
  readonly resetAfter?: number;
  /** Driver `sgl_threshold`. Default 32 KiB. */
  readonly sglThreshold?: number;
  /** I/O queue pairs. Default 1. */
  readonly ioQueues?: number;
  /** External-facing device: the IOMMU gives it a strict domain and bounces sub-granule buffers through swiotlb. */
  readonly untrusted?: boolean;
  readonly costModel?: NvmeCostModel;
  readonly controllerLatency?: NvmeControllerLatency;
  /** Called every 1% of the run with (completed, total). */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface NvmePerIo {
  readonly iovaAllocs: number;
  readonly pteWrites: number;
  readonly iotlbSyncs: number;
  readonly iotlbInvalidations: number;
  readonly prpListPages: number;
  readonly sglDescriptors: number;
  readonly swiotlbBounces: number;
  readonly doorbells: number;
  readonly interrupts: number;
  readonly segments: number;
}

export interface NvmeStackResult {
  readonly stack: 'nvme';
  readonly iommu: NvmeIommuMode;
  readonly mapping: 'iova' | 'sg';
  readonly rw: FioRw;
  readonly bs: number | 'mixed';
  readonly qd: number;
  readonly verify: boolean;
  /** All I/Os completed OK and every checked block matched. */
  readonly verified: boolean;
  readonly verifiedBytes: number;
  readonly ios: number;
  readonly reads: number;
  readonly writes: number;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  readonly ioErrors: number;
  readonly mismatchedBlocks: number;
  readonly resets: number;
  readonly wallMs: number;
  readonly wallIops: number;
  readonly simulated: NvmeSimulatedCost;
  readonly published: typeof PUBLISHED_IOPS;
  readonly perIo: NvmePerIo;
  readonly host: NvmeHostStats;
  readonly blk: BlkRqDmaStats;
  readonly iommuStats: IommuStats | null;
  readonly iommuFaults: number;
  /** Leftovers after teardown: pool blocks, streaming mappings, IOVA states, dma-debug reports. */
  readonly leaks: { readonly poolBlocks: number; readonly mappings: number; readonly iovaRanges: number; readonly dmaDebugReports: number };
  readonly simulatedNs: number;
  readonly log: readonly string[];
}

interface Slot {
  readonly idx: number;
  /** Physical pages of the slot's buffer (non-contiguous on purpose: multi-segment requests). */
  readonly pages: Float64Array;
  busy: boolean;
  op: ReqOp;
  lba: number;
  bytes: number;
  offset: number;
  submittedAt: number;
}

const ZERO_BLOCK_SUM = checksum(new Int32Array(128), 0);

/** FNV-1a over the 32-bit words of one 512-byte block. */
function checksum(words: Int32Array, at: number): number {
  let h = 0x811c9dc5 | 0;
  for (let i = at; i < at + 128; i++) h = Math.imul(h ^ (words[i] ?? 0), 16777619);
  return h >>> 0;
}

/** Build the stack, run the workload, tear it down and report. */
export function runNvmeStack(opts: NvmeStackOptions = {}): NvmeStackResult {
  const mode = opts.iommu ?? 'off';
  const mapping = opts.mapping ?? 'iova';
  const verify = opts.verify ?? true;
  const total = opts.ios ?? 2000;
  const qd = opts.qd ?? 32;
  const bs = opts.bs ?? 'mixed';
  const rw = opts.rw ?? 'randrw';
  const lbaSize = opts.lbaSize ?? 512;
  const span = opts.spanBytes ?? 64 * SZ_1M;
  const resetAfter = opts.resetAfter ?? 0;
  if (!Number.isSafeInteger(total) || total < 1) throw new RangeError(`nvme stack: ios must be a positive integer, got ${total}`);
  if (!Number.isSafeInteger(qd) || qd < 1 || qd > 1023) throw new RangeError(`nvme stack: qd must be 1..1023, got ${qd}`);
  if (bs !== 'mixed' && (!Number.isSafeInteger(bs) || bs < lbaSize || bs % lbaSize !== 0 || bs > SZ_1M)) {
    throw new RangeError(`nvme stack: bs must be a multiple of ${lbaSize} up to 1 MiB, got ${bs}`);
  }
  if (!FIO_RW.includes(rw)) throw new RangeError(`nvme stack: rw must be one of ${FIO_RW.join(', ')}`);
  if (!Number.isSafeInteger(span) || span < 2 * SZ_1M || span % SZ_1M !== 0) throw new RangeError('nvme stack: spanBytes must be a whole number of MiB >= 2');

  const m = opts.machine ?? createMachine({ ramBytes: 2 * SZ_1G, seed: opts.seed ?? 1, dmaDebug: 'warn' });
  const rng = m.rng;
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
    mapping: mapping === 'sg' ? 'sg' : 'iter',
    ...(opts.sglThreshold !== undefined ? { sglThreshold: opts.sglThreshold } : {}),
  });
  if (host.probe() !== 0) throw new Error(`nvme stack: probe failed: ${host.lastError}`);
  const limits = host.queueLimits();

  // ---- buffers: QD slots of up to the largest block size, pages interleaved across slots ----
  const maxBs = bs === 'mixed' ? Math.max(...MIXED_BSSPLIT.map((x) => x[0])) : bs;
  // Enough pages for the largest I/O at its largest in-page offset (sub-page I/Os never cross a page).
  const pagesPerSlot = Math.floor(maxBs / 4096) + 1;
  const slots: Slot[] = Array.from({ length: qd }, (_, idx) => ({ idx, pages: new Float64Array(pagesPerSlot), busy: false, op: ReqOp.READ, lba: 0, bytes: 0, offset: 0, submittedAt: 0 }));
  for (let p = 0; p < pagesPerSlot; p++) {
    for (const s of slots) {
      const phys = m.memory.allocPages(0);
      if (phys === 0) throw new Error('nvme stack: out of memory for I/O buffers');
      s.pages[p] = phys;
    }
  }
  // A random pattern the writes copy from (at an offset per I/O), and a scratch for read-back.
  const patternBytes = 2 * SZ_1M;
  const pattern = rng.fill(new Uint8Array(patternBytes + maxBs));
  const patternWords = new Int32Array(pattern.buffer, 0, pattern.length >> 2);
  const scratch = new Uint8Array(maxBs + 4096);
  const scratchWords = new Int32Array(scratch.buffer);
  const sumOf = new Uint32Array(span / 512).fill(ZERO_BLOCK_SUM);
  const busy4k = new Uint8Array(span / 4096);

  const isRand = rw.startsWith('rand');
  const mix = rw === 'rw' || rw === 'randrw';
  const readOnly = rw === 'read' || rw === 'randread';
  let seqPos = 0;
  let issued = 0;
  let completed = 0;
  let reads = 0;
  let writes = 0;
  let bytesRead = 0;
  let bytesWritten = 0;
  let verifiedBytes = 0;
  let ioErrors = 0;
  let mismatched = 0;
  let bytesTotal = 0;
  const waiting: Slot[] = [];
  const progressStep = Math.max(1, Math.ceil(total / 100));
  const bsWeights = MIXED_BSSPLIT.reduce((t, x) => t + x[1], 0);

  const pickBs = (): number => {
    if (bs !== 'mixed') return bs;
    let r = rng.nextInt(bsWeights);
    for (const [size, w] of MIXED_BSSPLIT) {
      if (r < w) return Math.max(size, lbaSize);
      r -= w;
    }
    return 4096;
  };

  const rangeFree = (pos: number, len: number): boolean => {
    for (let b = Math.floor(pos / 4096); b < Math.ceil((pos + len) / 4096); b++) if (busy4k[b] !== 0) return false;
    return true;
  };
  const setBusy = (pos: number, len: number, v: number): void => {
    for (let b = Math.floor(pos / 4096); b < Math.ceil((pos + len) / 4096); b++) busy4k[b] = v;
  };

  const prepare = (s: Slot): boolean => {
    const bytes = pickBs();
    let pos = -1;
    for (let attempt = 0; attempt < 16 && pos < 0; attempt++) {
      let p: number;
      if (isRand) {
        const align = Math.min(bytes, 65536);
        p = rng.nextInt((span - bytes) / align + 1) * align;
      } else {
        if (seqPos + bytes > span) seqPos = 0;
        p = seqPos;
      }
      if (rangeFree(p, bytes)) pos = p;
      else if (!isRand) return false; // sequential: wait for the range to drain
    }
    if (pos < 0) return false;
    if (!isRand) seqPos = pos + bytes;
    s.op = readOnly ? ReqOp.READ : mix ? (rng.nextInt(2) === 0 ? ReqOp.READ : ReqOp.WRITE) : ReqOp.WRITE;
    s.lba = pos / lbaSize;
    s.bytes = bytes;
    // Small I/Os sometimes start inside a page (PRP1 unaligned) but never cross into the next
    // one (3 KiB: offset 0 only); the rest start on a page.
    s.offset = bytes < 4096 ? rng.nextInt(Math.floor(4096 / bytes)) * bytes : 0;
    setBusy(pos, bytes, 1);
    return true;
  };

  const ranges = new Float64Array(2 * pagesPerSlot);
  const submit = (s: Slot): void => {
    const len = s.bytes;
    let n = 0;
    let left = len;
    let off = s.offset;
    for (let p = 0; left > 0; p++) {
      const chunk = Math.min(4096 - off, left);
      ranges[2 * n] = (s.pages[p] ?? 0) + off;
      ranges[2 * n + 1] = chunk;
      n++;
      left -= chunk;
      off = 0;
    }
    if (s.op === ReqOp.WRITE) {
      // The CPU fills the buffer from the pattern and records what each block should read back.
      const pOff = (rng.nextInt(patternBytes / 512) * 512) | 0;
      let done = 0;
      for (let i = 0; i < n; i++) {
        const l = ranges[2 * i + 1] ?? 0;
        m.memory.write(ranges[2 * i] ?? 0, pattern, pOff + done, l);
        done += l;
      }
      if (verify) {
        const first = (s.lba * lbaSize) / 512;
        for (let b = 0; b < len / 512; b++) sumOf[first + b] = checksum(patternWords, (pOff >> 2) + b * 128);
      }
    }
    const bio = bioFromRanges(s.op, (s.lba * lbaSize) / 512, ranges.subarray(0, 2 * n));
    const rq = bio === null ? null : blkRqFromBio(limits, bio, s.idx);
    if (rq === null) throw new Error(`nvme stack: cannot build a request of ${len} bytes`);
    rq.endIo = (r, st) => {
      onDone(s, r, st);
    };
    s.busy = true;
    s.submittedAt = m.clock.now();
    issued++;
    const st = host.queueRq(rq);
    if (st === BlkStatus.RESOURCE) {
      issued--;
      s.busy = false;
      waiting.push(s);
      return;
    }
    if (st !== BlkStatus.OK) onDone(s, rq, st);
  };

  const next = (s: Slot): void => {
    if (issued >= total) return;
    if (!prepare(s)) {
      waiting.push(s);
      return;
    }
    submit(s);
  };

  const onDone = (s: Slot, _rq: BlkRequest, st: BlkStatus): void => {
    s.busy = false;
    completed++;
    const len = s.bytes;
    bytesTotal += len;
    if (st !== BlkStatus.OK) ioErrors++;
    else if (s.op === ReqOp.READ) {
      reads++;
      bytesRead += len;
      if (verify) {
        let done = 0;
        let off = s.offset;
        for (let p = 0; done < len; p++) {
          const chunk = Math.min(4096 - off, len - done);
          m.memory.readInto((s.pages[p] ?? 0) + off, scratch, done, chunk);
          done += chunk;
          off = 0;
        }
        const first = (s.lba * lbaSize) / 512;
        for (let b = 0; b < len / 512; b++) if (checksum(scratchWords, b * 128) !== sumOf[first + b]) mismatched++;
        verifiedBytes += len;
      }
    } else {
      writes++;
      bytesWritten += len;
    }
    setBusy(s.lba * lbaSize, len, 0);
    if (opts.onProgress !== undefined && (completed % progressStep === 0 || completed === total)) opts.onProgress(completed, total);
    if (resetAfter > 0 && completed === resetAfter) host.resetCtrl();
    // Slots that could not start (range busy, queue full) get another try first.
    if (waiting.length > 0) for (const w of waiting.splice(0)) next(w);
    next(s);
  };

  const t0 = wallNowMs();
  for (const s of slots) next(s);
  for (let guard = 0; completed < issued || (issued < total && waiting.length > 0); guard++) {
    m.scheduler.runUntilIdle();
    if (completed >= issued && waiting.length > 0) {
      const w = waiting.shift();
      if (w !== undefined) next(w);
    }
    if (guard > total * 4 + 1000) throw new Error('nvme stack: the workload stopped making progress');
  }
  const wallMs = wallNowMs() - t0;

  // ---- verify what the namespace holds (the controller's view), then tear down ----
  let verified = ioErrors === 0 && mismatched === 0 && completed === total;
  if (verify && !readOnly) {
    const ns = ctrl.namespace(1);
    const blockBuf = new Uint8Array(512);
    const blockWords = new Int32Array(blockBuf.buffer);
    if (ns === undefined) verified = false;
    else {
      for (let b = 0; b < sumOf.length; b++) {
        ns.readBytes(b * 512, blockBuf, 0, 512);
        if (checksum(blockWords, 0) !== sumOf[b]) {
          mismatched++;
          verified = false;
        }
      }
      verifiedBytes += sumOf.length * 512;
    }
  }
  const iommuStats = iommu?.stats() ?? null;
  const hs = { ...host.stats };
  const bs2 = { ...blk.stats };
  const cs = ctrl.stats;
  const sw = m.swiotlb.stats();
  const pools = host.pools;
  const liveBlocks = (pools.small?.stats.active ?? 0) + (pools.large?.stats.active ?? 0);
  host.remove();
  for (const s of slots) for (const p of s.pages) m.memory.freePages(p, 0);
  iommu?.flushQueues();
  const after = iommu?.stats();
  const iovaRanges = after === undefined ? 0 : after.iovaAllocs - after.iovaFrees;
  const mappings = m.dmaDebug.enabled ? m.dmaDebug.dumpMappings(dev).length : 0;
  m.unbindDevice(dev);

  const directMaps = bs2.directMaps + hs.singleSegment;
  const simulated = nvmeSimulatedCost(
    {
      ios: completed,
      bytes: bytesTotal,
      directMaps: mode === 'off' ? directMaps : 0,
      doorbells: hs.sqDoorbells + hs.cqDoorbells,
      interrupts: hs.interrupts,
      descriptors: hs.smallDescriptors + hs.largeDescriptors,
      bounceBytes: sw.bytesCopied,
      queueDepth: qd,
      iommu: iommuStats,
    },
    opts.costModel ?? NVME_DEFAULT_COST_MODEL,
  );
  const per = (x: number): number => x / Math.max(1, completed);
  return {
    stack: 'nvme',
    iommu: mode,
    mapping,
    rw,
    bs,
    qd,
    verify,
    verified,
    verifiedBytes,
    ios: completed,
    reads,
    writes,
    bytesRead,
    bytesWritten,
    ioErrors,
    mismatchedBlocks: mismatched,
    resets: hs.resets,
    wallMs,
    wallIops: wallMs > 0 ? (completed * 1000) / wallMs : 0,
    simulated,
    published: PUBLISHED_IOPS,
    perIo: {
      iovaAllocs: per(iommuStats?.iovaAllocs ?? 0),
      pteWrites: per(iommuStats?.pteWrites ?? 0),
      iotlbSyncs: per(iommuStats?.iotlbSyncs ?? 0),
      iotlbInvalidations: per((iommuStats?.iotlbInvalidationsRange ?? 0) + (iommuStats?.iotlbInvalidationsFull ?? 0)),
      prpListPages: per(cs.prpListPages),
      sglDescriptors: per(cs.sglDescriptors),
      swiotlbBounces: per(sw.bounces),
      doorbells: per(hs.sqDoorbells + hs.cqDoorbells),
      interrupts: per(hs.interrupts),
      segments: per(bs2.segments + hs.singleSegment),
    },
    host: hs,
    blk: bs2,
    iommuStats,
    iommuFaults: iommu?.faults.length ?? 0,
    leaks: { poolBlocks: liveBlocks, mappings, iovaRanges, dmaDebugReports: m.dmaDebug.reports.length },
    simulatedNs: m.clock.now(),
    log: host.log.slice(0, 20),
  };
}

/** Run the same workload under strict, lazy and no IOMMU (fresh machines, same seed). */
export function compareIommuModes(opts: Omit<NvmeStackOptions, 'iommu' | 'machine'>): Record<NvmeIommuMode, NvmeStackResult> {
  return {
    strict: runNvmeStack({ ...opts, iommu: 'strict' }),
    lazy: runNvmeStack({ ...opts, iommu: 'lazy' }),
    off: runNvmeStack({ ...opts, iommu: 'off' }),
  };
}

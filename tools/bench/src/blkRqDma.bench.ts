/**
 * block-rq-dma benchmarks (issue 4, Performance: "metadata per request, legacy sgtable path vs
 * two-step path, for 4 KiB, 128 KiB and 1 MiB I/Os, in bytes, plus IOVA allocations and IOTLB
 * syncs per I/O for both"). Side by side, per request (map + unmap):
 * - iter: blk_rq_dma_map_iter_start/next (one IOVA range per request under an IOMMU);
 * - sg: the legacy path, an SgTable per request (sg_alloc_table_chained) + dma_map_sgtable.
 * Under a strict IOMMU and with no IOMMU. Memory is the per-request metadata the driver keeps:
 * the model's typed-array bytes, and the kernel's sizes (struct scatterlist = 32 bytes per entry
 * on 64-bit; struct dma_iova_state = 16 bytes; a {dma_addr, len} vector = 16 bytes per segment
 * only when the request was mapped per segment and dma_need_unmap).
 */
import { BlkStatus, blkDmaIterInit, createMachine, DmaIovaState, dmaNeedUnmap, dmaUnmapPhys, ReqOp, rqDmaDir, SZ_1G } from '@dmakit/dma-core';
import type { BlkRequest, Device, Machine } from '@dmakit/dma-core';
import { bioFromRanges, blkRqFromBio, blkRqMapSgtable, blkRqUnmapSgtable, createBlkRqDmaMapper, nvmeQueueLimits } from '@dmakit/block-rq-dma';
import type { BlkRqDma } from '@dmakit/block-rq-dma';
import { createIommu } from '@dmakit/iommu-dma';
import type { Iommu, IommuStats } from '@dmakit/iommu-dma';
import { check, sideBySide } from './harness.js';
import type { Check, Measured, SuiteResult } from './harness.js';

const KERNEL_SG_ENTRY = 32;
const KERNEL_IOVA_STATE = 16;
const KERNEL_DMA_VEC = 16;

interface Rig {
  machine: Machine;
  dev: Device;
  iommu: Iommu | null;
}

function rig(withIommu: boolean): Rig {
  const machine = createMachine({ ramBytes: SZ_1G, dmaDebug: 'off' });
  const dev = machine.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
  let iommu: Iommu | null = null;
  if (withIommu) {
    iommu = createIommu(machine, { mode: 'strict' });
    iommu.attachDevice(dev);
  }
  return { machine, dev, iommu };
}

/** A request of `bytes` over discontiguous 4 KiB pages (every other page), as a page cache would give. */
function request(m: Machine, bytes: number): BlkRequest {
  const pages = Math.ceil(bytes / 4096);
  const ranges: number[] = [];
  for (let i = 0; i < pages; i++) {
    ranges.push(m.memory.allocPages(0), Math.min(4096, bytes - i * 4096));
    m.memory.allocPages(0);
  }
  const bio = bioFromRanges(ReqOp.READ, 0, ranges);
  const rq = bio === null ? null : blkRqFromBio(nvmeQueueLimits(), bio);
  if (rq === null) throw new Error(`cannot build a ${bytes}-byte request`);
  return rq;
}

interface Path {
  /** Map and unmap the request once; returns the metadata bytes the driver had to keep. */
  readonly iter: () => number;
  readonly sg: () => number;
}

function paths(r: Rig, rq: BlkRequest, mapper: BlkRqDma): Path {
  const state = new DmaIovaState();
  const iter = blkDmaIterInit();
  // Per-segment vectors (nvme's dma_vecs), preallocated like a mempool element.
  const vecAddr = new Float64Array(rq.nrPhysSegments);
  const vecLen = new Uint32Array(rq.nrPhysSegments);
  const dir = rqDmaDir(rq);
  return {
    iter: (): number => {
      let n = 0;
      let total = 0;
      let ok = mapper.blkRqDmaMapIterStart(rq, r.dev, state, iter);
      while (ok) {
        vecAddr[n] = iter.addr;
        vecLen[n] = iter.len;
        n++;
        total += iter.len;
        ok = mapper.blkRqDmaMapIterNext(rq, r.dev, state, iter);
      }
      if (iter.status !== BlkStatus.OK) throw new Error(`iter map failed: ${iter.status}`);
      const coalesced = mapper.blkRqDmaMapCoalesce(state);
      if (!mapper.blkRqDmaUnmap(rq, r.dev, state, total)) {
        for (let i = 0; i < n; i++) dmaUnmapPhys(r.dev, vecAddr[i] ?? 0, vecLen[i] ?? 0, dir, 0);
      }
      return KERNEL_IOVA_STATE + (!coalesced && dmaNeedUnmap(r.dev) ? n * KERNEL_DMA_VEC : 0);
    },
    sg: (): number => {
      const mp = blkRqMapSgtable(rq, r.dev, 0, mapper);
      if (mp.status !== BlkStatus.OK) throw new Error(`sg map failed: ${mp.status}`);
      blkRqUnmapSgtable(rq, r.dev, mp);
      return mp.sgt.origNents * KERNEL_SG_ENTRY;
    },
  };
}

function delta(a: IommuStats | null, b: IommuStats | null, k: keyof IommuStats): number {
  return a === null || b === null ? 0 : b[k] - a[k];
}

const SIZES: readonly [string, number, number][] = [
  ['4k', 4096, 20_000],
  ['128k', 128 * 1024, 2_000],
  ['1m', 1024 * 1024, 300],
];

function suite(withIommu: boolean): SuiteResult {
  const tag = withIommu ? 'strict' : 'off';
  const measured: Measured[] = [];
  const figures: Record<string, number | string> = {};
  const checks: Check[] = [];
  for (const [name, bytes, ops] of SIZES) {
    const r = rig(withIommu);
    const rq = request(r.machine, bytes);
    const mapper = createBlkRqDmaMapper();
    const p = paths(r, rq, mapper);
    // One round of each for the counters and the metadata figures.
    const s0 = r.iommu?.stats() ?? null;
    const iterMeta = p.iter();
    const iterSegments = mapper.stats.segments;
    const s1 = r.iommu?.stats() ?? null;
    const sgMeta = p.sg();
    const s2 = r.iommu?.stats() ?? null;
    const sgModel = blkRqMapSgtable(rq, r.dev, 0, mapper);
    const sgModelBytes = sgModel.sgt.metadataBytes();
    blkRqUnmapSgtable(rq, r.dev, sgModel);
    const [mi, ms] = sideBySide(
      [
        { name: `iter ${name} (${tag})`, run: (n) => void loop(n, p.iter) },
        { name: `sg ${name} (${tag})`, run: (n) => void loop(n, p.sg) },
      ],
      ops,
      7,
    );
    if (mi === undefined || ms === undefined) throw new Error('no measurement');
    measured.push(mi, ms);
    figures[`${name}: physical segments`] = rq.nrPhysSegments;
    figures[`${name}: ns/request iter`] = mi.nsPerOp;
    figures[`${name}: ns/request sg`] = ms.nsPerOp;
    figures[`${name}: sg / iter time`] = ms.nsPerOp / mi.nsPerOp;
    figures[`${name}: metadata bytes iter (kernel sizes)`] = iterMeta;
    figures[`${name}: metadata bytes sg (kernel sizes)`] = sgMeta;
    figures[`${name}: metadata bytes sg (model typed arrays)`] = sgModelBytes;
    const heapOps = Math.max(20, Math.floor(ops / 20));
    figures[`${name}: JS heap bytes/request iter`] = heapPerOp(p.iter, heapOps);
    figures[`${name}: JS heap bytes/request sg`] = heapPerOp(p.sg, heapOps);
    if (withIommu) {
      figures[`${name}: IOVA allocations/IO iter`] = delta(s0, s1, 'iovaAllocs');
      figures[`${name}: IOVA allocations/IO sg`] = delta(s1, s2, 'iovaAllocs');
      figures[`${name}: IOTLB syncs/IO iter`] = delta(s0, s1, 'iotlbSyncs') + delta(s0, s1, 'iotlbSyncMaps');
      figures[`${name}: IOTLB syncs/IO sg`] = delta(s1, s2, 'iotlbSyncs') + delta(s1, s2, 'iotlbSyncMaps');
      checks.push(check(`${name} iter`, 'one IOVA allocation per request', delta(s0, s1, 'iovaAllocs'), delta(s0, s1, 'iovaAllocs') === 1));
      checks.push(check(`${name} iter`, 'one segment per request under an IOMMU (kernel claim)', iterSegments, iterSegments === 1));
    }
    checks.push(check(name, 'iter metadata <= sg metadata', iterMeta / sgMeta, iterMeta <= sgMeta));
  }
  return { suite: `block-rq-dma-${tag}`, measured, figures, checks };
}

const sink = { v: 0 };

/**
 * Bytes allocated per call of `fn` (JS heap + ArrayBuffer backing stores), measured between two
 * forced GCs over a run short enough to stay inside the young generation (needs node
 * --expose-gc; NaN without it).
 */
function heapPerOp(fn: () => number, ops: number): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) return Number.NaN;
  gc();
  const u0 = process.memoryUsage();
  loop(ops, fn);
  const u1 = process.memoryUsage();
  const h0 = u0.heapUsed + u0.arrayBuffers;
  const h1 = u1.heapUsed + u1.arrayBuffers;
  return Math.max(0, (h1 - h0) / ops);
}

function loop(n: number, fn: () => number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += fn();
  sink.v = s;
  return s;
}

export function runBlkRqDmaBenches(): SuiteResult[] {
  return [suite(true), suite(false)];
}

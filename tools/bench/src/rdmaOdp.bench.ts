/**
 * RDMA ODP benchmarks (issue 5, Performance), through the whole rdma-umem-odp driver path on
 * @dmakit/hmm under a strict IOMMU (@dmakit/iommu-dma):
 * - fault-in of a 1 GiB ODP MR touched sequentially (the mlx5 page-fault handler: pagefault_mr ->
 *   ib_umem_odp_map_dma_and_lock -> populate_mtt -> UMR, 64 KiB per fault): pages mapped per second
 *   on the two-step path (one IOVA window, hmm_dma_map_pfn links each page into its slot) against
 *   the legacy path (page list + dma_addr_t list, one dma_map_page per page) in the same run
 *   (target: >= 3x), with IOVA allocations, IOTLB syncs and bytes of mapping metadata per page
 *   measured from the real array sizes (target: <= 8 vs 16);
 * - invalidation of the fully mapped 1 GiB MR (munmap -> mlx5_ib_invalidate_range: zap the MTTs,
 *   then unmap every page): time and IOTLB invalidations issued;
 * - implicit ODP over a 1 TiB mapping with 1 GiB touched: heap growth per touched page (target:
 *   proportional to what was touched), plus the same 1 GiB scattered over 64 children.
 * Size: RDMA_ODP_BENCH_MB (default 1024).
 */
import { createMachine, MAP_ANONYMOUS, MAP_FIXED, MAP_POPULATE, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, SZ_1G, SZ_1M, SZ_1T } from '@dmakit/dma-core';
import { createHmmPort } from '@dmakit/hmm';
import { createIommu } from '@dmakit/iommu-dma';
import type { IommuStats } from '@dmakit/iommu-dma';
import { IB_ACCESS_LOCAL_WRITE, IB_ACCESS_ON_DEMAND, IB_ACCESS_REMOTE_WRITE, IB_IMPLICIT_MR_LENGTH, ibUmemOdpMetadataBytes, Mlx5IbDev } from '@dmakit/rdma-umem-odp';
import type { Mlx5IbMr } from '@dmakit/rdma-umem-odp';
import { check } from './harness.js';
import type { Measured, SuiteResult } from './harness.js';

const ACCESS = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_ON_DEMAND;
/** Bytes per page fault (what one HCA fault covers here: a 64 KiB data segment). */
const FAULT_BYTES = 64 * 1024;
const BASE = 0x6000_0000_0000;
/** Interleaved rounds per contender (the median is reported). */
const ROUNDS = 5;
/**
 * Kernel element sizes (64-bit) for the derived metadata figures: the two-step umem keeps one
 * `unsigned long` pfn word per page (`ib_umem_odp.map.pfn_list`, include/rdma/ib_umem_odp.h);
 * the pre-6.16 umem kept `page_list` (struct page *) and `dma_list` (dma_addr_t) per page.
 */
const KERNEL_PFN_WORD = 8;
const KERNEL_PAGE_PTR = 8;
const KERNEL_DMA_ADDR = 8;

function nowNs(): number {
  return Number(process.hrtime.bigint());
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

function heap(): number {
  gc();
  gc();
  const u = process.memoryUsage();
  return u.heapUsed + u.arrayBuffers;
}

export interface RunResult {
  faultNs: number;
  faults: number;
  iovaAllocs: number;
  iotlbSyncs: number;
  metaPerPage: number;
  invalidateNs: number;
  invalidations: number;
}

function iotlbInv(s: IommuStats): number {
  return s.iotlbInvalidationsRange + s.iotlbInvalidationsFull;
}

/** One fresh machine: register, populate the CPU side, fault the MR in, then invalidate it. */
export function faultInOnce(legacy: boolean, bytes: number): RunResult {
  const m = createMachine({ ramBytes: Math.max(2 * SZ_1G, bytes + SZ_1G), dmaDebug: 'off' });
  const iommu = createIommu(m, { mode: 'strict' });
  const dev = m.pci.addDevice({ name: 'mlx5_bench', dmaMaskBits: 64 });
  iommu.attachDevice(dev);
  const ib = new Mlx5IbDev({ dev, hmm: createHmmPort(), scheduler: m.scheduler, odpLegacy: legacy });
  const mm = m.createProcess().mm;
  const pd = ib.allocPd(mm);
  const s0 = iommu.stats();
  // Register before the memory exists (the registration snapshot maps nothing), then populate the
  // CPU side, so the timed loop measures the ODP path, not the CPU page allocator.
  const mr = ib.regUserMr(pd, BASE, bytes, BASE, ACCESS);
  if (typeof mr === 'number') throw new Error(`rdma-odp bench: reg_mr failed (${mr})`);
  const got = mm.mmap({ length: bytes, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, addr: BASE });
  if (got !== BASE) throw new Error(`rdma-odp bench: mmap failed (${got})`);
  let faults = 0;
  const t0 = nowNs();
  for (let va = BASE; va < BASE + bytes; va += FAULT_BYTES) {
    const r = ib.pagefaultMr(mr, va, FAULT_BYTES, 0, false);
    if (r !== FAULT_BYTES / PAGE_SIZE) throw new Error(`rdma-odp bench: fault returned ${r}`);
    faults++;
  }
  const faultNs = nowNs() - t0;
  const s1 = iommu.stats();
  const npages = bytes / PAGE_SIZE;
  if (mr.umem.npages !== npages) throw new Error(`rdma-odp bench: ${mr.umem.npages} of ${npages} pages mapped`);
  const metaPerPage = ibUmemOdpMetadataBytes(mr.umem) / npages;
  const t1 = nowNs();
  mm.munmap(BASE, bytes);
  const invalidateNs = nowNs() - t1;
  const s2 = iommu.stats();
  if (mr.umem.npages !== 0) throw new Error('rdma-odp bench: invalidation left pages mapped');
  ib.deregMr(mr);
  return {
    faultNs,
    faults,
    iovaAllocs: s1.iovaAllocs - s0.iovaAllocs,
    iotlbSyncs: s1.iotlbSyncs - s0.iotlbSyncs,
    metaPerPage,
    invalidateNs,
    invalidations: iotlbInv(s2) - iotlbInv(s1),
  };
}

function faultIn(bytes: number): SuiteResult[] {
  const npages = bytes / PAGE_SIZE;
  const runs: Record<'two-step' | 'legacy', RunResult[]> = { 'two-step': [], legacy: [] };
  faultInOnce(false, Math.min(bytes, 64 * SZ_1M)); // warm-up (JIT)
  faultInOnce(true, Math.min(bytes, 64 * SZ_1M));
  for (let r = 0; r < ROUNDS; r++) {
    // Interleaved so machine noise hits both alike.
    gc();
    runs['two-step'].push(faultInOnce(false, bytes));
    gc();
    runs.legacy.push(faultInOnce(true, bytes));
  }
  const pick = (k: 'two-step' | 'legacy'): RunResult => {
    const xs = runs[k];
    const mid = median(xs.map((x) => x.faultNs));
    return xs.find((x) => x.faultNs === mid) ?? (xs[0] as RunResult);
  };
  const a = pick('two-step');
  const b = pick('legacy');
  const measured: Measured[] = [
    { name: 'fault-in, two-step (ns per page)', nsPerOp: a.faultNs / npages, opsPerSec: (npages * 1e9) / a.faultNs, samples: ROUNDS },
    { name: 'fault-in, legacy dma_map_page per page (ns per page)', nsPerOp: b.faultNs / npages, opsPerSec: (npages * 1e9) / b.faultNs, samples: ROUNDS },
    { name: 'invalidate 1 GiB MR, two-step (ns per page)', nsPerOp: median(runs['two-step'].map((x) => x.invalidateNs)) / npages, opsPerSec: (npages * 1e9) / median(runs['two-step'].map((x) => x.invalidateNs)), samples: ROUNDS },
    { name: 'invalidate 1 GiB MR, legacy (ns per page)', nsPerOp: median(runs.legacy.map((x) => x.invalidateNs)) / npages, opsPerSec: (npages * 1e9) / median(runs.legacy.map((x) => x.invalidateNs)), samples: ROUNDS },
  ];
  const ratio = b.faultNs / a.faultNs;
  const faultInSuite: SuiteResult = {
    suite: 'rdma-odp-fault-in',
    measured,
    figures: {
      'MR size (MiB)': bytes / SZ_1M,
      'pages per fault': FAULT_BYTES / PAGE_SIZE,
      'two-step pages mapped per second': (npages * 1e9) / a.faultNs,
      'legacy pages mapped per second': (npages * 1e9) / b.faultNs,
      'ratio two-step / legacy (pages per second)': ratio,
      'two-step ns per fault (16 pages)': a.faultNs / a.faults,
      'legacy ns per fault (16 pages)': b.faultNs / b.faults,
      'two-step IOVA allocations': a.iovaAllocs,
      'legacy IOVA allocations': b.iovaAllocs,
      'two-step IOTLB syncs': a.iotlbSyncs,
      'legacy IOTLB syncs': b.iotlbSyncs,
      'two-step metadata bytes per page': a.metaPerPage,
      'legacy metadata bytes per page': b.metaPerPage,
      'two-step metadata bytes per page, derived (kernel: unsigned long pfn word)': KERNEL_PFN_WORD,
      'legacy metadata bytes per page, derived (kernel: page_list + dma_list)': KERNEL_PAGE_PTR + KERNEL_DMA_ADDR,
    },
    checks: [
      check('fault-in pages/s two-step vs legacy', '>= 3x', ratio, ratio >= 3, () => { faultInOnce(false, bytes); }),
      check('mapping metadata, two-step', '<= 8 B/page', a.metaPerPage, a.metaPerPage <= 8),
      check('mapping metadata, legacy', '16 B/page', b.metaPerPage, b.metaPerPage === 16),
      check('IOVA allocations, two-step', '1 per MR', a.iovaAllocs, a.iovaAllocs === 1),
    ],
  };
  const ia = median(runs['two-step'].map((x) => x.invalidateNs));
  const ib = median(runs.legacy.map((x) => x.invalidateNs));
  const invSuite: SuiteResult = {
    suite: 'rdma-odp-invalidate',
    measured: measured.slice(2),
    figures: {
      'two-step: invalidation time (ms)': ia / 1e6,
      'legacy: invalidation time (ms)': ib / 1e6,
      'two-step: IOTLB invalidations issued': a.invalidations,
      'legacy: IOTLB invalidations issued': b.invalidations,
      'pages unmapped': npages,
    },
    checks: [check('every page unmapped by the invalidation', '== 0 mapped after', 0, true)],
  };
  return [faultInSuite, invSuite];
}

/** Implicit ODP over a 1 TiB mapping: heap growth for 1 GiB touched, sequential and scattered. */
function implicitHeap(touchBytes: number): SuiteResult {
  const one = (scattered: boolean): { perPage: number; children: number; total: number } => {
    const m = createMachine({ ramBytes: Math.max(2 * SZ_1G, touchBytes + SZ_1G), dmaDebug: 'off' });
    const iommu = createIommu(m, { mode: 'strict' });
    const dev = m.pci.addDevice({ name: 'mlx5_implicit', dmaMaskBits: 64 });
    iommu.attachDevice(dev);
    const ib = new Mlx5IbDev({ dev, hmm: createHmmPort(), scheduler: m.scheduler });
    const mm = m.createProcess().mm;
    const pd = ib.allocPd(mm);
    const imr = ib.regUserMr(pd, 0, IB_IMPLICIT_MR_LENGTH, 0, ACCESS) as Mlx5IbMr;
    const base = mm.mmap({ length: SZ_1T, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    if (base < 0) throw new Error(`rdma-odp bench: 1 TiB mmap failed (${base})`);
    const h0 = heap();
    if (!scattered) {
      const start = Math.ceil(base / SZ_1G) * SZ_1G + 256 * SZ_1G;
      for (let va = start; va < start + touchBytes; va += FAULT_BYTES) ib.pagefaultMr(imr, va, FAULT_BYTES, 0, false);
    } else {
      // 64 pieces, one per 16 GiB of the mapping.
      const piece = touchBytes / 64;
      for (let k = 0; k < 64; k++) {
        const start = Math.ceil(base / SZ_1G) * SZ_1G + k * 16 * SZ_1G;
        for (let va = start; va < start + piece; va += FAULT_BYTES) ib.pagefaultMr(imr, va, FAULT_BYTES, 0, false);
      }
    }
    const h1 = heap();
    const mapped = ib.report().mappedPages;
    if (mapped !== touchBytes / PAGE_SIZE) throw new Error(`rdma-odp bench: implicit mapped ${mapped} pages`);
    const children = imr.children.size;
    ib.deregMr(imr);
    return { perPage: (h1 - h0) / mapped, children, total: h1 - h0 };
  };
  one(false); // warm-up
  const seq = one(false);
  const sc = one(true);
  const densePerRange = (SZ_1T / PAGE_SIZE) * 8; // a pfn word per page of the whole 1 TiB
  return {
    suite: 'rdma-odp-implicit-heap',
    measured: [],
    figures: {
      'touched (MiB)': touchBytes / SZ_1M,
      'range (GiB)': SZ_1T / SZ_1G,
      'sequential: children': seq.children,
      'sequential: heap growth (MiB)': seq.total / SZ_1M,
      'sequential: bytes per touched page': seq.perPage,
      'scattered over 64 x 16 GiB: children': sc.children,
      'scattered: heap growth (MiB)': sc.total / SZ_1M,
      'scattered: bytes per touched page': sc.perPage,
      'dense pfn array for the whole range would be (MiB)': densePerRange / SZ_1M,
    },
    checks: [
      check('implicit ODP heap per touched page (sequential)', '<= 128 B', seq.perPage, seq.perPage <= 128),
      check('implicit ODP heap vs a dense map of the 1 TiB range', '<= 5%', seq.total / densePerRange, seq.total / densePerRange <= 0.05),
    ],
  };
}

export function runRdmaOdpBenches(): SuiteResult[] {
  const mb = Number(process.env.RDMA_ODP_BENCH_MB ?? '1024');
  const bytes = Math.max(8, Math.floor(mb)) * SZ_1M;
  return [...faultIn(bytes), implicitHeap(bytes)];
}

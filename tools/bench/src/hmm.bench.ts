/**
 * HMM benchmarks (issue 5, Performance), at the HMM layer under a strict IOMMU:
 * - fault-in of a 1 GiB mirrored range touched sequentially: hmm_range_fault + hmm_dma_map_pfn
 *   into one IOVA window (the two-step path) against hmm_range_fault + one dma_map_phys per page
 *   with a page list and a dma_addr_t list (the pre-6.16 path), side by side in the same run:
 *   pages mapped per second (target: two-step >= 3x), IOVA allocations, IOTLB syncs, and bytes
 *   of mapping metadata per page measured from the real array sizes (target: <= 8 vs 16);
 * - invalidation of the fully mapped range: time and IOTLB invalidations issued;
 * - hmm_range_fault snapshot of present pages (pages per second).
 * Wall-clock figures are the model's own JS cost; the IOMMU cost-model figures (iommu-dma's
 * deterministic per-operation costs) show the kernel-side cost structure.
 * Size: HMM_BENCH_MB (default 1024).
 */
import {
  createMachine,
  DMA_BIDIRECTIONAL,
  dmaMapPhys,
  dmaMappingError,
  dmaUnmapPhys,
  HMM_PFN_REQ_FAULT,
  HmmDmaMap,
  hmmDmaMapMetadataBytes,
  hmmPfnToPhys,
  hmmPfnsAlloc,
  hmmPfnsSlice,
  MAP_ANONYMOUS,
  MAP_POPULATE,
  MAP_PRIVATE,
  MmuIntervalNotifier,
  mmuIntervalNotifierInsert,
  mmuIntervalReadBegin,
  mmuIntervalSetSeq,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  SZ_1G,
  SZ_1M,
} from '@dmakit/dma-core';
import type { HmmRange } from '@dmakit/dma-core';
import { hmmDmaMapAlloc, hmmDmaMapFree, hmmDmaMapPfn, hmmDmaUnmapPfn, hmmRangeFault } from '@dmakit/hmm';
import { createIommu } from '@dmakit/iommu-dma';
import type { IommuStats } from '@dmakit/iommu-dma';
import { check } from './harness.js';
import type { Measured, SuiteResult } from './harness.js';

const BATCH = 512; // pages per hmm_range_fault call (one 2 MiB fault window)

/**
 * Kernel element sizes (64-bit) for the derived metadata figures: one `unsigned long` pfn word
 * per page in `struct hmm_dma_map.pfn_list` (include/linux/hmm-dma.h); the legacy path keeps a
 * `struct page *` and a `dma_addr_t` per page.
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

function delta(a: IommuStats, b: IommuStats): { iovaAllocs: number; iotlbSyncs: number; invalidations: number; simulatedNs: number } {
  return {
    iovaAllocs: b.iovaAllocs - a.iovaAllocs,
    iotlbSyncs: b.iotlbSyncs - a.iotlbSyncs,
    invalidations: b.iotlbInvalidationsRange + b.iotlbInvalidationsFull - (a.iotlbInvalidationsRange + a.iotlbInvalidationsFull),
    simulatedNs: b.simulatedNs - a.simulatedNs,
  };
}

export function runHmmBenches(): SuiteResult[] {
  // Local references for both contenders alike (tsx lowers imported bindings to getters).
  const mapPfn = hmmDmaMapPfn;
  const unmapPfn = hmmDmaUnmapPfn;
  const rangeFault = hmmRangeFault;
  const mapPhys = dmaMapPhys;
  const mappingError = dmaMappingError;
  const unmapPhys = dmaUnmapPhys;
  const pfnToPhys = hmmPfnToPhys;
  const mb = Number(process.env.HMM_BENCH_MB ?? '1024');
  const bytes = Math.max(8, Math.floor(mb)) * SZ_1M;
  const npages = bytes / PAGE_SIZE;
  const m = createMachine({ ramBytes: Math.max(2 * SZ_1G, bytes + SZ_1G), dmaDebug: 'off' });
  const iommu = createIommu(m, { mode: 'strict' });
  const dev = m.pci.addDevice({ name: 'hmm-bench', dmaMaskBits: 48 });
  iommu.attachDevice(dev);
  const mm = m.createProcess().mm;
  const buf = mm.mmap({ length: bytes, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE });
  if (buf < 0) throw new Error(`hmm bench: mmap failed (${buf})`);
  const sub = new MmuIntervalNotifier();
  mmuIntervalNotifierInsert(sub, mm, buf, bytes, {
    invalidate: (s, _r, seq) => {
      mmuIntervalSetSeq(s, seq);
      return true;
    },
  });
  const range = (pfns: Uint32Array, first: number, n: number): HmmRange => ({
    notifier: sub,
    notifierSeq: mmuIntervalReadBegin(sub),
    start: buf + first * PAGE_SIZE,
    end: buf + (first + n) * PAGE_SIZE,
    hmmPfns: hmmPfnsSlice(pfns, first, n),
    defaultFlags: HMM_PFN_REQ_FAULT,
    pfnFlagsMask: 0,
  });

  // ---- the two-step path (6.16+): one IOVA window, pfn words only ----
  let twoStepMeta = 0;
  const twoStep = (): { fault: number; inval: number; io: ReturnType<typeof delta>; invIo: ReturnType<typeof delta> } => {
    const s0 = iommu.stats();
    const t0 = nowNs();
    const map = new HmmDmaMap();
    if (hmmDmaMapAlloc(dev, map, npages, PAGE_SIZE) !== 0) throw new Error('hmm_dma_map_alloc failed');
    for (let first = 0; first < npages; first += BATCH) {
      const n = Math.min(BATCH, npages - first);
      if (rangeFault(range(map.pfnList, first, n)) !== 0) throw new Error('hmm_range_fault failed');
      for (let i = first; i < first + n; i++) mapPfn(dev, map, i, null);
    }
    const t1 = nowNs();
    twoStepMeta = hmmDmaMapMetadataBytes(map) / npages;
    const s1 = iommu.stats();
    for (let i = 0; i < npages; i++) unmapPfn(dev, map, i);
    const t2 = nowNs();
    const s2 = iommu.stats();
    hmmDmaMapFree(dev, map);
    return { fault: t1 - t0, inval: t2 - t1, io: delta(s0, s1), invIo: delta(s1, s2) };
  };

  // ---- the legacy path: a page list and a dma_addr_t list, dma_map_page per page ----
  let legacyMeta = 0;
  const legacy = (): { fault: number; inval: number; io: ReturnType<typeof delta>; invIo: ReturnType<typeof delta> } => {
    const s0 = iommu.stats();
    const t0 = nowNs();
    const pfns = hmmPfnsAlloc(BATCH);
    const pageList = new Float64Array(npages);
    const dmaList = new Float64Array(npages);
    for (let first = 0; first < npages; first += BATCH) {
      const n = Math.min(BATCH, npages - first);
      const r: HmmRange = { ...range(pfns, 0, n), start: buf + first * PAGE_SIZE, end: buf + (first + n) * PAGE_SIZE, hmmPfns: pfns };
      if (rangeFault(r) !== 0) throw new Error('hmm_range_fault failed');
      for (let i = 0; i < n; i++) {
        const phys = pfnToPhys(pfns, i);
        pageList[first + i] = phys;
        const a = mapPhys(dev, phys, PAGE_SIZE, DMA_BIDIRECTIONAL, 0);
        if (mappingError(dev, a) !== 0) throw new Error('dma_map_phys failed');
        dmaList[first + i] = a;
      }
    }
    const t1 = nowNs();
    // Per page: the page pointer and the dma_addr_t (the pfn scratch is per fault, not per page).
    legacyMeta = (pageList.byteLength + dmaList.byteLength) / npages;
    const s1 = iommu.stats();
    for (let i = 0; i < npages; i++) unmapPhys(dev, dmaList[i] ?? 0, PAGE_SIZE, DMA_BIDIRECTIONAL, 0);
    const t2 = nowNs();
    const s2 = iommu.stats();
    return { fault: t1 - t0, inval: t2 - t1, io: delta(s0, s1), invIo: delta(s1, s2) };
  };

  // ---- snapshot of present pages ----
  const snapshot = (): number => {
    const pfns = hmmPfnsAlloc(npages);
    const t0 = nowNs();
    for (let first = 0; first < npages; first += BATCH) {
      const n = Math.min(BATCH, npages - first);
      const r = range(pfns, first, n);
      r.defaultFlags = 0;
      rangeFault(r);
    }
    return nowNs() - t0;
  };

  // Medians of at least 5 interleaved rounds (issue 13), after one untimed round of each path so
  // that V8 has optimized both before the first measured one.
  const rounds = Math.max(1, Number(process.env.HMM_BENCH_ROUNDS ?? '5'));
  twoStep();
  legacy();
  const tf: number[] = [];
  const ti: number[] = [];
  const lf: number[] = [];
  const li: number[] = [];
  const sn: number[] = [];
  let tIo = delta(iommu.stats(), iommu.stats());
  let tInv = tIo;
  let lIo = tIo;
  let lInv = tIo;
  for (let r = 0; r < rounds; r++) {
    const a = twoStep();
    const b = legacy();
    tf.push(a.fault);
    ti.push(a.inval);
    lf.push(b.fault);
    li.push(b.inval);
    sn.push(snapshot());
    tIo = a.io;
    tInv = a.invIo;
    lIo = b.io;
    lInv = b.invIo;
  }
  const twoPps = (npages * 1e9) / median(tf);
  const legPps = (npages * 1e9) / median(lf);
  const measured: Measured[] = [
    { name: `fault-in ${mb} MiB, two-step (hmm_dma_map_pfn, one IOVA window), per page`, nsPerOp: median(tf) / npages, opsPerSec: twoPps, samples: rounds },
    { name: `fault-in ${mb} MiB, legacy (dma_map_phys per page + page/dma lists), per page`, nsPerOp: median(lf) / npages, opsPerSec: legPps, samples: rounds },
    { name: `invalidate ${mb} MiB, two-step (hmm_dma_unmap_pfn), per page`, nsPerOp: median(ti) / npages, opsPerSec: (npages * 1e9) / median(ti), samples: rounds },
    { name: `invalidate ${mb} MiB, legacy (dma_unmap_phys), per page`, nsPerOp: median(li) / npages, opsPerSec: (npages * 1e9) / median(li), samples: rounds },
    { name: `hmm_range_fault snapshot of ${mb} MiB present pages, per page`, nsPerOp: median(sn) / npages, opsPerSec: (npages * 1e9) / median(sn), samples: rounds },
  ];
  const ratio = twoPps / legPps;
  return [
    {
      suite: 'hmm',
      measured,
      figures: {
        'pages in the range': npages,
        'two-step pages mapped/s': twoPps,
        'legacy pages mapped/s': legPps,
        'two-step / legacy speed-up': ratio,
        'two-step IOVA allocations': tIo.iovaAllocs,
        'legacy IOVA allocations': lIo.iovaAllocs,
        'two-step IOTLB syncs (fault-in)': tIo.iotlbSyncs,
        'legacy IOTLB syncs (fault-in)': lIo.iotlbSyncs,
        'two-step metadata bytes/page': twoStepMeta,
        'legacy metadata bytes/page': legacyMeta,
        'two-step metadata bytes/page, derived (kernel: unsigned long pfn word)': KERNEL_PFN_WORD,
        'legacy metadata bytes/page, derived (kernel: struct page * + dma_addr_t)': KERNEL_PAGE_PTR + KERNEL_DMA_ADDR,
        'two-step IOMMU cost-model ns/page (fault-in)': tIo.simulatedNs / npages,
        'legacy IOMMU cost-model ns/page (fault-in)': lIo.simulatedNs / npages,
        'two-step IOMMU cost-model ns/page (invalidation)': tInv.simulatedNs / npages,
        'legacy IOMMU cost-model ns/page (invalidation)': lInv.simulatedNs / npages,
        'two-step invalidation ms': median(ti) / 1e6,
        'legacy invalidation ms': median(li) / 1e6,
        'two-step IOTLB invalidations (invalidation)': tInv.invalidations,
        'legacy IOTLB invalidations (invalidation)': lInv.invalidations,
      },
      checks: [
        check('fault-in speed-up, two-step vs legacy', '>= 3x', ratio, ratio >= 3, () => { twoStep(); }),
        check('two-step metadata per page', '<= 8 bytes', twoStepMeta, twoStepMeta <= 8),
        check('legacy metadata per page', '16 bytes', legacyMeta, legacyMeta === 16),
        check('two-step IOVA allocations for the whole range', '1', tIo.iovaAllocs, tIo.iovaAllocs === 1),
      ],
    },
  ];
}

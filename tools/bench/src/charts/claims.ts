/**
 * The claims report (issue 11, item 3): six charts built from the numbers the bench suites wrote
 * into tools/bench/results/*.json. Nothing here is a measured result; the only constants are
 * reference figures, and those are read from the results too (the suites record them with
 * their source), so a chart shows exactly what one bench run produced.
 */
import { IOMMU_DEFAULT_COST_MODEL } from '@dmakit/iommu-dma';
import type { RunInfo, SuiteResult } from '../harness.js';
import type { BarChart, Chart, LineChart, LineSeries } from './svg.js';
import { formatNumber } from './svg.js';

/** What the visualiser's index lists for each chart. */
export interface ChartEntry {
  readonly id: string;
  readonly title: string;
  readonly file: string;
  readonly source: string;
}

export interface ClaimChart {
  readonly id: string;
  readonly chart: Chart;
}

const MEASURED = 'Measured in this run (no published figure to compare against).';

/** Lookup over a set of suite results (one per suite name; the last one loaded wins). */
export class Results {
  readonly #bySuite = new Map<string, SuiteResult>();

  constructor(results: readonly SuiteResult[]) {
    for (const r of results) this.#bySuite.set(r.suite, r);
  }

  has(suite: string): boolean {
    return this.#bySuite.has(suite);
  }

  /** A numeric figure, or null when the suite or figure is missing or not a finite number. */
  fig(suite: string, key: string): number | null {
    const v = this.#bySuite.get(suite)?.figures[key];
    return typeof v === 'number' && Number.isFinite(v) ? v : null;
  }

  /** Rounds behind the first measurement of `suite` whose name contains `part` (null if none). */
  samples(suite: string, part: string): number | null {
    const m = this.#bySuite.get(suite)?.measured.find((x) => x.name.includes(part));
    return m !== undefined && Number.isFinite(m.samples) ? m.samples : null;
  }

  str(suite: string, key: string): string | null {
    const v = this.#bySuite.get(suite)?.figures[key];
    return typeof v === 'string' ? v : null;
  }

  /** Figures of `suite` whose key matches `re`, with the match. */
  matching(suite: string, re: RegExp): { m: RegExpExecArray; value: number }[] {
    const figs = this.#bySuite.get(suite)?.figures ?? {};
    const out: { m: RegExpExecArray; value: number }[] = [];
    for (const [k, v] of Object.entries(figs)) {
      const m = re.exec(k);
      if (m !== null && typeof v === 'number' && Number.isFinite(v)) out.push({ m, value: v });
    }
    return out;
  }

  /** "Run <date> · commit <hash>" for the suites a chart uses (all distinct runs, if several). */
  runLine(suites: readonly string[]): string {
    const runs = new Map<string, RunInfo>();
    const missing: string[] = [];
    for (const s of suites) {
      const r = this.#bySuite.get(s);
      if (r === undefined) missing.push(s);
      else if (r.run !== undefined) runs.set(`${r.run.date}|${r.run.commit}`, r.run);
    }
    const parts = [...runs.values()].map((r) => `run ${r.date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}, commit ${r.commit}${r.dirty ? '+changes' : ''}, Node ${r.node}`);
    if (parts.length === 0 && missing.length < suites.length) parts.push('run date unknown');
    if (missing.length > 0) parts.push(`not in these results: ${missing.join(', ')}`);
    return `dmakit bench · ${parts.join('; ')}`;
  }
}

function ratio(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : a / b;
}

function int(x: number | null): string {
  return x === null ? '?' : Math.round(x).toLocaleString('en-US');
}

function times(x: number | null): string {
  return x === null ? 'n/a' : `${x >= 10 ? x.toFixed(0) : x.toFixed(1)}×`;
}

// ---- 1. two-step vs per-page against the I/O size ---------------------------------------------

function twoStepSweep(r: Results): ClaimChart {
  const suite = 'iommu-two-step-sweep';
  const rows = r.matching(suite, /^pages=(\d+) (two-step|per-page): (wall|simulated) ns\/page$/);
  const pts = (path: string, kind: string): [number, number][] =>
    rows
      .filter(({ m }) => m[2] === path && m[3] === kind)
      .map(({ m, value }): [number, number] => [Number(m[1]), value])
      .sort((a, b) => a[0] - b[0]);
  const series: LineSeries[] = [
    { name: 'two-step IOVA, wall clock', points: pts('two-step', 'wall'), color: 0, marker: 0 },
    { name: 'per-page dma_map_phys, wall clock', points: pts('per-page', 'wall'), color: 1, marker: 1 },
    { name: 'two-step IOVA, simulated', points: pts('two-step', 'simulated'), color: 0, marker: 2, dash: true },
    { name: 'per-page dma_map_phys, simulated', points: pts('per-page', 'simulated'), color: 1, marker: 3, dash: true },
  ];
  const xs = [...new Set(rows.map(({ m }) => Number(m[1])))].sort((a, b) => a - b);
  const last = xs[xs.length - 1];
  const callout: string[] = [];
  if (last !== undefined) {
    const at = (path: string, kind: string): number | null => r.fig(suite, `pages=${last} ${path}: ${kind} ns/page`);
    callout.push(`At ${last} pages per I/O, two-step is cheaper per page by`);
    callout.push(`${times(ratio(at('per-page', 'wall'), at('two-step', 'wall')))} (wall clock) and ${times(ratio(at('per-page', 'simulated'), at('two-step', 'simulated')))} (simulated).`);
  }
  const cm = IOMMU_DEFAULT_COST_MODEL;
  const chart: LineChart = {
    kind: 'line',
    title: 'Two-step IOVA mapping vs per-page dma_map_phys: cost per page against I/O size (strict IOMMU)',
    xLabel: 'pages per I/O (4 KiB each, log scale)',
    yLabel: 'cost per page (ns, log scale)',
    xScale: 'log',
    yScale: 'log',
    xTicks: xs,
    series,
    callout,
    notes: [
      `Per I/O: dma_iova_try_alloc + N dma_iova_link + one dma_iova_sync + dma_iova_destroy, against N dma_map_phys + N dma_unmap_phys. Wall: median of ${int(r.samples(suite, 'two-step'))} interleaved rounds of the model (JavaScript).`,
      `Simulated: iommu-dma IOMMU_DEFAULT_COST_MODEL (IOTLB invalidation ${formatNumber(cm.iotlbInvalidateRangeNs)} ns, PTE write ${cm.pteWriteNs} ns, IOVA alloc rcache/tree ${cm.iovaRcacheHitNs}/${cm.iovaTreeAllocNs} ns), an input chosen before any run.`,
    ],
    source: MEASURED,
    run: r.runLine([suite]),
    desc: 'Line chart, both axes logarithmic.',
  };
  return { id: 'two-step-vs-per-page', chart };
}

// ---- 2. strict : lazy : off IOPS against the published figures --------------------------------

const MODES = ['strict', 'lazy', 'off'] as const;

function iops(r: Results): ClaimChart {
  const suite = 'nvme-simulated-iops';
  const sim = MODES.map((m) => r.fig(suite, `${m}: simulated IOPS (one CPU)`));
  const pub = MODES.map((m) => r.fig(suite, `${m}: published IOPS`));
  const simOff = sim[2] ?? null;
  const pubOff = pub[2] ?? null;
  const published = r.str(suite, 'published IOPS source');
  const chart: BarChart = {
    kind: 'bar',
    title: 'NVMe 4 KiB random read IOPS on one CPU: strict vs lazy vs no IOMMU, simulated vs published',
    xLabel: 'IOMMU mode (second line: IOPS as a fraction of the no-IOMMU IOPS)',
    yLabel: 'IOPS (4 KiB random read, one CPU)',
    yScale: 'linear',
    categories: MODES.map((m, i) => {
      const s = ratio(sim[i] ?? null, simOff);
      const p = ratio(pub[i] ?? null, pubOff);
      return `${m}\n${s === null ? 'n/a' : s.toFixed(3)} simulated · ${p === null ? 'n/a' : p.toFixed(3)} published`;
    }),
    series: [
      { name: 'simulated: dmakit nvme stack + cost model (QD32, polled)', values: sim, color: 0 },
      { name: 'published (Optane, fio t/io_uring)', values: pub, color: 6, hatch: true },
    ],
    notes: ['Simulated = 1e9 / (simulated CPU ns per I/O) from the nvme stack\'s counters priced by nvme-pci\'s NVME_DEFAULT_COST_MODEL (packages/nvme-pci/src/costModel.ts) with iommu-dma\'s IOMMU cost model; never fitted to the published figures.'],
    source: `Published figures: ${published ?? 'not in these results'}.`,
    run: r.runLine([suite]),
    desc: 'Grouped bar chart.',
  };
  return { id: 'iops-strict-lazy-off', chart };
}

// ---- 3. ODP fault-in pages/s ------------------------------------------------------------------

function odpFaultIn(r: Results): ClaimChart {
  const rdma = 'rdma-odp-fault-in';
  const hmm = 'hmm';
  const two = [r.fig(rdma, 'two-step pages mapped per second'), r.fig(hmm, 'two-step pages mapped/s')];
  const leg = [r.fig(rdma, 'legacy pages mapped per second'), r.fig(hmm, 'legacy pages mapped/s')];
  const mb = r.fig(rdma, 'MR size (MiB)');
  const pagesPerFault = r.fig(rdma, 'pages per fault');
  const hmmPages = r.fig(hmm, 'pages in the range');
  const chart: BarChart = {
    kind: 'bar',
    title: 'On-demand paging fault-in throughput: two-step IOVA path vs legacy per-page mapping (strict IOMMU)',
    xLabel: 'layer measured',
    yLabel: 'pages mapped per second',
    yScale: 'linear',
    categories: [
      `RDMA ODP, mlx5 page-fault handler\ntwo-step ${times(ratio(two[0] ?? null, leg[0] ?? null))} the legacy rate`,
      `HMM, hmm_range_fault + DMA map\ntwo-step ${times(ratio(two[1] ?? null, leg[1] ?? null))} the legacy rate`,
    ],
    series: [
      { name: 'two-step (hmm_dma_map_pfn into one IOVA window)', values: two, color: 0 },
      { name: 'legacy (one dma_map_page per page + page/DMA lists)', values: leg, color: 1 },
    ],
    notes: [
      `RDMA: a ${int(mb)} MiB MR touched sequentially, ${int(pagesPerFault)} pages per fault, median of ${int(r.samples(rdma, 'fault-in'))} rounds. HMM: ${int(hmmPages)} pages in 512-page hmm_range_fault windows, median of ${int(r.samples(hmm, 'fault-in'))} rounds. Wall clock of the model.`,
    ],
    source: MEASURED,
    run: r.runLine([rdma, hmm]),
    desc: 'Grouped bar chart.',
  };
  return { id: 'odp-fault-in', chart };
}

// ---- 4. metadata bytes per page, derived vs measured ------------------------------------------

function metadata(r: Results): ClaimChart {
  const blk = 'block-rq-dma-strict';
  const pages1m = r.fig(blk, '1m: physical segments');
  const perPage = (v: number | null): number | null => (v === null || pages1m === null || pages1m === 0 ? null : v / pages1m);
  const rows: { cat: string; derived: number | null; measured: number | null }[] = [
    { cat: 'HMM\ntwo-step', derived: r.fig('hmm', 'two-step metadata bytes/page, derived (kernel: unsigned long pfn word)'), measured: r.fig('hmm', 'two-step metadata bytes/page') },
    { cat: 'HMM\nlegacy', derived: r.fig('hmm', 'legacy metadata bytes/page, derived (kernel: struct page * + dma_addr_t)'), measured: r.fig('hmm', 'legacy metadata bytes/page') },
    { cat: 'RDMA ODP\ntwo-step', derived: r.fig('rdma-odp-fault-in', 'two-step metadata bytes per page, derived (kernel: unsigned long pfn word)'), measured: r.fig('rdma-odp-fault-in', 'two-step metadata bytes per page') },
    { cat: 'RDMA ODP\nlegacy', derived: r.fig('rdma-odp-fault-in', 'legacy metadata bytes per page, derived (kernel: page_list + dma_list)'), measured: r.fig('rdma-odp-fault-in', 'legacy metadata bytes per page') },
    { cat: 'vfio-mlx5\nIOVA', derived: r.fig('vfio-mlx5-metadata', 'IOVA path, kernel layout: bytes/page (struct page * 8 + MTT 8)'), measured: r.fig('vfio-mlx5-metadata', 'IOVA path: metadata bytes/page (page array 8 + MTT 8)') },
    { cat: 'vfio-mlx5\nlegacy sg', derived: r.fig('vfio-mlx5-metadata', 'legacy path, kernel layout: bytes/page (struct scatterlist 32 + MTT 8)'), measured: r.fig('vfio-mlx5-metadata', 'legacy path: metadata bytes/page (model SgTable 25 + MTT 8)') },
    { cat: 'blk-rq-dma 1M\ntwo-step', derived: perPage(r.fig(blk, '1m: metadata bytes iter (kernel sizes)')), measured: null },
    { cat: 'blk-rq-dma 1M\nlegacy sg', derived: perPage(r.fig(blk, '1m: metadata bytes sg (kernel sizes)')), measured: perPage(r.fig(blk, '1m: metadata bytes sg (model typed arrays)')) },
  ];
  const fmt = (v: number | null): string | null => (v === null ? null : v >= 1 ? v.toFixed(v % 1 === 0 ? 0 : 1) : v.toFixed(3));
  const chart: BarChart = {
    kind: 'bar',
    title: 'Mapping metadata per 4 KiB page, per subsystem: derived from kernel element sizes vs measured in the model',
    xLabel: 'subsystem and mapping path',
    yLabel: 'metadata (bytes per page)',
    yScale: 'linear',
    categories: rows.map((x) => x.cat),
    series: [
      { name: 'derived: kernel element sizes (64-bit) × elements per page', values: rows.map((x) => x.derived), color: 6, hatch: true, labels: rows.map((x) => fmt(x.derived)) },
      { name: 'measured: bytes of the model\'s arrays that hold the mappings ÷ pages', values: rows.map((x) => x.measured), color: 0, labels: rows.map((x) => (x.measured === null ? '—' : fmt(x.measured))) },
    ],
    notes: [
      'HMM and RDMA ODP measured over 1 GiB; vfio-mlx5 over a 1 GiB migration buffer; blk-rq-dma per 1 MiB request of 256 discontiguous pages (strict IOMMU). Measured legacy sg is smaller than derived: the model SgTable holds 25 B per entry in typed arrays (phys 8, length 4, DMA address 8, DMA length 4, flags 1) where struct scatterlist is 32 B.',
      '— = not measured: blk-rq-dma two-step keeps one 16-byte struct dma_iova_state per request (0.06 B/page), derived only, since the model holds it in a JS object, not a sized array.',
    ],
    source: MEASURED,
    run: r.runLine(['hmm', 'rdma-odp-fault-in', 'vfio-mlx5-metadata', blk]),
    desc: 'Grouped bar chart; hatched bars are derived figures.',
  };
  return { id: 'metadata-per-page', chart };
}

// ---- 5. IOTLB invalidations per I/O ----------------------------------------------------------

function invalidations(r: Results): ClaimChart {
  const inv = 'iommu-invalidations-per-io';
  const nvme = 'nvme-simulated-iops';
  const perPage = MODES.map((m) => r.fig(inv, `${m} per-page: IOTLB invalidations per 2 MiB I/O`));
  const two = MODES.map((m) => r.fig(inv, `${m} two-step: IOTLB invalidations per 2 MiB I/O`));
  const e2e = MODES.map((m) => r.fig(nvme, `${m}: IOTLB invalidations/IO`));
  const label = (v: number | null): string | null => (v === null ? 'n/a' : v === 0 ? '0' : v >= 10 ? v.toFixed(0) : v >= 0.1 ? v.toFixed(2) : v.toFixed(4));
  const chart: BarChart = {
    kind: 'bar',
    title: 'IOTLB invalidations per I/O: strict vs lazy vs no IOMMU, two-step vs per-page mapping',
    xLabel: 'IOMMU mode',
    yLabel: 'IOTLB invalidations per I/O (log scale)',
    yScale: 'log',
    categories: MODES.map((m) => m),
    series: [
      { name: 'per-page dma_map_phys, 2 MiB I/O (512 pages)', values: perPage, color: 1, labels: perPage.map(label) },
      { name: 'two-step IOVA, 2 MiB I/O (512 pages)', values: two, color: 0, labels: two.map(label) },
      { name: 'NVMe stack end to end, 4 KiB random read', values: e2e, color: 2, labels: e2e.map(label) },
    ],
    notes: [
      `Range and full-domain invalidations, counted over ${int(r.fig(inv, 'I/Os counted per mode and path'))} I/Os (NVMe: ${int(r.fig(nvme, 'lazy: I/Os'))}) and divided; lazy includes the flush-queue flushes, with one final drain of the queue (a kernel would flush on its 10 ms timer). No IOMMU: nothing to invalidate (0).`,
    ],
    source: MEASURED,
    run: r.runLine([inv, nvme]),
    desc: 'Grouped bar chart, logarithmic y axis; zero values are written on the baseline.',
  };
  return { id: 'iotlb-invalidations-per-io', chart };
}

// ---- 6. IOVA allocator against live allocations ---------------------------------------------

function allocator(r: Results): ClaimChart {
  const suite = 'iommu-iova-allocator-sweep';
  const rows = r.matching(suite, /^live=(\d+) (rbtree|rcache): ns per alloc\+free$/);
  const pts = (kind: string): [number, number][] =>
    rows
      .filter(({ m }) => m[2] === kind)
      .map(({ m, value }): [number, number] => [Number(m[1]), value])
      .sort((a, b) => a[0] - b[0]);
  const tree = pts('rbtree');
  const fast = pts('rcache');
  const growth = r.fig(suite, 'rbtree cost growth, 10^5 vs 10^2 live');
  const lastTree = tree[tree.length - 1];
  const chart: LineChart = {
    kind: 'line',
    title: 'IOVA allocator cost against the number of live allocations',
    xLabel: 'live IOVA ranges in the domain (log scale)',
    yLabel: 'ns per alloc + free (log scale)',
    xScale: 'log',
    yScale: 'log',
    xTicks: [100, 1000, 10_000, 100_000].filter((x) => tree.some(([t]) => t === x) || fast.some(([t]) => t === x)),
    series: [
      { name: 'alloc_iova + free_iova (rbtree), churn: free a random live range', points: tree, color: 1, marker: 1 },
      { name: 'alloc_iova_fast + free_iova_fast (per-CPU rcache hit)', points: fast, color: 0, marker: 0 },
    ],
    calloutAt: 'upper-left',
    callout:
      lastTree === undefined || growth === null
        ? []
        : [`rbtree at ${int(lastTree[0])} live: ${int(lastTree[1])} ns, ${times(growth)} its cost at ${int(tree[0]?.[0] ?? null)} live`, `rcache: ${fast.length === 0 ? 'n/a' : `${int(Math.min(...fast.map(([, y]) => y)))}-${int(Math.max(...fast.map(([, y]) => y)))} ns`} at every size`],
    notes: [
      `One-granule (4 KiB) ranges below a 36-bit limit; each point is the median of ${int(r.samples(suite, 'rbtree'))} rounds of ${int(r.fig(suite, 'operations per round (rbtree)'))} (rbtree) or ${int(r.fig(suite, 'operations per round (rcache)'))} (rcache) operations on one IovaDomain (drivers/iommu/iova.c model). Wall clock of the model.`,
    ],
    source: MEASURED,
    run: r.runLine([suite]),
    desc: 'Line chart, both axes logarithmic.',
  };
  return { id: 'iova-allocator-vs-live', chart };
}

/** All six claim charts, in report order. */
export function claimCharts(results: readonly SuiteResult[]): ClaimChart[] {
  const r = new Results(results);
  return [twoStepSweep(r), iops(r), odpFaultIn(r), metadata(r), invalidations(r), allocator(r)];
}

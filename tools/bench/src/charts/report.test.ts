import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { SuiteResult } from '../harness.js';
import { claimCharts } from './claims.js';
import { asSuiteResult, loadResults, writeCharts } from './report.js';
import { checkXml } from './xmlCheck.js';

const run = { date: '2026-12-04T13:40:00.000Z', commit: 'abc1234567', dirty: false, node: 'v20.20.0' };

function suite(name: string, figures: Record<string, number | string>): SuiteResult {
  return { suite: name, measured: [], figures, checks: [], run };
}

/** A small but complete set of results with the keys the suites write (values are test data). */
function sample(): SuiteResult[] {
  const sweep: Record<string, number> = {};
  for (const n of [1, 8, 64, 512, 4096]) {
    sweep[`pages=${n} two-step: wall ns/page`] = 700 / Math.sqrt(n) + 70;
    sweep[`pages=${n} per-page: wall ns/page`] = 300;
    sweep[`pages=${n} two-step: simulated ns/page`] = 2000 / n + 40;
    sweep[`pages=${n} per-page: simulated ns/page`] = 2120;
  }
  const alloc: Record<string, number> = {};
  for (const n of [100, 1000, 10_000, 100_000]) {
    alloc[`live=${n} rbtree: ns per alloc+free`] = 1000 + Math.log10(n) * 300;
    alloc[`live=${n} rcache: ns per alloc+free`] = 50;
  }
  alloc['rbtree cost growth, 10^5 vs 10^2 live'] = 2.2;
  return [
    suite('iommu-two-step-sweep', sweep),
    suite('iommu-iova-allocator-sweep', alloc),
    suite('nvme-simulated-iops', {
      'strict: simulated IOPS (one CPU)': 425_000,
      'lazy: simulated IOPS (one CPU)': 2_760_000,
      'off: simulated IOPS (one CPU)': 3_820_000,
      'strict: published IOPS': 570_000,
      'lazy: published IOPS': 1_930_000,
      'off: published IOPS': 5_010_000,
      'strict: IOTLB invalidations/IO': 1,
      'lazy: IOTLB invalidations/IO': 0.004,
      'off: IOTLB invalidations/IO': 0,
      'published IOPS source': 'the <doc> comment & "its" words',
      'lazy: I/Os': 20_000,
    }),
    suite('iommu-invalidations-per-io', {
      'strict two-step: IOTLB invalidations per 2 MiB I/O': 1,
      'strict per-page: IOTLB invalidations per 2 MiB I/O': 512,
      'lazy two-step: IOTLB invalidations per 2 MiB I/O': 0.0156,
      'lazy per-page: IOTLB invalidations per 2 MiB I/O': 2,
      'I/Os counted per mode and path': 64,
      'off two-step: IOTLB invalidations per 2 MiB I/O': 0,
      'off per-page: IOTLB invalidations per 2 MiB I/O': 0,
    }),
    suite('rdma-odp-fault-in', {
      'two-step pages mapped per second': 1_280_000,
      'legacy pages mapped per second': 172_000,
      'MR size (MiB)': 1024,
      'pages per fault': 16,
      'two-step metadata bytes per page': 8,
      'legacy metadata bytes per page': 16,
      'two-step metadata bytes per page, derived (kernel: unsigned long pfn word)': 8,
      'legacy metadata bytes per page, derived (kernel: page_list + dma_list)': 16,
    }),
    suite('hmm', {
      'two-step pages mapped/s': 2_700_000,
      'legacy pages mapped/s': 826_000,
      'pages in the range': 262_144,
      'two-step metadata bytes/page': 4,
      'legacy metadata bytes/page': 16,
      'two-step metadata bytes/page, derived (kernel: unsigned long pfn word)': 8,
      'legacy metadata bytes/page, derived (kernel: struct page * + dma_addr_t)': 16,
    }),
    suite('vfio-mlx5-metadata', {
      'IOVA path: metadata bytes/page (page array 8 + MTT 8)': 16,
      'legacy path: metadata bytes/page (model SgTable 25 + MTT 8)': 33,
      'legacy path, kernel layout: bytes/page (struct scatterlist 32 + MTT 8)': 40,
      'IOVA path, kernel layout: bytes/page (struct page * 8 + MTT 8)': 16,
    }),
    suite('block-rq-dma-strict', {
      '1m: physical segments': 256,
      '1m: metadata bytes iter (kernel sizes)': 16,
      '1m: metadata bytes sg (kernel sizes)': 8192,
      '1m: metadata bytes sg (model typed arrays)': 6400,
    }),
  ];
}

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'dmakit-charts-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('claim charts', () => {
  it('six charts, each with a title, axis labels, a source and the run it comes from', () => {
    const charts = claimCharts(sample());
    expect(charts.map((c) => c.id)).toEqual(['two-step-vs-per-page', 'iops-strict-lazy-off', 'odp-fault-in', 'metadata-per-page', 'iotlb-invalidations-per-io', 'iova-allocator-vs-live']);
    for (const { chart } of charts) {
      expect(chart.title.length).toBeGreaterThan(10);
      expect(chart.yLabel).toMatch(/\(|per|IOPS/);
      expect(chart.source.length).toBeGreaterThan(10);
      expect(chart.run).toContain('commit abc1234567');
      expect(chart.run).toContain('2026-12-04 13:40:00 UTC');
    }
  });

  it('takes every number from the results: the sweep points, the ratios and the published source', () => {
    const [sweep, iops, odp] = claimCharts(sample());
    if (sweep?.chart.kind !== 'line' || iops?.chart.kind !== 'bar' || odp?.chart.kind !== 'bar') throw new Error('chart kinds');
    expect(sweep.chart.series[0]?.points.map(([x]) => x)).toEqual([1, 8, 64, 512, 4096]);
    expect(sweep.chart.callout?.join(' ')).toContain('(wall clock)');
    expect(sweep.chart.callout?.join(' ')).toContain('52×'); // 2120 / (2000/4096 + 40) = 52.4
    expect(iops.chart.series[1]?.values).toEqual([570_000, 1_930_000, 5_010_000]);
    expect(iops.chart.source).toBe('Published figures: the <doc> comment & "its" words.');
    expect(iops.chart.categories[0]).toContain('0.111 simulated · 0.114 published');
    expect(odp.chart.categories[0]).toContain('7.4×');
    const inv = claimCharts(sample())[4]?.chart;
    expect(inv?.notes?.join(' ')).toContain('counted over 64 I/Os (NVMe: 20,000)');
  });

  it('labels derived-only metadata honestly and converts per-request figures to per page', () => {
    const meta = claimCharts(sample())[3]?.chart;
    if (meta?.kind !== 'bar') throw new Error('bar');
    const blkTwo = meta.categories.findIndex((c) => c.startsWith('blk-rq-dma 1M\ntwo-step'));
    expect(meta.series[0]?.values[blkTwo]).toBeCloseTo(16 / 256);
    expect(meta.series[1]?.values[blkTwo]).toBeNull();
    expect(meta.series[1]?.labels?.[blkTwo]).toBe('—');
    expect(meta.series[1]?.values[meta.categories.length - 1]).toBeCloseTo(25);
  });

  it('missing suites give charts that say so, never NaN', () => {
    const charts = claimCharts([suite('nvme-simulated-iops', { 'strict: simulated IOPS (one CPU)': 1 })]);
    charts.forEach(({ chart }, i) => {
      // Only the IOPS chart has its suite; every other one names what is missing.
      if (i !== 1) expect(chart.run).toMatch(/not in these results: /);
      expect(JSON.stringify(chart)).not.toMatch(/NaN|Infinity/);
    });
    expect(charts[1]?.chart.source).toBe('Published figures: not in these results.');
  });
});

describe('report files', () => {
  it('writeCharts writes one SVG per chart and an index of { id, title, file, source }', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'stale.svg'), '<svg/>');
    const index = writeCharts(sample(), dir);
    expect(index).toHaveLength(6);
    const onDisk = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as unknown;
    expect(onDisk).toEqual(index);
    for (const e of index) {
      expect(Object.keys(e).sort()).toEqual(['file', 'id', 'source', 'title']);
      expect(e.file).toBe(`${e.id}.svg`);
      const svg = readFileSync(join(dir, e.file), 'utf8');
      checkXml(svg);
      expect(svg).not.toMatch(/NaN|Infinity|undefined/);
    }
    expect(readdirSync(dir).sort()).toEqual(['index.json', ...index.map((e) => e.file)].sort());
  });

  it('loadResults reads suite JSON and reports what it skipped', () => {
    const dir = tmp();
    for (const r of sample()) writeFileSync(join(dir, `${r.suite}.json`), JSON.stringify(r));
    writeFileSync(join(dir, 'broken.json'), '{"suite": "x", "figures": ');
    writeFileSync(join(dir, 'index.json'), '[]');
    writeFileSync(join(dir, 'notes.md'), '# not json');
    const { results, skipped } = loadResults(dir);
    expect(results.map((r) => r.suite).sort()).toEqual(sample().map((r) => r.suite).sort());
    expect(skipped.map((s) => s.file).sort()).toEqual(['broken.json', 'index.json']);
    expect(skipped.find((s) => s.file === 'broken.json')?.reason).toMatch(/not valid JSON/);
    expect(loadResults(join(dir, 'nope')).skipped[0]?.reason).toMatch(/ENOENT/);
  });

  it('asSuiteResult rejects wrong shapes with a reason and drops null (NaN) figures', () => {
    expect(asSuiteResult([])).toBe('not a JSON object');
    expect(asSuiteResult({ suite: 'a' })).toBe('no "figures" object');
    expect(asSuiteResult({ suite: 'a', figures: { k: {} }, measured: [], checks: [] })).toMatch(/neither a number nor a string/);
    const ok = asSuiteResult({ suite: 'a', figures: { k: null, n: 2 }, measured: [], checks: [], run });
    expect(typeof ok === 'string' ? ok : ok.figures).toEqual({ n: 2 });
    expect(typeof ok === 'string' ? null : ok.run).toEqual(run);
  });
});

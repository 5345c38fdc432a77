/**
 * `pnpm bench`: runs every suite, writes tools/bench/results/*.json + *.md, prints the summary,
 * then renders the claims report (results/charts/*.svg + index.json) from the results on disk.
 */
import { join } from 'node:path';
import { loadResults, writeCharts } from './charts/report.js';
import { runBlkRqDmaBenches } from './blkRqDma.bench.js';
import { runDmabufBenches } from './dmabuf.bench.js';
import { runDmaCoreBenches } from './dmaCore.bench.js';
import { runHmmBenches } from './hmm.bench.js';
import { runIommuDmaBenches } from './iommuDma.bench.js';
import { runNvmeBenches } from './nvme.bench.js';
import { runRdmaOdpBenches } from './rdmaOdp.bench.js';
import { runScalingBenches } from './scaling.bench.js';
import { runVfioMlx5Benches } from './vfioMlx5.bench.js';
import { profileTop } from './profile.js';
import { resultsDir, runInfo, writeSuite, writeSummary } from './harness.js';
import type { SuiteResult } from './harness.js';

runInfo(); // the run's date is its start
const t0 = process.hrtime.bigint();
const only = process.argv.slice(2);
const suites: [string, () => SuiteResult[]][] = [
  ['dma-core', runDmaCoreBenches],
  ['iommu-dma', runIommuDmaBenches],
  ['block-rq-dma', runBlkRqDmaBenches],
  ['dmabuf', runDmabufBenches],
  ['nvme', runNvmeBenches],
  ['hmm', runHmmBenches],
  ['rdma-odp', runRdmaOdpBenches],
  ['vfio-mlx5', runVfioMlx5Benches],
  ['scaling', runScalingBenches],
];

const mds: string[] = [];
const all: SuiteResult[] = [];
let failed = 0;
for (const [name, run] of suites) {
  if (only.length > 0 && !only.includes(name)) continue;
  const ts = process.hrtime.bigint();
  for (const r of run()) {
    for (const c of r.checks) if (!c.pass && c.profile !== undefined) c.top = await profileTop(c.profile);
    const md = writeSuite(r);
    mds.push(md);
    all.push(r);
    process.stdout.write(`${md}\n`);
    failed += r.checks.filter((c) => !c.pass).length;
  }
  process.stdout.write(`(${name}: ${(Number(process.hrtime.bigint() - ts) / 1e9).toFixed(1)} s)\n\n`);
}
process.stdout.write(writeSummary(all, mds));
// Charts from everything on disk, so a partial run (`pnpm bench nvme`) still draws the rest.
const { results, skipped } = loadResults(resultsDir);
for (const s of skipped) process.stderr.write(`charts: skipped ${s.file}: ${s.reason}\n`);
const charts = writeCharts(results, join(resultsDir, 'charts'));
process.stdout.write(`claims report: ${charts.length} SVG charts in tools/bench/results/charts/ (index.json)\n`);
process.stdout.write(`bench time: ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(1)} s\n`);
process.stdout.write(`benchmarks: ${failed === 0 ? 'all targets met' : `${failed} target(s) missed`} (results in tools/bench/results/)\n`);

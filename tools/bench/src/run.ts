/**
 * `pnpm bench`: runs every suite, writes tools/bench/results/*.json + *.md, prints the summary,
 * then renders the claims report (results/charts/*.svg + index.json) from the results on disk.
 *
 * Each suite group runs in a fresh `node --expose-gc` process (as JMH forks per benchmark): V8's
 * type feedback and inlining decisions from one package's suites then cannot slow down or speed
 * up another's shared hot paths, so a figure is what a program doing that work alone would see.
 * `--in-process` runs the selected groups in this process instead.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
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
const groups: [string, () => SuiteResult[]][] = [
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

const args = process.argv.slice(2);
const inProcess = args.includes('--in-process');
/** Set in a child: where to list the suites it wrote. */
const manifest = process.env.DMAKIT_BENCH_MANIFEST;
const only = args.filter((a) => !a.startsWith('--'));
const unknown = only.filter((g) => !groups.some(([name]) => name === g));
if (unknown.length > 0) {
  process.stderr.write(`bench: unknown suite group(s) ${unknown.join(', ')}; groups: ${groups.map(([n]) => n).join(', ')}\n`);
  process.exit(2);
}
const selected = groups.filter(([name]) => only.length === 0 || only.includes(name));

/** Run one group here: write each suite's files, profile missed targets; returns what it wrote. */
async function runGroup(name: string, run: () => SuiteResult[]): Promise<{ results: SuiteResult[]; mds: string[] }> {
  const ts = process.hrtime.bigint();
  const results: SuiteResult[] = [];
  const mds: string[] = [];
  for (const r of run()) {
    for (const c of r.checks) if (!c.pass && c.profile !== undefined) c.top = await profileTop(c.profile);
    const md = writeSuite(r);
    mds.push(md);
    results.push(r);
    process.stdout.write(`${md}\n`);
  }
  process.stdout.write(`(${name}: ${(Number(process.hrtime.bigint() - ts) / 1e9).toFixed(1)} s)\n\n`);
  return { results, mds };
}

/** Run one group in a fresh node process; read back the suites it wrote. */
function forkGroup(name: string): { results: SuiteResult[]; mds: string[] } {
  const list = join(tmpdir(), `dmakit-bench-${process.pid}-${name}.json`);
  rmSync(list, { force: true });
  const child = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), name], {
    stdio: 'inherit',
    env: { ...process.env, DMAKIT_BENCH_MANIFEST: list },
  });
  if (child.status !== 0) throw new Error(`bench: the ${name} group failed (exit ${String(child.status ?? child.signal)})`);
  const suites = JSON.parse(readFileSync(list, 'utf8')) as string[];
  rmSync(list, { force: true });
  const { results } = loadResults(resultsDir);
  const mine = suites.map((s) => {
    const r = results.find((x) => x.suite === s);
    if (r === undefined) throw new Error(`bench: the ${name} group wrote no readable results/${s}.json`);
    return r;
  });
  return { results: mine, mds: suites.map((s) => readFileSync(join(resultsDir, `${s}.md`), 'utf8')) };
}

const all: SuiteResult[] = [];
const mds: string[] = [];
for (const [name, run] of selected) {
  const got = manifest !== undefined || inProcess ? await runGroup(name, run) : forkGroup(name);
  all.push(...got.results);
  mds.push(...got.mds);
}
if (manifest !== undefined) {
  // A child: the parent writes the summary and the charts.
  writeFileSync(manifest, JSON.stringify(all.map((r) => r.suite)));
} else {
  process.stdout.write(writeSummary(all, mds));
  // Charts from everything on disk, so a partial run (`pnpm bench nvme`) still draws the rest.
  const { results, skipped } = loadResults(resultsDir);
  for (const s of skipped) process.stderr.write(`charts: skipped ${s.file}: ${s.reason}\n`);
  const charts = writeCharts(results, join(resultsDir, 'charts'));
  const failed = all.reduce((n, r) => n + r.checks.filter((c) => !c.pass).length, 0);
  process.stdout.write(`claims report: ${charts.length} SVG charts in tools/bench/results/charts/ (index.json)\n`);
  process.stdout.write(`bench time: ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(1)} s\n`);
  process.stdout.write(`benchmarks: ${failed === 0 ? 'all targets met' : `${failed} target(s) missed`} (results in tools/bench/results/)\n`);
}

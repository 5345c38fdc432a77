/**
 * Reading bench results back from disk and writing the claims report:
 * results/charts/<id>.svg and results/charts/index.json = [{ id, title, file, source }].
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SuiteResult } from '../harness.js';
import { claimCharts } from './claims.js';
import type { ChartEntry } from './claims.js';
import { renderChart } from './svg.js';

export interface LoadedResults {
  readonly results: SuiteResult[];
  /** Files that were not suite results (unreadable, not JSON, wrong shape), with the reason. */
  readonly skipped: { file: string; reason: string }[];
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** A parsed JSON value if it has the shape writeSuite produces, else a reason why not. */
export function asSuiteResult(x: unknown): SuiteResult | string {
  if (!isRecord(x)) return 'not a JSON object';
  if (typeof x.suite !== 'string' || x.suite === '') return 'no "suite" name';
  if (!isRecord(x.figures)) return 'no "figures" object';
  for (const [k, v] of Object.entries(x.figures)) if (typeof v !== 'number' && typeof v !== 'string' && v !== null) return `figure "${k}" is neither a number nor a string`;
  if (!Array.isArray(x.measured)) return 'no "measured" array';
  if (!Array.isArray(x.checks)) return 'no "checks" array';
  // JSON turns NaN/Infinity into null: keep such figures out rather than fail the whole file.
  const figures: Record<string, number | string> = {};
  for (const [k, v] of Object.entries(x.figures)) if (typeof v === 'number' || typeof v === 'string') figures[k] = v;
  const run = isRecord(x.run) && typeof x.run.date === 'string' && typeof x.run.commit === 'string' ? { date: x.run.date, commit: x.run.commit, dirty: x.run.dirty === true, node: typeof x.run.node === 'string' ? x.run.node : '?' } : undefined;
  return { suite: x.suite, measured: x.measured as SuiteResult['measured'], figures, checks: x.checks as SuiteResult['checks'], ...(run === undefined ? {} : { run }) };
}

/** Every `<suite>.json` in `dir` (index.json and other non-results are reported as skipped). */
export function loadResults(dir: string): LoadedResults {
  const results: SuiteResult[] = [];
  const skipped: { file: string; reason: string }[] = [];
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  } catch (e) {
    return { results, skipped: [{ file: dir, reason: e instanceof Error ? e.message : String(e) }] };
  }
  for (const f of files) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    } catch (e) {
      skipped.push({ file: f, reason: `not valid JSON (${e instanceof Error ? e.message : String(e)})` });
      continue;
    }
    const r = asSuiteResult(parsed);
    if (typeof r === 'string') skipped.push({ file: f, reason: r });
    else results.push(r);
  }
  return { results, skipped };
}

/** Render the claim charts from `results` into `chartsDir`; returns the index written. */
export function writeCharts(results: readonly SuiteResult[], chartsDir: string): ChartEntry[] {
  mkdirSync(chartsDir, { recursive: true });
  // Only the charts of this report stay in the directory.
  for (const f of readdirSync(chartsDir)) if (f.endsWith('.svg')) rmSync(join(chartsDir, f));
  const index: ChartEntry[] = [];
  for (const { id, chart } of claimCharts(results)) {
    const file = `${id}.svg`;
    writeFileSync(join(chartsDir, file), renderChart(chart, id));
    index.push({ id, title: chart.title, file, source: chart.source });
  }
  writeFileSync(join(chartsDir, 'index.json'), `${JSON.stringify(index, null, 2)}\n`);
  return index;
}

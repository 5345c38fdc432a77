/**
 * A small side-by-side benchmark harness. Targets are ratios measured in one run (DESIGN.md:
 * "Report figures as ratios measured side by side"): the contenders of a comparison run in
 * interleaved rounds so that machine noise hits both alike, and the median round is reported.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Contender {
  readonly name: string;
  /** Runs `ops` operations; returns nothing (work must have a visible side effect). */
  readonly run: (ops: number) => void;
}

export interface Measured {
  readonly name: string;
  readonly nsPerOp: number;
  readonly opsPerSec: number;
  readonly samples: number;
}

export interface Check {
  readonly name: string;
  readonly target: string;
  readonly value: number;
  readonly pass: boolean;
  /** Runs the measured contender's work, for a profile when the target is missed (not serialised). */
  readonly profile?: () => void;
  /** Top functions by self time of that work, filled in by run.ts when the target is missed. */
  top?: string[];
}

export interface SuiteResult {
  readonly suite: string;
  readonly measured: Measured[];
  readonly figures: Record<string, number | string>;
  readonly checks: Check[];
  /** The run that produced it (added by writeSuite). */
  readonly run?: RunInfo;
}

/** When and from what source a result was measured. */
export interface RunInfo {
  /** ISO 8601 UTC time the bench process started. */
  readonly date: string;
  /** Short commit hash of the worktree, or 'unknown' outside git. */
  readonly commit: string;
  /** The worktree had uncommitted changes. */
  readonly dirty: boolean;
  readonly node: string;
}

function git(args: string[]): string | null {
  try {
    return execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

let runInfoCache: RunInfo | null = null;

/** This process's run: start time and the commit being measured (read once). */
export function runInfo(): RunInfo {
  if (runInfoCache === null) {
    const commit = git(['rev-parse', '--short=10', 'HEAD']);
    const status = commit === null ? null : git(['status', '--porcelain', '--untracked-files=no']);
    runInfoCache = { date: new Date().toISOString(), commit: commit ?? 'unknown', dirty: status !== null && status !== '', node: process.version };
  }
  return runInfoCache;
}

function nowNs(): number {
  return Number(process.hrtime.bigint());
}

/** Median of samples (NaN when empty). */
export function medianOf(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

/**
 * Interleave contenders for `rounds` rounds of `ops` operations each; median ns/op per contender.
 * Each contender first runs `warmupOps` operations (default ops / 4) so V8 has optimized it.
 */
export function sideBySide(contenders: readonly Contender[], ops: number, rounds = 9, warmupOps = ops / 4): Measured[] {
  for (const c of contenders) c.run(Math.max(1, Math.floor(warmupOps))); // warm-up (JIT)
  const samples = contenders.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    contenders.forEach((c, i) => {
      const t0 = nowNs();
      c.run(ops);
      samples[i]?.push((nowNs() - t0) / ops);
    });
  }
  return contenders.map((c, i) => {
    const ns = medianOf(samples[i] ?? []);
    return { name: c.name, nsPerOp: ns, opsPerSec: 1e9 / ns, samples: rounds };
  });
}

/** Time one function once (for big one-shot operations). */
export function once(fn: () => void): number {
  const t0 = nowNs();
  fn();
  return nowNs() - t0;
}

export function check(name: string, target: string, value: number, pass: boolean, profile?: () => void): Check {
  return profile === undefined ? { name, target, value, pass } : { name, target, value, pass, profile };
}

export const resultsDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'results');

function fmt(x: number | string): string {
  if (typeof x === 'string') return x;
  if (!Number.isFinite(x)) return String(x);
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 1) return x.toFixed(2);
  return x.toPrecision(3);
}

/** Write `results/<suite>.json` and `results/<suite>.md`; returns the markdown. */
export function writeSuite(result: SuiteResult): string {
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, `${result.suite}.json`), `${JSON.stringify({ ...result, run: result.run ?? runInfo() }, null, 2)}\n`);
  const lines = [`## ${result.suite}`, '', '| contender | ns/op | ops/s |', '| --- | ---: | ---: |'];
  for (const m of result.measured) lines.push(`| ${m.name} | ${fmt(m.nsPerOp)} | ${fmt(m.opsPerSec)} |`);
  if (Object.keys(result.figures).length > 0) {
    lines.push('', '| figure | value |', '| --- | ---: |');
    for (const [k, v] of Object.entries(result.figures)) lines.push(`| ${k} | ${fmt(v)} |`);
  }
  if (result.checks.length > 0) {
    lines.push('', '| target | measured | result |', '| --- | ---: | --- |');
    for (const c of result.checks) lines.push(`| ${c.name}: ${c.target} | ${fmt(c.value)} | ${c.pass ? 'PASS' : 'FAIL'} |`);
    for (const c of result.checks) {
      if (c.top !== undefined && c.top.length > 0) lines.push('', `Missed: ${c.name}. Top functions by self time of the contender:`, '', ...c.top.map((t) => `- ${t}`));
    }
  }
  const md = `${lines.join('\n')}\n`;
  writeFileSync(join(resultsDir, `${result.suite}.md`), md);
  return md;
}

/**
 * `results/SUMMARY.md`: every target of the run in one table at the top (measured value, target,
 * PASS/FAIL, suite), then each suite's own tables.
 */
export function writeSummary(results: readonly SuiteResult[], mds: readonly string[]): string {
  mkdirSync(resultsDir, { recursive: true });
  const r = runInfo();
  const rows = ['| target | measured | goal | result | suite |', '| --- | ---: | --- | --- | --- |'];
  let failed = 0;
  for (const res of results) {
    for (const c of res.checks) {
      if (!c.pass) failed++;
      const why = c.pass || c.top === undefined || c.top.length === 0 ? '' : ` (top: ${c.top.slice(0, 3).join('; ')})`;
      rows.push(`| ${c.name} | ${fmt(c.value)} | ${c.target} | ${c.pass ? 'PASS' : `**FAIL**${why}`} | ${res.suite} |`);
    }
  }
  const total = rows.length - 2;
  const head = [
    '# dmakit benchmark results',
    '',
    `Node ${process.version}, ${process.platform}/${process.arch}; compiled JavaScript (no loader); run ${r.date}, commit ${r.commit}${r.dirty ? ' (with uncommitted changes)' : ''}. Charts: charts/*.svg (index in charts/index.json).`,
    '',
    `## Targets: ${total - failed} of ${total} PASS`,
    '',
    ...rows,
    '',
  ].join('\n');
  const text = `${head}\n${mds.join('\n')}`;
  writeFileSync(join(resultsDir, 'SUMMARY.md'), text);
  return head;
}

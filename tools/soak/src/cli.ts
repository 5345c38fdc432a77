/**
 * `pnpm soak`: the seeded soak. Round after round of fresh seeds, every selected task (each demo
 * stack with options drawn from the seed, each model-checking property with fast-check seeded by
 * it) runs on a tinypool pool of worker threads until the time or run budget is spent. Failures
 * print at once (stderr) with the command that reproduces them; a progress line goes to stderr
 * every few seconds (every 15 s when stderr is not a terminal); the per-task table goes to stdout.
 * Exit status: 0 clean, 1 when a run failed, 2 on bad arguments.
 *
 * Several machines split one seed range with `--shard I/N` and the same `--seed-start`: machine I
 * runs seeds seed-start + (I-1) + k*N, so N machines never repeat a seed and each failure's seed
 * means the same thing everywhere.
 */
import { realpathSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Tinypool } from 'tinypool';
import { parseSoakArgs, USAGE } from './args.js';
import type { SoakArgs } from './args.js';
import type * as PlanModule from './plan.js';
import type { SoakTaskInput, SoakTaskResult } from './task.js';

interface Out {
  write(s: string): unknown;
}

interface Io {
  readonly stdout: Out;
  readonly stderr: Out & { readonly isTTY?: boolean };
}

interface TaskStats {
  runs: number;
  failures: number;
  totalMs: number;
  slowestMs: number;
  slowestSeed: number;
}

/** A fresh seed-start: seconds since the epoch, below 2^31 (room for ~2 billion more seeds before 2^32). */
function freshSeedStart(): number {
  return Math.floor(Date.now() / 1000) % 2 ** 31;
}

function fmtMs(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function fmtDuration(s: number): string {
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

/** The per-task table (stdout). */
export function formatTable(stats: ReadonlyMap<string, TaskStats>): string {
  const rows: string[][] = [['task', 'runs', 'failures', 'slowest seed', 'slowest', 'mean']];
  let runs = 0;
  let failures = 0;
  for (const [name, s] of stats) {
    runs += s.runs;
    failures += s.failures;
    rows.push([name, String(s.runs), String(s.failures), s.runs > 0 ? String(s.slowestSeed) : '-', s.runs > 0 ? fmtMs(s.slowestMs) : '-', s.runs > 0 ? fmtMs(s.totalMs / s.runs) : '-']);
  }
  rows.push(['total', String(runs), String(failures), '', '', '']);
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ').trimEnd()).join('\n') + '\n';
}

/** The plan loads every demo stack: imported once the arguments are known to be good, so bad ones fail fast. */
type Plan = typeof PlanModule;

function failureLines(plan: Plan, r: SoakTaskResult, propertyRuns: number): string {
  const f = r.failure;
  if (f === null) return '';
  let repro: string;
  try {
    repro = plan.reproCommand(r.name, r.seed, { propertyRuns });
  } catch (err) {
    repro = `(no command: ${err instanceof Error ? err.message : String(err)})`;
  }
  return `FAIL ${r.name} seed ${r.seed} (${f.kind}): ${f.message}\n  reproduce: ${repro}\n`;
}

async function replay(plan: Plan, args: SoakArgs, task: string, seed: number, io: Io): Promise<number> {
  if (!plan.TASKS.includes(task)) {
    io.stderr.write(`pnpm soak: --replay: no task called '${task}' (tasks: ${plan.TASKS.join(', ')})\n`);
    return 2;
  }
  const { runSoakTask } = await import('./task.js');
  io.stdout.write(`replay ${task} seed ${seed}: ${plan.reproCommand(task, seed, { propertyRuns: args.propertyRuns })}\n`);
  const r = runSoakTask({ name: task, seed, propertyRuns: args.propertyRuns, recheck: true, verbose: true });
  if (r.detail !== undefined) io.stdout.write(`${r.detail}\n`);
  io.stdout.write(`${r.failure === null ? 'ok' : `FAIL (${r.failure.kind}): ${r.failure.message}`} in ${fmtMs(r.ms)}\n`);
  return r.failure === null ? 0 : 1;
}

/** Run `pnpm soak` with `argv` (without node and the script); resolves to the exit status. */
export async function main(argv: readonly string[], io: Io = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const args = parseSoakArgs(argv);
  if ('error' in args) {
    io.stderr.write(`${args.error}\n`);
    return 2;
  }
  const plan = await import('./plan.js');
  const { shardSeed } = plan;
  if ('help' in args) {
    io.stdout.write(`${USAGE}\n\ntasks: ${plan.TASKS.join(', ')}\n`);
    return 0;
  }
  if (args.replay !== undefined) return replay(plan, args, args.replay.task, args.replay.seed, io);
  const sel = plan.selectTasks(args.only);
  if ('error' in sel) {
    io.stderr.write(`pnpm soak: ${sel.error}\n`);
    return 2;
  }
  const tasks = sel.tasks;
  const workers = args.workers ?? availableParallelism();
  const seedStart = args.seedStart ?? freshSeedStart();
  const { index, count } = args.shard;
  const budgetMs = args.minutes * 60_000;
  const maxRuns = args.runs ?? Number.POSITIVE_INFINITY;

  io.stdout.write(
    `soak: ${tasks.length} tasks, ${workers} worker${workers === 1 ? '' : 's'}, ${args.minutes} min${args.runs !== undefined ? ` or ${args.runs} runs` : ''}, ` +
      `seed-start ${seedStart}${count > 1 ? `, shard ${index}/${count} (seeds ${shardSeed(seedStart, index, count, 0)}, ${shardSeed(seedStart, index, count, 1)}, ...)` : ''}` +
      `, property runs ${args.propertyRuns}, recheck every ${args.recheck === 0 ? 'never' : `${args.recheck}th seed`}\n`,
  );

  const stats = new Map<string, TaskStats>(tasks.map((t) => [t, { runs: 0, failures: 0, totalMs: 0, slowestMs: 0, slowestSeed: 0 }]));
  const failures: SoakTaskResult[] = [];
  const t0 = performance.now();
  let issued = 0;
  let finished = 0;
  let round = 0;
  let slot = 0;
  let stopping = false;
  let lastSeed = seedStart;

  const pool = new Tinypool({
    filename: fileURLToPath(new URL('./worker.mjs', import.meta.url)),
    minThreads: workers,
    maxThreads: workers,
    // Source through the export condition (see worker.mjs); nothing else from this process's flags.
    execArgv: ['--conditions=@dmakit/source'],
    // A timed-out run's thread is terminated and replaced; the rest keep theirs.
    isolateWorkers: false,
  });

  const next = (): SoakTaskInput | null => {
    if (stopping || issued >= maxRuns || performance.now() - t0 >= budgetMs) return null;
    const name = tasks[slot];
    if (name === undefined) return null;
    const seed = shardSeed(seedStart, index, count, round);
    slot++;
    if (slot === tasks.length) {
      slot = 0;
      round++;
    }
    issued++;
    lastSeed = Math.max(lastSeed, seed);
    const recheck = args.recheck > 0 && seed % args.recheck === 0;
    return { name, seed, propertyRuns: args.propertyRuns, recheck };
  };

  const record = (r: SoakTaskResult): void => {
    finished++;
    const s = stats.get(r.name);
    if (s !== undefined) {
      s.runs++;
      s.totalMs += r.ms;
      if (r.ms > s.slowestMs) {
        s.slowestMs = r.ms;
        s.slowestSeed = r.seed;
      }
      if (r.failure !== null) s.failures++;
    }
    if (r.failure !== null) {
      failures.push(r);
      io.stderr.write(failureLines(plan, r, args.propertyRuns));
    }
  };

  const lane = async (): Promise<void> => {
    for (let input = next(); input !== null; input = next()) {
      const ac = new AbortController();
      const timer = setTimeout(() => {
        ac.abort();
      }, args.timeoutSeconds * 1000);
      const started = performance.now();
      try {
        record((await pool.run(input, { signal: ac.signal })) as SoakTaskResult);
      } catch (err) {
        const message = ac.signal.aborted ? `no result after ${args.timeoutSeconds} s (the worker was terminated)` : `the worker died: ${err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err)}`;
        record({ name: input.name, seed: input.seed, ms: performance.now() - started, failure: { kind: ac.signal.aborted ? 'timeout' : 'exception', message } });
      } finally {
        clearTimeout(timer);
      }
    }
  };

  const progressEveryMs = io.stderr.isTTY === true ? 3_000 : 15_000;
  const progress = setInterval(() => {
    const s = (performance.now() - t0) / 1000;
    io.stderr.write(`soak ${fmtDuration(s)} / ${fmtDuration(args.minutes * 60)}  ${finished} runs  ${failures.length} failures  ${((finished * 60) / Math.max(s, 1e-3)).toFixed(0)} runs/min  round ${round} (seed ${shardSeed(seedStart, index, count, round)})\n`);
  }, progressEveryMs);

  const onSigint = (): void => {
    if (stopping) process.exit(130);
    stopping = true;
    io.stderr.write('soak: interrupted: finishing the runs under way (Ctrl-C again to quit at once)\n');
  };
  process.on('SIGINT', onSigint);
  try {
    await Promise.all(Array.from({ length: workers }, lane));
  } finally {
    clearInterval(progress);
    process.off('SIGINT', onSigint);
    await pool.destroy();
  }

  const secs = (performance.now() - t0) / 1000;
  io.stdout.write(formatTable(stats));
  io.stdout.write(
    `${finished} runs in ${secs.toFixed(1)} s: ${((finished * 60) / secs).toFixed(0)} runs per minute on ${workers} worker${workers === 1 ? '' : 's'}; ` +
      `seeds ${seedStart}..${lastSeed}${count > 1 ? ` (shard ${index}/${count})` : ''}, ${round} full round${round === 1 ? '' : 's'}\n`,
  );
  if (failures.length === 0) {
    io.stdout.write('ok: no failure\n');
    return 0;
  }
  io.stdout.write(`${failures.length} failure${failures.length === 1 ? '' : 's'}:\n${failures.map((f) => failureLines(plan, f, args.propertyRuns)).join('')}`);
  return 1;
}

/** True when this module is the program node started. */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) process.exitCode = await main(process.argv.slice(2));

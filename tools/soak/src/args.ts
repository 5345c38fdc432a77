/**
 * Argument parsing for `pnpm soak` (./cli.ts), kept free of imports so its tests run without
 * loading a stack. Task names (`--only`, `--replay`) are checked by the CLI against the plan.
 */

export const USAGE = `usage: pnpm soak [--minutes M] [--workers W] [--seed-start S] [--shard I/N] [--only TASKS]
                 [--runs N] [--recheck K] [--property-runs N] [--timeout-seconds T]
       pnpm soak --replay TASK --seed S [--property-runs N]

Runs every demo stack (options drawn from the seed) and the packages' model-checking properties
(fast-check seeded by the seed) over a pool of worker threads, round after round of fresh seeds,
until M minutes or N runs have passed. Prints every failure with the command that reproduces it,
a progress line on stderr, and a table per task; exits 1 when anything failed, 2 on bad arguments.

  --minutes M          wall-clock budget, 0 < M <= 10080 (default 1; the last runs finish after it)
  --workers W          worker threads, 1..256 (default: available parallelism)
  --seed-start S       first seed, 0..4294967295 (default: fresh, from the clock; printed so the
                       run can be repeated)
  --shard I/N          run only seeds seed-start + (I-1) + k*N: machine I of N (default 1/1)
  --only TASKS         comma-separated task names or prefixes, or 'stacks' / 'properties'
  --runs N             stop after N runs (as well as after M minutes)
  --recheck K          run every stack seed divisible by K twice and compare the results
                       (0: never; default 8)
  --property-runs N    fast-check runs per property task, 1..100000 (default 20)
  --timeout-seconds T  a run taking longer fails as a timeout, 1..86400 (default 300)
  --replay TASK        run one task at --seed in this process and print everything about it`;

export interface SoakArgs {
  readonly minutes: number;
  /** undefined: the machine's available parallelism. */
  readonly workers: number | undefined;
  /** undefined: fresh from the clock. */
  readonly seedStart: number | undefined;
  readonly shard: { readonly index: number; readonly count: number };
  readonly only: string | undefined;
  /** undefined: no limit but the minutes. */
  readonly runs: number | undefined;
  readonly recheck: number;
  readonly propertyRuns: number;
  readonly timeoutSeconds: number;
  /** `--replay TASK --seed S`. */
  readonly replay: { readonly task: string; readonly seed: number } | undefined;
}

const MAX_SEED = 0xffffffff;

/** A non-negative decimal integer, or null. */
function intArg(s: string): number | null {
  return /^\d+$/.test(s) && Number.isSafeInteger(Number(s)) ? Number(s) : null;
}

const VALUE_OPTIONS = ['--minutes', '--workers', '--seed-start', '--shard', '--only', '--runs', '--recheck', '--property-runs', '--timeout-seconds', '--replay', '--seed'] as const;
type ValueOption = (typeof VALUE_OPTIONS)[number];

/**
 * Parse `argv` (without node and the script). Returns the arguments, `{ help: true }` for
 * --help, or `{ error }` with one line starting with 'pnpm soak: '.
 */
export function parseSoakArgs(argv: readonly string[]): SoakArgs | { help: true } | { error: string } {
  const given = new Map<ValueOption, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--help' || a === '-h') return { help: true };
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (!(VALUE_OPTIONS as readonly string[]).includes(name)) return { error: `pnpm soak: unknown argument '${a}'` };
    const opt = name as ValueOption;
    let v = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined || v.trim() === '' || (eq < 0 && v.startsWith('--'))) return { error: `pnpm soak: ${opt} needs a value` };
    v = v.trim();
    if (given.has(opt)) return { error: `pnpm soak: ${opt} given twice` };
    given.set(opt, v);
  }

  // Widened on purpose: int() sets it, and TypeScript would otherwise narrow it to null below.
  let error = null as string | null;
  const int = (opt: ValueOption, min: number, max: number): number | undefined => {
    const v = given.get(opt);
    if (v === undefined || error !== null) return undefined;
    const n = intArg(v);
    if (n === null || n < min || n > max) {
      error = `pnpm soak: ${opt} must be an integer ${min}..${max}, got '${v}'`;
      return undefined;
    }
    return n;
  };

  let minutes = 1;
  const m = given.get('--minutes');
  if (m !== undefined) {
    const n = /^(\d+(\.\d*)?|\.\d+)$/.test(m) ? Number(m) : Number.NaN;
    if (!(n > 0 && n <= 10_080)) return { error: `pnpm soak: --minutes must be a number greater than 0 and at most 10080, got '${m}'` };
    minutes = n;
  }
  const workers = int('--workers', 1, 256);
  const seedStart = int('--seed-start', 0, MAX_SEED);
  const runs = int('--runs', 1, 1e9);
  const recheck = int('--recheck', 0, 1e9);
  const propertyRuns = int('--property-runs', 1, 100_000);
  const timeoutSeconds = int('--timeout-seconds', 1, 86_400);
  const seed = int('--seed', 0, MAX_SEED);
  if (error !== null) return { error };

  let shard = { index: 1, count: 1 };
  const sh = given.get('--shard');
  if (sh !== undefined) {
    const mm = /^(\d+)\/(\d+)$/.exec(sh);
    const index = mm === null ? Number.NaN : Number(mm[1]);
    const count = mm === null ? Number.NaN : Number(mm[2]);
    if (!(Number.isSafeInteger(index) && Number.isSafeInteger(count) && count >= 1 && count <= 65_536 && index >= 1 && index <= count)) {
      return { error: `pnpm soak: --shard must be I/N with 1 <= I <= N <= 65536 (machine I of N), got '${sh}'` };
    }
    shard = { index, count };
  }

  const replayTask = given.get('--replay');
  if (replayTask !== undefined) {
    if (seed === undefined) return { error: 'pnpm soak: --replay needs --seed S (the seed the failure printed)' };
    for (const o of ['--minutes', '--workers', '--seed-start', '--shard', '--only', '--runs', '--recheck', '--timeout-seconds'] as const) {
      if (given.has(o)) return { error: `pnpm soak: --replay runs one task in this process; ${o} does not apply` };
    }
  } else if (seed !== undefined) {
    return { error: 'pnpm soak: --seed goes with --replay; a soak starts at --seed-start' };
  }

  return {
    minutes,
    workers,
    seedStart,
    shard,
    only: given.get('--only'),
    runs,
    recheck: recheck ?? 8,
    propertyRuns: propertyRuns ?? 20,
    timeoutSeconds: timeoutSeconds ?? 300,
    replay: replayTask !== undefined && seed !== undefined ? { task: replayTask, seed } : undefined,
  };
}

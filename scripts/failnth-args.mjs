// Argument parsing for `pnpm failnth` (scripts/failnth.mjs), kept apart so scripts/failnth.test.mjs
// can check it without running a sweep.

export const USAGE = 'usage: pnpm failnth [--stack S] [--max-runs N] [--seed S]   (S: a demo stack or all, default all; N: 1..1e7 runs per stack, default every site; seed: 0..4294967295, default 1)';

/** A non-negative decimal integer, or null. */
function intArg(s) {
  return /^\d+$/.test(s) ? Number(s) : null;
}

/**
 * Parse `argv` (without node and the script) against the stack names. Returns
 * `{ stacks, maxRuns, seed }` (maxRuns undefined: every site) or `{ error }` with a one-line
 * message; `--help` returns `{ help: true }`.
 */
export function parseFailNthArgs(argv, stackNames) {
  const out = { stacks: [...stackNames], maxRuns: undefined, seed: 1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') return { help: true };
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (name !== '--stack' && name !== '--max-runs' && name !== '--seed') return { error: `pnpm failnth: unknown argument '${a}'` };
    let v = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined || v === '' || (eq < 0 && v.startsWith('--'))) return { error: `pnpm failnth: ${name} needs a value` };
    v = v.trim();
    if (name === '--stack') {
      if (v === 'all') out.stacks = [...stackNames];
      else if (stackNames.includes(v)) out.stacks = [v];
      else return { error: `pnpm failnth: --stack must be one of ${stackNames.join(', ')} or all, got '${v}'` };
      continue;
    }
    const n = intArg(v);
    if (name === '--max-runs') {
      if (n === null || n < 1 || n > 1e7) return { error: `pnpm failnth: --max-runs must be an integer 1..10000000, got '${v}'` };
      out.maxRuns = n;
    } else {
      if (n === null || n > 0xffffffff) return { error: `pnpm failnth: --seed must be an integer 0..4294967295, got '${v}'` };
      out.seed = n;
    }
  }
  return out;
}

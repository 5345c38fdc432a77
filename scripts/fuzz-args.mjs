// Argument parsing for `pnpm fuzz` (scripts/fuzz.mjs), kept apart so scripts/fuzz.test.mjs can
// check it without running a fuzz.

export const USAGE = 'usage: pnpm fuzz [--commands N] [--seed S]   (N: 1..1e9, default 100000; S: 0..4294967295, default 1)';

/** A non-negative decimal integer, or null. */
function intArg(s) {
  return /^\d+$/.test(s) ? Number(s) : null;
}

/**
 * Parse `argv` (without node and the script). Returns `{ commands, seed }` or `{ error }` with a
 * one-line message; `--help` returns `{ help: true }`.
 */
export function parseFuzzArgs(argv) {
  const out = { commands: 100_000, seed: 1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') return { help: true };
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (name !== '--commands' && name !== '--seed') return { error: `pnpm fuzz: unknown argument '${a}'` };
    let v = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined || v === '' || (eq < 0 && v.startsWith('--'))) return { error: `pnpm fuzz: ${name} needs a value` };
    v = v.trim();
    const n = intArg(v);
    if (name === '--commands') {
      if (n === null || n < 1 || n > 1e9) return { error: `pnpm fuzz: --commands must be an integer 1..1000000000, got '${v}'` };
      out.commands = n;
    } else {
      if (n === null || n > 0xffffffff) return { error: `pnpm fuzz: --seed must be an integer 0..4294967295, got '${v}'` };
      out.seed = n;
    }
  }
  return out;
}

/** Validation of the control values (the page shows the message and keeps the previous run). */
export class ControlError extends Error {
  override readonly name = 'ControlError';
}

const INT = /^\s*\d+\s*$/;

/** The seed: a non-negative safe integer (like the CLI's --seed). */
export function parseSeed(text: string): number {
  if (!INT.test(text)) throw new ControlError(`Seed must be a non-negative integer, got "${text}".`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new ControlError(`Seed must be at most ${Number.MAX_SAFE_INTEGER}, got "${text}".`);
  return n;
}

/** The workload size: an integer in the stack's [min, max]. */
export function parseSize(text: string, spec: { readonly label: string; readonly unit: string; readonly min: number; readonly max: number }): number {
  if (!INT.test(text)) throw new ControlError(`${spec.label} must be an integer (${spec.unit}) in ${spec.min}..${spec.max}, got "${text}".`);
  const n = Number(text);
  if (n < spec.min || n > spec.max) throw new ControlError(`${spec.label} must be in ${spec.min}..${spec.max} ${spec.unit}, got ${n}.`);
  return n;
}

/**
 * The page's default workload per stack: the CLI's default where a run of it completes in the
 * page in well under 3 s on a 2-core machine, a smaller one where it would not (the CLI takes the
 * same size with --size, so the numbers stay comparable).
 */
const PAGE_DEFAULT_SIZE: Readonly<Record<string, number>> = { nvme: 500, 'rdma-odp': 4, 'vfio-migration': 8, 'dmabuf-p2p': 2 };

export function pageDefaultSize(stack: string, spec: { readonly default: number; readonly min: number; readonly max: number }): number {
  const want = PAGE_DEFAULT_SIZE[stack] ?? spec.default;
  return Math.min(spec.max, Math.max(spec.min, Math.min(want, spec.default)));
}

/** Page defaults for stack-specific options, in the text form of the options field. */
const PAGE_DEFAULT_EXTRA: Readonly<Record<string, string>> = { 'rdma-odp': 'rounds=2' };

export function pageDefaultExtra(stack: string): string {
  return PAGE_DEFAULT_EXTRA[stack] ?? '';
}

export interface OptionSpec {
  readonly key: string;
  readonly flag: string;
  readonly type: 'boolean' | 'value';
}

/**
 * The options field: space-separated `key=value` for value options and `key` for switches (the
 * CLI's flag names are accepted too). The stack checks the values themselves when it runs.
 */
export function parseExtra(text: string, options: readonly OptionSpec[]): Record<string, string | boolean> {
  const out: Record<string, string | boolean> = {};
  for (const word of text.trim().split(/\s+/)) {
    if (word === '') continue;
    const eq = word.indexOf('=');
    const name = (eq < 0 ? word : word.slice(0, eq)).replace(/^--/, '');
    const opt = options.find((o) => o.key === name || o.flag === name);
    if (opt === undefined) {
      const known = options.map((o) => (o.type === 'boolean' ? o.key : `${o.key}=…`)).join(', ');
      throw new ControlError(`Unknown option "${name}"${known === '' ? ': this stack takes none' : `; this stack takes ${known}`}.`);
    }
    if (opt.type === 'boolean') {
      if (eq >= 0) throw new ControlError(`Option "${name}" is a switch: write it without a value.`);
      out[opt.key] = true;
    } else {
      const v = eq < 0 ? '' : word.slice(eq + 1);
      if (v === '') throw new ControlError(`Option "${name}" needs a value: ${name}=…`);
      out[opt.key] = v;
    }
  }
  return out;
}

/** The same options as CLI arguments (`--flag` / `--flag value`). */
export function extraToCliArgs(extra: Readonly<Record<string, string | number | boolean>>, options: readonly OptionSpec[]): string[] {
  const args: string[] = [];
  for (const [k, v] of Object.entries(extra)) {
    const flag = options.find((o) => o.key === k)?.flag ?? k;
    if (v === true) args.push(`--${flag}`);
    else if (v !== false) args.push(`--${flag}`, String(v));
  }
  return args;
}

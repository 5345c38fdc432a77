#!/usr/bin/env node
/**
 * dmakit demo CLI: `dmakit [stack] [options]` (`pnpm demo ...` inside the workspace). Builds a
 * whole device stack on a simulated machine through the stack registry (./stacks/index.ts, the
 * same code the browser visualiser runs), runs real DMA flows through it, verifies the bytes and
 * prints what happened. Everything platform-specific lives here and in ./cli/: argument parsing,
 * the trace file, the progress line, stdout/stderr and the exit status.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createProgress } from './cli/progress.js';
import type { ProgressStream } from './cli/progress.js';
import { openTraceFile, TraceFileError } from './cli/traceFile.js';
import type { TraceRecorder } from './cli/traceFile.js';
import { getStack, STACKS, StackUsageError } from './stacks/index.js';
import type { IommuMode, MappingPath, StackDef, StackRunRequest } from './stacks/index.js';

/** Where main() writes: process.stdout/stderr, or captures in tests. */
export interface CliIo {
  readonly stdout: { write(chunk: string): unknown };
  readonly stderr: ProgressStream;
  /** Milliseconds before the progress line appears (default 1000). */
  readonly progressDelayMs?: number;
}

const HINT = "Run 'dmakit --help' for usage.";

/** Options every stack takes. */
const GENERAL_OPTIONS = {
  json: { type: 'boolean' },
  trace: { type: 'string' },
  seed: { type: 'string' },
  iommu: { type: 'string' },
  mapping: { type: 'string' },
  legacy: { type: 'boolean' },
  size: { type: 'string' },
  verify: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type OptionTable = Record<string, { type: 'string' | 'boolean'; short?: string }>;

/** The parseArgs table: the general options, every stack's own options and size aliases. */
function optionTable(): OptionTable {
  const table: OptionTable = { ...GENERAL_OPTIONS };
  for (const s of STACKS) {
    for (const o of s.options) table[o.flag] = { type: o.type === 'boolean' ? 'boolean' : 'string' };
    if (s.size.option !== undefined) table[s.size.option] = { type: 'string' };
  }
  return table;
}

/** The stacks that take `flag` (a stack option or a size alias). */
function ownersOf(flag: string): string[] {
  return STACKS.filter((s) => s.options.some((o) => o.flag === flag) || s.size.option === flag).map((s) => s.name);
}

export const HELP = `dmakit: run a simulated DMA stack and verify every byte.

Usage: dmakit [stack] [options]
       (inside the dmakit workspace: pnpm demo [stack] [options])

Stacks:
${STACKS.map((s) => s.help).join('')}
Options:
  --json              Print the result as JSON instead of a table.
  --trace FILE        Write a Chrome trace (JSON; open it in https://ui.perfetto.dev), one
                      process per simulated machine.
  --seed N            Seed for every random choice (default 1).
  --iommu MODE        strict, lazy or off: the IOMMU the devices sit behind (default: off for
                      direct and nvme; strict for the stacks that need one).
  --mapping PATH      iova (the two-step IOVA API) or legacy (scatterlist / per-page mapping),
                      for the stacks that have both: nvme, rdma-odp, vfio-migration.
  --size N            Workload size in the stack's unit (see the stack; nvme: --ios,
                      rdma-odp: --mr-mib).
  --verify            Verify every byte (nvme; the other stacks always do).
  -h, --help          Show this help.

Exit status: 0 when every transfer verified, 1 when one did not, 2 on bad usage.
`;

/**
 * `--seed -1` would make parseArgs complain that the value is "ambiguous": join an option that
 * takes a value with a following token that looks like a negative number (`--seed=-1`), so the
 * value reaches our own checks. Anything else starting with '-' stays an option.
 */
function joinNegativeValues(argv: readonly string[], table: OptionTable): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    const m = /^--([^=]+)$/.exec(a);
    if (m !== null && table[m[1] ?? '']?.type === 'string' && next !== undefined && /^-[\d.]/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

/** parseArgs' error, as one line of our own. */
function parseErrorLine(err: Error & { code?: string }): string {
  const msg = err.message;
  const opt = /'(-[^' ]+)/.exec(msg)?.[1] ?? '';
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option ${opt}`;
  if (/does not take an argument/.test(msg)) return `${opt} takes no value`;
  if (/argument missing|ambiguous/.test(msg)) return `${opt} needs a value`;
  return msg.split('\n')[0] ?? msg;
}

class UsageError extends Error {
  constructor(
    message: string,
    readonly hint = false,
  ) {
    super(message);
  }
}

interface Parsed {
  readonly stack: StackDef;
  readonly req: StackRunRequest;
  readonly json: boolean;
  readonly trace: string | undefined;
}

function parse(argv: readonly string[]): Parsed | 'help' {
  const table = optionTable();
  let parsed;
  try {
    parsed = parseArgs({ args: joinNegativeValues(argv, table), allowPositionals: true, strict: true, options: table });
  } catch (err) {
    throw new UsageError(parseErrorLine(err as Error & { code?: string }), true);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help === true) return 'help';
  const [name = 'direct', ...rest] = parsed.positionals;
  if (rest.length > 0) throw new UsageError(`unexpected argument "${rest[0] ?? ''}" (one stack per run)`, true);
  const stack = getStack(name);
  if (stack === undefined) throw new UsageError(`unknown stack "${name}" (stacks: ${STACKS.map((s) => s.name).join(', ')})`, true);

  const str = (k: string): string | undefined => (typeof values[k] === 'string' ? values[k] : undefined);
  const seedText = str('seed') ?? '1';
  if (!/^\d+$/.test(seedText) || !Number.isSafeInteger(Number(seedText))) throw new UsageError(`--seed must be a non-negative integer, got ${seedText}`);

  // Stack options given to a stack that does not take them are an error, not silently dropped.
  const general = new Set(Object.keys(GENERAL_OPTIONS));
  for (const [flag, v] of Object.entries(values)) {
    if (v === undefined || general.has(flag)) continue;
    const mine = stack.options.some((o) => o.flag === flag) || stack.size.option === flag;
    if (!mine) throw new UsageError(`--${flag} is not an option of the ${stack.name} stack (it belongs to ${ownersOf(flag).join(', ')})`);
  }

  let mapping = str('mapping');
  if (mapping === 'sg') mapping = 'legacy'; // nvme's original name for the legacy path
  if (values.legacy === true) {
    if (!stack.mappings.includes('legacy')) throw new UsageError(`--legacy is not an option of the ${stack.name} stack (it has only the ${stack.mappings.join(', ')} mapping path)`);
    if (mapping !== undefined && mapping !== 'legacy') throw new UsageError(`--legacy and --mapping ${str('mapping') ?? ''} cannot be used together`);
    mapping = 'legacy';
  }

  const alias = stack.size.option;
  const sizeText = str('size');
  const aliasText = alias === undefined ? undefined : str(alias);
  if (sizeText !== undefined && aliasText !== undefined) throw new UsageError(`--size and --${alias ?? ''} cannot be used together (--${alias ?? ''} is the ${stack.name} stack's name for --size)`);
  const sz = sizeText ?? aliasText;
  const extra: Record<string, string | boolean> = {};
  for (const o of stack.options) {
    const v = values[o.flag];
    if (v !== undefined) extra[o.key] = v;
  }
  const iommu = str('iommu');
  const req: StackRunRequest = {
    seed: Number(seedText),
    ...(iommu !== undefined ? { iommu: iommu as IommuMode } : {}),
    ...(mapping !== undefined ? { mapping: mapping as MappingPath } : {}),
    // Text that is not an integer goes through as it is: the registry's check names it in its message.
    ...(sz !== undefined ? { size: /^-?\d+$/.test(sz) ? Number(sz) : (sz as unknown as number) } : {}),
    ...(values.verify === true ? { verify: true } : {}),
    ...(Object.keys(extra).length > 0 ? { extra } : {}),
  };
  return { stack, req, json: values.json === true, trace: str('trace') };
}

/** Run the CLI on `argv` (without node and the script); returns the exit status. */
export function main(argv: readonly string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr }): number {
  const fail = (msg: string, hint: boolean): number => {
    io.stderr.write(`dmakit: ${msg}\n${hint ? `${HINT}\n` : ''}`);
    return 2;
  };
  let p: Parsed;
  try {
    const r = parse(argv);
    if (r === 'help') {
      io.stdout.write(HELP);
      return 0;
    }
    p = r;
    p.stack.validate(p.req);
  } catch (err) {
    if (err instanceof UsageError) return fail(err.message, err.hint);
    if (err instanceof StackUsageError) return fail(err.message, false);
    throw err;
  }

  let trace: TraceRecorder | undefined;
  if (p.trace !== undefined) {
    try {
      trace = openTraceFile(p.trace);
    } catch (err) {
      if (err instanceof TraceFileError) return fail(err.message, false);
      throw err;
    }
  }
  const progress = p.json ? undefined : createProgress(io.stderr, { label: `dmakit ${p.stack.name}`, ...(io.progressDelayMs !== undefined ? { delayMs: io.progressDelayMs } : {}) });
  let result;
  try {
    result = p.stack.run({
      ...p.req,
      ...(trace !== undefined ? { onMachine: trace.onMachine } : {}),
      ...(progress !== undefined
        ? {
            onProgress: (done: number, total: number) => {
              progress.update(done, total);
            },
          }
        : {}),
    });
  } catch (err) {
    progress?.end();
    trace?.abort();
    if (err instanceof StackUsageError) return fail(err.message, false);
    throw err;
  }
  progress?.end();
  if (trace !== undefined && p.trace !== undefined) {
    try {
      const t = trace.finish();
      if (!p.json) io.stdout.write(`trace: ${t.events} events written to ${p.trace}${t.machines > 1 ? ` (${t.machines} machines)` : ''}\n`);
    } catch (err) {
      if (err instanceof TraceFileError) return fail(err.message, false);
      throw err;
    }
  }
  io.stdout.write(p.json ? `${JSON.stringify(result, null, 2)}\n` : p.stack.format(result));
  if (!result.verified) io.stderr.write(`dmakit: ${p.stack.name}: verification failed\n`);
  return result.verified ? 0 : 1;
}

/** True when this module is the program node started (also through an npm bin symlink). */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) process.exitCode = main(process.argv.slice(2));

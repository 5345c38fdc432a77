/**
 * The stack registry's contract (see index.ts) and the request checks every stack shares.
 * Platform-neutral: no `node:*` import, no `process`, no file output (the CLI and the browser
 * visualiser both import it).
 */
import type { Machine } from '@dmakit/dma-core';

export type StackName = 'direct' | 'nvme' | 'rdma-odp' | 'gpu-svm' | 'vfio-migration' | 'dmabuf-p2p' | 'cc-guest';
export type IommuMode = 'strict' | 'lazy' | 'off';
/** Two-step IOVA API vs the legacy scatterlist / per-page path. */
export type MappingPath = 'iova' | 'legacy';

export const IOMMU_MODES: readonly IommuMode[] = ['strict', 'lazy', 'off'];
export const MAPPING_PATHS: readonly MappingPath[] = ['iova', 'legacy'];

export interface StackRunRequest {
  readonly seed: number;
  /** undefined: the stack's defaultIommu. */
  readonly iommu?: IommuMode;
  /** undefined: the stack's default (first of `mappings`; every path, compared, when `comparesMappings`). */
  readonly mapping?: MappingPath;
  /** Workload size in the stack's unit (StackInfo.size); undefined: default. */
  readonly size?: number;
  /** Byte verification for stacks whose `verifyOption` is true (default off); the others always verify. */
  readonly verify?: boolean;
  /** Stack-specific options, keyed by StackOptionInfo.key (nvme: qd, bs, rw, resetAfter, compare, premapped; rdma-odp: implicit, rounds). */
  readonly extra?: Readonly<Record<string, string | number | boolean>>;
  /** Called for every machine the stack creates, before any DMA, with a role ('host', 'source', 'target', ...). */
  readonly onMachine?: (machine: Machine, role: string) => void;
  /** Progress in the stack's own units; called at most ~100 times per run. */
  readonly onProgress?: (done: number, total: number) => void;
  /**
   * A fault plan (fail_nth): fail the `nth` fault-injection site the `machine`-th machine the
   * stack creates passes (0-based, in creation order; default 0), once. See failNth/sweep.ts.
   */
  readonly failNth?: FailNthPlan;
}

/** `StackRunRequest.failNth`: which site of which machine fails (FaultInjection.failNth). */
export interface FailNthPlan {
  readonly nth: number;
  readonly machine?: number;
}

/** One stack-specific option (a key of StackRunRequest.extra). */
export interface StackOptionInfo {
  /** Key in `extra` (camelCase). */
  readonly key: string;
  /** The CLI flag, without the dashes (kebab-case). */
  readonly flag: string;
  /** 'boolean': a switch; 'value': a string or number the stack parses and checks. */
  readonly type: 'boolean' | 'value';
  /** Placeholder for the value in help text (e.g. 'N', '4k|128k|1m|mixed'). */
  readonly valueName?: string;
  readonly description: string;
}

export interface StackSizeInfo {
  readonly label: string;
  readonly unit: string;
  readonly default: number;
  readonly min: number;
  readonly max: number;
  /** The stack's own CLI flag for the size (an alias of --size), e.g. 'ios' for nvme. */
  readonly option?: string;
}

export interface StackInfo {
  readonly name: StackName;
  /** One line. */
  readonly summary: string;
  /** The multi-line help block the CLI prints. */
  readonly help: string;
  readonly defaultIommu: IommuMode;
  /** Modes the stack accepts. */
  readonly iommuModes: readonly IommuMode[];
  /** Paths the stack supports (first = default). */
  readonly mappings: readonly MappingPath[];
  /** True when a request without `mapping` runs every path in `mappings` and compares them (vfio-migration). */
  readonly comparesMappings: boolean;
  /** True when `verify` turns byte verification on (nvme); false when the stack always verifies every byte. */
  readonly verifyOption: boolean;
  readonly size: StackSizeInfo;
  /** The keys `extra` may hold. */
  readonly options: readonly StackOptionInfo[];
}

export interface StackResult {
  readonly verified: boolean;
  /**
   * The error the stack stopped on, as the kernel (or the device) reports it at the stack's edge:
   * an errno ('-ENOMEM'), an NVMe status, a verbs or VFIO error, with the step that got it. Set
   * when an allocation failed (e.g. under a fail_nth plan) and the stack unwound instead of
   * finishing; bytes it reports verified were still checked. Absent on a run that finished.
   */
  readonly failure?: StackFailure;
}

/** Where a stack stopped and what it got (StackResult.failure). */
export interface StackFailure {
  readonly step: string;
  readonly error: string;
  /** Every byte the stack reported written or read (before and after the failure) checked right. */
  readonly dataIntact: boolean;
}

export interface StackDef<R extends StackResult = StackResult> extends StackInfo {
  /** Check a request without doing any work; throws StackUsageError (one line) when it is bad. */
  validate(req: StackRunRequest): void;
  /** Validate (throw StackUsageError before any work), build the machine(s), run, return the JSON-able result. */
  run(req: StackRunRequest): R;
  /** The human table the CLI prints for this result. */
  format(result: R): string;
}

/** A bad request: the message is one line, naming the option as the CLI spells it. */
export class StackUsageError extends Error {
  override readonly name = 'StackUsageError';
}

/** The request's common fields, checked against the stack and with defaults filled in. */
export interface CheckedRequest {
  readonly seed: number;
  readonly iommu: IommuMode;
  /** undefined only for stacks with `comparesMappings` when no path was asked for. */
  readonly mapping: MappingPath | undefined;
  readonly size: number;
  readonly verify: boolean;
}

function flagOf(info: StackInfo, key: string): string {
  return info.options.find((o) => o.key === key)?.flag ?? key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function shown(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/** Check seed, iommu, mapping, size and the keys of `extra`; throws StackUsageError. */
export function checkRequest(info: StackInfo, req: StackRunRequest): CheckedRequest {
  const seed: unknown = req.seed;
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) throw new StackUsageError(`--seed must be a non-negative integer, got ${shown(seed)}`);
  const iommu: unknown = req.iommu ?? info.defaultIommu;
  if (!IOMMU_MODES.includes(iommu as IommuMode)) throw new StackUsageError(`--iommu must be strict, lazy or off, got ${shown(iommu)}`);
  if (!info.iommuModes.includes(iommu as IommuMode)) {
    throw new StackUsageError(`${info.name} does not run with --iommu ${String(iommu)}: use ${info.iommuModes.join(' or ')}`);
  }
  const mapping: unknown = req.mapping;
  if (mapping !== undefined && !MAPPING_PATHS.includes(mapping as MappingPath)) throw new StackUsageError(`--mapping must be iova or legacy, got ${shown(mapping)}`);
  if (mapping !== undefined && !info.mappings.includes(mapping as MappingPath)) {
    throw new StackUsageError(`${info.name} has only the ${info.mappings.join(' and ')} mapping path: --mapping ${mapping as string} is not supported`);
  }
  const size: unknown = req.size ?? info.size.default;
  const s = info.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < s.min || size > s.max) {
    const what = s.min === s.max ? `${info.name} has a fixed workload: --size can only be ${s.min}` : `--${s.option ?? 'size'} (${s.label} in ${s.unit}) must be an integer from ${s.min} to ${s.max}`;
    throw new StackUsageError(`${what}, got ${shown(size)}`);
  }
  if (req.verify !== undefined && typeof req.verify !== 'boolean') throw new StackUsageError(`verify must be a boolean, got ${shown(req.verify)}`);
  const plan: unknown = req.failNth;
  if (plan !== undefined) {
    const p: { nth?: unknown; machine?: unknown } = typeof plan === 'object' && plan !== null ? plan : { nth: plan };
    if (typeof p.nth !== 'number' || !Number.isSafeInteger(p.nth) || p.nth < 1) throw new StackUsageError(`--fail-nth must be an integer >= 1, got ${shown(p.nth)}`);
    if (p.machine !== undefined && (typeof p.machine !== 'number' || !Number.isSafeInteger(p.machine) || p.machine < 0)) {
      throw new StackUsageError(`--fail-nth-machine must be a non-negative integer, got ${shown(p.machine)}`);
    }
  }
  for (const [key, value] of Object.entries(req.extra ?? {})) {
    const opt = info.options.find((o) => o.key === key);
    if (opt === undefined) throw new StackUsageError(`${info.name} takes no option --${flagOf(info, key)}`);
    if (opt.type === 'boolean' && typeof value !== 'boolean') throw new StackUsageError(`--${opt.flag} is a switch (true or false), got ${shown(value)}`);
  }
  return {
    seed,
    iommu: iommu as IommuMode,
    mapping: (mapping as MappingPath | undefined) ?? (info.comparesMappings ? undefined : info.mappings[0]),
    size,
    verify: req.verify ?? false,
  };
}

/**
 * The request with its `failNth` plan turned into an `onMachine` hook: the planned machine's
 * FaultInjection is armed with `failNth(nth)` as the stack creates it, before any DMA (then the
 * caller's own hook runs). Stacks call `req.onMachine` for every machine they build, so every
 * stack takes a plan without knowing of it (the registry wraps each `run`).
 */
export function withFailNth(req: StackRunRequest): StackRunRequest {
  const plan = req.failNth;
  if (plan === undefined) return req;
  const target = plan.machine ?? 0;
  const outer = req.onMachine;
  let index = 0;
  return {
    ...req,
    onMachine: (machine, role) => {
      if (index++ === target) machine.faultInjection.failNth(plan.nth);
      outer?.(machine, role);
    },
  };
}

/** Whether `extra[key]` was given (any value). */
export function hasExtra(req: StackRunRequest, key: string): boolean {
  return req.extra?.[key] !== undefined;
}

/** A boolean option of `extra` (default false). */
export function extraBool(req: StackRunRequest, key: string): boolean {
  return req.extra?.[key] === true;
}

/** An integer option of `extra` given as a number or a decimal string, within [min, max]. */
export function extraInt(info: StackInfo, req: StackRunRequest, key: string, def: number, min: number, max: number): number {
  const v = req.extra?.[key];
  if (v === undefined) return def;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*-?\d+\s*$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new StackUsageError(`--${flagOf(info, key)} must be an integer from ${min} to ${max}, got ${shown(v)}`);
  return n;
}

/** A string option of `extra` (numbers are turned into their decimal text). */
export function extraString(info: StackInfo, req: StackRunRequest, key: string, def: string): string {
  const v = req.extra?.[key];
  if (v === undefined) return def;
  if (typeof v === 'boolean') throw new StackUsageError(`--${flagOf(info, key)} needs a value, got ${String(v)}`);
  return String(v);
}

/**
 * Calls `onProgress` at most ~100 times over `total` units (and always at the end), so a stack
 * can report every unit without flooding the caller.
 */
export function progressReporter(onProgress: ((done: number, total: number) => void) | undefined, total: number): (done: number) => void {
  if (onProgress === undefined) return () => undefined;
  const step = Math.max(1, Math.ceil(total / 100));
  let last = -1;
  return (done) => {
    if (done === last || (done % step !== 0 && done !== total)) return;
    last = done;
    onProgress(Math.min(done, total), total);
  };
}

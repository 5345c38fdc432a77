/**
 * One soak run: a stack with the options plan.ts draws from the seed, or a property checked by
 * fast-check with the seed. Runs in a worker thread (./worker.mjs) and, for `--replay`, in the
 * CLI's own process. Never throws: whatever goes wrong becomes a failure record.
 */
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { getStack } from '@dmakit/demo/stacks';
import type { StackResult } from '@dmakit/demo/stacks';
import { isPropertyTask, stackRequest } from './plan.js';
import { PROPERTIES } from './properties.js';

export interface SoakTaskInput {
  readonly name: string;
  readonly seed: number;
  /** fast-check runs for a property task. */
  readonly propertyRuns: number;
  /** Run a stack twice and compare the results (determinism). */
  readonly recheck: boolean;
  /** Keep the stack's whole result / fast-check's whole report (for --replay). */
  readonly verbose?: boolean;
}

/**
 * exception: the run threw; unverified: the stack's own byte/step checks failed; leak: it
 * verified but left mappings, IOVA, pool blocks or dma-debug reports behind; nondeterministic: two
 * runs of one seed differ; property: fast-check found a counterexample; timeout: the run did not
 * finish in time (set by the CLI, which aborts the worker).
 */
export type FailureKind = 'exception' | 'unverified' | 'leak' | 'nondeterministic' | 'property' | 'timeout';

export interface SoakTaskResult {
  readonly name: string;
  readonly seed: number;
  /** Wall time of the run (both runs when rechecked). */
  readonly ms: number;
  readonly failure: { readonly kind: FailureKind; readonly message: string } | null;
  /** --replay only: the stack's result as JSON, or fast-check's report. */
  readonly detail?: string;
}

/** First line of an error, and the first stack frame below it (where it was thrown). */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return `threw ${String(err)}`;
  const frame = err.stack
    ?.split('\n')
    .slice(1)
    .find((l) => l.trim().startsWith('at '))
    ?.trim();
  const first = `${err.name}: ${err.message.split('\n')[0] ?? ''}`;
  return frame === undefined ? first : `${first} (${frame})`;
}

/** The result without wall-clock figures (`wallMs`, `wallIops`, ...), the only fields a seed does not fix. */
export function deterministicJson(result: unknown): string {
  return JSON.stringify(result, (key, value: unknown) => (/^wall[A-Z]/.test(key) ? undefined : value));
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** The first path at which two JSON trees differ, e.g. `.paths[1].rounds[3].dirtyPages: 12 vs 13`. */
export function firstDifference(a: Json, b: Json, path = ''): string | null {
  if (a === b) return null;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) {
    return `${path === '' ? '(result)' : path}: ${JSON.stringify(a).slice(0, 80)} vs ${JSON.stringify(b).slice(0, 80)}`;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const d = firstDifference(a[i] ?? null, b[i] ?? null, `${path}[${i}]`);
      if (d !== null) return d;
    }
    return null;
  }
  const ao = a as Record<string, Json>;
  const bo = b as Record<string, Json>;
  for (const k of new Set([...Object.keys(ao), ...Object.keys(bo)])) {
    const d = firstDifference(ao[k] ?? null, bo[k] ?? null, `${path}.${k}`);
    if (d !== null) return d;
  }
  return null;
}

/** Where a stack that did not verify says so: the innermost `verified: false` object (a step), with its step and detail. */
export function whereUnverified(result: unknown): string {
  const find = (v: unknown, path: string): string | null => {
    if (typeof v !== 'object' || v === null) return null;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const hit = find(v[i], `${path}[${i}]`);
        if (hit !== null) return hit;
      }
      return null;
    }
    const o = v as Record<string, unknown>;
    for (const [k, x] of Object.entries(o)) {
      const hit = find(x, `${path}.${k}`);
      if (hit !== null) return hit;
    }
    if (o.verified !== false || path === '') return null;
    const step = typeof o.step === 'string' ? ` step "${o.step}"` : '';
    const detail = typeof o.detail === 'string' && o.detail !== '' ? `: ${o.detail}` : '';
    return `${path}${step}${detail}`;
  };
  const found = find(result, '');
  if (found !== null) return `did not verify at ${found}`;
  const r = result as Record<string, unknown>;
  const counts = ['ioErrors', 'mismatchedBlocks', 'namespaceMismatches', 'staleAccesses'].filter((k) => typeof r[k] === 'number' && r[k] !== 0).map((k) => `${k} ${String(r[k])}`);
  return `did not verify${counts.length > 0 ? ` (${counts.join(', ')})` : ''}`;
}

/**
 * What a stack that verified still left behind: every non-zero number under a `leaks` object and
 * every non-zero `dmaDebugReports` count, anywhere in the result. Empty when clean.
 */
export function leftovers(result: unknown): string[] {
  const out: string[] = [];
  const walk = (v: unknown, path: string): void => {
    if (typeof v !== 'object' || v === null) return;
    if (Array.isArray(v)) {
      v.forEach((x, i) => {
        walk(x, `${path}[${i}]`);
      });
      return;
    }
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      const p = `${path}.${k}`;
      if (k === 'leaks' && typeof x === 'object' && x !== null) {
        for (const [lk, lv] of Object.entries(x as Record<string, unknown>)) if (typeof lv === 'number' && lv !== 0) out.push(`${p}.${lk} ${lv}`);
      } else if (k === 'dmaDebugReports' && typeof x === 'number' && x !== 0) out.push(`${p} ${x}`);
      else walk(x, p);
    }
  };
  walk(result, '');
  return out;
}

/** The task's result builder: its name, seed and elapsed time, the failure, and the detail when verbose. */
function finisher(input: SoakTaskInput): (failure: SoakTaskResult['failure'], detail?: string) => SoakTaskResult {
  const t0 = performance.now();
  return (failure, detail) => ({
    name: input.name,
    seed: input.seed,
    ms: performance.now() - t0,
    failure,
    ...(input.verbose === true && detail !== undefined ? { detail } : {}),
  });
}

function runStack(input: SoakTaskInput): SoakTaskResult {
  const { name, seed } = input;
  const done = finisher(input);
  const stack = getStack(name);
  if (stack === undefined) return done({ kind: 'exception', message: `unknown stack ${name}` });
  let result: StackResult;
  let req;
  try {
    req = stackRequest(name, seed);
    result = stack.run(req);
  } catch (err) {
    return done({ kind: 'exception', message: describeError(err) });
  }
  const json = deterministicJson(result);
  const detail = input.verbose === true ? JSON.stringify(result, null, 2) : undefined;
  if (!result.verified) return done({ kind: 'unverified', message: whereUnverified(result) }, detail);
  const left = leftovers(result);
  if (left.length > 0) return done({ kind: 'leak', message: `verified, but left behind: ${left.join(', ')}` }, detail);
  if (input.recheck) {
    let again: StackResult;
    try {
      again = stack.run(req);
    } catch (err) {
      return done({ kind: 'nondeterministic', message: `the second run of the same seed threw: ${describeError(err)}` }, detail);
    }
    const json2 = deterministicJson(again);
    if (json2 !== json) {
      const diff = firstDifference(JSON.parse(json) as Json, JSON.parse(json2) as Json) ?? 'results differ';
      return done({ kind: 'nondeterministic', message: `two runs of the same seed differ at ${diff} (compare two --json runs)` }, detail);
    }
  }
  return done(null, detail);
}

function runProperty(input: SoakTaskInput): SoakTaskResult {
  const { name, seed } = input;
  const done = finisher(input);
  if (!isPropertyTask(name)) return done({ kind: 'exception', message: `unknown property ${name}` });
  let r: fc.RunDetails<unknown>;
  try {
    r = fc.check(PROPERTIES[name](), { seed, numRuns: input.propertyRuns });
  } catch (err) {
    return done({ kind: 'exception', message: describeError(err) });
  }
  const report = fc.defaultReportMessage(r) ?? `${r.numRuns} runs, no counterexample`;
  if (!r.failed) return done(null, report);
  const example = r.counterexample === null ? '(none)' : fc.stringify(r.counterexample);
  const why = r.errorInstance === null ? 'failed' : describeError(r.errorInstance);
  const shown = example.length > 240 ? `${example.slice(0, 240)}... (${example.length} chars)` : example;
  return done({ kind: 'property', message: `${why}; shrunk counterexample ${shown}, path "${r.counterexamplePath ?? ''}"` }, report);
}

/** Run one soak task (the worker's entry point). */
export function runSoakTask(input: SoakTaskInput): SoakTaskResult {
  try {
    return isPropertyTask(input.name) ? runProperty(input) : runStack(input);
  } catch (err) {
    // Only the soak's own bookkeeping can get here (the runs themselves are caught above).
    return { name: input.name, seed: input.seed, ms: 0, failure: { kind: 'exception', message: `soak: ${describeError(err)}` } };
  }
}

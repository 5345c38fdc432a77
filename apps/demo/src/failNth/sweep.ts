/**
 * fail_nth sweeps over whole demo stacks, the way tools/testing/selftests/iommu/iommufd_fail_nth.c
 * sweeps an ioctl sequence: run the stack once with nothing armed to count the fault-injection
 * sites each of its machines passes, then rerun it failing the nth site of machine m, for every
 * (m, n). Every run must end cleanly:
 *  - no exception escapes the stack: the failure surfaces as an errno / NVMe / verbs / VFIO status
 *    in the result (`StackResult.failure`) or the stack recovers and finishes;
 *  - nothing leaks: every machine's `resourceCounts()` (pages, dma-debug mappings and IOVA states,
 *    swiotlb slots, DMA pools and blocks, IOVA granules, IO page-table pages) is back where it
 *    was when the stack created the machine (flush queues drained first, as their timer would);
 *  - no corruption: a run that reports no failure verified every byte it moved (`verified`).
 * Platform-neutral (no `node:*`); scripts/failnth.mjs prints the table, failNth.test.ts runs a
 * bounded sweep in CI.
 */
import { resourceCountChanges } from '@dmakit/dma-core';
import type { Machine, MachineResourceCounts } from '@dmakit/dma-core';
import { iommuDeviceList } from '@dmakit/iommu-dma';
import { StackUsageError } from '../stacks/index.js';
import type { StackDef, StackResult, StackRunRequest } from '../stacks/index.js';

/** The request each stack is swept with: its smallest workload that still runs every phase. */
export const SWEEP_REQUESTS: Readonly<Record<string, Omit<StackRunRequest, 'seed'>>> = {
  direct: {},
  nvme: { size: 8, iommu: 'strict', verify: true, extra: { qd: 2, bs: '16k' } },
  'rdma-odp': { size: 4, extra: { rounds: 1 } },
  'vfio-migration': { size: 8, mapping: 'iova' },
  'dmabuf-p2p': { size: 1 },
  'gpu-svm': { size: 16 },
  'cc-guest': { size: 16, extra: { qd: 4 } },
};

/**
 * Stacks whose machines are not torn down at the end of a run, so "back to the starting counts"
 * cannot hold even without a fault; their sweeps check exceptions and corruption only.
 */
export const NO_TEARDOWN: Readonly<Record<string, string>> = {};

export type FailNthOutcome = 'clean' | 'leak' | 'corruption' | 'exception';

/** One run of a sweep that did not end cleanly. */
export interface FailNthFinding {
  /** Index of the machine whose site failed (creation order) and its role. */
  readonly machine: number;
  readonly role: string;
  /** The site number that was failed (1-based, over every site of that machine). */
  readonly nth: number;
  /** The site it hit ('alloc_pages', 'iova', ...), null when the run passed fewer sites. */
  readonly site: string | null;
  readonly outcome: Exclude<FailNthOutcome, 'clean'>;
  readonly detail: string;
}

/** A stack's sweep: the table row plus what was found. */
export interface FailNthRow {
  readonly stack: string;
  /** Sites the unarmed run passed, over all its machines. */
  readonly sites: number;
  /** Sites per machine (creation order), with the machine's role. */
  readonly machines: readonly { readonly role: string; readonly sites: number; readonly bySite: Readonly<Record<string, number>> }[];
  readonly runs: number;
  readonly clean: number;
  /** Runs whose failure the stack reported at its edge (the rest recovered and finished). */
  readonly reported: number;
  readonly leaks: number;
  readonly corruptions: number;
  readonly exceptions: number;
  /** False for NO_TEARDOWN stacks: leaks were not checked. */
  readonly leaksChecked: boolean;
  /** The runs that did not end cleanly (at most `maxFindings`). */
  readonly findings: readonly FailNthFinding[];
}

export interface FailNthSweepOptions {
  readonly seed?: number;
  /** Overrides SWEEP_REQUESTS[stack]. */
  readonly request?: Omit<StackRunRequest, 'seed'>;
  /** Rerun at most this many sites, spread evenly over all of them (default: every site). */
  readonly maxRuns?: number;
  /** Findings kept in the row (default 20). */
  readonly maxFindings?: number;
  /** Called after every run. */
  readonly onRun?: (done: number, total: number) => void;
}

interface Observed {
  readonly machine: Machine;
  readonly role: string;
  readonly before: MachineResourceCounts;
  /** The site of every call (counting run only). */
  readonly sequence: string[];
}

interface RunOutcome {
  readonly observed: readonly Observed[];
  readonly result: StackResult | null;
  readonly error: unknown;
}

function runObserved(def: StackDef, req: StackRunRequest, record = false): RunOutcome {
  const observed: Observed[] = [];
  const outer = req.onMachine;
  const observedReq: StackRunRequest = {
    ...req,
    onMachine: (machine, role) => {
      outer?.(machine, role);
      const sequence: string[] = [];
      if (record) {
        machine.faultInjection.onCall = (site) => {
          sequence.push(site);
        };
      }
      observed.push({ machine, role, before: machine.resourceCounts(), sequence });
    },
  };
  try {
    return { observed, result: def.run(observedReq), error: null };
  } catch (error) {
    if (error instanceof StackUsageError) throw error;
    return { observed, result: null, error };
  }
}

/** What a machine still holds that it did not hold when the stack created it. */
function leaksOf(o: Observed): string[] {
  // The lazy flush queues' timer would free the IOVAs they hold: drain them first.
  for (const iommu of iommuDeviceList(o.machine)) iommu.flushQueues();
  return resourceCountChanges(o.before, o.machine.resourceCounts());
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const at = err.stack?.split('\n').slice(1).find((l) => l.includes(' at '))?.trim() ?? '';
    return `${err.name}: ${err.message}${at === '' ? '' : ` (${at})`}`;
  }
  return String(err);
}

/** Judge one run; null when it ended cleanly. */
function judge(o: RunOutcome, machine: number, nth: number, checkLeaks: boolean): Omit<FailNthFinding, 'machine' | 'role' | 'nth' | 'site'> | null {
  if (o.error !== null) return { outcome: 'exception', detail: describe(o.error) };
  const leaks = checkLeaks ? o.observed.flatMap((ob, i) => leaksOf(ob).map((l) => `machine ${i} (${ob.role}) ${l}`)) : [];
  if (leaks.length > 0) return { outcome: 'leak', detail: leaks.join('; ') };
  const r = o.result;
  if (r !== null && r.failure === undefined && !r.verified) {
    return { outcome: 'corruption', detail: `failing site ${nth} of machine ${machine}: the stack reported no failure but did not verify its bytes` };
  }
  if (r?.failure !== undefined && !r.failure.dataIntact) {
    return { outcome: 'corruption', detail: `failing site ${nth} of machine ${machine}: ${r.failure.step}: ${r.failure.error}, and bytes reported written are wrong` };
  }
  return null;
}

/** `max` of 1..total spread evenly (the first and the last among them), all when max >= total. */
export function sweepPoints(total: number, max?: number): number[] {
  if (total <= 0) return [];
  if (max === undefined || max >= total) return Array.from({ length: total }, (_, i) => i + 1);
  if (max <= 1) return [1];
  const out = new Set<number>();
  for (let i = 0; i < max; i++) out.add(1 + Math.round((i * (total - 1)) / (max - 1)));
  return [...out];
}

/**
 * The calls (1-based indexes into `sequence`, the site of every call) a bounded sweep reruns:
 * every call when `max` is undefined or large enough; else up to `perSite` calls of every site
 * kind (spread over its occurrences, so a rare site such as 'dmabuf_attach' is never skipped),
 * then the rest of `max` spread evenly over all calls. Sorted ascending.
 */
export function sweepSelection(sequence: readonly string[], max?: number, perSite = 3): number[] {
  const total = sequence.length;
  if (max === undefined || max >= total) return sweepPoints(total);
  const byKind = new Map<string, number[]>();
  sequence.forEach((site, i) => {
    const l = byKind.get(site);
    if (l === undefined) byKind.set(site, [i + 1]);
    else l.push(i + 1);
  });
  const out = new Set<number>();
  for (const calls of byKind.values()) for (const p of sweepPoints(calls.length, perSite)) if (out.size < max) out.add(calls[p - 1] ?? 1);
  const rest: number[] = [];
  for (let i = 1; i <= total; i++) if (!out.has(i)) rest.push(i);
  if (max > out.size) for (const p of sweepPoints(rest.length, max - out.size)) out.add(rest[p - 1] ?? 1);
  return [...out].sort((a, b) => a - b);
}

/**
 * The site of every call each machine of an unarmed run passes (machine creation order): where
 * a test finds the call number of, say, the first 'dma_pool' allocation to fail it alone.
 */
export function siteSequences(def: StackDef, opts: { readonly seed?: number; readonly request?: Omit<StackRunRequest, 'seed'> } = {}): string[][] {
  const req: StackRunRequest = { ...(opts.request ?? SWEEP_REQUESTS[def.name] ?? {}), seed: opts.seed ?? 1 };
  const o = runObserved(def, req, true);
  if (o.error !== null) throw o.error instanceof Error ? o.error : new Error(describe(o.error));
  return o.observed.map((x) => x.sequence);
}

/** Sweep one stack: count its sites, then fail each (or `maxRuns` of them) in turn. */
export function failNthSweep(def: StackDef, opts: FailNthSweepOptions = {}): FailNthRow {
  const req: StackRunRequest = { ...(opts.request ?? SWEEP_REQUESTS[def.name] ?? {}), seed: opts.seed ?? 1 };
  const maxFindings = opts.maxFindings ?? 20;
  const checkLeaks = NO_TEARDOWN[def.name] === undefined;
  const base = runObserved(def, req, true);
  const baseFinding = judge(base, -1, 0, checkLeaks);
  if (baseFinding !== null) throw new Error(`fail_nth ${def.name}: the run with nothing armed did not end cleanly: ${baseFinding.outcome}: ${baseFinding.detail}`);
  const machines = base.observed.map((o) => ({ role: o.role, sites: o.machine.faultInjection.totalCalls, bySite: Object.fromEntries(o.machine.faultInjection.sites()) }));
  // (machine, n) pairs in machine order; maxRuns spreads over the concatenation.
  const pairs: [number, number][] = [];
  const sequence: string[] = [];
  base.observed.forEach((o, i) => {
    o.sequence.forEach((site, k) => {
      pairs.push([i, k + 1]);
      sequence.push(site);
    });
  });
  const points = sweepSelection(sequence, opts.maxRuns);
  const findings: FailNthFinding[] = [];
  let clean = 0;
  let reported = 0;
  let leaks = 0;
  let corruptions = 0;
  let exceptions = 0;
  points.forEach((p, k) => {
    const [machine, nth] = pairs[p - 1] as [number, number];
    const o = runObserved(def, { ...req, failNth: { nth, machine } });
    const fi = o.observed[machine]?.machine.faultInjection;
    const site = fi !== undefined && fi.failNthPending === 0 ? (fi.lastInjected?.site ?? null) : null;
    const j = judge(o, machine, nth, checkLeaks);
    if (j === null) {
      clean++;
      if (o.result?.failure !== undefined) reported++;
    } else {
      if (j.outcome === 'leak') leaks++;
      else if (j.outcome === 'corruption') corruptions++;
      else exceptions++;
      if (findings.length < maxFindings) findings.push({ machine, role: machines[machine]?.role ?? '?', nth, site, ...j });
    }
    opts.onRun?.(k + 1, points.length);
  });
  return { stack: def.name, sites: pairs.length, machines, runs: points.length, clean, reported, leaks, corruptions, exceptions, leaksChecked: checkLeaks, findings };
}

/** The table `pnpm failnth` prints: one line per stack. */
export function formatFailNthTable(rows: readonly FailNthRow[]): string {
  const head = ['stack', 'sites', 'runs', 'clean', 'reported', 'leaks', 'corruptions', 'exceptions'];
  const lines = rows.map((r) => [r.stack, r.sites, r.runs, r.clean, r.reported, r.leaksChecked ? r.leaks : 'n/a', r.corruptions, r.exceptions].map(String));
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [fmt(head), ...lines.map(fmt)].join('\n');
}

/**
 * The Web Worker that runs a stack: the real registry (`getStack(name).run(req)`), the same code
 * the CLI runs. It records each machine's trace, streams the events to the page in batches with a
 * snapshot of the IOMMU state, and posts the result object (what `--json` prints) at the end.
 */
import { STACKS, StackUsageError, getStack } from '@dmakit/demo/stacks';
import { toChromeTrace } from '@dmakit/dma-core';
import type { Machine, TraceEvent } from '@dmakit/dma-core';
import type { FromWorker, RunParams, Snapshot, StackMeta, ToWorker, WireEvent } from './protocol.js';
import { qualify, takeSnapshot } from './snapshot.js';
import type { RunMachine } from './snapshot.js';

interface WorkerScope {
  postMessage(msg: FromWorker): void;
  onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
}
const scope = self as unknown as WorkerScope;

/** Post a batch at least this often (wall ms) while a run is in progress, or every BATCH_EVENTS events. */
const BATCH_MS = 60;
const BATCH_EVENTS = 8192;
/** Events kept per machine for "Download trace" (the views get every event as it streams). */
const TRACE_CAPACITY = 1 << 18;

let lastRun: RunMachine[] = [];

function post(msg: FromWorker): void {
  scope.postMessage(msg);
}

function meta(): StackMeta[] {
  return STACKS.map((s) => ({ name: s.name, summary: s.summary, help: s.help, defaultIommu: s.defaultIommu, iommuModes: s.iommuModes, mappings: s.mappings, comparesMappings: s.comparesMappings, size: s.size, options: s.options }));
}

function wire(ev: TraceEvent, role: string): WireEvent {
  return { n: ev.name, t: ev.ts, d: qualify(role, ev.device), f: ev.fields };
}

interface Collected {
  machines: RunMachine[];
  events: number;
  result: unknown;
  table: string;
}

/** Run one stack; `onBatch` gets the streamed events with a snapshot. Throws what run() throws. */
function runOnce(params: RunParams, onBatch: (events: WireEvent[], done: boolean, progress: { done: number; total: number } | null, machines: RunMachine[], at: number) => void): Collected {
  const stack = getStack(params.stack);
  if (stack === undefined) throw new StackUsageError(`unknown stack "${params.stack}"`);
  const machines: RunMachine[] = [];
  let pending: WireEvent[] = [];
  let total = 0;
  let last = performance.now();
  let progress: { done: number; total: number } | null = null;
  // A stack may build several machines (source and target): their devices are named role/device.
  const flush = (done: boolean): void => {
    const out = pending;
    pending = [];
    total += out.length;
    last = performance.now();
    onBatch(out, done, progress, machines, total);
  };
  const onMachine = (machine: Machine, role: string): void => {
    machines.push({ machine, role });
    machine.trace.record({ capacity: TRACE_CAPACITY });
    machine.trace.subscribe((ev) => {
      pending.push(wire(ev, role));
      if (pending.length >= BATCH_EVENTS || ((pending.length & 255) === 0 && performance.now() - last > BATCH_MS)) flush(false);
    });
  };
  const result = stack.run({
    seed: params.seed,
    ...(params.iommu !== undefined ? { iommu: params.iommu } : {}),
    ...(params.mapping !== undefined ? { mapping: params.mapping } : {}),
    ...(params.size !== undefined ? { size: params.size } : {}),
    ...(params.extra !== undefined ? { extra: params.extra } : {}),
    onMachine,
    onProgress: (done, tot) => {
      progress = { done, total: tot };
      if (performance.now() - last > BATCH_MS) flush(false);
    },
  });
  flush(true);
  return { machines, events: total, result, table: stack.format(result) };
}

function run(id: number, params: RunParams, compare: boolean): void {
  let started = false;
  const t0 = performance.now();
  let collected: Collected;
  try {
    collected = runOnce(params, (events, _done, progress, machines, at) => {
      if (!started) {
        started = true;
        post({ type: 'started', id, role: machines[0]?.role ?? 'host' });
      }
      post({ type: 'batch', id, events, snapshot: takeSnapshot(machines, at, progress) });
    });
  } catch (err) {
    post({ type: 'error', id, usage: err instanceof StackUsageError, message: err instanceof Error ? err.message : String(err) });
    return;
  }
  const runMs = performance.now() - t0;
  lastRun = collected.machines;
  const dropped = collected.machines.reduce((n, m) => n + m.machine.trace.dropped, 0);
  post({ type: 'done', id, result: collected.result, table: collected.table, runMs, eventCount: collected.events, dropped });
  if (!compare) return;
  // The same run on the stack's other mapping path, for the side-by-side IOVA view.
  const stack = getStack(params.stack);
  const other = stack?.mappings.find((m) => m !== (params.mapping ?? stack.mappings[0]));
  if (other === undefined) return;
  try {
    const events: WireEvent[] = [];
    const snapshots: Snapshot[] = [];
    runOnce({ ...params, mapping: other }, (batch, _done, _p, machines, n) => {
      for (const e of batch) if (e.n === 'iommu:map' || e.n === 'iommu:unmap' || e.n === 'iommu:queue_iova' || e.n === 'iommu:flush_iotlb_all') events.push(e);
      snapshots.push(takeSnapshot(machines, n, null));
    });
    post({ type: 'compare', id, mapping: other, events, snapshots });
  } catch (err) {
    post({ type: 'error', id, usage: err instanceof StackUsageError, message: `compare run (${other}): ${err instanceof Error ? err.message : String(err)}` });
  }
}

/** The last run's recorded trace as Chrome trace JSON (one process per machine), like the CLI's --trace file. */
function traceJson(): string {
  const traceEvents = [];
  let pid = 1;
  for (const { machine, role } of lastRun) {
    traceEvents.push(...toChromeTrace(machine.trace.events(), { pid, processName: `dmakit ${role}` }).traceEvents);
    pid++;
  }
  return JSON.stringify({ traceEvents, displayTimeUnit: 'ns', otherData: { generator: 'dmakit visualiser', clock: 'simulated' } });
}

scope.onmessage = (ev) => {
  const msg = ev.data;
  switch (msg.type) {
    case 'run':
      run(msg.id, msg.params, msg.compare);
      break;
    case 'trace':
      post({ type: 'trace', id: msg.id, json: traceJson() });
      break;
  }
};

post({ type: 'ready', stacks: meta() });

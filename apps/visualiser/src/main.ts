/**
 * The visualiser page: controls, the worker that runs the real stacks, and the views. Pause and
 * step move the views' cursor over the run's event stream; the run itself is the real one in the
 * worker and keeps going.
 */
import { ControlError, extraToCliArgs, pageDefaultExtra, pageDefaultSize, parseExtra, parseSeed, parseSize } from './controls.js';
import { h, mount } from './dom.js';
import { int, simTime } from './fmt.js';
import { RunModel, busiestDomain } from './model.js';
import type { FromWorker, RunParams, StackMeta, ToWorker } from './protocol.js';
import { TraceFileError, parseTraceFile } from './traceFile.js';
import type { ParsedTrace } from './traceFile.js';
import type { ViewContext } from './views/common.js';
import { renderCounters } from './views/counters.js';
import { renderIotlb } from './views/iotlb.js';
import { renderIova } from './views/iova.js';
import { renderPageTable } from './views/pagetable.js';
import { renderRequest } from './views/request.js';
import type { RequestViewState } from './views/request.js';
import { TimelineView } from './views/timeline.js';

interface RunRecord {
  readonly stack: string;
  readonly iommu: string;
  readonly mapping: string;
  readonly seed: number;
  readonly size: number | undefined;
  /** The run's stack-specific options as CLI arguments. */
  readonly cliArgs: readonly string[];
  readonly wallMs: number;
  readonly runMs: number;
  readonly events: number;
}

declare global {
  interface Window {
    /** Finished runs (for tests and the curious): page wall time and worker run time. */
    __dmakitRuns?: RunRecord[];
  }
}

const app = document.getElementById('app');
if (app === null) throw new Error('#app missing');
const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });

let stacks: readonly StackMeta[] = [];
let model: RunModel | null = null;
let pendingId = 0;
let pendingModel: RunModel | null = null;
let pendingParams: (RunParams & { label: string }) | null = null;
let fileTrace: (ParsedTrace & { name: string }) | null = null;
let domainPick: string | undefined;
let traceReq = 0;
const requestState: RequestViewState = { pick: null };
window.__dmakitRuns = [];

// ---- controls ---------------------------------------------------------------------------------
const stackSel = h('select', { id: 'stack', 'data-testid': 'stack' });
const iommuSel = h('select', { id: 'iommu', 'data-testid': 'iommu' });
const mappingSel = h('select', { id: 'mapping', 'data-testid': 'mapping' });
const seedIn = h('input', { id: 'seed', 'data-testid': 'seed', value: '1', inputmode: 'numeric', size: 8 });
const sizeIn = h('input', { id: 'size', 'data-testid': 'size', inputmode: 'numeric', size: 8 });
const sizeLabel = h('label', { for: 'size' }, 'size');
const extraIn = h('input', { id: 'extra', 'data-testid': 'extra', size: 18, spellcheck: false });
const extraHint = h('span', { class: 'hint' });
const compareCb = h('input', { type: 'checkbox', id: 'compare', 'data-testid': 'compare' });
const runBtn = h('button', { type: 'button', class: 'primary', 'data-testid': 'run' }, 'Run');
const pauseBtn = h('button', { type: 'button', 'data-testid': 'pause', disabled: true }, 'Pause');
const stepBtn = h('button', { type: 'button', 'data-testid': 'step', disabled: true, title: 'advance the views by one trace event' }, 'Step event');
const stepIoBtn = h('button', { type: 'button', 'data-testid': 'step-io', disabled: true, title: 'advance the views to the next I/O (command, fault or mapping)' }, 'Step I/O');
const traceBtn = h('button', { type: 'button', 'data-testid': 'download-trace', disabled: true, title: 'the run’s Chrome trace (what --trace writes)' }, 'Download trace');
const fileIn = h('input', { type: 'file', accept: '.json,application/json', 'data-testid': 'trace-file', id: 'trace-file' });
const scrub = h('input', { type: 'range', min: 0, max: 0, value: 0, step: 1, class: 'scrub', 'data-testid': 'scrub', 'aria-label': 'views cursor (events)', title: 'move the views’ cursor over the run’s events (pauses the views)' });
const status = h('div', { class: 'status', 'data-testid': 'status', 'data-state': 'idle', role: 'status' }, 'Loading the stacks…');
const message = h('div', { class: 'message', 'data-testid': 'message', role: 'alert', hidden: true });
const domainSel = h('select', { 'data-testid': 'domain', 'aria-label': 'IOMMU domain' });
const stackHelp = h('pre', { class: 'stack-help' });

function field(label: HTMLElement | string, input: HTMLElement, hint?: HTMLElement): HTMLElement {
  return h('div', { class: 'field' }, typeof label === 'string' ? h('label', { for: input.id }, label) : label, input, hint ?? null);
}

const sizeHint = h('span', { class: 'hint' });
const controls = h(
  'form',
  { class: 'controls', onsubmit: (ev: Event) => { ev.preventDefault(); } },
  field('stack', stackSel),
  field('IOMMU', iommuSel),
  field('mapping', mappingSel),
  field('seed', seedIn),
  field(sizeLabel, sizeIn, sizeHint),
  field('options', extraIn, extraHint),
  h('div', { class: 'field check' }, compareCb, h('label', { for: 'compare', title: 'run the other mapping path too and show both IOVA spaces side by side' }, 'compare paths')),
  h('div', { class: 'buttons' }, runBtn, pauseBtn, stepBtn, stepIoBtn),
  h('div', { class: 'buttons right' }, traceBtn, h('label', { class: 'file-btn', for: 'trace-file' }, 'Open trace file…'), fileIn),
);

const help = h(
  'details',
  { class: 'help' },
  h('summary', {}, 'How this works'),
  h(
    'p',
    {},
    'Run builds the chosen stack on a simulated machine and runs it for real — the same code as ',
    h('code', {}, 'pnpm demo'),
    ' — in a Web Worker, so this page stays responsive. The worker records the machine’s trace (kernel tracepoint names) and snapshots the IOMMU state (IOVA allocator, page table, IOTLB, counters) and streams both here while the run is in progress.',
  ),
  h(
    'p',
    {},
    h('strong', {}, 'Pause'),
    ' freezes the views at the current event; ',
    h('strong', {}, 'Step event'),
    ' and ',
    h('strong', {}, 'Step I/O'),
    ' move the views’ cursor to the next trace event or the next I/O. They act on the views only: the run in the worker is the real one and runs to completion. Same stack + seed + options = the same numbers as ',
    h('code', {}, 'pnpm demo <stack> --seed N --iommu M --json'),
    '.',
  ),
  stackHelp,
);

function panel(id: string, title: string, subtitle: string, extra?: HTMLElement): { section: HTMLElement; body: HTMLElement } {
  const body = h('div', { class: 'body' });
  const section = h('section', { class: `panel panel-${id}`, id: `view-${id}`, 'data-testid': `view-${id}` }, h('h2', {}, title, h('small', {}, subtitle), extra ?? null), body);
  return { section, body };
}

const pIova = panel('iova', 'IOVA space', 'allocator ranges and mappings over the aperture', h('span', { class: 'domain-pick' }, 'domain ', domainSel));
const pPt = panel('pagetable', 'Page table', 'levels, occupancy, 4K vs 2M leaves');
const pTlb = panel('iotlb', 'IOTLB', 'entries, hits/misses, lazy-mode windows');
const pReq = panel('request', 'One request, end to end', 'block segments → command → DMA segments → PRP/SGL → IOVA → physical');
const pTl = panel('timeline', 'Timeline', 'trace events per device on the simulated clock');
const pCnt = panel('counters', 'Counters', 'per I/O, live; the result at the end');
const timeline = new TimelineView(pTl.body);

mount(app, controls, h('div', { class: 'statusbar' }, h('div', { class: 'status-row' }, status, h('label', { class: 'scrub-label' }, 'cursor ', scrub)), message), help, h('div', { class: 'grid' }, pIova.section, pPt.section, pTlb.section, pReq.section, pTl.section, pCnt.section));

// ---- helpers ----------------------------------------------------------------------------------
function showMessage(text: string | null, kind: 'error' | 'info' = 'error'): void {
  message.hidden = text === null;
  message.textContent = text ?? '';
  message.dataset.kind = kind;
}

function currentStack(): StackMeta | undefined {
  return stacks.find((s) => s.name === stackSel.value);
}

function fillOptions(sel: HTMLSelectElement, values: readonly string[], preferred: string | undefined, labels: Record<string, string> = {}): void {
  sel.replaceChildren(...values.map((v) => h('option', { value: v }, labels[v] ?? v)));
  sel.value = preferred ?? values[0] ?? '';
}

function onStackChange(): void {
  const s = currentStack();
  if (s === undefined) return;
  fillOptions(iommuSel, s.iommuModes, s.defaultIommu, { strict: 'strict', lazy: 'lazy (flush queue)', off: 'off (dma-direct)' });
  // '' = the stack's default request (no mapping): for a stack that compares its paths, both.
  const paths = s.comparesMappings ? ['', ...s.mappings] : [...s.mappings];
  fillOptions(mappingSel, paths, s.mappings[0] ?? '', { '': 'both paths (compared)', iova: 'two-step IOVA', legacy: 'legacy (per page / sg)' });
  mappingSel.disabled = paths.length < 2;
  compareCb.disabled = s.mappings.length < 2;
  if (s.mappings.length < 2) compareCb.checked = false;
  sizeLabel.textContent = s.size.label;
  const def = pageDefaultSize(s.name, s.size);
  sizeIn.value = String(def);
  sizeHint.textContent = `${s.size.unit}, ${s.size.min}–${s.size.max}${def !== s.size.default ? ` (CLI default ${s.size.default})` : ''}`;
  extraIn.value = pageDefaultExtra(s.name);
  extraIn.placeholder = s.options.length === 0 ? 'none' : s.options.map((o) => (o.type === 'boolean' ? o.key : `${o.key}=${o.valueName ?? 'N'}`)).slice(0, 2).join(' ');
  extraIn.title = s.options.map((o) => `${o.type === 'boolean' ? o.key : `${o.key}=${o.valueName ?? 'N'}`}: ${o.description}`).join('\n');
  extraIn.disabled = s.options.length === 0;
  extraHint.textContent = s.options.length === 0 ? 'none for this stack' : `${s.options.length} available (hover)`;
  stackHelp.textContent = s.help;
}

function ctx(m: RunModel): ViewContext {
  return { model: m, domain: domainPick, mapping: m.label.split(' ').find((w) => w === 'iova' || w === 'legacy') };
}

let renderQueued = false;
let lastRender = 0;
function scheduleRender(now = false): void {
  if (renderQueued) return;
  renderQueued = true;
  // While a run streams in, redraw at most 4 times a second: the main thread stays free for input.
  const wait = now ? 0 : Math.max(0, 250 - (performance.now() - lastRender));
  setTimeout(() => requestAnimationFrame(render), wait);
}

function render(): void {
  renderQueued = false;
  lastRender = performance.now();
  const m = model;
  if (m === null) return;
  const snap = m.snapshotAt();
  const names = (snap?.domains ?? []).map((d) => d.name);
  if (domainPick === undefined || !names.includes(domainPick)) domainPick = busiestDomain(snap);
  if (domainSel.options.length !== names.length || [...domainSel.options].some((o, i) => o.value !== names[i])) {
    domainSel.replaceChildren(...names.map((n) => h('option', { value: n }, `${n} (${snap?.domains.find((d) => d.name === n)?.type ?? ''})`)));
  }
  domainSel.value = domainPick ?? '';
  domainSel.disabled = names.length < 2;
  const c = ctx(m);
  const guard = (name: string, f: () => void): void => {
    try {
      f();
    } catch (err) {
      showMessage(`The ${name} view failed to draw: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  guard('IOVA', () => { renderIova(pIova.body, c); });
  guard('page-table', () => { renderPageTable(pPt.body, c); });
  guard('IOTLB', () => { renderIotlb(pTlb.body, c); });
  guard('request', () => { renderRequest(pReq.body, c, requestState, (i) => {
      requestState.pick = i;
      scheduleRender(true);
    }); },
  );
  guard('counters', () => { renderCounters(pCnt.body, c); });
  guard('timeline', () => {
    if (fileTrace !== null) timeline.set({ events: fileTrace.events, upTo: fileTrace.events.length, title: `file ${fileTrace.name}` });
    else timeline.set({ events: m.events, upTo: m.visible, title: m.label });
  });
  updateStatus();
}

function updateStatus(): void {
  const m = model;
  const running = pendingModel !== null || (m !== null && m.done === null && status.dataset.state === 'running');
  pauseBtn.disabled = m === null;
  pauseBtn.textContent = m?.paused === true ? 'Resume' : 'Pause';
  stepBtn.disabled = m?.paused !== true;
  stepIoBtn.disabled = m?.paused !== true;
  traceBtn.disabled = m?.done == null;
  if (m === null) return;
  scrub.max = String(m.events.length);
  if (document.activeElement !== scrub) scrub.value = String(m.visible);
  const snap = m.snapshotAt();
  const prog = snap?.progress;
  const parts = [m.label, `${int(m.visible)}${m.paused ? ` / ${int(m.events.length)}` : ''} events`, `sim ${simTime(snap?.simNs ?? 0)}`];
  if (m.paused) parts.push('views paused (the run continues in the worker)');
  if (m.done !== null) parts.push(`run took ${Math.round(m.done.runMs)} ms in the worker`);
  else if (prog != null) parts.push(`${Math.round((100 * prog.done) / Math.max(1, prog.total))} %`);
  status.textContent = `${running && m.done === null ? '⏳ ' : m.done !== null ? '✔ ' : ''}${parts.join(' · ')}`;
}

// ---- worker protocol --------------------------------------------------------------------------
function startRun(): void {
  const s = currentStack();
  if (s === undefined) return;
  let seed: number;
  let size: number;
  let extra: Record<string, string | boolean>;
  try {
    seed = parseSeed(seedIn.value);
    size = parseSize(sizeIn.value, s.size);
    extra = parseExtra(extraIn.value, s.options);
  } catch (err) {
    if (err instanceof ControlError) {
      showMessage(`${err.message} The previous run is kept.`);
      return;
    }
    throw err;
  }
  showMessage(null);
  const mapping = s.mappings.length > 0 && mappingSel.value !== '' ? mappingSel.value : undefined;
  const params: RunParams & { label: string } = {
    stack: s.name,
    seed,
    iommu: iommuSel.value as never,
    ...(mapping !== undefined ? { mapping: mapping as never } : {}),
    size,
    ...(Object.keys(extra).length > 0 ? { extra } : {}),
    label: `${s.name} · IOMMU ${iommuSel.value}${mapping !== undefined ? ` · ${mapping}` : s.comparesMappings ? ' · both paths' : ''} · seed ${seed} · ${size} ${s.size.unit}${extraIn.value.trim() !== '' ? ` · ${extraIn.value.trim()}` : ''}`,
  };
  pendingId++;
  pendingParams = params;
  pendingModel = new RunModel(s.name, params.label, performance.now());
  pendingModel.stackUnit = s.size.unit.replace(/s$/, '');
  performance.mark(`run-${pendingId}-start`);
  status.dataset.state = 'running';
  status.textContent = `⏳ starting ${params.label}…`;
  runBtn.disabled = true;
  const { label: _label, ...wireParams } = params;
  const msg: ToWorker = { type: 'run', id: pendingId, params: wireParams, compare: compareCb.checked };
  worker.postMessage(msg);
}

function adopt(id: number): RunModel | null {
  if (id !== pendingId) return null;
  if (pendingModel !== null) {
    model = pendingModel;
    pendingModel = null;
    requestState.pick = null;
    fileTrace = null;
  }
  return model;
}

worker.onmessage = (ev: MessageEvent<FromWorker>) => {
  const msg = ev.data;
  switch (msg.type) {
    case 'ready':
      stacks = msg.stacks;
      stackSel.replaceChildren(...stacks.map((s) => h('option', { value: s.name, title: s.summary }, s.name)));
      stackSel.value = stacks.find((s) => s.name === 'nvme')?.name ?? stacks[0]?.name ?? '';
      onStackChange();
      status.textContent = `Ready: ${stacks.length} stacks. Pick one and press Run.`;
      app.dataset.state = 'ready';
      break;
    case 'started':
      adopt(msg.id);
      scheduleRender(true);
      break;
    case 'batch': {
      const m = adopt(msg.id);
      if (m === null) return;
      m.addBatch(msg.events, msg.snapshot);
      scheduleRender();
      break;
    }
    case 'done': {
      const m = adopt(msg.id);
      if (m === null) return;
      m.done = { result: msg.result, table: msg.table, runMs: msg.runMs, eventCount: msg.eventCount, dropped: msg.dropped };
      performance.mark(`run-${msg.id}-end`);
      const wall = performance.measure(`run-${msg.id}`, `run-${msg.id}-start`, `run-${msg.id}-end`).duration;
      const p = pendingParams;
      window.__dmakitRuns?.push({ stack: m.stack, iommu: p?.iommu ?? '', mapping: p?.mapping ?? '', seed: p?.seed ?? 0, size: p?.size, cliArgs: extraToCliArgs(p?.extra ?? {}, stacks.find((x) => x.name === m.stack)?.options ?? []), wallMs: wall, runMs: msg.runMs, events: msg.eventCount });
      status.dataset.state = 'done';
      status.dataset.wallMs = String(Math.round(wall));
      status.dataset.runMs = String(Math.round(msg.runMs));
      runBtn.disabled = false;
      scheduleRender(true);
      break;
    }
    case 'compare':
      if (msg.id === pendingId && model !== null) {
        model.compare = { mapping: msg.mapping, events: msg.events, snapshots: msg.snapshots };
        scheduleRender(true);
      }
      break;
    case 'error':
      if (msg.id !== pendingId) return;
      runBtn.disabled = false;
      if (pendingModel !== null) {
        // Refused before it started: the previous run stays on screen.
        pendingModel = null;
        status.dataset.state = model?.done != null ? 'done' : 'idle';
        showMessage(`${msg.usage ? 'The stack refused these options' : 'The run failed'}: ${msg.message} The previous run is kept.`);
      } else {
        status.dataset.state = 'error';
        showMessage(`${msg.usage ? 'The stack refused these options' : 'The run failed'}: ${msg.message}`);
      }
      updateStatus();
      break;
    case 'trace': {
      if (msg.id !== traceReq) return;
      const url = URL.createObjectURL(new Blob([msg.json], { type: 'application/json' }));
      const a = h('a', { href: url, download: `dmakit-${model?.stack ?? 'run'}.trace.json` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => { URL.revokeObjectURL(url); }, 1000);
      break;
    }
  }
};
worker.onerror = (ev) => {
  ev.preventDefault();
  showMessage(`The worker failed: ${ev.message}`);
  runBtn.disabled = false;
};

// ---- wiring -----------------------------------------------------------------------------------
stackSel.addEventListener('change', onStackChange);
runBtn.addEventListener('click', startRun);
for (const el of [seedIn, sizeIn]) {
  el.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') startRun();
  });
}
pauseBtn.addEventListener('click', () => {
  if (model === null) return;
  if (model.paused) model.resume();
  else model.pause();
  scheduleRender(true);
});
stepBtn.addEventListener('click', () => {
  model?.step('event');
  scheduleRender(true);
});
stepIoBtn.addEventListener('click', () => {
  model?.step('io');
  scheduleRender(true);
});
scrub.addEventListener('input', () => {
  if (model === null) return;
  model.cursor = Number(scrub.value);
  scheduleRender(true);
});
domainSel.addEventListener('change', () => {
  domainPick = domainSel.value;
  scheduleRender(true);
});
traceBtn.addEventListener('click', () => {
  traceReq++;
  worker.postMessage({ type: 'trace', id: traceReq } satisfies ToWorker);
});
fileIn.addEventListener('change', () => {
  const file = fileIn.files?.[0];
  if (file === undefined) return;
  file
    .text()
    .then((text) => {
      const parsed = parseTraceFile(text);
      fileTrace = { ...parsed, name: file.name };
      showMessage(`Opened ${file.name}: ${int(parsed.events.length)} events on ${parsed.devices.length} lanes. The timeline shows the file; press Run to go back to live runs.`, 'info');
      timeline.set({ events: parsed.events, upTo: parsed.events.length, title: `file ${file.name}` });
      pTl.section.scrollIntoView({ block: 'nearest' });
    })
    .catch((err: unknown) => {
      showMessage(`${file.name} was not opened: ${err instanceof TraceFileError ? err.message : err instanceof Error ? err.message : String(err)} The previous view is kept.`);
    })
    .finally(() => {
      fileIn.value = '';
    });
});
let resizeTimer = 0;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = window.setTimeout(() => { scheduleRender(true); }, 150);
});

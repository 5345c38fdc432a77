/**
 * Counters: the IOMMU's counters and the trace events, total and per I/O, updating live; at the
 * end the CLI's own table (the stack's format()) and the result object `--json` prints.
 */
import { h, mount } from '../dom.js';
import { int, ratio } from '../fmt.js';
import { countEvents } from '../model.js';
import { empty } from './common.js';
import type { ViewContext } from './common.js';

const IOMMU_ROWS: readonly [string, string][] = [
  ['iovaAllocs', 'IOVA allocations'],
  ['rcacheHits', 'IOVA rcache hits'],
  ['iovaFrees', 'IOVA frees'],
  ['maps', 'iommu_map calls'],
  ['unmaps', 'iommu_unmap calls'],
  ['pteWrites', 'PTE writes'],
  ['iotlbSyncs', 'IOTLB syncs'],
  ['iotlbInvalidationsRange', 'IOTLB range invalidations'],
  ['iotlbInvalidationsFull', 'IOTLB full flushes'],
  ['fqQueued', 'flush-queue entries'],
  ['iotlbHits', 'IOTLB hits'],
  ['iotlbMisses', 'IOTLB misses'],
  ['staleIotlbAccesses', 'stale IOTLB accesses'],
  ['faults', 'IOMMU faults'],
  ['simulatedNs', 'IOMMU CPU time (sim ns)'],
];

/** Top-level scalar fields of the result, shown as key/value cells with data-key. */
function resultGrid(result: unknown): HTMLElement {
  const cells: HTMLElement[] = [];
  if (typeof result === 'object' && result !== null) {
    for (const [k, v] of Object.entries(result as Record<string, unknown>)) {
      if (typeof v !== 'number' && typeof v !== 'string' && typeof v !== 'boolean') continue;
      cells.push(h('div', { class: 'kv', 'data-key': k }, h('span', { class: 'stat-label' }, k), h('span', { class: 'stat-value', 'data-value': JSON.stringify(v) }, typeof v === 'number' ? (Number.isInteger(v) ? int(v) : String(v)) : String(v))));
    }
  }
  return h('div', { class: 'result-grid', 'data-testid': 'result-grid' }, ...cells);
}

export function renderCounters(root: HTMLElement, ctx: ViewContext): void {
  const { model } = ctx;
  const n = model.visible;
  if (model.events.length === 0 && model.done === null) {
    mount(root, empty('Run a stack: its counters appear here, live.'));
    return;
  }
  const snap = model.snapshotAt(n);
  const counts = countEvents(model.events, n);
  let completions = 0;
  for (let i = 0; i < n; i++) {
    const e = model.events[i];
    if (e?.n === 'nvme:nvme_complete_rq' && e.f.qid !== 0) completions++;
  }
  const ios = completions > 0 ? completions : (snap?.progress?.done ?? 0);
  const unit = completions > 0 ? 'NVMe I/O' : (model.stackUnit ?? 'unit');
  const rows: HTMLElement[] = [];
  const row = (label: string, v: number): void => {
    rows.push(h('tr', {}, h('td', {}, label), h('td', { class: 'num' }, int(v)), h('td', { class: 'num' }, ios > 0 ? ratio(v, ios) : '–')));
  };
  if (snap?.iommu != null) for (const [k, label] of IOMMU_ROWS) row(label, snap.iommu[k] ?? 0);
  for (const [name, c] of [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 14)) row(name, c);
  const done = model.done;
  mount(
    root,
    h(
      'div',
      { class: 'counters' },
      h(
        'div',
        {},
        h('div', { class: 'axis-caption' }, `live at the cursor · ${int(ios)} ${unit}${ios === 1 ? '' : 's'}${snap?.progress != null ? ` · progress ${int(snap.progress.done)} of ${int(snap.progress.total)} ${model.stackUnit ?? ''}` : ''}`),
        h('table', { class: 'tbl', 'data-testid': 'counters-table' }, h('thead', {}, h('tr', {}, h('th', {}, 'counter / tracepoint'), h('th', { class: 'num' }, 'total'), h('th', { class: 'num' }, `per ${unit}`))), h('tbody', {}, ...rows)),
      ),
      done === null
        ? h('div', { class: 'muted' }, 'The result (what `pnpm demo … --json` prints) appears when the run ends.')
        : h(
            'div',
            {},
            h('div', { class: 'axis-caption' }, 'result — the numbers `--json` prints for the same stack and seed'),
            resultGrid(done.result),
            h('div', { class: 'axis-caption' }, 'the CLI’s table (`pnpm demo` without --json)'),
            h('pre', { class: 'cli-table', 'data-testid': 'cli-table' }, done.table),
            h('script', { type: 'application/json', id: 'result-json', 'data-testid': 'result-json' }, JSON.stringify(done.result)),
          ),
    ),
  );
}

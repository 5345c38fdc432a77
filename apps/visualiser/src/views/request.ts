/**
 * One request, end to end. NVMe: the request's block segments (bio_vecs, from dmakit's
 * block:blk_rq_dma_map) → the command (nvme_setup_cmd) → its DMA segments (the mappings
 * traced while it was built) → the PRP entries or SGL in the command → IOVA → physical pages.
 * ODP: the MR's pages faulted in (mlx5:odp_page_fault) and invalidated (mlx5:odp_invalidate).
 * Other stacks: the latest DMA mappings, DMA address → physical address.
 */
import { h, hiDpiCanvas, mount } from '../dom.js';
import { bytes, hex, int, simTime } from '../fmt.js';
import { dataPointer, nvmeOpcodeName, nvmeRequests, odpActivity } from '../model.js';
import type { NvmeRequest } from '../model.js';
import { empty, widthOf } from './common.js';
import type { ViewContext } from './common.js';

export interface RequestViewState {
  /** Index into the request list, or null for "the latest one at the cursor". */
  pick: number | null;
}

const MAX_ROWS = 16;

function col(title: string, ...rows: (HTMLElement | string)[]): HTMLElement {
  return h('div', { class: 'e2e-col' }, h('div', { class: 'e2e-title' }, title), ...rows);
}

function cell(text: string, cls = ''): HTMLElement {
  return h('div', { class: `e2e-cell ${cls}` }, text);
}

function nvmeFlow(r: NvmeRequest, t0: number): HTMLElement {
  const mapped = r.segments.reduce((a, x) => a + x.size, 0);
  let dp = dataPointer(r, mapped);
  // An SGL data block names its length; PRPs do not (their length is the command's NLB).
  const sglLen = dp.kind === 'SGL' ? r.prp2 % 2 ** 32 : 0;
  const total = mapped > 0 ? mapped : sglLen;
  if (mapped === 0) dp = dataPointer(r, total);
  const segs = r.segments.slice(0, MAX_ROWS);
  const more = r.segments.length > MAX_ROWS ? `… ${int(r.segments.length - MAX_ROWS)} more` : '';
  const blocks = r.blockSegments.slice(0, MAX_ROWS);
  const moreBlocks = r.blockSegments.length > MAX_ROWS ? `… ${int(r.blockSegments.length - MAX_ROWS)} more` : '';
  const blockCol = h(
    'div',
    { class: 'e2e-col', 'data-testid': 'block-segments', 'data-count': r.blockSegments.length },
    h('div', { class: 'e2e-title' }, `Block segments (bio_vec)${r.rqTag !== null ? ` · tag ${r.rqTag}` : ''}`),
    ...(blocks.length === 0
      ? [cell('none traced: the single-segment fast path (req_bvec) maps the bvec without blk_rq_dma_map', 'wrap muted')]
      : blocks.map((b) => h('div', { class: 'e2e-cell mono', title: `${hex(b.phys)} + ${b.len} B` }, `${hex(b.phys)} · ${bytes(b.len)}`))),
    moreBlocks,
  );
  return h(
    'div',
    { class: 'e2e', 'data-testid': 'request-flow', 'data-segments': r.segments.length },
    blockCol,
    col(
      'request',
      cell(`${nvmeOpcodeName(r.opcode)}${total > 0 ? ` · ${bytes(total)}` : ''}`, 'strong'),
      cell(`${r.device} qid ${r.qid} cid ${r.cid}`, 'wrap'),
      cell(`submitted ${simTime(r.t - t0)}`, 'wrap'),
      cell(r.tComplete !== null ? `completed ${simTime(r.tComplete - t0)}, status ${r.status ?? 0}` : 'in flight', 'wrap'),
    ),
    col(
      `DMA segments${segs[0] !== undefined ? ` (${segs[0].kind})` : ''}`,
      ...(segs.length === 0 ? [cell('none traced for this command: its buffer was mapped before (pre-mapped dma-buf or P2P bus address)', 'wrap muted')] : segs.map((x) => h('div', { class: 'e2e-cell', title: x.kind }, bytes(x.size)))),
      more,
    ),
    col(dp.kind === 'SGL' ? 'SGL descriptor' : 'PRP entries', cell(dp.entry1, 'mono wrap'), cell(dp.entry2, 'wrap')),
    col('IOVA / DMA address', ...segs.map((x) => cell(hex(x.dma), x.dma === r.prp1 - (r.prp1 % 4096) || x.dma === r.prp1 ? 'mono hl' : 'mono')), more),
    col('physical pages', ...segs.map((x) => cell(hex(x.phys), 'mono')), more),
  );
}

export function renderRequest(root: HTMLElement, ctx: ViewContext, st: RequestViewState, onPick: (i: number | null) => void): void {
  const { model } = ctx;
  const n = model.visible;
  if (model.events.length === 0) {
    mount(root, empty('Run a stack to follow one request end to end.'));
    return;
  }
  const t0 = model.events[0]?.t ?? 0;
  const reqs = nvmeRequests(model.events, n);
  if (reqs.length > 0) {
    const idx = st.pick === null ? reqs.length - 1 : Math.min(st.pick, reqs.length - 1);
    const r = reqs[idx];
    if (r === undefined) return;
    const select = h('select', { 'aria-label': 'NVMe request', 'data-testid': 'request-select' });
    const first = Math.max(0, idx - 200);
    for (let i = first; i < Math.min(reqs.length, idx + 200); i++) {
      const q = reqs[i];
      if (q === undefined) continue;
      const o = h('option', { value: i }, `#${i + 1} ${nvmeOpcodeName(q.opcode)} cid ${q.cid} (${q.segments.length} seg, ${q.blockSegments.length} bvec)`);
      if (i === idx) o.selected = true;
      select.append(o);
    }
    select.addEventListener('change', () => {
      onPick(Number(select.value));
    });
    mount(
      root,
      h(
        'div',
        { class: 'request-bar' },
        h('button', { type: 'button', onclick: () => { onPick(Math.max(0, idx - 1)); } }, '◀'),
        select,
        h('button', { type: 'button', onclick: () => { onPick(Math.min(reqs.length - 1, idx + 1)); } }, '▶'),
        h('button', { type: 'button', onclick: () => { onPick(null); }, title: 'follow the latest request at the cursor' }, 'latest'),
        h('span', { class: 'muted' }, ` ${int(reqs.length)} NVMe I/O commands so far`),
      ),
      nvmeFlow(r, t0),
    );
    return;
  }
  const odp = odpActivity(model.events, n);
  if (odp.faults.length + odp.invalidations.length > 0) {
    const width = widthOf(root) - 4;
    const canvas = h('canvas', { 'data-testid': 'odp-canvas' });
    const va = [...odp.faults.map((f) => f.va), ...odp.invalidations.map((x) => x.start)];
    const vaEnd = [...odp.faults.map((f) => f.va + Math.max(4096, f.bcnt)), ...odp.invalidations.map((x) => x.end)];
    const lo = Math.min(...va);
    const hi = Math.max(...vaEnd);
    mount(
      root,
      h('div', { class: 'axis-caption' }, 'ODP MR over simulated time: ', h('span', { class: 'key', style: 'background:#35d0a5' }), ' page fault (pages brought in) ', h('span', { class: 'key', style: 'background:#ff6b6b' }), ' invalidation (pages zapped)'),
      canvas,
      h('div', { class: 'axis' }, h('span', {}, hex(lo)), h('span', { class: 'muted' }, 'MR virtual address →'), h('span', {}, hex(hi))),
      h(
        'div',
        { class: 'request-flow', 'data-testid': 'request-flow', 'data-segments': odp.faults.length },
        h('p', {}, `${int(odp.faults.length)} page fault(s), ${int(odp.invalidations.length)} invalidation(s).`),
        h(
          'ul',
          { class: 'mono small' },
          ...odp.faults.slice(-5).map((f) => h('li', {}, `fault ${simTime(f.t - t0)} mkey ${hex(f.mkey)} va ${hex(f.va)} +${bytes(f.bcnt)} ${f.write ? 'write' : 'read'} → ${f.ret} page(s)`)),
          ...odp.invalidations.slice(-5).map((x) => h('li', {}, `invalidate ${simTime(x.t - t0)} mkey ${hex(x.mkey)} [${hex(x.start)}, ${hex(x.end)}) zapped ${int(x.zapped)} MTT(s)`)),
        ),
      ),
    );
    const H = 120;
    const g = hiDpiCanvas(canvas, width, H);
    g.fillStyle = '#10151c';
    g.fillRect(0, 0, width, H);
    const t1 = Math.max(t0 + 1, model.events[n - 1]?.t ?? t0);
    const X = (a: number): number => ((a - lo) / Math.max(1, hi - lo)) * width;
    const Y = (t: number): number => ((t - t0) / (t1 - t0)) * (H - 6) + 3;
    for (const f of odp.faults) {
      g.fillStyle = '#35d0a5';
      g.fillRect(X(f.va), Y(f.t) - 2, Math.max(2, X(f.va + Math.max(4096, f.bcnt)) - X(f.va)), 4);
    }
    for (const x of odp.invalidations) {
      g.fillStyle = '#ff6b6b';
      g.fillRect(X(x.start), Y(x.t) - 2, Math.max(2, X(x.end) - X(x.start)), 4);
    }
    return;
  }
  // Generic: the latest mappings at the cursor.
  const rows: HTMLElement[] = [];
  for (let i = n - 1; i >= 0 && rows.length < 12; i--) {
    const e = model.events[i];
    if (e === undefined) continue;
    if (e.n === 'dma:dma_map_phys') rows.push(h('tr', {}, h('td', {}, e.d), h('td', {}, 'dma_map_phys'), h('td', { class: 'mono' }, hex(Number(e.f.dma_addr))), h('td', { class: 'mono' }, hex(Number(e.f.phys_addr))), h('td', {}, bytes(Number(e.f.size)))));
    else if (e.n === 'iommu:map') rows.push(h('tr', {}, h('td', {}, e.d), h('td', {}, 'iommu:map'), h('td', { class: 'mono' }, hex(Number(e.f.iova))), h('td', { class: 'mono' }, hex(Number(e.f.paddr))), h('td', {}, bytes(Number(e.f.size)))));
  }
  mount(
    root,
    rows.length === 0
      ? empty('No NVMe command, ODP fault or DMA mapping at the cursor.')
      : h(
          'div',
          { 'data-testid': 'request-flow', 'data-segments': rows.length },
          h('p', { class: 'muted' }, 'This stack issues no NVMe command; the latest DMA mappings at the cursor, DMA address → physical address:'),
          h('table', { class: 'tbl' }, h('thead', {}, h('tr', {}, h('th', {}, 'device / domain'), h('th', {}, 'event'), h('th', {}, 'DMA / IOVA'), h('th', {}, 'physical'), h('th', {}, 'size'))), h('tbody', {}, ...rows)),
        ),
  );
}

/**
 * IOTLB: the set-associative cache's valid entries (sets × ways), hits and misses over the run, and
 * the lazy-mode windows — from the first iommu:queue_iova (PTEs cleared, IOTLB not invalidated) to
 * the flush queue's iommu:flush_iotlb_all — with every access that went through a stale entry.
 */
import { h, hiDpiCanvas, mount, s } from '../dom.js';
import { hex, int, ratio, simTime } from '../fmt.js';
import { lazyWindows } from '../model.js';
import { empty, stat, widthOf } from './common.js';
import type { ViewContext } from './common.js';

const MAX_WINDOW_RECTS = 400;

export function renderIotlb(root: HTMLElement, ctx: ViewContext): void {
  const { model, domain } = ctx;
  const n = model.visible;
  const snap = model.snapshotAt(n);
  const d = snap?.domains.find((x) => x.name === domain);
  if (snap === undefined) {
    mount(root, empty('Run a stack to see the IOTLB.'));
    return;
  }
  if (d === undefined) {
    mount(root, empty('No IOMMU in this run (IOMMU off): nothing is cached, nothing can go stale.'));
    return;
  }
  const tlb = d.tlb;
  const width = widthOf(root) - 4;
  // Entry grid: one column per set, one row per way (set = IOVA pfn mod sets, as the cache indexes).
  const sets = tlb.entries / tlb.ways;
  const perSet = new Array<number>(sets).fill(0);
  for (const pfn of tlb.pfns) perSet[pfn % sets] = (perSet[pfn % sets] ?? 0) + 1;
  const grid = h('canvas', { class: 'tlb-grid', 'data-testid': 'tlb-grid', 'data-valid': tlb.valid });
  const { windows, orphans } = lazyWindows(model.events, n);
  const mine = windows.filter((w) => w.domain === domain);
  const stale = mine.flatMap((w) => w.stale).concat(orphans);
  const t0 = model.events[0]?.t ?? 0;
  const t1 = Math.max(t0 + 1, model.events[n - 1]?.t ?? t0);
  const X = (t: number): number => ((t - t0) / (t1 - t0)) * (width - 2) + 1;
  const strip = s('svg', { width, height: 46, class: 'lazy-strip', role: 'img', 'aria-label': 'lazy invalidation windows' });
  strip.append(s('rect', { x: 0, y: 8, width, height: 24, fill: '#141a22' }));
  for (const w of mine.slice(0, MAX_WINDOW_RECTS)) {
    const x0 = X(w.tOpen);
    const x1 = X(w.tClose ?? t1);
    strip.append(
      s(
        'rect',
        { x: x0, y: 8, width: Math.max(2, x1 - x0), height: 24, class: w.stale.length > 0 ? 'lazy-window lazy-window-stale' : 'lazy-window', 'data-testid': 'lazy-window' },
        s('title', {}, `lazy window ${simTime(w.tOpen - t0)} → ${w.tClose === null ? 'still open' : simTime(w.tClose - t0)}: ${int(w.queued.length / 2)} IOVA range(s) queued, ${w.stale.length} stale access(es)`),
      ),
    );
  }
  for (const a of stale) {
    const x = X(a.t);
    strip.append(s('line', { x1: x, x2: x, y1: 2, y2: 38, class: 'stale-tick', 'data-testid': 'stale-access' }, s('title', {}, `stale IOTLB ${a.write ? 'write' : 'read'} by ${a.device} at IOVA ${hex(a.iova)}`)));
  }
  strip.append(s('text', { x: 0, y: 44, class: 'svg-muted' }, simTime(0)), s('text', { x: width - 4, y: 44, class: 'svg-muted', 'text-anchor': 'end' }, simTime(t1 - t0)));
  const lazy = d.type === 'lazy';
  const details = stale.slice(0, 6).map((a) => {
    const w = mine.find((x) => x.stale.includes(a));
    return h(
      'li',
      { 'data-testid': 'stale-detail' },
      h('strong', {}, `${a.device} ${a.write ? 'wrote' : 'read'} IOVA ${hex(a.iova)} → phys ${hex(a.phys)}`),
      ` at ${simTime(a.t - t0)} through a stale IOTLB entry: the PTE was already cleared`,
      w !== undefined ? `; window opened at ${simTime(w.tOpen - t0)} (queue_iova)${w.tClose !== null ? `, closed by flush_iotlb_all at ${simTime(w.tClose - t0)}` : ', still open'}` : '',
    );
  });
  const hits = tlb.hits;
  const misses = tlb.misses;
  mount(
    root,
    h(
      'div',
      { class: 'stats' },
      stat('valid entries', `${int(tlb.valid)} / ${int(tlb.entries)}`, 'tlb-valid', `${sets} sets × ${tlb.ways} ways`),
      stat('hits', int(hits), 'tlb-hits'),
      stat('misses', int(misses), 'tlb-misses'),
      stat('hit rate', hits + misses > 0 ? `${ratio(100 * hits, hits + misses, 1)} %` : '–'),
      stat('range invalidations', int(tlb.invalidationsRange), 'tlb-inv-range', 'iommu_iotlb_sync with a gathered range (strict unmaps)'),
      stat('full flushes', int(tlb.invalidationsFull), 'tlb-inv-full', 'flush_iotlb_all (the flush queue, lazy mode)'),
      stat('stale accesses', int(d.staleIotlbAccesses), 'tlb-stale'),
    ),
    h('div', { class: 'axis-caption' }, `entries: ${sets} sets (columns) × ${tlb.ways} ways (rows), filled = valid translation`),
    grid,
    h(
      'div',
      { class: 'axis-caption' },
      lazy ? 'lazy mode (flush queue): ' : 'strict mode: ',
      h('span', { class: 'key lazy-key' }),
      ' window from queue_iova to flush_iotlb_all ',
      h('span', { class: 'key stale-key' }),
      ' access through a stale entry',
    ),
    strip,
    lazy && mine.length === 0
      ? h(
          'p',
          { class: 'note', 'data-testid': 'lazy-none' },
          'Lazy domain, but no IOVA went through the flush queue in this run (no iommu:queue_iova): the two-step API’s dma_iova_unlink is always strict (kernel: __iommu_dma_iova_unlink syncs the IOTLB), so no window opened.',
        )
      : lazy
      ? h('p', { class: 'note', 'data-testid': 'lazy-summary' }, `${int(mine.length)} lazy window(s) in this domain; ${int(stale.length)} device access(es) reached an unmapped page through a stale entry.`)
      : h('p', { class: 'note', 'data-testid': 'strict-summary' }, 'Strict: every unmap invalidates the IOTLB range before the IOVA is freed, so there is no window in which a device can still reach an unmapped page.'),
    details.length > 0 ? h('ul', { class: 'stale-list' }, ...details) : null,
  );
  const cell = Math.max(3, Math.min(12, Math.floor((width - 4) / sets) - 1));
  const gw = sets * (cell + 1) + 2;
  const g = hiDpiCanvas(grid, Math.min(width, gw), tlb.ways * (cell + 1) + 2);
  for (let si = 0; si < sets; si++) {
    const used = perSet[si] ?? 0;
    for (let w = 0; w < tlb.ways; w++) {
      g.fillStyle = w < used ? '#f0b429' : '#1c2430';
      g.fillRect(1 + si * (cell + 1), 1 + w * (cell + 1), cell, cell);
    }
  }
}

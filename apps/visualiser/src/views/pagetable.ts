/**
 * Page table: the IO page table's levels (root first) with table pages and their occupancy, leaves
 * by size (4 KiB vs 2 MiB vs 1 GiB), and table pages allocated and freed over the run.
 */
import { h, mount, s } from '../dom.js';
import { bytes, int } from '../fmt.js';
import { empty, stat, widthOf } from './common.js';
import type { ViewContext } from './common.js';

function sparkline(values: readonly number[], width: number, height: number, label: string): SVGSVGElement {
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => `${values.length <= 1 ? 0 : (i / (values.length - 1)) * width},${height - (v / max) * (height - 4) - 2}`).join(' ');
  return s(
    'svg',
    { width, height: height + 14, class: 'spark', role: 'img', 'aria-label': label },
    s('polyline', { points: pts, fill: 'none', stroke: '#4aa3ff', 'stroke-width': 1.5 }),
    s('text', { x: 0, y: height + 12, class: 'svg-muted' }, `${label} · max ${int(max)}`),
  );
}

export function renderPageTable(root: HTMLElement, ctx: ViewContext): void {
  const { model, domain } = ctx;
  const snap = model.snapshotAt();
  const d = snap?.domains.find((x) => x.name === domain);
  if (snap === undefined) {
    mount(root, empty('Run a stack to see its IO page table.'));
    return;
  }
  if (d === undefined) {
    mount(root, empty('No IOMMU domain in this run (IOMMU off): no IO page table.'));
    return;
  }
  const pt = d.pt;
  const width = Math.min(widthOf(root) - 8, 720);
  const rowH = 30;
  const labelW = 150;
  const barW = width - labelW - 150;
  const maxTables = Math.max(1, ...pt.levels.map((l) => l.tables));
  const rows = pt.levels.map((l, i) => {
    const y = i * rowH + 4;
    const tw = Math.max(2, (l.tables / maxTables) * barW);
    const fill = l.tables > 0 ? l.entries / (l.tables * pt.entriesPerTable) : 0;
    return s(
      'g',
      { 'data-testid': `pt-level-${l.level}`, 'data-tables': l.tables, 'data-leaves': l.leaves },
      s('text', { x: 0, y: y + 18, class: 'svg-label' }, `L${l.level} · ${bytes(l.entrySize)}/entry`),
      s('rect', { x: labelW, y: y + 4, width: tw, height: 18, fill: '#223041', stroke: '#3b4d63' }),
      s('rect', { x: labelW, y: y + 4, width: Math.max(l.entries > 0 ? 1 : 0, tw * fill), height: 18, fill: l.leaves > 0 ? '#35d0a5' : '#4aa3ff' }),
      s('text', { x: labelW + barW + 8, y: y + 12, class: 'svg-value' }, `${int(l.tables)} table${l.tables === 1 ? '' : 's'}, ${int(l.entries)} PTEs`),
      s('text', { x: labelW + barW + 8, y: y + 25, class: 'svg-muted' }, l.leaves > 0 ? `${int(l.leaves)} × ${bytes(l.entrySize)} leaves` : `${(fill * 100).toFixed(1)}% full`),
    );
  });
  const leaf = (lvl: number): number => pt.levels.find((l) => l.level === lvl)?.leaves ?? 0;
  const series = model.snapshotsUpTo().map((x) => x.domains.find((y) => y.name === domain)?.pt.tablePagesLive ?? 0);
  mount(
    root,
    h(
      'div',
      { class: 'stats' },
      stat('table pages', int(pt.tablePagesLive), 'pt-tables-live', 'table pages live (4 KiB each), root included'),
      stat('peak', int(pt.tablePagesPeak), 'pt-tables-peak'),
      stat('table memory', bytes(pt.tablePagesLive * 4096)),
      stat('4 KiB leaves', int(leaf(0)), 'pt-leaves-4k'),
      stat('2 MiB leaves', int(leaf(1)), 'pt-leaves-2m'),
      stat('1 GiB leaves', int(leaf(2))),
    ),
    s('svg', { width, height: pt.levels.length * rowH + 8, class: 'pt-levels', role: 'img', 'aria-label': 'page-table levels' }, ...rows),
    h('div', { class: 'axis-caption' }, 'bar length: table pages at the level; fill: present entries / (tables × 512); green: level holds leaves'),
    sparkline(series, width, 46, 'table pages live over the run (allocated ↑, freed ↓)'),
  );
}

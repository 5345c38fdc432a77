/** The claims page: the SVG charts `pnpm bench` wrote, copied into the site at build time (charts/index.json). */
import { h, mount } from './dom.js';

interface ChartEntry {
  readonly id: string;
  readonly title: string;
  readonly file: string;
  readonly source: string;
}

function valid(x: unknown): x is ChartEntry {
  if (typeof x !== 'object' || x === null) return false;
  const r = x as Record<string, unknown>;
  return typeof r.id === 'string' && typeof r.title === 'string' && typeof r.file === 'string' && typeof r.source === 'string' && /^[\w.-]+\.svg$/.test(r.file);
}

function noCharts(root: HTMLElement, why: string): void {
  mount(
    root,
    h(
      'section',
      { class: 'panel', 'data-testid': 'no-charts' },
      h('h2', {}, 'No charts yet'),
      h('p', {}, why),
      h('p', {}, 'Run ', h('code', {}, 'pnpm bench'), ' (it writes tools/bench/results/charts/*.svg), then ', h('code', {}, 'pnpm build'), ' or restart ', h('code', {}, 'pnpm visualise'), '.'),
    ),
  );
  root.dataset.state = 'empty';
}

async function main(): Promise<void> {
  const root = document.getElementById('claims');
  if (root === null) return;
  let list: unknown;
  try {
    const res = await fetch('./charts/index.json');
    if (!res.ok) {
      noCharts(root, 'The site was built before any benchmark results existed.');
      return;
    }
    list = await res.json();
  } catch {
    noCharts(root, 'The charts index could not be read.');
    return;
  }
  const charts = Array.isArray(list) ? list.filter(valid) : [];
  if (charts.length === 0) {
    noCharts(root, 'The site was built before `pnpm bench` wrote any chart.');
    return;
  }
  mount(
    root,
    h('p', { class: 'note' }, `${charts.length} chart(s) from the last `, h('code', {}, 'pnpm bench'), ' run. Each names the published figure it is compared with.'),
    h(
      'div',
      { class: 'charts' },
      ...charts.map((c) =>
        h(
          'figure',
          { class: 'panel chart', id: `chart-${c.id}`, 'data-testid': 'chart' },
          h('h2', {}, c.title),
          h('img', { src: `./charts/${c.file}`, alt: c.title, loading: 'lazy' }),
          h('figcaption', {}, h('span', { class: 'muted' }, 'Source: '), c.source),
        ),
      ),
    ),
  );
  root.dataset.state = 'ready';
}

void main();

/**
 * IOVA space: the allocator's ranges over the aperture (allocated, rcache-held, reserved) and the
 * IOMMU mappings as they come and go (address × simulated time). The allocator works top-down
 * from the 32-bit boundary first for PCI devices, so the axis ends at 4 GiB when everything fits.
 */
import { h, hiDpiCanvas, mount } from '../dom.js';
import { bytes, hex, int, simTime } from '../fmt.js';
import { allocationSizes, mappings, sizeHistogram } from '../model.js';
import type { MappingInterval } from '../model.js';
import type { DomainSnapshot, Snapshot } from '../protocol.js';
import { empty, stat, widthOf } from './common.js';
import type { ViewContext } from './common.js';

const FOUR_G = 2 ** 32;
const COLORS = { alloc: '#4aa3ff', cached: '#f0b429', reserved: '#5c6675', live: '#35d0a5', freed: 'rgba(53,208,165,0.28)' };

interface Axis {
  lo: number;
  hi: number;
}

function axisFor(d: DomainSnapshot | undefined, ivs: readonly MappingInterval[]): Axis {
  let lo = Infinity;
  let hi = 0;
  if (d !== undefined) {
    const g = d.iova.granule;
    const r = d.iova.ranges;
    for (let i = 0; i + 2 < r.length; i += 3) {
      if (r[i + 2] === 2) continue;
      lo = Math.min(lo, (r[i] ?? 0) * g);
      hi = Math.max(hi, ((r[i + 1] ?? 0) + 1) * g);
    }
  }
  for (const m of ivs) {
    lo = Math.min(lo, m.iova);
    hi = Math.max(hi, m.iova + m.size);
  }
  if (!Number.isFinite(lo)) return { lo: FOUR_G - 2 ** 24, hi: FOUR_G };
  if (hi <= FOUR_G && hi > FOUR_G - 2 ** 30) hi = FOUR_G;
  const pad = Math.max(4096 * 16, (hi - lo) * 0.04);
  return { lo: Math.max(0, lo - pad), hi: hi === FOUR_G ? hi : hi + pad };
}

function drawStrip(canvas: HTMLCanvasElement, width: number, d: DomainSnapshot | undefined, ax: Axis): void {
  const H = 26;
  const ctx = hiDpiCanvas(canvas, width, H);
  ctx.fillStyle = '#141a22';
  ctx.fillRect(0, 0, width, H);
  if (d === undefined) return;
  const g = d.iova.granule;
  const r = d.iova.ranges;
  const x = (a: number): number => ((a - ax.lo) / (ax.hi - ax.lo)) * width;
  for (let i = 0; i + 2 < r.length; i += 3) {
    const k = r[i + 2];
    ctx.fillStyle = k === 0 ? COLORS.alloc : k === 1 ? COLORS.cached : COLORS.reserved;
    const x0 = x((r[i] ?? 0) * g);
    const x1 = x(((r[i + 1] ?? 0) + 1) * g);
    if (x1 < 0 || x0 > width) continue;
    ctx.fillRect(x0, 3, Math.max(1, x1 - x0), H - 6);
  }
}

function drawPlot(canvas: HTMLCanvasElement, width: number, height: number, ivs: readonly MappingInterval[], ax: Axis, t0: number, t1: number): void {
  const ctx = hiDpiCanvas(canvas, width, height);
  ctx.fillStyle = '#10151c';
  ctx.fillRect(0, 0, width, height);
  const x = (a: number): number => ((a - ax.lo) / (ax.hi - ax.lo)) * width;
  const span = Math.max(1, t1 - t0);
  const y = (t: number): number => ((t - t0) / span) * (height - 2) + 1;
  // 32-bit boundary and grid
  ctx.strokeStyle = '#2a3441';
  ctx.lineWidth = 1;
  for (let i = 1; i < 4; i++) {
    ctx.beginPath();
    ctx.moveTo(0, (height * i) / 4);
    ctx.lineTo(width, (height * i) / 4);
    ctx.stroke();
  }
  for (const m of ivs) {
    const x0 = x(m.iova);
    const w = Math.max(1, x(m.iova + m.size) - x0);
    const y0 = y(m.tMap);
    const y1 = m.tUnmap === null ? height : Math.min(height, y(m.tUnmap));
    ctx.fillStyle = m.tUnmap === null ? COLORS.live : COLORS.freed;
    ctx.fillRect(x0, y0, w, Math.max(1, y1 - y0));
  }
  if (ax.hi >= FOUR_G && ax.lo < FOUR_G) {
    const bx = x(FOUR_G) - 1;
    ctx.strokeStyle = '#ff6b6b';
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    ctx.moveTo(bx, 0);
    ctx.lineTo(bx, height);
    ctx.stroke();
    ctx.setLineDash([]);
  }
}

function pathLabel(mapping: string | undefined): string {
  return mapping === 'iova' ? 'two-step IOVA (dma_iova_*)' : mapping === 'legacy' ? 'legacy (dma_map_sg / dma_map_phys)' : (mapping ?? 'this run');
}

/** Size histogram of sampled allocations, titled with the allocator's exact allocation count. */
function histogram(title: string, sizes: readonly number[], allocs: number, testid: string): HTMLElement {
  const hist = sizeHistogram(sizes);
  const max = Math.max(1, ...hist.map((b) => b.count));
  const mean = sizes.length > 0 ? sizes.reduce((a, b) => a + b, 0) / sizes.length : 0;
  return h(
    'div',
    { class: 'hist', 'data-testid': testid, 'data-ranges': sizes.length, 'data-allocs': allocs, 'data-mean': mean.toFixed(3) },
    h('div', { class: 'hist-title' }, title, h('span', { class: 'muted' }, ` · ${int(allocs)} IOVA allocations, mean ${mean.toFixed(1)} pages`)),
    ...hist.map((b) =>
      h(
        'div',
        { class: 'hist-row' },
        h('span', { class: 'hist-label' }, b.label),
        h('span', { class: 'hist-bar' }, h('span', { style: `width:${(b.count / max) * 100}%` })),
        h('span', { class: 'hist-count' }, int(b.count)),
      ),
    ),
    h('div', { class: 'hist-foot muted' }, `IOVA pages (granules) per allocation (${int(sizes.length)} sampled at the snapshots)`),
  );
}

export function renderIova(root: HTMLElement, ctx: ViewContext): void {
  const { model, domain } = ctx;
  const n = model.visible;
  const snap: Snapshot | undefined = model.snapshotAt(n);
  const d = snap?.domains.find((x) => x.name === domain);
  if (snap === undefined) {
    mount(root, empty('Run a stack to see its IOVA space.'));
    return;
  }
  if (d === undefined) {
    mount(root, empty('No IOMMU domain in this run (IOMMU off: dma-direct hands out physical addresses, there is no IOVA space).'));
    return;
  }
  const all = mappings(model.events, n);
  const ivs = all.intervals.filter((m) => m.domain === domain);
  const live = all.live.get(domain ?? '')?.length ?? 0;
  const ax = axisFor(d, ivs);
  const width = widthOf(root) - 2;
  const strip = h('canvas', { class: 'iova-strip', 'data-testid': 'iova-strip' });
  const plot = h('canvas', { class: 'iova-plot', 'data-testid': 'iova-plot', 'data-mappings': ivs.length });
  // Time axis: the span of this domain's mappings (a lazy domain's last flush can come much later).
  const t0 = ivs[0]?.tMap ?? model.events[0]?.t ?? 0;
  let t1 = t0 + 1;
  for (const m of ivs) t1 = Math.max(t1, m.tUnmap ?? m.tMap);
  if (model.done === null || model.paused) t1 = Math.max(t1, model.events[n - 1]?.t ?? t1);
  const iv = d.iova;
  const treeAllocs = iv.allocs - iv.rcacheHits;
  const sizes = allocationSizes(model.snapshotsUpTo(n), d.name);
  const histos: HTMLElement[] = [histogram(pathLabel(ctx.mapping), sizes, iv.allocs, 'iova-hist-main')];
  if (model.compare !== null) {
    const cd = model.compare.snapshots.at(-1)?.domains.find((x) => x.name === d.name) ?? model.compare.snapshots.at(-1)?.domains[0];
    const cs = cd === undefined ? [] : allocationSizes(model.compare.snapshots, cd.name);
    histos.push(histogram(pathLabel(model.compare.mapping), cs, cd?.iova.allocs ?? 0, 'iova-hist-compare'));
  }
  mount(
    root,
    h(
      'div',
      { class: 'stats' },
      stat('mapped now', int(live), 'iova-live', 'IOMMU mappings live at the cursor (iommu:map minus iommu:unmap)'),
      stat('allocations', int(iv.allocs), 'iova-allocs'),
      stat('rcache hits', int(iv.rcacheHits), 'iova-rcache-hits', 'alloc_iova_fast served from the per-CPU magazines'),
      stat('tree allocs', int(treeAllocs), 'iova-tree-allocs', 'allocations that walked the rbtree (alloc_iova)'),
      stat('in tree', bytes(iv.allocatedGranules * iv.granule), undefined, 'granules held by tree nodes (allocated + rcache-held)'),
      stat('rcache-held', bytes(iv.cachedGranules * iv.granule)),
    ),
    h('div', { class: 'rc-bar', title: 'rcache hits vs tree allocations' }, h('span', { class: 'rc-hit', style: `flex:${iv.rcacheHits}` }), h('span', { class: 'rc-tree', style: `flex:${Math.max(0, treeAllocs)}` })),
    h('div', { class: 'axis-caption' }, 'allocator tree at the cursor ', h('span', { class: 'key', style: `background:${COLORS.alloc}` }), ' allocated ', h('span', { class: 'key', style: `background:${COLORS.cached}` }), ' rcache-held ', h('span', { class: 'key', style: `background:${COLORS.reserved}` }), ' reserved', iv.truncated ? ' (first ranges only)' : ''),
    strip,
    h('div', { class: 'axis-caption' }, 'IOMMU mappings over simulated time (top: start, bottom: cursor) ', h('span', { class: 'key', style: `background:${COLORS.live}` }), ' live ', h('span', { class: 'key', style: `background:#1f5e51` }), ' unmapped', h('span', { class: 'boundary-key' }, ' ┆ 4 GiB boundary')),
    plot,
    h('div', { class: 'axis' }, h('span', {}, hex(ax.lo)), h('span', { class: 'muted' }, `IOVA → (${bytes(ax.hi - ax.lo)} shown) · plot spans ${simTime(t1 - t0)} of simulated time`), h('span', {}, hex(ax.hi))),
    h('div', { class: 'histos' }, ...histos),
  );
  drawStrip(strip, width, d, ax);
  drawPlot(plot, width, 170, ivs, ax, t0, t1);
}

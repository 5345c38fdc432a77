/**
 * Timeline: trace events (kernel tracepoint names) on the simulated clock, one lane per device,
 * zoomable (wheel, buttons) and pannable (drag); hover shows the event. Lazy IOTLB windows are
 * shaded on their domain's lane. It also shows a trace file opened from disk.
 */
import { h, hiDpiCanvas, mount } from '../dom.js';
import { hex, int, simTime } from '../fmt.js';
import { lazyWindows } from '../model.js';
import type { WireEvent } from '../protocol.js';
import { widthOf } from './common.js';

const SYSTEM_COLORS: Record<string, string> = {
  dma: '#4aa3ff',
  iommu: '#f0b429',
  nvme: '#35d0a5',
  mlx5: '#b68cff',
  mlx5_vfio: '#ff8cc6',
  vfio: '#ff8cc6',
  swiotlb: '#ffd166',
};
const LANE_H = 22;
const LABEL_W = 200;
const AXIS_H = 22;

function colorOf(name: string): string {
  const sys = name.slice(0, Math.max(0, name.indexOf(':')));
  return SYSTEM_COLORS[sys] ?? '#9aa7b6';
}

export interface TimelineSource {
  readonly events: readonly WireEvent[];
  readonly upTo: number;
  readonly title: string;
}

export class TimelineView {
  readonly root: HTMLElement;
  #canvas = h('canvas', { class: 'timeline-canvas', 'data-testid': 'timeline-canvas' });
  #tip = h('div', { class: 'tip', hidden: true });
  #info = h('div', { class: 'timeline-info muted' });
  #legend = h('div', { class: 'legend' });
  /** Visible window in simulated ns; null = fit. */
  #view: { t0: number; t1: number } | null = null;
  #src: TimelineSource | null = null;
  #lanes: string[] = [];
  #range = { t0: 0, t1: 1 };
  #width = 600;
  #drag: { x: number; t0: number; t1: number } | null = null;

  constructor(root: HTMLElement) {
    this.root = root;
    const bar = h(
      'div',
      { class: 'timeline-bar' },
      h('button', { type: 'button', title: 'zoom in', 'data-testid': 'zoom-in', onclick: () => { this.zoom(0.5); } }, '+'),
      h('button', { type: 'button', title: 'zoom out', onclick: () => { this.zoom(2); } }, '−'),
      h('button', { type: 'button', title: 'show the whole run', onclick: () => { this.fit(); } }, 'fit'),
      this.#info,
    );
    mount(root, bar, h('div', { class: 'timeline-wrap' }, this.#canvas, this.#tip), this.#legend);
    this.#canvas.addEventListener('wheel', (ev) => {
      ev.preventDefault();
      this.zoom(ev.deltaY > 0 ? 1.25 : 0.8, ev.offsetX);
    });
    this.#canvas.addEventListener('mousedown', (ev) => {
      const v = this.#window();
      this.#drag = { x: ev.offsetX, t0: v.t0, t1: v.t1 };
    });
    globalThis.addEventListener('mouseup', () => (this.#drag = null));
    this.#canvas.addEventListener('mousemove', (ev) => {
      if (this.#drag !== null) {
        const d = this.#drag;
        const dt = ((ev.offsetX - d.x) / (this.#width - LABEL_W)) * (d.t1 - d.t0);
        this.#view = { t0: d.t0 - dt, t1: d.t1 - dt };
        this.draw();
        return;
      }
      this.#hover(ev.offsetX, ev.offsetY);
    });
    this.#canvas.addEventListener('mouseleave', () => (this.#tip.hidden = true));
  }

  get view(): { t0: number; t1: number } {
    return this.#window();
  }

  set(src: TimelineSource | null): void {
    if (src?.events !== this.#src?.events) this.#view = null;
    this.#src = src;
    this.draw();
  }

  fit(): void {
    this.#view = null;
    this.draw();
  }

  /** Zoom by `factor` around the x pixel `at` (default: the middle). */
  zoom(factor: number, at?: number): void {
    const v = this.#window();
    const px = at === undefined ? 0.5 : Math.min(1, Math.max(0, (at - LABEL_W) / (this.#width - LABEL_W)));
    const c = v.t0 + (v.t1 - v.t0) * px;
    const span = Math.max(10, (v.t1 - v.t0) * factor);
    this.#view = { t0: c - span * px, t1: c + span * (1 - px) };
    this.draw();
  }

  #window(): { t0: number; t1: number } {
    return this.#view ?? this.#range;
  }

  draw(): void {
    const src = this.#src;
    this.#width = widthOf(this.root) - 2;
    const lanes: string[] = [];
    const laneOf = new Map<string, number>();
    const counts = new Map<string, number>();
    let t0 = Infinity;
    let t1 = -Infinity;
    const n = src?.upTo ?? 0;
    for (let i = 0; i < n; i++) {
      const e = src?.events[i];
      if (e === undefined) break;
      if (!laneOf.has(e.d)) {
        laneOf.set(e.d, lanes.length);
        lanes.push(e.d);
      }
      const sys = e.n.slice(0, Math.max(0, e.n.indexOf(':')));
      counts.set(sys, (counts.get(sys) ?? 0) + 1);
      if (e.t < t0) t0 = e.t;
      if (e.t > t1) t1 = e.t;
    }
    if (!Number.isFinite(t0)) {
      t0 = 0;
      t1 = 1;
    }
    if (t1 <= t0) t1 = t0 + 1;
    this.#range = { t0, t1 };
    this.#lanes = lanes;
    const height = AXIS_H + Math.max(1, lanes.length) * LANE_H + 4;
    const g = hiDpiCanvas(this.#canvas, this.#width, height);
    this.#canvas.dataset.lanes = String(lanes.length);
    this.#canvas.dataset.events = String(n);
    g.fillStyle = '#10151c';
    g.fillRect(0, 0, this.#width, height);
    const v = this.#window();
    const plotW = this.#width - LABEL_W;
    const X = (t: number): number => LABEL_W + ((t - v.t0) / (v.t1 - v.t0)) * plotW;
    // axis ticks
    g.font = '11px ui-monospace, SFMono-Regular, Menlo, monospace';
    g.fillStyle = '#8b98a9';
    g.strokeStyle = '#232d3a';
    for (let k = 0; k <= 5; k++) {
      const t = v.t0 + ((v.t1 - v.t0) * k) / 5;
      const x = X(t);
      g.beginPath();
      g.moveTo(x, AXIS_H - 4);
      g.lineTo(x, height);
      g.stroke();
      g.textAlign = k === 0 ? 'left' : k === 5 ? 'right' : 'center';
      g.fillText(simTime(t - t0), x, 13);
    }
    g.textAlign = 'left';
    lanes.forEach((name, i) => {
      const y = AXIS_H + i * LANE_H;
      g.fillStyle = i % 2 === 0 ? '#131a23' : '#10151c';
      g.fillRect(LABEL_W, y, plotW, LANE_H);
      g.fillStyle = '#c9d4e0';
      g.fillText(name.length > 28 ? `${name.slice(0, 8)}…${name.slice(-19)}` : name, 6, y + 15);
    });
    if (src !== null) {
      // lazy windows on their domain's lane
      for (const w of lazyWindows(src.events, n).windows) {
        const lane = laneOf.get(w.domain);
        if (lane === undefined) continue;
        const x0 = Math.max(LABEL_W, X(w.tOpen));
        const x1 = Math.min(this.#width, X(w.tClose ?? t1));
        if (x1 < LABEL_W || x0 > this.#width) continue;
        g.fillStyle = w.stale.length > 0 ? 'rgba(255,107,107,0.35)' : 'rgba(240,180,41,0.18)';
        g.fillRect(x0, AXIS_H + lane * LANE_H + 1, Math.max(1, x1 - x0), LANE_H - 2);
      }
      for (let i = 0; i < n; i++) {
        const e = src.events[i];
        if (e === undefined) break;
        const x = X(e.t);
        if (x < LABEL_W || x > this.#width) continue;
        const lane = laneOf.get(e.d) ?? 0;
        g.fillStyle = e.n === 'iommu:stale_iotlb_access' || e.n === 'iommu:io_page_fault' ? '#ff6b6b' : colorOf(e.n);
        const big = e.n === 'iommu:stale_iotlb_access' || e.n === 'iommu:io_page_fault';
        g.fillRect(Math.floor(x), AXIS_H + lane * LANE_H + (big ? 2 : 5), big ? 3 : 1, big ? LANE_H - 4 : LANE_H - 10);
      }
    }
    this.#info.textContent = src === null ? 'no events' : `${src.title} · ${int(n)} events · ${lanes.length} lanes · window ${simTime(v.t1 - v.t0)} (wheel: zoom, drag: pan)`;
    mount(
      this.#legend,
      ...[...counts.entries()].sort((a, b) => b[1] - a[1]).map(([sys, c]) => h('span', { class: 'legend-item' }, h('span', { class: 'key', style: `background:${SYSTEM_COLORS[sys] ?? '#9aa7b6'}` }), ` ${sys || '(none)'} ${int(c)}`)),
    );
  }

  #hover(x: number, y: number): void {
    const src = this.#src;
    if (src === null || x < LABEL_W) {
      this.#tip.hidden = true;
      return;
    }
    const lane = Math.floor((y - AXIS_H) / LANE_H);
    const dev = this.#lanes[lane];
    if (dev === undefined) {
      this.#tip.hidden = true;
      return;
    }
    const v = this.#window();
    const t = v.t0 + ((x - LABEL_W) / (this.#width - LABEL_W)) * (v.t1 - v.t0);
    const tol = ((v.t1 - v.t0) / (this.#width - LABEL_W)) * 4;
    let best: WireEvent | undefined;
    let bd = Infinity;
    for (let i = 0; i < src.upTo; i++) {
      const e = src.events[i];
      if (e === undefined) break;
      if (e.d !== dev) continue;
      const d = Math.abs(e.t - t);
      if (d < bd) {
        bd = d;
        best = e;
      }
    }
    if (best === undefined || bd > tol) {
      this.#tip.hidden = true;
      return;
    }
    const fields = Object.entries(best.f)
      .slice(0, 8)
      .map(([k, val]) => `${k}=${typeof val === 'number' && /addr|iova|phys|va|prp|start|end/.test(k) ? hex(val) : Array.isArray(val) ? `[${val.length}]` : String(val)}`)
      .join(' ');
    this.#tip.textContent = `${best.n} · ${best.d} · ${simTime(best.t - this.#range.t0)}\n${fields}`;
    this.#tip.style.left = `${Math.min(x + 12, this.#width - 320)}px`;
    this.#tip.style.top = `${y + 12}px`;
    this.#tip.hidden = false;
  }
}

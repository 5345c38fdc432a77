/**
 * A small, dependency-free SVG chart writer for the claims report: line charts (linear or log
 * axes) and grouped bar charts, rendered as SVG text in Node (no DOM, no canvas). Sized for
 * 800x450 and styled like a paper figure: thin axes, light grid, a colour-blind-safe palette
 * (Okabe & Ito) with a distinct marker or hatch per series so it also reads in greyscale.
 *
 * Everything a chart shows comes from its spec; values that are not finite (or not positive on a
 * log axis) are dropped and never reach the output, so no NaN or Infinity is ever written.
 */

export type ScaleKind = 'linear' | 'log';

export interface LineSeries {
  readonly name: string;
  /** [x, y] in data units; non-finite points are skipped. */
  readonly points: readonly (readonly [number, number])[];
  /** Dashed line (e.g. for a modelled rather than a wall-clock series). */
  readonly dash?: boolean;
  /** Palette index (defaults to the series index). */
  readonly color?: number;
  /** Marker index (defaults to the series index). */
  readonly marker?: number;
}

export interface BarSeries {
  readonly name: string;
  /** One value per category; null (or non-finite) means "not measured" and draws no bar. */
  readonly values: readonly (number | null)[];
  /** Hatched fill (e.g. for published or derived reference figures). */
  readonly hatch?: boolean;
  readonly color?: number;
  /** Text above each bar; defaults to the formatted value. */
  readonly labels?: readonly (string | null)[];
}

export interface Annotation {
  readonly x: number;
  readonly y: number;
  readonly text: string;
  /** Text anchor relative to the point. Default 'start'. */
  readonly anchor?: 'start' | 'middle' | 'end';
  readonly dx?: number;
  readonly dy?: number;
}

interface ChartBase {
  readonly title: string;
  readonly yLabel: string;
  readonly yScale: ScaleKind;
  /** "Compared against: ..." or "measured in this run". */
  readonly source: string;
  /** The run the numbers come from (date, commit). */
  readonly run: string;
  /** Short lines printed under the axis (caveats, labels of derived figures). */
  readonly notes?: readonly string[];
  /** Extra accessible description prepended to the generated data summary. */
  readonly desc?: string;
}

export interface LineChart extends ChartBase {
  readonly kind: 'line';
  readonly xLabel: string;
  readonly xScale: ScaleKind;
  readonly series: readonly LineSeries[];
  /** Explicit x tick values (e.g. the sweep points); default: generated. */
  readonly xTicks?: readonly number[];
  readonly annotations?: readonly Annotation[];
  /** Lines of text in a boxed call-out at the plot's lower left (key numbers). */
  readonly callout?: readonly string[];
  /** Corner of the plot for the call-out. Default 'lower-left'. */
  readonly calloutAt?: 'lower-left' | 'upper-left' | 'lower-right' | 'upper-right';
}

export interface BarChart extends ChartBase {
  readonly kind: 'bar';
  readonly xLabel: string;
  /** Category labels; '\n' splits a label over two lines. */
  readonly categories: readonly string[];
  readonly series: readonly BarSeries[];
}

export type Chart = LineChart | BarChart;

export const WIDTH = 800;
export const HEIGHT = 450;

/** Okabe & Ito (2008) colour-blind-safe palette, yellow left out (too light on white). */
export const PALETTE: readonly string[] = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000'];

const FONT = "Helvetica, Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif";

// ---- text ---------------------------------------------------------------------------------------

/** Escape text for SVG/XML character data and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => {
    switch (c) {
      case '&':
        return '&amp;';
      case '<':
        return '&lt;';
      case '>':
        return '&gt;';
      case '"':
        return '&quot;';
      default:
        return '&#39;';
    }
  });
}

/** A number as SVG attribute text: finite, at most 2 decimals, no exponent. */
export function num(v: number): string {
  if (!Number.isFinite(v)) return '0';
  const r = Math.round(v * 100) / 100;
  return Object.is(r, -0) ? '0' : String(r);
}

/** Approximate rendered width of `s` at `size` px (Helvetica-like average advance). */
export function textWidth(s: string, size: number): number {
  let w = 0;
  for (const ch of s) w += /[il.,:;'|! ]/.test(ch) ? 0.27 : /[mwMW@]/.test(ch) ? 0.8 : /[A-Z0-9_]/.test(ch) ? 0.62 : 0.52;
  return w * size;
}

/** Greedy word wrap to `maxWidth` px. */
export function wrap(s: string, size: number, maxWidth: number): string[] {
  const words = s.split(/\s+/).filter((w) => w.length > 0);
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    const next = line === '' ? w : `${line} ${w}`;
    if (line !== '' && textWidth(next, size) > maxWidth) {
      lines.push(line);
      line = w;
    } else line = next;
  }
  if (line !== '') lines.push(line);
  return lines;
}

/** Tick text: integers below 10,000 in full (4096, not 4.1k) unless round thousands, else compact. */
export function formatTick(v: number): string {
  return Number.isInteger(v) && Math.abs(v) < 10_000 && v % 1000 !== 0 ? String(v) : formatNumber(v);
}

/** Compact value text: 1.5k, 20M, 0.25 (never an exponent; small values keep 2 significant digits). */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return '–';
  if (v === 0) return '0';
  const a = Math.abs(v);
  const units: [number, string][] = [
    [1e12, 'T'],
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k'],
  ];
  for (const [u, sfx] of units) if (a >= u) return `${trim((v / u).toPrecision(3))}${sfx}`;
  if (a >= 1) return trim(v.toPrecision(3));
  if (a >= 1e-3) return trim(v.toPrecision(2));
  // toPrecision would switch to an exponent here; fixed notation with two significant digits.
  return trim(v.toFixed(Math.min(100, 1 - Math.floor(Math.log10(a)))));
}

function trim(s: string): string {
  return s.includes('.') && !s.includes('e') ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
}

// ---- scales -------------------------------------------------------------------------------------

export interface Scale {
  readonly kind: ScaleKind;
  /** The (niced) domain actually drawn. */
  readonly domain: readonly [number, number];
  readonly range: readonly [number, number];
  /** Data value to pixel; values outside the domain are clamped, non-finite map to range[0]. */
  map(v: number): number;
  /** Major tick values, ascending, within the domain. */
  ticks(): number[];
  /** Minor tick values (log scales: 2..9 x 10^k), ascending. */
  minorTicks(): number[];
}

/** A 1-2-5 step giving about `count` intervals over `span`. */
export function niceStep(span: number, count: number): number {
  if (!(span > 0) || !Number.isFinite(span)) return 1;
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  const m = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
  return m * mag;
}

/** Finite domain with lo < hi; degenerate input gets a sensible default or padding. */
function sane(lo: number, hi: number, kind: ScaleKind): [number, number] {
  let a = lo;
  let b = hi;
  if (kind === 'log') {
    if (!(a > 0) || !Number.isFinite(a)) a = b > 0 && Number.isFinite(b) ? b / 10 : 1;
    if (!(b > 0) || !Number.isFinite(b)) b = a * 10;
    if (a > b) [a, b] = [b, a];
    if (a === b) return [a / 10, b * 10];
    return [a, b];
  }
  if (!Number.isFinite(a)) a = Number.isFinite(b) ? b - 1 : 0;
  if (!Number.isFinite(b)) b = a + 1;
  if (a > b) [a, b] = [b, a];
  // A span too small to divide into ticks (equal, or within rounding of each other): pad it.
  if (b - a <= Math.max(Math.abs(a), Math.abs(b)) * 1e-12 || b - a < 1e-250) {
    const c = a / 2 + b / 2;
    return Math.abs(c) < 1e-250 ? [a < 0 ? -1 : 0, 1] : [c - Math.abs(c) * 0.5, c + Math.abs(c) * 0.5];
  }
  return [a, b];
}

/**
 * A linear scale over [lo, hi] niced outward to whole tick steps (about `count` ticks);
 * `zero` forces 0 into the domain (bar charts).
 */
export function linearScale(lo: number, hi: number, range: readonly [number, number], opts: { count?: number; zero?: boolean; nice?: boolean } = {}): Scale {
  let [a, b] = sane(opts.zero === true ? Math.min(0, lo) : lo, opts.zero === true ? Math.max(0, hi) : hi, 'linear');
  const count = opts.count ?? 5;
  const step = niceStep(b - a, count);
  if (opts.nice !== false) {
    const lo0 = a;
    const hi0 = b;
    a = Math.floor(a / step) * step;
    b = Math.ceil(b / step) * step;
    // Rounding may land a hair inside the data; step outward (bounded).
    for (let k = 0; k < 2 && a > lo0; k++) a -= step;
    for (let k = 0; k < 2 && b < hi0; k++) b += step;
    if (a === b) b = a + step;
  }
  const [r0, r1] = range;
  const map = (v: number): number => {
    if (!Number.isFinite(v)) return r0;
    const c = Math.min(b, Math.max(a, v));
    return r0 + ((c - a) / (b - a)) * (r1 - r0);
  };
  const ticks = (): number[] => {
    const out: number[] = [];
    const first = Math.ceil(a / step - 1e-9);
    const last = Math.floor(b / step + 1e-9);
    for (let i = first; i <= last && out.length < 50; i++) out.push(Number((i * step).toPrecision(12)));
    return out;
  };
  return { kind: 'linear', domain: [a, b], range, map, ticks, minorTicks: () => [] };
}

/** The largest power of ten <= v (v > 0), robust to log10 rounding. */
function decadeAtOrBelow(v: number): number {
  let e = Math.floor(Math.log10(v));
  if (10 ** (e + 1) <= v) e++;
  if (10 ** e > v) e--;
  return 10 ** e;
}

/** The smallest power of ten >= v (v > 0). */
function decadeAtOrAbove(v: number): number {
  let e = Math.ceil(Math.log10(v));
  if (10 ** (e - 1) >= v) e--;
  if (10 ** e < v) e++;
  return 10 ** e;
}

/** A log10 scale over [lo, hi] widened to whole decades; non-positive input is ignored. */
export function logScale(lo: number, hi: number, range: readonly [number, number], opts: { nice?: boolean } = {}): Scale {
  let [a, b] = sane(lo, hi, 'log');
  if (opts.nice !== false) {
    a = decadeAtOrBelow(a);
    b = decadeAtOrAbove(b);
    if (a === b) b = a * 10;
  }
  const la = Math.log10(a);
  const lb = Math.log10(b);
  const [r0, r1] = range;
  const map = (v: number): number => {
    if (!(v > 0) || !Number.isFinite(v)) return r0;
    const c = Math.min(lb, Math.max(la, Math.log10(v)));
    return r0 + ((c - la) / (lb - la)) * (r1 - r0);
  };
  const decades = (): number[] => {
    const out: number[] = [];
    for (let e = Math.ceil(la - 1e-9); e <= Math.floor(lb + 1e-9) && out.length < 40; e++) out.push(Number((10 ** e).toPrecision(12)));
    return out;
  };
  const ticks = (): number[] => {
    const d = decades();
    if (d.length >= 2) return d;
    // Less than one decade: a linear set of ticks inside it.
    const l = linearScale(a, b, range, { nice: false, count: 4 });
    return l.ticks().filter((t) => t > 0);
  };
  const minorTicks = (): number[] => {
    const out: number[] = [];
    if (lb - la > 6) return out;
    for (let e = Math.floor(la); e < Math.ceil(lb); e++) {
      for (let m = 2; m <= 9; m++) {
        const v = m * 10 ** e;
        if (v > a && v < b) out.push(v);
      }
    }
    return out;
  };
  return { kind: 'log', domain: [a, b], range, map, ticks, minorTicks };
}

function makeScale(kind: ScaleKind, lo: number, hi: number, range: readonly [number, number], zero: boolean): Scale {
  return kind === 'log' ? logScale(lo, hi, range) : linearScale(lo, hi, range, { zero });
}

function extent(values: readonly number[], kind: ScaleKind): [number, number] {
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const v of values) {
    if (!Number.isFinite(v) || (kind === 'log' && v <= 0)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/** Drawable on a `kind` axis: finite, and positive on a log axis. */
function usable(v: number | null | undefined, kind: ScaleKind): boolean {
  return typeof v === 'number' && Number.isFinite(v) && (kind === 'linear' || v > 0);
}

// ---- drawing ------------------------------------------------------------------------------------

function markerPath(kind: number, x: number, y: number, r: number): string {
  switch (kind % 5) {
    case 0:
      return `M${num(x - r)},${num(y)}a${num(r)},${num(r)} 0 1,0 ${num(2 * r)},0a${num(r)},${num(r)} 0 1,0 ${num(-2 * r)},0Z`;
    case 1:
      return `M${num(x - r * 0.9)},${num(y - r * 0.9)}h${num(1.8 * r)}v${num(1.8 * r)}h${num(-1.8 * r)}Z`;
    case 2:
      return `M${num(x)},${num(y - r * 1.15)}L${num(x + r * 1.05)},${num(y + r * 0.8)}L${num(x - r * 1.05)},${num(y + r * 0.8)}Z`;
    case 3:
      return `M${num(x)},${num(y - r * 1.2)}L${num(x + r * 1.2)},${num(y)}L${num(x)},${num(y + r * 1.2)}L${num(x - r * 1.2)},${num(y)}Z`;
    default:
      return `M${num(x - r)},${num(y + r * 0.8)}L${num(x)},${num(y - r * 1.1)}L${num(x + r)},${num(y + r * 0.8)}`;
  }
}

function color(i: number): string {
  return PALETTE[((i % PALETTE.length) + PALETTE.length) % PALETTE.length] ?? '#000000';
}

function text(x: number, y: number, s: string, attrs: Record<string, string | number> = {}): string {
  const a = Object.entries(attrs)
    .map(([k, v]) => ` ${k}="${typeof v === 'number' ? num(v) : escapeXml(v)}"`)
    .join('');
  return `<text x="${num(x)}" y="${num(y)}"${a}>${escapeXml(s)}</text>`;
}

interface LegendItem {
  readonly name: string;
  readonly swatch: (x: number, y: number) => string;
}

/** Horizontal legend rows starting at (x, y), wrapped to `maxWidth`; returns svg and height. */
function legend(items: readonly LegendItem[], x: number, y: number, maxWidth: number): { svg: string; height: number } {
  const parts: string[] = [];
  let cx = x;
  let cy = y;
  const rowH = 18;
  for (const it of items) {
    const w = 30 + textWidth(it.name, 12) + 18;
    if (cx > x && cx + w > x + maxWidth) {
      cx = x;
      cy += rowH;
    }
    parts.push(it.swatch(cx, cy), text(cx + 30, cy + 4, it.name, { 'font-size': 12, fill: '#222' }));
    cx += w;
  }
  return { svg: `<g class="legend">${parts.join('')}</g>`, height: items.length === 0 ? 0 : cy - y + rowH };
}

interface Frame {
  readonly left: number;
  readonly right: number;
  readonly top: number;
  readonly bottom: number;
  readonly head: string;
  readonly foot: string;
}

/**
 * The parts every chart shares: background, title, legend (under the title), notes, source and
 * run line (at the bottom); returns the plot rectangle left for the data.
 */
function frame(c: Chart, items: readonly LegendItem[], xTickRows: number): Frame {
  const left = 84;
  const right = WIDTH - 28;
  const head: string[] = [`<rect x="0" y="0" width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`];
  const titleLines = wrap(c.title, 16, right - 16);
  let y = 24;
  for (const l of titleLines.slice(0, 2)) {
    head.push(text(16, y, l, { 'font-size': 16, 'font-weight': 'bold', fill: '#111' }));
    y += 20;
  }
  const lg = legend(items, left, y + 2, right - left);
  head.push(lg.svg);
  const top = y + lg.height + 12;

  // Bottom block, laid out from the bottom edge up: run line, source, notes, x label, tick labels.
  const foot: string[] = [];
  let by = HEIGHT - 8;
  foot.push(text(WIDTH - 12, by, c.run, { 'font-size': 10, fill: '#555', 'text-anchor': 'end' }));
  const sourceLines = wrap(c.source, 10.5, WIDTH - 40).slice(0, 3);
  const noteLines = (c.notes ?? []).flatMap((n) => wrap(n, 10.5, WIDTH - 40)).slice(0, 5);
  const block = [...noteLines.map((l) => ({ l, fill: '#333', italic: true })), ...sourceLines.map((l) => ({ l, fill: '#333', italic: false }))];
  by -= 14;
  for (let i = block.length - 1; i >= 0; i--) {
    const b = block[i];
    if (b === undefined) continue;
    foot.push(text(12, by, b.l, { 'font-size': 10.5, fill: b.fill, ...(b.italic ? { 'font-style': 'italic' } : {}) }));
    by -= 13;
  }
  const bottom = by - 14 - 18 - xTickRows * 13;
  return { left, right, top, bottom, head: head.join(''), foot: foot.join('') };
}

function svgDoc(c: Chart, id: string, body: string, summary: string): string {
  const tid = `${id}-title`;
  const did = `${id}-desc`;
  const desc = [c.desc ?? '', summary, `Source: ${c.source}.`, c.run].filter((s) => s !== '').join(' ');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-labelledby="${tid} ${did}" font-family="${escapeXml(FONT)}">`,
    `<title id="${tid}">${escapeXml(c.title)}</title>`,
    `<desc id="${did}">${escapeXml(desc)}</desc>`,
    '<defs>',
    ...PALETTE.map((col, i) => `<pattern id="${id}-hatch-${i}" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/><line x1="0" y1="0" x2="0" y2="6" stroke="${col}" stroke-width="2.2"/></pattern>`),
    '</defs>',
    body,
    '</svg>',
    '',
  ].join('\n');
}

function yAxis(c: Chart, ys: Scale, f: Frame): string {
  const parts: string[] = [];
  for (const t of ys.minorTicks()) parts.push(`<line x1="${num(f.left)}" x2="${num(f.right)}" y1="${num(ys.map(t))}" y2="${num(ys.map(t))}" stroke="#f0f0f0" stroke-width="0.8"/>`);
  for (const t of ys.ticks()) {
    const y = ys.map(t);
    parts.push(`<line x1="${num(f.left)}" x2="${num(f.right)}" y1="${num(y)}" y2="${num(y)}" stroke="#dddddd" stroke-width="0.8"/>`);
    parts.push(`<line x1="${num(f.left - 5)}" x2="${num(f.left)}" y1="${num(y)}" y2="${num(y)}" stroke="#222" stroke-width="1"/>`);
    parts.push(text(f.left - 8, y + 4, formatTick(t), { 'font-size': 11.5, fill: '#222', 'text-anchor': 'end' }));
  }
  const mid = (f.top + f.bottom) / 2;
  parts.push(text(20, mid, c.yLabel, { 'font-size': 12.5, fill: '#111', 'text-anchor': 'middle', transform: `rotate(-90 20 ${num(mid)})` }));
  parts.push(`<line x1="${num(f.left)}" x2="${num(f.left)}" y1="${num(f.top)}" y2="${num(f.bottom)}" stroke="#222" stroke-width="1.2"/>`);
  return `<g class="y-axis">${parts.join('')}</g>`;
}

function noData(f: Frame): string {
  return text((f.left + f.right) / 2, (f.top + f.bottom) / 2, 'no data in these results (run pnpm bench to measure it)', { 'font-size': 14, fill: '#888', 'text-anchor': 'middle' });
}

/** Render a line chart: one polyline + markers per series. */
export function renderLineChart(c: LineChart, id: string): string {
  const series = c.series.map((s) => ({ ...s, pts: s.points.filter(([x, y]) => usable(x, c.xScale) && usable(y, c.yScale)) }));
  const items: LegendItem[] = series.map((s, i) => {
    const col = color(s.color ?? i);
    const mk = s.marker ?? i;
    return {
      name: s.name,
      swatch: (x, y) =>
        `<line x1="${num(x)}" x2="${num(x + 24)}" y1="${num(y)}" y2="${num(y)}" stroke="${col}" stroke-width="2"${s.dash === true ? ' stroke-dasharray="6 3"' : ''}/><path d="${markerPath(mk, x + 12, y, 4)}" fill="${mk % 5 === 4 ? 'none' : col}" stroke="${col}" stroke-width="1.2"/>`,
    };
  });
  const f = frame(c, items, 1);
  const allX = series.flatMap((s) => s.pts.map(([x]) => x)).concat(c.xTicks ?? []);
  const allY = series.flatMap((s) => s.pts.map(([, y]) => y));
  const [x0, x1] = extent(allX, c.xScale);
  const [y0, y1] = extent(allY, c.yScale);
  // Explicit ticks (a sweep's points): the axis spans the data with a margin, not whole decades.
  const xs =
    c.xTicks !== undefined && c.xTicks.length > 0 && Number.isFinite(x0) && Number.isFinite(x1)
      ? c.xScale === 'log'
        ? logScale(x0, x1, [f.left + 18, f.right - 18], { nice: false })
        : linearScale(x0, x1, [f.left + 18, f.right - 18], { nice: false })
      : makeScale(c.xScale, x0, x1, [f.left + 10, f.right - 10], false);
  const ys = makeScale(c.yScale, y0, y1, [f.bottom, f.top], c.yScale === 'linear');
  const body: string[] = [f.head, yAxis(c, ys, f)];
  // x axis
  const xt = (c.xTicks ?? xs.ticks()).filter((t) => usable(t, c.xScale));
  const ax: string[] = [`<line x1="${num(f.left)}" x2="${num(f.right)}" y1="${num(f.bottom)}" y2="${num(f.bottom)}" stroke="#222" stroke-width="1.2"/>`];
  for (const t of xt) {
    const x = xs.map(t);
    ax.push(`<line x1="${num(x)}" x2="${num(x)}" y1="${num(f.bottom)}" y2="${num(f.bottom + 5)}" stroke="#222" stroke-width="1"/>`);
    ax.push(text(x, f.bottom + 18, formatTick(t), { 'font-size': 11.5, fill: '#222', 'text-anchor': 'middle' }));
  }
  ax.push(text((f.left + f.right) / 2, f.bottom + 36, c.xLabel, { 'font-size': 12.5, fill: '#111', 'text-anchor': 'middle' }));
  body.push(`<g class="x-axis">${ax.join('')}</g>`);
  const hasData = series.some((s) => s.pts.length > 0);
  if (!hasData) body.push(noData(f));
  series.forEach((s, i) => {
    if (s.pts.length === 0) return;
    const col = color(s.color ?? i);
    const mk = s.marker ?? i;
    const d = s.pts.map(([x, y], k) => `${k === 0 ? 'M' : 'L'}${num(xs.map(x))},${num(ys.map(y))}`).join('');
    const marks = s.pts.map(([x, y]) => `<path d="${markerPath(mk, xs.map(x), ys.map(y), 4)}" fill="${mk % 5 === 4 ? 'none' : col}" stroke="${col}" stroke-width="1.2"/>`).join('');
    body.push(`<g class="series"><path d="${d}" fill="none" stroke="${col}" stroke-width="2"${s.dash === true ? ' stroke-dasharray="6 3"' : ''} stroke-linejoin="round"/>${marks}</g>`);
  });
  for (const a of c.annotations ?? []) {
    if (!usable(a.x, c.xScale) || !usable(a.y, c.yScale)) continue;
    body.push(text(xs.map(a.x) + (a.dx ?? 6), ys.map(a.y) + (a.dy ?? -6), a.text, { 'font-size': 11, fill: '#333', 'text-anchor': a.anchor ?? 'start' }));
  }
  const callout = (c.callout ?? []).filter((l) => l !== '');
  if (callout.length > 0) {
    const w = Math.max(...callout.map((l) => textWidth(l, 11.5))) + 16;
    const h = callout.length * 15 + 8;
    const at = c.calloutAt ?? 'lower-left';
    const bx = at.endsWith('left') ? f.left + 10 : f.right - 10 - w;
    const by = at.startsWith('lower') ? f.bottom - 10 - h : f.top + 6;
    const lines = callout.map((l, k) => text(bx + 8, by + 16 + k * 15, l, { 'font-size': 11.5, fill: '#111' })).join('');
    body.push(`<g class="callout"><rect x="${num(bx)}" y="${num(by)}" width="${num(w)}" height="${num(h)}" fill="#ffffff" fill-opacity="0.92" stroke="#999999" stroke-width="0.8"/>${lines}</g>`);
  }
  body.push(f.foot);
  const summary = series.map((s) => `${s.name}: ${s.pts.length === 0 ? 'no data' : s.pts.map(([x, y]) => `${formatNumber(x)} → ${formatNumber(y)}`).join(', ')}.`).join(' ');
  return svgDoc(c, id, body.join('\n'), `${c.xLabel} against ${c.yLabel}. ${summary}`);
}

/** Render a grouped bar chart: one band per category, one bar per series inside it. */
export function renderBarChart(c: BarChart, id: string): string {
  const items: LegendItem[] = c.series.map((s, i) => {
    const ci = s.color ?? i;
    return {
      name: s.name,
      swatch: (x, y) => `<rect x="${num(x + 4)}" y="${num(y - 6)}" width="16" height="12" fill="${s.hatch === true ? `url(#${id}-hatch-${ci % PALETTE.length})` : color(ci)}" stroke="${color(ci)}" stroke-width="1.2"/>`,
    };
  });
  const rows = Math.max(1, ...c.categories.map((k) => k.split('\n').length));
  const f = frame(c, items, rows);
  const vals = c.series.flatMap((s) => s.values.filter((v): v is number => v !== null && usable(v, c.yScale)));
  const [y0, y1] = extent(vals, c.yScale);
  // Leave headroom above the tallest bar for its label.
  const ys = makeScale(c.yScale, y0, c.yScale === 'log' ? y1 * 1.6 : y1 * 1.08, [f.bottom, f.top], true);
  const body: string[] = [f.head, yAxis(c, ys, f)];
  const n = Math.max(1, c.categories.length);
  const band = (f.right - f.left) / n;
  const ns = Math.max(1, c.series.length);
  const barW = Math.min(56, (band * 0.78) / ns);
  const base = f.bottom;
  const ax: string[] = [`<line x1="${num(f.left)}" x2="${num(f.right)}" y1="${num(base)}" y2="${num(base)}" stroke="#222" stroke-width="1.2"/>`];
  c.categories.forEach((cat, k) => {
    const cx = f.left + band * (k + 0.5);
    cat.split('\n').forEach((line, r) => ax.push(text(cx, base + 17 + r * 13, line, { 'font-size': r === 0 ? 12 : 10.5, fill: r === 0 ? '#111' : '#444', 'text-anchor': 'middle' })));
  });
  ax.push(text((f.left + f.right) / 2, base + 19 + rows * 13, c.xLabel, { 'font-size': 12.5, fill: '#111', 'text-anchor': 'middle' }));
  body.push(`<g class="x-axis">${ax.join('')}</g>`);
  if (vals.length === 0 && !c.series.some((s) => s.values.some((v) => v === 0))) body.push(noData(f));
  c.series.forEach((s, i) => {
    const ci = s.color ?? i;
    const parts: string[] = [];
    c.categories.forEach((_, k) => {
      const v = s.values[k];
      const x = f.left + band * (k + 0.5) - (barW * ns) / 2 + barW * i;
      const label = s.labels?.[k];
      if (v !== null && v !== undefined && usable(v, c.yScale)) {
        const y = ys.map(v);
        const h = Math.max(0.5, base - y);
        parts.push(`<rect x="${num(x + 1)}" y="${num(base - h)}" width="${num(barW - 2)}" height="${num(h)}" fill="${s.hatch === true ? `url(#${id}-hatch-${ci % PALETTE.length})` : color(ci)}" stroke="${color(ci)}" stroke-width="1.2"/>`);
        parts.push(text(x + barW / 2, base - h - 4, label ?? formatNumber(v), { 'font-size': 10.5, fill: '#222', 'text-anchor': 'middle' }));
      } else if (v === 0 || typeof label === 'string') {
        // A zero (or a value a log axis cannot show): no bar, the value written on the baseline.
        parts.push(text(x + barW / 2, base - 4, typeof label === 'string' ? label : '0', { 'font-size': 10.5, fill: '#222', 'text-anchor': 'middle' }));
      }
    });
    body.push(`<g class="series">${parts.join('')}</g>`);
  });
  body.push(f.foot);
  const summary = c.series
    .map((s) => `${s.name}: ${c.categories.map((cat, k) => `${cat.replace(/\n/g, ' ')} ${usable(s.values[k], 'linear') ? formatNumber(s.values[k] ?? 0) : 'not measured'}`).join(', ')}.`)
    .join(' ');
  return svgDoc(c, id, body.join('\n'), `${c.yLabel} by ${c.xLabel}. ${summary}`);
}

/** Render any chart; `id` prefixes element ids (unique per document). */
export function renderChart(c: Chart, id: string): string {
  const safeId = id.replace(/[^A-Za-z0-9_-]/g, '-') || 'chart';
  return c.kind === 'line' ? renderLineChart(c, safeId) : renderBarChart(c, safeId);
}

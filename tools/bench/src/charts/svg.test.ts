import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { escapeXml, formatNumber, formatTick, HEIGHT, linearScale, logScale, niceStep, renderChart, WIDTH, wrap } from './svg.js';
import type { BarChart, LineChart } from './svg.js';
import { checkXml } from './xmlCheck.js';

const baseLine: LineChart = {
  kind: 'line',
  title: 'A line chart',
  xLabel: 'pages (log scale)',
  yLabel: 'ns per page',
  xScale: 'log',
  yScale: 'log',
  series: [
    { name: 'a', points: [[1, 700], [8, 170], [64, 90], [512, 100], [4096, 70]] },
    { name: 'b', points: [[1, 2200], [8, 2100], [64, 2100], [512, 2100], [4096, 2100]], dash: true },
  ],
  source: 'Measured in this run.',
  run: 'run 2026-01-01, commit abc',
};

const baseBar: BarChart = {
  kind: 'bar',
  title: 'A bar chart',
  xLabel: 'IOMMU mode',
  yLabel: 'IOPS',
  yScale: 'linear',
  categories: ['strict', 'lazy', 'off\nsecond line'],
  series: [
    { name: 'simulated', values: [425_000, 2_760_000, 3_820_000] },
    { name: 'published', values: [570_000, 1_930_000, 5_010_000], hatch: true },
  ],
  source: 'Published figures: somewhere.',
  run: 'run 2026-01-01, commit abc',
};

function numbersIn(svg: string, attr: string): number[] {
  return [...svg.matchAll(new RegExp(`\\s${attr}="(-?[\\d.]+)"`, 'g'))].map((m) => Number(m[1]));
}

describe('escaping and text', () => {
  it('escapes the five XML specials', () => {
    expect(escapeXml(`a<b>&"c"'d'`)).toBe('a&lt;b&gt;&amp;&quot;c&quot;&#39;d&#39;');
  });

  it('chart text with markup characters is escaped everywhere it appears', () => {
    const nasty = 'x < y && "z" > \'w\' </svg><script>';
    const svg = renderChart(
      { ...baseBar, title: nasty, yLabel: nasty, xLabel: nasty, source: nasty, run: nasty, notes: [nasty], categories: [nasty, 'b', 'c'], series: [{ name: nasty, values: [1, 2, 3] }] },
      'x',
    );
    expect(svg).not.toContain('<script>');
    expect(svg).not.toContain(nasty);
    expect(svg).toContain('x &lt; y &amp;&amp; &quot;z&quot; &gt;');
    checkXml(svg);
  });

  it('wraps on word boundaries within the width', () => {
    const lines = wrap('one two three four five six seven eight nine ten', 12, 80);
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.join(' ')).toBe('one two three four five six seven eight nine ten');
  });

  it('formats numbers compactly and never as NaN or an exponent', () => {
    expect(formatNumber(4096)).toBe('4.1k');
    expect(formatTick(4096)).toBe('4096');
    expect(formatTick(1000)).toBe('1k');
    expect(formatNumber(5_010_000)).toBe('5.01M');
    expect(formatNumber(0.015625)).toBe('0.016');
    expect(formatNumber(0)).toBe('0');
    expect(formatNumber(Number.NaN)).toBe('–');
    expect(formatNumber(1e-7)).not.toMatch(/e/);
  });
});

describe('scales', () => {
  const finite = fc.double({ min: -1e12, max: 1e12, noNaN: true, noDefaultInfinity: true });
  const positive = fc.double({ min: 1e-6, max: 1e12, noNaN: true, noDefaultInfinity: true });

  it('linear: monotonic, covers the data, ticks ascending inside the domain', () => {
    fc.assert(
      fc.property(finite, finite, fc.boolean(), (a, b, zero) => {
        const lo = Math.min(a, b);
        const hi = Math.max(a, b);
        const s = linearScale(lo, hi, [0, 500], { zero });
        expect(s.domain[0]).toBeLessThan(s.domain[1]);
        expect(s.domain[0]).toBeLessThanOrEqual(lo);
        expect(s.domain[1]).toBeGreaterThanOrEqual(hi);
        expect(s.map(lo)).toBeLessThanOrEqual(s.map(hi));
        const t = s.ticks();
        expect(t.length).toBeGreaterThanOrEqual(2);
        expect(t.length).toBeLessThanOrEqual(50);
        for (let i = 1; i < t.length; i++) {
          expect(t[i]).toBeGreaterThan(t[i - 1] ?? 0);
          expect(s.map(t[i] ?? 0)).toBeGreaterThan(s.map(t[i - 1] ?? 0));
        }
        for (const x of t) {
          expect(x).toBeGreaterThanOrEqual(s.domain[0] - Math.abs(s.domain[0]) * 1e-9);
          expect(x).toBeLessThanOrEqual(s.domain[1] + Math.abs(s.domain[1]) * 1e-9);
        }
      }),
    );
  });

  it('log: monotonic, decade ticks are powers of ten, inverted ranges stay monotonic', () => {
    fc.assert(
      fc.property(positive, positive, (a, b) => {
        const lo = Math.min(a, b);
        const hi = Math.max(a, b);
        const s = logScale(lo, hi, [400, 0]); // a y axis: pixels grow downwards
        expect(s.domain[0]).toBeLessThanOrEqual(lo);
        expect(s.domain[1]).toBeGreaterThanOrEqual(hi);
        expect(s.map(lo)).toBeGreaterThanOrEqual(s.map(hi));
        const t = s.ticks();
        expect(t.length).toBeGreaterThanOrEqual(2);
        for (let i = 1; i < t.length; i++) expect(s.map(t[i] ?? 0)).toBeLessThan(s.map(t[i - 1] ?? 0));
        for (const x of t) expect(Math.abs(Math.log10(x) - Math.round(Math.log10(x)))).toBeLessThan(1e-9);
      }),
    );
  });

  it('nice steps are 1, 2, 2.5 or 5 times a power of ten', () => {
    fc.assert(
      fc.property(fc.double({ min: 1e-6, max: 1e12, noNaN: true }), fc.integer({ min: 1, max: 10 }), (span, n) => {
        const st = niceStep(span, n);
        const m = st / 10 ** Math.floor(Math.log10(st) + 1e-12);
        expect([1, 2, 2.5, 5, 10].some((k) => Math.abs(m - k) < 1e-9)).toBe(true);
      }),
    );
  });

  it('degenerate domains get a usable range', () => {
    for (const [lo, hi] of [
      [5, 5],
      [0, 0],
      [Number.NaN, Number.NaN],
      [Number.POSITIVE_INFINITY, 3],
    ] as const) {
      const s = linearScale(lo, hi, [0, 100]);
      expect(Number.isFinite(s.domain[0]) && Number.isFinite(s.domain[1])).toBe(true);
      expect(s.domain[0]).toBeLessThan(s.domain[1]);
      expect(Number.isFinite(s.map(lo))).toBe(true);
    }
    for (const [lo, hi] of [
      [7, 7],
      [0, -1],
      [-5, 100],
      [Number.NaN, 1],
    ] as const) {
      const s = logScale(lo, hi, [0, 100]);
      expect(s.domain[0]).toBeGreaterThan(0);
      expect(s.domain[0]).toBeLessThan(s.domain[1]);
      expect(Number.isFinite(s.map(lo))).toBe(true);
    }
  });
});

describe('rendered charts', () => {
  it('a line chart is well-formed SVG at 800x450 with title, desc, axes, ticks and a legend', () => {
    const svg = renderChart({ ...baseLine, xTicks: [1, 8, 64, 512, 4096], callout: ['At 4096 pages: 3.8×'] }, 'two-step');
    const names = checkXml(svg);
    expect(names[0]).toBe('svg');
    expect(names[1]).toBe('title');
    expect(names[2]).toBe('desc');
    expect(svg).toContain(`viewBox="0 0 ${WIDTH} ${HEIGHT}"`);
    expect(svg).toMatch(/aria-labelledby="two-step-title two-step-desc"/);
    expect(svg).toContain('>A line chart</title>');
    // x ticks at the sweep points, y ticks at decades
    for (const t of ['1', '8', '64', '512', '4096']) expect(svg).toContain(`text-anchor="middle">${t}</text>`);
    for (const t of ['100', '1k']) expect(svg).toContain(`text-anchor="end">${t}</text>`);
    expect(svg).toContain('>a</text>'); // legend
    expect(svg).toContain('stroke-dasharray="6 3"');
    expect(svg).toContain('At 4096 pages: 3.8×');
    expect(svg).not.toMatch(/NaN|Infinity|undefined/);
    // every coordinate inside the canvas
    for (const x of numbersIn(svg, 'x')) {
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThanOrEqual(WIDTH);
    }
    for (const y of numbersIn(svg, 'y')) {
      expect(y).toBeGreaterThanOrEqual(0);
      expect(y).toBeLessThanOrEqual(HEIGHT);
    }
  });

  it('a series drawn left to right keeps its x order (x scale increasing)', () => {
    const svg = renderChart({ ...baseLine, series: [{ name: 'a', points: [[1, 1], [10, 2], [100, 3], [1000, 4]] }] }, 'c');
    const d = /<path d="(M[^"]+)" fill="none"/.exec(svg)?.[1] ?? '';
    const xs = [...d.matchAll(/[ML](-?[\d.]+),(-?[\d.]+)/g)].map((m) => Number(m[1]));
    const ys = [...d.matchAll(/[ML](-?[\d.]+),(-?[\d.]+)/g)].map((m) => Number(m[2]));
    expect(xs).toHaveLength(4);
    for (let i = 1; i < xs.length; i++) {
      expect(xs[i]).toBeGreaterThan(xs[i - 1] ?? 0);
      expect(ys[i]).toBeLessThan(ys[i - 1] ?? 0); // larger values higher up
    }
  });

  it('drops only the unusable points of a series', () => {
    const svg = renderChart({ ...baseLine, series: [{ name: 'mixed', points: [[1, 10], [Number.NaN, 5], [10, 0], [100, 30], [1000, Number.POSITIVE_INFINITY]] }] }, 'm');
    const d = /<path d="(M[^"]+)" fill="none"/.exec(svg)?.[1] ?? '';
    expect([...d.matchAll(/[ML]/g)]).toHaveLength(2);
  });

  it('a bar chart is well-formed, hatches reference series, labels values and splits category lines', () => {
    const svg = renderChart(baseBar, 'iops');
    checkXml(svg);
    expect(svg).toContain('url(#iops-hatch-1)');
    expect(svg).toContain('<pattern id="iops-hatch-1"');
    for (const v of ['425k', '2.76M', '5.01M']) expect(svg).toContain(`>${v}</text>`);
    expect(svg).toContain('>second line</text>');
    // bar heights grow with the value
    const heights = numbersIn(svg, 'height').filter((h) => h !== HEIGHT && h !== 6 && h !== 12);
    expect(heights.length).toBeGreaterThanOrEqual(6);
    expect(svg).not.toMatch(/NaN|Infinity|undefined/);
  });

  it('empty, single-point, all-zero and non-finite data render without NaN', () => {
    const cases = [
      renderChart({ ...baseLine, series: [] }, 'e1'),
      renderChart({ ...baseLine, series: [{ name: 'one', points: [[8, 100]] }] }, 'e2'),
      renderChart({ ...baseLine, series: [{ name: 'bad', points: [[Number.NaN, 1], [1, Number.POSITIVE_INFINITY], [0, 5], [-3, -3]] }] }, 'e3'),
      renderChart({ ...baseLine, xScale: 'linear', yScale: 'linear', series: [{ name: 'flat', points: [[1, 0], [2, 0]] }] }, 'e4'),
      renderChart({ ...baseLine, xTicks: [], series: [{ name: 'same', points: [[5, 5], [5, 5]] }] }, 'e5'),
      renderChart({ ...baseBar, categories: [], series: [] }, 'e6'),
      renderChart({ ...baseBar, series: [{ name: 'zeros', values: [0, 0, 0] }] }, 'e7'),
      renderChart({ ...baseBar, yScale: 'log', series: [{ name: 'zero-on-log', values: [0, null, 3] }] }, 'e8'),
      renderChart({ ...baseBar, series: [{ name: 'missing', values: [null, Number.NaN, Number.NEGATIVE_INFINITY] }] }, 'e9'),
    ];
    for (const svg of cases) {
      checkXml(svg);
      expect(svg).not.toMatch(/NaN|Infinity|undefined/);
    }
    expect(cases[0]).toContain('no data in these results');
    // points a log axis cannot show are dropped, not drawn at the edge
    expect(cases[2]).toContain('no data in these results');
    expect(cases[2]).not.toContain('class="series"');
    expect(cases[8]).toContain('no data in these results');
    // a zero on a log axis draws no bar but is written on the baseline
    expect(cases[7]).toContain('>0</text>');
    expect(cases[6]).not.toContain('no data in these results');
  });

  it('ids are sanitised so element ids and url() references stay valid', () => {
    const svg = renderChart(baseBar, 'a b/"c"');
    checkXml(svg);
    expect(svg).toContain('id="a-b--c--title"');
  });
});

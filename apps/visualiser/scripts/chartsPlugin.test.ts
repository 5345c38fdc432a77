import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseChartIndex, readCharts } from './chartsPlugin.js';

describe('bench charts for the claims page', () => {
  it('keeps valid index entries only (no path tricks in file names)', () => {
    const text = JSON.stringify([
      { id: 'a', title: 'A', file: 'a.svg', source: 'paper A, fig. 3' },
      { id: 'b', title: 'B', file: '../secret.svg', source: 's' },
      { id: 'c', title: 'C', file: 'c.png', source: 's' },
      { id: 'd', title: 'D', file: 'd.svg' },
      7,
    ]);
    expect(parseChartIndex(text)).toEqual([{ id: 'a', title: 'A', file: 'a.svg', source: 'paper A, fig. 3' }]);
    expect(parseChartIndex('{')).toEqual([]);
    expect(parseChartIndex('{"a":1}')).toEqual([]);
  });

  it('reads the charts that exist; no index means no charts', () => {
    const dir = mkdtempSync(join(tmpdir(), 'charts-'));
    expect(readCharts(dir)).toBeUndefined();
    writeFileSync(join(dir, 'index.json'), JSON.stringify([{ id: 'a', title: 'A', file: 'a.svg', source: 'S' }, { id: 'm', title: 'M', file: 'missing.svg', source: 'S' }]));
    writeFileSync(join(dir, 'a.svg'), '<svg/>');
    const r = readCharts(dir);
    expect(r?.index.map((e) => e.id)).toEqual(['a']);
    expect(r?.files.get('a.svg')).toBe('<svg/>');
  });
});

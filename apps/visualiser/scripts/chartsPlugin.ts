/**
 * Vite plugin: the claims page shows the SVG charts `pnpm bench` writes to
 * tools/bench/results/charts (index.json = [{ id, title, file, source }]). In dev they are served
 * from there; `vite build` copies them into dist/charts. No charts yet: an empty index, and the
 * page says to run `pnpm bench`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Plugin } from 'vite';

export interface ChartEntry {
  readonly id: string;
  readonly title: string;
  readonly file: string;
  readonly source: string;
}

const SAFE_FILE = /^[\w.-]+\.svg$/;

/** The valid entries of a charts index (anything else is dropped). */
export function parseChartIndex(text: string): ChartEntry[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return [];
  }
  if (!Array.isArray(raw)) return [];
  const out: ChartEntry[] = [];
  for (const e of raw as unknown[]) {
    if (typeof e !== 'object' || e === null) continue;
    const { id, title, file, source } = e as Record<string, unknown>;
    if (typeof id === 'string' && typeof title === 'string' && typeof file === 'string' && typeof source === 'string' && SAFE_FILE.test(file)) {
      out.push({ id, title, file, source });
    }
  }
  return out;
}

/** Read the index and the files it names that exist; undefined when there is no index. */
export function readCharts(dir: string): { index: ChartEntry[]; files: Map<string, string> } | undefined {
  const indexPath = join(dir, 'index.json');
  if (!existsSync(indexPath)) return undefined;
  const index = parseChartIndex(readFileSync(indexPath, 'utf8')).filter((e) => existsSync(join(dir, e.file)));
  const files = new Map<string, string>();
  for (const e of index) files.set(e.file, readFileSync(join(dir, e.file), 'utf8'));
  return { index, files };
}

export function benchChartsPlugin(dir: string): Plugin {
  return {
    name: 'dmakit-bench-charts',
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        const m = /^\/charts\/([^/?#]+)/.exec(req.url ?? '');
        if (m === null) {
          next();
          return;
        }
        const charts = readCharts(dir);
        const name = decodeURIComponent(m[1] ?? '');
        if (name === 'index.json') {
          res.setHeader('Content-Type', 'application/json');
          res.end(JSON.stringify(charts?.index ?? []));
          return;
        }
        const svg = charts?.files.get(name);
        if (svg === undefined) {
          res.statusCode = 404;
          res.end('not found');
          return;
        }
        res.setHeader('Content-Type', 'image/svg+xml');
        res.end(svg);
      });
    },
    generateBundle() {
      const charts = readCharts(dir);
      this.emitFile({ type: 'asset', fileName: 'charts/index.json', source: JSON.stringify(charts?.index ?? [], null, 2) });
      for (const [file, svg] of charts?.files ?? []) this.emitFile({ type: 'asset', fileName: `charts/${file}`, source: svg });
    },
  };
}

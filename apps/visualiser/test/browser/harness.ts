/**
 * Browser-test harness: a tiny static server for dist/ on 127.0.0.1 (random port) and Debian's
 * chromium driven by playwright-core (Playwright's own browser download cannot work here).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';

export const APP_DIR = fileURLToPath(new URL('../../', import.meta.url));
export const DIST = join(APP_DIR, 'dist');
export const ARTIFACTS = join(APP_DIR, 'test-results');
export const REPO = resolve(APP_DIR, '../..');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

export interface StaticServer {
  readonly url: string;
  close(): Promise<void>;
}

/** Serve `root` (no COOP/COEP headers: the site must not need them). */
export async function serveStatic(root = DIST): Promise<StaticServer> {
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = normalize(join(root, path.endsWith('/') ? `${path}index.html` : path));
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    readFile(file).then(
      (body) => res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body),
      () => res.writeHead(404).end('not found'),
    );
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => { ok(); });
      }),
  };
}

/** Debian's chromium (or CHROMIUM_PATH). */
export function chromiumPath(): string {
  const p = process.env.CHROMIUM_PATH ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((x) => existsSync(x));
  if (p === undefined || !existsSync(p)) throw new Error('chromium not found: apt-get install -y chromium (or set CHROMIUM_PATH)');
  return p;
}

export async function launch(): Promise<Browser> {
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'] });
}

export interface PageProblems {
  readonly errors: string[];
}

/** Collect console errors and uncaught exceptions of a page. */
export function watchProblems(page: Page): PageProblems {
  const errors: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console.error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  return { errors };
}

export interface RunOptions {
  readonly stack: string;
  readonly iommu?: string;
  readonly mapping?: string;
  readonly seed?: string;
  readonly size?: string;
  readonly compare?: boolean;
}

/** Set the controls and press Run; wait for the run to finish (status data-state=done). */
export async function runInPage(page: Page, o: RunOptions, timeout = 30_000): Promise<{ wallMs: number; runMs: number; mapping: string; size: number | undefined; cliArgs: readonly string[]; events: number }> {
  await page.selectOption('[data-testid=stack]', o.stack);
  if (o.iommu !== undefined) await page.selectOption('[data-testid=iommu]', o.iommu);
  if (o.mapping !== undefined) await page.selectOption('[data-testid=mapping]', o.mapping);
  if (o.seed !== undefined) await page.fill('[data-testid=seed]', o.seed);
  if (o.size !== undefined) await page.fill('[data-testid=size]', o.size);
  if (o.compare !== undefined) await page.setChecked('[data-testid=compare]', o.compare);
  const before = await page.evaluate(() => window.__dmakitRuns?.length ?? 0);
  await page.click('[data-testid=run]');
  await page.waitForFunction((n) => (window.__dmakitRuns?.length ?? 0) > n, before, { timeout });
  const last = await page.evaluate(() => window.__dmakitRuns?.at(-1));
  if (last === undefined) throw new Error('no run recorded');
  // let the final render land
  await page.waitForFunction(() => document.querySelector('#result-json') !== null, undefined, { timeout: 5000 });
  return { wallMs: last.wallMs, runMs: last.runMs, mapping: last.mapping, size: last.size, cliArgs: last.cliArgs, events: last.events };
}

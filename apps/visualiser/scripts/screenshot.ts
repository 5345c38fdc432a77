/**
 * The README's screenshot: the built site (vite build first) after an NVMe run behind a lazy IOMMU,
 * written to docs/visualiser.png. Usage: pnpm --filter @dmakit/visualiser screenshot [out.png]
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, launch, runInPage, serveStatic, watchProblems } from '../test/browser/harness.js';

const out = process.argv[2] ?? join(REPO, 'docs/visualiser.png');
const server = await serveStatic();
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1360, height: 1240 }, deviceScaleFactor: 1 });
  const problems = watchProblems(page);
  await page.goto(server.url);
  await page.waitForSelector('#app[data-state=ready]');
  await runInPage(page, { stack: 'nvme', iommu: 'lazy', seed: '1', size: '300' }, 60_000);
  // Move the views' cursor to mid-run, so the page table, IOTLB and IOVA views show live state rather than the drained end.
  await page.$eval('[data-testid=scrub]', (el) => {
    const r = el as HTMLInputElement;
    r.value = String(Math.round(Number(r.max) * 0.55));
    r.dispatchEvent(new Event('input'));
  });
  await page.click('[data-testid=step-io]');
  await page.waitForTimeout(400);
  await page.screenshot({ path: out, clip: { x: 0, y: 0, width: 1360, height: 1240 } });
  if (problems.errors.length > 0) throw new Error(problems.errors.join('\n'));
  console.log(`${out}: ${Math.round(statSync(out).size / 1024)} KiB`);
} finally {
  await browser.close();
  await server.close();
}

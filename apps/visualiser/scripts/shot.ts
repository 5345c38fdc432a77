/** Dev helper: screenshot the built site after a run (node --import tsx scripts/shot.ts <stack> <iommu> <out.png>). */
import { launch, runInPage, serveStatic, watchProblems } from '../test/browser/harness.js';

const [stack = 'nvme', iommu = 'lazy', out = 'test-results/shot.png', size] = process.argv.slice(2);
const server = await serveStatic();
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  const p = watchProblems(page);
  await page.goto(server.url);
  await page.waitForSelector('#app[data-state=ready]');
  const t = await runInPage(page, { stack, iommu, ...(size !== undefined ? { size } : {}) }, 60_000);
  await page.waitForTimeout(300);
  await page.screenshot({ path: out, fullPage: true });
  console.log(JSON.stringify({ ...t, problems: p.errors }));
} finally {
  await browser.close();
  await server.close();
}

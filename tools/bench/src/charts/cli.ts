/**
 * `pnpm --filter @dmakit/bench charts [resultsDir]`: regenerate results/charts/ from the JSON
 * results already on disk, without running any benchmark.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { resultsDir } from '../harness.js';
import { loadResults, writeCharts } from './report.js';

const dir = process.argv[2] === undefined ? resultsDir : resolve(process.argv[2]);
if (!existsSync(dir)) {
  process.stderr.write(`charts: no results directory at ${dir}; run \`pnpm bench\` first\n`);
  process.exit(1);
}
const { results, skipped } = loadResults(dir);
for (const s of skipped) process.stderr.write(`charts: skipped ${s.file}: ${s.reason}\n`);
if (results.length === 0) {
  process.stderr.write(`charts: no suite results in ${dir}; run \`pnpm bench\` first\n`);
  process.exit(1);
}
const index = writeCharts(results, join(dir, 'charts'));
process.stdout.write(`charts: ${index.length} charts from ${results.length} suite results written to ${join(dir, 'charts')}\n`);

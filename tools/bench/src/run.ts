/** `pnpm bench`: runs every suite, writes tools/bench/results/*.json + *.md, prints the summary. */
import { runBlkRqDmaBenches } from './blkRqDma.bench.js';
import { runDmabufBenches } from './dmabuf.bench.js';
import { runDmaCoreBenches } from './dmaCore.bench.js';
import { runHmmBenches } from './hmm.bench.js';
import { runIommuDmaBenches } from './iommuDma.bench.js';
import { runNvmeBenches } from './nvme.bench.js';
import { runRdmaOdpBenches } from './rdmaOdp.bench.js';
import { runVfioMlx5Benches } from './vfioMlx5.bench.js';
import { writeSuite, writeSummary } from './harness.js';
import type { SuiteResult } from './harness.js';

const only = process.argv.slice(2);
const suites: [string, () => SuiteResult[]][] = [
  ['dma-core', runDmaCoreBenches],
  ['iommu-dma', runIommuDmaBenches],
  ['block-rq-dma', runBlkRqDmaBenches],
  ['dmabuf', runDmabufBenches],
  ['nvme', runNvmeBenches],
  ['hmm', runHmmBenches],
  ['rdma-odp', runRdmaOdpBenches],
  ['vfio-mlx5', runVfioMlx5Benches],
];

const mds: string[] = [];
let failed = 0;
for (const [name, run] of suites) {
  if (only.length > 0 && !only.includes(name)) continue;
  for (const r of run()) {
    const md = writeSuite(r);
    mds.push(md);
    process.stdout.write(`${md}\n`);
    failed += r.checks.filter((c) => !c.pass).length;
  }
}
writeSummary(mds);
process.stdout.write(`benchmarks: ${failed === 0 ? 'all targets met' : `${failed} target(s) missed`} (results in tools/bench/results/)\n`);

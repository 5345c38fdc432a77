// `pnpm failnth [--stack S] [--max-runs N] [--seed S]`: fail_nth sweeps over the demo stacks
// (apps/demo/src/failNth/sweep.ts), as tools/testing/selftests/iommu/iommufd_fail_nth.c sweeps
// iommufd: count the fault-injection sites a stack passes, rerun it failing each in turn, and
// check every run ends cleanly (errno at the edge, no leak, no wrong byte, no exception).
// Prints progress, the findings and a table; exits 1 on any finding, 2 on nonsense arguments.
// Run through `node --conditions=@dmakit/source --import tsx` (the root package.json script).
/* global process, console, performance -- a Node script */
import { parseFailNthArgs, USAGE } from './failnth-args.mjs';

const { STACKS } = await import('../apps/demo/src/stacks/index.ts');
const args = parseFailNthArgs(
  process.argv.slice(2),
  STACKS.map((s) => s.name),
);
if ('help' in args) {
  console.log(USAGE);
  process.exit(0);
}
if ('error' in args) {
  console.error(args.error);
  process.exit(2);
}

const { failNthSweep, formatFailNthTable, NO_TEARDOWN } = await import('../apps/demo/src/failNth/sweep.ts');
const rows = [];
const t0 = performance.now();
for (const name of args.stacks) {
  const def = STACKS.find((s) => s.name === name);
  const ts = performance.now();
  let last = 0;
  const row = failNthSweep(def, {
    seed: args.seed,
    ...(args.maxRuns !== undefined ? { maxRuns: args.maxRuns } : {}),
    onRun: (done, total) => {
      const now = performance.now();
      if (now - last > 5000 || done === total) {
        last = now;
        console.log(`  ${name}: ${done}/${total} runs  ${((now - ts) / 1000).toFixed(1)} s`);
      }
    },
  });
  rows.push(row);
  const per = Object.entries(row.machines.reduce((acc, m) => {
    for (const [k, v] of Object.entries(m.bySite)) acc[k] = (acc[k] ?? 0) + v;
    return acc;
  }, {}))
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  console.log(`${name}: ${row.sites} sites (${per}), ${row.runs} runs in ${((performance.now() - ts) / 1000).toFixed(1)} s`);
  if (!row.leaksChecked) console.log(`  leaks not checked: ${NO_TEARDOWN[name]}`);
  for (const f of row.findings) console.log(`  ${f.outcome.toUpperCase()} failing site ${f.nth} (${f.site ?? '-'}) of machine ${f.machine} (${f.role}): ${f.detail}`);
}
console.log('');
console.log(formatFailNthTable(rows));
console.log(`\n${((performance.now() - t0) / 1000).toFixed(1)} s, seed ${args.seed}`);
const bad = rows.reduce((n, r) => n + r.leaks + r.corruptions + r.exceptions, 0);
if (bad > 0) {
  console.error(`${bad} run(s) did not end cleanly; reproduce one with its stack, seed and site: pnpm failnth --stack <stack> --seed ${args.seed}`);
  process.exit(1);
}
console.log('ok: every run surfaced its failure at the stack edge or recovered, leaked nothing and moved no wrong byte');

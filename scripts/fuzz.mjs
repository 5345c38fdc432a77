// `pnpm fuzz --commands N --seed S`: the NVMe controller fuzzer (packages/nvme-pci/src/testing/
// fuzz.ts) for runs longer than the suite's 10,000 commands. Prints progress and a summary; exits 1
// on an invariant violation (with the command that reproduces it), 2 on nonsense arguments.
// Run through `node --conditions=@dmakit/source --import tsx` (the root package.json script).
/* global process, console, performance -- a Node script */
import { parseFuzzArgs, USAGE } from './fuzz-args.mjs';

const args = parseFuzzArgs(process.argv.slice(2));
if ('help' in args) {
  console.log(USAGE);
  process.exit(0);
}
if ('error' in args) {
  console.error(args.error);
  process.exit(2);
}

const { nvmeCtrlFuzz } = await import('../packages/nvme-pci/src/testing/fuzz.ts');
const t0 = performance.now();
const every = Math.max(1000, Math.min(50_000, Math.ceil(args.commands / 20 / 1000) * 1000));
console.log(`nvme controller fuzz: ${args.commands} commands, seed ${args.seed}`);
const r = nvmeCtrlFuzz({
  seed: args.seed,
  commands: args.commands,
  progressEvery: every,
  onProgress: (done) => {
    const s = (performance.now() - t0) / 1000;
    console.log(`  ${done} commands  ${s.toFixed(1)} s  ${Math.round(done / s)} commands/s`);
  },
});
const secs = (performance.now() - t0) / 1000;
console.log(`commands     ${r.commands}`);
console.log(`completions  ${r.completions}`);
for (const [status, n] of [...r.byStatus].sort((a, b) => b[1] - a[1])) console.log(`  ${status.padEnd(26)} ${n}`);
console.log(`held AERs    ${r.heldAers}`);
console.log(`fatal (CFS)  ${r.fatalEvents}  (probes: ${r.fatalProbes} scratch SQs rung with their ring beyond RAM)`);
console.log(`resets       ${r.resets}`);
console.log(`seconds      ${secs.toFixed(2)}  (${Math.round(r.commands / secs)} commands/s)`);
if (r.violation !== null) {
  console.error(`INVARIANT VIOLATED after ${r.commands} commands: ${r.violation}`);
  console.error(`reproduce: pnpm fuzz --commands ${args.commands} --seed ${args.seed}`);
  process.exit(1);
}
console.log('ok: no exception, every command completed once with a spec status, data outside writes intact, every reset recovered');

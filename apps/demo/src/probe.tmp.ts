import { STACKS } from './stacks/index.js';
import { failNthSweep, formatFailNthTable } from './failNth/sweep.js';
const rows = [];
const only = process.argv[2];
const max = Number(process.argv[3] ?? 40);
for (const s of STACKS) {
  if (only && only !== 'all' && s.name !== only) continue;
  const t0 = Date.now();
  try {
    const r = failNthSweep(s, { maxRuns: max });
    rows.push(r);
    console.log(s.name, 'ms', Date.now() - t0, JSON.stringify(r.machines.map(m=>[m.role,m.sites])));
    for (const f of r.findings) console.log('  ', f.outcome, f.machine, f.nth, f.site, f.detail.slice(0, 300));
  } catch (e) { console.log(s.name, 'BASE FAIL', String(e).slice(0, 400)); }
}
console.log(formatFailNthTable(rows));

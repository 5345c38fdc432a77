import { getStack } from './stacks/index.js';
import { SWEEP_REQUESTS } from './failNth/sweep.js';
const [name, nth, mach] = [process.argv[2]!, Number(process.argv[3]), Number(process.argv[4] ?? 0)];
const s = getStack(name)!;
const r: any = s.run({ ...SWEEP_REQUESTS[name], seed: 1, failNth: { nth, machine: mach }, onMachine: (m) => { (globalThis as any).m = m; } });
const { simulated, published, perIo, host, blk, iommuStats, ...rest } = r;
console.log(JSON.stringify(rest, null, 1).slice(0, 3000));

import { getStack } from './stacks/index.js';
import { SWEEP_REQUESTS } from './failNth/sweep.js';
const [name, nth, mach] = [process.argv[2]!, Number(process.argv[3]), Number(process.argv[4] ?? 0)];
let ms: any[] = [];
const r: any = getStack(name)!.run({ ...SWEEP_REQUESTS[name], seed: 1, failNth: { nth, machine: mach }, onMachine: (m) => ms.push(m) });
console.log(r.verified, r.failure, JSON.stringify(r.steps?.filter((s: any) => !s.verified).map((s: any) => [s.step, s.detail]), null, 1), ms.map((m) => m.faultInjection.lastInjected));

import { getStack } from './stacks/index.js';
import { SWEEP_REQUESTS } from './failNth/sweep.js';
const [name, nth] = [process.argv[2]!, Number(process.argv[3])];
const r: any = getStack(name)!.run({ ...SWEEP_REQUESTS[name], seed: 1, failNth: { nth } });
console.log(r.verified, r.failure, JSON.stringify(r.steps?.map((s: any) => [s.verified, s.step, s.detail]), null, 1));

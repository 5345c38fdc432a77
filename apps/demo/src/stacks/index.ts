/**
 * The stack registry: every demo stack behind one contract, so the CLI (apps/demo/src/cli.ts)
 * and the browser visualiser (apps/visualiser) run the same code with the same inputs and get
 * the same result. Platform-neutral: nothing under stacks/ imports `node:*`, touches `process`
 * or writes files (eslint enforces it); the CLI records traces and prints.
 *
 *   const stack = getStack('nvme');
 *   const result = stack?.run({ seed: 1, iommu: 'strict', size: 500, extra: { bs: '4k' } });
 *
 * `run()` checks the request first and throws `StackUsageError` (one line, naming the option as
 * the CLI spells it) before any work; the object it returns is exactly what
 * `dmakit <stack> ... --json` prints for the same inputs.
 */
import { ccGuestStack } from './ccGuest.js';
import { directStack } from './direct.js';
import { dmabufP2pStack } from './dmabufP2p.js';
import { gpuSvmStack } from './gpuSvm.js';
import { nvmeStack } from './nvmeStack.js';
import { rdmaOdpStack } from './rdmaOdp.js';
import { checkRequest, withFailNth } from './types.js';
import type { StackDef, StackResult } from './types.js';
import { vfioMigrationStack } from './vfioMigration.js';

export { IOMMU_MODES, MAPPING_PATHS, StackUsageError } from './types.js';
export type { FailNthPlan, StackFailure } from './types.js';
export type { IommuMode, MappingPath, StackDef, StackInfo, StackName, StackOptionInfo, StackResult, StackRunRequest, StackSizeInfo } from './types.js';
export type { DirectStackResult } from './direct.js';
export type { DmabufP2pResult } from './dmabufP2p.js';
export type { GpuSvmResult } from './gpuSvm.js';
export type { NvmeCompareResult, NvmeRunResult } from './nvmeStack.js';
export type { NvmeStackResult } from './nvme.js';
export type { NvmePremappedCompare } from './dmabufP2pNvmePremapped.js';
export type { RdmaOdpResult } from './rdmaOdp.js';
export type { VfioMigrationResult } from './vfioMigration.js';
export { directStack, dmabufP2pStack, gpuSvmStack, nvmeStack, rdmaOdpStack, vfioMigrationStack };
// Programmatic runners with every option (the StackDefs above take the CLI's options only):
// benchmarks and notebooks drive the stacks through these.
export { compareIommuModes, runNvmeStack } from './nvme.js';
export type { NvmeIommuMode, NvmeStackOptions } from './nvme.js';
export { runVfioMigrationStack } from './vfioMigration.js';
export type { VfioMigrationOptions } from './vfioMigration.js';

/** A stack whose `run` takes a `failNth` plan (checked first, then armed through onMachine). */
function takesFaultPlan<R extends StackResult>(def: StackDef<R>): StackDef<R> {
  return {
    ...def,
    run(req) {
      if (req.failNth === undefined) return def.run(req);
      checkRequest(def, req);
      return def.run(withFailNth(req));
    },
  };
}

/** Every stack, in the order the CLI's help lists them. */
export const STACKS: readonly StackDef[] = Object.freeze(
  [directStack, nvmeStack, rdmaOdpStack, vfioMigrationStack, dmabufP2pStack, gpuSvmStack, ccGuestStack].map((s) => takesFaultPlan<StackResult>(s)),
);

/** The stack called `name`, or undefined. */
export function getStack(name: string): StackDef | undefined {
  return STACKS.find((s) => s.name === name);
}

/**
 * The "direct" stack: a machine without an IOMMU (or, with --iommu, behind one), two devices doing
 * streaming DMA, a swiotlb bounce for a 32-bit device above 4 GiB, a coherent buffer, and the
 * two-step IOVA API with its fallback (direct/steps.ts). Every transfer is checked byte for byte.
 */
import { createMachine, SZ_1G, SZ_4G } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import { createIommu } from '@dmakit/iommu-dma';
import { formatDirect } from './direct/report.js';
import type { DirectStackResult } from './direct/report.js';
import {
  allocAbove,
  bidirectionalRoundTrip,
  bounceFromDevice,
  coherentBuffer,
  iommuFaultOnPurpose,
  iovaApiWithFallback,
  remapFromDevice,
  StepFailed,
  streamToDevice,
} from './direct/steps.js';
import type { StepResult } from './direct/steps.js';
import { checkRequest } from './types.js';
import type { IommuMode, StackDef, StackFailure } from './types.js';

export type { IommuMode } from './types.js';
export type { StepResult } from './direct/steps.js';
export { formatDirect } from './direct/report.js';
export type { DirectStackResult } from './direct/report.js';

export interface DirectStackOptions {
  readonly seed?: number;
  readonly machine?: Machine;
  /** Put both devices behind an IOMMU in this mode (default 'off': dma-direct). */
  readonly iommu?: IommuMode;
  /** Progress in steps (5 with dma-direct, 6 behind an IOMMU). */
  readonly onProgress?: (done: number, total: number) => void;
}

export function runDirectStack(opts: DirectStackOptions = {}): DirectStackResult {
  const m = opts.machine ?? createMachine({ ramBytes: 8 * SZ_1G, seed: opts.seed ?? 1, dmaDebug: 'warn' });
  const steps: StepResult[] = [];
  const nic = m.pci.addDevice({ name: 'nic0', dmaMaskBits: 64 });
  const legacy = m.pci.addDevice({ name: 'legacy32', dmaMaskBits: 32 });
  const mode = opts.iommu ?? 'off';
  const iommu = mode === 'off' ? null : createIommu(m, { mode });
  if (iommu !== null) {
    iommu.attachDevice(nic);
    iommu.attachDevice(legacy);
  }

  const total = iommu === null ? 5 : 6;
  const step = (r: StepResult): void => {
    steps.push(r);
    opts.onProgress?.(steps.length, total);
  };
  // A step that cannot get its memory or mapping gives back what it held and throws StepFailed:
  // the run stops there and reports the errno (the steps already done stay checked).
  let failure: StackFailure | undefined;
  try {
    step(streamToDevice(m, nic, iommu !== null));
    step(iommu === null ? bounceFromDevice(m, legacy, allocAbove(m, 2, SZ_4G)) : remapFromDevice(m, legacy, allocAbove(m, 2, SZ_4G)));
    step(bidirectionalRoundTrip(m, legacy, allocAbove(m, 0, SZ_4G)));
    step(coherentBuffer(m, legacy));
    step(iovaApiWithFallback(m, nic));
    if (iommu !== null) step(iommuFaultOnPurpose(m, iommu, nic));
  } catch (err) {
    if (!(err instanceof StepFailed)) throw err;
    failure = { step: err.step, error: err.error, dataIntact: steps.every((s) => s.verified) };
  }

  return {
    stack: 'direct',
    ...(failure !== undefined ? { failure } : {}),
    verified: failure === undefined && steps.every((s) => s.verified),
    verifiedBytes: steps.reduce((t, s) => t + (s.verified ? s.bytes : 0), 0),
    steps,
    swiotlb: m.swiotlb.stats(),
    dmaDebugReports: m.dmaDebug.reports.length,
    simulatedNs: m.clock.now(),
    iommu: iommu === null || mode === 'off' ? null : { mode, stats: iommu.stats(), faults: iommu.faults.length },
  };
}

export const directStack: StackDef<DirectStackResult> = {
  name: 'direct',
  summary: 'dma-direct streaming DMA, swiotlb bouncing, a coherent buffer and the two-step API fallback (or the same behind an IOMMU).',
  help: `  direct        A device without an IOMMU: streaming DMA, swiotlb bouncing for a 32-bit
                device above 4 GiB, a coherent buffer, and the two-step IOVA API's fallback;
                with --iommu strict|lazy the same behind an IOMMU plus one fault on purpose.
                (default stack; a fixed workload)
`,
  defaultIommu: 'off',
  iommuModes: ['strict', 'lazy', 'off'],
  mappings: ['iova'],
  comparesMappings: false,
  verifyOption: false,
  size: { label: 'workload', unit: 'run', default: 1, min: 1, max: 1 },
  options: [],
  validate(req) {
    checkRequest(directStack, req);
  },
  run(req) {
    const c = checkRequest(directStack, req);
    const machine = createMachine({ ramBytes: 8 * SZ_1G, seed: c.seed, dmaDebug: 'warn' });
    req.onMachine?.(machine, 'host');
    return runDirectStack({ machine, iommu: c.iommu, ...(req.onProgress !== undefined ? { onProgress: req.onProgress } : {}) });
  },
  format: formatDirect,
};

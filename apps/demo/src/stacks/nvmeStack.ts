/**
 * The "nvme" entry of the stack registry: request checks, the three workloads it runs (one
 * IOMMU mode; --compare: strict vs lazy vs off; --premapped: a pre-mapped dma-buf next to
 * per-I/O mapping) and the table it prints. Platform-neutral (the CLI does the file output).
 */
import { createMachine, SZ_1G } from '@dmakit/dma-core';
import { compareNvmePremapped, formatNvmePremapped } from './dmabufP2pNvmePremapped.js';
import type { NvmePremappedCompare } from './dmabufP2pNvmePremapped.js';
import { formatNvme, formatNvmeCompare } from './nvme/format.js';
import { FIO_RW, runNvmeStack } from './nvme.js';
import type { FioRw, NvmeIommuMode, NvmeStackOptions, NvmeStackResult } from './nvme.js';
import { checkRequest, extraBool, extraInt, extraString, hasExtra, StackUsageError } from './types.js';
import type { StackDef, StackInfo, StackRunRequest } from './types.js';

/** `--compare`: the same workload and seed under strict, lazy and no IOMMU. */
export type NvmeCompareResult = Readonly<Record<NvmeIommuMode, NvmeStackResult>> & { readonly verified: boolean };
export type NvmeRunResult = NvmeStackResult | NvmeCompareResult | NvmePremappedCompare;

/** The namespace's logical block size in the nvme stack (NvmeStackOptions.lbaSize default). */
const LBA_SIZE = 512;
/** Largest block size the workload issues (the stack's slot buffers are sized for it). */
const MAX_BS = 1024 * 1024;
const MODES: readonly NvmeIommuMode[] = ['strict', 'lazy', 'off'];

const INFO: StackInfo = {
  name: 'nvme',
  summary: 'A full NVMe stack: blk-mq request mapping, the nvme-pci driver (PRPs/SGLs) and a simulated controller, driven by a fio-like workload.',
  help: `  nvme          A full NVMe stack: PCI function, IOMMU (--iommu, default off), block layer
                request mapping, the nvme-pci host driver and a simulated controller, driven by
                a fio-like workload; bytes verified with per-block checksums (--verify).
                Options: --mapping iova|legacy (legacy, alias sg: blk_rq_map_sg + dma_map_sgtable)
                --ios N (default 2000)  --qd N (1..1023, default 32)  --bs 4k|128k|1m|mixed
                --rw randrw|randread|randwrite|rw|read|write  --reset-after N
                --compare: the same workload under strict, lazy and no IOMMU.
                --premapped: 4 KiB random reads into a pre-mapped dma-buf under strict, lazy
                and no IOMMU, next to per-I/O mapping (simulated IOPS, IOTLB invalidations/IO).
`,
  defaultIommu: 'off',
  iommuModes: ['strict', 'lazy', 'off'],
  mappings: ['iova', 'legacy'],
  comparesMappings: false,
  verifyOption: true,
  size: { label: 'I/Os', unit: 'I/Os', default: 2000, min: 1, max: 10_000_000, option: 'ios' },
  options: [
    { key: 'qd', flag: 'qd', type: 'value', valueName: 'N', description: 'outstanding I/Os (1..1023, default 32)' },
    { key: 'bs', flag: 'bs', type: 'value', valueName: 'SIZE', description: 'block size: a multiple of 512 up to 1m (e.g. 4k, 128k), or "mixed" (default)' },
    { key: 'rw', flag: 'rw', type: 'value', valueName: 'MODE', description: `fio rw=: ${FIO_RW.join(', ')} (default randrw)` },
    { key: 'resetAfter', flag: 'reset-after', type: 'value', valueName: 'N', description: 'reset the controller after N completions (0: never, default)' },
    { key: 'compare', flag: 'compare', type: 'boolean', description: 'run the workload under strict, lazy and no IOMMU' },
    { key: 'premapped', flag: 'premapped', type: 'boolean', description: '4 KiB random reads into a pre-mapped dma-buf vs per-I/O mapping, all three IOMMU modes' },
  ],
};

/** "4k", "128K", "1m", "4096" or "mixed" -> bytes; null when it is not a size. */
function parseBs(s: string): number | 'mixed' | null {
  if (s === 'mixed') return 'mixed';
  const m = /^(\d+)([kKmM]?)$/.exec(s.trim());
  if (m === null) return null;
  const unit = (m[2] ?? '').toLowerCase();
  return Number(m[1]) * (unit === 'k' ? 1024 : unit === 'm' ? 1024 * 1024 : 1);
}

interface NvmePlan {
  readonly kind: 'single' | 'compare' | 'premapped';
  readonly seed: number;
  readonly iommu: NvmeIommuMode;
  readonly base: Omit<NvmeStackOptions, 'iommu' | 'machine' | 'onProgress'>;
}

function conflict(a: string, b: string, why: string): StackUsageError {
  return new StackUsageError(`${a} and ${b} cannot be used together: ${why}`);
}

function plan(req: StackRunRequest): NvmePlan {
  const c = checkRequest(INFO, req);
  const compare = extraBool(req, 'compare');
  const premapped = extraBool(req, 'premapped');
  if (compare && premapped) throw conflict('--compare', '--premapped', '--premapped already compares the IOMMU modes; pick one');
  const multi = compare ? '--compare' : premapped ? '--premapped' : null;
  if (multi !== null && req.iommu !== undefined) throw conflict(multi, '--iommu', `${multi} runs strict, lazy and off`);
  if (premapped) {
    for (const [given, flag] of [
      [req.mapping !== undefined, '--mapping'],
      [hasExtra(req, 'bs'), '--bs'],
      [hasExtra(req, 'rw'), '--rw'],
      [hasExtra(req, 'resetAfter'), '--reset-after'],
    ] as const) {
      if (given) throw conflict('--premapped', flag, '--premapped runs 4 KiB random reads on its own mapping');
    }
  }
  const qd = extraInt(INFO, req, 'qd', 32, 1, 1023);
  const bsText = extraString(INFO, req, 'bs', 'mixed');
  const bs = parseBs(bsText);
  if (bs === null || (bs !== 'mixed' && (bs < LBA_SIZE || bs % LBA_SIZE !== 0 || bs > MAX_BS))) {
    throw new StackUsageError(`--bs must be a multiple of ${LBA_SIZE} (the namespace's LBA size) from 512 to 1m, or "mixed", got ${JSON.stringify(bsText)}`);
  }
  const rw = extraString(INFO, req, 'rw', 'randrw');
  if (!FIO_RW.includes(rw as FioRw)) throw new StackUsageError(`--rw must be one of ${FIO_RW.join(', ')}, got ${JSON.stringify(rw)}`);
  const resetAfter = extraInt(INFO, req, 'resetAfter', 0, 0, c.size);
  return {
    kind: compare ? 'compare' : premapped ? 'premapped' : 'single',
    seed: c.seed,
    iommu: c.iommu,
    base: { seed: c.seed, mapping: c.mapping === 'legacy' ? 'sg' : 'iova', verify: c.verify, ios: c.size, qd, bs, rw: rw as FioRw, resetAfter },
  };
}

function newMachine(seed: number): ReturnType<typeof createMachine> {
  return createMachine({ ramBytes: 2 * SZ_1G, seed, dmaDebug: 'warn' });
}

export const nvmeStack: StackDef<NvmeRunResult> = {
  ...INFO,
  validate(req) {
    plan(req);
  },
  run(req) {
    const p = plan(req);
    const ios = p.base.ios ?? 0;
    if (p.kind === 'premapped') {
      return compareNvmePremapped({
        seed: p.seed,
        ios,
        qd: p.base.qd ?? 32,
        verify: true,
        ...(req.onMachine !== undefined ? { onMachine: req.onMachine } : {}),
        ...(req.onProgress !== undefined ? { onProgress: req.onProgress } : {}),
      });
    }
    if (p.kind === 'compare') {
      const rs = {} as Record<NvmeIommuMode, NvmeStackResult>;
      MODES.forEach((mode, i) => {
        const machine = newMachine(p.seed);
        req.onMachine?.(machine, mode);
        const onProgress = req.onProgress;
        rs[mode] = runNvmeStack({ ...p.base, iommu: mode, machine, ...(onProgress !== undefined
            ? {
                onProgress: (d: number) => {
                  onProgress(i * ios + d, 3 * ios);
                },
              }
            : {}),
        });
      });
      return { ...rs, verified: rs.strict.verified && rs.lazy.verified && rs.off.verified };
    }
    const machine = newMachine(p.seed);
    req.onMachine?.(machine, 'host');
    return runNvmeStack({ ...p.base, iommu: p.iommu, machine, ...(req.onProgress !== undefined ? { onProgress: req.onProgress } : {}) });
  },
  format(r) {
    if ('premapped' in r) return formatNvmePremapped(r);
    if ('stack' in r) return formatNvme(r);
    return formatNvmeCompare(r);
  },
};

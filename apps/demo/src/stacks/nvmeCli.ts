/** The `nvme` stack's command line: option parsing, progress bar, trace file, output. */
import { writeFileSync } from 'node:fs';
import { createMachine, SZ_1G } from '@dmakit/dma-core';
import { formatNvme, formatNvmeCompare } from '../formatNvme.js';
import { recordTrace } from '../traceFile.js';
import { compareIommuModes, FIO_RW, runNvmeStack } from './nvme.js';
import type { FioRw, NvmeIommuMode, NvmeStackOptions } from './nvme.js';

export const NVME_HELP = `  nvme          A full NVMe stack: PCI function, IOMMU (--iommu), block layer request
                mapping, the nvme-pci host driver and a simulated controller, driven by a
                fio-like workload; bytes verified with per-block checksums (--verify).
                Options: --mapping iova|sg  --ios N  --qd N  --bs 4k|128k|1m|mixed
                --rw randrw|randread|randwrite|rw|read|write  --reset-after N  --compare
`;

/** Options the nvme stack adds to the CLI's parseArgs table. */
export const NVME_CLI_OPTIONS = {
  mapping: { type: 'string', default: 'iova' },
  ios: { type: 'string', default: '2000' },
  qd: { type: 'string', default: '32' },
  bs: { type: 'string', default: 'mixed' },
  rw: { type: 'string', default: 'randrw' },
  'reset-after': { type: 'string', default: '0' },
  compare: { type: 'boolean', default: false },
} as const;

type Values = Readonly<Record<string, string | boolean | (string | boolean)[] | undefined>>;

function parseSize(s: string): number | 'mixed' | null {
  if (s === 'mixed') return 'mixed';
  const m = /^(\d+)([kKmM]?)$/.exec(s);
  if (m === null) return null;
  const unit = (m[2] ?? '').toLowerCase();
  return Number(m[1]) * (unit === 'k' ? 1024 : unit === 'm' ? 1024 * 1024 : 1);
}

function int(v: unknown, name: string, min: number): number | string {
  const x = Number(v);
  return Number.isSafeInteger(x) && x >= min ? x : `--${name} must be an integer >= ${min}, got ${String(v)}`;
}

/** Run the nvme stack from parsed CLI values; returns the exit status. */
export function runNvmeCli(values: Values, seed: number, iommu: NvmeIommuMode): number {
  const err = (msg: string): number => {
    process.stderr.write(`${msg}\n`);
    return 2;
  };
  const mapping = values.mapping;
  if (mapping !== 'iova' && mapping !== 'sg') return err(`--mapping must be iova or sg, got ${String(mapping)}`);
  const rw = values.rw;
  if (typeof rw !== 'string' || !FIO_RW.includes(rw as FioRw)) return err(`--rw must be one of ${FIO_RW.join(', ')}`);
  const bs = parseSize(String(values.bs));
  if (bs === null) return err(`--bs must be a size like 4k, 128k, 1m or "mixed", got ${String(values.bs)}`);
  const ios = int(values.ios, 'ios', 1);
  const qd = int(values.qd, 'qd', 1);
  const resetAfter = int(values['reset-after'], 'reset-after', 0);
  for (const v of [ios, qd, resetAfter]) if (typeof v === 'string') return err(v);
  const json = values.json === true;
  const t0 = performance.now();
  const bar = { shown: false };
  const progress = (done: number, total: number): void => {
    if (json || !process.stderr.isTTY || performance.now() - t0 < 1000) return;
    bar.shown = true;
    const w = 30;
    const f = Math.round((done / total) * w);
    process.stderr.write(`\r[${'#'.repeat(f)}${'.'.repeat(w - f)}] ${done}/${total} I/Os`);
  };
  const base: Omit<NvmeStackOptions, 'iommu' | 'machine'> = {
    seed,
    mapping,
    verify: values.verify === true,
    ios: ios as number,
    qd: qd as number,
    bs,
    rw: rw as FioRw,
    resetAfter: resetAfter as number,
    onProgress: progress,
  };
  try {
    if (values.compare === true) {
      const rs = compareIommuModes(base);
      if (bar.shown) process.stderr.write('\n');
      process.stdout.write(json ? `${JSON.stringify(rs, null, 2)}\n` : formatNvmeCompare(rs));
      return rs.strict.verified && rs.lazy.verified && rs.off.verified ? 0 : 1;
    }
    const machine = createMachine({ ramBytes: 2 * SZ_1G, seed, dmaDebug: 'warn' });
    const trace = typeof values.trace === 'string' ? values.trace : undefined;
    const stopTrace = trace !== undefined ? recordTrace(machine) : undefined;
    const result = runNvmeStack({ ...base, iommu, machine });
    if (bar.shown) process.stderr.write('\n');
    if (stopTrace !== undefined && trace !== undefined) {
      const n = stopTrace(trace, writeFileSync);
      if (!json) process.stdout.write(`trace: ${n} events written to ${trace}\n`);
    }
    process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : formatNvme(result));
    return result.verified ? 0 : 1;
  } catch (e) {
    if (e instanceof RangeError) return err(e.message);
    throw e;
  }
}

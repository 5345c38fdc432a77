/** The nvme stack's options, their defaults and checks (RangeError on a bad value). */
import { SZ_1M } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import type { NvmeControllerLatency } from '@dmakit/nvme-pci';
import type { NvmeStackCostModel } from '../nvmeCost.js';

/** fio's `rw=`: sequential or random, read, write or mixed (50/50). */
export type FioRw = 'read' | 'write' | 'rw' | 'randread' | 'randwrite' | 'randrw';
export const FIO_RW: readonly FioRw[] = ['read', 'write', 'rw', 'randread', 'randwrite', 'randrw'];

/** `bssplit` of the 'mixed' block size: [bytes, weight]; mostly small, a few up to 1 MiB. */
export const MIXED_BSSPLIT: readonly (readonly [number, number])[] = [
  [512, 10],
  [4096, 40],
  [8192, 15],
  [16384, 10],
  [65536, 10],
  [131072, 10],
  [262144, 4],
  [1048576, 1],
];

export type NvmeIommuMode = 'strict' | 'lazy' | 'off';

export interface NvmeStackOptions {
  readonly machine?: Machine;
  readonly seed?: number;
  readonly iommu?: NvmeIommuMode;
  /** 'iova' (default): blk_rq_dma_map_iter_*; 'sg': the legacy blk_rq_map_sg + dma_map_sgtable path. */
  readonly mapping?: 'iova' | 'sg';
  /** Check every read against the per-block checksums of what was written. Default true. */
  readonly verify?: boolean;
  /** I/Os to complete. Default 2000. */
  readonly ios?: number;
  /** Outstanding I/Os. Default 32. */
  readonly qd?: number;
  /** Block size in bytes (a multiple of the LBA size, up to 1 MiB) or 'mixed'. Default 'mixed'. */
  readonly bs?: number | 'mixed';
  readonly rw?: FioRw;
  /** Namespace logical block size. Default 512. */
  readonly lbaSize?: 512 | 4096;
  /** Bytes of the namespace the workload touches. Default 64 MiB. */
  readonly spanBytes?: number;
  /** Reset the controller after this many completions (0: never). */
  readonly resetAfter?: number;
  /** Driver `sgl_threshold`. Default 32 KiB. */
  readonly sglThreshold?: number;
  /** I/O queue pairs. Default 1. */
  readonly ioQueues?: number;
  /** External-facing device: the IOMMU gives it a strict domain and bounces sub-granule buffers through swiotlb. */
  readonly untrusted?: boolean;
  readonly costModel?: NvmeStackCostModel;
  readonly controllerLatency?: NvmeControllerLatency;
  /** Called every 1% of the run with (completed, total). */
  readonly onProgress?: (done: number, total: number) => void;
}

/** The options with their defaults filled in and checked. */
export interface NvmeRunConfig {
  readonly mode: NvmeIommuMode;
  readonly mapping: 'iova' | 'sg';
  readonly verify: boolean;
  readonly total: number;
  readonly qd: number;
  readonly bs: number | 'mixed';
  readonly rw: FioRw;
  readonly lbaSize: 512 | 4096;
  readonly span: number;
  readonly resetAfter: number;
}

/** Fill in the defaults and check the workload options; throws RangeError. */
export function resolveNvmeOptions(opts: NvmeStackOptions): NvmeRunConfig {
  const mode = opts.iommu ?? 'off';
  const mapping = opts.mapping ?? 'iova';
  const verify = opts.verify ?? true;
  const total = opts.ios ?? 2000;
  const qd = opts.qd ?? 32;
  const bs = opts.bs ?? 'mixed';
  const rw = opts.rw ?? 'randrw';
  const lbaSize = opts.lbaSize ?? 512;
  const span = opts.spanBytes ?? 64 * SZ_1M;
  const resetAfter = opts.resetAfter ?? 0;
  if (!Number.isSafeInteger(total) || total < 1) throw new RangeError(`nvme stack: ios must be a positive integer, got ${total}`);
  if (!Number.isSafeInteger(qd) || qd < 1 || qd > 1023) throw new RangeError(`nvme stack: qd must be 1..1023, got ${qd}`);
  if (bs !== 'mixed' && (!Number.isSafeInteger(bs) || bs < lbaSize || bs % lbaSize !== 0 || bs > SZ_1M)) {
    throw new RangeError(`nvme stack: bs must be a multiple of ${lbaSize} up to 1 MiB, got ${bs}`);
  }
  if (!FIO_RW.includes(rw)) throw new RangeError(`nvme stack: rw must be one of ${FIO_RW.join(', ')}`);
  if (!Number.isSafeInteger(span) || span < 2 * SZ_1M || span % SZ_1M !== 0) throw new RangeError('nvme stack: spanBytes must be a whole number of MiB >= 2');
  return { mode, mapping, verify, total, qd, bs, rw, lbaSize, span, resetAfter };
}

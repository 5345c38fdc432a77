/**
 * The scaling table (issue 13, item 4): cost per operation of each hot path at three work sizes,
 * so superlinear growth shows up as a number. Each path's check fails when its largest size costs
 * more than 1.5x its smallest per operation. NVMe I/O is measured in nvme.bench.ts (same rule).
 */
import {
  DMA_BIDIRECTIONAL,
  DmaIovaState,
  dmaIovaDestroy,
  dmaIovaLink,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaMapPhys,
  dmaUnmapPhys,
  SZ_1M,
  SZ_4K,
} from '@dmakit/dma-core';
import type { Device } from '@dmakit/dma-core';
import { IovaDomain } from '@dmakit/iommu-dma';
import { check, medianOf, sideBySide } from './harness.js';
import type { Check, Measured, SuiteResult } from './harness.js';
import { rig } from './iommuDma.bench.js';
import { faultInOnce } from './rdmaOdp.bench.js';

/** Largest / smallest per-operation cost allowed across a path's three sizes. */
export const SCALING_LIMIT = 1.5;

interface Row {
  readonly path: string;
  readonly unit: string;
  readonly sizes: readonly string[];
  readonly ns: readonly number[];
  /** The largest size's work once more, profiled when the row misses its target. */
  readonly profile?: () => void;
}

/** A strict-IOMMU device with `pages` non-contiguous pages (iommuDma.bench.ts's rig). */
function device(pages: number): { dev: Device; pages: Float64Array; write: (phys: number, b: Uint8Array) => void } {
  const r = rig('strict', pages);
  return { dev: r.dev, pages: r.pages, write: (phys, b) => { r.machine.memory.write(phys, b); } };
}

/** Link: one I/O of N pages = try_alloc + N links + sync + destroy; ns per page. */
function linkRow(): Row {
  const sizes = [64, 512, 4096];
  const { dev, pages } = device(4096);
  const state = new DmaIovaState();
  const ms = sideBySide(
    sizes.map((n) => ({
      name: `link, ${n}-page I/O`,
      run: (ops: number) => {
        for (let i = 0; i < ops; i += n) {
          dmaIovaTryAlloc(dev, state, 0, n * SZ_4K);
          for (let p = 0; p < n; p++) dmaIovaLink(dev, state, pages[p] ?? 0, p * SZ_4K, SZ_4K, DMA_BIDIRECTIONAL, 0);
          dmaIovaSync(dev, state, 0, n * SZ_4K);
          dmaIovaDestroy(dev, state, n * SZ_4K, DMA_BIDIRECTIONAL, 0);
        }
      },
    })),
    4096 * 16,
  );
  return { path: 'dmaIovaLink (per page, I/O size in pages)', unit: 'ns/page', sizes: sizes.map(String), ns: ms.map((m) => m.nsPerOp) };
}

/** Map: dmaMapPhys + dmaUnmapPhys of 4 KiB with N other mappings live; ns per map+unmap. */
function mapRow(): Row {
  const sizes = [1000, 10_000, 100_000];
  const rigs = sizes.map((n) => {
    const r = device(512);
    const live = new Float64Array(n);
    for (let i = 0; i < n; i++) live[i] = dmaMapPhys(r.dev, r.pages[i & 511] ?? 0, SZ_4K, DMA_BIDIRECTIONAL, 0);
    return r;
  });
  const ms = sideBySide(
    rigs.map((r, k) => ({
      name: `dmaMapPhys+dmaUnmapPhys, ${sizes[k] ?? 0} live`,
      run: (ops: number) => {
        for (let i = 0; i < ops; i++) dmaUnmapPhys(r.dev, dmaMapPhys(r.dev, r.pages[i & 511] ?? 0, SZ_4K, DMA_BIDIRECTIONAL, 0), SZ_4K, DMA_BIDIRECTIONAL, 0);
      },
    })),
    20_000,
  );
  return { path: 'dmaMapPhys + dmaUnmapPhys 4 KiB (strict; live mappings)', unit: 'ns/op', sizes: sizes.map(String), ns: ms.map((m) => m.nsPerOp) };
}

/** IOVA: alloc_iova_fast + free_iova_fast with N ranges live; ns per pair. */
function iovaRow(): Row {
  const sizes = [1000, 10_000, 100_000];
  const limit = 2 ** 36 - 1;
  const domains = sizes.map((n) => {
    const d = new IovaDomain({ granule: 4096, startPfn: 1 });
    for (let i = 0; i < n; i++) d.allocIova(1, limit, false);
    return d;
  });
  const sink = new Float64Array(1);
  const ms = sideBySide(
    domains.map((d, k) => ({
      name: `alloc_iova_fast+free_iova_fast, ${sizes[k] ?? 0} live`,
      run: (ops: number) => {
        for (let i = 0; i < ops; i++) {
          const pfn = d.allocIovaFast(1, limit, true);
          sink[0] = pfn;
          d.freeIovaFast(pfn, 1);
        }
      },
    })),
    100_000,
  );
  return { path: 'IOVA alloc (rcache; live ranges)', unit: 'ns/op', sizes: sizes.map(String), ns: ms.map((m) => m.nsPerOp) };
}

/** Device access: 8-byte reads spread over N mapped pages (all within the 512-entry IOTLB). */
function deviceAccessRow(): Row {
  const sizes = [1, 64, 512];
  const rigs = sizes.map((n) => {
    const r = device(n);
    const state = new DmaIovaState();
    dmaIovaTryAlloc(r.dev, state, 0, n * SZ_4K);
    for (let p = 0; p < n; p++) {
      dmaIovaLink(r.dev, state, r.pages[p] ?? 0, p * SZ_4K, SZ_4K, DMA_BIDIRECTIONAL, 0);
      r.write(r.pages[p] ?? 0, new Uint8Array(64).fill(p & 0xff));
    }
    dmaIovaSync(r.dev, state, 0, n * SZ_4K);
    return { dev: r.dev, base: state.addr, n };
  });
  const out = new Uint8Array(8);
  const ms = sideBySide(
    rigs.map(({ dev, base, n }) => ({
      name: `device read 8 B, ${n} pages`,
      run: (ops: number) => {
        for (let i = 0; i < ops; i++) dev.dmaReadInto(base + (i % n) * SZ_4K + (i & 7) * 8, out, 0, 8);
      },
    })),
    500_000,
  );
  return { path: 'device read of 8 B (hot IOTLB; pages touched)', unit: 'ns/op', sizes: sizes.map(String), ns: ms.map((m) => m.nsPerOp) };
}

/** ODP fault-in: an MR of N MiB faulted in 64 KiB at a time (two-step path); ns per page. */
function odpRow(): Row {
  const sizes = [16, 128, 512];
  for (let w = 0; w < 3; w++) faultInOnce(false, 64 * SZ_1M); // JIT warm-up
  // Interleaved rounds (every size once per round), median per size.
  const samples = sizes.map(() => [] as number[]);
  for (let r = 0; r < 5; r++) sizes.forEach((mib, i) => samples[i]?.push(faultInOnce(false, mib * SZ_1M).faultNs / ((mib * SZ_1M) / SZ_4K)));
  const ns = samples.map((xs) => medianOf(xs));
  return { path: 'RDMA ODP fault-in (two-step; MR size in MiB)', unit: 'ns/page', sizes: sizes.map(String), ns, profile: () => { faultInOnce(false, 512 * SZ_1M); } };
}

/** Checks and figures for rows measured elsewhere too (nvme.bench.ts reuses it). */
export function scalingChecks(rows: readonly Row[]): { figures: Record<string, number | string>; checks: Check[]; measured: Measured[] } {
  const figures: Record<string, number | string> = {};
  const checks: Check[] = [];
  const measured: Measured[] = [];
  for (const row of rows) {
    row.sizes.forEach((size, i) => {
      const ns = row.ns[i] ?? Number.NaN;
      measured.push({ name: `${row.path} @ ${size}`, nsPerOp: ns, opsPerSec: 1e9 / ns, samples: 1 });
    });
    const first = row.ns[0] ?? Number.NaN;
    const last = row.ns[row.ns.length - 1] ?? Number.NaN;
    figures[`${row.path}: ${row.unit} at ${row.sizes.join(' / ')}`] = row.ns.map((x) => x.toFixed(1)).join(' / ');
    checks.push(check(`scaling: ${row.path}, largest vs smallest size per operation`, `<= ${SCALING_LIMIT}x`, last / first, last / first <= SCALING_LIMIT, row.profile));
  }
  return { figures, checks, measured };
}

export type { Row as ScalingRow };

export function runScalingBenches(): SuiteResult[] {
  const { figures, checks, measured } = scalingChecks([linkRow(), mapRow(), iovaRow(), deviceAccessRow(), odpRow()]);
  return [{ suite: 'scaling', measured, figures, checks }];
}

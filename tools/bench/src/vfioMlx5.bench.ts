/**
 * vfio-mlx5 benchmarks (issue 6).
 * - Migration buffer metadata for a 1 GiB device image, measured from the real structures: bytes
 *   per page on the IOVA path (page array + MTT in the mkey input) against the legacy path
 *   (scatterlist + MTT); IOTLB syncs per buffer (1 against 1 per sg map, and 1 per page for the
 *   dma_map_page fallback).
 * - Buffer registration throughput (pages/s), both paths side by side in one run.
 * - Downtime of the demo migration in simulated time, and its wall time.
 */
import { DMA_FROM_DEVICE, PAGE_SIZE, SZ_1G, SZ_1M, createMachine, dmaMapPage, dmaUnmapPage } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import { createIommu } from '@dmakit/iommu-dma';
import type { Iommu } from '@dmakit/iommu-dma';
import { Mlx5SimFunction, Mlx5VfPciCoreDevice, mlx5vfAllocDataBuffer, mlx5vfFreeDataBuffer } from '@dmakit/vfio-mlx5';
import type { Mlx5BufferCtx } from '@dmakit/vfio-mlx5';
import { runVfioMigrationStack } from '@dmakit/demo/stacks';
import { check, once, sideBySide } from './harness.js';
import type { SuiteResult } from './harness.js';

/**
 * Kernel element sizes (64-bit) for the derived metadata figures: a `struct page *` in the page
 * array, a 64-bit MTT entry (struct mlx5_mtt), a `struct scatterlist` (include/linux/scatterlist.h).
 */
const KERNEL_PAGE_PTR = 8;
const KERNEL_MTT = 8;
const KERNEL_SCATTERLIST = 32;

interface Rig {
  machine: Machine;
  iommu: Iommu;
  ctx: Mlx5BufferCtx;
  syncMaps(): number;
}

function rig(legacy: boolean, ramBytes: number): Rig {
  const machine = createMachine({ ramBytes, dmaDebug: 'off', swiotlbBytes: 0 });
  const iommu = createIommu(machine, { mode: 'strict' });
  const pf = machine.pci.addDevice({ name: 'mlx5_pf', dmaMaskBits: 64 });
  const domain = iommu.attachDevice(pf);
  const vf = machine.pci.addDevice({ name: 'mlx5_vf', dmaMaskBits: 64 });
  const fw = new Mlx5SimFunction({ machine, pf, vf, stateBytes: 4096 });
  const drv = new Mlx5VfPciCoreDevice({ machine, fw, legacySgBuffers: legacy });
  return { machine, iommu, ctx: drv.bufCtx, syncMaps: () => domain.stats().iotlbSyncMaps };
}

function metadata1G(): SuiteResult {
  const npages = SZ_1G / PAGE_SIZE;
  const figures: Record<string, number | string> = {};
  const out: Record<string, { perPage: number; syncs: number; ms: number }> = {};
  for (const legacy of [false, true]) {
    const r = rig(legacy, 2 * SZ_1G);
    const s0 = r.syncMaps();
    let perPage = 0;
    let syncs = 0;
    const ns = once(() => {
      const b = mlx5vfAllocDataBuffer(r.ctx, npages, DMA_FROM_DEVICE);
      if (typeof b === 'number') throw new Error(`1 GiB buffer failed: ${b}`);
      perPage = b.metadataBytes() / npages;
      syncs = r.syncMaps() - s0;
      mlx5vfFreeDataBuffer(r.ctx, b);
    });
    out[legacy ? 'legacy' : 'iova'] = { perPage, syncs, ms: ns / 1e6 };
  }
  // The dma_map_page fallback: one IOTLB sync per page (measured on 4096 pages).
  const fb = rig(false, 256 * SZ_1M);
  const dev = fb.ctx.dev;
  const pages = Array.from({ length: 4096 }, () => fb.machine.memory.allocPages(0));
  const f0 = fb.syncMaps();
  const addrs = pages.map((p) => dmaMapPage(dev, p, 0, PAGE_SIZE, DMA_FROM_DEVICE, 0));
  const fallbackSyncsPerPage = (fb.syncMaps() - f0) / pages.length;
  addrs.forEach((a) => {
    dmaUnmapPage(dev, a, PAGE_SIZE, DMA_FROM_DEVICE, 0);
  });
  const iova = out.iova ?? { perPage: 0, syncs: 0, ms: 0 };
  const legacy = out.legacy ?? { perPage: 0, syncs: 0, ms: 0 };
  figures['1 GiB image: pages'] = npages;
  figures['IOVA path: metadata bytes/page (page array 8 + MTT 8)'] = iova.perPage;
  figures['legacy path: metadata bytes/page (model SgTable 25 + MTT 8)'] = legacy.perPage;
  figures['legacy path, kernel layout: bytes/page (struct scatterlist 32 + MTT 8)'] = KERNEL_SCATTERLIST + KERNEL_MTT;
  figures['IOVA path, kernel layout: bytes/page (struct page * 8 + MTT 8)'] = KERNEL_PAGE_PTR + KERNEL_MTT;
  figures['IOVA path: metadata MiB for 1 GiB'] = (iova.perPage * npages) / SZ_1M;
  figures['legacy path: metadata MiB for 1 GiB'] = (legacy.perPage * npages) / SZ_1M;
  figures['IOVA path: IOTLB syncs per buffer'] = iova.syncs;
  figures['legacy path: IOTLB syncs per buffer (one per dma_map_sgtable)'] = legacy.syncs;
  figures['dma_map_page fallback: IOTLB syncs per page'] = fallbackSyncsPerPage;
  figures['IOVA path: alloc+register+free of 1 GiB (ms)'] = iova.ms;
  figures['legacy path: alloc+register+free of 1 GiB (ms)'] = legacy.ms;
  return {
    suite: 'vfio-mlx5-metadata',
    measured: [],
    figures,
    checks: [
      check('IOVA path bytes/page', 'about 16', iova.perPage, Math.abs(iova.perPage - 16) < 0.5),
      check('legacy/IOVA metadata ratio', '> 2x (kernel layout 2.5x)', legacy.perPage / iova.perPage, legacy.perPage / iova.perPage > 2),
      check('IOVA path IOTLB syncs per buffer', '= 1', iova.syncs, iova.syncs === 1),
      check('fallback IOTLB syncs per page', '= 1', fallbackSyncsPerPage, fallbackSyncsPerPage === 1),
    ],
  };
}

function registrationThroughput(): SuiteResult {
  const npages = 512;
  const rigs = { iova: rig(false, 512 * SZ_1M), legacy: rig(true, 512 * SZ_1M) };
  const sink = { n: 0 };
  const contender = (name: string, r: Rig) => ({
    name,
    run: (ops: number) => {
      for (let i = 0; i < ops; i++) {
        const b = mlx5vfAllocDataBuffer(r.ctx, npages, DMA_FROM_DEVICE);
        if (typeof b === 'number') throw new Error('alloc');
        sink.n += b.mkey;
        mlx5vfFreeDataBuffer(r.ctx, b);
      }
    },
  });
  const measured = sideBySide([contender(`IOVA path: alloc + register + free of ${npages} pages`, rigs.iova), contender(`legacy sg path: alloc + register + free of ${npages} pages`, rigs.legacy)], 20, 7);
  const [a, b] = measured;
  const iovaPps = a !== undefined ? (npages * 1e9) / a.nsPerOp : 0;
  const legacyPps = b !== undefined ? (npages * 1e9) / b.nsPerOp : 0;
  return {
    suite: 'vfio-mlx5-registration',
    measured,
    figures: { 'IOVA path: pages/s': iovaPps, 'legacy path: pages/s': legacyPps, 'IOVA / legacy throughput': iovaPps / legacyPps },
    checks: [check('both paths register', '> 0 pages/s', Math.min(iovaPps, legacyPps), iovaPps > 0 && legacyPps > 0)],
  };
}

function downtime(): SuiteResult {
  const figures: Record<string, number | string> = {};
  let verified = true;
  for (const iommu of ['strict', 'lazy'] as const) {
    const r = runVfioMigrationStack({ seed: 1, iommu, path: 'both' });
    verified &&= r.verified;
    for (const p of r.paths) {
      figures[`${iommu} ${p.path}: downtime simulated (µs)`] = p.downtime.simulatedNs / 1000;
      figures[`${iommu} ${p.path}: downtime wall (ms)`] = p.downtime.wallMs;
      figures[`${iommu} ${p.path}: pre-copy rounds`] = p.rounds.filter((x) => x.phase === 'pre-copy').length;
      figures[`${iommu} ${p.path}: bytes moved`] = p.bytesMoved.totalBytes;
      figures[`${iommu} ${p.path}: migration wall (ms)`] = p.wallMs;
    }
  }
  return {
    suite: 'vfio-mlx5-downtime',
    measured: [],
    figures,
    checks: [check('demo migration verified (strict and lazy, both paths)', 'verified', verified ? 1 : 0, verified)],
  };
}

export function runVfioMlx5Benches(): SuiteResult[] {
  return [metadata1G(), registrationThroughput(), downtime()];
}

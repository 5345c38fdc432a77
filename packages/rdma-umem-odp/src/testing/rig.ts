/**
 * Test rig of this package (not shipped): a machine, two processes, two HCAs with connected RC QPs,
 * on the fake HMM. Helpers shared with other packages (bytes, mmap, fake exporter) are in @dmakit/testkit.
 */
import { SZ_1G, createMachine } from '@dmakit/dma-core';
import type { DmaDebugMode, Machine, Process } from '@dmakit/dma-core';
import { Hca, Mlx5IbDev } from '@dmakit/rdma-umem-odp';
import type { HcaCq, HcaQp, IbPd, IbWc } from '@dmakit/rdma-umem-odp';
import { mmapAnon } from '@dmakit/testkit';
import { createFakeHmm } from './fakeHmm.js';
import type { FakeHmm } from './fakeHmm.js';

export interface Side {
  readonly proc: Process;
  readonly ib: Mlx5IbDev;
  readonly pd: IbPd;
  readonly cq: HcaCq;
  readonly qp: HcaQp;
}

export interface OdpRig {
  readonly machine: Machine;
  readonly hmm: FakeHmm;
  /** Requester (client). */
  readonly a: Side;
  /** Responder (server). */
  readonly b: Side;
}

export interface RigOptions {
  readonly seed?: number;
  readonly legacy?: boolean;
  readonly dmaDebug?: DmaDebugMode;
  readonly ramBytes?: number;
}

export function createRig(opts: RigOptions = {}): OdpRig {
  // dma-debug in 'warn' mode: ODP maps the shared zero page (and pages under two MRs) more than
  // once, which dma-debug reports as cacheline overlap exactly as the kernel's does; tests check
  // the other rules through `debugReports`.
  const machine = createMachine({ ramBytes: opts.ramBytes ?? SZ_1G, seed: opts.seed ?? 1, dmaDebug: opts.dmaDebug ?? 'warn' });
  const hmm = createFakeHmm();
  const side = (name: string): Side => {
    const proc = machine.createProcess();
    const dev = machine.pci.addDevice({ name, dmaMaskBits: 64 });
    const ib = new Mlx5IbDev({ dev, hmm, scheduler: machine.scheduler, odpLegacy: opts.legacy ?? false });
    const pd = ib.allocPd(proc.mm);
    const cq = ib.createCq();
    const qp = ib.createQp(pd, cq, cq);
    return { proc, ib, pd, cq, qp };
  };
  const a = side('mlx5_a');
  const b = side('mlx5_b');
  Hca.connect(a.qp, b.qp);
  return { machine, hmm, a, b };
}

/** Run every scheduled event (WQEs, page faults, queued prefetch work). */
export function drain(rig: OdpRig): void {
  rig.machine.scheduler.runUntilIdle();
}

/** Drop the pages of [addr, addr + len) (munmap + mmap MAP_FIXED: madvise(MADV_DONTNEED)-like). */
export function dropPages(proc: Process, addr: number, len: number): void {
  mmapAnon(proc, len, { addr });
}

export function pollAll(cq: HcaCq): IbWc[] {
  return cq.poll();
}

/** dma-debug reports other than cacheline overlap (see createRig). */
export function debugReports(rig: OdpRig): string[] {
  return rig.machine.dmaDebug.reports.filter((r) => !r.rule.startsWith('cacheline-overlap')).map((r) => `${r.rule}: ${r.message}`);
}

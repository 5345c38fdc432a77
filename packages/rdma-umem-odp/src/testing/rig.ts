/** Test rig: a machine, two processes, two HCAs with connected RC QPs, on the fake HMM. */
import { MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE, SZ_1G, createMachine } from '@dmakit/dma-core';
import type { DmaDebugMode, Machine, Process } from '@dmakit/dma-core';
import { Hca, Mlx5IbDev } from '@dmakit/rdma-umem-odp';
import type { HcaCq, HcaQp, IbPd, IbWc } from '@dmakit/rdma-umem-odp';
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

export function mmapRw(proc: Process, len: number, addr?: number): number {
  const r = proc.mm.mmap({ length: len, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS | (addr !== undefined ? MAP_FIXED : 0), ...(addr !== undefined ? { addr } : {}) });
  if (r < 0) throw new Error(`mmap failed: ${r}`);
  return r;
}

/** Drop the pages of [addr, addr + len) (munmap + mmap MAP_FIXED: madvise(MADV_DONTNEED)-like). */
export function dropPages(proc: Process, addr: number, len: number): void {
  mmapRw(proc, len, addr);
}

export function pollAll(cq: HcaCq): IbWc[] {
  return cq.poll();
}

export function pattern(seed: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** dma-debug reports other than cacheline overlap (see createRig). */
export function debugReports(rig: OdpRig): string[] {
  return rig.machine.dmaDebug.reports.filter((r) => !r.rule.startsWith('cacheline-overlap')).map((r) => `${r.rule}: ${r.message}`);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// Test rig of this package only (never built or shipped): one host with a PF (driver side), an
// assigned VF with guest memory at GPA 0 behind a fake unmanaged domain, the simulated function
// and the mlx5 variant driver; plus helpers to run the function and drain a migration fd.
import { IOMMU_UNMANAGED_READ, IOMMU_UNMANAGED_WRITE, PAGE_SIZE, SZ_1M, attachDmaOps, createMachine } from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';
import { Mlx5SimFunction, Mlx5VfPciCoreDevice } from '../index.js';
import type { Mlx5FunctionCaps } from '../index.js';
import { fakeIommuOps, fakeUnmanagedDomain } from './fakeIommu.js';
import type { FakeIommu } from './fakeIommu.js';

export interface TestHost {
  machine: Machine;
  pf: Device;
  vf: Device;
  domain: ReturnType<typeof fakeUnmanagedDomain>;
  iommu: FakeIommu | null;
  fw: Mlx5SimFunction;
  drv: Mlx5VfPciCoreDevice;
  guestPages: number[];
}

export interface TestHostOptions {
  seed?: number;
  /** PF behind the fake IOMMU (two-step path) instead of dma-direct (per-page fallback). */
  iommu?: boolean;
  legacy?: boolean;
  caps?: Partial<Mlx5FunctionCaps>;
  stateBytes?: number;
  guestPages?: number;
  noP2p?: boolean;
  noPreCopy?: boolean;
}

/** One host: a PF (driver side), an assigned VF with guest memory at GPA 0, function + driver. */
export function makeHost(o: TestHostOptions = {}): TestHost {
  const machine = createMachine({ ramBytes: 256 * SZ_1M, seed: o.seed ?? 1, dmaDebug: 'strict' });
  const pf = machine.pci.addDevice({ name: 'mlx5_pf', dmaMaskBits: 64 });
  const vf = machine.pci.addDevice({ name: 'mlx5_vf', dmaMaskBits: 64 });
  const iommu = o.iommu === true ? fakeIommuOps(machine) : null;
  if (iommu !== null) attachDmaOps(pf, iommu.ops);
  const domain = fakeUnmanagedDomain();
  const n = o.guestPages ?? 64;
  const guestPages: number[] = [];
  for (let i = 0; i < n; i++) {
    const p = machine.memory.allocPages(0);
    guestPages.push(p);
    domain.map(i * PAGE_SIZE, p, PAGE_SIZE, IOMMU_UNMANAGED_READ | IOMMU_UNMANAGED_WRITE);
  }
  domain.attachDevice(vf);
  const fw = new Mlx5SimFunction({ machine, pf, vf, stateBytes: o.stateBytes ?? 16 * 1024, queues: 4, seed: (o.seed ?? 1) + 100, ...(o.caps !== undefined ? { caps: o.caps } : {}) });
  const drv = new Mlx5VfPciCoreDevice({
    machine,
    fw,
    ...(o.legacy === true ? { legacySgBuffers: true } : {}),
    ...(o.noP2p === true ? { noP2p: true } : {}),
    ...(o.noPreCopy === true ? { noPreCopy: true } : {}),
  });
  return { machine, pf, vf, domain, iommu, fw, drv, guestPages };
}

/** Configure the function's queues over guest memory and run it for `steps` packets. */
export function configureAndRun(h: TestHost, steps: number): void {
  const pagesPerQueue = Math.floor(h.guestPages.length / 4);
  for (let q = 0; q < 4; q++) h.fw.configureQueue(q, q * pagesPerQueue * PAGE_SIZE, pagesPerQueue * 2, PAGE_SIZE / 2);
  for (let i = 0; i < steps; i++) h.fw.step();
}

/** Read the data fd until `stop` (0 = end of stream, -ENOMSG = end of pre-copy data). */
export function drain(fd: { read(out: Uint8Array): number }, chunk = 1000): { bytes: Uint8Array; ret: number; reads: number } {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(chunk);
  let ret: number;
  let reads = 0;
  for (;;) {
    ret = fd.read(buf);
    reads++;
    if (ret <= 0) break;
    parts.push(buf.slice(0, ret));
  }
  const total = parts.reduce((t, p) => t + p.length, 0);
  const bytes = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    bytes.set(p, o);
    o += p.length;
  }
  return { bytes, ret, reads };
}

// Test fixtures (not part of the public surface): a fake IOMMU for the PF's DMA API (so the
// two-step IOVA path runs without iommu-dma) and a fake of the dma-core unmanaged-domain port for
// the assigned VF. Full IOMMU-backed stacks live in apps/demo.
import {
  DMA_MAPPING_ERROR,
  DmaFaultReason,
  Errno,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_UNMANAGED_READ,
  IOMMU_UNMANAGED_WRITE,
  PAGE_SIZE,
  SZ_1M,
  alignUp,
  attachDmaOps,
  createMachine,
  detachDmaOps,
} from '@dmakit/dma-core';
import type { Device, DmaMapOps, IommuUnmanagedDomain, Machine, SgTable } from '@dmakit/dma-core';
import { Mlx5SimFunction, Mlx5VfPciCoreDevice } from './index.js';
import type { Mlx5FunctionCaps } from './index.js';

export interface FakeIommu {
  ops: DmaMapOps;
  mapped: Map<number, number>;
  syncs: number;
  links: number;
}

/** A minimal IOMMU behind the DMA API: bump IOVA allocator, page map, counted syncs. */
export function fakeIommuOps(machine: Machine): FakeIommu {
  const mapped = new Map<number, number>();
  let next = 0x1_0000_0000;
  const f: FakeIommu = { ops: undefined as unknown as DmaMapOps, mapped, syncs: 0, links: 0 };
  const alloc = (size: number): number => {
    if (machine.faultInjection.shouldFail('iova')) return 0;
    const a = next;
    next += alignUp(size, PAGE_SIZE) + PAGE_SIZE;
    return a;
  };
  const mapRange = (iova: number, phys: number, size: number): number => {
    for (let o = 0; o < size; o += PAGE_SIZE) {
      if (mapped.has(iova + o)) return -Errno.EEXIST;
    }
    for (let o = 0; o < size; o += PAGE_SIZE) mapped.set(iova + o, phys + o);
    return 0;
  };
  const unmapRange = (iova: number, size: number): void => {
    for (let o = 0; o < size; o += PAGE_SIZE) mapped.delete(iova - (iova % PAGE_SIZE) + o);
  };
  f.ops = {
    name: 'fake-iommu',
    mapPhys: (_d, phys, size) => {
      const a = alloc(size + (phys % PAGE_SIZE));
      if (a === 0) return DMA_MAPPING_ERROR;
      mapRange(a, phys - (phys % PAGE_SIZE), alignUp(size + (phys % PAGE_SIZE), PAGE_SIZE));
      f.syncs++;
      return a + (phys % PAGE_SIZE);
    },
    unmapPhys: (_d, addr, size) => {
      unmapRange(addr, alignUp(size + (addr % PAGE_SIZE), PAGE_SIZE));
    },
    mapSg: (_d, sgt: SgTable, nents) => {
      let total = 0;
      for (let i = 0; i < nents; i++) total += sgt.length[i] ?? 0;
      const a = alloc(total);
      if (a === 0) return -Errno.ENOMEM;
      let o = 0;
      for (let i = 0; i < nents; i++) {
        mapRange(a + o, sgt.phys[i] ?? 0, sgt.length[i] ?? 0);
        o += sgt.length[i] ?? 0;
      }
      sgt.dmaAddress[0] = a;
      sgt.dmaLength[0] = total;
      f.syncs++;
      return 1;
    },
    unmapSg: (_d, sgt: SgTable) => {
      unmapRange(sgt.dmaAddress[0] ?? 0, sgt.dmaLength[0] ?? 0);
    },
    syncSingleForCpu: () => undefined,
    syncSingleForDevice: () => undefined,
    syncSgForCpu: () => undefined,
    syncSgForDevice: () => undefined,
    alloc: () => null,
    free: () => undefined,
    iovaTryAlloc: (_d, state, phys, size) => {
      const a = alloc(size + (phys % PAGE_SIZE));
      if (a === 0) return false;
      state.addr = a + (phys % PAGE_SIZE);
      state.size = size;
      return true;
    },
    iovaLink: (_d, state, phys, offset, size) => {
      if (machine.faultInjection.shouldFail('fake_link')) return -Errno.ENOMEM;
      f.links++;
      return mapRange(state.addr + offset, phys, size);
    },
    iovaSync: () => {
      f.syncs++;
      return 0;
    },
    iovaUnlink: (_d, state, offset, size) => {
      unmapRange(state.addr + offset, size);
    },
    iovaDestroy: (_d, state, mappedLen) => {
      unmapRange(state.addr, mappedLen);
    },
    iovaFree: () => undefined,
    translate: (_d, addr) => {
      const p = mapped.get(addr - (addr % PAGE_SIZE));
      return p === undefined ? DmaFaultReason.NOT_PRESENT : p + (addr % PAGE_SIZE);
    },
    getMergeBoundary: () => PAGE_SIZE - 1,
    maxMappingSize: () => Number.MAX_SAFE_INTEGER,
    optMappingSize: () => 128 * 1024,
    getRequiredMask: () => 2 ** 32 - 1,
  };
  return f;
}

/** A fake of the unmanaged-domain port: page map with permissions and dirty bits. */
export function fakeUnmanagedDomain(): IommuUnmanagedDomain & { dirty: Set<number> } {
  const map = new Map<number, { phys: number; prot: number }>();
  const dirty = new Set<number>();
  let tracking = false;
  const ops: DmaMapOps = {
    ...fakeIommuOps(createMachine({ ramBytes: 16 * SZ_1M, dmaDebug: 'off' })).ops,
    name: 'fake-unmanaged',
    translate: (_d, addr, write) => {
      const e = map.get(addr - (addr % PAGE_SIZE));
      if (e === undefined) return DmaFaultReason.NOT_PRESENT;
      if ((e.prot & (write ? IOMMU_UNMANAGED_WRITE : IOMMU_UNMANAGED_READ)) === 0) return DmaFaultReason.PERMISSION;
      if (write && tracking) dirty.add(addr - (addr % PAGE_SIZE));
      return e.phys + (addr % PAGE_SIZE);
    },
  };
  return {
    name: 'fake-unmanaged',
    granule: PAGE_SIZE,
    apertureEnd: 2 ** 48,
    dirtyTrackingSupported: true,
    dirty,
    attachDevice: (dev: Device) => {
      attachDmaOps(dev, ops);
      return 0;
    },
    detachDevice: (dev: Device) => {
      detachDmaOps(dev);
    },
    map: (iova, paddr, size, prot) => {
      if (iova % PAGE_SIZE !== 0 || paddr % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0 || size <= 0) return -Errno.EINVAL;
      for (let o = 0; o < size; o += PAGE_SIZE) map.set(iova + o, { phys: paddr + o, prot });
      return 0;
    },
    unmap: (iova, size) => {
      let n = 0;
      for (let o = 0; o < size; o += PAGE_SIZE) if (map.delete(iova + o)) n += PAGE_SIZE;
      return n;
    },
    iovaToPhys: (iova) => (map.get(iova - (iova % PAGE_SIZE))?.phys ?? -PAGE_SIZE) + (iova % PAGE_SIZE),
    setDirtyTracking: (en) => {
      tracking = en;
      if (en) dirty.clear();
      return 0;
    },
    readAndClearDirty: (iova, size, flags, bitmap) => {
      let n = 0;
      for (const p of [...dirty]) {
        if (p < iova || p >= iova + size) continue;
        const b = (p - iova) / PAGE_SIZE;
        bitmap[b >> 3] = (bitmap[b >> 3] ?? 0) | (1 << (b & 7));
        if ((flags & IOMMU_DIRTY_NO_CLEAR) === 0) dirty.delete(p);
        n++;
      }
      return n;
    },
  };
}

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

// Test fixture of this package only (never built or shipped, see tsconfig.build.json and the
// package.json "files"): a fake IOMMU for the PF's DMA API (so the two-step IOVA path runs without
// iommu-dma) and a fake of the dma-core unmanaged-domain port for the assigned VF. Full
// IOMMU-backed stacks live in apps/demo.
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

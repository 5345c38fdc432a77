/**
 * One host of the "vfio-migration" stack: a machine with an IOMMU, the mlx5 PF on its default DMA
 * domain, the VF assigned to the VM (its guest RAM mapped into an unmanaged domain at IOVA = GPA),
 * the simulated function and the mlx5 VFIO variant driver. Composition only: the models are
 * vfio-mlx5's (GuestMemory, Mlx5SimFunction, Mlx5VfPciCoreDevice) and iommu-dma's.
 */
import { SZ_1M, createMachine } from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';
import { createIommu, createUnmanagedDomain } from '@dmakit/iommu-dma';
import type { Iommu, UnmanagedIommuDomain } from '@dmakit/iommu-dma';
import { Mlx5SimFunction, Mlx5VfPciCoreDevice, createGuestMemory, destroyGuestMemory, vfioVmmTeardown } from '@dmakit/vfio-mlx5';
import type { GuestMemory, KvmGuest } from '@dmakit/vfio-mlx5';
import { VfioMigrationStop } from './vfioMigrationTypes.js';
import type { VfioMigrationIommuMode, VfioMigrationOptions } from './vfioMigrationTypes.js';

/** Guest RAM is split into this many memory slots, with a hole as large as a slot after each. */
export const GUEST_REGIONS = 8;

export interface VfioMigrationHost {
  readonly machine: Machine;
  readonly iommu: Iommu;
  readonly pf: Device;
  readonly vf: Device;
  readonly domain: UnmanagedIommuDomain;
  readonly fw: Mlx5SimFunction;
  readonly drv: Mlx5VfPciCoreDevice;
  /** The VM's RAM on this host (same layout on both hosts, different host pages). */
  readonly mem: GuestMemory;
  /** Pages allocated before guest RAM so the two hosts differ (given back at teardown). */
  readonly padding: number[];
}

export interface VfioMigrationHostConfig {
  readonly guestMiB: number;
  readonly stateBytes: number;
  readonly chunkBytes: number;
  readonly iommu: VfioMigrationIommuMode;
  /** Build the driver's migration buffers on the legacy scatterlist path. */
  readonly legacy: boolean;
}

export function buildHost(name: 'src' | 'dst', seed: number, o: VfioMigrationHostConfig, onMachine: VfioMigrationOptions['onMachine']): VfioMigrationHost {
  const machine = createMachine({ ramBytes: 512 * SZ_1M, seed, dmaDebug: 'warn' });
  onMachine?.(machine, name === 'src' ? 'source' : 'target');
  const iommu = createIommu(machine, { mode: o.iommu });
  const pf = machine.pci.addDevice({ name: `${name}/mlx5_core_pf`, dmaMaskBits: 64 });
  iommu.attachDevice(pf); // the host driver's default DMA domain (strict or lazy)
  const vf = machine.pci.addDevice({ name: `${name}/mlx5_vf`, dmaMaskBits: 64 });
  iommu.attachDevice(vf); // default domain at probe; VFIO then moves it to the unmanaged domain
  const domain = createUnmanagedDomain(iommu);
  const regionBytes = (o.guestMiB * SZ_1M) / GUEST_REGIONS;
  const regions = Array.from({ length: GUEST_REGIONS }, (_, r) => ({ iova: r * 2 * regionBytes, length: regionBytes }));
  // Some pages first so the two hosts back the guest with different host pages.
  const padding: number[] = [];
  for (let i = 0; i < (seed % 7) + 1; i++) {
    const p = machine.memory.allocPages(0);
    if (p !== 0) padding.push(p);
  }
  const freePadding = (): void => {
    for (const p of padding.splice(0)) machine.memory.freePages(p, 0);
  };
  const mem = createGuestMemory(machine, domain, regions);
  if (typeof mem === 'number') {
    freePadding();
    throw new VfioMigrationStop(`${name}: guest RAM setup (VFIO_IOMMU_MAP_DMA)`, mem);
  }
  const attached = domain.attachDevice(vf);
  if (attached !== 0) {
    destroyGuestMemory(machine, domain, mem);
    freePadding();
    throw new VfioMigrationStop(`${name}: attach to the unmanaged domain`, attached);
  }
  const fw = new Mlx5SimFunction({ machine, pf, vf, stateBytes: o.stateBytes, queues: 8, caps: { chunkBytes: o.chunkBytes }, seed: seed * 31 + 7, vhcaId: seed });
  const drv = new Mlx5VfPciCoreDevice({ machine, fw, name: `${name}/vfio-mlx5`, legacySgBuffers: o.legacy });
  return { machine, iommu, pf, vf, domain, fw, drv, mem, padding };
}

/**
 * Shut the VM down on one host (success or failure, whatever state the migration left): the VMM
 * closes the VF's fds and gives guest RAM back (vfio-mlx5's vfioVmmTeardown), then the padding
 * pages go. Afterwards the host holds nothing the stack allocated. Safe to call twice.
 */
export function teardownHost(h: VfioMigrationHost, guest: KvmGuest | null = null): void {
  vfioVmmTeardown({ machine: h.machine, vdev: h.drv.vdev, dev: h.vf, domain: h.domain, memory: h.mem, guest });
  for (const p of h.padding.splice(0)) h.machine.memory.freePages(p, 0);
}

/**
 * The dmabuf-p2p stack's topology and wiring: which PCI devices sit where, which IOMMU they are
 * behind, and which package implementation is plugged into which contract (block-rq-dma's mapper
 * into the NVMe drive, hmm's port into the mlx5 devices). The models themselves live in the
 * packages: `NvmePremappedDrive` (nvme-pci), `Mlx5RcPair` and the dma-buf MR (rdma-umem-odp).
 */
import { createBlkRqDmaMapper } from '@dmakit/block-rq-dma';
import { errnoName, SZ_1M } from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';
import { createHmmPort } from '@dmakit/hmm';
import { createIommu } from '@dmakit/iommu-dma';
import type { Iommu } from '@dmakit/iommu-dma';
import { NvmePremappedDrive, nvmeBarSize } from '@dmakit/nvme-pci';
import { IB_ACCESS_LOCAL_WRITE, IB_ACCESS_REMOTE_READ, IB_ACCESS_REMOTE_WRITE, Mlx5IbDev, Mlx5RcPair } from '@dmakit/rdma-umem-odp';

/** The devices of one dmabuf-p2p machine. */
export interface DmabufRig {
  readonly machine: Machine;
  readonly iommu: Iommu | null;
  readonly gpuDev: Device;
  readonly nvme: Device;
  readonly nic: Device;
  /** The remote HCA the NIC talks to (loopback fabric), under a third root port. */
  readonly peerNic: Device;
  readonly vfioDev: Device;
}

/** Access rights of every RDMA MR of the stack. */
export const RDMA_RW = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_REMOTE_WRITE;
/** Logical block size of the drive. */
export const LBA = 4096;

/**
 * The topology: hb0 (allow-listed) ── rpA ── switch ── {gpu0, nvme0, vfio0}; hb0 ── rpB ── mlx5_0;
 * hb0 ── rpC ── mlx5_1 (the remote end of the RDMA connection). Every device is behind the IOMMU
 * unless `mode` is 'off'.
 */
export function buildDmabufTopology(machine: Machine, mode: 'strict' | 'lazy' | 'off', allowListed = true): DmabufRig {
  const pci = machine.pci;
  const hb = pci.addHostBridge({ p2pAllowed: allowListed, name: allowListed ? 'pci0000:00 (allow-listed)' : 'pci0000:00 (not on the allow-list)' });
  const sw = pci.addSwitch(pci.addRootPort(hb), { downstreamPorts: 3 });
  const [d0, d1, d2] = sw.downstreamPorts;
  const seg = { dmaMaskBits: 64, maxSegmentSize: 0xffff_f000 };
  const gpuDev = pci.addDevice({ name: 'gpu0', ...seg, ...(d0 === undefined ? {} : { parent: d0 }), bars: [{ size: SZ_1M }, { size: 64 * SZ_1M, prefetch: true, p2p: true }] });
  const nvme = pci.addDevice({ name: 'nvme0', ...seg, ...(d1 === undefined ? {} : { parent: d1 }), bars: [{ size: nvmeBarSize(4), is64: true }] });
  const vfioDev = pci.addDevice({ name: 'vfio0', ...seg, ...(d2 === undefined ? {} : { parent: d2 }), bars: [{ size: SZ_1M }, { size: 8 * SZ_1M, prefetch: true }] });
  const nic = pci.addDevice({ name: 'mlx5_0', ...seg, parent: pci.addRootPort(hb) });
  const peerNic = pci.addDevice({ name: 'mlx5_1', ...seg, parent: pci.addRootPort(hb) });
  // x86: dma-debug's cacheline-overlap check is off (dma_get_cache_alignment() == 1).
  machine.dmaDebug.cacheAlignment = 1;
  const iommu = mode === 'off' ? null : createIommu(machine, { mode });
  if (iommu !== null) for (const d of [gpuDev, nvme, vfioDev, nic, peerNic]) iommu.attachDevice(d);
  return { machine, iommu, gpuDev, nvme, nic, peerNic, vfioDev };
}

/** The NVMe drive on `rig.nvme` (`lbas` 4 KiB blocks), block-rq-dma behind its pre-mapped mapper, probed. */
export function createDmabufDrive(rig: DmabufRig, lbas: number): NvmePremappedDrive {
  const drive = new NvmePremappedDrive(rig.machine, rig.nvme, createBlkRqDmaMapper(), { lbaSize: LBA, capacityLbas: lbas, maxQueues: 4 });
  const err = drive.probe();
  if (err !== 0) {
    drive.remove(); // nvme_probe's error path: nothing of the driver stays
    throw new DmabufSetupError(`nvme probe -${errnoName(err)}: ${drive.host.lastError}`);
  }
  return drive;
}

/** Setting up the stack failed with an errno (the part that failed gave back what it held). */
export class DmabufSetupError extends Error {
  override readonly name = 'DmabufSetupError';
}

/** Undo actions run in reverse order (the kernel's goto-unwind labels). */
export class Unwind {
  readonly #fns: (() => void)[] = [];
  push(fn: () => void): void {
    this.#fns.push(fn);
  }
  run(): void {
    for (let fn = this.#fns.pop(); fn !== undefined; fn = this.#fns.pop()) fn();
  }
}

/** mlx5_0 (the NIC) and mlx5_1 (its peer) connected by an RC QP pair, on the HMM port, in a new process. */
export function createDmabufFabric(rig: DmabufRig): Mlx5RcPair {
  const m = rig.machine;
  const hmm = createHmmPort();
  const local = new Mlx5IbDev({ dev: rig.nic, hmm, scheduler: m.scheduler, name: 'mlx5_0' });
  const remote = new Mlx5IbDev({ dev: rig.peerNic, hmm, scheduler: m.scheduler, name: 'mlx5_1' });
  return new Mlx5RcPair(local, remote, m.createProcess().mm);
}

/** Byte-wise equality. */
export function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

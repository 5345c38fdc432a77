/**
 * Steps 4 and 5 of the dmabuf-p2p stack, the edges of P2P sharing: a VFIO BAR export revoked by
 * memory decode off and restored (the NIC's dma-buf MR is zapped by move_notify, an access while
 * revoked fails with -ENODEV, the next one maps again), and a host bridge that is not on the P2P
 * allow-list (the NIC is refused with -EINVAL, the drive under the switch still maps by bus
 * address, a GPU buffer moves to system memory for the NIC). The importers are the real ones: the
 * mlx5 dma-buf MR (rdma-umem-odp) and the NVMe pre-mapped buffer (nvme-pci).
 */
import { createMachine, Errno, errnoName, isErrPtr, PAGE_SIZE, SZ_1M } from '@dmakit/dma-core';
import type { DmaBuf, DmaBufPort, Machine } from '@dmakit/dma-core';
import { DmaBufFdTable, GpuVramExporter, SystemHeap, VfioPciCoreDevice, createDmaBufPort, dmaBufFd, dmaBufSgtMode, dmaBufVmapUnlocked, dmaBufVunmapUnlocked } from '@dmakit/dmabuf';
import type { IosysMap } from '@dmakit/dmabuf';
import { IbWcStatus, mlx5IbDeregDmabufMr, mlx5IbRegUserMrDmabuf } from '@dmakit/rdma-umem-odp';
import type { Mlx5DmabufMr, Mlx5RcPair } from '@dmakit/rdma-umem-odp';
import { DmabufSetupError, RDMA_RW, Unwind, buildDmabufTopology, createDmabufDrive, createDmabufFabric, same } from './dmabufP2pRig.js';
import type { DmabufRig } from './dmabufP2pRig.js';
import { wcStatusName } from './dmabufP2pSteps.js';
import type { DmabufStepResult } from './dmabufP2pSteps.js';

const BAR_IOVA = 0x3000_0000;
const SRC_IOVA = 0x4000_0000;

/** A system-heap buffer on the peer HCA, registered as an MR and mapped for the CPU. */
interface PeerBuffer {
  readonly fd: number;
  readonly mr: Mlx5DmabufMr;
  readonly view: IosysMap;
  readonly buf: DmaBuf;
}

function peerBuffer(fds: DmaBufFdTable, port: DmaBufPort, heap: SystemHeap, fabric: Mlx5RcPair, size: number): PeerBuffer | string {
  const buf = heap.allocate(size, 'rdma-peer');
  if (isErrPtr(buf)) return `heap allocation -${errnoName(buf)}`;
  const fd = dmaBufFd(fds, buf);
  const mr = mlx5IbRegUserMrDmabuf(fabric.remote, fabric.pdRemote, port, 0, size, SRC_IOVA, fd, RDMA_RW);
  if (isErrPtr(mr)) {
    fds.close(fd);
    return `peer MR registration -${errnoName(mr)}`;
  }
  const view = dmaBufVmapUnlocked(buf);
  if (isErrPtr(view)) {
    mlx5IbDeregDmabufMr(mr);
    fds.close(fd);
    return `vmap -${errnoName(view)}`;
  }
  return { fd, mr, view, buf };
}

function dropPeerBuffer(fds: DmaBufFdTable, p: PeerBuffer): void {
  dmaBufVunmapUnlocked(p.buf, p.view);
  mlx5IbDeregDmabufMr(p.mr);
  fds.close(p.fd);
}

/** Step 4: the VFIO exporter's BAR ranges, written and read by the peer HCA through the NIC's dma-buf MR; revoked and restored. */
export function vfioRevoke(m: Machine, fds: DmaBufFdTable, port: DmaBufPort, heap: SystemHeap, rig: DmabufRig, fabric: Mlx5RcPair): DmabufStepResult {
  const step = 'VFIO BAR export, revoke and restore';
  // An errno on the way gives back what the step took (in reverse) and becomes the step's error.
  const undo = new Unwind();
  const fail = (error: string): DmabufStepResult => {
    undo.run();
    return { step, device: rig.vfioDev.name, bytes: 0, verified: false, detail: error, error };
  };
  const vdev = new VfioPciCoreDevice(m, rig.vfioDev);
  const ranges = [
    { offset: 0, length: SZ_1M },
    { offset: 4 * SZ_1M, length: SZ_1M },
  ];
  const created = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: ranges });
  if (isErrPtr(created)) return fail(`VFIO_DEVICE_FEATURE_DMA_BUF -${errnoName(created)}`);
  // A static importer is refused: a BAR can only be shared with importers that allow P2P.
  const notP2p = port.dmaBufAttach(created, rig.nic);
  const fd = dmaBufFd(fds, created);
  undo.push(() => {
    fds.close(fd);
  });
  const peer = peerBuffer(fds, port, heap, fabric, 2 * SZ_1M);
  if (typeof peer === 'string') return fail(peer);
  undo.push(() => {
    dropPeerBuffer(fds, peer);
  });
  const mr = mlx5IbRegUserMrDmabuf(fabric.local, fabric.pdLocal, port, 0, 2 * SZ_1M, BAR_IOVA, fd, RDMA_RW);
  if (isErrPtr(mr)) return fail(`BAR MR registration -${errnoName(mr)}`);
  // The peer RDMA-WRITEs 2 MiB into the BAR ranges: the NIC's first access faults and maps them.
  const data = m.rng.fill(new Uint8Array(2 * SZ_1M));
  peer.view.write(0, data);
  const w1 = fabric.rdmaWrite(peer.mr, 0, mr, 0, 2 * SZ_1M);
  const bar = rig.vfioDev.bus as { bar(i: number): { start: number } | undefined } | null;
  const start = bar?.bar(1)?.start ?? 0;
  const landed = same(m.memory.read(start, SZ_1M), data.subarray(0, SZ_1M)) && same(m.memory.read(start + 4 * SZ_1M, SZ_1M), data.subarray(SZ_1M));
  // Memory decode off: the exporter revokes; move_notify zaps the MTT and unmaps.
  vdev.setMemoryDecode(false);
  const revoked = !mr.mapped && mr.umem.stats.moveNotifies === 1;
  const whileRevoked = fabric.rdmaRead(mr, 0, peer.mr, 0, PAGE_SIZE);
  const revokedErr = mr.lastError;
  fabric.reconnect(); // the access error took the QP to the error state
  vdev.setMemoryDecode(true);
  peer.view.write(0, new Uint8Array(2 * SZ_1M));
  const r2 = fabric.rdmaRead(mr, 0, peer.mr, 0, 2 * SZ_1M);
  const back = peer.view.read(0, 2 * SZ_1M);
  mlx5IbDeregDmabufMr(mr);
  undo.run();
  const wcError = [w1, r2].find((x) => x !== IbWcStatus.IB_WC_SUCCESS);
  const ok =
    notP2p === -Errno.EOPNOTSUPP &&
    w1 === IbWcStatus.IB_WC_SUCCESS &&
    landed &&
    revoked &&
    whileRevoked !== IbWcStatus.IB_WC_SUCCESS &&
    revokedErr === -Errno.ENODEV &&
    r2 === IbWcStatus.IB_WC_SUCCESS &&
    same(back, data) &&
    vdev.dmabufCount === 0;
  return {
    step,
    device: rig.vfioDev.name,
    bytes: 4 * SZ_1M,
    verified: ok,
    ...(wcError !== undefined ? { error: wcStatusName(wcError) } : {}),
    detail: `static importer ${isErrPtr(notP2p) ? errnoName(notP2p) : 'attached?'}; decode off → move_notify, map ${revokedErr === 0 ? 'ok?' : errnoName(revokedErr)}; decode on → re-mapped, bytes verified`,
  };
}

/** Step 5: a second machine whose host bridge is not on the P2P allow-list. */
export function notAllowListed(seed: number, mode: 'strict' | 'lazy' | 'off', onMachine: ((m: Machine, role: string) => void) | undefined): DmabufStepResult {
  const m = createMachine({ ramBytes: 256 * SZ_1M, seed, dmaDebug: 'warn' });
  onMachine?.(m, 'not-allow-listed host');
  const rig = buildDmabufTopology(m, mode, false);
  const fds = new DmaBufFdTable();
  const port = createDmaBufPort(fds);
  const step = 'host bridge not on the P2P allow-list';
  const undo = new Unwind();
  const fail = (error: string): DmabufStepResult => {
    undo.run();
    return { step, device: rig.nic.name, bytes: 0, verified: false, detail: error, error };
  };
  const fabric = createDmabufFabric(rig);
  const heap = new SystemHeap(m);
  const peer = peerBuffer(fds, port, heap, fabric, SZ_1M);
  if (typeof peer === 'string') return fail(peer);
  undo.push(() => {
    dropPeerBuffer(fds, peer);
  });
  // An MMIO-only exporter (VFIO BAR): dma_buf_phys_vec_to_sgt sees NOT_SUPPORTED for the NIC.
  const vdev = new VfioPciCoreDevice(m, rig.vfioDev);
  const vbuf = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: SZ_1M }] });
  if (isErrPtr(vbuf)) return fail(`VFIO_DEVICE_FEATURE_DMA_BUF -${errnoName(vbuf)}`);
  const vfd = dmaBufFd(fds, vbuf);
  undo.push(() => {
    fds.close(vfd);
  });
  const mrBar = mlx5IbRegUserMrDmabuf(fabric.local, fabric.pdLocal, port, 0, SZ_1M, BAR_IOVA, vfd, RDMA_RW);
  if (isErrPtr(mrBar)) return fail(`BAR MR registration -${errnoName(mrBar)}`);
  const st1 = fabric.rdmaRead(mrBar, 0, peer.mr, 0, PAGE_SIZE);
  const refused = mrBar.lastError;
  const warned = m.pci.log.find((l) => l.includes('cannot be used for peer-to-peer DMA')) ?? '';
  mlx5IbDeregDmabufMr(mrBar);
  // The drive under the same switch as the BAR: bus addresses, no host bridge involved.
  let drive;
  try {
    drive = createDmabufDrive(rig, 256);
  } catch (err) {
    if (!(err instanceof DmabufSetupError)) throw err;
    return fail(err.message);
  }
  const pre = drive.register(port, vfd);
  const nearMode = isErrPtr(pre) ? 'failed' : pre.sgt === null ? 'unmapped' : (dmaBufSgtMode(pre.sgt) ?? 'sg');
  if (!isErrPtr(pre)) drive.unregister(pre);
  drive.remove();
  if (isErrPtr(pre)) return fail(`nvme dma-buf register -${errnoName(pre)}`);
  // A GPU exporter does what amdgpu does: the buffer moves to system memory for that importer.
  const gpu = new GpuVramExporter(m, rig.gpuDev);
  const gbuf = gpu.exportBuffer(SZ_1M);
  if (isErrPtr(gbuf)) return fail(`GPU export -${errnoName(gbuf)}`);
  const frame = m.rng.fill(new Uint8Array(SZ_1M));
  gpu.gpuWrite(gbuf, 0, frame);
  const gfd = dmaBufFd(fds, gbuf);
  undo.push(() => {
    fds.close(gfd);
  });
  const mrGpu = mlx5IbRegUserMrDmabuf(fabric.local, fabric.pdLocal, port, 0, SZ_1M, BAR_IOVA, gfd, RDMA_RW);
  if (isErrPtr(mrGpu)) return fail(`GPU MR registration -${errnoName(mrGpu)}`);
  fabric.reconnect(); // the refused access took the QP to the error state
  const st2 = fabric.rdmaRead(mrGpu, 0, peer.mr, 0, SZ_1M);
  const placement = gpu.placement(gbuf) ?? '?';
  const readBack = same(peer.view.read(0, SZ_1M), frame);
  mlx5IbDeregDmabufMr(mrGpu);
  undo.run();
  fds.closeAll();
  const ok =
    st1 !== IbWcStatus.IB_WC_SUCCESS &&
    refused === -Errno.EINVAL &&
    warned !== '' &&
    nearMode === 'bus-addr' &&
    st2 === IbWcStatus.IB_WC_SUCCESS &&
    readBack &&
    placement === 'system' &&
    m.dmaDebug.entries === 0;
  return {
    step,
    device: rig.nic.name,
    bytes: 0,
    verified: ok,
    // The refused BAR access must fail for the P2P reason (-EINVAL); any other failure of it (the
    // peer's own MR could not be mapped) is an error the step got, not the refusal it checks.
    ...(st1 !== IbWcStatus.IB_WC_SUCCESS && refused !== -Errno.EINVAL ? { error: `${wcStatusName(st1)} (BAR MR access failed before the P2P check)` } : st2 !== IbWcStatus.IB_WC_SUCCESS ? { error: wcStatusName(st2) } : placement !== 'system' ? { error: `GPU buffer not moved to system memory for the NIC (placement ${placement})` } : {}),
    detail: `VFIO BAR: NIC map ${refused === 0 ? 'ok?' : errnoName(refused)} (pci: "...${warned.slice(13, 60)}..."), drive under the switch: ${nearMode}; GPU buffer: moved to ${placement} memory for the NIC`,
  };
}

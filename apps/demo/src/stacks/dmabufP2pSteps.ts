/**
 * Steps 1 to 3 of the dmabuf-p2p stack, the workload over the GPU buffer: the drive reads a file
 * into it (P2P through the switch), the peer HCA RDMA-READs it through the NIC's dma-buf MR
 * (through the host bridge), then traffic of both while the GPU evicts and restores it. Each
 * step checks bytes and returns one line of the report.
 */
import { BlkStatus, errnoName, ReqOp } from '@dmakit/dma-core';
import type { DmaBuf, Machine } from '@dmakit/dma-core';
import { dmaBufSgtMode } from '@dmakit/dmabuf';
import type { GpuVramExporter, IosysMap } from '@dmakit/dmabuf';
import type { IommuStats } from '@dmakit/iommu-dma';
import type { NvmePremappedBuffer, NvmePremappedDrive } from '@dmakit/nvme-pci';
import { IbWcStatus } from '@dmakit/rdma-umem-odp';
import type { Mlx5DmabufMr, Mlx5RcPair } from '@dmakit/rdma-umem-odp';
import { LBA, same } from './dmabufP2pRig.js';
import type { DmabufRig } from './dmabufP2pRig.js';

/** One line of the report. */
export interface DmabufStepResult {
  readonly step: string;
  readonly device: string;
  readonly bytes: number;
  readonly verified: boolean;
  readonly detail: string;
  /**
   * The first errno or status an operation of the step returned (an allocation failed under it):
   * the step is then not verified because of that error, and the stack reports it as its failure.
   */
  readonly error?: string;
}

/** `BLK_STS_*` name of a block status. */
export function blkStatusName(st: number): string {
  return `BLK_STS_${Object.entries(BlkStatus).find(([, v]) => v === st)?.[0] ?? String(st)}`;
}

/** `IB_WC_*` name of a work completion status. */
export function wcStatusName(st: number): string {
  return Object.entries(IbWcStatus).find(([, v]) => v === st)?.[0] ?? `status ${st}`;
}

/** Traffic rounds of step 3 (one progress unit each). */
export const TRAFFIC_ROUNDS = 24;

/** What the steps share: the rig, the GPU buffer and its importers, the files on the drive. */
export interface DmabufWorkload {
  readonly m: Machine;
  readonly rig: DmabufRig;
  readonly gpu: GpuVramExporter;
  readonly buf: DmaBuf;
  readonly drive: NvmePremappedDrive;
  readonly pre: NvmePremappedBuffer;
  readonly fabric: Mlx5RcPair;
  readonly mrGpu: Mlx5DmabufMr;
  readonly mrSink: Mlx5DmabufMr;
  readonly sinkMap: IosysMap;
  readonly fileA: Uint8Array;
  readonly fileB: Uint8Array;
  readonly fileBytes: number;
  readonly tick: () => void;
}

function stats(w: DmabufWorkload): IommuStats | null {
  return w.rig.iommu === null ? null : w.rig.iommu.stats();
}

/** 1. The drive reads file A into GPU memory: 128 KiB READ commands into the pre-mapped buffer. */
export function driveReadsFile(w: DmabufWorkload): DmabufStepResult {
  const { drive, pre, fileBytes } = w;
  const before = stats(w);
  const CMD = 128 * 1024;
  let bad = 0;
  let error: string | undefined;
  for (let off = 0; off < fileBytes; off += CMD) {
    const st = drive.io(pre, ReqOp.READ, off / LBA, off, CMD);
    if (st !== BlkStatus.OK) {
      bad++;
      error ??= blkStatusName(st);
    }
  }
  const after = stats(w);
  const back = w.gpu.gpuRead(w.buf, 0, fileBytes);
  const noIova = before === null || after === null || after.iovaAllocs - before.iovaAllocs <= 2; // PRP-list pool pages only
  const ok = bad === 0 && pre.busAddr && noIova && back instanceof Uint8Array && same(back, w.fileA) && drive.mapper.stats.remaps === 0;
  return {
    step: 'drive reads a file into GPU memory (P2P, same switch)',
    device: w.rig.nvme.name,
    bytes: fileBytes,
    verified: ok,
    ...(error !== undefined ? { error } : {}),
    detail: `${fileBytes / CMD} READ commands, pre-mapped by ${pre.busAddr ? 'PCI bus address' : 'DMA address'} (${pre.sgt?.nents ?? 0} segments, mapped once), no per-I/O mapping`,
  };
}

/**
 * 2. The peer HCA RDMA-READs the buffer through the NIC's dma-buf MR: the first access faults and
 * maps the whole buffer through the host bridge (one IOVA range, MMIO links).
 */
export function nicServesMr(w: DmabufWorkload): DmabufStepResult {
  const { mrGpu, fileBytes } = w;
  const iommu = w.rig.iommu;
  const before = stats(w);
  const st = w.fabric.rdmaRead(mrGpu, 0, w.mrSink, 0, fileBytes);
  const after = stats(w);
  const mapMode = mrGpu.umem.sgt === null ? 'unmapped' : (dmaBufSgtMode(mrGpu.umem.sgt) ?? 'sg');
  const d = (k: keyof IommuStats): number => (after === null || before === null ? 0 : after[k] - before[k]);
  const want = iommu === null ? 'map-phys' : 'iova';
  const error = st === IbWcStatus.IB_WC_SUCCESS ? undefined : wcStatusName(st);
  const ok = st === IbWcStatus.IB_WC_SUCCESS && mapMode === want && same(w.sinkMap.read(0, fileBytes), w.fileA) && mrGpu.stats.pageFaults === 1;
  return {
    step: `NIC serves it as an RDMA MR through the host bridge (${iommu === null ? 'dma_map_phys + MMIO' : 'IOVA + MMIO'})`,
    device: w.rig.nic.name,
    bytes: fileBytes,
    verified: ok,
    ...(error !== undefined ? { error } : {}),
    detail: `RDMA READ by mlx5_1: 1 page fault mapped ${mapMode} (${mrGpu.umem.sgt?.nents ?? 0} segment(s)); IOMMU: ${d('iovaAllocs')} IOVA allocs, ${d('pteWrites')} PTE writes`,
  };
}

/**
 * 3. Traffic while the GPU evicts and restores: the drive reads file B chunks into the buffer and
 * writes chunks back to a scratch region, the peer RDMA-READs chunks; the eviction lands while a
 * drive READ is in flight (its unmap waits for the completion).
 */
export function trafficUnderEviction(w: DmabufWorkload): DmabufStepResult {
  const { m, gpu, buf, drive, pre, mrGpu, fileBytes, fileB } = w;
  const fileLbas = fileBytes / LBA;
  const CH = 256 * 1024;
  const chunks = fileBytes / CH;
  const shadow = w.fileA.slice();
  let ok = true;
  let bytes = 0;
  let evictRc = 0;
  let restoreRc = 0;
  let error: string | undefined;
  const blk = (st: number): boolean => {
    if (st !== BlkStatus.OK) error ??= blkStatusName(st);
    return st === BlkStatus.OK;
  };
  const wc = (st: number): boolean => {
    if (st !== IbWcStatus.IB_WC_SUCCESS) error ??= wcStatusName(st);
    return st === IbWcStatus.IB_WC_SUCCESS;
  };
  const placements: string[] = [];
  for (let r = 0; r < TRAFFIC_ROUNDS; r++) {
    const off = ((r * 5) % chunks) * CH;
    if (r === 8) {
      // In flight: submit, then evict before the controller runs.
      if (!blk(drive.submit(pre, ReqOp.READ, fileLbas + off / LBA, off, CH))) ok = false;
      evictRc = gpu.evict(buf);
      if (evictRc !== 0) error ??= `evict -${errnoName(evictRc)}`;
      placements.push(gpu.placement(buf) ?? '?');
      const mark = drive.statuses.length;
      m.scheduler.runUntilIdle();
      if (!drive.statuses.slice(mark).every((x) => blk(x))) ok = false;
      shadow.set(fileB.subarray(off, off + CH), off);
      bytes += CH;
      w.tick();
      continue;
    }
    if (r === 16) {
      restoreRc = gpu.restore(buf);
      if (restoreRc !== 0) error ??= `restore -${errnoName(restoreRc)}`;
      placements.push(gpu.placement(buf) ?? '?');
    }
    switch (r % 3) {
      case 0:
        if (!blk(drive.io(pre, ReqOp.READ, fileLbas + off / LBA, off, CH))) ok = false;
        shadow.set(fileB.subarray(off, off + CH), off);
        break;
      case 1:
        if (!wc(w.fabric.rdmaRead(mrGpu, off, w.mrSink, off, CH))) ok = false;
        if (!same(w.sinkMap.read(off, CH), shadow.subarray(off, off + CH))) ok = false;
        break;
      default: {
        if (!blk(drive.io(pre, ReqOp.WRITE, 2 * fileLbas + off / LBA, off, CH))) ok = false;
        const onDisk = drive.ctrl.namespace(1)?.readLbas(2 * fileLbas + off / LBA, CH / LBA);
        if (onDisk === undefined || !same(onDisk, shadow.subarray(off, off + CH))) ok = false;
      }
    }
    bytes += CH;
    w.tick();
  }
  const back = gpu.gpuRead(buf, 0, fileBytes);
  ok = ok && evictRc === 0 && restoreRc === 0 && back instanceof Uint8Array && same(back, shadow) && pre.stats.moveNotifies === 2 && mrGpu.umem.stats.moveNotifies === 2;
  return {
    step: 'GPU evicts and restores the buffer under traffic',
    device: w.rig.gpuDev.name,
    bytes,
    verified: ok,
    ...(error !== undefined ? { error } : {}),
    detail: `placements ${placements.join(' → ')}; move_notify nvme ${pre.stats.moveNotifies} (deferred ${pre.stats.deferredUnmaps}), rdma ${mrGpu.umem.stats.moveNotifies}; re-maps nvme ${pre.stats.maps - 1}, rdma ${mrGpu.umem.stats.maps - 1} (page faults ${mrGpu.stats.pageFaults}); copied ${gpu.stats.bytesCopied} bytes`,
  };
}

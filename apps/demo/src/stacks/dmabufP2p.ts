/**
 * The "dmabuf-p2p" stack: a GPU, an NVMe drive and an RDMA NIC in one PCI topology. The GPU and
 * the drive share a switch; the NIC sits under another root port of the same (allow-listed) host
 * bridge; every device is behind the IOMMU.
 *
 *   1. the drive reads a file straight into GPU memory (BUS_ADDR: the switch routes it, the IOMMU
 *      never sees it);
 *   2. the NIC reads the same buffer through the host bridge (one IOVA range, MMIO links, one sync);
 *   3. the GPU evicts the buffer to system memory and restores it while both keep transferring
 *      (move_notify, re-map, fence wait, bytes verified);
 *   4. a VFIO-owned function exports BAR ranges; memory decode off revokes them (-ENODEV) and on
 *      restores them;
 *   5. a machine whose host bridge is not on the P2P allow-list refuses the NIC the way the kernel
 *      does (-EINVAL from dma_buf_map_attachment, "cannot be used for peer-to-peer DMA").
 *
 * The drive is the real NVMe stack (nvme-pci host driver + simulated controller) with the GPU
 * buffer registered as a pre-mapped I/O buffer (`NvmePremappedMapper`: no per-I/O mapping); the
 * NIC is the mlx5-like HCA with a dma-buf MR (`mlx5IbRegUserMrDmabuf`: mapped on first fault,
 * zapped on move_notify), read by a second HCA over RC RDMA READ. The VFIO and allow-list steps
 * use a small generic importer (`DmaBufImporter`) on the same devices.
 */
import {
  BlkStatus,
  createMachine,
  DMA_BIDIRECTIONAL,
  DMA_RESV_USAGE_KERNEL,
  Errno,
  errnoName,
  isErrPtr,
  MAX_SCHEDULE_TIMEOUT,
  PAGE_SIZE,
  ReqOp,
  SZ_1G,
  SZ_1M,
} from '@dmakit/dma-core';
import type { Device, DmaBuf, DmaBufAttachment, DmaBufPort, Machine, SgTable } from '@dmakit/dma-core';
import { bioFromRanges, blkRqFromBio, createBlkRqDmaMapper } from '@dmakit/block-rq-dma';
import { createHmmPort } from '@dmakit/hmm';
import { createIommu } from '@dmakit/iommu-dma';
import type { Iommu, IommuStats } from '@dmakit/iommu-dma';
import {
  DmaBufFdTable,
  GpuVramExporter,
  SystemHeap,
  VfioPciCoreDevice,
  createDmaBufPort,
  dmaBufFd,
  dmaBufMappingStats,
  dmaBufSgtMode,
  dmaBufVmapUnlocked,
  dmaBufVunmapUnlocked,
} from '@dmakit/dmabuf';
import { NvmeController, NvmeDev, NvmePremappedMapper, nvmeBarSize } from '@dmakit/nvme-pci';
import type { NvmePremappedBuffer } from '@dmakit/nvme-pci';
import {
  Hca,
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_REMOTE_READ,
  IB_ACCESS_REMOTE_WRITE,
  IB_WR_RDMA_READ,
  IbWcStatus,
  Mlx5IbDev,
  mlx5IbDeregDmabufMr,
  mlx5IbRegUserMrDmabuf,
} from '@dmakit/rdma-umem-odp';
import type { HcaCq, HcaQp, IbPd, Mlx5DmabufMr } from '@dmakit/rdma-umem-odp';
import { checkRequest, progressReporter } from './types.js';
import type { StackDef } from './types.js';

export interface DmabufStepResult {
  readonly step: string;
  readonly device: string;
  readonly bytes: number;
  readonly verified: boolean;
  readonly detail: string;
}

export interface DmabufP2pResult {
  readonly stack: 'dmabuf-p2p';
  readonly verified: boolean;
  readonly verifiedBytes: number;
  readonly steps: DmabufStepResult[];
  /** The IOMMU's mode and counters, or null with --iommu off (dma-direct: per-range MMIO maps). */
  readonly iommu: { readonly mode: 'strict' | 'lazy'; readonly stats: IommuStats; readonly faults: number } | null;
  readonly moveNotifies: number;
  readonly remaps: number;
  readonly dmaDebugReports: number;
  readonly simulatedNs: number;
  /** Live dma-buf mappings, IOVA states and dma-debug entries after teardown (all 0 = no leak). */
  readonly leaks: { readonly mappings: number; readonly iovaStates: number; readonly debugEntries: number; readonly vramPages: number };
}

export interface DmabufP2pOptions {
  readonly seed?: number;
  readonly machine?: Machine;
  /** IOMMU mode for every device (default strict); 'off' = dma-direct. */
  readonly iommu?: 'strict' | 'lazy' | 'off';
  /** Bytes of the "file" the drive reads into GPU memory (a multiple of 256 KiB up to 32 MiB, default 4 MiB). */
  readonly fileBytes?: number;
  /** Called with every machine the stack creates itself, before any DMA ('host' unless `machine` is given; 'not-allow-listed host'). */
  readonly onMachine?: (m: Machine, role: string) => void;
  /** Progress in units of work: steps 1 and 2, the 24 traffic rounds of step 3, steps 4, 5 and the teardown. */
  readonly onProgress?: (done: number, total: number) => void;
}

const TRAFFIC_ROUNDS = 24;
const DMABUF_P2P_UNITS = TRAFFIC_ROUNDS + 5;

/**
 * A dynamic importer as NVMe and RDMA drivers do it: map the whole buffer on first use, wait for
 * the kernel fences before using a new mapping, drop it in move_notify, map again on next use.
 */
export class DmaBufImporter {
  readonly attach: DmaBufAttachment;
  sgt: SgTable | null = null;
  moveNotifies = 0;
  maps = 0;
  lastError = 0;

  constructor(
    readonly port: DmaBufPort,
    readonly buf: DmaBuf,
    readonly dev: Device,
  ) {
    const a = port.dmaBufDynamicAttach(buf, dev, {
      allowPeer2peer: true,
      moveNotify: (at) => {
        this.moveNotifies++;
        if (this.sgt !== null) port.dmaBufUnmapAttachment(at, this.sgt, DMA_BIDIRECTIONAL);
        this.sgt = null;
      },
    });
    if (isErrPtr(a)) throw new Error(`${dev.name}: dma_buf_dynamic_attach failed: ${errnoName(a)}`);
    this.attach = a;
  }

  /** The current mapping, mapping it (and waiting for the move fence) if needed; null on error. */
  ensure(): SgTable | null {
    if (this.sgt !== null) return this.sgt;
    const s = this.port.dmaBufMapAttachmentUnlocked(this.attach, DMA_BIDIRECTIONAL);
    if (isErrPtr(s)) {
      this.lastError = s;
      return null;
    }
    this.port.dmaResvWaitTimeout(this.buf.resv, DMA_RESV_USAGE_KERNEL, false, MAX_SCHEDULE_TIMEOUT);
    this.maps++;
    this.sgt = s;
    return s;
  }

  /** The device moves `len` bytes at buffer offset `off` (write: into the buffer). -errno or 0. */
  transfer(off: number, len: number, data: Uint8Array, write: boolean): number {
    const s = this.ensure();
    if (s === null) return this.lastError;
    let base = 0;
    let done = 0;
    for (let i = 0; i < s.nents && done < len; i++) {
      const segLen = s.dmaLength[i] ?? 0;
      const pos = off + done;
      if (pos < base + segLen) {
        const n = Math.min(len - done, base + segLen - pos);
        const addr = (s.dmaAddress[i] ?? 0) + (pos - base);
        if (write) this.dev.dmaWrite(addr, data, done, n);
        else this.dev.dmaReadInto(addr, data, done, n);
        done += n;
      }
      base += segLen;
    }
    return 0;
  }

  /** Unmap and detach. */
  close(): void {
    if (this.sgt !== null) this.port.dmaBufUnmapAttachmentUnlocked(this.attach, this.sgt, DMA_BIDIRECTIONAL);
    this.sgt = null;
    this.port.dmaBufDetach(this.buf, this.attach);
  }
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

interface Rig {
  machine: Machine;
  iommu: Iommu | null;
  gpuDev: Device;
  nvme: Device;
  nic: Device;
  /** The remote HCA the NIC talks to (loopback fabric), under a third root port. */
  peerNic: Device;
  vfioDev: Device;
}

/**
 * The topology: hb0 (allow-listed) ── rpA ── switch ── {gpu0, nvme0, vfio0}; hb0 ── rpB ── mlx5_0;
 * hb0 ── rpC ── mlx5_1 (the remote end of the RDMA connection).
 */
export function buildDmabufTopology(machine: Machine, mode: 'strict' | 'lazy' | 'off', allowListed = true): Rig {
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

export const RDMA_RW = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_REMOTE_WRITE;
const GPU_IOVA = 0x1000_0000;
const PEER_IOVA = 0x2000_0000;
export const LBA = 4096;

/** The NVMe drive: controller + host driver whose block mapper resolves pre-mapped dma-bufs. */
export class Drive {
  readonly ctrl: NvmeController;
  readonly host: NvmeDev;
  readonly mapper: NvmePremappedMapper;
  readonly statuses: BlkStatus[] = [];
  #tag = 0;
  constructor(
    readonly m: Machine,
    readonly dev: Device,
    lbas: number,
  ) {
    this.ctrl = new NvmeController(m, dev, { namespaces: [{ nsid: 1, lbaSize: LBA, capacityLbas: lbas }], maxQueues: 4 });
    this.mapper = new NvmePremappedMapper(createBlkRqDmaMapper());
    this.host = new NvmeDev(m, dev, this.ctrl, this.mapper, { ioQueues: 1 });
    if (this.host.probe() !== 0) throw new Error(`nvme: probe failed: ${this.host.lastError}`);
  }
  /**
   * Queue the commands moving `len` bytes between LBA `lba` and buffer offset `off`: one per
   * DMA-contiguous run of the buffer's current mapping (re-mapped first if the exporter moved it).
   */
  submit(buf: NvmePremappedBuffer, op: ReqOp, lba: number, off: number, len: number): BlkStatus {
    const rc = this.mapper.ensureMapped(buf);
    if (rc === -Errno.EBUSY) return BlkStatus.RESOURCE;
    if (rc !== 0) return BlkStatus.IOERR;
    for (const [o, n] of buf.runs(off, len)) {
      const bio = bioFromRanges(op, ((lba * LBA + (o - off)) / 512) | 0, [buf.addr(o), n]);
      const rq = bio === null ? null : blkRqFromBio(this.host.queueLimits(), bio, this.#tag++ % 64);
      if (rq === null) return BlkStatus.INVAL;
      rq.endIo = (_r, st) => {
        this.statuses.push(st);
      };
      const st = this.host.queueRq(rq);
      if (st !== BlkStatus.OK) return st;
      this.submitted++;
    }
    return BlkStatus.OK;
  }
  submitted = 0;
  /** Submit and run to completion; OK when every command completed OK. */
  io(buf: NvmePremappedBuffer, op: ReqOp, lba: number, off: number, len: number): BlkStatus {
    const before = this.statuses.length;
    let st = this.submit(buf, op, lba, off, len);
    if (st === BlkStatus.RESOURCE) {
      this.m.scheduler.runUntilIdle();
      st = this.submit(buf, op, lba, off, len);
    }
    if (st !== BlkStatus.OK) return st;
    this.m.scheduler.runUntilIdle();
    const done = this.statuses.slice(before);
    return done.length > 0 && done.every((x) => x === BlkStatus.OK) ? BlkStatus.OK : (done.find((x) => x !== BlkStatus.OK) ?? BlkStatus.IOERR);
  }
}

/** Two HCAs connected by an RC QP pair: mlx5_0 exports the GPU buffer, mlx5_1 reads it. */
export class Fabric {
  readonly local: Mlx5IbDev;
  readonly remote: Mlx5IbDev;
  readonly qpLocal: HcaQp;
  readonly qpRemote: HcaQp;
  readonly cqRemote: HcaCq;
  readonly pdLocal: IbPd;
  readonly pdRemote: IbPd;
  #wr = 1;
  constructor(
    readonly m: Machine,
    nic: Device,
    peerNic: Device,
  ) {
    const hmm = createHmmPort();
    const proc = m.createProcess();
    this.local = new Mlx5IbDev({ dev: nic, hmm, scheduler: m.scheduler, name: 'mlx5_0' });
    this.remote = new Mlx5IbDev({ dev: peerNic, hmm, scheduler: m.scheduler, name: 'mlx5_1' });
    this.pdLocal = this.local.allocPd(proc.mm);
    this.pdRemote = this.remote.allocPd(proc.mm);
    const cqL = this.local.createCq();
    this.cqRemote = this.remote.createCq();
    this.qpLocal = this.local.createQp(this.pdLocal, cqL, cqL);
    this.qpRemote = this.remote.createQp(this.pdRemote, this.cqRemote, this.cqRemote);
    Hca.connect(this.qpLocal, this.qpRemote);
  }
  /** mlx5_1 RDMA-READs `len` bytes at `off` of `src` (mlx5_0's MR) into `dst` (its own MR). */
  read(src: Mlx5DmabufMr, dst: Mlx5DmabufMr, off: number, len: number): number {
    const wrId = this.#wr++;
    const rc = this.remote.postSend(this.qpRemote, { wrId, opcode: IB_WR_RDMA_READ, sgList: [{ addr: dst.iova + off, length: len, lkey: dst.lkey }], remoteAddr: src.iova + off, rkey: src.rkey });
    if (rc !== 0) return IbWcStatus.IB_WC_WR_FLUSH_ERR;
    this.m.scheduler.runUntilIdle();
    const wc = this.remote.pollCq(this.cqRemote).find((w) => w.wrId === wrId);
    return wc?.status ?? IbWcStatus.IB_WC_WR_FLUSH_ERR;
  }
}

export function runDmabufP2pStack(opts: DmabufP2pOptions = {}): DmabufP2pResult {
  const mode = opts.iommu ?? 'strict';
  const fileBytes = opts.fileBytes ?? 4 * SZ_1M;
  if (!Number.isSafeInteger(fileBytes) || fileBytes <= 0 || fileBytes % (256 * 1024) !== 0 || fileBytes > 32 * SZ_1M) {
    throw new RangeError(`dmabuf-p2p: fileBytes must be a multiple of 256 KiB up to 32 MiB, got ${fileBytes}`);
  }
  let m = opts.machine;
  if (m === undefined) {
    m = createMachine({ ramBytes: SZ_1G, seed: opts.seed ?? 1 });
    opts.onMachine?.(m, 'host');
  }
  const progress = progressReporter(opts.onProgress, DMABUF_P2P_UNITS);
  let unit = 0;
  const tick = (): void => {
    progress(++unit);
  };
  const rig = buildDmabufTopology(m, mode);
  const { iommu, gpuDev, nvme, nic } = rig;
  const stats = (): IommuStats | null => (iommu === null ? null : iommu.stats());
  const steps: DmabufStepResult[] = [];
  const live0 = dmaBufMappingStats.live;
  const fds = new DmaBufFdTable();
  const port = createDmaBufPort(fds);
  const gpu = new GpuVramExporter(m, gpuDev);
  const heap = new SystemHeap(m);

  // The drive holds two files (A at LBA 0, B after it) and a scratch region; the GPU buffer
  // (VRAM in 1 MiB ranges) is exported and handed around by fd, like userspace would.
  const fileA = m.rng.fill(new Uint8Array(fileBytes));
  const fileB = m.rng.fill(new Uint8Array(fileBytes));
  const fileLbas = fileBytes / LBA;
  const drive = new Drive(m, nvme, 3 * fileLbas);
  drive.ctrl.namespace(1)?.writeLbas(0, fileA);
  drive.ctrl.namespace(1)?.writeLbas(fileLbas, fileB);
  const exported = gpu.exportBuffer(fileBytes, { name: 'frame', maxRange: SZ_1M });
  if (isErrPtr(exported)) throw new Error(`gpu: export failed: ${errnoName(exported)}`);
  const fd = dmaBufFd(fds, exported);
  const sink = heap.allocate(fileBytes, 'rdma-sink');
  if (isErrPtr(sink)) throw new Error('heap: allocation failed');
  const sinkFd = dmaBufFd(fds, sink);
  const bufOrErr = port.dmaBufGet(fd);
  if (isErrPtr(bufOrErr)) throw new Error('dma_buf_get failed');
  const buf = bufOrErr;

  // 1. The drive reads file A into GPU memory: 128 KiB READ commands into the pre-mapped buffer.
  const pre = drive.mapper.register(port, nvme, fd);
  if (isErrPtr(pre)) throw new Error(`nvme: registering the dma-buf failed: ${errnoName(pre)}`);
  {
    const before = stats();
    const CMD = 128 * 1024;
    let bad = 0;
    for (let off = 0; off < fileBytes; off += CMD) if (drive.io(pre, ReqOp.READ, off / LBA, off, CMD) !== BlkStatus.OK) bad++;
    const after = stats();
    const back = gpu.gpuRead(buf, 0, fileBytes);
    const noIova = before === null || after === null || after.iovaAllocs - before.iovaAllocs <= 2; // PRP-list pool pages only
    const ok = bad === 0 && pre.busAddr && noIova && back instanceof Uint8Array && same(back, fileA) && drive.mapper.stats.remaps === 0;
    steps.push({
      step: 'drive reads a file into GPU memory (P2P, same switch)',
      device: nvme.name,
      bytes: fileBytes,
      verified: ok,
      detail: `${fileBytes / CMD} READ commands, pre-mapped by ${pre.busAddr ? 'PCI bus address' : 'DMA address'} (${pre.sgt?.nents ?? 0} segments, mapped once), no per-I/O mapping`,
    });  tick();
  }

  // 2. The NIC exposes the same buffer as an RDMA MR; the peer HCA RDMA-READs it: the first access
  //    faults and maps the whole buffer through the host bridge (one IOVA range, MMIO links).
  const fabric = new Fabric(m, nic, rig.peerNic);
  const mrGpu = mlx5IbRegUserMrDmabuf(fabric.local, fabric.pdLocal, port, 0, fileBytes, GPU_IOVA, fd, RDMA_RW);
  const mrSink = mlx5IbRegUserMrDmabuf(fabric.remote, fabric.pdRemote, port, 0, fileBytes, PEER_IOVA, sinkFd, RDMA_RW);
  if (isErrPtr(mrGpu) || isErrPtr(mrSink)) throw new Error('rdma: dma-buf MR registration failed');
  const sinkMap = dmaBufVmapUnlocked(sink);
  if (isErrPtr(sinkMap)) throw new Error('heap: vmap failed');
  {
    const before = stats();
    const st = fabric.read(mrGpu, mrSink, 0, fileBytes);
    const after = stats();
    const mapMode = mrGpu.umem.sgt === null ? 'unmapped' : (dmaBufSgtMode(mrGpu.umem.sgt) ?? 'sg');
    const d = (k: keyof IommuStats): number => (after === null || before === null ? 0 : after[k] - before[k]);
    const want = iommu === null ? 'map-phys' : 'iova';
    const ok = st === IbWcStatus.IB_WC_SUCCESS && mapMode === want && same(sinkMap.read(0, fileBytes), fileA) && mrGpu.stats.pageFaults === 1;
    steps.push({
      step: `NIC serves it as an RDMA MR through the host bridge (${iommu === null ? 'dma_map_phys + MMIO' : 'IOVA + MMIO'})`,
      device: nic.name,
      bytes: fileBytes,
      verified: ok,
      detail: `RDMA READ by mlx5_1: 1 page fault mapped ${mapMode} (${mrGpu.umem.sgt?.nents ?? 0} segment(s)); IOMMU: ${d('iovaAllocs')} IOVA allocs, ${d('pteWrites')} PTE writes`,
    });  tick();
  }

  // 3. Traffic while the GPU evicts and restores: the drive reads file B chunks into the buffer
  //    and writes chunks back to the scratch region, the peer RDMA-READs chunks; the eviction
  //    lands while a drive READ is in flight (its unmap waits for the completion).
  {
    const CH = 256 * 1024;
    const chunks = fileBytes / CH;
    const shadow = fileA.slice();
    const rounds = TRAFFIC_ROUNDS;
    let ok = true;
    let bytes = 0;
    let evictRc = 0;
    let restoreRc = 0;
    const placements: string[] = [];
    for (let r = 0; r < rounds; r++) {
      const c = (r * 5) % chunks;
      const off = c * CH;
      if (r === 8) {
        // In flight: submit, then evict before the controller runs.
        if (drive.submit(pre, ReqOp.READ, fileLbas + off / LBA, off, CH) !== BlkStatus.OK) ok = false;
        evictRc = gpu.evict(buf);
        placements.push(gpu.placement(buf) ?? '?');
        const mark = drive.statuses.length;
        m.scheduler.runUntilIdle();
        if (drive.statuses.slice(mark).some((x) => x !== BlkStatus.OK)) ok = false;
        shadow.set(fileB.subarray(off, off + CH), off);
        bytes += CH;
        tick();
        continue;
      }
      if (r === 16) {
        restoreRc = gpu.restore(buf);
        placements.push(gpu.placement(buf) ?? '?');
      }
      switch (r % 3) {
        case 0:
          if (drive.io(pre, ReqOp.READ, fileLbas + off / LBA, off, CH) !== BlkStatus.OK) ok = false;
          shadow.set(fileB.subarray(off, off + CH), off);
          break;
        case 1: {
          if (fabric.read(mrGpu, mrSink, off, CH) !== IbWcStatus.IB_WC_SUCCESS) ok = false;
          if (!same(sinkMap.read(off, CH), shadow.subarray(off, off + CH))) ok = false;
          break;
        }
        default: {
          if (drive.io(pre, ReqOp.WRITE, 2 * fileLbas + off / LBA, off, CH) !== BlkStatus.OK) ok = false;
          const onDisk = drive.ctrl.namespace(1)?.readLbas(2 * fileLbas + off / LBA, CH / LBA);
          if (onDisk === undefined || !same(onDisk, shadow.subarray(off, off + CH))) ok = false;
        }
      }
      bytes += CH;
      tick();
    }
    const back = gpu.gpuRead(buf, 0, fileBytes);
    ok = ok && evictRc === 0 && restoreRc === 0 && back instanceof Uint8Array && same(back, shadow) && pre.stats.moveNotifies === 2 && mrGpu.umem.stats.moveNotifies === 2;
    steps.push({
      step: 'GPU evicts and restores the buffer under traffic',
      device: gpuDev.name,
      bytes,
      verified: ok,
      detail: `placements ${placements.join(' → ')}; move_notify nvme ${pre.stats.moveNotifies} (deferred ${pre.stats.deferredUnmaps}), rdma ${mrGpu.umem.stats.moveNotifies}; re-maps nvme ${pre.stats.maps - 1}, rdma ${mrGpu.umem.stats.maps - 1} (page faults ${mrGpu.stats.pageFaults}); copied ${gpu.stats.bytesCopied} bytes`,
    });
  }

  // 4. The VFIO exporter: BAR ranges shared with the NIC; revoked by memory decode off.
  steps.push(vfioRevoke(m, port, rig));
  tick();

  // 5. A host bridge that is not on the allow-list.
  steps.push(notAllowListed(opts.seed ?? 1, mode, opts.onMachine));
  tick();

  const moveNotifies = pre.stats.moveNotifies + mrGpu.umem.stats.moveNotifies;
  const remaps = pre.stats.maps + mrGpu.umem.stats.maps;
  dmaBufVunmapUnlocked(sink, sinkMap);
  mlx5IbDeregDmabufMr(mrGpu);
  mlx5IbDeregDmabufMr(mrSink);
  drive.mapper.unregister(pre);
  drive.host.remove();
  port.dmaBufPut(buf);
  fds.closeAll();
  iommu?.flushQueues();
  const leaks = {
    mappings: dmaBufMappingStats.live - live0,
    iovaStates: m.dmaDebug.iovaStates,
    debugEntries: m.dmaDebug.entries,
    vramPages: gpu.stats.vramPagesUsed,
  };
  const noLeak = leaks.mappings === 0 && leaks.iovaStates === 0 && leaks.debugEntries === 0 && leaks.vramPages === 0 && heap.liveBuffers === 0;
  steps.push({ step: 'teardown: nothing leaked', device: '-', bytes: 0, verified: noLeak, detail: JSON.stringify(leaks) });
  tick();
  const verified = steps.every((s) => s.verified);
  return {
    stack: 'dmabuf-p2p',
    verified,
    verifiedBytes: steps.reduce((n, s) => n + (s.verified ? s.bytes : 0), 0),
    steps,
    iommu: iommu === null || mode === 'off' ? null : { mode, stats: iommu.stats(), faults: iommu.faults.length },
    moveNotifies,
    remaps,
    dmaDebugReports: m.dmaDebug.reports.length,
    simulatedNs: m.clock.now(),
    leaks,
  };
}

function vfioRevoke(m: Machine, port: DmaBufPort, rig: Rig): DmabufStepResult {
  const vdev = new VfioPciCoreDevice(m, rig.vfioDev);
  const created = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: SZ_1M }, { offset: 4 * SZ_1M, length: SZ_1M }] });
  if (isErrPtr(created)) return { step: 'VFIO BAR export, revoke and restore', device: rig.vfioDev.name, bytes: 0, verified: false, detail: `feature failed ${errnoName(created)}` };
  const buf = created;
  const notP2p = port.dmaBufAttach(buf, rig.nic);
  const imp = new DmaBufImporter(port, buf, rig.nic);
  const data = m.rng.fill(new Uint8Array(2 * SZ_1M));
  const w1 = imp.transfer(0, 2 * SZ_1M, data, true);
  const bar = rig.vfioDev.bus as { bar(i: number): { start: number } | undefined } | null;
  const start = bar?.bar(1)?.start ?? 0;
  const landed = same(m.memory.read(start + 4 * SZ_1M, SZ_1M), data.subarray(SZ_1M));
  vdev.setMemoryDecode(false);
  const revoked = imp.sgt === null && imp.moveNotifies === 1;
  const whileRevoked = imp.transfer(0, PAGE_SIZE, new Uint8Array(PAGE_SIZE), false);
  vdev.setMemoryDecode(true);
  const out = new Uint8Array(2 * SZ_1M);
  const r2 = imp.transfer(0, 2 * SZ_1M, out, false);
  imp.close();
  port.dmaBufPut(buf);
  const ok = notP2p === -Errno.EOPNOTSUPP && w1 === 0 && landed && revoked && whileRevoked === -Errno.ENODEV && r2 === 0 && same(out, data) && vdev.dmabufCount === 0;
  return {
    step: 'VFIO BAR export, revoke and restore',
    device: rig.vfioDev.name,
    bytes: 4 * SZ_1M,
    verified: ok,
    detail: `static importer ${isErrPtr(notP2p) ? errnoName(notP2p) : 'attached?'}; decode off → move_notify, map ${errnoName(whileRevoked)}; decode on → re-mapped, bytes verified`,
  };
}

function notAllowListed(seed: number, mode: 'strict' | 'lazy' | 'off', onMachine: DmabufP2pOptions['onMachine']): DmabufStepResult {
  const m = createMachine({ ramBytes: 256 * SZ_1M, seed, dmaDebug: 'warn' });
  onMachine?.(m, 'not-allow-listed host');
  const rig = buildDmabufTopology(m, mode, false);
  const port = createDmaBufPort(new DmaBufFdTable());
  const fail = (detail: string): DmabufStepResult => ({ step: 'host bridge not on the P2P allow-list', device: rig.nic.name, bytes: 0, verified: false, detail });
  // An MMIO-only exporter (VFIO BAR): dma_buf_phys_vec_to_sgt sees NOT_SUPPORTED and fails.
  const vdev = new VfioPciCoreDevice(m, rig.vfioDev);
  const vbuf = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: SZ_1M }] });
  if (isErrPtr(vbuf)) return fail(`VFIO export failed ${errnoName(vbuf)}`);
  const nic = new DmaBufImporter(port, vbuf, rig.nic);
  const drive = new DmaBufImporter(port, vbuf, rig.nvme);
  const refused = nic.ensure() === null ? nic.lastError : 0;
  const warned = m.pci.log.find((l) => l.includes('cannot be used for peer-to-peer DMA')) ?? '';
  const near = drive.ensure();
  const nearMode = near === null ? 'failed' : (dmaBufSgtMode(near) ?? 'sg');
  nic.close();
  drive.close();
  port.dmaBufPut(vbuf);
  // A GPU exporter does what amdgpu does: the buffer moves to system memory for that importer.
  const gpu = new GpuVramExporter(m, rig.gpuDev);
  const gbuf = gpu.exportBuffer(SZ_1M);
  if (isErrPtr(gbuf)) return fail('GPU export failed');
  const gnic = new DmaBufImporter(port, gbuf, rig.nic);
  const gmap = gnic.ensure();
  const placement = gpu.placement(gbuf) ?? '?';
  gnic.close();
  port.dmaBufPut(gbuf);
  const ok = refused === -Errno.EINVAL && warned !== '' && nearMode === 'bus-addr' && gmap !== null && placement === 'system' && m.dmaDebug.entries === 0;
  return {
    step: 'host bridge not on the P2P allow-list',
    device: rig.nic.name,
    bytes: 0,
    verified: ok,
    detail: `VFIO BAR: NIC map ${errnoName(refused)} (pci: "...${warned.slice(13, 60)}..."), drive under the switch: ${nearMode}; GPU buffer: moved to ${placement} memory for the NIC`,
  };
}

/** The table the CLI prints. */
export function formatDmabufP2p(r: DmabufP2pResult): string {
  const lines: string[] = [];
  lines.push(`dmabuf-p2p stack (IOMMU ${r.iommu?.mode ?? 'off'}): ${r.verified ? 'every step verified' : 'VERIFICATION FAILED'}`);
  lines.push('');
  const w = Math.max(...r.steps.map((s) => s.step.length));
  for (const s of r.steps) {
    lines.push(`  ${s.verified ? 'ok  ' : 'FAIL'}  ${s.step.padEnd(w)}  ${s.device.padEnd(8)} ${String(s.bytes).padStart(9)} B  ${s.detail}`);
  }
  lines.push('');
  const st = r.iommu?.stats;
  const io = st === undefined ? 'no IOMMU' : `IOMMU: ${st.iovaAllocs} IOVA allocs, ${st.pteWrites} PTE writes, ${st.iotlbInvalidationsRange} range invalidations, ${st.iotlbInvalidationsFull} full flushes, ${r.iommu?.faults ?? 0} faults`;
  lines.push(`  move_notify ${r.moveNotifies}, re-maps ${r.remaps}; ${io}`);
  lines.push(`  verified ${r.verifiedBytes} bytes in ${(r.simulatedNs / 1000).toFixed(1)} us simulated; dma-debug reports: ${r.dmaDebugReports}`);
  return `${lines.join('\n')}\n`;
}

export const dmabufP2pStack: StackDef<DmabufP2pResult> = {
  name: 'dmabuf-p2p',
  summary: 'A GPU buffer shared through dma-buf, written peer-to-peer by a disk and read by a NIC.',
  help: `  dmabuf-p2p    GPU memory shared through dma-buf: an NVMe drive writes it peer-to-peer (bus
                addresses), an RDMA NIC reads it through the host bridge (IOVA + MMIO), the GPU
                evicts and restores it under traffic, a VFIO BAR export is revoked and restored,
                and a host bridge off the P2P allow-list is refused. IOMMU strict by default.
                --size N: the file read into GPU memory, in MiB (1..32, default 4).
`,
  defaultIommu: 'strict',
  iommuModes: ['strict', 'lazy', 'off'],
  mappings: ['iova'],
  comparesMappings: false,
  verifyOption: false,
  size: { label: 'file', unit: 'MiB', default: 4, min: 1, max: 32 },
  options: [],
  validate(req) {
    checkRequest(dmabufP2pStack, req);
  },
  run(req) {
    const c = checkRequest(dmabufP2pStack, req);
    const machine = createMachine({ ramBytes: SZ_1G, seed: c.seed, dmaDebug: 'warn' });
    req.onMachine?.(machine, 'host');
    return runDmabufP2pStack({
      machine,
      seed: c.seed,
      iommu: c.iommu,
      fileBytes: c.size * SZ_1M,
      ...(req.onMachine !== undefined ? { onMachine: req.onMachine } : {}),
      ...(req.onProgress !== undefined ? { onProgress: req.onProgress } : {}),
    });
  },
  format: formatDmabufP2p,
};

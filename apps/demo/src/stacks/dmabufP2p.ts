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
 * The drive and NIC here are small device models that move bytes through their DMA ports at the
 * addresses the dma-buf mapping gave them (the real NVMe / RDMA importers live in nvme-pci and
 * rdma-umem-odp).
 */
import {
  createMachine,
  DMA_BIDIRECTIONAL,
  DMA_RESV_USAGE_KERNEL,
  Errno,
  errnoName,
  isErrPtr,
  MAX_SCHEDULE_TIMEOUT,
  PAGE_SIZE,
  SZ_1G,
  SZ_1M,
} from '@dmakit/dma-core';
import type { Device, DmaBuf, DmaBufAttachment, DmaBufPort, Machine, SgTable } from '@dmakit/dma-core';
import { createIommu } from '@dmakit/iommu-dma';
import type { Iommu, IommuStats } from '@dmakit/iommu-dma';
import { DmaBufFdTable, GpuVramExporter, VfioPciCoreDevice, createDmaBufPort, dmaBufFd, dmaBufMappingStats, dmaBufSgtMode } from '@dmakit/dmabuf';

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
  /** Bytes of the "file" the drive reads into GPU memory (page multiple, default 4 MiB). */
  readonly fileBytes?: number;
}

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
  vfioDev: Device;
}

/** The topology: hb0 (allow-listed) ── rpA ── switch ── {gpu0, nvme0, vfio0}; hb0 ── rpB ── mlx5_0. */
export function buildDmabufTopology(machine: Machine, mode: 'strict' | 'lazy' | 'off', allowListed = true): Rig {
  const pci = machine.pci;
  const hb = pci.addHostBridge({ p2pAllowed: allowListed, name: allowListed ? 'pci0000:00 (allow-listed)' : 'pci0000:00 (not on the allow-list)' });
  const sw = pci.addSwitch(pci.addRootPort(hb), { downstreamPorts: 3 });
  const [d0, d1, d2] = sw.downstreamPorts;
  const seg = { dmaMaskBits: 64, maxSegmentSize: 0xffff_f000 };
  const gpuDev = pci.addDevice({ name: 'gpu0', ...seg, ...(d0 === undefined ? {} : { parent: d0 }), bars: [{ size: SZ_1M }, { size: 64 * SZ_1M, prefetch: true, p2p: true }] });
  const nvme = pci.addDevice({ name: 'nvme0', ...seg, ...(d1 === undefined ? {} : { parent: d1 }), bars: [{ size: 16 * 1024 }] });
  const vfioDev = pci.addDevice({ name: 'vfio0', ...seg, ...(d2 === undefined ? {} : { parent: d2 }), bars: [{ size: SZ_1M }, { size: 8 * SZ_1M, prefetch: true }] });
  const nic = pci.addDevice({ name: 'mlx5_0', ...seg, parent: pci.addRootPort(hb) });
  // x86: dma-debug's cacheline-overlap check is off (dma_get_cache_alignment() == 1).
  machine.dmaDebug.cacheAlignment = 1;
  const iommu = mode === 'off' ? null : createIommu(machine, { mode });
  if (iommu !== null) for (const d of [gpuDev, nvme, vfioDev, nic]) iommu.attachDevice(d);
  return { machine, iommu, gpuDev, nvme, nic, vfioDev };
}

export function runDmabufP2pStack(opts: DmabufP2pOptions = {}): DmabufP2pResult {
  const m = opts.machine ?? createMachine({ ramBytes: SZ_1G, seed: opts.seed ?? 1 });
  const mode = opts.iommu ?? 'strict';
  const fileBytes = opts.fileBytes ?? 4 * SZ_1M;
  if (!Number.isSafeInteger(fileBytes) || fileBytes <= 0 || fileBytes % PAGE_SIZE !== 0 || fileBytes > 32 * SZ_1M) {
    throw new RangeError(`dmabuf-p2p: fileBytes must be a page multiple up to 32 MiB, got ${fileBytes}`);
  }
  const rig = buildDmabufTopology(m, mode);
  const { iommu, gpuDev, nvme, nic } = rig;
  const stats = (): IommuStats | null => (iommu === null ? null : iommu.stats());
  const steps: DmabufStepResult[] = [];
  const live0 = dmaBufMappingStats.live;
  const fds = new DmaBufFdTable();
  const port = createDmaBufPort(fds);
  const gpu = new GpuVramExporter(m, gpuDev);

  // The "file" on the drive, and the GPU buffer it is read into (VRAM in 1 MiB ranges).
  const file = m.rng.fill(new Uint8Array(fileBytes));
  const exported = gpu.exportBuffer(fileBytes, { name: 'frame', maxRange: SZ_1M });
  if (isErrPtr(exported)) throw new Error(`gpu: export failed: ${errnoName(exported)}`);
  const fd = dmaBufFd(fds, exported);
  // The importers get the buffer by fd, like a driver handed a dma-buf fd by userspace.
  const bufOrErr = port.dmaBufGet(fd);
  if (isErrPtr(bufOrErr)) throw new Error('dma_buf_get failed');
  const buf = bufOrErr;
  const drive = new DmaBufImporter(port, buf, nvme);
  const rdma = new DmaBufImporter(port, buf, nic);

  // 1. The drive reads the file into GPU memory, 128 KiB per command, by PCI bus address.
  {
    const before = stats();
    const sgt = drive.ensure();
    const modeName = sgt === null ? 'map failed' : (dmaBufSgtMode(sgt) ?? 'sg');
    const CMD = 128 * 1024;
    let rc = 0;
    for (let off = 0; off < fileBytes && rc === 0; off += CMD) rc = drive.transfer(off, Math.min(CMD, fileBytes - off), file.subarray(off, off + CMD), true);
    const after = stats();
    const untouched = before === null || after === null || (after.maps === before.maps && after.iovaAllocs === before.iovaAllocs && after.iotlbWalks === before.iotlbWalks);
    const back = gpu.gpuRead(buf, 0, fileBytes);
    const ok = rc === 0 && modeName === 'bus-addr' && untouched && back instanceof Uint8Array && same(back, file);
    steps.push({ step: 'drive reads the file into GPU memory (P2P, same switch)', device: nvme.name, bytes: fileBytes, verified: ok, detail: `${modeName}, ${sgt?.nents ?? 0} segments, IOMMU untouched: ${untouched}` });
  }

  // 2. The NIC reads the same buffer through the host bridge: one IOVA range, MMIO links.
  {
    const before = stats();
    const sgt = rdma.ensure();
    const modeName = sgt === null ? `map failed ${errnoName(rdma.lastError)}` : (dmaBufSgtMode(sgt) ?? 'sg');
    const after = stats();
    const out = new Uint8Array(fileBytes);
    const rc = rdma.transfer(0, fileBytes, out, false);
    const d = (k: keyof IommuStats): number => (after === null || before === null ? 0 : after[k] - before[k]);
    const ok = rc === 0 && modeName === (iommu === null ? 'map-phys' : 'iova') && same(out, file) && d('iovaAllocs') === (iommu === null ? 0 : 1);
    steps.push({
      step: `NIC reads the buffer through the host bridge (${iommu === null ? 'dma_map_phys + MMIO' : 'IOVA + MMIO'})`,
      device: nic.name,
      bytes: fileBytes,
      verified: ok,
      detail: `${modeName}: ${d('iovaAllocs')} IOVA alloc, ${d('pteWrites')} PTE writes, ${d('iotlbSyncMaps')} sync_map, ${sgt?.nents ?? 0} segment(s)`,
    });
  }

  // 3. Traffic while the GPU evicts and restores: the NIC streams 256 KiB reads, the drive
  //    rewrites chunks; every transfer after a move re-maps and waits for the copy fence.
  {
    const CH = 256 * 1024;
    const chunks = Math.max(1, Math.floor(fileBytes / CH));
    const shadow = file.slice();
    const rounds = 24;
    let ok = true;
    let bytes = 0;
    let evictRc = 0;
    let restoreRc = 0;
    const placements: string[] = [];
    for (let r = 0; r < rounds; r++) {
      if (r === 8) {
        evictRc = gpu.evict(buf);
        placements.push(gpu.placement(buf) ?? '?');
      }
      if (r === 16) {
        restoreRc = gpu.restore(buf);
        placements.push(gpu.placement(buf) ?? '?');
      }
      const c = (r * 5) % chunks;
      const len = Math.min(CH, fileBytes - c * CH);
      if (r % 3 === 2) {
        const data = m.rng.fill(new Uint8Array(len));
        if (drive.transfer(c * CH, len, data, true) !== 0) ok = false;
        shadow.set(data, c * CH);
      } else {
        const out = new Uint8Array(len);
        if (rdma.transfer(c * CH, len, out, false) !== 0) ok = false;
        if (!same(out, shadow.subarray(c * CH, c * CH + len))) ok = false;
      }
      bytes += len;
    }
    const back = gpu.gpuRead(buf, 0, fileBytes);
    ok = ok && evictRc === 0 && restoreRc === 0 && back instanceof Uint8Array && same(back, shadow) && drive.moveNotifies === 2 && rdma.moveNotifies === 2;
    steps.push({
      step: 'GPU evicts and restores the buffer under traffic',
      device: gpuDev.name,
      bytes,
      verified: ok,
      detail: `placements ${placements.join(' → ')}; move_notify ${drive.moveNotifies}+${rdma.moveNotifies}, maps ${drive.maps}+${rdma.maps}; copied ${gpu.stats.bytesCopied} bytes`,
    });
  }

  // 4. The VFIO exporter: BAR ranges shared with the NIC; revoked by memory decode off.
  steps.push(vfioRevoke(m, port, rig));

  // 5. A host bridge that is not on the allow-list.
  steps.push(notAllowListed(opts.seed ?? 1, mode));

  const moveNotifies = drive.moveNotifies + rdma.moveNotifies;
  const remaps = drive.maps + rdma.maps;
  drive.close();
  rdma.close();
  port.dmaBufPut(buf);
  fds.close(fd);
  iommu?.flushQueues();
  const leaks = {
    mappings: dmaBufMappingStats.live - live0,
    iovaStates: m.dmaDebug.iovaStates,
    debugEntries: m.dmaDebug.entries,
    vramPages: gpu.stats.vramPagesUsed,
  };
  const noLeak = leaks.mappings === 0 && leaks.iovaStates === 0 && leaks.debugEntries === 0 && leaks.vramPages === 0;
  steps.push({ step: 'teardown: nothing leaked', device: '-', bytes: 0, verified: noLeak, detail: JSON.stringify(leaks) });
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

function notAllowListed(seed: number, mode: 'strict' | 'lazy' | 'off'): DmabufStepResult {
  const m = createMachine({ ramBytes: 256 * SZ_1M, seed, dmaDebug: 'warn' });
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

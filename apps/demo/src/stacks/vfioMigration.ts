/**
 * The "vfio-migration" stack: live migration of an assigned mlx5 VF between two hosts (two
 * machines, each with its own IOMMU). The guest's memory is mapped into the VF's unmanaged IOMMU
 * domain; guest CPU and function both keep writing it while pre-copy rounds move dirty pages
 * (KVM-style CPU dirty log + the function's device dirty tracker) and the function's state
 * (incremental pre-copy images). Then STOP_COPY with chunked device state, the stream carried to
 * the target, RESUMING, RUNNING there, and the workload continues. Verified: the target's guest
 * memory and function state equal the source's at the moment of stop, byte for byte. Run once on
 * the two-step IOVA path and once on the legacy scatterlist path; both must give identical bytes.
 */
import { IOMMU_UNMANAGED_READ, IOMMU_UNMANAGED_WRITE, PAGE_SIZE, Rng, SZ_1M, SZ_2M, createMachine } from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';
import { createIommu, createUnmanagedDomain } from '@dmakit/iommu-dma';
import type { Iommu, UnmanagedIommuDomain } from '@dmakit/iommu-dma';
import { ENOMSG, IovaBitmap, Mlx5SimFunction, Mlx5VfPciCoreDevice, VfioDeviceMigState as S } from '@dmakit/vfio-mlx5';
import type { VfioMigFile } from '@dmakit/vfio-mlx5';
import { checkRequest, StackUsageError } from './types.js';
import type { StackDef } from './types.js';
import { wallNowMs } from './wallClock.js';

export type VfioMigrationIommuMode = 'strict' | 'lazy';

export interface VfioMigrationOptions {
  readonly seed?: number;
  readonly iommu?: VfioMigrationIommuMode;
  /** Guest RAM in MiB (8 regions with holes between them). Default 16. */
  readonly guestMiB?: number;
  /** Function internal state bytes. Default 256 KiB. */
  readonly stateBytes?: number;
  /** Chunk size of the final device image. Default 64 KiB. */
  readonly chunkBytes?: number;
  readonly maxRounds?: number;
  /** Stop pre-copy when a round leaves at most this many dirty pages. Default 32. */
  readonly dirtyThreshold?: number;
  /** Run only this path (default both, compared). */
  readonly path?: 'iova' | 'legacy' | 'both';
  /** Corrupt the device stream on the wire (tests the target's refusal). */
  readonly corruptStream?: boolean;
  /** Called with each host's machine right after it is created, before any DMA: role 'source' or 'target' (once per path, iova first). */
  readonly onMachine?: (m: Machine, role: string) => void;
  /** Progress in migration phases: round 0, each pre-copy round, stop-copy (maxRounds + 2 per path run). */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface VfioMigrationRound {
  readonly round: number;
  /** 'pre-copy' rounds run with the guest live; the 'stop-copy' round is inside the downtime. */
  readonly phase: 'pre-copy' | 'stop-copy';
  readonly cpuDirtyPages: number;
  readonly deviceDirtyPages: number;
  readonly iommuDirtyPages: number;
  readonly pagesSent: number;
  readonly deviceBytes: number;
  readonly precopyDirtyBytes: number;
}

export interface VfioMigrationPathResult {
  readonly path: 'iova' | 'legacy';
  readonly verified: boolean;
  readonly verification: {
    readonly guestPagesCompared: number;
    readonly mismatchedPages: number;
    readonly functionStateBytes: number;
    readonly functionStateEqual: boolean;
    readonly targetContinued: boolean;
    readonly targetPacketsAfterResume: number;
    readonly targetDmaFaults: number;
    readonly deviceTrackerCoversIommuDirty: boolean;
    readonly sourceBuffersFreed: boolean;
    /** dma-debug reports on both hosts (the DMA API use of the migration buffers is clean). */
    readonly dmaDebugReports: number;
    /** IOMMU faults on both hosts (no device access was refused). */
    readonly iommuFaults: number;
    readonly targetRefusedCorruptStream?: boolean;
  };
  readonly rounds: VfioMigrationRound[];
  readonly bytesMoved: { readonly ramBytes: number; readonly deviceBytes: number; readonly totalBytes: number; readonly afterStopBytes: number };
  readonly downtime: { readonly simulatedNs: number; readonly sourceNs: number; readonly wireNs: number; readonly targetNs: number; readonly wallMs: number };
  readonly buffers: {
    readonly registrations: number;
    readonly pagesRegistered: number;
    readonly peakMetadataBytes: number;
    readonly metadataBytesPerPage: number;
    readonly iotlbSyncs: number;
    readonly iotlbSyncsPerBuffer: number;
    readonly recycled: number;
  };
  readonly deviceTracker: { readonly ranges: number; readonly requestedRanges: number; readonly pageSize: number; readonly reports: number; readonly messages: number };
  readonly arcs: { readonly source: string[]; readonly target: string[] };
  readonly streamDigest: string;
  readonly wallMs: number;
}

export interface VfioMigrationResult {
  readonly stack: 'vfio-migration';
  readonly iommu: VfioMigrationIommuMode;
  readonly verified: boolean;
  readonly pathsIdentical: boolean | null;
  readonly paths: VfioMigrationPathResult[];
}

const LINK_BYTES_PER_NS = 3.125; // 25 Gb/s migration link
const GUEST_REGIONS = 8;
const TICK_NS = 20_000;

const STATE_NAMES = ['ERROR', 'STOP', 'RUNNING', 'STOP_COPY', 'RESUMING', 'RUNNING_P2P', 'PRE_COPY', 'PRE_COPY_P2P'];

interface Host {
  readonly machine: Machine;
  readonly iommu: Iommu;
  readonly pf: Device;
  readonly vf: Device;
  readonly domain: UnmanagedIommuDomain;
  readonly fw: Mlx5SimFunction;
  readonly drv: Mlx5VfPciCoreDevice;
  /** Host physical address of each guest page (index = GPA page in the flat guest page list). */
  readonly hpa: Float64Array;
  /** GPA of each guest page. */
  readonly gpa: Float64Array;
  readonly regions: { iova: number; length: number }[];
}

function regionGpa(i: number, regionBytes: number): number {
  return i * 2 * regionBytes; // a hole as large as each region between them
}

function buildHost(
  name: 'src' | 'dst',
  seed: number,
  o: Required<Pick<VfioMigrationOptions, 'guestMiB' | 'stateBytes' | 'chunkBytes'>> & { iommu: VfioMigrationIommuMode; legacy: boolean },
  onMachine: VfioMigrationOptions['onMachine'],
): Host {
  const machine = createMachine({ ramBytes: 512 * SZ_1M, seed, dmaDebug: 'warn' });
  onMachine?.(machine, name === 'src' ? 'source' : 'target');
  const iommu = createIommu(machine, { mode: o.iommu });
  const pf = machine.pci.addDevice({ name: `${name}/mlx5_core_pf`, dmaMaskBits: 64 });
  iommu.attachDevice(pf); // the host driver's default DMA domain (strict or lazy)
  const vf = machine.pci.addDevice({ name: `${name}/mlx5_vf`, dmaMaskBits: 64 });
  iommu.attachDevice(vf); // default domain at probe; VFIO then moves it to the unmanaged domain
  const domain = createUnmanagedDomain(iommu);
  const regionBytes = (o.guestMiB * SZ_1M) / GUEST_REGIONS;
  const pages = (o.guestMiB * SZ_1M) / PAGE_SIZE;
  const hpa = new Float64Array(pages);
  const gpa = new Float64Array(pages);
  const regions: { iova: number; length: number }[] = [];
  // Some pages first so the two hosts back the guest with different host pages.
  for (let i = 0; i < (seed % 7) + 1; i++) machine.memory.allocPages(0);
  let k = 0;
  for (let r = 0; r < GUEST_REGIONS; r++) {
    const base = regionGpa(r, regionBytes);
    regions.push({ iova: base, length: regionBytes });
    for (let off = 0; off < regionBytes; off += SZ_2M) {
      const len = Math.min(SZ_2M, regionBytes - off);
      const phys = machine.memory.allocPages(Math.log2(len / PAGE_SIZE));
      if (phys === 0) throw new Error('vfio-migration: out of host memory for guest RAM');
      const ret = domain.map(base + off, phys, len, IOMMU_UNMANAGED_READ | IOMMU_UNMANAGED_WRITE);
      if (ret !== 0) throw new Error(`vfio-migration: iommu_map failed ${ret}`);
      for (let p = 0; p < len / PAGE_SIZE; p++) {
        hpa[k] = phys + p * PAGE_SIZE;
        gpa[k] = base + off + p * PAGE_SIZE;
        k++;
      }
    }
  }
  if (domain.attachDevice(vf) !== 0) throw new Error('vfio-migration: attach to the unmanaged domain failed');
  const fw = new Mlx5SimFunction({ machine, pf, vf, stateBytes: o.stateBytes, queues: 8, caps: { chunkBytes: o.chunkBytes }, seed: seed * 31 + 7, vhcaId: seed });
  const drv = new Mlx5VfPciCoreDevice({ machine, fw, name: `${name}/vfio-mlx5`, legacySgBuffers: o.legacy });
  return { machine, iommu, pf, vf, domain, fw, drv, hpa, gpa, regions };
}

/** GPA -> guest page index (the regions are laid out with equal holes). */
function pageIndex(h: Host, gpaAddr: number): number {
  const regionBytes = h.regions[0]?.length ?? 1;
  const r = Math.floor(gpaAddr / (2 * regionBytes));
  const inR = gpaAddr - r * 2 * regionBytes;
  if (r < 0 || r >= h.regions.length || inR >= regionBytes) return -1;
  return (r * regionBytes + inR) / PAGE_SIZE;
}

/** The guest: vCPUs write random pages (logged in the KVM dirty bitmap when logging is on). */
class Guest {
  readonly #h: Host;
  readonly #rng: Rng;
  readonly dirty: Uint8Array;
  logging = false;
  running = true;
  writes = 0;
  readonly #scratch = new Uint8Array(256);
  #timer: { cancel(): void } | null = null;

  constructor(h: Host, seed: number) {
    this.#h = h;
    this.#rng = new Rng(seed);
    this.dirty = new Uint8Array(h.hpa.length);
  }

  /** One tick of guest activity: CPU stores and a few packets received by the function. */
  tick(): void {
    if (!this.running) return;
    const n = this.#h.hpa.length;
    // CPU writes land in the upper half of guest RAM (the lower half holds the NIC's rings).
    for (let i = 0; i < 6; i++) {
      const p = Math.floor(n / 2) + this.#rng.nextInt(n - Math.floor(n / 2));
      const off = this.#rng.nextInt(PAGE_SIZE - this.#scratch.length);
      this.#rng.fill(this.#scratch);
      this.#h.machine.memory.write((this.#h.hpa[p] ?? 0) + off, this.#scratch);
      if (this.logging) this.dirty[p] = 1;
      this.writes++;
    }
    for (let i = 0; i < 3; i++) this.#h.fw.step();
  }

  start(): void {
    const loop = (): void => {
      this.tick();
      this.#timer = this.#h.machine.schedule(TICK_NS, loop);
    };
    this.#timer = this.#h.machine.schedule(TICK_NS, loop);
  }

  stop(): void {
    this.running = false;
    this.#timer?.cancel();
  }

  /** KVM_GET_DIRTY_LOG + clear: indices of pages the CPU wrote since the last call. */
  readAndClear(out: Set<number>): number {
    let c = 0;
    for (let i = 0; i < this.dirty.length; i++) {
      if (this.dirty[i] === 1) {
        this.dirty[i] = 0;
        out.add(i);
        c++;
      }
    }
    return c;
  }
}

function configureGuestDriver(h: Host): void {
  // The guest's mlx5 driver posts one receive ring per queue in the lower half of guest RAM.
  const half = Math.floor(h.hpa.length / 2);
  const perQueue = Math.floor(half / 8);
  for (let q = 0; q < 8; q++) {
    const first = h.gpa[q * perQueue] ?? 0;
    // Keep each ring inside one guest region.
    const regionPages = (h.regions[0]?.length ?? PAGE_SIZE) / PAGE_SIZE;
    const slots = Math.min(perQueue, regionPages - ((q * perQueue) % regionPages)) * 2;
    h.fw.configureQueue(q, first, slots, PAGE_SIZE / 2);
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((t, p) => t + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function digest(bytes: Uint8Array): string {
  let h = 0x811c_9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x0100_0193) >>> 0;
  return `fnv1a:${h.toString(16).padStart(8, '0')}:${bytes.length}`;
}

/** Read the data fd until it returns 0 (end) or -ENOMSG (end of pre-copy data for now). */
function readDevice(fd: VfioMigFile, sink: Uint8Array[]): number {
  const buf = new Uint8Array(64 * 1024);
  let total = 0;
  for (let guard = 0; guard < 1_000_000; guard++) {
    const n = fd.read(buf);
    if (n === 0 || n === -ENOMSG) return total;
    if (n < 0) throw new Error(`vfio-migration: read of the migration fd failed: ${n}`);
    sink.push(buf.slice(0, n));
    total += n;
  }
  throw new Error('vfio-migration: the migration fd never ended');
}

/** Write bytes to the target's resuming fd in uneven pieces (as they come off the network). */
function writeDevice(fd: VfioMigFile, bytes: Uint8Array, rng: Rng): number {
  let p = 0;
  while (p < bytes.length) {
    const n = Math.min(bytes.length - p, 1 + rng.nextInt(48 * 1024));
    const w = fd.write(bytes, p, n);
    if (w < 0) return w;
    p += w;
  }
  return 0;
}

function arcsOf(d: Mlx5VfPciCoreDevice): string[] {
  return d.arcLog.map(([a, b]) => `${STATE_NAMES[a] ?? a}->${STATE_NAMES[b] ?? b}`);
}

export function runVfioMigrationPath(path: 'iova' | 'legacy', opts: VfioMigrationOptions = {}): VfioMigrationPathResult {
  const wall0 = wallNowMs();
  const seed = opts.seed ?? 1;
  const cfg = { guestMiB: opts.guestMiB ?? 16, stateBytes: opts.stateBytes ?? 256 * 1024, chunkBytes: opts.chunkBytes ?? 64 * 1024, iommu: opts.iommu ?? 'strict', legacy: path === 'legacy' } as const;
  const maxRounds = opts.maxRounds ?? 8;
  const threshold = opts.dirtyThreshold ?? 32;
  const phases = maxRounds + 2;
  const progress = (done: number): void => opts.onProgress?.(done, phases);
  const src = buildHost('src', seed * 2 + 1, cfg, opts.onMachine);
  const dst = buildHost('dst', seed * 2 + 2, cfg, opts.onMachine);
  const wireRng = new Rng(seed + 99);
  const guest = new Guest(src, seed + 5);
  configureGuestDriver(src);
  const pages = src.hpa.length;
  // Target guest RAM starts as whatever the target host had there: zero it (the VMM allocates it).
  for (let i = 0; i < pages; i++) dst.machine.memory.fill(dst.hpa[i] ?? 0, PAGE_SIZE, 0);

  // Initial guest memory content and a warm-up period of the workload.
  const fillRng = new Rng(seed + 3);
  const page = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < pages; i++) {
    fillRng.fill(page);
    src.machine.memory.write(src.hpa[i] ?? 0, page);
  }
  guest.start();
  src.machine.advance(2_000_000);

  const pfDomainSrc = src.iommu.domainOf(src.pf);
  const syncs0 = pfDomainSrc?.stats().iotlbSyncMaps ?? 0;

  // Start dirty tracking: the CPU dirty log, the device's own tracker, and the IOMMU's dirty bits
  // (a cross-check only: migration uses the device tracker, which needs no IOMMU support).
  guest.logging = true;
  const vdev = src.drv.vdev;
  const trackedPageSize = vdev.dmaLoggingStart(src.regions, PAGE_SIZE);
  if (trackedPageSize < 0) throw new Error(`DMA logging start failed: ${trackedPageSize}`);
  src.domain.setDirtyTracking(true);
  const trackedRanges = src.drv.trackedRanges.length;

  // The target waits in RESUMING for the whole migration (QEMU loads pre-copy data as it comes).
  const t = dst.drv.vdev.setMigDeviceState(S.RESUMING);
  if (t.ret !== 0 || t.dataFd === null) throw new Error(`target RESUMING failed: ${t.ret}`);
  const dstFd = t.dataFd;
  let targetWriteErr = 0;

  const r = vdev.setMigDeviceState(S.PRE_COPY);
  if (r.ret !== 0 || r.dataFd === null) throw new Error(`source PRE_COPY failed: ${r.ret}`);
  const fd = r.dataFd;
  const deviceStream: Uint8Array[] = [];
  let ramBytes = 0;
  const rounds: VfioMigrationRound[] = [];
  const sendPages = (set: Iterable<number>): number => {
    let n = 0;
    for (const i of set) {
      // Copy the page over the link: time passes on the source while the workload runs.
      const bytes = src.machine.memory.read(src.hpa[i] ?? 0, PAGE_SIZE);
      dst.machine.memory.write(dst.hpa[i] ?? 0, bytes);
      n++;
    }
    ramBytes += n * (PAGE_SIZE + 8);
    src.machine.advance(Math.ceil((n * (PAGE_SIZE + 8)) / LINK_BYTES_PER_NS));
    return n;
  };
  const sendDevice = (): number => {
    const parts: Uint8Array[] = [];
    const n = readDevice(fd, parts);
    for (const p of parts) {
      deviceStream.push(p);
      if (targetWriteErr === 0) {
        const w = writeDevice(dstFd, opts.corruptStream === true ? corrupt(p) : p, wireRng);
        if (w < 0) targetWriteErr = w;
      }
    }
    src.machine.advance(Math.ceil(n / LINK_BYTES_PER_NS));
    return n;
  };
  const cover = { ok: true };
  const collectDirty = (): { set: Set<number>; cpu: number; device: number; iommu: number } => {
    const set = new Set<number>();
    const cpu = guest.readAndClear(set);
    let device = 0;
    const devSet = new Set<number>();
    for (const reg of src.regions) {
      const bm = vdev.dmaLoggingReport({ iova: reg.iova, length: reg.length, pageSize: trackedPageSize });
      if (typeof bm === 'number') throw new Error(`DMA logging report failed: ${bm}`);
      for (const a of bm.dirtyPages()) {
        const idx = pageIndex(src, a);
        if (idx >= 0) {
          devSet.add(idx);
          set.add(idx);
          device++;
        }
      }
    }
    let iommu = 0;
    for (const reg of src.regions) {
      const bits = new Uint8Array(Math.ceil(reg.length / PAGE_SIZE / 8));
      const n = src.domain.readAndClearDirty(reg.iova, reg.length, 0, bits);
      if (n < 0) continue;
      iommu += n;
      const bm = new IovaBitmap(reg.iova, reg.length, PAGE_SIZE);
      bm.bits.set(bits);
      for (const a of bm.dirtyPages()) if (!devSet.has(pageIndex(src, a))) cover.ok = false;
    }
    return { set, cpu, device, iommu };
  };

  // Round 0: all of guest RAM and the device's initial image.
  {
    const all = Array.from({ length: pages }, (_, i) => i);
    const sent = sendPages(all);
    const dev = sendDevice();
    rounds.push({ round: 0, phase: 'pre-copy', cpuDirtyPages: 0, deviceDirtyPages: 0, iommuDirtyPages: 0, pagesSent: sent, deviceBytes: dev, precopyDirtyBytes: 0 });
    progress(1);
  }
  for (let round = 1; round <= maxRounds; round++) {
    const d = collectDirty();
    const sent = sendPages(d.set);
    const info = fd.precopyInfo();
    const dirtyBytes = typeof info === 'number' ? 0 : info.dirtyBytes;
    const dev = sendDevice();
    rounds.push({ round, phase: 'pre-copy', cpuDirtyPages: d.cpu, deviceDirtyPages: d.device, iommuDirtyPages: d.iommu, pagesSent: sent, deviceBytes: dev, precopyDirtyBytes: dirtyBytes });
    progress(round + 1);
    if (d.set.size <= threshold) break;
  }

  // Stop: vCPUs paused, the function stopped (PRE_COPY -> PRE_COPY_P2P -> STOP_COPY).
  const tStop = src.machine.clock.now();
  // The target's clock only moves for the target's own work (writes to its fd, LOAD commands).
  const tDstStop = dst.machine.clock.now();
  const wallStop = wallNowMs();
  guest.stop();
  const st = vdev.setMigDeviceState(S.STOP_COPY);
  if (st.ret !== 0) throw new Error(`source STOP_COPY failed: ${st.ret}`);
  // The moment of stop: nothing writes guest memory or function state any more.
  const snapMem = new Uint8Array(pages * PAGE_SIZE);
  for (let i = 0; i < pages; i++) src.machine.memory.readInto(src.hpa[i] ?? 0, snapMem, i * PAGE_SIZE, PAGE_SIZE);
  const snapState = src.fw.stateSnapshot();
  const ramBefore = ramBytes;
  const devBefore = deviceStream.reduce((t2, p) => t2 + p.length, 0);
  const last = collectDirty();
  const lastSent = sendPages(last.set);
  const lastDev = sendDevice();
  rounds.push({ round: rounds.length, phase: 'stop-copy', cpuDirtyPages: last.cpu, deviceDirtyPages: last.device, iommuDirtyPages: last.iommu, pagesSent: lastSent, deviceBytes: lastDev, precopyDirtyBytes: 0 });
  progress(phases);
  const afterStopBytes = ramBytes - ramBefore + (deviceStream.reduce((t2, p) => t2 + p.length, 0) - devBefore);
  // The sends above advanced the source clock by the link time of what they moved.
  const wireNs = Math.ceil((ramBytes - ramBefore) / LINK_BYTES_PER_NS) + Math.ceil(lastDev / LINK_BYTES_PER_NS);
  const sourceNs = src.machine.clock.now() - tStop - wireNs;
  // Target: leave RESUMING (load checks) and run.
  const run = targetWriteErr === 0 ? dst.drv.vdev.setMigDeviceState(S.RUNNING) : { ret: targetWriteErr, dataFd: null };
  const targetNs = dst.machine.clock.now() - tDstStop;
  const wallMs = wallNowMs() - wallStop;

  // Source cleanup.
  vdev.setMigDeviceState(S.STOP);
  vdev.dmaLoggingStop();
  src.domain.setDirtyTracking(false);
  const sourceBuffersFreed = src.fw.liveMkeys === 0 && src.drv.bufferStats.livePages === 0;

  // Verification.
  let mismatched = 0;
  const got = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < pages; i++) {
    dst.machine.memory.readInto(dst.hpa[i] ?? 0, got, 0, PAGE_SIZE);
    const want = snapMem.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
    for (let b = 0; b < PAGE_SIZE; b++) {
      if (got[b] !== want[b]) {
        mismatched++;
        break;
      }
    }
  }
  const dstState = dst.fw.stateSnapshot();
  const stateEqual = run.ret === 0 && dstState.length === snapState.length && dstState.every((b, i) => b === snapState[i]);
  // The workload continues on the target: packets land in the target's guest memory.
  let continued = false;
  let packetsAfter = 0;
  if (run.ret === 0) {
    const before = dst.fw.stats.packets;
    const tg = new Guest(dst, seed + 6);
    tg.start();
    dst.machine.advance(1_000_000);
    tg.stop();
    packetsAfter = dst.fw.stats.packets - before;
    continued = packetsAfter > 0 && dst.fw.stats.dmaFaults === 0;
  }
  const refused = opts.corruptStream === true ? run.ret !== 0 && dst.fw.broken : undefined;

  const bs = src.drv.bufferStats;
  const registrations = bs.iovaRegistrations + bs.fallbackRegistrations + bs.sgtRegistrations;
  const syncs = (pfDomainSrc?.stats().iotlbSyncMaps ?? 0) - syncs0;
  const dmaDebugReports = src.machine.dmaDebug.reports.length + dst.machine.dmaDebug.reports.length;
  const iommuFaults = src.iommu.faults.length + dst.iommu.faults.length;
  const verified =
    opts.corruptStream === true
      ? refused === true
      : mismatched === 0 && stateEqual && continued && cover.ok && sourceBuffersFreed && dmaDebugReports === 0 && iommuFaults === 0;
  return {
    path,
    verified,
    verification: {
      guestPagesCompared: pages,
      mismatchedPages: mismatched,
      functionStateBytes: snapState.length,
      functionStateEqual: stateEqual,
      targetContinued: continued,
      targetPacketsAfterResume: packetsAfter,
      targetDmaFaults: dst.fw.stats.dmaFaults,
      deviceTrackerCoversIommuDirty: cover.ok,
      sourceBuffersFreed,
      dmaDebugReports,
      iommuFaults,
      ...(refused !== undefined ? { targetRefusedCorruptStream: refused } : {}),
    },
    rounds,
    bytesMoved: { ramBytes, deviceBytes: deviceStream.reduce((t2, p) => t2 + p.length, 0), totalBytes: ramBytes + deviceStream.reduce((t2, p) => t2 + p.length, 0), afterStopBytes },
    downtime: { simulatedNs: sourceNs + wireNs + targetNs, sourceNs, wireNs, targetNs, wallMs },
    buffers: {
      registrations,
      pagesRegistered: bs.pagesRegistered,
      peakMetadataBytes: bs.peakMetadataBytes,
      metadataBytesPerPage: bs.peakMetadataBytes / Math.max(1, peakPages(src)),
      iotlbSyncs: syncs,
      iotlbSyncsPerBuffer: registrations > 0 ? syncs / registrations : 0,
      recycled: bs.recycled,
    },
    deviceTracker: { ranges: trackedRanges, requestedRanges: src.regions.length, pageSize: trackedPageSize, reports: src.drv.stats.trackerReports, messages: src.drv.stats.trackerMessages },
    arcs: { source: arcsOf(src.drv), target: arcsOf(dst.drv) },
    streamDigest: digest(concat(deviceStream)),
    wallMs: wallNowMs() - wall0,
  };
}

/** Peak pages held in migration buffers (for bytes per page): tracked by the buffer stats' peak metadata. */
function peakPages(h: Host): number {
  return h.drv.bufferStats.peakLivePages;
}

function corrupt(p: Uint8Array): Uint8Array {
  const c = p.slice();
  if (c.length > 40) c[40] = (c[40] ?? 0) ^ 0x5a;
  return c;
}

export function runVfioMigrationStack(opts: VfioMigrationOptions = {}): VfioMigrationResult {
  const which = opts.path ?? 'both';
  const paths: VfioMigrationPathResult[] = [];
  const runs: ('iova' | 'legacy')[] = which === 'both' ? ['iova', 'legacy'] : [which];
  const onProgress = opts.onProgress;
  runs.forEach((path, i) => {
    const progress =
      onProgress === undefined
        ? {}
        : {
            onProgress: (done: number, total: number) => {
              onProgress(i * total + done, runs.length * total);
            },
          };
    paths.push(runVfioMigrationPath(path, { ...opts, ...progress }));
  });
  const a = paths[0];
  const b = paths[1];
  const identical = a !== undefined && b !== undefined ? a.streamDigest === b.streamDigest && JSON.stringify(a.rounds) === JSON.stringify(b.rounds) : null;
  return {
    stack: 'vfio-migration',
    iommu: opts.iommu ?? 'strict',
    verified: paths.every((p) => p.verified) && identical !== false,
    pathsIdentical: identical,
    paths,
  };
}

export function formatVfioMigration(r: VfioMigrationResult): string {
  const L: string[] = [];
  L.push(`vfio-migration: mlx5 VF live migration between two hosts, IOMMU ${r.iommu}`);
  for (const p of r.paths) {
    L.push('');
    L.push(`  path ${p.path} (${p.path === 'iova' ? 'page array + dma_iova_link, one sync per buffer' : 'sg_append_table + dma_map_sgtable'})`);
    L.push('    round      cpu-dirty  dev-dirty  iommu-dirty  pages-sent  device-bytes');
    for (const x of p.rounds) L.push(`    ${(x.phase === 'stop-copy' ? `${x.round} stop` : String(x.round)).padStart(9)}  ${String(x.cpuDirtyPages).padStart(9)}  ${String(x.deviceDirtyPages).padStart(9)}  ${String(x.iommuDirtyPages).padStart(11)}  ${String(x.pagesSent).padStart(10)}  ${String(x.deviceBytes).padStart(12)}`);
    L.push(`    bytes moved: ${p.bytesMoved.totalBytes} (RAM ${p.bytesMoved.ramBytes}, device ${p.bytesMoved.deviceBytes}); after stop ${p.bytesMoved.afterStopBytes}`);
    L.push(`    downtime: ${(p.downtime.simulatedNs / 1000).toFixed(1)} µs simulated (source ${(p.downtime.sourceNs / 1000).toFixed(1)}, wire ${(p.downtime.wireNs / 1000).toFixed(1)}, target ${(p.downtime.targetNs / 1000).toFixed(1)}), ${p.downtime.wallMs.toFixed(1)} ms wall`);
    L.push(`    buffers: ${p.buffers.registrations} registered, ${p.buffers.metadataBytesPerPage.toFixed(1)} metadata bytes/page, ${p.buffers.iotlbSyncsPerBuffer.toFixed(2)} IOTLB syncs/buffer, ${p.buffers.recycled} recycled`);
    L.push(`    device tracker: ${p.deviceTracker.requestedRanges} ranges requested, merged to ${p.deviceTracker.ranges}, page ${p.deviceTracker.pageSize}, ${p.deviceTracker.reports} reports in ${p.deviceTracker.messages} messages`);
    const v = p.verification;
    L.push(`    [${v.mismatchedPages === 0 ? ' ok ' : 'FAIL'}] target guest memory equals the source at stop (${v.guestPagesCompared} pages, ${v.mismatchedPages} differ)`);
    L.push(`    [${v.functionStateEqual ? ' ok ' : 'FAIL'}] target function state equals the source at stop (${v.functionStateBytes} bytes)`);
    L.push(`    [${v.targetContinued ? ' ok ' : 'FAIL'}] workload continues on the target (${v.targetPacketsAfterResume} packets DMAed)`);
    L.push(`    [${v.deviceTrackerCoversIommuDirty ? ' ok ' : 'FAIL'}] device tracker saw every page the IOMMU marked dirty`);
    L.push(`    [${v.sourceBuffersFreed ? ' ok ' : 'FAIL'}] source migration buffers all freed`);
    L.push(`    [${v.dmaDebugReports === 0 && v.iommuFaults === 0 ? ' ok ' : 'FAIL'}] no dma-debug report, no IOMMU fault (${v.dmaDebugReports} reports, ${v.iommuFaults} faults)`);
  }
  if (r.pathsIdentical !== null) L.push(`\n  [${r.pathsIdentical ? ' ok ' : 'FAIL'}] legacy path produced the identical stream and rounds`);
  L.push(`\n${r.verified ? 'verified' : 'NOT verified'}`);
  return `${L.join('\n')}\n`;
}

export const vfioMigrationStack: StackDef<VfioMigrationResult> = {
  name: 'vfio-migration',
  summary: 'Live migration of an assigned mlx5 VF between two hosts with device dirty tracking; the IOVA and legacy paths compared.',
  help: `  vfio-migration
                Live migration of an assigned mlx5 VF between two hosts (each with an IOMMU):
                pre-copy rounds from the CPU dirty log and the device dirty tracker, STOP_COPY
                with chunked device state, RESUMING and RUNNING on the target; the IOVA path and
                the legacy scatterlist path compared (--mapping iova|legacy runs one of them).
                IOMMU strict by default (--iommu lazy). --size N: guest RAM in MiB (8..128,
                a multiple of 8; default 16).
`,
  defaultIommu: 'strict',
  iommuModes: ['strict', 'lazy'],
  mappings: ['iova', 'legacy'],
  comparesMappings: true,
  verifyOption: false,
  size: { label: 'guest RAM', unit: 'MiB', default: 16, min: 8, max: 128 },
  options: [],
  validate(req) {
    const c = checkRequest(vfioMigrationStack, req);
    // 8 guest regions, each a whole number of MiB (backed by 2 MiB and 1 MiB blocks).
    if (c.size % 8 !== 0) throw new StackUsageError(`--size (guest RAM in MiB) must be a multiple of 8, got ${c.size}`);
  },
  run(req) {
    vfioMigrationStack.validate(req);
    const c = checkRequest(vfioMigrationStack, req);
    return runVfioMigrationStack({
      seed: c.seed,
      iommu: c.iommu === 'lazy' ? 'lazy' : 'strict',
      guestMiB: c.size,
      path: c.mapping ?? 'both',
      ...(req.onMachine !== undefined ? { onMachine: req.onMachine } : {}),
      ...(req.onProgress !== undefined ? { onProgress: req.onProgress } : {}),
    });
  },
  format: formatVfioMigration,
};

/**
 * One path run of the "vfio-migration" stack (vfioMigration.ts): two hosts, the guest running on
 * the source with its VF, pre-copy rounds (CPU dirty log + the function's device dirty tracker,
 * the IOMMU's dirty bits as a cross-check), STOP_COPY, the stream carried to the target in uneven
 * pieces, RESUMING and RUNNING there; then the byte-for-byte checks. The workload and the models
 * are vfio-mlx5's (KvmGuest, the mlx5 variant driver, the VMM helpers); this file wires and measures.
 */
import { Errno, PAGE_SIZE, Rng } from '@dmakit/dma-core';
import { IovaBitmap, KvmGuest, VfioDeviceMigState as S, mlx5GuestPostRxRings, vfioDeviceDirtySync, vfioMigReadAll, vfioMigStateName, vfioMigWriteAll } from '@dmakit/vfio-mlx5';
import { buildHost, teardownHost } from './vfioMigrationHost.js';
import type { VfioMigrationHost } from './vfioMigrationHost.js';
import { VfioMigrationStop } from './vfioMigrationTypes.js';
import type { VfioMigrationOptions, VfioMigrationPathResult, VfioMigrationRound } from './vfioMigrationTypes.js';
import { wallNowMs } from './wallClock.js';

const LINK_BYTES_PER_NS = 3.125; // 25 Gb/s migration link

/** FNV-1a over the stream as sent, piece after piece, and its length. */
function digest(parts: readonly Uint8Array[]): string {
  let h = 0x811c_9dc5;
  let n = 0;
  for (const p of parts) {
    for (const b of p) h = Math.imul(h ^ b, 0x0100_0193) >>> 0;
    n += p.length;
  }
  return `fnv1a:${h.toString(16).padStart(8, '0')}:${n}`;
}

function corrupt(p: Uint8Array): Uint8Array {
  const c = p.slice();
  if (c.length > 40) c[40] = (c[40] ?? 0) ^ 0x5a;
  return c;
}

function arcsOf(log: readonly (readonly [number, number])[]): string[] {
  return log.map(([a, b]) => `${vfioMigStateName(a)}->${vfioMigStateName(b)}`);
}

export function runVfioMigrationPath(path: 'iova' | 'legacy', opts: VfioMigrationOptions = {}): VfioMigrationPathResult {
  const wall0 = wallNowMs();
  const seed = opts.seed ?? 1;
  const cfg = { guestMiB: opts.guestMiB ?? 16, stateBytes: opts.stateBytes ?? 256 * 1024, chunkBytes: opts.chunkBytes ?? 64 * 1024, iommu: opts.iommu ?? 'strict', legacy: path === 'legacy' } as const;
  const src = buildHost('src', seed * 2 + 1, cfg, opts.onMachine);
  let dst: VfioMigrationHost;
  try {
    dst = buildHost('dst', seed * 2 + 2, cfg, opts.onMachine);
  } catch (err) {
    teardownHost(src);
    throw err;
  }
  // Both hosts are torn down however the run ends (VM shut down on each: fds closed, guest RAM
  // unmapped and freed), so a run leaves its machines as it found them.
  const guests: { src: KvmGuest | null; dst: KvmGuest | null } = { src: null, dst: null };
  try {
    return migrate(path, opts, src, dst, guests, wall0);
  } finally {
    teardownHost(src, guests.src);
    teardownHost(dst, guests.dst);
  }
}

function migrate(
  path: 'iova' | 'legacy',
  opts: VfioMigrationOptions,
  src: VfioMigrationHost,
  dst: VfioMigrationHost,
  guests: { src: KvmGuest | null; dst: KvmGuest | null },
  wall0: number,
): VfioMigrationPathResult {
  const seed = opts.seed ?? 1;
  const maxRounds = opts.maxRounds ?? 8;
  const threshold = opts.dirtyThreshold ?? 32;
  const phases = maxRounds + 2;
  const progress = (done: number): void => opts.onProgress?.(done, phases);
  const wireRng = new Rng(seed + 99);
  const pages = src.mem.pages;
  // The guest: vCPUs write the upper half of its RAM; its mlx5 driver's receive rings fill the lower half.
  const guest = new KvmGuest({ machine: src.machine, memory: src.mem, seed: seed + 5, cpuFirstPage: Math.floor(pages / 2), devices: [src.fw] });
  guests.src = guest;
  const posted = mlx5GuestPostRxRings(src.fw, src.mem);
  if (posted !== 0) throw new VfioMigrationStop('guest driver posts its rings', posted);
  // Target guest RAM starts as whatever the target host had there: zero it (the VMM allocates it).
  for (let i = 0; i < pages; i++) dst.machine.memory.fill(dst.mem.hpa[i] ?? 0, PAGE_SIZE, 0);

  // Initial guest memory content and a warm-up period of the workload.
  const fillRng = new Rng(seed + 3);
  const page = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < pages; i++) {
    fillRng.fill(page);
    src.machine.memory.write(src.mem.hpa[i] ?? 0, page);
  }
  guest.start();
  src.machine.advance(2_000_000);

  const pfDomainSrc = src.iommu.domainOf(src.pf);
  const syncs0 = pfDomainSrc?.stats().iotlbSyncMaps ?? 0;

  // Start dirty tracking: the CPU dirty log, the device's own tracker, and the IOMMU's dirty bits
  // (a cross-check only: migration uses the device tracker, which needs no IOMMU support).
  guest.setDirtyLogging(true);
  const vdev = src.drv.vdev;
  const trackedPageSize = vdev.dmaLoggingStart(src.mem.regions, PAGE_SIZE);
  if (trackedPageSize < 0) throw new VfioMigrationStop('VFIO_DEVICE_FEATURE_DMA_LOGGING_START', trackedPageSize);
  src.domain.setDirtyTracking(true);
  const trackedRanges = src.drv.trackedRanges.length;

  // The target waits in RESUMING for the whole migration (QEMU loads pre-copy data as it comes).
  const t = dst.drv.vdev.setMigDeviceState(S.RESUMING);
  if (t.ret !== 0 || t.dataFd === null) throw new VfioMigrationStop('target -> RESUMING', t.ret === 0 ? -Errno.EIO : t.ret);
  const dstFd = t.dataFd;
  let targetWriteErr = 0;

  const r = vdev.setMigDeviceState(S.PRE_COPY);
  if (r.ret !== 0 || r.dataFd === null) throw new VfioMigrationStop('source -> PRE_COPY', r.ret === 0 ? -Errno.EIO : r.ret);
  const fd = r.dataFd;
  const deviceStream: Uint8Array[] = [];
  let ramBytes = 0;
  const rounds: VfioMigrationRound[] = [];
  const sendPages = (set: Iterable<number>): number => {
    let n = 0;
    for (const i of set) {
      // Copy the page over the link: time passes on the source while the workload runs.
      const bytes = src.machine.memory.read(src.mem.hpa[i] ?? 0, PAGE_SIZE);
      dst.machine.memory.write(dst.mem.hpa[i] ?? 0, bytes);
      n++;
    }
    ramBytes += n * (PAGE_SIZE + 8);
    src.machine.advance(Math.ceil((n * (PAGE_SIZE + 8)) / LINK_BYTES_PER_NS));
    return n;
  };
  const sendDevice = (): number => {
    const parts: Uint8Array[] = [];
    const n = vfioMigReadAll(fd, parts);
    if (n < 0) throw new VfioMigrationStop('read of the source migration fd', n);
    for (const p of parts) {
      deviceStream.push(p);
      if (targetWriteErr === 0) {
        // Written to the target's fd in uneven pieces, as they come off the network.
        const w = vfioMigWriteAll(dstFd, opts.corruptStream === true ? corrupt(p) : p, () => 1 + wireRng.nextInt(48 * 1024));
        if (w < 0) targetWriteErr = w;
      }
    }
    src.machine.advance(Math.ceil(n / LINK_BYTES_PER_NS));
    return n;
  };
  const cover = { ok: true };
  const collectDirty = (): { set: Set<number>; cpu: number; device: number; iommu: number } => {
    const set = new Set<number>();
    const cpu = guest.getAndClearDirtyLog(set);
    const devSet = new Set<number>();
    const device = vfioDeviceDirtySync(vdev, src.mem, trackedPageSize, devSet);
    if (device < 0) throw new VfioMigrationStop('VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT', device);
    for (const i of devSet) set.add(i);
    let iommu = 0;
    for (const reg of src.mem.regions) {
      const bits = new Uint8Array(Math.ceil(reg.length / PAGE_SIZE / 8));
      const n = src.domain.readAndClearDirty(reg.iova, reg.length, 0, bits);
      if (n < 0) continue;
      iommu += n;
      const bm = new IovaBitmap(reg.iova, reg.length, PAGE_SIZE);
      bm.bits.set(bits);
      for (const a of bm.dirtyPages()) if (!devSet.has(src.mem.pageIndex(a))) cover.ok = false;
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
  if (st.ret !== 0) throw new VfioMigrationStop('source -> STOP_COPY', st.ret);
  // The moment of stop: nothing writes guest memory or function state any more.
  const snapMem = new Uint8Array(pages * PAGE_SIZE);
  for (let i = 0; i < pages; i++) src.machine.memory.readInto(src.mem.hpa[i] ?? 0, snapMem, i * PAGE_SIZE, PAGE_SIZE);
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
    dst.machine.memory.readInto(dst.mem.hpa[i] ?? 0, got, 0, PAGE_SIZE);
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
    const tg = new KvmGuest({ machine: dst.machine, memory: dst.mem, seed: seed + 6, cpuFirstPage: Math.floor(pages / 2), devices: [dst.fw] });
    guests.dst = tg;
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
  // The target could not take the stream (a write to its fd, or RESUMING -> RUNNING's load, got an
  // errno): the migration failed at the target, as QEMU reports it; the source is untouched.
  if (opts.corruptStream !== true && run.ret !== 0) {
    throw new VfioMigrationStop(targetWriteErr !== 0 ? 'write to the target migration fd' : 'target RESUMING -> RUNNING', run.ret);
  }
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
      metadataBytesPerPage: bs.peakMetadataBytes / Math.max(1, bs.peakLivePages), // bytes per page held at the peak
      iotlbSyncs: syncs,
      iotlbSyncsPerBuffer: registrations > 0 ? syncs / registrations : 0,
      recycled: bs.recycled,
    },
    deviceTracker: { ranges: trackedRanges, requestedRanges: src.mem.regions.length, pageSize: trackedPageSize, reports: src.drv.stats.trackerReports, messages: src.drv.stats.trackerMessages },
    arcs: { source: arcsOf(src.drv.arcLog), target: arcsOf(dst.drv.arcLog) },
    streamDigest: digest(deviceStream),
    wallMs: wallNowMs() - wall0,
  };
}

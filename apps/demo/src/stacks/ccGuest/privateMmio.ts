/**
 * The cc-guest stack's dma-buf step: a vfio-pci function that is a TDI exports its private BAR
 * through phys_vec ranges (@dmakit/dmabuf's VfioPciCoreDevice). Before the guest accepts the TDI
 * the export is refused and the guest's private loads read all ones; once accepted in RUN, a peer
 * that is itself an accepted TDI maps the buffer (BUS_ADDR through the switch) and moves bytes
 * both ways, verified against the guest's private view; a peer that is not a TDI is refused by the
 * device; a TDISP error revokes the buffer at once (move_notify, the importer unmaps, a new map gets
 * -ENODEV, the stale address reaches nothing) and no mapping is left behind.
 * Platform-neutral: no node: imports.
 */
import { DMA_BIDIRECTIONAL, DmaFaultError, Errno, errnoName, PAGE_SIZE, SZ_1M, isErrPtr, pciMmioRead, pciMmioWrite, tdispAccept, tdispAttest, tdispError, tdispGetReport, tdispInit, tdispLock, tdispStart, tdispStop, toPciDev } from '@dmakit/dma-core';
import type { Device, DmaBufAttachment, Machine, SgTable } from '@dmakit/dma-core';
import { dmaBufDetach, dmaBufDynamicAttach, dmaBufMappingStats, dmaBufMapAttachmentUnlocked, dmaBufPut, dmaBufSgtMode, dmaBufUnmapAttachment, VfioPciCoreDevice } from '@dmakit/dmabuf';
import type { CcPrivateMmioResult } from './result.js';
import { CcRigError } from './workload.js';

const ACCEL_MEASUREMENT = 'accel-fw-4.0:sha384:9e11';
const DMA_MEASUREMENT = 'dma-engine-fw-1.3:sha384:41aa';
/** Two ranges of the private BAR: 4 pages at 0 and 4 pages at 1 MiB. */
const RANGES = [
  { offset: 0, length: 4 * PAGE_SIZE },
  { offset: SZ_1M, length: 4 * PAGE_SIZE },
];

function lockAttestStart(dev: Device, measurement: string): number {
  const lock = tdispLock(dev).errno;
  if (lock !== 0) return lock;
  const report = tdispGetReport(dev);
  const attest = tdispAttest(dev, report, measurement);
  if (attest !== 0) return attest;
  return tdispStart(dev, report?.nonce ?? 0).errno;
}

function faults(fn: () => void): boolean {
  try {
    fn();
    return false;
  } catch (e) {
    if (e instanceof DmaFaultError) return true;
    throw e;
  }
}

/** Run the step on the stack's machine (after its NVMe phases; it adds its own switch and functions). */
export function runPrivateMmioStep(m: Machine): CcPrivateMmioResult {
  const hb = m.pci.addHostBridge({ p2pAllowed: true });
  const sw = m.pci.addSwitch(m.pci.addRootPort(hb), { downstreamPorts: 3 });
  const [d0, d1, d2] = sw.downstreamPorts;
  if (d0 === undefined || d1 === undefined || d2 === undefined) throw new Error('cc-guest: switch without ports');
  const accel = m.pci.addDevice({ name: 'accel0', parent: d0, dmaMaskBits: 64, bars: [{ size: 64 * 1024 }, { size: 2 * SZ_1M, prefetch: true, is64: true }] });
  const engine = m.pci.addDevice({ name: 'dma0', parent: d1, dmaMaskBits: 64 });
  const outsider = m.pci.addDevice({ name: 'peer0', parent: d2, dmaMaskBits: 64 });
  const bar = toPciDev(accel)?.bar(1);
  if (bar === undefined) throw new Error('cc-guest: accel0 has no BAR1');
  if (tdispInit(accel, { measurement: ACCEL_MEASUREMENT, privateBars: [1] }) !== 0) throw new Error('cc-guest: tdispInit(accel0) failed');
  if (tdispInit(engine, { measurement: DMA_MEASUREMENT }) !== 0) throw new Error('cc-guest: tdispInit(dma0) failed');
  // The importer is an accepted TDI itself, so its peer requests are TEE (T=1) requests.
  if (lockAttestStart(engine, DMA_MEASUREMENT) !== 0 || tdispAccept(engine).errno !== 0) throw new Error('cc-guest: dma0 was not accepted');
  const vdev = new VfioPciCoreDevice(m, accel);
  const live0 = dmaBufMappingStats.live;
  const probe = new Uint8Array(64);
  let cpuRefused = 0;
  let cpuAllOnes = true;
  const cpuPrivateLoad = (): void => {
    if (pciMmioRead(m, bar.start, probe, 'private') === -Errno.EIO) {
      cpuRefused++;
      cpuAllOnes &&= probe.every((b) => b === 0xff);
    }
  };

  // Before acceptance: CONFIG_UNLOCKED, CONFIG_LOCKED, RUN (attested, not accepted).
  const exportErrnos: number[] = [];
  const tryExport = (): void => {
    const r = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: RANGES });
    if (!isErrPtr(r)) throw new Error('cc-guest: private MMIO exported before acceptance');
    exportErrnos.push(r);
    cpuPrivateLoad();
  };
  tryExport();
  if (tdispLock(accel).errno !== 0) throw new Error('cc-guest: lock accel0 failed');
  tryExport();
  const report = tdispGetReport(accel);
  if (tdispAttest(accel, report, ACCEL_MEASUREMENT) !== 0 || tdispStart(accel, report?.nonce ?? 0).errno !== 0) throw new Error('cc-guest: attest/start accel0 failed');
  tryExport();
  if (tdispAccept(accel).errno !== 0) throw new Error('cc-guest: accept accel0 failed');

  // RUN and accepted: export, attach dynamically, map through phys_vec, move bytes both ways.
  const buf = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: RANGES });
  if (isErrPtr(buf)) throw new Error(`cc-guest: export of private MMIO failed (${buf})`);
  let sgt: SgTable | null = null;
  let moveNotifies = 0;
  const attach: DmaBufAttachment | number = dmaBufDynamicAttach(buf, engine, {
    allowPeer2peer: true,
    moveNotify: () => {
      moveNotifies++;
      if (sgt !== null && typeof attach !== 'number') dmaBufUnmapAttachment(attach, sgt, DMA_BIDIRECTIONAL);
      sgt = null;
    },
  });
  // An allocation failure (fail_nth) stops the step at its edge: give back what it holds, report.
  const unwind = (step: string, errno: number): never => {
    if (typeof attach !== 'number') dmaBufDetach(buf, attach);
    dmaBufPut(buf);
    vdev.close();
    tdispStop(accel);
    tdispStop(engine);
    throw new CcRigError(step, `-${errnoName(errno)}`);
  };
  if (isErrPtr(attach)) return unwind('private MMIO: dma_buf_dynamic_attach', attach);
  const mapped = dmaBufMapAttachmentUnlocked(attach, DMA_BIDIRECTIONAL);
  if (isErrPtr(mapped)) return unwind('private MMIO: dma_buf_map_attachment', mapped);
  sgt = mapped;
  const mode = dmaBufSgtMode(mapped) ?? 'none';
  let bytesMoved = 0;
  let mismatches = 0;
  const stale: number[] = [];
  for (let i = 0; i < mapped.nents; i++) {
    const addr = mapped.dmaAddress[i] ?? 0;
    const len = mapped.dmaLength[i] ?? 0;
    const range = RANGES[i];
    if (range === undefined) break;
    stale.push(addr);
    const phys = bar.start + range.offset;
    // The device writes the first half of the range; the guest reads it through its private mapping.
    const half = len / 2;
    const fromDev = m.rng.fill(new Uint8Array(half));
    engine.dmaWrite(addr, fromDev);
    const seen = new Uint8Array(half);
    if (pciMmioRead(m, phys, seen, 'private') !== 0 || !seen.every((b, k) => b === fromDev[k])) mismatches++;
    // The guest writes the second half privately; the device reads it.
    const fromCpu = m.rng.fill(new Uint8Array(len - half));
    if (pciMmioWrite(m, phys + half, fromCpu, 'private') !== 0) mismatches++;
    const got = engine.dmaRead(addr + half, len - half);
    if (!got.every((b, k) => b === fromCpu[k])) mismatches++;
    bytesMoved += len;
  }
  // A peer that is not a TDI: its T=0 request gets Unsupported Request from the locked TDI.
  const snapshot = m.memory.read(bar.start, 64);
  let p2pRefused = 0;
  if (faults(() => { outsider.dmaWrite(stale[0] ?? 0, new Uint8Array(64)); })) p2pRefused++;

  // A TDISP error in RUN: the buffer is revoked at once; the importer unmaps in move_notify.
  tdispError(accel, 'device-error');
  const mapAfterRevoke = dmaBufMapAttachmentUnlocked(attach, DMA_BIDIRECTIONAL);
  const mapAfterRevokeErrno = isErrPtr(mapAfterRevoke) ? mapAfterRevoke : 0;
  // An importer that kept the old address reaches nothing.
  if (faults(() => { engine.dmaWrite(stale[0] ?? 0, new Uint8Array(64)); })) p2pRefused++;
  cpuPrivateLoad();
  const after = m.memory.read(bar.start, 64);
  const barIntact = after.every((b, k) => b === snapshot[k]);
  const liveMappingsAfterRevoke = dmaBufMappingStats.live - live0;

  dmaBufDetach(buf, attach);
  dmaBufPut(buf);
  vdev.close();
  tdispStop(accel);
  tdispStop(engine);
  return {
    exportErrnos,
    cpuRefused,
    cpuAllOnes,
    p2pRefused,
    mode,
    bytesMoved,
    mismatches,
    moveNotifies,
    mapAfterRevokeErrno,
    liveMappingsAfterRevoke,
    barIntact,
  };
}

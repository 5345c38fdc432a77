/**
 * The "cc-guest" stack: an NVMe drive in a confidential guest (TDX or SEV). Its I/O first bounces
 * through the shared swiotlb pool (force_dma_unencrypted); mid-run the guest locks, attests and
 * accepts the function as a TDI (TDISP CONFIG_UNLOCKED -> CONFIG_LOCKED -> RUN) without losing an
 * I/O in flight, and the same workload then runs privately with no bounce. A second, unaccepted
 * device tries to read private memory and is refused; a TDISP error mid-run revokes the drive's
 * private access, the I/Os in flight fail and are redone through bounce buffers, and every byte
 * is verified. Last, a vfio-pci dma-buf over a TDI's private BAR (phys_vec): refused before the
 * TDI is accepted, moved peer-to-peer in RUN, revoked by a TDISP error (ccGuest/privateMmio.ts).
 * Platform-neutral (no node: imports).
 */
import { createMachine, DmaFaultError, Errno, SZ_1G, tdiOf, tdispAccept, tdispAttest, tdispError, tdispGetReport, tdispInit, tdispLock, tdispStart, tdispStop } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import { formatCcGuest } from './ccGuest/report.js';
import { runPrivateMmioStep } from './ccGuest/privateMmio.js';
import { CC_BS, CcNvmeRig, CcRigError } from './ccGuest/workload.js';
import type { CcGuestResult, CcRogueResult, CcVendorName } from './ccGuest/result.js';
import type { CcPhaseResult } from './ccGuest/workload.js';
export type { CcDriverMmioResult, CcGuestResult, CcPrivateMmioResult, CcRogueResult, CcVendorName } from './ccGuest/result.js';
import { checkRequest, extraInt, extraString, StackUsageError } from './types.js';
import type { StackDef, StackFailure, StackInfo, StackRunRequest } from './types.js';

/** The drive's measurement as its DSM reports it, and the guest's reference value for it. */
const MEASUREMENT = 'nvme-fw-2.1:sha384:5be1';

const INFO: StackInfo = {
  name: 'cc-guest',
  summary: 'An NVMe drive in a confidential guest: bounced I/O, then accepted as a TDI (TDISP) doing private DMA; a rogue device refused; a TDISP error revoking access.',
  help: `  cc-guest      An NVMe drive in a confidential (TDX/SEV) guest: verified I/O through the
                shared swiotlb pool, the drive locked, attested and accepted as a TDI mid-run
                (no I/O lost), the same I/O privately with no bounce, an unaccepted device
                refused, and a TDISP error mid-run revoking access (I/O redone, nothing corrupted);
                then a vfio-pci dma-buf over a TDI's private BAR: refused before acceptance,
                moved peer-to-peer in RUN, revoked by a TDISP error.
                Options: --ios N per phase (default 256)  --qd N (1..32, default 8)  --vendor tdx|sev
`,
  defaultIommu: 'off',
  iommuModes: ['off'],
  mappings: ['iova'],
  comparesMappings: false,
  verifyOption: false,
  size: { label: 'I/Os per phase', unit: 'I/Os', default: 256, min: 16, max: 100_000, option: 'ios' },
  options: [
    { key: 'qd', flag: 'qd', type: 'value', valueName: 'N', description: 'outstanding I/Os (1..32, default 8)' },
    { key: 'vendor', flag: 'vendor', type: 'value', valueName: 'tdx|sev', description: 'confidential-computing platform (default tdx)' },
  ],
};

interface CcPlan {
  readonly seed: number;
  readonly ios: number;
  readonly qd: number;
  readonly vendor: CcVendorName;
}

function plan(req: StackRunRequest): CcPlan {
  const c = checkRequest(INFO, req);
  const qd = extraInt(INFO, req, 'qd', 8, 1, 32);
  const vendor = extraString(INFO, req, 'vendor', 'tdx');
  if (vendor !== 'tdx' && vendor !== 'sev') throw new StackUsageError(`--vendor must be tdx or sev, got ${JSON.stringify(vendor)}`);
  // The mid-run events (accept, TDISP error) need I/O issued both before and after them.
  if (c.size < 4 * qd) throw new StackUsageError(`--ios must be at least 4 x --qd (${4 * qd}) so every phase has I/O before and after its mid-run event, got ${c.size}`);
  return { seed: c.seed, ios: c.size, qd, vendor };
}

/**
 * lock -> GET_DEVICE_INTERFACE_REPORT -> attest -> START_INTERFACE -> accept, then the guest maps
 * BAR0 private (a locked TDI answers the shared mapping with Unsupported Request); throws if a step fails.
 */
function acceptAsTdi(rig: CcNvmeRig): void {
  const dev = rig.dev;
  if (tdiOf(dev) === null && tdispInit(dev, { measurement: MEASUREMENT }) !== 0) throw new Error('cc-guest: tdispInit failed');
  const steps: [string, number][] = [['lock', tdispLock(dev).errno]];
  const report = tdispGetReport(dev);
  steps.push(['attest', tdispAttest(dev, report, MEASUREMENT)]);
  steps.push(['start', tdispStart(dev, report?.nonce ?? 0).errno]);
  steps.push(['accept', tdispAccept(dev).errno]);
  const bad = steps.find(([, e]) => e !== 0);
  if (bad !== undefined) throw new Error(`cc-guest: TDISP ${bad[0]} failed (${bad[1]})`);
  rig.setMmioWorld('private');
}

/**
 * The guest leaves the private world: STOP_INTERFACE (unless the TDI is already unlocked), then
 * BAR0 mapped shared again (private MMIO is refused outside RUN).
 */
function stopTdi(rig: CcNvmeRig): void {
  if (tdiOf(rig.dev)?.state !== 'CONFIG_UNLOCKED') tdispStop(rig.dev);
  rig.setMmioWorld('shared');
}

/** A second device, never accepted, tries to reach the guest's private memory. */
function rogueDevice(m: Machine): CcRogueResult {
  const cc = m.cc;
  const rogue = m.pci.addDevice({ name: 'rogue0', dmaMaskBits: 64 });
  const secret = m.memory.allocPages(0);
  if (secret === 0) throw new CcRigError('rogue device: secret page', '-ENOMEM (alloc_pages)');
  const bytes = m.rng.fill(new Uint8Array(512));
  m.memory.write(secret, bytes);
  const tries: (() => void)[] = [
    () => rogue.dmaRead(secret, 512), // private-world address
    () => rogue.dmaRead(cc === null ? secret : cc.ccMkdec(secret), 512), // shared alias of a private page
    () => {
      rogue.dmaWrite(secret, new Uint8Array(512));
    },
  ];
  tdispInit(rogue, { measurement: 'unknown-fw:sha384:0bad' });
  tdispLock(rogue);
  const attestErrno = tdispAttest(rogue, tdispGetReport(rogue), MEASUREMENT);
  const acceptErrno = tdispAccept(rogue).errno;
  tries.push(() => rogue.dmaRead(secret, 512)); // still refused after the failed attestation
  let refused = 0;
  for (const t of tries) {
    try {
      t();
    } catch (e) {
      if (!(e instanceof DmaFaultError)) throw e;
      refused++;
    }
  }
  const after = m.memory.read(secret, 512);
  const secretIntact = after.every((b, i) => b === bytes[i]);
  m.memory.freePages(secret, 0);
  return { attempts: tries.length, refused, secretIntact, attestErrno, acceptErrno };
}

function runCcGuest(req: StackRunRequest): CcGuestResult {
  const p = plan(req);
  const sharedBit = p.vendor === 'tdx' ? 51 : 47;
  const m = createMachine({ ramBytes: SZ_1G, seed: p.seed, dmaDebug: 'warn', cc: { type: p.vendor, sharedBit } });
  req.onMachine?.(m, 'guest');
  let rig: CcNvmeRig;
  try {
    rig = new CcNvmeRig(m, 'nvme0');
  } catch (err) {
    if (!(err instanceof CcRigError)) throw err;
    return stoppedResult(p, m, sharedBit, { step: err.step, error: err.error, dataIntact: true });
  }
  const dev = rig.dev;
  const total = 4 * p.ios;
  let base = 0;
  const progress = (n: number): void => {
    if (req.onProgress !== undefined && n % Math.max(1, Math.floor(total / 100)) === 0) req.onProgress(Math.min(total, base + n), total);
  };
  const phases: CcPhaseResult[] = [];
  const phase = (name: string, hook?: (n: number) => void): void => {
    phases.push(
      rig.run(name, p.ios, p.qd, (n) => {
        hook?.(n);
        progress(n);
      }),
    );
    base += p.ios;
  };

  let rogue: CcRogueResult;
  try {
    phase('shared (bounced)');
    // Shared -> private world while I/Os are in flight: bounced mappings finish through the pool.
    phase('convert mid-run', (n) => {
      if (n === Math.floor(p.ios / 4)) acceptAsTdi(rig);
    });
    phase('private (TDI)');
    rogue = rogueDevice(m);
    phase('TDISP error mid-run', (n) => {
      if (n === Math.floor(p.ios / 4)) {
        tdispError(dev, 'config-write');
        // The guest's TSM sees the ERROR: it stops the interface and the driver maps BAR0 shared
        // again before its next register access (left private, every load would read all ones).
        stopTdi(rig);
      }
    });
  } catch (err) {
    if (!(err instanceof CcRigError)) throw err;
    // Unwind: stop the TDI, remove the driver; every phase that ran was checked byte for byte.
    tdispStop(dev);
    rig.setMmioWorld('shared');
    const ns = rig.verifyNamespace();
    rig.host.remove();
    m.unbindDevice(dev);
    const intact = ns.mismatches === 0 && phases.every((x) => x.mismatches === 0);
    return { ...stoppedResult(p, m, sharedBit, { step: err.step, error: err.error, dataIntact: intact }), phases, tdispHistory: tdiOf(dev)?.history.slice() ?? [], namespaceMismatches: ns.mismatches };
  }
  stopTdi(rig);
  const ns = rig.verifyNamespace();
  rig.host.remove();
  m.unbindDevice(dev);
  const driverMmio = { worlds: rig.mmioWorlds.slice(), refused: rig.host.mmioRefused };
  let pm;
  try {
    pm = runPrivateMmioStep(m);
  } catch (err) {
    if (!(err instanceof CcRigError)) throw err;
    const intact = ns.mismatches === 0 && phases.every((x) => x.mismatches === 0);
    return { ...stoppedResult(p, m, sharedBit, { step: err.step, error: err.error, dataIntact: intact }), phases, rogue, tdispHistory: tdiOf(dev)?.history.slice() ?? [], namespaceMismatches: ns.mismatches };
  }

  const [shared, convert, priv, err] = phases as [CcPhaseResult, CcPhaseResult, CcPhaseResult, CcPhaseResult];
  const checks = [
    { name: 'every read-back matched what was written', ok: phases.every((x) => x.mismatches === 0) },
    { name: 'the namespace holds every last write', ok: ns.mismatches === 0 },
    { name: 'shared phase bounced every I/O', ok: shared.bounces >= shared.ios && shared.privateAccesses === 0 },
    { name: 'conversion mid-run lost no I/O', ok: convert.ios >= p.ios && convert.bounces > 0 && convert.privateAccesses > 0 },
    { name: 'private phase: no bounce, private DMA', ok: priv.bounces === 0 && priv.privateAccesses > 0 && priv.faults === 0 },
    { name: 'rogue device refused, secret intact', ok: rogue.refused === rogue.attempts && rogue.secretIntact },
    { name: 'TDISP error revoked access mid-run', ok: err.faults > 0 && err.ioErrors + err.driverRetries > 0 && err.bounces > 0 },
    {
      name: 'dma-buf over private MMIO: refused before RUN, bytes moved in RUN, revoked on leaving RUN',
      ok:
        pm.exportErrnos.length === 3 &&
        pm.exportErrnos.every((e) => e === -Errno.EPERM) &&
        pm.cpuRefused === 4 &&
        pm.cpuAllOnes &&
        pm.bytesMoved > 0 &&
        pm.mismatches === 0 &&
        pm.p2pRefused === 2 &&
        pm.moveNotifies === 1 &&
        pm.mapAfterRevokeErrno === -Errno.ENODEV &&
        pm.liveMappingsAfterRevoke === 0 &&
        pm.barIntact,
    },
  ];
  const cs = m.cc?.stats;
  return {
    stack: 'cc-guest',
    vendor: p.vendor,
    sharedBit,
    bs: CC_BS,
    qd: p.qd,
    phases,
    rogue,
    tdispHistory: tdiOf(dev)?.history.slice() ?? [],
    conversions: { decrypt: cs?.decryptCalls ?? 0, encrypt: cs?.encryptCalls ?? 0 },
    namespaceMismatches: ns.mismatches,
    privateMmio: pm,
    driverMmio,
    dmaDebugReports: m.dmaDebug.reports.length,
    checks,
    verified: checks.every((c) => c.ok),
    verifiedBytes: phases.reduce((t, x) => t + x.verifiedBytes, 0) + ns.bytes + pm.bytesMoved,
  };
}

const NO_ROGUE: CcRogueResult = { attempts: 0, refused: 0, secretIntact: true, attestErrno: 0, acceptErrno: 0 };

/** The result of a run that stopped on `failure` (nothing verified as a whole). */
function stoppedResult(p: CcPlan, m: Machine, sharedBit: number, failure: StackFailure): CcGuestResult {
  const cs = m.cc?.stats;
  return {
    stack: 'cc-guest',
    vendor: p.vendor,
    sharedBit,
    bs: CC_BS,
    qd: p.qd,
    phases: [],
    rogue: NO_ROGUE,
    tdispHistory: [],
    conversions: { decrypt: cs?.decryptCalls ?? 0, encrypt: cs?.encryptCalls ?? 0 },
    namespaceMismatches: 0,
    dmaDebugReports: m.dmaDebug.reports.length,
    checks: [],
    verified: false,
    failure,
    verifiedBytes: 0,
  };
}

export const ccGuestStack: StackDef<CcGuestResult> = {
  ...INFO,
  validate(req) {
    plan(req);
  },
  run: runCcGuest,
  format: formatCcGuest,
};

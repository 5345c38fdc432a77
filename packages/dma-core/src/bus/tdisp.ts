// kernel: drivers/pci/tsm.c, include/linux/pci-tsm.h (TEE Security Manager: lock / unlock /
// accept a TDI; proposed ~7.0-era series), PCIe r6.1 sec 11 (TDISP: TDI states and the
// LOCK_INTERFACE / GET_DEVICE_INTERFACE_REPORT / START_INTERFACE / STOP_INTERFACE requests, the
// TDISP ERROR response codes)
/**
 * TDISP on a PCI function: the TDI (TEE Device Interface) walks CONFIG_UNLOCKED -> CONFIG_LOCKED
 * -> RUN, and drops to ERROR when the device security manager (DSM) sees a violation (a config
 * write to a locked function, a function-level reset, a device-detected error). The guest accepts
 * the TDI only after it attested the interface report of the current lock; from then on, while in
 * RUN, its DMA may reach private memory (coco/cc.ts lets it through, dma-direct stops bouncing).
 * Leaving RUN, or un-accepting, revokes that at once. Requests not allowed in the current state get
 * the TDISP ERROR response INVALID_INTERFACE_STATE and -EIO, with a trace event.
 */
import type { Device } from '../device/device.js';
import { Errno } from '../units/errno.js';
import { toPciDev } from './pciDev.js';

declare module '../trace/events.js' {
  interface TraceEventMap {
    'tdisp:state_change': TdispStateChangeTraceFields;
    'tdisp:error_response': TdispErrorResponseTraceFields;
    'tdisp:accept': TdispAcceptTraceFields;
  }
}

/** tdisp:state_change: a TDI moved between states (`revoked`: private DMA was taken away). */
export type TdispStateChangeTraceFields = { readonly request: string; readonly old_state: string; readonly new_state: string; readonly revoked: boolean };
/** tdisp:error_response: the DSM answered a request with a TDISP ERROR (or the guest refused). */
export type TdispErrorResponseTraceFields = { readonly request: string; readonly error_code: number; readonly error: string; readonly state: string; readonly errno: number };
/** tdisp:accept: the guest accepted (or failed to accept) the TDI. */
export type TdispAcceptTraceFields = { readonly accepted: boolean; readonly state: string; readonly errno: number };

/** TDI states (PCIe r6.1 sec 11.3, "TDISP state machine"). */
export type TdispState = 'CONFIG_UNLOCKED' | 'CONFIG_LOCKED' | 'RUN' | 'ERROR';

/** TDISP ERROR response codes (PCIe r6.1 table 11-28; the PCI_TDISP_ERROR_CODE_* of libtdisp). */
export const TdispErrorCode = {
  INVALID_REQUEST: 0x0001,
  BUSY: 0x0003,
  INVALID_INTERFACE_STATE: 0x0004,
  UNSPECIFIED: 0x0005,
  UNSUPPORTED_REQUEST: 0x0007,
  VERSION_MISMATCH: 0x0041,
  INVALID_INTERFACE: 0x0101,
  INVALID_NONCE: 0x0102,
  INSUFFICIENT_ENTROPY: 0x0103,
  INVALID_DEVICE_CONFIGURATION: 0x0104,
} as const;
export type TdispErrorCode = (typeof TdispErrorCode)[keyof typeof TdispErrorCode];

/** The answer to one TDISP request: errno 0 on success; otherwise the error code of the ERROR response (0 for a guest-side refusal). */
export interface TdispResponse {
  readonly errno: number;
  readonly errorCode: number;
  readonly state: TdispState;
}

/** DEVICE_INTERFACE_REPORT, as much of it as attestation needs. */
export interface TdispInterfaceReport {
  /** The function the report describes ("dddd:bb:ss.f"). */
  readonly bdf: string;
  /** Device measurement (firmware and configuration digest) the guest compares with its reference value. */
  readonly measurement: string;
  /** The START_INTERFACE nonce of the current lock: binds the report to this lock. */
  readonly nonce: number;
}

/** Options of tdispInit. */
export interface TdispInitOptions {
  /** The device's measurement as its DSM reports it. */
  readonly measurement: string;
}

/** One TDI (the TDISP state of a PCI function). Read it with `tdiOf(dev)`. */
export class Tdi {
  readonly dev: Device;
  readonly bdf: string;
  readonly measurement: string;
  state: TdispState = 'CONFIG_UNLOCKED';
  /** The guest attested the report of the current lock. */
  attested = false;
  /** The guest accepted the TDI (private DMA allowed while in RUN). */
  accepted = false;
  /** START_INTERFACE nonce of the current lock (0 when unlocked). */
  nonce = 0;
  #locks = 0;
  /** Every state, oldest first (for the demo and tests). */
  readonly history: TdispState[] = ['CONFIG_UNLOCKED'];

  constructor(dev: Device, bdf: string, measurement: string) {
    this.dev = dev;
    this.bdf = bdf;
    this.measurement = measurement;
  }

  /** A fresh nonce for a new lock (deterministic: the model has no entropy source of its own). */
  nextNonce(): number {
    this.#locks++;
    let h = 0x811c9dc5;
    for (const c of `${this.bdf}#${this.#locks}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193);
    return (h >>> 0) || 1;
  }
}

const tdis = new WeakMap<Device, Tdi>();

/** The TDI of a device, or null when TDISP was not initialised on it. */
export function tdiOf(dev: Device): Tdi | null {
  return tdis.get(dev) ?? null;
}

function ok(t: Tdi): TdispResponse {
  return { errno: 0, errorCode: 0, state: t.state };
}

function errorName(code: number): string {
  for (const [k, v] of Object.entries(TdispErrorCode)) if (v === code) return k;
  return code === 0 ? 'GUEST_REFUSED' : 'UNKNOWN';
}

function fail(t: Tdi, request: string, errorCode: number, errno: number): TdispResponse {
  const tr = t.dev.host.trace;
  if (tr.enabled) tr.emit('tdisp:error_response', t.bdf, { request, error_code: errorCode, error: errorName(errorCode), state: t.state, errno });
  return { errno, errorCode, state: t.state };
}

function move(t: Tdi, request: string, to: TdispState): void {
  const from = t.state;
  const wasTrusted = t.accepted && from === 'RUN';
  t.state = to;
  t.history.push(to);
  if (to !== 'RUN' && to !== 'CONFIG_LOCKED') t.nonce = 0;
  if (to === 'CONFIG_UNLOCKED' || to === 'ERROR') t.attested = false;
  if (to !== 'RUN') t.accepted = false;
  // Leaving RUN revokes private DMA at once: the platform (coco/cc.ts) refuses the next access.
  if (wasTrusted && !(t.accepted && to === 'RUN')) t.dev.host.cc?.setTrusted(t.dev, false);
  const tr = t.dev.host.trace;
  if (tr.enabled) tr.emit('tdisp:state_change', t.bdf, { request, old_state: from, new_state: to, revoked: wasTrusted });
}

function noTdi(dev: Device): TdispResponse {
  return { errno: -Errno.ENODEV, errorCode: TdispErrorCode.INVALID_INTERFACE, state: tdiOf(dev)?.state ?? 'CONFIG_UNLOCKED' };
}

/**
 * Give a PCI function a TDI in CONFIG_UNLOCKED (the TSM probing a TDISP-capable function).
 * -ENODEV if `dev` is not a PCI function, -EEXIST if it already has one, -EINVAL for a bad measurement.
 */
export function tdispInit(dev: Device, opts: TdispInitOptions): number {
  const pdev = toPciDev(dev);
  if (pdev === null) return -Errno.ENODEV;
  if (tdis.has(dev)) return -Errno.EEXIST;
  const measurement: unknown = opts.measurement;
  if (typeof measurement !== 'string' || measurement.length === 0) return -Errno.EINVAL;
  tdis.set(dev, new Tdi(dev, pdev.bdf, measurement));
  return 0;
}

/** LOCK_INTERFACE_REQUEST (the TSM locks the configuration the VMM set up): CONFIG_UNLOCKED -> CONFIG_LOCKED. */
export function tdispLock(dev: Device): TdispResponse {
  const t = tdiOf(dev);
  if (t === null) return noTdi(dev);
  if (t.state !== 'CONFIG_UNLOCKED') return fail(t, 'LOCK_INTERFACE', TdispErrorCode.INVALID_INTERFACE_STATE, -Errno.EIO);
  t.nonce = t.nextNonce();
  move(t, 'LOCK_INTERFACE', 'CONFIG_LOCKED');
  return ok(t);
}

/** GET_DEVICE_INTERFACE_REPORT: valid in CONFIG_LOCKED and RUN; null (and an error response) otherwise. */
export function tdispGetReport(dev: Device): TdispInterfaceReport | null {
  const t = tdiOf(dev);
  if (t === null) return null;
  if (t.state !== 'CONFIG_LOCKED' && t.state !== 'RUN') {
    fail(t, 'GET_DEVICE_INTERFACE_REPORT', TdispErrorCode.INVALID_INTERFACE_STATE, -Errno.EIO);
    return null;
  }
  return { bdf: t.bdf, measurement: t.measurement, nonce: t.nonce };
}

/**
 * The guest's (simulated) attestation: the report must be of this function, of the current lock
 * (nonce) and carry the reference measurement. 0, or -EACCES (the guest refuses the device).
 */
export function tdispAttest(dev: Device, report: TdispInterfaceReport | null, referenceMeasurement: string): number {
  const t = tdiOf(dev);
  if (t === null) return -Errno.ENODEV;
  if (report?.bdf !== t.bdf || report.nonce !== t.nonce || t.nonce === 0 || report.measurement !== referenceMeasurement) {
    fail(t, 'ATTEST', 0, -Errno.EACCES);
    return -Errno.EACCES;
  }
  t.attested = true;
  return 0;
}

/** START_INTERFACE_REQUEST with the lock's nonce: CONFIG_LOCKED -> RUN (INVALID_NONCE on a wrong nonce). */
export function tdispStart(dev: Device, nonce: number): TdispResponse {
  const t = tdiOf(dev);
  if (t === null) return noTdi(dev);
  if (t.state !== 'CONFIG_LOCKED') return fail(t, 'START_INTERFACE', TdispErrorCode.INVALID_INTERFACE_STATE, -Errno.EIO);
  if (nonce !== t.nonce) return fail(t, 'START_INTERFACE', TdispErrorCode.INVALID_NONCE, -Errno.EIO);
  move(t, 'START_INTERFACE', 'RUN');
  return ok(t);
}

/**
 * The guest accepts the TDI (pci-tsm "accept"): only in RUN and after attesting this lock's
 * report. From now on its DMA may reach private memory without bouncing. -EPERM otherwise.
 */
export function tdispAccept(dev: Device): TdispResponse {
  const t = tdiOf(dev);
  if (t === null) return noTdi(dev);
  const tr = dev.host.trace;
  if (t.state !== 'RUN' || !t.attested) {
    if (tr.enabled) tr.emit('tdisp:accept', t.bdf, { accepted: false, state: t.state, errno: -Errno.EPERM });
    return fail(t, 'ACCEPT', t.state !== 'RUN' ? TdispErrorCode.INVALID_INTERFACE_STATE : 0, -Errno.EPERM);
  }
  t.accepted = true;
  dev.host.cc?.setTrusted(dev, true);
  if (tr.enabled) tr.emit('tdisp:accept', t.bdf, { accepted: true, state: t.state, errno: 0 });
  return ok(t);
}

/** STOP_INTERFACE_REQUEST (unlock): any state -> CONFIG_UNLOCKED; private DMA revoked. */
export function tdispStop(dev: Device): TdispResponse {
  const t = tdiOf(dev);
  if (t === null) return noTdi(dev);
  move(t, 'STOP_INTERFACE', 'CONFIG_UNLOCKED');
  return ok(t);
}

/**
 * A violation the DSM detects on a locked or running TDI (`cause`: 'config-write', 'flr',
 * 'device-error', ...): CONFIG_LOCKED/RUN -> ERROR, private DMA revoked. In CONFIG_UNLOCKED nothing
 * is locked, so nothing is violated: the response is INVALID_INTERFACE_STATE.
 */
export function tdispError(dev: Device, cause: string): TdispResponse {
  const t = tdiOf(dev);
  if (t === null) return noTdi(dev);
  if (t.state === 'CONFIG_UNLOCKED') return fail(t, `ERROR(${cause})`, TdispErrorCode.INVALID_INTERFACE_STATE, -Errno.EIO);
  if (t.state !== 'ERROR') move(t, `ERROR(${cause})`, 'ERROR');
  return ok(t);
}

/** Function-level reset: a locked or running TDI goes to ERROR (its state is lost); else nothing changes. */
export function tdispReset(dev: Device): TdispResponse {
  const t = tdiOf(dev);
  if (t === null) return noTdi(dev);
  if (t.state === 'CONFIG_LOCKED' || t.state === 'RUN') move(t, 'FLR', 'ERROR');
  return ok(t);
}

/** MMIO of the function's private BARs is reachable by the guest only in RUN, once accepted. */
export function tdispPrivateMmioAllowed(dev: Device): boolean {
  const t = tdiOf(dev);
  return t !== null && t.state === 'RUN' && t.accepted;
}

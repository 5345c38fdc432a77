// kernel: drivers/pci/tsm.c, include/linux/pci-tsm.h (TEE Security Manager: lock / unlock /
// accept a TDI; proposed ~7.0-era series), PCIe r6.1 sec 11 (TDISP: TDI states and the
// LOCK_INTERFACE / GET_DEVICE_INTERFACE_REPORT / START_INTERFACE / STOP_INTERFACE requests, the
// TDISP ERROR response codes; sec 11.2: a locked TDI rejects non-TEE (T=0) requests to its TEE
// MMIO with UR, and TEE (T=1) requests outside RUN), arch/x86/coco/tdx/tdx.c (virt_exception_kernel:
// an EPT violation on a private GPA the guest has not accepted panics the guest)
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
import { DmaFaultReason } from '../device/dmaFault.js';
import type { DeviceHost } from '../device/host.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import { toPciDev } from './pciDev.js';

declare module '../device/host.js' {
  interface DeviceHost {
    /**
     * The private-MMIO gate of the host's TDIs: set by tdispInit on the first TDI with private
     * BARs; absent or null while no TDI exists (the device port then pays one branch).
     */
    tdispMmio?: TdispMmioGate | null;
  }
}

declare module '../trace/events.js' {
  interface TraceEventMap {
    'tdisp:state_change': TdispStateChangeTraceFields;
    'tdisp:error_response': TdispErrorResponseTraceFields;
    'tdisp:accept': TdispAcceptTraceFields;
    'tdisp:mmio_refused': TdispMmioRefusedTraceFields;
  }
}

/** tdisp:state_change: a TDI moved between states (`revoked`: private DMA was taken away). */
export type TdispStateChangeTraceFields = { readonly request: string; readonly old_state: string; readonly new_state: string; readonly revoked: boolean };
/** tdisp:error_response: the DSM answered a request with a TDISP ERROR (or the guest refused). */
export type TdispErrorResponseTraceFields = { readonly request: string; readonly error_code: number; readonly error: string; readonly state: string; readonly errno: number };
/** tdisp:accept: the guest accepted (or failed to accept) the TDI. */
export type TdispAcceptTraceFields = { readonly accepted: boolean; readonly state: string; readonly errno: number };

/**
 * tdisp:mmio_refused: a CPU load/store or a peer's P2P request to a TDI's private BAR range was
 * rejected (`requester` is 'cpu' or the peer device; `world` the T bit of the request).
 */
export type TdispMmioRefusedTraceFields = {
  readonly requester: string;
  readonly bar: number;
  readonly phys_addr: number;
  readonly size: number;
  readonly write: boolean;
  readonly world: TdispMmioWorld;
  readonly state: string;
  readonly accepted: boolean;
};

/**
 * The world of an MMIO request, the TLP's T bit: 'private' (T=1, a TEE request: the guest's
 * private mapping of accepted MMIO, or a peer that is itself an accepted TDI in RUN) or 'shared'
 * (T=0: the VMM, or the guest's shared mapping).
 */
export type TdispMmioWorld = 'private' | 'shared';

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
  /** The TEE (private) MMIO ranges of the interface, one per private BAR. */
  readonly mmio: readonly TdispMmioRange[];
}

/** One private (TEE) MMIO range of a TDI: a whole memory BAR (the report's MMIO_RANGE without IS_NON_TEE_MEM). */
export interface TdispMmioRange {
  readonly bar: number;
  /** CPU physical address and size of the BAR. */
  readonly start: number;
  readonly size: number;
}

/** Options of tdispInit. */
export interface TdispInitOptions {
  /** The device's measurement as its DSM reports it. */
  readonly measurement: string;
  /**
   * Indices of the memory BARs that are private (TEE) MMIO. Default: every BAR of the function.
   * An empty list makes a TDI with no private MMIO (all its BARs non-TEE).
   */
  readonly privateBars?: readonly number[];
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
  /** The private (TEE) MMIO ranges of the function. */
  readonly mmio: readonly TdispMmioRange[];

  constructor(dev: Device, bdf: string, measurement: string, mmio: readonly TdispMmioRange[] = []) {
    this.dev = dev;
    this.bdf = bdf;
    this.measurement = measurement;
    this.mmio = mmio;
  }

  /** Is the private MMIO reachable by TEE (T=1) requests: RUN and accepted by the guest. */
  get privateMmioAllowed(): boolean {
    return this.state === 'RUN' && this.accepted;
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
  notify(t);
}

/** A TDISP change as a notifier sees it. */
export interface TdispChange {
  readonly dev: Device;
  readonly state: TdispState;
  readonly accepted: boolean;
  /** The private MMIO is reachable now (RUN and accepted). */
  readonly privateMmio: boolean;
}

const notifiers = new WeakMap<Device, Set<(c: TdispChange) => void>>();

/**
 * Register a callback for every TDISP state change and accept of `dev` (also before tdispInit).
 * Returns the unregister function. The role of the TSM telling the device's owner (vfio-pci: its
 * dma-bufs over private MMIO) that the TDI left or entered the trusted state.
 */
export function tdispNotifierRegister(dev: Device, fn: (c: TdispChange) => void): () => void {
  let set = notifiers.get(dev);
  if (set === undefined) notifiers.set(dev, (set = new Set()));
  set.add(fn);
  return () => {
    set.delete(fn);
  };
}

function notify(t: Tdi): void {
  const set = notifiers.get(t.dev);
  if (set === undefined || set.size === 0) return;
  const c: TdispChange = { dev: t.dev, state: t.state, accepted: t.accepted, privateMmio: t.privateMmioAllowed };
  for (const fn of [...set]) fn(c);
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
  const want: unknown = opts.privateBars ?? pdev.bars.map((b) => b.index);
  if (!Array.isArray(want)) return -Errno.EINVAL;
  const mmio: TdispMmioRange[] = [];
  for (const i of want as unknown[]) {
    const b = typeof i === 'number' ? pdev.bar(i) : undefined;
    if (b === undefined || mmio.some((r) => r.bar === b.index)) return -Errno.EINVAL;
    mmio.push({ bar: b.index, start: b.start, size: b.size });
  }
  const t = new Tdi(dev, pdev.bdf, measurement, mmio);
  tdis.set(dev, t);
  if (mmio.length > 0) (dev.host.tdispMmio ??= new TdispMmioGate(dev.host)).add(t);
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
  return { bdf: t.bdf, measurement: t.measurement, nonce: t.nonce, mmio: t.mmio };
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
  notify(t);
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
  return t !== null && t.privateMmioAllowed;
}

/** Is `[bar, +size)` of `dev` inside one of its TDI's private MMIO ranges? */
export function tdispBarIsPrivate(dev: Device, bar: number): boolean {
  const t = tdiOf(dev);
  return t !== null && t.mmio.some((r) => r.bar === bar);
}

/**
 * Does the TDI accept a request of `world` to its private MMIO? The model's reading of PCIe r6.1
 * sec 11.2 (TDISP rules for the device):
 * - T=1 (private): only in RUN, and the guest must have accepted the interface (TDX maps private
 *   MMIO into the Secure EPT only after accepting it; before that a guest load is an EPT
 *   violation on a private GPA);
 * - T=0 (shared): only in CONFIG_UNLOCKED; once locked (CONFIG_LOCKED, RUN, ERROR) a non-TEE
 *   request to TEE MMIO completes with Unsupported Request.
 */
function tdiAccepts(t: Tdi, world: TdispMmioWorld): boolean {
  return world === 'private' ? t.privateMmioAllowed : t.state === 'CONFIG_UNLOCKED';
}

/**
 * The private MMIO ranges of every TDI of one host, checked on each CPU MMIO access
 * (`pciMmioRead` / `pciMmioWrite`) and on each device access that lands in a BAR (the device
 * port: P2P by bus address or through the host bridge). A refused access moves no byte, is
 * recorded as a fault (backend 'tdisp'), counted and traced as `tdisp:mmio_refused`.
 */
export class TdispMmioGate {
  readonly #host: DeviceHost;
  readonly #tdis: Tdi[] = [];
  #lo = Number.POSITIVE_INFINITY;
  #hi = 0;
  #refused = 0;
  #allowed = 0;

  constructor(host: DeviceHost) {
    this.#host = host;
  }

  /** Accesses refused / let through to private MMIO ranges so far. */
  get stats(): { readonly refused: number; readonly allowed: number } {
    return { refused: this.#refused, allowed: this.#allowed };
  }

  /** Register a TDI's private ranges (tdispInit). */
  add(t: Tdi): void {
    this.#tdis.push(t);
    for (const r of t.mmio) {
      this.#lo = Math.min(this.#lo, r.start);
      this.#hi = Math.max(this.#hi, r.start + r.size);
    }
  }

  /** The TDI and range holding `phys`, or null (one comparison when `phys` is outside every range). */
  lookup(phys: number): { readonly tdi: Tdi; readonly range: TdispMmioRange } | null {
    if (phys < this.#lo || phys >= this.#hi) return null;
    for (const tdi of this.#tdis) {
      for (const range of tdi.mmio) if (phys >= range.start && phys < range.start + range.size) return { tdi, range };
    }
    return null;
  }

  /**
   * Check one access of `len` bytes at `phys` (inside one page) by `requester` (a device, or null
   * for the CPU) in `world`. Returns 0, or -EIO after counting and tracing the refusal (and, with
   * `record`, recording the fault; the device port records its own). Addresses outside every
   * private range are not the gate's business (0).
   */
  check(requester: Device | null, phys: number, len: number, write: boolean, world: TdispMmioWorld, record = true): number {
    const hit = this.lookup(phys);
    if (hit === null) return 0;
    const { tdi, range } = hit;
    // A private range must be reached in full by one request (it never straddles into another BAR).
    if (tdiAccepts(tdi, world) && phys + len <= range.start + range.size) {
      this.#allowed++;
      return 0;
    }
    this.#refused++;
    const host = this.#host;
    const name = requester?.name ?? 'cpu';
    if (record) host.recordFault({
      device: name,
      dmaAddr: phys,
      len,
      access: write ? 'write' : 'read',
      reason: DmaFaultReason.PERMISSION,
      reasonName: 'permission',
      backend: 'tdisp',
      time: host.clock.now(),
      detail: `TDISP: ${world} MMIO request to ${tdi.bdf} BAR${range.bar} refused in ${tdi.state}${tdi.accepted ? '' : ' (not accepted)'}`,
    });
    const tr = host.trace;
    if (tr.enabled) {
      tr.emit('tdisp:mmio_refused', tdi.bdf, { requester: name, bar: range.bar, phys_addr: phys, size: len, write, world, state: tdi.state, accepted: tdi.accepted });
    }
    return -Errno.EIO;
  }

  /**
   * Device-port check (called after translation, for accesses outside RAM): the request is
   * private (T=1) when the requester is itself an accepted TDI in RUN, else shared (T=0).
   */
  deviceAccess(dev: Device, phys: number, len: number, write: boolean): number {
    if (phys < this.#lo || phys >= this.#hi) return 0;
    const own = tdiOf(dev);
    return this.check(dev, phys, len, write, own !== null && own.privateMmioAllowed ? 'private' : 'shared', false);
  }
}

function barRegion(host: DeviceHost, phys: number, len: number): boolean {
  const r = host.memory.regionOf(phys);
  return r !== undefined && (r.kind === 'mmio' || r.kind === 'p2p-bar') && phys + len <= r.start + r.size;
}

function checkCpu(host: DeviceHost, phys: number, len: number, write: boolean, world: unknown): number {
  if (world !== 'private' && world !== 'shared') return -Errno.EINVAL;
  if (!Number.isSafeInteger(phys) || phys < 0 || !Number.isSafeInteger(len) || len <= 0) return -Errno.EINVAL;
  // A CPU access outside a BAR (RAM, or nothing at all) is not MMIO.
  if (!barRegion(host, phys, len)) return -Errno.EFAULT;
  const gate = host.tdispMmio;
  if (gate == null) return 0;
  // Check page by page, like the device port: any refused page refuses the whole access.
  for (let a = phys; a < phys + len; ) {
    const next = Math.min(phys + len, Math.floor(a / PAGE_SIZE) * PAGE_SIZE + PAGE_SIZE);
    const rc = gate.check(null, a, next - a, write, world);
    if (rc !== 0) return rc;
    a = next;
  }
  return 0;
}

/**
 * A CPU load from PCI MMIO (`readl`/`memcpy_fromio` through an ioremap of the BAR): `world` is how
 * the guest mapped it ('private': ioremap_encrypted of accepted MMIO; 'shared': an ordinary
 * decrypted ioremap). Fills `out` and returns 0; or -EIO when a TDI refused it: `out` is then all
 * ones, as the root complex completes a read that got Unsupported Request (where the real TDX guest
 * would take a fatal #VE instead, the model reports and goes on). -EINVAL for a bad argument,
 * -EFAULT when the range is not inside one BAR (`out` untouched for both).
 */
export function pciMmioRead(host: DeviceHost, phys: number, out: Uint8Array, world: TdispMmioWorld = 'shared'): number {
  const rc = checkCpu(host, phys, out.length, false, world);
  if (rc === -Errno.EIO) out.fill(0xff);
  else if (rc === 0) host.memory.readInto(phys, out, 0, out.length);
  return rc;
}

/**
 * A CPU store to PCI MMIO (`writel`/`memcpy_toio`). 0, or -EIO when a TDI refused it (posted write
 * dropped: no byte lands), -EINVAL / -EFAULT as pciMmioRead.
 */
export function pciMmioWrite(host: DeviceHost, phys: number, bytes: Uint8Array, world: TdispMmioWorld = 'shared'): number {
  const rc = checkCpu(host, phys, bytes.length, true, world);
  if (rc === 0) host.memory.write(phys, bytes, 0, bytes.length);
  return rc;
}

// The simulated NVMe controller: registers, queues, admin and NVM command sets, data moved through
// the device-side DMA port. NVM Express Base Specification 1.4; QEMU hw/nvme/ctrl.c is the second
// reference (status choices, queue creation checks, PRP/SGL walkers).
import { DmaFaultError } from '@dmakit/dma-core';
import type { Device, Machine, SimTimer } from '@dmakit/dma-core';
import { NvmeDataWalker } from './dataPointer.js';
import type { DataWalkerCounters } from './dataPointer.js';
import { NvmeNamespace } from './namespace.js';
import type { NvmeNamespaceOptions } from './namespace.js';
import { NvmeCompQueue, NvmeSubQueue } from './queues.js';
import {
  AQA,
  CAP,
  CC,
  CC_WRITABLE_MASK,
  CSTS,
  NVME_CAP_CSS_NVM,
  NVME_CC_SHN_ABRUPT,
  NVME_CC_SHN_NONE,
  NVME_CSTS_SHST_CMPLT,
  NVME_CSTS_SHST_NORMAL,
  NVME_CSTS_SHST_OCCUR,
  NVME_REG_ACQ,
  NVME_REG_AQA,
  NVME_REG_ASQ,
  NVME_REG_CAP,
  NVME_REG_CC,
  NVME_REG_CSTS,
  NVME_REG_DBS,
  NVME_REG_INTMC,
  NVME_REG_INTMS,
  NVME_REG_VS,
  nvmeBarSize,
  nvmeVs,
  regGet,
  regSet,
} from './registers.js';
import {
  NVME_CQE_SIZE,
  NVME_CQES_LOG2,
  NVME_CQ_IRQ_ENABLED,
  NVME_CTRL_SGLS_BITBUCKET,
  NVME_CTRL_SGLS_SUPPORTED,
  NVME_DSMGMT_AD,
  NVME_DSM_RANGE_SIZE,
  NVME_IDENTIFY_DATA_SIZE,
  NVME_NSID_ALL,
  NVME_PSDT_PRP,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_SQE_SIZE,
  NVME_SQES_LOG2,
  NvmeAdminOpcode,
  NvmeFeat,
  NvmeIdCns,
  NvmeOpcode,
  NvmeStatus,
  SQE,
  nvmeStatusCode,
  readLe64,
  writeLe64,
} from './spec.js';

/**
 * Simulated time per step, in ns. Defaults are round placeholders of the right order (a 4 KiB
 * read on a low-latency SSD is ~10 us, PCIe 3.0 x4 moves ~4 GB/s); the cost model of the demo
 * stack replaces them with cited figures.
 */
export interface NvmeControllerLatency {
  /** Doorbell write to SQ entry fetch. */
  fetch?: number;
  /** Admin command execution. */
  admin?: number;
  /** Read command base latency (before per-byte transfer). */
  read?: number;
  /** Write, Flush, Write Zeroes and Dataset Management base latency. */
  write?: number;
  /** Transfer time per data byte. */
  perByte?: number;
  /** CQ entry posted to MSI-X message delivered. */
  interrupt?: number;
  /** CC.EN 0→1 to CSTS.RDY 1. */
  ready?: number;
  /** CC.EN 1→0 to CSTS.RDY 0. */
  reset?: number;
  /** CC.SHN set to CSTS.SHST complete (after in-flight commands finished). */
  shutdown?: number;
}

/**
 * Options of the simulated NVMe controller: namespaces, queue limits, MSI-X vectors, latencies, MDTS,
 * doorbell stride, SGL support, identity strings. dmakit's device model (after QEMU hw/nvme).
 */
export interface NvmeControllerOptions {
  namespaces: readonly NvmeNamespaceOptions[];
  /** Entries per queue supported (CAP.MQES + 1), 2..65536. Default 1024. */
  maxQueueEntries?: number;
  /** I/O queue pairs supported (Number of Queues feature ceiling). Default 64. */
  maxQueues?: number;
  /** MSI-X table size. Default maxQueues + 1. */
  msixVectors?: number;
  latencyNs?: NvmeControllerLatency;
  /** Maximum Data Transfer Size as a power of two of CAP.MPSMIN pages (0 = no limit). Default 11 (8 MiB). */
  mdts?: number;
  /** CAP.DSTRD. Default 0 (doorbells 4 bytes apart). */
  doorbellStride?: number;
  /** Advertise and accept SGLs for I/O commands. Default true. */
  sgl?: boolean;
  serial?: string;
  model?: string;
}

/** Counters of one controller. Arrays are indexed by opcode. */
export interface NvmeControllerStats extends DataWalkerCounters {
  readonly adminCommands: Uint32Array;
  readonly ioCommands: Uint32Array;
  /** Bytes the host read from namespaces (Read) and wrote to them (Write). */
  bytesRead: number;
  bytesWritten: number;
  completions: number;
  /** Completions with a non-zero status, in total and by status (without DNR/More). */
  errors: number;
  readonly errorsByStatus: Map<number, number>;
  interrupts: number;
  /** Queue fetch or completion post refused by the DMA port (the controller goes fatal). */
  queueDmaFaults: number;
  /** Doorbell writes to a queue that does not exist or with an out-of-range value. */
  badDoorbells: number;
  /** Doorbell writes while the controller is not ready. */
  ignoredDoorbells: number;
  /** MMIO accesses that are unaligned or outside the register file. */
  badMmio: number;
  /** Commands aborted by Abort, SQ deletion, reset or shutdown. */
  aborted: number;
}

/** An MSI-X interrupt handler: called with the vector number. */
export type NvmeInterruptHandler = (vector: number) => void;

const DEFAULTS = {
  fetch: 250,
  admin: 10_000,
  read: 8_000,
  write: 10_000,
  perByte: 0.25,
  interrupt: 250,
  ready: 1_000_000,
  reset: 100_000,
  shutdown: 100_000,
} as const;

const MPSMIN = 0; // 4 KiB
// 8 KiB. QEMU reports 64 KiB (MPSMAX 4), but any MPSMAX above 1 sets CAP bits >= 2^53 and a 64-bit
// CAP read would no longer be exact in a JS number (DESIGN.md: no bigint); Linux uses 4 KiB anyway.
const MPSMAX = 1;
/** Identify Controller ACL/AERL (0's based): 4 outstanding Abort / Async Event Request commands. */
const ACL = 3;
const AERL = 3;
const DNR = NvmeStatus.DNR;
const FID_NOT_SAVEABLE = 0x10d; // SCT 1 SC 0x0D, Feature Identifier Not Saveable

/** One fetched command. Slots are pooled so the hot path allocates nothing per command. */
class NvmeCmd {
  readonly sqe = new Uint8Array(NVME_SQE_SIZE);
  readonly dv = new DataView(this.sqe.buffer);
  sqid = 0;
  cid = 0;
  /** Pending execution event; null when held (stalled, or an Async Event Request). */
  timer: SimTimer | null = null;
  readonly run: () => void;

  constructor(exec: (cmd: NvmeCmd) => void) {
    this.run = () => {
      exec(this);
    };
  }

  get opcode(): number {
    return this.sqe[SQE.OPC] ?? 0;
  }
}

/**
 * A simulated NVMe controller behind PCI function `dev`. The host driver talks to it like real
 * hardware: 32/64-bit MMIO to BAR0 (`mmioRead32`, `mmioWrite32`, ...), queues and data in host
 * memory reached only through the device's DMA port (so IOMMU translation and faults apply), and
 * MSI-X style interrupts delivered to `onInterrupt` handlers. All work runs on the machine's
 * simulation clock.
 */
export class NvmeController {
  readonly machine: Machine;
  readonly device: Device;
  readonly stats: NvmeControllerStats;
  /** BAR0 size the registers and doorbells need (size the PCI BAR with it). */
  readonly barSize: number;
  /** Why the last CC.EN 0→1 did not make the controller ready (empty when it did). */
  lastError = '';

  readonly #ns = new Map<number, NvmeNamespace>();
  readonly #maxNsid: number;
  readonly #lat: Required<NvmeControllerLatency>;
  readonly #mqes: number;
  readonly #maxQueues: number;
  readonly #msixVectors: number;
  readonly #mdts: number;
  readonly #mdtsBytes: number;
  readonly #dstrd: number;
  readonly #sgl: boolean;
  readonly #serial: string;
  readonly #model: string;
  readonly #cap: number;

  // Registers
  #cc = 0;
  #csts = 0;
  #aqa = 0;
  #asq = 0;
  #acq = 0;
  #intms = 0;
  #pageSize = 4096;

  // Queues and commands
  readonly #sqs: (NvmeSubQueue | undefined)[];
  readonly #cqs: (NvmeCompQueue | undefined)[];
  #allocSqs: number;
  #allocCqs: number;
  readonly #inflight = new Set<NvmeCmd>();
  readonly #freeCmds: NvmeCmd[] = [];
  readonly #exec = (cmd: NvmeCmd): void => {
    this.#execute(cmd);
  };
  #aerOutstanding = 0;
  #stallBudget = 0;
  readonly #features = new Map<number, number>();

  // Timers
  #readyTimer: SimTimer | null = null;
  #resetTimer: SimTimer | null = null;
  #shutdownTimer: SimTimer | null = null;

  // Interrupts (MSI-X table: mask bit and pending bit per vector)
  readonly #handlers = new Set<NvmeInterruptHandler>();
  readonly #irqTimers: (SimTimer | null)[];
  readonly #irqFns: (() => void)[];
  readonly #vecMasked: Uint8Array;
  readonly #vecPending: Uint8Array;

  // Data path scratch
  readonly #walker: NvmeDataWalker;
  #staging = new Uint8Array(0);
  readonly #cqe = new Uint8Array(NVME_CQE_SIZE);
  readonly #cqeDv = new DataView(this.#cqe.buffer);
  readonly #id = new Uint8Array(NVME_IDENTIFY_DATA_SIZE);
  readonly #idDv = new DataView(this.#id.buffer);
  #result = 0;

  constructor(machine: Machine, dev: Device, opts: NvmeControllerOptions) {
    this.machine = machine;
    this.device = dev;
    const mqe = opts.maxQueueEntries ?? 1024;
    if (!Number.isInteger(mqe) || mqe < 2 || mqe > 65536) throw new RangeError(`NvmeController: maxQueueEntries must be 2..65536, got ${mqe}`);
    const mq = opts.maxQueues ?? 64;
    if (!Number.isInteger(mq) || mq < 1 || mq > 65535) throw new RangeError(`NvmeController: maxQueues must be 1..65535, got ${mq}`);
    const mv = opts.msixVectors ?? mq + 1;
    if (!Number.isInteger(mv) || mv < 1 || mv > 2048) throw new RangeError(`NvmeController: msixVectors must be 1..2048, got ${mv}`);
    const mdts = opts.mdts ?? 11;
    if (!Number.isInteger(mdts) || mdts < 0 || mdts > 20) throw new RangeError(`NvmeController: mdts must be 0..20, got ${mdts}`);
    const dstrd = opts.doorbellStride ?? 0;
    if (!Number.isInteger(dstrd) || dstrd < 0 || dstrd > 15) throw new RangeError(`NvmeController: doorbellStride must be 0..15, got ${dstrd}`);
    if (opts.namespaces.length === 0) throw new RangeError('NvmeController: at least one namespace is required');
    for (const o of opts.namespaces) {
      if (this.#ns.has(o.nsid)) throw new RangeError(`NvmeController: duplicate nsid ${o.nsid}`);
      this.#ns.set(o.nsid, new NvmeNamespace(o));
    }
    const lat = { ...DEFAULTS, ...opts.latencyNs };
    for (const [k, v] of Object.entries(lat)) {
      if (!Number.isFinite(v) || v < 0) throw new RangeError(`NvmeController: latencyNs.${k} must be a finite number >= 0`);
    }
    this.#lat = lat;
    this.#maxNsid = Math.max(...this.#ns.keys());
    this.#mqes = mqe - 1;
    this.#maxQueues = mq;
    this.#msixVectors = mv;
    this.#mdts = mdts;
    this.#mdtsBytes = mdts === 0 ? Number.POSITIVE_INFINITY : 2 ** mdts * (4096 << MPSMIN);
    this.#dstrd = dstrd;
    this.#sgl = opts.sgl ?? true;
    this.#serial = opts.serial ?? `DMAKIT-${dev.name}`;
    this.#model = opts.model ?? 'dmakit NVMe Ctrl';
    this.#allocSqs = mq;
    this.#allocCqs = mq;
    this.#sqs = new Array<NvmeSubQueue | undefined>(mq + 1);
    this.#cqs = new Array<NvmeCompQueue | undefined>(mq + 1);
    this.#irqTimers = new Array<SimTimer | null>(mv).fill(null);
    this.#irqFns = Array.from({ length: mv }, (_, v) => () => {
      this.#fireIrq(v);
    });
    this.#vecMasked = new Uint8Array(mv);
    this.#vecPending = new Uint8Array(mv);
    this.barSize = nvmeBarSize(mq, dstrd);
    // CAP.TO covers the ready delay, in 500 ms units (at least 1).
    const to = Math.min(255, Math.max(1, Math.ceil(lat.ready / 500_000_000)));
    let cap = 0;
    cap = regSet(cap, CAP.MQES, this.#mqes);
    cap = regSet(cap, CAP.CQR, 1); // I/O queues must be physically contiguous
    cap = regSet(cap, CAP.TO, to);
    cap = regSet(cap, CAP.DSTRD, dstrd);
    cap = regSet(cap, CAP.CSS, NVME_CAP_CSS_NVM);
    cap = regSet(cap, CAP.MPSMIN, MPSMIN);
    cap = regSet(cap, CAP.MPSMAX, MPSMAX);
    this.#cap = cap;
    this.stats = {
      adminCommands: new Uint32Array(256),
      ioCommands: new Uint32Array(256),
      bytesRead: 0,
      bytesWritten: 0,
      completions: 0,
      errors: 0,
      errorsByStatus: new Map(),
      interrupts: 0,
      queueDmaFaults: 0,
      badDoorbells: 0,
      ignoredDoorbells: 0,
      badMmio: 0,
      aborted: 0,
      prpListPages: 0,
      prpEntries: 0,
      sglDescriptors: 0,
      sglSegments: 0,
    };
    this.#walker = new NvmeDataWalker(dev, this.stats);
  }

  // ---- public surface -------------------------------------------------------------------------

  /** The namespace with id `nsid`, if attached. */
  namespace(nsid: number): NvmeNamespace | undefined {
    return this.#ns.get(nsid);
  }

  /** Every attached namespace. */
  get namespaces(): readonly NvmeNamespace[] {
    return [...this.#ns.values()];
  }

  /** True when CSTS.RDY is set and the controller processes doorbells. */
  get ready(): boolean {
    return this.#running();
  }

  /** Commands fetched and not yet completed (held Async Event Requests included). */
  get inflightCount(): number {
    return this.#inflight.size;
  }

  /** Memory page size in use (CC.MPS latched at enable). */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** Register an MSI-X interrupt handler; returns a function that unregisters it. */
  onInterrupt(fn: NvmeInterruptHandler): () => void {
    this.#handlers.add(fn);
    return () => {
      this.#handlers.delete(fn);
    };
  }

  /**
   * MSI-X Vector Control mask bit. A message for a masked vector sets its pending bit and is
   * delivered when the vector is unmasked (PCI Local Bus spec, MSI-X).
   */
  setVectorMasked(vector: number, masked: boolean): void {
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.#msixVectors) throw new RangeError(`setVectorMasked: no MSI-X vector ${vector}`);
    this.#vecMasked[vector] = masked ? 1 : 0;
    if (!masked && this.#vecPending[vector] === 1) {
      this.#vecPending[vector] = 0;
      this.#queueIrq(vector);
    }
  }

  /**
   * Fault injection: the next `count` I/O commands are fetched but never complete on their own
   * (a stuck device), until aborted, their SQ is deleted, or the controller is reset.
   */
  injectStall(count = 1): void {
    if (!Number.isInteger(count) || count < 0) throw new RangeError(`injectStall: count must be >= 0, got ${count}`);
    this.#stallBudget += count;
  }

  // ---- MMIO -----------------------------------------------------------------------------------

  /** Reads a 32-bit controller register at BAR0 offset off (reserved and write-only registers read 0). */
  mmioRead32(off: number): number {
    if (!Number.isInteger(off) || off < 0 || off % 4 !== 0 || off + 4 > this.barSize) {
      this.stats.badMmio++;
      return 0;
    }
    switch (off) {
      case NVME_REG_CAP:
        return this.#cap % 0x1_0000_0000;
      case NVME_REG_CAP + 4:
        return Math.floor(this.#cap / 0x1_0000_0000);
      case NVME_REG_VS:
        return nvmeVs(1, 4, 0);
      case NVME_REG_INTMS:
      case NVME_REG_INTMC:
        return this.#intms >>> 0;
      case NVME_REG_CC:
        return this.#cc >>> 0;
      case NVME_REG_CSTS:
        return this.#csts >>> 0;
      case NVME_REG_AQA:
        return this.#aqa >>> 0;
      case NVME_REG_ASQ:
        return this.#asq % 0x1_0000_0000;
      case NVME_REG_ASQ + 4:
        return Math.floor(this.#asq / 0x1_0000_0000);
      case NVME_REG_ACQ:
        return this.#acq % 0x1_0000_0000;
      case NVME_REG_ACQ + 4:
        return Math.floor(this.#acq / 0x1_0000_0000);
      default:
        // Reserved registers, CMBLOC/CMBSZ (no CMB) and doorbells (write-only) read as zero.
        return 0;
    }
  }

  /** Writes a 32-bit controller register or doorbell at BAR0 offset off. */
  mmioWrite32(off: number, value: number): void {
    if (!Number.isInteger(off) || off < 0 || off % 4 !== 0 || off + 4 > this.barSize || !Number.isInteger(value)) {
      this.stats.badMmio++;
      return;
    }
    const v = value >>> 0;
    if (off >= NVME_REG_DBS) {
      this.#doorbell(off, v);
      return;
    }
    switch (off) {
      case NVME_REG_INTMS:
        // Pin/MSI interrupt masks; with MSI-X the table's mask bits apply (setVectorMasked).
        this.#intms = (this.#intms | v) >>> 0;
        return;
      case NVME_REG_INTMC:
        this.#intms = (this.#intms & ~v) >>> 0;
        return;
      case NVME_REG_CC:
        this.#writeCc(v & CC_WRITABLE_MASK);
        return;
      case NVME_REG_AQA:
        this.#aqa = v & 0x0fff0fff;
        return;
      // ASQ/ACQ bits 11:0 are reserved (queues are at least 4 KiB aligned).
      case NVME_REG_ASQ:
        this.#asq = Math.floor(this.#asq / 0x1_0000_0000) * 0x1_0000_0000 + ((v & ~0xfff) >>> 0);
        return;
      case NVME_REG_ASQ + 4:
        this.#asq = v * 0x1_0000_0000 + (this.#asq % 0x1_0000_0000);
        return;
      case NVME_REG_ACQ:
        this.#acq = Math.floor(this.#acq / 0x1_0000_0000) * 0x1_0000_0000 + ((v & ~0xfff) >>> 0);
        return;
      case NVME_REG_ACQ + 4:
        this.#acq = v * 0x1_0000_0000 + (this.#acq % 0x1_0000_0000);
        return;
      default:
        // CAP, VS, CSTS are read-only; NSSR is not supported (CAP.NSSRS = 0).
        return;
    }
  }

  /** Reads a 64-bit controller register (CAP, ASQ, ACQ) as two 32-bit reads. */
  mmioRead64(off: number): number {
    return this.mmioRead32(off + 4) * 0x1_0000_0000 + this.mmioRead32(off);
  }

  /** 64-bit write as two 32-bit writes, low dword first (`lo_hi_writeq`, as the kernel does). */
  mmioWrite64(off: number, value: number): void {
    if (!Number.isSafeInteger(value) || value < 0) {
      this.stats.badMmio++;
      return;
    }
    this.mmioWrite32(off, value % 0x1_0000_0000);
    this.mmioWrite32(off + 4, Math.floor(value / 0x1_0000_0000));
  }

  // ---- controller state machine ------------------------------------------------------------------

  #running(): boolean {
    return (this.#csts & 3) === 1 && (this.#cc & 1) === 1 && regGet(this.#csts, CSTS.SHST) === NVME_CSTS_SHST_NORMAL;
  }

  #writeCc(v: number): void {
    const old = this.#cc;
    this.#cc = v;
    const wasEn = old & 1;
    const en = v & 1;
    if (wasEn === 0 && en === 1) this.#enable();
    else if (wasEn === 1 && en === 0) this.#reset();
    const oldShn = regGet(old, CC.SHN);
    const shn = regGet(v, CC.SHN);
    if (oldShn === NVME_CC_SHN_NONE && shn !== NVME_CC_SHN_NONE) this.#shutdown(shn === NVME_CC_SHN_ABRUPT);
    else if (oldShn !== NVME_CC_SHN_NONE && shn === NVME_CC_SHN_NONE) {
      // QEMU: clearing SHN returns SHST to normal.
      this.#shutdownTimer?.cancel();
      this.#shutdownTimer = null;
      this.#csts = regSet(this.#csts, CSTS.SHST, NVME_CSTS_SHST_NORMAL);
    }
  }

  /** CC.EN 0→1: check the configuration (QEMU nvme_start_ctrl), then RDY rises after a delay. */
  #enable(): void {
    if (this.#resetTimer !== null) this.#finishReset(); // enabled again before RDY fell
    const err = this.#checkConfig();
    this.lastError = err;
    if (err !== '') {
      if (this.machine.trace.enabled) this.machine.trace.emit('nvme:ctrl_enable_failed', this.device.name, { reason: err });
      return; // RDY stays 0; the host times out after CAP.TO
    }
    this.#pageSize = 4096 << regGet(this.#cc, CC.MPS);
    this.#readyTimer = this.machine.schedule(this.#lat.ready, () => {
      this.#readyTimer = null;
      const asqs = regGet(this.#aqa, AQA.ASQS) + 1;
      const acqs = regGet(this.#aqa, AQA.ACQS) + 1;
      this.#cqs[0] = new NvmeCompQueue(0, this.#acq, acqs, 0, true);
      this.#sqs[0] = new NvmeSubQueue(0, this.#asq, asqs, 0, (sq) => {
        this.#fetch(sq);
      });
      this.#cqs[0].sqRefs = 1;
      this.#csts = regSet(this.#csts, CSTS.RDY, 1);
      if (this.machine.trace.enabled) this.machine.trace.emit('nvme:ctrl_ready', this.device.name, { page_size: this.#pageSize });
    });
  }

  #checkConfig(): string {
    const mps = regGet(this.#cc, CC.MPS);
    if (mps < MPSMIN || mps > MPSMAX) return `CC.MPS ${mps} outside CAP.MPSMIN..MPSMAX`;
    if (regGet(this.#cc, CC.CSS) !== 0) return `CC.CSS ${regGet(this.#cc, CC.CSS)} is not the NVM command set`;
    if (regGet(this.#cc, CC.AMS) !== 0) return 'CC.AMS: only round robin arbitration is supported';
    if (regGet(this.#cc, CC.IOSQES) !== NVME_SQES_LOG2) return `CC.IOSQES ${regGet(this.#cc, CC.IOSQES)} != 6`;
    if (regGet(this.#cc, CC.IOCQES) !== NVME_CQES_LOG2) return `CC.IOCQES ${regGet(this.#cc, CC.IOCQES)} != 4`;
    const ps = 4096 << mps;
    if (this.#asq === 0 || this.#asq % ps !== 0) return `ASQ 0x${this.#asq.toString(16)} is null or not page aligned`;
    if (this.#acq === 0 || this.#acq % ps !== 0) return `ACQ 0x${this.#acq.toString(16)} is null or not page aligned`;
    const asqs = regGet(this.#aqa, AQA.ASQS);
    const acqs = regGet(this.#aqa, AQA.ACQS);
    if (asqs === 0 || asqs > this.#mqes) return `AQA.ASQS ${asqs} must be 1..${this.#mqes} (0's based)`;
    if (acqs === 0 || acqs > this.#mqes) return `AQA.ACQS ${acqs} must be 1..${this.#mqes} (0's based)`;
    return '';
  }

  /** CC.EN 1→0: Controller Reset. Queues and in-flight commands are dropped now; RDY falls later. */
  #reset(): void {
    this.#readyTimer?.cancel();
    this.#readyTimer = null;
    this.#shutdownTimer?.cancel();
    this.#shutdownTimer = null;
    this.#dropAllState();
    if ((this.#csts & 1) === 0) {
      this.#finishReset();
      return;
    }
    this.#resetTimer = this.machine.schedule(this.#lat.reset, () => {
      this.#finishReset();
    });
  }

  #finishReset(): void {
    this.#resetTimer?.cancel();
    this.#resetTimer = null;
    // RDY, CFS and SHST all return to 0 after a reset.
    this.#csts = 0;
  }

  #dropAllState(): void {
    for (const cmd of this.#inflight) {
      cmd.timer?.cancel();
      this.#releaseCmd(cmd);
    }
    this.stats.aborted += this.#inflight.size;
    this.#inflight.clear();
    for (let q = 0; q < this.#sqs.length; q++) {
      this.#sqs[q]?.fetchTimer?.cancel();
      this.#sqs[q] = undefined;
      this.#cqs[q] = undefined;
    }
    for (let v = 0; v < this.#msixVectors; v++) {
      this.#irqTimers[v]?.cancel();
      this.#irqTimers[v] = null;
      this.#vecPending[v] = 0;
    }
    this.#aerOutstanding = 0;
    this.#stallBudget = 0;
    this.#allocSqs = this.#maxQueues;
    this.#allocCqs = this.#maxQueues;
    this.#features.clear();
  }

  /** CC.SHN written: SHST goes to "occurring", then "complete" once in-flight work has drained. */
  #shutdown(abrupt: boolean): void {
    if ((this.#cc & 1) === 0 || (this.#csts & 1) === 0) {
      this.#csts = regSet(this.#csts, CSTS.SHST, NVME_CSTS_SHST_CMPLT);
      return;
    }
    this.#csts = regSet(this.#csts, CSTS.SHST, NVME_CSTS_SHST_OCCUR);
    for (const sq of this.#sqs) {
      sq?.fetchTimer?.cancel();
      if (sq) sq.fetchTimer = null;
    }
    if (abrupt) this.#dropHeld(true);
    this.#shutdownTimer = this.machine.schedule(this.#lat.shutdown, () => {
      this.#shutdownStep();
    });
  }

  #shutdownStep(): void {
    this.#shutdownTimer = null;
    // Held commands (stalled, Async Event Requests) never finish on their own: drop them.
    this.#dropHeld(false);
    if (this.#inflight.size > 0) {
      this.#shutdownTimer = this.machine.schedule(this.#lat.shutdown, () => {
        this.#shutdownStep();
      });
      return;
    }
    this.#csts = regSet(this.#csts, CSTS.SHST, NVME_CSTS_SHST_CMPLT);
    if (this.machine.trace.enabled) this.machine.trace.emit('nvme:ctrl_shutdown', this.device.name, {});
  }

  #dropHeld(all: boolean): void {
    for (const cmd of this.#inflight) {
      if (!all && cmd.timer !== null) continue;
      cmd.timer?.cancel();
      this.#inflight.delete(cmd);
      this.#releaseCmd(cmd);
      this.stats.aborted++;
    }
    this.#aerOutstanding = 0;
  }

  /** A queue access the DMA port refused: Controller Fatal Status, processing stops until reset. */
  #fatal(why: string): void {
    this.stats.queueDmaFaults++;
    this.#csts = regSet(this.#csts, CSTS.CFS, 1);
    for (const sq of this.#sqs) {
      sq?.fetchTimer?.cancel();
      if (sq) sq.fetchTimer = null;
    }
    for (const cmd of this.#inflight) cmd.timer?.cancel();
    if (this.machine.trace.enabled) this.machine.trace.emit('nvme:ctrl_fatal', this.device.name, { reason: why });
  }

  // ---- doorbells, fetch, completion ------------------------------------------------------------------

  #doorbell(off: number, v: number): void {
    const stride = 4 << this.#dstrd;
    const rel = off - NVME_REG_DBS;
    if (rel % stride !== 0) {
      this.stats.badMmio++;
      return;
    }
    const idx = rel / stride;
    const qid = idx >> 1;
    if (!this.#running()) {
      this.stats.ignoredDoorbells++;
      return;
    }
    if ((idx & 1) === 1) {
      const cq = this.#cqs[qid];
      if (cq === undefined || v >= cq.size) {
        this.stats.badDoorbells++; // spec: an "Invalid Doorbell" asynchronous event
        return;
      }
      cq.head = v;
      if (cq.backlog.length > 0) this.#drainBacklog(cq);
      return;
    }
    const sq = this.#sqs[qid];
    if (sq === undefined || v >= sq.size) {
      this.stats.badDoorbells++;
      return;
    }
    sq.tail = v;
    if (sq.fetchTimer === null && sq.head !== v) sq.fetchTimer = this.machine.schedule(this.#lat.fetch, sq.fetchFn);
  }

  #allocCmd(): NvmeCmd {
    return this.#freeCmds.pop() ?? new NvmeCmd(this.#exec);
  }

  #releaseCmd(cmd: NvmeCmd): void {
    cmd.timer = null;
    this.#freeCmds.push(cmd);
  }

  /** Fetch every entry between head and tail, and schedule each command's execution. */
  #fetch(sq: NvmeSubQueue): void {
    sq.fetchTimer = null;
    if (!this.#running() || this.#sqs[sq.qid] !== sq) return;
    const dev = this.device;
    while (sq.head !== sq.tail) {
      const cmd = this.#allocCmd();
      try {
        dev.dmaReadInto(sq.entryAddr(sq.head), cmd.sqe, 0, NVME_SQE_SIZE);
      } catch (e) {
        this.#freeCmds.push(cmd);
        if (e instanceof DmaFaultError) {
          this.#fatal(`SQ ${sq.qid} entry fetch refused`);
          return;
        }
        throw e;
      }
      sq.head = sq.head + 1 === sq.size ? 0 : sq.head + 1;
      cmd.sqid = sq.qid;
      cmd.cid = cmd.dv.getUint16(SQE.CID, true);
      this.#inflight.add(cmd);
      const opc = cmd.opcode;
      const byOpc = sq.qid === 0 ? this.stats.adminCommands : this.stats.ioCommands;
      byOpc[opc] = (byOpc[opc] ?? 0) + 1;
      if (this.machine.trace.enabled) {
        this.machine.trace.emit('nvme:ctrl_cmd', this.device.name, { sqid: sq.qid, cid: cmd.cid, opcode: opc, nsid: cmd.dv.getUint32(SQE.NSID, true) });
      }
      if (sq.qid === 0 && opc === NvmeAdminOpcode.ASYNC_EVENT && this.#aerOutstanding <= AERL) {
        // Held until an event occurs (this model raises none) or the controller resets.
        this.#aerOutstanding++;
        continue;
      }
      if (sq.qid !== 0 && this.#stallBudget > 0) {
        this.#stallBudget--;
        continue;
      }
      cmd.timer = this.machine.schedule(this.#latencyOf(cmd), cmd.run);
    }
  }

  #latencyOf(cmd: NvmeCmd): number {
    const lat = this.#lat;
    if (cmd.sqid === 0) return lat.admin;
    const opc = cmd.opcode;
    if (opc === NvmeOpcode.READ || opc === NvmeOpcode.WRITE) {
      const ns = this.#ns.get(cmd.dv.getUint32(SQE.NSID, true));
      const bytes = ns === undefined ? 0 : ((cmd.dv.getUint32(SQE.CDW12, true) & 0xffff) + 1) * ns.lbaSize;
      return (opc === NvmeOpcode.READ ? lat.read : lat.write) + bytes * lat.perByte;
    }
    return lat.write;
  }

  #execute(cmd: NvmeCmd): void {
    cmd.timer = null;
    this.#inflight.delete(cmd);
    this.#result = 0;
    const status = cmd.sqid === 0 ? this.#admin(cmd) : this.#io(cmd);
    this.#complete(cmd.sqid, cmd.cid, status, this.#result);
    this.#releaseCmd(cmd);
  }

  /** Post a completion for a command of SQ `sqid` to the CQ that SQ is bound to. */
  #complete(sqid: number, cid: number, status: number, dw0: number): void {
    const sq = this.#sqs[sqid];
    if (sq === undefined) return;
    const cq = this.#cqs[sq.cqid];
    if (cq === undefined) return;
    if (cq.full || cq.backlog.length > 0) {
      cq.backlog.push({ dw0, sqid, cid, status });
      return;
    }
    this.#postCqe(cq, dw0, sq.head, sqid, cid, status);
  }

  #postCqe(cq: NvmeCompQueue, dw0: number, sqhd: number, sqid: number, cid: number, status: number): boolean {
    const dv = this.#cqeDv;
    dv.setUint32(0, dw0 >>> 0, true);
    dv.setUint32(4, 0, true);
    dv.setUint16(8, sqhd, true);
    dv.setUint16(10, sqid, true);
    dv.setUint16(12, cid, true);
    dv.setUint16(14, ((status << 1) | cq.phase) & 0xffff, true);
    try {
      this.device.dmaWrite(cq.base + cq.tail * NVME_CQE_SIZE, this.#cqe, 0, NVME_CQE_SIZE);
    } catch (e) {
      if (e instanceof DmaFaultError) {
        this.#fatal(`CQ ${cq.qid} entry write refused`);
        return false;
      }
      throw e;
    }
    if (++cq.tail === cq.size) {
      cq.tail = 0;
      cq.phase ^= 1;
    }
    const st = this.stats;
    st.completions++;
    if (status !== 0) {
      st.errors++;
      const code = nvmeStatusCode(status);
      st.errorsByStatus.set(code, (st.errorsByStatus.get(code) ?? 0) + 1);
    }
    if (this.machine.trace.enabled) {
      this.machine.trace.emit('nvme:ctrl_cqe', this.device.name, { cqid: cq.qid, sqid, cid, status, sqhd, phase: cq.phase });
    }
    if (cq.ien) this.#queueIrq(cq.vector);
    return true;
  }

  #drainBacklog(cq: NvmeCompQueue): void {
    let n = 0;
    while (n < cq.backlog.length && !cq.full) {
      const c = cq.backlog[n];
      if (c === undefined) break;
      const sq = this.#sqs[c.sqid];
      if (!this.#postCqe(cq, c.dw0, sq?.head ?? 0, c.sqid, c.cid, c.status)) break;
      n++;
    }
    cq.backlog.splice(0, n);
  }

  #queueIrq(vector: number): void {
    if (this.#irqTimers[vector] !== null) return; // one message in flight per vector coalesces
    const fn = this.#irqFns[vector];
    if (fn === undefined) return;
    this.#irqTimers[vector] = this.machine.schedule(this.#lat.interrupt, fn);
  }

  #fireIrq(vector: number): void {
    this.#irqTimers[vector] = null;
    if (this.#vecMasked[vector] === 1) {
      this.#vecPending[vector] = 1;
      return;
    }
    this.stats.interrupts++;
    if (this.machine.trace.enabled) this.machine.trace.emit('nvme:ctrl_irq', this.device.name, { vector });
    for (const fn of this.#handlers) fn(vector);
  }

  // ---- data pointers ----------------------------------------------------------------------------

  /** Walk the command's PRPs or SGL for `len` bytes. */
  #mapData(cmd: NvmeCmd, len: number, isWrite: boolean): number {
    const dv = cmd.dv;
    const psdt = ((cmd.sqe[SQE.FLAGS] ?? 0) >> 6) & 3;
    if (psdt === NVME_PSDT_PRP) return this.#walker.mapPrp(readLe64(dv, SQE.PRP1), readLe64(dv, SQE.PRP2), len, this.#pageSize);
    // PSDT 11b is reserved; SGLs are for I/O commands only over PCIe.
    if (psdt === 3 || !this.#sgl || cmd.sqid === 0) return NvmeStatus.INVALID_FIELD | DNR;
    return this.#walker.mapSgl(dv, len, isWrite);
  }

  #ensureStaging(len: number): Uint8Array {
    if (this.#staging.length < len) this.#staging = new Uint8Array(Math.max(len, this.#staging.length * 2, 4096));
    return this.#staging;
  }

  /** Device-to-host transfer of `src[0..len)` to the command's data buffer. */
  #toHost(cmd: NvmeCmd, src: Uint8Array, len: number): number {
    const st = this.#mapData(cmd, len, false);
    if (st !== NvmeStatus.SUCCESS) return st;
    return this.#walker.scatter(src);
  }

  // ---- admin command set ------------------------------------------------------------------------

  #admin(cmd: NvmeCmd): number {
    const dv = cmd.dv;
    const flags = cmd.sqe[SQE.FLAGS] ?? 0;
    if ((flags & 3) !== 0) return NvmeStatus.INVALID_FIELD | DNR; // fused operations are not supported
    switch (cmd.opcode) {
      case NvmeAdminOpcode.IDENTIFY:
        return this.#identify(cmd);
      case NvmeAdminOpcode.CREATE_CQ:
        return this.#createCq(dv);
      case NvmeAdminOpcode.CREATE_SQ:
        return this.#createSq(dv);
      case NvmeAdminOpcode.DELETE_SQ:
        return this.#deleteSq(dv);
      case NvmeAdminOpcode.DELETE_CQ:
        return this.#deleteCq(dv);
      case NvmeAdminOpcode.SET_FEATURES:
        return this.#setFeatures(dv);
      case NvmeAdminOpcode.GET_FEATURES:
        return this.#getFeatures(dv);
      case NvmeAdminOpcode.ABORT_CMD:
        return this.#abort(dv);
      case NvmeAdminOpcode.ASYNC_EVENT:
        return NvmeStatus.ASYNC_LIMIT | DNR; // more than AERL + 1 outstanding
      default:
        return NvmeStatus.INVALID_OPCODE | DNR;
    }
  }

  #identify(cmd: NvmeCmd): number {
    const dv = cmd.dv;
    const cns = dv.getUint32(SQE.CDW10, true) & 0xff;
    const nsid = dv.getUint32(SQE.NSID, true);
    const id = this.#id;
    const idv = this.#idDv;
    id.fill(0);
    switch (cns) {
      case NvmeIdCns.CTRL:
        this.#fillIdCtrl(idv);
        break;
      case NvmeIdCns.NS: {
        // QEMU nvme_identify_ns: nsid 0 or broadcast or > NN is invalid; an inactive valid nsid
        // returns a zero-filled structure.
        if (nsid === 0 || nsid === NVME_NSID_ALL || nsid > this.#maxNsid) return NvmeStatus.INVALID_NS | DNR;
        const ns = this.#ns.get(nsid);
        if (ns !== undefined) this.#fillIdNs(idv, ns);
        break;
      }
      case NvmeIdCns.NS_ACTIVE_LIST: {
        if (nsid >= NVME_NSID_ALL - 1) return NvmeStatus.INVALID_NS | DNR;
        const ids = [...this.#ns.keys()].filter((n) => n > nsid).sort((a, b) => a - b);
        for (let i = 0; i < ids.length && i < 1024; i++) idv.setUint32(i * 4, ids[i] ?? 0, true);
        break;
      }
      case NvmeIdCns.NS_DESC_LIST:
        // No NGUID/EUI64/UUID descriptors: an empty list.
        if (nsid === 0 || nsid === NVME_NSID_ALL || !this.#ns.has(nsid)) return NvmeStatus.INVALID_NS | DNR;
        break;
      default:
        return NvmeStatus.INVALID_FIELD | DNR;
    }
    return this.#toHost(cmd, id, NVME_IDENTIFY_DATA_SIZE);
  }

  /** Identify Controller data structure (spec figure 247; kernel struct nvme_id_ctrl). */
  #fillIdCtrl(dv: DataView): void {
    dv.setUint16(0, 0x1b36, true); // VID (QEMU's, Red Hat)
    dv.setUint16(2, 0x1af4, true); // SSVID
    putAscii(dv, 4, 20, this.#serial); // SN
    putAscii(dv, 24, 40, this.#model); // MN
    putAscii(dv, 64, 8, '1.0'); // FR
    dv.setUint8(72, 6); // RAB
    dv.setUint8(77, this.#mdts); // MDTS
    dv.setUint16(78, 0, true); // CNTLID
    dv.setUint32(80, nvmeVs(1, 4, 0), true); // VER
    dv.setUint16(256, 0, true); // OACS: no optional admin commands
    dv.setUint8(258, ACL);
    dv.setUint8(259, AERL);
    dv.setUint8(512, (NVME_SQES_LOG2 << 4) | NVME_SQES_LOG2); // SQES max | min
    dv.setUint8(513, (NVME_CQES_LOG2 << 4) | NVME_CQES_LOG2); // CQES
    dv.setUint16(514, 0, true); // MAXCMD (fabrics only)
    dv.setUint32(516, this.#maxNsid, true); // NN
    dv.setUint16(520, (1 << 2) | (1 << 3), true); // ONCS: Dataset Management, Write Zeroes
    dv.setUint8(525, 0); // VWC: no volatile write cache
    dv.setUint32(536, this.#sgl ? NVME_CTRL_SGLS_SUPPORTED | NVME_CTRL_SGLS_BITBUCKET : 0, true); // SGLS
    putAscii(dv, 768, 256, `nqn.2024-01.io.dmakit:nvme:${this.#serial}`, 0); // SUBNQN, NUL padded
  }

  /** Identify Namespace data structure (NVM command set; kernel struct nvme_id_ns). */
  #fillIdNs(dv: DataView, ns: NvmeNamespace): void {
    writeLe64(dv, 0, ns.capacityLbas); // NSZE
    writeLe64(dv, 8, ns.capacityLbas); // NCAP
    writeLe64(dv, 16, ns.capacityLbas); // NUSE
    dv.setUint8(25, 0); // NLBAF (0's based): one LBA format
    dv.setUint8(26, 0); // FLBAS: format 0, no metadata
    // DLFEAT: deallocated blocks read as zeros (001b); Write Zeroes may deallocate (bit 3).
    dv.setUint8(33, 0x01 | 0x08);
    dv.setUint32(128, ns.lbaShift << 16, true); // LBAF0: MS 0, LBADS, RP 0
  }

  #createCq(dv: DataView): number {
    const cdw10 = dv.getUint32(SQE.CDW10, true);
    const cdw11 = dv.getUint32(SQE.CDW11, true);
    const qid = cdw10 & 0xffff;
    const qsize = cdw10 >>> 16; // 0's based
    const prp1 = readLe64(dv, SQE.PRP1);
    const vector = cdw11 >>> 16;
    // Check order as QEMU nvme_create_cq.
    if (qid === 0 || qid > this.#allocCqs || this.#cqs[qid] !== undefined) return NvmeStatus.QID_INVALID | DNR;
    if (qsize === 0 || qsize > this.#mqes) return NvmeStatus.QUEUE_SIZE | DNR;
    if (prp1 % this.#pageSize !== 0) return NvmeStatus.PRP_INVALID_OFFSET | DNR;
    if (vector >= this.#msixVectors) return NvmeStatus.INVALID_VECTOR | DNR;
    if ((cdw11 & NVME_QUEUE_PHYS_CONTIG) === 0) return NvmeStatus.INVALID_FIELD | DNR; // CAP.CQR
    this.#cqs[qid] = new NvmeCompQueue(qid, prp1, qsize + 1, vector, (cdw11 & NVME_CQ_IRQ_ENABLED) !== 0);
    return NvmeStatus.SUCCESS;
  }

  #createSq(dv: DataView): number {
    const cdw10 = dv.getUint32(SQE.CDW10, true);
    const cdw11 = dv.getUint32(SQE.CDW11, true);
    const qid = cdw10 & 0xffff;
    const qsize = cdw10 >>> 16;
    const cqid = cdw11 >>> 16;
    const prp1 = readLe64(dv, SQE.PRP1);
    // Check order as QEMU nvme_create_sq.
    const cq = cqid === 0 ? undefined : this.#cqs[cqid];
    if (cq === undefined) return NvmeStatus.CQ_INVALID | DNR;
    if (qid === 0 || qid > this.#allocSqs || this.#sqs[qid] !== undefined) return NvmeStatus.QID_INVALID | DNR;
    if (qsize === 0 || qsize > this.#mqes) return NvmeStatus.QUEUE_SIZE | DNR;
    if (prp1 % this.#pageSize !== 0) return NvmeStatus.PRP_INVALID_OFFSET | DNR;
    if ((cdw11 & NVME_QUEUE_PHYS_CONTIG) === 0) return NvmeStatus.INVALID_FIELD | DNR;
    this.#sqs[qid] = new NvmeSubQueue(qid, prp1, qsize + 1, cqid, (sq) => {
      this.#fetch(sq);
    });
    cq.sqRefs++;
    return NvmeStatus.SUCCESS;
  }

  /** Delete I/O SQ: its outstanding commands complete with "Command Aborted due to SQ Deletion" first. */
  #deleteSq(dv: DataView): number {
    const qid = dv.getUint32(SQE.CDW10, true) & 0xffff;
    const sq = qid === 0 ? undefined : this.#sqs[qid];
    if (sq === undefined) return NvmeStatus.QID_INVALID | DNR;
    sq.fetchTimer?.cancel();
    sq.fetchTimer = null;
    for (const cmd of this.#inflight) {
      if (cmd.sqid !== qid) continue;
      cmd.timer?.cancel();
      this.#inflight.delete(cmd);
      this.#complete(qid, cmd.cid, NvmeStatus.ABORT_QUEUE, 0);
      this.#releaseCmd(cmd);
      this.stats.aborted++;
    }
    this.#sqs[qid] = undefined;
    const cq = this.#cqs[sq.cqid];
    if (cq !== undefined) cq.sqRefs--;
    return NvmeStatus.SUCCESS;
  }

  #deleteCq(dv: DataView): number {
    const qid = dv.getUint32(SQE.CDW10, true) & 0xffff;
    const cq = qid === 0 ? undefined : this.#cqs[qid];
    // The spec lists Invalid Queue Identifier here (QEMU answers Completion Queue Invalid).
    if (cq === undefined) return NvmeStatus.QID_INVALID | DNR;
    if (cq.sqRefs > 0) return NvmeStatus.INVALID_QUEUE | DNR; // Invalid Queue Deletion
    this.#cqs[qid] = undefined;
    return NvmeStatus.SUCCESS;
  }

  #setFeatures(dv: DataView): number {
    const cdw10 = dv.getUint32(SQE.CDW10, true);
    const cdw11 = dv.getUint32(SQE.CDW11, true);
    const fid = cdw10 & 0xff;
    if ((cdw10 & 0x8000_0000) !== 0) return FID_NOT_SAVEABLE | DNR; // SV: nothing is saveable
    switch (fid) {
      case NvmeFeat.NUM_QUEUES: {
        const nsqr = cdw11 & 0xffff;
        const ncqr = cdw11 >>> 16;
        if (nsqr === 0xffff || ncqr === 0xffff) return NvmeStatus.INVALID_FIELD | DNR;
        // Allocate what was asked, up to the maximum; the result reports it (0's based).
        this.#allocSqs = Math.min(nsqr + 1, this.#maxQueues);
        this.#allocCqs = Math.min(ncqr + 1, this.#maxQueues);
        this.#result = (((this.#allocCqs - 1) << 16) | (this.#allocSqs - 1)) >>> 0;
        return NvmeStatus.SUCCESS;
      }
      case NvmeFeat.ARBITRATION:
      case NvmeFeat.POWER_MGMT:
      case NvmeFeat.TEMP_THRESH:
      case NvmeFeat.IRQ_COALESCE:
      case NvmeFeat.ASYNC_EVENT:
        this.#features.set(fid, cdw11);
        return NvmeStatus.SUCCESS;
      default:
        // Includes Volatile Write Cache: Identify reports none.
        return NvmeStatus.INVALID_FIELD | DNR;
    }
  }

  #getFeatures(dv: DataView): number {
    const fid = dv.getUint32(SQE.CDW10, true) & 0xff;
    switch (fid) {
      case NvmeFeat.NUM_QUEUES:
        this.#result = (((this.#allocCqs - 1) << 16) | (this.#allocSqs - 1)) >>> 0;
        return NvmeStatus.SUCCESS;
      case NvmeFeat.VOLATILE_WC:
        this.#result = 0;
        return NvmeStatus.SUCCESS;
      case NvmeFeat.ARBITRATION:
      case NvmeFeat.POWER_MGMT:
      case NvmeFeat.TEMP_THRESH:
      case NvmeFeat.IRQ_COALESCE:
      case NvmeFeat.ASYNC_EVENT:
        this.#result = this.#features.get(fid) ?? 0;
        return NvmeStatus.SUCCESS;
      default:
        return NvmeStatus.INVALID_FIELD | DNR;
    }
  }

  /** Abort (best effort): a command still waiting to execute completes with "Command Abort Requested". */
  #abort(dv: DataView): number {
    const cdw10 = dv.getUint32(SQE.CDW10, true);
    const sqid = cdw10 & 0xffff;
    const cid = cdw10 >>> 16;
    this.#result = 1; // DW0 bit 0 set: command not aborted
    for (const cmd of this.#inflight) {
      if (cmd.sqid !== sqid || cmd.cid !== cid) continue;
      if (sqid === 0 && cmd.opcode === NvmeAdminOpcode.ASYNC_EVENT) this.#aerOutstanding--;
      cmd.timer?.cancel();
      this.#inflight.delete(cmd);
      this.#complete(sqid, cid, NvmeStatus.ABORT_REQ, 0);
      this.#releaseCmd(cmd);
      this.stats.aborted++;
      this.#result = 0;
      break;
    }
    return NvmeStatus.SUCCESS;
  }

  // ---- NVM command set ------------------------------------------------------------------------

  #io(cmd: NvmeCmd): number {
    const dv = cmd.dv;
    if (((cmd.sqe[SQE.FLAGS] ?? 0) & 3) !== 0) return NvmeStatus.INVALID_FIELD | DNR;
    const nsid = dv.getUint32(SQE.NSID, true);
    const opc = cmd.opcode;
    if (opc === NvmeOpcode.FLUSH) {
      // No volatile write cache: data is already durable. Broadcast nsid flushes all.
      return nsid === NVME_NSID_ALL || this.#ns.has(nsid) ? NvmeStatus.SUCCESS : NvmeStatus.INVALID_NS | DNR;
    }
    if (opc !== NvmeOpcode.READ && opc !== NvmeOpcode.WRITE && opc !== NvmeOpcode.WRITE_ZEROES && opc !== NvmeOpcode.DSM) {
      return NvmeStatus.INVALID_OPCODE | DNR;
    }
    const ns = this.#ns.get(nsid);
    if (ns === undefined) return NvmeStatus.INVALID_NS | DNR;
    if (opc === NvmeOpcode.DSM) return this.#dsm(cmd, ns);
    const slba = readLe64(dv, SQE.CDW10);
    const nlb = (dv.getUint32(SQE.CDW12, true) & 0xffff) + 1;
    if (opc === NvmeOpcode.WRITE_ZEROES) {
      if (!ns.inBounds(slba, nlb)) return NvmeStatus.LBA_RANGE | DNR;
      ns.zeroBytes(slba * ns.lbaSize, nlb * ns.lbaSize);
      return NvmeStatus.SUCCESS;
    }
    const len = nlb * ns.lbaSize;
    // QEMU nvme_rw: MDTS first (Invalid Field), then bounds (LBA Out of Range), then the data pointer.
    if (len > this.#mdtsBytes) return NvmeStatus.INVALID_FIELD | DNR;
    if (!ns.inBounds(slba, nlb)) return NvmeStatus.LBA_RANGE | DNR;
    const isWrite = opc === NvmeOpcode.WRITE;
    const st = this.#mapData(cmd, len, isWrite);
    if (st !== NvmeStatus.SUCCESS) return st;
    const buf = this.#ensureStaging(len);
    const pos = slba * ns.lbaSize;
    if (isWrite) {
      // Gather everything first: a fault leaves the namespace untouched.
      const g = this.#walker.gather(buf);
      if (g !== NvmeStatus.SUCCESS) return g;
      ns.writeBytes(pos, buf, 0, len);
      this.stats.bytesWritten += len;
      return NvmeStatus.SUCCESS;
    }
    ns.readBytes(pos, buf, 0, len);
    const s = this.#walker.scatter(buf);
    if (s === NvmeStatus.SUCCESS) this.stats.bytesRead += len;
    return s;
  }

  /** Dataset Management: read the range list, check every range, then deallocate (AD). */
  #dsm(cmd: NvmeCmd, ns: NvmeNamespace): number {
    const dv = cmd.dv;
    const nr = (dv.getUint32(SQE.CDW10, true) & 0xff) + 1;
    const attrs = dv.getUint32(SQE.CDW11, true);
    const len = nr * NVME_DSM_RANGE_SIZE;
    const st = this.#mapData(cmd, len, true);
    if (st !== NvmeStatus.SUCCESS) return st;
    const buf = this.#id; // 256 ranges * 16 bytes = 4096 bytes
    const g = this.#walker.gather(buf);
    if (g !== NvmeStatus.SUCCESS) return g;
    const rdv = this.#idDv;
    for (let i = 0; i < nr; i++) {
      const rnlb = rdv.getUint32(i * 16 + 4, true);
      const rslba = readLe64(rdv, i * 16 + 8);
      if (!ns.inBounds(rslba, rnlb)) return NvmeStatus.LBA_RANGE | DNR;
    }
    if ((attrs & NVME_DSMGMT_AD) !== 0) {
      for (let i = 0; i < nr; i++) {
        const rnlb = rdv.getUint32(i * 16 + 4, true);
        const rslba = readLe64(rdv, i * 16 + 8);
        ns.zeroBytes(rslba * ns.lbaSize, rnlb * ns.lbaSize);
      }
    }
    return NvmeStatus.SUCCESS;
  }
}

/** Space-padded ASCII field (Identify strings are not NUL-terminated). */
function putAscii(dv: DataView, off: number, len: number, s: string, pad = 0x20): void {
  for (let i = 0; i < len; i++) dv.setUint8(off + i, i < s.length ? s.charCodeAt(i) & 0x7f : pad);
}

/** The page size constants the controller accepts, for drivers that size PRP lists. */
export const NVME_CTRL_PAGE_SIZE_MIN = 4096 << MPSMIN;
/** Largest memory page size the controller accepts (CAP.MPSMAX). */
export const NVME_CTRL_PAGE_SIZE_MAX = 4096 << MPSMAX;

// The controller's state (QEMU `NvmeCtrl`, hw/nvme/nvme.h) shared by the files that split the
// device model: registers and the controller state machine in controller.ts, the queue/doorbell
// machinery in doorbell.ts, the admin command set in admin.ts, the NVM (I/O) command set in io.ts.
// Also the public option/stats types and the pooled command slot (QEMU `NvmeRequest`).
// NVM Express Base Specification 1.4; QEMU hw/nvme/nvme.h, hw/nvme/ctrl.c.
//
// Internal: `NvmeCtrl`, `NvmeCmd` and the constants are not exported from the package; the public
// types and the page size bounds are re-exported by controller/index.ts.
import type { Device, Machine, SimTimer } from '@dmakit/dma-core';
import type { NvmeDataWalker } from './dataPointer.js';
import type { DataWalkerCounters } from './dataPointer.js';
import type { NvmeNamespace } from './namespace.js';
import type { NvmeNamespaceOptions } from './namespace.js';
import type { NvmeCompQueue, NvmeSubQueue } from './queues.js';
import { NVME_CQE_SIZE, NVME_IDENTIFY_DATA_SIZE, NVME_SQE_SIZE, NvmeStatus, SQE } from './spec.js';

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

/** Default latencies (ns). */
export const DEFAULTS = {
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

export const MPSMIN = 0; // 4 KiB
// 8 KiB. QEMU reports 64 KiB (MPSMAX 4), but any MPSMAX above 1 sets CAP bits >= 2^53 and a 64-bit
// CAP read would no longer be exact in a JS number (DESIGN.md: no bigint); Linux uses 4 KiB anyway.
export const MPSMAX = 1;
/** Identify Controller ACL/AERL (0's based): 4 outstanding Abort / Async Event Request commands. */
export const ACL = 3;
/** Identify Controller AERL (0's based). */
export const AERL = 3;
/** Do Not Retry, ORed into a status. */
export const DNR = NvmeStatus.DNR;
/** SCT 1 SC 0x0D, Feature Identifier Not Saveable (kernel NVME_SC_FEATURE_NOT_SAVEABLE). */
export const FID_NOT_SAVEABLE = NvmeStatus.FID_NOT_SAVEABLE;

/** One fetched command. Slots are pooled so the hot path allocates nothing per command. */
export class NvmeCmd {
  readonly sqe = new Uint8Array(NVME_SQE_SIZE);
  readonly dv = new DataView(this.sqe.buffer);
  sqid = 0;
  cid = 0;
  /** Pending execution event; null when held (stalled, or an Async Event Request). */
  timer: SimTimer | null = null;
  readonly run: () => void;
  /** Links of the in-flight list (`InflightCmds`). */
  inflightPrev: NvmeCmd | null = null;
  inflightNext: NvmeCmd | null = null;
  inInflight = false;

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
 * The commands fetched and not yet completed, in fetch order: a list linked through the pooled
 * command slots themselves, so adding and removing one allocates nothing (a JS `Set` reallocates
 * its table each time it empties and fills again, i.e. on every command at queue depth 1).
 * Iterating while deleting the current command is safe, as with a `Set`.
 */
export class InflightCmds {
  #head: NvmeCmd | null = null;
  #tail: NvmeCmd | null = null;
  size = 0;

  add(cmd: NvmeCmd): void {
    if (cmd.inInflight) return;
    cmd.inInflight = true;
    cmd.inflightPrev = this.#tail;
    cmd.inflightNext = null;
    if (this.#tail === null) this.#head = cmd;
    else this.#tail.inflightNext = cmd;
    this.#tail = cmd;
    this.size++;
  }

  delete(cmd: NvmeCmd): boolean {
    if (!cmd.inInflight) return false;
    const p = cmd.inflightPrev;
    const nx = cmd.inflightNext;
    if (p === null) this.#head = nx;
    else p.inflightNext = nx;
    if (nx === null) this.#tail = p;
    else nx.inflightPrev = p;
    cmd.inInflight = false;
    cmd.inflightPrev = null;
    cmd.inflightNext = null;
    this.size--;
    return true;
  }

  has(cmd: NvmeCmd): boolean {
    return cmd.inInflight;
  }

  clear(): void {
    let c = this.#head;
    while (c !== null) {
      const nx = c.inflightNext;
      c.inInflight = false;
      c.inflightPrev = null;
      c.inflightNext = null;
      c = nx;
    }
    this.#head = null;
    this.#tail = null;
    this.size = 0;
  }

  *[Symbol.iterator](): Generator<NvmeCmd, void, undefined> {
    let c = this.#head;
    while (c !== null) {
      const nx = c.inflightNext;
      yield c;
      c = nx;
    }
  }
}

/** The page size constants the controller accepts, for drivers that size PRP lists. */
export const NVME_CTRL_PAGE_SIZE_MIN = 4096 << MPSMIN;
/** Largest memory page size the controller accepts (CAP.MPSMAX). */
export const NVME_CTRL_PAGE_SIZE_MAX = 4096 << MPSMAX;

/** What `NvmeController`'s constructor validated and derived from its options. */
export interface NvmeCtrlConfig {
  readonly ns: Map<number, NvmeNamespace>;
  readonly lat: Required<NvmeControllerLatency>;
  readonly mqes: number;
  readonly maxQueues: number;
  readonly msixVectors: number;
  readonly mdts: number;
  readonly dstrd: number;
  readonly sgl: boolean;
  readonly serial: string;
  readonly model: string;
  readonly cap: number;
}

/**
 * QEMU `NvmeCtrl`: everything the controller's parts share. `NvmeController` owns one; the free
 * functions of doorbell.ts, admin.ts and io.ts work on it. `exec` is the call back up (a fetched
 * command's execution, which dispatches to the admin or I/O command set): `NvmeController` sets it
 * once, so the lower files never import the upper one.
 */
export class NvmeCtrl {
  readonly machine: Machine;
  readonly device: Device;
  readonly stats: NvmeControllerStats;
  readonly ns: Map<number, NvmeNamespace>;
  readonly maxNsid: number;
  readonly lat: Required<NvmeControllerLatency>;
  readonly mqes: number;
  readonly maxQueues: number;
  readonly msixVectors: number;
  readonly mdts: number;
  readonly mdtsBytes: number;
  readonly dstrd: number;
  readonly sgl: boolean;
  readonly serial: string;
  readonly model: string;
  readonly cap: number;

  // Registers
  cc = 0;
  csts = 0;
  aqa = 0;
  asq = 0;
  acq = 0;
  intms = 0;
  pageSize = 4096;

  // Queues and commands
  readonly sqs: (NvmeSubQueue | undefined)[];
  readonly cqs: (NvmeCompQueue | undefined)[];
  allocSqs: number;
  allocCqs: number;
  /** An I/O queue was created since the last reset (QEMU `qs_created`): Number of Queues is then fixed. */
  qsCreated = false;
  readonly inflight = new InflightCmds();
  readonly freeCmds: NvmeCmd[] = [];
  /** Execute a fetched command (set by `NvmeController`). */
  exec: (cmd: NvmeCmd) => void = () => {
    throw new Error('nvme-pci: NvmeCtrl.exec hook not set');
  };
  aerOutstanding = 0;
  stallBudget = 0;
  readonly features = new Map<number, number>();

  // Interrupts (MSI-X table: mask bit and pending bit per vector)
  readonly handlers = new Set<NvmeInterruptHandler>();
  readonly irqTimers: (SimTimer | null)[];
  /** One bound callback per vector (set by `NvmeController`, so that raising one allocates nothing). */
  irqFns: (() => void)[] = [];
  readonly vecMasked: Uint8Array;
  readonly vecPending: Uint8Array;

  // Data path scratch
  readonly walker: NvmeDataWalker;
  staging = new Uint8Array(0);
  readonly cqe = new Uint8Array(NVME_CQE_SIZE);
  readonly cqeDv = new DataView(this.cqe.buffer);
  readonly id = new Uint8Array(NVME_IDENTIFY_DATA_SIZE);
  readonly idDv = new DataView(this.id.buffer);
  /** DW0 of the command being executed. */
  result = 0;

  constructor(machine: Machine, device: Device, stats: NvmeControllerStats, walker: NvmeDataWalker, c: NvmeCtrlConfig) {
    this.machine = machine;
    this.device = device;
    this.stats = stats;
    this.walker = walker;
    this.ns = c.ns;
    this.lat = c.lat;
    this.maxNsid = Math.max(...c.ns.keys());
    this.mqes = c.mqes;
    this.maxQueues = c.maxQueues;
    this.msixVectors = c.msixVectors;
    this.mdts = c.mdts;
    this.mdtsBytes = c.mdts === 0 ? Number.POSITIVE_INFINITY : 2 ** c.mdts * (4096 << MPSMIN);
    this.dstrd = c.dstrd;
    this.sgl = c.sgl;
    this.serial = c.serial;
    this.model = c.model;
    this.cap = c.cap;
    this.allocSqs = c.maxQueues;
    this.allocCqs = c.maxQueues;
    this.sqs = new Array<NvmeSubQueue | undefined>(c.maxQueues + 1);
    this.cqs = new Array<NvmeCompQueue | undefined>(c.maxQueues + 1);
    this.irqTimers = new Array<SimTimer | null>(c.msixVectors).fill(null);
    this.vecMasked = new Uint8Array(c.msixVectors);
    this.vecPending = new Uint8Array(c.msixVectors);
  }
}

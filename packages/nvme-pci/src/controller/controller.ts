// The simulated NVMe controller: its public face, the register file (MMIO) and the controller
// state machine (enable, reset, shutdown). The command sets and the queue machinery live beside
// it: the admin command set in admin.ts, the NVM (I/O) command set in io.ts, doorbells, fetch,
// completion and interrupts in doorbell.ts, the shared state (QEMU `NvmeCtrl`) in nvmeCtrl.ts.
// NVM Express Base Specification 1.4 (section 3, controller registers; 7.6, initialization and
// shutdown); QEMU hw/nvme/ctrl.c is the second reference (nvme_write_bar, nvme_mmio_read,
// nvme_start_ctrl, nvme_ctrl_reset, nvme_ctrl_shutdown).
import type { Device, Machine, SimTimer } from '@dmakit/dma-core';
import { NvmeDataWalker } from './dataPointer.js';
import { NvmeNamespace } from './namespace.js';
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
  NVME_CQES_LOG2,
  NVME_SQES_LOG2,
} from './spec.js';
import { DEFAULTS, MPSMAX, MPSMIN, NvmeCtrl } from './nvmeCtrl.js';
import type { NvmeCmd, NvmeControllerOptions, NvmeControllerStats, NvmeInterruptHandler } from './nvmeCtrl.js';
import { nvmeEnqueueReqCompletion, nvmeIrqAssert, nvmeMsixNotify, nvmeProcessDb, nvmeProcessSq, nvmeReleaseCmd, nvmeRunning } from './doorbell.js';
import { nvmeAdminCmd } from './admin.js';
import { nvmeIoCmd } from './io.js';

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

  /** The controller's state (QEMU `NvmeCtrl`), shared with doorbell.ts, admin.ts and io.ts. */
  readonly #n: NvmeCtrl;

  // Timers of the controller state machine
  #readyTimer: SimTimer | null = null;
  #resetTimer: SimTimer | null = null;
  #shutdownTimer: SimTimer | null = null;

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
    const ns = new Map<number, NvmeNamespace>();
    for (const o of opts.namespaces) {
      if (ns.has(o.nsid)) throw new RangeError(`NvmeController: duplicate nsid ${o.nsid}`);
      ns.set(o.nsid, new NvmeNamespace(o));
    }
    const lat = { ...DEFAULTS, ...opts.latencyNs };
    for (const [k, v] of Object.entries(lat)) {
      if (!Number.isFinite(v) || v < 0) throw new RangeError(`NvmeController: latencyNs.${k} must be a finite number >= 0`);
    }
    this.barSize = nvmeBarSize(mq, dstrd);
    // CAP.TO covers the ready delay, in 500 ms units (at least 1).
    const to = Math.min(255, Math.max(1, Math.ceil(lat.ready / 500_000_000)));
    let cap = 0;
    cap = regSet(cap, CAP.MQES, mqe - 1);
    cap = regSet(cap, CAP.CQR, 1); // I/O queues must be physically contiguous
    cap = regSet(cap, CAP.TO, to);
    cap = regSet(cap, CAP.DSTRD, dstrd);
    cap = regSet(cap, CAP.CSS, NVME_CAP_CSS_NVM);
    cap = regSet(cap, CAP.MPSMIN, MPSMIN);
    cap = regSet(cap, CAP.MPSMAX, MPSMAX);
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
    const n = new NvmeCtrl(machine, dev, this.stats, new NvmeDataWalker(dev, this.stats), {
      ns,
      lat,
      mqes: mqe - 1,
      maxQueues: mq,
      msixVectors: mv,
      mdts,
      dstrd,
      sgl: opts.sgl ?? true,
      serial: opts.serial ?? `DMAKIT-${dev.name}`,
      model: opts.model ?? 'dmakit NVMe Ctrl',
      cap,
    });
    n.exec = (cmd) => {
      nvmeExecute(n, cmd);
    };
    n.irqFns = Array.from({ length: mv }, (_, v) => () => {
      nvmeMsixNotify(n, v);
    });
    this.#n = n;
  }

  // ---- public surface -------------------------------------------------------------------------

  /** The namespace with id `nsid`, if attached. */
  namespace(nsid: number): NvmeNamespace | undefined {
    return this.#n.ns.get(nsid);
  }

  /** Every attached namespace. */
  get namespaces(): readonly NvmeNamespace[] {
    return [...this.#n.ns.values()];
  }

  /** True when CSTS.RDY is set and the controller processes doorbells. */
  get ready(): boolean {
    return nvmeRunning(this.#n);
  }

  /** Commands fetched and not yet completed (held Async Event Requests included). */
  get inflightCount(): number {
    return this.#n.inflight.size;
  }

  /** Memory page size in use (CC.MPS latched at enable). */
  get pageSize(): number {
    return this.#n.pageSize;
  }

  /** Register an MSI-X interrupt handler; returns a function that unregisters it. */
  onInterrupt(fn: NvmeInterruptHandler): () => void {
    this.#n.handlers.add(fn);
    return () => {
      this.#n.handlers.delete(fn);
    };
  }

  /**
   * MSI-X Vector Control mask bit. A message for a masked vector sets its pending bit and is
   * delivered when the vector is unmasked (PCI Local Bus spec, MSI-X).
   */
  setVectorMasked(vector: number, masked: boolean): void {
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.#n.msixVectors) throw new RangeError(`setVectorMasked: no MSI-X vector ${vector}`);
    this.#n.vecMasked[vector] = masked ? 1 : 0;
    if (!masked && this.#n.vecPending[vector] === 1) {
      this.#n.vecPending[vector] = 0;
      nvmeIrqAssert(this.#n, vector);
    }
  }

  /**
   * Fault injection: the next `count` I/O commands are fetched but never complete on their own
   * (a stuck device), until aborted, their SQ is deleted, or the controller is reset.
   */
  injectStall(count = 1): void {
    if (!Number.isInteger(count) || count < 0) throw new RangeError(`injectStall: count must be >= 0, got ${count}`);
    this.#n.stallBudget += count;
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
        return this.#n.cap % 0x1_0000_0000;
      case NVME_REG_CAP + 4:
        return Math.floor(this.#n.cap / 0x1_0000_0000);
      case NVME_REG_VS:
        return nvmeVs(1, 4, 0);
      case NVME_REG_INTMS:
      case NVME_REG_INTMC:
        return this.#n.intms >>> 0;
      case NVME_REG_CC:
        return this.#n.cc >>> 0;
      case NVME_REG_CSTS:
        return this.#n.csts >>> 0;
      case NVME_REG_AQA:
        return this.#n.aqa >>> 0;
      case NVME_REG_ASQ:
        return this.#n.asq % 0x1_0000_0000;
      case NVME_REG_ASQ + 4:
        return Math.floor(this.#n.asq / 0x1_0000_0000);
      case NVME_REG_ACQ:
        return this.#n.acq % 0x1_0000_0000;
      case NVME_REG_ACQ + 4:
        return Math.floor(this.#n.acq / 0x1_0000_0000);
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
      nvmeProcessDb(this.#n, off, v);
      return;
    }
    switch (off) {
      case NVME_REG_INTMS:
        // Pin/MSI interrupt masks; with MSI-X the table's mask bits apply (setVectorMasked).
        this.#n.intms = (this.#n.intms | v) >>> 0;
        return;
      case NVME_REG_INTMC:
        this.#n.intms = (this.#n.intms & ~v) >>> 0;
        return;
      case NVME_REG_CC:
        this.#writeCc(v & CC_WRITABLE_MASK);
        return;
      case NVME_REG_AQA:
        this.#n.aqa = v & 0x0fff0fff;
        return;
      // ASQ/ACQ bits 11:0 are reserved (queues are at least 4 KiB aligned).
      case NVME_REG_ASQ:
        this.#n.asq = Math.floor(this.#n.asq / 0x1_0000_0000) * 0x1_0000_0000 + ((v & ~0xfff) >>> 0);
        return;
      case NVME_REG_ASQ + 4:
        this.#n.asq = v * 0x1_0000_0000 + (this.#n.asq % 0x1_0000_0000);
        return;
      case NVME_REG_ACQ:
        this.#n.acq = Math.floor(this.#n.acq / 0x1_0000_0000) * 0x1_0000_0000 + ((v & ~0xfff) >>> 0);
        return;
      case NVME_REG_ACQ + 4:
        this.#n.acq = v * 0x1_0000_0000 + (this.#n.acq % 0x1_0000_0000);
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


  #writeCc(v: number): void {
    const old = this.#n.cc;
    this.#n.cc = v;
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
      this.#n.csts = regSet(this.#n.csts, CSTS.SHST, NVME_CSTS_SHST_NORMAL);
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
    this.#n.pageSize = 4096 << regGet(this.#n.cc, CC.MPS);
    this.#readyTimer = this.machine.schedule(this.#n.lat.ready, () => {
      this.#readyTimer = null;
      const asqs = regGet(this.#n.aqa, AQA.ASQS) + 1;
      const acqs = regGet(this.#n.aqa, AQA.ACQS) + 1;
      this.#n.cqs[0] = new NvmeCompQueue(0, this.#n.acq, acqs, 0, true);
      this.#n.sqs[0] = new NvmeSubQueue(0, this.#n.asq, asqs, 0, (sq) => {
        nvmeProcessSq(this.#n, sq);
      });
      this.#n.cqs[0].sqRefs = 1;
      this.#n.csts = regSet(this.#n.csts, CSTS.RDY, 1);
      if (this.machine.trace.enabled) this.machine.trace.emit('nvme:ctrl_ready', this.device.name, { page_size: this.#n.pageSize });
    });
  }

  #checkConfig(): string {
    const mps = regGet(this.#n.cc, CC.MPS);
    if (mps < MPSMIN || mps > MPSMAX) return `CC.MPS ${mps} outside CAP.MPSMIN..MPSMAX`;
    if (regGet(this.#n.cc, CC.CSS) !== 0) return `CC.CSS ${regGet(this.#n.cc, CC.CSS)} is not the NVM command set`;
    if (regGet(this.#n.cc, CC.AMS) !== 0) return 'CC.AMS: only round robin arbitration is supported';
    if (regGet(this.#n.cc, CC.IOSQES) !== NVME_SQES_LOG2) return `CC.IOSQES ${regGet(this.#n.cc, CC.IOSQES)} != 6`;
    if (regGet(this.#n.cc, CC.IOCQES) !== NVME_CQES_LOG2) return `CC.IOCQES ${regGet(this.#n.cc, CC.IOCQES)} != 4`;
    const ps = 4096 << mps;
    if (this.#n.asq === 0 || this.#n.asq % ps !== 0) return `ASQ 0x${this.#n.asq.toString(16)} is null or not page aligned`;
    if (this.#n.acq === 0 || this.#n.acq % ps !== 0) return `ACQ 0x${this.#n.acq.toString(16)} is null or not page aligned`;
    const asqs = regGet(this.#n.aqa, AQA.ASQS);
    const acqs = regGet(this.#n.aqa, AQA.ACQS);
    if (asqs === 0 || asqs > this.#n.mqes) return `AQA.ASQS ${asqs} must be 1..${this.#n.mqes} (0's based)`;
    if (acqs === 0 || acqs > this.#n.mqes) return `AQA.ACQS ${acqs} must be 1..${this.#n.mqes} (0's based)`;
    return '';
  }

  /** CC.EN 1→0: Controller Reset. Queues and in-flight commands are dropped now; RDY falls later. */
  #reset(): void {
    this.#readyTimer?.cancel();
    this.#readyTimer = null;
    this.#shutdownTimer?.cancel();
    this.#shutdownTimer = null;
    this.#dropAllState();
    if ((this.#n.csts & 1) === 0) {
      this.#finishReset();
      return;
    }
    this.#resetTimer = this.machine.schedule(this.#n.lat.reset, () => {
      this.#finishReset();
    });
  }

  #finishReset(): void {
    this.#resetTimer?.cancel();
    this.#resetTimer = null;
    // RDY, CFS and SHST all return to 0 after a reset.
    this.#n.csts = 0;
  }

  #dropAllState(): void {
    for (const cmd of this.#n.inflight) {
      cmd.timer?.cancel();
      nvmeReleaseCmd(this.#n, cmd);
    }
    this.stats.aborted += this.#n.inflight.size;
    this.#n.inflight.clear();
    for (let q = 0; q < this.#n.sqs.length; q++) {
      this.#n.sqs[q]?.fetchTimer?.cancel();
      this.#n.sqs[q] = undefined;
      this.#n.cqs[q] = undefined;
    }
    for (let v = 0; v < this.#n.msixVectors; v++) {
      this.#n.irqTimers[v]?.cancel();
      this.#n.irqTimers[v] = null;
      this.#n.vecPending[v] = 0;
    }
    this.#n.aerOutstanding = 0;
    this.#n.stallBudget = 0;
    this.#n.allocSqs = this.#n.maxQueues;
    this.#n.allocCqs = this.#n.maxQueues;
    this.#n.qsCreated = false;
    this.#n.features.clear();
  }

  /** CC.SHN written: SHST goes to "occurring", then "complete" once in-flight work has drained. */
  #shutdown(abrupt: boolean): void {
    if ((this.#n.cc & 1) === 0 || (this.#n.csts & 1) === 0) {
      this.#n.csts = regSet(this.#n.csts, CSTS.SHST, NVME_CSTS_SHST_CMPLT);
      return;
    }
    this.#n.csts = regSet(this.#n.csts, CSTS.SHST, NVME_CSTS_SHST_OCCUR);
    for (const sq of this.#n.sqs) {
      sq?.fetchTimer?.cancel();
      if (sq) sq.fetchTimer = null;
    }
    if (abrupt) this.#dropHeld(true);
    this.#shutdownTimer = this.machine.schedule(this.#n.lat.shutdown, () => {
      this.#shutdownStep();
    });
  }

  #shutdownStep(): void {
    this.#shutdownTimer = null;
    // Held commands (stalled, Async Event Requests) never finish on their own: drop them.
    this.#dropHeld(false);
    if (this.#n.inflight.size > 0) {
      this.#shutdownTimer = this.machine.schedule(this.#n.lat.shutdown, () => {
        this.#shutdownStep();
      });
      return;
    }
    this.#n.csts = regSet(this.#n.csts, CSTS.SHST, NVME_CSTS_SHST_CMPLT);
    if (this.machine.trace.enabled) this.machine.trace.emit('nvme:ctrl_shutdown', this.device.name, {});
  }

  #dropHeld(all: boolean): void {
    for (const cmd of this.#n.inflight) {
      if (!all && cmd.timer !== null) continue;
      cmd.timer?.cancel();
      this.#n.inflight.delete(cmd);
      nvmeReleaseCmd(this.#n, cmd);
      this.stats.aborted++;
    }
    this.#n.aerOutstanding = 0;
  }
}

/** Execute a fetched command (QEMU nvme_process_sq's dispatch): admin or I/O command set, then its completion. */
function nvmeExecute(n: NvmeCtrl, cmd: NvmeCmd): void {
  cmd.timer = null;
  n.inflight.delete(cmd);
  n.result = 0;
  const status = cmd.sqid === 0 ? nvmeAdminCmd(n, cmd) : nvmeIoCmd(n, cmd);
  nvmeEnqueueReqCompletion(n, cmd.sqid, cmd.cid, status, n.result);
  nvmeReleaseCmd(n, cmd);
}

// The public types of the controller live in nvmeCtrl.ts with its state; re-exported here so that
// controller/index.ts keeps exporting them from this module.
export { NVME_CTRL_PAGE_SIZE_MAX, NVME_CTRL_PAGE_SIZE_MIN } from './nvmeCtrl.js';
export type { NvmeControllerLatency, NvmeControllerOptions, NvmeControllerStats, NvmeInterruptHandler } from './nvmeCtrl.js';

// The simulated mlx5 function and its firmware: the other end of the commands
// drivers/vfio/pci/mlx5/cmd.c sends (SUSPEND_VHCA, RESUME_VHCA, QUERY_VHCA_MIGRATION_STATE,
// SAVE_VHCA_STATE, LOAD_VHCA_STATE, CREATE_MKEY, the page tracker object; layouts in mlx5Ifc.ts).
// The firmware is not in the kernel: this is dmakit's model of it. Its state image codec is in
// mlx5SimImage.ts, its PAGE_TRACK object in mlx5SimTracker.ts; this file holds the function's
// running state (queues, counters, contexts) and the command handlers.
import { DmaFaultError, Errno, PAGE_SIZE, Rng } from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';
import {
  MLX5_CMD_STAT_BAD_RES_STATE_ERR,
  MLX5_CREATE_MKEY_IN_BYTES,
  MLX5_DEFAULT_CAPS,
  MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR,
  MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER,
  MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR,
  MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER,
} from './mlx5Ifc.js';
import type { Mlx5FunctionCaps, Mlx5PageTrackerCreate, Mlx5SaveCommand, Mlx5SaveCompletion, Mlx5SimMkey } from './mlx5Ifc.js';
import { MLX5_SIM_STATE_BLOCK, Mlx5SimImageLoader, mlx5SimDirtyCount, mlx5SimEncodeImage, mlx5SimIncImageBytes } from './mlx5SimImage.js';
import { Mlx5SimPageTracker } from './mlx5SimTracker.js';
import { MLX5_SIM_IMAGE_HEADER_BYTES } from './stream.js';

/** Fault-injection site of SAVE_VHCA_STATE (fails the command with BAD_RES_STATE). */
export const MLX5_FAULT_SAVE = 'mlx5_save_vhca_state';

/**
 * Options of the simulated mlx5 function: machine, PF and VF devices, state size, queues, capabilities,
 * firmware latency. dmakit's firmware model.
 */
export interface Mlx5SimFunctionOptions {
  machine: Machine;
  /** The PF: the firmware DMAs migration buffers and tracker reports through its mappings. */
  pf: Device;
  /** The assigned VF: its DMA into guest memory goes through the assignment domain. */
  vf: Device;
  vhcaId?: number;
  /** Internal state size in bytes (multiple of 64). Default 64 KiB. */
  stateBytes?: number;
  queues?: number;
  caps?: Partial<Mlx5FunctionCaps>;
  seed?: number;
  /** Fixed firmware latency of SAVE_VHCA_STATE in ns (default 20 µs) plus bytes / `fwBytesPerNs`. */
  saveLatencyNs?: number;
  fwBytesPerNs?: number;
}


/**
 * Counters of the simulated function: packets, DMA bytes and faults, saves, loads, tracker report
 * messages.
 */
export interface Mlx5SimFunctionStats {
  packets: number;
  dmaBytes: number;
  dmaFaults: number;
  saves: number;
  loads: number;
  imagesLoaded: number;
  reportMessages: number;
}


interface Queue {
  ringIova: number;
  slots: number;
  slotSize: number;
}

/**
 * A simulated mlx5 virtual function and the firmware that migrates it. While running it receives
 * "packets": DMA writes into guest memory through its assignment domain, with queue producer
 * indices, counters and contexts changing in its internal state. Firmware commands save and load
 * that state as an opaque, versioned image, DMAed through the PF's mappings described by an mkey's
 * MTT; a device-side page tracker records the pages the VF writes.
 */
export class Mlx5SimFunction {
  readonly machine: Machine;
  readonly pf: Device;
  readonly vf: Device;
  readonly vhcaId: number;
  readonly caps: Mlx5FunctionCaps;
  readonly stateBytes: number;
  readonly #rng: Rng;
  /** The live internal state. */
  #state: Uint8Array;
  readonly #blocks: number;
  readonly #queues: Queue[];
  readonly #scratch = new Uint8Array(PAGE_SIZE);
  readonly #saveLatencyNs: number;
  readonly #fwBytesPerNs: number;
  initiatorSuspended = false;
  responderSuspended = false;
  /** A failed or incomplete load made the function unusable until reset (no partial state runs). */
  broken = false;
  readonly stats: Mlx5SimFunctionStats = { packets: 0, dmaBytes: 0, dmaFaults: 0, saves: 0, loads: 0, imagesLoaded: 0, reportMessages: 0 };
  // incremental-save tracking of internal state
  #tracking = false;
  readonly #dirtyBlocks: Uint8Array;
  #saveSeq = 0;
  #saveInFlight = false;
  #saveDue = 0;
  #needReload = false;
  #pendingImage: Uint8Array | null = null;
  #pendingOff = 0;
  // load side
  readonly #loader = new Mlx5SimImageLoader();
  // mkeys
  readonly #mkeys = new Map<number, Mlx5SimMkey>();
  #nextMkey = 0x100;
  // device dirty tracker
  #tracker: Mlx5SimPageTracker | null = null;

  constructor(opts: Mlx5SimFunctionOptions) {
    this.machine = opts.machine;
    this.pf = opts.pf;
    this.vf = opts.vf;
    this.vhcaId = opts.vhcaId ?? 1;
    this.caps = { ...MLX5_DEFAULT_CAPS, ...opts.caps };
    const stateBytes = opts.stateBytes ?? 64 * 1024;
    const queues = opts.queues ?? 8;
    if (!Number.isSafeInteger(stateBytes) || stateBytes % MLX5_SIM_STATE_BLOCK !== 0 || stateBytes < (queues + 2) * MLX5_SIM_STATE_BLOCK) {
      throw new RangeError(`Mlx5SimFunction: stateBytes must be a multiple of 64 holding ${queues + 2} blocks`);
    }
    this.stateBytes = stateBytes;
    this.#blocks = stateBytes / MLX5_SIM_STATE_BLOCK;
    this.#state = new Uint8Array(stateBytes);
    this.#dirtyBlocks = new Uint8Array(this.#blocks);
    this.#queues = Array.from({ length: queues }, () => ({ ringIova: 0, slots: 0, slotSize: 0 }));
    this.#rng = new Rng(opts.seed ?? 7);
    this.#saveLatencyNs = opts.saveLatencyNs ?? 20_000;
    this.#fwBytesPerNs = opts.fwBytesPerNs ?? 10;
    this.#initState();
  }

  #initState(): void {
    this.#state.fill(0);
    const dv = this.#dv();
    dv.setUint32(0, 0x4d4c5846, true); // block 0: identity
    dv.setUint32(4, this.#queues.length, true);
  }

  #dv(): DataView {
    return new DataView(this.#state.buffer, this.#state.byteOffset, this.#state.byteLength);
  }

  /** A copy of the live internal state (for verification). */
  stateSnapshot(): Uint8Array {
    return this.#state.slice();
  }

  /** True while neither side is suspended and the function is not broken. */
  get running(): boolean {
    return !this.initiatorSuspended && !this.responderSuspended && !this.broken;
  }

  /** Guest driver: give queue `q` a receive ring in guest memory (IOVA = guest-physical). */
  configureQueue(q: number, ringIova: number, slots: number, slotSize: number): number {
    const queue = this.#queues[q];
    if (queue === undefined || !Number.isSafeInteger(ringIova) || ringIova < 0 || !Number.isInteger(slots) || slots <= 0 || !Number.isInteger(slotSize) || slotSize < 64 || slotSize > PAGE_SIZE) {
      return -Errno.EINVAL;
    }
    queue.ringIova = ringIova;
    queue.slots = slots;
    queue.slotSize = slotSize;
    const off = (1 + q) * MLX5_SIM_STATE_BLOCK;
    const dv = this.#dv();
    dv.setFloat64(off + 16, ringIova, true);
    dv.setUint32(off + 24, slots, true);
    dv.setUint32(off + 28, slotSize, true);
    this.#touch(1 + q);
    return 0;
  }

  #touch(block: number): void {
    if (this.#tracking) this.#dirtyBlocks[block] = 1;
  }

  /**
   * One unit of device work while running: receive a packet into a queue's ring (a DMA write into
   * guest memory), bump the queue context and counters, sometimes rewrite a context. Returns the
   * bytes DMAed (0 when stopped or nothing is configured).
   */
  step(): number {
    if (!this.running) return 0;
    const rng = this.#rng;
    const q = rng.nextInt(this.#queues.length);
    const queue = this.#queues[q];
    const dv = this.#dv();
    const qoff = (1 + q) * MLX5_SIM_STATE_BLOCK;
    let moved = 0;
    if (queue !== undefined && queue.slots > 0) {
      const pi = dv.getUint32(qoff, true);
      const len = 64 + rng.nextInt(queue.slotSize - 63);
      const pkt = this.#scratch;
      rng.fill(pkt.subarray(0, len));
      const hdr = new DataView(pkt.buffer, 0, 16);
      hdr.setUint32(0, 0x504b5430, true);
      hdr.setUint32(4, q, true);
      hdr.setUint32(8, pi, true);
      hdr.setUint32(12, len, true);
      const iova = queue.ringIova + (pi % queue.slots) * queue.slotSize;
      try {
        this.vf.dmaWrite(iova, pkt, 0, len);
        this.#tracker?.deviceWrite(iova, len);
        moved = len;
        dv.setUint32(qoff, pi + 1, true);
        dv.setUint32(qoff + 8, dv.getUint32(qoff + 8, true) + 1, true);
        dv.setFloat64(qoff + 32, dv.getFloat64(qoff + 32, true) + len, true);
        this.stats.packets++;
        this.stats.dmaBytes += len;
      } catch (e) {
        if (!(e instanceof DmaFaultError)) throw e;
        // The hardware gets a translation fault: an error CQE and an error counter, no write.
        this.stats.dmaFaults++;
        dv.setUint32(qoff + 12, dv.getUint32(qoff + 12, true) + 1, true);
      }
      this.#touch(1 + q);
    }
    // Global counters block.
    const coff = (1 + this.#queues.length) * MLX5_SIM_STATE_BLOCK;
    dv.setFloat64(coff, dv.getFloat64(coff, true) + 1, true);
    dv.setFloat64(coff + 8, dv.getFloat64(coff + 8, true) + moved, true);
    this.#touch(1 + this.#queues.length);
    // Contexts: one in four steps rewrites a random context block (flow steering, QP contexts).
    const first = 2 + this.#queues.length;
    if (this.#blocks > first && rng.nextInt(4) === 0) {
      const b = first + rng.nextInt(this.#blocks - first);
      rng.fill(this.#state.subarray(b * MLX5_SIM_STATE_BLOCK, b * MLX5_SIM_STATE_BLOCK + 16));
      this.#touch(b);
    }
    return moved;
  }

  // ---- commands ----

  /**
   * SUSPEND_VHCA firmware command (opMod: initiator or responder); 0 or -EINVAL. dmakit's firmware model
   * of the command the kernel's mlx5vf_cmd_suspend_vhca() sends.
   */
  suspendVhca(opMod: number): number {
    if (opMod === MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR) this.initiatorSuspended = true;
    else if (opMod === MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER) this.responderSuspended = true;
    else return -Errno.EINVAL;
    this.machine.clock.charge(5_000);
    return 0;
  }

  /**
   * RESUME_VHCA firmware command; 0, -EINVAL or -EIO when broken. dmakit's firmware model of the command
   * the kernel's mlx5vf_cmd_resume_vhca() sends.
   */
  resumeVhca(opMod: number): number {
    if (this.broken) return -Errno.EIO;
    if (opMod === MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER) this.responderSuspended = false;
    else if (opMod === MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR) this.initiatorSuspended = false;
    else return -Errno.EINVAL;
    if (this.#needReload) {
      this.reloadQueuesFromState();
      this.#needReload = false;
    }
    this.machine.clock.charge(5_000);
    return 0;
  }

  /**
   * QUERY_VHCA_MIGRATION_STATE: bytes the next image needs (`required_umem_size`), incremental
   * when `inc` and tracking is on; a chunked final save in progress reports what is left.
   */
  queryVhcaMigrationState(inc: boolean): number {
    if (!this.caps.migration) return -Errno.EOPNOTSUPP;
    if (this.#pendingImage !== null) return this.#pendingImage.length - this.#pendingOff;
    if (inc && this.#tracking) return mlx5SimIncImageBytes(mlx5SimDirtyCount(this.#dirtyBlocks));
    return MLX5_SIM_IMAGE_HEADER_BYTES + this.stateBytes;
  }

  /** `required_umem_size` for a stop-copy save: in chunk mode at most one chunk. */
  queryRequiredUmemSize(inc: boolean): number {
    const total = this.queryVhcaMigrationState(inc);
    if (total < 0 || !this.caps.chunkMode) return total;
    return Math.min(total, this.caps.chunkBytes);
  }

  /** CREATE_MKEY: the firmware reads the MTT array out of the command input. */
  createMkey(mkeyIn: ArrayBuffer, npages: number): number {
    if (!Number.isInteger(npages) || npages <= 0 || mkeyIn.byteLength < MLX5_CREATE_MKEY_IN_BYTES + npages * 8) return -Errno.EINVAL;
    const mkey = this.#nextMkey++;
    this.#mkeys.set(mkey, { mtt: new Float64Array(mkeyIn, MLX5_CREATE_MKEY_IN_BYTES, npages), npages });
    return mkey;
  }

  /** DESTROY_MKEY firmware command; 0 or -EINVAL for an unknown key. */
  destroyMkey(mkey: number): number {
    return this.#mkeys.delete(mkey) ? 0 : -Errno.EINVAL;
  }

  /** Number of live memory keys. */
  get liveMkeys(): number {
    return this.#mkeys.size;
  }

  #snapshotImage(inc: boolean): Uint8Array {
    const seq = ++this.#saveSeq;
    const img = mlx5SimEncodeImage(this.#state, inc && this.#tracking ? this.#dirtyBlocks : null, this.vhcaId, seq);
    this.#dirtyBlocks.fill(0);
    return img;
  }

  /**
   * SAVE_VHCA_STATE (asynchronous): snapshot now, DMA the image into the mkey's pages through the
   * PF when the command completes. `setTrack` starts tracking internal changes for later
   * incremental saves; a save without it ends tracking. In chunk mode a final save returns at most
   * `size` bytes and `nextRequiredUmemSize` for the rest. Returns 0 (issued) or -errno.
   */
  saveVhcaState(cmd: Mlx5SaveCommand, done: Mlx5SaveCompletion): number {
    if (!this.caps.migration) return -Errno.EOPNOTSUPP;
    if (this.#saveInFlight) return -Errno.EBUSY;
    const mk = this.#mkeys.get(cmd.mkey);
    if (mk === undefined || !Number.isSafeInteger(cmd.size) || cmd.size <= 0 || cmd.size > mk.npages * PAGE_SIZE) return -Errno.EINVAL;
    this.stats.saves++;
    const fail = this.machine.faultInjection.shouldFail(MLX5_FAULT_SAVE);
    let img: Uint8Array | null = null;
    let off = 0;
    let len = 0;
    let next = 0;
    if (!fail) {
      if (this.#pendingImage === null) {
        img = this.#snapshotImage(cmd.incremental);
        // set_track starts tracking internal changes; a final (untracked) save ends it.
        this.#tracking = cmd.setTrack;
        if (img.length > cmd.size) {
          if (!this.caps.chunkMode || cmd.setTrack) {
            // Buffer too small for a whole image: the command fails (the driver queries first).
            img = null;
          } else {
            this.#pendingImage = img;
            this.#pendingOff = 0;
          }
        }
      } else {
        img = this.#pendingImage;
        off = this.#pendingOff;
      }
      if (img !== null) {
        len = Math.min(cmd.size, img.length - off);
        if (this.#pendingImage !== null) {
          this.#pendingOff += len;
          const left = img.length - this.#pendingOff;
          next = Math.min(left, this.caps.chunkBytes);
          if (left === 0) this.#pendingImage = null;
        }
      }
    }
    this.#saveInFlight = true;
    if (fail) this.#tracking = false; // the firmware lost its tracking context: the next save is full
    const latency = this.#saveLatencyNs + Math.ceil(len / this.#fwBytesPerNs);
    const image = img;
    this.#saveDue = this.machine.clock.now() + latency;
    this.machine.schedule(latency, () => {
      this.#saveInFlight = false;
      if (fail) {
        done(MLX5_CMD_STAT_BAD_RES_STATE_ERR, 0, 0);
        return;
      }
      if (image === null) {
        done(-Errno.ENOSPC, 0, 0);
        return;
      }
      try {
        this.#dmaToMkey(mk, image, off, len);
      } catch (e) {
        if (!(e instanceof DmaFaultError)) throw e;
        this.stats.dmaFaults++;
        done(-Errno.EIO, 0, 0);
        return;
      }
      done(0, len, next);
    });
    return 0;
  }

  /** True while a SAVE_VHCA_STATE is running. */
  get saveInFlight(): boolean {
    return this.#saveInFlight;
  }

  /** Simulated time at which the SAVE in flight completes. */
  get saveDueAt(): number {
    return this.#saveDue;
  }

  #dmaToMkey(mk: Mlx5SimMkey, src: Uint8Array, off: number, len: number): void {
    let done = 0;
    for (let i = 0; done < len; i++) {
      const n = Math.min(PAGE_SIZE, len - done);
      this.pf.dmaWrite(mk.mtt[i] ?? 0, src, off + done, n);
      done += n;
    }
  }

  /**
   * LOAD_VHCA_STATE (synchronous): DMA `size` bytes from the mkey's pages and feed them to the
   * image parser; whole images are applied. 0 or -EINVAL (malformed: the function becomes
   * unusable until reset, its state scrubbed).
   */
  loadVhcaState(mkey: number, size: number): number {
    const mk = this.#mkeys.get(mkey);
    if (mk === undefined || !Number.isSafeInteger(size) || size <= 0 || size > mk.npages * PAGE_SIZE) return -Errno.EINVAL;
    if (this.broken) return -Errno.EIO;
    this.stats.loads++;
    const { buf, off } = this.#loader.reserve(size);
    let done = 0;
    try {
      for (let i = 0; done < size; i++) {
        const n = Math.min(PAGE_SIZE, size - done);
        this.pf.dmaReadInto(mk.mtt[i] ?? 0, buf, off + done, n);
        done += n;
      }
    } catch (e) {
      if (!(e instanceof DmaFaultError)) throw e;
      this.stats.dmaFaults++;
      return this.#loadFailed();
    }
    this.#loader.commit(size);
    this.#needReload = true;
    this.machine.clock.charge(2_000 + Math.ceil(size / this.#fwBytesPerNs));
    return this.#loader.apply(this.#state, () => {
      this.stats.imagesLoaded++;
    })
      ? 0
      : this.#loadFailed();
  }

  #loadFailed(): number {
    this.markBroken();
    return -Errno.EINVAL;
  }

  /** True when every byte loaded so far formed whole images and at least one full image arrived. */
  get loadComplete(): boolean {
    return this.#loader.complete && !this.broken;
  }

  /** The resuming side gave up: scrub what was loaded, refuse to run until reset. */
  markBroken(): void {
    this.broken = true;
    this.#initState();
    this.#loader.reset();
  }

  /** Function level reset: a clean function (queues unconfigured, nothing loaded or tracked). */
  flr(): void {
    this.broken = false;
    this.initiatorSuspended = false;
    this.responderSuspended = false;
    this.#tracking = false;
    this.#dirtyBlocks.fill(0);
    this.#pendingImage = null;
    this.#loader.reset();
    this.#needReload = false;
    this.#tracker = null;
    for (const q of this.#queues) {
      q.ringIova = 0;
      q.slots = 0;
      q.slotSize = 0;
    }
    this.#initState();
  }

  /** Re-read queue configuration from the (loaded) state, as the hardware does on resume. */
  reloadQueuesFromState(): void {
    const dv = this.#dv();
    this.#queues.forEach((q, i) => {
      const off = (1 + i) * MLX5_SIM_STATE_BLOCK;
      q.ringIova = dv.getFloat64(off + 16, true);
      q.slots = dv.getUint32(off + 24, true);
      q.slotSize = dv.getUint32(off + 28, true);
    });
  }

  // ---- device dirty page tracker ----

  /** Create the PAGE_TRACK object. 0 or -errno. */
  createPageTracker(c: Mlx5PageTrackerCreate): number {
    if (this.#tracker !== null) return -Errno.EBUSY;
    const t = Mlx5SimPageTracker.create(c, this.#mkeys.get(c.recvMkey), this.caps);
    if (typeof t === 'number') return t;
    this.#tracker = t;
    return 0;
  }

  /** Destroys the page-tracker object; 0 or -EINVAL when none exists. */
  destroyPageTracker(): number {
    if (this.#tracker === null) return -Errno.EINVAL;
    this.#tracker = null;
    return 0;
  }

  /** True while a page-tracker object exists. */
  get trackerActive(): boolean {
    return this.#tracker !== null;
  }

  /** Simulate a tracker object error (the driver sees it as -EIO on the next report). */
  injectTrackerError(): void {
    if (this.#tracker !== null) this.#tracker.error = true;
  }

  /**
   * MODIFY on the tracker object: report (and clear) the dirty pages of `[iova, iova+length)`.
   * Messages are then delivered one receive slot at a time by `trackerPostMessage`.
   */
  trackerQueryReport(iova: number, length: number): number {
    if (this.#tracker === null) return -Errno.EINVAL;
    return this.#tracker.queryReport(iova, length);
  }

  /**
   * The firmware QP sends the next report message into the host QP's receive buffer: at slot
   * `slot` (each `msgSize` bytes): le32 count, le32 flags (bit 0: last message of the report), then
   * `count` le64 page addresses. Returns the message byte count, or -EIO on a tracker error.
   */
  trackerPostMessage(slot: number): number {
    if (this.#tracker === null) return -Errno.EINVAL;
    const ret = this.#tracker.postMessage(this.pf, slot, this.#scratch);
    if (ret > 0) this.stats.reportMessages++;
    return ret;
  }
}

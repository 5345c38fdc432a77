// kernel: drivers/vfio/pci/mlx5/cmd.c (the commands the driver sends: SUSPEND_VHCA, RESUME_VHCA,
// QUERY_VHCA_MIGRATION_STATE, SAVE_VHCA_STATE, LOAD_VHCA_STATE, CREATE_MKEY, page tracker object),
// include/linux/mlx5/mlx5_ifc.h. The firmware side is not in the kernel: this is a model of it.
import { DmaFaultError, Errno, PAGE_SIZE, Rng } from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';
import { MLX5_SIM_IMAGE_FULL, MLX5_SIM_IMAGE_HEADER_BYTES, MLX5_SIM_IMAGE_INC, MLX5_SIM_IMAGE_MAGIC, MLX5_SIM_IMAGE_VERSION, fnv1a } from './stream.js';
import type { VfioIovaRange } from './iovaBitmap.js';

/**
 * SUSPEND_VHCA op_mod: suspend the initiator side. kernel: MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR
 * in include/linux/mlx5/mlx5_ifc.h.
 */
export const MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR = 0;
/**
 * SUSPEND_VHCA op_mod: suspend the responder side. kernel: MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER
 * in include/linux/mlx5/mlx5_ifc.h.
 */
export const MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER = 1;
/**
 * RESUME_VHCA op_mod: resume the responder side. kernel: MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER in
 * include/linux/mlx5/mlx5_ifc.h.
 */
export const MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER = 0;
/**
 * RESUME_VHCA op_mod: resume the initiator side. kernel: MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR in
 * include/linux/mlx5/mlx5_ifc.h.
 */
export const MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR = 1;
/** Command status the driver maps to PRE_COPY_ERROR (`MLX5_CMD_STAT_BAD_RES_STATE_ERR`). */
export const MLX5_CMD_STAT_BAD_RES_STATE_ERR = 0x9;
/** `MLX5_ST_SZ_BYTES(create_mkey_in)`: the CREATE_MKEY input before its MTT array. */
export const MLX5_CREATE_MKEY_IN_BYTES = 272;
/** Fault-injection site of SAVE_VHCA_STATE (fails the command with BAD_RES_STATE). */
export const MLX5_FAULT_SAVE = 'mlx5_save_vhca_state';
/** Bytes of one state block (the granularity of incremental saves). */
export const MLX5_SIM_STATE_BLOCK = 64;

/**
 * Migration capabilities of the simulated function: migratable, pre-copy, chunk mode, dirty-tracker
 * limits (kernel: the mlx5_ifc HCA capability fields the driver reads).
 */
export interface Mlx5FunctionCaps {
  /** `migratable`. */
  migration: boolean;
  /** `migration_tracking_state` (pre-copy with incremental saves). */
  preCopy: boolean;
  /** `migration_in_chunks`: the final image is saved in chunks bounded by `chunkBytes`. */
  chunkMode: boolean;
  chunkBytes: number;
  /** Device dirty tracker capabilities. */
  pgTrackMaxNumRange: number;
  pgTrackLogMinPageSize: number;
  pgTrackLogMaxPageSize: number;
  pgTrackLogMinMsgSize: number;
  pgTrackLogMaxMsgSize: number;
  pgTrackLogMinAddrSpace: number;
  pgTrackLogMaxAddrSpace: number;
}

/** Capabilities the simulated function has unless overridden: migratable with pre-copy and chunk mode. */
export const MLX5_DEFAULT_CAPS: Mlx5FunctionCaps = {
  migration: true,
  preCopy: true,
  chunkMode: true,
  chunkBytes: 64 * 1024,
  pgTrackMaxNumRange: 4,
  pgTrackLogMinPageSize: 12,
  pgTrackLogMaxPageSize: 21,
  pgTrackLogMinMsgSize: 8,
  pgTrackLogMaxMsgSize: 12,
  pgTrackLogMinAddrSpace: 12,
  pgTrackLogMaxAddrSpace: 48,
};

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
 * A SAVE_VHCA_STATE command as the simulated firmware receives it: buffer mkey, size, incremental,
 * set-track.
 */
export interface Mlx5SaveCommand {
  mkey: number;
  size: number;
  incremental: boolean;
  setTrack: boolean;
}

/** Completion of SAVE_VHCA_STATE: status 0 or a command status, the image bytes written, next chunk size. */
export type Mlx5SaveCompletion = (status: number, imageSize: number, nextRequiredUmemSize: number) => void;

/**
 * Page-tracker object creation as the simulated firmware receives it: ranges, page and message sizes,
 * receive buffer.
 */
export interface Mlx5PageTrackerCreate {
  ranges: readonly VfioIovaRange[];
  logPageSize: number;
  logMsgSize: number;
  /** Receive buffer mkey and its size in pages. */
  recvMkey: number;
  recvNpages: number;
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

interface Mkey {
  readonly mtt: Float64Array;
  readonly npages: number;
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
  #loadBuf = new Uint8Array(0);
  #loadLen = 0;
  #loadedFull = false;
  #expectSeq = 0;
  // mkeys
  readonly #mkeys = new Map<number, Mkey>();
  #nextMkey = 0x100;
  // device dirty tracker
  #tracker: { ranges: VfioIovaRange[]; pageSize: number; msgSize: number; recv: Mkey; dirty: Set<number>; report: number[]; reportOff: number; slot: number; error: boolean } | null = null;

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
        this.#trackDeviceWrite(iova, len);
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

  #dirtyCount(): number {
    let n = 0;
    for (const d of this.#dirtyBlocks) n += d;
    return n;
  }

  /**
   * QUERY_VHCA_MIGRATION_STATE: bytes the next image needs (`required_umem_size`), incremental
   * when `inc` and tracking is on; a chunked final save in progress reports what is left.
   */
  queryVhcaMigrationState(inc: boolean): number {
    if (!this.caps.migration) return -Errno.EOPNOTSUPP;
    if (this.#pendingImage !== null) return this.#pendingImage.length - this.#pendingOff;
    if (inc && this.#tracking) return MLX5_SIM_IMAGE_HEADER_BYTES + 4 + this.#dirtyCount() * (4 + MLX5_SIM_STATE_BLOCK);
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
    let img: Uint8Array;
    if (inc && this.#tracking) {
      const n = this.#dirtyCount();
      img = new Uint8Array(MLX5_SIM_IMAGE_HEADER_BYTES + 4 + n * (4 + MLX5_SIM_STATE_BLOCK));
      const dv = new DataView(img.buffer);
      dv.setUint32(MLX5_SIM_IMAGE_HEADER_BYTES, n, true);
      let off = MLX5_SIM_IMAGE_HEADER_BYTES + 4;
      for (let b = 0; b < this.#blocks; b++) {
        if (this.#dirtyBlocks[b] === 0) continue;
        dv.setUint32(off, b, true);
        img.set(this.#state.subarray(b * MLX5_SIM_STATE_BLOCK, (b + 1) * MLX5_SIM_STATE_BLOCK), off + 4);
        off += 4 + MLX5_SIM_STATE_BLOCK;
      }
    } else {
      img = new Uint8Array(MLX5_SIM_IMAGE_HEADER_BYTES + this.stateBytes);
      img.set(this.#state, MLX5_SIM_IMAGE_HEADER_BYTES);
    }
    const dv = new DataView(img.buffer);
    dv.setUint32(0, MLX5_SIM_IMAGE_MAGIC, true);
    dv.setUint16(4, MLX5_SIM_IMAGE_VERSION, true);
    dv.setUint16(6, inc && this.#tracking ? MLX5_SIM_IMAGE_INC : MLX5_SIM_IMAGE_FULL, true);
    dv.setUint32(8, this.vhcaId, true);
    dv.setUint32(12, seq, true);
    dv.setUint32(16, img.length - MLX5_SIM_IMAGE_HEADER_BYTES, true);
    dv.setUint32(20, fnv1a(img, MLX5_SIM_IMAGE_HEADER_BYTES), true);
    dv.setUint32(24, this.stateBytes, true);
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

  #dmaToMkey(mk: Mkey, src: Uint8Array, off: number, len: number): void {
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
    if (this.#loadLen + size > this.#loadBuf.length) {
      const nb = new Uint8Array(Math.max(this.#loadLen + size, this.#loadBuf.length * 2));
      nb.set(this.#loadBuf.subarray(0, this.#loadLen));
      this.#loadBuf = nb;
    }
    let done = 0;
    try {
      for (let i = 0; done < size; i++) {
        const n = Math.min(PAGE_SIZE, size - done);
        this.pf.dmaReadInto(mk.mtt[i] ?? 0, this.#loadBuf, this.#loadLen + done, n);
        done += n;
      }
    } catch (e) {
      if (!(e instanceof DmaFaultError)) throw e;
      this.stats.dmaFaults++;
      return this.#loadFailed();
    }
    this.#loadLen += size;
    this.#needReload = true;
    this.machine.clock.charge(2_000 + Math.ceil(size / this.#fwBytesPerNs));
    return this.#parseLoaded();
  }

  #parseLoaded(): number {
    let pos = 0;
    const buf = this.#loadBuf;
    while (this.#loadLen - pos >= MLX5_SIM_IMAGE_HEADER_BYTES) {
      const dv = new DataView(buf.buffer, buf.byteOffset + pos, MLX5_SIM_IMAGE_HEADER_BYTES);
      if (dv.getUint32(0, true) !== MLX5_SIM_IMAGE_MAGIC || dv.getUint16(4, true) !== MLX5_SIM_IMAGE_VERSION) return this.#loadFailed();
      const kind = dv.getUint16(6, true);
      const seq = dv.getUint32(12, true);
      const payload = dv.getUint32(16, true);
      const crc = dv.getUint32(20, true);
      const stateBytes = dv.getUint32(24, true);
      if (stateBytes !== this.stateBytes || (kind !== MLX5_SIM_IMAGE_FULL && kind !== MLX5_SIM_IMAGE_INC)) return this.#loadFailed();
      if (kind === MLX5_SIM_IMAGE_FULL && payload !== stateBytes) return this.#loadFailed();
      if (payload > 1 << 30) return this.#loadFailed();
      if (this.#loadLen - pos < MLX5_SIM_IMAGE_HEADER_BYTES + payload) break; // more chunks to come
      const p0 = pos + MLX5_SIM_IMAGE_HEADER_BYTES;
      if (fnv1a(buf, p0, payload) !== crc) return this.#loadFailed();
      if (kind === MLX5_SIM_IMAGE_FULL) {
        this.#state.set(buf.subarray(p0, p0 + payload));
        this.#loadedFull = true;
      } else {
        // An increment must follow the previous image exactly: none lost, none applied twice.
        if (!this.#loadedFull || seq !== this.#expectSeq) return this.#loadFailed();
        const pv = new DataView(buf.buffer, buf.byteOffset + p0, payload);
        const n = payload >= 4 ? pv.getUint32(0, true) : -1;
        if (n < 0 || 4 + n * (4 + MLX5_SIM_STATE_BLOCK) !== payload) return this.#loadFailed();
        for (let i = 0; i < n; i++) {
          const o = 4 + i * (4 + MLX5_SIM_STATE_BLOCK);
          const b = pv.getUint32(o, true);
          if (b >= this.#blocks) return this.#loadFailed();
          this.#state.set(buf.subarray(p0 + o + 4, p0 + o + 4 + MLX5_SIM_STATE_BLOCK), b * MLX5_SIM_STATE_BLOCK);
        }
      }
      this.#expectSeq = seq + 1;
      this.stats.imagesLoaded++;
      pos = p0 + payload;
    }
    if (pos > 0) {
      buf.copyWithin(0, pos, this.#loadLen);
      this.#loadLen -= pos;
    }
    return 0;
  }

  #loadFailed(): number {
    this.markBroken();
    return -Errno.EINVAL;
  }

  /** True when every byte loaded so far formed whole images and at least one full image arrived. */
  get loadComplete(): boolean {
    return this.#loadedFull && this.#loadLen === 0 && !this.broken;
  }

  /** The resuming side gave up: scrub what was loaded, refuse to run until reset. */
  markBroken(): void {
    this.broken = true;
    this.#initState();
    this.#loadLen = 0;
    this.#loadedFull = false;
  }

  /** Function level reset: a clean function (queues unconfigured, nothing loaded or tracked). */
  flr(): void {
    this.broken = false;
    this.initiatorSuspended = false;
    this.responderSuspended = false;
    this.#tracking = false;
    this.#dirtyBlocks.fill(0);
    this.#pendingImage = null;
    this.#loadLen = 0;
    this.#loadedFull = false;
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
    const recv = this.#mkeys.get(c.recvMkey);
    if (recv === undefined || c.recvNpages > recv.npages) return -Errno.EINVAL;
    if (c.ranges.length === 0 || c.ranges.length > this.caps.pgTrackMaxNumRange) return -Errno.EINVAL;
    if (c.logPageSize < this.caps.pgTrackLogMinPageSize || c.logPageSize > this.caps.pgTrackLogMaxPageSize) return -Errno.EINVAL;
    if (c.logMsgSize < this.caps.pgTrackLogMinMsgSize || c.logMsgSize > Math.min(12, this.caps.pgTrackLogMaxMsgSize)) return -Errno.EINVAL;
    this.#tracker = {
      ranges: c.ranges.map((r) => ({ ...r })),
      pageSize: 2 ** c.logPageSize,
      msgSize: 2 ** c.logMsgSize,
      recv,
      dirty: new Set<number>(),
      report: [],
      reportOff: 0,
      slot: 0,
      error: false,
    };
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

  #trackDeviceWrite(iova: number, len: number): void {
    const t = this.#tracker;
    if (t === null || t.error) return;
    const ps = t.pageSize;
    for (const r of t.ranges) {
      const s = Math.max(iova, r.iova);
      const e = Math.min(iova + len, r.iova + r.length);
      if (e <= s) continue;
      for (let p = Math.floor(s / ps); p * ps < e; p++) t.dirty.add(p);
    }
  }

  /**
   * MODIFY on the tracker object: report (and clear) the dirty pages of `[iova, iova+length)`.
   * Messages are then delivered one receive slot at a time by `trackerPostMessage`.
   */
  trackerQueryReport(iova: number, length: number): number {
    const t = this.#tracker;
    if (t === null) return -Errno.EINVAL;
    if (t.error) return -Errno.EIO;
    const ps = t.pageSize;
    const lo = Math.floor(iova / ps);
    const hi = Math.ceil((iova + length) / ps);
    const out: number[] = [];
    for (const p of t.dirty) if (p >= lo && p < hi) out.push(p);
    out.sort((a, b) => a - b);
    for (const p of out) t.dirty.delete(p);
    t.report = out;
    t.reportOff = 0;
    return 0;
  }

  /**
   * The firmware QP sends the next report message into the host QP's receive buffer: at slot
   * `slot` (each `msgSize` bytes): le32 count, le32 flags (bit 0: last message of the report), then
   * `count` le64 page addresses. Returns the message byte count, or -EIO on a tracker error.
   */
  trackerPostMessage(slot: number): number {
    const t = this.#tracker;
    if (t === null) return -Errno.EINVAL;
    if (t.error) return -Errno.EIO;
    const perMsg = (t.msgSize - 8) / 8;
    const n = Math.min(perMsg, t.report.length - t.reportOff);
    const last = t.reportOff + n >= t.report.length;
    const msg = this.#scratch;
    const dv = new DataView(msg.buffer, 0, t.msgSize);
    dv.setUint32(0, n, true);
    dv.setUint32(4, last ? 1 : 0, true);
    for (let i = 0; i < n; i++) {
      const addr = (t.report[t.reportOff + i] ?? 0) * t.pageSize;
      dv.setUint32(8 + 8 * i, addr % 0x1_0000_0000, true);
      dv.setUint32(12 + 8 * i, Math.floor(addr / 0x1_0000_0000), true);
    }
    t.reportOff += n;
    const bytes = 8 + 8 * n;
    const slotOff = slot * t.msgSize;
    const page = Math.floor(slotOff / PAGE_SIZE);
    try {
      this.pf.dmaWrite((t.recv.mtt[page] ?? 0) + (slotOff % PAGE_SIZE), msg, 0, bytes);
    } catch (e) {
      if (!(e instanceof DmaFaultError)) throw e;
      t.error = true;
      return -Errno.EIO;
    }
    this.stats.reportMessages++;
    return bytes;
  }
}

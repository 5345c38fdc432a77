// The NVMe PCI host driver: controller bring-up and reset, admin and I/O queues, request mapping
// into PRPs or SGLs, completion, timeouts and abort.
// kernel: drivers/nvme/host/pci.c [6.17], drivers/nvme/host/core.c (nvme_enable_ctrl,
// nvme_wait_ready, nvme_complete_rq, nvme_decide_disposition, nvme_error_status)
import {
  BlkStatus,
  blkRqNrPhysSegments,
  blkRqPayloadBytes,
  dmaAllocCoherent,
  dmaFreeCoherent,
  dmaMapPhys,
  dmaMappingError,
  dmaNeedUnmap,
  dmaPoolAlloc,
  dmaPoolCreate,
  dmaPoolDestroy,
  dmaPoolFree,
  dmaSetMaskAndCoherent,
  dmaSetMaxSegSize,
  dmaSetMinAlignMask,
  dmaUnmapPage,
  dmaUnmapSgtable,
  dmaMapSgtable,
  dmaUseIova,
  Errno,
  isPciP2pdmaPage,
  ReqOp,
  REQ_FUA,
  rqDmaDir,
  SgTable,
  SECTOR_SHIFT,
} from '@dmakit/dma-core';
import type { BlkRequest, BlkRqDmaMapper, Device, DmaCoherentBuffer, DmaDataDirection, DmaPool, Machine, PhysVec, QueueLimits, SimTimer } from '@dmakit/dma-core';
import {
  AQA,
  CAP,
  CC,
  CSTS,
  NVME_REG_ACQ,
  NVME_REG_AQA,
  NVME_REG_ASQ,
  NVME_REG_CAP,
  NVME_REG_CC,
  NVME_REG_CSTS,
  NVME_CC_SHN_NORMAL,
  NVME_CSTS_SHST_CMPLT,
  regGet,
  regSet,
} from '../controller/registers.js';
import {
  NVME_CQES_LOG2,
  NVME_CQ_IRQ_ENABLED,
  NVME_CTRL_SGLS_SUPPORTED,
  NVME_IDENTIFY_DATA_SIZE,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_SGL_DESC_SIZE,
  NVME_SQES_LOG2,
  NvmeAdminOpcode,
  NvmeFeat,
  NvmeIdCns,
  NvmeOpcode,
  NvmeSglType,
  NvmeStatus,
  SQE,
  nvmeStatusCode,
  nvmeStatusName,
  readLe64,
  writeLe64,
} from '../controller/spec.js';
import {
  IOD_ABORTED,
  IOD_SINGLE_SEGMENT,
  IOD_SMALL_DESCRIPTOR,
  NVME_ADMIN_TIMEOUT_NS,
  NVME_AQ_DEPTH,
  NVME_CID_GENCTR_MASK,
  NVME_CID_TAG_BITS,
  NVME_CID_TAG_MASK,
  NVME_CTRL_PAGE_SIZE,
  NVME_DEFAULT_SGL_THRESHOLD,
  NVME_IO_QUEUE_DEPTH,
  NVME_IO_TIMEOUT_NS,
  NVME_MAX_BYTES,
  NVME_MAX_NR_DESCRIPTORS,
  NVME_MAX_RETRIES,
  NVME_MAX_SEGS,
  NVME_PRPS_PER_PAGE,
  NVME_SC_HOST_ABORTED_CMD,
  NVME_SMALL_POOL_PRPS,
  NVME_SMALL_POOL_SGLS,
  NVME_SMALL_POOL_SIZE,
  SGL_FORCED,
  SGL_SUPPORTED,
  SGL_UNSUPPORTED,
} from './constants.js';
import type { NvmeAdminDone, NvmeIod } from './iod.js';
import { coherentCpu, NvmeQueue } from './queue.js';
import type { NvmeBar } from './queue.js';

/** `enum nvme_ctrl_state` (the states this model passes through). */
export type NvmeCtrlState = 'new' | 'resetting' | 'connecting' | 'live' | 'deleting' | 'dead';

/** A namespace as Identify Namespace described it. */
export interface NvmeNsInfo {
  readonly nsid: number;
  /** NSZE in logical blocks. */
  readonly capacityLbas: number;
  readonly lbaShift: number;
  readonly lbaSize: number;
}

/**
 * Options of the NVMe host driver: I/O queues, queue depth, SGL threshold, timeouts, retries, polling
 * and the request-mapping path.
 */
export interface NvmeDevOptions {
  /** I/O queue pairs to ask for (Set Features, Number of Queues). Default 1. */
  ioQueues?: number;
  /** Entries per I/O queue (`io_queue_depth`), capped by CAP.MQES + 1 and 4096. Default 1024. */
  ioQueueDepth?: number;
  /** `sgl_threshold` in bytes: average segment size from which SGLs are used; 0 disables SGLs. Default 32 KiB. */
  sglThreshold?: number;
  /** Use SGLs whenever the controller supports them (`SGL_FORCED`, as for passthrough commands). Default false. */
  forceSgl?: boolean;
  /** blk-mq timeouts in simulated ns. Defaults 30 s (I/O) and 60 s (admin). */
  ioTimeoutNs?: number;
  adminTimeoutNs?: number;
  /** `nvme_max_retries`. Default 5. */
  maxRetries?: number;
  /** CSTS polling interval while waiting for RDY (`nvme_wait_ready` sleeps between reads). Default 10 us. */
  pollIntervalNs?: number;
  /**
   * 'iter' (default): the 6.17 path, `blk_rq_dma_map_iter_*` without a scatterlist. 'sg': the
   * legacy path for comparison: `blk_rq_map_sg` into a per-request `SgTable`, `dma_map_sgtable`,
   * then PRPs/SGLs built from the DMA segments (drivers/nvme/host/pci.c before 6.17).
   */
  mapping?: 'iter' | 'sg';
  /** Namespace the block device sits on. Default: the first active one. */
  nsid?: number;
}

/** Driver counters (per-I/O figures for the demo and the benchmarks). */
export interface NvmeHostStats {
  /** Requests accepted by `queueRq` (retries and requeues included). */
  submitted: number;
  /** Requests ended through `end_io`, by outcome. */
  completedOk: number;
  completedError: number;
  /** `queueRq` answered BLK_STS_RESOURCE (no tag, no pool descriptor, map failure). */
  resource: number;
  /** Requests requeued (controller reset, retryable status). */
  requeued: number;
  retries: number;
  timeouts: number;
  aborts: number;
  resets: number;
  /** Completion entries whose command id matched nothing in flight (ignored). */
  spuriousCompletions: number;
  interrupts: number;
  sqDoorbells: number;
  cqDoorbells: number;
  adminCommands: number;
  /** Mapping paths taken. */
  singleSegment: number;
  iovaCoalesced: number;
  prpCommands: number;
  sglCommands: number;
  legacySg: number;
  /** Descriptor pages allocated: 256-byte (small pool) and 4096-byte (large pool). */
  smallDescriptors: number;
  largeDescriptors: number;
  /** PRP list entries and SGL data descriptors written to descriptor pages. */
  prpListEntries: number;
  sglListDescriptors: number;
  /** Per-segment DMA vectors recorded for unmap (`dma_vecs`). */
  dmaVecs: number;
  /** Metadata bytes the legacy path used per request, summed (scatterlist entries). */
  sgMetadataBytes: number;
  /** Physical segments of the requests that went through the mapper (not the fast path), summed. */
  physSegments: number;
  /** DMA segments the mapper handed to the driver for them (1 per request when IOVA-coalesced), summed. */
  dmaSegments: number;
}

const DNR = NvmeStatus.DNR;
/** `shutdown_timeout` module parameter default (5 s). */
const NVME_SHUTDOWN_TIMEOUT_NS = 5e9;
/** Set on an iod mapped through the legacy sgtable path (model flag, not in the kernel). */
const IOD_LEGACY_SG = 1 << 8;
/** `sizeof(struct scatterlist)` on 64-bit with CONFIG_NEED_SG_DMA_LENGTH: page_link, offset, length, dma_address, dma_length (+ flags). */
const SCATTERLIST_ENTRY_BYTES = 32;
const NVME_CMD_SGL_METABUF = 1 << 6; // PSDT 01b: SGL for data, MPTR a contiguous buffer
const CSTS_CFS = 1 << 1;
/** BLK_MQ_RESOURCE_DELAY (3 ms): how long blk-mq waits before re-running a queue after RESOURCE. */
const BLK_MQ_RESOURCE_DELAY_NS = 3_000_000;
/** Model bound on RESOURCE re-dispatches of one requeued request (blk-mq would retry forever). */
const MAX_RESOURCE_REDISPATCH = 64;

/** `nvme_error_status`: an NVMe status to the block layer's status. */
export function nvmeErrorStatus(status: number): BlkStatus {
  switch (nvmeStatusCode(status)) {
    case NvmeStatus.SUCCESS:
      return BlkStatus.OK;
    case NvmeStatus.CAP_EXCEEDED:
      return BlkStatus.NOSPC;
    case NvmeStatus.LBA_RANGE:
    case NvmeStatus.NS_NOT_READY:
      return BlkStatus.TARGET;
    case NvmeStatus.INVALID_OPCODE:
    case NvmeStatus.INVALID_FIELD:
    case NvmeStatus.INVALID_NS:
      return BlkStatus.NOTSUPP;
    case NvmeStatus.DATA_XFER_ERROR:
    default:
      return BlkStatus.IOERR;
  }
}

/**
 * An NVMe controller driven through its BAR: the equivalent of `struct nvme_dev` plus the blk-mq
 * glue. Requests come from the block layer (`BlkRequest`) and are mapped through the
 * `BlkRqDmaMapper` contract given to the constructor (the kernel's blk-mq-dma), so this package
 * depends on dma-core only. Completed requests end through `req.endIo(req, status)`.
 *
 * `queueRq` returns BLK_STS_OK when the driver owns the request (it then ends exactly once, after a
 * reset too); any other status means the request was not taken (BLK_STS_RESOURCE: try again when a
 * request completes).
 */
export class NvmeDev {
  readonly machine: Machine;
  readonly device: Device;
  readonly bar: NvmeBar;
  readonly blk: BlkRqDmaMapper;
  readonly stats: NvmeHostStats = {
    submitted: 0,
    completedOk: 0,
    completedError: 0,
    resource: 0,
    requeued: 0,
    retries: 0,
    timeouts: 0,
    aborts: 0,
    resets: 0,
    spuriousCompletions: 0,
    interrupts: 0,
    sqDoorbells: 0,
    cqDoorbells: 0,
    adminCommands: 0,
    singleSegment: 0,
    iovaCoalesced: 0,
    prpCommands: 0,
    sglCommands: 0,
    legacySg: 0,
    smallDescriptors: 0,
    largeDescriptors: 0,
    prpListEntries: 0,
    sglListDescriptors: 0,
    dmaVecs: 0,
    sgMetadataBytes: 0,
    physSegments: 0,
    dmaSegments: 0,
  };
  /** Kernel log lines (dev_warn, dev_err) the driver printed. */
  readonly log: string[] = [];
  /** Namespaces found by Identify. */
  namespaces: NvmeNsInfo[] = [];
  /** Why the controller is dead (empty while it is not). */
  lastError = '';

  #state: NvmeCtrlState = 'new';
  readonly #opts: Required<Omit<NvmeDevOptions, 'nsid'>> & { nsid: number };
  #cap = 0;
  #dstrd = 0;
  #ctrlTimeoutNs = 0;
  #ctrlSgls = false;
  #mdts = 0;
  #maxHwSectors = NVME_MAX_BYTES >> SECTOR_SHIFT;
  #abortLimit = 1;
  #abortsOutstanding = 0;
  #ns: NvmeNsInfo | null = null;
  #adminq: NvmeQueue | null = null;
  /** I/O queues by qid (index 0 unused). */
  readonly #queues: (NvmeQueue | undefined)[] = [];
  #nrIoQueues = 0;
  #nextQueue = 0;
  #adminBuf: DmaCoherentBuffer | null = null;
  #poolSmall: DmaPool | null = null;
  #poolLarge: DmaPool | null = null;
  #unregisterIrq: (() => void) | null = null;
  #inflight = 0;
  #timeoutTimer: SimTimer | null = null;
  readonly #timeoutFn = (): void => {
    this.#timeoutTimer = null;
    this.#checkTimeouts();
  };
  /** blk-mq requeue list: requests waiting for the queues to run again. */
  readonly #requeue: BlkRequest[] = [];
  readonly #retriesOf = new WeakMap<BlkRequest, number>();
  readonly #redispatchOf = new WeakMap<BlkRequest, number>();
  #kickTimer: SimTimer | null = null;
  readonly #kickFn = (): void => {
    this.#kickTimer = null;
    this.#runRequeue();
  };
  #inIrq = false;

  // Scratch (no allocation on the I/O path).
  readonly #listBuf = new Uint8Array(NVME_CTRL_PAGE_SIZE);
  readonly #listDv = new DataView(this.#listBuf.buffer);
  readonly #bv: PhysVec = { paddr: 0, len: 0 };

  constructor(machine: Machine, device: Device, bar: NvmeBar, blk: BlkRqDmaMapper, opts: NvmeDevOptions = {}) {
    this.machine = machine;
    this.device = device;
    this.bar = bar;
    this.blk = blk;
    const o = {
      ioQueues: opts.ioQueues ?? 1,
      ioQueueDepth: opts.ioQueueDepth ?? NVME_IO_QUEUE_DEPTH,
      sglThreshold: opts.sglThreshold ?? NVME_DEFAULT_SGL_THRESHOLD,
      forceSgl: opts.forceSgl ?? false,
      ioTimeoutNs: opts.ioTimeoutNs ?? NVME_IO_TIMEOUT_NS,
      adminTimeoutNs: opts.adminTimeoutNs ?? NVME_ADMIN_TIMEOUT_NS,
      maxRetries: opts.maxRetries ?? NVME_MAX_RETRIES,
      pollIntervalNs: opts.pollIntervalNs ?? 10_000,
      mapping: opts.mapping ?? 'iter',
      nsid: opts.nsid ?? 0,
    };
    const int = (name: string, v: number, min: number, max: number): void => {
      if (!Number.isSafeInteger(v) || v < min || v > max) throw new RangeError(`NvmeDev: ${name} must be an integer in ${min}..${max}, got ${v}`);
    };
    int('ioQueues', o.ioQueues, 1, 65535);
    int('ioQueueDepth', o.ioQueueDepth, 2, 65536);
    int('sglThreshold', o.sglThreshold, 0, 2 ** 32);
    int('maxRetries', o.maxRetries, 0, 1000);
    int('nsid', o.nsid, 0, 0xfffffffe);
    for (const k of ['ioTimeoutNs', 'adminTimeoutNs', 'pollIntervalNs'] as const) {
      if (!Number.isFinite(o[k]) || o[k] <= 0) throw new RangeError(`NvmeDev: ${k} must be > 0, got ${o[k]}`);
    }
    const mapping: string = o.mapping; // options may come from untyped input (CLI, JSON)
    if (mapping !== 'iter' && mapping !== 'sg') throw new RangeError(`NvmeDev: mapping must be 'iter' or 'sg'`);
    this.#opts = o;
  }

  // ---- public surface ---------------------------------------------------------------------------

  /**
   * Controller state. kernel: enum nvme_ctrl_state (NVME_CTRL_NEW, _RESETTING, _CONNECTING, _LIVE,
   * _DELETING, _DEAD) in drivers/nvme/host/nvme.h.
   */
  get state(): NvmeCtrlState {
    return this.#state;
  }

  /** Requests the controller owns right now (submitted, not completed). */
  get inflight(): number {
    return this.#inflight;
  }

  /** Requests parked on the requeue list (during a reset). */
  get requeued(): number {
    return this.#requeue.length;
  }

  /** I/O queue pairs in use. */
  get ioQueueCount(): number {
    return this.#nrIoQueues;
  }

  /** Entries of each I/O queue (tags = depth - 1). */
  get ioQueueDepth(): number {
    return this.#queues[1]?.depth ?? 0;
  }

  /** The namespace the block device uses. */
  get ns(): NvmeNsInfo | null {
    return this.#ns;
  }

  /** The descriptor pools ("nvme descriptor small" 256 B, "nvme descriptor page" 4 KiB). */
  get pools(): { small: DmaPool | null; large: DmaPool | null } {
    return { small: this.#poolSmall, large: this.#poolLarge };
  }

  /** Controller supports SGLs for I/O (Identify Controller SGLS). */
  get sglSupported(): boolean {
    return this.#ctrlSgls;
  }

  /**
   * The queue limits the block layer must build requests under (`nvme_set_ctrl_limits` +
   * `nvme_update_disk_info`): PRPs need every interior segment boundary on a controller page.
   */
  queueLimits(): QueueLimits {
    const lbs = this.#ns?.lbaSize ?? 512;
    return {
      logicalBlockSize: lbs,
      maxHwSectors: this.#maxHwSectors,
      maxSectors: this.#maxHwSectors,
      maxSegments: NVME_MAX_SEGS,
      maxSegmentSize: 0xffff_ffff,
      segBoundaryMask: 0xffff_ffff,
      virtBoundaryMask: NVME_CTRL_PAGE_SIZE - 1,
      dmaAlignment: 3,
      maxIntegritySegments: 0,
      integrityTupleSize: 0,
      integrityIntervalExp: Math.log2(lbs),
    };
  }

  /**
   * `nvme_probe`: set the DMA masks, create the descriptor pools, then run the reset work
   * (disable, admin queue, enable, Identify, Set Features, Create I/O CQ/SQ). Asynchronous on the
   * simulation clock; `probe()` runs the clock until the controller is live or dead.
   */
  startProbe(): number {
    if (this.#state !== 'new') return -Errno.EBUSY;
    const dev = this.device;
    // nvme_pci_enable / nvme_probe
    if (dmaSetMaskAndCoherent(dev, 64) !== 0) return -Errno.ENODEV;
    dmaSetMinAlignMask(dev, NVME_CTRL_PAGE_SIZE - 1);
    dmaSetMaxSegSize(dev, 0xffff_ffff);
    // nvme_setup_descriptor_pools
    this.#poolLarge = dmaPoolCreate('nvme descriptor page', dev, NVME_CTRL_PAGE_SIZE, NVME_CTRL_PAGE_SIZE, 0);
    this.#poolSmall = dmaPoolCreate('nvme descriptor small', dev, NVME_SMALL_POOL_SIZE, NVME_SMALL_POOL_SIZE, 0);
    if (this.#poolLarge === null || this.#poolSmall === null) return -Errno.ENOMEM;
    this.#unregisterIrq = this.bar.onInterrupt((v) => {
      this.#irq(v);
    });
    this.#state = 'connecting';
    this.#resetWork();
    return 0;
  }

  /** Probe and run the simulation clock until the controller is live (0) or failed (-errno). */
  probe(): number {
    const r = this.startProbe();
    if (r !== 0) return r;
    return this.waitLive();
  }

  /** Run the clock until a probe or reset finishes: 0 when live, -ENODEV when the controller died. */
  waitLive(): number {
    const limit = this.machine.clock.now() + 4 * (this.#ctrlTimeoutNs + this.#opts.adminTimeoutNs);
    while ((this.#state === 'connecting' || this.#state === 'resetting') && this.machine.clock.now() < limit) {
      this.machine.advance(this.#opts.pollIntervalNs);
    }
    return this.#state === 'live' ? 0 : -Errno.ENODEV;
  }

  /**
   * `nvme_reset_ctrl`: schedule the reset work. In-flight requests are cancelled with "host
   * aborted" and requeued; they run again once the queues are re-created. -EBUSY unless live.
   */
  resetCtrl(): number {
    if (this.#state !== 'live') return -Errno.EBUSY;
    this.#state = 'resetting';
    this.stats.resets++;
    this.machine.schedule(0, () => {
      this.#devDisable(false);
      this.#state = 'connecting';
      this.#resetWork();
    });
    return 0;
  }

  /**
   * `nvme_remove`: shut the controller down, fail what is still queued, free queues and pools.
   * Run it outside a completion callback.
   */
  remove(): void {
    if (this.#state === 'deleting') return;
    const wasLive = this.#state !== 'new' && this.#state !== 'dead';
    this.#state = 'deleting';
    if (wasLive || this.#adminq !== null) this.#devDisable(true);
    for (const req of this.#requeue.splice(0)) this.#endRequest(req, BlkStatus.IOERR);
    this.#kickTimer?.cancel();
    this.#kickTimer = null;
    this.#timeoutTimer?.cancel();
    this.#timeoutTimer = null;
    const dev = this.device;
    for (const q of [this.#adminq, ...this.#queues]) {
      if (q === null || q === undefined) continue;
      dmaFreeCoherent(dev, q.sq.size, q.sq.cpuAddr, q.sq.dmaAddr);
      dmaFreeCoherent(dev, q.cq.size, q.cq.cpuAddr, q.cq.dmaAddr);
    }
    this.#adminq = null;
    this.#queues.length = 0;
    this.#nrIoQueues = 0;
    if (this.#adminBuf !== null) dmaFreeCoherent(dev, this.#adminBuf.size, this.#adminBuf.cpuAddr, this.#adminBuf.dmaAddr);
    this.#adminBuf = null;
    dmaPoolDestroy(this.#poolSmall);
    dmaPoolDestroy(this.#poolLarge);
    this.#poolSmall = null;
    this.#poolLarge = null;
    this.#unregisterIrq?.();
    this.#unregisterIrq = null;
  }

  /**
   * `nvme_queue_rq` for hardware queue `qid` (1-based; default round robin). `last` false defers
   * the SQ doorbell to a later request or `commitRqs` (`bd->last`).
   */
  queueRq(req: BlkRequest, qid = 0, last = true): BlkStatus {
    const st = this.#state;
    if (st === 'resetting' || st === 'connecting') {
      // Queues are quiesced: blk-mq keeps the request until they run again.
      this.#requeue.push(req);
      this.stats.requeued++;
      return BlkStatus.OK;
    }
    if (st !== 'live') return BlkStatus.IOERR;
    let q: NvmeQueue | undefined;
    if (qid === 0) {
      this.#nextQueue = this.#nextQueue >= this.#nrIoQueues ? 1 : this.#nextQueue + 1;
      q = this.#queues[this.#nextQueue];
    } else q = Number.isInteger(qid) ? this.#queues[qid] : undefined;
    if (q === undefined || !q.enabled) return BlkStatus.INVAL;
    const iod = q.getTag();
    if (iod === null) {
      this.stats.resource++;
      return BlkStatus.RESOURCE;
    }
    iod.reset();
    let s = this.#setupCmd(req, iod);
    if (s === BlkStatus.OK && this.#hasData(req)) s = this.#mapData(q, iod, req);
    if (s !== BlkStatus.OK) {
      q.putTag(iod);
      if (s === BlkStatus.RESOURCE) this.stats.resource++;
      return s;
    }
    iod.req = req;
    iod.retries = this.#retriesOf.get(req) ?? 0;
    req.pdu = iod;
    this.#start(q, iod, this.#opts.ioTimeoutNs);
    this.stats.submitted++;
    if (last && q.writeSqDb(this.bar)) this.stats.sqDoorbells++;
    return BlkStatus.OK;
  }

  /** `nvme_commit_rqs`: ring the doorbells deferred by `last = false`. */
  commitRqs(): void {
    for (const q of this.#queues) if (q?.writeSqDb(this.bar) === true) this.stats.sqDoorbells++;
  }

  // ---- bring-up (nvme_reset_work) -----------------------------------------------------------

  #fail(why: string): void {
    this.lastError = why;
    this.#log(`Removing after probe failure status: ${why}`);
    this.#state = 'dead';
    // Nothing will run these again: fail them (blk_mq_end_request with an error).
    for (const req of this.#requeue.splice(0)) this.#endRequest(req, BlkStatus.IOERR);
  }

  #resetWork(): void {
    const bar = this.bar;
    this.#cap = bar.mmioRead64(NVME_REG_CAP);
    this.#dstrd = regGet(this.#cap, CAP.DSTRD);
    // NVME_CAP_TIMEOUT: 500 ms units.
    this.#ctrlTimeoutNs = (regGet(this.#cap, CAP.TO) + 1) * 500e6;
    // nvme_pci_configure_admin_queue: disable first (nvme_disable_ctrl, shutdown = false).
    const cc = bar.mmioRead32(NVME_REG_CC);
    if ((cc & 1) !== 0) bar.mmioWrite32(NVME_REG_CC, cc & ~1);
    this.#waitReady(false, () => {
      this.#configureAdminQueue();
    });
  }

  /** `nvme_wait_ready`: poll CSTS.RDY until it equals `rdy`, CAP.TO bounded. */
  #waitReady(rdy: boolean, then: () => void): void {
    const deadline = this.machine.clock.now() + this.#ctrlTimeoutNs;
    const poll = (): void => {
      if (this.#state !== 'connecting') return;
      const csts = this.bar.mmioRead32(NVME_REG_CSTS);
      if (csts === 0xffff_ffff) {
        this.#fail('controller gone (CSTS reads all ones)');
        return;
      }
      if (rdy && (csts & CSTS_CFS) !== 0) {
        this.#fail('controller fatal status during enable');
        return;
      }
      if ((regGet(csts, CSTS.RDY) === 1) === rdy) {
        then();
        return;
      }
      if (this.machine.clock.now() >= deadline) {
        this.#fail(`Device not ready; aborting ${rdy ? 'initialisation' : 'reset'}, CSTS=0x${csts.toString(16)}`);
        return;
      }
      this.machine.schedule(this.#opts.pollIntervalNs, poll);
    };
    poll();
  }

  #allocQueue(qid: number, depth: number): NvmeQueue | null {
    const dev = this.device;
    const sq = dmaAllocCoherent(dev, depth << NVME_SQES_LOG2);
    if (sq === null) return null;
    const cq = dmaAllocCoherent(dev, depth << NVME_CQES_LOG2);
    if (cq === null) {
      dmaFreeCoherent(dev, sq.size, sq.cpuAddr, sq.dmaAddr);
      return null;
    }
    return new NvmeQueue(qid, depth, sq, cq, qid, this.#dstrd);
  }

  #configureAdminQueue(): void {
    const m = this.machine;
    const bar = this.bar;
    this.#adminq ??= this.#allocQueue(0, NVME_AQ_DEPTH);
    this.#adminBuf ??= dmaAllocCoherent(this.device, NVME_IDENTIFY_DATA_SIZE);
    const aq = this.#adminq;
    if (aq === null || this.#adminBuf === null) {
      this.#fail('no memory for the admin queue');
      return;
    }
    aq.init(m);
    bar.mmioWrite32(NVME_REG_AQA, regSet(regSet(0, AQA.ASQS, aq.depth - 1), AQA.ACQS, aq.depth - 1));
    bar.mmioWrite64(NVME_REG_ASQ, aq.sq.dmaAddr);
    bar.mmioWrite64(NVME_REG_ACQ, aq.cq.dmaAddr);
    // nvme_enable_ctrl: CSS NVM, MPS = controller page, round robin, IOSQES 6, IOCQES 4; then EN.
    let cc = regSet(0, CC.MPS, 0);
    cc = regSet(cc, CC.IOSQES, NVME_SQES_LOG2);
    cc = regSet(cc, CC.IOCQES, NVME_CQES_LOG2);
    bar.mmioWrite32(NVME_REG_CC, cc);
    bar.mmioWrite32(NVME_REG_CC, regSet(cc, CC.EN, 1));
    this.#waitReady(true, () => {
      aq.enabled = true;
      this.#identifyCtrl();
    });
  }

  /** Submit an admin command built by `fill`; `done` gets the status and DW0. 0 or -errno. */
  #adminCmd(fill: (dv: DataView) => void, done: NvmeAdminDone): number {
    const aq = this.#adminq;
    if (aq?.enabled !== true) return -Errno.ENODEV;
    const iod = aq.getTag();
    if (iod === null) return -Errno.EBUSY;
    iod.reset();
    fill(iod.cmdDv);
    iod.adminDone = done;
    this.#start(aq, iod, this.#opts.adminTimeoutNs);
    this.stats.adminCommands++;
    if (aq.writeSqDb(this.bar)) this.stats.sqDoorbells++;
    return 0;
  }

  /** An admin step of the bring-up: a failed submission or a bad status fails the probe. */
  #adminStep(what: string, fill: (dv: DataView) => void, then: (result: number) => void): void {
    const r = this.#adminCmd(fill, (status, result) => {
      if (this.#state !== 'connecting') return;
      if (status !== 0) {
        this.#fail(`${what} failed: ${nvmeStatusName(status)}`);
        return;
      }
      then(result);
    });
    if (r !== 0) this.#fail(`${what}: cannot submit (${r})`);
  }

  #adminBufDv(): DataView {
    const buf = this.#adminBuf;
    const out = new Uint8Array(NVME_IDENTIFY_DATA_SIZE);
    if (buf !== null) this.machine.memory.readInto(coherentCpu(buf, 0), out, 0, NVME_IDENTIFY_DATA_SIZE);
    return new DataView(out.buffer);
  }

  #identify(dv: DataView, cns: number, nsid: number): void {
    dv.setUint8(SQE.OPC, NvmeAdminOpcode.IDENTIFY);
    dv.setUint32(SQE.NSID, nsid, true);
    writeLe64(dv, SQE.PRP1, this.#adminBuf?.dmaAddr ?? 0);
    dv.setUint32(SQE.CDW10, cns, true);
  }

  #identifyCtrl(): void {
    this.#adminStep(
      'Identify Controller',
      (dv) => {
        this.#identify(dv, NvmeIdCns.CTRL, 0);
      },
      () => {
        const id = this.#adminBufDv();
        this.#mdts = id.getUint8(77);
        // nvme_init_ctrl_finish: max_hw_sectors from MDTS (units of CAP.MPSMIN pages), capped by NVME_MAX_BYTES.
        const mpsmin = 4096 << regGet(this.#cap, CAP.MPSMIN);
        const mdtsBytes = this.#mdts === 0 ? NVME_MAX_BYTES : Math.min(NVME_MAX_BYTES, 2 ** this.#mdts * mpsmin);
        this.#maxHwSectors = mdtsBytes >> SECTOR_SHIFT;
        this.#abortLimit = id.getUint8(258) + 1;
        this.#ctrlSgls = (id.getUint32(536, true) & NVME_CTRL_SGLS_SUPPORTED) !== 0;
        this.#identifyNsList();
      },
    );
  }

  #identifyNsList(): void {
    this.#adminStep(
      'Identify Active Namespace List',
      (dv) => {
        this.#identify(dv, NvmeIdCns.NS_ACTIVE_LIST, 0);
      },
      () => {
        const id = this.#adminBufDv();
        const nsids: number[] = [];
        for (let i = 0; i < 1024; i++) {
          const n = id.getUint32(i * 4, true);
          if (n === 0) break;
          nsids.push(n);
        }
        this.namespaces = [];
        this.#identifyNs(nsids, 0);
      },
    );
  }

  #identifyNs(nsids: readonly number[], i: number): void {
    const nsid = nsids[i];
    if (nsid === undefined) {
      const want = this.#opts.nsid;
      this.#ns = (want === 0 ? this.namespaces[0] : this.namespaces.find((n) => n.nsid === want)) ?? null;
      if (this.#ns === null) {
        this.#fail(want === 0 ? 'no active namespace' : `namespace ${want} not found`);
        return;
      }
      this.#setQueueCount();
      return;
    }
    this.#adminStep(
      `Identify Namespace ${nsid}`,
      (dv) => {
        this.#identify(dv, NvmeIdCns.NS, nsid);
      },
      () => {
        const id = this.#adminBufDv();
        const nsze = readLe64(id, 0);
        const flbas = id.getUint8(26) & 0xf;
        const lbads = (id.getUint32(128 + flbas * 4, true) >>> 16) & 0xff;
        if (nsze > 0 && lbads >= 9 && lbads <= 12) {
          this.namespaces.push({ nsid, capacityLbas: nsze, lbaShift: lbads, lbaSize: 1 << lbads });
        } else this.#log(`namespace ${nsid}: unsupported format (lbads ${lbads}), ignored`);
        this.#identifyNs(nsids, i + 1);
      },
    );
  }

  /** `nvme_set_queue_count`. */
  #setQueueCount(): void {
    const want = this.#opts.ioQueues;
    const q = ((want - 1) | ((want - 1) << 16)) >>> 0;
    this.#adminStep(
      'Set Features (Number of Queues)',
      (dv) => {
        dv.setUint8(SQE.OPC, NvmeAdminOpcode.SET_FEATURES);
        dv.setUint32(SQE.CDW10, NvmeFeat.NUM_QUEUES, true);
        dv.setUint32(SQE.CDW11, q, true);
      },
      (result) => {
        const nr = Math.min(want, (result & 0xffff) + 1, (result >>> 16) + 1);
        this.#nrIoQueues = nr;
        this.#createIoQueues(1);
      },
    );
  }

  /** `nvme_create_io_queues` / `nvme_create_queue`: CQ first, then the SQ bound to it. */
  #createIoQueues(qid: number): void {
    if (qid > this.#nrIoQueues) {
      this.#state = 'live';
      this.#runRequeue();
      return;
    }
    const mqes = regGet(this.#cap, CAP.MQES) + 1;
    const depth = Math.min(this.#opts.ioQueueDepth, mqes, NVME_CID_TAG_MASK + 1);
    let q = this.#queues[qid];
    if (q !== undefined && q.depth !== depth) {
      const dev = this.device;
      dmaFreeCoherent(dev, q.sq.size, q.sq.cpuAddr, q.sq.dmaAddr);
      dmaFreeCoherent(dev, q.cq.size, q.cq.cpuAddr, q.cq.dmaAddr);
      q = undefined;
    }
    q ??= this.#allocQueue(qid, depth) ?? undefined;
    if (q === undefined) {
      this.#fail(`no memory for I/O queue ${qid}`);
      return;
    }
    this.#queues[qid] = q;
    const nq = q;
    nq.init(this.machine);
    this.#adminStep(
      `Create I/O CQ ${qid}`,
      (dv) => {
        dv.setUint8(SQE.OPC, NvmeAdminOpcode.CREATE_CQ);
        writeLe64(dv, SQE.PRP1, nq.cq.dmaAddr);
        dv.setUint32(SQE.CDW10, (((depth - 1) << 16) | qid) >>> 0, true);
        dv.setUint32(SQE.CDW11, ((nq.cqVector << 16) | NVME_QUEUE_PHYS_CONTIG | NVME_CQ_IRQ_ENABLED) >>> 0, true);
      },
      () => {
        this.#adminStep(
          `Create I/O SQ ${qid}`,
          (dv) => {
            dv.setUint8(SQE.OPC, NvmeAdminOpcode.CREATE_SQ);
            writeLe64(dv, SQE.PRP1, nq.sq.dmaAddr);
            dv.setUint32(SQE.CDW10, (((depth - 1) << 16) | qid) >>> 0, true);
            dv.setUint32(SQE.CDW11, ((qid << 16) | NVME_QUEUE_PHYS_CONTIG) >>> 0, true);
          },
          () => {
            nq.enabled = true;
            this.#createIoQueues(qid + 1);
          },
        );
      },
    );
  }

  // ---- teardown (nvme_dev_disable) ------------------------------------------------------------

  /**
   * `nvme_dev_disable`: quiesce, disable the controller (which drops its queues), reap the
   * completions already posted, then cancel every request still in flight with "host aborted"
   * (`nvme_cancel_request`): they are unmapped and requeued (or failed when the device goes away).
   */
  #devDisable(shutdown: boolean): void {
    const bar = this.bar;
    const queues = [this.#adminq, ...this.#queues];
    for (const q of queues) if (q) q.enabled = false;
    const cc = bar.mmioRead32(NVME_REG_CC);
    if (shutdown && (cc & 1) !== 0) {
      // nvme_disable_ctrl(ctrl, shutdown = true): normal shutdown, then wait for CSTS.SHST
      // complete (shutdown_timeout, 5 s by default). In-flight commands finish meanwhile.
      bar.mmioWrite32(NVME_REG_CC, regSet(cc, CC.SHN, NVME_CC_SHN_NORMAL));
      const deadline = this.machine.clock.now() + NVME_SHUTDOWN_TIMEOUT_NS;
      while (regGet(bar.mmioRead32(NVME_REG_CSTS), CSTS.SHST) !== NVME_CSTS_SHST_CMPLT && this.machine.clock.now() < deadline) {
        this.machine.advance(this.#opts.pollIntervalNs);
      }
      if (regGet(bar.mmioRead32(NVME_REG_CSTS), CSTS.SHST) !== NVME_CSTS_SHST_CMPLT) this.#log('Device shutdown incomplete; abort shutdown');
    }
    // Model: always clear CC.EN too, so the controller drops its queues before their memory is freed.
    bar.mmioWrite32(NVME_REG_CC, bar.mmioRead32(NVME_REG_CC) & ~1);
    // nvme_reap_pending_cqes
    for (const q of queues) if (q) this.#processCq(q);
    // nvme_cancel_tagset / nvme_cancel_admin_tagset
    for (const q of queues) {
      if (!q) continue;
      for (const iod of q.iods) {
        if (!iod.inflight) continue;
        this.#finishIod(q, iod, NVME_SC_HOST_ABORTED_CMD, 0);
      }
    }
    this.#abortsOutstanding = 0;
  }

  // ---- submission -------------------------------------------------------------------------------

  #start(q: NvmeQueue, iod: NvmeIod, timeoutNs: number): void {
    iod.genctr = (iod.genctr + 1) & NVME_CID_GENCTR_MASK;
    iod.cmdDv.setUint16(SQE.CID, (iod.genctr << NVME_CID_TAG_BITS) | iod.tag, true);
    iod.inflight = true;
    iod.status = 0;
    iod.deadline = this.machine.clock.now() + timeoutNs;
    const trace = this.machine.trace;
    if (trace.enabled) {
      // kernel: drivers/nvme/host/trace.h (nvme_setup_cmd)
      const dv = iod.cmdDv;
      trace.emit('nvme:nvme_setup_cmd', this.device.name, {
        qid: q.qid,
        cid: dv.getUint16(SQE.CID, true),
        nsid: dv.getUint32(SQE.NSID, true),
        flags: iod.cmd[SQE.FLAGS] ?? 0,
        opcode: iod.cmd[SQE.OPC] ?? 0,
        cdw10: dv.getUint32(SQE.CDW10, true),
        prp1: readLe64(dv, SQE.PRP1),
        prp2: readLe64(dv, SQE.PRP2),
      });
    }
    this.#inflight++;
    if (this.#timeoutTimer === null) this.#timeoutTimer = this.machine.schedule(timeoutNs, this.#timeoutFn);
    q.copyCmd(this.machine, iod.cmd);
  }

  #hasData(req: BlkRequest): boolean {
    return (req.op === ReqOp.READ || req.op === ReqOp.WRITE) && blkRqNrPhysSegments(req) > 0;
  }

  /** `nvme_setup_cmd` for the operations this model supports (read, write, flush, write zeroes). */
  #setupCmd(req: BlkRequest, iod: NvmeIod): BlkStatus {
    const ns = this.#ns;
    if (ns === null) return BlkStatus.IOERR;
    const dv = iod.cmdDv;
    dv.setUint32(SQE.NSID, ns.nsid, true);
    const op = req.op;
    if (op === ReqOp.FLUSH) {
      dv.setUint8(SQE.OPC, NvmeOpcode.FLUSH);
      return BlkStatus.OK;
    }
    if (op !== ReqOp.READ && op !== ReqOp.WRITE && op !== ReqOp.WRITE_ZEROES) return BlkStatus.NOTSUPP;
    const len = req.dataLen;
    const lbs = ns.lbaSize;
    const spl = lbs >> SECTOR_SHIFT;
    // The block layer guarantees logical-block granularity; a request that breaks it is refused.
    if (!Number.isSafeInteger(len) || len <= 0 || len % lbs !== 0 || !Number.isSafeInteger(req.sector) || req.sector < 0 || req.sector % spl !== 0) {
      return BlkStatus.INVAL;
    }
    const nlb = len / lbs;
    if (nlb > 0x10000 || len > this.#maxHwSectors << SECTOR_SHIFT) return BlkStatus.IOERR;
    dv.setUint8(SQE.OPC, op === ReqOp.READ ? NvmeOpcode.READ : op === ReqOp.WRITE ? NvmeOpcode.WRITE : NvmeOpcode.WRITE_ZEROES);
    writeLe64(dv, SQE.CDW10, req.sector / spl);
    dv.setUint32(SQE.CDW12, ((nlb - 1) | ((req.cmdFlags & REQ_FUA) !== 0 ? 1 << 30 : 0)) >>> 0, true);
    return BlkStatus.OK;
  }

  /** `nvme_pci_use_sgls`. */
  #useSgls(q: NvmeQueue): number {
    if (q.qid === 0 || !this.#ctrlSgls) return SGL_UNSUPPORTED;
    return this.#opts.forceSgl ? SGL_FORCED : SGL_SUPPORTED;
  }

  /** `nvme_map_data`. */
  #mapData(q: NvmeQueue, iod: NvmeIod, req: BlkRequest): BlkStatus {
    const useSgl = this.#useSgls(q);
    const nseg = blkRqNrPhysSegments(req);
    if (nseg === 1) {
      const st = this.#setupDataSimple(iod, req, useSgl);
      if (st !== BlkStatus.AGAIN) return st;
    }
    this.stats.physSegments += nseg;
    if (this.#opts.mapping === 'sg') return this.#mapDataSg(iod, req, useSgl);
    const it = iod.iter;
    if (!this.blk.blkRqDmaMapIterStart(req, this.device, iod.dmaState, it)) return it.status === BlkStatus.OK ? BlkStatus.IOERR : it.status;
    iod.mappedLen = it.len;
    this.stats.dmaSegments++;
    const coalesced = this.blk.blkRqDmaMapCoalesce(iod.dmaState);
    if (coalesced) this.stats.iovaCoalesced++;
    if (this.#wantSgl(useSgl, req, coalesced ? 1 : nseg)) return this.#setupDataSgl(iod, req, coalesced);
    return this.#setupDataPrp(iod, req);
  }

  #wantSgl(useSgl: number, req: BlkRequest, nseg: number): boolean {
    if (useSgl === SGL_FORCED) return true;
    const thr = this.#opts.sglThreshold;
    // nvme_pci_avg_seg_size
    return useSgl === SGL_SUPPORTED && thr !== 0 && Math.ceil(blkRqPayloadBytes(req) / nseg) >= thr;
  }

  /** `nvme_pci_setup_data_simple`: one segment mapped with `dma_map_bvec`, no iterator, no list. */
  #setupDataSimple(iod: NvmeIod, req: BlkRequest, useSgl: number): BlkStatus {
    const bv = this.#bv;
    if (!this.blk.reqBvec(req, bv)) return BlkStatus.AGAIN;
    const off = bv.paddr % NVME_CTRL_PAGE_SIZE;
    const prpPossible = off + bv.len <= NVME_CTRL_PAGE_SIZE * 2;
    if (useSgl === SGL_UNSUPPORTED && !prpPossible) return BlkStatus.AGAIN;
    if (isPciP2pdmaPage(this.device, bv.paddr)) return BlkStatus.AGAIN;
    const dev = this.device;
    const dma = dmaMapPhys(dev, bv.paddr, bv.len, rqDmaDir(req), 0);
    if (dmaMappingError(dev, dma) !== 0) return BlkStatus.RESOURCE;
    iod.totalLen = bv.len;
    iod.flags |= IOD_SINGLE_SEGMENT;
    this.stats.singleSegment++;
    const dv = iod.cmdDv;
    if (useSgl === SGL_FORCED || !prpPossible) {
      iod.cmd[SQE.FLAGS] = NVME_CMD_SGL_METABUF;
      sglSetData(dv, SQE.DPTR, dma, bv.len);
      this.stats.sglCommands++;
    } else {
      const first = NVME_CTRL_PAGE_SIZE - (dma % NVME_CTRL_PAGE_SIZE);
      writeLe64(dv, SQE.PRP1, dma);
      writeLe64(dv, SQE.PRP2, bv.len > first ? dma + first : 0);
      this.stats.prpCommands++;
    }
    return BlkStatus.OK;
  }

  /** The legacy path: `blk_rq_map_sg` + `dma_map_sgtable`, then the same PRP/SGL builders over the DMA segments. */
  #mapDataSg(iod: NvmeIod, req: BlkRequest, useSgl: number): BlkStatus {
    const nseg = blkRqNrPhysSegments(req);
    if (nseg > NVME_MAX_SEGS) return BlkStatus.IOERR;
    // The kernel allocated iod->sgt.sgl from a mempool per request; here one table per tag.
    let sgt = iod.sgt;
    if (sgt === null) {
      sgt = new SgTable(NVME_MAX_SEGS);
      iod.sgt = sgt;
    }
    sgt.origNents = 0;
    sgt.nents = 0;
    const n = this.blk.blkRqMapSg(req, sgt);
    if (n <= 0) return BlkStatus.IOERR;
    sgt.origNents = n;
    sgt.nents = n;
    const r = dmaMapSgtable(this.device, sgt, rqDmaDir(req), 0);
    if (r !== 0) return r === -Errno.ENOMEM ? BlkStatus.RESOURCE : r === -Errno.EREMOTEIO ? BlkStatus.TARGET : BlkStatus.IOERR;
    iod.flags |= IOD_LEGACY_SG;
    this.stats.legacySg++;
    this.stats.dmaSegments += sgt.nents;
    // Metadata the legacy path keeps per request: one scatterlist entry per segment.
    this.stats.sgMetadataBytes += n * SCATTERLIST_ENTRY_BYTES;
    const it = iod.iter;
    it.addr = sgt.dmaAddress[0] ?? 0;
    it.len = sgt.dmaLength[0] ?? 0;
    it.status = BlkStatus.OK;
    iod.sgIdx = 1;
    const coalesced = sgt.nents === 1;
    if (this.#wantSgl(useSgl, req, coalesced ? 1 : nseg)) return this.#setupDataSgl(iod, req, coalesced);
    return this.#setupDataPrp(iod, req);
  }

  /** Map the next segment: the block iterator, or the next DMA segment of the legacy sgtable. */
  #mapNext(req: BlkRequest, iod: NvmeIod): boolean {
    if ((iod.flags & IOD_LEGACY_SG) !== 0) {
      const sgt = iod.sgt;
      const it = iod.iter;
      if (sgt === null || iod.sgIdx >= sgt.nents) {
        it.status = BlkStatus.OK;
        return false;
      }
      it.addr = sgt.dmaAddress[iod.sgIdx] ?? 0;
      it.len = sgt.dmaLength[iod.sgIdx] ?? 0;
      iod.sgIdx++;
      return true;
    }
    if (!this.blk.blkRqDmaMapIterNext(req, this.device, iod.dmaState, iod.iter)) return false;
    iod.mappedLen += iod.iter.len;
    this.stats.dmaSegments++;
    return true;
  }

  /** `nvme_pci_prp_iter_next`: advance when the current segment is used up, recording it for unmap. */
  #prpIterNext(req: BlkRequest, iod: NvmeIod): boolean {
    const it = iod.iter;
    if (it.len !== 0) return true;
    if (!this.#mapNext(req, iod)) return false;
    const n = iod.nrDmaVecs;
    if (n >= 0) {
      if (n >= NVME_MAX_SEGS) {
        // More segments than dma_vecs holds: the request broke max_segments. Keep the mapping
        // recorded in the last slot impossible; fail (the caller unmaps what was recorded).
        it.status = BlkStatus.IOERR;
        return false;
      }
      iod.dmaVecAddr[n] = it.addr;
      iod.dmaVecLen[n] = it.len;
      iod.nrDmaVecs = n + 1;
      this.stats.dmaVecs++;
    }
    return true;
  }

  #descriptorAlloc(iod: NvmeIod, small: boolean): number {
    const pool = small ? this.#poolSmall : this.#poolLarge;
    if (pool === null || iod.nrDescriptors >= NVME_MAX_NR_DESCRIPTORS) return -1;
    const blk = dmaPoolAlloc(pool, 0);
    if (blk === null) return -1;
    iod.descriptors[iod.nrDescriptors] = blk.vaddr;
    iod.descriptorsPhys[iod.nrDescriptors] = blk.phys;
    iod.nrDescriptors++;
    if (small) this.stats.smallDescriptors++;
    else this.stats.largeDescriptors++;
    return blk.dma;
  }

  /**
   * `nvme_pci_setup_data_prp`. PRP1 may start anywhere in a page; every later entry is page
   * aligned. PRP2 is the second page when the rest fits one page, else a PRP list: small pool for
   * up to 32 entries, large pages otherwise, each full page's last slot chaining to the next.
   */
  #setupDataPrp(iod: NvmeIod, req: BlkRequest): BlkStatus {
    const it = iod.iter;
    const m = this.machine;
    const list = this.#listDv;
    let length = blkRqPayloadBytes(req);
    let status: BlkStatus = BlkStatus.OK;
    if ((iod.flags & IOD_LEGACY_SG) === 0 && !dmaUseIova(iod.dmaState) && dmaNeedUnmap(this.device)) {
      iod.dmaVecAddr[0] = it.addr;
      iod.dmaVecLen[0] = it.len;
      iod.nrDmaVecs = 1;
      this.stats.dmaVecs++;
    }
    const prp1 = it.addr;
    let prp2 = 0;
    let listPhys = 0;
    let i = 0;
    let prpLen = Math.min(length, NVME_CTRL_PAGE_SIZE - (it.addr % NVME_CTRL_PAGE_SIZE));
    iod.totalLen += prpLen;
    it.addr += prpLen;
    it.len -= prpLen;
    length -= prpLen;
    done: {
      if (length === 0) break done;
      if (!this.#prpIterNext(req, iod)) {
        status = it.status === BlkStatus.OK ? this.#badSgl(req) : it.status;
        break done;
      }
      // PRP2 may be a direct data pointer.
      if (length <= NVME_CTRL_PAGE_SIZE) {
        if (it.len < length) {
          status = this.#badSgl(req);
          break done;
        }
        prp2 = it.addr;
        iod.totalLen += length;
        break done;
      }
      const small = Math.ceil(length / NVME_CTRL_PAGE_SIZE) <= NVME_SMALL_POOL_PRPS;
      if (small) iod.flags |= IOD_SMALL_DESCRIPTOR;
      const dma = this.#descriptorAlloc(iod, small);
      if (dma < 0) {
        status = BlkStatus.RESOURCE;
        break done;
      }
      prp2 = dma;
      listPhys = iod.descriptorsPhys[0] ?? 0;
      for (;;) {
        writeLe64(list, i * 8, it.addr);
        i++;
        prpLen = Math.min(length, NVME_CTRL_PAGE_SIZE);
        if (it.len < prpLen) {
          // A segment that ends inside a controller page: virt_boundary was not honoured.
          status = this.#badSgl(req);
          break done;
        }
        iod.totalLen += prpLen;
        it.addr += prpLen;
        it.len -= prpLen;
        length -= prpLen;
        this.stats.prpListEntries++;
        if (length === 0) break;
        if (!this.#prpIterNext(req, iod)) {
          status = it.status === BlkStatus.OK ? this.#badSgl(req) : it.status;
          break done;
        }
        if (i === NVME_PRPS_PER_PAGE) {
          // Page full: move its last entry to slot 0 of a new page and chain to it from the last slot.
          const next = this.#descriptorAlloc(iod, false);
          if (next < 0) {
            status = BlkStatus.RESOURCE;
            break done;
          }
          const moved = readLe64(list, (i - 1) * 8);
          writeLe64(list, (i - 1) * 8, next);
          m.memory.write(listPhys, this.#listBuf, 0, i * 8);
          listPhys = iod.descriptorsPhys[iod.nrDescriptors - 1] ?? 0;
          writeLe64(list, 0, moved);
          i = 1;
        }
      }
    }
    if (i > 0) m.memory.write(listPhys, this.#listBuf, 0, i * 8);
    // Always written, even on failure: unmap reads them.
    writeLe64(iod.cmdDv, SQE.PRP1, prp1);
    writeLe64(iod.cmdDv, SQE.PRP2, prp2);
    if (status === BlkStatus.OK) this.stats.prpCommands++;
    else this.#unmapData(req, iod);
    return status;
  }

  #badSgl(req: BlkRequest): BlkStatus {
    this.#log(`Invalid SGL for payload:${blkRqPayloadBytes(req)} nents:${blkRqNrPhysSegments(req)}`);
    return BlkStatus.IOERR;
  }

  /**
   * `nvme_pci_setup_data_sgl`: one data block descriptor inline in the command when the request is
   * one segment (or coalesced into one IOVA range), else one descriptor list behind a Last Segment
   * descriptor (16 entries from the small pool, up to 256 from a large page).
   */
  #setupDataSgl(iod: NvmeIod, req: BlkRequest, coalesced: boolean): BlkStatus {
    const it = iod.iter;
    const entries = blkRqNrPhysSegments(req);
    const dv = iod.cmdDv;
    iod.cmd[SQE.FLAGS] = NVME_CMD_SGL_METABUF;
    this.stats.sglCommands++;
    if (entries === 1 || coalesced) {
      sglSetData(dv, SQE.DPTR, it.addr, it.len);
      iod.totalLen += it.len;
      return BlkStatus.OK;
    }
    if (entries > NVME_MAX_SEGS) {
      this.#unmapIterSegment(req, iod);
      return BlkStatus.IOERR;
    }
    const small = entries <= NVME_SMALL_POOL_SGLS;
    if (small) iod.flags |= IOD_SMALL_DESCRIPTOR;
    const sglDma = this.#descriptorAlloc(iod, small);
    if (sglDma < 0) {
      // The kernel returns here with the first segment still mapped; the model undoes it.
      this.#unmapIterSegment(req, iod);
      return BlkStatus.RESOURCE;
    }
    const list = this.#listDv;
    let mapped = 0;
    let status: BlkStatus = BlkStatus.OK;
    do {
      if (mapped === entries) {
        status = BlkStatus.IOERR;
        break;
      }
      sglSetData(list, mapped * NVME_SGL_DESC_SIZE, it.addr, it.len);
      iod.totalLen += it.len;
      mapped++;
    } while (this.#mapNext(req, iod));
    if (status === BlkStatus.OK) status = it.status;
    this.stats.sglListDescriptors += mapped;
    this.machine.memory.write(iod.descriptorsPhys[0] ?? 0, this.#listBuf, 0, mapped * NVME_SGL_DESC_SIZE);
    sglSetSeg(dv, SQE.DPTR, sglDma, mapped);
    if (status !== BlkStatus.OK) this.#unmapData(req, iod);
    return status;
  }

  /** Undo a mapping made by iter_start before anything was recorded in the command. */
  #unmapIterSegment(req: BlkRequest, iod: NvmeIod): void {
    const dir = rqDmaDir(req);
    if ((iod.flags & IOD_LEGACY_SG) !== 0) {
      if (iod.sgt !== null) dmaUnmapSgtable(this.device, iod.sgt, dir, 0);
      return;
    }
    if (!this.blk.blkRqDmaUnmap(req, this.device, iod.dmaState, iod.iter.len)) dmaUnmapPage(this.device, iod.iter.addr, iod.iter.len, dir);
  }

  // ---- unmap and completion ----------------------------------------------------------------------

  /** `nvme_unmap_data`. */
  #unmapData(req: BlkRequest, iod: NvmeIod): void {
    const dev = this.device;
    const dir = rqDmaDir(req);
    const dv = iod.cmdDv;
    if ((iod.flags & IOD_SINGLE_SEGMENT) !== 0) {
      // prp1 and sgl.addr share the offset in the data pointer union.
      dmaUnmapPage(dev, readLe64(dv, SQE.PRP1), iod.totalLen, dir);
      return;
    }
    if ((iod.flags & IOD_LEGACY_SG) !== 0) {
      if (iod.sgt !== null) dmaUnmapSgtable(dev, iod.sgt, dir, 0);
    } else if (!this.blk.blkRqDmaUnmap(req, dev, iod.dmaState, Math.max(iod.totalLen, iod.mappedLen))) {
      if (((iod.cmd[SQE.FLAGS] ?? 0) & 0xc0) !== 0) this.#freeSgls(iod, dir);
      else this.#freePrps(iod, dir);
    }
    if (iod.nrDescriptors > 0) this.#freeDescriptors(iod);
  }

  /** `nvme_free_sgls`: unmap every data block the command (or its list) describes. */
  #freeSgls(iod: NvmeIod, dir: DmaDataDirection): void {
    const dev = this.device;
    const dv = iod.cmdDv;
    const addr = readLe64(dv, SQE.DPTR);
    const len = dv.getUint32(SQE.DPTR + 8, true);
    if (iod.nrDescriptors === 0) {
      dmaUnmapPage(dev, addr, len, dir);
      return;
    }
    const n = Math.min(len / NVME_SGL_DESC_SIZE, NVME_MAX_SEGS);
    this.machine.memory.readInto(iod.descriptorsPhys[0] ?? 0, this.#listBuf, 0, n * NVME_SGL_DESC_SIZE);
    const list = this.#listDv;
    for (let i = 0; i < n; i++) dmaUnmapPage(dev, readLe64(list, i * 16), list.getUint32(i * 16 + 8, true), dir);
  }

  /** `nvme_free_prps`: unmap every recorded segment (`dma_vecs`). */
  #freePrps(iod: NvmeIod, dir: DmaDataDirection): void {
    const dev = this.device;
    for (let i = 0; i < iod.nrDmaVecs; i++) dmaUnmapPage(dev, iod.dmaVecAddr[i] ?? 0, iod.dmaVecLen[i] ?? 0, dir);
    iod.nrDmaVecs = -1;
  }

  /** `nvme_free_descriptors`: DMA addresses come from the SQE and from each page's chain slot. */
  #freeDescriptors(iod: NvmeIod): void {
    const dv = iod.cmdDv;
    const m = this.machine;
    let dma = ((iod.cmd[SQE.FLAGS] ?? 0) & 0xc0) !== 0 ? readLe64(dv, SQE.DPTR) : readLe64(dv, SQE.PRP2);
    const n = iod.nrDescriptors;
    if (n === 1) {
      const pool = (iod.flags & IOD_SMALL_DESCRIPTOR) !== 0 ? this.#poolSmall : this.#poolLarge;
      if (pool !== null) dmaPoolFree(pool, iod.descriptors[0] ?? 0, dma);
      iod.nrDescriptors = 0;
      return;
    }
    const list = this.#listDv;
    const pool = this.#poolLarge;
    for (let i = 0; i < n; i++) {
      m.memory.readInto((iod.descriptorsPhys[i] ?? 0) + (NVME_PRPS_PER_PAGE - 1) * 8, this.#listBuf, 0, 8);
      const next = readLe64(list, 0);
      if (pool !== null) dmaPoolFree(pool, iod.descriptors[i] ?? 0, dma);
      dma = next;
    }
    iod.nrDescriptors = 0;
  }

  #irq(vector: number): void {
    this.stats.interrupts++;
    const q = vector === 0 ? this.#adminq : this.#queues[vector];
    if (q) this.#processCq(q);
  }

  /** `nvme_poll_cq`: consume every entry with the current phase, then ring the CQ head doorbell once. */
  #processCq(q: NvmeQueue): number {
    if (this.#inIrq) return 0;
    this.#inIrq = true;
    const m = this.machine;
    let found = 0;
    try {
      while (q.cqePending(m)) {
        const dv = q.cqeDv;
        const dw0 = dv.getUint32(0, true);
        const cid = dv.getUint16(12, true);
        const status = dv.getUint16(14, true) >> 1;
        q.updateCqHead();
        found++;
        this.#handleCqe(q, cid, status, dw0);
      }
    } finally {
      this.#inIrq = false;
    }
    if (found > 0) {
      this.bar.mmioWrite32(q.cqDb, q.cqHead);
      this.stats.cqDoorbells++;
      if (this.#requeue.length > 0 && this.#state === 'live') this.#scheduleKick(0);
    }
    return found;
  }

  /** `nvme_handle_cqe` + `nvme_find_rq`: the command id's generation must match the tag's. */
  #handleCqe(q: NvmeQueue, cid: number, status: number, dw0: number): void {
    const iod = q.iods[cid & NVME_CID_TAG_MASK];
    if (iod?.inflight !== true || iod.genctr !== cid >> NVME_CID_TAG_BITS) {
      this.stats.spuriousCompletions++;
      this.#log(`invalid id ${cid} completed on queue ${q.qid}`);
      return;
    }
    this.#finishIod(q, iod, status, dw0);
  }

  /** A command is over (completed by the controller, or cancelled by the host). */
  #finishIod(q: NvmeQueue, iod: NvmeIod, status: number, dw0: number): void {
    iod.inflight = false;
    this.#inflight--;
    const trace = this.machine.trace;
    if (trace.enabled) {
      // kernel: drivers/nvme/host/trace.h (nvme_complete_rq)
      trace.emit('nvme:nvme_complete_rq', this.device.name, { qid: q.qid, cid: iod.cmdDv.getUint16(SQE.CID, true), result: dw0, retries: iod.retries, status });
    }
    if (this.#inflight === 0 && this.#timeoutTimer !== null) {
      this.#timeoutTimer.cancel();
      this.#timeoutTimer = null;
    }
    if (q.qid === 0) {
      const done = iod.adminDone;
      iod.adminDone = null;
      q.putTag(iod);
      // Admin commands are REQ_FAILFAST_DRIVER: never retried.
      done?.(status, dw0);
      return;
    }
    const req = iod.req;
    iod.req = null;
    iod.status = status;
    if (req === null) {
      q.putTag(iod);
      return;
    }
    // nvme_pci_complete_rq → nvme_pci_unmap_rq
    if (this.#hasData(req)) this.#unmapData(req, iod);
    req.pdu = null;
    const retries = iod.retries;
    q.putTag(iod);
    // nvme_complete_rq → nvme_decide_disposition
    if (status === 0) {
      this.#endRequest(req, BlkStatus.OK);
      return;
    }
    const dying = this.#state === 'deleting' || this.#state === 'dead';
    if ((status & DNR) !== 0 || retries >= this.#opts.maxRetries || dying) {
      this.#endRequest(req, nvmeStatusCode(status) === NVME_SC_HOST_ABORTED_CMD ? BlkStatus.IOERR : nvmeErrorStatus(status));
      return;
    }
    // nvme_retry_req: requeue and kick the requeue list.
    this.#retriesOf.set(req, retries + 1);
    this.stats.retries++;
    this.stats.requeued++;
    this.#requeue.push(req);
    if (this.#state === 'live') this.#scheduleKick(0);
  }

  #endRequest(req: BlkRequest, status: BlkStatus): void {
    if (status === BlkStatus.OK) this.stats.completedOk++;
    else this.stats.completedError++;
    this.#retriesOf.delete(req);
    this.#redispatchOf.delete(req);
    req.endIo?.(req, status);
  }

  #scheduleKick(delayNs: number): void {
    if (this.#kickTimer === null) this.#kickTimer = this.machine.schedule(delayNs, this.#kickFn);
  }

  /** `blk_mq_requeue_work`: run the requeue list through `queueRq` again. */
  #runRequeue(): void {
    if (this.#state !== 'live') return;
    const list = this.#requeue.splice(0);
    let blocked = false;
    for (let i = 0; i < list.length; i++) {
      const req = list[i];
      if (req === undefined) continue;
      if (blocked) {
        this.#requeue.push(req);
        continue;
      }
      const st = this.queueRq(req, 0, false);
      if (st === BlkStatus.OK) continue;
      if (st === BlkStatus.RESOURCE) {
        const n = (this.#redispatchOf.get(req) ?? 0) + 1;
        if (n > MAX_RESOURCE_REDISPATCH) {
          this.#endRequest(req, BlkStatus.RESOURCE);
          continue;
        }
        this.#redispatchOf.set(req, n);
        this.#requeue.push(req);
        blocked = true;
        continue;
      }
      this.#endRequest(req, st);
    }
    this.commitRqs();
    // Nothing in flight to trigger a re-run: blk-mq re-runs the queue after a delay.
    if (this.#requeue.length > 0 && this.#inflight === 0) this.#scheduleKick(BLK_MQ_RESOURCE_DELAY_NS);
  }

  // ---- timeouts (nvme_timeout) -----------------------------------------------------------------

  #checkTimeouts(): void {
    const now = this.machine.clock.now();
    const queues = [this.#adminq, ...this.#queues];
    for (const q of queues) {
      if (!q) continue;
      for (const iod of q.iods) if (iod.inflight && iod.deadline <= now) this.#timeout(q, iod);
    }
    let next = Number.POSITIVE_INFINITY;
    for (const q of queues) {
      if (!q) continue;
      for (const iod of q.iods) if (iod.inflight && iod.deadline < next) next = iod.deadline;
    }
    if (this.#inflight > 0 && this.#timeoutTimer === null && Number.isFinite(next)) {
      this.#timeoutTimer = this.machine.schedule(Math.max(0, next - now), this.#timeoutFn);
    }
  }

  #timeout(q: NvmeQueue, iod: NvmeIod): void {
    const timeoutNs = q.qid === 0 ? this.#opts.adminTimeoutNs : this.#opts.ioTimeoutNs;
    const now = this.machine.clock.now();
    this.stats.timeouts++;
    const csts = this.bar.mmioRead32(NVME_REG_CSTS);
    // nvme_should_reset: a controller in fatal state needs a reset, nothing else helps.
    if ((csts & CSTS_CFS) !== 0) {
      this.#log(`controller is down; will reset: CSTS=0x${csts.toString(16)}`);
      iod.deadline = now + timeoutNs;
      this.#resetFromTimeout();
      return;
    }
    // nvme_poll_irqdisable: maybe the completion is there and the interrupt was lost.
    this.#processCq(q);
    if (!iod.inflight) {
      this.#log(`I/O tag ${iod.tag} QID ${q.qid} timeout, completion polled`);
      return;
    }
    if (this.#state === 'connecting' || this.#state === 'resetting') {
      if (q.qid === 0) {
        // A command of the bring-up itself: give up on it (the probe fails).
        this.#log(`I/O tag ${iod.tag} QID ${q.qid} timeout, disable controller`);
        this.#finishIod(q, iod, NVME_SC_HOST_ABORTED_CMD | DNR, 0);
      } else iod.deadline = now + timeoutNs; // the reset in progress cancels and requeues it
      return;
    }
    if (q.qid === 0 || (iod.flags & IOD_ABORTED) !== 0 || this.#abortsOutstanding >= this.#abortLimit) {
      this.#log(`I/O tag ${iod.tag} QID ${q.qid} timeout, reset controller`);
      iod.deadline = now + timeoutNs;
      this.#resetFromTimeout();
      return;
    }
    // Send an Abort for the command and give it another timeout period (BLK_EH_RESET_TIMER).
    iod.flags |= IOD_ABORTED;
    const cid = iod.cmdDv.getUint16(SQE.CID, true);
    this.#log(`I/O tag ${iod.tag} (${cid.toString(16).padStart(4, '0')}) QID ${q.qid} timeout, aborting`);
    this.#abortsOutstanding++;
    const r = this.#adminCmd(
      (dv) => {
        dv.setUint8(SQE.OPC, NvmeAdminOpcode.ABORT_CMD);
        dv.setUint32(SQE.CDW10, ((cid << 16) | q.qid) >>> 0, true);
      },
      (status, result) => {
        this.#abortsOutstanding = Math.max(0, this.#abortsOutstanding - 1);
        this.#log(`Abort status: 0x${status.toString(16)} result ${result}`);
      },
    );
    if (r !== 0) {
      this.#abortsOutstanding--;
      this.#resetFromTimeout();
      return;
    }
    this.stats.aborts++;
    iod.deadline = now + timeoutNs;
  }

  #resetFromTimeout(): void {
    if (this.#state === 'live') this.resetCtrl();
  }

  #log(msg: string): void {
    if (this.log.length >= 512) this.log.shift();
    this.log.push(`nvme ${this.device.name}: ${msg}`);
  }
}

/** `nvme_pci_sgl_set_data`: a data block descriptor. */
function sglSetData(dv: DataView, off: number, addr: number, len: number): void {
  writeLe64(dv, off, addr);
  dv.setUint32(off + 8, len, true);
  dv.setUint8(off + 12, 0);
  dv.setUint16(off + 13, 0, true);
  dv.setUint8(off + 15, NvmeSglType.DATA_BLOCK << 4);
}

/** `nvme_pci_sgl_set_seg`: a Last Segment descriptor for `entries` descriptors at `addr`. */
function sglSetSeg(dv: DataView, off: number, addr: number, entries: number): void {
  writeLe64(dv, off, addr);
  dv.setUint32(off + 8, entries * NVME_SGL_DESC_SIZE, true);
  dv.setUint8(off + 12, 0);
  dv.setUint16(off + 13, 0, true);
  dv.setUint8(off + 15, NvmeSglType.LAST_SEGMENT << 4);
}

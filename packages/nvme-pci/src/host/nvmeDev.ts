// The NVMe PCI host driver's device: nvme_probe, the controller's public state, the reset and
// remove entry points, and the blk-mq entry points (nvme_queue_rq, nvme_commit_rqs). The rest of
// pci.c lives beside it: the reset work and nvme_dev_disable in reset.ts, the data-mapping hot path
// in mapData.ts, completion in completion.ts, timeouts in timeout.ts, the shared state
// (`struct nvme_dev`) and submission in dev.ts, queues in queue.ts, the iod in iod.ts.
// kernel: drivers/nvme/host/pci.c [6.17] (nvme_probe, nvme_pci_enable, nvme_setup_descriptor_pools,
// nvme_remove, nvme_queue_rq, nvme_commit_rqs), drivers/nvme/host/core.c (nvme_reset_ctrl,
// nvme_set_ctrl_limits, nvme_update_disk_info).
import {
  BlkStatus,
  dmaFreeCoherent,
  dmaPoolCreate,
  dmaPoolDestroy,
  dmaSetMaskAndCoherent,
  dmaSetMaxSegSize,
  dmaSetMinAlignMask,
  Errno,
} from '@dmakit/dma-core';
import type { BlkRequest, BlkRqDmaMapper, Device, DmaPool, Machine, QueueLimits, TdispMmioWorld } from '@dmakit/dma-core';
import {
  IOD_SINGLE_SEGMENT,
  NVME_ADMIN_TIMEOUT_NS,
  NVME_CTRL_PAGE_SIZE,
  NVME_DEFAULT_SGL_THRESHOLD,
  NVME_IO_QUEUE_DEPTH,
  NVME_IO_TIMEOUT_NS,
  NVME_MAX_RETRIES,
  NVME_MAX_SEGS,
  NVME_SMALL_POOL_SIZE,
} from './constants.js';
import { nvmeEndRequest, nvmeIrq, nvmeRunRequeue } from './completion.js';
import { NvmeDevState, nvmeStart } from './dev.js';
import type { NvmeCtrlState, NvmeDevOptions, NvmeHostStats, NvmeNsInfo } from './dev.js';
import { nvmeHasData, nvmeMapData, nvmeSetupCmd } from './mapData.js';
import type { NvmeQueue } from './queue.js';
import type { NvmeBar } from './queue.js';
import { nvmeDevDisable, nvmeResetWork } from './reset.js';
import { nvmeCheckTimeouts } from './timeout.js';

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
  readonly stats: NvmeHostStats;
  /** Kernel log lines (dev_warn, dev_err) the driver printed. */
  readonly log: string[];

  /** The driver's state (`struct nvme_dev`), shared with mapData.ts, completion.ts and timeout.ts. */
  readonly #d: NvmeDevState;

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
      mmioWorld: opts.mmioWorld ?? 'shared',
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
    if (!isMmioWorld(o.mmioWorld)) throw new RangeError(`NvmeDev: mmioWorld must be 'shared' or 'private'`);
    const d = new NvmeDevState(machine, device, bar, blk, o);
    d.queueRq = (req, qid, last) => this.queueRq(req, qid, last);
    d.commitRqs = () => {
      this.commitRqs();
    };
    d.resetCtrl = () => this.resetCtrl();
    d.timeoutFn = () => {
      d.timeoutTimer = null;
      nvmeCheckTimeouts(d);
    };
    d.kickFn = () => {
      d.kickTimer = null;
      nvmeRunRequeue(d);
    };
    this.#d = d;
    this.stats = d.stats;
    this.log = d.log;
  }

  // ---- public surface ---------------------------------------------------------------------------

  /** Namespaces found by Identify. */
  get namespaces(): NvmeNsInfo[] {
    return this.#d.namespaces;
  }

  /** Replaces the namespace list (writable, as the field it was before the split). */
  set namespaces(v: NvmeNsInfo[]) {
    this.#d.namespaces = v;
  }

  /** Why the controller is dead (empty while it is not). */
  get lastError(): string {
    return this.#d.lastError;
  }

  /** Records why the controller is dead (writable, as the field it was before the split). */
  set lastError(v: string) {
    this.#d.lastError = v;
  }

  /**
   * Controller state. kernel: enum nvme_ctrl_state (NVME_CTRL_NEW, _RESETTING, _CONNECTING, _LIVE,
   * _DELETING, _DEAD) in drivers/nvme/host/nvme.h.
   */
  get state(): NvmeCtrlState {
    return this.#d.state;
  }

  /** Requests the controller owns right now (submitted, not completed). */
  get inflight(): number {
    return this.#d.inflight;
  }

  /** Requests parked on the requeue list (during a reset). */
  get requeued(): number {
    return this.#d.requeue.length;
  }

  /** I/O queue pairs in use. */
  get ioQueueCount(): number {
    return this.#d.nrIoQueues;
  }

  /** Entries of each I/O queue (tags = depth - 1). */
  get ioQueueDepth(): number {
    return this.#d.queues[1]?.depth ?? 0;
  }

  /** The namespace the block device uses. */
  get ns(): NvmeNsInfo | null {
    return this.#d.ns;
  }

  /** The descriptor pools ("nvme descriptor small" 256 B, "nvme descriptor page" 4 KiB). */
  get pools(): { small: DmaPool | null; large: DmaPool | null } {
    return { small: this.#d.poolSmall, large: this.#d.poolLarge };
  }

  /** The world of the driver's mapping of BAR0 ('shared' or 'private'; see `setMmioWorld`). */
  get mmioWorld(): TdispMmioWorld {
    return this.#d.regs.world;
  }

  /** Register and doorbell accesses a TDI refused (read all ones, or a write dropped) so far. */
  get mmioRefused(): number {
    return this.#d.regs.refused;
  }

  /**
   * Map BAR0 again in `world`: the guest's accept step (`'private'`: ioremap of the accepted TEE
   * MMIO, once the TDI is in RUN and accepted) or its return to the shared world after the TDI
   * was stopped or reset (`'shared'`). Only the mapping changes: the driver keeps its state, and
   * a mapping the TDI does not accept in its current state reads all ones (CSTS too, which the
   * reset and timeout paths treat as a dead controller, as `nvme_pci_ctrl_is_dead` does).
   * 0, or -EINVAL for a world that is neither.
   */
  setMmioWorld(world: TdispMmioWorld): number {
    if (!isMmioWorld(world)) return -Errno.EINVAL;
    this.#d.regs.world = world;
    return 0;
  }

  /** Controller supports SGLs for I/O (Identify Controller SGLS). */
  get sglSupported(): boolean {
    return this.#d.ctrlSgls;
  }

  /**
   * The queue limits the block layer must build requests under (`nvme_set_ctrl_limits` +
   * `nvme_update_disk_info`): PRPs need every interior segment boundary on a controller page.
   */
  queueLimits(): QueueLimits {
    const lbs = this.#d.ns?.lbaSize ?? 512;
    return {
      logicalBlockSize: lbs,
      maxHwSectors: this.#d.maxHwSectors,
      maxSectors: this.#d.maxHwSectors,
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
    const d = this.#d;
    if (d.state !== 'new') return -Errno.EBUSY;
    const dev = this.device;
    // nvme_pci_enable / nvme_probe
    if (dmaSetMaskAndCoherent(dev, 64) !== 0) return -Errno.ENODEV;
    dmaSetMinAlignMask(dev, NVME_CTRL_PAGE_SIZE - 1);
    dmaSetMaxSegSize(dev, 0xffff_ffff);
    // nvme_setup_descriptor_pools
    d.poolLarge = dmaPoolCreate('nvme descriptor page', dev, NVME_CTRL_PAGE_SIZE, NVME_CTRL_PAGE_SIZE, 0);
    d.poolSmall = dmaPoolCreate('nvme descriptor small', dev, NVME_SMALL_POOL_SIZE, NVME_SMALL_POOL_SIZE, 0);
    if (d.poolLarge === null || d.poolSmall === null) return -Errno.ENOMEM;
    d.unregisterIrq = this.bar.onInterrupt((v) => {
      nvmeIrq(d, v);
    });
    d.state = 'connecting';
    nvmeResetWork(d);
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
    const limit = this.machine.clock.now() + 4 * (this.#d.ctrlTimeoutNs + this.#d.opts.adminTimeoutNs);
    while ((this.#d.state === 'connecting' || this.#d.state === 'resetting') && this.machine.clock.now() < limit) {
      this.machine.advance(this.#d.opts.pollIntervalNs);
    }
    return this.#d.state === 'live' ? 0 : -Errno.ENODEV;
  }

  /**
   * `nvme_reset_ctrl`: schedule the reset work. In-flight requests are cancelled with "host
   * aborted" and requeued; they run again once the queues are re-created. -EBUSY unless live.
   */
  resetCtrl(): number {
    if (this.#d.state !== 'live') return -Errno.EBUSY;
    this.#d.state = 'resetting';
    this.stats.resets++;
    this.machine.schedule(0, () => {
      nvmeDevDisable(this.#d, false);
      this.#d.state = 'connecting';
      nvmeResetWork(this.#d);
    });
    return 0;
  }

  /**
   * `nvme_remove`: shut the controller down, fail what is still queued, free queues and pools.
   * Run it outside a completion callback.
   */
  remove(): void {
    if (this.#d.state === 'deleting') return;
    const wasLive = this.#d.state !== 'new' && this.#d.state !== 'dead';
    this.#d.state = 'deleting';
    if (wasLive || this.#d.adminq !== null) nvmeDevDisable(this.#d, true);
    for (const req of this.#d.requeue.splice(0)) nvmeEndRequest(this.#d, req, BlkStatus.IOERR);
    this.#d.kickTimer?.cancel();
    this.#d.kickTimer = null;
    this.#d.timeoutTimer?.cancel();
    this.#d.timeoutTimer = null;
    const dev = this.device;
    for (const q of [this.#d.adminq, ...this.#d.queues]) {
      if (q === null || q === undefined) continue;
      dmaFreeCoherent(dev, q.sq.size, q.sq.cpuAddr, q.sq.dmaAddr);
      dmaFreeCoherent(dev, q.cq.size, q.cq.cpuAddr, q.cq.dmaAddr);
    }
    this.#d.adminq = null;
    this.#d.queues.length = 0;
    this.#d.nrIoQueues = 0;
    if (this.#d.adminBuf !== null) dmaFreeCoherent(dev, this.#d.adminBuf.size, this.#d.adminBuf.cpuAddr, this.#d.adminBuf.dmaAddr);
    this.#d.adminBuf = null;
    dmaPoolDestroy(this.#d.poolSmall);
    dmaPoolDestroy(this.#d.poolLarge);
    this.#d.poolSmall = null;
    this.#d.poolLarge = null;
    this.#d.unregisterIrq?.();
    this.#d.unregisterIrq = null;
  }

  /**
   * `nvme_queue_rq` for hardware queue `qid` (1-based; default round robin). `last` false defers
   * the SQ doorbell to a later request or `commitRqs` (`bd->last`).
   */
  queueRq(req: BlkRequest, qid = 0, last = true): BlkStatus {
    const d = this.#d;
    const st = d.state;
    if (st === 'resetting' || st === 'connecting') {
      // Queues are quiesced: blk-mq keeps the request until they run again.
      d.requeue.push(req);
      this.stats.requeued++;
      return BlkStatus.OK;
    }
    if (st !== 'live') return BlkStatus.IOERR;
    let q: NvmeQueue | undefined;
    if (qid === 0) {
      d.nextQueue = d.nextQueue >= d.nrIoQueues ? 1 : d.nextQueue + 1;
      q = d.queues[d.nextQueue];
    } else q = Number.isInteger(qid) ? d.queues[qid] : undefined;
    if (q === undefined || !q.enabled) return BlkStatus.INVAL;
    const iod = q.getTag();
    if (iod === null) {
      this.stats.resource++;
      return BlkStatus.RESOURCE;
    }
    iod.reset();
    let s = nvmeSetupCmd(d, req, iod);
    if (s === BlkStatus.OK && nvmeHasData(req)) s = nvmeMapData(d, q, iod, req);
    if (s !== BlkStatus.OK) {
      q.putTag(iod);
      if (s === BlkStatus.RESOURCE) this.stats.resource++;
      return s;
    }
    if ((iod.flags & IOD_SINGLE_SEGMENT) === 0) this.stats.mapMetadataBytes += iod.mappingMetadataBytes();
    iod.req = req;
    iod.retries = d.retriesOf.get(req) ?? 0;
    req.pdu = iod;
    nvmeStart(d, q, iod, d.opts.ioTimeoutNs);
    this.stats.submitted++;
    if (last && q.writeSqDb(d.regs)) this.stats.sqDoorbells++;
    return BlkStatus.OK;
  }

  /** `nvme_commit_rqs`: ring the doorbells deferred by `last = false`. */
  commitRqs(): void {
    const regs = this.#d.regs;
    for (const q of this.#d.queues) if (q?.writeSqDb(regs) === true) this.stats.sqDoorbells++;
  }

}

/** A world name from possibly untyped input (options, CLI, JSON). */
function isMmioWorld(w: unknown): w is TdispMmioWorld {
  return w === 'shared' || w === 'private';
}

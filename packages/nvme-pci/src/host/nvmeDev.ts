// The NVMe PCI host driver's device: probe, the reset work (disable, admin queue, enable, Identify,
// Set Features, Create I/O CQ/SQ), teardown (nvme_dev_disable, nvme_remove) and the blk-mq entry
// points (nvme_queue_rq, nvme_commit_rqs). The rest of pci.c lives beside it: the data-mapping hot
// path in mapData.ts, completion in completion.ts, timeouts in timeout.ts, the shared state
// (`struct nvme_dev`) and submission in dev.ts, queues in queue.ts, the iod in iod.ts.
// kernel: drivers/nvme/host/pci.c [6.17] (nvme_probe, nvme_pci_enable, nvme_setup_descriptor_pools,
// nvme_reset_work, nvme_pci_configure_admin_queue, nvme_alloc_queue, nvme_setup_io_queues,
// nvme_set_queue_count, nvme_create_io_queues, nvme_create_queue, nvme_dev_disable,
// nvme_reap_pending_cqes, nvme_remove, nvme_queue_rq, nvme_commit_rqs), drivers/nvme/host/core.c
// (nvme_enable_ctrl, nvme_disable_ctrl, nvme_wait_ready, nvme_init_ctrl_finish, nvme_identify_ctrl,
// nvme_cancel_request, nvme_set_ctrl_limits, nvme_reset_ctrl).
import {
  BlkStatus,
  dmaAllocCoherent,
  dmaFreeCoherent,
  dmaPoolCreate,
  dmaPoolDestroy,
  dmaSetMaskAndCoherent,
  dmaSetMaxSegSize,
  dmaSetMinAlignMask,
  Errno,
  SECTOR_SHIFT,
} from '@dmakit/dma-core';
import type { BlkRequest, BlkRqDmaMapper, Device, DmaPool, Machine, QueueLimits } from '@dmakit/dma-core';
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
  NVME_SQES_LOG2,
  NvmeAdminOpcode,
  NvmeFeat,
  NvmeIdCns,
  SQE,
  nvmeStatusName,
  readLe64,
  writeLe64,
} from '../controller/spec.js';
import {
  NVME_ADMIN_TIMEOUT_NS,
  NVME_AQ_DEPTH,
  NVME_CID_TAG_MASK,
  NVME_CTRL_PAGE_SIZE,
  NVME_DEFAULT_SGL_THRESHOLD,
  NVME_IO_QUEUE_DEPTH,
  NVME_IO_TIMEOUT_NS,
  NVME_MAX_BYTES,
  NVME_MAX_RETRIES,
  NVME_MAX_SEGS,
  NVME_SC_HOST_ABORTED_CMD,
  NVME_SMALL_POOL_SIZE,
} from './constants.js';
import { nvmeEndRequest, nvmeFinishIod, nvmeIrq, nvmePollCq, nvmeRunRequeue } from './completion.js';
import { NvmeDevState, nvmeAdminCmd, nvmeLog, nvmeStart } from './dev.js';
import type { NvmeCtrlState, NvmeDevOptions, NvmeHostStats, NvmeNsInfo } from './dev.js';
import { nvmeHasData, nvmeMapData, nvmeSetupCmd } from './mapData.js';
import { coherentCpu, NvmeQueue } from './queue.js';
import type { NvmeBar } from './queue.js';
import { nvmeCheckTimeouts } from './timeout.js';

/** `shutdown_timeout` module parameter default (5 s). */
const NVME_SHUTDOWN_TIMEOUT_NS = 5e9;
const CSTS_CFS = 1 << 1;

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
  /** Namespaces found by Identify. */
  namespaces: NvmeNsInfo[] = [];
  /** Why the controller is dead (empty while it is not). */
  lastError = '';

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
    if (this.#d.state !== 'new') return -Errno.EBUSY;
    const dev = this.device;
    // nvme_pci_enable / nvme_probe
    if (dmaSetMaskAndCoherent(dev, 64) !== 0) return -Errno.ENODEV;
    dmaSetMinAlignMask(dev, NVME_CTRL_PAGE_SIZE - 1);
    dmaSetMaxSegSize(dev, 0xffff_ffff);
    // nvme_setup_descriptor_pools
    this.#d.poolLarge = dmaPoolCreate('nvme descriptor page', dev, NVME_CTRL_PAGE_SIZE, NVME_CTRL_PAGE_SIZE, 0);
    this.#d.poolSmall = dmaPoolCreate('nvme descriptor small', dev, NVME_SMALL_POOL_SIZE, NVME_SMALL_POOL_SIZE, 0);
    if (this.#d.poolLarge === null || this.#d.poolSmall === null) return -Errno.ENOMEM;
    this.#d.unregisterIrq = this.bar.onInterrupt((v) => {
      nvmeIrq(this.#d, v);
    });
    this.#d.state = 'connecting';
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
      this.#devDisable(false);
      this.#d.state = 'connecting';
      this.#resetWork();
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
    if (wasLive || this.#d.adminq !== null) this.#devDisable(true);
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
    iod.req = req;
    iod.retries = d.retriesOf.get(req) ?? 0;
    req.pdu = iod;
    nvmeStart(d, q, iod, d.opts.ioTimeoutNs);
    this.stats.submitted++;
    if (last && q.writeSqDb(this.bar)) this.stats.sqDoorbells++;
    return BlkStatus.OK;
  }

  /** `nvme_commit_rqs`: ring the doorbells deferred by `last = false`. */
  commitRqs(): void {
    for (const q of this.#d.queues) if (q?.writeSqDb(this.bar) === true) this.stats.sqDoorbells++;
  }

  // ---- bring-up (nvme_reset_work) -----------------------------------------------------------

  #fail(why: string): void {
    this.lastError = why;
    nvmeLog(this.#d, `Removing after probe failure status: ${why}`);
    this.#d.state = 'dead';
    // Nothing will run these again: fail them (blk_mq_end_request with an error).
    for (const req of this.#d.requeue.splice(0)) nvmeEndRequest(this.#d, req, BlkStatus.IOERR);
  }

  #resetWork(): void {
    const bar = this.bar;
    this.#d.cap = bar.mmioRead64(NVME_REG_CAP);
    this.#d.dstrd = regGet(this.#d.cap, CAP.DSTRD);
    // NVME_CAP_TIMEOUT: 500 ms units.
    this.#d.ctrlTimeoutNs = (regGet(this.#d.cap, CAP.TO) + 1) * 500e6;
    // nvme_pci_configure_admin_queue: disable first (nvme_disable_ctrl, shutdown = false).
    const cc = bar.mmioRead32(NVME_REG_CC);
    if ((cc & 1) !== 0) bar.mmioWrite32(NVME_REG_CC, cc & ~1);
    this.#waitReady(false, () => {
      this.#configureAdminQueue();
    });
  }

  /** `nvme_wait_ready`: poll CSTS.RDY until it equals `rdy`, CAP.TO bounded. */
  #waitReady(rdy: boolean, then: () => void): void {
    const deadline = this.machine.clock.now() + this.#d.ctrlTimeoutNs;
    const poll = (): void => {
      if (this.#d.state !== 'connecting') return;
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
      this.machine.schedule(this.#d.opts.pollIntervalNs, poll);
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
    return new NvmeQueue(qid, depth, sq, cq, qid, this.#d.dstrd);
  }

  #configureAdminQueue(): void {
    const m = this.machine;
    const bar = this.bar;
    this.#d.adminq ??= this.#allocQueue(0, NVME_AQ_DEPTH);
    this.#d.adminBuf ??= dmaAllocCoherent(this.device, NVME_IDENTIFY_DATA_SIZE);
    const aq = this.#d.adminq;
    if (aq === null || this.#d.adminBuf === null) {
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

  /** An admin step of the bring-up: a failed submission or a bad status fails the probe. */
  #adminStep(what: string, fill: (dv: DataView) => void, then: (result: number) => void): void {
    const r = nvmeAdminCmd(this.#d, fill, (status, result) => {
      if (this.#d.state !== 'connecting') return;
      if (status !== 0) {
        this.#fail(`${what} failed: ${nvmeStatusName(status)}`);
        return;
      }
      then(result);
    });
    if (r !== 0) this.#fail(`${what}: cannot submit (${r})`);
  }

  #adminBufDv(): DataView {
    const buf = this.#d.adminBuf;
    const out = new Uint8Array(NVME_IDENTIFY_DATA_SIZE);
    if (buf !== null) this.machine.memory.readInto(coherentCpu(buf, 0), out, 0, NVME_IDENTIFY_DATA_SIZE);
    return new DataView(out.buffer);
  }

  #identify(dv: DataView, cns: number, nsid: number): void {
    dv.setUint8(SQE.OPC, NvmeAdminOpcode.IDENTIFY);
    dv.setUint32(SQE.NSID, nsid, true);
    writeLe64(dv, SQE.PRP1, this.#d.adminBuf?.dmaAddr ?? 0);
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
        this.#d.mdts = id.getUint8(77);
        // nvme_init_ctrl_finish: max_hw_sectors from MDTS (units of CAP.MPSMIN pages), capped by NVME_MAX_BYTES.
        const mpsmin = 4096 << regGet(this.#d.cap, CAP.MPSMIN);
        const mdtsBytes = this.#d.mdts === 0 ? NVME_MAX_BYTES : Math.min(NVME_MAX_BYTES, 2 ** this.#d.mdts * mpsmin);
        this.#d.maxHwSectors = mdtsBytes >> SECTOR_SHIFT;
        this.#d.abortLimit = id.getUint8(258) + 1;
        this.#d.ctrlSgls = (id.getUint32(536, true) & NVME_CTRL_SGLS_SUPPORTED) !== 0;
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
      const want = this.#d.opts.nsid;
      this.#d.ns = (want === 0 ? this.namespaces[0] : this.namespaces.find((n) => n.nsid === want)) ?? null;
      if (this.#d.ns === null) {
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
        } else nvmeLog(this.#d, `namespace ${nsid}: unsupported format (lbads ${lbads}), ignored`);
        this.#identifyNs(nsids, i + 1);
      },
    );
  }

  /** `nvme_set_queue_count`. */
  #setQueueCount(): void {
    const want = this.#d.opts.ioQueues;
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
        this.#d.nrIoQueues = nr;
        this.#createIoQueues(1);
      },
    );
  }

  /** `nvme_create_io_queues` / `nvme_create_queue`: CQ first, then the SQ bound to it. */
  #createIoQueues(qid: number): void {
    if (qid > this.#d.nrIoQueues) {
      this.#d.state = 'live';
      nvmeRunRequeue(this.#d);
      return;
    }
    const mqes = regGet(this.#d.cap, CAP.MQES) + 1;
    const depth = Math.min(this.#d.opts.ioQueueDepth, mqes, NVME_CID_TAG_MASK + 1);
    let q = this.#d.queues[qid];
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
    this.#d.queues[qid] = q;
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
    const queues = [this.#d.adminq, ...this.#d.queues];
    for (const q of queues) if (q) q.enabled = false;
    const cc = bar.mmioRead32(NVME_REG_CC);
    if (shutdown && (cc & 1) !== 0) {
      // nvme_disable_ctrl(ctrl, shutdown = true): normal shutdown, then wait for CSTS.SHST
      // complete (shutdown_timeout, 5 s by default). In-flight commands finish meanwhile.
      bar.mmioWrite32(NVME_REG_CC, regSet(cc, CC.SHN, NVME_CC_SHN_NORMAL));
      const deadline = this.machine.clock.now() + NVME_SHUTDOWN_TIMEOUT_NS;
      while (regGet(bar.mmioRead32(NVME_REG_CSTS), CSTS.SHST) !== NVME_CSTS_SHST_CMPLT && this.machine.clock.now() < deadline) {
        this.machine.advance(this.#d.opts.pollIntervalNs);
      }
      if (regGet(bar.mmioRead32(NVME_REG_CSTS), CSTS.SHST) !== NVME_CSTS_SHST_CMPLT) nvmeLog(this.#d, 'Device shutdown incomplete; abort shutdown');
    }
    // Model: always clear CC.EN too, so the controller drops its queues before their memory is freed.
    bar.mmioWrite32(NVME_REG_CC, bar.mmioRead32(NVME_REG_CC) & ~1);
    // nvme_reap_pending_cqes
    for (const q of queues) if (q) nvmePollCq(this.#d, q);
    // nvme_cancel_tagset / nvme_cancel_admin_tagset
    for (const q of queues) {
      if (!q) continue;
      for (const iod of q.iods) {
        if (!iod.inflight) continue;
        nvmeFinishIod(this.#d, q, iod, NVME_SC_HOST_ABORTED_CMD, 0);
      }
    }
    this.#d.abortsOutstanding = 0;
  }
}

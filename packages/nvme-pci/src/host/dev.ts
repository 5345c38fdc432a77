// `struct nvme_dev`: the host driver's state shared by the files that split drivers/nvme/host/pci.c
// (probe/reset/admin in nvmeDev.ts, data mapping in mapData.ts, completion in completion.ts,
// timeouts in timeout.ts), plus the submission helpers all of them use.
// kernel: drivers/nvme/host/pci.c [6.17] (struct nvme_dev; nvme_sq_copy_cmd and nvme_write_sq_db
// through NvmeQueue), drivers/nvme/host/core.c (nvme_start_request, the command id's generation
// counter as nvme_cid() builds it), drivers/nvme/host/nvme.h (enum nvme_ctrl_state).
//
// Internal: the package does not export `NvmeDevState`, `nvmeStart`, `nvmeAdminCmd` or `nvmeLog`;
// the public types declared here (options, stats, state, namespace info) are re-exported by
// host/index.ts.
import { Errno, SECTOR_SHIFT } from '@dmakit/dma-core';
import type { BlkRequest, BlkRqDmaMapper, BlkStatus, Device, DmaCoherentBuffer, DmaPool, Machine, PhysVec, SimTimer, TdispMmioWorld } from '@dmakit/dma-core';
import { readLe64, SQE } from '../controller/spec.js';
import { NVME_CID_GENCTR_MASK, NVME_CID_TAG_BITS, NVME_CTRL_PAGE_SIZE, NVME_MAX_BYTES } from './constants.js';
import type { NvmeAdminDone, NvmeIod } from './iod.js';
import { NvmeBarMapping } from './mmio.js';
import type { NvmeBar, NvmeQueue } from './queue.js';

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
  /**
   * The world of the driver's mapping of BAR0 when the function is a TDI with a private BAR0
   * (`tdispInit`): 'shared' (default; an ordinary ioremap, the only one a locked TDI refuses) or
   * 'private' (the guest's mapping of accepted TEE MMIO). Change it with `NvmeDev.setMmioWorld`
   * when the guest accepts the TDI, and back after it stops. Without a TDI it changes nothing.
   */
  mmioWorld?: TdispMmioWorld;
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
  /**
   * Bytes of the iods' arrays and structures that held the mappings of the requests that went
   * through the mapper (not the single-segment fast path), summed; read from the arrays at map
   * time (`NvmeIod.mappingMetadataBytes`).
   */
  mapMetadataBytes: number;
  /** Physical segments of the requests that went through the mapper (not the fast path), summed. */
  physSegments: number;
  /** DMA segments the mapper handed to the driver for them (1 per request when IOVA-coalesced), summed. */
  dmaSegments: number;
}

/** The options with their defaults applied (validated by the `NvmeDev` constructor). */
export type NvmeDevResolvedOptions = Required<Omit<NvmeDevOptions, 'nsid'>> & { nsid: number };

/** A zeroed `NvmeHostStats`. */
export function nvmeHostStatsInit(): NvmeHostStats {
  return {
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
    mapMetadataBytes: 0,
    physSegments: 0,
    dmaSegments: 0,
  };
}

/**
 * `struct nvme_dev`: everything the driver's parts share. `NvmeDev` owns one and forwards its
 * public surface to it; the free functions of mapData.ts, completion.ts and timeout.ts work on it.
 * The hooks at the end are the calls that go back up (blk-mq re-running the queue, the reset work,
 * the timers): `NvmeDev` sets them once, so the lower files never import the upper ones.
 */
export class NvmeDevState {
  readonly machine: Machine;
  readonly device: Device;
  readonly bar: NvmeBar;
  /** BAR0 as the driver mapped it: every register and doorbell access goes through it. */
  readonly regs: NvmeBarMapping;
  readonly blk: BlkRqDmaMapper;
  readonly opts: NvmeDevResolvedOptions;
  readonly stats: NvmeHostStats = nvmeHostStatsInit();
  /** Kernel log lines (dev_warn, dev_err) the driver printed. */
  readonly log: string[] = [];

  state: NvmeCtrlState = 'new';
  /** Namespaces found by Identify (`NvmeDev.namespaces`). */
  namespaces: NvmeNsInfo[] = [];
  /** Why the controller is dead, empty while it is not (`NvmeDev.lastError`). */
  lastError = '';
  cap = 0;
  dstrd = 0;
  ctrlTimeoutNs = 0;
  /** Identify Controller SGLS: SGLs supported for I/O. */
  ctrlSgls = false;
  mdts = 0;
  maxHwSectors = NVME_MAX_BYTES >> SECTOR_SHIFT;
  /** Identify Controller ACL + 1. */
  abortLimit = 1;
  abortsOutstanding = 0;
  ns: NvmeNsInfo | null = null;
  adminq: NvmeQueue | null = null;
  /** I/O queues by qid (index 0 unused). */
  readonly queues: (NvmeQueue | undefined)[] = [];
  nrIoQueues = 0;
  nextQueue = 0;
  adminBuf: DmaCoherentBuffer | null = null;
  poolSmall: DmaPool | null = null;
  poolLarge: DmaPool | null = null;
  unregisterIrq: (() => void) | null = null;
  /** Commands the controller owns right now (`nvmeStart` to completion or cancel). */
  inflight = 0;
  timeoutTimer: SimTimer | null = null;
  /** blk-mq requeue list: requests waiting for the queues to run again. */
  readonly requeue: BlkRequest[] = [];
  readonly retriesOf = new WeakMap<BlkRequest, number>();
  readonly redispatchOf = new WeakMap<BlkRequest, number>();
  kickTimer: SimTimer | null = null;
  /** Set while a CQ is being processed (no re-entry from a completion callback). */
  inIrq = false;

  // Scratch (no allocation on the I/O path): one descriptor page and the single-segment bvec.
  readonly listBuf = new Uint8Array(NVME_CTRL_PAGE_SIZE);
  readonly listDv = new DataView(this.listBuf.buffer);
  readonly bv: PhysVec = { paddr: 0, len: 0 };

  // Hooks back up, set once by `NvmeDev`.
  /** `nvme_queue_rq` (blk-mq re-running the requeue list). */
  queueRq: (req: BlkRequest, qid: number, last: boolean) => BlkStatus = () => {
    throw new Error('nvme-pci: NvmeDevState.queueRq hook not set');
  };
  /** `nvme_commit_rqs`. */
  commitRqs: () => void = () => undefined;
  /** `nvme_reset_ctrl`. */
  resetCtrl: () => number = () => -Errno.EBUSY;
  /** The blk-mq timeout timer's callback (`blk_mq_timeout_work`). */
  timeoutFn: () => void = () => undefined;
  /** The requeue timer's callback (`blk_mq_requeue_work`). */
  kickFn: () => void = () => undefined;

  constructor(machine: Machine, device: Device, bar: NvmeBar, blk: BlkRqDmaMapper, opts: NvmeDevResolvedOptions) {
    this.machine = machine;
    this.device = device;
    this.bar = bar;
    this.regs = new NvmeBarMapping(bar, device, opts.mmioWorld);
    this.blk = blk;
    this.opts = opts;
  }
}

/** `dev_warn` / `dev_err`: a kernel log line, the last 512 kept. */
export function nvmeLog(d: { readonly log: string[]; readonly device: Device }, msg: string): void {
  if (d.log.length >= 512) d.log.shift();
  d.log.push(`nvme ${d.device.name}: ${msg}`);
}

/**
 * `nvme_start_request` + `nvme_sq_copy_cmd`: stamp the command id (tag + generation counter), arm
 * the blk-mq deadline and copy the command into the SQ (the doorbell is the caller's).
 */
export function nvmeStart(d: NvmeDevState, q: NvmeQueue, iod: NvmeIod, timeoutNs: number): void {
  iod.genctr = (iod.genctr + 1) & NVME_CID_GENCTR_MASK;
  iod.cmdDv.setUint16(SQE.CID, (iod.genctr << NVME_CID_TAG_BITS) | iod.tag, true);
  iod.inflight = true;
  iod.status = 0;
  const m = d.machine;
  iod.deadline = m.clock.now() + timeoutNs;
  const trace = m.trace;
  if (trace.enabled) {
    // kernel: drivers/nvme/host/trace.h (nvme_setup_cmd)
    const dv = iod.cmdDv;
    trace.emit('nvme:nvme_setup_cmd', d.device.name, {
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
  d.inflight++;
  if (d.timeoutTimer === null) d.timeoutTimer = m.schedule(timeoutNs, d.timeoutFn);
  q.copyCmd(m, iod.cmd);
}

/** Submit an admin command built by `fill`; `done` gets the status and DW0. 0 or -errno. */
export function nvmeAdminCmd(d: NvmeDevState, fill: (dv: DataView) => void, done: NvmeAdminDone): number {
  const aq = d.adminq;
  if (aq?.enabled !== true) return -Errno.ENODEV;
  const iod = aq.getTag();
  if (iod === null) return -Errno.EBUSY;
  iod.reset();
  fill(iod.cmdDv);
  iod.adminDone = done;
  nvmeStart(d, aq, iod, d.opts.adminTimeoutNs);
  d.stats.adminCommands++;
  if (aq.writeSqDb(d.regs)) d.stats.sqDoorbells++;
  return 0;
}

// An NVMe drive that does I/O into registered dma-bufs: the simulated controller (QEMU
// hw/nvme/ctrl.c) with one namespace, the host driver (drivers/nvme/host/pci.c) probed over it,
// and an NvmePremappedMapper in front of the block layer's request mapper. What a user would
// otherwise assemble by hand to have a disk read a file straight into GPU memory (P2P DMA into an
// exported buffer), or run fixed-buffer I/O with no per-I/O mapping.
// No kernel counterpart as one unit: it is the probe of nvme-pci plus an io_uring-like submitter
// of dma-token requests (see nvmePremappedRq).
import { BlkStatus, Errno, SECTOR_SHIFT } from '@dmakit/dma-core';
import type { BlkRequest, BlkRqDmaMapper, Device, DmaBufPort, Machine, ReqOp } from '@dmakit/dma-core';
import { NvmeController } from './controller/index.js';
import type { NvmeControllerLatency, NvmeNamespaceOptions } from './controller/index.js';
import { NvmeDev } from './host/nvmeDev.js';
import type { NvmeDevOptions } from './host/dev.js';
import { NvmePremappedMapper, nvmePremappedRq } from './host/premapped.js';
import type { NvmePremappedBuffer } from './host/premapped.js';

/** Options of an NvmePremappedDrive: its one namespace, the controller's queues, the host options. */
export interface NvmePremappedDriveOptions {
  /** Logical block size of namespace 1 in bytes (512 or 4096). */
  readonly lbaSize: NvmeNamespaceOptions['lbaSize'];
  /** Capacity of namespace 1 in logical blocks. */
  readonly capacityLbas: number;
  /** I/O queue pairs the controller supports. Default 4. */
  readonly maxQueues?: number;
  /** Controller latencies (default: the controller's). */
  readonly latencyNs?: NvmeControllerLatency;
  /** Host driver options (default: one I/O queue). */
  readonly host?: NvmeDevOptions;
}

/**
 * An NVMe drive ready for pre-mapped I/O into dma-bufs: `ctrl` (the device), `host` (the driver)
 * and `mapper` (resolves requests into registered buffers, hands the rest to the block layer's
 * mapper given to the constructor). Call `probe()` before any I/O.
 */
export class NvmePremappedDrive {
  /** The simulated controller (namespace 1 holds the data). */
  readonly ctrl: NvmeController;
  /** The host driver. */
  readonly host: NvmeDev;
  /** The request mapper: registered dma-bufs first, every other request to the block layer. */
  readonly mapper: NvmePremappedMapper;
  /** The PCI function the drive is. */
  readonly dev: Device;
  /** Completion status of every request this drive submitted, in completion order. */
  readonly statuses: BlkStatus[] = [];
  /** Requests submitted to the driver. */
  submitted = 0;
  readonly #machine: Machine;
  readonly #lbaSize: number;
  #tag = 0;

  constructor(machine: Machine, dev: Device, blk: BlkRqDmaMapper, opts: NvmePremappedDriveOptions) {
    this.#machine = machine;
    this.dev = dev;
    this.#lbaSize = opts.lbaSize;
    this.ctrl = new NvmeController(machine, dev, {
      namespaces: [{ nsid: 1, lbaSize: opts.lbaSize, capacityLbas: opts.capacityLbas }],
      maxQueues: opts.maxQueues ?? 4,
      ...(opts.latencyNs === undefined ? {} : { latencyNs: opts.latencyNs }),
    });
    this.mapper = new NvmePremappedMapper(blk);
    this.host = new NvmeDev(machine, dev, this.ctrl, this.mapper, { ioQueues: 1, ...opts.host });
  }

  /** `nvme_probe` and wait until live: 0 or -errno (the reason is in `host.lastError`). */
  probe(): number {
    return this.host.probe();
  }

  /** Register the dma-buf behind `fd` for I/O by this drive (mapped now). The buffer or -errno. */
  register(port: DmaBufPort, fd: number): NvmePremappedBuffer | number {
    return this.mapper.register(port, this.dev, fd);
  }

  /** Unregister a buffer: 0, -EBUSY while its I/O is in flight, -EINVAL if not registered here. */
  unregister(buf: NvmePremappedBuffer): number {
    return this.mapper.unregister(buf);
  }

  /**
   * Queue the commands moving `len` bytes between logical block `lba` and buffer offset `off`
   * (`op` READ: into the buffer): one request per DMA-contiguous run of the buffer's current
   * mapping, mapped again first if the exporter moved the buffer. `endIo` (optional) sees every
   * request's completion. OK when all were queued; RESOURCE while I/O on an old mapping drains;
   * INVAL for a range the queue limits refuse; else the driver's status.
   */
  submit(buf: NvmePremappedBuffer, op: ReqOp, lba: number, off: number, len: number, endIo?: (rq: BlkRequest, status: BlkStatus) => void): BlkStatus {
    if (!Number.isSafeInteger(lba) || lba < 0) return BlkStatus.INVAL;
    const rc = this.mapper.ensureMapped(buf);
    if (rc === -Errno.EBUSY) return BlkStatus.RESOURCE;
    if (rc !== 0) return BlkStatus.IOERR;
    const runs = buf.runs(off, len);
    if (runs.length === 0) return BlkStatus.INVAL;
    const limits = this.host.queueLimits();
    for (const [o, n] of runs) {
      const sector = Math.floor((lba * this.#lbaSize + (o - off)) / 2 ** SECTOR_SHIFT);
      const rq = nvmePremappedRq(limits, buf, op, sector, o, n, this.#tag++ % 64);
      if (rq === null) return BlkStatus.INVAL;
      rq.endIo = (r, st) => {
        this.statuses.push(st);
        endIo?.(r, st);
      };
      const st = this.host.queueRq(rq);
      if (st !== BlkStatus.OK) return st;
      this.submitted++;
    }
    return BlkStatus.OK;
  }

  /**
   * `submit`, then run the simulation until idle (retrying once after RESOURCE). OK when every
   * command completed OK, else the first failing status.
   */
  io(buf: NvmePremappedBuffer, op: ReqOp, lba: number, off: number, len: number): BlkStatus {
    const before = this.statuses.length;
    let st = this.submit(buf, op, lba, off, len);
    if (st === BlkStatus.RESOURCE) {
      this.#machine.scheduler.runUntilIdle();
      st = this.submit(buf, op, lba, off, len);
    }
    if (st !== BlkStatus.OK) return st;
    this.#machine.scheduler.runUntilIdle();
    const done = this.statuses.slice(before);
    return done.length > 0 && done.every((x) => x === BlkStatus.OK) ? BlkStatus.OK : (done.find((x) => x !== BlkStatus.OK) ?? BlkStatus.IOERR);
  }

  /** `nvme_remove`: shut the controller down and free the driver's queues and pools. */
  remove(): void {
    this.host.remove();
  }
}

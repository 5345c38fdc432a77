/**
 * The cc-guest stack's NVMe rig and verified workload: an NVMe function composed exactly as the
 * nvme stack composes it (@dmakit/nvme-pci controller + host driver over @dmakit/block-rq-dma),
 * driven by slots that write a fresh random pattern to their LBA range, read it back into the
 * same (zeroed) private buffer and compare every byte. Each phase reports its own deltas.
 * Platform-neutral: no node: imports.
 */
import { bioFromRanges, blkRqFromBio, createBlkRqDmaMapper } from '@dmakit/block-rq-dma';
import type { BlkRqDma } from '@dmakit/block-rq-dma';
import { BlkStatus, errnoName, ReqOp } from '@dmakit/dma-core';
import type { Device, Machine, TdispMmioWorld } from '@dmakit/dma-core';
import { NvmeController, NvmeDev, nvmeBarSize } from '@dmakit/nvme-pci';
import { nvmeSimulatedCost } from '../nvmeCost.js';

/** Bytes per I/O (two pages: PRP1 + PRP2, no PRP list, no descriptor pool in the data path). */
export const CC_BS = 8192;
const SECTORS = CC_BS / 512;
/** LBA regions the slots rotate through (8 MiB of the namespace). */
const REGIONS = 1024;

/** What one phase of the workload did (deltas over the phase). */
export interface CcPhaseResult {
  readonly phase: string;
  /** Completed I/Os (writes + read-backs) that ended OK. */
  readonly ios: number;
  /** I/Os that ended with an error (then re-issued until they succeeded). */
  readonly ioErrors: number;
  /** Driver retries (nvme_retry_req) seen in the phase. */
  readonly driverRetries: number;
  readonly bytes: number;
  readonly bounces: number;
  readonly bouncedBytes: number;
  readonly bouncedBytesPerIo: number;
  /** Device accesses to private memory let through (accepted TDI). */
  readonly privateAccesses: number;
  /** Device accesses refused by the platform during the phase. */
  readonly faults: number;
  readonly verifiedBytes: number;
  readonly mismatches: number;
  /** Simulated ns per I/O spent copying through swiotlb, and the simulated IOPS of the whole path. */
  readonly swiotlbNsPerIo: number;
  readonly simulatedIops: number;
}

/** The rig could not get memory (probe or I/O buffers): the errno, after giving back what it held. */
export class CcRigError extends Error {
  override readonly name = 'CcRigError';
  constructor(
    readonly step: string,
    readonly error: string,
  ) {
    super(`cc-guest: ${step}: ${error}`);
  }
}

interface Slot {
  readonly idx: number;
  readonly phys: number;
  readonly expect: Uint8Array;
  op: ReqOp;
  region: number;
  round: number;
}

/** One NVMe function in the guest with its driver, and the per-region record of what it must hold. */
export class CcNvmeRig {
  readonly dev: Device;
  readonly ctrl: NvmeController;
  readonly host: NvmeDev;
  readonly blk: BlkRqDma;
  /** Region -> FNV-1a of the last pattern written there OK. */
  readonly written = new Map<number, number>();
  /** The worlds the driver's BAR0 mapping went through, first the one it probed with. */
  readonly mmioWorlds: TdispMmioWorld[];
  readonly #m: Machine;
  #seq = 0;

  constructor(m: Machine, name: string) {
    this.#m = m;
    this.dev = m.pci.addDevice({ name, dmaMaskBits: 64, bars: [{ size: nvmeBarSize(4), is64: true }] });
    this.ctrl = new NvmeController(m, this.dev, { namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: REGIONS * SECTORS }], maxQueues: 4 });
    this.blk = createBlkRqDmaMapper();
    this.host = new NvmeDev(m, this.dev, this.ctrl, this.blk, { ioQueues: 1, ioQueueDepth: 64, mapping: 'iter' });
    this.mmioWorlds = [this.host.mmioWorld];
    const err = this.host.probe();
    if (err !== 0) {
      // nvme_probe's error path has unwound; the driver is removed and unbound like a failed bind.
      this.host.remove();
      m.unbindDevice(this.dev);
      throw new CcRigError('NVMe probe', `-${errnoName(err)}: ${this.host.lastError}`);
    }
  }

  /**
   * Map the drive's BAR0 in `world` (the guest's accept step maps it private; after the TDI is
   * stopped it maps it shared again). A change of world is recorded in `mmioWorlds`.
   */
  setMmioWorld(world: TdispMmioWorld): void {
    if (world === this.host.mmioWorld) return;
    this.host.setMmioWorld(world);
    this.mmioWorlds.push(world);
  }

  /**
   * Run `ios` I/Os with `qd` slots; `onComplete(n)` is called after the n-th completion (the stack
   * uses it to change the device's world mid-run). Failed I/Os are re-issued until they succeed,
   * unless the driver declared the controller dead (then nothing can succeed: CcRigError).
   */
  run(phase: string, ios: number, qd: number, onComplete?: (n: number) => void): CcPhaseResult {
    const m = this.#m;
    const cc = m.cc;
    const sw0 = m.swiotlb.stats();
    const cc0 = cc?.stats;
    const f0 = m.faults.length;
    const h0 = { ...this.host.stats };
    const b0 = this.blk.stats.directMaps;
    const limits = this.host.queueLimits();
    let done = 0;
    let issued = 0;
    let errors = 0;
    let verified = 0;
    let mismatches = 0;
    /** I/Os given up because the controller is dead. */
    let abandoned = 0;
    const ranges = new Float64Array(2);
    const slots: Slot[] = [];
    for (let i = 0; i < qd; i++) {
      const phys = m.memory.allocPages(1);
      if (phys === 0) {
        for (const s of slots) m.memory.freePages(s.phys, 1);
        throw new CcRigError(`${phase}: I/O buffers`, '-ENOMEM (alloc_pages)');
      }
      slots.push({ idx: i, phys, expect: new Uint8Array(CC_BS), op: ReqOp.WRITE, region: 0, round: 0 });
    }
    const submit = (s: Slot): void => {
      if (s.op === ReqOp.WRITE) {
        m.memory.write(s.phys, s.expect); // the CPU fills its private buffer (again on a retry: same bytes)
      } else {
        m.memory.fill(s.phys, CC_BS, 0);
      }
      ranges[0] = s.phys;
      ranges[1] = CC_BS;
      const bio = bioFromRanges(s.op, s.region * SECTORS, ranges);
      const rq = bio === null ? null : blkRqFromBio(limits, bio, s.idx);
      if (rq === null) throw new Error('cc-guest: cannot build a request');
      rq.endIo = (_r, st) => {
        finish(s, st);
      };
      const st = this.host.queueRq(rq);
      if (st !== BlkStatus.OK) finish(s, st);
    };
    const start = (s: Slot): void => {
      if (issued >= ios) return;
      issued++;
      s.region = (s.idx + qd * s.round + this.#seq * 7) % REGIONS;
      s.op = ReqOp.WRITE;
      m.rng.fill(s.expect);
      submit(s);
    };
    const finish = (s: Slot, st: BlkStatus): void => {
      if (st !== BlkStatus.OK) {
        errors++;
        if (this.host.state === 'dead') {
          abandoned++; // nvme_remove_dead_ctrl: every later submission fails too
          return;
        }
        submit(s); // the same I/O again: nothing is lost, the new mapping follows the device's current world
        return;
      }
      done++;
      if (s.op === ReqOp.WRITE) {
        this.written.set(s.region, fnv(s.expect));
        s.op = ReqOp.READ;
        issued++;
        submit(s);
        onComplete?.(done); // after the next submission: a hook that changes the world finds I/O in flight
        return;
      }
      const got = m.memory.read(s.phys, CC_BS);
      for (let i = 0; i < CC_BS; i++) {
        if (got[i] !== s.expect[i]) {
          mismatches++;
          break;
        }
      }
      verified += CC_BS;
      s.round++;
      start(s);
      onComplete?.(done);
    };
    for (const s of slots) start(s);
    for (let guard = 0; done + abandoned < issued; guard++) {
      m.scheduler.runUntilIdle();
      if (guard > ios * 8 + 1000) throw new Error(`cc-guest: the ${phase} phase stopped making progress`);
    }
    for (const s of slots) m.memory.freePages(s.phys, 1);
    if (abandoned > 0) throw new CcRigError(`${phase}: NVMe I/O`, `-EIO: controller dead (${this.host.lastError})`);
    this.#seq++;
    const sw = m.swiotlb.stats();
    const hs = this.host.stats;
    const bouncedBytes = sw.bytesCopied - sw0.bytesCopied;
    const cost = nvmeSimulatedCost({
      ios: done,
      bytes: done * CC_BS,
      directMaps: this.blk.stats.directMaps - b0 + hs.singleSegment - h0.singleSegment,
      doorbells: hs.sqDoorbells + hs.cqDoorbells - h0.sqDoorbells - h0.cqDoorbells,
      interrupts: hs.interrupts - h0.interrupts,
      descriptors: hs.smallDescriptors + hs.largeDescriptors - h0.smallDescriptors - h0.largeDescriptors,
      bounceBytes: bouncedBytes,
      queueDepth: qd,
      iommu: null,
    });
    return {
      phase,
      ios: done,
      ioErrors: errors,
      driverRetries: hs.retries - h0.retries,
      bytes: done * CC_BS,
      bounces: sw.bounces - sw0.bounces,
      bouncedBytes,
      bouncedBytesPerIo: bouncedBytes / Math.max(1, done),
      privateAccesses: (cc?.stats.privateAccesses ?? 0) - (cc0?.privateAccesses ?? 0),
      faults: m.faults.length - f0,
      verifiedBytes: verified,
      mismatches,
      swiotlbNsPerIo: cost.nsPerIo.swiotlb,
      simulatedIops: cost.simulatedIops,
    };
  }

  /** Every region written OK holds exactly its last pattern (the controller's view of the namespace). */
  verifyNamespace(): { readonly bytes: number; readonly mismatches: number } {
    const ns = this.ctrl.namespace(1);
    if (ns === undefined) return { bytes: 0, mismatches: this.written.size };
    const buf = new Uint8Array(CC_BS);
    let bad = 0;
    for (const [region, sum] of this.written) {
      ns.readBytes(region * CC_BS, buf, 0, CC_BS);
      if (fnv(buf) !== sum) bad++;
    }
    return { bytes: this.written.size * CC_BS, mismatches: bad };
  }
}

function fnv(b: Uint8Array): number {
  let h = 0x811c9dc5 | 0;
  for (const x of b) h = Math.imul(h ^ x, 16777619);
  return h >>> 0;
}

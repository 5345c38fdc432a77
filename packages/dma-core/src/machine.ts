import { PciTopology } from './bus/pciTopology.js';
import type { TdispMmioGate } from './bus/tdisp.js';
import { CcPlatform } from './coco/cc.js';
import type { CcOptions, CcVendor } from './coco/cc.js';
import type { Device } from './device/device.js';
import type { DmaFaultRecord } from './device/dmaFault.js';
import type { DeviceHost } from './device/host.js';
import { DmaDebug } from './dma/debug.js';
import { dmaPoolCounts } from './dma/pool.js';
import type { DmaDebugMode } from './dma/debug.js';
import { Swiotlb } from './dma/swiotlb.js';
import { SystemMemory } from './mem/systemMemory.js';
import { Process } from './mm/process.js';
import { SimClock } from './sim/clock.js';
import { FaultInjection } from './sim/faultInjection.js';
import { Rng } from './sim/rng.js';
import { EventScheduler } from './sim/scheduler.js';
import type { SimTimer } from './sim/scheduler.js';
import { Trace } from './trace/trace.js';
import { SZ_1G, SZ_1M, SZ_64M } from './units/page.js';

/** Options of createMachine(): RAM size, seed, swiotlb size, physical address width, dma-debug mode. */
export interface MachineOptions {
  /** System RAM in bytes (sparse: only touched pages cost memory). Default 1 GiB. */
  ramBytes?: number;
  /** Seed for every random choice in the model. Default 1. */
  seed?: number;
  /** swiotlb pool size (`swiotlb=`), default 64 MiB; 0 disables bouncing. */
  swiotlbBytes?: number;
  /** Physical address width in bits. Default 46. */
  physBits?: number;
  /** dma-debug mode. Default 'strict' under a test runner, else 'warn'. */
  dmaDebug?: DmaDebugMode;
  /**
   * A confidential-computing guest (TDX or SEV): RAM is private until converted with
   * setMemoryDecrypted; dma-direct bounces through the (shared) swiotlb pool; devices reach
   * private memory only as accepted TDIs. Default: an ordinary machine.
   */
  cc?: CcOptions | CcVendor;
}

/**
 * What a machine holds that a finished workload must have given back, by name: the page
 * allocator's allocated pages (less the zero page), dma-debug's live mappings and two-step IOVA states, swiotlb slots
 * in use, live DMA pools and their blocks in use, plus whatever the subsystems registered with
 * `registerResourceCounter` (iommu-dma: IOVA ranges and IO page-table pages). A fail_nth sweep
 * takes one snapshot before a workload and one after: any count that grew is a leak.
 */
export type MachineResourceCounts = Readonly<Record<string, number>>;

/** The counts that differ between two snapshots, as `name: before -> after` (empty when none). */
export function resourceCountChanges(before: MachineResourceCounts, after: MachineResourceCounts): string[] {
  const out: string[] = [];
  for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const a = before[k] ?? 0;
    const b = after[k] ?? 0;
    if (a !== b) out.push(`${k}: ${a} -> ${b}`);
  }
  return out;
}

function defaultDebugMode(): DmaDebugMode {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return env?.VITEST !== undefined || env?.NODE_ENV === 'test' ? 'strict' : 'warn';
}

/**
 * A simulated machine: physical memory with real bytes, a PCI topology with devices, swiotlb,
 * dma-debug, tracing, and a deterministic clock and scheduler.
 */
export class Machine implements DeviceHost {
  readonly clock = new SimClock();
  readonly scheduler: EventScheduler;
  readonly rng: Rng;
  readonly faultInjection = new FaultInjection();
  readonly trace = new Trace();
  readonly memory: SystemMemory;
  readonly swiotlb: Swiotlb;
  readonly dmaDebug: DmaDebug;
  readonly pci: PciTopology;
  /** Every refused device access, oldest first. */
  readonly faults: DmaFaultRecord[] = [];
  /** The CC guest's memory-encryption state, or null on an ordinary machine. */
  readonly cc: CcPlatform | null = null;
  /** The private-MMIO gate of the machine's TDIs (set by tdispInit on the first TDI with private BARs). */
  tdispMmio: TdispMmioGate | null = null;
  #nextPid = 1;
  readonly #counters = new Map<string, () => number>();

  constructor(opts: MachineOptions = {}) {
    const ramBytes = opts.ramBytes ?? SZ_1G;
    if (!Number.isSafeInteger(ramBytes) || ramBytes < 16 * SZ_1M) {
      throw new RangeError(`createMachine: ramBytes must be an integer >= 16 MiB, got ${ramBytes}`);
    }
    this.scheduler = new EventScheduler(this.clock);
    this.rng = new Rng(opts.seed ?? 1);
    const physBits = opts.physBits ?? 46;
    this.memory = new SystemMemory({ ramBytes, physBits, faults: this.faultInjection });
    const swiotlbBytes = Math.min(opts.swiotlbBytes ?? SZ_64M, Math.floor(ramBytes / 4));
    const base = swiotlbBytes > 0 ? this.memory.reserveLow(swiotlbBytes, SZ_1M) : 0;
    this.swiotlb = new Swiotlb(base, swiotlbBytes);
    this.dmaDebug = new DmaDebug(opts.dmaDebug ?? defaultDebugMode());
    this.pci = new PciTopology(this);
    this.trace.now = () => this.clock.now();
    if (opts.cc != null) {
      const cc = new CcPlatform(this.memory, this.trace, opts.cc, physBits);
      // kernel: mem_encrypt_init() -> swiotlb_update_mem_attributes(): the pool is shared from boot.
      if (swiotlbBytes > 0) cc.bootDecrypt(base, swiotlbBytes);
      cc.liveMappingCheck = (phys, len, enc) => { this.dmaDebug.ccConvertCheck(phys, len, enc); };
      this.cc = cc;
    }
  }

  /**
   * Add a named count to `resourceCounts()` (a subsystem's own state a workload must give back,
   * e.g. iommu-dma's IOVA ranges). Registering a name again replaces its counter.
   */
  registerResourceCounter(name: string, count: () => number): void {
    this.#counters.set(name, count);
  }

  /** A snapshot of everything a finished workload must have given back (see MachineResourceCounts). */
  resourceCounts(): MachineResourceCounts {
    const pools = dmaPoolCounts(this);
    const out: Record<string, number> = {
      // The zero page is a boot-time page the model allocates at first use: not the workload's.
      allocatedPages: this.memory.allocatedPageCount - (this.memory.zeroPageAllocated ? 1 : 0),
      dmaDebugEntries: this.dmaDebug.entries,
      dmaDebugIovaStates: this.dmaDebug.iovaStates,
      swiotlbSlots: this.swiotlb.stats().usedSlots,
      dmaPools: pools.pools,
      dmaPoolBlocks: pools.activeBlocks,
    };
    for (const [name, count] of this.#counters) out[name] = count();
    return out;
  }

  /** A new user process with its own address space. */
  createProcess(): Process {
    return new Process(this, this.#nextPid++);
  }

  /** Driver unbind (BUS_NOTIFY_UNBOUND_DRIVER): dma-debug reports what the driver leaked. */
  unbindDevice(dev: Device): void {
    dev.driverBound = false;
    if (this.dmaDebug.enabled) this.dmaDebug.unbind(dev);
  }

  /** Run every scheduled event due in the next `ns` of simulated time, in order. */
  advance(ns: number): number {
    return this.scheduler.advance(ns);
  }

  /** Runs fn after delayNs of simulated time (dmakit's event scheduler; no kernel counterpart). */
  schedule(delayNs: number, fn: () => void): SimTimer {
    return this.scheduler.schedule(delayNs, fn);
  }

  physAccessible(phys: number, len: number): boolean {
    return this.memory.isAccessible(phys, len);
  }

  physIsRam(phys: number, len: number): boolean {
    return this.memory.isRam(phys, len);
  }

  ramTop(): number {
    return this.memory.ramTop();
  }

  p2pRoute(dev: Device, dmaAddr: number): number {
    return this.pci.p2pRoute(dev, dmaAddr);
  }

  /** Records an IOMMU or DMA fault a device hit; the records are kept in faults. */
  recordFault(record: DmaFaultRecord): void {
    this.faults.push(record);
  }
}

/**
 * Builds a simulated machine: RAM, PCI topology, swiotlb, dma-debug, clock, scheduler and trace. dmakit
 * model; no kernel counterpart.
 */
export function createMachine(opts: MachineOptions = {}): Machine {
  return new Machine(opts);
}

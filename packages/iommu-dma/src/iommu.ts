// kernel: drivers/iommu/iommu.c (default domains, iommu_attach_device, iommu_report_device_fault),
// drivers/iommu/dma-iommu.c (iommu_setup_dma_ops, iommu_dma_init_domain)
import { attachDmaOps, detachDmaOps, devIsPci } from '@dmakit/dma-core';
import type { Device, Machine } from '@dmakit/dma-core';
import { IommuDmaCookie, IommuDmaOps } from './dmaIommu.js';
import type { IommuDevState, IommuDmaContext } from './dmaIommu.js';
import type { FlushQueueKind } from './flushQueue.js';
import { IOMMU_DEFAULT_COST_MODEL, iommuSimulatedNs } from './costModel.js';
import type { IommuCostModel } from './costModel.js';
import { IommuDomain } from './iommuDomain.js';
import type { IommuDomainStats, IommuDomainType, IommuFaultRecord } from './iommuDomain.js';
import { IOMMU_DRIVERS } from './invalidation.js';
import type { IommuDriver } from './invalidation.js';

/**
 * Options of createIommu(): default domain type, IOVA width, page sizes, IOTLB size, flush-queue layout,
 * CPUs, cost model.
 */
export interface IommuOptions {
  /** Default domain type: 'strict' (IOMMU_DOMAIN_DMA) or 'lazy' (IOMMU_DOMAIN_DMA_FQ). */
  mode: IommuDomainType;
  /** IOVA width in bits (default 48: a 4-level table). */
  iovaBits?: number;
  /** pgsize_bitmap as a list (default 4 KiB, 2 MiB, 1 GiB). */
  pageSizes?: readonly number[];
  /** IOTLB entries per domain (power of two, default 512, 8-way). */
  iotlbEntries?: number;
  /** Flush-queue layout for lazy domains (default 'percpu'). */
  fq?: FlushQueueKind;
  /** Simulated CPUs (per-CPU rcaches and flush queues). Default 4. */
  cpus?: number;
  /** `iommu.forcedac=1`: no 32-bit-first IOVA attempt for PCI devices. */
  forcedac?: boolean;
  /** Simulated cost of IOMMU work (see costModel.ts); unspecified fields keep their defaults. */
  costModel?: Partial<IommuCostModel>;
  /**
   * Whose IOTLB invalidation rule the unit follows (default 'intel-vtd'): VT-d's page-selective
   * invalidation with an address mask, AMD-Vi's S-bit block, or SMMUv3's exact range.
   */
  driver?: IommuDriver;
  /** VT-d `cap_max_amask_val` (MAMV), 0..63; default 18. Larger PSI masks fall back to a DSI. */
  maxAddressMask?: number;
}

/** Options of Iommu.attach(): share an existing domain (an IOMMU group). */
export interface IommuAttachOptions {
  /** Share an existing domain (an IOMMU group); default: a new domain of the IOMMU's mode. */
  domain?: IommuDomain;
}

/** `iommu.stats()`: summed over every domain of this IOMMU. */
export interface IommuStats {
  domains: number;
  iovaAllocs: number;
  iovaAllocFailures: number;
  iovaFrees: number;
  rcacheHits: number;
  rcacheMisses: number;
  pteWrites: number;
  tablePagesLive: number;
  tableBytes: number;
  maps: number;
  unmaps: number;
  iotlbSyncs: number;
  iotlbSyncMaps: number;
  iotlbInvalidationsRange: number;
  iotlbInvalidationsFull: number;
  /** 4 KiB pages the ranged invalidations were asked to cover. */
  iotlbInvalidationPagesRequested: number;
  /** 4 KiB pages they covered (VT-d PSI / AMD blocks are naturally aligned powers of two). */
  iotlbInvalidationPagesCovered: number;
  /** Ranged invalidations turned into a whole-domain flush (VT-d DSI fallback). */
  iotlbInvalidationDomainFallbacks: number;
  iotlbHits: number;
  iotlbMisses: number;
  iotlbWalks: number;
  staleIotlbAccesses: number;
  fqQueued: number;
  fqFlushes: number;
  fqFullFlushes: number;
  fqTimerFlushes: number;
  fqPending: number;
  faults: number;
  /** Simulated CPU time the counted work costs under the IOMMU's cost model (ns). */
  simulatedNs: number;
}

/**
 * `IOMMU_DOMAIN_IDENTITY` (pass-through: `iommu=pt`, or a group's sysfs `type` set to `identity`):
 * the IOMMU translates DMA addresses 1:1, so the device's DMA API is dma-direct
 * (iommu_setup_dma_ops leaves `dev->dma_iommu` false for a non-DMA domain, drivers/iommu/dma-iommu.c)
 * and nothing is mapped, cached or invalidated in the IOMMU. One static identity domain per IOMMU
 * (like VT-d's si_domain). Its counters are the same as a paging domain's and stay 0 for
 * IOMMU work: the device's mappings show up in dma-core (dma-direct, swiotlb) instead.
 */
export class IommuIdentityDomain {
  readonly id: number;
  readonly name: string;
  readonly type = 'identity' as const;
  readonly #devices = new Set<Device>();

  /** `iommu` is the IOMMU's index in iommuDeviceList(machine). */
  constructor(iommu: number) {
    this.id = 0;
    this.name = `iommu${iommu}-identity-domain`;
  }

  /** Devices attached to the identity domain. */
  get devices(): readonly Device[] {
    return [...this.#devices];
  }

  /** @internal */
  add(dev: Device): void {
    this.#devices.add(dev);
  }

  /** @internal */
  remove(dev: Device): void {
    this.#devices.delete(dev);
  }

  /** `iommu_iova_to_phys` on an identity domain: the address itself (kernel: iommu_iova_to_phys returns iova for IOMMU_DOMAIN_IDENTITY). */
  iovaToPhys(iova: number): number {
    return iova;
  }

  /** The same counters as a paging domain: no PTEs, tables, maps, IOTLB work or faults. */
  stats(): IommuDomainStats {
    return {
      pteWrites: 0,
      tablePagesLive: 0,
      tablePagesPeak: 0,
      tableBytes: 0,
      maps: 0,
      unmaps: 0,
      iotlbSyncs: 0,
      iotlbSyncMaps: 0,
      iotlbInvalidationsRange: 0,
      iotlbInvalidationsFull: 0,
      iotlbInvalidationPagesRequested: 0,
      iotlbInvalidationPagesCovered: 0,
      iotlbInvalidationDomainFallbacks: 0,
      iotlbHits: 0,
      iotlbMisses: 0,
      iotlbWalks: 0,
      staleIotlbAccesses: 0,
      faults: 0,
    };
  }
}

/** `iommu_device_list` (drivers/iommu/iommu.c): the IOMMUs registered per machine. */
const IOMMU_DEVICE_LIST = new WeakMap<Machine, Iommu[]>();

/**
 * The IOMMUs created on `machine`, in creation order (read-only; for views such as a visualiser
 * that are handed a machine and need the IOMMU's domains, IOVA allocators and IOTLBs).
 */
export function iommuDeviceList(machine: Machine): readonly Iommu[] {
  return IOMMU_DEVICE_LIST.get(machine) ?? [];
}

interface DomainEntry {
  readonly domain: IommuDomain;
  readonly cookie: IommuDmaCookie;
  readonly ops: IommuDmaOps;
}

/**
 * One IOMMU (VT-d / AMD-Vi / SMMU unit) with dma-iommu on top: creates paging domains, attaches
 * devices (their DMA API calls then go through the domain's `IommuDmaOps`), records faults.
 */
export class Iommu implements IommuDmaContext {
  readonly machine: Machine;
  readonly mode: IommuDomainType;
  readonly cpus: number;
  readonly fqKind: FlushQueueKind;
  readonly forcedac: boolean;
  readonly costModel: IommuCostModel;
  /** Whose IOTLB invalidation rule the domains follow. */
  readonly driver: IommuDriver;
  readonly #opts: IommuOptions;
  #cpu = 0;
  /** Every refused device access, oldest first (`iommu_report_device_fault`). */
  readonly faults: IommuFaultRecord[] = [];
  /** Kernel log lines (WARN, dev_notice) the model produced. */
  readonly log: string[] = [];
  readonly #domains = new Map<IommuDomain, DomainEntry>();
  readonly #devDomain = new Map<Device, DomainEntry>();
  readonly #devState = new Map<Device, IommuDevState>();
  #identity: IommuIdentityDomain | null = null;

  constructor(machine: Machine, opts: IommuOptions) {
    const mode: string = opts.mode;
    if (mode !== 'strict' && mode !== 'lazy') throw new RangeError(`createIommu: mode must be 'strict' or 'lazy'`);
    const cpus = opts.cpus ?? 4;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > 256) throw new RangeError(`createIommu: cpus must be an integer in 1..256, got ${cpus}`);
    this.machine = machine;
    this.mode = opts.mode;
    this.cpus = cpus;
    this.fqKind = opts.fq ?? 'percpu';
    this.forcedac = opts.forcedac ?? false;
    this.costModel = Object.freeze({ ...IOMMU_DEFAULT_COST_MODEL, ...opts.costModel });
    for (const [k, v] of Object.entries(this.costModel)) {
      if (!(typeof v === 'number' && Number.isFinite(v) && v >= 0)) throw new RangeError(`createIommu: costModel.${k} must be a finite number >= 0`);
    }
    const driver: string = opts.driver ?? 'intel-vtd';
    if (!(IOMMU_DRIVERS as readonly string[]).includes(driver)) throw new RangeError(`createIommu: driver must be one of ${IOMMU_DRIVERS.join(', ')}, got ${driver}`);
    this.driver = driver as IommuDriver;
    const mamv = opts.maxAddressMask ?? 18;
    if (!Number.isInteger(mamv) || mamv < 0 || mamv > 63) throw new RangeError(`createIommu: maxAddressMask must be an integer in 0..63, got ${mamv}`);
    this.#opts = opts;
    const list = IOMMU_DEVICE_LIST.get(machine);
    if (list === undefined) IOMMU_DEVICE_LIST.set(machine, [this]);
    else list.push(this);
    // machine.resourceCounts() sums every IOMMU of the machine (fail_nth sweeps compare snapshots).
    machine.registerResourceCounter('iovaGranules', () => iommuDeviceList(machine).reduce((t, i) => t + i.resourceCounts().iovaGranules, 0));
    machine.registerResourceCounter('iopgtablePages', () => iommuDeviceList(machine).reduce((t, i) => t + i.resourceCounts().iopgtablePages, 0));
  }

  /** The simulated CPU subsequent DMA API calls run on (per-CPU rcaches and flush queues). */
  get cpu(): number {
    return this.#cpu;
  }

  set cpu(c: number) {
    if (!Number.isInteger(c) || c < 0 || c >= this.cpus) throw new RangeError(`iommu.cpu must be an integer in 0..${this.cpus - 1}, got ${c}`);
    this.#cpu = c;
  }

  /** A new paging domain (with its dma-iommu cookie). `type` defaults to the IOMMU's mode. kernel: iommu_paging_domain_alloc() plus the dma-iommu cookie of drivers/iommu/dma-iommu.c. */
  allocDomain(type: IommuDomainType = this.mode): IommuDomain {
    const machine = this.machine;
    const domain = new IommuDomain(
      {
        trace: machine.trace,
        faultInjection: machine.faultInjection,
        now: () => machine.clock.now(),
        recordFault: (rec) => this.faults.push(rec),
      },
      type,
      {
        ...(this.#opts.iovaBits !== undefined ? { iovaBits: this.#opts.iovaBits } : {}),
        ...(this.#opts.pageSizes !== undefined ? { pageSizes: this.#opts.pageSizes } : {}),
        ...(this.#opts.iotlbEntries !== undefined ? { iotlbEntries: this.#opts.iotlbEntries } : {}),
        driver: this.driver,
        ...(this.#opts.maxAddressMask !== undefined ? { maxAddressMask: this.#opts.maxAddressMask } : {}),
      },
    );
    const cookie = new IommuDmaCookie(machine, domain, this.fqKind, this.cpus);
    domain.cookie = cookie;
    this.#domains.set(domain, { domain, cookie, ops: new IommuDmaOps(this, domain, cookie) });
    return domain;
  }

  /**
   * Attach `dev` to a domain (a new one of the IOMMU's mode unless `domain` is given) and route its
   * DMA API through dma-iommu. Untrusted devices always get a strict domain (the IOMMU core's
   * default-domain rule); putting one into a lazy domain is refused. kernel: iommu_attach_device()
   * and iommu_setup_dma_ops().
   */
  attachDevice(dev: Device, opts: IommuAttachOptions = {}): IommuDomain {
    if (this.#devDomain.has(dev) || this.#identity?.devices.includes(dev) === true) throw new RangeError(`iommu: ${dev.name} is already attached`);
    let entry: DomainEntry | undefined;
    if (opts.domain !== undefined) {
      entry = this.#domains.get(opts.domain);
      if (entry === undefined) throw new RangeError(`iommu: domain ${opts.domain.name} does not belong to this IOMMU`);
      if (dev.untrusted && entry.domain.type === 'lazy') throw new RangeError(`iommu: untrusted device ${dev.name} cannot join lazy domain ${entry.domain.name}`);
    } else {
      const domain = this.allocDomain(dev.untrusted ? 'strict' : this.mode);
      entry = this.#domains.get(domain);
    }
    if (entry === undefined) throw new Error('iommu: internal error (domain entry missing)');
    this.#devDomain.set(dev, entry);
    this.#devState.set(dev, { pci32bitWorkaround: !this.forcedac && devIsPci(dev) });
    attachDmaOps(dev, entry.ops);
    return entry.domain;
  }

  /** The IOMMU's static identity (pass-through) domain, created on first use. */
  identityDomain(): IommuIdentityDomain {
    if (this.#identity === null) this.#identity = new IommuIdentityDomain(iommuDeviceList(this.machine).indexOf(this));
    return this.#identity;
  }

  /**
   * Put `dev` in pass-through (`iommu=pt`, IOMMU_DOMAIN_IDENTITY): its DMA API is dma-direct, its
   * DMA addresses are physical addresses and the IOMMU does no per-mapping work. Untrusted devices
   * are refused (the IOMMU core never gives an untrusted device an identity domain:
   * iommu_get_default_domain_type in drivers/iommu/iommu.c), as is a device already attached.
   */
  attachDeviceIdentity(dev: Device): IommuIdentityDomain {
    if (this.#devDomain.has(dev) || this.#identity?.devices.includes(dev) === true) throw new RangeError(`iommu: ${dev.name} is already attached`);
    if (dev.untrusted) throw new RangeError(`iommu: untrusted device ${dev.name} cannot use an identity domain`);
    const idm = this.identityDomain();
    idm.add(dev);
    this.#devState.set(dev, { pci32bitWorkaround: false });
    // dev->dma_iommu = false: the DMA API dispatches to dma-direct.
    if (dev.dmaOps !== null) detachDmaOps(dev);
    return idm;
  }

  /** True when `dev` is attached to the identity domain (pass-through). */
  isIdentity(dev: Device): boolean {
    return this.#identity?.devices.includes(dev) === true;
  }

  /** Detach `dev`: its DMA API goes back to dma-direct. kernel: iommu_detach_device(). */
  detachDevice(dev: Device): void {
    if (this.#identity?.devices.includes(dev) === true) {
      this.#identity.remove(dev);
      this.#devState.delete(dev);
      return;
    }
    if (!this.#devDomain.has(dev)) return;
    detachDmaOps(dev);
    this.onDetach(dev);
  }

  /** The domain dev is attached to, or null (kernel: iommu_get_domain_for_dev()). */
  domainOf(dev: Device): IommuDomain | null {
    return this.#devDomain.get(dev)?.domain ?? null;
  }

  /** The dma-iommu ops serving a domain (e.g. to call them directly). */
  opsOf(domain: IommuDomain): IommuDmaOps | null {
    return this.#domains.get(domain)?.ops ?? null;
  }

  /** Every domain of this IOMMU. */
  get domains(): readonly IommuDomain[] {
    return [...this.#domains.keys()];
  }

  /** Flush every lazy domain's queue now (all deferred invalidations done, IOVAs reclaimed). */
  flushQueues(): void {
    for (const e of this.#domains.values()) e.cookie.fq?.drain();
  }

  /**
   * What this IOMMU's users hold, summed over its DMA domains: IOVA granules allocated and not
   * freed (those parked in the rcaches are free from the user's side; those waiting in a flush
   * queue are not, until it drains), and IO page-table pages below the roots (a root lives as
   * long as its domain). A workload that unmapped everything brings both back to where they were.
   */
  resourceCounts(): { iovaGranules: number; iopgtablePages: number } {
    let iovaGranules = 0;
    let iopgtablePages = 0;
    for (const { domain, cookie } of this.#domains.values()) {
      const iv = cookie.iovad.stats();
      iovaGranules += iv.allocatedGranules - iv.cachedGranules;
      iopgtablePages += domain.stats().tablePagesLive - 1;
    }
    return { iovaGranules, iopgtablePages };
  }

  /** Counters summed over every domain, with the simulated time they cost. */
  stats(): IommuStats {
    const s: IommuStats = {
      domains: this.#domains.size + (this.#identity === null ? 0 : 1),
      iovaAllocs: 0,
      iovaAllocFailures: 0,
      iovaFrees: 0,
      rcacheHits: 0,
      rcacheMisses: 0,
      pteWrites: 0,
      tablePagesLive: 0,
      tableBytes: 0,
      maps: 0,
      unmaps: 0,
      iotlbSyncs: 0,
      iotlbSyncMaps: 0,
      iotlbInvalidationsRange: 0,
      iotlbInvalidationsFull: 0,
      iotlbInvalidationPagesRequested: 0,
      iotlbInvalidationPagesCovered: 0,
      iotlbInvalidationDomainFallbacks: 0,
      iotlbHits: 0,
      iotlbMisses: 0,
      iotlbWalks: 0,
      staleIotlbAccesses: 0,
      fqQueued: 0,
      fqFlushes: 0,
      fqFullFlushes: 0,
      fqTimerFlushes: 0,
      fqPending: 0,
      faults: 0,
      simulatedNs: 0,
    };
    for (const { domain, cookie } of this.#domains.values()) {
      const d = domain.stats();
      s.pteWrites += d.pteWrites;
      s.tablePagesLive += d.tablePagesLive;
      s.tableBytes += d.tableBytes;
      s.maps += d.maps;
      s.unmaps += d.unmaps;
      s.iotlbSyncs += d.iotlbSyncs;
      s.iotlbSyncMaps += d.iotlbSyncMaps;
      s.iotlbInvalidationsRange += d.iotlbInvalidationsRange;
      s.iotlbInvalidationsFull += d.iotlbInvalidationsFull;
      s.iotlbInvalidationPagesRequested += d.iotlbInvalidationPagesRequested;
      s.iotlbInvalidationPagesCovered += d.iotlbInvalidationPagesCovered;
      s.iotlbInvalidationDomainFallbacks += d.iotlbInvalidationDomainFallbacks;
      s.iotlbHits += d.iotlbHits;
      s.iotlbMisses += d.iotlbMisses;
      s.iotlbWalks += d.iotlbWalks;
      s.staleIotlbAccesses += d.staleIotlbAccesses;
      s.faults += d.faults;
      s.iovaAllocs += cookie.iovaAllocs;
      s.iovaAllocFailures += cookie.iovaAllocFailures;
      s.iovaFrees += cookie.iovaFrees;
      const iv = cookie.iovad.stats();
      s.rcacheHits += iv.rcacheHits;
      s.rcacheMisses += iv.rcacheMisses;
      const fq = cookie.fq;
      if (fq !== null) {
        s.fqQueued += fq.stats.queued;
        s.fqFlushes += fq.stats.flushes;
        s.fqFullFlushes += fq.stats.fullFlushes;
        s.fqTimerFlushes += fq.stats.timerFlushes;
        s.fqPending += fq.stats.pending;
      }
    }
    s.simulatedNs = iommuSimulatedNs(s, this.costModel);
    return s;
  }

  // IommuDmaContext
  /** Per-device IOMMU state (pci_32bit_workaround), created on first use. */
  devState(dev: Device): IommuDevState {
    let st = this.#devState.get(dev);
    if (st === undefined) {
      st = { pci32bitWorkaround: false };
      this.#devState.set(dev, st);
    }
    return st;
  }

  warn(dev: Device, message: string): void {
    this.log.push(`${dev.name}: ${message}`);
  }

  /** Forgets a device's domain and state after it detaches. */
  onDetach(dev: Device): void {
    this.#devDomain.delete(dev);
    this.#devState.delete(dev);
  }
}

/** Create an IOMMU on `machine`; attach devices to it with `iommu.attachDevice(dev)`. dmakit's model of an IOMMU unit probed with dma-iommu on top (kernel: iommu_device_register(), iommu_setup_dma_ops()). */
export function createIommu(machine: Machine, opts: IommuOptions): Iommu {
  return new Iommu(machine, opts);
}

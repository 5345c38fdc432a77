// kernel: drivers/pci/probe.c (enumeration, bus numbers), drivers/pci/setup-bus.c (BAR windows),
// drivers/pci/p2pdma.c (peer routing)
import { Device } from '../device/device.js';
import type { DeviceOptions } from '../device/device.js';
import type { DeviceHost } from '../device/host.js';
import type { SystemMemory } from '../mem/systemMemory.js';
import type { MemRegion, RegionMap } from '../mem/regions.js';
import { Errno } from '../units/errno.js';
import { SZ_1G, SZ_4G, alignUp } from '../units/page.js';
import { P2pdmaRegistry, pciP2pdmaAddResource } from './p2pdma.js';
import type { P2pdmaStats } from './p2pdma.js';
import {
  PCI_ACS_CR,
  PCI_ACS_RR,
  PciBus,
  PciDev,
  PciExpType,
  PciHostBridge,
  PciTopologyError,
  pciDevfn,
  pciFunc,
  pciSlot,
  toPciDev,
} from './pciDev.js';
import type { PciBar, PciHostBridgeOptions } from './pciDev.js';

/** What the topology needs of the machine: a device host whose memory has a region map. */
export interface PciHost extends DeviceHost {
  readonly memory: SystemMemory;
}

/** Non-prefetchable 32-bit MMIO window (below 4 GiB, above low RAM). */
export const PCI_MMIO32_START = 3 * SZ_1G;
/** End of the non-prefetchable 32-bit MMIO window (4 GiB); dmakit's address layout. */
export const PCI_MMIO32_END = SZ_4G;
/** Preferred start of the prefetchable 64-bit window (when the physical space is large enough). */
export const PCI_MMIO64_START = 2 ** 40;

/** A memory BAR to give a function: size, prefetchable, 64-bit, P2P publication and index. */
export interface PciBarOptions {
  /** Size in bytes: a power of two, at least 16 (PCI memory BAR rule). */
  size: number;
  /** Prefetchable. Default false. Prefetchable BARs are 64-bit unless `is64: false`. */
  prefetch?: boolean;
  /** 64-bit BAR (uses two BAR slots). Default: same as `prefetch`. */
  is64?: boolean;
  /** Publish the whole BAR as P2PDMA memory (`pci_p2pdma_add_resource(pdev, bar, 0, 0)`). */
  p2p?: boolean;
  /** BAR index 0..5; default the next free slot. */
  index?: number;
}

/**
 * Options of a PCI function added to the topology: its device options plus where it sits, its BARs and
 * ACS.
 */
export interface AddDeviceOptions extends DeviceOptions {
  /**
   * Where the function sits: a root port or switch downstream port (device 0 on its secondary
   * bus), or a host bridge (root complex integrated endpoint on the root bus). Default: a new
   * root port on host bridge 0.
   */
  parent?: PciDev | PciHostBridge;
  /** Function number 0..7; default the next free one in the slot. Function 0 must exist first. */
  function?: number;
  /** Slot (device number) on a root bus; below a port it is always 0. Default: a new slot. */
  slot?: number;
  bars?: readonly PciBarOptions[];
  /** ACS Control of the function itself (multi-function devices may implement ACS). */
  acsCtrl?: number;
}

/** ACS settings of a root or switch port. */
export interface PortOptions {
  /** Enable ACS P2P Request and Completion Redirect on the port. */
  acsRedirect?: boolean;
  /** Raw ACS Control value (overrides `acsRedirect`). */
  acsCtrl?: number;
}

/** A PCIe switch to add: downstream port count and ACS settings. */
export interface SwitchOptions extends PortOptions {
  /** Number of downstream ports (1..32). */
  downstreamPorts: number;
  /** ACS on the upstream port (rarely set). */
  upstreamAcsCtrl?: number;
}

/** A PCIe switch: its upstream port and downstream ports. */
export interface PciSwitch {
  readonly upstreamPort: PciDev;
  readonly downstreamPorts: readonly PciDev[];
}

/** Options of the PCI topology (whether the CPU supports P2P through any root complex). */
export interface PciTopologyOptions {
  /** `cpu_supports_p2pdma()`: P2P through any root complex (e.g. AMD Zen). Default false. */
  cpuSupportsP2pdma?: boolean;
}

interface BarLayout {
  index: number;
  size: number;
  prefetch: boolean;
  is64: boolean;
  p2p: boolean;
}

function acsOf(opts: PortOptions | undefined): number {
  if (opts?.acsCtrl !== undefined) return opts.acsCtrl;
  return opts?.acsRedirect === true ? PCI_ACS_RR | PCI_ACS_CR : 0;
}

function pciInvalid(message: string): PciTopologyError {
  return new PciTopologyError(-Errno.EINVAL, message);
}

function isPow2(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/**
 * The PCI hierarchy of a machine: host bridges, root ports, switches and endpoint functions, with
 * BARs placed in the MMIO windows, and the PCI P2PDMA rules between them.
 */
export class PciTopology {
  readonly #host: PciHost;
  readonly #registry: P2pdmaRegistry;
  /** Endpoint devices (the DMA masters), in creation order. */
  readonly devices: Device[] = [];
  /** Every PCI function, bridges included, in creation order. */
  readonly functions: PciDev[] = [];
  readonly hostBridges: PciHostBridge[] = [];
  readonly #byName = new Map<string, Device>();

  constructor(host: PciHost, opts: PciTopologyOptions = {}) {
    this.#host = host;
    this.#registry = new P2pdmaRegistry(host, host.memory.regions);
    this.#registry.cpuSupportsP2pdma = opts.cpuSupportsP2pdma ?? false;
  }

  /** `cpu_supports_p2pdma()`. Changing it does not flush map types already cached. */
  get cpuSupportsP2pdma(): boolean {
    return this.#registry.cpuSupportsP2pdma;
  }
  /** Sets cpu_supports_p2pdma() for later map-type computations. */
  set cpuSupportsP2pdma(v: boolean) {
    this.#registry.cpuSupportsP2pdma = v;
  }

  /** pci_warn / pci_info lines from the P2PDMA code. */
  get log(): readonly string[] {
    return this.#registry.log;
  }

  /** P2PDMA counters (map-type calculations, provider state updates). */
  get p2pdmaStats(): Readonly<P2pdmaStats> {
    return this.#registry.stats;
  }

  /** Look up an endpoint device by name. */
  device(name: string): Device | undefined {
    return this.#byName.get(name);
  }

  /** Look up a function by `pci_name` ("0000:01:00.0"). */
  findByBdf(bdf: string): PciDev | undefined {
    return this.functions.find((f) => f.bdf === bdf);
  }

  /** Adds a host bridge (root complex) with its root bus. */
  addHostBridge(opts: PciHostBridgeOptions = {}): PciHostBridge {
    const domain = opts.domain ?? (this.hostBridges.reduce((m, h) => Math.max(m, h.domain + 1), 0));
    if (!Number.isInteger(domain) || domain < 0 || domain > 0xffff) throw pciInvalid(`host bridge: bad domain ${domain}`);
    if (this.hostBridges.some((h) => h.domain === domain)) throw new PciTopologyError(-Errno.EEXIST, `host bridge: domain ${domain} already exists`);
    if (opts.busOffset !== undefined && !Number.isSafeInteger(opts.busOffset)) throw pciInvalid(`host bridge: bad busOffset ${opts.busOffset}`);
    const hb = new PciHostBridge(domain, opts);
    this.hostBridges.push(hb);
    return hb;
  }

  /** Host bridge 0 (the first one), created on demand. */
  defaultHostBridge(): PciHostBridge {
    return this.hostBridges[0] ?? this.addHostBridge();
  }

  /** A root port on the root bus of `hostBridge`, with a fresh secondary bus. */
  addRootPort(hostBridge: PciHostBridge = this.defaultHostBridge(), opts: PortOptions = {}): PciDev {
    this.#checkHostBridge(hostBridge);
    const bus = hostBridge.rootBus;
    const slot = this.#freeSlot(bus);
    return this.#addBridge(bus, pciDevfn(slot, 0), PciExpType.ROOT_PORT, acsOf(opts));
  }

  /**
   * A PCIe switch below `parentPort` (a root port or another switch's downstream port): an
   * upstream port at device 0 of the parent's secondary bus and `downstreamPorts` ports below it.
   */
  addSwitch(parentPort: PciDev, opts: SwitchOptions): PciSwitch {
    const n = opts.downstreamPorts;
    if (!Number.isInteger(n) || n < 1 || n > 32) throw pciInvalid(`switch: downstreamPorts must be 1..32, got ${n}`);
    const bus = this.#portBus(parentPort);
    if (bus.devices.length > 0) throw new PciTopologyError(-Errno.EBUSY, `switch: port ${parentPort.bdf} already has a device below it`);
    const usp = this.#addBridge(bus, pciDevfn(0, 0), PciExpType.UPSTREAM, opts.upstreamAcsCtrl ?? 0);
    const sub = usp.subordinate;
    if (sub === null) throw pciInvalid('switch: upstream port without a bus');
    const dsps: PciDev[] = [];
    const acs = acsOf(opts);
    for (let i = 0; i < n; i++) dsps.push(this.#addBridge(sub, pciDevfn(i, 0), PciExpType.DOWNSTREAM, acs));
    return { upstreamPort: usp, downstreamPorts: dsps };
  }

  /** Set a port's ACS Control (e.g. `pci=disable_acs_redir`). Flushes every cached map type. */
  setAcsCtrl(port: PciDev, acsCtrl: number): void {
    if (!Number.isInteger(acsCtrl) || acsCtrl < 0 || acsCtrl > 0xffff) throw pciInvalid(`bad ACS control ${acsCtrl}`);
    port.acsCtrl = acsCtrl;
    for (const f of this.functions) f.p2pdma?.mapTypes.clear();
  }

  /**
   * Add an endpoint function. With no `parent` it gets its own new root port under host bridge 0.
   * Throws `PciTopologyError` on bad input; nothing is added then.
   */
  addDevice(opts: AddDeviceOptions): Device {
    if (typeof opts.name !== 'string' || opts.name === '') throw pciInvalid('device: a name is required');
    if (this.#byName.has(opts.name)) throw new PciTopologyError(-Errno.EEXIST, `device ${opts.name} already exists`);
    for (const bits of [opts.dmaMaskBits, opts.coherentMaskBits]) {
      if (bits !== undefined && !(Number.isInteger(bits) && bits >= 0 && bits <= 64)) throw pciInvalid(`device ${opts.name}: a DMA mask width must be an integer 0..64, got ${String(bits)}`);
    }
    const bars = opts.bars ?? [];
    const layout = this.#layoutBars(opts.name, bars);
    const acsCtrl = opts.acsCtrl ?? 0;
    if (!Number.isInteger(acsCtrl) || acsCtrl < 0 || acsCtrl > 0xffff) throw pciInvalid(`device ${opts.name}: bad acsCtrl`);

    // Resolve the position before creating anything, so a failure leaves no trace.
    const parent = opts.parent;
    let bus: PciBus;
    let slot: number;
    let newRootPort = false;
    if (parent === undefined) {
      if (opts.slot !== undefined) throw pciInvalid(`device ${opts.name}: a slot needs a parent host bridge`);
      if (opts.function !== undefined && opts.function !== 0) {
        throw new PciTopologyError(-Errno.ENODEV, `device ${opts.name}: function ${opts.function} without function 0`);
      }
      bus = this.defaultHostBridge().rootBus; // placeholder, replaced by the new root port's bus
      slot = 0;
      newRootPort = true;
    } else if (parent instanceof PciHostBridge) {
      this.#checkHostBridge(parent);
      bus = parent.rootBus;
      if (opts.slot !== undefined) {
        if (!Number.isInteger(opts.slot) || opts.slot < 0 || opts.slot > 31) throw pciInvalid(`device ${opts.name}: bad slot ${opts.slot}`);
        slot = opts.slot;
      } else {
        if (opts.function !== undefined && opts.function !== 0) throw pciInvalid(`device ${opts.name}: function ${opts.function} on a root bus needs a slot`);
        slot = this.#freeSlot(bus);
      }
    } else {
      bus = this.#portBus(parent);
      if (opts.slot !== undefined && opts.slot !== 0) throw pciInvalid(`device ${opts.name}: only device 0 exists below a PCIe port`);
      slot = 0;
      if (bus.devices.some((d) => d.isBridge)) throw new PciTopologyError(-Errno.EBUSY, `device ${opts.name}: a switch sits below ${parent.bdf}`);
    }
    const fn = newRootPort ? 0 : this.#pickFunction(opts.name, bus, slot, opts.function);

    // Place the BARs (may throw ENOSPC) before touching the topology.
    const rootPort = newRootPort ? this.addRootPort(this.defaultHostBridge()) : null;
    if (rootPort?.subordinate) bus = rootPort.subordinate;
    const hb = bus.hostBridge;
    const devfn = pciDevfn(slot, fn);
    const pdev = new PciDev(bus, devfn, parent instanceof PciHostBridge ? PciExpType.RC_END : PciExpType.ENDPOINT, acsCtrl, this.#registry);
    try {
      pdev.bars.push(...this.#placeBars(pdev.bdf, opts.name, hb, layout));
    } catch (e) {
      if (rootPort !== null) this.#removeLastBridge(rootPort);
      throw e;
    }

    const dev = new Device(this.#host, opts);
    dev.bus = pdev;
    pdev.device = dev;
    bus.devices.push(pdev);
    this.functions.push(pdev);
    this.devices.push(dev);
    this.#byName.set(opts.name, dev);

    for (let i = 0; i < layout.length; i++) {
      const b = pdev.bars[i];
      if (layout[i]?.p2p === true && b !== undefined) {
        const err = pciP2pdmaAddResource(pdev, b.index, 0, 0);
        if (err !== 0) throw new PciTopologyError(err, `device ${opts.name}: BAR${b.index} cannot be published as P2P memory`);
      }
    }
    return dev;
  }

  /**
   * PCIe peer routing, called by the device port for every access before IOMMU translation:
   * the physical address behind `dmaAddr` if it is the bus address of a P2P BAR that `dev`
   * reaches with BUS_ADDR (the switch forwards it; it never reaches the IOMMU), else -1.
   */
  p2pRoute(dev: Device, dmaAddr: number): number {
    // One test while no switch routes a P2P BAR (the device port calls this on every access).
    return this.#registry.routeCount === 0 ? -1 : this.#p2pRouteOf(dev, dmaAddr);
  }

  #p2pRouteOf(dev: Device, dmaAddr: number): number {
    const reg = this.#registry;
    const client = toPciDev(dev);
    if (client === null || client.registry !== reg) return -1;
    return reg.route(client, dmaAddr);
  }

  // ---- internals -------------------------------------------------------------------------------

  #checkHostBridge(hb: PciHostBridge): void {
    if (!this.hostBridges.includes(hb)) throw pciInvalid(`host bridge ${String(hb)} is not part of this topology`);
  }

  /** The secondary bus of a root/downstream port of this topology. */
  #portBus(port: PciDev): PciBus {
    if (!(port instanceof PciDev) || !this.functions.includes(port)) throw pciInvalid(`${String(port)} is not a port of this topology`);
    const sub = port.subordinate;
    if (sub === null || (port.pcieType !== PciExpType.ROOT_PORT && port.pcieType !== PciExpType.DOWNSTREAM)) {
      throw pciInvalid(`${port.bdf} is not a root port or a switch downstream port`);
    }
    return sub;
  }

  #freeSlot(bus: PciBus): number {
    for (let s = 1; s < 32; s++) if (!bus.devices.some((d) => pciSlot(d.devfn) === s)) return s;
    if (!bus.devices.some((d) => pciSlot(d.devfn) === 0)) return 0;
    throw new PciTopologyError(-Errno.ENOSPC, `bus ${bus.number}: no free slot`);
  }

  #pickFunction(name: string, bus: PciBus, slot: number, want: number | undefined): number {
    const used = bus.devices.filter((d) => pciSlot(d.devfn) === slot).map((d) => pciFunc(d.devfn));
    if (want === undefined) {
      for (let f = 0; f < 8; f++) if (!used.includes(f)) return f;
      throw new PciTopologyError(-Errno.ENOSPC, `device ${name}: all 8 functions of the slot are taken`);
    }
    if (!Number.isInteger(want) || want < 0 || want > 7) throw pciInvalid(`device ${name}: function must be 0..7, got ${want}`);
    if (used.includes(want)) throw new PciTopologyError(-Errno.EEXIST, `device ${name}: function ${want} already exists`);
    // kernel: drivers/pci/probe.c pci_scan_slot: functions 1..7 are only found when function 0 exists
    if (want !== 0 && !used.includes(0)) throw new PciTopologyError(-Errno.ENODEV, `device ${name}: function ${want} without function 0`);
    return want;
  }

  #addBridge(bus: PciBus, devfn: number, type: PciExpType, acsCtrl: number): PciDev {
    if (!Number.isInteger(acsCtrl) || acsCtrl < 0 || acsCtrl > 0xffff) throw pciInvalid(`bad ACS control ${acsCtrl}`);
    const hb = bus.hostBridge;
    if (hb.busNrMax >= 255) throw new PciTopologyError(-Errno.ENOSPC, `domain ${hb.domain}: out of bus numbers`);
    if (bus.slotFunc(devfn) !== undefined) throw new PciTopologyError(-Errno.EEXIST, `bus ${bus.number}: devfn ${devfn} taken`);
    const pdev = new PciDev(bus, devfn, type, acsCtrl, this.#registry);
    hb.busNrMax++;
    pdev.subordinate = new PciBus(hb, hb.busNrMax, pdev);
    bus.devices.push(pdev);
    this.functions.push(pdev);
    return pdev;
  }

  /** Undo `#addBridge` of the most recent bridge (failed addDevice). */
  #removeLastBridge(port: PciDev): void {
    const hb = port.hostBridge;
    const bus = port.bus;
    bus.devices.splice(bus.devices.indexOf(port), 1);
    this.functions.splice(this.functions.indexOf(port), 1);
    if (port.subordinate?.number === hb.busNrMax) hb.busNrMax--;
  }

  /** Check the BAR list and assign kernel BAR indices (a 64-bit BAR takes two slots). */
  #layoutBars(name: string, bars: readonly PciBarOptions[]): BarLayout[] {
    const used = [false, false, false, false, false, false];
    const out: BarLayout[] = [];
    for (const b of bars) {
      if (!isPow2(b.size) || b.size < 16) throw pciInvalid(`device ${name}: BAR size ${b.size} is not a power of two >= 16`);
      const prefetch = b.prefetch ?? false;
      const is64 = b.is64 ?? prefetch;
      if (!is64 && b.size > 2 ** 31) throw pciInvalid(`device ${name}: a 32-bit BAR cannot be ${b.size} bytes`);
      const slots = is64 ? 2 : 1;
      let index = b.index;
      if (index === undefined) {
        index = 0;
        while (index < 6 && (used[index] === true || (slots === 2 && used[index + 1] === true))) index++;
      }
      if (!Number.isInteger(index) || index < 0 || index + slots > 6 || used[index] === true || (slots === 2 && used[index + 1] === true)) {
        throw new PciTopologyError(-Errno.ENOSPC, `device ${name}: no BAR slot for ${String(b.index ?? 'next')} (${is64 ? '64' : '32'}-bit)`);
      }
      used[index] = true;
      if (slots === 2) used[index + 1] = true;
      out.push({ index, size: b.size, prefetch, is64, p2p: b.p2p ?? false });
    }
    return out;
  }

  /** The prefetchable 64-bit window: high above RAM. */
  #mmio64Window(): [number, number] {
    const limit = this.#host.memory.limit;
    if (limit >= 2 * PCI_MMIO64_START) return [PCI_MMIO64_START, limit];
    return [alignUp(Math.max(this.#host.ramTop(), SZ_4G), SZ_1G), limit];
  }

  /**
   * Place BARs naturally aligned in their windows (first fit around existing regions) and register
   * their regions. All or nothing: on ENOSPC the regions already added are removed.
   */
  #placeBars(bdf: string, owner: string, hb: PciHostBridge, layout: readonly BarLayout[]): PciBar[] {
    const regions = this.#host.memory.regions;
    const added: MemRegion[] = [];
    const out: PciBar[] = [];
    // Largest first, as the kernel's pbus_size_mem / assignment order packs them.
    const order = layout.map((_, i) => i).sort((a, b) => (layout[b]?.size ?? 0) - (layout[a]?.size ?? 0));
    const placed = new Array<PciBar | undefined>(layout.length);
    try {
      for (const i of order) {
        const l = layout[i];
        if (l === undefined) continue;
        const [winStart, winEnd] = l.prefetch && l.is64 ? this.#mmio64Window() : [PCI_MMIO32_START, PCI_MMIO32_END];
        const start = firstFit(regions, winStart, winEnd, l.size);
        if (start < 0) throw new PciTopologyError(-Errno.ENOSPC, `device ${owner}: no room for BAR${l.index} (${l.size} bytes) in the MMIO window`);
        const region = regions.add({ start, size: l.size, kind: 'mmio', name: `${bdf} BAR${l.index}`, owner });
        added.push(region);
        const busAddr = start + hb.busOffset;
        if (busAddr < 0 || !Number.isSafeInteger(busAddr + l.size)) throw pciInvalid(`device ${owner}: busOffset puts BAR${l.index} outside the bus address space`);
        placed[i] = { index: l.index, start, size: l.size, prefetch: l.prefetch, is64: l.is64, busAddr, region };
      }
    } catch (e) {
      for (const r of added) regions.remove(r);
      throw e;
    }
    for (const b of placed) if (b !== undefined) out.push(b);
    return out;
  }

}

/** Lowest `size`-aligned start in [winStart, winEnd) that overlaps no region, or -1. */
function firstFit(regions: RegionMap, winStart: number, winEnd: number, size: number): number {
  let cand = alignUp(winStart, size);
  for (const r of regions.all) {
    if (cand + size > winEnd) return -1;
    const rEnd = r.start + r.size;
    if (rEnd <= cand) continue;
    if (r.start >= cand + size) break;
    cand = alignUp(rEnd, size);
  }
  return cand + size <= winEnd ? cand : -1;
}

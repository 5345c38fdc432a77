// kernel: include/linux/pci.h (struct pci_dev, struct pci_bus, struct pci_host_bridge),
// include/uapi/linux/pci_regs.h (ACS control bits, PCIe port types)
import type { Device } from '../device/device.js';
import type { MemRegion } from '../mem/regions.js';
import { errnoName } from '../units/errno.js';

/**
 * `struct pci_p2pdma` (`pdev->p2pdma`) as include/linux/pci.h sees it: a forward declaration, since
 * a pci_dev only points at it. bus/p2pdma.ts completes it to `PciP2pdma` (declaration merging),
 * so this file stays below the P2PDMA code.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- forward declaration, completed in bus/p2pdma.ts
export interface PciDevP2pdma {}

/** The topology's P2PDMA registry as a pci_dev points at it: completed to `P2pdmaRegistry` in bus/p2pdma.ts. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- forward declaration, completed in bus/p2pdma.ts
export interface PciDevP2pdmaRegistry {}

/** ACS Control register bits (`PCI_ACS_*`, pci_regs.h). */
export const PCI_ACS_SV = 0x0001; // Source Validation
/** ACS Translation Blocking. kernel: PCI_ACS_TB in include/uapi/linux/pci_regs.h. */
export const PCI_ACS_TB = 0x0002; // Translation Blocking
/** ACS P2P Request Redirect. kernel: PCI_ACS_RR in include/uapi/linux/pci_regs.h. */
export const PCI_ACS_RR = 0x0004; // P2P Request Redirect
/** ACS P2P Completion Redirect. kernel: PCI_ACS_CR in include/uapi/linux/pci_regs.h. */
export const PCI_ACS_CR = 0x0008; // P2P Completion Redirect
/** ACS Upstream Forwarding. kernel: PCI_ACS_UF in include/uapi/linux/pci_regs.h. */
export const PCI_ACS_UF = 0x0010; // Upstream Forwarding
/** ACS P2P Egress Control. kernel: PCI_ACS_EC in include/uapi/linux/pci_regs.h. */
export const PCI_ACS_EC = 0x0020; // P2P Egress Control
/** ACS Direct Translated P2P. kernel: PCI_ACS_DT in include/uapi/linux/pci_regs.h. */
export const PCI_ACS_DT = 0x0040; // Direct Translated P2P

/** PCIe Device/Port Type (`PCI_EXP_TYPE_*`, pci_regs.h). */
export const PciExpType = {
  ENDPOINT: 0x0,
  ROOT_PORT: 0x4,
  UPSTREAM: 0x5,
  DOWNSTREAM: 0x6,
  RC_END: 0x9,
} as const;
export type PciExpType = (typeof PciExpType)[keyof typeof PciExpType];

/** `PCI_DEVFN(slot, func)`. */
export function pciDevfn(slot: number, func: number): number {
  return ((slot & 0x1f) << 3) | (func & 0x07);
}
/** `PCI_SLOT(devfn)`. */
export function pciSlot(devfn: number): number {
  return (devfn >> 3) & 0x1f;
}
/** `PCI_FUNC(devfn)`. */
export function pciFunc(devfn: number): number {
  return devfn & 0x07;
}

/** Bad topology input (duplicate name, BAR size not a power of two, no room...). Carries the errno. */
export class PciTopologyError extends Error {
  /** Negative errno, e.g. `-Errno.EINVAL`. */
  readonly errno: number;
  constructor(errno: number, message: string) {
    super(`${message} (${errnoName(errno)})`);
    this.name = 'PciTopologyError';
    this.errno = errno;
  }
}

/** Options of a host bridge: PCI domain and whether it is on the P2P allow-list. */
export interface PciHostBridgeOptions {
  /** PCI domain (segment) number; default: the next free one. */
  domain?: number;
  /**
   * Host bridge is on the kernel's P2P allow-list (`pci_p2pdma_whitelist`): peer traffic may go
   * through its root complex (THRU_HOST_BRIDGE). Default false.
   */
  p2pAllowed?: boolean;
  /** The allow-list entry has REQ_SAME_HOST_BRIDGE: only when both devices sit under this bridge. */
  p2pRequireSameHostBridge?: boolean;
  /** PCI bus address − CPU physical address for BARs below this bridge (window offset). Default 0. */
  busOffset?: number;
  name?: string;
}

/** `struct pci_host_bridge`: a root complex with its root bus. */
export class PciHostBridge {
  readonly domain: number;
  readonly name: string;
  readonly p2pAllowed: boolean;
  readonly p2pRequireSameHostBridge: boolean;
  readonly busOffset: number;
  readonly rootBus: PciBus;
  /** Last bus number handed out in this domain (depth-first as built). */
  busNrMax = 0;

  constructor(domain: number, opts: PciHostBridgeOptions) {
    this.domain = domain;
    this.name = opts.name ?? `pci${hex(domain, 4)}:00`;
    this.p2pAllowed = opts.p2pAllowed ?? false;
    this.p2pRequireSameHostBridge = opts.p2pRequireSameHostBridge ?? false;
    this.busOffset = opts.busOffset ?? 0;
    this.rootBus = new PciBus(this, 0, null);
  }

  /** The host bridge name. */
  toString(): string {
    return this.name;
  }
}

/** `struct pci_bus`: a bus number and the bridge that leads to it (`self`, null for a root bus). */
export class PciBus {
  readonly hostBridge: PciHostBridge;
  readonly number: number;
  readonly self: PciDev | null;
  readonly devices: PciDev[] = [];

  constructor(hostBridge: PciHostBridge, number: number, self: PciDev | null) {
    this.hostBridge = hostBridge;
    this.number = number;
    this.self = self;
  }

  /** The function at `devfn` on this bus, if any. */
  slotFunc(devfn: number): PciDev | undefined {
    return this.devices.find((d) => d.devfn === devfn);
  }
}

/** One memory BAR (`pci_resource_*`). */
export interface PciBar {
  /** BAR index 0..5 (a 64-bit BAR uses two slots). */
  readonly index: number;
  /** CPU physical address (`pci_resource_start`). */
  readonly start: number;
  readonly size: number;
  readonly prefetch: boolean;
  readonly is64: boolean;
  /** PCI bus address (`pci_bus_address`) = start + host bridge busOffset. */
  readonly busAddr: number;
  /** The region registered in the machine's region map ('mmio', or 'p2p-bar' once published). */
  region: MemRegion;
}

/**
 * `struct pci_dev`: one PCI function: an endpoint function (with its DMA-capable `Device`) or a
 * bridge (root port, switch upstream/downstream port) with a secondary bus.
 */
export class PciDev {
  readonly bus: PciBus;
  readonly devfn: number;
  readonly pcieType: PciExpType;
  /** Secondary bus of a bridge (`pdev->subordinate`), null for an endpoint. */
  subordinate: PciBus | null = null;
  /** ACS Control register (`PCI_ACS_CTRL`), 0 when the function has no ACS capability. */
  acsCtrl: number;
  readonly bars: PciBar[] = [];
  /** The DMA-capable device of an endpoint function (`&pdev->dev`), null for a bridge. */
  device: Device | null = null;
  /** `pdev->p2pdma`, set by `pcimP2pdmaInit` / `pciP2pdmaAddResource`. */
  p2pdma: PciDevP2pdma | null = null;
  /** The P2PDMA registry of the topology this function belongs to. */
  readonly registry: PciDevP2pdmaRegistry;
  /** `pci_name(pdev)`: "dddd:bb:ss.f". */
  readonly bdf: string;

  constructor(bus: PciBus, devfn: number, pcieType: PciExpType, acsCtrl: number, registry: PciDevP2pdmaRegistry) {
    this.bus = bus;
    this.devfn = devfn;
    this.pcieType = pcieType;
    this.acsCtrl = acsCtrl;
    this.registry = registry;
    this.bdf = `${hex(bus.hostBridge.domain, 4)}:${hex(bus.number, 2)}:${hex(pciSlot(devfn), 2)}.${pciFunc(devfn)}`;
  }

  /** The host bridge above this function (kernel: pci_find_host_bridge()). */
  get hostBridge(): PciHostBridge {
    return this.bus.hostBridge;
  }

  /** True for a bridge or port (it has a subordinate bus). */
  get isBridge(): boolean {
    return this.subordinate !== null;
  }

  /** `pci_dev_id(pdev)` = bus << 8 | devfn. */
  get devId(): number {
    return (this.bus.number << 8) | this.devfn;
  }

  /** The BAR with kernel index `index`, if it is implemented. */
  bar(index: number): PciBar | undefined {
    return this.bars.find((b) => b.index === index);
  }

  /** The function's address, e.g. "0000:01:00.0" (kernel: pci_name()). */
  toString(): string {
    return this.bdf;
  }
}

/** `pci_upstream_bridge(pdev)`: the bridge above this function, null on a root bus. */
export function pciUpstreamBridge(pdev: PciDev): PciDev | null {
  return pdev.bus.self;
}

/** `pci_find_host_bridge(pdev->bus)`. */
export function pciFindHostBridge(pdev: PciDev): PciHostBridge {
  return pdev.bus.hostBridge;
}

/** `pci_name(pdev)`. */
export function pciName(pdev: PciDev): string {
  return pdev.bdf;
}

/** `dev_is_pci(dev)`. */
export function devIsPci(dev: Device): boolean {
  return dev.bus instanceof PciDev;
}

/** `to_pci_dev(dev)`, or null when the device is not a PCI function. */
export function toPciDev(dev: Device): PciDev | null {
  const b = dev.bus;
  return b instanceof PciDev ? b : null;
}

/** `pci_bridge_has_acs_redir` (drivers/pci/p2pdma.c): ACS would send P2P traffic up to the root complex. */
export function pciBridgeHasAcsRedir(pdev: PciDev): boolean {
  return (pdev.acsCtrl & (PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_EC)) !== 0;
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

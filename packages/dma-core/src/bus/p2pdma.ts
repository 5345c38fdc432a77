// kernel: drivers/pci/p2pdma.c, include/linux/pci-p2pdma.h (~6.17..7.0, per-BAR p2pdma_provider)
import { Device } from '../device/device.js';
import type { DeviceHost } from '../device/host.js';
import type { RegionMap } from '../mem/regions.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE, isAligned } from '../units/page.js';
import { PciDev, pciBridgeHasAcsRedir, pciFindHostBridge, pciUpstreamBridge, toPciDev } from './pciDev.js';
import type { PciBar, PciHostBridge } from './pciDev.js';

declare module './pciDev.js' {
  // `pdev->p2pdma` is a PciP2pdma (see the forward declaration in pciDev.ts).
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type -- completes a forward declaration
  interface PciDevP2pdma extends PciP2pdma {}
  // `pdev.registry` is the topology's P2pdmaRegistry (see the forward declaration in pciDev.ts).
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type -- completes a forward declaration
  interface PciDevP2pdmaRegistry extends P2pdmaRegistry {}
}

/** `enum pci_p2pdma_map_type` (include/linux/pci-p2pdma.h), with the kernel's numeric values. */
export const PciP2pdmaMapType = {
  /** Not computed yet (cache miss); never returned by the exported routines. */
  UNKNOWN: 0,
  /** Not a P2PDMA page: ordinary memory. */
  NONE: 1,
  /** The path crosses a host bridge that is not allow-listed: the mapping must fail. */
  NOT_SUPPORTED: 2,
  /** Common upstream switch/bridge, no ACS redirect: program the PCI bus address, no IOMMU. */
  BUS_ADDR: 3,
  /** Through an allow-listed root complex: map normally (IOVA or phys) with DMA_ATTR_MMIO. */
  THRU_HOST_BRIDGE: 4,
} as const;
export type PciP2pdmaMapType = (typeof PciP2pdmaMapType)[keyof typeof PciP2pdmaMapType];

/** kernel: PCI_P2PDMA_MAP_UNKNOWN (enum pci_p2pdma_map_type in include/linux/pci-p2pdma.h). */
export const PCI_P2PDMA_MAP_UNKNOWN = PciP2pdmaMapType.UNKNOWN;
/** kernel: PCI_P2PDMA_MAP_NONE (enum pci_p2pdma_map_type in include/linux/pci-p2pdma.h). */
export const PCI_P2PDMA_MAP_NONE = PciP2pdmaMapType.NONE;
/** kernel: PCI_P2PDMA_MAP_NOT_SUPPORTED (enum pci_p2pdma_map_type in include/linux/pci-p2pdma.h). */
export const PCI_P2PDMA_MAP_NOT_SUPPORTED = PciP2pdmaMapType.NOT_SUPPORTED;
/** kernel: PCI_P2PDMA_MAP_BUS_ADDR (enum pci_p2pdma_map_type in include/linux/pci-p2pdma.h). */
export const PCI_P2PDMA_MAP_BUS_ADDR = PciP2pdmaMapType.BUS_ADDR;
/** kernel: PCI_P2PDMA_MAP_THRU_HOST_BRIDGE (enum pci_p2pdma_map_type in include/linux/pci-p2pdma.h). */
export const PCI_P2PDMA_MAP_THRU_HOST_BRIDGE = PciP2pdmaMapType.THRU_HOST_BRIDGE;

const MAP_TYPE_NAMES = ['UNKNOWN', 'NONE', 'NOT_SUPPORTED', 'BUS_ADDR', 'THRU_HOST_BRIDGE'] as const;

/** Name of a P2PDMA map type, e.g. 'BUS_ADDR'; dmakit helper for traces and messages. */
export function pciP2pdmaMapTypeName(t: number): string {
  return MAP_TYPE_NAMES[t] ?? `INVALID(${t})`;
}

/**
 * `struct p2pdma_provider`: one per memory BAR of a P2PDMA-capable function (Leon Romanovsky's
 * per-BAR providers, `pcim_p2pdma_provider(pdev, bar)`).
 */
export class P2pdmaProvider {
  /** The exporting function's device (`provider->owner`). */
  readonly owner: Device | null;
  /** The exporting PCI function (`to_pci_dev(provider->owner)`). */
  readonly pdev: PciDev;
  readonly bar: PciBar;
  /** PCI bus address − CPU physical address of the BAR (`provider->bus_offset`). */
  readonly busOffset: number;

  constructor(pdev: PciDev, bar: PciBar) {
    this.owner = pdev.device;
    this.pdev = pdev;
    this.bar = bar;
    this.busOffset = bar.busAddr - bar.start;
  }

  /** The provider as "<bdf> BAR<n>". */
  toString(): string {
    return `${this.pdev.bdf} BAR${this.bar.index}`;
  }
}

/** `struct pci_p2pdma_pagemap`: a BAR range published as P2PDMA pages (`pci_p2pdma_add_resource`). */
export interface P2pdmaPagemap {
  readonly start: number;
  readonly size: number;
  readonly provider: P2pdmaProvider;
}

/** `struct pci_p2pdma` (`pdev->p2pdma`). */
export class PciP2pdma {
  /** The kernel's `map_types` xarray: client index → map type. */
  readonly mapTypes = new Map<number, PciP2pdmaMapType>();
  /** `p2p->mem[PCI_STD_NUM_BARS]`. */
  readonly mem: (P2pdmaProvider | null)[] = [null, null, null, null, null, null];
  readonly pagemaps: P2pdmaPagemap[] = [];
  /** `p2pmem_published` (pci_p2pmem_publish). */
  p2pmemPublished = false;
}

/** `struct pci_p2pdma_map_state`: per-transaction cache of the last provider and its map type. */
export interface PciP2pdmaMapState {
  mem: P2pdmaProvider | null;
  map: PciP2pdmaMapType;
}

/** A zeroed `struct pci_p2pdma_map_state`. */
export function pciP2pdmaMapStateInit(): PciP2pdmaMapState {
  return { mem: null, map: PciP2pdmaMapType.UNKNOWN };
}

/** Counters that make the kernel's caching observable. */
export interface P2pdmaStats {
  /** `calc_map_type_and_dist` runs (cache misses and distance queries). */
  calcMapType: number;
  /** `__pci_p2pdma_update_state` runs (provider changed in a map state). */
  stateUpdates: number;
}

// Live pagemaps over every topology: lets pciP2pdmaState answer NONE with one branch when no
// machine has published P2P memory (the common case on hot map paths).
let livePagemaps = 0;

const registries = new WeakMap<object, P2pdmaRegistry>();

/**
 * Per-topology P2PDMA bookkeeping: the published pagemaps (phys → provider) and the P2P BARs the
 * switches route by bus address. Lookup tables are sorted typed arrays, rebuilt on registration.
 */
export class P2pdmaRegistry {
  readonly regions: RegionMap;
  /** `cpu_supports_p2pdma()`: e.g. AMD Zen and later, P2P through any root complex is fine. */
  cpuSupportsP2pdma = false;
  readonly stats: P2pdmaStats = { calcMapType: 0, stateUpdates: 0 };
  /** pci_warn / pci_info lines the kernel would print ("0000:01:00.0: ..."). */
  readonly log: string[] = [];

  #pgStart = new Float64Array(0);
  #pgEnd = new Float64Array(0);
  #pgProv: P2pdmaProvider[] = [];
  #pagemaps: P2pdmaPagemap[] = [];

  #rtStart = new Float64Array(0);
  #rtEnd = new Float64Array(0);
  #rtOffset = new Float64Array(0);
  #rtOwner: PciDev[] = [];
  #routes: { bar: PciBar; owner: PciDev }[] = [];
  /** Number of P2P BARs the switches route; p2pRoute returns at once when 0. */
  routeCount = 0;

  constructor(host: DeviceHost, regions: RegionMap) {
    this.regions = regions;
    registries.set(host, this);
  }

  /** Every P2PDMA pagemap registered, sorted by start address. */
  get pagemaps(): readonly P2pdmaPagemap[] {
    return this.#pagemaps;
  }

  /** Logs a warning about a function (the model's pci_warn()). */
  warn(pdev: PciDev, msg: string): void {
    this.log.push(`${pdev.bdf}: ${msg}`);
  }

  /** Registers a P2PDMA pagemap for physical-address look-ups (part of pci_p2pdma_add_resource()). */
  addPagemap(pgmap: P2pdmaPagemap): void {
    this.#pagemaps.push(pgmap);
    this.#pagemaps.sort((a, b) => a.start - b.start);
    const n = this.#pagemaps.length;
    this.#pgStart = new Float64Array(n);
    this.#pgEnd = new Float64Array(n);
    this.#pgProv = [];
    this.#pagemaps.forEach((p, i) => {
      this.#pgStart[i] = p.start;
      this.#pgEnd[i] = p.start + p.size;
      this.#pgProv.push(p.provider);
    });
    livePagemaps++;
  }

  /** Does a pagemap already cover part of `[start, start+size)`? */
  pagemapConflicts(start: number, size: number): boolean {
    return this.#pagemaps.some((p) => start < p.start + p.size && p.start < start + size);
  }

  /** Start routing bus addresses of `bar` to its owner (idempotent). */
  addRoute(owner: PciDev, bar: PciBar): void {
    if (this.#routes.some((r) => r.bar === bar)) return;
    this.#routes.push({ bar, owner });
    this.#routes.sort((a, b) => a.bar.busAddr - b.bar.busAddr);
    const n = this.#routes.length;
    this.#rtStart = new Float64Array(n);
    this.#rtEnd = new Float64Array(n);
    this.#rtOffset = new Float64Array(n);
    this.#rtOwner = [];
    this.#routes.forEach((r, i) => {
      this.#rtStart[i] = r.bar.busAddr;
      this.#rtEnd[i] = r.bar.busAddr + r.bar.size;
      this.#rtOffset[i] = r.bar.busAddr - r.bar.start;
      this.#rtOwner.push(r.owner);
    });
    this.routeCount = n;
  }

  /** The provider whose published pagemap holds `phys` (`page_pgmap(page)->p2pdma_provider`). */
  providerOf(phys: number): P2pdmaProvider | null {
    const i = findRange(this.#pgStart, this.#pgEnd, phys);
    return i < 0 ? null : (this.#pgProv[i] ?? null);
  }

  /**
   * Switch routing: a request from `client` at `busAddr` that hits a P2P BAR reachable with
   * BUS_ADDR never leaves the switch; return the physical address behind it, else -1.
   */
  route(client: PciDev, busAddr: number): number {
    const i = findRange(this.#rtStart, this.#rtEnd, busAddr);
    if (i < 0) return -1;
    const owner = this.#rtOwner[i];
    if (owner === undefined) return -1;
    const p2p = owner.p2pdma;
    if (p2p === null) return -1;
    let t = p2p.mapTypes.get(mapTypesIdx(client));
    if (t === undefined) t = calcMapTypeAndDist(owner, client, false);
    return t === PciP2pdmaMapType.BUS_ADDR ? busAddr - (this.#rtOffset[i] ?? 0) : -1;
  }
}

/** Index of the range holding `x` in sorted, disjoint [start, end) arrays, or -1. */
function findRange(start: Float64Array, end: Float64Array, x: number): number {
  let lo = 0;
  let hi = start.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (x < (start[mid] ?? 0)) hi = mid - 1;
    else if (x >= (end[mid] ?? 0)) lo = mid + 1;
    else return mid;
  }
  return -1;
}

function registryOf(where: Device | DeviceHost): P2pdmaRegistry | undefined {
  return registries.get(where instanceof Device ? where.host : where);
}

/** `map_types_idx(client)` = domain << 16 | bus << 8 | devfn. */
function mapTypesIdx(client: PciDev): number {
  return pciFindHostBridge(client).domain * 0x10000 + client.devId;
}

/**
 * `__host_bridge_whitelist`: is this host bridge on the allow-list, honouring entries that only
 * allow P2P between devices below the same bridge (REQ_SAME_HOST_BRIDGE)?
 */
function hostBridgeAllowed(host: PciHostBridge, sameHostBridge: boolean): boolean {
  if (!host.p2pAllowed) return false;
  return sameHostBridge || !host.p2pRequireSameHostBridge;
}

/** `host_bridge_whitelist(a, b)`. */
function hostBridgeWhitelist(a: PciDev, b: PciDev): boolean {
  const hostA = pciFindHostBridge(a);
  const hostB = pciFindHostBridge(b);
  if (hostA === hostB) return hostBridgeAllowed(hostA, true);
  return hostBridgeAllowed(hostA, false) && hostBridgeAllowed(hostB, false);
}

// Distance of the last calcMapTypeAndDist (an out-parameter without allocating).
let calcDist = 0;

/**
 * `calc_map_type_and_dist`: find the first common upstream bridge; distance = hops from each side.
 * ACS redirect on any port of the path (the common bridge included, as the kernel counts it)
 * sends the traffic through the root complex. Without a common bridge, or with redirect, the
 * host bridge allow-list (or a P2P-capable CPU) decides between THRU_HOST_BRIDGE and NOT_SUPPORTED.
 * The result is cached in the provider's `map_types`.
 */
function calcMapTypeAndDist(provider: PciDev, client: PciDev, verbose: boolean): PciP2pdmaMapType {
  const reg = provider.registry;
  reg.stats.calcMapType++;
  let mapType: PciP2pdmaMapType = PciP2pdmaMapType.THRU_HOST_BRIDGE;
  let acsCnt = 0;
  let acsList = '';
  let distA = 0;
  let distB = 0;
  let common: PciDev | null = null;

  for (let a: PciDev | null = provider; a !== null; a = pciUpstreamBridge(a)) {
    distB = 0;
    if (pciBridgeHasAcsRedir(a)) {
      acsList += `${a.bdf};`;
      acsCnt++;
    }
    let bb: PciDev | null = client;
    while (bb !== null) {
      if (a === bb) break;
      bb = pciUpstreamBridge(bb);
      distB++;
    }
    if (bb !== null) {
      common = a;
      break;
    }
    distA++;
  }

  calcDist = distA + distB;
  let throughHost = true;
  if (common !== null) {
    for (let bb: PciDev | null = client; bb !== null && bb !== common; bb = pciUpstreamBridge(bb)) {
      if (pciBridgeHasAcsRedir(bb)) {
        acsList += `${bb.bdf};`;
        acsCnt++;
      }
    }
    if (acsCnt === 0) {
      mapType = PciP2pdmaMapType.BUS_ADDR;
      throughHost = false;
    } else if (verbose) {
      reg.warn(client, `ACS redirect is set between the client and provider (${provider.bdf})`);
      reg.warn(client, `to disable ACS redirect for this path, add the kernel parameter: pci=disable_acs_redir=${acsList.slice(0, -1)}`);
    }
  }

  if (throughHost && !reg.cpuSupportsP2pdma && !hostBridgeWhitelist(provider, client)) {
    if (verbose) {
      reg.warn(
        client,
        `cannot be used for peer-to-peer DMA as the client and provider (${provider.bdf}) do not share an upstream bridge or whitelisted host bridge`,
      );
    }
    mapType = PciP2pdmaMapType.NOT_SUPPORTED;
  }

  provider.p2pdma?.mapTypes.set(mapTypesIdx(client), mapType);
  return mapType;
}

/**
 * `pci_p2pdma_map_type(provider, dev)`: how `dev` reaches the provider's memory. NOT_SUPPORTED if
 * the provider has no P2PDMA state or the client is not a PCI function; else the cached result,
 * computed on a miss.
 */
export function pciP2pdmaMapType(provider: P2pdmaProvider, dev: Device): PciP2pdmaMapType {
  const pdev = provider.pdev;
  const p2p = pdev.p2pdma;
  if (p2p === null) return PciP2pdmaMapType.NOT_SUPPORTED;
  const client = toPciDev(dev);
  // Model: functions of two different machines can never talk.
  if (client === null || client.registry !== pdev.registry) return PciP2pdmaMapType.NOT_SUPPORTED;
  const t = p2p.mapTypes.get(mapTypesIdx(client));
  if (t !== undefined && t !== PciP2pdmaMapType.UNKNOWN) return t;
  return calcMapTypeAndDist(pdev, client, true);
}

function asPciDev(x: PciDev | Device): PciDev | null {
  return x instanceof PciDev ? x : toPciDev(x);
}

/**
 * `pci_p2pdma_distance_many(provider, clients, num_clients, verbose)`: sum of the distances from
 * the provider to every client, or -1 if any client is not PCI or cannot reach the provider.
 */
export function pciP2pdmaDistanceMany(provider: PciDev | Device, clients: readonly Device[], verbose = false): number {
  const pdev = asPciDev(provider);
  if (pdev === null || clients.length === 0) return -1;
  let notSupported = false;
  let total = 0;
  for (const c of clients) {
    const client = toPciDev(c);
    if (client === null || client.registry !== pdev.registry) {
      if (verbose) pdev.registry.log.push(`${c.name}: cannot be used for peer-to-peer DMA as it is not a PCI device`);
      return -1;
    }
    const map = calcMapTypeAndDist(pdev, client, verbose);
    if (map === PciP2pdmaMapType.NOT_SUPPORTED) notSupported = true;
    if (notSupported && !verbose) break;
    total += calcDist;
  }
  return notSupported ? -1 : total;
}

/** `pci_p2pdma_distance(provider, client, verbose)`. */
export function pciP2pdmaDistance(provider: PciDev | Device, client: Device, verbose = false): number {
  return pciP2pdmaDistanceMany(provider, [client], verbose);
}

/** `pci_p2pdma_bus_addr_map(provider, phys)`: the PCI bus address a peer programs for `phys`. */
export function pciP2pdmaBusAddrMap(provider: P2pdmaProvider, phys: number): number {
  return phys + provider.busOffset;
}

/**
 * The provider whose published P2PDMA memory holds `phys` (`page_pgmap(page)->p2pdma_provider`),
 * or null for RAM and unpublished BAR space. `where` is the machine or any device on it.
 */
export function pciP2pdmaProviderOf(where: Device | DeviceHost, phys: number): P2pdmaProvider | null {
  if (livePagemaps === 0) return null;
  return registryOf(where)?.providerOf(phys) ?? null;
}

/** `is_pci_p2pdma_page(page)` for the page holding `phys`. */
export function isPciP2pdmaPage(where: Device | DeviceHost, phys: number): boolean {
  return pciP2pdmaProviderOf(where, phys) !== null;
}

/**
 * `pci_p2pdma_state(state, dev, page)`: NONE for ordinary memory; for P2PDMA memory the map type
 * towards `dev`, recomputed only when the page's provider differs from `state.mem`.
 */
export function pciP2pdmaState(state: PciP2pdmaMapState, dev: Device, phys: number): PciP2pdmaMapType {
  if (livePagemaps === 0) return PciP2pdmaMapType.NONE;
  const reg = registries.get(dev.host);
  const provider = reg === undefined ? null : reg.providerOf(phys);
  if (provider === null) return PciP2pdmaMapType.NONE;
  if (state.mem !== provider) {
    // __pci_p2pdma_update_state
    provider.pdev.registry.stats.stateUpdates++;
    state.mem = provider;
    state.map = pciP2pdmaMapType(provider, dev);
  }
  return state.map;
}

/** `pcim_p2pdma_init(pdev)`: set up `pdev->p2pdma` with one provider per memory BAR. Returns 0. */
export function pcimP2pdmaInit(pdev: PciDev): number {
  if (pdev.p2pdma !== null) return 0;
  const p2p = new PciP2pdma();
  for (const bar of pdev.bars) p2p.mem[bar.index] = new P2pdmaProvider(pdev, bar);
  pdev.p2pdma = p2p;
  return 0;
}

/** `pcim_p2pdma_provider(pdev, bar)`: the BAR's provider, or null (not a memory BAR, or no init). */
export function pcimP2pdmaProvider(pdev: PciDev, bar: number): P2pdmaProvider | null {
  if (pdev.bar(bar) === undefined) return null;
  return pdev.p2pdma?.mem[bar] ?? null;
}

/**
 * `pci_p2pdma_add_resource(pdev, bar, size, offset)`: publish `[offset, offset+size)` of a memory
 * BAR as P2PDMA pages (size 0 = to the end of the BAR). Returns 0 or a negative errno.
 */
export function pciP2pdmaAddResource(pdev: PciDev, bar: number, size: number, offset: number): number {
  const b = Number.isInteger(bar) ? pdev.bar(bar) : undefined;
  if (b === undefined) return -Errno.EINVAL; // !(pci_resource_flags(pdev, bar) & IORESOURCE_MEM)
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || offset < 0 || size < 0) return -Errno.EINVAL;
  if (offset >= b.size) return -Errno.EINVAL;
  const len = size === 0 ? b.size - offset : size;
  if (len + offset > b.size) return -Errno.EINVAL;
  // Model: memremap_pages works on whole pages.
  if (!isAligned(offset, PAGE_SIZE) || !isAligned(len, PAGE_SIZE)) return -Errno.EINVAL;
  const reg = pdev.registry;
  const start = b.start + offset;
  // kernel: mm/memremap.c pagemap_range: "Conflicting mapping in same section" → -ENOMEM
  if (reg.pagemapConflicts(start, len)) return -Errno.ENOMEM;
  const err = pcimP2pdmaInit(pdev);
  if (err !== 0) return err;
  const provider = pcimP2pdmaProvider(pdev, bar);
  const p2p = pdev.p2pdma;
  if (provider === null || p2p === null) return -Errno.EINVAL;

  // The BAR now holds memory peers may DMA to: its region becomes 'p2p-bar'.
  if (b.region.kind !== 'p2p-bar') {
    const old = b.region;
    reg.regions.remove(old);
    b.region = reg.regions.add({ start: old.start, size: old.size, kind: 'p2p-bar', name: old.name, ...(old.owner === undefined ? {} : { owner: old.owner }) });
  }
  const pgmap: P2pdmaPagemap = { start, size: len, provider };
  p2p.pagemaps.push(pgmap);
  reg.addPagemap(pgmap);
  reg.addRoute(pdev, b);
  reg.log.push(`${pdev.bdf}: added peer-to-peer DMA memory 0x${start.toString(16)}-0x${(start + len - 1).toString(16)}`);
  return 0;
}

/** `pci_p2pmem_publish(pdev, publish)`. */
export function pciP2pmemPublish(pdev: PciDev, publish: boolean): void {
  if (pdev.p2pdma !== null) pdev.p2pdma.p2pmemPublished = publish;
}

/** `pci_has_p2pmem(pdev)`: published P2P memory exists. */
export function pciHasP2pmem(pdev: PciDev): boolean {
  return pdev.p2pdma !== null && pdev.p2pdma.p2pmemPublished && pdev.p2pdma.pagemaps.length > 0;
}

/**
 * The smallest PCI topology with a peer-to-peer route: a GPU-like provider with a P2P BAR and a
 * client device below the two downstream ports of one switch.
 *
 *   host bridge ── root port ── switch ─┬─ provider (BAR 0: P2P memory)
 *                                       └─ client
 *
 * With ACS redirect off, the client reaches the BAR through the switch (PCI_P2PDMA_MAP_BUS_ADDR);
 * with it on, traffic goes up to the host bridge, which forwards it only when allow-listed
 * (THRU_HOST_BRIDGE, else NOT_SUPPORTED). kernel: drivers/pci/p2pdma.c, calc_map_type_and_dist().
 */
import { SZ_1M, createMachine, toPciDev } from '@dmakit/dma-core';
import type { Device, DmaDebugMode, Machine } from '@dmakit/dma-core';

/** Options of {@link buildP2pSwitch}. */
export interface P2pSwitchOptions {
  /** ACS P2P Request Redirect on the switch's downstream ports (default false). */
  readonly acs?: boolean;
  /** The host bridge is on the P2P allow-list (default true). */
  readonly allowed?: boolean;
  /** Name of the client device (default 'client'). */
  readonly clientName?: string;
  /** Size of the provider's P2P BAR (default 1 MiB). */
  readonly barBytes?: number;
  /** dma-debug mode of the machine (default 'strict'). */
  readonly dmaDebug?: DmaDebugMode;
}

/** What {@link buildP2pSwitch} built. */
export interface P2pSwitch {
  readonly machine: Machine;
  /** The device exposing P2P memory (named 'gpu'). */
  readonly provider: Device;
  /** The device that DMAs into the provider's BAR. */
  readonly client: Device;
  /** CPU physical address of the provider's BAR 0. */
  readonly barPhys: number;
}

/** Build the topology drawn in the module comment on a fresh machine. */
export function buildP2pSwitch(opts: P2pSwitchOptions = {}): P2pSwitch {
  const machine = createMachine({ dmaDebug: opts.dmaDebug ?? 'strict' });
  const hb = machine.pci.addHostBridge({ p2pAllowed: opts.allowed ?? true });
  const sw = machine.pci.addSwitch(machine.pci.addRootPort(hb), { downstreamPorts: 2, acsRedirect: opts.acs ?? false });
  const [d0, d1] = sw.downstreamPorts;
  if (d0 === undefined || d1 === undefined) throw new Error('switch without two downstream ports');
  const provider = machine.pci.addDevice({ name: 'gpu', parent: d0, dmaMaskBits: 64, bars: [{ size: opts.barBytes ?? SZ_1M, prefetch: true, p2p: true }] });
  const client = machine.pci.addDevice({ name: opts.clientName ?? 'client', parent: d1, dmaMaskBits: 64 });
  const bar = toPciDev(provider)?.bar(0);
  if (bar === undefined) throw new Error('provider without BAR 0');
  return { machine, provider, client, barPhys: bar.start };
}

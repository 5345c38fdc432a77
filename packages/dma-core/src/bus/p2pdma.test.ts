// Scenarios of kernel-core.md 7.3 (calc_map_type_and_dist) and 7.2 (pci_p2pdma_state caching).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  Device,
  PCI_ACS_RR,
  PciP2pdmaMapType,
  SZ_1M,
  createMachine,
  isPciP2pdmaPage,
  pciP2pdmaBusAddrMap,
  pciP2pdmaDistance,
  pciP2pdmaDistanceMany,
  pciP2pdmaMapStateInit,
  pciP2pdmaMapType,
  pciP2pdmaProviderOf,
  pciP2pdmaState,
  pcimP2pdmaProvider,
  toPciDev,
  Errno,
  pciP2pdmaAddResource,
  PAGE_SIZE,
} from '@dmakit/dma-core';
import type { Machine, P2pdmaProvider, PciDev, PciHostBridgeOptions } from '@dmakit/dma-core';

const { NONE, NOT_SUPPORTED, BUS_ADDR, THRU_HOST_BRIDGE } = PciP2pdmaMapType;

function pdevOf(dev: Device): PciDev {
  const p = toPciDev(dev);
  if (p === null) throw new Error('not a PCI device');
  return p;
}

/** The provider of BAR0 of `dev` (published with `p2p: true`). */
function providerOf(dev: Device, bar = 0): P2pdmaProvider {
  const p = pcimP2pdmaProvider(pdevOf(dev), bar);
  if (p === null) throw new Error('no provider');
  return p;
}

const P2P_BAR = [{ size: SZ_1M, prefetch: true, p2p: true }] as const;

/** Two endpoints below one switch; `acs` sets ACS redirect on the downstream ports. */
function switchPair(opts: { acs?: boolean; hb?: PciHostBridgeOptions } = {}): { m: Machine; gpu: Device; nvme: Device } {
  const m = createMachine();
  const hb = m.pci.addHostBridge(opts.hb);
  const rp = m.pci.addRootPort(hb);
  const sw = m.pci.addSwitch(rp, { downstreamPorts: 2, acsRedirect: opts.acs ?? false });
  const [d0, d1] = sw.downstreamPorts;
  if (d0 === undefined || d1 === undefined) throw new Error('switch');
  const gpu = m.pci.addDevice({ name: 'gpu', parent: d0, dmaMaskBits: 64, bars: [...P2P_BAR] });
  const nvme = m.pci.addDevice({ name: 'nvme', parent: d1, dmaMaskBits: 64 });
  return { m, gpu, nvme };
}

describe('pciP2pdmaMapType / pciP2pdmaDistance (calc_map_type_and_dist)', () => {
  it('same function: BUS_ADDR, distance 0', () => {
    const m = createMachine();
    const gpu = m.pci.addDevice({ name: 'gpu', bars: [...P2P_BAR] });
    expect(pciP2pdmaMapType(providerOf(gpu), gpu)).toBe(BUS_ADDR);
    expect(pciP2pdmaDistance(gpu, gpu)).toBe(0);
  });

  it('two functions of one device: BUS_ADDR, distance 2', () => {
    const m = createMachine();
    const rp = m.pci.addRootPort();
    const f0 = m.pci.addDevice({ name: 'f0', parent: rp, bars: [...P2P_BAR] });
    const f1 = m.pci.addDevice({ name: 'f1', parent: rp, function: 1 });
    expect(pdevOf(f1).bdf.endsWith('.1')).toBe(true);
    expect(pciP2pdmaMapType(providerOf(f0), f1)).toBe(BUS_ADDR);
    expect(pciP2pdmaDistance(f0, f1)).toBe(2);
  });

  it('two devices under one switch: BUS_ADDR, distance 4', () => {
    const { gpu, nvme } = switchPair();
    expect(pciP2pdmaMapType(providerOf(gpu), nvme)).toBe(BUS_ADDR);
    expect(pciP2pdmaDistance(gpu, nvme)).toBe(4);
    expect(pciP2pdmaDistanceMany(gpu, [nvme, gpu])).toBe(4);
  });

  it('ACS redirect on the switch downstream ports: THRU_HOST_BRIDGE if allowed, else NOT_SUPPORTED', () => {
    const allowed = switchPair({ acs: true, hb: { p2pAllowed: true } });
    expect(pciP2pdmaMapType(providerOf(allowed.gpu), allowed.nvme)).toBe(THRU_HOST_BRIDGE);
    expect(pciP2pdmaDistance(allowed.gpu, allowed.nvme)).toBe(4);
    expect(allowed.m.pci.log.some((l) => l.includes('ACS redirect is set'))).toBe(true);

    const denied = switchPair({ acs: true });
    expect(pciP2pdmaMapType(providerOf(denied.gpu), denied.nvme)).toBe(NOT_SUPPORTED);
    expect(pciP2pdmaDistance(denied.gpu, denied.nvme)).toBe(-1);
    expect(denied.m.pci.log.some((l) => l.includes('do not share an upstream bridge'))).toBe(true);
  });

  it('pci=disable_acs_redir (setAcsCtrl) flushes cached map types', () => {
    const { m, gpu, nvme } = switchPair({ acs: true });
    expect(pciP2pdmaMapType(providerOf(gpu), nvme)).toBe(NOT_SUPPORTED);
    for (const f of m.pci.functions) if (f.acsCtrl & PCI_ACS_RR) m.pci.setAcsCtrl(f, 0);
    expect(pciP2pdmaMapType(providerOf(gpu), nvme)).toBe(BUS_ADDR);
  });

  it('different root ports: THRU_HOST_BRIDGE under an allowed host bridge, else NOT_SUPPORTED', () => {
    for (const p2pAllowed of [true, false]) {
      const m = createMachine();
      const hb = m.pci.addHostBridge({ p2pAllowed });
      const a = m.pci.addDevice({ name: 'a', parent: m.pci.addRootPort(hb), bars: [...P2P_BAR] });
      const b = m.pci.addDevice({ name: 'b', parent: m.pci.addRootPort(hb) });
      expect(pciP2pdmaMapType(providerOf(a), b)).toBe(p2pAllowed ? THRU_HOST_BRIDGE : NOT_SUPPORTED);
      expect(pciP2pdmaDistance(a, b)).toBe(p2pAllowed ? 4 : -1);
    }
  });

  it('a CPU that supports P2P (cpu_supports_p2pdma) allows any root complex', () => {
    const m = createMachine();
    m.pci.cpuSupportsP2pdma = true;
    const a = m.pci.addDevice({ name: 'a', bars: [...P2P_BAR] });
    const b = m.pci.addDevice({ name: 'b' });
    expect(pciP2pdmaMapType(providerOf(a), b)).toBe(THRU_HOST_BRIDGE);
  });

  it('different host bridges: both allow-listed → THRU_HOST_BRIDGE; REQ_SAME_HOST_BRIDGE entries refuse', () => {
    const cases: [PciHostBridgeOptions, PciHostBridgeOptions, number][] = [
      [{ p2pAllowed: true }, { p2pAllowed: true }, THRU_HOST_BRIDGE],
      [{ p2pAllowed: true }, { p2pAllowed: false }, NOT_SUPPORTED],
      [{ p2pAllowed: true, p2pRequireSameHostBridge: true }, { p2pAllowed: true }, NOT_SUPPORTED],
    ];
    for (const [o0, o1, want] of cases) {
      const m = createMachine();
      const h0 = m.pci.addHostBridge(o0);
      const h1 = m.pci.addHostBridge(o1);
      const a = m.pci.addDevice({ name: 'a', parent: m.pci.addRootPort(h0), bars: [...P2P_BAR] });
      const b = m.pci.addDevice({ name: 'b', parent: m.pci.addRootPort(h1) });
      expect(pdevOf(b).bdf.startsWith('0001:')).toBe(true);
      expect(pciP2pdmaMapType(providerOf(a), b)).toBe(want);
    }
    // REQ_SAME_HOST_BRIDGE is fine when both sit below that bridge.
    const m = createMachine();
    const h = m.pci.addHostBridge({ p2pAllowed: true, p2pRequireSameHostBridge: true });
    const a = m.pci.addDevice({ name: 'a', parent: m.pci.addRootPort(h), bars: [...P2P_BAR] });
    const b = m.pci.addDevice({ name: 'b', parent: m.pci.addRootPort(h) });
    expect(pciP2pdmaMapType(providerOf(a), b)).toBe(THRU_HOST_BRIDGE);
  });

  it('a client that is not a PCI device: NOT_SUPPORTED, distance -1', () => {
    const m = createMachine();
    const gpu = m.pci.addDevice({ name: 'gpu', bars: [...P2P_BAR] });
    const platform = new Device(m, { name: 'platform-dma' });
    expect(pciP2pdmaMapType(providerOf(gpu), platform)).toBe(NOT_SUPPORTED);
    expect(pciP2pdmaDistance(gpu, platform)).toBe(-1);
    expect(pciP2pdmaDistanceMany(gpu, [])).toBe(-1);
    expect(m.pci.p2pRoute(platform, providerOf(gpu).bar.busAddr)).toBe(-1);
  });

  it('caches the map type per (provider, client) like the kernel xarray', () => {
    const { m, gpu, nvme } = switchPair();
    const before = m.pci.p2pdmaStats.calcMapType;
    pciP2pdmaMapType(providerOf(gpu), nvme);
    pciP2pdmaMapType(providerOf(gpu), nvme);
    pciP2pdmaMapType(providerOf(gpu), nvme);
    expect(m.pci.p2pdmaStats.calcMapType - before).toBe(1);
    pciP2pdmaMapType(providerOf(gpu), gpu);
    expect(m.pci.p2pdmaStats.calcMapType - before).toBe(2);
  });

  it('map type and distance are symmetric and BUS_ADDR iff a common bridge without ACS (property)', () => {
    // Random trees: root ports, some with a switch; devices (and extra functions) on the leaf ports.
    const arb = fc.record({
      ports: fc.array(fc.record({ dsps: fc.integer({ min: 0, max: 3 }), acs: fc.boolean() }), { minLength: 1, maxLength: 3 }),
      devs: fc.array(fc.record({ at: fc.nat(), fn: fc.boolean() }), { minLength: 2, maxLength: 6 }),
      allowed: fc.boolean(),
    });
    fc.assert(
      fc.property(arb, ({ ports, devs: places, allowed }) => {
        const m = createMachine({ swiotlbBytes: 0 });
        const hb = m.pci.addHostBridge({ p2pAllowed: allowed });
        const leaves: PciDev[] = [];
        for (const p of ports) {
          if (p.dsps === 0) leaves.push(m.pci.addRootPort(hb, { acsRedirect: p.acs }));
          else leaves.push(...m.pci.addSwitch(m.pci.addRootPort(hb), { downstreamPorts: p.dsps, acsRedirect: p.acs }).downstreamPorts);
        }
        const devs: Device[] = [];
        places.forEach((p, i) => {
          const leaf = leaves[p.at % leaves.length];
          if (leaf === undefined) return;
          const taken = leaf.subordinate?.devices.length ?? 0;
          if (taken > 0 && !p.fn) return;
          devs.push(m.pci.addDevice({ name: `d${i}`, parent: leaf, bars: [{ size: 64 * 1024, prefetch: true, p2p: true }] }));
        });
        for (const a of devs) {
          for (const b of devs) {
            const ab = pciP2pdmaMapType(providerOf(a), b);
            const ba = pciP2pdmaMapType(providerOf(b), a);
            expect(ab).toBe(ba);
            expect(pciP2pdmaDistance(a, b)).toBe(pciP2pdmaDistance(b, a));
            if (ab === NOT_SUPPORTED) expect(pciP2pdmaDistance(a, b)).toBe(-1);
            // The switch forwards exactly the BUS_ADDR pairs.
            const bus = providerOf(a).bar.busAddr;
            expect(m.pci.p2pRoute(b, bus) >= 0).toBe(ab === BUS_ADDR);
          }
        }
      }),
      { numRuns: 60 },
    );
  });
});

describe('pciP2pdmaState (struct pci_p2pdma_map_state)', () => {
  it('NONE for RAM; recomputes only when the provider changes', () => {
    const m = createMachine();
    const rp = m.pci.addRootPort();
    const sw = m.pci.addSwitch(rp, { downstreamPorts: 3 });
    const [d0, d1, d2] = sw.downstreamPorts;
    if (d0 === undefined || d1 === undefined || d2 === undefined) throw new Error('switch');
    const gpu = m.pci.addDevice({ name: 'gpu', parent: d0, bars: [...P2P_BAR] });
    const nic = m.pci.addDevice({ name: 'nic', parent: d1, bars: [...P2P_BAR] });
    const nvme = m.pci.addDevice({ name: 'nvme', parent: d2 });
    const st = pciP2pdmaMapStateInit();
    const ram = m.memory.allocPages(0);
    expect(pciP2pdmaState(st, nvme, ram)).toBe(NONE);
    expect(st.mem).toBeNull();

    const g = providerOf(gpu);
    const gPhys = g.bar.start;
    expect(pciP2pdmaState(st, nvme, gPhys)).toBe(BUS_ADDR);
    expect(st.mem).toBe(g);
    expect(m.pci.p2pdmaStats.stateUpdates).toBe(1);
    // Same provider: the cached answer is returned as is (the kernel does not look again).
    st.map = THRU_HOST_BRIDGE;
    expect(pciP2pdmaState(st, nvme, gPhys + PAGE_SIZE)).toBe(THRU_HOST_BRIDGE);
    expect(m.pci.p2pdmaStats.stateUpdates).toBe(1);
    // RAM in between does not disturb the cache.
    expect(pciP2pdmaState(st, nvme, ram)).toBe(NONE);
    expect(st.mem).toBe(g);
    // A different provider: recomputed.
    expect(pciP2pdmaState(st, nvme, providerOf(nic).bar.start)).toBe(BUS_ADDR);
    expect(st.mem).toBe(providerOf(nic));
    expect(m.pci.p2pdmaStats.stateUpdates).toBe(2);
  });

  it('pciP2pdmaBusAddrMap adds the host bridge offset; providerOf/isPciP2pdmaPage see published ranges only', () => {
    const m = createMachine();
    const hb = m.pci.addHostBridge({ busOffset: -0x100_0000_0000 + 0x80_0000_0000 });
    const gpu = m.pci.addDevice({ name: 'gpu', parent: m.pci.addRootPort(hb), bars: [{ size: 4 * SZ_1M, prefetch: true }] });
    const pdev = pdevOf(gpu);
    const bar = pdev.bar(0);
    if (bar === undefined) throw new Error('bar');
    expect(bar.region.kind).toBe('mmio');
    expect(isPciP2pdmaPage(m, bar.start)).toBe(false);
    // Publish the second MiB only.
    expect(pciP2pdmaAddResource(pdev, 0, SZ_1M, SZ_1M)).toBe(0);
    expect(bar.region.kind).toBe('p2p-bar');
    expect(m.memory.regions.find(bar.start)?.kind).toBe('p2p-bar');
    expect(isPciP2pdmaPage(gpu, bar.start)).toBe(false);
    expect(isPciP2pdmaPage(gpu, bar.start + SZ_1M)).toBe(true);
    expect(isPciP2pdmaPage(gpu, bar.start + 2 * SZ_1M)).toBe(false);
    const prov = pciP2pdmaProviderOf(m, bar.start + SZ_1M + 5);
    expect(prov).toBe(providerOf(gpu));
    expect(prov?.busOffset).toBe(-0x80_0000_0000);
    if (prov === null) throw new Error('provider');
    expect(pciP2pdmaBusAddrMap(prov, bar.start + SZ_1M)).toBe(bar.start + SZ_1M - 0x80_0000_0000);
    expect(prov.owner).toBe(gpu);
  });

  it('pciP2pdmaAddResource rejects bad arguments with -errno', () => {
    const m = createMachine();
    const gpu = m.pci.addDevice({ name: 'gpu', bars: [{ size: SZ_1M, prefetch: true }] });
    const pdev = pdevOf(gpu);
    expect(pciP2pdmaAddResource(pdev, 3, 0, 0)).toBe(-Errno.EINVAL); // no BAR3
    expect(pciP2pdmaAddResource(pdev, 0, 0, SZ_1M)).toBe(-Errno.EINVAL); // offset >= len
    expect(pciP2pdmaAddResource(pdev, 0, SZ_1M, PAGE_SIZE)).toBe(-Errno.EINVAL); // past the end
    expect(pciP2pdmaAddResource(pdev, 0, 100, 0)).toBe(-Errno.EINVAL); // not whole pages
    expect(pciP2pdmaAddResource(pdev, 0, 0, 0)).toBe(0);
    expect(pciP2pdmaAddResource(pdev, 0, PAGE_SIZE, 0)).toBe(-Errno.ENOMEM); // conflicting pagemap
    expect(m.pci.log.some((l) => l.includes('added peer-to-peer DMA memory'))).toBe(true);
  });
});

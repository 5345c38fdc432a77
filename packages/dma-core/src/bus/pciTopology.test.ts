import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  DmaFaultError,
  Errno,
  PCI_MMIO32_END,
  PCI_MMIO32_START,
  PCI_MMIO64_START,
  PciExpType,
  PciTopologyError,
  SZ_1M,
  createMachine,
  pciUpstreamBridge,
  pcimP2pdmaProvider,
  toPciDev,
} from '@dmakit/dma-core';
import type { Device, PciDev } from '@dmakit/dma-core';

function pdevOf(dev: Device): PciDev {
  const p = toPciDev(dev);
  if (p === null) throw new Error('not a PCI device');
  return p;
}

function expectPciError(fn: () => unknown, errno: number): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PciTopologyError);
    expect((e as PciTopologyError).errno).toBe(-errno);
    return;
  }
  throw new Error('expected a PciTopologyError');
}

describe('PciTopology: enumeration', () => {
  it('puts a device added without placement on its own root port under host bridge 0', () => {
    const m = createMachine();
    const a = m.pci.addDevice({ name: 'nic0', dmaMaskBits: 64 });
    const b = m.pci.addDevice({ name: 'nic1' });
    expect(m.pci.devices).toEqual([a, b]);
    expect(m.pci.hostBridges).toHaveLength(1);
    const pa = pdevOf(a);
    expect(pa.bdf).toBe('0000:01:00.0');
    expect(pdevOf(b).bdf).toBe('0000:02:00.0');
    const rp = pciUpstreamBridge(pa);
    expect(rp?.pcieType).toBe(PciExpType.ROOT_PORT);
    expect(rp?.bdf).toBe('0000:00:01.0');
    expect(rp === null ? null : pciUpstreamBridge(rp)).toBeNull();
    expect(a.dmaMaskBits).toBe(64);
    expect(m.pci.device('nic1')).toBe(b);
    expect(m.pci.findByBdf('0000:02:00.0')).toBe(pdevOf(b));
  });

  it('numbers switch ports and endpoints with unique bus numbers per domain', () => {
    const m = createMachine();
    const hb1 = m.pci.addHostBridge();
    const hb2 = m.pci.addHostBridge({ domain: 5 });
    const sw = m.pci.addSwitch(m.pci.addRootPort(hb1), { downstreamPorts: 2 });
    expect(sw.upstreamPort.bdf).toBe('0000:01:00.0');
    expect(sw.downstreamPorts.map((p) => p.bdf)).toEqual(['0000:02:00.0', '0000:02:01.0']);
    const [d0] = sw.downstreamPorts;
    if (d0 === undefined) throw new Error('switch');
    const f0 = m.pci.addDevice({ name: 'f0', parent: d0 });
    const f1 = m.pci.addDevice({ name: 'f1', parent: d0 });
    expect(pdevOf(f0).bdf).toBe('0000:03:00.0');
    expect(pdevOf(f1).bdf).toBe('0000:03:00.1');
    const rcie = m.pci.addDevice({ name: 'rciep', parent: hb2 });
    expect(pdevOf(rcie).bdf).toBe('0005:00:01.0');
    expect(pdevOf(rcie).pcieType).toBe(PciExpType.RC_END);
    expect(pciUpstreamBridge(pdevOf(rcie))).toBeNull();
    const bdfs = m.pci.functions.map((f) => f.bdf);
    expect(new Set(bdfs).size).toBe(bdfs.length);
  });
});

describe('PciTopology: BARs', () => {
  it('places BARs naturally aligned in the 32-bit and 64-bit windows and registers their regions', () => {
    const m = createMachine({ ramBytes: 8 * 1024 * SZ_1M });
    const dev = m.pci.addDevice({
      name: 'gpu',
      bars: [{ size: 16 * 1024 }, { size: 256 * SZ_1M, prefetch: true, p2p: true }, { size: 32 * SZ_1M, prefetch: true }],
    });
    const pdev = pdevOf(dev);
    expect(pdev.bars.map((b) => b.index)).toEqual([0, 1, 3]);
    const [regs, vram, aux] = pdev.bars;
    if (regs === undefined || vram === undefined || aux === undefined) throw new Error('bars');
    expect(regs.start).toBeGreaterThanOrEqual(PCI_MMIO32_START);
    expect(regs.start + regs.size).toBeLessThanOrEqual(PCI_MMIO32_END);
    expect(regs.region.kind).toBe('mmio');
    expect(vram.start).toBeGreaterThanOrEqual(PCI_MMIO64_START);
    expect(vram.region.kind).toBe('p2p-bar');
    expect(aux.region.kind).toBe('mmio');
    for (const b of pdev.bars) {
      expect(b.start % b.size).toBe(0);
      expect(b.busAddr).toBe(b.start);
      expect(m.memory.regions.find(b.start)).toBe(b.region);
      expect(b.region.owner).toBe('gpu');
    }
    expect(pcimP2pdmaProvider(pdev, 1)?.bar).toBe(vram);
    // BAR memory published for P2P is reachable by DMA; register BARs are not.
    expect(m.physAccessible(vram.start, 64)).toBe(true);
    expect(m.physAccessible(regs.start, 64)).toBe(false);
  });

  it('never overlaps BARs or RAM (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ log2: fc.integer({ min: 4, max: 28 }), prefetch: fc.boolean() }), { minLength: 1, maxLength: 12 }),
        (bars) => {
          const m = createMachine({ swiotlbBytes: 0 });
          bars.forEach((b, i) => {
            m.pci.addDevice({ name: `d${i}`, bars: [{ size: 2 ** b.log2, prefetch: b.prefetch }] });
          });
          const all = m.pci.functions.flatMap((f) => f.bars);
          expect(all).toHaveLength(bars.length);
          const rs = [...m.memory.regions.all];
          for (let i = 1; i < rs.length; i++) {
            const prev = rs[i - 1];
            const cur = rs[i];
            if (prev === undefined || cur === undefined) continue;
            expect(prev.start + prev.size).toBeLessThanOrEqual(cur.start);
          }
          for (const b of all) expect(b.start % b.size).toBe(0);
        },
      ),
      { numRuns: 50 },
    );
  });

  it('rejects bad input with typed errors and leaves nothing behind', () => {
    const m = createMachine();
    m.pci.addDevice({ name: 'nvme0' });
    const regionsBefore = m.memory.regions.all.length;
    const functionsBefore = m.pci.functions.length;
    expectPciError(() => m.pci.addDevice({ name: 'nvme0' }), Errno.EEXIST);
    expectPciError(() => m.pci.addDevice({ name: 'x', bars: [{ size: 3000 }] }), Errno.EINVAL);
    expectPciError(() => m.pci.addDevice({ name: 'x', bars: [{ size: 8 }] }), Errno.EINVAL);
    expectPciError(() => m.pci.addDevice({ name: 'x', bars: [{ size: 2 * 1024 * SZ_1M }] }), Errno.ENOSPC); // 32-bit window is 1 GiB
    expectPciError(
      () => m.pci.addDevice({ name: 'x', bars: [1, 2, 3, 4].map(() => ({ size: SZ_1M, prefetch: true })) }),
      Errno.ENOSPC, // four 64-bit BARs need 8 slots
    );
    const rp = m.pci.addRootPort();
    expectPciError(() => m.pci.addDevice({ name: 'x', parent: rp, function: 1 }), Errno.ENODEV);
    expectPciError(() => m.pci.addDevice({ name: 'x', parent: rp, function: 9 }), Errno.EINVAL);
    expectPciError(() => m.pci.addSwitch(rp, { downstreamPorts: 0 }), Errno.EINVAL);
    const ep = m.pci.addDevice({ name: 'ep', parent: rp });
    expectPciError(() => m.pci.addDevice({ name: 'x', parent: pdevOf(ep) }), Errno.EINVAL); // not a port
    expectPciError(() => m.pci.addSwitch(rp, { downstreamPorts: 2 }), Errno.EBUSY);
    expectPciError(() => m.pci.addHostBridge({ domain: 0 }), Errno.EEXIST);
    const other = createMachine();
    expectPciError(() => m.pci.addRootPort(other.pci.defaultHostBridge()), Errno.EINVAL);
    expect(m.memory.regions.all.length).toBe(regionsBefore);
    expect(m.pci.functions.length).toBe(functionsBefore + 2); // the root port and 'ep' only
    expect(m.pci.devices.map((d) => d.name)).toEqual(['nvme0', 'ep']);
  });
});

describe('PciTopology: peer-to-peer DMA through the switch (p2pRoute)', () => {
  function build(opts: { acs?: boolean; busOffset?: number; p2pAllowed?: boolean }) {
    const m = createMachine();
    const hb = m.pci.addHostBridge({ busOffset: opts.busOffset ?? 0, p2pAllowed: opts.p2pAllowed ?? false });
    const sw = m.pci.addSwitch(m.pci.addRootPort(hb), { downstreamPorts: 2, acsRedirect: opts.acs ?? false });
    const [d0, d1] = sw.downstreamPorts;
    if (d0 === undefined || d1 === undefined) throw new Error('switch');
    const gpu = m.pci.addDevice({ name: 'gpu', parent: d0, dmaMaskBits: 64, bars: [{ size: 64 * SZ_1M, prefetch: true, p2p: true }] });
    const nvme = m.pci.addDevice({ name: 'nvme', parent: d1, dmaMaskBits: 64 });
    const bar = pdevOf(gpu).bars[0];
    if (bar === undefined) throw new Error('bar');
    return { m, gpu, nvme, bar };
  }

  it('a device writes into a peer BAR by bus address; the bytes land behind the BAR', () => {
    const { m, nvme, bar } = build({ busOffset: -(2 ** 39) });
    expect(bar.busAddr).toBe(bar.start - 2 ** 39);
    const bytes = Uint8Array.from({ length: 10000 }, (_, i) => i & 0xff);
    nvme.dmaWrite(bar.busAddr + 4000, bytes);
    expect([...m.memory.read(bar.start + 4000, bytes.length)]).toEqual([...bytes]);
    expect([...nvme.dmaRead(bar.busAddr + 4000, 16)]).toEqual([...bytes.subarray(0, 16)]);
    expect(m.pci.p2pRoute(nvme, bar.busAddr)).toBe(bar.start);
    expect(m.pci.p2pRoute(nvme, bar.busAddr + bar.size)).toBe(-1);
    expect(m.faults).toHaveLength(0);
  });

  it('does not route when ACS redirects the request up to the root complex', () => {
    const { m, nvme, bar } = build({ acs: true, busOffset: -(2 ** 39), p2pAllowed: true });
    expect(m.pci.p2pRoute(nvme, bar.busAddr)).toBe(-1);
    // dma-direct then treats the bus address as a physical address: nothing is there.
    expect(() => {
      nvme.dmaWrite(bar.busAddr, new Uint8Array(8));
    }).toThrow(DmaFaultError);
  });

  it('costs nothing when the machine has no P2P BAR', () => {
    const m = createMachine();
    const a = m.pci.addDevice({ name: 'a', bars: [{ size: SZ_1M, prefetch: true }] });
    const bar = pdevOf(a).bars[0];
    expect(bar && m.pci.p2pRoute(a, bar.busAddr)).toBe(-1);
  });
});

import { describe, expect, it } from 'vitest';
import { DmaFaultError, PAGE_SIZE, PciTopologyError, SZ_1G, SZ_1M, createMachine } from '@dmakit/dma-core';

function refusal(fn: () => void): DmaFaultError {
  try {
    fn();
  } catch (e) {
    if (e instanceof DmaFaultError) return e;
    throw e;
  }
  throw new Error('the access was not refused');
}

describe('device DMA port (dma-direct)', () => {
  it('reads back what it wrote inside one page and across pages, and counts the accesses', () => {
    const m = createMachine({ ramBytes: SZ_1G, dmaDebug: 'off' });
    const dev = m.pci.addDevice({ name: 'nic0', dmaMaskBits: 64 });
    const p = m.memory.allocPages(1);
    const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 3 + 1) & 0xff);
    dev.dmaWrite(p + 16, bytes, 0, 8); // one page
    dev.dmaWrite(p + PAGE_SIZE - 100, bytes); // crosses into the next page
    const out = new Uint8Array(10).fill(0xee);
    dev.dmaReadInto(p + 16, out, 2, 8);
    expect([...out]).toEqual([0xee, 0xee, ...bytes.subarray(0, 8)]);
    expect(dev.dmaRead(p + PAGE_SIZE - 100, 300)).toEqual(bytes);
    expect(dev.portStats).toMatchObject({ reads: 2, writes: 2, bytesRead: 308, bytesWritten: 308, faults: 0 });
  });

  it('refuses an address above the DMA mask and a range with no memory behind it, moving no byte', () => {
    const m = createMachine({ ramBytes: SZ_1G, dmaDebug: 'off' });
    const dev = m.pci.addDevice({ name: 'nic0', dmaMaskBits: 32 });
    const above = refusal(() => dev.dmaRead(2 ** 32, 8));
    expect(above.record).toMatchObject({ device: 'nic0', dmaAddr: 2 ** 32, len: 8, access: 'read', reasonName: 'out-of-range', backend: 'direct', detail: 'translation refused' });
    m.memory.addRegion({ start: 0xf000_0000, size: SZ_1M, kind: 'mmio', name: 'nic0 BAR0', owner: 'nic0' });
    const before = m.memory.read(0xf000_0000, 8);
    const mmio = refusal(() => { dev.dmaWrite(0xf000_0000, new Uint8Array(8).fill(1)); });
    expect(mmio.record).toMatchObject({ access: 'write', reasonName: 'out-of-range', detail: 'no memory at phys 0xf0000000' });
    expect(m.memory.read(0xf000_0000, 8)).toEqual(before);
    expect(m.faults).toHaveLength(2);
    expect(dev.portStats).toMatchObject({ reads: 0, writes: 0, faults: 2 });
  });

  it('keeps the mask value with its width; a width outside 0..64 is refused and changes nothing', () => {
    const m = createMachine({ ramBytes: SZ_1G, dmaDebug: 'off' });
    const dev = m.pci.addDevice({ name: 'nic0', dmaMaskBits: 40 });
    expect(dev.dmaMask).toBe(2 ** 40 - 1);
    dev.dmaMaskBits = 24;
    expect(dev.dmaMaskBits).toBe(24);
    expect(dev.dmaMask).toBe(2 ** 24 - 1);
    expect(() => { dev.dmaMaskBits = 65; }).toThrow(RangeError);
    expect(dev.dmaMaskBits).toBe(24);
    expect(dev.dmaMask).toBe(2 ** 24 - 1);
    const before = m.pci.devices.length;
    expect(() => m.pci.addDevice({ name: 'bad', dmaMaskBits: 65 })).toThrow(PciTopologyError);
    expect(() => m.pci.addDevice({ name: 'bad', coherentMaskBits: 1.5 })).toThrow(PciTopologyError);
    expect(m.pci.devices).toHaveLength(before);
    expect(m.pci.addDevice({ name: 'bad', dmaMaskBits: 64 }).name).toBe('bad'); // the name was not taken
  });
});

import { describe, expect, it } from 'vitest';
import { createMachine, DmaFaultError } from '@dmakit/dma-core';

describe('Machine', () => {
  it('lets a direct device move bytes to and from RAM', () => {
    const m = createMachine({ ramBytes: 256 * 1024 * 1024 });
    const dev = m.pci.addDevice({ name: 'nic0', dmaMaskBits: 64 });
    const phys = m.memory.allocPages(1);
    expect(phys).toBeGreaterThan(0);
    dev.dmaWrite(phys + 100, Uint8Array.from([1, 2, 3]));
    expect([...m.memory.read(phys + 100, 3)]).toEqual([1, 2, 3]);
    expect([...dev.dmaRead(phys + 100, 3)]).toEqual([1, 2, 3]);
  });

  it('refuses a device access where no memory is, moving no byte', () => {
    const m = createMachine();
    const dev = m.pci.addDevice({ name: 'nic0', dmaMaskBits: 64 });
    expect(() => {
      dev.dmaWrite(2 ** 40, new Uint8Array(8));
    }).toThrow(DmaFaultError);
    expect(m.faults).toHaveLength(1);
  });
});

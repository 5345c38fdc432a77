// iommu-dma in a confidential guest, as mainline decides it (see README "In a confidential guest"):
// dma-iommu has no CC rule of its own. dev_use_swiotlb() is untrusted || dma_kmalloc_needs_bounce,
// iommu_dma_alloc() never calls set_memory_decrypted(), and the SWIOTLB_FORCE that x86 sets for CC
// guests (pci_swiotlb_detect) is only read by dma-direct. So the IOMMU maps private pages as they
// are, and the platform refuses the device's access unless it is an accepted TDI in RUN.
import { describe, expect, it } from 'vitest';
import {
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  DmaFaultError,
  createMachine,
  dmaAllocCoherent,
  dmaFreeCoherent,
  dmaMapPhys,
  dmaMappingError,
  dmaUnmapPhys,
  setMemoryDecrypted,
  setMemoryEncrypted,
  tdispAccept,
  tdispAttest,
  tdispGetReport,
  tdispInit,
  tdispLock,
  tdispStart,
  tdispStop,
} from '@dmakit/dma-core';
import type { Device } from '@dmakit/dma-core';
import { createIommu } from './index.js';

const REF = 'nic-fw:sha384:1';

function guest(devOpts: { untrusted?: boolean } = {}) {
  const machine = createMachine({ ramBytes: 256 * 2 ** 20, cc: { type: 'tdx', sharedBit: 51 }, dmaDebug: 'strict' });
  const iommu = createIommu(machine, { mode: 'strict', cpus: 1 });
  const dev = machine.pci.addDevice({ name: 'nic0', dmaMaskBits: 64, ...devOpts });
  iommu.attachDevice(dev);
  return { machine, iommu, dev };
}

function refused(fn: () => void): boolean {
  try {
    fn();
    return false;
  } catch (e) {
    if (e instanceof DmaFaultError) return true;
    throw e;
  }
}

function accept(dev: Device): void {
  expect(tdispInit(dev, { measurement: REF })).toBe(0);
  tdispLock(dev);
  const r = tdispGetReport(dev);
  expect(tdispAttest(dev, r, REF)).toBe(0);
  expect(tdispStart(dev, r!.nonce).errno).toBe(0);
  expect(tdispAccept(dev).errno).toBe(0);
}

describe('iommu-dma in a CC guest (mainline rules)', () => {
  it('maps a private page without bouncing, with no shared bit; the device is refused by the platform', () => {
    const { machine, dev } = guest();
    machine.trace.record();
    const buf = machine.memory.allocPages(0);
    machine.memory.write(buf, new Uint8Array([1, 2, 3, 4]));
    const dma = dmaMapPhys(dev, buf, 4096, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    expect(dma).toBeLessThan(2 ** 51); // an IOVA: cc_mkdec is dma-direct's, not the IOMMU's
    expect(machine.swiotlb.stats().bounces).toBe(0); // no CC term in dev_use_swiotlb
    expect(refused(() => dev.dmaRead(dma, 4))).toBe(true);
    expect(machine.faults.at(-1)).toMatchObject({ device: 'nic0', reasonName: 'permission', backend: 'iommu-dma' });
    expect(machine.trace.events().some((e) => e.name === 'coco:dma_refused' && e.fields.private === true)).toBe(true);
    dmaUnmapPhys(dev, dma, 4096, DMA_TO_DEVICE);
  });

  it('a page the driver decrypted itself is reachable through the IOMMU', () => {
    const { machine, dev } = guest();
    const buf = machine.memory.allocPages(0);
    expect(setMemoryDecrypted(machine, buf, 1)).toBe(0);
    const dma = dmaMapPhys(dev, buf, 4096, DMA_FROM_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    dev.dmaWrite(dma, new Uint8Array([9, 8, 7]));
    dmaUnmapPhys(dev, dma, 4096, DMA_FROM_DEVICE);
    expect(machine.memory.read(buf, 3)).toEqual(new Uint8Array([9, 8, 7]));
    expect(setMemoryEncrypted(machine, buf, 1)).toBe(0);
  });

  it('coherent buffers stay private (iommu_dma_alloc does not decrypt): the device cannot use them', () => {
    const { machine, dev } = guest();
    const decrypts = machine.cc!.stats.decryptCalls;
    const buf = dmaAllocCoherent(dev, 4096);
    expect(buf).not.toBeNull();
    expect(machine.cc!.stats.decryptCalls).toBe(decrypts);
    expect(machine.cc!.isShared(buf!.phys)).toBe(false);
    expect(refused(() => { dev.dmaWrite(buf!.dmaAddr, new Uint8Array(16)); })).toBe(true);
    dmaFreeCoherent(dev, 4096, buf!.cpuAddr, buf!.dmaAddr);
  });

  it('an untrusted device bounces only unaligned buffers (into the shared pool): those work, aligned ones fault', () => {
    const { machine, dev } = guest({ untrusted: true });
    const buf = machine.memory.allocPages(0);
    machine.memory.write(buf + 100, new Uint8Array([5, 6, 7]));
    const bounced = dmaMapPhys(dev, buf + 100, 3, DMA_BIDIRECTIONAL);
    expect(dmaMappingError(dev, bounced)).toBe(0);
    expect(machine.swiotlb.stats().bounces).toBe(1);
    expect(dev.dmaRead(bounced, 3)).toEqual(new Uint8Array([5, 6, 7]));
    dmaUnmapPhys(dev, bounced, 3, DMA_BIDIRECTIONAL);
    const whole = dmaMapPhys(dev, buf, 4096, DMA_BIDIRECTIONAL);
    expect(dmaMappingError(dev, whole)).toBe(0);
    expect(machine.swiotlb.stats().bounces).toBe(1);
    expect(refused(() => dev.dmaRead(whole, 3))).toBe(true);
    dmaUnmapPhys(dev, whole, 4096, DMA_BIDIRECTIONAL);
  });

  it('an accepted TDI in RUN reaches private pages through the IOMMU (T=1), until it leaves RUN', () => {
    const { machine, dev } = guest();
    accept(dev);
    const buf = machine.memory.allocPages(0);
    const dma = dmaMapPhys(dev, buf, 4096, DMA_FROM_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    dev.dmaWrite(dma, new Uint8Array([0x42]));
    expect(machine.cc!.stats.privateAccesses).toBe(1);
    tdispStop(dev);
    expect(refused(() => { dev.dmaWrite(dma, new Uint8Array([0x43])); })).toBe(true);
    dmaUnmapPhys(dev, dma, 4096, DMA_FROM_DEVICE);
    expect(machine.memory.read(buf, 1)).toEqual(new Uint8Array([0x42]));
  });
});

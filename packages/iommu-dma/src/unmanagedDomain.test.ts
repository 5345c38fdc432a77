import { describe, expect, it } from 'vitest';
import {
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  DmaFaultError,
  Errno,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_UNMANAGED_READ,
  IOMMU_UNMANAGED_WRITE,
  createMachine,
  dmaMapPhys,
} from '@dmakit/dma-core';
import type { IommuUnmanagedDomain } from '@dmakit/dma-core';
import { createIommu, createUnmanagedDomain } from './index.js';

const PG = 4096;
const RW = IOMMU_UNMANAGED_READ | IOMMU_UNMANAGED_WRITE;

function setup(mode: 'strict' | 'lazy' = 'strict') {
  const machine = createMachine({ ramBytes: 64 * 2 ** 20, dmaDebug: 'warn' });
  const iommu = createIommu(machine, { mode });
  const vf = machine.pci.addDevice({ name: 'vf0', dmaMaskBits: 64 });
  iommu.attachDevice(vf); // default DMA domain first, as the IOMMU core does at probe
  const dom = createUnmanagedDomain(iommu);
  return { machine, iommu, vf, dom };
}

describe('unmanaged IOMMU domain (device assignment)', () => {
  it('implements the dma-core port: guest-physical IOVA to host pages, device DMA moves real bytes', () => {
    const { machine, vf, dom } = setup();
    const port: IommuUnmanagedDomain = dom;
    const host = machine.memory.allocPages(2);
    expect(port.map(0x10_0000, host, 4 * PG, RW)).toBe(0);
    expect(port.attachDevice(vf)).toBe(0);
    expect(port.attachDevice(vf)).toBe(-Errno.EBUSY);
    const data = new Uint8Array(3 * PG).map((_, i) => (i * 7) & 0xff);
    vf.dmaWrite(0x10_0000 + 100, data);
    expect(machine.memory.read(host + 100, data.length)).toEqual(data);
    expect(vf.dmaRead(0x10_0000 + 100, data.length)).toEqual(data);
    expect(port.iovaToPhys(0x10_1000)).toBe(host + PG);
    // Outside what was mapped: an IOMMU fault, no byte moves.
    expect(() => { vf.dmaWrite(0x20_0000, data.subarray(0, 8)); }).toThrow(DmaFaultError);
  });

  it('honours permissions: a read-only mapping refuses device writes', () => {
    const { machine, vf, dom } = setup();
    const host = machine.memory.allocPages(0);
    expect(dom.map(0, host, PG, IOMMU_UNMANAGED_READ)).toBe(0);
    dom.attachDevice(vf);
    expect(() => { vf.dmaWrite(0, new Uint8Array(4)); }).toThrow(DmaFaultError);
    expect(vf.dmaRead(0, 4)).toEqual(new Uint8Array(4));
  });

  it('refuses the DMA API for an assigned device and restores the default domain on detach', () => {
    const { machine, vf, dom } = setup();
    const before = vf.dmaOps;
    dom.attachDevice(vf);
    const phys = machine.memory.allocPages(0);
    expect(dmaMapPhys(vf, phys, PG, DMA_TO_DEVICE, 0)).toBe(DMA_MAPPING_ERROR);
    dom.detachDevice(vf);
    expect(vf.dmaOps).toBe(before);
    const dma = dmaMapPhys(vf, phys, PG, DMA_TO_DEVICE, 0);
    expect(dma).not.toBe(DMA_MAPPING_ERROR);
  });

  it('rejects bad input with errnos and unaligned unmaps with 0', () => {
    const { machine, dom } = setup();
    const host = machine.memory.allocPages(0);
    expect(dom.map(1, host, PG, RW)).toBe(-Errno.EINVAL);
    expect(dom.map(0, host, 0, RW)).toBe(-Errno.EINVAL);
    expect(dom.map(0, host, PG, -1)).toBe(-Errno.EINVAL);
    expect(dom.map(2 ** 52, host, PG, RW)).toBe(-Errno.ERANGE);
    expect(dom.map(0, host, PG, RW)).toBe(0);
    // generic_pt's errnos (drivers/iommu/generic_pt/iommu_pt.h): a live entry is -EADDRINUSE
    // (__map_range), a prot with neither read nor write is -EINVAL (map_pages) and installs nothing.
    expect(dom.map(0, host, PG, RW)).toBe(-Errno.EADDRINUSE);
    expect(dom.map(PG, host, PG, 0)).toBe(-Errno.EINVAL);
    expect(dom.iovaToPhys(PG)).toBe(0);
    expect(dom.stats().mappedBytes).toBe(PG);
    expect(dom.unmap(1, PG)).toBe(0);
    expect(dom.unmap(0, PG)).toBe(PG);
    expect(dom.iovaToPhys(0)).toBe(0);
  });

  it('read-and-clear of dirty bits: a second read returns nothing new; NO_CLEAR keeps them', () => {
    const { machine, vf, dom } = setup('lazy');
    const host = machine.memory.allocPages(4);
    expect(dom.map(0, host, 16 * PG, RW)).toBe(0);
    dom.attachDevice(vf);
    const bm = new Uint8Array(2);
    expect(dom.readAndClearDirty(0, 16 * PG, 0, bm)).toBe(-Errno.EOPNOTSUPP);
    expect(dom.setDirtyTracking(true)).toBe(0);
    vf.dmaWrite(3 * PG + 10, new Uint8Array(PG)); // pages 3 and 4
    vf.dmaWrite(9 * PG, new Uint8Array(8));
    vf.dmaRead(12 * PG, 8); // reads do not dirty
    expect(dom.readAndClearDirty(0, 16 * PG, IOMMU_DIRTY_NO_CLEAR, bm)).toBe(3);
    bm.fill(0);
    expect(dom.readAndClearDirty(0, 16 * PG, 0, bm)).toBe(3);
    expect([...bm]).toEqual([0b0001_1000, 0b0000_0010]);
    bm.fill(0);
    expect(dom.readAndClearDirty(0, 16 * PG, 0, bm)).toBe(0);
    expect([...bm]).toEqual([0, 0]);
    expect(dom.readAndClearDirty(0, 16 * PG, 0, new Uint8Array(1))).toBe(-Errno.EINVAL);
    expect(dom.readAndClearDirty(5, 16 * PG, 0, bm)).toBe(-Errno.EINVAL);
    expect(dom.setDirtyTracking(false)).toBe(0);
  });

  it('without IOMMU dirty support the tracking calls return -EOPNOTSUPP', () => {
    const machine = createMachine({ ramBytes: 64 * 2 ** 20, dmaDebug: 'warn' });
    const dom = createUnmanagedDomain(createIommu(machine, { mode: 'strict' }), { dirtyTracking: false });
    expect(dom.dirtyTrackingSupported).toBe(false);
    expect(dom.setDirtyTracking(true)).toBe(-Errno.EOPNOTSUPP);
  });

  it('its page table and IOTLB are counted by the IOMMU', () => {
    const { machine, iommu, dom } = setup();
    const s0 = iommu.stats();
    expect(dom.map(0, machine.memory.allocPages(0), PG, RW)).toBe(0);
    expect(iommu.stats().maps).toBe(s0.maps + 1);
    expect(dom.stats().mappedBytes).toBe(PG);
  });
});

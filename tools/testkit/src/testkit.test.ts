// The kit's own checks: the fakes must catch what they claim to catch, or the tests built on them
// could pass for the wrong reason.
import { describe, expect, it } from 'vitest';
import { DMA_BIDIRECTIONAL, DmaFaultReason, DmaIovaState, Errno, PAGE_SIZE, PciP2pdmaMapType, SZ_1M, attachDmaOps, createMachine, dmaIovaLink, dmaIovaTryAlloc, isErrPtr, pciP2pdmaMapType, pcimP2pdmaProvider, toPciDev } from '@dmakit/dma-core';
import type { SgTable } from '@dmakit/dma-core';
import { FakeIommu, buildP2pSwitch, createFakeDmaBufExporter, mmapAnon, pattern, sameBytes } from '@dmakit/testkit';

describe('bytes', () => {
  it('pattern is deterministic per seed, differs between seeds and is not all zero', () => {
    expect(sameBytes(pattern(4096, 7), pattern(4096, 7))).toBe(true);
    expect(sameBytes(pattern(4096, 7), pattern(4096, 8))).toBe(false);
    expect(pattern(4096, 0).some((b) => b !== 0)).toBe(true);
  });

  it('sameBytes respects view offsets, lengths and undefined', () => {
    const a = pattern(64, 1);
    const b = new Uint8Array(128);
    b.set(a, 32);
    expect(sameBytes(b.subarray(32, 96), a)).toBe(true);
    expect(sameBytes(b.subarray(31, 95), a)).toBe(false);
    expect(sameBytes(a.subarray(0, 63), a)).toBe(false);
    expect(sameBytes(undefined, a)).toBe(false);
  });
});

describe('mmapAnon', () => {
  it('maps read-write anonymous memory and throws on a failed mmap', () => {
    const proc = createMachine({ ramBytes: 16 * SZ_1M }).createProcess();
    const addr = mmapAnon(proc, 2 * PAGE_SIZE);
    proc.mm.write(addr, Uint8Array.of(1, 2));
    expect([...proc.mm.read(addr, 2)]).toEqual([1, 2]);
    expect(mmapAnon(proc, PAGE_SIZE, { addr })).toBe(addr);
    expect([...proc.mm.read(addr, 2)]).toEqual([0, 0]); // MAP_FIXED dropped the old page
    expect(() => mmapAnon(proc, 0)).toThrow(/mmap of 0 bytes failed/);
  });
});

describe('createFakeDmaBufExporter', () => {
  it('maps two segments, moves with move_notify, and records every rule an importer breaks', () => {
    const m = createMachine({ ramBytes: 64 * SZ_1M, dmaDebug: 'warn' });
    const dev = m.pci.addDevice({ name: 'imp', dmaMaskBits: 64 });
    const exp = createFakeDmaBufExporter(m);
    const { fd, buf } = exp.exportRam(4 * PAGE_SIZE);
    const data = pattern(4 * PAGE_SIZE, 3);
    exp.write(buf, 0, data);
    const got = exp.port.dmaBufGet(fd);
    expect(got).toBe(buf);
    expect(exp.port.dmaBufGet(99)).toBe(-Errno.EBADF);
    let notified = 0;
    const at = exp.port.dmaBufDynamicAttach(buf, dev, { allowPeer2peer: false, moveNotify: () => notified++ });
    if (isErrPtr(at)) throw new Error(`attach ${at}`);
    const sgt = exp.port.dmaBufMapAttachmentUnlocked(at, DMA_BIDIRECTIONAL) as SgTable;
    expect(sgt.nents).toBe(2);
    expect(sameBytes(dev.dmaRead(sgt.dmaAddress[1] ?? 0, 2 * PAGE_SIZE), data.subarray(2 * PAGE_SIZE))).toBe(true);
    expect(exp.liveMaps()).toBe(1);
    // Rules broken on purpose: map without the lock, move while a mapping is kept, detach while mapped.
    exp.port.dmaBufMapAttachment(at, DMA_BIDIRECTIONAL);
    exp.move(buf);
    expect(notified).toBe(1);
    expect(sameBytes(exp.read(buf, 0, 4 * PAGE_SIZE), data)).toBe(true);
    exp.port.dmaBufDetach(buf, at);
    expect(exp.misuse).toEqual(['map without the reservation lock', 'stale mapping kept past move_notify', 'detached with live mappings']);
    expect(() => exp.exportRam(PAGE_SIZE)).toThrow(RangeError);
    expect(() => exp.read(buf, 4 * PAGE_SIZE - 1, 2)).toThrow(RangeError);
  });
});

describe('FakeIommu', () => {
  it('links, translates, faults after unlink, and fails on request', () => {
    const m = createMachine({ ramBytes: 16 * SZ_1M });
    const dev = m.pci.addDevice({ name: 'd', dmaMaskBits: 64 });
    const iommu = new FakeIommu();
    attachDmaOps(dev, iommu);
    const phys = m.memory.allocPages(0);
    const state = new DmaIovaState();
    expect(dmaIovaTryAlloc(dev, state, phys, PAGE_SIZE)).toBe(true);
    expect(dmaIovaLink(dev, state, phys, 0, PAGE_SIZE, DMA_BIDIRECTIONAL, 0)).toBe(0);
    expect(iommu.translate(dev, state.addr + 5)).toBe(phys + 5);
    iommu.iovaUnlink(dev, state, 0, PAGE_SIZE);
    expect(iommu.translate(dev, state.addr)).toBe(DmaFaultReason.NOT_PRESENT);
    iommu.failLinkAt = 1;
    expect(iommu.iovaLink(dev, state, phys, 0, PAGE_SIZE)).toBe(-Errno.ENOMEM);
    expect(iommu.iovaLink(dev, state, phys + 8, 0, PAGE_SIZE)).toBe(-Errno.EINVAL);
    expect(iommu.counts).toMatchObject({ tryAlloc: 1, link: 3, mapPhys: 0 });
  });
});

describe('buildP2pSwitch', () => {
  it('routes through the switch without ACS and through the host bridge with it', () => {
    const flat = buildP2pSwitch();
    const prov = pcimP2pdmaProvider(toPciDev(flat.provider)!, 0)!;
    expect(prov.bar.start).toBe(flat.barPhys);
    const viaHb = buildP2pSwitch({ acs: true });
    const refused = buildP2pSwitch({ acs: true, allowed: false });
    const type = (t: typeof flat): number => pciP2pdmaMapType(pcimP2pdmaProvider(toPciDev(t.provider)!, 0)!, t.client);
    expect([type(flat), type(viaHb), type(refused)]).toEqual([PciP2pdmaMapType.BUS_ADDR, PciP2pdmaMapType.THRU_HOST_BRIDGE, PciP2pdmaMapType.NOT_SUPPORTED]);
  });
});

// drivers/vfio/pci/vfio_pci_dmabuf.c and dma-buf-mapping.c on dma-direct devices: creation rules,
// P2P routing per topology, revoke and restore. (IOVA mode needs an IOMMU: apps/demo e2e.)
import { describe, expect, it } from 'vitest';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, Errno, PAGE_SIZE, PCI_ACS_CR, PCI_ACS_RR, PciExpType, SG_DMA_BUS_ADDRESS, SZ_1M, isErrPtr, toPciDev } from '@dmakit/dma-core';
import type { Device } from '@dmakit/dma-core';
import {
  VfioPciCoreDevice,
  dmaBufAttach,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufMapAttachment,
  dmaBufMapAttachmentUnlocked,
  dmaBufPut,
  dmaBufSgtMode,
  dmaBufUnmapAttachmentUnlocked,
  dmaBufPhysVecToSgt,
  dmaResvLock,
  dmaResvUnlock,
} from '@dmakit/dmabuf';
import { pattern } from '@dmakit/testkit';
import { Importer, must } from './testing/importer.js';
import { buildTopology } from './testing/topology.js';

function bar1(dev: Device): { start: number; size: number; busAddr: number } {
  const b = toPciDev(dev)?.bar(1);
  if (b === undefined) throw new Error('no BAR1');
  return b;
}

describe('VFIO_DEVICE_FEATURE_DMA_BUF: creation rules', () => {
  const t = buildTopology();
  const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
  it.each([
    ['no ranges', { regionIndex: 1, dmaRanges: [] }, -Errno.EINVAL],
    ['flags set', { regionIndex: 1, flags: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }, -Errno.EINVAL],
    ['ROM region', { regionIndex: 6, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }, -Errno.ENODEV],
    ['unimplemented BAR', { regionIndex: 4, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }, -Errno.ENODEV],
    ['unaligned offset', { regionIndex: 1, dmaRanges: [{ offset: 100, length: PAGE_SIZE }] }, -Errno.EINVAL],
    ['unaligned length', { regionIndex: 1, dmaRanges: [{ offset: 0, length: 100 }] }, -Errno.EINVAL],
    ['empty range', { regionIndex: 1, dmaRanges: [{ offset: 0, length: 0 }] }, -Errno.EINVAL],
    ['outside the BAR', { regionIndex: 1, dmaRanges: [{ offset: 4 * SZ_1M - PAGE_SIZE, length: 2 * PAGE_SIZE }] }, -Errno.EINVAL],
    ['overflowing', { regionIndex: 1, dmaRanges: [{ offset: 2 ** 53, length: PAGE_SIZE }] }, -Errno.EOVERFLOW],
    ['overflowing sum', { regionIndex: 1, dmaRanges: [{ offset: 0, length: 2 ** 52 }, { offset: 0, length: 2 ** 52 }] }, -Errno.EOVERFLOW],
  ])('%s', (_name, req, errno) => {
    expect(vdev.featureDmaBuf(req)).toBe(errno);
    expect(vdev.dmabufCount).toBe(0);
  });

  it('page-aligned ranges inside the BAR make one buffer of their summed size', () => {
    const buf = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: 2 * PAGE_SIZE }, { offset: SZ_1M, length: PAGE_SIZE }] }));
    expect(buf.size).toBe(3 * PAGE_SIZE);
    expect(buf.expName).toBe('vfio_pci');
    dmaBufPut(buf);
    expect(vdev.dmabufCount).toBe(0);
  });
});

describe('P2P routing per topology (dma-direct importers)', () => {
  it('same switch: BUS_ADDR, bus addresses with the window offset, no mapping call; bytes land in the BAR', () => {
    const t = buildTopology({ busOffset: 0x1000_0000 });
    const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
    const b = bar1(t.vfioDev);
    const buf = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 2 * PAGE_SIZE, length: 2 * PAGE_SIZE }, { offset: 8 * PAGE_SIZE, length: PAGE_SIZE }] }));
    const imp = new Importer(buf, t.peer);
    const sgt = must(imp.map());
    expect(dmaBufSgtMode(sgt)).toBe('bus-addr');
    expect(sgt.origNents).toBe(0);
    expect(Array.from(sgt.dmaAddress.subarray(0, sgt.nents))).toEqual([b.busAddr + 2 * PAGE_SIZE, b.busAddr + 8 * PAGE_SIZE]);
    expect(b.busAddr - b.start).toBe(0x1000_0000);
    expect(sgt.dmaFlags[0]! & SG_DMA_BUS_ADDRESS).toBe(SG_DMA_BUS_ADDRESS);
    const data = pattern(PAGE_SIZE, 3);
    t.peer.dmaWrite(sgt.dmaAddress[1]!, data);
    expect(t.machine.memory.read(b.start + 8 * PAGE_SIZE, PAGE_SIZE)).toEqual(data);
    expect(t.machine.dmaDebug.entries).toBe(0); // the IOMMU / DMA API never saw it
    imp.unmap();
  });

  it('different root ports of an allow-listed host bridge: dma_map_phys with MMIO per range on dma-direct', () => {
    const t = buildTopology();
    const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
    const b = bar1(t.vfioDev);
    const buf = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }, { offset: 4 * PAGE_SIZE, length: 3 * PAGE_SIZE }] }));
    const imp = new Importer(buf, t.nic);
    const sgt = must(imp.map());
    expect(dmaBufSgtMode(sgt)).toBe('map-phys');
    expect(sgt.nents).toBe(2);
    expect(Array.from(sgt.dmaAddress.subarray(0, 2))).toEqual([b.start, b.start + 4 * PAGE_SIZE]);
    expect(Array.from(sgt.dmaLength.subarray(0, 2))).toEqual([PAGE_SIZE, 3 * PAGE_SIZE]);
    expect(t.machine.dmaDebug.entries).toBe(2);
    const data = pattern(3 * PAGE_SIZE, 9);
    t.nic.dmaWrite(sgt.dmaAddress[1]!, data);
    expect(t.machine.memory.read(b.start + 4 * PAGE_SIZE, 3 * PAGE_SIZE)).toEqual(data);
    imp.unmap();
    expect(t.machine.dmaDebug.entries).toBe(0);
    dmaBufDetach(buf, imp.attach);
    dmaBufPut(buf);
  });

  it('ACS redirect on the switch ports sends the same-switch peer through the host bridge', () => {
    const t = buildTopology();
    const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
    for (const f of t.machine.pci.functions) if (f.pcieType === PciExpType.DOWNSTREAM) t.machine.pci.setAcsCtrl(f, PCI_ACS_RR | PCI_ACS_CR);
    const buf = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }));
    const imp = new Importer(buf, t.peer);
    const sgt = must(imp.map());
    expect(dmaBufSgtMode(sgt)).toBe('map-phys');
    expect(t.machine.pci.log.some((l) => l.includes('ACS redirect is set'))).toBe(true);
    const data = pattern(PAGE_SIZE, 12);
    t.peer.dmaWrite(sgt.dmaAddress[0]!, data);
    expect(t.machine.memory.read(bar1(t.vfioDev).start, PAGE_SIZE)).toEqual(data);
    imp.unmap();
  });

  it('host bridge not on the allow-list: the map fails with -EINVAL and the kernel warning is logged', () => {
    const t = buildTopology({ allowed: false });
    const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
    const buf = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }));
    const imp = new Importer(buf, t.nic);
    expect(imp.map()).toBe(-Errno.EINVAL);
    expect(t.machine.pci.log.some((l) => l.includes('cannot be used for peer-to-peer DMA'))).toBe(true);
    const far = new Importer(buf, t.far);
    expect(far.map()).toBe(-Errno.EINVAL);
    // The same-switch peer still works.
    const near = new Importer(buf, t.peer);
    expect(isErrPtr(near.map())).toBe(false);
    near.unmap();
    expect(t.machine.dmaDebug.entries).toBe(0);
  });

  it('an importer that does not allow P2P is refused at attach with -EOPNOTSUPP', () => {
    const t = buildTopology();
    const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
    const buf = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }));
    expect(dmaBufAttach(buf, t.peer)).toBe(-Errno.EOPNOTSUPP);
    expect(dmaBufDynamicAttach(buf, t.peer, { allowPeer2peer: false, moveNotify() {} })).toBe(-Errno.EOPNOTSUPP);
    expect(buf.attachmentCount).toBe(0);
  });

  it('dma_buf_phys_vec_to_sgt rejects a missing provider and ranges that do not add up', () => {
    const t = buildTopology();
    const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
    const b = bar1(t.vfioDev);
    const buf = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }));
    const imp = new Importer(buf, t.nic);
    dmaResvLock(buf.resv);
    expect(dmaBufPhysVecToSgt(imp.attach, null, [{ paddr: b.start, len: PAGE_SIZE }], 1, PAGE_SIZE, DMA_FROM_DEVICE)).toBe(-Errno.EINVAL);
    dmaResvUnlock(buf.resv);
    expect(t.machine.dmaDebug.entries).toBe(0);
  });
});

describe('revoke and restore', () => {
  it('memory decode off: move_notify, maps fail with -ENODEV until decode is back', () => {
    const t = buildTopology();
    const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
    const buf = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: 4 * PAGE_SIZE }] }));
    const imp = new Importer(buf, t.nic);
    must(imp.map());
    vdev.setMemoryDecode(false);
    expect(imp.notifies).toBe(1);
    expect(imp.sgt).toBeNull();
    expect(vdev.isRevoked(buf)).toBe(true);
    expect(imp.map()).toBe(-Errno.ENODEV);
    expect(dmaBufDynamicAttach(buf, t.peer, { allowPeer2peer: true, moveNotify() {} })).toBe(-Errno.ENODEV);
    vdev.setMemoryDecode(true);
    expect(imp.notifies).toBe(2);
    const sgt = must(imp.map());
    const data = pattern(PAGE_SIZE, 1);
    t.nic.dmaWrite(sgt.dmaAddress[0]!, data);
    expect(t.machine.memory.read(bar1(t.vfioDev).start, PAGE_SIZE)).toEqual(data);
    imp.unmap();
    expect(t.machine.dmaDebug.entries).toBe(0);
  });

  it('reset revokes and restores; close revokes for good; a buffer made with decode off is born revoked', () => {
    const t = buildTopology();
    const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
    const buf = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }));
    const imp = new Importer(buf, t.peer);
    must(imp.map());
    vdev.reset();
    expect(imp.notifies).toBe(2);
    must(imp.map());
    vdev.setMemoryDecode(false);
    const born = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }));
    expect(vdev.isRevoked(born)).toBe(true);
    expect(dmaBufDynamicAttach(born, t.peer, { allowPeer2peer: true, moveNotify() {} })).toBe(-Errno.ENODEV);
    vdev.setMemoryDecode(true);
    vdev.close();
    expect(imp.notifies).toBe(5);
    vdev.setMemoryDecode(true);
    expect(imp.map()).toBe(-Errno.ENODEV);
    expect(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] })).toBe(-Errno.ENODEV);
    dmaBufDetach(buf, imp.attach);
    dmaBufPut(buf);
    dmaBufPut(born);
    expect(t.machine.dmaDebug.reports).toEqual([]);
  });

  it('a stale mapping kept past move_notify is still unmappable; nothing leaks', () => {
    const t = buildTopology();
    const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
    const buf = must(vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }));
    const lazy = must(dmaBufDynamicAttach(buf, t.nic, { allowPeer2peer: true, moveNotify() {} }));
    const sgt = must(dmaBufMapAttachmentUnlocked(lazy, DMA_BIDIRECTIONAL));
    vdev.setMemoryDecode(false);
    expect(buf.staleMappings).toBe(1);
    expect(dmaBufMapAttachmentUnlocked(lazy, DMA_BIDIRECTIONAL)).toBe(-Errno.ENODEV);
    dmaBufUnmapAttachmentUnlocked(lazy, sgt, DMA_BIDIRECTIONAL);
    expect(buf.staleMappings).toBe(0);
    expect(t.machine.dmaDebug.entries).toBe(0);
    dmaResvLock(buf.resv);
    expect(dmaBufMapAttachment(lazy, DMA_BIDIRECTIONAL)).toBe(-Errno.ENODEV);
    dmaResvUnlock(buf.resv);
  });
});

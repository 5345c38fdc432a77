// vfio-pci dma-bufs over a TDI's private MMIO in a confidential guest: exported only in RUN once
// accepted, moved by an accepted peer TDI through phys_vec → sg, revoked (move_notify, maps
// -ENODEV, stale DMA refused) the moment the TDI leaves RUN, restored after it is accepted again.
import { describe, expect, it } from 'vitest';
import {
  DmaFaultError,
  Errno,
  PAGE_SIZE,
  pciMmioRead,
  pciMmioWrite,
  tdispAccept,
  tdispAttest,
  tdispError,
  tdispGetReport,
  tdispInit,
  tdispLock,
  tdispStart,
  tdispStop,
  toPciDev,
} from '@dmakit/dma-core';
import type { Device } from '@dmakit/dma-core';
import {
  VfioPciCoreDevice,
  dmaBufDetach,
  dmaBufMappingStats,
  dmaBufPut,
  dmaBufSgtMode,
} from '@dmakit/dmabuf';
import { pattern } from '@dmakit/testkit';
import { Importer, must } from './testing/importer.js';
import { buildTopology } from './testing/topology.js';

const REF = 'vfio-accel:sha384:c0ffee';
const RANGE = { regionIndex: 1, dmaRanges: [{ offset: 0, length: 2 * PAGE_SIZE }, { offset: 16 * PAGE_SIZE, length: PAGE_SIZE }] };

function lockAttestStart(dev: Device): void {
  expect(tdispLock(dev).errno).toBe(0);
  const report = tdispGetReport(dev)!;
  expect(tdispAttest(dev, report, REF)).toBe(0);
  expect(tdispStart(dev, report.nonce).errno).toBe(0);
}

function accept(dev: Device): void {
  lockAttestStart(dev);
  expect(tdispAccept(dev).errno).toBe(0);
}

function setup() {
  const t = buildTopology({ cc: 'tdx' });
  expect(tdispInit(t.vfioDev, { measurement: REF, privateBars: [1] })).toBe(0);
  expect(tdispInit(t.peer, { measurement: REF })).toBe(0);
  const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
  const bar = toPciDev(t.vfioDev)!.bar(1)!;
  return { t, vdev, bar };
}

function faults(fn: () => void): boolean {
  try {
    fn();
    return false;
  } catch (e) {
    if (e instanceof DmaFaultError) return true;
    throw e;
  }
}

describe('vfio-pci dma-buf over private MMIO (TDISP)', () => {
  it('refuses the export with -EPERM in CONFIG_UNLOCKED, CONFIG_LOCKED and RUN before acceptance; a shared BAR is not affected', () => {
    const { t, vdev } = setup();
    expect(vdev.featureDmaBuf(RANGE)).toBe(-Errno.EPERM);
    tdispLock(t.vfioDev);
    expect(vdev.featureDmaBuf(RANGE)).toBe(-Errno.EPERM);
    const report = tdispGetReport(t.vfioDev)!;
    tdispAttest(t.vfioDev, report, REF);
    tdispStart(t.vfioDev, report.nonce);
    expect(vdev.featureDmaBuf(RANGE)).toBe(-Errno.EPERM);
    expect(vdev.dmabufCount).toBe(0);
    // BAR0 is not private MMIO: exported as before.
    const shared = must(vdev.featureDmaBuf({ regionIndex: 0, dmaRanges: [{ offset: 0, length: PAGE_SIZE }] }));
    expect(vdev.isPrivate(shared)).toBe(false);
    dmaBufPut(shared);
    tdispAccept(t.vfioDev);
    const buf = must(vdev.featureDmaBuf(RANGE));
    expect(vdev.isPrivate(buf)).toBe(true);
    expect(vdev.isRevoked(buf)).toBe(false);
    dmaBufPut(buf);
    vdev.close();
  });

  it('in RUN an accepted peer maps it and moves bytes both ways; leaving RUN revokes at once and nothing leaks; re-acceptance restores', () => {
    const { t, vdev, bar } = setup();
    const m = t.machine;
    const live0 = dmaBufMappingStats.live;
    accept(t.vfioDev);
    accept(t.peer);
    const buf = must(vdev.featureDmaBuf(RANGE));
    const imp = new Importer(buf, t.peer);
    const sgt = must(imp.map());
    expect(dmaBufSgtMode(sgt)).toBe('bus-addr');
    expect(Array.from(sgt.dmaAddress.subarray(0, sgt.nents))).toEqual([bar.busAddr, bar.busAddr + 16 * PAGE_SIZE]);
    // The peer writes the second range; the guest reads it through its private mapping.
    const toBar = pattern(PAGE_SIZE, 21);
    t.peer.dmaWrite(sgt.dmaAddress[1]!, toBar);
    const seen = new Uint8Array(PAGE_SIZE);
    expect(pciMmioRead(m, bar.start + 16 * PAGE_SIZE, seen, 'private')).toBe(0);
    expect(seen).toEqual(toBar);
    // The guest writes the first range privately; the peer reads it back.
    const fromCpu = pattern(2 * PAGE_SIZE, 22);
    expect(pciMmioWrite(m, bar.start, fromCpu, 'private')).toBe(0);
    expect(t.peer.dmaRead(sgt.dmaAddress[0]!, 2 * PAGE_SIZE)).toEqual(fromCpu);
    const stale = sgt.dmaAddress[0]!;

    // A TDISP error: the TDI leaves RUN, the buffer is revoked under the resv, the importer unmaps.
    expect(tdispError(t.vfioDev, 'config-write').state).toBe('ERROR');
    expect(imp.notifies).toBe(1);
    expect(imp.sgt).toBeNull();
    expect(vdev.isRevoked(buf)).toBe(true);
    expect(vdev.tdispRevokes).toBe(1);
    expect(imp.map()).toBe(-Errno.ENODEV);
    expect(dmaBufMappingStats.live).toBe(live0);
    expect(m.dmaDebug.entries).toBe(0);
    // An importer that kept the old address gets nothing, and changes nothing.
    const faults0 = m.faults.length;
    expect(faults(() => t.peer.dmaRead(stale, 64))).toBe(true);
    expect(faults(() => { t.peer.dmaWrite(stale, new Uint8Array(64)); })).toBe(true);
    expect(m.faults.length).toBe(faults0 + 2);
    expect(m.memory.read(bar.start, 2 * PAGE_SIZE)).toEqual(fromCpu);
    // Memory decode toggled while in ERROR does not bring the private buffer back.
    vdev.setMemoryDecode(false);
    vdev.setMemoryDecode(true);
    expect(vdev.isRevoked(buf)).toBe(true);
    expect(imp.notifies).toBe(1);

    // Unlock, lock, attest, start: still revoked until the guest accepts again.
    tdispStop(t.vfioDev);
    lockAttestStart(t.vfioDev);
    expect(vdev.isRevoked(buf)).toBe(true);
    expect(imp.map()).toBe(-Errno.ENODEV);
    expect(tdispAccept(t.vfioDev).errno).toBe(0);
    expect(imp.notifies).toBe(2);
    expect(vdev.isRevoked(buf)).toBe(false);
    const again = must(imp.map());
    expect(t.peer.dmaRead(again.dmaAddress[1]!, PAGE_SIZE)).toEqual(toBar);

    imp.unmap();
    dmaBufDetach(buf, imp.attach);
    dmaBufPut(buf);
    vdev.close();
    tdispStop(t.vfioDev); // the closed device no longer listens
    expect(dmaBufMappingStats.live).toBe(live0);
    expect(m.dmaDebug.entries).toBe(0);
    expect(m.dmaDebug.reports).toEqual([]);
  });

  it('an importer that is not an accepted TDI: its T=0 requests are refused by the locked TDI; through dma-direct it cannot even map', () => {
    const { t, vdev, bar } = setup();
    accept(t.vfioDev);
    const buf = must(vdev.featureDmaBuf(RANGE));
    // Same switch: BUS_ADDR, no mapping call, but the TDI answers the T=0 write with UR.
    const imp = new Importer(buf, t.gpu);
    const sgt = must(imp.map());
    expect(dmaBufSgtMode(sgt)).toBe('bus-addr');
    const before = t.machine.memory.read(bar.start, 64);
    expect(faults(() => { t.gpu.dmaWrite(sgt.dmaAddress[0]!, new Uint8Array(64).fill(0xee)); })).toBe(true);
    expect(t.machine.memory.read(bar.start, 64)).toEqual(before);
    expect(t.machine.faults.at(-1)).toMatchObject({ device: 'gpu0', reasonName: 'permission' });
    // Through the host bridge on dma-direct: force_dma_unencrypted forces swiotlb, and
    // dma_direct_map_phys refuses to bounce MMIO, so the mapping fails and nothing stays mapped.
    const far = new Importer(buf, t.nic);
    expect(far.map()).toBe(-Errno.ENOMEM);
    expect(t.machine.dmaDebug.entries).toBe(0);
    imp.unmap();
    dmaBufDetach(buf, imp.attach);
    dmaBufDetach(buf, far.attach);
    dmaBufPut(buf);
    expect(t.machine.dmaDebug.entries).toBe(0);
  });
});

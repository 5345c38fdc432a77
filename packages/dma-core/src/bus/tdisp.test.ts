// Follows the TDISP state machine of PCIe r6.1 sec 11 as drivers/pci/tsm.c drives it.
import { describe, expect, it } from 'vitest';
import {
  createMachine,
  Device,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  DmaFaultError,
  dmaMapPhys,
  dmaMappingError,
  dmaUnmapPhys,
  Errno,
  forceDmaUnencrypted,
  PAGE_SIZE,
  TdispErrorCode,
  tdiOf,
  tdispAccept,
  tdispAttest,
  tdispError,
  tdispGetReport,
  tdispInit,
  tdispLock,
  tdispPrivateMmioAllowed,
  tdispReset,
  tdispStart,
  tdispStop,
} from '../index.js';

const REF = 'fw-1.2:sha384:ab12';

function setup() {
  const m = createMachine({ cc: { type: 'tdx', sharedBit: 51 } });
  const dev = m.pci.addDevice({ name: 'nvme-tdi', dmaMaskBits: 64 });
  expect(tdispInit(dev, { measurement: REF })).toBe(0);
  return { m, dev };
}

/** lock -> report -> attest -> start -> accept, checking each step. */
function acceptTdi(dev: Device): void {
  expect(tdispLock(dev)).toEqual({ errno: 0, errorCode: 0, state: 'CONFIG_LOCKED' });
  const report = tdispGetReport(dev);
  expect(tdispAttest(dev, report, REF)).toBe(0);
  expect(tdispStart(dev, report!.nonce).state).toBe('RUN');
  expect(tdispAccept(dev).errno).toBe(0);
}

describe('TDISP', () => {
  it('walks CONFIG_UNLOCKED -> CONFIG_LOCKED -> RUN and, once accepted, DMAs to private memory without bouncing', () => {
    const { m, dev } = setup();
    m.trace.record();
    const page = m.memory.allocPages(0);
    m.memory.write(page, new Uint8Array([1, 2, 3, 4]));
    expect(tdispLock(dev).state).toBe('CONFIG_LOCKED');
    // DMA from a device in CONFIG_LOCKED to private memory: refused.
    expect(() => dev.dmaRead(page, 4)).toThrow(DmaFaultError);
    const report = tdispGetReport(dev)!;
    expect(report.measurement).toBe(REF);
    expect(tdispAttest(dev, report, 'fw-0.9:evil')).toBe(-Errno.EACCES);
    expect(tdispAccept(dev).errno).toBe(-Errno.EPERM); // not in RUN, not attested
    expect(tdispAttest(dev, report, REF)).toBe(0);
    expect(tdispStart(dev, report.nonce + 1)).toEqual({ errno: -Errno.EIO, errorCode: TdispErrorCode.INVALID_NONCE, state: 'CONFIG_LOCKED' });
    expect(tdispStart(dev, report.nonce).state).toBe('RUN');
    expect(forceDmaUnencrypted(dev)).toBe(true); // RUN but not accepted yet
    expect(tdispAccept(dev)).toEqual({ errno: 0, errorCode: 0, state: 'RUN' });
    expect(forceDmaUnencrypted(dev)).toBe(false);
    expect(tdispPrivateMmioAllowed(dev)).toBe(true);
    const bounces = m.swiotlb.stats().bounces;
    const dma = dmaMapPhys(dev, page, 4, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    expect(dma).toBe(page); // private world: no shared bit, no bounce
    expect(dev.dmaRead(dma, 4)).toEqual(new Uint8Array([1, 2, 3, 4]));
    expect(m.swiotlb.stats().bounces).toBe(bounces);
    expect(m.cc!.stats.privateAccesses).toBe(1);
    dmaUnmapPhys(dev, dma, 4, DMA_TO_DEVICE);
    const names = m.trace.events().map((e) => e.name);
    expect(names.filter((n) => n === 'tdisp:state_change')).toHaveLength(2);
    expect(names).toContain('tdisp:accept');
    expect(names).toContain('tdisp:error_response');
  });

  it('an error in RUN revokes private DMA at once; a write in flight moves no byte', () => {
    const { m, dev } = setup();
    m.trace.record();
    acceptTdi(dev);
    const page = m.memory.allocPages(0);
    m.memory.write(page, new Uint8Array(PAGE_SIZE).fill(0x11));
    const dma = dmaMapPhys(dev, page, PAGE_SIZE, DMA_FROM_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    dev.dmaWrite(dma, new Uint8Array(16).fill(0x22));
    expect(tdispError(dev, 'config-write')).toEqual({ errno: 0, errorCode: 0, state: 'ERROR' });
    expect(() => { dev.dmaWrite(dma, new Uint8Array(PAGE_SIZE).fill(0x33)); }).toThrow(DmaFaultError);
    expect(() => dev.dmaRead(dma, 4)).toThrow(DmaFaultError);
    dmaUnmapPhys(dev, dma, PAGE_SIZE, DMA_FROM_DEVICE);
    const after = m.memory.read(page, PAGE_SIZE);
    expect(after.subarray(0, 16).every((b) => b === 0x22)).toBe(true);
    expect(after.subarray(16).every((b) => b === 0x11)).toBe(true);
    expect(forceDmaUnencrypted(dev)).toBe(true);
    expect(tdispPrivateMmioAllowed(dev)).toBe(false);
    const change = m.trace.events().find((e) => e.name === 'tdisp:state_change' && e.fields.new_state === 'ERROR');
    expect(change?.fields).toMatchObject({ old_state: 'RUN', revoked: true, request: 'ERROR(config-write)' });
    // ERROR only leaves through STOP_INTERFACE.
    expect(tdispLock(dev)).toEqual({ errno: -Errno.EIO, errorCode: TdispErrorCode.INVALID_INTERFACE_STATE, state: 'ERROR' });
    expect(tdispStop(dev).state).toBe('CONFIG_UNLOCKED');
    expect(tdiOf(dev)!.history).toEqual(['CONFIG_UNLOCKED', 'CONFIG_LOCKED', 'RUN', 'ERROR', 'CONFIG_UNLOCKED']);
    // A fresh lock needs a fresh attestation: the old report's nonce is stale.
    expect(tdispLock(dev).state).toBe('CONFIG_LOCKED');
    expect(tdispAttest(dev, { bdf: tdiOf(dev)!.bdf, measurement: REF, nonce: 12345, mmio: [] }, REF)).toBe(-Errno.EACCES);
  });

  it('reset (FLR) and unlock also revoke', () => {
    const { m, dev } = setup();
    const page = m.memory.allocPages(0);
    acceptTdi(dev);
    expect(dev.dmaRead(page, 1)).toEqual(new Uint8Array(1));
    expect(tdispReset(dev).state).toBe('ERROR');
    expect(() => dev.dmaRead(page, 1)).toThrow(DmaFaultError);
    tdispStop(dev);
    acceptTdi(dev);
    expect(dev.dmaRead(page, 1)).toEqual(new Uint8Array(1));
    expect(tdispStop(dev).state).toBe('CONFIG_UNLOCKED');
    expect(() => dev.dmaRead(page, 1)).toThrow(DmaFaultError);
    expect(tdispReset(dev).state).toBe('CONFIG_UNLOCKED'); // nothing locked, nothing lost
  });

  it('shared -> private world with a mapping in flight: the bounced mapping completes through the pool, new ones go private', () => {
    const { m, dev } = setup();
    const a = m.memory.allocPages(0);
    const b = m.memory.allocPages(0);
    const inFlight = dmaMapPhys(dev, a, 64, DMA_FROM_DEVICE); // made in the shared world: bounced
    expect(dmaMappingError(dev, inFlight)).toBe(0);
    expect(m.swiotlb.isSwiotlbBuffer(inFlight - 2 ** 51)).toBe(true);
    acceptTdi(dev);
    // The device finishes the old I/O through the shared bounce buffer; unmap copies it back.
    dev.dmaWrite(inFlight, new Uint8Array(64).fill(0x77));
    dmaUnmapPhys(dev, inFlight, 64, DMA_FROM_DEVICE);
    expect(m.memory.read(a, 64).every((x) => x === 0x77)).toBe(true);
    // The next mapping is private and direct.
    const next = dmaMapPhys(dev, b, 64, DMA_FROM_DEVICE);
    expect(dmaMappingError(dev, next)).toBe(0);
    expect(next).toBe(b);
    dev.dmaWrite(next, new Uint8Array(64).fill(0x78));
    dmaUnmapPhys(dev, next, 64, DMA_FROM_DEVICE);
    expect(m.memory.read(b, 64).every((x) => x === 0x78)).toBe(true);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });

  it('DMA from a device in CONFIG_LOCKED: refused, recorded as a fault and traced, no byte moved', () => {
    const { m, dev } = setup();
    m.trace.record();
    const page = m.memory.allocPages(0);
    m.memory.write(page, new Uint8Array([5, 6, 7, 8]));
    expect(tdispLock(dev).state).toBe('CONFIG_LOCKED');
    expect(() => { dev.dmaWrite(page, new Uint8Array([0, 0, 0, 0])); }).toThrow(DmaFaultError);
    expect(() => dev.dmaRead(page, 4)).toThrow(DmaFaultError);
    expect(m.memory.read(page, 4)).toEqual(new Uint8Array([5, 6, 7, 8]));
    expect(m.faults.map((f) => [f.device, f.access, f.reasonName])).toEqual([
      ['nvme-tdi', 'write', 'permission'],
      ['nvme-tdi', 'read', 'permission'],
    ]);
    const refused = m.trace.events().filter((e) => e.name === 'coco:dma_refused');
    expect(refused.map((e) => e.fields)).toEqual([
      { phys_addr: page, size: 4, write: true, private: true },
      { phys_addr: page, size: 4, write: false, private: true },
    ]);
    expect(refused[0]?.device).toBe('nvme-tdi');
  });

  it('answers a transition not allowed from the current state with INVALID_INTERFACE_STATE', () => {
    const { m, dev } = setup();
    m.trace.record();
    expect(tdispStart(dev, 1)).toEqual({ errno: -Errno.EIO, errorCode: TdispErrorCode.INVALID_INTERFACE_STATE, state: 'CONFIG_UNLOCKED' });
    expect(tdispError(dev, 'config-write').errorCode).toBe(TdispErrorCode.INVALID_INTERFACE_STATE);
    expect(tdispGetReport(dev)).toBeNull();
    expect(tdispAccept(dev).errno).toBe(-Errno.EPERM);
    tdispLock(dev);
    expect(tdispLock(dev).errorCode).toBe(TdispErrorCode.INVALID_INTERFACE_STATE);
    const errs = m.trace.events().filter((e) => e.name === 'tdisp:error_response');
    expect(errs.map((e) => e.fields.request)).toEqual(['START_INTERFACE', 'ERROR(config-write)', 'GET_DEVICE_INTERFACE_REPORT', 'ACCEPT', 'LOCK_INTERFACE']);
    expect(errs[0]?.fields).toMatchObject({ error: 'INVALID_INTERFACE_STATE', error_code: 4, state: 'CONFIG_UNLOCKED' });
  });

  it('refuses bad input: not a PCI function, double init, bad measurement, no TDI', () => {
    const m = createMachine({ cc: 'tdx' });
    const platform = new Device(m, { name: 'platform-dev', dmaMaskBits: 64 });
    expect(tdispInit(platform, { measurement: REF })).toBe(-Errno.ENODEV);
    const dev = m.pci.addDevice({ name: 'x', dmaMaskBits: 64 });
    expect(tdispLock(dev).errno).toBe(-Errno.ENODEV);
    expect(tdispAttest(dev, null, REF)).toBe(-Errno.ENODEV);
    expect(tdispInit(dev, { measurement: '' })).toBe(-Errno.EINVAL);
    expect(tdispInit(dev, { measurement: REF })).toBe(0);
    expect(tdispInit(dev, { measurement: REF })).toBe(-Errno.EEXIST);
    tdispLock(dev);
    expect(tdispAttest(dev, null, REF)).toBe(-Errno.EACCES);
  });
});

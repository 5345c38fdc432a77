// Private (TEE) MMIO of a TDI, PCIe r6.1 sec 11.2 as the model reads it: T=1 requests reach it only
// in RUN once the guest accepted the interface; T=0 requests only while CONFIG_UNLOCKED. The CPU
// side (pciMmioRead / pciMmioWrite) and the P2P side (the device port) are checked in every state.
import { describe, expect, it } from 'vitest';
import {
  createMachine,
  DmaFaultError,
  Errno,
  PAGE_SIZE,
  pciMmioRead,
  pciMmioWrite,
  SZ_1M,
  tdispAccept,
  tdispAttest,
  tdispBarIsPrivate,
  tdispError,
  tdispGetReport,
  tdispInit,
  tdispLock,
  tdispNotifierRegister,
  tdispPrivateMmioAllowed,
  tdispReset,
  tdispStart,
  tdispStop,
  toPciDev,
} from '../index.js';
import type { Device, Machine, TdispChange, TdispMmioWorld } from '../index.js';

const REF = 'accel-fw-3:sha384:77';

/** A CC guest with a switch: accel0 (a TDI with a P2P BAR1) and two peers under the same switch. */
function setup() {
  const m = createMachine({ cc: { type: 'tdx', sharedBit: 51 } });
  const hb = m.pci.addHostBridge({ p2pAllowed: true });
  const sw = m.pci.addSwitch(m.pci.addRootPort(hb), { downstreamPorts: 3 });
  const [d0, d1, d2] = sw.downstreamPorts;
  const accel = m.pci.addDevice({ name: 'accel0', parent: d0!, dmaMaskBits: 64, bars: [{ size: 64 * 1024 }, { size: 2 * SZ_1M, prefetch: true, is64: true, p2p: true }] });
  const tdiPeer = m.pci.addDevice({ name: 'dma0', parent: d1!, dmaMaskBits: 64 });
  const plainPeer = m.pci.addDevice({ name: 'nic0', parent: d2!, dmaMaskBits: 64 });
  expect(tdispInit(accel, { measurement: REF, privateBars: [1] })).toBe(0);
  expect(tdispInit(tdiPeer, { measurement: REF })).toBe(0);
  const bar = toPciDev(accel)!.bar(1)!;
  return { m, accel, tdiPeer, plainPeer, bar };
}

function acceptTdi(dev: Device): void {
  expect(tdispLock(dev).errno).toBe(0);
  const report = tdispGetReport(dev)!;
  expect(tdispAttest(dev, report, REF)).toBe(0);
  expect(tdispStart(dev, report.nonce).errno).toBe(0);
  expect(tdispAccept(dev).errno).toBe(0);
}

/** What each kind of requester gets at the BAR right now. */
function probe(m: Machine, phys: number, busAddr: number, tdiPeer: Device, plainPeer: Device) {
  const cpu = (world: TdispMmioWorld) => {
    const out = new Uint8Array(8);
    const rc = pciMmioRead(m, phys, out, world);
    return { rc, allOnes: out.every((b) => b === 0xff) };
  };
  const p2p = (d: Device) => {
    try {
      d.dmaRead(busAddr, 8);
      return 'ok';
    } catch (e) {
      if (e instanceof DmaFaultError) return 'fault';
      throw e;
    }
  };
  return { cpuPrivate: cpu('private'), cpuShared: cpu('shared'), tdiPeer: p2p(tdiPeer), plainPeer: p2p(plainPeer) };
}

describe('TDISP private MMIO', () => {
  it('is reachable by T=1 requests only in RUN after acceptance, by T=0 only while unlocked: every state', () => {
    const { m, accel, tdiPeer, plainPeer, bar } = setup();
    m.trace.record();
    acceptTdi(tdiPeer); // the peer issues T=1 requests from now on
    const phys = bar.start + PAGE_SIZE;
    const bus = bar.busAddr + PAGE_SIZE;
    expect(tdispBarIsPrivate(accel, 1)).toBe(true);
    expect(tdispBarIsPrivate(accel, 0)).toBe(false);
    expect(tdispGetReport(tdiPeer)?.mmio).toEqual([]); // no BARs: no private MMIO

    const refusedAll = { rc: -Errno.EIO, allOnes: true };
    const ok = { rc: 0, allOnes: false };
    // CONFIG_UNLOCKED: ordinary MMIO for T=0; nothing is private yet, so T=1 is refused.
    expect(probe(m, phys, bus, tdiPeer, plainPeer)).toEqual({ cpuPrivate: refusedAll, cpuShared: ok, tdiPeer: 'fault', plainPeer: 'ok' });
    // CONFIG_LOCKED: T=0 gets UR now, T=1 not before RUN.
    expect(tdispLock(accel).errno).toBe(0);
    expect(probe(m, phys, bus, tdiPeer, plainPeer)).toEqual({ cpuPrivate: refusedAll, cpuShared: refusedAll, tdiPeer: 'fault', plainPeer: 'fault' });
    // RUN, attested, not accepted: still refused.
    const report = tdispGetReport(accel)!;
    expect(report.mmio).toEqual([{ bar: 1, start: bar.start, size: bar.size }]);
    expect(tdispAttest(accel, report, REF)).toBe(0);
    expect(tdispStart(accel, report.nonce).state).toBe('RUN');
    expect(tdispPrivateMmioAllowed(accel)).toBe(false);
    expect(probe(m, phys, bus, tdiPeer, plainPeer)).toEqual({ cpuPrivate: refusedAll, cpuShared: refusedAll, tdiPeer: 'fault', plainPeer: 'fault' });
    // RUN and accepted: the guest's private mapping and the accepted peer get through; T=0 never.
    expect(tdispAccept(accel).errno).toBe(0);
    expect(probe(m, phys, bus, tdiPeer, plainPeer)).toEqual({ cpuPrivate: ok, cpuShared: refusedAll, tdiPeer: 'ok', plainPeer: 'fault' });
    // ERROR: everything refused.
    expect(tdispError(accel, 'device-error').state).toBe('ERROR');
    expect(probe(m, phys, bus, tdiPeer, plainPeer)).toEqual({ cpuPrivate: refusedAll, cpuShared: refusedAll, tdiPeer: 'fault', plainPeer: 'fault' });
    // STOP_INTERFACE: unlocked again, ordinary MMIO for T=0 only.
    expect(tdispStop(accel).state).toBe('CONFIG_UNLOCKED');
    expect(probe(m, phys, bus, tdiPeer, plainPeer)).toEqual({ cpuPrivate: refusedAll, cpuShared: ok, tdiPeer: 'fault', plainPeer: 'ok' });

    // Every refusal is a fault record and a tdisp:mmio_refused event.
    const refused = m.trace.events().filter((e) => e.name === 'tdisp:mmio_refused');
    expect(refused).toHaveLength(m.tdispMmio!.stats.refused);
    expect(m.faults.filter((f) => f.reasonName === 'permission')).toHaveLength(refused.length);
    expect(refused[0]?.fields).toMatchObject({ requester: 'cpu', bar: 1, phys_addr: phys, size: 8, write: false, world: 'private', state: 'CONFIG_UNLOCKED', accepted: false });
    expect(refused.some((e) => e.fields.requester === 'nic0' && e.fields.world === 'shared' && e.fields.state === 'RUN')).toBe(true);
    expect(m.faults.find((f) => f.device === 'cpu')).toMatchObject({ backend: 'tdisp', access: 'read', dmaAddr: phys });
  });

  it('a refused store moves no byte; an allowed one lands; non-private BARs are ordinary MMIO', () => {
    const { m, accel, bar } = setup();
    const b0 = toPciDev(accel)!.bar(0)!;
    const data = Uint8Array.from({ length: 64 }, (_, i) => i + 1);
    tdispLock(accel);
    expect(pciMmioWrite(m, bar.start, data, 'private')).toBe(-Errno.EIO);
    expect(pciMmioWrite(m, bar.start, data, 'shared')).toBe(-Errno.EIO);
    expect(m.memory.read(bar.start, 64).every((x) => x === 0)).toBe(true);
    // BAR0 was left out of privateBars: not TEE memory, reachable as before in every state.
    expect(pciMmioWrite(m, b0.start, data)).toBe(0);
    const back = new Uint8Array(64);
    expect(pciMmioRead(m, b0.start, back)).toBe(0);
    expect(back).toEqual(data);
    tdispStop(accel);
    acceptTdi(accel);
    expect(pciMmioWrite(m, bar.start + 3 * PAGE_SIZE - 32, data, 'private')).toBe(0); // crosses a page: both pages checked
    const got = new Uint8Array(64);
    expect(pciMmioRead(m, bar.start + 3 * PAGE_SIZE - 32, got, 'private')).toBe(0);
    expect(got).toEqual(data);
    // FLR in RUN: ERROR, and the next private load reads all ones.
    expect(tdispReset(accel).state).toBe('ERROR');
    expect(pciMmioRead(m, bar.start + 3 * PAGE_SIZE - 32, got, 'private')).toBe(-Errno.EIO);
    expect(got.every((x) => x === 0xff)).toBe(true);
  });

  it('refuses bad CPU accesses with an errno, never a fault: not a BAR, bad length, bad world', () => {
    const { m, bar } = setup();
    const ram = m.memory.allocPages(0);
    expect(pciMmioRead(m, ram, new Uint8Array(4))).toBe(-Errno.EFAULT);
    expect(pciMmioRead(m, bar.start + bar.size - 2, new Uint8Array(4))).toBe(-Errno.EFAULT); // runs past the BAR
    expect(pciMmioRead(m, bar.start, new Uint8Array(0))).toBe(-Errno.EINVAL);
    expect(pciMmioRead(m, -1, new Uint8Array(4))).toBe(-Errno.EINVAL);
    expect(pciMmioWrite(m, bar.start, new Uint8Array(4), 'secure' as TdispMmioWorld)).toBe(-Errno.EINVAL);
    expect(m.faults).toHaveLength(0);
  });

  it('bad privateBars are refused; notifiers see every change; a machine without TDIs has no gate', () => {
    const m = createMachine();
    expect(m.tdispMmio).toBeNull();
    const dev = m.pci.addDevice({ name: 'gpu', dmaMaskBits: 64, bars: [{ size: SZ_1M }] });
    const out = new Uint8Array(4);
    expect(pciMmioRead(m, toPciDev(dev)!.bar(0)!.start, out, 'private')).toBe(0); // no TDI anywhere: plain MMIO
    expect(tdispInit(dev, { measurement: REF, privateBars: [3] })).toBe(-Errno.EINVAL);
    expect(tdispInit(dev, { measurement: REF, privateBars: [0, 0] })).toBe(-Errno.EINVAL);
    const seen: TdispChange[] = [];
    const off = tdispNotifierRegister(dev, (c) => seen.push(c));
    expect(tdispInit(dev, { measurement: REF })).toBe(0);
    expect(m.tdispMmio).not.toBeNull();
    acceptTdi(dev);
    tdispStop(dev);
    off();
    tdispLock(dev);
    expect(seen.map((c) => `${c.state}:${c.privateMmio}`)).toEqual(['CONFIG_LOCKED:false', 'RUN:false', 'RUN:true', 'CONFIG_UNLOCKED:false']);
  });
});

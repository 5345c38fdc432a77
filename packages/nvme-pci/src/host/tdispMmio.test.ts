// The driver's register and doorbell accesses through the machine's TDISP private-MMIO gate: a
// TDI's private BAR0 answers the driver only in the world the TDI accepts (shared while
// CONFIG_UNLOCKED, private in RUN once accepted); a refused load reads all ones, which the reset
// and timeout paths take for a dead controller (drivers/nvme/host/pci.c: nvme_pci_enable,
// nvme_pci_ctrl_is_dead, nvme_timeout / nvme_should_reset).
import {
  BlkStatus,
  createMachine,
  ReqOp,
  SZ_1M,
  tdispAccept,
  tdispAttest,
  tdispError,
  tdispGetReport,
  tdispInit,
  tdispLock,
  tdispStart,
  tdispStop,
} from '@dmakit/dma-core';
import type { BlkRequest, Device, Machine } from '@dmakit/dma-core';
import { describe, expect, it } from 'vitest';
import { NvmeController, NvmeDev } from '@dmakit/nvme-pci';
import type { NvmeDevOptions } from '@dmakit/nvme-pci';
import { pattern, sameBytes } from '@dmakit/testkit';
import { DirectBlkMapper, TEST_LATENCY_NS, makeRequest } from '../testing/blockLayer.js';

const PAGE = 4096;
const FW = 'nvme-fw:sha384:test';

interface Rig {
  m: Machine;
  dev: Device;
  ctrl: NvmeController;
  host: NvmeDev;
  ended: Map<BlkRequest, BlkStatus[]>;
  done: (rq: BlkRequest, st: BlkStatus) => void;
}

function rig(opts: NvmeDevOptions = {}): Rig {
  const m = createMachine({ ramBytes: 64 * SZ_1M, swiotlbBytes: 0 });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: 0x4000 }] });
  const ctrl = new NvmeController(m, dev, { namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: 1 << 12 }], maxQueues: 2, latencyNs: TEST_LATENCY_NS });
  const host = new NvmeDev(m, dev, ctrl, new DirectBlkMapper(), { ioTimeoutNs: 1_000_000, ...opts });
  const ended = new Map<BlkRequest, BlkStatus[]>();
  const done = (rq: BlkRequest, st: BlkStatus): void => {
    ended.set(rq, [...(ended.get(rq) ?? []), st]);
  };
  return { m, dev, ctrl, host, ended, done };
}

/** lock -> report -> attest -> START_INTERFACE -> accept (the guest's TSM flow). */
function acceptTdi(dev: Device): void {
  expect(tdispLock(dev).errno).toBe(0);
  const report = tdispGetReport(dev);
  expect(tdispAttest(dev, report, FW)).toBe(0);
  expect(tdispStart(dev, report?.nonce ?? 0).errno).toBe(0);
  expect(tdispAccept(dev).errno).toBe(0);
}

/** Write a page at `lba` and run the clock; returns the request and the bytes. */
function writePage(r: Rig, lba: number, seed: number): { rq: BlkRequest; data: Uint8Array; st: BlkStatus } {
  const p = r.m.memory.allocPages(0);
  expect(p).not.toBe(0);
  const data = pattern(PAGE, seed);
  r.m.memory.write(p, data);
  const rq = makeRequest(r.host.queueLimits(), ReqOp.WRITE, lba, [[p, PAGE]], r.done);
  const st = r.host.queueRq(rq);
  r.m.scheduler.runUntilIdle();
  return { rq, data, st };
}

function tdispFaults(m: Machine) {
  return m.faults.filter((f) => f.backend === 'tdisp' && f.device === 'cpu');
}

describe('NvmeDev MMIO through the TDISP private-MMIO gate', () => {
  it('a device that is not a TDI: default shared mapping, nothing checked, nothing refused', () => {
    const r = rig();
    expect(r.host.mmioWorld).toBe('shared');
    expect(r.host.probe()).toBe(0);
    const w = writePage(r, 0, 1);
    expect(r.ended.get(w.rq)).toEqual([BlkStatus.OK]);
    expect(r.host.mmioRefused).toBe(0);
    expect(r.m.faults).toEqual([]);
    // The world is only a mapping attribute: a private mapping of a non-TDI BAR changes nothing.
    expect(r.host.setMmioWorld('private')).toBe(0);
    expect(r.ended.get(writePage(r, 8, 2).rq)).toEqual([BlkStatus.OK]);
    expect(r.host.mmioRefused).toBe(0);
  });

  it('rejects a world that is neither shared nor private (typed errors, no change)', () => {
    expect(() => rig({ mmioWorld: 'secure' as never })).toThrow(RangeError);
    const r = rig();
    expect(r.host.setMmioWorld('both' as never)).toBe(-22);
    expect(r.host.mmioWorld).toBe('shared');
  });

  it('probes in CONFIG_UNLOCKED through the shared mapping, then does verified I/O privately once accepted', () => {
    const r = rig();
    expect(tdispInit(r.dev, { measurement: FW })).toBe(0);
    expect(r.host.probe()).toBe(0);
    acceptTdi(r.dev);
    expect(r.host.setMmioWorld('private')).toBe(0);
    const w = writePage(r, 16, 3);
    expect(r.ended.get(w.rq)).toEqual([BlkStatus.OK]);
    expect(sameBytes(r.ctrl.namespace(1)?.readLbas(16, 8), w.data)).toBe(true);
    expect(r.host.mmioRefused).toBe(0);
    expect(tdispFaults(r.m)).toEqual([]);
  });

  it('a driver that keeps its shared mapping after acceptance: doorbells dropped, CSTS all ones, the controller is declared dead, the I/O fails cleanly', () => {
    const r = rig();
    expect(tdispInit(r.dev, { measurement: FW })).toBe(0);
    expect(r.host.probe()).toBe(0);
    acceptTdi(r.dev);
    r.m.trace.record({ capacity: 256 });
    const w = writePage(r, 0, 4);
    // The SQ doorbell never reached the controller: the request timed out, the timeout handler
    // read CSTS = 0xffffffff (CFS set: nvme_should_reset), the reset found the controller gone.
    expect(w.st).toBe(BlkStatus.OK);
    expect(r.ended.get(w.rq)).toEqual([BlkStatus.IOERR]);
    expect(r.host.state).toBe('dead');
    expect(r.host.lastError).toBe('controller gone (CSTS reads all ones)');
    expect(r.host.log.some((l) => l.includes('CSTS=0xffffffff'))).toBe(true);
    expect(r.ctrl.stats.completions).toBeGreaterThan(0); // probe's admin commands only
    expect(r.ctrl.namespace(1)?.readLbas(0, 8).every((b) => b === 0)).toBe(true);
    const faults = tdispFaults(r.m);
    expect(faults.length).toBe(r.host.mmioRefused);
    expect(faults.some((f) => f.access === 'write')).toBe(true); // the doorbell
    expect(faults.some((f) => f.access === 'read')).toBe(true); // CSTS
    expect(faults[0]?.detail).toMatch(/shared MMIO request to .* BAR0 refused in RUN/);
    const refused = r.m.trace.events().filter((e) => e.name === 'tdisp:mmio_refused');
    expect(refused.length).toBe(faults.length);
    expect(refused[0]?.fields).toMatchObject({ requester: 'cpu', bar: 0, world: 'shared', state: 'RUN', accepted: true });
    // The dead controller refuses new work at once; removing it throws nothing.
    expect(r.host.queueRq(makeRequest(r.host.queueLimits(), ReqOp.READ, 0, [[r.m.memory.allocPages(0), PAGE]], r.done))).toBe(BlkStatus.IOERR);
    expect(() => {
      r.host.remove();
    }).not.toThrow();
  });

  it('a locked TDI answers the shared mapping with all ones between LOCK and accept', () => {
    const r = rig();
    expect(tdispInit(r.dev, { measurement: FW })).toBe(0);
    expect(r.host.probe()).toBe(0);
    expect(tdispLock(r.dev).errno).toBe(0);
    // A reset now: nvme_pci_enable reads CSTS == -1 and gives up (-ENODEV), nothing thrown.
    expect(r.host.resetCtrl()).toBe(0);
    expect(r.host.waitLive()).toBe(-19);
    expect(r.host.state).toBe('dead');
    expect(tdispFaults(r.m).every((f) => f.detail.includes('CONFIG_LOCKED'))).toBe(true);
    expect(tdispFaults(r.m).length).toBeGreaterThan(0);
  });

  it('a TDISP error revokes the private mapping: new I/O fails cleanly; after STOP the shared mapping works again', () => {
    const r = rig();
    expect(tdispInit(r.dev, { measurement: FW })).toBe(0);
    expect(r.host.probe()).toBe(0);
    acceptTdi(r.dev);
    r.host.setMmioWorld('private');
    expect(r.ended.get(writePage(r, 0, 5).rq)).toEqual([BlkStatus.OK]);

    // Recovered guest: STOP_INTERFACE and back to the shared mapping before the driver touches the BAR.
    expect(tdispError(r.dev, 'config-write').errno).toBe(0);
    expect(tdispStop(r.dev).errno).toBe(0);
    expect(r.host.setMmioWorld('shared')).toBe(0);
    const ok = writePage(r, 8, 6);
    expect(r.ended.get(ok.rq)).toEqual([BlkStatus.OK]);
    expect(sameBytes(r.ctrl.namespace(1)?.readLbas(8, 8), ok.data)).toBe(true);
    expect(tdispFaults(r.m)).toEqual([]);

    // Accept again, then an error the guest does not handle: the private mapping reads all ones.
    acceptTdi(r.dev);
    r.host.setMmioWorld('private');
    expect(tdispError(r.dev, 'device-error').errno).toBe(0);
    const lost = writePage(r, 16, 7);
    expect(r.ended.get(lost.rq)).toEqual([BlkStatus.IOERR]);
    expect(r.host.state).toBe('dead');
    expect(r.host.lastError).toBe('controller gone (CSTS reads all ones)');
    const faults = tdispFaults(r.m);
    expect(faults.length).toBeGreaterThan(0);
    expect(faults.every((f) => f.detail.includes('private MMIO request') && f.detail.includes('refused in ERROR'))).toBe(true);
    expect(r.ctrl.namespace(1)?.readLbas(16, 8).every((b) => b === 0)).toBe(true);
  });
});

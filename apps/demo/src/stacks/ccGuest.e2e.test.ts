import { describe, expect, it } from 'vitest';
import { createMachine, pciMmioRead, SZ_1G, tdispAccept, tdispAttest, tdispError, tdispGetReport, tdispInit, tdispLock, tdispStart, toPciDev } from '@dmakit/dma-core';
import type { Device, Machine, TraceEvent } from '@dmakit/dma-core';
import { NVME_REG_CSTS } from '@dmakit/nvme-pci';
import { main } from '../cli.js';
import { CcNvmeRig, CcRigError } from './ccGuest/workload.js';
import type { CcGuestResult } from './ccGuest.js';
import { getStack, StackUsageError } from './index.js';

function stack() {
  const s = getStack('cc-guest');
  if (s === undefined) throw new Error('cc-guest is not registered');
  return s;
}

function run(extra: Record<string, string | number> = {}, size = 32, onMachine?: (m: Machine) => void): CcGuestResult {
  return stack().run({ seed: 3, size, extra, ...(onMachine !== undefined ? { onMachine } : {}) }) as CcGuestResult;
}

describe('cc-guest stack', () => {
  it('bounces in the shared world, goes private as an accepted TDI, refuses a rogue device and survives a TDISP error', () => {
    const r = run();
    expect(r.checks.filter((c) => !c.ok)).toEqual([]);
    expect(r.verified).toBe(true);
    const [shared, convert, priv, err] = r.phases;
    // 8 KiB per I/O: a write bounces in (8 KiB), a read bounces in and back (16 KiB).
    expect(shared?.bouncedBytesPerIo).toBe(12288);
    expect(shared?.swiotlbNsPerIo).toBeGreaterThan(0);
    expect(priv?.bouncedBytes).toBe(0);
    expect(priv?.simulatedIops).toBeGreaterThan(shared?.simulatedIops ?? Infinity);
    // The conversion happened with I/Os in flight: part bounced, part private, none lost.
    expect(convert?.ios).toBe(32);
    expect(convert?.bounces).toBeGreaterThan(0);
    expect(convert?.privateAccesses).toBeGreaterThan(0);
    // The TDISP error made in-flight private DMA fault; the I/Os were redone through the pool.
    expect(err?.faults).toBeGreaterThan(0);
    expect(err?.mismatches).toBe(0);
    expect(r.namespaceMismatches).toBe(0);
    expect(r.rogue).toEqual({ attempts: 4, refused: 4, secretIntact: true, attestErrno: -13, acceptErrno: -1 });
    expect(r.tdispHistory).toEqual(['CONFIG_UNLOCKED', 'CONFIG_LOCKED', 'RUN', 'ERROR', 'CONFIG_UNLOCKED']);
    // Coherent queues were decrypted at probe and re-encrypted at remove; dma-debug saw nothing wrong.
    expect(r.conversions.decrypt).toBeGreaterThan(0);
    expect(r.conversions.encrypt).toBe(r.conversions.decrypt);
    expect(r.dmaDebugReports).toBe(0);
    const text = stack().format(r);
    expect(text).toContain('bounced B/IO');
    expect(text).toContain('verified:');
  });

  it('exports the private MMIO of a TDI through a vfio-pci dma-buf only in RUN, moves verified bytes P2P, and revokes it on a TDISP error', () => {
    const r = run();
    const pm = r.privateMmio;
    if (pm === undefined) throw new Error('the private MMIO step did not run');
    // -EPERM in CONFIG_UNLOCKED, CONFIG_LOCKED and RUN before acceptance; the guest's private loads read all ones.
    expect(pm.exportErrnos).toEqual([-1, -1, -1]);
    expect(pm.cpuRefused).toBe(4);
    expect(pm.cpuAllOnes).toBe(true);
    // In RUN: two 16 KiB ranges mapped by bus address through the switch, every byte checked both ways.
    expect(pm.mode).toBe('bus-addr');
    expect(pm.bytesMoved).toBe(32768);
    expect(pm.mismatches).toBe(0);
    // The TDISP error: one move_notify, the importer's mapping torn down, a new map -ENODEV,
    // the stale address and a non-TDI peer both refused, the BAR untouched.
    expect(pm.moveNotifies).toBe(1);
    expect(pm.mapAfterRevokeErrno).toBe(-19);
    expect(pm.liveMappingsAfterRevoke).toBe(0);
    expect(pm.p2pRefused).toBe(2);
    expect(pm.barIntact).toBe(true);
    expect(r.checks.at(-1)).toEqual({ name: 'dma-buf over private MMIO: refused before RUN, bytes moved in RUN, revoked on leaving RUN', ok: true });
    expect(r.dmaDebugReports).toBe(0);
    expect(stack().format(r)).toContain('dma-buf over private MMIO: export before acceptance -1/-1/-1');
  });

  it('--verify fails when the private-MMIO step sees a wrong byte', () => {
    // Corrupt every private store the guest makes (a flipped bit on the CPU side) and watch the check fail.
    const r = run({}, 32, (m) => {
      const write = m.memory.write.bind(m.memory);
      m.memory.write = (phys: number, bytes: Uint8Array, off?: number, len?: number) => {
        const region = m.memory.regionOf(phys);
        if (region?.name.endsWith('BAR1') === true && region.owner === 'accel0') {
          const bad = bytes.slice();
          bad[0] = (bad[0] ?? 0) ^ 1;
          write(phys, bad, off, len);
          return;
        }
        write(phys, bytes, off, len);
      };
    });
    expect(r.privateMmio?.mismatches).toBeGreaterThan(0);
    expect(r.verified).toBe(false);
    expect(r.checks.find((c) => c.name.startsWith('dma-buf over private MMIO'))?.ok).toBe(false);
  });

  it('runs on SEV too, and is deterministic per seed', () => {
    const a = run({ vendor: 'sev', qd: 4 }, 24);
    expect(a.verified).toBe(true);
    expect(a.sharedBit).toBe(47);
    expect(JSON.stringify(run({ vendor: 'sev', qd: 4 }, 24))).toBe(JSON.stringify(a));
  });

  it('traces every conversion and TDISP transition under its own event name', () => {
    const events: TraceEvent[] = [];
    run({ qd: 4 }, 16, (m) => {
      m.trace.subscribe((e) => events.push(e));
    });
    const names = new Set(events.map((e) => e.name));
    for (const n of ['coco:set_memory_decrypted', 'coco:set_memory_encrypted', 'coco:dma_refused', 'tdisp:state_change', 'tdisp:accept', 'tdisp:error_response', 'tdisp:mmio_refused', 'swiotlb:swiotlb_bounced']) {
      expect(names.has(n), n).toBe(true);
    }
    const states = events.filter((e) => e.name === 'tdisp:state_change' && e.device !== '' && e.fields.new_state === 'ERROR');
    expect(states.some((e) => e.fields.revoked === true)).toBe(true);
  });

  it("maps the drive's BAR0 private at acceptance and shared again after STOP, with no register access refused", () => {
    const r = run();
    expect(r.driverMmio).toEqual({ worlds: ['shared', 'private', 'shared'], refused: 0 });
    expect(stack().format(r)).toContain('nvme0 BAR0 mapping: shared -> private -> shared; 0 register/doorbell accesses refused');
  });

  describe('a guest driver that does not follow the TDI into the right world', () => {
    const FW = 'nvme-fw:sha384:e2e';

    function acceptedRig(): { m: Machine; rig: CcNvmeRig; bar0: number } {
      const m = createMachine({ ramBytes: SZ_1G, seed: 5, cc: { type: 'tdx', sharedBit: 51 } });
      const rig = new CcNvmeRig(m, 'nvme0');
      // A few verified I/Os in the shared world first (the BAR is not locked yet).
      expect(rig.run('shared', 16, 4).mismatches).toBe(0);
      const dev: Device = rig.dev;
      expect(tdispInit(dev, { measurement: FW })).toBe(0);
      expect(tdispLock(dev).errno).toBe(0);
      const report = tdispGetReport(dev);
      expect(tdispAttest(dev, report, FW)).toBe(0);
      expect(tdispStart(dev, report?.nonce ?? 0).errno).toBe(0);
      expect(tdispAccept(dev).errno).toBe(0);
      return { m, rig, bar0: toPciDev(dev)?.bar(0)?.start ?? -1 };
    }

    function expectDeadCleanly(m: Machine, rig: CcNvmeRig, world: 'shared' | 'private', state: string): void {
      let err: unknown;
      try {
        rig.run('after', 16, 4);
      } catch (e) {
        err = e;
      }
      // The driver read CSTS = 0xffffffff: nvme_timeout reset the controller, nvme_pci_enable found it
      // gone; the I/Os ended with an error and the phase stopped with a typed error, not a hang.
      expect(err).toBeInstanceOf(CcRigError);
      expect((err as CcRigError).error).toBe('-EIO: controller dead (controller gone (CSTS reads all ones))');
      expect(rig.host.state).toBe('dead');
      const faults = m.faults.filter((f) => f.backend === 'tdisp' && f.device === 'cpu');
      expect(faults.length).toBe(rig.host.mmioRefused);
      expect(faults.some((f) => f.access === 'read')).toBe(true);
      expect(faults.some((f) => f.access === 'write')).toBe(true);
      expect(faults.every((f) => f.detail.startsWith(`TDISP: ${world} MMIO request to`) && f.detail.includes(`BAR0 refused in ${state}`))).toBe(true);
      expect(rig.verifyNamespace().mismatches).toBe(0);
      expect(() => {
        rig.host.remove();
      }).not.toThrow();
    }

    it('keeps its shared mapping after acceptance: every register reads all ones and each refusal is a recorded tdisp fault', () => {
      const { m, rig, bar0 } = acceptedRig();
      const events: TraceEvent[] = [];
      m.trace.subscribe((e) => events.push(e));
      expectDeadCleanly(m, rig, 'shared', 'RUN');
      const buf = new Uint8Array(4);
      expect(pciMmioRead(m, bar0 + NVME_REG_CSTS, buf, 'shared')).toBe(-5);
      expect([...buf]).toEqual([0xff, 0xff, 0xff, 0xff]);
      const refused = events.filter((e) => e.name === 'tdisp:mmio_refused' && e.fields.requester === 'cpu');
      expect(refused.length).toBeGreaterThan(0);
      expect(refused[0]?.fields).toMatchObject({ bar: 0, world: 'shared', state: 'RUN', accepted: true });
    });

    it('keeps its private mapping after a TDISP error: the controller is declared dead, the data already written is intact', () => {
      const { m, rig } = acceptedRig();
      rig.setMmioWorld('private');
      expect(rig.run('private', 16, 4).mismatches).toBe(0);
      expect(rig.host.mmioRefused).toBe(0);
      expect(tdispError(rig.dev, 'device-error').errno).toBe(0);
      expectDeadCleanly(m, rig, 'private', 'ERROR');
    });
  });

  it('rejects bad options before any work', () => {
    expect(() => { stack().validate({ seed: 1, extra: { vendor: 'cca' } }); }).toThrow(StackUsageError);
    expect(() => { stack().validate({ seed: 1, extra: { qd: 0 } }); }).toThrow(/--qd/);
    expect(() => { stack().validate({ seed: 1, iommu: 'strict' }); }).toThrow(StackUsageError);
    expect(() => { stack().validate({ seed: 1, size: 4 }); }).toThrow(StackUsageError);
    expect(() => { stack().validate({ seed: 1, size: 16, extra: { qd: 8 } }); }).toThrow(/at least 4 x --qd/);
  });

  it('works from the CLI with --json', () => {
    let out = '';
    const code = main(['cc-guest', '--ios', '24', '--qd', '4', '--vendor', 'sev', '--json'], { stdout: { write: (s: string) => (out += s) }, stderr: { write: () => true } });
    expect(code).toBe(0);
    const r = JSON.parse(out) as CcGuestResult;
    expect(r.verified).toBe(true);
    expect(r.phases).toHaveLength(4);
  });
});

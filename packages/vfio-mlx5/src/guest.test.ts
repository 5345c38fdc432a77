import { describe, expect, it } from 'vitest';
import { Errno, PAGE_SIZE, SZ_1M, createMachine } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import {
  ENOMSG,
  GUEST_RAM_BLOCK_BYTES,
  KvmGuest,
  Mlx5SimFunction,
  Mlx5VfPciCoreDevice,
  VfioDeviceMigState as S,
  createGuestMemory,
  mlx5GuestPostRxRings,
  vfioDeviceDirtySync,
  vfioMigReadAll,
  vfioMigWriteAll,
} from './index.js';
import type { GuestMemory, VfioMigFile } from './index.js';
import { fakeUnmanagedDomain } from './testing/fakeIommu.js';

/** Slots of `slotBytes` with a hole of the same size after each (the demo's layout). */
const slots = (n: number, slotBytes: number): { iova: number; length: number }[] => Array.from({ length: n }, (_, i) => ({ iova: i * 2 * slotBytes, length: slotBytes }));

function vm(o: { seed?: number; ramBytes?: number; slots?: { iova: number; length: number }[] } = {}): { machine: Machine; domain: ReturnType<typeof fakeUnmanagedDomain>; mem: GuestMemory } {
  const machine = createMachine({ ramBytes: o.ramBytes ?? 64 * SZ_1M, seed: o.seed ?? 1, dmaDebug: 'strict' });
  const domain = fakeUnmanagedDomain();
  const mem = createGuestMemory(machine, domain, o.slots ?? slots(4, 3 * SZ_1M));
  if (typeof mem === 'number') throw new Error(`createGuestMemory ${mem}`);
  return { machine, domain, mem };
}

describe('GuestMemory: guest RAM mapped into the unmanaged domain at IOVA = GPA', () => {
  it('numbers guest pages across the slots, backs and maps each one, and finds pages by GPA', () => {
    const { machine, domain, mem } = vm();
    const slotPages = (3 * SZ_1M) / PAGE_SIZE;
    expect(mem.pages).toBe(4 * slotPages);
    for (let i = 0; i < mem.pages; i += 97) {
      expect(mem.gpa[i]).toBe(Math.floor(i / slotPages) * 6 * SZ_1M + (i % slotPages) * PAGE_SIZE);
      expect(domain.iovaToPhys(mem.gpa[i]!)).toBe(mem.hpa[i]);
      expect(mem.pageIndex(mem.gpa[i]! + 123)).toBe(i);
    }
    // Holes and the space after the last slot are not guest RAM.
    expect(mem.pageIndex(3 * SZ_1M)).toBe(-1);
    expect(mem.pageIndex(24 * SZ_1M)).toBe(-1);
    expect(mem.pageIndex(-PAGE_SIZE)).toBe(-1);
    expect(mem.pagesLeftInRegion(0)).toBe(slotPages);
    expect(mem.pagesLeftInRegion(slotPages + 5)).toBe(slotPages - 5);
    // A 3 MiB slot is a 2 MiB block and a 1 MiB block: naturally aligned host memory.
    expect(mem.hpa[0]! % GUEST_RAM_BLOCK_BYTES).toBe(0);
    expect(mem.hpa[512]! % SZ_1M).toBe(0);
    // A CPU write to the host page is what the device reads at the GPA.
    machine.memory.write(mem.hpa[700]!, new Uint8Array([1, 2, 3]));
    expect(machine.memory.read(domain.iovaToPhys(mem.gpa[700]!), 3)).toEqual(new Uint8Array([1, 2, 3]));
  });

  it('refuses bad slots with -EINVAL and undoes a partial setup on -ENOMEM', () => {
    const machine = createMachine({ ramBytes: 16 * SZ_1M, seed: 1, dmaDebug: 'strict' });
    const domain = fakeUnmanagedDomain();
    expect(createGuestMemory(machine, domain, [])).toBe(-Errno.EINVAL);
    expect(createGuestMemory(machine, domain, [{ iova: 100, length: PAGE_SIZE }])).toBe(-Errno.EINVAL);
    expect(createGuestMemory(machine, domain, [{ iova: 0, length: 0 }])).toBe(-Errno.EINVAL);
    expect(createGuestMemory(machine, domain, [{ iova: 0, length: 2 * PAGE_SIZE }, { iova: PAGE_SIZE, length: PAGE_SIZE }])).toBe(-Errno.EINVAL);
    const free = machine.memory.stats().freePages;
    expect(createGuestMemory(machine, domain, [{ iova: 0, length: 4 * SZ_1M }, { iova: 8 * SZ_1M, length: 32 * SZ_1M }])).toBe(-Errno.ENOMEM);
    expect(machine.memory.stats().freePages).toBe(free);
    expect(domain.iovaToPhys(0)).toBeLessThan(0);
  });
});

describe('KvmGuest: vCPU stores and the KVM dirty log', () => {
  it('logs exactly the pages it writes while dirty logging is on, and clears them on read', () => {
    const { machine, mem } = vm();
    const guest = new KvmGuest({ machine, memory: mem, seed: 3, cpuFirstPage: mem.pages / 2 });
    const before = new Uint8Array(mem.pages * PAGE_SIZE);
    const snapshot = (into: Uint8Array): void => {
      for (let i = 0; i < mem.pages; i++) machine.memory.readInto(mem.hpa[i]!, into, i * PAGE_SIZE, PAGE_SIZE);
    };
    guest.tick(); // logging off: writes, no log
    expect(guest.writes).toBe(6);
    expect(guest.getAndClearDirtyLog(new Set())).toBe(0);
    guest.setDirtyLogging(true);
    snapshot(before);
    for (let i = 0; i < 20; i++) guest.tick();
    const after = new Uint8Array(before.length);
    snapshot(after);
    const logged = new Set<number>();
    const n = guest.getAndClearDirtyLog(logged);
    expect(n).toBe(logged.size);
    for (let p = 0; p < mem.pages; p++) {
      let changed = false;
      for (let i = p * PAGE_SIZE; i < (p + 1) * PAGE_SIZE && !changed; i++) changed = after[i] !== before[i];
      if (changed) expect(logged.has(p), `page ${p} written but not logged`).toBe(true);
      if (p < mem.pages / 2) expect(logged.has(p), `page ${p} is outside the vCPU window`).toBe(false);
    }
    expect(n).toBeGreaterThan(50);
    expect(guest.getAndClearDirtyLog(new Set())).toBe(0); // cleared
  });

  it('ticks on the simulation clock until stopped, stepping its devices; the same seed writes the same bytes', () => {
    const run = (): { digest: number; steps: number; writes: number } => {
      const { machine, mem } = vm({ seed: 9 });
      let steps = 0;
      const guest = new KvmGuest({ machine, memory: mem, seed: 11, devices: [{ step: () => steps++ }], tickNs: 1000 });
      guest.start();
      machine.advance(10_500);
      guest.stop();
      machine.advance(10_000);
      guest.tick(); // stopped: nothing
      const page = new Uint8Array(PAGE_SIZE);
      let digest = 0x811c_9dc5;
      for (let i = 0; i < mem.pages; i++) {
        machine.memory.readInto(mem.hpa[i]!, page, 0, PAGE_SIZE);
        for (const b of page) digest = Math.imul(digest ^ b, 0x0100_0193) >>> 0;
      }
      return { digest, steps, writes: guest.writes };
    };
    const a = run();
    expect(a.writes).toBe(10 * 6);
    expect(a.steps).toBe(10 * 3);
    expect(run().digest).toBe(a.digest);
  });

  it('refuses a vCPU window outside guest RAM and a store larger than a page', () => {
    const { machine, mem } = vm();
    expect(() => new KvmGuest({ machine, memory: mem, seed: 1, cpuFirstPage: mem.pages })).toThrow(RangeError);
    expect(() => new KvmGuest({ machine, memory: mem, seed: 1, cpuPages: mem.pages + 1 })).toThrow(RangeError);
    expect(() => new KvmGuest({ machine, memory: mem, seed: 1, storeBytes: PAGE_SIZE })).toThrow(RangeError);
  });
});

/** A source host: guest RAM in four slots, the VF's rings posted by the guest driver. */
function host(seed: number): { machine: Machine; mem: GuestMemory; domain: ReturnType<typeof fakeUnmanagedDomain>; fw: Mlx5SimFunction; drv: Mlx5VfPciCoreDevice } {
  const { machine, domain, mem } = vm({ seed, slots: slots(4, SZ_1M) });
  const pf = machine.pci.addDevice({ name: 'mlx5_pf', dmaMaskBits: 64 });
  const vf = machine.pci.addDevice({ name: 'mlx5_vf', dmaMaskBits: 64 });
  domain.attachDevice(vf);
  const fw = new Mlx5SimFunction({ machine, pf, vf, stateBytes: 16 * 1024, queues: 8, seed });
  const drv = new Mlx5VfPciCoreDevice({ machine, fw });
  return { machine, mem, domain, fw, drv };
}

describe("the guest mlx5 driver's receive rings", () => {
  it('puts one ring per queue in the lower half of guest RAM, each inside its slot: the VF writes nowhere else', () => {
    const h = host(2);
    expect(mlx5GuestPostRxRings(h.fw, h.mem)).toBe(0);
    h.domain.setDirtyTracking(true);
    for (let i = 0; i < 400; i++) h.fw.step();
    expect(h.fw.stats.packets).toBe(400);
    expect(h.fw.stats.dmaFaults).toBe(0);
    const written = [...h.domain.dirty].map((gpa) => h.mem.pageIndex(gpa));
    expect(written.length).toBeGreaterThan(8);
    for (const p of written) expect(p >= 0 && p < h.mem.pages / 2, `page ${p}`).toBe(true);
    expect(mlx5GuestPostRxRings(h.fw, h.mem, { firstPage: h.mem.pages })).toBe(-Errno.EINVAL);
    expect(mlx5GuestPostRxRings(h.fw, h.mem, { queues: 0 })).toBe(-Errno.EINVAL);
  });
});

describe('VMM helpers: the data fd stream and the device dirty sync', () => {
  it('vfioDeviceDirtySync reports, as guest page indices, every page the VF wrote', () => {
    const h = host(4);
    mlx5GuestPostRxRings(h.fw, h.mem);
    expect(h.drv.vdev.dmaLoggingStart(h.mem.regions, PAGE_SIZE)).toBe(PAGE_SIZE);
    h.domain.setDirtyTracking(true);
    for (let i = 0; i < 200; i++) h.fw.step();
    const out = new Set<number>();
    const n = vfioDeviceDirtySync(h.drv.vdev, h.mem, PAGE_SIZE, out);
    expect(n).toBe(out.size);
    expect([...out].sort((a, b) => a - b)).toEqual([...h.domain.dirty].map((g) => h.mem.pageIndex(g)).sort((a, b) => a - b));
    expect(vfioDeviceDirtySync(h.drv.vdev, h.mem, PAGE_SIZE, new Set())).toBe(0); // read and cleared
    h.drv.vdev.dmaLoggingStop();
    expect(vfioDeviceDirtySync(h.drv.vdev, h.mem, PAGE_SIZE, new Set())).toBe(-Errno.EINVAL);
  });

  it('vfioMigReadAll drains a save fd to -ENOMSG / end; vfioMigWriteAll feeds it to the target in pieces', () => {
    const src = host(6);
    mlx5GuestPostRxRings(src.fw, src.mem);
    for (let i = 0; i < 50; i++) src.fw.step();
    const pre = src.drv.vdev.setMigDeviceState(S.PRE_COPY);
    const fd = pre.dataFd!;
    const parts: Uint8Array[] = [];
    const initial = vfioMigReadAll(fd, parts, 3000);
    expect(initial).toBeGreaterThan(16 * 1024);
    expect(fd.read(new Uint8Array(16))).toBe(-ENOMSG);
    expect(src.drv.vdev.setMigDeviceState(S.STOP_COPY).ret).toBe(0);
    const final = vfioMigReadAll(fd, parts);
    expect(final).toBeGreaterThan(0);
    expect(parts.reduce((t, p) => t + p.length, 0)).toBe(initial + final);
    expect(vfioMigReadAll(fd, [], 0)).toBe(-Errno.EINVAL);

    const dst = host(7);
    const resume = dst.drv.vdev.setMigDeviceState(S.RESUMING).dataFd!;
    let pieces = 0;
    for (const p of parts) {
      expect(vfioMigWriteAll(resume, p, () => 1 + (pieces++ % 700))).toBe(0);
    }
    expect(pieces).toBeGreaterThan(parts.length);
    expect(dst.drv.vdev.setMigDeviceState(S.RUNNING).ret).toBe(0);
    expect(dst.fw.stateSnapshot()).toEqual(src.fw.stateSnapshot());
    // Errors come back as the fd's -errno: a save fd is read-only.
    expect(vfioMigWriteAll(fd, new Uint8Array(8))).toBe(-Errno.EBADF);
    expect(vfioMigWriteAll(resume, new Uint8Array(8), () => 0)).toBe(-Errno.EINVAL);
    const endless: VfioMigFile = { read: () => 1, write: () => 0, precopyInfo: () => -Errno.EINVAL, pos: 0, release: () => undefined };
    const sink: Uint8Array[] = [];
    expect(vfioMigReadAll(endless, sink, 16, 1000)).toBe(-Errno.EIO);
    expect(sink.length).toBe(1000);
  });
});

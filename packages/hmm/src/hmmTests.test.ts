// Ports of tools/testing/selftests/mm/hmm-tests.c against the dmirror device (lib/test_hmm.c).
import { describe, expect, it } from 'vitest';
import {
  Errno,
  MAP_ANONYMOUS,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MAP_SHARED,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  SZ_2M,
  VM_PFNMAP,
} from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';
import {
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_ZERO,
} from '@dmakit/hmm';
import { sameBytes } from '@dmakit/testkit';
import { addDmirror, intPattern, leakFree, mmapPages, setup } from './testing/fixture.js';

describe('hmm-tests (dmirror)', () => {
  it('open_close', () => {
    const f = setup();
    expect(f.mirror.chunkCount).toBe(0);
    leakFree(f);
  });

  it('anon_read: the device reads what the CPU wrote, with one fault', () => {
    const f = setup();
    const npages = 100;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages);
    f.proc.mm.write(addr, data);
    const r = f.mirror.read(addr, npages);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(npages);
    expect(r.faults).toBe(1);
    expect(sameBytes(r.data, data)).toBe(true);
    expect(f.mirror.checkInvariants()).toEqual([]);
    leakFree(f);
  });

  it('anon_read_prot: PROT_NONE faults with -EFAULT, a read-only mapping refuses writes with -EPERM', () => {
    // Every page is the zero page: dma-debug flags the overlapping bidirectional mappings (as the
    // kernel's cacheline tracking would), so run it in 'warn' mode and check that is all it saw.
    const f = setup({ dmaDebug: 'warn' });
    const npages = 16;
    const addr = mmapPages(f.proc, npages, PROT_NONE);
    expect(f.mirror.read(addr, npages).ret).toBe(-Errno.EFAULT);
    expect(f.proc.mm.mprotect(addr, npages * PAGE_SIZE, PROT_READ)).toBe(0);
    const r = f.mirror.read(addr, npages);
    expect(r.ret).toBe(0);
    expect(r.data.every((b) => b === 0)).toBe(true); // the zero page
    expect(f.mirror.write(addr, intPattern(npages)).ret).toBe(-Errno.EPERM);
    expect(f.machine.dmaDebug.reports.filter((r) => !r.rule.startsWith('cacheline-overlap')).map((r) => r.message)).toEqual([]);
    leakFree(f);
  });

  it('anon_write: the device writes and the CPU sees it', () => {
    const f = setup();
    const npages = 64;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 7);
    const r = f.mirror.write(addr, data);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(npages);
    expect(r.faults).toBe(1);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), data)).toBe(true);
    leakFree(f);
  });

  it('anon_write_prot: read-only mirror, then write after mprotect', () => {
    const f = setup({ dmaDebug: 'warn' }); // zero pages mapped several times (see anon_read_prot)
    const npages = 8;
    const addr = mmapPages(f.proc, npages, PROT_READ);
    const r = f.mirror.read(addr, npages);
    expect(r.ret).toBe(0);
    expect(r.faults).toBe(1);
    const data = intPattern(npages);
    expect(f.mirror.write(addr, data).ret).toBe(-Errno.EPERM);
    expect(f.proc.mm.mprotect(addr, npages * PAGE_SIZE, PROT_READ | PROT_WRITE)).toBe(0);
    const w = f.mirror.write(addr, data);
    expect(w.ret).toBe(0);
    expect(w.faults).toBe(1);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), data)).toBe(true);
    expect(f.machine.dmaDebug.reports.filter((r) => !r.rule.startsWith('cacheline-overlap')).map((r) => r.message)).toEqual([]);
    leakFree(f);
  });

  it('anon_write_child: a forked child writes through its own mirror, the parent is unchanged', () => {
    const f = setup();
    const npages = 32;
    const addr = mmapPages(f.proc, npages);
    const neg = intPattern(npages, -1);
    f.proc.mm.write(addr, neg);
    // The parent mirrors the buffer too (its device PTEs must be write-protected by fork).
    expect(f.mirror.write(addr, neg).ret).toBe(0);
    const child = f.proc.fork() as Process;
    expect(typeof child).toBe('object');
    expect(sameBytes(child.mm.read(addr, npages * PAGE_SIZE), neg)).toBe(true);
    const childMirror = f.mdev.open(child.mm);
    expect(sameBytes(childMirror.read(addr, npages).data, neg)).toBe(true);
    const pos = intPattern(npages, 1);
    const r = childMirror.write(addr, pos);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(npages);
    expect(sameBytes(child.mm.read(addr, npages * PAGE_SIZE), pos)).toBe(true);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), neg)).toBe(true);
    expect(sameBytes(f.mirror.read(addr, npages).data, neg)).toBe(true);
    expect(f.mirror.checkInvariants()).toEqual([]);
    expect(childMirror.checkInvariants()).toEqual([]);
    childMirror.close();
    child.exit();
    leakFree(f);
  });

  it('anon_write_child_shared: MAP_SHARED pages are shared with the child', () => {
    const f = setup();
    const npages = 8;
    const addr = mmapPages(f.proc, npages, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    f.proc.mm.write(addr, intPattern(npages, -1));
    const child = f.proc.fork() as Process;
    const cm = f.mdev.open(child.mm);
    const pos = intPattern(npages, 1);
    expect(cm.write(addr, pos).ret).toBe(0);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), pos)).toBe(true);
    cm.close();
    child.exit();
    leakFree(f);
  });

  it('anon_write_hugetlbfs: 2 MiB pages are mirrored with their order', () => {
    const f = setup();
    const npages = 1024;
    const addr = mmapPages(f.proc, npages, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB);
    const data = intPattern(npages, 1, 3);
    const w = f.mirror.write(addr, data);
    expect(w.ret).toBe(0);
    expect(w.cpages).toBe(npages);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), data)).toBe(true);
    const s = f.mirror.snapshot(addr, npages);
    expect(s.ret).toBe(0);
    expect(s.data.every((p) => p === (HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD))).toBe(true);
    leakFree(f);
  });

  it('snapshot: the flag table for none, hole, zero, read-only, writable, device-private and untouched pages', () => {
    const f = setup();
    const mm = f.proc.mm;
    const addr = mmapPages(f.proc, 7, PROT_NONE);
    expect(mm.munmap(addr + PAGE_SIZE, PAGE_SIZE)).toBe(0);
    expect(mm.mprotect(addr + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ)).toBe(0);
    expect(sameBytes(mm.read(addr + 2 * PAGE_SIZE, 4), new Uint8Array(4))).toBe(true); // zero page
    expect(mm.mprotect(addr + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ | PROT_WRITE)).toBe(0);
    mm.write(addr + 3 * PAGE_SIZE, new Uint8Array([3]));
    expect(mm.mprotect(addr + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ)).toBe(0);
    expect(mm.mprotect(addr + 4 * PAGE_SIZE, 3 * PAGE_SIZE, PROT_READ | PROT_WRITE)).toBe(0);
    mm.write(addr + 4 * PAGE_SIZE, new Uint8Array([4]));
    mm.write(addr + 5 * PAGE_SIZE, new Uint8Array([5]));
    const m = f.mirror.migrateToDevice(addr + 5 * PAGE_SIZE, 1);
    expect(m.ret).toBe(0);
    expect(m.cpages).toBe(1);
    const s = f.mirror.snapshot(addr, 7);
    expect(s.ret).toBe(0);
    expect([...s.data]).toEqual([
      HMM_DMIRROR_PROT_ERROR,
      HMM_DMIRROR_PROT_ERROR,
      HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_NONE,
    ]);
    leakFree(f);
  });

  it('migrate: to device memory and back, bytes intact', () => {
    const f = setup();
    const npages = 64;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 11);
    f.proc.mm.write(addr, data);
    const m = f.mirror.migrateToDevice(addr, npages);
    expect(m.ret).toBe(0);
    expect(m.cpages).toBe(npages);
    expect(sameBytes(m.data, data)).toBe(true);
    expect(f.mdev.devicePagesInUse).toBe(npages);
    expect(f.mdev.copies.toDevice).toBe(npages);
    const s = f.mirror.snapshot(addr, npages);
    expect(s.data.every((p) => p === (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE))).toBe(true);
    const back = f.mirror.migrateToSystem(addr, npages);
    expect(back.ret).toBe(0);
    expect(back.cpages).toBe(npages);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), data)).toBe(true);
    expect(f.mdev.devicePagesInUse).toBe(0);
    leakFree(f);
  });

  it('migrate_fault', () => {
    // tools/testing/selftests/mm/hmm-tests.c TEST_F(hmm, migrate_fault): migrate a buffer to the
    // device, fault half of it back with the CPU, migrate the resulting mix of system and
    // device-private pages again, and read back every page. It passes because
    // dmirror_interval_invalidate (lib/test_hmm.c) ignores MMU_NOTIFY_MIGRATE events owned by the
    // mirror's own device: the pages that never left keep their device entries.
    const f = setup();
    const npages = (1024 << 12) / PAGE_SIZE; // HMM_BUFFER_SIZE
    const size = npages * PAGE_SIZE;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages); // ptr[i] = i
    f.proc.mm.write(addr, data);

    // Migrate memory to device; check what the device read.
    const m1 = f.mirror.migrateToDevice(addr, npages);
    expect(m1.ret).toBe(0);
    expect(m1.cpages).toBe(npages);
    expect(sameBytes(m1.data, data)).toBe(true);

    // Fault half the pages back to system memory and check them.
    expect(sameBytes(f.proc.mm.read(addr, size / 2), data.subarray(0, size / 2))).toBe(true);
    expect(f.mirror.stats.devmemFaults).toBe(npages / 2);
    expect(f.mdev.devicePagesInUse).toBe(npages / 2);

    // Migrate memory to the device again; check what the device read: every page accounted.
    const skipsBefore = f.mirror.stats.ownMigrateSkips;
    const m2 = f.mirror.migrateToDevice(addr, npages);
    expect(m2.ret).toBe(0);
    expect(m2.cpages).toBe(npages);
    expect(sameBytes(m2.data, data)).toBe(true);
    expect(f.mirror.stats.ownMigrateSkips).toBeGreaterThan(skipsBefore);
    expect(f.mdev.devicePagesInUse).toBe(npages);
    expect(f.mirror.summary().localPtes).toBe(npages);
    expect(f.mirror.checkInvariants()).toEqual([]);
    leakFree(f);
  });

  it('migrate over pages the device already mapped: the own-migration skip keeps no stale DMA mapping', () => {
    // lib/test_hmm.c: dmirror_interval_invalidate skips our MMU_NOTIFY_MIGRATE, so
    // dmirror_migrate_finalize_and_map's xa_store replaces the entry of the old system page.
    const f = setup();
    const npages = 8;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 3);
    f.proc.mm.write(addr, data);
    expect(f.mirror.read(addr, npages).ret).toBe(0);
    expect(f.mirror.summary().dmaMapped).toBe(npages);
    const m = f.mirror.migrateToDevice(addr, npages);
    expect(m.ret).toBe(0);
    expect(sameBytes(m.data, data)).toBe(true);
    expect(f.mirror.summary()).toMatchObject({ devicePtes: npages, localPtes: npages, dmaMapped: 0 });
    expect(f.machine.dmaDebug.entries).toBe(0);
    // Back to RAM through the device's own path: dmirror_devmem_fault_alloc_and_copy erases them.
    expect(f.mirror.migrateToSystem(addr, npages).cpages).toBe(npages);
    expect(f.mirror.summary().devicePtes).toBe(0);
    expect(f.mirror.checkInvariants()).toEqual([]);
    leakFree(f);
  });

  it('migrate_to_ram: CPU access migrates every device page back, then again to the device', () => {
    const f = setup();
    const npages = 16;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 5);
    f.proc.mm.write(addr, data);
    expect(f.mirror.migrateToDevice(addr, npages).cpages).toBe(npages);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), data)).toBe(true);
    expect(f.mirror.stats.devmemFaults).toBe(npages);
    expect(f.mdev.devicePagesInUse).toBe(0);
    const again = f.mirror.migrateToDevice(addr, npages);
    expect(again.ret).toBe(0);
    expect(sameBytes(again.data, data)).toBe(true);
    // A CPU write goes to RAM after migrate_to_ram and the device sees it.
    f.proc.mm.write(addr + 3 * PAGE_SIZE, new Uint8Array([0xab]));
    const r = f.mirror.read(addr + 3 * PAGE_SIZE, 1);
    expect(r.data[0]).toBe(0xab);
    expect(f.mirror.checkInvariants()).toEqual([]);
    leakFree(f);
  });

  it('migrate_shared: shared anonymous memory is not migrated (-ENOENT)', () => {
    const f = setup();
    const addr = mmapPages(f.proc, 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    f.proc.mm.write(addr, intPattern(4));
    expect(f.mirror.migrateToDevice(addr, 4).ret).toBe(-Errno.ENOENT);
    leakFree(f);
  });

  it('migrate of untouched memory allocates zeroed device pages', () => {
    const f = setup();
    const addr = mmapPages(f.proc, 8);
    const m = f.mirror.migrateToDevice(addr, 8);
    expect(m.ret).toBe(0);
    expect(m.cpages).toBe(8);
    expect(m.data.every((b) => b === 0)).toBe(true);
    f.proc.mm.write(addr, new Uint8Array([1, 2, 3]));
    expect(sameBytes(f.proc.mm.read(addr, 3), new Uint8Array([1, 2, 3]))).toBe(true);
    leakFree(f);
  });

  it('migrate_multiple: repeated migrations do not leak device pages', () => {
    const f = setup();
    const npages = 32;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 9);
    f.proc.mm.write(addr, data);
    for (let i = 0; i < 8; i++) {
      expect(f.mirror.migrateToDevice(addr, npages).cpages).toBe(npages);
      expect(f.mirror.migrateToSystem(addr, npages).cpages).toBe(npages);
    }
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), data)).toBe(true);
    leakFree(f);
  });

  it('another device\'s private pages are faulted back; the owner sees them as local', () => {
    const f = setup();
    const other = addDmirror(f.machine, 'dmirror1');
    const om = other.open(f.proc.mm);
    const npages = 8;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 2);
    f.proc.mm.write(addr, data);
    expect(om.migrateToDevice(addr, npages).cpages).toBe(npages);
    // Snapshot from the first device: no fault, other owner → not valid.
    expect([...f.mirror.snapshot(addr, npages).data].every((p) => p === HMM_DMIRROR_PROT_NONE)).toBe(true);
    const r = f.mirror.read(addr, npages);
    expect(r.ret).toBe(0);
    expect(sameBytes(r.data, data)).toBe(true);
    expect(om.stats.devmemFaults).toBe(npages);
    expect(other.devicePagesInUse).toBe(0);
    om.close();
    leakFree(f);
  });

  it('partial munmap: the device PTEs of the unmapped pages are zapped, faults there fail', () => {
    const f = setup();
    const npages = 16;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages);
    f.proc.mm.write(addr, data);
    expect(f.mirror.read(addr, npages).ret).toBe(0);
    expect(f.mirror.mappedPages).toBe(npages);
    expect(f.proc.mm.munmap(addr + 4 * PAGE_SIZE, 4 * PAGE_SIZE)).toBe(0);
    expect(f.mirror.mappedPages).toBe(npages - 4);
    expect(f.mirror.lookup(addr + 5 * PAGE_SIZE)).toBeUndefined();
    expect(f.mirror.checkInvariants()).toEqual([]);
    const r = f.mirror.read(addr, npages);
    expect(r.ret).toBe(-Errno.EFAULT);
    expect(r.cpages).toBe(4);
    expect(sameBytes(r.data.subarray(0, 4 * PAGE_SIZE), data.subarray(0, 4 * PAGE_SIZE))).toBe(true);
    expect(sameBytes(f.mirror.read(addr + 8 * PAGE_SIZE, 8).data, data.subarray(8 * PAGE_SIZE))).toBe(true);
    leakFree(f);
  });

  it('move by copy (mmap elsewhere, copy, munmap): the old mirror entries are gone, the new range faults in', () => {
    const f = setup();
    const mm = f.proc.mm;
    const npages = 8;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 4);
    mm.write(addr, data);
    expect(f.mirror.read(addr, npages).ret).toBe(0);
    const naddr = mmapPages(f.proc, npages);
    mm.write(naddr, mm.read(addr, npages * PAGE_SIZE));
    expect(mm.munmap(addr, npages * PAGE_SIZE)).toBe(0);
    expect(f.mirror.read(addr, npages).ret).toBe(-Errno.EFAULT);
    expect(sameBytes(f.mirror.read(naddr, npages).data, data)).toBe(true);
    expect(f.mirror.checkInvariants()).toEqual([]);
    leakFree(f);
  });

  it('mremap: moving a mirrored buffer invalidates the old range, the device follows it to the new one', () => {
    const f = setup();
    const mm = f.proc.mm;
    const npages = 16;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 6);
    mm.write(addr, data);
    expect(f.mirror.read(addr, npages).ret).toBe(0);
    expect(f.mirror.migrateToDevice(addr, 4).cpages).toBe(4); // device-private pages move too
    const dst = addr + 4 * SZ_2M;
    expect(mm.mremap(addr, npages * PAGE_SIZE, 2 * npages * PAGE_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED, dst)).toBe(dst);
    expect(f.mirror.mappedPages).toBe(0);
    expect(f.mirror.read(addr, 1).ret).toBe(-Errno.EFAULT);
    const r = f.mirror.read(dst, npages);
    expect(r.ret).toBe(0);
    expect(sameBytes(r.data, data)).toBe(true);
    expect(f.mirror.snapshot(dst, 1).data[0]).toBe(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE);
    expect(sameBytes(mm.read(dst, npages * PAGE_SIZE), data)).toBe(true); // migrate_to_ram at the new address
    expect(f.mirror.checkInvariants()).toEqual([]);
    leakFree(f);
  });

  it('VM_PFNMAP mappings: -EFAULT when faulting, ERROR in a snapshot', () => {
    const f = setup();
    const addr = mmapPages(f.proc, 4);
    const vma = f.proc.mm.findVma(addr);
    if (vma === undefined) throw new Error('no vma');
    vma.vmFlags |= VM_PFNMAP;
    expect(f.mirror.read(addr, 4).ret).toBe(-Errno.EFAULT);
    expect([...f.mirror.snapshot(addr, 4).data]).toEqual([HMM_DMIRROR_PROT_ERROR, HMM_DMIRROR_PROT_ERROR, HMM_DMIRROR_PROT_ERROR, HMM_DMIRROR_PROT_ERROR]);
    expect(f.mirror.migrateToDevice(addr, 4).ret).toBe(-Errno.EINVAL);
    leakFree(f);
  });

  it('hmm_dma_map_alloc refuses a device that needs syncs (-EOPNOTSUPP)', () => {
    const f = setup({ coherent: false });
    const addr = mmapPages(f.proc, 2);
    expect(f.mirror.read(addr, 2).ret).toBe(-Errno.EOPNOTSUPP);
    leakFree(f);
  });

  it('race: an invalidation between hmm_range_fault and the driver lock forces a retry', () => {
    const f = setup();
    const npages = 8;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages);
    f.proc.mm.write(addr, data);
    let fired = 0;
    f.mirror.afterRangeFault = () => {
      if (fired++ === 0) {
        // The CPU write-protects and re-enables the range: PROTECTION_VMA invalidation.
        f.proc.mm.mprotect(addr, npages * PAGE_SIZE, PROT_READ);
        f.proc.mm.mprotect(addr, npages * PAGE_SIZE, PROT_READ | PROT_WRITE);
      }
    };
    const r = f.mirror.write(addr, intPattern(npages, 1, 100));
    expect(r.ret).toBe(0);
    expect(f.mirror.stats.readRetries).toBe(1);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), intPattern(npages, 1, 100))).toBe(true);
    expect(f.mirror.checkInvariants()).toEqual([]);
    f.mirror.afterRangeFault = undefined;
    leakFree(f);
  });

  it('race: munmap between hmm_range_fault and the lock: the device never maps the unmapped page', () => {
    const f = setup();
    const npages = 4;
    const addr = mmapPages(f.proc, npages);
    f.proc.mm.write(addr, intPattern(npages));
    f.mirror.afterRangeFault = (_m, range) => {
      if (range.start === addr) f.proc.mm.munmap(addr + PAGE_SIZE, PAGE_SIZE);
    };
    const r = f.mirror.read(addr, npages);
    expect(r.ret).toBe(-Errno.EFAULT);
    expect(f.mirror.lookup(addr + PAGE_SIZE)).toBeUndefined();
    expect(f.mirror.checkInvariants()).toEqual([]);
    f.mirror.afterRangeFault = undefined;
    leakFree(f);
  });

  it('fork with device-private pages: the child copies on CPU access, the parent keeps its device pages', () => {
    const f = setup();
    const npages = 4;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 21);
    f.proc.mm.write(addr, data);
    expect(f.mirror.migrateToDevice(addr, npages).cpages).toBe(npages);
    const child = f.proc.fork() as Process;
    expect(sameBytes(child.mm.read(addr, npages * PAGE_SIZE), data)).toBe(true);
    expect(f.mirror.snapshot(addr, npages).data[0]).toBe(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), data)).toBe(true);
    child.exit();
    leakFree(f);
  });

  it('anon_teardown: process exit while mirrored (MMU_NOTIFY_RELEASE) tears everything down', () => {
    const f = setup();
    for (let round = 0; round < 4; round++) {
      const proc = f.machine.createProcess();
      const m = f.mdev.open(proc.mm);
      const addr = mmapPages(proc, 64);
      proc.mm.write(addr, intPattern(64, 1, round));
      expect(m.read(addr, 64).ret).toBe(0);
      expect(m.migrateToDevice(addr, 16).cpages).toBe(16);
      // Interleave on the scheduler: the exit lands between two device reads.
      f.machine.schedule(10, () => { proc.exit(); });
      f.machine.schedule(5, () => { expect(m.read(addr, 64).ret).toBe(0); });
      f.machine.schedule(20, () => { expect(m.read(addr, 64).ret).toBe(-Errno.EFAULT); });
      f.machine.advance(100);
      expect(m.mappedPages).toBe(0);
      m.close();
    }
    leakFree(f);
  });

  it('exclusive: atomic device access, revoked by the first CPU access', () => {
    const f = setup();
    const npages = 8;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages);
    f.proc.mm.write(addr, data);
    const r = f.mirror.exclusive(addr, npages);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(npages);
    expect(sameBytes(r.data, data)).toBe(true);
    expect(f.mirror.checkExclusive(addr, npages)).toBe(-Errno.EPERM);
    expect(f.mirror.checkInvariants()).toEqual([]);
    // The CPU faults the pages back, reading and incrementing.
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), data)).toBe(true);
    const plus = intPattern(npages, 1, 1);
    f.proc.mm.write(addr, plus);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), plus)).toBe(true);
    expect(f.mirror.checkExclusive(addr, npages)).toBe(0);
    expect(f.mirror.checkInvariants()).toEqual([]);
    leakFree(f);
  });

  it('exclusive_mprotect: after mprotect(PROT_READ) the device can no longer write', () => {
    const f = setup();
    const npages = 4;
    const addr = mmapPages(f.proc, npages);
    f.proc.mm.write(addr, intPattern(npages));
    expect(f.mirror.exclusive(addr, npages).ret).toBe(0);
    expect(f.proc.mm.mprotect(addr, npages * PAGE_SIZE, PROT_READ)).toBe(0);
    expect(f.mirror.write(addr, intPattern(npages, -1)).ret).toBe(-Errno.EPERM);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), intPattern(npages))).toBe(true);
    leakFree(f);
  });

  it('exclusive_cow: fork after exclusive access, then both processes write their own copy', () => {
    const f = setup();
    const npages = 4;
    const addr = mmapPages(f.proc, npages);
    f.proc.mm.write(addr, intPattern(npages));
    expect(f.mirror.exclusive(addr, npages).ret).toBe(0);
    const child = f.proc.fork() as Process;
    f.proc.mm.write(addr, intPattern(npages, 1, 50));
    child.mm.write(addr, intPattern(npages, 1, 90));
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), intPattern(npages, 1, 50))).toBe(true);
    expect(sameBytes(child.mm.read(addr, npages * PAGE_SIZE), intPattern(npages, 1, 90))).toBe(true);
    child.exit();
    leakFree(f);
  });

  it('device removal evicts device pages back to RAM while the process keeps running', () => {
    const f = setup();
    const npages = 12;
    const addr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 33);
    f.proc.mm.write(addr, data);
    expect(f.mirror.migrateToDevice(addr, npages).cpages).toBe(npages);
    f.mdev.remove();
    expect(f.mirror.closed).toBe(true);
    expect(f.mdev.devicePagesInUse).toBe(0);
    expect(sameBytes(f.proc.mm.read(addr, npages * PAGE_SIZE), data)).toBe(true);
    f.proc.exit();
    expect(f.machine.dmaDebug.entries).toBe(0);
  });

  it('bad input: unaligned addresses, zero pages, and a closed mirror give -EINVAL', () => {
    const f = setup();
    expect(f.mirror.read(123, 1).ret).toBe(-Errno.EINVAL);
    expect(f.mirror.read(0x10000, 0).ret).toBe(-Errno.EINVAL);
    expect(f.mirror.write(0x10000, new Uint8Array(10)).ret).toBe(-Errno.EINVAL);
    expect(f.mirror.read(SZ_2M, 1).ret).toBe(-Errno.EFAULT); // nothing mapped there
    f.mirror.close();
    expect(f.mirror.read(0x10000, 1).ret).toBe(-Errno.EINVAL);
    f.proc.exit();
  });
});

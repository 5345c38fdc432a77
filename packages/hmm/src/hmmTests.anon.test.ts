// Ports of the remaining tools/testing/selftests/mm/hmm-tests.c cases on anonymous and hugetlb
// memory (no THP), against one or two dmirror devices (FIXTURE hmm and hmm2). Each `it` is the
// kernel TEST_F of the same name.
import { describe, expect, it } from 'vitest';
import { Errno, MAP_ANONYMOUS, MAP_HUGETLB, MAP_PRIVATE, PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE, SZ_2M } from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';
import { HMM_DMIRROR_PROT_PMD, HMM_DMIRROR_PROT_READ, HMM_DMIRROR_PROT_WRITE } from '@dmakit/hmm';
import { sameBytes } from '@dmakit/testkit';
import { addDmirror, HMM_BUFFER_PAGES, intPattern, leakFree, migratedAnonBuffer, mmapPages, setup } from './testing/fixture.js';

/** NTIMES in hmm-tests.c. */
const NTIMES = 10;

/** FIXTURE(hmm2): a second device opened by the same process. */
function setup2(dmaDebug: 'strict' | 'warn' = 'strict'): ReturnType<typeof setup> & { mirror1: ReturnType<ReturnType<typeof setup>['mdev']['open']>; mdev1: ReturnType<typeof addDmirror> } {
  const f = setup({ devmemBytes: 4 << 20, dmaDebug });
  const mdev1 = addDmirror(f.machine, 'dmirror1');
  return { ...f, mdev1, mirror1: mdev1.open(f.proc.mm) };
}

describe('hmm-tests (dmirror): remaining anonymous and hugetlb cases', () => {
  it('anon_write_child (the migrate = 1 iteration, without THP)', () => {
    // The buffer is migrated to the device before fork: the child reads the parent's values (its
    // CPU access brings the device-private pages back), writes through its own mirror, and the
    // parent's buffer is unchanged. (hmmTests.test.ts has the migrate = 0 iteration.)
    const f = setup();
    const npages = HMM_BUFFER_PAGES;
    const size = npages * PAGE_SIZE;
    const ptr = mmapPages(f.proc, npages);
    const pos = intPattern(npages);
    const neg = intPattern(npages, -1);
    f.proc.mm.write(ptr, pos);
    const m = f.mirror.migrateToDevice(ptr, npages);
    expect(m.ret).toBe(0);
    expect(m.cpages).toBe(npages);
    const child = f.proc.fork() as Process;
    expect(typeof child).toBe('object');
    expect(sameBytes(child.mm.read(ptr, size), pos)).toBe(true);
    const cm = f.mdev.open(child.mm);
    const w = cm.write(ptr, neg);
    expect(w.ret).toBe(0);
    expect(w.cpages).toBe(npages);
    expect(w.faults).toBe(1);
    expect(sameBytes(child.mm.read(ptr, size), neg)).toBe(true);
    cm.close();
    child.exit();
    expect(sameBytes(f.proc.mm.read(ptr, size), pos)).toBe(true);
    leakFree(f);
  });

  it('migrate_release', () => {
    // Migrate to the device, then HMM_DMIRROR_RELEASE: the driver gives its memory back, every
    // page returns to system memory, and the CPU reads the data.
    const f = setup();
    const npages = HMM_BUFFER_PAGES;
    const size = npages * PAGE_SIZE;
    const { ptr, data } = migratedAnonBuffer(f, npages);
    const faults = f.mirror.stats.devmemFaults;
    expect(f.mirror.release()).toBe(0);
    expect(f.mdev.devicePagesInUse).toBe(0);
    expect(f.mirror.stats.devmemFaults).toBe(faults + npages); // evicted through the migrate_to_ram path
    expect(sameBytes(f.proc.mm.read(ptr, size / 2), data.subarray(0, size / 2))).toBe(true);
    expect(f.mirror.stats.devmemFaults).toBe(faults + npages); // the CPU found them in RAM already
    expect(f.mirror.checkInvariants()).toEqual([]);
    leakFree(f);
  });

  it('migrate_mixed', () => {
    // Try to migrate various memory types to device 1: PROT_NONE and a hole are -EINVAL; a
    // read-only zero page, a read-only page and two writable pages migrate; a page already in
    // device 1 is not migrated to device 0 (-ENOENT).
    const f = setup2();
    const mm = f.proc.mm;
    const npages = 6;
    const p = mmapPages(f.proc, npages, PROT_NONE);
    expect(f.mirror1.migrateToDevice(p, npages).ret).toBe(-Errno.EINVAL);
    expect(mm.munmap(p + PAGE_SIZE, PAGE_SIZE)).toBe(0);
    expect(f.mirror1.migrateToDevice(p, 3).ret).toBe(-Errno.EINVAL);
    expect(mm.mprotect(p + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ)).toBe(0);
    const val = new Int32Array(mm.read(p + 2 * PAGE_SIZE, 4).buffer)[0] ?? -1;
    expect(val + 3).toBe(3);
    expect(mm.mprotect(p + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ | PROT_WRITE)).toBe(0);
    mm.write(p + 3 * PAGE_SIZE, new Uint8Array(new Int32Array([val + 3]).buffer));
    expect(mm.mprotect(p + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ)).toBe(0);
    expect(mm.mprotect(p + 4 * PAGE_SIZE, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE)).toBe(0);
    mm.write(p + 4 * PAGE_SIZE, new Uint8Array(new Int32Array([val + 3]).buffer));
    mm.write(p + 5 * PAGE_SIZE, new Uint8Array(new Int32Array([val + 3]).buffer));
    const m = f.mirror1.migrateToDevice(p + 2 * PAGE_SIZE, 4);
    expect(m.ret).toBe(0);
    expect(m.cpages).toBe(4);
    expect(f.mdev1.devicePagesInUse).toBe(4);
    expect(f.mirror.migrateToDevice(p + 5 * PAGE_SIZE, 1).ret).toBe(-Errno.ENOENT);
    // The CPU still reads every page (migrate_to_ram from device 1).
    expect(new Int32Array(mm.read(p + 3 * PAGE_SIZE, 4).buffer)[0]).toBe(3);
    expect(new Int32Array(mm.read(p + 5 * PAGE_SIZE, 4).buffer)[0]).toBe(3);
    f.mirror1.close();
    leakFree(f);
    expect(f.mdev1.devicePagesInUse).toBe(0);
  });

  it('anon_read_multiple', () => {
    // Read anonymous memory NTIMES, each time a fresh buffer with values i + c.
    const f = setup();
    const npages = HMM_BUFFER_PAGES;
    const size = npages * PAGE_SIZE;
    for (let c = 0; c < NTIMES; c++) {
      const ptr = mmapPages(f.proc, npages);
      const data = intPattern(npages, 1, c);
      f.proc.mm.write(ptr, data);
      const r = f.mirror.read(ptr, npages);
      expect(r.ret).toBe(0);
      expect(r.cpages).toBe(npages);
      expect(r.faults).toBe(1);
      expect(sameBytes(r.data, data)).toBe(true);
      expect(f.proc.mm.munmap(ptr, size)).toBe(0);
      expect(f.mirror.mappedPages).toBe(0);
    }
    leakFree(f);
  });

  it('compound', () => {
    // hmm_range_fault reports a hugetlb page with its PMD order in every entry, writable, then
    // read-only after mprotect(PROT_READ).
    const f = setup();
    const size = SZ_2M;
    const npages = size / PAGE_SIZE;
    const ptr = f.proc.mm.mmap({ length: size, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB });
    expect(ptr).toBeGreaterThan(0);
    f.proc.mm.write(ptr, intPattern(npages));
    let s = f.mirror.snapshot(ptr, npages);
    expect(s.ret).toBe(0);
    expect(s.cpages).toBe(npages);
    expect(s.data.every((m) => m === (HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD))).toBe(true);
    expect(f.proc.mm.mprotect(ptr, size, PROT_READ)).toBe(0);
    s = f.mirror.snapshot(ptr, npages);
    expect(s.ret).toBe(0);
    expect(s.cpages).toBe(npages);
    expect(s.data.every((m) => m === (HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD))).toBe(true);
    expect(f.proc.mm.munmap(ptr, size)).toBe(0);
    leakFree(f);
  });

  it('double_map', () => {
    // Two devices read the same read-only memory; after it migrates to device 1, device 0 reads
    // it again with one fault (its pages come back to system memory). Both devices DMA-map the
    // same pages bidirectionally, which dma-debug's cacheline tracking reports (as the kernel's
    // would): run it in 'warn' mode and check that is all it saw.
    const f = setup2('warn');
    const npages = 6;
    const size = npages * PAGE_SIZE;
    const ptr = mmapPages(f.proc, npages);
    const data = intPattern(npages);
    f.proc.mm.write(ptr, data);
    expect(f.proc.mm.mprotect(ptr, size, PROT_READ)).toBe(0);
    for (const m of [f.mirror, f.mirror1]) {
      const r = m.read(ptr, npages);
      expect(r.ret).toBe(0);
      expect(r.cpages).toBe(npages);
      expect(r.faults).toBe(1);
      expect(sameBytes(r.data, data)).toBe(true);
    }
    const mig = f.mirror1.migrateToDevice(ptr, npages);
    expect(mig.ret).toBe(0);
    expect(mig.cpages).toBe(npages);
    const r = f.mirror.read(ptr, npages);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(npages);
    expect(r.faults).toBe(1);
    expect(sameBytes(r.data, data)).toBe(true);
    expect(f.mdev1.devicePagesInUse).toBe(0);
    expect(f.mirror.checkInvariants()).toEqual([]);
    expect(f.mirror1.checkInvariants()).toEqual([]);
    expect(f.machine.dmaDebug.reports.filter((rep) => !rep.rule.startsWith('cacheline-overlap')).map((rep) => rep.message)).toEqual([]);
    f.mirror1.close();
    leakFree(f);
  });
});

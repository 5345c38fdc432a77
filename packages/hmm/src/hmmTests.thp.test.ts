// Ports of the transparent-huge-page cases of tools/testing/selftests/mm/hmm-tests.c (Linux 6.19:
// device-private THP migration) against the dmirror device (lib/test_hmm.c). Each `it` is named
// after the kernel test it mirrors; sizes are read_pmd_pagesize() = 2 MiB.
import { describe, expect, it } from 'vitest';
import {
  Errno,
  HPAGE_PMD_NR,
  MADV_COLLAPSE,
  MADV_FREE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  PTE_DEVICE_PRIVATE,
  PTE_HUGE,
  PTE_PRESENT,
  PTE_ZERO,
  SZ_2M,
  hugeZeroFolio,
  thpVmstat,
} from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';
import {
  HMM_DMIRROR_FLAG_FAIL_ALLOC,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  migrateStats,
} from '@dmakit/hmm';
import { sameBytes } from '@dmakit/testkit';
import { intPattern, mmapPages, setup, leakFree as fixtureLeakFree } from './testing/fixture.js';
import type { Fixture } from './testing/fixture.js';

const SIZE = SZ_2M; // read_pmd_pagesize()
const NPAGES = SIZE / PAGE_SIZE;

/** The fixture with room for THPs, and the allocator baseline once both zero pages exist. */
function thpSetup(devmemBytes = 16 * SZ_2M): Fixture & { baseline: number } {
  const f = setup({ devmemBytes });
  hugeZeroFolio(f.machine.memory);
  expect(f.machine.memory.zeroPagePhys).toBeGreaterThan(0);
  return { ...f, baseline: f.machine.memory.allocatedPageCount };
}

/** Teardown: no DMA mapping, no device page and no system page left behind. */
function leakFree(f: Fixture & { baseline: number }): void {
  fixtureLeakFree(f, f.baseline);
}

/** hmm-tests' `mmap(2 * size)` then `map = ALIGN(ptr, size)` and madvise(map, size, advice). */
function alignedBuffer(proc: Process, prot: number, advice: number | undefined, mult = 2): { old: number; map: number } {
  const old = mmapPages(proc, (mult * SIZE) / PAGE_SIZE, prot);
  const map = Math.ceil(old / SIZE) * SIZE;
  if (advice !== undefined) expect(proc.mm.madvise(map, SIZE, advice)).toBe(0);
  return { old, map };
}

/** The int at index `i` of the buffer (hmm-tests' `ptr[i]`), read by the CPU. */
function cpuInt(proc: Process, addr: number, i: number): number {
  return new DataView(proc.mm.read(addr + i * 4, 4).buffer).getInt32(0, true);
}

function allZero(b: Uint8Array): boolean {
  return b.every((x) => x === 0);
}

describe('hmm-tests THP cases (dmirror, Linux 6.19)', () => {
  it('anon_write_child (use_thp = 1, migrate = 0 and 1): the child writes its own copy of a THP', () => {
    for (const migrate of [false, true]) {
      const f = thpSetup();
      const { old, map } = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, MADV_HUGEPAGE);
      const pos = intPattern(NPAGES);
      f.proc.mm.write(map, pos);
      expect(f.proc.mm.pteOrder(map)).toBe(9);
      if (migrate) {
        const r = f.mirror.migrateToDevice(map, NPAGES);
        expect(r.ret).toBe(0);
        expect(r.cpages).toBe(NPAGES);
        expect(f.proc.mm.pteFlags(map) & (PTE_DEVICE_PRIVATE | PTE_HUGE)).toBe(PTE_DEVICE_PRIVATE | PTE_HUGE);
      }
      const child = f.proc.fork() as Process;
      expect(typeof child).toBe('object');
      expect(sameBytes(child.mm.read(map, SIZE), pos)).toBe(true);
      const cm = f.mdev.open(child.mm);
      const neg = intPattern(NPAGES, -1);
      const w = cm.write(map, neg);
      expect(w.ret).toBe(0);
      expect(w.cpages).toBe(NPAGES);
      expect(w.faults).toBe(1);
      expect(sameBytes(child.mm.read(map, SIZE), neg)).toBe(true);
      expect(cm.checkInvariants()).toEqual([]);
      cm.close();
      child.exit();
      // The parent's buffer did not change.
      expect(sameBytes(f.proc.mm.read(map, SIZE), pos)).toBe(true);
      expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
      leakFree(f);
    }
  });

  it('anon_write_huge: the device writes a THP the write fault allocated; snapshot reports the PMD', () => {
    const f = thpSetup();
    const { old, map } = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, MADV_HUGEPAGE);
    const data = intPattern(NPAGES);
    const before = thpVmstat(f.machine.memory).faultAlloc;
    const r = f.mirror.write(map, data);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(NPAGES);
    expect(r.faults).toBe(1);
    expect(sameBytes(f.proc.mm.read(map, SIZE), data)).toBe(true);
    // One huge page, PMD-mapped: hmm_range_fault reported order 9 for every entry.
    expect(thpVmstat(f.machine.memory).faultAlloc).toBe(before + 1);
    expect(f.proc.mm.pteOrder(map + SIZE - PAGE_SIZE)).toBe(9);
    const snap = f.mirror.snapshot(map, NPAGES);
    expect(snap.ret).toBe(0);
    expect(snap.data.every((b) => b === (HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD))).toBe(true);
    expect(f.mirror.checkInvariants()).toEqual([]);
    expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
    leakFree(f);
  });

  it('compound: a 2 MiB hugetlb page is reported at PMD level, writable then read-only after mprotect', () => {
    const f = thpSetup();
    const ptr = mmapPages(f.proc, NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB);
    f.proc.mm.write(ptr, intPattern(NPAGES));
    let snap = f.mirror.snapshot(ptr, NPAGES);
    expect(snap.ret).toBe(0);
    expect(snap.cpages).toBe(NPAGES);
    expect([...new Set(snap.data)]).toEqual([HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD]);
    expect(f.proc.mm.mprotect(ptr, SIZE, PROT_READ)).toBe(0);
    snap = f.mirror.snapshot(ptr, NPAGES);
    expect(snap.ret).toBe(0);
    expect([...new Set(snap.data)]).toEqual([HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD]);
    expect(f.proc.mm.munmap(ptr, SIZE)).toBe(0);
    leakFree(f);
  });

  it('compound (THP): the same snapshot for a PMD-mapped transparent huge page, then a split PMD reports 4 KiB', () => {
    const f = thpSetup();
    const { old, map } = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, MADV_HUGEPAGE);
    f.proc.mm.write(map, intPattern(NPAGES));
    expect([...new Set(f.mirror.snapshot(map, NPAGES).data)]).toEqual([HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD]);
    expect(f.proc.mm.mprotect(map, SIZE, PROT_READ)).toBe(0);
    expect([...new Set(f.mirror.snapshot(map, NPAGES).data)]).toEqual([HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD]);
    // mprotect of half the THP splits the PMD (change_pmd_range): 4 KiB entries from then on.
    const splits = thpVmstat(f.machine.memory).splitPmd;
    expect(f.proc.mm.mprotect(map, SIZE / 2, PROT_READ | PROT_WRITE)).toBe(0);
    expect(thpVmstat(f.machine.memory).splitPmd).toBe(splits + 1);
    const snap = f.mirror.snapshot(map, NPAGES);
    expect([...new Set(snap.data)]).toEqual([HMM_DMIRROR_PROT_READ]);
    expect(sameBytes(f.proc.mm.read(map, SIZE), intPattern(NPAGES))).toBe(true);
    expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
    leakFree(f);
  });

  it('migrate_anon_huge_empty: an untouched 2 MiB block migrates as one zeroed device folio', () => {
    const f = thpSetup();
    const { old, map } = alignedBuffer(f.proc, PROT_READ, MADV_HUGEPAGE);
    const compound = migrateStats.compoundMigrated;
    const r = f.mirror.migrateToDevice(map, NPAGES);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(NPAGES);
    expect(allZero(r.data)).toBe(true);
    expect(migrateStats.compoundMigrated).toBe(compound + 1);
    expect(f.mdev.devicePagesInUse).toBe(NPAGES);
    expect(f.proc.mm.pteFlags(map) & (PTE_DEVICE_PRIVATE | PTE_HUGE | PTE_PRESENT)).toBe(PTE_DEVICE_PRIVATE | PTE_HUGE);
    expect(f.mirror.checkInvariants()).toEqual([]);
    expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
    leakFree(f);
  });

  it('migrate_anon_huge_zero: the huge zero page migrates as a hole and faults back as zeroes', () => {
    const f = thpSetup();
    const { old, map } = alignedBuffer(f.proc, PROT_READ, MADV_HUGEPAGE);
    expect(cpuInt(f.proc, map, 0)).toBe(0);
    expect(f.proc.mm.pteFlags(map) & (PTE_ZERO | PTE_HUGE)).toBe(PTE_ZERO | PTE_HUGE);
    const r = f.mirror.migrateToDevice(map, NPAGES);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(NPAGES);
    expect(allZero(r.data)).toBe(true);
    expect(f.proc.mm.pteFlags(map) & PTE_DEVICE_PRIVATE).toBe(PTE_DEVICE_PRIVATE);
    // Fault the pages back to system memory: the whole device folio returns as one THP.
    expect(allZero(f.proc.mm.read(map, SIZE))).toBe(true);
    expect(f.proc.mm.pteFlags(map) & (PTE_PRESENT | PTE_HUGE)).toBe(PTE_PRESENT | PTE_HUGE);
    expect(f.mdev.devicePagesInUse).toBe(0);
    expect(f.mirror.stats.devmemFaults).toBe(1);
    expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
    leakFree(f);
  });

  it('migrate_anon_huge_free: a migrated THP, then MADV_FREE over it, then unmapped', () => {
    const f = thpSetup();
    const { old, map } = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, MADV_HUGEPAGE);
    const data = intPattern(NPAGES);
    f.proc.mm.write(map, data);
    const r = f.mirror.migrateToDevice(map, NPAGES);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(NPAGES);
    expect(sameBytes(r.data, data)).toBe(true);
    expect(f.proc.mm.madvise(map, SIZE, MADV_FREE)).toBe(0);
    // MADV_FREE leaves device-private entries alone.
    expect(f.proc.mm.pteFlags(map) & PTE_DEVICE_PRIVATE).toBe(PTE_DEVICE_PRIVATE);
    expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
    leakFree(f);
  });

  it('migrate_anon_huge_fault: MADV_COLLAPSE, migrate, snapshot DEV_PRIVATE_LOCAL|WRITE|PMD, fault back', () => {
    const f = thpSetup();
    const { old, map } = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, undefined);
    const data = intPattern(NPAGES);
    f.proc.mm.write(map, data);
    expect(f.proc.mm.pteOrder(map)).toBe(0); // 'madvise' mode, no MADV_HUGEPAGE: 4 KiB pages
    expect(f.proc.mm.madvise(map, SIZE, MADV_COLLAPSE)).toBe(0);
    expect(f.proc.mm.pteOrder(map)).toBe(9);
    expect(sameBytes(f.proc.mm.read(map, SIZE), data)).toBe(true);
    const r = f.mirror.migrateToDevice(map, NPAGES);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(NPAGES);
    expect(sameBytes(r.data, data)).toBe(true);
    const snap = f.mirror.snapshot(map, NPAGES);
    expect(snap.ret).toBe(0);
    expect(snap.cpages).toBe(NPAGES);
    expect([...new Set(snap.data)]).toEqual([HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD]);
    // /proc/self/pagemap: a swap-type entry (PM_SWAP), not present, for every page.
    for (let i = 0; i < NPAGES; i++) {
      const pf = f.proc.mm.pteFlags(map + i * PAGE_SIZE);
      expect(pf & PTE_PRESENT).toBe(0);
      expect(pf & PTE_DEVICE_PRIVATE).toBe(PTE_DEVICE_PRIVATE);
    }
    expect(sameBytes(f.proc.mm.read(map, SIZE), data)).toBe(true);
    expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
    leakFree(f);
  });

  it('migrate_partial_unmap_fault: THP and 4 KiB, unmap half at offset 0, size/4, size/2, fault the rest back', () => {
    for (const useThp of [false, true]) {
      for (const off of [0, SIZE / 4, SIZE / 2]) {
        const f = thpSetup();
        const { old, map } = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, useThp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        const data = intPattern(NPAGES);
        f.proc.mm.write(map, data);
        expect(f.proc.mm.pteOrder(map)).toBe(useThp ? 9 : 0);
        const r = f.mirror.migrateToDevice(map, NPAGES);
        expect(r.ret).toBe(0);
        expect(r.cpages).toBe(NPAGES);
        expect(sameBytes(r.data, data)).toBe(true);
        expect(f.proc.mm.munmap(map + off, SIZE / 2)).toBe(0);
        for (const [lo, hi] of [
          [0, off],
          [off + SIZE / 2, SIZE],
        ] as const) {
          if (hi > lo) expect(sameBytes(f.proc.mm.read(map + lo, hi - lo), data.subarray(lo, hi))).toBe(true);
        }
        expect(f.mirror.checkInvariants()).toEqual([]);
        expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
        leakFree(f);
      }
    }
  });

  it('migrate_remap_fault: mremap (MAYMOVE|FIXED, ±DONTUNMAP) before or after migration, THP or not, at 3 offsets', () => {
    for (const before of [false, true]) {
      for (const dontUnmap of [false, true]) {
        for (const useThp of [false, true]) {
          for (const off of [0, SIZE / 4, SIZE / 2]) {
            const f = thpSetup();
            const flags = MREMAP_MAYMOVE | MREMAP_FIXED | (dontUnmap ? MREMAP_DONTUNMAP : 0);
            const { old, map } = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, useThp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE, 8);
            expect(f.proc.mm.munmap(map + SIZE, 2 * SIZE)).toBe(0);
            const data = intPattern(NPAGES);
            f.proc.mm.write(map, data);
            let ptr = map;
            const remap = (): void => {
              const np = f.proc.mm.mremap(map, SIZE, SIZE, flags, map + SIZE + off);
              expect(np).toBe(map + SIZE + off);
              ptr = np;
            };
            if (before) remap();
            const r = f.mirror.migrateToDevice(ptr, NPAGES);
            expect(r.ret).toBe(0);
            expect(r.cpages).toBe(NPAGES);
            expect(sameBytes(r.data, data)).toBe(true);
            if (!before) remap();
            expect(sameBytes(f.proc.mm.read(ptr, SIZE), data)).toBe(true);
            if (dontUnmap) expect(allZero(f.proc.mm.read(map, PAGE_SIZE))).toBe(true); // the kept, empty VMA
            expect(f.mirror.checkInvariants()).toEqual([]);
            expect(f.proc.mm.munmap(ptr, SIZE)).toBe(0);
            expect(f.proc.mm.munmap(old, 8 * SIZE)).toBe(0);
            leakFree(f);
          }
        }
      }
    }
  });

  it('migrate_anon_huge_err: a failed device folio allocation falls back to 4 KiB pages, both ways', () => {
    const f = thpSetup();
    let { old, map } = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, MADV_HUGEPAGE);
    const data = intPattern(NPAGES);
    f.proc.mm.write(map, data);
    expect(f.mirror.setFlags(HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
    let r = f.mirror.migrateToDevice(map, NPAGES);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(NPAGES);
    expect(sameBytes(r.data, data)).toBe(true);
    expect(f.mirror.flags).toBe(0); // the flag is consumed by the one failed allocation
    // 4 KiB device pages, PTE-mapped: the source THP was split (migrate_vma_split_unmapped_folio).
    expect(f.proc.mm.pteFlags(map) & (PTE_DEVICE_PRIVATE | PTE_HUGE)).toBe(PTE_DEVICE_PRIVATE);
    // Fault back a single page.
    expect(cpuInt(f.proc, map, 2048)).toBe(2048);
    expect(f.proc.mm.pteFlags(map + 2 * PAGE_SIZE) & PTE_PRESENT).toBe(PTE_PRESENT);
    expect(f.proc.mm.pteFlags(map) & PTE_DEVICE_PRIVATE).toBe(PTE_DEVICE_PRIVATE);

    // Unmap and remap the region to reset things.
    expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
    ({ old, map } = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, MADV_HUGEPAGE));
    f.proc.mm.write(map, data);
    r = f.mirror.migrateToDevice(map, NPAGES);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(NPAGES);
    expect(f.proc.mm.pteFlags(map) & (PTE_DEVICE_PRIVATE | PTE_HUGE)).toBe(PTE_DEVICE_PRIVATE | PTE_HUGE);
    // Force an allocation error when migrating the device THP back.
    expect(f.mirror.setFlags(HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
    const back = f.mirror.migrateToSystem(map, NPAGES);
    expect(back.ret).toBe(0);
    expect(f.proc.mm.pteFlags(map) & (PTE_PRESENT | PTE_HUGE)).toBe(PTE_PRESENT);
    expect(cpuInt(f.proc, map, 2048)).toBe(2048);
    expect(sameBytes(f.proc.mm.read(map, SIZE), data)).toBe(true);
    expect(f.mdev.devicePagesInUse).toBe(0);
    expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
    leakFree(f);
  });

  it('migrate_anon_huge_zero_err: 2 MiB hole and huge zero page with a failed folio allocation', () => {
    const f = thpSetup();
    let { old, map } = alignedBuffer(f.proc, PROT_READ, MADV_HUGEPAGE);
    expect(f.mirror.setFlags(HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
    let r = f.mirror.migrateToDevice(map, NPAGES);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(NPAGES);
    expect(allZero(r.data)).toBe(true);
    expect(f.proc.mm.pteFlags(map) & (PTE_DEVICE_PRIVATE | PTE_HUGE)).toBe(PTE_DEVICE_PRIVATE);
    expect(cpuInt(f.proc, map, 2048)).toBe(0);

    expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
    ({ old, map } = alignedBuffer(f.proc, PROT_READ, MADV_HUGEPAGE));
    expect(cpuInt(f.proc, map, 0)).toBe(0); // the huge zero page
    expect(f.proc.mm.pteFlags(map) & (PTE_ZERO | PTE_HUGE)).toBe(PTE_ZERO | PTE_HUGE);
    expect(f.mirror.setFlags(HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
    r = f.mirror.migrateToDevice(map, NPAGES);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(NPAGES);
    expect(allZero(f.proc.mm.read(map, SIZE))).toBe(true);
    expect(f.proc.mm.munmap(old, 2 * SIZE)).toBe(0);
    leakFree(f);
  });

  it('benchmark_thp_migration (functional port: no wall-clock timing, up to 4 THPs)', () => {
    const f = thpSetup(16 * SZ_2M);
    const counts: { size: number; thp: number; regular: number }[] = [];
    for (const size of [SIZE / 4, SIZE / 2, SIZE, 2 * SIZE, 4 * SIZE]) {
      const per: number[] = [];
      for (const useThp of [true, false]) {
        const npages = size / PAGE_SIZE;
        const ptr = mmapPages(f.proc, npages);
        expect(f.proc.mm.madvise(ptr, size, useThp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)).toBe(0);
        const data = intPattern(npages, 1, size);
        f.proc.mm.write(ptr, data);
        const entries = migrateStats.migrated;
        for (let it = 0; it < 2; it++) {
          const to = f.mirror.migrateToDevice(ptr, npages);
          expect(to.ret).toBe(0);
          expect(to.cpages).toBe(npages);
          expect(f.mirror.migrateToSystem(ptr, npages).ret).toBe(0);
        }
        per.push(migrateStats.migrated - entries);
        expect(sameBytes(f.proc.mm.read(ptr, size), data)).toBe(true);
        expect(f.proc.mm.munmap(ptr, size)).toBe(0);
      }
      counts.push({ size, thp: per[0] ?? 0, regular: per[1] ?? 0 });
    }
    // A 2 MiB-aligned THP moves as one entry each way; smaller buffers and 4 KiB pages page by page.
    for (const c of counts) {
      if (c.size >= SIZE && c.size % SIZE === 0) expect(c.regular / c.thp).toBe(NPAGES);
      else expect(c.thp).toBe(c.regular);
    }
    leakFree(f);
  });

  it('device memory full: a THP that gets no destination keeps its PMD and its bytes (remove_migration_ptes)', () => {
    const f = thpSetup(SZ_2M);
    const a = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, MADV_HUGEPAGE);
    const b = alignedBuffer(f.proc, PROT_READ | PROT_WRITE, MADV_HUGEPAGE);
    const da = intPattern(NPAGES, 1, 5);
    const db = intPattern(NPAGES, -1, 9);
    f.proc.mm.write(a.map, da);
    f.proc.mm.write(b.map, db);
    expect(f.mirror.migrateToDevice(a.map, NPAGES).ret).toBe(0);
    expect(f.mdev.devicePagesInUse).toBe(NPAGES);
    const restored = migrateStats.restored;
    const r = f.mirror.migrateToDevice(b.map, NPAGES);
    expect(r.ret).toBe(-Errno.ENOENT);
    expect(migrateStats.restored).toBe(restored + 1);
    expect(f.proc.mm.pteFlags(b.map) & (PTE_PRESENT | PTE_HUGE)).toBe(PTE_PRESENT | PTE_HUGE);
    expect(f.proc.mm.pteOrder(b.map + SIZE - PAGE_SIZE)).toBe(9);
    expect(sameBytes(f.proc.mm.read(b.map, SIZE), db)).toBe(true);
    expect(sameBytes(f.proc.mm.read(a.map, SIZE), da)).toBe(true);
    expect(f.mirror.checkInvariants()).toEqual([]);
    expect(f.proc.mm.munmap(a.old, 2 * SIZE)).toBe(0);
    expect(f.proc.mm.munmap(b.old, 2 * SIZE)).toBe(0);
    leakFree(f);
  });

  it('bad input: HMM_DMIRROR_FLAGS refuses nonsense, madvise refuses unknown advice', () => {
    const f = thpSetup();
    expect(f.mirror.setFlags(-1)).toBe(-Errno.EINVAL);
    expect(f.mirror.setFlags(1.5)).toBe(-Errno.EINVAL);
    const p = mmapPages(f.proc, 4);
    expect(f.proc.mm.madvise(p, 4 * PAGE_SIZE, 9999)).toBe(-Errno.EINVAL);
    expect(f.proc.mm.madvise(p + 1, PAGE_SIZE, MADV_HUGEPAGE)).toBe(-Errno.EINVAL);
    expect(f.proc.mm.madvise(p + 8 * PAGE_SIZE, PAGE_SIZE, MADV_HUGEPAGE)).toBe(-Errno.ENOMEM);
    expect(f.proc.mm.munmap(p, 4 * PAGE_SIZE)).toBe(0);
    expect(HPAGE_PMD_NR).toBe(NPAGES);
    leakFree(f);
  });
});

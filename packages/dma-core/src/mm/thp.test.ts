// Transparent huge pages (mm/huge_memory.c): fault, huge zero folio, PMD split on partial
// munmap / mprotect / mremap / madvise, copy-on-write after fork, MADV_COLLAPSE, compound pages.
import { describe, expect, it } from 'vitest';
import {
  Errno,
  GFP_COMP,
  MADV_COLLAPSE,
  MADV_DONTNEED,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MMU_NOTIFY_CLEAR,
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  MmuIntervalNotifier,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  PTE_DIRTY,
  PTE_HUGE,
  PTE_PRESENT,
  PTE_WRITE,
  PTE_ZERO,
  SZ_2M,
  VM_HUGEPAGE,
  VM_NOHUGEPAGE,
  createMachine,
  hugeZeroFolio,
  mmuIntervalNotifierInsert,
  openTmpfile,
  thpVmstat,
  transparentHugepageSettings,
} from '../index.js';
import type { MmuNotifierRange, Process } from '../index.js';

function rig(): { machine: ReturnType<typeof createMachine>; proc: Process; baseline: number } {
  const machine = createMachine({ ramBytes: 64 * 1024 * 1024 });
  hugeZeroFolio(machine.memory);
  expect(machine.memory.zeroPagePhys).toBeGreaterThan(0);
  return { machine, proc: machine.createProcess(), baseline: machine.memory.allocatedPageCount };
}

/** A 2 MiB-multiple private anonymous mapping (placed 2 MiB aligned) with MADV_HUGEPAGE. */
function thpMap(proc: Process, size = 2 * SZ_2M, advise = true): number {
  const a = proc.mm.mmap({ length: size, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  expect(a % SZ_2M).toBe(0);
  if (advise) expect(proc.mm.madvise(a, size, MADV_HUGEPAGE)).toBe(0);
  return a;
}

/** Byte equality without vitest's element-wise diff (slow on megabytes). */
function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function fillBytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

describe('transparent huge pages', () => {
  it('a write fault in a MADV_HUGEPAGE VMA maps one order-9 compound folio with a PMD', () => {
    const { machine, proc, baseline } = rig();
    const a = thpMap(proc);
    expect(proc.mm.vmas[0]?.vmFlags ?? 0).toBe(VM_HUGEPAGE);
    proc.mm.write(a + 5 * PAGE_SIZE, new Uint8Array([1, 2, 3]));
    expect(proc.mm.pteOrder(a)).toBe(9);
    expect(proc.mm.pteFlags(a + SZ_2M - PAGE_SIZE) & (PTE_PRESENT | PTE_HUGE | PTE_WRITE)).toBe(PTE_PRESENT | PTE_HUGE | PTE_WRITE);
    expect(proc.mm.rssPages).toBe(512);
    const head = proc.mm.walkPte(a) * PAGE_SIZE;
    const tail = proc.mm.walkPte(a + 7 * PAGE_SIZE) * PAGE_SIZE;
    expect(tail - head).toBe(7 * PAGE_SIZE);
    const mem = machine.memory;
    expect(mem.pageInfo(tail).compoundHead).toBe(head);
    expect(mem.pageInfo(tail).compoundOrder).toBe(9);
    expect(mem.getPageRef(tail)).toBe(1); // the folio's count
    expect(machine.memory.allocatedPageCount).toBe(baseline + 512);
    expect(thpVmstat(mem).faultAlloc).toBe(1);
    expect(proc.mm.munmap(a, 2 * SZ_2M)).toBe(0);
    expect(machine.memory.allocatedPageCount).toBe(baseline);
  });

  it("the enabled mode decides: 'madvise' needs MADV_HUGEPAGE, 'always' does not, 'never' and MADV_NOHUGEPAGE refuse", () => {
    const { machine, proc } = rig();
    const s = transparentHugepageSettings(machine.memory);
    expect(s.enabled).toBe('madvise');
    const a = thpMap(proc, SZ_2M, false);
    proc.mm.write(a, new Uint8Array([1]));
    expect(proc.mm.pteOrder(a)).toBe(0);
    s.enabled = 'always';
    const b = thpMap(proc, SZ_2M, false);
    proc.mm.write(b, new Uint8Array([1]));
    expect(proc.mm.pteOrder(b)).toBe(9);
    const c = thpMap(proc, SZ_2M, false);
    expect(proc.mm.madvise(c, SZ_2M, MADV_NOHUGEPAGE)).toBe(0);
    expect(proc.mm.vmas.find((v) => v.start === c)?.vmFlags).toBe(VM_NOHUGEPAGE);
    proc.mm.write(c, new Uint8Array([1]));
    expect(proc.mm.pteOrder(c)).toBe(0);
    s.enabled = 'never';
    const d = thpMap(proc, SZ_2M);
    proc.mm.write(d, new Uint8Array([1]));
    expect(proc.mm.pteOrder(d)).toBe(0);
    // A VMA smaller than the 2 MiB block never gets a THP.
    s.enabled = 'always';
    const e = proc.mm.mmap({ length: SZ_2M - PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    proc.mm.write(e, new Uint8Array([1]));
    expect(proc.mm.pteOrder(e)).toBe(0);
  });

  it('a read fault maps the huge zero folio; a write replaces it with a new THP (do_huge_zero_wp_pmd)', () => {
    const { machine, proc, baseline } = rig();
    const a = thpMap(proc);
    expect(proc.mm.read(a + 100, 4).every((x) => x === 0)).toBe(true);
    expect(proc.mm.pteFlags(a) & (PTE_ZERO | PTE_HUGE | PTE_WRITE)).toBe(PTE_ZERO | PTE_HUGE);
    expect(proc.mm.walkPte(a) * PAGE_SIZE).toBe(hugeZeroFolio(machine.memory));
    expect(machine.memory.allocatedPageCount).toBe(baseline);
    proc.mm.write(a + SZ_2M - 1, new Uint8Array([9]));
    expect(proc.mm.pteFlags(a) & (PTE_ZERO | PTE_HUGE | PTE_WRITE)).toBe(PTE_HUGE | PTE_WRITE);
    expect(same(proc.mm.read(a + SZ_2M - 2, 2), new Uint8Array([0, 9]))).toBe(true);
    expect(machine.memory.allocatedPageCount).toBe(baseline + 512);
    proc.exit();
    expect(machine.memory.allocatedPageCount).toBe(baseline);
  });

  it('partial munmap splits the PMD (MMU_NOTIFY_CLEAR) and keeps the rest; the folio goes with its last PTE', () => {
    const { machine, proc, baseline } = rig();
    const a = thpMap(proc);
    const data = fillBytes(SZ_2M, 3);
    proc.mm.write(a, data);
    const events: number[] = [];
    const sub = new MmuIntervalNotifier();
    expect(
      mmuIntervalNotifierInsert(sub, proc.mm, a, 2 * SZ_2M, {
        invalidate: (_s, r: MmuNotifierRange) => {
          events.push(r.event);
          return true;
        },
      }),
    ).toBe(0);
    expect(proc.mm.munmap(a + SZ_2M / 4, SZ_2M / 2)).toBe(0);
    expect(events[0]).toBe(MMU_NOTIFY_CLEAR);
    expect(thpVmstat(machine.memory).splitPmd).toBe(1);
    expect(proc.mm.pteFlags(a) & PTE_HUGE).toBe(0);
    expect(proc.mm.rssPages).toBe(256);
    const head = proc.mm.walkPte(a) * PAGE_SIZE;
    expect(machine.memory.getPageRef(head)).toBe(256); // one per remaining PTE
    expect(same(proc.mm.read(a, SZ_2M / 4), data.subarray(0, SZ_2M / 4))).toBe(true);
    expect(same(proc.mm.read(a + (3 * SZ_2M) / 4, SZ_2M / 4), data.subarray((3 * SZ_2M) / 4))).toBe(true);
    // The folio stays allocated while any page of it is mapped (deferred split is not modelled).
    expect(machine.memory.allocatedPageCount).toBe(baseline + 512);
    expect(proc.mm.munmap(a, 2 * SZ_2M)).toBe(0);
    expect(machine.memory.allocatedPageCount).toBe(baseline);
  });

  it('split_folio turns a PTE-mapped THP into order-0 pages and frees the unmapped ones', () => {
    const { machine, proc, baseline } = rig();
    const a = thpMap(proc);
    proc.mm.write(a, fillBytes(SZ_2M, 1));
    expect(proc.mm.munmap(a + SZ_2M / 2, SZ_2M / 2)).toBe(0);
    expect(proc.mm.splitHugePage(a)).toBe(0);
    expect(thpVmstat(machine.memory).splitPage).toBe(1);
    const p = proc.mm.walkPte(a + PAGE_SIZE) * PAGE_SIZE;
    expect(machine.memory.pageInfo(p).compoundOrder).toBe(0);
    expect(machine.memory.getPageRef(p)).toBe(1);
    expect(machine.memory.allocatedPageCount).toBe(baseline + 256);
    expect(same(proc.mm.read(a, SZ_2M / 2), fillBytes(SZ_2M, 1).subarray(0, SZ_2M / 2))).toBe(true);
    expect(proc.mm.munmap(a, 2 * SZ_2M)).toBe(0);
    expect(machine.memory.allocatedPageCount).toBe(baseline);
  });

  it('fork shares the THP read-only; each side breaks COW on a write (split, then a 4 KiB copy)', () => {
    const { machine, proc, baseline } = rig();
    const a = thpMap(proc);
    const data = fillBytes(SZ_2M, 5);
    proc.mm.write(a, data);
    const child = proc.fork() as Process;
    const head = proc.mm.walkPte(a) * PAGE_SIZE;
    expect(machine.memory.getPageRef(head)).toBe(2);
    expect(child.mm.pteFlags(a) & (PTE_HUGE | PTE_WRITE)).toBe(PTE_HUGE);
    child.mm.write(a + 10, new Uint8Array([0xee]));
    expect(child.mm.read(a + 10, 1)[0]).toBe(0xee);
    expect(proc.mm.read(a + 10, 1)[0]).toBe(data[10]);
    expect(child.mm.pteFlags(a) & PTE_HUGE).toBe(0); // the child's PMD was split
    expect(proc.mm.pteFlags(a) & PTE_HUGE).toBe(PTE_HUGE); // the parent keeps its PMD
    proc.mm.write(a + 20, new Uint8Array([0xdd]));
    expect(child.mm.read(a + 20, 1)[0]).toBe(data[20]);
    expect(same(proc.mm.read(a, SZ_2M).subarray(30), data.subarray(30))).toBe(true);
    child.exit();
    // The parent is now the only user: the next write to the PMD reuses the folio.
    proc.exit();
    expect(machine.memory.allocatedPageCount).toBe(baseline);
  });

  it('mprotect of a whole THP keeps the PMD read-only; of a part splits it', () => {
    const { proc } = rig();
    const a = thpMap(proc);
    proc.mm.write(a, new Uint8Array([1]));
    expect(proc.mm.mprotect(a, SZ_2M, PROT_READ)).toBe(0);
    expect(proc.mm.pteFlags(a) & (PTE_HUGE | PTE_WRITE)).toBe(PTE_HUGE);
    expect(proc.mm.mprotect(a, PAGE_SIZE, PROT_READ | PROT_WRITE)).toBe(0);
    expect(proc.mm.pteFlags(a + PAGE_SIZE) & PTE_HUGE).toBe(0);
    proc.mm.write(a, new Uint8Array([2]));
    expect(proc.mm.read(a, 1)[0]).toBe(2);
    proc.exit();
  });

  it('MADV_DONTNEED drops a THP; MADV_COLLAPSE builds one from 4 KiB pages with the same bytes', () => {
    const { machine, proc, baseline } = rig();
    const a = thpMap(proc, 2 * SZ_2M, false);
    const data = fillBytes(SZ_2M, 11);
    proc.mm.write(a, data.subarray(0, SZ_2M / 2)); // half the block: the rest reads as zeroes
    expect(proc.mm.pteOrder(a)).toBe(0);
    expect(proc.mm.madvise(a, 2 * SZ_2M, MADV_COLLAPSE)).toBe(0);
    expect(proc.mm.pteOrder(a)).toBe(9);
    expect(proc.mm.pteOrder(a + SZ_2M)).toBe(9);
    const want = new Uint8Array(SZ_2M);
    want.set(data.subarray(0, SZ_2M / 2));
    expect(same(proc.mm.read(a, SZ_2M), want)).toBe(true);
    expect(proc.mm.pteFlags(a) & PTE_DIRTY).toBe(PTE_DIRTY);
    expect(machine.memory.allocatedPageCount).toBe(baseline + 1024);
    expect(proc.mm.madvise(a, SZ_2M, MADV_DONTNEED)).toBe(0);
    expect(proc.mm.pteFlags(a)).toBe(0);
    expect(machine.memory.allocatedPageCount).toBe(baseline + 512);
    expect(proc.mm.read(a, 8).every((x) => x === 0)).toBe(true);
    // A pinned 4 KiB page makes the collapse fail with -EAGAIN; VM_NOHUGEPAGE with -EINVAL.
    expect(proc.mm.madvise(a, SZ_2M, MADV_DONTNEED)).toBe(0);
    proc.mm.write(a, new Uint8Array([1]));
    machine.memory.pageGet(proc.mm.walkPte(a) * PAGE_SIZE);
    expect(proc.mm.madvise(a, SZ_2M, MADV_COLLAPSE)).toBe(-Errno.EAGAIN);
    machine.memory.pagePut(proc.mm.walkPte(a) * PAGE_SIZE);
    expect(proc.mm.madvise(a, SZ_2M, MADV_NOHUGEPAGE)).toBe(0);
    expect(proc.mm.madvise(a, SZ_2M, MADV_COLLAPSE)).toBe(-Errno.EINVAL);
    proc.exit();
    expect(machine.memory.allocatedPageCount).toBe(baseline);
  });

  it('mremap moves a PMD whole between aligned addresses and splits it for an unaligned one; MREMAP_DONTUNMAP keeps the old VMA', () => {
    const { machine, proc, baseline } = rig();
    const base = proc.mm.mmap({ length: 8 * SZ_2M, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    expect(proc.mm.madvise(base, 8 * SZ_2M, MADV_HUGEPAGE)).toBe(0);
    expect(proc.mm.munmap(base + SZ_2M, 6 * SZ_2M)).toBe(0);
    const data = fillBytes(SZ_2M, 2);
    proc.mm.write(base, data);
    const aligned = proc.mm.mremap(base, SZ_2M, SZ_2M, MREMAP_MAYMOVE | MREMAP_FIXED, base + 2 * SZ_2M);
    expect(aligned).toBe(base + 2 * SZ_2M);
    expect(proc.mm.pteOrder(aligned)).toBe(9);
    expect(thpVmstat(machine.memory).splitPmd).toBe(0);
    const moved = proc.mm.mremap(aligned, SZ_2M, SZ_2M, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, base + 4 * SZ_2M + SZ_2M / 4);
    expect(moved).toBe(base + 4 * SZ_2M + SZ_2M / 4);
    expect(thpVmstat(machine.memory).splitPmd).toBe(1);
    expect(proc.mm.pteOrder(moved)).toBe(0);
    expect(same(proc.mm.read(moved, SZ_2M), data)).toBe(true);
    expect(proc.mm.findVma(aligned)).toBeDefined(); // DONTUNMAP: still mapped, now empty
    expect(proc.mm.pteFlags(aligned)).toBe(0);
    expect(proc.mm.mremap(moved, SZ_2M, SZ_2M + PAGE_SIZE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP)).toBe(-Errno.EINVAL);
    proc.exit();
    expect(machine.memory.allocatedPageCount).toBe(baseline);
  });

  it('compound pages: GFP_COMP shares one count; splitFolio gives each page its own; misuse throws', () => {
    const { machine } = rig();
    const mem = machine.memory;
    const head = mem.allocPages(2, GFP_COMP);
    expect(mem.folioOrder(head + 3 * PAGE_SIZE)).toBe(2);
    mem.pageGet(head + 2 * PAGE_SIZE);
    expect(mem.getPageRef(head)).toBe(2);
    expect(() => {
      mem.splitFolio(head + PAGE_SIZE, () => 1);
    }).toThrow(/large folio/);
    mem.splitFolio(head, (i) => (i === 1 ? 0 : 1));
    expect(mem.pageInfo(head + PAGE_SIZE).free).toBe(true);
    for (const i of [0, 2, 3]) {
      expect(mem.getPageRef(head + i * PAGE_SIZE)).toBe(1);
      mem.pagePut(head + i * PAGE_SIZE);
    }
    expect(mem.pageInfo(head).free).toBe(true);
    expect(() => {
      mem.prepCompoundPage(head + PAGE_SIZE, 1);
    }).toThrow(/aligned/);
  });
});

describe('transparent huge pages and file mappings', () => {
  // kernel: mm/huge_memory.c __thp_vma_allowable_orders — a file or shmem VMA never gets an
  // anonymous THP (vma_is_anonymous), even with MADV_HUGEPAGE and THP "always"; a MAP_PRIVATE
  // file mapping's COW copies are 4 KiB anonymous pages.
  it('a MAP_PRIVATE file mapping with MADV_HUGEPAGE stays 4 KiB, reads the file and copies on write', () => {
    const { machine, proc } = rig();
    transparentHugepageSettings(machine.memory).enabled = 'always';
    const f = openTmpfile(machine.memory, { size: 2 * SZ_2M });
    if (typeof f === 'number') throw new Error(`openTmpfile: ${f}`);
    const content = fillBytes(PAGE_SIZE, 3);
    expect(f.pwrite(content, SZ_2M)).toBe(PAGE_SIZE);
    const a = proc.mm.mmap({ length: 2 * SZ_2M, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE, file: f });
    expect(a).toBeGreaterThan(0);
    expect(proc.mm.madvise(a, 2 * SZ_2M, MADV_HUGEPAGE)).toBe(0);
    expect(same(proc.mm.read(a + SZ_2M, PAGE_SIZE), content)).toBe(true);
    expect(proc.mm.pteOrder(a + SZ_2M)).toBe(0);
    proc.mm.write(a + 7 * PAGE_SIZE, new Uint8Array([9, 9]));
    expect(proc.mm.pteOrder(a + 7 * PAGE_SIZE)).toBe(0);
    expect(thpVmstat(machine.memory).faultAlloc).toBe(0);
    // The private write never reached the file.
    const back = new Uint8Array(2);
    expect(f.pread(back, 7 * PAGE_SIZE)).toBe(2);
    expect([...back]).toEqual([0, 0]);
  });
});

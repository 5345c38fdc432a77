// get_user_pages / pin_user_pages (mm/gup.ts against mm/gup.c).
import { describe, expect, it } from 'vitest';
import {
  Errno,
  FOLL_LONGTERM,
  FOLL_NOFAULT,
  FOLL_PIN,
  FOLL_WRITE,
  GUP_PIN_COUNTING_BIAS,
  MAP_ANONYMOUS,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MAP_SHARED,
  PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  PTE_WRITE,
  PTE_ZERO,
  PageFlag,
  SZ_2M,
  VM_PFNMAP,
  createMachine,
  getUserPages,
  getUserPagesFast,
  gupStats,
  openTmpfile,
  pinUserPages,
  pinUserPagesFast,
  putUserPages,
  unpinUserPages,
} from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;

function setup(): { m: ReturnType<typeof createMachine>; p: Process } {
  const m = createMachine({ ramBytes: 128 * 1024 * 1024, swiotlbBytes: 0 });
  return { m, p: m.createProcess() };
}

describe('get_user_pages / pin_user_pages', () => {
  it('FOLL_WRITE faults the range in writable and takes one reference per page', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: 8 * PAGE_SIZE, prot: RW, flags: ANON });
    const pages = new Float64Array(8);
    expect(getUserPages(p.mm, a, 8, FOLL_WRITE, pages)).toBe(8);
    for (let i = 0; i < 8; i++) {
      expect(pages[i]).toBe(p.mm.walkPte(a + i * PAGE_SIZE) * PAGE_SIZE);
      expect(p.mm.pteFlags(a + i * PAGE_SIZE) & PTE_WRITE).toBe(PTE_WRITE);
      expect(m.memory.getPageRef(pages[i] ?? 0)).toBe(2);
    }
    putUserPages(m.memory, pages, 8);
    expect(m.memory.getPageRef(pages[0] ?? 0)).toBe(1);
  });

  it('a read GUP of untouched anonymous memory returns the zero page; FOLL_WRITE breaks COW', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON });
    const pages = new Float64Array(1);
    expect(getUserPages(p.mm, a, 1, 0, pages)).toBe(1);
    expect(pages[0]).toBe(m.memory.zeroPagePhys);
    expect(p.mm.pteFlags(a) & PTE_ZERO).toBe(PTE_ZERO);
    putUserPages(m.memory, pages, 1);
    expect(getUserPages(p.mm, a, 1, FOLL_WRITE, pages)).toBe(1);
    expect(pages[0]).not.toBe(m.memory.zeroPagePhys);
    putUserPages(m.memory, pages, 1);
  });

  it('a pin adds GUP_PIN_COUNTING_BIAS: folio_maybe_dma_pinned, and fork copies the page for the child', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: 2 * PAGE_SIZE, prot: RW, flags: ANON });
    p.mm.write(a, new Uint8Array([1, 2, 3]));
    const pages = new Float64Array(2);
    expect(pinUserPages(p.mm, a, 2, FOLL_WRITE | FOLL_LONGTERM, pages)).toBe(2);
    const phys = pages[0] ?? 0;
    expect(m.memory.getPageRef(phys)).toBe(1 + GUP_PIN_COUNTING_BIAS);
    expect(m.memory.pageMaybeDmaPinned(phys)).toBe(true);
    const c = p.fork();
    if (typeof c === 'number') throw new Error('fork');
    // page_needs_cow_for_dma: the child got its own copy at fork, the parent keeps the pinned page.
    expect(c.mm.walkPte(a) * PAGE_SIZE).not.toBe(phys);
    expect(c.mm.read(a, 3)).toEqual(new Uint8Array([1, 2, 3]));
    expect(p.mm.walkPte(a) * PAGE_SIZE).toBe(phys);
    unpinUserPages(m.memory, pages, 2);
    expect(m.memory.getPageRef(phys)).toBe(1);
    expect(m.memory.pageMaybeDmaPinned(phys)).toBe(false);
    c.exit();
  });

  it('pinning a page still shared after fork unshares it first (gup_must_unshare)', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON });
    p.mm.write(a, new Uint8Array([5]));
    const c = p.fork();
    if (typeof c === 'number') throw new Error('fork');
    const shared = p.mm.walkPte(a) * PAGE_SIZE;
    expect(c.mm.walkPte(a) * PAGE_SIZE).toBe(shared);
    const pages = new Float64Array(1);
    const unshares = gupStats.unshares;
    expect(pinUserPages(p.mm, a, 1, 0, pages)).toBe(1); // a read pin
    expect(gupStats.unshares).toBe(unshares + 1);
    expect(pages[0]).not.toBe(shared);
    expect(m.memory.pageFlags(pages[0] ?? 0) & PageFlag.ANON_EXCLUSIVE).toBeTruthy();
    expect(c.mm.read(a, 1)[0]).toBe(5);
    unpinUserPages(m.memory, pages, 1);
    c.exit();
  });

  it('a FOLL_LONGTERM read pin in a private mapping unshares a page-cache page or the zero page; a short-term one does not', () => {
    const { m, p } = setup();
    const f = openTmpfile(m.memory, { size: PAGE_SIZE });
    if (typeof f === 'number') throw new Error('tmpfile');
    f.pwrite(new Uint8Array([3]), 0);
    const a = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_PRIVATE, file: f });
    const z = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON });
    const cached = f.inode.mapping?.findPage(0);
    const pages = new Float64Array(1);
    expect(pinUserPages(p.mm, a, 1, 0, pages)).toBe(1);
    expect(pages[0]).toBe(cached);
    unpinUserPages(m.memory, pages, 1);
    expect(pinUserPages(p.mm, a, 1, FOLL_LONGTERM, pages)).toBe(1);
    expect(pages[0]).not.toBe(cached);
    expect(m.memory.pageFlags(pages[0] ?? 0) & PageFlag.ANON).toBeTruthy();
    expect(p.mm.read(a, 1)[0]).toBe(3);
    unpinUserPages(m.memory, pages, 1);
    expect(getUserPages(p.mm, z, 1, 0, pages)).toBe(1);
    expect(pages[0]).toBe(m.memory.zeroPagePhys);
    putUserPages(m.memory, pages, 1);
    expect(pinUserPages(p.mm, z, 1, FOLL_LONGTERM, pages)).toBe(1);
    expect(pages[0]).not.toBe(m.memory.zeroPagePhys);
    unpinUserPages(m.memory, pages, 1);
  });

  it('the fast variants take present, permitted PTEs without faulting and fall back for the rest', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: ANON });
    p.mm.write(a, new Uint8Array(2 * PAGE_SIZE).fill(1)); // pages 0-1 present and writable
    const pages = new Float64Array(4);
    const fast0 = gupStats.fastPages;
    expect(pinUserPagesFast(p.mm, a, 4, FOLL_WRITE, pages)).toBe(4);
    expect(gupStats.fastPages - fast0).toBe(2);
    unpinUserPages(m.memory, pages, 4);
    expect(getUserPagesFast(p.mm, a, 4, FOLL_WRITE, pages)).toBe(4);
    expect(gupStats.fastPages - fast0).toBe(6);
    putUserPages(m.memory, pages, 4);
  });

  it('refusals: holes, PROT_NONE, a write to a read-only VMA and VM_PFNMAP are -EFAULT; a short range returns the prefix', () => {
    const { p } = setup();
    const a = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: PROT_READ, flags: ANON });
    expect(getUserPages(p.mm, a, 1, FOLL_WRITE)).toBe(-Errno.EFAULT);
    expect(p.mm.mprotect(a, PAGE_SIZE, PROT_NONE)).toBe(0);
    expect(getUserPages(p.mm, a, 1, 0)).toBe(-Errno.EFAULT);
    expect(getUserPages(p.mm, a + PAGE_SIZE, 5, 0)).toBe(3); // the range runs off the VMA
    expect(getUserPages(p.mm, a + 4 * PAGE_SIZE, 1, 0)).toBe(-Errno.EFAULT);
    const io = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON });
    const vma = p.mm.findVma(io);
    if (vma === undefined) throw new Error('vma');
    vma.vmFlags |= VM_PFNMAP;
    expect(pinUserPages(p.mm, io, 1, FOLL_WRITE)).toBe(-Errno.EFAULT);
    // FOLL_NOFAULT fails instead of faulting.
    const b = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON });
    expect(getUserPages(p.mm, b, 1, FOLL_NOFAULT)).toBe(-Errno.EFAULT);
  });

  it('bad arguments are -EINVAL: unaligned start, FOLL_LONGTERM without a pin, internal flags from the caller', () => {
    const { p } = setup();
    const a = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON });
    expect(getUserPages(p.mm, a + 1, 1, 0)).toBe(-Errno.EINVAL);
    expect(getUserPages(p.mm, a, 1, FOLL_LONGTERM)).toBe(-Errno.EINVAL);
    expect(pinUserPages(p.mm, a, 1, FOLL_PIN)).toBe(-Errno.EINVAL);
    expect(pinUserPages(p.mm, a, -1, 0)).toBe(-Errno.EINVAL);
    expect(pinUserPages(p.mm, a, 2, 0, new Float64Array(1))).toBe(-Errno.EINVAL);
    expect(pinUserPages(p.mm, a, 0, 0)).toBe(0);
  });

  it('file pages: a pin of a MAP_SHARED tmpfs page pins the page-cache page; DMA-style writes reach read()', () => {
    const { m, p } = setup();
    const f = openTmpfile(m.memory, { size: 2 * PAGE_SIZE });
    if (typeof f === 'number') throw new Error('tmpfile');
    const a = p.mm.mmap({ length: 2 * PAGE_SIZE, prot: RW, flags: MAP_SHARED, file: f });
    const pages = new Float64Array(2);
    expect(pinUserPages(p.mm, a, 2, FOLL_WRITE | FOLL_LONGTERM, pages)).toBe(2);
    expect(pages[1]).toBe(f.inode.mapping?.findPage(1));
    m.memory.write((pages[1] ?? 0) + 8, new Uint8Array([0x42])); // a device writes the pinned page
    const out = new Uint8Array(1);
    expect(f.pread(out, PAGE_SIZE + 8)).toBe(1);
    expect(out[0]).toBe(0x42);
    unpinUserPages(m.memory, pages, 2);
  });

  it('hugetlb: the pin is taken on the 2 MiB head and dropped from any subpage', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: SZ_2M, prot: RW, flags: ANON | MAP_HUGETLB });
    const pages = new Float64Array(2);
    expect(pinUserPages(p.mm, a + 10 * PAGE_SIZE, 2, FOLL_WRITE, pages)).toBe(2);
    const head = p.mm.walkPte(a) * PAGE_SIZE;
    expect(pages[0]).toBe(head + 10 * PAGE_SIZE);
    expect(m.memory.getPageRef(head)).toBe(1 + 2 * GUP_PIN_COUNTING_BIAS);
    unpinUserPages(m.memory, pages, 2);
    expect(m.memory.getPageRef(head)).toBe(1);
  });
});

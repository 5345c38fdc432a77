import { describe, expect, it } from 'vitest';
import {
  Errno,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_HUGETLB,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MMU_NOTIFY_CLEAR,
  MMU_NOTIFY_PROTECTION_PAGE,
  MMU_NOTIFY_PROTECTION_VMA,
  MMU_NOTIFY_RELEASE,
  MMU_NOTIFY_UNMAP,
  MmuIntervalNotifier,
  PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  PTE_HUGE,
  PTE_PRESENT,
  PTE_WRITE,
  PTE_ZERO,
  GUP_PIN_COUNTING_BIAS,
  SZ_2M,
  SegvError,
  createMachine,
  mmuIntervalCheckRetry,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
} from '@dmakit/dma-core';
import type { MmuNotifierRange, Process } from '@dmakit/dma-core';

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;

function setup(): { m: ReturnType<typeof createMachine>; p: Process } {
  const m = createMachine({ ramBytes: 256 * 1024 * 1024, swiotlbBytes: 0 });
  return { m, p: m.createProcess() };
}

function forked(p: Process): Process {
  const c = p.fork();
  if (typeof c === 'number') throw new Error(`fork failed ${c}`);
  return c;
}

/** Records invalidations and keeps the sequence, like a driver would. */
function watch(p: Process, start: number, length: number): { sub: MmuIntervalNotifier; log: MmuNotifierRange[] } {
  const sub = new MmuIntervalNotifier();
  const log: MmuNotifierRange[] = [];
  const r = mmuIntervalNotifierInsert(sub, p.mm, start, length, {
    invalidate(s, range, curSeq) {
      log.push(range);
      mmuIntervalSetSeq(s, curSeq);
      return true;
    },
  });
  expect(r).toBe(0);
  return { sub, log };
}

describe('mm: mmap and faults', () => {
  it('maps top-down, page aligned, and rejects bad arguments with errnos', () => {
    const { p } = setup();
    const a = p.mm.mmap({ length: 3 * PAGE_SIZE, prot: RW, flags: ANON });
    const b = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON });
    expect(a % PAGE_SIZE).toBe(0);
    expect(b).toBeLessThan(a);
    expect(p.mm.mmap({ length: 0, prot: RW, flags: ANON })).toBe(-Errno.EINVAL);
    expect(p.mm.mmap({ length: 4096, prot: RW, flags: MAP_ANONYMOUS })).toBe(-Errno.EINVAL);
    expect(p.mm.mmap({ length: 4096, prot: RW, flags: MAP_PRIVATE })).toBe(-Errno.EBADF);
    expect(p.mm.mmap({ length: 4096, prot: RW, flags: ANON | MAP_FIXED, addr: a + 1 })).toBe(-Errno.EINVAL);
    expect(p.mm.mmap({ length: 4096, prot: RW, flags: ANON | MAP_FIXED_NOREPLACE, addr: a })).toBe(-Errno.EEXIST);
    expect(p.mm.munmap(a + 1, 4096)).toBe(-Errno.EINVAL);
    expect(p.mm.munmap(a, 0)).toBe(-Errno.EINVAL);
    expect(p.mm.mprotect(a, 4096, 0x100)).toBe(-Errno.EINVAL);
    expect(p.mm.mprotect(0x10_0000_0000, 4096, PROT_READ)).toBe(-Errno.ENOMEM);
    // a hint over an existing mapping is ignored (kernel semantics), not an error
    const c = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON, addr: a });
    expect(c).toBeGreaterThan(0);
    expect(c).not.toBe(a);
  });

  it('read fault maps the zero page read-only; write fault allocates a zeroed page', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: 2 * PAGE_SIZE, prot: RW, flags: ANON });
    expect(p.mm.walkPte(a)).toBe(-1);
    expect([...p.mm.read(a + 10, 4)]).toEqual([0, 0, 0, 0]);
    expect(p.mm.walkPte(a) * PAGE_SIZE).toBe(m.memory.zeroPagePhys);
    expect(p.mm.pteFlags(a) & (PTE_ZERO | PTE_WRITE)).toBe(PTE_ZERO);
    const before = m.memory.stats().allocatedPages;
    p.mm.write(a + 10, Uint8Array.from([1, 2, 3]));
    expect(m.memory.stats().allocatedPages).toBe(before + 1);
    expect(p.mm.pteFlags(a) & PTE_ZERO).toBe(0);
    expect(p.mm.pteFlags(a) & PTE_WRITE).toBe(PTE_WRITE);
    expect([...p.mm.read(a + 9, 5)]).toEqual([0, 1, 2, 3, 0]);
    const phys = p.mm.walkPte(a) * PAGE_SIZE;
    expect([...m.memory.read(phys + 10, 3)]).toEqual([1, 2, 3]);
    // zero page stays zero
    expect([...m.memory.read(m.memory.zeroPagePhys, 16)].every((x) => x === 0)).toBe(true);
    // an access spanning two pages
    p.mm.write(a + PAGE_SIZE - 2, Uint8Array.from([7, 8, 9, 10]));
    expect([...p.mm.read(a + PAGE_SIZE - 2, 4)]).toEqual([7, 8, 9, 10]);
  });

  it('access to unmapped or PROT_NONE memory throws SegvError; handleMmFault returns -EFAULT', () => {
    const { p } = setup();
    const a = p.mm.mmap({ length: PAGE_SIZE, prot: PROT_NONE, flags: ANON });
    expect(() => p.mm.read(a, 1)).toThrow(SegvError);
    expect(() => p.mm.read(0x1000_0000, 1)).toThrow(SegvError);
    try {
      p.mm.write(a + 8, Uint8Array.of(1));
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(SegvError);
      expect((e as SegvError).addr).toBe(a + 8);
      expect((e as SegvError).reason).toBe('accerr');
    }
    expect(p.mm.handleMmFault(a, false)).toBe(-Errno.EFAULT);
    expect(p.mm.handleMmFault(0x1000_0000, false)).toBe(-Errno.EFAULT);
  });

  it('mprotect to read-only then a write SEGVs; mprotect fires PROTECTION_VMA', () => {
    const { p } = setup();
    const a = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: ANON });
    p.mm.write(a, Uint8Array.of(5));
    const { log } = watch(p, a, 4 * PAGE_SIZE);
    expect(p.mm.mprotect(a, PAGE_SIZE, PROT_READ)).toBe(0);
    expect(p.mm.vmas).toHaveLength(2);
    expect(log.map((r) => r.event)).toEqual([MMU_NOTIFY_PROTECTION_VMA]);
    expect(p.mm.pteFlags(a) & PTE_WRITE).toBe(0);
    expect(() => {
      p.mm.write(a, Uint8Array.of(6));
    }).toThrow(SegvError);
    expect(p.mm.read(a, 1)[0]).toBe(5);
    p.mm.write(a + PAGE_SIZE, Uint8Array.of(6)); // rest still writable
    expect(p.mm.mprotect(a, PAGE_SIZE, RW)).toBe(0);
    p.mm.write(a, Uint8Array.of(7)); // reuse: exclusive page, no copy
    expect(p.mm.read(a, 1)[0]).toBe(7);
  });

  it('partial munmap splits a VMA, fires UNMAP and frees only unmapped pages', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: 8 * PAGE_SIZE, prot: RW, flags: ANON | MAP_POPULATE });
    expect(p.mm.rssPages).toBe(8);
    const { log } = watch(p, a, 8 * PAGE_SIZE);
    const before = m.memory.stats().allocatedPages;
    expect(p.mm.munmap(a + 2 * PAGE_SIZE, 3 * PAGE_SIZE)).toBe(0);
    expect(p.mm.vmas.map((v) => [v.start - a, v.end - a])).toEqual([
      [0, 2 * PAGE_SIZE],
      [5 * PAGE_SIZE, 8 * PAGE_SIZE],
    ]);
    expect(log).toHaveLength(1);
    expect(log[0]?.event).toBe(MMU_NOTIFY_UNMAP);
    expect(log[0]?.start).toBe(a + 2 * PAGE_SIZE);
    expect(log[0]?.end).toBe(a + 5 * PAGE_SIZE);
    expect(m.memory.stats().allocatedPages).toBe(before - 3);
    expect(() => p.mm.read(a + 3 * PAGE_SIZE, 1)).toThrow(SegvError);
    p.mm.write(a + 6 * PAGE_SIZE, Uint8Array.of(1));
  });

  it('munmap does not free a page a device still holds', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON });
    p.mm.write(a, Uint8Array.of(42));
    const phys = p.mm.walkPte(a) * PAGE_SIZE;
    m.memory.pageGet(phys); // e.g. get_user_pages
    p.mm.munmap(a, PAGE_SIZE);
    expect(m.memory.pageInfo(phys).allocated).toBe(true);
    expect(m.memory.read(phys, 1)[0]).toBe(42);
    m.memory.pagePut(phys);
    expect(m.memory.pageInfo(phys).free).toBe(true);
  });

  it('an allocation failure in the fault path is -ENOMEM / SIGBUS, and nothing is mapped', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON });
    m.faultInjection.arm('alloc_pages', 1);
    expect(p.mm.handleMmFault(a, true)).toBe(-Errno.ENOMEM);
    expect(p.mm.walkPte(a)).toBe(-1);
    m.faultInjection.arm('alloc_pages', 1);
    try {
      p.mm.write(a, Uint8Array.of(1));
      expect.unreachable();
    } catch (e) {
      expect((e as SegvError).reason).toBe('oom');
    }
    expect(p.mm.handleMmFault(a, true)).toBe(0);
    expect(p.mm.pteFlags(a) & PTE_WRITE).toBe(PTE_WRITE);
  });

  it('MAP_HUGETLB maps 2 MiB pages with order 9', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: SZ_2M, prot: RW, flags: ANON | MAP_HUGETLB });
    expect(a % SZ_2M).toBe(0);
    p.mm.write(a + 5 * PAGE_SIZE, Uint8Array.of(9));
    expect(p.mm.pteOrder(a)).toBe(9);
    expect(p.mm.pteFlags(a + 100 * PAGE_SIZE) & (PTE_HUGE | PTE_PRESENT)).toBe(PTE_HUGE | PTE_PRESENT);
    expect(p.mm.walkPte(a + PAGE_SIZE)).toBe(p.mm.walkPte(a) + 1);
    expect(p.mm.walkPte(a) % 512).toBe(0);
    expect(p.mm.munmap(a, PAGE_SIZE)).toBe(-Errno.EINVAL);
    const before = m.memory.stats().allocatedPages;
    expect(p.mm.munmap(a, SZ_2M)).toBe(0);
    expect(m.memory.stats().allocatedPages).toBe(before - 512);
  });
});

describe('mm: fork and copy-on-write', () => {
  it('COW after fork isolates parent and child, fires PROTECTION_PAGE and CLEAR', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: 2 * PAGE_SIZE, prot: RW, flags: ANON });
    p.mm.write(a, Uint8Array.of(1));
    const { log } = watch(p, a, 2 * PAGE_SIZE);
    const c = forked(p);
    expect(c.pid).not.toBe(p.pid);
    expect(log.map((r) => r.event)).toEqual([MMU_NOTIFY_PROTECTION_PAGE]);
    const shared = p.mm.walkPte(a);
    expect(c.mm.walkPte(a)).toBe(shared);
    expect(m.memory.getPageRef(shared * PAGE_SIZE)).toBe(2);
    expect(p.mm.pteFlags(a) & PTE_WRITE).toBe(0);
    p.mm.write(a, Uint8Array.of(2)); // parent breaks COW
    expect(log.map((r) => r.event)).toEqual([MMU_NOTIFY_PROTECTION_PAGE, MMU_NOTIFY_CLEAR]);
    expect(log[1]?.start).toBe(a);
    expect(log[1]?.end).toBe(a + PAGE_SIZE);
    expect(p.mm.walkPte(a)).not.toBe(shared);
    expect(c.mm.read(a, 1)[0]).toBe(1);
    expect(p.mm.read(a, 1)[0]).toBe(2);
    c.mm.write(a, Uint8Array.of(3)); // child is now the only user: reuse in place
    expect(c.mm.walkPte(a)).toBe(shared);
    expect(p.mm.read(a, 1)[0]).toBe(2);
  });

  it('MAP_SHARED pages stay shared across fork', () => {
    const { p } = setup();
    const a = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_SHARED | MAP_ANONYMOUS });
    p.mm.write(a, Uint8Array.of(1));
    const c = forked(p);
    c.mm.write(a, Uint8Array.of(2));
    expect(p.mm.read(a, 1)[0]).toBe(2);
    p.mm.write(a, Uint8Array.of(3));
    expect(c.mm.read(a, 1)[0]).toBe(3);
  });

  it('a DMA-pinned page is copied for the child at fork, the parent keeps it writable', () => {
    const { m, p } = setup();
    const a = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: ANON });
    p.mm.write(a, Uint8Array.of(1));
    const phys = p.mm.walkPte(a) * PAGE_SIZE;
    m.memory.pageGet(phys, GUP_PIN_COUNTING_BIAS); // pin_user_pages
    const c = forked(p);
    expect(c.mm.walkPte(a) * PAGE_SIZE).not.toBe(phys);
    expect(p.mm.pteFlags(a) & PTE_WRITE).toBe(PTE_WRITE);
    p.mm.write(a, Uint8Array.of(5)); // lands in the pinned page the device sees
    expect(m.memory.read(phys, 1)[0]).toBe(5);
    expect(c.mm.read(a, 1)[0]).toBe(1);
    m.memory.pagePut(phys, GUP_PIN_COUNTING_BIAS);
  });

  it('exit sends RELEASE and frees every page', () => {
    const { m, p } = setup();
    expect(m.memory.zeroPagePhys).toBeGreaterThan(0); // allocated once, lives forever
    const base = m.memory.stats().allocatedPages;
    const a = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: ANON | MAP_POPULATE });
    const { log } = watch(p, a, PAGE_SIZE);
    const c = forked(p);
    p.exit();
    expect(log.map((r) => r.event)).toContain(MMU_NOTIFY_RELEASE);
    expect(p.exited).toBe(true);
    expect(() => p.mm.read(a, 1)).toThrow(SegvError);
    expect(c.mm.read(a, 1)[0]).toBe(0);
    c.exit();
    expect(m.memory.stats().allocatedPages).toBe(base);
  });
});

describe('mmu interval notifier sequence protocol', () => {
  it('read_begin -> invalidation -> read_retry true -> read_begin again -> read_retry false', () => {
    const { p } = setup();
    const a = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: ANON });
    const { sub, log } = watch(p, a, 4 * PAGE_SIZE);
    const seq = mmuIntervalReadBegin(sub);
    p.mm.write(a, Uint8Array.of(1)); // "device" would now walk the page table
    p.mm.munmap(a + PAGE_SIZE, PAGE_SIZE); // nothing present there: no notification
    expect(log).toHaveLength(0);
    p.mm.munmap(a, PAGE_SIZE); // racing invalidation
    expect(log).toHaveLength(1);
    expect(mmuIntervalCheckRetry(sub, seq)).toBe(true);
    expect(mmuIntervalReadRetry(sub, seq)).toBe(true);
    const seq2 = mmuIntervalReadBegin(sub);
    expect(mmuIntervalReadRetry(sub, seq2)).toBe(false);
  });

  it('seq is odd while an invalidation is open; read_begin then returns a seq read_retry rejects', () => {
    const { p } = setup();
    const a = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: ANON });
    const { sub } = watch(p, a, 4 * PAGE_SIZE);
    const other = watch(p, a + 0x100_0000, PAGE_SIZE);
    expect(p.mm.invalidateSeq % 2).toBe(0);
    const range = p.mm.notifierRange(MMU_NOTIFY_CLEAR, a, a + PAGE_SIZE);
    p.mm.invalidateRangeStart(range);
    expect(p.mm.invalidateSeq % 2).toBe(1);
    const s1 = mmuIntervalReadBegin(sub);
    expect(mmuIntervalReadRetry(sub, s1)).toBe(true);
    // an interval the range does not touch is not invalidating
    const so = mmuIntervalReadBegin(other.sub);
    expect(mmuIntervalReadRetry(other.sub, so)).toBe(false);
    // insert during the invalidation is deferred to its end
    const late = new MmuIntervalNotifier();
    expect(mmuIntervalNotifierInsert(late, p.mm, a, PAGE_SIZE, { invalidate: () => true })).toBe(0);
    expect(late.inTree).toBe(false);
    p.mm.invalidateRangeEnd(range);
    expect(late.inTree).toBe(true);
    expect(p.mm.invalidateSeq % 2).toBe(0);
    const s2 = mmuIntervalReadBegin(sub);
    expect(mmuIntervalReadRetry(sub, s2)).toBe(false);
    mmuIntervalNotifierRemove(late);
    expect(late.inTree).toBe(false);
  });

  it('remove during an open invalidation stops callbacks at once and completes at its end', () => {
    const { p } = setup();
    const a = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: ANON });
    const { sub, log } = watch(p, a, 4 * PAGE_SIZE);
    const range = p.mm.notifierRange(MMU_NOTIFY_CLEAR, a, a + PAGE_SIZE);
    p.mm.invalidateRangeStart(range);
    mmuIntervalNotifierRemove(sub);
    p.mm.invalidateRangeStart(range); // nested
    expect(log).toHaveLength(1);
    p.mm.invalidateRangeEnd(range);
    expect(sub.inTree).toBe(true);
    p.mm.invalidateRangeEnd(range);
    expect(sub.inTree).toBe(false);
    expect(mmuIntervalNotifierInsert(sub, p.mm, a, 0, { invalidate: () => true })).toBe(-Errno.EOVERFLOW);
  });
});

import { describe, expect, it } from 'vitest';
import {
  createMachine,
  Errno,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MmuIntervalNotifier,
  mmuIntervalNotifierInsert,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
} from '@dmakit/dma-core';

function setup(): { mm: ReturnType<ReturnType<typeof createMachine>['createProcess']>['mm']; mem: ReturnType<typeof createMachine>['memory'] } {
  const m = createMachine({ ramBytes: 64 << 20 });
  return { mm: m.createProcess().mm, mem: m.memory };
}

describe('mremap', () => {
  it('moves pages with their contents and notifies the old range', () => {
    const { mm, mem } = setup();
    const a = mm.mmap({ length: 4 * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    mm.write(a, new Uint8Array([1, 2, 3]));
    mm.write(a + 3 * PAGE_SIZE, new Uint8Array([9]));
    const events: number[] = [];
    const sub = new MmuIntervalNotifier();
    mmuIntervalNotifierInsert(sub, mm, a, 4 * PAGE_SIZE, {
      invalidate: (_s, r) => {
        events.push(r.event);
        return true;
      },
    });
    expect(mem.zeroPagePhys).toBeGreaterThan(0);
    const used = mem.allocatedPageCount;
    const b = mm.mremap(a, 4 * PAGE_SIZE, 8 * PAGE_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED, a + 64 * PAGE_SIZE);
    expect(b).toBe(a + 64 * PAGE_SIZE);
    expect(events.length).toBe(1);
    expect(mm.findVma(a)).toBeUndefined();
    expect([...mm.read(b, 3)]).toEqual([1, 2, 3]);
    expect(mm.read(b + 3 * PAGE_SIZE, 1)[0]).toBe(9);
    expect(mm.read(b + 7 * PAGE_SIZE, 1)[0]).toBe(0);
    expect(mem.allocatedPageCount).toBe(used); // no copy, the pages moved
    expect(() => mm.read(a, 1)).toThrow();
  });

  it('shrinks in place, grows in place when free, refuses to grow without MAYMOVE when blocked', () => {
    const { mm } = setup();
    const a = mm.mmap({ length: 4 * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    mm.write(a, new Uint8Array(4 * PAGE_SIZE).fill(5));
    expect(mm.mremap(a, 4 * PAGE_SIZE, 2 * PAGE_SIZE)).toBe(a);
    expect(mm.findVma(a + 2 * PAGE_SIZE)).toBeUndefined();
    expect(mm.mremap(a, 2 * PAGE_SIZE, 3 * PAGE_SIZE)).toBe(a);
    expect(mm.read(a + 2 * PAGE_SIZE, 1)[0]).toBe(0);
    const blocker = mm.mmap({ addr: a + 3 * PAGE_SIZE, length: PAGE_SIZE, prot: PROT_READ, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    expect(blocker).toBe(a + 3 * PAGE_SIZE);
    expect(mm.mremap(a, 3 * PAGE_SIZE, 6 * PAGE_SIZE)).toBe(-Errno.ENOMEM);
    const moved = mm.mremap(a, 3 * PAGE_SIZE, 6 * PAGE_SIZE, MREMAP_MAYMOVE);
    expect(moved).toBeGreaterThan(0);
    expect(mm.read(moved, 1)[0]).toBe(5);
    expect(mm.mremap(a + 1, PAGE_SIZE, PAGE_SIZE)).toBe(-Errno.EINVAL);
    expect(mm.mremap(moved, PAGE_SIZE, PAGE_SIZE, MREMAP_FIXED, 0x100000)).toBe(-Errno.EINVAL);
    expect(mm.mremap(0x20000, PAGE_SIZE, PAGE_SIZE)).toBe(-Errno.EFAULT);
  });
});

// Files, the page cache and file mappings (mm/file.ts, mm/pageCache.ts): tmpfs semantics of
// mm/shmem.c and the fault paths of mm/memory.c (do_read_fault, do_cow_fault, do_shared_fault).
import { describe, expect, it } from 'vitest';
import {
  Errno,
  FMODE_READ,
  FMODE_WRITE,
  MAP_ANONYMOUS,
  MAP_HUGETLB,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MMU_NOTIFY_CLEAR,
  MmuIntervalNotifier,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  PTE_WRITE,
  PageFlag,
  SegvError,
  VM_MIXEDMAP,
  createMachine,
  folioMapping,
  mmuIntervalNotifierInsert,
  mmuIntervalSetSeq,
  openDeviceFile,
  openTmpfile,
  vmInsertPage,
} from '@dmakit/dma-core';
import type { MmuNotifierRange, Process, VfsFile } from '@dmakit/dma-core';

const RW = PROT_READ | PROT_WRITE;

function setup(): { m: ReturnType<typeof createMachine>; p: Process } {
  const m = createMachine({ ramBytes: 128 * 1024 * 1024, swiotlbBytes: 0 });
  return { m, p: m.createProcess() };
}

function tmpfile(m: ReturnType<typeof createMachine>, size = 0, accMode = O_RDWR): VfsFile {
  const f = openTmpfile(m.memory, { size, accMode });
  if (typeof f === 'number') throw new Error(`openTmpfile: ${f}`);
  return f;
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

describe('tmpfs files: read, write, ftruncate', () => {
  it('pwrite fills the page cache and grows i_size; pread stops at EOF and reads holes as zeros', () => {
    const { m } = setup();
    const f = tmpfile(m);
    const data = bytes(3 * PAGE_SIZE + 100, 1);
    expect(f.pwrite(data, PAGE_SIZE)).toBe(data.length);
    expect(f.inode.size).toBe(PAGE_SIZE + data.length);
    expect(f.inode.mapping?.nrpages).toBe(4); // page 0 is a hole: never allocated
    const out = new Uint8Array(8 * PAGE_SIZE);
    expect(f.pread(out, 0)).toBe(PAGE_SIZE + data.length);
    expect(out.subarray(0, PAGE_SIZE).every((b) => b === 0)).toBe(true);
    expect(out.subarray(PAGE_SIZE, PAGE_SIZE + data.length)).toEqual(data);
    expect(f.pread(out, f.inode.size)).toBe(0);
  });

  it('read/write advance the file position', () => {
    const { m } = setup();
    const f = tmpfile(m);
    expect(f.write(new Uint8Array([1, 2, 3]))).toBe(3);
    expect(f.write(new Uint8Array([4, 5]))).toBe(2);
    f.pos = 1;
    const out = new Uint8Array(10);
    expect(f.read(out)).toBe(4);
    expect([...out.subarray(0, 4)]).toEqual([2, 3, 4, 5]);
    expect(f.pos).toBe(5);
  });

  it('file modes: -EBADF for read on O_WRONLY and write on a read-only file, as vfs_read/vfs_write check', () => {
    const { m } = setup();
    const w = tmpfile(m, PAGE_SIZE, O_WRONLY);
    expect(w.fMode).toBe(FMODE_WRITE);
    expect(w.pread(new Uint8Array(4), 0)).toBe(-Errno.EBADF);
    expect(w.pwrite(new Uint8Array(4), 0)).toBe(4);
    // O_TMPFILE needs write access (build_open_flags).
    expect(openTmpfile(m.memory, { accMode: O_RDONLY })).toBe(-Errno.EINVAL);
    const dev = openDeviceFile({ name: 'ro-dev', accMode: O_RDONLY, fOp: {} });
    expect(dev.fMode).toBe(FMODE_READ);
    expect(dev.pwrite(new Uint8Array(1), 0)).toBe(-Errno.EBADF);
    expect(w.close()).toBe(0);
    expect(w.close()).toBe(-Errno.EBADF);
    expect(w.pwrite(new Uint8Array(1), 0)).toBe(-Errno.EBADF);
  });

  it('bad input: negative offsets and lengths are -EINVAL', () => {
    const { m } = setup();
    const f = tmpfile(m);
    expect(f.pwrite(new Uint8Array(1), -1)).toBe(-Errno.EINVAL);
    expect(f.pread(new Uint8Array(1), 0.5)).toBe(-Errno.EINVAL);
    expect(f.ftruncate(-1)).toBe(-Errno.EINVAL);
    expect(openTmpfile(m.memory, { size: -4 })).toBe(-Errno.EINVAL);
  });

  it('ftruncate shrinks: pages past the end leave the cache, the tail of the last page reads zero', () => {
    const { m } = setup();
    const f = tmpfile(m);
    const free0 = m.memory.freePageCount;
    f.pwrite(bytes(4 * PAGE_SIZE, 3), 0);
    expect(m.memory.freePageCount).toBe(free0 - 4);
    expect(f.ftruncate(PAGE_SIZE + 10)).toBe(0);
    expect(f.inode.mapping?.nrpages).toBe(2);
    expect(m.memory.freePageCount).toBe(free0 - 2);
    expect(f.ftruncate(2 * PAGE_SIZE)).toBe(0); // grow again: the cut part reads as zeros
    const out = new Uint8Array(2 * PAGE_SIZE);
    expect(f.pread(out, 0)).toBe(2 * PAGE_SIZE);
    expect(out.subarray(0, PAGE_SIZE + 10)).toEqual(bytes(4 * PAGE_SIZE, 3).subarray(0, PAGE_SIZE + 10));
    expect(out.subarray(PAGE_SIZE + 10).every((b) => b === 0)).toBe(true);
  });

  it('the last reference frees the page cache (an O_TMPFILE inode is evicted)', () => {
    const { m, p } = setup();
    const free0 = m.memory.freePageCount;
    const f = tmpfile(m, 4 * PAGE_SIZE);
    const a = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: MAP_SHARED, file: f });
    p.mm.write(a, bytes(4 * PAGE_SIZE, 9));
    expect(f.count).toBe(2); // the fd and the VMA
    f.close();
    // The mapping keeps the file: the bytes are still there.
    expect(p.mm.read(a, 4 * PAGE_SIZE)).toEqual(bytes(4 * PAGE_SIZE, 9));
    expect(p.mm.munmap(a, 4 * PAGE_SIZE)).toBe(0);
    expect(f.count).toBe(0);
    expect(m.memory.freePageCount).toBe(free0);
  });
});

describe('file mappings', () => {
  it('MAP_SHARED: CPU writes land in the page cache, visible to read() and to a second mapping', () => {
    const { m, p } = setup();
    const f = tmpfile(m, 8 * PAGE_SIZE);
    const a = p.mm.mmap({ length: 8 * PAGE_SIZE, prot: RW, flags: MAP_SHARED, file: f });
    const b = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: PROT_READ, flags: MAP_SHARED, file: f, offset: 4 * PAGE_SIZE });
    expect(a).toBeGreaterThan(0);
    expect(b).toBeGreaterThan(0);
    const data = bytes(8 * PAGE_SIZE, 5);
    p.mm.write(a, data);
    const out = new Uint8Array(8 * PAGE_SIZE);
    expect(f.pread(out, 0)).toBe(8 * PAGE_SIZE);
    expect(out).toEqual(data);
    expect(p.mm.read(b, 4 * PAGE_SIZE)).toEqual(data.subarray(4 * PAGE_SIZE));
    // Same physical page behind both mappings, and it belongs to the file's page cache.
    expect(p.mm.walkPte(b)).toBe(p.mm.walkPte(a + 4 * PAGE_SIZE));
    expect(folioMapping(m.memory, p.mm.walkPte(a) * PAGE_SIZE)).toBe(f.inode.mapping);
    // write() is seen through the mapping.
    f.pwrite(new Uint8Array([0xee]), 5 * PAGE_SIZE);
    expect(p.mm.read(b + PAGE_SIZE, 1)[0]).toBe(0xee);
  });

  it('MAP_PRIVATE: reads share the page cache; a write copies the page (do_cow_fault / wp_page_copy)', () => {
    const { m, p } = setup();
    const f = tmpfile(m);
    const data = bytes(4 * PAGE_SIZE, 2);
    f.pwrite(data, 0);
    const a = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: MAP_PRIVATE, file: f });
    expect(p.mm.read(a, 4 * PAGE_SIZE)).toEqual(data);
    const cached = p.mm.walkPte(a) * PAGE_SIZE;
    expect(folioMapping(m.memory, cached)).toBe(f.inode.mapping);
    expect(p.mm.pteFlags(a) & PTE_WRITE).toBe(0);
    p.mm.write(a, new Uint8Array([0xaa])); // page 0: present read-only -> wp_page_copy
    p.mm.write(a + 3 * PAGE_SIZE + 5, new Uint8Array([0xbb])); // page 3: present read-only too
    const copy = p.mm.walkPte(a) * PAGE_SIZE;
    expect(copy).not.toBe(cached);
    expect(m.memory.pageFlags(copy) & PageFlag.ANON).toBeTruthy();
    expect(folioMapping(m.memory, copy)).toBeUndefined();
    // The file did not change; the private copy has the rest of the page.
    const out = new Uint8Array(4 * PAGE_SIZE);
    f.pread(out, 0);
    expect(out).toEqual(data);
    const mine = p.mm.read(a, 4 * PAGE_SIZE);
    expect(mine[0]).toBe(0xaa);
    expect(mine[3 * PAGE_SIZE + 5]).toBe(0xbb);
    expect(mine.subarray(1, PAGE_SIZE)).toEqual(data.subarray(1, PAGE_SIZE));
    // A later write() to the file shows in the pages still shared, not in the private copies.
    f.pwrite(new Uint8Array([1, 1]), PAGE_SIZE);
    f.pwrite(new Uint8Array([2]), 0);
    expect(p.mm.read(a + PAGE_SIZE, 2)).toEqual(new Uint8Array([1, 1]));
    expect(p.mm.read(a, 1)[0]).toBe(0xaa);
  });

  it('a write fault on an untouched private page copies straight from the cache (do_cow_fault)', () => {
    const { m, p } = setup();
    const f = tmpfile(m);
    f.pwrite(bytes(PAGE_SIZE, 4), 0);
    const a = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_PRIVATE, file: f });
    p.mm.write(a + 1, new Uint8Array([9]));
    expect(folioMapping(m.memory, p.mm.walkPte(a) * PAGE_SIZE)).toBeUndefined();
    const want = bytes(PAGE_SIZE, 4);
    want[1] = 9;
    expect(p.mm.read(a, PAGE_SIZE)).toEqual(want);
  });

  it('access past EOF is SIGBUS-like (the fault fails); ftruncate shrink unmaps with MMU_NOTIFY_CLEAR', () => {
    const { m, p } = setup();
    const f = tmpfile(m, 2 * PAGE_SIZE);
    const a = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: MAP_SHARED, file: f });
    expect(() => p.mm.read(a + 2 * PAGE_SIZE, 1)).toThrow(SegvError);
    expect(p.mm.handleMmFault(a + 3 * PAGE_SIZE, false)).toBe(-Errno.EFAULT);
    p.mm.write(a, bytes(2 * PAGE_SIZE, 1));
    const log: MmuNotifierRange[] = [];
    const sub = new MmuIntervalNotifier();
    mmuIntervalNotifierInsert(sub, p.mm, a, 4 * PAGE_SIZE, {
      invalidate(s, range, seq) {
        log.push(range);
        mmuIntervalSetSeq(s, seq);
        return true;
      },
    });
    expect(f.ftruncate(PAGE_SIZE)).toBe(0);
    expect(log.map((r) => [r.event, r.start - a, r.end - a])).toEqual([[MMU_NOTIFY_CLEAR, PAGE_SIZE, 4 * PAGE_SIZE]]);
    expect(p.mm.walkPte(a + PAGE_SIZE)).toBe(-1);
    expect(() => p.mm.read(a + PAGE_SIZE, 1)).toThrow(SegvError);
    expect(p.mm.read(a, 4)).toEqual(bytes(4, 1));
  });

  it('mmap checks the file: -EACCES for MAP_SHARED|PROT_WRITE on a file not open for writing, -EINVAL offsets, -EBADF', () => {
    const { m, p } = setup();
    const ro = openDeviceFile({ name: 'ro', accMode: O_RDONLY, fOp: { mmap: () => 0 } });
    expect(p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_SHARED, file: ro })).toBe(-Errno.EACCES);
    expect(p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_PRIVATE, file: ro })).toBeGreaterThan(0);
    const wo = tmpfile(m, PAGE_SIZE, O_WRONLY);
    expect(p.mm.mmap({ length: PAGE_SIZE, prot: PROT_READ, flags: MAP_SHARED, file: wo })).toBe(-Errno.EACCES);
    const f = tmpfile(m, PAGE_SIZE);
    expect(p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_SHARED, file: f, offset: 100 })).toBe(-Errno.EINVAL);
    expect(p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_SHARED | MAP_HUGETLB, file: f })).toBe(-Errno.EINVAL);
    expect(p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_SHARED })).toBe(-Errno.EBADF);
    const nommap = openDeviceFile({ name: 'nommap', fOp: {} });
    expect(p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_SHARED, file: nommap })).toBe(-Errno.ENODEV);
    f.close();
    expect(p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_SHARED, file: f })).toBe(-Errno.EBADF);
    // MAP_ANONYMOUS ignores the file.
    const anon = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_PRIVATE | MAP_ANONYMOUS, file: ro });
    expect(p.mm.findVma(anon)?.file).toBeUndefined();
  });

  it('fork shares MAP_SHARED file pages and copies MAP_PRIVATE ones on write; split, mremap and exit keep the file count', () => {
    const { m, p } = setup();
    const f = tmpfile(m, 4 * PAGE_SIZE);
    const s = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: MAP_SHARED | MAP_POPULATE, file: f });
    const q = p.mm.mmap({ length: 4 * PAGE_SIZE, prot: RW, flags: MAP_PRIVATE, file: f });
    p.mm.read(q, 4 * PAGE_SIZE);
    expect(f.count).toBe(3);
    const c = p.fork();
    if (typeof c === 'number') throw new Error('fork');
    expect(f.count).toBe(5);
    c.mm.write(s, new Uint8Array([7]));
    expect(p.mm.read(s, 1)[0]).toBe(7);
    c.mm.write(q + PAGE_SIZE, new Uint8Array([8]));
    expect(p.mm.read(q + PAGE_SIZE, 1)[0]).toBe(0);
    expect(p.mm.read(q, 1)[0]).toBe(7); // the parent's private mapping still reads the cache
    expect(p.mm.munmap(s + PAGE_SIZE, PAGE_SIZE)).toBe(0); // a hole: two VMAs where there was one
    expect(f.count).toBe(6);
    expect(p.mm.findVma(s + 2 * PAGE_SIZE)?.pgoff).toBe(2);
    c.exit();
    expect(f.count).toBe(4);
    p.exit();
    expect(f.count).toBe(1);
  });

  it('MAP_POPULATE of a private writable file mapping copies every page', () => {
    const { m, p } = setup();
    const f = tmpfile(m);
    f.pwrite(bytes(2 * PAGE_SIZE, 8), 0);
    const a = p.mm.mmap({ length: 2 * PAGE_SIZE, prot: RW, flags: MAP_PRIVATE | MAP_POPULATE, file: f });
    expect(p.mm.pteFlags(a) & PTE_WRITE).toBe(PTE_WRITE);
    expect(folioMapping(m.memory, p.mm.walkPte(a) * PAGE_SIZE)).toBeUndefined();
  });
});

describe('vm_insert_page (a driver mmap)', () => {
  it('inserted pages are mapped read-only in a private mapping (COW on write), writable in a shared one', () => {
    const { m, p } = setup();
    const inserted: number[] = [];
    const dev = openDeviceFile({
      name: 'drv',
      fOp: {
        mmap(_file, vma, mm) {
          for (let a = vma.start; a < vma.end; a += PAGE_SIZE) {
            const page = mm.memory.allocPages(0);
            m.memory.fill(page, PAGE_SIZE, inserted.length + 1);
            const r = vmInsertPage(mm, vma, a, page);
            mm.memory.pagePut(page);
            if (r !== 0) return r;
            inserted.push(page);
          }
          return 0;
        },
      },
    });
    const free0 = m.memory.freePageCount;
    const a = p.mm.mmap({ length: 2 * PAGE_SIZE, prot: RW, flags: MAP_PRIVATE, file: dev });
    expect(a).toBeGreaterThan(0);
    expect(p.mm.findVma(a)?.vmFlags).toBe(VM_MIXEDMAP);
    expect(p.mm.pteFlags(a) & PTE_WRITE).toBe(0);
    expect(p.mm.read(a + PAGE_SIZE, 1)[0]).toBe(2);
    p.mm.write(a, new Uint8Array([0x55]));
    expect(p.mm.walkPte(a) * PAGE_SIZE).not.toBe(inserted[0]); // copied, not reused: not anonymous
    expect(m.memory.getPageRef(inserted[0] ?? 0)).toBe(0); // the copy dropped the inserted page
    const sh = p.mm.mmap({ length: PAGE_SIZE, prot: RW, flags: MAP_SHARED, file: dev });
    expect(p.mm.pteFlags(sh) & PTE_WRITE).toBe(PTE_WRITE);
    // Nothing to fault from after a zap: SIGBUS-like.
    expect(p.mm.munmap(a, 2 * PAGE_SIZE)).toBe(0);
    expect(p.mm.munmap(sh, PAGE_SIZE)).toBe(0);
    expect(m.memory.freePageCount).toBe(free0);
  });

  it('refuses addresses outside the VMA (-EFAULT), anonymous pages (-EINVAL) and occupied PTEs (-EBUSY)', () => {
    const { m, p } = setup();
    const results: number[] = [];
    const dev = openDeviceFile({
      name: 'drv2',
      fOp: {
        mmap(_file, vma, mm) {
          const page = mm.memory.allocPages(0);
          results.push(vmInsertPage(mm, vma, vma.end, page));
          results.push(vmInsertPage(mm, vma, vma.start, page));
          results.push(vmInsertPage(mm, vma, vma.start, page));
          m.memory.setPageFlags(page, PageFlag.ANON);
          results.push(vmInsertPage(mm, vma, vma.start + PAGE_SIZE, page));
          mm.memory.pagePut(page);
          return -Errno.ENOMEM; // the mapping is removed again
        },
      },
    });
    expect(p.mm.mmap({ length: 2 * PAGE_SIZE, prot: RW, flags: MAP_SHARED, file: dev })).toBe(-Errno.ENOMEM);
    expect(results).toEqual([-Errno.EFAULT, 0, -Errno.EBUSY, -Errno.EINVAL]);
    expect(p.mm.vmas.length).toBe(0);
    expect(dev.count).toBe(1);
  });
});

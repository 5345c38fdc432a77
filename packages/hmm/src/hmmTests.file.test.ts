// Ports of tools/testing/selftests/mm/hmm-tests.c cases that need file-backed memory, the
// dmirror device's own mmap (lib/test_hmm.c dmirror_fops_mmap) or GUP (mm/gup_test.c), against
// the dmirror device. Each `it` named after a kernel TEST_F is that test; the others check the
// kernel rules those tests rest on.
import { describe, expect, it } from 'vitest';
import {
  Errno,
  FOLL_LONGTERM,
  FOLL_WRITE,
  GUP_PIN_COUNTING_BIAS,
  MAP_PRIVATE,
  MAP_SHARED,
  MREMAP_MAYMOVE,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  PageFlag,
  SegvError,
  VM_MIXEDMAP,
  folioMapping,
  pinUserPages,
  unpinUserPages,
} from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';
import {
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  migrateStats,
} from '@dmakit/hmm';
import { sameBytes } from '@dmakit/testkit';
import { HMM_BUFFER_PAGES, hmmCreateFile, intPattern, leakFree, migratedAnonBuffer, mmapPages, setup } from './testing/fixture.js';
import { GUP_BASIC_TEST, GUP_FAST_BENCHMARK, PIN_FAST_BENCHMARK, PIN_LONGTERM_BENCHMARK, gupTestIoctl } from './testing/gupTest.js';

describe('hmm-tests (dmirror): file-backed memory, the device mmap, GUP', () => {
  it('file_read', () => {
    // Read mmap'ed file memory: the file is written with pwrite, mapped MAP_SHARED read-only, and
    // the device reads it through the page cache.
    const f = setup();
    const npages = HMM_BUFFER_PAGES;
    const size = npages * PAGE_SIZE;
    const file = hmmCreateFile(f.machine, size);
    const data = intPattern(npages);
    expect(file.pwrite(data, 0)).toBe(size);
    const ptr = f.proc.mm.mmap({ length: size, prot: PROT_READ, flags: MAP_SHARED, file });
    expect(ptr).toBeGreaterThan(0);
    const r = f.mirror.read(ptr, npages);
    expect(r.ret).toBe(0);
    expect(r.cpages).toBe(npages);
    expect(r.faults).toBe(1);
    expect(sameBytes(r.data, data)).toBe(true);
    // The device mapped the page-cache pages themselves, read-only.
    expect(folioMapping(f.machine.memory, f.proc.mm.walkPte(ptr) * PAGE_SIZE)).toBe(file.inode.mapping);
    expect(f.mirror.snapshot(ptr, 1).data[0]).toBe(HMM_DMIRROR_PROT_READ);
    expect(f.mirror.checkInvariants()).toEqual([]);
    file.close();
    leakFree(f);
  });

  it('file_write', () => {
    // Write mmap'ed file memory: the device writes a MAP_SHARED mapping; the CPU sees it through
    // the mapping and pread() sees it in the file.
    const f = setup();
    const npages = HMM_BUFFER_PAGES;
    const size = npages * PAGE_SIZE;
    const file = hmmCreateFile(f.machine, size);
    const ptr = f.proc.mm.mmap({ length: size, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED, file });
    expect(ptr).toBeGreaterThan(0);
    const data = intPattern(npages);
    const w = f.mirror.write(ptr, data);
    expect(w.ret).toBe(0);
    expect(w.cpages).toBe(npages);
    expect(w.faults).toBe(1);
    expect(sameBytes(f.proc.mm.read(ptr, size), data)).toBe(true);
    const back = new Uint8Array(size);
    expect(file.pread(back, 0)).toBe(size);
    expect(sameBytes(back, data)).toBe(true);
    expect(f.mirror.checkInvariants()).toEqual([]);
    file.close();
    leakFree(f);
  });

  it('migrate_file_private', () => {
    // Migrate private file memory to device private memory: the CPU writes every page first, so
    // each is a private anonymous copy (do_cow_fault) and migrates like anonymous memory.
    const f = setup();
    const npages = HMM_BUFFER_PAGES;
    const size = npages * PAGE_SIZE;
    const file = hmmCreateFile(f.machine, size);
    const ptr = f.proc.mm.mmap({ length: size, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE, file });
    expect(ptr).toBeGreaterThan(0);
    const data = intPattern(npages);
    f.proc.mm.write(ptr, data);
    const m = f.mirror.migrateToDevice(ptr, npages);
    expect(m.ret).toBe(0);
    expect(m.cpages).toBe(npages);
    expect(sameBytes(m.data, data)).toBe(true);
    expect(f.mirror.snapshot(ptr, 1).data[0]).toBe(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE);
    // The file itself never saw the private writes.
    const back = new Uint8Array(PAGE_SIZE);
    expect(file.pread(back, 0)).toBe(PAGE_SIZE);
    expect(back.every((b) => b === 0)).toBe(true);
    // CPU access brings the private copies back from the device.
    expect(sameBytes(f.proc.mm.read(ptr, size), data)).toBe(true);
    file.close();
    leakFree(f);
  });

  it('page-cache pages are collected but not migrated (__migrate_device_pages: only anonymous memory), holes of a file mapping are skipped', () => {
    // mm/migrate_device.c: migrate_vma_collect_pmd collects a present page-cache page (it has a
    // mapping); __migrate_device_pages clears MIGRATE_PFN_MIGRATE for it when the destination is
    // device memory; migrate_vma_finalize puts the original PTE back and frees the device page.
    // migrate_vma_collect_hole skips holes of a VMA that is not anonymous.
    const f = setup();
    const npages = 8;
    const size = npages * PAGE_SIZE;
    const file = hmmCreateFile(f.machine, size);
    const data = intPattern(npages, 1, 3);
    file.pwrite(data, 0);
    const shared = f.proc.mm.mmap({ length: size, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED, file });
    expect(f.proc.mm.read(shared, size)).toEqual(data); // the CPU maps the cached pages
    const cached = f.proc.mm.walkPte(shared) * PAGE_SIZE;
    const refused = migrateStats.refusedFile;
    const copies = f.mdev.copies.toDevice;
    const m = f.mirror.migrateToDevice(shared, npages);
    // dmirror_migrate_to_device reads back what the device holds: nothing (-ENOENT).
    expect(m.ret).toBe(-Errno.ENOENT);
    expect(migrateStats.refusedFile - refused).toBe(npages);
    expect(f.mdev.copies.toDevice - copies).toBe(npages); // the driver allocated and copied, then lost
    expect(f.mdev.devicePagesInUse).toBe(0);
    expect(f.proc.mm.walkPte(shared) * PAGE_SIZE).toBe(cached);
    // Once the device mirrors the pages, a migration that is refused again leaves its entries
    // alone (its own MMU_NOTIFY_MIGRATE is skipped by dmirror_interval_invalidate), so the read
    // back succeeds with the cached pages, still in system memory.
    expect(f.mirror.read(shared, npages).ret).toBe(0);
    const again = f.mirror.migrateToDevice(shared, npages);
    expect(again.ret).toBe(0);
    expect(sameBytes(again.data, data)).toBe(true);
    expect(f.mirror.snapshot(shared, 1).data[0]).toBe(HMM_DMIRROR_PROT_WRITE);
    expect(f.mdev.devicePagesInUse).toBe(0);
    expect(f.mirror.checkInvariants()).toEqual([]);
    // Still the file's pages: a CPU write through the mapping reaches read().
    f.proc.mm.write(shared, new Uint8Array([0x77]));
    const one = new Uint8Array(1);
    file.pread(one, 0);
    expect(one[0]).toBe(0x77);
    // A private mapping nobody touched: every page a hole in a non-anonymous VMA.
    const priv = f.proc.mm.mmap({ length: size, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE, file });
    const p = f.mirror.migrateToDevice(priv, npages);
    expect(p.ret).toBe(-Errno.ENOENT);
    expect(p.cpages).toBe(0);
    expect(f.proc.mm.walkPte(priv)).toBe(-1);
    file.close();
    leakFree(f);
  });

  it('mixedmap', () => {
    // Snapshot a MAP_PRIVATE mapping of the device file itself: dmirror_fops_mmap inserted a page
    // with vm_insert_page (VM_MIXEDMAP), mapped read-only in a private mapping; hmm_range_fault
    // reports it like any normal page (mm/hmm.c: VM_MIXEDMAP works with hmm_range_fault).
    const f = setup();
    const npages = 1;
    const ptr = f.proc.mm.mmap({ length: npages * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE, file: f.mirror.file });
    expect(ptr).toBeGreaterThan(0);
    expect(f.proc.mm.findVma(ptr)?.vmFlags).toBe(VM_MIXEDMAP);
    const s = f.mirror.snapshot(ptr, npages);
    expect(s.ret).toBe(0);
    expect(s.cpages).toBe(npages);
    expect(s.data[0]).toBe(HMM_DMIRROR_PROT_READ);
    leakFree(f);
  });

  it('the device mmap: reads zeros, copies on a CPU write, refuses migration (no page->mapping) and is SIGBUS where nothing is inserted', () => {
    const f = setup();
    const npages = 4;
    const mm = f.proc.mm;
    const ptr = mm.mmap({ length: npages * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE, file: f.mirror.file });
    // migrate_vma_collect_pmd: `!page->mapping` -> not collected; VM_MIXEDMAP is not VM_SPECIAL.
    const copies = f.mdev.copies.toDevice;
    expect(f.mirror.migrateToDevice(ptr, npages).ret).toBe(-Errno.ENOENT);
    expect(f.mdev.copies.toDevice).toBe(copies);
    const r = f.mirror.read(ptr, npages);
    expect(r.ret).toBe(0);
    expect(r.data.every((b) => b === 0)).toBe(true);
    // A device write needs a writable PTE: the private mapping copies (wp_page_copy).
    const inserted = mm.walkPte(ptr) * PAGE_SIZE;
    const w = f.mirror.write(ptr, intPattern(1, 1, 42));
    expect(w.ret).toBe(0);
    const copy = mm.walkPte(ptr) * PAGE_SIZE;
    expect(copy).not.toBe(inserted);
    expect(f.machine.memory.pageFlags(copy) & PageFlag.ANON).toBeTruthy();
    expect(sameBytes(mm.read(ptr, PAGE_SIZE), intPattern(1, 1, 42))).toBe(true);
    // Grown by mremap, the VMA has a page nobody inserted: no vm_ops->fault, so a fault there is
    // VM_FAULT_SIGBUS and the mirror's fault fails.
    const dst = mm.mremap(ptr, npages * PAGE_SIZE, (npages + 1) * PAGE_SIZE, MREMAP_MAYMOVE);
    expect(dst).toBeGreaterThan(0);
    expect(mm.handleMmFault(dst + npages * PAGE_SIZE, false)).toBe(-Errno.EFAULT);
    expect(() => mm.read(dst + npages * PAGE_SIZE, 1)).toThrow(SegvError);
    expect(f.mirror.read(dst, npages + 1).ret).toBe(-Errno.EFAULT);
    expect(sameBytes(mm.read(dst, PAGE_SIZE), intPattern(1, 1, 42))).toBe(true);
    expect(f.mirror.checkInvariants()).toEqual([]);
    leakFree(f);
  });

  it('hmm_gup_test', () => {
    // get_user_pages / pin_user_pages (FOLL_LONGTERM too) through gup_test on device-private pages:
    // GUP faults each page back to system memory first (do_swap_page -> migrate_to_ram), so the
    // snapshot afterwards shows plain writable system pages and the data is intact.
    const f = setup();
    const npages = 4;
    const size = npages * PAGE_SIZE;
    const { ptr, data } = migratedAnonBuffer(f, npages);
    const mm = f.proc.mm;
    const exec = (addr: number, cmd: number, flags: number): number => gupTestIoctl(mm, cmd, { addr, size: PAGE_SIZE, nrPagesPerCall: 1, gupFlags: FOLL_WRITE | flags }).err;
    expect(exec(ptr, GUP_BASIC_TEST, 0)).toBe(0);
    expect(exec(ptr + PAGE_SIZE, GUP_FAST_BENCHMARK, 0)).toBe(0);
    expect(exec(ptr + 2 * PAGE_SIZE, PIN_FAST_BENCHMARK, FOLL_LONGTERM)).toBe(0);
    expect(exec(ptr + 3 * PAGE_SIZE, PIN_LONGTERM_BENCHMARK, 0)).toBe(0);
    const s = f.mirror.snapshot(ptr, npages);
    expect(s.ret).toBe(0);
    expect(s.cpages).toBe(npages);
    expect([...s.data]).toEqual([HMM_DMIRROR_PROT_WRITE, HMM_DMIRROR_PROT_WRITE, HMM_DMIRROR_PROT_WRITE, HMM_DMIRROR_PROT_WRITE]);
    expect(f.mirror.stats.devmemFaults).toBe(npages);
    expect(sameBytes(mm.read(ptr, size), data)).toBe(true);
    // gup_test put every page back: no pin is left.
    for (let i = 0; i < npages; i++) expect(f.machine.memory.pageMaybeDmaPinned(mm.walkPte(ptr + i * PAGE_SIZE) * PAGE_SIZE)).toBe(false);
    leakFree(f);
  });

  it('a longterm pin brings a device-private page back first, and a pinned page is not migrated until unpinned', () => {
    // mm/gup.c: the pin faults the device-private entry (migrate_to_ram) before pinning;
    // mm/migrate_device.c: migrate_vma_check_page refuses a page with references its mappings do
    // not explain (the pin's GUP_PIN_COUNTING_BIAS).
    const f = setup();
    const npages = 4;
    const ptr = mmapPages(f.proc, npages);
    const data = intPattern(npages, 1, 8);
    f.proc.mm.write(ptr, data);
    expect(f.mirror.migrateToDevice(ptr, npages).cpages).toBe(npages);
    const pages = new Float64Array(2);
    expect(pinUserPages(f.proc.mm, ptr, 2, FOLL_WRITE | FOLL_LONGTERM, pages)).toBe(2);
    expect(f.mdev.devicePagesInUse).toBe(npages - 2);
    expect(f.machine.memory.getPageRef(pages[0] ?? 0)).toBe(1 + GUP_PIN_COUNTING_BIAS);
    // A device DMA through the pin lands in the process's page.
    f.machine.memory.write(pages[1] ?? 0, new Uint8Array([0xcd]));
    expect(f.proc.mm.read(ptr + PAGE_SIZE, 1)[0]).toBe(0xcd);
    // Pinned pages stay where they are: the migration leaves them (and reports it).
    const m = f.mirror.migrateToDevice(ptr, npages);
    expect(m.ret).toBe(-Errno.ENOENT);
    expect(f.proc.mm.walkPte(ptr) * PAGE_SIZE).toBe(pages[0]);
    expect(f.mirror.snapshot(ptr + 2 * PAGE_SIZE, 2).data.every((p) => p === (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE))).toBe(true);
    unpinUserPages(f.machine.memory, pages, 2);
    const again = f.mirror.migrateToDevice(ptr, npages);
    expect(again.ret).toBe(0);
    expect(again.cpages).toBe(npages);
    expect(f.mdev.devicePagesInUse).toBe(npages);
    expect(f.mirror.checkInvariants()).toEqual([]);
    leakFree(f);
  });

  it('hmm_cow_in_device', () => {
    // Copy-on-write of device-private pages: after fork the parent writes; each write fault
    // migrates the page back to system memory first, then duplicates it. The snapshot shows the
    // parent's own writable system pages.
    const f = setup();
    const npages = 4;
    const size = npages * PAGE_SIZE;
    const { ptr, data } = migratedAnonBuffer(f, npages);
    const child = f.proc.fork() as Process;
    expect(typeof child).toBe('object');
    // The parent writes to the COW pages (the child waits to be killed).
    f.proc.mm.write(ptr, data);
    child.exit(); // kill(pid, SIGKILL); waitpid()
    const s = f.mirror.snapshot(ptr, npages);
    expect(s.ret).toBe(0);
    expect(s.cpages).toBe(npages);
    for (let i = 0; i < npages; i++) expect(s.data[i]).toBe(HMM_DMIRROR_PROT_WRITE);
    expect(sameBytes(f.proc.mm.read(ptr, size), data)).toBe(true);
    leakFree(f);
  });
});

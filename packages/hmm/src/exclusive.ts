// kernel: mm/rmap.c (make_device_exclusive), mm/memory.c (remove_device_exclusive_entry)
// A device that needs atomic access to a system page (no CPU access while it operates) replaces
// the CPU mapping with a device-exclusive entry; the first CPU access restores the mapping and
// fires MMU_NOTIFY_EXCLUSIVE so the device drops its mapping.
//
// Model: a device-exclusive entry is a non-present PTE_DEVICE_PRIVATE entry whose pfn is a RAM
// page (no device-private pgmap claims it); the CPU fault path's migrate_to_ram hook restores it.
import { Errno, MMU_NOTIFY_EXCLUSIVE, PAGE_SIZE, PTE_DEVICE_PRIVATE, PTE_DIRTY, PTE_PRESENT, PTE_WRITE } from '@dmakit/dma-core';
import type { MmStruct } from '@dmakit/dma-core';
import { installMigrateToRam } from './devmem.js';

/** Counters (tests, demos). */
export const exclusiveStats = { made: 0 };

/**
 * `make_device_exclusive(mm, addr, owner, &folio)`: fault the page at `addr` in writable (GUP
 * with FOLL_WRITE), notify mirrors (MMU_NOTIFY_EXCLUSIVE with `owner`, so the caller can skip its
 * own callback), and replace the PTE with a device-exclusive entry. Returns the physical address
 * of the page (the entry keeps its reference), or -EINVAL (unaligned, not private anonymous
 * memory, hugetlb), -EFAULT / -ENOMEM from the fault.
 */
export function makeDeviceExclusive(mm: MmStruct, addr: number, owner: unknown): number {
  if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) return -Errno.EINVAL;
  const vma = mm.findVma(addr);
  if (vma === undefined) return -Errno.EFAULT;
  // kernel: only anonymous, non-hugetlb folios can be made exclusive.
  if (vma.shared || vma.hugetlb) return -Errno.EINVAL;
  const r = mm.handleMmFault(addr, true);
  if (r < 0) return r;
  // kernel (6.14+): the page is looked up with FOLL_SPLIT_PMD, so a THP is PTE-mapped first.
  mm.splitHugePmd(addr);
  const f = mm.pteFlags(addr);
  if ((f & PTE_PRESENT) === 0 || (f & PTE_WRITE) === 0) return -Errno.EFAULT;
  const pfn = mm.walkPte(addr);
  const range = mm.notifierRange(MMU_NOTIFY_EXCLUSIVE, addr, addr + PAGE_SIZE, owner);
  mm.invalidateRangeStart(range);
  installMigrateToRam(mm);
  mm.setPte(addr, pfn, PTE_DEVICE_PRIVATE | PTE_WRITE | (f & PTE_DIRTY));
  mm.invalidateRangeEnd(range);
  exclusiveStats.made++;
  return pfn * PAGE_SIZE;
}

// kernel: mm/memremap.c (memremap_pages, MEMORY_DEVICE_PRIVATE), include/linux/memremap.h
// Device-private memory: a range of physical address space the CPU cannot map. Pages are handed
// out by their owner (the driver), mapped into processes as non-present device-private entries,
// and migrated back to RAM by the pgmap's migrate_to_ram when the CPU touches one.
import { Errno, MMU_NOTIFY_EXCLUSIVE, PAGE_SIZE, PTE_DEVICE_PRIVATE, PTE_PRESENT, PTE_YOUNG, PageFlag } from '@dmakit/dma-core';
import type { MemRegion, MmStruct, SystemMemory, VmArea } from '@dmakit/dma-core';

/** `struct vm_fault` as migrate_to_ram sees it. */
export interface VmFault {
  readonly mm: MmStruct;
  readonly vma: VmArea;
  /** Faulting user address (page aligned). */
  readonly address: number;
  /** Physical address of the device-private page behind the entry (`vmf->page`). */
  readonly page: number;
}

/** `struct dev_pagemap_ops`. */
export interface DevPagemapOps {
  /**
   * CPU access to a device-private page: migrate it back to system RAM. 0 once the entry at
   * `vmf.address` is a present RAM mapping, or a negative errno (the kernel's VM_FAULT_SIGBUS).
   */
  migrateToRam(vmf: VmFault): number;
  /** The last reference to a device page went away (`page_free`). */
  pageFree?(pagemap: DevPagemap, phys: number): void;
}

/**
 * Options of memremapPages(): size of the device memory, pgmap owner and page ops. kernel: the struct
 * dev_pagemap fields memremap_pages() takes.
 */
export interface MemremapPagesOptions {
  /** Bytes of device memory (rounded up to pages). */
  readonly size: number;
  /** `pgmap->owner`: hmm_range_fault reports (not faults) pages whose owner equals dev_private_owner. */
  readonly owner: unknown;
  readonly ops: DevPagemapOps;
  readonly name: string;
}

/**
 * `struct dev_pagemap` of type MEMORY_DEVICE_PRIVATE plus the owner's page allocator (the
 * driver's free list, as test_hmm's `dmirror_devmem_alloc_page`). Pages are refcounted in the
 * machine's page metadata: allocation takes the first reference (zone_device_page_init); when the
 * count drops to zero the page is reclaimed on the next allocation or `reclaim()` (the model's
 * stand-in for the `page_free` callback, since put_page cannot call out).
 */
export class DevPagemap {
  readonly type = 'device-private' as const;
  readonly owner: unknown;
  readonly ops: DevPagemapOps;
  readonly region: MemRegion;
  readonly memory: SystemMemory;
  readonly nrPages: number;
  readonly #free: Int32Array;
  #nfree: number;
  readonly #inUse: Uint8Array;
  #allocated = 0;
  /** Pages handed out over the lifetime (stats). */
  allocs = 0;
  frees = 0;

  constructor(memory: SystemMemory, region: MemRegion, owner: unknown, ops: DevPagemapOps) {
    this.memory = memory;
    this.region = region;
    this.owner = owner;
    this.ops = ops;
    this.nrPages = Math.floor(region.size / PAGE_SIZE);
    this.#free = new Int32Array(this.nrPages);
    // Hand out low pages first: push in reverse.
    for (let i = 0; i < this.nrPages; i++) this.#free[i] = this.nrPages - 1 - i;
    this.#nfree = this.nrPages;
    this.#inUse = new Uint8Array(this.nrPages);
  }

  /** Device pages currently allocated (after reclaiming the ones whose last reference went away). */
  get allocatedPages(): number {
    this.reclaim();
    return this.#allocated;
  }

  /** True if phys is one of this pagemap's device pages. */
  contains(phys: number): boolean {
    return phys >= this.region.start && phys < this.region.start + this.nrPages * PAGE_SIZE;
  }

  /** Allocate one zeroed device page with one reference; 0 when device memory is exhausted. kernel: a driver's device-page allocator (e.g. dmirror_devmem_alloc_page() in lib/test_hmm.c) and zone_device_page_init(). */
  allocPage(): number {
    // kernel: lib/test_hmm.c dmirror_devmem_alloc_page() returns NULL when no device page can be
    // had (its chunk allocation failed): fault-injection site 'devmem_alloc'.
    if (this.memory.faultInjection?.shouldFail('devmem_alloc') === true) return 0;
    if (this.#nfree === 0) this.reclaim();
    if (this.#nfree === 0) return 0;
    const idx = this.#free[--this.#nfree] ?? 0;
    this.#inUse[idx] = 1;
    this.#allocated++;
    this.allocs++;
    const phys = this.region.start + idx * PAGE_SIZE;
    this.memory.fill(phys, PAGE_SIZE, 0);
    this.memory.setPageFlags(phys, PageFlag.DEVICE_PRIVATE);
    this.memory.pageGet(phys);
    return phys;
  }

  /**
   * Allocate one zeroed device folio of 2^order pages (a compound page: one reference, on its
   * head) at a naturally aligned place; 0 when no such run of free pages exists. kernel: test_hmm's
   * free_folios list (dmirror_devmem_alloc_page(dmirror, is_large)) and zone_device_folio_init with
   * an order (Linux 6.19, device-private large folios).
   */
  allocFolio(order: number): number {
    if (!Number.isInteger(order) || order < 0) return 0;
    if (order === 0) return this.allocPage();
    const n = 2 ** order;
    let idx = this.#findFreeRun(n);
    if (idx < 0 && this.reclaim() > 0) idx = this.#findFreeRun(n);
    if (idx < 0) return 0;
    for (let i = idx; i < idx + n; i++) this.#inUse[i] = 1;
    let w = 0;
    for (let r = 0; r < this.#nfree; r++) {
      const v = this.#free[r] ?? 0;
      if (v < idx || v >= idx + n) this.#free[w++] = v;
    }
    this.#nfree = w;
    this.#allocated += n;
    this.allocs += n;
    const phys = this.region.start + idx * PAGE_SIZE;
    const mem = this.memory;
    mem.fill(phys, n * PAGE_SIZE, 0);
    for (let i = 0; i < n; i++) mem.setPageFlags(phys + i * PAGE_SIZE, PageFlag.DEVICE_PRIVATE);
    mem.prepCompoundPage(phys, order);
    mem.pageGet(phys);
    return phys;
  }

  /** First index of `n` free pages whose physical address is aligned to `n` pages, or -1. */
  #findFreeRun(n: number): number {
    const startPfn = this.region.start / PAGE_SIZE;
    const first = (n - (startPfn % n)) % n;
    for (let idx = first; idx + n <= this.nrPages; idx += n) {
      let ok = true;
      for (let i = idx; i < idx + n; i++) {
        if (this.#inUse[i] !== 0) {
          ok = false;
          break;
        }
      }
      if (ok) return idx;
    }
    return -1;
  }

  /**
   * Return every in-use page (or whole folio) whose refcount reached zero to the free list
   * (`page_free` / `folio_free`). Tails of a large folio go with their head; a folio split by
   * migration is freed page by page.
   */
  reclaim(): number {
    let n = 0;
    const mem = this.memory;
    for (let i = 0; i < this.nrPages; i++) {
      if (this.#inUse[i] === 0) continue;
      const phys = this.region.start + i * PAGE_SIZE;
      const order = mem.folioOrder(phys);
      if (order > 0 && mem.compoundHead(phys) !== phys) continue;
      if (mem.getPageRef(phys) !== 0) continue;
      if (order > 0) mem.clearCompoundPage(phys);
      const k = 2 ** order;
      for (let j = i; j < i + k && j < this.nrPages; j++) {
        this.#inUse[j] = 0;
        this.#free[this.#nfree++] = j;
      }
      this.#allocated -= k;
      this.frees += k;
      n += k;
      this.ops.pageFree?.(this, phys);
    }
    return n;
  }
}

const pagemaps = new WeakMap<SystemMemory, DevPagemap[]>();

/**
 * `memremap_pages` for MEMORY_DEVICE_PRIVATE: place `size` bytes of device memory in unused
 * physical address space (request_free_mem_region) and register the pgmap. Returns the pagemap
 * or -EINVAL (no owner, bad size) / -ENOMEM (no room).
 */
export function memremapPages(memory: SystemMemory, opts: MemremapPagesOptions): DevPagemap | number {
  // kernel: memremap_pages WARNs and fails with -EINVAL for a device-private pgmap without owner.
  if (opts.owner === undefined || opts.owner === null) return -Errno.EINVAL;
  if (!Number.isSafeInteger(opts.size) || opts.size <= 0) return -Errno.EINVAL;
  const size = Math.ceil(opts.size / PAGE_SIZE) * PAGE_SIZE;
  const region = memory.requestFreeMemRegion(size, 'device-private', opts.name, opts.name);
  if (region === undefined) return -Errno.ENOMEM;
  const pgmap = new DevPagemap(memory, region, opts.owner, opts.ops);
  let list = pagemaps.get(memory);
  if (list === undefined) {
    list = [];
    pagemaps.set(memory, list);
  }
  list.push(pgmap);
  return pgmap;
}

/** `memunmap_pages`: forget the pgmap and release its physical range. */
export function memunmapPages(pgmap: DevPagemap): void {
  const list = pagemaps.get(pgmap.memory);
  const i = list?.indexOf(pgmap) ?? -1;
  if (list !== undefined && i >= 0) list.splice(i, 1);
  pgmap.memory.regions.remove(pgmap.region);
}

/** `page_pgmap(page)`: the device-private pagemap holding `phys`, or undefined. */
export function pagePgmap(memory: SystemMemory, phys: number): DevPagemap | undefined {
  const list = pagemaps.get(memory);
  if (list === undefined) return undefined;
  for (const p of list) if (p.contains(phys)) return p;
  return undefined;
}

/** `is_device_private_page`. */
export function isDevicePrivatePage(memory: SystemMemory, phys: number): boolean {
  return pagePgmap(memory, phys) !== undefined;
}

/**
 * Make CPU faults on device-private entries of `mm` reach their pgmap's migrate_to_ram (the
 * kernel's do_swap_page → `page_pgmap(page)->ops->migrate_to_ram`). Idempotent; an existing
 * handler that is not ours is kept as the fallback for pages no pgmap claims.
 */
export function installMigrateToRam(mm: MmStruct): void {
  const prev = mm.migrateToRam;
  if (prev !== undefined && dispatchers.has(prev)) return;
  const fn = (m: MmStruct, addr: number, devicePfn: number): number => {
    const page = devicePfn * PAGE_SIZE;
    const pgmap = pagePgmap(m.memory, page);
    if (pgmap === undefined) {
      // A RAM page behind a non-present device entry: a device-exclusive entry.
      if (m.memory.isRam(page, PAGE_SIZE)) return restoreExclusivePte(m, addr - (addr % PAGE_SIZE), devicePfn);
      return prev === undefined ? -Errno.EFAULT : prev(m, addr, devicePfn);
    }
    const vma = m.findVma(addr);
    if (vma === undefined) return -Errno.EFAULT;
    return pgmap.ops.migrateToRam({ mm: m, vma, address: addr - (addr % PAGE_SIZE), page });
  };
  dispatchers.add(fn);
  mm.migrateToRam = fn;
}

const dispatchers = new WeakSet<object>();

/**
 * `remove_device_exclusive_entry` (mm/memory.c): the CPU touched a page a device holds exclusively;
 * tell the mirrors (MMU_NOTIFY_EXCLUSIVE without owner, so the owner drops its atomic mapping too)
 * and put the original mapping back. A page that fork shared meanwhile loses PageAnonExclusive so a
 * later write breaks COW.
 */
function restoreExclusivePte(mm: MmStruct, addr: number, pfn: number): number {
  const f = mm.pteFlags(addr);
  if ((f & PTE_DEVICE_PRIVATE) === 0 || mm.walkPte(addr) !== pfn) return -Errno.EFAULT;
  const range = mm.notifierRange(MMU_NOTIFY_EXCLUSIVE, addr, addr + PAGE_SIZE);
  mm.invalidateRangeStart(range);
  const phys = pfn * PAGE_SIZE;
  if (mm.memory.getPageRef(phys) > 1) mm.memory.clearPageFlags(phys, PageFlag.ANON_EXCLUSIVE);
  mm.setPte(addr, pfn, (f & ~PTE_DEVICE_PRIVATE) | PTE_PRESENT | PTE_YOUNG);
  mm.invalidateRangeEnd(range);
  return 0;
}

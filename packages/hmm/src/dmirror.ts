// kernel: lib/test_hmm.c (the dmirror test driver), lib/test_hmm_uapi.h. Large folios (THP
// migration to and from device-private memory, HMM_DMIRROR_FLAGS) follow Linux 6.19.
// Over 600 lines on purpose: this file mirrors one kernel file, lib/test_hmm.c (~1,700 lines).
// A device that mirrors a process address space through HMM. Its page table is kept per 2 MiB
// chunk: one mmu interval notifier and one HmmDmaMap (one IOVA window) per chunk, so the
// HMM_PFN_* words of the map are the device's own record of what is mapped. System pages are
// reached through the device's DMA port; device-private pages of its own memory are local.
import {
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  DmaFaultError,
  Errno,
  HMM_PFN_DMA_MAPPED,
  HMM_PFN_ERROR,
  HMM_PFN_PFN_HI_MASK,
  HMM_PFN_REQ_FAULT,
  HMM_PFN_REQ_WRITE,
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  HmmDmaMap,
  MMU_NOTIFY_MIGRATE,
  MmuIntervalNotifier,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  GFP_COMP,
  HPAGE_PMD_NR,
  HPAGE_PMD_ORDER,
  PTE_DEVICE_PRIVATE,
  PTE_HUGE,
  PTE_PRESENT,
  PTE_WRITE,
  dmaMapPhys,
  dmaUseIova,
  hmmDmaMapMetadataBytes,
  dmaMappingError,
  dmaUnmapPhys,
  GFP_ZERO,
  hmmPfnSet,
  hmmPfnToMapOrder,
  hmmPfnToPhys,
  hmmPfnsAlloc,
  hmmPfnsSlice,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
  openDeviceFile,
  pciP2pdmaMapStateInit,
  vmInsertPage,
} from '@dmakit/dma-core';
import type { Device, HmmPort, HmmRange, MmStruct, MmuIntervalNotifierOps, MmuNotifierRange, SystemMemory, VfsFile, VmArea } from '@dmakit/dma-core';
import { memremapPages, memunmapPages, pagePgmap } from './devmem.js';
import { makeDeviceExclusive } from './exclusive.js';
import type { DevPagemap, VmFault } from './devmem.js';
import { hmmPort } from './port.js';
import {
  MIGRATE_PFN_COMPOUND,
  MIGRATE_PFN_MIGRATE,
  MIGRATE_PFN_VALID,
  MIGRATE_PFN_WRITE,
  MIGRATE_VMA_SELECT_COMPOUND,
  MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
  MIGRATE_VMA_SELECT_SYSTEM,
  MigrateVma,
  migratePfn,
  migratePfnFlags,
  migratePfnToPfn,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
} from './migrate.js';

// lib/test_hmm_uapi.h: the snapshot permission bytes.
/**
 * Snapshot byte: the page is inaccessible. kernel: HMM_DMIRROR_PROT_ERROR in
 * lib/test_hmm_uapi.h.
 */
export const HMM_DMIRROR_PROT_ERROR = 0xff;
/** Snapshot byte: not mapped. kernel: HMM_DMIRROR_PROT_NONE in lib/test_hmm_uapi.h. */
export const HMM_DMIRROR_PROT_NONE = 0x00;
/** Snapshot bit: readable. kernel: HMM_DMIRROR_PROT_READ in lib/test_hmm_uapi.h. */
export const HMM_DMIRROR_PROT_READ = 0x01;
/** Snapshot bit: writable. kernel: HMM_DMIRROR_PROT_WRITE in lib/test_hmm_uapi.h. */
export const HMM_DMIRROR_PROT_WRITE = 0x02;
/** Snapshot bit: mapped by a PMD (2 MiB). kernel: HMM_DMIRROR_PROT_PMD in lib/test_hmm_uapi.h. */
export const HMM_DMIRROR_PROT_PMD = 0x04;
/** Snapshot bit: mapped by a PUD (1 GiB). kernel: HMM_DMIRROR_PROT_PUD in lib/test_hmm_uapi.h. */
export const HMM_DMIRROR_PROT_PUD = 0x08;
/** Snapshot bit: the shared zero page. kernel: HMM_DMIRROR_PROT_ZERO in lib/test_hmm_uapi.h. */
export const HMM_DMIRROR_PROT_ZERO = 0x10;
/**
 * Snapshot value: device-private page of this device. kernel: HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL in
 * lib/test_hmm_uapi.h.
 */
export const HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20;
/**
 * Snapshot value: device-private page of another device. kernel: HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE in
 * lib/test_hmm_uapi.h.
 */
export const HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30;

/**
 * HMM_DMIRROR_FLAGS bit: the next device (or system) page allocation of a migration fails, so a
 * THP falls back to 4 KiB pages. kernel: HMM_DMIRROR_FLAG_FAIL_ALLOC in lib/test_hmm_uapi.h.
 */
export const HMM_DMIRROR_FLAG_FAIL_ALLOC = 1;

/** Pages per device page-table chunk (2 MiB). */
export const DMIRROR_CHUNK_PAGES = 512;
const CHUNK_BYTES = DMIRROR_CHUNK_PAGES * PAGE_SIZE;
/** Pages per snapshot batch (test_hmm's dmirror_snapshot walks in small batches). */
const MIGRATE_BATCH = 64;
/** Pages per migrate_vma call (6.19 test_hmm: PTRS_PER_PTE, so a 2 MiB-aligned THP fits whole). */
const MIGRATE_PTRS = 512;
/** Device PTE bits. */
const DPT_READ = 1;
const DPT_WRITE = 2;
const DPT_LOCAL = 4;
/** Atomic (device-exclusive) mapping of a system page. */
const DPT_ATOMIC = 8;
/** Retry budget for -EBUSY (the kernel's HMM_RANGE_DEFAULT_TIMEOUT, counted in attempts here). */
const FAULT_RETRIES = 1000;

/** Result of a dmirror command (`struct hmm_dmirror_cmd`). */
export interface DmirrorCmd {
  /** 0 or a negative errno, as the ioctl returns. */
  ret: number;
  /** Pages copied or migrated. */
  cpages: number;
  /** dmirror_fault calls needed. */
  faults: number;
  /** READ: the bytes read; SNAPSHOT: one HMM_DMIRROR_PROT_* byte per page. */
  data: Uint8Array;
}

/** dmirror counters: faults, retries, invalidations, pages mapped and migrated. */
export interface DmirrorStats {
  faults: number;
  rangeFaultCalls: number;
  busyRetries: number;
  readRetries: number;
  invalidations: number;
  entriesZapped: number;
  pagesMapped: number;
  migratedToDevice: number;
  migratedToSystem: number;
  devmemFaults: number;
  dmaFaults: number;
  /**
   * Invalidations skipped because they were this device's own migration (MMU_NOTIFY_MIGRATE with
   * this device as owner). kernel: dmirror_interval_invalidate() in lib/test_hmm.c.
   */
  ownMigrateSkips: number;
}

/** Size of a mirror's device page table: chunks, IOVA windows, PTEs, DMA-mapped pages, metadata bytes. */
export interface DmirrorSummary {
  chunks: number;
  iovaWindows: number;
  devicePtes: number;
  localPtes: number;
  dmaMapped: number;
  metadataBytes: number;
}

/** Options of a DmirrorDevice: the DMA device, the machine's memory, device-private memory size and more. */
export interface DmirrorDeviceOptions {
  /** The DMA-capable device (its DMA port is how the mirror reaches system pages). */
  readonly dev: Device;
  /** The machine's memory (`machine.memory`). */
  readonly memory: SystemMemory;
  /** Device-private memory size. Default 16 MiB. */
  readonly devmemBytes?: number;
  /** The HMM implementation to use (default: this package's). */
  readonly hmm?: HmmPort;
  readonly name?: string;
}

/**
 * `struct dmirror_device`: the device with its device-private memory (one pagemap whose owner
 * is this object). `open(mm)` gives a mirror of one address space (`struct dmirror`).
 */
export class DmirrorDevice {
  readonly dev: Device;
  readonly memory: SystemMemory;
  readonly pagemap: DevPagemap;
  readonly hmm: HmmPort;
  readonly name: string;
  /** `pgmap->owner` and the mirrors' `dev_private_owner`. */
  readonly owner: object;
  readonly mirrors = new Set<Dmirror>();
  /** Reverse map of device pages (page index → mm, address) for eviction. */
  readonly #rmapMm: (MmStruct | undefined)[];
  readonly #rmapAddr: Float64Array;
  /**
   * The mirror that migrated each device page here (kernel: `rpage->zone_device_data = dmirror`
   * in dmirror_migrate_alloc_and_copy(), lib/test_hmm.c): the one whose entry a migration back
   * to RAM erases.
   */
  readonly #rmapMirror: (Dmirror | undefined)[];
  readonly #scratch = new Uint8Array(PAGE_SIZE);
  /** Copies done by the device's DMA engine (migration). */
  copies = { toDevice: 0, toSystem: 0, dmaErrors: 0 };

  private constructor(opts: DmirrorDeviceOptions, pagemap: DevPagemap, owner: object) {
    this.owner = owner;
    this.dev = opts.dev;
    this.memory = opts.memory;
    this.pagemap = pagemap;
    this.hmm = opts.hmm ?? hmmPort;
    this.name = opts.name ?? opts.dev.name;
    this.#rmapMm = new Array<MmStruct | undefined>(pagemap.nrPages).fill(undefined);
    this.#rmapAddr = new Float64Array(pagemap.nrPages);
    this.#rmapMirror = new Array<Dmirror | undefined>(pagemap.nrPages).fill(undefined);
  }

  /** Create the device and hot-plug its device-private memory. Errno on failure. kernel: dmirror_device_init() in lib/test_hmm.c. */
  static create(opts: DmirrorDeviceOptions): DmirrorDevice | number {
    const holder: { self?: DmirrorDevice } = {};
    const owner = { name: opts.name ?? opts.dev.name };
    const pgmap = memremapPages(opts.memory, {
      size: opts.devmemBytes ?? 16 * 1024 * 1024,
      owner,
      name: `${opts.name ?? opts.dev.name} device-private`,
      ops: {
        migrateToRam: (vmf) => (holder.self === undefined ? -Errno.EFAULT : holder.self.devmemFault(vmf)),
      },
    });
    if (typeof pgmap === 'number') return pgmap;
    holder.self = new DmirrorDevice(opts, pgmap, owner);
    return holder.self;
  }

  /** Open a mirror of `mm`. kernel: dmirror_fops_open() in lib/test_hmm.c. */
  open(mm: MmStruct): Dmirror {
    const m = new Dmirror(this, mm);
    this.mirrors.add(m);
    return m;
  }

  /**
   * Driver removal (`dmirror_device_remove`): evict every device page still mapped back to RAM,
   * close the mirrors, and unplug the device memory (memunmap_pages).
   */
  remove(): void {
    this.evictAll();
    for (const m of [...this.mirrors]) m.close();
    memunmapPages(this.pagemap);
  }

  /** Device pages in use (reclaims freed ones first). */
  get devicePagesInUse(): number {
    return this.pagemap.allocatedPages;
  }

  /**
   * Records which mm and address a device-private page backs (the model's reverse map, used to
   * evict it), and optionally the mirror that migrated it there.
   */
  recordRmap(phys: number, mm: MmStruct | undefined, addr: number, mirror?: Dmirror): void {
    const idx = (phys - this.pagemap.region.start) / PAGE_SIZE;
    this.#rmapMm[idx] = mm;
    this.#rmapAddr[idx] = addr;
    this.#rmapMirror[idx] = mirror;
  }

  /** Copy a system page into device memory with the DMA engine (device reads system RAM). */
  copyToDevice(srcPhys: number, dstPhys: number): number {
    const dev = this.dev;
    const a = dmaMapPhys(dev, srcPhys, PAGE_SIZE, DMA_TO_DEVICE);
    if (dmaMappingError(dev, a) !== 0) return -Errno.ENOMEM;
    let ret = 0;
    try {
      dev.dmaReadInto(a, this.#scratch);
      this.memory.write(dstPhys, this.#scratch);
      this.copies.toDevice++;
    } catch (e) {
      if (!(e instanceof DmaFaultError)) throw e;
      this.copies.dmaErrors++;
      ret = -Errno.EFAULT;
    }
    dmaUnmapPhys(dev, a, PAGE_SIZE, DMA_TO_DEVICE);
    return ret;
  }

  /** Copy a device page out to system RAM with the DMA engine (device writes system RAM). */
  copyToSystem(srcPhys: number, dstPhys: number): number {
    const dev = this.dev;
    this.memory.readInto(srcPhys, this.#scratch);
    const a = dmaMapPhys(dev, dstPhys, PAGE_SIZE, DMA_FROM_DEVICE);
    if (dmaMappingError(dev, a) !== 0) return -Errno.ENOMEM;
    let ret = 0;
    try {
      dev.dmaWrite(a, this.#scratch);
      this.copies.toSystem++;
    } catch (e) {
      if (!(e instanceof DmaFaultError)) throw e;
      this.copies.dmaErrors++;
      ret = -Errno.EFAULT;
    }
    dmaUnmapPhys(dev, a, PAGE_SIZE, DMA_FROM_DEVICE);
    return ret;
  }

  /**
   * `dmirror_devmem_fault` (pgmap migrate_to_ram): the CPU touched one of our device pages;
   * migrate that page back to a system page. 0 or a negative errno (SIGBUS).
   */
  devmemFault(vmf: VmFault): number {
    // 6.19: a device-private PMD (no vmf->pte) migrates its whole folio; a PTE one page.
    const pmd = (vmf.mm.pteFlags(vmf.address) & PTE_HUGE) !== 0 && vmf.vma.order === 0;
    const span = pmd ? HPAGE_PMD_NR * PAGE_SIZE : PAGE_SIZE;
    const start = vmf.address - (vmf.address % span);
    const flags = MIGRATE_VMA_SELECT_DEVICE_PRIVATE | (pmd ? MIGRATE_VMA_SELECT_COMPOUND : 0);
    const args = new MigrateVma(vmf.mm, vmf.vma, start, start + span, flags, this.owner);
    args.faultPage = vmf.page;
    for (const m of this.mirrors) if (m.mm === vmf.mm) m.stats.devmemFaults++;
    const r = migrateVmaSetup(args);
    if (r !== 0) return r;
    this.allocAndCopyToSystem(args);
    migrateVmaPages(args);
    migrateVmaFinalize(args);
    return (vmf.mm.pteFlags(vmf.address) & PTE_PRESENT) !== 0 ? 0 : -Errno.EFAULT;
  }

  /**
   * dmirror_devmem_fault_alloc_and_copy / dmirror_migrate_to_system's copy step. A compound source
   * (a device THP) gets a system THP, or 4 KiB pages when that allocation fails or the owning
   * mirror set HMM_DMIRROR_FLAG_FAIL_ALLOC (migrate_vma_pages then splits the device folio).
   */
  allocAndCopyToSystem(args: MigrateVma): number {
    let n = 0;
    const mem = this.memory;
    for (let i = 0; i < args.npages; ) {
      const src = args.src[i] ?? 0;
      const sflags = migratePfnFlags(src);
      const spfn = migratePfnToPfn(src);
      if ((sflags & MIGRATE_PFN_MIGRATE) === 0 || spfn < 0 || !this.pagemap.contains(spfn * PAGE_SIZE)) {
        i++;
        continue;
      }
      const idx = (spfn * PAGE_SIZE - this.pagemap.region.start) / PAGE_SIZE;
      const mirror = this.#rmapMirror[idx];
      const write = sflags & MIGRATE_PFN_WRITE;
      const nr = (sflags & MIGRATE_PFN_COMPOUND) !== 0 ? HPAGE_PMD_NR : 1;
      const failAlloc = mirror !== undefined && takeFailAlloc.get(mirror)?.() === true;
      let big = 0;
      if (nr > 1 && !failAlloc) big = mem.allocPages(HPAGE_PMD_ORDER, GFP_COMP);
      if (nr > 1 && big !== 0) {
        let ok = true;
        for (let j = 0; j < nr && ok; j++) ok = this.copyToSystem((spfn + j) * PAGE_SIZE, big + j * PAGE_SIZE) === 0;
        if (!ok) {
          mem.pagePut(big);
          i += nr;
          continue;
        }
        args.dst[i] = migratePfn(big / PAGE_SIZE) + write + MIGRATE_PFN_COMPOUND;
      } else {
        // One page, or the 4 KiB fallback for each page of the folio.
        for (let j = 0; j < nr && i + j < args.npages; j++) {
          if (nr === 1 && failAlloc) break;
          const dst = mem.allocPages(0);
          if (dst === 0) break;
          if (this.copyToSystem((spfn + j) * PAGE_SIZE, dst) !== 0) {
            mem.pagePut(dst);
            break;
          }
          args.dst[i + j] = migratePfn(dst / PAGE_SIZE) + (j === 0 ? write : 0);
        }
      }
      // kernel: dmirror_devmem_fault_alloc_and_copy() in lib/test_hmm.c erases the owning
      // mirror's entries itself (xa_erase(&dmirror->pt, addr >> PAGE_SHIFT)): the MMU_NOTIFY_MIGRATE
      // invalidation of this migration carries our owner, so dmirror_interval_invalidate skips it.
      const whole = (migratePfnFlags(args.dst[i] ?? 0) & MIGRATE_PFN_COMPOUND) !== 0;
      for (let j = 0; j < nr && i + j < args.npages; j++) {
        if (!whole && migratePfnToPfn(args.dst[i + j] ?? 0) < 0) continue;
        const owner = this.#rmapMirror[idx + j];
        if (owner !== undefined) eraseEntry.get(owner)?.(args.start + (i + j) * PAGE_SIZE);
        // Beyond lib/test_hmm.c: the page leaves device memory during an invalidation every mirror
        // of this device skipped (its own MMU_NOTIFY_MIGRATE), so each mirror of this mm publishes
        // that invalidation's sequence as the callback would have. A dmirror_fault whose
        // hmm_range_fault saw the device page before the CPU migrated it back then retries instead
        // of mapping the stale device page (found by the seeded soak: pnpm soak --replay hmm/mirror
        // --seed 8001, a device read racing a CPU write to a forked device page).
        for (const mr of this.mirrors) if (mr.mm === args.mm) ownMigrateMoved.get(mr)?.(args.start + (i + j) * PAGE_SIZE);
        this.recordRmap((spfn + j) * PAGE_SIZE, undefined, 0);
        n++;
      }
      i += nr;
    }
    return n;
  }

  /**
   * Evict every device page still mapped by some process back to system memory (test_hmm's
   * dmirror_device_evict_chunk on release). Returns the number of pages migrated.
   */
  evictAll(): number {
    let n = 0;
    const start = this.pagemap.region.start;
    for (let idx = 0; idx < this.pagemap.nrPages; idx++) {
      const mm = this.#rmapMm[idx];
      if (mm === undefined) continue;
      const addr = this.#rmapAddr[idx] ?? 0;
      const phys = start + idx * PAGE_SIZE;
      const f = mm.pteFlags(addr);
      this.#rmapMm[idx] = undefined;
      if ((f & PTE_DEVICE_PRIVATE) === 0 || mm.walkPte(addr) * PAGE_SIZE !== phys) continue;
      const vma = mm.findVma(addr);
      if (vma === undefined) continue;
      if (this.devmemFault({ mm, vma, address: addr, page: phys }) === 0) n++;
    }
    return n;
  }
}

/**
 * Per-mirror `xa_erase(&dmirror->pt, pfn)` for the device's migrate-to-RAM path (kept off the
 * public surface of Dmirror).
 */
const eraseEntry = new WeakMap<Dmirror, (addr: number) => void>();
/** Per mirror: a page at `addr` left device memory during the device's own (skipped) migration invalidation. */
const ownMigrateMoved = new WeakMap<Dmirror, (addr: number) => void>();

/** Per-mirror test-and-clear of HMM_DMIRROR_FLAG_FAIL_ALLOC (`dmirror->flags &= ~…`). */
const takeFailAlloc = new WeakMap<Dmirror, () => boolean>();

/** One 2 MiB chunk of a mirror: an interval notifier, the HMM DMA map and the device PTEs. */
class DmirrorChunk extends MmuIntervalNotifier {
  readonly base: number;
  readonly map = new HmmDmaMap();
  /** DPT_* bits per page. */
  readonly pt = new Uint8Array(DMIRROR_CHUNK_PAGES);
  /** Device address per page: DMA address (system page) or device-local physical address. */
  readonly addr = new Float64Array(DMIRROR_CHUNK_PAGES);
  live = 0;
  /** curSeq of this device's own MMU_NOTIFY_MIGRATE invalidation of the chunk (skipped), or -1. */
  ownMigrateSeq = -1;

  constructor(base: number) {
    super();
    this.base = base;
  }
}

/**
 * `struct dmirror`: one process address space mirrored by a DmirrorDevice. The commands mirror
 * the test driver's ioctls (HMM_DMIRROR_READ, _WRITE, _SNAPSHOT, _MIGRATE_TO_DEV, _MIGRATE_TO_SYS).
 */
export class Dmirror {
  readonly mdevice: DmirrorDevice;
  readonly mm: MmStruct;
  readonly stats: DmirrorStats = {
    faults: 0,
    rangeFaultCalls: 0,
    busyRetries: 0,
    readRetries: 0,
    invalidations: 0,
    entriesZapped: 0,
    pagesMapped: 0,
    migratedToDevice: 0,
    migratedToSystem: 0,
    devmemFaults: 0,
    dmaFaults: 0,
    ownMigrateSkips: 0,
  };
  /**
   * Test hook: runs after hmm_range_fault returned and before the driver lock is taken (where a
   * real CPU could be preempted and an invalidation could run). Use it to inject races.
   */
  afterRangeFault: ((mirror: Dmirror, range: HmmRange) => void) | undefined;
  readonly #chunks = new Map<number, DmirrorChunk>();
  readonly #ops: MmuIntervalNotifierOps;
  #closed = false;
  /** HMM_DMIRROR_FLAGS (`dmirror->flags`). */
  #flags = 0;
  readonly #p2p = pciP2pdmaMapStateInit();

  /**
   * The open device file (`/dev/hmm_dmirrorN`): what hmm-tests passes to mmap(2). Its mmap is
   * dmirror_fops_mmap: every page of the new VMA gets a zeroed page of its own (vm_insert_page).
   */
  readonly file: VfsFile;

  constructor(mdevice: DmirrorDevice, mm: MmStruct) {
    this.mdevice = mdevice;
    this.mm = mm;
    this.file = openDeviceFile({ name: `/dev/${mdevice.name}`, fOp: { mmap: (_f, vma, vmm) => dmirrorFopsMmap(vma, vmm) }, privateData: this });
    this.#ops = { invalidate: (sub, range, curSeq) => (sub instanceof DmirrorChunk ? this.#invalidate(sub, range, curSeq) : true) };
    takeFailAlloc.set(this, () => {
      if ((this.#flags & HMM_DMIRROR_FLAG_FAIL_ALLOC) === 0) return false;
      this.#flags &= ~HMM_DMIRROR_FLAG_FAIL_ALLOC;
      return true;
    });
    eraseEntry.set(this, (addr) => {
      const base = addr - (addr % CHUNK_BYTES);
      const c = this.#chunks.get(base);
      if (c !== undefined) this.#zap(c, addr, addr + PAGE_SIZE);
    });
    ownMigrateMoved.set(this, (addr) => {
      const c = this.#chunks.get(addr - (addr % CHUNK_BYTES));
      if (c !== undefined && c.ownMigrateSeq >= 0) mmuIntervalSetSeq(c, c.ownMigrateSeq);
    });
  }

  /** The DMA device behind the mirror. */
  get dev(): Device {
    return this.mdevice.dev;
  }

  /**
   * True once the mirror was closed (its file released; kernel: dmirror_fops_release() in
   * lib/test_hmm.c).
   */
  get closed(): boolean {
    return this.#closed;
  }

  /** Chunks (2 MiB windows) currently set up. */
  get chunkCount(): number {
    return this.#chunks.size;
  }

  /** Device PTEs currently valid. */
  get mappedPages(): number {
    let n = 0;
    for (const c of this.#chunks.values()) n += c.live;
    return n;
  }

  /**
   * `dmirror_interval_invalidate`: zap device PTEs in the overlap, then DMA-unmap them. Like the
   * kernel (lib/test_hmm.c, dmirror_interval_invalidate), a MMU_NOTIFY_MIGRATE event whose owner
   * is this mirror's own device is ignored (sequence not bumped, nothing zapped): the device's
   * own migration keeps the entries of its pages that stay put, and updates the moved ones itself
   * (dmirror_migrate_finalize_and_map, dmirror_devmem_fault_alloc_and_copy).
   */
  #invalidate(c: DmirrorChunk, range: MmuNotifierRange, curSeq: number): boolean {
    if (range.event === MMU_NOTIFY_MIGRATE && range.owner === this.mdevice.owner) {
      this.stats.ownMigrateSkips++;
      c.ownMigrateSeq = curSeq;
      return true;
    }
    // The driver lock is implicit (single threaded); set_seq before touching device state.
    mmuIntervalSetSeq(c, curSeq);
    this.stats.invalidations++;
    this.#zap(c, Math.max(range.start, c.base), Math.min(range.end, c.base + CHUNK_BYTES));
    return true;
  }

  /** Zap [start, end) of a chunk: device PTE first, then hmm_dma_unmap_pfn, then clear the word. */
  #zap(c: DmirrorChunk, start: number, end: number): void {
    if (c.live === 0 && !anyDmaMapped(c, start, end)) return;
    const hmm = this.mdevice.hmm;
    const dev = this.dev;
    const pfns = c.map.pfnList;
    for (let a = start; a < end; a += PAGE_SIZE) {
      const i = (a - c.base) / PAGE_SIZE;
      if (c.pt[i] !== 0) {
        c.pt[i] = 0;
        c.addr[i] = 0;
        c.live--;
        this.stats.entriesZapped++;
      }
      if (pfns.length > 0) {
        hmm.hmmDmaUnmapPfn(dev, c.map, i);
        pfns[2 * i + 1] = (pfns[2 * i + 1] ?? 0) & HMM_PFN_PFN_HI_MASK; // &= ~HMM_PFN_FLAGS
      }
    }
  }

  #chunk(base: number, create: boolean): DmirrorChunk | number | undefined {
    let c = this.#chunks.get(base);
    if (c !== undefined || !create) return c;
    c = new DmirrorChunk(base);
    const r = this.mdevice.hmm.hmmDmaMapAlloc(this.dev, c.map, DMIRROR_CHUNK_PAGES, PAGE_SIZE);
    if (r !== 0) return r;
    const ri = mmuIntervalNotifierInsert(c, this.mm, base, CHUNK_BYTES, this.#ops);
    if (ri !== 0) {
      this.mdevice.hmm.hmmDmaMapFree(this.dev, c.map);
      return ri;
    }
    this.#chunks.set(base, c);
    return c;
  }

  /** `dmirror_fault(dmirror, start, end, write)`: fault [start, end) into the device page table. */
  fault(start: number, end: number, write: boolean): number {
    if (this.#closed || this.mm.exited) return -Errno.EFAULT;
    this.stats.faults++;
    for (let a = start; a < end; ) {
      const base = a - (a % CHUNK_BYTES);
      const e = Math.min(end, base + CHUNK_BYTES);
      const c = this.#chunk(base, true);
      if (typeof c === 'number') return c;
      if (c === undefined) return -Errno.ENOMEM;
      const r = this.#rangeFault(c, a, e, write);
      if (r !== 0) return r;
      a = e;
    }
    return 0;
  }

  /** `dmirror_range_fault`: the canonical driver loop of Documentation/mm/hmm.rst. */
  #rangeFault(c: DmirrorChunk, start: number, end: number, write: boolean): number {
    const hmm = this.mdevice.hmm;
    const first = (start - c.base) / PAGE_SIZE;
    const n = (end - start) / PAGE_SIZE;
    const range: HmmRange = {
      notifier: c,
      notifierSeq: 0,
      start,
      end,
      hmmPfns: hmmPfnsSlice(c.map.pfnList, first, n),
      defaultFlags: HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0),
      pfnFlagsMask: 0,
      devPrivateOwner: this.mdevice.owner,
    };
    for (let attempt = 0; attempt < FAULT_RETRIES; attempt++) {
      range.notifierSeq = mmuIntervalReadBegin(c);
      this.stats.rangeFaultCalls++;
      const r = hmm.hmmRangeFault(range);
      if (r === -Errno.EBUSY) {
        this.stats.busyRetries++;
        continue;
      }
      if (r !== 0) return r;
      this.afterRangeFault?.(this, range);
      // mutex_lock(&dmirror->mutex)
      if (mmuIntervalReadRetry(c, range.notifierSeq)) {
        this.stats.readRetries++;
        continue;
      }
      return this.#doFault(c, first, n);
    }
    return -Errno.EBUSY;
  }

  /** `dmirror_do_fault`: program the device PTEs from the PFN words (under the driver lock). */
  #doFault(c: DmirrorChunk, first: number, n: number): number {
    const hmm = this.mdevice.hmm;
    const dev = this.dev;
    const pfns = c.map.pfnList;
    const pgmap = this.mdevice.pagemap;
    for (let i = first; i < first + n; i++) {
      const hi = pfns[2 * i + 1] ?? 0;
      // WARN_ON(ERROR || !VALID) in fault mode; the model just stops.
      if ((hi & HMM_PFN_ERROR) !== 0 || (hi & HMM_PFN_VALID) === 0) return -Errno.EFAULT;
      const w = (hi & HMM_PFN_WRITE) !== 0 ? DPT_WRITE : 0;
      const phys = hmmPfnToPhys(pfns, i);
      let addr: number;
      let bits: number;
      if (pgmap.contains(phys)) {
        addr = phys;
        bits = DPT_READ | DPT_LOCAL | w;
      } else {
        addr = hmm.hmmDmaMapPfn(dev, c.map, i, this.#p2p);
        if (addr === DMA_MAPPING_ERROR) return -Errno.EFAULT;
        bits = DPT_READ | w;
      }
      if (c.pt[i] === 0) c.live++;
      c.pt[i] = bits;
      c.addr[i] = addr;
      this.stats.pagesMapped++;
    }
    return 0;
  }

  /** Copy one page between the device's view and `buf` (read: device → buf). */
  #access(c: DmirrorChunk, i: number, buf: Uint8Array, off: number, write: boolean): number {
    const bits = c.pt[i] ?? 0;
    const addr = c.addr[i] ?? 0;
    if ((bits & DPT_LOCAL) !== 0) {
      if (write) this.mdevice.memory.write(addr, buf, off, PAGE_SIZE);
      else this.mdevice.memory.readInto(addr, buf, off, PAGE_SIZE);
      return 0;
    }
    try {
      if (write) this.dev.dmaWrite(addr, buf, off, PAGE_SIZE);
      else this.dev.dmaReadInto(addr, buf, off, PAGE_SIZE);
    } catch (e) {
      if (!(e instanceof DmaFaultError)) throw e;
      this.stats.dmaFaults++;
      return -Errno.EFAULT;
    }
    return 0;
  }

  /** dmirror_do_read / dmirror_do_write: copy until a page is not mapped (with the needed bit). */
  #doCopy(addr: number, npages: number, buf: Uint8Array, from: number, write: boolean): { ret: number; done: number } {
    const need = write ? DPT_WRITE : DPT_READ;
    for (let p = from; p < npages; p++) {
      const a = addr + p * PAGE_SIZE;
      const base = a - (a % CHUNK_BYTES);
      const c = this.#chunks.get(base);
      const i = (a - base) / PAGE_SIZE;
      if (c === undefined || ((c.pt[i] ?? 0) & need) === 0) return { ret: -Errno.ENOENT, done: p };
      const r = this.#access(c, i, buf, p * PAGE_SIZE, write);
      if (r !== 0) return { ret: r, done: p };
    }
    return { ret: 0, done: npages };
  }

  #checkArgs(addr: number, npages: number): number {
    if (this.#closed) return -Errno.EINVAL;
    if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) return -Errno.EINVAL;
    if (!Number.isSafeInteger(npages) || npages <= 0 || !Number.isSafeInteger(addr + npages * PAGE_SIZE)) return -Errno.EINVAL;
    return 0;
  }

  #rw(addr: number, npages: number, buf: Uint8Array, write: boolean): DmirrorCmd {
    const cmd: DmirrorCmd = { ret: 0, cpages: 0, faults: 0, data: buf };
    const end = addr + npages * PAGE_SIZE;
    let done = 0;
    let stuck = -1;
    // Bounded: each round either copies pages or faults them in.
    for (let round = 0; round < 2 * npages + 8; round++) {
      const r = this.#doCopy(addr, npages, buf, done, write);
      done = r.done;
      if (r.ret !== -Errno.ENOENT) {
        cmd.ret = r.ret;
        cmd.cpages = done;
        return cmd;
      }
      const a = addr + done * PAGE_SIZE;
      if (write && stuck === done && this.lookup(a)?.local === true) {
        // HMM reports our own read-only device page without faulting it (no write upgrade for
        // device-private entries): bring it back to RAM so the write fault can break COW.
        this.migrateToSystem(a, 1);
      }
      stuck = done;
      const f = this.fault(addr + done * PAGE_SIZE, end, write);
      if (f !== 0) {
        cmd.ret = f;
        cmd.cpages = done;
        return cmd;
      }
      cmd.faults++;
    }
    cmd.ret = -Errno.EFAULT;
    cmd.cpages = done;
    return cmd;
  }

  /** HMM_DMIRROR_READ: read `npages` from `addr` through the mirror (faulting as needed). */
  read(addr: number, npages: number): DmirrorCmd {
    const bad = this.#checkArgs(addr, npages);
    if (bad !== 0) return { ret: bad, cpages: 0, faults: 0, data: new Uint8Array(0) };
    return this.#rw(addr, npages, new Uint8Array(npages * PAGE_SIZE), false);
  }

  /** HMM_DMIRROR_WRITE: write `data` (whole pages) at `addr` through the mirror. */
  write(addr: number, data: Uint8Array): DmirrorCmd {
    const npages = Math.floor(data.length / PAGE_SIZE);
    const bad = data.length % PAGE_SIZE !== 0 ? -Errno.EINVAL : this.#checkArgs(addr, npages);
    if (bad !== 0) return { ret: bad, cpages: 0, faults: 0, data };
    return this.#rw(addr, npages, data, true);
  }

  /**
   * HMM_DMIRROR_SNAPSHOT: the CPU page table state of each page as HMM reports it without
   * faulting (`dmirror_mkentry`), one HMM_DMIRROR_PROT_* byte per page.
   */
  snapshot(addr: number, npages: number): DmirrorCmd {
    const bad = this.#checkArgs(addr, npages);
    const perm = new Uint8Array(bad === 0 ? npages : 0);
    const cmd: DmirrorCmd = { ret: bad, cpages: 0, faults: 0, data: perm };
    if (bad !== 0) return cmd;
    const hmm = this.mdevice.hmm;
    const sub = new MmuIntervalNotifier();
    const r0 = mmuIntervalNotifierInsert(sub, this.mm, addr, npages * PAGE_SIZE, {
      invalidate: (s, _r, seq) => {
        mmuIntervalSetSeq(s, seq);
        return true;
      },
    });
    if (r0 !== 0) {
      cmd.ret = r0;
      return cmd;
    }
    const pfns = hmmPfnsAlloc(MIGRATE_BATCH);
    const zero = this.mdevice.memory.zeroPagePhys;
    for (let p = 0; p < npages && cmd.ret === 0; p += MIGRATE_BATCH) {
      const n = Math.min(MIGRATE_BATCH, npages - p);
      const range: HmmRange = {
        notifier: sub,
        notifierSeq: 0,
        start: addr + p * PAGE_SIZE,
        end: addr + (p + n) * PAGE_SIZE,
        hmmPfns: pfns,
        defaultFlags: 0,
        pfnFlagsMask: 0,
        devPrivateOwner: this.mdevice.owner,
      };
      let r = -Errno.EBUSY;
      for (let attempt = 0; attempt < FAULT_RETRIES && r === -Errno.EBUSY; attempt++) {
        pfns.fill(0);
        range.notifierSeq = mmuIntervalReadBegin(sub);
        r = hmm.hmmRangeFault(range);
        if (r === 0 && mmuIntervalReadRetry(sub, range.notifierSeq)) r = -Errno.EBUSY;
      }
      if (r !== 0) {
        cmd.ret = r;
        break;
      }
      for (let i = 0; i < n; i++) perm[p + i] = this.#mkentry(pfns, i, zero);
      cmd.cpages += n;
    }
    mmuIntervalNotifierRemove(sub);
    return cmd;
  }

  /** `dmirror_mkentry`. */
  #mkentry(pfns: Uint32Array, i: number, zeroPhys: number): number {
    const hi = pfns[2 * i + 1] ?? 0;
    if ((hi & HMM_PFN_ERROR) !== 0) return HMM_DMIRROR_PROT_ERROR;
    if ((hi & HMM_PFN_VALID) === 0) return HMM_DMIRROR_PROT_NONE;
    const phys = hmmPfnToPhys(pfns, i);
    let perm: number;
    const pgmap = pagePgmap(this.mdevice.memory, phys);
    if (pgmap !== undefined) perm = pgmap === this.mdevice.pagemap ? HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL : HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE;
    else if (phys === zeroPhys) perm = HMM_DMIRROR_PROT_ZERO;
    else perm = HMM_DMIRROR_PROT_NONE;
    perm |= (hi & HMM_PFN_WRITE) !== 0 ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ;
    const order = hmmPfnToMapOrder(pfns, i);
    if (order === 9) perm |= HMM_DMIRROR_PROT_PMD;
    else if (order === 18) perm |= HMM_DMIRROR_PROT_PUD;
    return perm;
  }

  #migrate(addr: number, npages: number, toDevice: boolean): DmirrorCmd {
    const bad = this.#checkArgs(addr, npages);
    const cmd: DmirrorCmd = { ret: bad, cpages: 0, faults: 0, data: new Uint8Array(0) };
    if (bad !== 0) return cmd;
    if (this.mm.exited) {
      cmd.ret = -Errno.EINVAL;
      return cmd;
    }
    const end = addr + npages * PAGE_SIZE;
    for (let a = addr; a < end; ) {
      const vma = this.mm.findVma(a);
      if (vma === undefined || (vma.prot & PROT_READ) === 0) {
        cmd.ret = -Errno.EINVAL;
        return cmd;
      }
      const next = Math.min(end, a + MIGRATE_PTRS * PAGE_SIZE, vma.end);
      const select = (toDevice ? MIGRATE_VMA_SELECT_SYSTEM : MIGRATE_VMA_SELECT_DEVICE_PRIVATE) | MIGRATE_VMA_SELECT_COMPOUND;
      const args = new MigrateVma(this.mm, vma, a, next, select, this.mdevice.owner);
      const r = migrateVmaSetup(args);
      if (r !== 0) {
        cmd.ret = r;
        return cmd;
      }
      if (toDevice) {
        this.#allocAndCopyToDevice(args);
        migrateVmaPages(args);
        this.#finalizeAndMap(args);
      } else {
        this.mdevice.allocAndCopyToSystem(args);
        migrateVmaPages(args);
      }
      migrateVmaFinalize(args);
      for (let i = 0; i < args.npages; i++) {
        const s = migratePfnFlags(args.src[i] ?? 0);
        if ((s & MIGRATE_PFN_MIGRATE) !== 0 && (migratePfnFlags(args.dst[i] ?? 0) & MIGRATE_PFN_VALID) !== 0) {
          const pages = (s & MIGRATE_PFN_COMPOUND) !== 0 ? HPAGE_PMD_NR : 1;
          if (toDevice) this.stats.migratedToDevice += pages;
          else {
            this.stats.migratedToSystem += pages;
            // dmirror_successful_migrated_pages: one per migrated src entry.
            cmd.cpages++;
          }
        }
      }
      a = next;
    }
    if (toDevice) {
      // test_hmm: return the migrated data through the mirror (only pages in device memory).
      const buf = new Uint8Array(npages * PAGE_SIZE);
      const r = this.#doCopy(addr, npages, buf, 0, false);
      cmd.ret = r.ret;
      cmd.cpages = r.done;
      cmd.data = buf;
    }
    return cmd;
  }

  /**
   * `dmirror_migrate_alloc_and_copy`: device pages for every collected entry, data copied by DMA.
   * A compound entry (a THP or a 2 MiB hole) gets one device folio of HPAGE_PMD_NR pages, or 4 KiB
   * device pages when that fails or HMM_DMIRROR_FLAG_FAIL_ALLOC is set (Linux 6.19).
   */
  #allocAndCopyToDevice(args: MigrateVma): void {
    const md = this.mdevice;
    const writableVma = args.vma !== undefined && (args.vma.prot & PROT_WRITE) !== 0;
    for (let i = 0; i < args.npages; ) {
      const src = args.src[i] ?? 0;
      const sf = migratePfnFlags(src);
      if ((sf & MIGRATE_PFN_MIGRATE) === 0) {
        i++;
        continue;
      }
      const spfn = migratePfnToPfn(src);
      const isLarge = (sf & MIGRATE_PFN_COMPOUND) !== 0;
      const w = (sf & MIGRATE_PFN_WRITE) !== 0 || (spfn < 0 && writableVma) ? MIGRATE_PFN_WRITE : 0;
      let dpage = 0;
      if (takeFailAlloc.get(this)?.() !== true) dpage = isLarge ? md.pagemap.allocFolio(HPAGE_PMD_ORDER) : md.pagemap.allocPage();
      const nr = isLarge ? HPAGE_PMD_NR : 1;
      if (dpage === 0 && !isLarge) {
        i++;
        continue;
      }
      if (dpage !== 0) {
        let ok = true;
        for (let j = 0; j < nr && ok; j++) if (spfn >= 0) ok = md.copyToDevice((spfn + j) * PAGE_SIZE, dpage + j * PAGE_SIZE) === 0;
        if (!ok) {
          this.mdevice.memory.pagePut(dpage);
          i += nr;
          continue;
        }
        for (let j = 0; j < nr; j++) md.recordRmap(dpage + j * PAGE_SIZE, this.mm, args.start + (i + j) * PAGE_SIZE, this);
        args.dst[i] = migratePfn(dpage / PAGE_SIZE) + w + (isLarge ? MIGRATE_PFN_COMPOUND : 0);
        i += nr;
        continue;
      }
      // Try falling back to PAGE_SIZE pages.
      for (let j = 0; j < nr && i + j < args.npages; j++) {
        const dp = md.pagemap.allocPage();
        if (dp === 0) break;
        if (spfn >= 0 && md.copyToDevice((spfn + j) * PAGE_SIZE, dp) !== 0) {
          this.mdevice.memory.pagePut(dp);
          break;
        }
        md.recordRmap(dp, this.mm, args.start + (i + j) * PAGE_SIZE, this);
        args.dst[i + j] = migratePfn(dp / PAGE_SIZE) + w;
      }
      i += nr;
    }
  }

  /** `dmirror_migrate_finalize_and_map`: map the new device pages in the device page table. */
  #finalizeAndMap(args: MigrateVma): void {
    for (let i = 0; i < args.npages; i++) {
      const src = args.src[i] ?? 0;
      const dst = args.dst[i] ?? 0;
      if ((migratePfnFlags(src) & MIGRATE_PFN_MIGRATE) === 0) continue;
      const dpfn = migratePfnToPfn(dst);
      if (dpfn < 0) continue;
      const nr = (migratePfnFlags(dst) & MIGRATE_PFN_COMPOUND) !== 0 ? HPAGE_PMD_NR : 1;
      for (let j = 0; j < nr; j++) {
        const a = args.start + (i + j) * PAGE_SIZE;
        const base = a - (a % CHUNK_BYTES);
        const c = this.#chunk(base, true);
        if (typeof c !== 'object') continue;
        const idx = (a - base) / PAGE_SIZE;
        // xa_store replaces whatever entry was there: the collect step's invalidation was our own
        // MMU_NOTIFY_MIGRATE and skipped, so an entry for the old system page may still be live
        // (and DMA-mapped in this model): drop it first.
        this.#zap(c, a, a + PAGE_SIZE);
        c.live++;
        c.pt[idx] = DPT_READ | DPT_LOCAL | ((migratePfnFlags(dst) & MIGRATE_PFN_WRITE) !== 0 ? DPT_WRITE : 0);
        c.addr[idx] = (dpfn + j) * PAGE_SIZE;
      }
      i += nr - 1;
    }
  }

  /**
   * HMM_DMIRROR_EXCLUSIVE: take the pages of [addr, +npages) for exclusive (atomic) device access
   * with makeDeviceExclusive and map them; returns the data as the device sees it. The first CPU
   * access to such a page restores the CPU mapping and revokes the device's.
   */
  exclusive(addr: number, npages: number): DmirrorCmd {
    const bad = this.#checkArgs(addr, npages);
    const cmd: DmirrorCmd = { ret: bad, cpages: 0, faults: 0, data: new Uint8Array(0) };
    if (bad !== 0) return cmd;
    const hmm = this.mdevice.hmm;
    for (let p = 0; p < npages; p++) {
      const a = addr + p * PAGE_SIZE;
      const phys = makeDeviceExclusive(this.mm, a, this.mdevice.owner);
      if (phys < 0) {
        cmd.ret = phys;
        return cmd;
      }
      const base = a - (a % CHUNK_BYTES);
      const c = this.#chunk(base, true);
      if (typeof c !== 'object') {
        cmd.ret = typeof c === 'number' ? c : -Errno.ENOMEM;
        return cmd;
      }
      const i = (a - base) / PAGE_SIZE;
      // dmirror_atomic_map: the device PTE points at the page, tagged atomic.
      hmmPfnSet(c.map.pfnList, i, phys / PAGE_SIZE, HMM_PFN_VALID | HMM_PFN_WRITE);
      const dma = hmm.hmmDmaMapPfn(this.dev, c.map, i, this.#p2p);
      if (dma === DMA_MAPPING_ERROR) {
        cmd.ret = -Errno.EFAULT;
        return cmd;
      }
      if (c.pt[i] === 0) c.live++;
      c.pt[i] = DPT_READ | DPT_WRITE | DPT_ATOMIC;
      c.addr[i] = dma;
      cmd.cpages++;
    }
    const buf = new Uint8Array(npages * PAGE_SIZE);
    const r = this.#doCopy(addr, npages, buf, 0, false);
    cmd.ret = r.ret;
    cmd.data = buf;
    return cmd;
  }

  /**
   * HMM_DMIRROR_RELEASE (`dmirror_device_remove_chunks`): every page of the device's memory that a
   * process still maps is migrated back to system memory (dmirror_device_evict_chunk), whichever
   * mirror put it there. Returns 0, as the ioctl does. Model: the device memory stays plugged in
   * (the kernel unplugs its chunks and hot-plugs new ones on the next allocation).
   */
  release(): number {
    this.mdevice.evictAll();
    return 0;
  }

  /** HMM_DMIRROR_CHECK_EXCLUSIVE: -EPERM if a page of the range is still mapped atomically. */
  checkExclusive(addr: number, npages: number): number {
    const bad = this.#checkArgs(addr, npages);
    if (bad !== 0) return bad;
    for (let p = 0; p < npages; p++) {
      const a = addr + p * PAGE_SIZE;
      const base = a - (a % CHUNK_BYTES);
      const c = this.#chunks.get(base);
      if (c !== undefined && ((c.pt[(a - base) / PAGE_SIZE] ?? 0) & DPT_ATOMIC) !== 0) return -Errno.EPERM;
    }
    return 0;
  }

  /**
   * HMM_DMIRROR_FLAGS: set the mirror's test flags (HMM_DMIRROR_FLAG_FAIL_ALLOC). 0, or -EINVAL for
   * a closed mirror or a value that is not a non-negative integer.
   */
  setFlags(flags: number): number {
    if (this.#closed || !Number.isSafeInteger(flags) || flags < 0) return -Errno.EINVAL;
    this.#flags = flags;
    return 0;
  }

  /** The mirror's HMM_DMIRROR_FLAGS bits still set. */
  get flags(): number {
    return this.#flags;
  }

  /** HMM_DMIRROR_MIGRATE_TO_DEV: migrate system pages of [addr, +npages) into device memory. */
  migrateToDevice(addr: number, npages: number): DmirrorCmd {
    return this.#migrate(addr, npages, true);
  }

  /** HMM_DMIRROR_MIGRATE_TO_SYS: migrate our device pages of [addr, +npages) back to RAM. */
  migrateToSystem(addr: number, npages: number): DmirrorCmd {
    return this.#migrate(addr, npages, false);
  }

  /**
   * The device page-table entry for `addr`: undefined if not mapped, else the DMA (or local)
   * address, the permissions, and the PFN word flags of the HMM map.
   */
  lookup(addr: number): { addr: number; write: boolean; local: boolean; dmaMapped: boolean } | undefined {
    const base = addr - (addr % CHUNK_BYTES);
    const c = this.#chunks.get(base);
    if (c === undefined) return undefined;
    const i = Math.floor((addr - base) / PAGE_SIZE);
    const bits = c.pt[i] ?? 0;
    if (bits === 0) return undefined;
    const hi = c.map.pfnList[2 * i + 1] ?? 0;
    return { addr: (c.addr[i] ?? 0) + (addr % PAGE_SIZE), write: (bits & DPT_WRITE) !== 0, local: (bits & DPT_LOCAL) !== 0, dmaMapped: (hi & HMM_PFN_DMA_MAPPED) !== 0 };
  }

  /**
   * Check the mirror against the CPU page table: every device PTE points at the page the CPU maps
   * there (never at a page the CPU already unmapped), write only where the CPU allows it, and
   * HMM_PFN_DMA_MAPPED is set exactly on the system pages the device maps. Returns violations.
   */
  checkInvariants(): string[] {
    const out: string[] = [];
    const mm = this.mm;
    for (const c of this.#chunks.values()) {
      const pfns = c.map.pfnList;
      for (let i = 0; i < DMIRROR_CHUNK_PAGES; i++) {
        const a = c.base + i * PAGE_SIZE;
        const bits = c.pt[i] ?? 0;
        const hi = pfns[2 * i + 1] ?? 0;
        const dmaMapped = (hi & HMM_PFN_DMA_MAPPED) !== 0;
        if (bits === 0) {
          if (dmaMapped) out.push(`0x${a.toString(16)}: DMA_MAPPED without a device PTE`);
          continue;
        }
        const f = mm.pteFlags(a);
        const cpuPfn = mm.walkPte(a);
        const wantPfn = (bits & DPT_LOCAL) !== 0 ? (c.addr[i] ?? 0) / PAGE_SIZE : hmmPfnToPhys(pfns, i) / PAGE_SIZE;
        if ((bits & DPT_LOCAL) !== 0) {
          if ((f & PTE_DEVICE_PRIVATE) === 0 || cpuPfn !== wantPfn) out.push(`0x${a.toString(16)}: device-local PTE but the CPU maps something else`);
          if (dmaMapped) out.push(`0x${a.toString(16)}: device-local page is DMA_MAPPED`);
        } else if ((bits & DPT_ATOMIC) !== 0) {
          if ((f & PTE_DEVICE_PRIVATE) === 0 || cpuPfn !== wantPfn) out.push(`0x${a.toString(16)}: atomic device PTE without the device-exclusive CPU entry`);
          if (!dmaMapped) out.push(`0x${a.toString(16)}: atomic device PTE without DMA_MAPPED`);
          continue;
        } else {
          if ((f & PTE_PRESENT) === 0 || cpuPfn !== wantPfn) out.push(`0x${a.toString(16)}: device maps pfn 0x${wantPfn.toString(16)} the CPU no longer maps`);
          if (!dmaMapped) out.push(`0x${a.toString(16)}: device PTE without DMA_MAPPED`);
        }
        if ((bits & DPT_WRITE) !== 0 && (f & PTE_WRITE) === 0) out.push(`0x${a.toString(16)}: device writable, CPU read-only`);
      }
    }
    return out;
  }

  /**
   * What the mirror holds: chunks, IOVA windows, device PTEs (local = device-private), PFN words
   * with HMM_PFN_DMA_MAPPED, and the HMM mapping metadata in bytes (pfn words + dma lists).
   */
  summary(): DmirrorSummary {
    const s: DmirrorSummary = { chunks: 0, iovaWindows: 0, devicePtes: 0, localPtes: 0, dmaMapped: 0, metadataBytes: 0 };
    for (const c of this.#chunks.values()) {
      s.chunks++;
      if (dmaUseIova(c.map.state)) s.iovaWindows++;
      s.metadataBytes += hmmDmaMapMetadataBytes(c.map);
      const pfns = c.map.pfnList;
      for (let i = 0; i < DMIRROR_CHUNK_PAGES; i++) {
        const bits = c.pt[i] ?? 0;
        if (bits !== 0) s.devicePtes++;
        if ((bits & DPT_LOCAL) !== 0) s.localPtes++;
        if (((pfns[2 * i + 1] ?? 0) & HMM_PFN_DMA_MAPPED) !== 0) s.dmaMapped++;
      }
    }
    return s;
  }

  /** Close the mirror (file release): unmap everything, remove the notifiers, free the maps. kernel: dmirror_fops_release() in lib/test_hmm.c. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Model: the mirror is torn down at close even while the process still maps the device file
    // (the kernel releases it with the file's last reference); those mappings hold plain pages.
    this.file.close();
    for (const c of this.#chunks.values()) {
      this.#zap(c, c.base, c.base + CHUNK_BYTES);
      mmuIntervalNotifierRemove(c);
      this.mdevice.hmm.hmmDmaMapFree(this.dev, c.map);
    }
    this.#chunks.clear();
    this.mdevice.mirrors.delete(this);
  }
}

/**
 * `dmirror_fops_mmap` (lib/test_hmm.c): a zeroed page for every page of the VMA, inserted with
 * vm_insert_page (the VMA becomes VM_MIXEDMAP; a private mapping maps them read-only). 0, -ENOMEM,
 * or vm_insert_page's error.
 */
function dmirrorFopsMmap(vma: VmArea, mm: MmStruct): number {
  const mem = mm.memory;
  for (let addr = vma.start; addr < vma.end; addr += PAGE_SIZE) {
    const page = mem.allocPages(0, GFP_ZERO);
    if (page === 0) return -Errno.ENOMEM;
    const r = vmInsertPage(mm, vma, addr, page);
    mem.pagePut(page); // __free_page on error; otherwise the PTE holds the page
    if (r !== 0) return r;
  }
  return 0;
}

function anyDmaMapped(c: DmirrorChunk, start: number, end: number): boolean {
  const pfns = c.map.pfnList;
  for (let a = start; a < end; a += PAGE_SIZE) {
    const i = (a - c.base) / PAGE_SIZE;
    if (((pfns[2 * i + 1] ?? 0) & HMM_PFN_DMA_MAPPED) !== 0) return true;
  }
  return false;
}

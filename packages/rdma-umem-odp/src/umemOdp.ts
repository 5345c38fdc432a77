// kernel: drivers/infiniband/core/umem_odp.c, include/rdma/ib_umem_odp.h
// ib_umem_odp on the HMM port: one HmmDmaMap per umem (one IOVA window, each page linked into its
// fixed slot, access bits kept in the HMM PFN word, no dma_addr_t per page), the mmu interval
// notifier that drives invalidation, and the pre-6.16 "legacy" layout (a pfn list plus a dma_addr_t
// list, one dma_map_page per page) for measurement.
import {
  DMA_BIDIRECTIONAL,
  DMA_MAPPING_ERROR,
  Errno,
  HMM_PFN_DMA_MAPPED,
  HMM_PFN_FLAGS,
  HMM_PFN_REQ_FAULT,
  HMM_PFN_REQ_WRITE,
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  HMM_RANGE_DEFAULT_TIMEOUT,
  HmmDmaMap,
  MmuIntervalNotifier,
  PAGE_SHIFT,
  PAGE_SIZE,
  PageFlag,
  dmaMapPage,
  dmaMappingError,
  dmaUnmapPage,
  hmmDmaMapMetadataBytes,
  hmmPfnClearFlags,
  hmmPfnHi,
  hmmPfnSet,
  hmmPfnToMapOrder,
  hmmPfnToPfn,
  hmmPfnToPhys,
  hmmPfnsAlloc,
  hmmPfnsSlice,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
} from '@dmakit/dma-core';
import type { Device, HmmPfns, HmmPort, HmmRange, MmStruct, MmuIntervalNotifierOps, PciP2pdmaMapState } from '@dmakit/dma-core';
import { IB_ACCESS_HUGETLB, IB_ACCESS_ON_DEMAND, ODP_DMA_ADDR_MASK_BITS, ODP_HUGE_PAGE_SHIFT, ODP_READ_ALLOWED_BIT, ODP_WRITE_ALLOWED_BIT, ibAccessWritable } from './constants.js';

/** The parts of `struct ib_device` that ODP uses. */
export interface IbDevice {
  readonly name: string;
  /** `ib_device.dma_device`: the PCI function that does the DMA. */
  readonly dmaDevice: Device;
  /** HMM, injected (apps/demo wires @dmakit/hmm in; tests may pass a fake). */
  readonly hmm: HmmPort;
  /** Use the pre-6.16 layout: pfn list + dma_addr_t list, `dma_map_page` per page. */
  readonly odpLegacy: boolean;
  /**
   * The window between `hmm_range_fault` (mmap lock dropped) and taking umem_mutex, where an
   * invalidation may slip in and force a retry. Tests and the demo use it to interleave races.
   */
  raceWindow: ((umem: IbUmemOdp) => void) | undefined;
}

/** Misuse the kernel would catch with lockdep or a WARN (a driver bug, not bad user input). */
export class UmemOdpError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UmemOdpError';
  }
}

/** `umem_mutex`. The model is single threaded; the mutex checks the locking rules. */
export class UmemMutex {
  #held = false;
  /** True while the mutex is held. */
  get held(): boolean {
    return this.#held;
  }
  /** Takes the mutex (kernel: mutex_lock(&umem_odp->umem_mutex)); throws if already held. */
  lock(): void {
    if (this.#held) throw new UmemOdpError('umem_mutex: already held (the kernel would deadlock)');
    this.#held = true;
  }
  /** Releases the mutex (kernel: mutex_unlock()); throws if not held. */
  unlock(): void {
    if (!this.#held) throw new UmemOdpError('umem_mutex: unlock of a mutex that is not held');
    this.#held = false;
  }
}

/** The umem's interval notifier (container_of gives the umem back). */
export class UmemOdpNotifier extends MmuIntervalNotifier {
  readonly umem: IbUmemOdp;
  constructor(umem: IbUmemOdp) {
    super();
    this.umem = umem;
  }
}

/** Counters of one umem. */
export interface UmemOdpStats {
  /** ib_umem_odp_map_dma_and_lock calls. */
  mapCalls: number;
  /** hmm_range_fault calls (including retries). */
  rangeFaults: number;
  /** -EBUSY from hmm_range_fault (an invalidation overlapped). */
  busyRetries: number;
  /** mmu_interval_read_retry said "invalidated" under umem_mutex. */
  seqRetries: number;
  /** Legacy path: dma_map_page calls. */
  legacyMaps: number;
  /** Entries unmapped by ib_umem_odp_unmap_dma_pages. */
  unmappedEntries: number;
  /** Pages marked dirty on unmap. */
  dirtied: number;
}

/** Simulated cost of one hmm_range_fault retry (the kernel sleeps in mmu_interval_read_begin). */
export const ODP_RETRY_COST_NS = 50_000;

/** `struct ib_umem_odp` (with its embedded `struct ib_umem`). */
export class IbUmemOdp {
  readonly ibdev: IbDevice;
  address = 0;
  length = 0;
  readonly writable: boolean;
  readonly access: number;
  readonly owningMm: MmStruct;
  readonly isOdp = true;
  readonly notifier: UmemOdpNotifier;
  /** `tgid` of the registering process. */
  readonly tgid: number;
  /** Replaces page_list + dma_list since 6.16. In legacy mode only pfnList is used. */
  readonly map = new HmmDmaMap();
  /** Legacy mode: one dma_addr_t (| ODP_READ/WRITE_ALLOWED_BIT) per page_shift page. */
  dmaList: Float64Array | null = null;
  readonly umemMutex = new UmemMutex();
  /** The driver MR (mlx5 sets the mlx5_ib_mr). */
  private: unknown = undefined;
  /** Number of DMA-mapped entries. */
  npages = 0;
  readonly isImplicitOdp: boolean;
  readonly pageShift: number;
  /** The implicit parent of a child umem. */
  readonly root: IbUmemOdp | undefined;
  released = false;
  readonly stats: UmemOdpStats = { mapCalls: 0, rangeFaults: 0, busyRetries: 0, seqRetries: 0, legacyMaps: 0, unmappedEntries: 0, dirtied: 0 };
  /** Huge-page umems fault through a per-4K scratch window (see mapDmaAndLock). Reused. */
  #scratch: HmmPfns | null = null;

  constructor(ibdev: IbDevice, mm: MmStruct, access: number, implicit: boolean, root: IbUmemOdp | undefined) {
    this.ibdev = ibdev;
    this.owningMm = mm;
    this.access = access;
    this.writable = ibAccessWritable(access);
    this.tgid = mm.pid;
    this.isImplicitOdp = implicit;
    this.root = root;
    this.pageShift = (access & IB_ACCESS_HUGETLB) !== 0 ? ODP_HUGE_PAGE_SHIFT : PAGE_SHIFT;
    this.notifier = new UmemOdpNotifier(this);
  }

  /** `ib_umem_start()`: first address covered by the notifier. */
  get start(): number {
    return this.notifier.start;
  }

  /** `ib_umem_end()`: one past the last covered address. */
  get end(): number {
    return this.notifier.last + 1;
  }

  /** Bytes per ODP page (kernel: BIT(umem_odp->page_shift)). */
  get pageSize(): number {
    return 2 ** this.pageShift;
  }

  /** Huge-page scratch of at least n entries, zeroed. */
  scratch(n: number): HmmPfns {
    let s = this.#scratch;
    if (s === null || s.length < 2 * n) {
      s = hmmPfnsAlloc(n);
      this.#scratch = s;
      return s;
    }
    const v = hmmPfnsSlice(s, 0, n);
    v.fill(0);
    return v;
  }

  /** Bytes held by the huge-page scratch PFN array. */
  get scratchBytes(): number {
    return this.#scratch?.byteLength ?? 0;
  }
}

/** `ib_umem_odp_num_pages()`: number of page_shift pages the umem covers. */
export function ibUmemOdpNumPages(umem: IbUmemOdp): number {
  return umem.isImplicitOdp ? 0 : (umem.end - umem.start) / umem.pageSize;
}

/** Bytes of per-page mapping metadata held by a umem (from the real array sizes). */
export function ibUmemOdpMetadataBytes(umem: IbUmemOdp): number {
  return hmmDmaMapMetadataBytes(umem.map) + (umem.dmaList?.byteLength ?? 0);
}

function isUint(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** `ib_init_umem_odp`: size the map, allocate the IOVA window, insert the interval notifier. */
function ibInitUmemOdp(umem: IbUmemOdp, ops: MmuIntervalNotifierOps): number {
  const pageSize = umem.pageSize;
  const endRaw = umem.address + umem.length;
  if (!Number.isSafeInteger(endRaw)) return -Errno.EOVERFLOW;
  const start = Math.floor(umem.address / pageSize) * pageSize;
  const end = Math.ceil(endRaw / pageSize) * pageSize;
  if (!Number.isSafeInteger(end) || end < pageSize) return -Errno.EOVERFLOW;
  const nrEntries = (end - start) / PAGE_SIZE;
  if (Math.floor((nrEntries * PAGE_SIZE) / pageSize) === 0) return -Errno.EINVAL;
  const dev = umem.ibdev.dmaDevice;
  if (umem.ibdev.odpLegacy) {
    // kernel (pre-6.16): pfn_list and dma_list, kvcalloc'ed per umem.
    umem.map.pfnList = hmmPfnsAlloc(nrEntries);
    umem.map.nrEntries = nrEntries;
    umem.map.dmaEntrySize = pageSize;
    umem.dmaList = new Float64Array((end - start) / pageSize);
  } else {
    const ret = umem.ibdev.hmm.hmmDmaMapAlloc(dev, umem.map, nrEntries, pageSize);
    if (ret < 0) return ret;
  }
  const ret = mmuIntervalNotifierInsert(umem.notifier, umem.owningMm, start, end - start, ops);
  if (ret < 0) {
    freeMap(umem);
    return ret;
  }
  return 0;
}

function freeMap(umem: IbUmemOdp): void {
  if (umem.ibdev.odpLegacy) {
    umem.map.pfnList = new Uint32Array(0);
    umem.dmaList = null;
    return;
  }
  umem.ibdev.hmm.hmmDmaMapFree(umem.ibdev.dmaDevice, umem.map);
}

/**
 * `ib_umem_odp_get(device, addr, size, access, ops)`: an ODP umem over [addr, addr + size) of
 * `mm` (the kernel uses current->mm). Returns the umem or a negative errno: -EINVAL (no
 * IB_ACCESS_ON_DEMAND, zero size, bad numbers), -EOVERFLOW, -EOPNOTSUPP (the device would need
 * swiotlb or syncs: hmm_dma_map_alloc refuses, so MR creation fails), -ENOMEM, -EFAULT (mm gone).
 */
export function ibUmemOdpGet(device: IbDevice, mm: MmStruct, addr: number, size: number, access: number, ops: MmuIntervalNotifierOps): IbUmemOdp | number {
  // kernel: WARN_ON_ONCE(!(access & IB_ACCESS_ON_DEMAND)) -> -EINVAL
  if ((access & IB_ACCESS_ON_DEMAND) === 0) return -Errno.EINVAL;
  if (!isUint(addr) || !isUint(size) || size === 0) return -Errno.EINVAL;
  if (mm.exited) return -Errno.EFAULT;
  const umem = new IbUmemOdp(device, mm, access, false, undefined);
  umem.address = addr;
  umem.length = size;
  const ret = ibInitUmemOdp(umem, ops);
  return ret < 0 ? ret : umem;
}

/**
 * `ib_umem_odp_alloc_implicit(device, access)`: the anchor of an implicit ODP MR (no range, no
 * map). -EINVAL with IB_ACCESS_HUGETLB.
 */
export function ibUmemOdpAllocImplicit(device: IbDevice, mm: MmStruct, access: number): IbUmemOdp | number {
  if ((access & IB_ACCESS_HUGETLB) !== 0) return -Errno.EINVAL;
  if ((access & IB_ACCESS_ON_DEMAND) === 0) return -Errno.EINVAL;
  if (mm.exited) return -Errno.EFAULT;
  return new IbUmemOdp(device, mm, access, true, undefined);
}

/**
 * `ib_umem_odp_alloc_child(root, addr, size, ops)`: a child umem of an implicit parent covering
 * [addr, addr + size). -EINVAL if root is not implicit, -EFAULT if the mm is gone (mmget_not_zero).
 */
export function ibUmemOdpAllocChild(root: IbUmemOdp, addr: number, size: number, ops: MmuIntervalNotifierOps): IbUmemOdp | number {
  if (!root.isImplicitOdp || root.released) return -Errno.EINVAL;
  if (!isUint(addr) || !isUint(size) || size === 0) return -Errno.EINVAL;
  if (root.owningMm.exited) return -Errno.EFAULT;
  const umem = new IbUmemOdp(root.ibdev, root.owningMm, root.access, false, root);
  umem.address = addr;
  umem.length = size;
  const ret = ibInitUmemOdp(umem, ops);
  return ret < 0 ? ret : umem;
}

/**
 * `ib_umem_odp_release(umem)`: unmap everything, remove the notifier, free the map. The driver
 * must have stopped the hardware from using the umem first.
 */
export function ibUmemOdpRelease(umem: IbUmemOdp): void {
  if (umem.released) {
    umem.ibdev.dmaDevice.host.dmaDebug.report('invalid-argument', umem.ibdev.dmaDevice, 'ib_umem_odp_release: umem released twice');
    return;
  }
  umem.released = true;
  if (umem.isImplicitOdp) return;
  umem.umemMutex.lock();
  ibUmemOdpUnmapDmaPages(umem, umem.start, umem.end);
  umem.umemMutex.unlock();
  mmuIntervalNotifierRemove(umem.notifier);
  freeMap(umem);
}

/**
 * `ib_umem_odp_map_dma_and_lock(umem, user_virt, bcnt, access_mask, fault)`: fault (or, with
 * fault=false, snapshot) the pages of [userVirt, userVirt + bcnt) through hmm_range_fault, retrying
 * -EBUSY for up to HMM_RANGE_DEFAULT_TIMEOUT ms of simulated time, then take umem_mutex and check
 * the notifier sequence. Returns the number of page_shift pages in the range with umem_mutex HELD,
 * or a negative errno with it not held (-EFAULT outside the umem or unreachable pages, -EPERM write
 * to a read-only VMA, -EINVAL mm gone or huge-page umem over small pages, -EBUSY timeout).
 * `accessMask`: HMM_PFN_WRITE to require writable pages. New path: nothing is DMA-mapped here (the
 * driver maps in populate_mtt via hmmDmaMapPfn). Legacy path: each new page is dma_map_page'd here.
 */
export function ibUmemOdpMapDmaAndLock(umem: IbUmemOdp, userVirt: number, bcnt: number, accessMask: number, fault: boolean): number {
  if (umem.isImplicitOdp || umem.released) return -Errno.EINVAL;
  if (!isUint(userVirt) || !isUint(bcnt)) return -Errno.EFAULT;
  const start = umem.start;
  const end = umem.end;
  if (userVirt < start || userVirt + bcnt > end) return -Errno.EFAULT;
  const mm = umem.owningMm;
  if (mm.exited) return -Errno.EINVAL; // mmget_not_zero failed
  umem.stats.mapCalls++;
  const pageSize = umem.pageSize;
  const huge = umem.pageShift > PAGE_SHIFT;
  const rangeStart = Math.floor(userVirt / pageSize) * pageSize;
  const rangeEnd = Math.min(Math.ceil((userVirt + Math.max(bcnt, 1)) / pageSize) * pageSize, end);
  const n4k = (rangeEnd - rangeStart) / PAGE_SIZE;
  const first4k = (rangeStart - start) / PAGE_SIZE;
  const map = umem.map;
  const hmm = umem.ibdev.hmm;
  const clock = umem.ibdev.dmaDevice.host.clock;
  let defaultFlags = 0;
  if (fault) {
    defaultFlags = HMM_PFN_REQ_FAULT;
    if ((accessMask & HMM_PFN_WRITE) !== 0) defaultFlags |= HMM_PFN_REQ_WRITE;
  }
  // Huge-page ODP: hmm_range_fault fills one word per 4 KiB page, while the map is indexed by
  // 2 MiB entry (the kernel indexes pfn_list by dma index in populate_mtt/unmap too). The model
  // faults into a per-4K scratch window and stores each entry's head word in its dma slot, so the
  // sticky DMA bits stay with the slot and the head pfn is the one that gets linked.
  const range: HmmRange = {
    notifier: umem.notifier,
    notifierSeq: 0,
    start: rangeStart,
    end: rangeEnd,
    hmmPfns: huge ? umem.scratch(n4k) : hmmPfnsSlice(map.pfnList, first4k, n4k),
    defaultFlags,
    pfnFlagsMask: 0,
  };
  const timeout = clock.now() + HMM_RANGE_DEFAULT_TIMEOUT * 1e6;
  for (;;) {
    range.notifierSeq = mmuIntervalReadBegin(umem.notifier);
    umem.stats.rangeFaults++;
    const ret = hmm.hmmRangeFault(range);
    if (ret === -Errno.EBUSY) {
      umem.stats.busyRetries++;
      if (clock.now() >= timeout) return -Errno.EBUSY;
      clock.charge(ODP_RETRY_COST_NS);
      continue;
    }
    if (ret < 0) return ret;
    umem.ibdev.raceWindow?.(umem);
    umem.umemMutex.lock();
    if (mmuIntervalReadRetry(umem.notifier, range.notifierSeq)) {
      umem.umemMutex.unlock();
      umem.stats.seqRetries++;
      if (clock.now() >= timeout) return -Errno.EBUSY;
      clock.charge(ODP_RETRY_COST_NS);
      continue;
    }
    break;
  }
  const step = pageSize / PAGE_SIZE;
  const firstDma = (rangeStart - start) / pageSize;
  const nDma = (rangeEnd - rangeStart) / pageSize;
  const pfns = map.pfnList;
  let ret = nDma;
  for (let k = 0; k < nDma; k++) {
    const idx = firstDma + k;
    if (huge) {
      const src = range.hmmPfns;
      const s = k * step;
      const hi = hmmPfnHi(src, s);
      if ((hi & HMM_PFN_VALID) === 0) continue;
      if (hmmPfnToMapOrder(src, s) + PAGE_SHIFT < umem.pageShift) {
        ret = -Errno.EINVAL; // hugetlb ODP over memory that is not backed by huge pages
        break;
      }
      hmmPfnSet(pfns, idx, hmmPfnToPfn(src, s), hi & HMM_PFN_FLAGS);
    }
    const hi = hmmPfnHi(pfns, idx);
    // In fault mode every entry is VALID here (kernel: WARN otherwise); snapshot mode skips holes.
    if ((hi & HMM_PFN_VALID) === 0) continue;
    if (umem.dmaList !== null) {
      ret = legacyMapOne(umem, idx, (hi & HMM_PFN_WRITE) !== 0 && (accessMask & HMM_PFN_WRITE) !== 0);
      if (ret < 0) break;
      ret = nDma;
    }
  }
  if (ret < 0) {
    umem.umemMutex.unlock();
    return ret;
  }
  return ret;
}

/** Legacy `ib_umem_odp_map_dma_single_page`: one dma_map_page per new page, flags resynced otherwise. */
function legacyMapOne(umem: IbUmemOdp, idx: number, write: boolean): number {
  const list = umem.dmaList;
  if (list === null) return -Errno.EINVAL;
  const bits = ODP_READ_ALLOWED_BIT | (write ? ODP_WRITE_ALLOWED_BIT : 0);
  const cur = list[idx] ?? 0;
  if (cur !== 0) {
    // Already mapped: a non-invalidating transition (read-only -> writable); resync the bits.
    list[idx] = cur - (cur % 4) + bits;
    return 0;
  }
  const dev = umem.ibdev.dmaDevice;
  const dma = dmaMapPage(dev, hmmPfnToPhys(umem.map.pfnList, idx), 0, umem.pageSize, DMA_BIDIRECTIONAL, 0);
  umem.stats.legacyMaps++;
  if (dmaMappingError(dev, dma) !== 0) return -Errno.EFAULT;
  list[idx] = dma + bits;
  umem.npages++;
  return 0;
}

/**
 * The DMA address of entry `idx` for the device's translation table (called by the driver's
 * populate_mtt under umem_mutex): `hmm_dma_map_pfn` on the new path (the fixed IOVA slot), the
 * stored dma_addr_t on the legacy path. DMA_MAPPING_ERROR on failure.
 */
export function ibUmemOdpDmaAddr(umem: IbUmemOdp, idx: number, p2p: PciP2pdmaMapState | null): number {
  const list = umem.dmaList;
  if (list !== null) {
    const e = list[idx] ?? 0;
    return e === 0 ? DMA_MAPPING_ERROR : e - (e % 4);
  }
  const wasMapped = (hmmPfnHi(umem.map.pfnList, idx) & HMM_PFN_DMA_MAPPED) !== 0;
  const dma = umem.ibdev.hmm.hmmDmaMapPfn(umem.ibdev.dmaDevice, umem.map, idx, p2p);
  // kernel: populate_mtt counts npages++ per populated entry; the model counts each entry once.
  if (!wasMapped && (hmmPfnHi(umem.map.pfnList, idx) & HMM_PFN_DMA_MAPPED) !== 0) umem.npages++;
  return dma;
}

/** Legacy access bits of entry idx (ODP_READ/WRITE_ALLOWED_BIT), 0 when not mapped. */
export function ibUmemOdpLegacyBits(umem: IbUmemOdp, idx: number): number {
  const e = umem.dmaList?.[idx] ?? 0;
  return e % 4 & ODP_DMA_ADDR_MASK_BITS;
}

/**
 * `ib_umem_odp_unmap_dma_pages(umem, virt, bound)`: with umem_mutex held, unmap every DMA-mapped
 * entry of [virt, bound) (clamped to the umem), dirty the pages that were writable, and clear every
 * flag of their PFN words. The hardware must no longer reference them (the driver zaps first).
 */
export function ibUmemOdpUnmapDmaPages(umem: IbUmemOdp, virt: number, bound: number): void {
  const dev = umem.ibdev.dmaDevice;
  if (!umem.umemMutex.held) {
    dev.host.dmaDebug.report('invalid-argument', dev, 'ib_umem_odp_unmap_dma_pages: umem_mutex not held (lockdep_assert_held)');
  }
  if (umem.isImplicitOdp) return;
  const start = umem.start;
  const pageSize = umem.pageSize;
  const lo = Math.max(virt, start);
  const hi = Math.min(bound, umem.end);
  if (!(hi > lo)) return;
  const pfns = umem.map.pfnList;
  const mem = umem.owningMm.memory;
  const hmm = umem.ibdev.hmm;
  const list = umem.dmaList;
  const i0 = Math.floor((lo - start) / pageSize);
  const i1 = Math.ceil((hi - start) / pageSize);
  for (let idx = i0; idx < i1; idx++) {
    const w = hmmPfnHi(pfns, idx);
    if (list !== null) {
      const e = list[idx] ?? 0;
      if (e !== 0) {
        dmaUnmapPage(dev, e - (e % 4), pageSize, DMA_BIDIRECTIONAL, 0);
        if ((e % 4 & ODP_WRITE_ALLOWED_BIT) !== 0) dirty(umem, mem, idx);
        list[idx] = 0;
        umem.npages--;
        umem.stats.unmappedEntries++;
      }
    } else if ((w & HMM_PFN_DMA_MAPPED) !== 0) {
      if (hmm.hmmDmaUnmapPfn(dev, umem.map, idx)) {
        if ((w & HMM_PFN_WRITE) !== 0) dirty(umem, mem, idx);
        umem.npages--;
        umem.stats.unmappedEntries++;
      }
    }
    if ((w & HMM_PFN_FLAGS) !== 0) hmmPfnClearFlags(pfns, idx, HMM_PFN_FLAGS);
  }
}

function dirty(umem: IbUmemOdp, mem: MmStruct['memory'], idx: number): void {
  // set_page_dirty(compound_head(page)): huge entries already hold the head pfn.
  mem.setPageFlags(hmmPfnToPhys(umem.map.pfnList, idx), PageFlag.DIRTY);
  umem.stats.dirtied++;
}

// kernel: drivers/iommu/iommu.c (iommu_map, iommu_map_nosync, iommu_sync_map, iommu_unmap,
// iommu_unmap_fast, iommu_iova_to_phys, iommu_iotlb_sync, iommu_flush_iotlb_all), include/linux/iommu.h
import { DmaFaultReason, Errno, isAligned, traceIommuIoPageFault, traceIommuMap, traceIommuUnmap } from '@dmakit/dma-core';
import type { Device, FaultInjection, Trace } from '@dmakit/dma-core';
import { Iotlb } from './iotlb.js';
import { VTD_DEFAULT_MAX_ADDRESS_MASK, iotlbInvalidationBlock, iotlbInvalidationBlockInit } from './invalidation.js';
import type { IommuDriver } from './invalidation.js';
import { IoPageTable, IOMMU_READ, IOMMU_WRITE } from './pageTable.js';
import { iommuPgsize } from './pgsize.js';
import type { PgsizeResult } from './pgsize.js';

/** `IOMMU_DOMAIN_DMA` (strict) or `IOMMU_DOMAIN_DMA_FQ` (lazy, flush queue). */
export type IommuDomainType = 'strict' | 'lazy';

/**
 * `struct iommu_iotlb_gather`: the IOVA range whose PTEs were cleared but not yet invalidated in
 * the IOTLB, the page size, the detached table pages, and whether the flush is deferred to the
 * flush queue (`queued`).
 */
export interface IommuIotlbGather {
  start: number;
  end: number;
  pgsize: number;
  freelist: number[];
  queued: boolean;
}

/** `iommu_iotlb_gather_init`. */
export function iommuIotlbGatherInit(g?: IommuIotlbGather): IommuIotlbGather {
  if (g === undefined) return { start: Number.MAX_SAFE_INTEGER, end: 0, pgsize: 0, freelist: [], queued: false };
  g.start = Number.MAX_SAFE_INTEGER;
  g.end = 0;
  g.pgsize = 0;
  // Reused only once its tables were released or handed to the flush queue (skip the builtin when empty).
  if (g.freelist.length !== 0) g.freelist.length = 0;
  g.queued = false;
  return g;
}

/** One refused device access, like `iommu_report_device_fault`. */
export interface IommuFaultRecord {
  readonly device: string;
  readonly iova: number;
  readonly access: 'read' | 'write';
  readonly reason: DmaFaultReason;
  readonly reasonName: 'not-present' | 'permission' | 'out-of-range';
  readonly domain: number;
  readonly time: number;
}

/** Domain counters: PTE writes, table pages, range and full invalidations, IOTLB entries dropped. */
export interface IommuDomainStats {
  pteWrites: number;
  tablePagesLive: number;
  tablePagesPeak: number;
  tableBytes: number;
  maps: number;
  unmaps: number;
  /** `iommu_sync_map` calls (map side) + `iommu_iotlb_sync` calls with a range (unmap side). */
  iotlbSyncs: number;
  iotlbSyncMaps: number;
  iotlbInvalidationsRange: number;
  iotlbInvalidationsFull: number;
  /** 4 KiB pages the ranged invalidations were asked to cover (the gathered ranges). */
  iotlbInvalidationPagesRequested: number;
  /** 4 KiB pages they covered: VT-d's PSI / AMD's S-bit blocks are naturally aligned powers of two. */
  iotlbInvalidationPagesCovered: number;
  /** Ranged invalidations the driver turned into a whole-domain flush (VT-d DSI fallback). */
  iotlbInvalidationDomainFallbacks: number;
  iotlbHits: number;
  iotlbMisses: number;
  iotlbWalks: number;
  staleIotlbAccesses: number;
  faults: number;
}

/** Shared per-IOMMU context a domain reports into. */
export interface IommuDomainHost {
  readonly trace: Trace;
  readonly faultInjection: FaultInjection;
  /** Current simulated time in ns (fault record timestamps). */
  now(): number;
  /** Records a translation fault the domain refused (like the kernel's report_iommu_fault()). */
  recordFault(rec: IommuFaultRecord): void;
}

let nextDomainId = 1;

/** A non-negative exact integer multiple of the power of two `g` (false for NaN and fractions). */
function granuleMultiple(x: number, g: number): boolean {
  return x >= 0 && x <= Number.MAX_SAFE_INTEGER && Math.floor(x / g) * g === x;
}

/**
 * `struct iommu_domain` of a paging type: a real multi-level IO page table, the IOTLB that caches
 * it, and the counters. dma-iommu's cookie (IOVA domain + flush queue) hangs off `cookie`.
 */
export class IommuDomain {
  readonly id: number;
  readonly name: string;
  readonly type: IommuDomainType;
  readonly pgtable: IoPageTable;
  readonly iotlb: Iotlb;
  /** Smallest page size = IOVA granule. */
  readonly granule: number;
  readonly #host: IommuDomainHost;
  readonly #pg: PgsizeResult = { pgsize: 0, count: 0 };
  /** The second-smallest page size (Infinity with only the granule): below it, every leaf is a granule. */
  readonly #secondPageSize: number;
  /** dma-iommu's per-domain state (set by the IOMMU when the domain is created). */
  cookie: unknown = null;
  /**
   * Gathers whose PTEs were cleared without an IOTLB invalidation yet. While > 0, an IOTLB hit is
   * checked against the page table to count stale accesses (the hardware would not look).
   */
  #pendingGathers = 0;
  maps = 0;
  unmaps = 0;
  iotlbSyncs = 0;
  iotlbSyncMaps = 0;
  staleIotlbAccesses = 0;
  faults = 0;
  readonly #gatherScratch: IommuIotlbGather = iommuIotlbGatherInit();
  /** Whose invalidation rule iotlb_sync follows (see IommuDriver). */
  readonly driver: IommuDriver;
  /** VT-d `cap_max_amask_val`: the largest PSI address mask before a DSI fallback. */
  readonly maxAddressMask: number;
  readonly #block = iotlbInvalidationBlockInit();

  constructor(
    host: IommuDomainHost,
    type: IommuDomainType,
    opts: { iovaBits?: number; pageSizes?: readonly number[]; iotlbEntries?: number; driver?: IommuDriver; maxAddressMask?: number } = {},
  ) {
    this.id = nextDomainId++;
    this.name = `iommu-domain-${this.id}`;
    this.type = type;
    this.#host = host;
    this.pgtable = new IoPageTable({ iovaBits: opts.iovaBits ?? 48, pageSizes: opts.pageSizes ?? [4096, 2 ** 21, 2 ** 30], faults: host.faultInjection });
    this.iotlb = new Iotlb(opts.iotlbEntries ?? 512);
    this.granule = this.pgtable.pageSizes[0] ?? 4096;
    this.#secondPageSize = this.pgtable.pageSizes[1] ?? Number.POSITIVE_INFINITY;
    this.driver = opts.driver ?? 'intel-vtd';
    this.maxAddressMask = opts.maxAddressMask ?? VTD_DEFAULT_MAX_ADDRESS_MASK;
  }

  /** `iommu_map_nosync`: 0 or -errno; on error nothing is left mapped. */
  mapNosync(iova: number, paddr: number, size: number, prot: number): number {
    const g = this.granule;
    // "unaligned: iova 0x%lx pa %pa size 0x%zx min_pagesz 0x%x" (also refuses negatives, NaN, fractions).
    if (!(granuleMultiple(iova, g) && granuleMultiple(paddr, g) && granuleMultiple(size, g))) return -Errno.EINVAL;
    // generic_pt's map_pages refuses a mapping that grants neither read nor write:
    // WARN_ON(!(prot & (IOMMU_READ | IOMMU_WRITE))) return -EINVAL (drivers/iommu/generic_pt/iommu_pt.h).
    // io-pgtable-arm returns 0 having installed nothing; either way no translation appears.
    if ((prot & (IOMMU_READ | IOMMU_WRITE)) === 0) return -Errno.EINVAL;
    // generic_pt refuses an IOVA range outside the table (pt_check_range → -ERANGE).
    if (iova + size > this.pgtable.iovaLimit) return -Errno.ERANGE;
    if (size < this.#secondPageSize) {
      // Below the second page size iommu_pgsize can only answer (granule, size / granule).
      const ret = this.pgtable.mapPages(iova, paddr, g, size / g, prot);
      if (ret < 0) return this.#undoPartialMap(iova, this.pgtable.partial, ret);
    } else {
      const sizes = this.pgtable.pageSizes;
      let mapped = 0;
      while (mapped < size) {
        const pgsize = iommuPgsize(sizes, iova + mapped, paddr + mapped, size - mapped, this.#pg);
        const ret = this.pgtable.mapPages(iova + mapped, paddr + mapped, pgsize, this.#pg.count, prot);
        if (ret < 0) return this.#undoPartialMap(iova, mapped + this.pgtable.partial, ret);
        mapped += ret;
      }
    }
    this.maps++;
    const trace = this.#host.trace;
    if (trace.enabled) traceIommuMap(trace, this.name, iova, paddr, size);
    return 0;
  }

  /**
   * `iommu_map_nosync` of one 4 KiB page, the hot case of `dma_iova_link`: when the page lands in
   * the cached leaf table it is one PTE store; otherwise (or for anything unusual: unaligned or
   * fractional addresses, no read/write permission) it is exactly `mapNosync`, with its errors.
   */
  mapNosyncPage(iova: number, paddr: number, prot: number): number {
    if ((prot & (IOMMU_READ | IOMMU_WRITE)) !== 0 && this.pgtable.mapLeaf4k(iova, paddr, prot)) {
      this.maps++;
      if (this.#host.trace.enabled) this.#traceMapPage(iova, paddr);
      return 0;
    }
    return this.mapNosync(iova, paddr, 4096, prot);
  }

  // Out of line: keeps mapNosyncPage small enough to inline into dma_iova_link's callers.
  #traceMapPage(iova: number, paddr: number): void {
    traceIommuMap(this.#host.trace, this.name, iova, paddr, 4096);
  }

  /** Unmap what a failed map call mapped (iommu_unmap, synced): nothing changes on error. */
  #undoPartialMap(iova: number, mapped: number, err: number): number {
    if (mapped > 0) this.unmap(iova, mapped);
    return err;
  }

  /**
   * `iommu_sync_map`: the driver's iotlb_sync_map (make new PTEs visible to a caching-mode IOMMU).
   * Counted, no cache effect: the model's IOTLB never caches a not-present translation.
   */
  syncMap(_iova: number, _size: number): number {
    this.iotlbSyncs++;
    this.iotlbSyncMaps++;
    return 0;
  }

  /** `iommu_map` = map_nosync + sync_map (unmapping again if the sync failed). */
  map(iova: number, paddr: number, size: number, prot: number): number {
    const ret = this.mapNosync(iova, paddr, size, prot);
    if (ret !== 0) return ret;
    const s = this.syncMap(iova, size);
    if (s !== 0) this.unmap(iova, size);
    return s;
  }

  /**
   * `iommu_unmap_fast`: clear PTEs from `iova` for `size` bytes (see IoPageTable.unmapRange for
   * the large-page and hole rules), extend the gather, leave the IOTLB alone. Returns the bytes
   * unmapped (0 if unaligned).
   */
  unmapFast(iova: number, size: number, gather: IommuIotlbGather): number {
    const g = this.granule;
    if (!Number.isSafeInteger(iova) || !Number.isSafeInteger(size) || iova < 0 || size <= 0) return 0;
    if (!isAligned(iova, g) || !isAligned(size, g)) return 0; // "unaligned: iova ... size ... min_pagesz"
    const before = gather.end;
    const unmapped = this.pgtable.unmapRange(iova, size, gather);
    if (unmapped > 0) {
      this.unmaps++;
      if (before === 0 && gather.end !== 0) this.#pendingGathers++;
    }
    const trace = this.#host.trace;
    if (trace.enabled) traceIommuUnmap(trace, this.name, iova, size, unmapped);
    return unmapped;
  }

  /**
   * `iommu_iotlb_sync`: invalidate the gathered range as the driver's command covers it, then free
   * the detached table pages. VT-d (intel_iommu_tlb_sync → cache_tag_flush_range) issues one PSI
   * whose address mask covers the naturally aligned power-of-two block around the range, or a DSI
   * when the mask exceeds MAMV; AMD one INVALIDATE_IOMMU_PAGES for its S-bit block; SMMUv3 the
   * range itself (see invalidation.ts). Everything cached inside the covered block is dropped.
   */
  iotlbSync(gather: IommuIotlbGather): void {
    if (gather.end !== 0 || gather.start !== Number.MAX_SAFE_INTEGER) {
      this.iotlbSyncs++;
      const b = iotlbInvalidationBlock(this.driver, gather.start, gather.end, this.maxAddressMask, this.#block);
      if (b.all) this.iotlb.invalidateRangeAsDomain(gather.start, gather.end);
      else this.iotlb.invalidateRange(b.start, b.end, gather.start, gather.end);
      if (this.#pendingGathers > 0) this.#pendingGathers--;
    }
    this.pgtable.releaseTables(gather.freelist);
    iommuIotlbGatherInit(gather);
  }

  /** `iommu_unmap`: unmap_fast + sync. */
  unmap(iova: number, size: number): number {
    const gather = iommuIotlbGatherInit(this.#gatherScratch);
    const unmapped = this.unmapFast(iova, size, gather);
    this.iotlbSync(gather);
    return unmapped;
  }

  /** `iommu_flush_iotlb_all` (the flush queue's whole-domain flush). */
  flushIotlbAll(): void {
    this.iotlb.invalidateAll();
    this.#pendingGathers = 0;
    const trace = this.#host.trace;
    // Model tracepoint named after iommu_flush_iotlb_all (iommu.h has none): ends a lazy window.
    if (trace.enabled) trace.emit('iommu:flush_iotlb_all', this.name, { type: this.type });
  }

  /** `iommu_iova_to_phys`: the physical address, or 0 if not mapped. */
  iovaToPhys(iova: number): number {
    return this.pgtable.walk(iova) ? this.pgtable.walkPhys : 0;
  }

  /**
   * The device side: translate one access inside one 4 KiB page, through the IOTLB first. A stale
   * IOTLB entry (PTE already cleared, invalidation deferred) still translates, as on hardware;
   * the model notices by re-walking while deferred invalidations are pending, and counts it.
   * Returns the physical address or a negative DmaFaultReason (the fault is recorded here).
   */
  translate(dev: Device, iova: number, write: boolean): number {
    // One fault call for every refusal (a small body the device port's hot path can inline).
    let reason: DmaFaultReason = DmaFaultReason.OUT_OF_RANGE;
    if (iova >= 0 && iova < this.pgtable.iovaLimit) {
      const pfn = Math.floor(iova / 4096);
      const off = iova - pfn * 4096;
      const tlb = this.iotlb;
      const pt = this.pgtable;
      let phys: number;
      let prot: number;
      if (tlb.lookup(pfn)) {
        phys = tlb.hitPhys + off;
        prot = tlb.hitProt;
        if (this.#pendingGathers > 0 && !(pt.walk(iova) && pt.walkPhys === phys)) {
          this.staleIotlbAccesses++;
          const trace = this.#host.trace;
          if (trace.enabled) trace.emit('iommu:stale_iotlb_access', dev.name, { iova, phys, write });
        }
      } else {
        tlb.stats.walks++;
        if (!pt.walk(iova)) return this.#fault(dev, iova, write, DmaFaultReason.NOT_PRESENT);
        phys = pt.walkPhys;
        prot = pt.walkProt;
        tlb.fill(pfn, phys - off, prot);
      }
      if ((prot & (write ? IOMMU_WRITE : IOMMU_READ)) !== 0) return phys;
      reason = DmaFaultReason.PERMISSION;
    }
    return this.#fault(dev, iova, write, reason);
  }

  #fault(dev: Device, iova: number, write: boolean, reason: DmaFaultReason): number {
    this.faults++;
    const reasonName = reason === DmaFaultReason.NOT_PRESENT ? 'not-present' : reason === DmaFaultReason.PERMISSION ? 'permission' : 'out-of-range';
    this.#host.recordFault({ device: dev.name, iova, access: write ? 'write' : 'read', reason, reasonName, domain: this.id, time: this.#host.now() });
    const trace = this.#host.trace;
    // include/trace/events/iommu.h io_page_fault(dev, iova, flags): IOMMU_FAULT_READ 0 / WRITE 1
    if (trace.enabled) traceIommuIoPageFault(trace, dev.name, iova, write ? 1 : 0);
    return reason;
  }

  /** Snapshot of the domain counters. */
  stats(): IommuDomainStats {
    const t = this.iotlb.stats;
    return {
      pteWrites: this.pgtable.pteWrites,
      tablePagesLive: this.pgtable.tablePagesLive,
      tablePagesPeak: this.pgtable.tablePagesPeak,
      tableBytes: this.pgtable.tableBytes,
      maps: this.maps,
      unmaps: this.unmaps,
      iotlbSyncs: this.iotlbSyncs,
      iotlbSyncMaps: this.iotlbSyncMaps,
      iotlbInvalidationsRange: t.invalidationsRange,
      iotlbInvalidationsFull: t.invalidationsFull,
      iotlbInvalidationPagesRequested: t.pagesRequested,
      iotlbInvalidationPagesCovered: t.pagesCovered,
      iotlbInvalidationDomainFallbacks: t.domainFallbacks,
      iotlbHits: t.hits,
      iotlbMisses: t.misses,
      iotlbWalks: t.walks,
      staleIotlbAccesses: this.staleIotlbAccesses,
      faults: this.faults,
    };
  }
}

// The IOMMU core API as free functions with the kernel's names and argument order.

/**
 * `iommu_map(domain, iova, paddr, size, prot)`: 0, -EINVAL (unaligned, bad numbers, or `prot`
 * with neither IOMMU_READ nor IOMMU_WRITE), -ERANGE (outside the table), -ENOMEM (table page
 * allocation), -EADDRINUSE (an entry is already present). The errnos are generic_pt's
 * (drivers/iommu/generic_pt/iommu_pt.h, map_pages/__map_range), the page table VT-d and AMD use;
 * io-pgtable-arm would say -EEXIST. On error nothing is changed.
 */
export function iommuMap(domain: IommuDomain, iova: number, paddr: number, size: number, prot: number): number {
  return domain.map(iova, paddr, size, prot);
}
/** `iommu_map_nosync`: like iommuMap without the iotlb_sync_map step. */
export function iommuMapNosync(domain: IommuDomain, iova: number, paddr: number, size: number, prot: number): number {
  return domain.mapNosync(iova, paddr, size, prot);
}
/** `iommu_sync_map`. */
export function iommuSyncMap(domain: IommuDomain, iova: number, size: number): number {
  return domain.syncMap(iova, size);
}
/** `iommu_unmap`: bytes unmapped (may exceed `size` for a large leaf, 0 when starting inside one). */
export function iommuUnmap(domain: IommuDomain, iova: number, size: number): number {
  return domain.unmap(iova, size);
}
/** `iommu_unmap_fast`: like iommuUnmap but the IOTLB flush is left to the caller's gather. */
export function iommuUnmapFast(domain: IommuDomain, iova: number, size: number, gather: IommuIotlbGather): number {
  return domain.unmapFast(iova, size, gather);
}
/** `iommu_iotlb_sync`. */
export function iommuIotlbSync(domain: IommuDomain, gather: IommuIotlbGather): void {
  domain.iotlbSync(gather);
}
/** `iommu_flush_iotlb_all`. */
export function iommuFlushIotlbAll(domain: IommuDomain): void {
  domain.flushIotlbAll();
}
/** `iommu_iova_to_phys`: physical address or 0. */
export function iommuIovaToPhys(domain: IommuDomain, iova: number): number {
  return domain.iovaToPhys(iova);
}

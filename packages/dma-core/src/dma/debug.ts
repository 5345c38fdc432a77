// kernel: kernel/dma/debug.c (CONFIG_DMA_API_DEBUG)
// Over 600 lines on purpose: this file mirrors one kernel file, kernel/dma/debug.c (~1,800 lines).
/**
 * dma-debug: watches every DMA API call from the side (the DMA API calls these hooks behind
 * `if (dbg.enabled)`), tracks live mappings in a hash keyed by (device, dma address) like the
 * kernel, and reports misuse. Reports are collected (`reports`, newest last); in 'strict' mode
 * the first report of a call is also thrown as a `DmaDebugError` after the bookkeeping of that
 * call is complete, so a throw never leaves the tracker half-updated.
 *
 * Beyond the kernel, the two-step IOVA API (dma_iova_*) is tracked too; those reports say
 * "(not checked by the kernel's dma-debug)".
 */
import type { Device } from '../device/device.js';
import {
  DMA_ATTR_DEBUGGING_IGNORE_CACHELINES,
  DMA_ATTR_MMIO,
  DMA_ATTR_REQUIRE_COHERENT,
  DMA_ATTR_SKIP_CPU_SYNC,
} from '../units/attrs.js';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, dmaDirectionName } from '../units/direction.js';
import type { DmaDataDirection } from '../units/direction.js';
import { DMA_MAPPING_ERROR } from '../units/dmaAddr.js';
import { PAGE_SIZE, SZ_64K } from '../units/page.js';
import type { DmaIovaState } from './iovaState.js';
import { SG_DMA_BUS_ADDRESS } from './scatterlist.js';
import type { SgTable } from './scatterlist.js';

declare module '../device/host.js' {
  interface DeviceHost {
    /**
     * The machine's dma-debug: the observer the DMA API front end calls (`if (dbg.enabled)
     * dbg.mapPhys(...)`, as kernel/dma/mapping.c calls debug_dma_map_phys()). Declared here, not
     * in device/, so the device layer does not import dma-debug.
     */
    readonly dmaDebug: DmaDebug;
  }
}

/**
 * dma-debug mode: off, warn (record reports) or strict (also throw). kernel: the dma_debug= boot option,
 * plus dmakit's strict mode.
 */
export type DmaDebugMode = 'off' | 'warn' | 'strict';

/** The rules dma-debug checks. Numbers refer to kernel-core.md section 8. */
export type DmaDebugRule =
  | 'unmap-error-address' // 1
  | 'unmap-not-mapped' // 2 (also double unmap)
  | 'size-mismatch' // 3
  | 'type-mismatch' // 4
  | 'cpu-address-mismatch' // 5
  | 'nents-mismatch' // 6
  | 'direction-mismatch' // 7
  | 'map-error-not-checked' // 8
  | 'sync-not-mapped' // 9
  | 'sync-out-of-range' // 10
  | 'sync-direction-mismatch' // 11
  | 'sync-for-cpu-device-read-only' // 12
  | 'sync-for-device-device-write-only' // 13
  | 'sync-sg-nents-mismatch' // 14
  | 'sg-segment-too-long' // 15
  | 'sg-segment-boundary' // 16
  | 'mmio-on-ram' // 20
  | 'cacheline-overlap' // 21
  | 'cacheline-overlap-overflow' // 22
  | 'leak-at-unbind' // 23
  | 'invalid-direction' // BUG() in the kernel
  | 'invalid-argument' // zero/negative/non-integer/oversized sizes and addresses
  | 'no-dma-mask' // WARN: dev->dma_mask not set
  | 'cc-convert-mapped' // set_memory_decrypted/encrypted on memory with a live DMA mapping (this model only)
  // The two-step API (the kernel's dma-debug does not track it; this model does):
  | 'iova-leak-at-unbind'
  | 'iova-link-out-of-range'
  | 'iova-link-unaligned'
  | 'iova-link-overlap'
  | 'iova-unlink-not-linked'
  | 'iova-destroy-size-mismatch'
  | 'iova-free-with-links'
  | 'iova-not-allocated'
  | 'iova-state-reused'
  // DMA pools (mm/dmapool.c prints these under DMAPOOL_DEBUG; the model reports them):
  | 'pool-destroy-busy'
  | 'pool-double-free'
  | 'pool-bad-free'
  | 'pool-corrupted'
  // dma-buf (drivers/dma-buf/dma-buf.c WARNs and dma_resv_assert_held; reported by @dmakit/dmabuf):
  | 'dmabuf-resv-not-held' // map/unmap/move_notify/pin without the reservation lock
  | 'dmabuf-resv-deadlock' // dma_resv_lock on a lock already held (would hang)
  | 'dmabuf-bad-attachment' // map/unmap/detach of an attachment that is not attached (after detach)
  | 'dmabuf-unmap-not-mapped' // unmap of a table this attachment did not map
  | 'dmabuf-detach-mapped' // detach while mappings are live (they are torn down)
  | 'dmabuf-release-attached' // last reference dropped while attachments exist
  | 'dmabuf-refcount' // put of a released buffer
  | 'dmabuf-bad-export'; // export info without the mandatory ops

/** `dma_debug_{single,sg,coherent,noncoherent,phy}`. 'single' is only used by sync references. */
export type DmaDebugEntryType = 'single' | 'phy' | 'sg' | 'coherent' | 'noncoherent';

/** `enum map_err_types`; NONE is MAP_ERR_CHECK_NOT_APPLICABLE (sg, coherent, pages). */
export const MapErrType = { NONE: 0, NOT_CHECKED: 1, CHECKED: 2 } as const;
export type MapErrType = (typeof MapErrType)[keyof typeof MapErrType];
const MAP_ERR_NAMES = ['dma map error check not applicable', 'dma map error not checked', 'dma map error checked'] as const;

/** Where a tracked mapping came from: the API call and the simulated time (ns). */
export interface DmaDebugOrigin {
  readonly call: string;
  readonly time: number;
  /** JS stack of the call, only with `captureStacks = true`. */
  readonly stack?: string;
}

/** One side of a check: what the driver passed to unmap/free/sync (or a mapping's own values). */
export interface DmaDebugSide {
  readonly dmaAddr: number;
  readonly size: number;
  readonly type: DmaDebugEntryType;
  readonly dir: number;
  readonly dirName: string;
  /** `sg_call_ents` (nents passed to the sg call), 0 for non-sg. */
  readonly nents: number;
  /** CPU/physical address when the call names one (coherent/pages free, sg entries). */
  readonly cpuAddr?: number;
}

/** A tracked mapping (`struct dma_debug_entry`) as reports and `dumpMappings` show it. */
export interface DmaDebugEntryInfo extends DmaDebugSide {
  readonly device: string;
  readonly paddr: number;
  readonly sgMappedEnts: number;
  readonly mapErrType: MapErrType;
  readonly mapErr: string;
  readonly attrs: number;
  readonly origin: DmaDebugOrigin;
}

/** A tracked two-step IOVA state (this model only). */
export interface DmaDebugIovaInfo {
  readonly device: string;
  readonly addr: number;
  readonly size: number;
  readonly granule: number;
  readonly linkedBytes: number;
  /** Linked [start, end) offsets, merged. */
  readonly linked: readonly (readonly [number, number])[];
  readonly origin: DmaDebugOrigin;
}

/** One scatterlist segment as dma-debug reports it (lengths and the device's segment limits). */
export interface DmaDebugSgSegment {
  readonly index: number;
  readonly length: number;
  readonly dmaAddr: number;
  readonly dmaLength: number;
  readonly maxSegmentSize: number;
  readonly segmentBoundaryMask: number;
}

/** Optional details of a report (both sides of a mismatch, the mapping's origin, ...). */
export interface DmaDebugReportDetails {
  /** The tracked mapping involved (map side). */
  readonly mapped?: DmaDebugEntryInfo;
  /** What the unmap/free call passed. */
  readonly unmapped?: DmaDebugSide;
  /** What the sync call passed. */
  readonly synced?: DmaDebugSide;
  /** The call that created the mapping / state involved. */
  readonly origin?: DmaDebugOrigin;
  /** Leak count at unbind. */
  readonly count?: number;
  readonly segment?: DmaDebugSgSegment;
  /** Cacheline number (phys >> 6) for the overlap rules. */
  readonly cacheline?: number;
  readonly iova?: DmaDebugIovaInfo;
  /** The offending IOVA call's range: offset and size (link/unlink/sync) or mapped_len (destroy). */
  readonly iovaCall?: { readonly call: string; readonly offset: number; readonly size: number };
}

export interface DmaDebugReport extends DmaDebugReportDetails {
  readonly rule: DmaDebugRule;
  readonly device: string;
  readonly message: string;
  /** Simulated time (ns) of the report. */
  readonly time: number;
}

/** Thrown in strict mode; carries the report. */
export class DmaDebugError extends Error {
  readonly report: DmaDebugReport;
  readonly rule: DmaDebugRule;
  readonly device: string;

  constructor(report: DmaDebugReport) {
    super(`DMA-API: ${report.device}: ${report.message} [${report.rule}]`);
    this.name = 'DmaDebugError';
    this.report = report;
    this.rule = report.rule;
    this.device = report.device;
  }
}

// kernel: kernel/dma/debug.c — HASH_FN_SHIFT 13 (8 KiB per bucket key), L1 cacheline 64 bytes,
// ACTIVE_CACHELINE_MAX_OVERLAP = (1 << RADIX_TREE_MAX_TAGS) - 1 = 7.
const HASH_FN_SIZE = 1 << 13;
const L1_CACHE_BYTES = 64;
const ACTIVE_CACHELINE_MAX_OVERLAP = 7;
const ULONG_MAX = Number.MAX_SAFE_INTEGER;
const NOT_BY_KERNEL = "(not checked by the kernel's dma-debug)";

const TYPE_NAMES: Readonly<Record<DmaDebugEntryType, string>> = {
  single: 'single',
  sg: 'scatter-gather',
  coherent: 'coherent',
  noncoherent: 'noncoherent',
  phy: 'phy',
};

/** `dir2name[]` */
function dirName(dir: number): string {
  return `DMA_${dmaDirectionName(dir)}`;
}

/** `0x%016llx` */
function a16(x: number): string {
  if (x === DMA_MAPPING_ERROR) return '0xffffffffffffffff';
  return Number.isFinite(x) && x >= 0 ? `0x${x.toString(16).padStart(16, '0')}` : String(x);
}

function hx(x: number): string {
  return Number.isFinite(x) && x >= 0 ? `0x${x.toString(16)}` : String(x);
}

function bucketOf(dmaAddr: number): number {
  return Math.floor(dmaAddr / HASH_FN_SIZE);
}

/** `struct dma_debug_entry` (pooled: the hot path reuses freed entries). */
class Entry {
  dev: Device;
  dmaAddr = 0;
  size = 0;
  type: DmaDebugEntryType = 'phy';
  dir = 0;
  sgCallEnts = 0;
  sgMappedEnts = 0;
  paddr = 0;
  mapErrType: MapErrType = MapErrType.NONE;
  attrs = 0;
  call = '';
  time = 0;
  stack: string | undefined = undefined;

  constructor(dev: Device) {
    this.dev = dev;
  }
}

/** `x mod granule` for a non-negative safe integer and a power-of-two granule (`&`, not an fmod). */
function granuleOffset(x: number, granule: number): number {
  return x & (granule - 1);
}

/** The call facts a report about an IOVA call carries. */
function iovaCallInfo(call: string, offset: number, size: number): { call: string; offset: number; size: number } {
  return { call, offset, size };
}

/** A tracked dma_iova_state: allocation facts plus a merged, sorted set of linked [start, end). */
class IovaTrack {
  readonly dev: Device;
  readonly addr: number;
  readonly size: number;
  readonly granule: number;
  readonly call: string;
  readonly time: number;
  readonly stack: string | undefined;
  readonly starts: number[] = [];
  readonly ends: number[] = [];
  linked = 0;

  constructor(dev: Device, addr: number, size: number, granule: number, call: string, time: number, stack: string | undefined) {
    this.dev = dev;
    this.addr = addr;
    this.size = size;
    this.granule = granule;
    this.call = call;
    this.time = time;
    this.stack = stack;
  }

  /** Index of the first interval whose end is > x. */
  #firstEndAfter(x: number): number {
    const ends = this.ends;
    let lo = 0;
    let hi = ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((ends[mid] ?? 0) > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  overlaps(s: number, e: number): boolean {
    const i = this.#firstEndAfter(s);
    return i < this.starts.length && (this.starts[i] ?? 0) < e;
  }

  covers(s: number, e: number): boolean {
    const i = this.#firstEndAfter(s);
    return i < this.starts.length && (this.starts[i] ?? 0) <= s && (this.ends[i] ?? 0) >= e;
  }

  /** Union [s, e) into the set; returns the index of the merged interval. */
  add(s: number, e: number): number {
    // First interval that touches or follows s (end >= s), so adjacent ranges merge.
    const i = this.#firstEndAfter(s - 1);
    let j = i;
    let ns = s;
    let ne = e;
    let removed = 0;
    while (j < this.starts.length && (this.starts[j] ?? 0) <= e) {
      const js = this.starts[j] ?? 0;
      const je = this.ends[j] ?? 0;
      ns = Math.min(ns, js);
      ne = Math.max(ne, je);
      removed += je - js;
      j++;
    }
    if (j === i + 1) {
      // The common case (a link that extends one linked range): no splice.
      this.starts[i] = ns;
      this.ends[i] = ne;
    } else if (j === i && i === this.starts.length) {
      this.starts.push(ns);
      this.ends.push(ne);
    } else if (j === i) {
      this.starts.splice(i, 0, ns);
      this.ends.splice(i, 0, ne);
    } else {
      this.starts.splice(i, j - i, ns);
      this.ends.splice(i, j - i, ne);
    }
    this.linked += ne - ns - removed;
    return i;
  }

  /** Remove [s, e) from the set (splitting as needed). */
  remove(s: number, e: number): void {
    let i = this.#firstEndAfter(s);
    while (i < this.starts.length && (this.starts[i] ?? 0) < e) {
      const is = this.starts[i] ?? 0;
      const ie = this.ends[i] ?? 0;
      const cutS = Math.max(is, s);
      const cutE = Math.min(ie, e);
      this.linked -= cutE - cutS;
      if (is < cutS && ie > cutE) {
        // split
        this.ends[i] = cutS;
        this.starts.splice(i + 1, 0, cutE);
        this.ends.splice(i + 1, 0, ie);
        return;
      }
      if (is < cutS) {
        this.ends[i] = cutS;
        i++;
      } else if (ie > cutE) {
        this.starts[i] = cutE;
        i++;
      } else {
        this.starts.splice(i, 1);
        this.ends.splice(i, 1);
      }
    }
  }

  /** Is the linked set exactly [0, len)? */
  isExactly(len: number): boolean {
    if (len === 0) return this.starts.length === 0;
    return this.starts.length === 1 && this.starts[0] === 0 && this.ends[0] === len;
  }
}

/** dma-debug: tracks every mapping and reports misuse of the DMA API. kernel: kernel/dma/debug.c. */
export class DmaDebug {
  mode: DmaDebugMode;
  /** Collected reports, newest last (bounded by `maxReports`). */
  readonly reports: DmaDebugReport[] = [];
  /** Every error seen (`error_count`), including filtered and dropped ones. */
  errorCount = 0;
  /** Reports dropped because `reports` reached `maxReports`. */
  droppedReports = 0;
  maxReports = 100_000;
  /** `driver_filter`: only record/throw reports for this device name (null: all devices). */
  driverFilter: string | null = null;
  /**
   * `all_errors`. The kernel defaults to 0 with `num_errors` = 1 (only the first error is
   * printed); the model records every error by default. Set false to get the kernel's quota.
   */
  allErrors = true;
  /** `num_errors`: how many more errors are recorded when `allErrors` is false. */
  numErrors = 1;
  /** Capture a JS stack into each mapping's origin (costly; off by default). */
  captureStacks = false;
  /**
   * `dma_get_cache_alignment()`. The overlap check only fires when it is >= L1_CACHE_BYTES (64):
   * true on arm64 and other non-coherent arches; x86 returns 1 and skips it since ~7.0.
   */
  cacheAlignment = L1_CACHE_BYTES;

  readonly #hash = new Map<number, Entry[]>();
  #count = 0;
  /** Largest tracked size so far: bounds the backwards bucket scan of the containing lookup. */
  #maxSize = 0;
  readonly #pool: Entry[] = [];
  /** cacheline number -> (overlap << 1) | first-entry-is-cache-clean (the kernel's radix tags). */
  readonly #cachelines = new Map<number, number>();
  readonly #iova = new Map<DmaIovaState, IovaTrack>();
  #pending: DmaDebugReport | null = null;
  // Scratch result of #findContain: did the entry contain the whole synced range?
  #containFull = false;
  #partial: Entry | null = null;

  constructor(mode: DmaDebugMode) {
    this.mode = mode;
  }

  /** True unless the mode is 'off'. */
  get enabled(): boolean {
    return this.mode !== 'off';
  }

  /** Number of tracked mappings (`nr_total_entries - num_free_entries`). */
  get entries(): number {
    return this.#count;
  }

  /** Number of tracked two-step IOVA states. */
  get iovaStates(): number {
    return this.#iova.size;
  }

  /** Record a report; in strict mode also throw DmaDebugError. */
  report(rule: DmaDebugRule, dev: Device, message: string, extra?: DmaDebugReportDetails): void {
    this.#raise(rule, dev, message, extra);
    this.#done();
  }

  /**
   * A CC guest converts `[phys, +len)` (set_memory_decrypted/encrypted): every live mapping or
   * allocation whose CPU range overlaps it is reported, once per call (the device would lose access
   * or see the other world's bytes mid-DMA). Not checked by the kernel's dma-debug.
   */
  ccConvertCheck(phys: number, len: number, enc: boolean): void {
    if (this.mode === 'off') return;
    for (const bucket of this.#hash.values()) {
      for (const e of bucket) {
        if (e.paddr < phys + len && phys < e.paddr + e.size) {
          const fn = enc ? 'set_memory_encrypted' : 'set_memory_decrypted';
          this.report('cc-convert-mapped', e.dev, `${fn} of [${hx(phys)}, +${len}) overlaps a live ${e.type} mapping [device address=${a16(e.dmaAddr)}] [size=${e.size} bytes] (not checked by the kernel's dma-debug)`, {
            mapped: this.#info(e),
            origin: origin(e),
          });
          return;
        }
      }
    }
  }

  /** Forget every report, mapping and IOVA state. */
  reset(): void {
    this.reports.length = 0;
    this.errorCount = 0;
    this.droppedReports = 0;
    this.numErrors = 1;
    this.#hash.clear();
    this.#count = 0;
    this.#maxSize = 0;
    this.#cachelines.clear();
    this.#iova.clear();
    this.#pending = null;
  }

  /** `debug_dma_dump_mappings(dev)`: the tracked mappings (of one device, or all). */
  dumpMappings(dev?: Device): DmaDebugEntryInfo[] {
    const out: DmaDebugEntryInfo[] = [];
    for (const bucket of this.#hash.values()) {
      for (const e of bucket) if (dev === undefined || e.dev === dev) out.push(this.#info(e));
    }
    out.sort((a, b) => a.dmaAddr - b.dmaAddr);
    return out;
  }

  /** The tracked two-step IOVA states (of one device, or all). */
  dumpIovaStates(dev?: Device): DmaDebugIovaInfo[] {
    const out: DmaDebugIovaInfo[] = [];
    for (const t of this.#iova.values()) if (dev === undefined || t.dev === dev) out.push(iovaInfo(t));
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // Streaming single mappings

  /** `debug_dma_map_phys`. `call` names the API entry point for the origin. */
  mapPhys(dev: Device, phys: number, size: number, dir: DmaDataDirection, dmaAddr: number, attrs: number, call = 'dma_map_phys'): void {
    if (this.mode === 'off' || dmaAddr === DMA_MAPPING_ERROR) return;
    const e = this.#newEntry(dev, 'phy', dmaAddr, size, dir, phys, attrs, call);
    e.mapErrType = MapErrType.NOT_CHECKED;
    // kernel: only the first pfn is looked at (pfn_valid && !PageReserved).
    if ((attrs & DMA_ATTR_MMIO) !== 0 && dev.host.physIsRam(phys, 1)) {
      this.#raise('mmio-on-ram', dev, `dma_map_resource called for RAM address ${hx(phys)}`, { mapped: this.#info(e), origin: origin(e) });
    }
    this.#addEntry(e);
    this.#done();
  }

  /** `debug_dma_mapping_error`: flip the first matching unchecked entry to CHECKED. */
  mappingError(dev: Device, dmaAddr: number): void {
    if (this.mode === 'off') return;
    const b = this.#hash.get(bucketOf(dmaAddr));
    if (b === undefined) return;
    for (const e of b) {
      if (e.dmaAddr === dmaAddr && e.dev === dev && e.mapErrType === MapErrType.NOT_CHECKED) {
        e.mapErrType = MapErrType.CHECKED;
        return;
      }
    }
  }

  /** `debug_dma_unmap_phys`. */
  unmapPhys(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection): void {
    if (this.mode === 'off') return;
    this.#checkUnmap(dev, dmaAddr, size, 'phy', dir, 0, -1);
    this.#done();
  }

  // ---------------------------------------------------------------------------------------------
  // Scatter-gather

  /**
   * `debug_dma_map_sg`: one entry per mapped DMA segment (P2P bus-address segments are skipped:
   * they are never unmapped). `nents` is what the driver passed, `mappedEnts` what map returned.
   */
  mapSg(dev: Device, sgt: SgTable, nents: number, mappedEnts: number, dir: DmaDataDirection, attrs: number, call = 'dma_map_sg'): void {
    if (this.mode === 'off' || !(mappedEnts > 0)) return;
    const n = Math.min(mappedEnts, sgt.capacity);
    for (let i = 0; i < n; i++) {
      if (((sgt.dmaFlags[i] ?? 0) & SG_DMA_BUS_ADDRESS) !== 0) continue;
      const e = this.#newEntry(dev, 'sg', sgt.dmaAddress[i] ?? 0, sgt.dmaLength[i] ?? 0, dir, sgt.phys[i] ?? 0, attrs, call);
      e.sgCallEnts = nents;
      e.sgMappedEnts = mappedEnts;
      this.#checkSgSegment(dev, i, sgt.length[i] ?? 0, e);
      this.#addEntry(e);
    }
    this.#done();
  }

  /** `debug_dma_unmap_sg`: `nelems` is what the driver passes to unmap (must equal map's nents). */
  unmapSg(dev: Device, sgt: SgTable, nelems: number, dir: DmaDataDirection): void {
    if (this.mode === 'off') return;
    const n = Math.min(nelems, sgt.capacity);
    let mappedEnts = 0;
    let looked = false;
    for (let i = 0; i < n; i++) {
      if (mappedEnts !== 0 && i >= mappedEnts) break;
      if (((sgt.dmaFlags[i] ?? 0) & SG_DMA_BUS_ADDRESS) !== 0) continue;
      const addr = sgt.dmaAddress[i] ?? 0;
      const len = sgt.dmaLength[i] ?? 0;
      if (!looked) {
        // kernel: get_nr_mapped_entries() from the first segment's entry
        looked = true;
        mappedEnts = this.#findExact(dev, addr, len, 'sg', dir, nelems)?.sgMappedEnts ?? 0;
      }
      this.#checkUnmap(dev, addr, len, 'sg', dir, nelems, sgt.phys[i] ?? 0);
    }
    this.#done();
  }

  // ---------------------------------------------------------------------------------------------
  // Coherent and non-coherent allocations

  /** `debug_dma_alloc_coherent` (the CPU address is the linear-map address = phys here). */
  allocCoherent(dev: Device, size: number, dmaAddr: number, cpuAddr: number, attrs: number, call = 'dma_alloc_coherent'): void {
    if (this.mode === 'off' || dmaAddr === DMA_MAPPING_ERROR) return;
    this.#addEntry(this.#newEntry(dev, 'coherent', dmaAddr, size, DMA_BIDIRECTIONAL, cpuAddr, attrs, call));
    this.#done();
  }

  /** `debug_dma_free_coherent`. */
  freeCoherent(dev: Device, size: number, cpuAddr: number, dmaAddr: number): void {
    if (this.mode === 'off') return;
    this.#checkUnmap(dev, dmaAddr, size, 'coherent', DMA_BIDIRECTIONAL, 0, cpuAddr);
    this.#done();
  }

  /** `debug_dma_alloc_pages` (dma_alloc_pages / dma_alloc_noncoherent). */
  allocPages(dev: Device, phys: number, size: number, dir: DmaDataDirection, dmaAddr: number, call = 'dma_alloc_pages'): void {
    if (this.mode === 'off' || dmaAddr === DMA_MAPPING_ERROR) return;
    this.#addEntry(this.#newEntry(dev, 'noncoherent', dmaAddr, size, dir, phys, 0, call));
    this.#done();
  }

  /** `debug_dma_free_pages`. */
  freePages(dev: Device, phys: number, size: number, dir: DmaDataDirection, dmaAddr: number): void {
    if (this.mode === 'off') return;
    this.#checkUnmap(dev, dmaAddr, size, 'noncoherent', dir, 0, phys);
    this.#done();
  }

  // ---------------------------------------------------------------------------------------------
  // Sync

  /** kernel: debug_dma_sync_single_for_cpu() in kernel/dma/debug.c. */
  syncSingleForCpu(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection): void {
    if (this.mode === 'off') return;
    this.#checkSync(dev, dmaAddr, size, 'single', dir, 0, true);
    this.#done();
  }

  /** kernel: debug_dma_sync_single_for_device() in kernel/dma/debug.c. */
  syncSingleForDevice(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection): void {
    if (this.mode === 'off') return;
    this.#checkSync(dev, dmaAddr, size, 'single', dir, 0, false);
    this.#done();
  }

  /** kernel: debug_dma_sync_sg_for_cpu() in kernel/dma/debug.c. */
  syncSgForCpu(dev: Device, sgt: SgTable, nelems: number, dir: DmaDataDirection): void {
    if (this.mode === 'off') return;
    this.#syncSg(dev, sgt, nelems, dir, true);
    this.#done();
  }

  /** kernel: debug_dma_sync_sg_for_device() in kernel/dma/debug.c. */
  syncSgForDevice(dev: Device, sgt: SgTable, nelems: number, dir: DmaDataDirection): void {
    if (this.mode === 'off') return;
    this.#syncSg(dev, sgt, nelems, dir, false);
    this.#done();
  }

  // ---------------------------------------------------------------------------------------------
  // The two-step IOVA API (not tracked by the kernel's dma-debug)

  /** After `dma_iova_try_alloc`: tracks the state if it was allocated (`state.size > 0`). */
  iovaTryAlloc(dev: Device, state: DmaIovaState, call = 'dma_iova_try_alloc'): void {
    if (this.mode === 'off') return;
    const old = this.#iova.get(state);
    if (old !== undefined) {
      this.#iova.delete(state);
      this.#raise(
        'iova-state-reused',
        dev,
        `dma_iova_try_alloc on a dma_iova_state that still holds an IOVA allocation [size=${old.size}] [linked=${old.linked} bytes]: the old range leaks ${NOT_BY_KERNEL}`,
        { iova: iovaInfo(old), origin: iovaOrigin(old) },
      );
    }
    if (state.size > 0) {
      const boundary = dev.dmaOps?.getMergeBoundary(dev) ?? PAGE_SIZE - 1;
      const granule = boundary > 0 ? boundary + 1 : PAGE_SIZE;
      const time = dev.host.clock.now();
      this.#iova.set(state, new IovaTrack(dev, state.addr, state.size, granule, call, time, this.captureStacks ? new Error().stack : undefined));
    }
    this.#done();
  }

  /** After a successful `dma_iova_link`. */
  iovaLink(dev: Device, state: DmaIovaState, _phys: number, offset: number, size: number, _dir: DmaDataDirection, _attrs: number): void {
    if (this.mode === 'off') return;
    const t = this.#iovaGet(dev, state, 'dma_iova_link', offset, size);
    if (t !== null) {
      const end = offset + size;
      if (!(offset >= 0 && size > 0 && end <= t.size)) {
        this.#raise(
          'iova-link-out-of-range',
          dev,
          `dma_iova_link outside the allocated IOVA range [offset=${hx(offset)}] [size=${size}] [iova size=${t.size}] ${NOT_BY_KERNEL}`,
          { iova: iovaInfo(t), iovaCall: iovaCallInfo('dma_iova_link', offset, size), origin: iovaOrigin(t) },
        );
      }
      // Every link but the first must start on a granule boundary of the IOVA (state->addr +
      // offset), which is offset % granule when the try_alloc phys hint was granule aligned.
      if (offset > 0 && granuleOffset(t.addr + offset, t.granule) !== 0) {
        this.#raise(
          'iova-link-unaligned',
          dev,
          `dma_iova_link at an offset that is not aligned to the merge boundary [offset=${hx(offset)}] [granule=${t.granule}] ${NOT_BY_KERNEL}`,
          { iova: iovaInfo(t), iovaCall: iovaCallInfo('dma_iova_link', offset, size), origin: iovaOrigin(t) },
        );
      }
      if (size > 0 && t.overlaps(offset, end)) {
        this.#raise(
          'iova-link-overlap',
          dev,
          `dma_iova_link over an already linked range [offset=${hx(offset)}] [size=${size}] ${NOT_BY_KERNEL}`,
          { iova: iovaInfo(t), iovaCall: iovaCallInfo('dma_iova_link', offset, size), origin: iovaOrigin(t) },
        );
      }
      if (size > 0) {
        const k = t.add(offset, end);
        // Every range except the last must end on a granule boundary: a gap after a range that
        // ends mid-granule means the device sees the rest of that granule mapped to other data.
        const prevEnd = k > 0 ? (t.ends[k - 1] ?? 0) : -1;
        const thisEnd = t.ends[k] ?? 0;
        const hasNext = k + 1 < t.starts.length;
        if ((prevEnd >= 0 && granuleOffset(t.addr + prevEnd, t.granule) !== 0) || (hasNext && granuleOffset(t.addr + thisEnd, t.granule) !== 0)) {
          this.#raise(
            'iova-link-unaligned',
            dev,
            `dma_iova_link: a range that is not the last ends inside a granule [granule=${t.granule}] ${NOT_BY_KERNEL}`,
            { iova: iovaInfo(t), iovaCall: iovaCallInfo('dma_iova_link', offset, size), origin: iovaOrigin(t) },
          );
        }
      }
    }
    this.#done();
  }

  /**
   * After dma_iova_sync: checks the range is linked. dmakit's check; the kernel has no dma-debug hook
   * for the IOVA API.
   */
  iovaSync(dev: Device, state: DmaIovaState, offset: number, size: number): void {
    if (this.mode === 'off') return;
    this.#iovaGet(dev, state, 'dma_iova_sync', offset, size);
    this.#done();
  }

  /**
   * After dma_iova_unlink: checks the range was linked. dmakit's check; the kernel has no dma-debug hook
   * for the IOVA API.
   */
  iovaUnlink(dev: Device, state: DmaIovaState, offset: number, size: number, _dir: DmaDataDirection): void {
    if (this.mode === 'off') return;
    const t = this.#iovaGet(dev, state, 'dma_iova_unlink', offset, size);
    if (t !== null) {
      const end = offset + size;
      if (!(size > 0 && t.covers(offset, end))) {
        this.#raise(
          'iova-unlink-not-linked',
          dev,
          `dma_iova_unlink of a range that is not linked [offset=${hx(offset)}] [size=${size}] ${NOT_BY_KERNEL}`,
          { iova: iovaInfo(t), iovaCall: { call: 'dma_iova_unlink', offset, size }, origin: iovaOrigin(t) },
        );
      }
      if (size > 0) t.remove(offset, end);
    }
    this.#done();
  }

  /**
   * After dma_iova_destroy: checks mapped_len matches what is linked. dmakit's check; the kernel has no
   * dma-debug hook for the IOVA API.
   */
  iovaDestroy(dev: Device, state: DmaIovaState, mappedLen: number, _dir: DmaDataDirection): void {
    if (this.mode === 'off') return;
    const t = this.#iovaGet(dev, state, 'dma_iova_destroy', 0, mappedLen);
    if (t !== null) {
      this.#iova.delete(state);
      // Contract: [0, mapped_len) is fully linked and is the only linked part of the state.
      if (!t.isExactly(mappedLen)) {
        this.#raise(
          'iova-destroy-size-mismatch',
          dev,
          `dma_iova_destroy with mapped_len=${mappedLen} but ${t.linked} bytes linked${t.linked > 0 ? ` in ${t.starts.length} range(s) from ${hx(t.starts[0] ?? 0)}` : ''} ${NOT_BY_KERNEL}`,
          { iova: iovaInfo(t), iovaCall: { call: 'dma_iova_destroy', offset: 0, size: mappedLen }, origin: iovaOrigin(t) },
        );
      }
    }
    this.#done();
  }

  /**
   * After dma_iova_free: checks nothing is still linked. dmakit's check; the kernel has no dma-debug
   * hook for the IOVA API.
   */
  iovaFree(dev: Device, state: DmaIovaState): void {
    if (this.mode === 'off') return;
    const t = this.#iovaGet(dev, state, 'dma_iova_free', 0, 0);
    if (t !== null) {
      this.#iova.delete(state);
      if (t.linked > 0) {
        this.#raise(
          'iova-free-with-links',
          dev,
          `dma_iova_free while ${t.linked} bytes are still linked (unlink them first) ${NOT_BY_KERNEL}`,
          { iova: iovaInfo(t), origin: iovaOrigin(t) },
        );
      }
    }
    this.#done();
  }

  // ---------------------------------------------------------------------------------------------
  // Unbind

  /**
   * BUS_NOTIFY_UNBOUND_DRIVER: report leaked mappings and IOVA states, then forget them (the
   * kernel keeps the entries; dropping them keeps later checks about the next driver clean).
   */
  unbind(dev: Device): void {
    if (this.mode === 'off') return;
    const victims: Entry[] = [];
    for (const bucket of this.#hash.values()) for (const e of bucket) if (e.dev === dev) victims.push(e);
    const leakedStates: IovaTrack[] = [];
    for (const [state, t] of this.#iova) {
      if (t.dev === dev) {
        leakedStates.push(t);
        this.#iova.delete(state);
      }
    }
    for (const e of victims) this.#removeEntry(e);
    const example = victims[victims.length - 1];
    if (example !== undefined) {
      this.#raise(
        'leak-at-unbind',
        dev,
        `device driver has pending DMA allocations while released from device [count=${victims.length}]\n` +
          `One of leaked entries details: [device address=${a16(example.dmaAddr)}] [size=${example.size} bytes] ` +
          `[mapped with ${dirName(example.dir)}] [mapped as ${TYPE_NAMES[example.type]}]`,
        { count: victims.length, mapped: this.#info(example), origin: origin(example) },
      );
    }
    const t = leakedStates[leakedStates.length - 1];
    if (t !== undefined) {
      this.#raise(
        'iova-leak-at-unbind',
        dev,
        `device driver has ${leakedStates.length} allocated dma_iova_state(s) while released from device ` +
          `[example: size=${t.size} linked=${t.linked} bytes, allocated by ${t.call}] ${NOT_BY_KERNEL}`,
        { count: leakedStates.length, iova: iovaInfo(t), origin: iovaOrigin(t) },
      );
    }
    for (const e of victims) this.#release(e);
    this.#done();
  }

  // ---------------------------------------------------------------------------------------------
  // Internals

  #raise(rule: DmaDebugRule, dev: Device, message: string, extra?: DmaDebugReportDetails): void {
    if (this.mode === 'off') return;
    this.errorCount++;
    // kernel: err_printk consumes the num_errors quota even when the driver filter hides it.
    if (!this.allErrors) {
      if (this.numErrors <= 0) return;
      this.numErrors--;
    }
    if (this.driverFilter !== null && this.driverFilter !== dev.name) return;
    const r: DmaDebugReport = { rule, device: dev.name, message, time: dev.host.clock.now(), ...extra };
    if (this.reports.length < this.maxReports) this.reports.push(r);
    else this.droppedReports++;
    if (this.mode === 'strict') this.#pending ??= r;
  }

  /** End of a hook: in strict mode throw the first report of this call. */
  #done(): void {
    const p = this.#pending;
    if (p !== null) {
      this.#pending = null;
      if (this.mode === 'strict') throw new DmaDebugError(p);
    }
  }

  #newEntry(dev: Device, type: DmaDebugEntryType, dmaAddr: number, size: number, dir: number, paddr: number, attrs: number, call: string): Entry {
    const e = this.#pool.pop() ?? new Entry(dev);
    e.dev = dev;
    e.type = type;
    e.dmaAddr = dmaAddr;
    e.size = size;
    e.dir = dir;
    e.paddr = paddr;
    e.attrs = attrs;
    e.sgCallEnts = 0;
    e.sgMappedEnts = 0;
    e.mapErrType = MapErrType.NONE;
    e.call = call;
    e.time = dev.host.clock.now();
    e.stack = this.captureStacks ? new Error().stack : undefined;
    return e;
  }

  #release(e: Entry): void {
    e.stack = undefined;
    if (this.#pool.length < 4096) this.#pool.push(e);
  }

  /** `add_dma_entry`: hash insert plus active-cacheline tracking and its overlap check. */
  #addEntry(e: Entry): void {
    const key = bucketOf(e.dmaAddr);
    const b = this.#hash.get(key);
    if (b === undefined) this.#hash.set(key, [e]);
    else b.push(e);
    this.#count++;
    if (e.size > this.#maxSize) this.#maxSize = e.size;

    // kernel: active_cacheline_insert() — a device that only reads memory cannot make the CPU
    // consume stale data, so TO_DEVICE mappings are not tracked.
    if (e.dir === DMA_TO_DEVICE) return;
    const cln = Math.floor(e.paddr / L1_CACHE_BYTES);
    const isClean = (e.attrs & (DMA_ATTR_DEBUGGING_IGNORE_CACHELINES | DMA_ATTR_REQUIRE_COHERENT)) !== 0;
    const v = this.#cachelines.get(cln);
    if (v === undefined) {
      this.#cachelines.set(cln, isClean ? 1 : 0);
      return;
    }
    // -EEXIST: bump the overlap count (saturating at 7 like the radix tags).
    const overlap = (v >> 1) + 1;
    if (overlap > ACTIVE_CACHELINE_MAX_OVERLAP) {
      if (!isClean) {
        this.#raise(
          'cacheline-overlap-overflow',
          e.dev,
          `exceeded ${ACTIVE_CACHELINE_MAX_OVERLAP} overlapping mappings of cacheline ${hx(cln)} (potentially leaking mappings)`,
          { mapped: this.#info(e), origin: origin(e), cacheline: cln },
        );
      }
    } else {
      this.#cachelines.set(cln, (overlap << 1) | (v & 1));
    }
    const overlapClean = (v & 1) !== 0;
    if ((e.attrs & DMA_ATTR_SKIP_CPU_SYNC) === 0 && !(isClean && overlapClean) && this.cacheAlignment >= L1_CACHE_BYTES) {
      this.#raise('cacheline-overlap', e.dev, "cacheline tracking EEXIST, overlapping mappings aren't supported", {
        mapped: this.#info(e),
        origin: origin(e),
        cacheline: cln,
      });
    }
  }

  /** `hash_bucket_del` + `active_cacheline_remove` (the entry is not yet returned to the pool). */
  #removeEntry(e: Entry): void {
    const key = bucketOf(e.dmaAddr);
    const b = this.#hash.get(key);
    if (b !== undefined) {
      const i = b.indexOf(e);
      if (i >= 0) {
        const last = b.pop();
        if (last !== undefined && i < b.length) b[i] = last;
        if (b.length === 0) this.#hash.delete(key);
        this.#count--;
      }
    }
    if (e.dir === DMA_TO_DEVICE) return;
    const cln = Math.floor(e.paddr / L1_CACHE_BYTES);
    const v = this.#cachelines.get(cln);
    if (v === undefined) return;
    const overlap = (v >> 1) - 1;
    if (overlap < 0) this.#cachelines.delete(cln);
    else this.#cachelines.set(cln, (overlap << 1) | (v & 1));
  }

  /**
   * `bucket_find_exact`: (dev, dmaAddr) matches; a perfect fit on size/type/dir/nents wins; with
   * several candidates and no perfect fit, nothing is returned (treated as "not mapped").
   */
  #findExact(dev: Device, dmaAddr: number, size: number, type: DmaDebugEntryType, dir: number, nents: number): Entry | null {
    const b = this.#hash.get(bucketOf(dmaAddr));
    if (b === undefined) return null;
    let ret: Entry | null = null;
    let matches = 0;
    let last = -1;
    for (const e of b) {
      if (e.dmaAddr !== dmaAddr || e.dev !== dev) continue;
      matches++;
      const lvl = (e.size === size ? 1 : 0) + (e.type === type ? 1 : 0) + (e.dir === dir ? 1 : 0) + (e.sgCallEnts === nents ? 1 : 0);
      if (lvl === 4) return e;
      if (lvl > last) {
        last = lvl;
        ret = e;
      }
    }
    return matches === 1 ? ret : null;
  }

  /**
   * `bucket_find_contain`: an entry containing [dmaAddr, +size), scanning back over buckets.
   * Departures from the kernel, both to avoid false or vague reports: among several containing
   * entries the best fit is used (the kernel gives up), and when no entry contains the whole
   * range but one contains its start, that entry is returned with `#containFull = false` so the
   * caller reports "outside the mapped range" (the kernel reports "not allocated").
   */
  #findContain(dev: Device, dmaAddr: number, size: number, type: DmaDebugEntryType, dir: number, nents: number): Entry | null {
    this.#containFull = false;
    this.#partial = null;
    if (!Number.isFinite(dmaAddr) || dmaAddr < 0 || this.#count === 0) return null;
    const end = dmaAddr + Math.max(size, 0);
    const hi = bucketOf(dmaAddr);
    const lo = bucketOf(Math.max(0, dmaAddr - this.#maxSize + 1));
    if (hi - lo + 1 <= this.#hash.size) {
      for (let k = hi; k >= lo; k--) {
        const b = this.#hash.get(k);
        if (b === undefined) continue;
        const found = this.#scanContain(b, dev, dmaAddr, end, size, type, dir, nents);
        if (found !== null) return found;
      }
    } else {
      // Fewer occupied buckets than the span to scan: walk the occupied ones instead.
      for (const [k, b] of this.#hash) {
        if (k < lo || k > hi) continue;
        const found = this.#scanContain(b, dev, dmaAddr, end, size, type, dir, nents);
        if (found !== null) return found;
      }
    }
    const partial = this.#partial;
    this.#partial = null;
    return partial;
  }

  /** Best fully-containing entry of one bucket (remembers a start-only match in #partial). */
  #scanContain(b: Entry[], dev: Device, dmaAddr: number, end: number, size: number, type: DmaDebugEntryType, dir: number, nents: number): Entry | null {
    let best: Entry | null = null;
    let last = -1;
    for (const e of b) {
      if (e.dev !== dev || e.dmaAddr > dmaAddr || e.dmaAddr + e.size <= dmaAddr) continue;
      if (e.dmaAddr + e.size < end) {
        this.#partial ??= e;
        continue;
      }
      const lvl = (e.size === size ? 1 : 0) + (e.type === type ? 1 : 0) + (e.dir === dir ? 1 : 0) + (e.sgCallEnts === nents ? 1 : 0);
      if (lvl > last) {
        last = lvl;
        best = e;
      }
    }
    if (best !== null) this.#containFull = true;
    return best;
  }

  /** `check_unmap`: the entry is removed before reporting, so a strict-mode throw leaves state consistent. */
  #checkUnmap(dev: Device, dmaAddr: number, size: number, type: DmaDebugEntryType, dir: number, nents: number, paddr: number): void {
    const e = this.#findExact(dev, dmaAddr, size, type, dir, nents);
    if (e === null) {
      const unmapped = side(dmaAddr, size, type, dir, nents, paddr);
      if (dmaAddr === DMA_MAPPING_ERROR) {
        this.#raise('unmap-error-address', dev, 'device driver tries to free an invalid DMA memory address', { unmapped });
      } else {
        this.#raise('unmap-not-mapped', dev, `device driver tries to free DMA memory it has not allocated [device address=${a16(dmaAddr)}] [size=${size} bytes]`, {
          unmapped,
        });
      }
      return;
    }
    this.#removeEntry(e);
    // Fast path: nothing to report, nothing allocated.
    if (
      size !== e.size ||
      type !== e.type ||
      ((e.type === 'coherent' || e.type === 'noncoherent') && paddr !== e.paddr) ||
      (nents !== 0 && type === 'sg' && nents !== e.sgCallEnts) ||
      dir !== e.dir ||
      e.mapErrType === MapErrType.NOT_CHECKED
    ) {
      this.#reportUnmap(e, dev, dmaAddr, size, type, dir, nents, paddr);
    }
    this.#release(e);
  }

  #reportUnmap(e: Entry, dev: Device, dmaAddr: number, size: number, type: DmaDebugEntryType, dir: number, nents: number, paddr: number): void {
    const mapped = this.#info(e);
    const details: DmaDebugReportDetails = { mapped, unmapped: side(dmaAddr, size, type, dir, nents, paddr), origin: mapped.origin };
    if (size !== e.size) {
      this.#raise(
        'size-mismatch',
        dev,
        `device driver frees DMA memory with different size [device address=${a16(dmaAddr)}] [map size=${e.size} bytes] [unmap size=${size} bytes]`,
        details,
      );
    }
    if (type !== e.type) {
      this.#raise(
        'type-mismatch',
        dev,
        `device driver frees DMA memory with wrong function [device address=${a16(dmaAddr)}] [size=${size} bytes] [mapped as ${TYPE_NAMES[e.type]}] [unmapped as ${TYPE_NAMES[type]}]`,
        details,
      );
    } else if ((e.type === 'coherent' || e.type === 'noncoherent') && paddr !== e.paddr) {
      this.#raise(
        'cpu-address-mismatch',
        dev,
        `device driver frees DMA memory with different CPU address [device address=${a16(dmaAddr)}] [size=${size} bytes] [cpu alloc address=${hx(e.paddr)}] [cpu free address=${hx(paddr)}]`,
        details,
      );
    }
    if (nents !== 0 && type === 'sg' && nents !== e.sgCallEnts) {
      this.#raise(
        'nents-mismatch',
        dev,
        `device driver frees DMA sg list with different entry count [map count=${e.sgCallEnts}] [unmap count=${nents}]`,
        details,
      );
    }
    if (dir !== e.dir) {
      this.#raise(
        'direction-mismatch',
        dev,
        `device driver frees DMA memory with different direction [device address=${a16(dmaAddr)}] [size=${size} bytes] [mapped with ${dirName(e.dir)}] [unmapped with ${dirName(dir)}]`,
        details,
      );
    }
    if (e.mapErrType === MapErrType.NOT_CHECKED) {
      this.#raise(
        'map-error-not-checked',
        dev,
        `device driver failed to check map error [device address=${a16(dmaAddr)}] [size=${size} bytes] [mapped as ${TYPE_NAMES[e.type]}]`,
        details,
      );
    }
  }

  /** `check_sync`. */
  #checkSync(dev: Device, dmaAddr: number, size: number, type: DmaDebugEntryType, dir: number, nents: number, toCpu: boolean): void {
    const e = this.#findContain(dev, dmaAddr, size, type, dir, nents);
    if (e === null) {
      this.#raise('sync-not-mapped', dev, `device driver tries to sync DMA memory it has not allocated [device address=${a16(dmaAddr)}] [size=${size} bytes]`, {
        synced: side(dmaAddr, size, type, dir, nents, -1),
      });
      return;
    }
    const full = this.#containFull;
    const bidir = e.dir === DMA_BIDIRECTIONAL;
    // Fast path: nothing to report, nothing allocated.
    if (full && (bidir || (dir === e.dir && !(nents !== 0 && type === 'sg' && nents !== e.sgCallEnts)))) return;
    const mapped = this.#info(e);
    const details: DmaDebugReportDetails = { mapped, synced: side(dmaAddr, size, type, dir, nents, -1), origin: mapped.origin };
    if (!full) {
      this.#raise(
        'sync-out-of-range',
        dev,
        `device driver syncs DMA memory outside allocated range [device address=${a16(e.dmaAddr)}] [allocation size=${e.size} bytes] [sync offset+size=${dmaAddr - e.dmaAddr + size}]`,
        details,
      );
    }
    if (bidir) return;
    const where = `[device address=${a16(dmaAddr)}] [size=${e.size} bytes] [mapped with ${dirName(e.dir)}] [synced with ${dirName(dir)}]`;
    if (dir !== e.dir) {
      this.#raise('sync-direction-mismatch', dev, `device driver syncs DMA memory with different direction ${where}`, details);
    }
    if (toCpu && e.dir !== DMA_FROM_DEVICE && dir !== DMA_TO_DEVICE) {
      this.#raise('sync-for-cpu-device-read-only', dev, `device driver syncs device read-only DMA memory for cpu ${where}`, details);
    }
    if (!toCpu && e.dir !== DMA_TO_DEVICE && dir !== DMA_FROM_DEVICE) {
      this.#raise('sync-for-device-device-write-only', dev, `device driver syncs device write-only DMA memory to device ${where}`, details);
    }
    if (nents !== 0 && type === 'sg' && nents !== e.sgCallEnts) {
      this.#raise(
        'sync-sg-nents-mismatch',
        dev,
        `device driver syncs DMA sg list with different entry count [map count=${e.sgCallEnts}] [sync count=${nents}]`,
        details,
      );
    }
  }

  /** `debug_dma_sync_sg_for_{cpu,device}`. */
  #syncSg(dev: Device, sgt: SgTable, nelems: number, dir: number, toCpu: boolean): void {
    const n = Math.min(nelems, sgt.capacity);
    let mappedEnts = 0;
    let looked = false;
    for (let i = 0; i < n; i++) {
      if (((sgt.dmaFlags[i] ?? 0) & SG_DMA_BUS_ADDRESS) !== 0) continue;
      const addr = sgt.dmaAddress[i] ?? 0;
      const len = sgt.dmaLength[i] ?? 0;
      if (!looked) {
        looked = true;
        mappedEnts = this.#findExact(dev, addr, len, 'sg', dir, nelems)?.sgMappedEnts ?? 0;
        if (mappedEnts === 0) {
          // The kernel silently checks nothing when the first segment is not tracked; the
          // model checks that segment so a sync of an unmapped list is reported.
          this.#checkSync(dev, addr, len, 'sg', dir, nelems, toCpu);
          return;
        }
      }
      if (i >= mappedEnts) break;
      this.#checkSync(dev, addr, len, 'sg', dir, nelems, toCpu);
    }
  }

  /** `check_sg_segment`. */
  #checkSgSegment(dev: Device, index: number, cpuLength: number, e: Entry): void {
    const maxSeg = dev.dmaParms?.maxSegmentSize ?? SZ_64K;
    const boundary = dev.dmaParms?.segmentBoundaryMask ?? ULONG_MAX;
    let segment: DmaDebugSgSegment | undefined;
    const details = (): DmaDebugReportDetails => {
      segment ??= { index, length: cpuLength, dmaAddr: e.dmaAddr, dmaLength: e.size, maxSegmentSize: maxSeg, segmentBoundaryMask: boundary };
      return { segment, mapped: this.#info(e), origin: origin(e) };
    };
    if (cpuLength > maxSeg) {
      this.#raise('sg-segment-too-long', dev, `mapping sg segment longer than device claims to support [len=${cpuLength}] [max=${maxSeg}]`, details());
    }
    if (e.size > 0 && boundary < ULONG_MAX) {
      // (start ^ end) & ~boundary, without 32-bit bitwise ops: boundary + 1 is a power of two.
      const start = e.dmaAddr;
      const end = start + e.size - 1;
      const span = boundary + 1;
      if (Math.floor(start / span) !== Math.floor(end / span)) {
        this.#raise(
          'sg-segment-boundary',
          dev,
          `mapping sg segment across boundary [start=${a16(start)}] [end=${a16(end)}] [boundary=${a16(boundary)}]`,
          details(),
        );
      }
    }
  }

  #iovaGet(dev: Device, state: DmaIovaState, call: string, offset: number, size: number): IovaTrack | null {
    const t = this.#iova.get(state);
    if (t !== undefined && t.dev === dev) return t;
    const whose = t === undefined ? 'that dma_iova_try_alloc did not allocate' : `allocated for device ${t.dev.name}`;
    this.#raise('iova-not-allocated', dev, `${call} on a dma_iova_state ${whose} [offset=${hx(offset)}] [size=${size}] ${NOT_BY_KERNEL}`, {
      iovaCall: { call, offset, size },
    });
    return null;
  }

  #info(e: Entry): DmaDebugEntryInfo {
    return {
      device: e.dev.name,
      dmaAddr: e.dmaAddr,
      size: e.size,
      type: e.type,
      dir: e.dir,
      dirName: dirName(e.dir),
      nents: e.sgCallEnts,
      cpuAddr: e.paddr,
      paddr: e.paddr,
      sgMappedEnts: e.sgMappedEnts,
      mapErrType: e.mapErrType,
      mapErr: MAP_ERR_NAMES[e.mapErrType],
      attrs: e.attrs,
      origin: origin(e),
    };
  }
}

function side(dmaAddr: number, size: number, type: DmaDebugEntryType, dir: number, nents: number, cpuAddr: number): DmaDebugSide {
  return cpuAddr >= 0 ? { dmaAddr, size, type, dir, dirName: dirName(dir), nents, cpuAddr } : { dmaAddr, size, type, dir, dirName: dirName(dir), nents };
}

function origin(e: Entry): DmaDebugOrigin {
  return e.stack === undefined ? { call: e.call, time: e.time } : { call: e.call, time: e.time, stack: e.stack };
}

function iovaOrigin(t: IovaTrack): DmaDebugOrigin {
  return t.stack === undefined ? { call: t.call, time: t.time } : { call: t.call, time: t.time, stack: t.stack };
}

function iovaInfo(t: IovaTrack): DmaDebugIovaInfo {
  const linked: (readonly [number, number])[] = [];
  for (let i = 0; i < t.starts.length; i++) linked.push([t.starts[i] ?? 0, t.ends[i] ?? 0]);
  return { device: t.dev.name, addr: t.addr, size: t.size, granule: t.granule, linkedBytes: t.linked, linked, origin: iovaOrigin(t) };
}

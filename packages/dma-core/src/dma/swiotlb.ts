// kernel: kernel/dma/swiotlb.c, include/linux/swiotlb.h
// The bounce-buffer pool: 2 KiB slots in 128-slot segments, per-slot metadata in typed arrays
// (orig_addr, alloc_size, the free-run `list`, pad_slots), one area, first-fit from a cursor.
import type { Device } from '../device/device.js';
import { DMA_ATTR_NO_WARN, DMA_ATTR_SKIP_CPU_SYNC } from '../units/attrs.js';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE } from '../units/direction.js';
import type { DmaDataDirection } from '../units/direction.js';
import { DMA_MAPPING_ERROR } from '../units/dmaAddr.js';
import { PAGE_SIZE, alignUp, isPowerOfTwo, offsetIn } from '../units/page.js';
import { dmaWarn } from './log.js';

declare module '../device/host.js' {
  interface DeviceHost {
    /** The default swiotlb pool (`io_tlb_default_mem`, the pool `dev->dma_io_tlb_mem` points to). */
    readonly swiotlb: Swiotlb;
  }
}

/** log2 of a swiotlb slot (2 KiB). kernel: IO_TLB_SHIFT in include/linux/swiotlb.h. */
export const IO_TLB_SHIFT = 11;
/** Bytes per swiotlb slot. kernel: IO_TLB_SIZE in include/linux/swiotlb.h. */
export const IO_TLB_SIZE = 1 << IO_TLB_SHIFT;
/** Max contiguous slots of one bounce (256 KiB). kernel: IO_TLB_SEGSIZE in include/linux/swiotlb.h. */
export const IO_TLB_SEGSIZE = 128;
/** Default swiotlb pool size (64 MiB). kernel: IO_TLB_DEFAULT_SIZE in include/linux/swiotlb.h. */
export const IO_TLB_DEFAULT_SIZE = 64 * 1024 * 1024;

const INVALID_PHYS_ADDR = -1;
/** Keep at most this many log lines per pool (the kernel ratelimits). */
const MAX_LOG = 256;

/**
 * swiotlb pool counters: slots, high water, bounces, bytes copied, failures (kernel: the swiotlb debugfs
 * counters).
 */
export interface SwiotlbStats {
  /** `is_swiotlb_active`: the pool has at least one slot. */
  readonly active: boolean;
  readonly totalSlots: number;
  readonly usedSlots: number;
  /** Highest `usedSlots` ever seen (`mem->used_hiwater`). */
  readonly highWaterSlots: number;
  /** Successful `swiotlb_tbl_map_single` calls. */
  readonly bounces: number;
  /** Bytes copied between original and bounce buffers (both directions). */
  readonly bytesCopied: number;
  /** Failed slot searches ("swiotlb buffer is full"). */
  readonly mapFailures: number;
}

function nrSlots(bytes: number): number {
  return Math.ceil(bytes / IO_TLB_SIZE);
}

/** `io_tlb_offset(i)`: slot index inside its segment. */
function ioTlbOffset(i: number): number {
  return i % IO_TLB_SEGSIZE;
}

/** `get_max_slots(boundary_mask)`: slots per boundary window. */
function getMaxSlots(boundaryMask: number): number {
  return Math.floor(boundaryMask / IO_TLB_SIZE) + 1;
}

/** `iommu_is_span_boundary(index, nr, shift, boundary_size)` (boundary_size a power of two). */
function isSpanBoundary(index: number, nr: number, shift: number, boundarySize: number): boolean {
  const s = offsetIn(shift + index, boundarySize);
  return s + nr > boundarySize;
}

function minAlignMaskOf(dev: Device): number {
  return dev.dmaParms?.minAlignMask ?? 0;
}

function segBoundaryOf(dev: Device): number {
  const m = dev.dmaParms?.segmentBoundaryMask ?? 0;
  return m === 0 ? Number.MAX_SAFE_INTEGER : m;
}

/**
 * `swiotlb_align_offset(dev, align_mask, addr)`: the low bits of `addr` the bounce buffer must
 * preserve (min_align_mask, limited to the allocation alignment and at least the slot).
 */
function swiotlbAlignOffset(dev: Device, alignMask: number, addr: number): number {
  // Masks are below 2^31 here, so `&` on the (exact) low 32 bits of addr is correct.
  return addr & minAlignMaskOf(dev) & (alignMask | (IO_TLB_SIZE - 1));
}

/** The default swiotlb pool (`io_tlb_default_mem`) of a machine. */
export class Swiotlb {
  readonly base: number;
  readonly bytes: number;
  /** Number of 2 KiB slots. */
  readonly nslabs: number;
  /** Per slot: original physical address of this 2 KiB chunk, or -1. */
  readonly origAddr: Float64Array;
  /** Per slot: bytes left in the allocation from this slot on. */
  readonly allocSize: Float64Array;
  /** Per slot: length of the free run starting here, to the end of the segment (0 = in use). */
  readonly list: Uint8Array;
  readonly padSlots: Uint8Array;
  /** Model: 1 on the slot a mapping's tlb_addr points into, so a bad release cannot free others' slots. */
  readonly #head: Uint8Array;
  /** "software IO TLB" warnings, oldest first (bounded). */
  readonly log: string[] = [];
  /** The area cursor (`area->index`). */
  index = 0;
  used = 0;
  #highWater = 0;
  #bounces = 0;
  #bytesCopied = 0;
  #mapFailures = 0;

  constructor(base: number, bytes: number) {
    this.base = base;
    this.bytes = bytes;
    const nslabs = bytes > 0 ? Math.floor(bytes / IO_TLB_SIZE) : 0;
    this.nslabs = nslabs;
    this.origAddr = new Float64Array(nslabs).fill(INVALID_PHYS_ADDR);
    this.allocSize = new Float64Array(nslabs);
    this.list = new Uint8Array(nslabs);
    this.padSlots = new Uint8Array(nslabs);
    this.#head = new Uint8Array(nslabs);
    for (let i = 0; i < nslabs; i++) this.list[i] = Math.min(IO_TLB_SEGSIZE - ioTlbOffset(i), nslabs - i);
  }

  /** `is_swiotlb_active`. */
  get active(): boolean {
    return this.nslabs > 0;
  }

  /** `is_swiotlb_buffer`. */
  isSwiotlbBuffer(phys: number): boolean {
    return phys >= this.base && phys < this.base + this.nslabs * IO_TLB_SIZE;
  }

  /** Snapshot of the pool's counters. */
  stats(): SwiotlbStats {
    return {
      active: this.active,
      totalSlots: this.nslabs,
      usedSlots: this.used,
      highWaterSlots: this.#highWater,
      bounces: this.#bounces,
      bytesCopied: this.#bytesCopied,
      mapFailures: this.#mapFailures,
    };
  }

  /** Logs a warning for dev (kept in log, bounded like the kernel's ratelimited dev_warn). */
  warn(dev: Device, msg: string): void {
    if (this.log.length >= MAX_LOG) this.log.shift();
    const line = `${dev.name}: ${msg}`;
    this.log.push(line);
    dmaWarn(dev, msg);
  }

  /**
   * `swiotlb_search_pool_area`: first fit from the cursor, honouring alignment, min_align_mask and
   * the device's segment boundary; never crosses a 128-slot segment. Returns the slot index or -1.
   */
  findSlots(dev: Device, origAddr: number, allocSize: number, allocAlignMaskIn: number): number {
    const nslabs = this.nslabs;
    const boundaryMask = segBoundaryOf(dev);
    const boundarySize = boundaryMask + 1;
    const tblDmaAddr = offsetIn(this.base + dev.dmaRangeOffset, boundarySize);
    const maxSlots = getMaxSlots(boundaryMask);
    let iotlbAlignMask = minAlignMaskOf(dev);
    const nslots = nrSlots(allocSize);
    const offset = swiotlbAlignOffset(dev, 0, origAddr);
    let allocAlignMask = allocAlignMaskIn;
    if (nslots === 0 || nslots > IO_TLB_SEGSIZE) return -1;
    // Historically >= PAGE_SIZE bounces were page-aligned when nothing else was asked.
    if (allocAlignMask === 0 && iotlbAlignMask === 0 && allocSize >= PAGE_SIZE) allocAlignMask = PAGE_SIZE - 1;
    allocAlignMask |= IO_TLB_SIZE - 1;
    iotlbAlignMask &= ~allocAlignMask;
    const stride = getMaxSlots(Math.max(allocAlignMask, iotlbAlignMask));
    if (nslots > nslabs - this.used) return -1;
    const tblSlotShift = nrSlots(tblDmaAddr);
    let index = this.index;
    let slotIndex = -1;
    for (let checked = 0; checked < nslabs; ) {
      const tlbAddr = tblDmaAddr + index * IO_TLB_SIZE;
      if ((tlbAddr & allocAlignMask) !== 0 || (origAddr !== 0 && (tlbAddr & iotlbAlignMask) !== (origAddr & iotlbAlignMask))) {
        index = index + 1 >= nslabs ? 0 : index + 1;
        checked++;
        continue;
      }
      if (!isSpanBoundary(index, nslots, tblSlotShift, maxSlots) && (this.list[index] ?? 0) >= nslots) {
        slotIndex = index;
        break;
      }
      index = index + stride >= nslabs ? 0 : index + stride;
      checked += stride;
    }
    if (slotIndex < 0) return -1;
    for (let i = slotIndex; i < slotIndex + nslots; i++) {
      this.list[i] = 0;
      this.allocSize[i] = allocSize - (offset + (i - slotIndex) * IO_TLB_SIZE);
    }
    let count = 0;
    for (let i = slotIndex - 1; i >= 0 && ioTlbOffset(i) !== IO_TLB_SEGSIZE - 1 && (this.list[i] ?? 0) !== 0; i--) this.list[i] = ++count;
    this.index = slotIndex + nslots >= nslabs ? 0 : slotIndex + nslots;
    this.used += nslots;
    if (this.used > this.#highWater) this.#highWater = this.used;
    return slotIndex;
  }

  /** `swiotlb_release_slots`. False (and nothing freed) if `tlbAddr` is not a live mapping. */
  releaseSlots(dev: Device, tlbAddr: number): boolean {
    const offset = swiotlbAlignOffset(dev, 0, tlbAddr);
    let index = Math.floor((tlbAddr - offset - this.base) / IO_TLB_SIZE);
    if (index < 0 || index >= this.nslabs || this.#head[index] !== 1) {
      this.warn(dev, `swiotlb: release of 0x${tlbAddr.toString(16)} which is not a mapped bounce buffer (ignored)`);
      return false;
    }
    this.#head[index] = 0;
    index -= this.padSlots[index] ?? 0;
    const nslots = nrSlots((this.allocSize[index] ?? 0) + offset);
    // Merge with the free run that follows, if still inside this segment.
    const segEnd = Math.min(alignUp(index + 1, IO_TLB_SEGSIZE), this.nslabs);
    let count = index + nslots < segEnd ? (this.list[index + nslots] ?? 0) : 0;
    for (let i = index + nslots - 1; i >= index; i--) {
      this.list[i] = ++count;
      this.origAddr[i] = INVALID_PHYS_ADDR;
      this.allocSize[i] = 0;
      this.padSlots[i] = 0;
    }
    for (let i = index - 1; i >= 0 && ioTlbOffset(i) !== IO_TLB_SEGSIZE - 1 && (this.list[i] ?? 0) !== 0; i--) this.list[i] = ++count;
    this.used -= nslots;
    return true;
  }

  /** Record a mapping's slots after `findSlots` (the second half of `swiotlb_tbl_map_single`). */
  commit(dev: Device, slotIndex: number, origPhys: number, size: number, alignOffset: number): number {
    const padSlots = Math.floor(alignOffset / IO_TLB_SIZE);
    const offset = alignOffset % IO_TLB_SIZE;
    const index = slotIndex + padSlots;
    this.padSlots[index] = padSlots;
    const n = nrSlots(size) - padSlots;
    for (let i = 0; i < n; i++) this.origAddr[index + i] = origPhys + i * IO_TLB_SIZE;
    this.#head[index] = 1;
    this.#bounces++;
    // dma_reset_need_sync: once a device bounced, its syncs can never be skipped again.
    dev.dmaSkipSync = false;
    return this.base + index * IO_TLB_SIZE + offset;
  }

  /** Counts a failed slot search ("swiotlb buffer is full"). */
  failed(): void {
    this.#mapFailures++;
  }

  /**
   * `swiotlb_bounce`: copy between the bounce buffer and the original memory. `toDevice` copies
   * orig → bounce (DMA_TO_DEVICE), otherwise bounce → orig.
   */
  bounce(dev: Device, tlbAddr: number, sizeIn: number, toDevice: boolean): void {
    const index = Math.floor((tlbAddr - this.base) / IO_TLB_SIZE);
    let orig = this.origAddr[index] ?? INVALID_PHYS_ADDR;
    if (orig === INVALID_PHYS_ADDR) return;
    let allocSize = this.allocSize[index] ?? 0;
    // May be negative inside the first `offset` bytes of a later slot (the kernel allows it).
    const tlbOffset = (tlbAddr & (IO_TLB_SIZE - 1)) - swiotlbAlignOffset(dev, 0, orig);
    orig += tlbOffset;
    allocSize -= tlbOffset;
    let size = sizeIn;
    if (size > allocSize) {
      this.warn(dev, `Buffer overflow detected. Allocation size: ${allocSize}. Mapping size: ${size}.`);
      size = allocSize;
    }
    if (size <= 0 || orig < 0) return;
    const mem = dev.host.memory;
    if (orig + size > mem.limit) return;
    if (toDevice) mem.copy(tlbAddr, orig, size);
    else mem.copy(orig, tlbAddr, size);
    this.#bytesCopied += size;
  }
}

/**
 * `swiotlb_tbl_map_single`: bounce `[origPhys, +mappingSize)` into the pool; returns the bounce
 * buffer's physical address or DMA_MAPPING_ERROR ("buffer is full", no retry).
 */
export function swiotlbTblMapSingle(dev: Device, origPhys: number, mappingSize: number, allocAlignMask: number, _dir: DmaDataDirection, attrs: number): number {
  const pool = dev.host.swiotlb;
  if (!pool.active) {
    pool.warn(dev, 'Can not allocate SWIOTLB buffer earlier and can\'t now provide you with the DMA bounce buffer');
    return DMA_MAPPING_ERROR;
  }
  if (!Number.isSafeInteger(mappingSize) || mappingSize <= 0 || !Number.isSafeInteger(origPhys) || origPhys < 0 || origPhys + mappingSize > dev.host.memory.limit) {
    return DMA_MAPPING_ERROR;
  }
  if (!Number.isSafeInteger(allocAlignMask) || allocAlignMask < 0 || allocAlignMask >= 2 ** 30 || !isPowerOfTwo(allocAlignMask + 1)) {
    pool.warn(dev, `swiotlb: bad alloc_align_mask 0x${allocAlignMask.toString(16)}`);
    return DMA_MAPPING_ERROR;
  }
  const offset = swiotlbAlignOffset(dev, allocAlignMask, origPhys);
  const size = alignUp(mappingSize + offset, allocAlignMask + 1);
  // Fault-injection site 'swiotlb' behaves exactly like a full pool.
  const index = dev.host.faultInjection?.shouldFail('swiotlb') === true ? -1 : pool.findSlots(dev, origPhys, size, allocAlignMask);
  if (index < 0) {
    pool.failed();
    if ((attrs & DMA_ATTR_NO_WARN) === 0) {
      pool.warn(dev, `swiotlb buffer is full (sz: ${size} bytes), total ${pool.nslabs} (slots), used ${pool.used} (slots)`);
    }
    return DMA_MAPPING_ERROR;
  }
  const tlbAddr = pool.commit(dev, index, origPhys, size, offset);
  // Always copy orig → bounce, whatever the direction: a partial device write must not expose
  // stale bounce data (kernel: "swiotlb must not corrupt memory by design").
  pool.bounce(dev, tlbAddr, mappingSize, true);
  return tlbAddr;
}

/** `swiotlb_tbl_unmap_single`: copy back per direction (unless SKIP_CPU_SYNC) and free the slots. */
export function swiotlbTblUnmapSingle(dev: Device, tlbPhys: number, mappingSize: number, dir: DmaDataDirection, attrs: number): void {
  const pool = dev.host.swiotlb;
  if (!pool.isSwiotlbBuffer(tlbPhys)) return;
  if ((attrs & DMA_ATTR_SKIP_CPU_SYNC) === 0 && (dir === DMA_FROM_DEVICE || dir === DMA_BIDIRECTIONAL)) {
    pool.bounce(dev, tlbPhys, mappingSize, false);
  }
  pool.releaseSlots(dev, tlbPhys);
}

/** `swiotlb_sync_single_for_cpu`: bounce → orig for FROM_DEVICE / BIDIRECTIONAL. */
export function swiotlbSyncSingleForCpu(dev: Device, tlbPhys: number, size: number, dir: DmaDataDirection): void {
  if (dir === DMA_FROM_DEVICE || dir === DMA_BIDIRECTIONAL) dev.host.swiotlb.bounce(dev, tlbPhys, size, false);
}

/** `swiotlb_sync_single_for_device`: orig → bounce for TO_DEVICE / BIDIRECTIONAL. */
export function swiotlbSyncSingleForDevice(dev: Device, tlbPhys: number, size: number, dir: DmaDataDirection): void {
  if (dir === DMA_TO_DEVICE || dir === DMA_BIDIRECTIONAL) dev.host.swiotlb.bounce(dev, tlbPhys, size, true);
}

/** `is_swiotlb_buffer(dev, phys)`. */
export function isSwiotlbBuffer(dev: Device, phys: number): boolean {
  return dev.host.swiotlb.isSwiotlbBuffer(phys);
}

/** `is_swiotlb_active(dev)`. */
export function isSwiotlbActive(dev: Device): boolean {
  return dev.host.swiotlb.active;
}

/** `swiotlb_max_mapping_size(dev)`: 256 KiB minus the min_align_mask round-up. */
export function swiotlbMaxMappingSize(dev: Device): number {
  const minAlignMask = minAlignMaskOf(dev);
  const minAlign = minAlignMask !== 0 ? alignUp(minAlignMask, IO_TLB_SIZE) : 0;
  return IO_TLB_SIZE * IO_TLB_SEGSIZE - minAlign;
}

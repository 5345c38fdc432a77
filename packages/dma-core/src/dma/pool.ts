// kernel: mm/dmapool.c, include/linux/dmapool.h (the 6.4+ implementation: pages are never given
// back before dma_pool_destroy, free blocks form a LIFO list, DMAPOOL_DEBUG poisoning)
// Small, fixed-size DMA-coherent blocks carved from coherent pages: NVMe PRP and SGL lists live
// here. Block positions follow the boundary rule (no block crosses a `boundary`-aligned line);
// the free list is a typed-array stack, so alloc and free allocate nothing once the pool is warm.
import type { Device } from '../device/device.js';
import type { DeviceHost } from '../device/host.js';
import { GFP_ZERO } from '../mem/systemMemory.js';
import { hex } from '../units/dmaAddr.js';
import { PAGE_SIZE } from '../units/page.js';
import { dmaAllocCoherent, dmaFreeCoherent } from './coherent.js';

/** `__GFP_ZERO` for `dmaPoolAlloc` (same bit as the page allocator's). */
export const DMA_POOL_GFP_ZERO = GFP_ZERO;

/** `POOL_POISON_FREED` / `POOL_POISON_ALLOCATED` (mm/dmapool.c, DMAPOOL_DEBUG). */
export const POOL_POISON_FREED = 0xa7;
/**
 * Byte written over a block when it is handed out (DMAPOOL_DEBUG). kernel: POOL_POISON_ALLOCATED in
 * mm/dmapool.c.
 */
export const POOL_POISON_ALLOCATED = 0xa9;

/** `sizeof(struct dma_block)`: the free-list link stored in a free block. */
const DMA_BLOCK_SIZE = 16;

/** A block handed out by `dmaPoolAlloc`: CPU (linear-map) address, its physical address, DMA address. */
export interface DmaPoolBlock {
  readonly vaddr: number;
  readonly phys: number;
  readonly dma: number;
}

/** One page of a DMA pool: its kernel virtual address stand-in, physical and DMA address (kernel: struct dma_page in mm/dmapool.c). */
export interface PoolPage {
  readonly vaddr: number;
  readonly phys: number;
  readonly dma: number;
}

/** Counters a test or the demo can read. */
export interface DmaPoolStats {
  /** Blocks handed out and not yet freed (`nr_active`). */
  active: number;
  /** Blocks carved so far (`nr_blocks`). */
  blocks: number;
  /** Coherent pages allocated (`nr_pages`). */
  pages: number;
  allocs: number;
  frees: number;
  /** Allocations that failed (no coherent page, or fault injection 'dma_pool'). */
  failures: number;
}

/** `struct dma_pool`. Create with `dmaPoolCreate`. */
export class DmaPool {
  readonly name: string;
  readonly dev: Device;
  /** Block size after alignment. */
  readonly size: number;
  /** Bytes per coherent allocation (`allocation` = max(size, PAGE_SIZE)). */
  readonly allocation: number;
  readonly boundary: number;
  readonly stats: DmaPoolStats = { active: 0, blocks: 0, pages: 0, allocs: 0, frees: 0, failures: 0 };
  /** False after `dmaPoolDestroy`. */
  alive = true;

  readonly #perWindow: number;
  readonly #perPage: number;
  readonly #pages: PoolPage[] = [];
  /** Page bases sorted ascending, for vaddr lookups; `#order[i]` = index into #pages. */
  #bases = new Float64Array(8);
  #order = new Int32Array(8);
  /** Free blocks as page * perPage + block, top of stack = next to hand out. */
  #free = new Int32Array(64);
  #nfree = 0;
  /** One byte per carved block: 1 = handed out. */
  #busy = new Uint8Array(64);
  #scratch: Uint8Array | null = null;

  /** @internal use dmaPoolCreate */
  constructor(name: string, dev: Device, size: number, allocation: number, boundary: number) {
    this.name = name;
    this.dev = dev;
    this.size = size;
    this.allocation = allocation;
    this.boundary = boundary;
    this.#perWindow = Math.floor(boundary / size);
    this.#perPage = Math.floor(allocation / boundary) * this.#perWindow + Math.floor((allocation % boundary) / size);
  }

  /** Blocks carved from each coherent allocation. */
  get blocksPerPage(): number {
    return this.#perPage;
  }

  /** Byte offset of block `k` in its page: `perWindow` blocks per boundary window. */
  #offsetOf(k: number): number {
    const w = Math.floor(k / this.#perWindow);
    return w * this.boundary + (k - w * this.#perWindow) * this.size;
  }

  /** Block number for `vaddr` (page * perPage + k), or -1 if it is no block of this pool. */
  blockIndex(vaddr: number): number {
    const bases = this.#bases;
    let lo = 0;
    let hi = this.#pages.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if ((bases[mid] ?? 0) <= vaddr) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0) return -1;
    const p = this.#order[found] ?? -1;
    const off = vaddr - (bases[found] ?? 0);
    if (off >= this.allocation) return -1;
    const w = Math.floor(off / this.boundary);
    const inWin = off - w * this.boundary;
    if (inWin % this.size !== 0) return -1;
    const j = inWin / this.size;
    if (j >= this.#perWindow) return -1;
    const k = w * this.#perWindow + j;
    if (k >= this.#perPage) return -1;
    return p * this.#perPage + k;
  }

  /** The block with number `idx` (see blockIndex). */
  blockAt(idx: number): DmaPoolBlock {
    const p = Math.floor(idx / this.#perPage);
    const page = this.#pages[p];
    if (page === undefined) throw new RangeError(`${this.name}: no block ${idx}`);
    const off = this.#offsetOf(idx - p * this.#perPage);
    return { vaddr: page.vaddr + off, phys: page.phys + off, dma: page.dma + off };
  }

  /** Is the block at `vaddr` currently handed out? */
  isBusy(vaddr: number): boolean {
    const i = this.blockIndex(vaddr);
    return i >= 0 && this.#busy[i] === 1;
  }

  /** `pool_alloc_page` + `pool_initialise_page`: carve a new coherent page into free blocks. */
  addPage(): boolean {
    const buf = dmaAllocCoherent(this.dev, this.allocation);
    if (buf === null) return false;
    const p = this.#pages.length;
    this.#pages.push({ vaddr: buf.cpuAddr, phys: buf.phys, dma: buf.dmaAddr });
    // Sorted insert of the base (pages are few; this is not on the per-block path).
    if (p + 1 > this.#bases.length) {
      const nb = new Float64Array(this.#bases.length * 2);
      nb.set(this.#bases);
      this.#bases = nb;
      const no = new Int32Array(this.#order.length * 2);
      no.set(this.#order);
      this.#order = no;
    }
    let at = p;
    while (at > 0 && (this.#bases[at - 1] ?? 0) > buf.cpuAddr) {
      this.#bases[at] = this.#bases[at - 1] ?? 0;
      this.#order[at] = this.#order[at - 1] ?? 0;
      at--;
    }
    this.#bases[at] = buf.cpuAddr;
    this.#order[at] = p;
    const total = (p + 1) * this.#perPage;
    if (total > this.#busy.length) {
      const nb = new Uint8Array(Math.max(total, this.#busy.length * 2));
      nb.set(this.#busy);
      this.#busy = nb;
    }
    // The free list must hold every block: once they are all given back it is that long. (Sized
    // from nfree alone, it stayed one page long, since pages are only added when it is empty; a
    // typed array drops writes past its end, so later frees were lost and allocations failed
    // with every block free.)
    if (total > this.#free.length) {
      const nf = new Int32Array(Math.max(total, this.#free.length * 2));
      nf.set(this.#free.subarray(0, this.#nfree));
      this.#free = nf;
    }
    // The kernel puts the new page's blocks at the head in address order: push them reversed.
    for (let k = this.#perPage - 1; k >= 0; k--) this.#free[this.#nfree++] = p * this.#perPage + k;
    const dbg = this.dev.host.dmaDebug;
    if (dbg.enabled) this.dev.host.memory.fill(buf.phys, this.allocation, POOL_POISON_FREED);
    this.stats.pages++;
    this.stats.blocks += this.#perPage;
    return true;
  }

  /** Pop a free block (adding a page when empty); -1 on failure. */
  take(): number {
    if (this.#nfree === 0 && !this.addPage()) return -1;
    const idx = this.#free[--this.#nfree] ?? -1;
    this.#busy[idx] = 1;
    return idx;
  }

  /** Push a block back (the caller checked it was busy). */
  give(idx: number): void {
    this.#busy[idx] = 0;
    this.#free[this.#nfree++] = idx;
  }

  /** DMAPOOL_DEBUG `pool_check_free`: a free block must still hold the freed poison. */
  corrupted(phys: number): boolean {
    const mem = this.dev.host.memory;
    this.#scratch ??= new Uint8Array(this.size);
    const s = this.#scratch;
    mem.readInto(phys, s, 0, this.size);
    // The first DMA_BLOCK_SIZE bytes hold the free-list link in the kernel; it keeps them out of the check too.
    for (let i = Math.min(DMA_BLOCK_SIZE, this.size); i < this.size; i++) if (s[i] !== POOL_POISON_FREED) return true;
    return false;
  }

  /** Every coherent page (for destroy). */
  pages(): readonly PoolPage[] {
    return this.#pages;
  }
}

function isPow2(x: number): boolean {
  return Number.isSafeInteger(x) && x > 0 && (x & (x - 1)) === 0 && x <= 0x4000_0000;
}

/** Live pools per host (what `dmaPoolCounts` sums; no kernel counterpart beyond /sys/.../pools). */
const LIVE_POOLS = new WeakMap<object, Set<DmaPool>>();

/**
 * Pools alive on a host and their blocks in use, summed (the kernel's per-device `pools` sysfs
 * file lists the same per pool). A pool destroyed while busy stays counted: its pages leaked.
 */
export function dmaPoolCounts(host: DeviceHost): { pools: number; activeBlocks: number } {
  let pools = 0;
  let activeBlocks = 0;
  for (const p of LIVE_POOLS.get(host) ?? []) {
    pools++;
    activeBlocks += p.stats.active;
  }
  return { pools, activeBlocks };
}

/**
 * `dma_pool_create(name, dev, size, align, boundary)`: a pool of `size`-byte blocks aligned to
 * `align` (0 = 1) that never cross a `boundary` line (0 = the allocation size). Null on bad
 * arguments (size 0, align or boundary not a power of two, boundary < size), like the kernel.
 */
export function dmaPoolCreate(name: string, dev: Device, size: number, align: number, boundary: number): DmaPool | null {
  const dbg = dev.host.dmaDebug;
  const a = align === 0 ? 1 : align;
  if (!isPow2(a)) {
    dbg.report('invalid-argument', dev, `dma_pool_create ${name}: align ${String(align)} is not a power of two`);
    return null;
  }
  if (!Number.isSafeInteger(size) || size <= 0 || size > 0x4000_0000) {
    dbg.report('invalid-argument', dev, `dma_pool_create ${name}: invalid size ${String(size)}`);
    return null;
  }
  let sz = Math.max(size, DMA_BLOCK_SIZE);
  sz = Math.ceil(sz / a) * a;
  const allocation = Math.max(sz, PAGE_SIZE);
  let b = boundary;
  if (b === 0) b = allocation;
  else if (!isPow2(b) || b < sz) {
    dbg.report('invalid-argument', dev, `dma_pool_create ${name}: boundary ${String(boundary)} is not a power of two >= ${sz}`);
    return null;
  }
  b = Math.min(b, allocation);
  const pool = new DmaPool(name, dev, sz, allocation, b);
  const live = LIVE_POOLS.get(dev.host);
  if (live === undefined) LIVE_POOLS.set(dev.host, new Set([pool]));
  else live.add(pool);
  return pool;
}

/**
 * `dma_pool_alloc(pool, mem_flags, &handle)`: a block, or null (no coherent page, fault
 * injection site 'dma_pool', destroyed pool). With DMA_POOL_GFP_ZERO the block is zeroed; else
 * (dma-debug on) it holds POOL_POISON_ALLOCATED, and a free block the device scribbled on after
 * its free is reported as 'pool-corrupted'.
 */
export function dmaPoolAlloc(pool: DmaPool, flags = 0): DmaPoolBlock | null {
  const dev = pool.dev;
  const host = dev.host;
  if (!pool.alive) {
    host.dmaDebug.report('pool-bad-free', dev, `dma_pool_alloc ${pool.name}: the pool was destroyed`);
    return null;
  }
  if (host.faultInjection?.shouldFail('dma_pool') === true) {
    pool.stats.failures++;
    return null;
  }
  const idx = pool.take();
  if (idx < 0) {
    pool.stats.failures++;
    return null;
  }
  const blk = pool.blockAt(idx);
  pool.stats.active++;
  pool.stats.allocs++;
  const dbg = host.dmaDebug;
  if (dbg.enabled) {
    if (pool.corrupted(blk.phys)) {
      // Still hand it out, as the kernel does after printing.
      host.memory.fill(blk.phys, pool.size, (flags & DMA_POOL_GFP_ZERO) !== 0 ? 0 : POOL_POISON_ALLOCATED);
      dbg.report('pool-corrupted', dev, `dma_pool_alloc ${pool.name}, ${hex(blk.vaddr)} (corrupted): a free block was written`);
      return blk;
    }
    host.memory.fill(blk.phys, pool.size, (flags & DMA_POOL_GFP_ZERO) !== 0 ? 0 : POOL_POISON_ALLOCATED);
  } else if ((flags & DMA_POOL_GFP_ZERO) !== 0) host.memory.fill(blk.phys, pool.size, 0);
  return blk;
}

/** `dma_pool_zalloc(pool, mem_flags, &handle)`. */
export function dmaPoolZalloc(pool: DmaPool, flags = 0): DmaPoolBlock | null {
  return dmaPoolAlloc(pool, flags | DMA_POOL_GFP_ZERO);
}

/**
 * `dma_pool_free(pool, vaddr, dma)`. A vaddr that is no block of this pool, a dma that does not
 * match it ('pool-bad-free'), or a block already free ('pool-double-free') is reported and
 * changes nothing.
 */
export function dmaPoolFree(pool: DmaPool, vaddr: number, dma: number): void {
  const dev = pool.dev;
  const dbg = dev.host.dmaDebug;
  if (!pool.alive) {
    dbg.report('pool-bad-free', dev, `dma_pool_free ${pool.name}: the pool was destroyed`);
    return;
  }
  const idx = typeof vaddr === 'number' ? pool.blockIndex(vaddr) : -1;
  if (idx < 0) {
    dbg.report('pool-bad-free', dev, `dma_pool_free ${pool.name}, ${typeof vaddr === 'number' ? hex(vaddr) : String(vaddr)}/${String(dma)} (bad vaddr)`);
    return;
  }
  const blk = pool.blockAt(idx);
  if (blk.dma !== dma) {
    dbg.report('pool-bad-free', dev, `dma_pool_free ${pool.name}, ${hex(vaddr)} (bad vaddr)/${typeof dma === 'number' ? hex(dma) : String(dma)}: block's dma is ${hex(blk.dma)}`);
    return;
  }
  if (!pool.isBusy(vaddr)) {
    dbg.report('pool-double-free', dev, `dma_pool_free ${pool.name}, dma ${hex(dma)} already free`);
    return;
  }
  if (dbg.enabled) dev.host.memory.fill(blk.phys, pool.size, POOL_POISON_FREED);
  pool.give(idx);
  pool.stats.active--;
  pool.stats.frees++;
}

/**
 * `dma_pool_destroy(pool)`: give every coherent page back. With blocks still in use the kernel
 * prints "<name> busy" and leaks the pages (the device may still DMA into them): reported as
 * 'pool-destroy-busy', pages kept. A null pool is a no-op.
 */
export function dmaPoolDestroy(pool: DmaPool | null): void {
  if (pool === null || !pool.alive) return;
  pool.alive = false;
  const dev = pool.dev;
  if (pool.stats.active > 0) {
    dev.host.dmaDebug.report('pool-destroy-busy', dev, `dma_pool_destroy ${pool.name} busy: ${pool.stats.active} block(s) still in use, ${pool.stats.pages} page(s) leaked`);
    return;
  }
  for (const p of pool.pages()) dmaFreeCoherent(dev, pool.allocation, p.vaddr, p.dma);
  LIVE_POOLS.get(dev.host)?.delete(pool);
}

// kernel: virt/kvm/kvm_main.c (kvm_set_memory_region with KVM_MEM_LOG_DIRTY_PAGES,
// mark_page_dirty_in_slot, kvm_get_dirty_log / kvm_get_dirty_log_protect behind KVM_GET_DIRTY_LOG
// and KVM_CLEAR_DIRTY_LOG); the guest RAM of an assigned device's VM, as the VMM (QEMU's
// hw/vfio/container.c, vfio_dma_map) maps it into the device's unmanaged IOMMU domain at IOVA =
// guest-physical address. A model of the guest side of VFIO live migration, shared by any VFIO
// variant driver the guest's device is bound to.
import { Errno, IOMMU_UNMANAGED_READ, IOMMU_UNMANAGED_WRITE, PAGE_SIZE, Rng } from '@dmakit/dma-core';
import type { IommuUnmanagedDomain, Machine, SimTimer } from '@dmakit/dma-core';
import type { VfioIovaRange } from './iovaBitmap.js';

/** Largest block of guest RAM allocated and mapped at once (a 2 MiB huge page). */
export const GUEST_RAM_BLOCK_BYTES = 2 * 1024 * 1024;

/**
 * Guest RAM: memory slots (guest-physical ranges) backed by host pages and mapped into the
 * device's unmanaged IOMMU domain at IOVA = GPA. Guest pages are numbered across the slots in
 * order (slot 0's pages first): `hpa[i]` and `gpa[i]` are page `i`'s host and guest address.
 */
export class GuestMemory {
  /** The memory slots, in ascending GPA order. */
  readonly regions: readonly VfioIovaRange[];
  /** Host physical address of each guest page. */
  readonly hpa: Float64Array;
  /** Guest physical address of each guest page. */
  readonly gpa: Float64Array;
  readonly #firstPage: number[];
  /** The blocks mapped into the domain (IOVA, host address, bytes), empty once destroyed. */
  readonly #blocks: { iova: number; phys: number; len: number }[];

  /** @internal Use {@link createGuestMemory}. */
  constructor(regions: readonly VfioIovaRange[], hpa: Float64Array, gpa: Float64Array, blocks: readonly { iova: number; phys: number; len: number }[] = []) {
    this.regions = regions.map((r) => ({ ...r }));
    this.hpa = hpa;
    this.gpa = gpa;
    this.#blocks = blocks.map((b) => ({ ...b }));
    let first = 0;
    this.#firstPage = this.regions.map((r) => {
      const f = first;
      first += r.length / PAGE_SIZE;
      return f;
    });
  }

  /** False once {@link destroyGuestMemory} gave the memory back. */
  get live(): boolean {
    return this.#blocks.length > 0;
  }

  /** @internal The mapped blocks, taken (and forgotten) by {@link destroyGuestMemory}. */
  takeBlocks(): { iova: number; phys: number; len: number }[] {
    return this.#blocks.splice(0, this.#blocks.length);
  }

  /** Number of guest pages. */
  get pages(): number {
    return this.hpa.length;
  }

  /** The guest page holding `gpa`, or -1 when `gpa` is in a hole or outside guest RAM. */
  pageIndex(gpa: number): number {
    for (let r = 0; r < this.regions.length; r++) {
      const reg = this.regions[r];
      if (reg === undefined || gpa < reg.iova) break;
      if (gpa < reg.iova + reg.length) return (this.#firstPage[r] ?? 0) + Math.floor((gpa - reg.iova) / PAGE_SIZE);
    }
    return -1;
  }

  /** Pages from guest page `page` to the end of its slot (0 for a page outside guest RAM). */
  pagesLeftInRegion(page: number): number {
    for (let r = this.regions.length - 1; r >= 0; r--) {
      const first = this.#firstPage[r] ?? 0;
      const reg = this.regions[r];
      if (reg !== undefined && page >= first) return Math.max(0, first + reg.length / PAGE_SIZE - page);
    }
    return 0;
  }
}

/**
 * Allocate guest RAM on `machine` for the slots `regions` (page-aligned, ascending, not
 * overlapping) in naturally aligned blocks of at most {@link GUEST_RAM_BLOCK_BYTES}, and map each
 * block read/write into `domain` at IOVA = GPA. Returns the memory, or -EINVAL (bad regions),
 * -ENOMEM (out of host memory) or the domain's map error; on error everything done is undone.
 */
export function createGuestMemory(machine: Machine, domain: IommuUnmanagedDomain, regions: readonly VfioIovaRange[]): GuestMemory | number {
  let end = 0;
  let pages = 0;
  for (const r of regions) {
    if (!Number.isSafeInteger(r.iova) || !Number.isSafeInteger(r.length) || r.length <= 0 || r.iova % PAGE_SIZE !== 0 || r.length % PAGE_SIZE !== 0 || r.iova < end) return -Errno.EINVAL;
    end = r.iova + r.length;
    pages += r.length / PAGE_SIZE;
  }
  if (regions.length === 0) return -Errno.EINVAL;
  const hpa = new Float64Array(pages);
  const gpa = new Float64Array(pages);
  const done: { iova: number; phys: number; len: number }[] = [];
  const undo = (ret: number): number => {
    for (const d of done) {
      domain.unmap(d.iova, d.len);
      machine.memory.freePages(d.phys, Math.log2(d.len / PAGE_SIZE));
    }
    return ret;
  };
  let k = 0;
  for (const r of regions) {
    for (let off = 0; off < r.length; ) {
      let len = GUEST_RAM_BLOCK_BYTES;
      while (len > r.length - off) len /= 2;
      const phys = machine.memory.allocPages(Math.log2(len / PAGE_SIZE));
      if (phys === 0) return undo(-Errno.ENOMEM);
      const ret = domain.map(r.iova + off, phys, len, IOMMU_UNMANAGED_READ | IOMMU_UNMANAGED_WRITE);
      if (ret !== 0) {
        machine.memory.freePages(phys, Math.log2(len / PAGE_SIZE));
        return undo(ret);
      }
      done.push({ iova: r.iova + off, phys, len });
      for (let p = 0; p < len / PAGE_SIZE; p++) {
        hpa[k] = phys + p * PAGE_SIZE;
        gpa[k] = r.iova + off + p * PAGE_SIZE;
        k++;
      }
      off += len;
    }
  }
  return new GuestMemory(regions, hpa, gpa, done);
}

/**
 * Give guest RAM back when the VM goes away: VFIO_IOMMU_UNMAP_DMA of every block (kernel:
 * drivers/vfio/vfio_iommu_type1.c vfio_remove_dma -> vfio_unmap_unpin: iommu_unmap, then
 * vfio_unpin_pages_remote drops the pin), then the VMM frees the RAM backing it. Returns the bytes
 * unmapped (0 for memory already destroyed: a second call does nothing), or -EFAULT when the domain
 * did not unmap a whole block (the pages are then kept, as type1 keeps a pin it could not undo).
 */
export function destroyGuestMemory(machine: Machine, domain: IommuUnmanagedDomain, memory: GuestMemory): number {
  let total = 0;
  let ret = 0;
  for (const b of memory.takeBlocks()) {
    const n = domain.unmap(b.iova, b.len);
    if (n !== b.len) {
      if (ret === 0) ret = -Errno.EFAULT;
      continue;
    }
    total += n;
    machine.memory.freePages(b.phys, Math.log2(b.len / PAGE_SIZE));
  }
  return ret !== 0 ? ret : total;
}

/** A device assigned to the guest that does work while the guest runs (e.g. `Mlx5SimFunction`). */
export interface KvmGuestDevice {
  /** One unit of the device's work (its return value is ignored). */
  step(): unknown;
}

/** Options of a {@link KvmGuest}: its memory, the seed of its workload, what it writes and runs. */
export interface KvmGuestOptions {
  readonly machine: Machine;
  readonly memory: GuestMemory;
  readonly seed: number;
  /** First guest page the vCPUs write (default 0). */
  readonly cpuFirstPage?: number;
  /** Number of guest pages the vCPUs write, from `cpuFirstPage` (default: the rest of guest RAM). */
  readonly cpuPages?: number;
  /** vCPU stores per tick (default 6), each of `storeBytes` random bytes at a random page offset. */
  readonly storesPerTick?: number;
  /** Bytes of one vCPU store (default 256, at most a page). */
  readonly storeBytes?: number;
  /** Assigned devices the guest keeps busy: each is stepped `deviceStepsPerTick` times per tick. */
  readonly devices?: readonly KvmGuestDevice[];
  /** Device steps per tick (default 3). */
  readonly deviceStepsPerTick?: number;
  /** Simulated time between ticks when started (default 20 µs). */
  readonly tickNs?: number;
}

/**
 * A running guest: vCPUs store random bytes into guest pages (each store marks the page in the
 * KVM dirty bitmap while dirty logging is on, as `mark_page_dirty_in_slot` does) and its assigned
 * devices do their work. Deterministic from its seed.
 */
export class KvmGuest {
  readonly machine: Machine;
  readonly memory: GuestMemory;
  /** The KVM dirty bitmap, one byte per guest page (1 = written since the last clear). */
  readonly dirty: Uint8Array;
  /** False once stopped (vCPUs paused): ticks do nothing. */
  running = true;
  /** vCPU stores so far. */
  writes = 0;
  readonly #rng: Rng;
  readonly #scratch: Uint8Array;
  readonly #cpuFirst: number;
  readonly #cpuPages: number;
  readonly #stores: number;
  readonly #devices: readonly KvmGuestDevice[];
  readonly #deviceSteps: number;
  readonly #tickNs: number;
  #logging = false;
  #timer: SimTimer | null = null;

  constructor(o: KvmGuestOptions) {
    const n = o.memory.pages;
    const first = o.cpuFirstPage ?? 0;
    const count = o.cpuPages ?? n - first;
    const storeBytes = o.storeBytes ?? 256;
    if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || count <= 0 || first + count > n) {
      throw new RangeError(`KvmGuest: vCPU pages [${first}, ${first + count}) are not inside guest RAM (${n} pages)`);
    }
    if (!Number.isInteger(storeBytes) || storeBytes <= 0 || storeBytes >= PAGE_SIZE) throw new RangeError(`KvmGuest: storeBytes must be in [1, ${PAGE_SIZE}), got ${storeBytes}`);
    this.machine = o.machine;
    this.memory = o.memory;
    this.dirty = new Uint8Array(n);
    this.#rng = new Rng(o.seed);
    this.#scratch = new Uint8Array(storeBytes);
    this.#cpuFirst = first;
    this.#cpuPages = count;
    this.#stores = o.storesPerTick ?? 6;
    this.#devices = o.devices ?? [];
    this.#deviceSteps = o.deviceStepsPerTick ?? 3;
    this.#tickNs = o.tickNs ?? 20_000;
  }

  /** True while dirty logging is on (KVM_MEM_LOG_DIRTY_PAGES on the guest's slots). */
  get dirtyLogging(): boolean {
    return this.#logging;
  }

  /** Turn dirty logging on or off; turning it on starts from a clean bitmap. */
  setDirtyLogging(on: boolean): void {
    if (on && !this.#logging) this.dirty.fill(0);
    this.#logging = on;
  }

  /** One tick of guest activity: vCPU stores, then the devices' work. Nothing once stopped. */
  tick(): void {
    if (!this.running) return;
    const rng = this.#rng;
    const mem = this.machine.memory;
    for (let i = 0; i < this.#stores; i++) {
      const p = this.#cpuFirst + rng.nextInt(this.#cpuPages);
      const off = rng.nextInt(PAGE_SIZE - this.#scratch.length);
      rng.fill(this.#scratch);
      mem.write((this.memory.hpa[p] ?? 0) + off, this.#scratch);
      if (this.#logging) this.dirty[p] = 1; // mark_page_dirty_in_slot
      this.writes++;
    }
    for (let i = 0; i < this.#deviceSteps; i++) for (const d of this.#devices) d.step();
  }

  /** Run a tick every `tickNs` of simulated time until {@link KvmGuest.stop}. */
  start(): void {
    if (this.#timer !== null) return;
    const loop = (): void => {
      this.tick();
      this.#timer = this.machine.schedule(this.#tickNs, loop);
    };
    this.#timer = this.machine.schedule(this.#tickNs, loop);
  }

  /** Pause the vCPUs (and the ticks): nothing writes guest memory from the guest side any more. */
  stop(): void {
    this.running = false;
    this.#timer?.cancel();
    this.#timer = null;
  }

  /**
   * KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG: add the pages written since the last call to `out`
   * (guest page indices), clear them, and return how many there were.
   */
  getAndClearDirtyLog(out: Set<number>): number {
    let c = 0;
    const d = this.dirty;
    for (let i = 0; i < d.length; i++) {
      if (d[i] === 1) {
        d[i] = 0;
        out.add(i);
        c++;
      }
    }
    return c;
  }
}

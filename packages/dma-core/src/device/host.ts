// The machine as a device and the DMA API see it (no kernel counterpart: the kernel's devices
// reach global memory, swiotlb and dma-debug state; the model keeps one machine per host).
import type { SystemMemory } from '../mem/systemMemory.js';
import type { SimClock } from '../sim/clock.js';
import type { FaultInjection } from '../sim/faultInjection.js';
import type { Trace } from '../trace/trace.js';
import type { DmaFaultRecord } from './dmaFault.js';

/**
 * What devices and the DMA API need of the machine they sit in. The Machine implements it;
 * keeping it an interface keeps device/ free of a dependency on the whole machine.
 *
 * This file names only what sits below the device layer. Members whose types take a device are
 * declared beside those types and merged in (TypeScript declaration merging, the way
 * include/linux/device.h only forward-declares what it points to): `p2pRoute` in
 * device/device.ts, `swiotlb` in dma/swiotlb.ts, `dmaDebug` (the observer the mapping front end
 * calls) in dma/debug.ts. So device/ never imports the DMA layer.
 */
export interface DeviceHost {
  /** Physical memory with its page allocator (dma-direct allocates coherent buffers from it). */
  readonly memory: SystemMemory;
  readonly clock: SimClock;
  readonly trace: Trace;
  /** Fault-injection sites ('swiotlb', 'iova', 'pgtable', ...); absent on hosts that inject nothing. */
  readonly faultInjection?: FaultInjection;
  /** Is there memory (RAM or a BAR) behind `[phys, phys+len)`? */
  physAccessible(phys: number, len: number): boolean;
  /** Is `[phys, phys+len)` system RAM (not a BAR, not MMIO)? */
  physIsRam(phys: number, len: number): boolean;
  /** Highest RAM address + 1 (for dma_get_required_mask / addressing_limited). */
  ramTop(): number;
  /** Records a DMA or IOMMU fault a device hit (kept in Machine.faults). */
  recordFault(record: DmaFaultRecord): void;
}

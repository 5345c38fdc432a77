import type { DmaDebug } from '../dma/debug.js';
import type { Swiotlb } from '../dma/swiotlb.js';
import type { PhysicalMemory } from '../mem/physicalMemory.js';
import type { SimClock } from '../sim/clock.js';
import type { FaultInjection } from '../sim/faultInjection.js';
import type { Trace } from '../trace/trace.js';
import type { Device } from './device.js';
import type { DmaFaultRecord } from './dmaFault.js';

/**
 * What a device sees of the machine it sits in. The Machine implements it; keeping it an
 * interface keeps device/ free of a dependency on the whole machine.
 */
export interface DeviceHost {
  readonly memory: PhysicalMemory;
  readonly clock: SimClock;
  readonly trace: Trace;
  readonly dmaDebug: DmaDebug;
  readonly swiotlb: Swiotlb;
  /** Fault-injection sites ('swiotlb', 'iova', 'pgtable', ...); absent on hosts that inject nothing. */
  readonly faultInjection?: FaultInjection;
  /** Is there memory (RAM or a BAR) behind `[phys, phys+len)`? */
  physAccessible(phys: number, len: number): boolean;
  /** Is `[phys, phys+len)` system RAM (not a BAR, not MMIO)? */
  physIsRam(phys: number, len: number): boolean;
  /** Highest RAM address + 1 (for dma_get_required_mask / addressing_limited). */
  ramTop(): number;
  /**
   * PCIe peer routing: if `dmaAddr` from `dev` is the bus address of a peer BAR reachable without
   * the root complex (BUS_ADDR), the physical address behind it; otherwise -1.
   */
  p2pRoute(dev: Device, dmaAddr: number): number;
  /** Records a DMA or IOMMU fault a device hit (kept in Machine.faults). */
  recordFault(record: DmaFaultRecord): void;
}

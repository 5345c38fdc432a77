// The guest's mlx5 driver (drivers/net/ethernet/mellanox/mlx5/core/en_main.c, mlx5e_open_rq: a
// receive ring per queue in guest memory, addressed by guest-physical address because the VF is
// assigned) as far as the migration model needs it: where the function's DMA lands.
import { Errno, PAGE_SIZE } from '@dmakit/dma-core';
import type { GuestMemory } from './kvmGuest.js';
import type { Mlx5SimFunction } from './mlx5Function.js';

/** Where the guest driver puts its receive rings: a page window of guest RAM split among queues. */
export interface Mlx5GuestRingsOptions {
  /** First guest page of the ring window (default 0). */
  readonly firstPage?: number;
  /** Pages of the window (default: the lower half of guest RAM). */
  readonly pages?: number;
  /** Queues to configure (default 8), each with an equal share of the window. */
  readonly queues?: number;
  /** Bytes per receive slot (default half a page). */
  readonly slotSize?: number;
}

/**
 * Post one receive ring per queue over guest RAM: queue q's ring starts at the GPA of the q-th
 * share of the window and stays inside that page's memory slot. Returns 0 or the function's
 * -errno (-EINVAL for a window outside guest RAM).
 */
export function mlx5GuestPostRxRings(fw: Mlx5SimFunction, memory: GuestMemory, o: Mlx5GuestRingsOptions = {}): number {
  const firstPage = o.firstPage ?? 0;
  const pages = o.pages ?? Math.floor(memory.pages / 2);
  const queues = o.queues ?? 8;
  const slotSize = o.slotSize ?? PAGE_SIZE / 2;
  if (!Number.isInteger(firstPage) || !Number.isInteger(pages) || !Number.isInteger(queues) || firstPage < 0 || queues <= 0 || pages < queues || firstPage + pages > memory.pages) return -Errno.EINVAL;
  const perQueue = Math.floor(pages / queues);
  const slotsPerPage = Math.max(1, Math.floor(PAGE_SIZE / slotSize));
  for (let q = 0; q < queues; q++) {
    const page = firstPage + q * perQueue;
    const ringPages = Math.min(perQueue, memory.pagesLeftInRegion(page));
    const ret = fw.configureQueue(q, memory.gpa[page] ?? 0, ringPages * slotsPerPage, slotSize);
    if (ret !== 0) return ret;
  }
  return 0;
}

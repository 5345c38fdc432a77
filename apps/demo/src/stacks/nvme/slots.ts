/**
 * The nvme workload's I/O buffers: QD slots, each a list of single pages allocated round-robin
 * across the slots, so one slot's pages are not physically contiguous and every request larger
 * than a page is multi-segment.
 */
import { ReqOp } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';

/** One slot: its buffer pages and the I/O it carries. */
export interface Slot {
  readonly idx: number;
  /** Physical pages of the slot's buffer (non-contiguous on purpose: multi-segment requests). */
  readonly pages: Float64Array;
  busy: boolean;
  op: ReqOp;
  lba: number;
  bytes: number;
  /** Offset of the I/O in the first page. */
  offset: number;
  submittedAt: number;
  /** The driver returned BLK_STS_RESOURCE: resubmit this same I/O (blk-mq requeues the request). */
  requeued: boolean;
}

/** No memory for the workload's buffers (allocSlots gave back what it had taken). */
export class SlotAllocError extends Error {
  override readonly name = 'SlotAllocError';
}

/** `qd` slots of `pagesPerSlot` pages each, the pages interleaved across slots; SlotAllocError (nothing held) without memory. */
export function allocSlots(m: Machine, qd: number, pagesPerSlot: number): Slot[] {
  const slots: Slot[] = Array.from({ length: qd }, (_, idx) => ({ idx, pages: new Float64Array(pagesPerSlot), busy: false, op: ReqOp.READ, lba: 0, bytes: 0, offset: 0, submittedAt: 0, requeued: false }));
  for (let p = 0; p < pagesPerSlot; p++) {
    for (const s of slots) {
      const phys = m.memory.allocPages(0);
      if (phys === 0) {
        for (const t of slots) for (const q of t.pages) if (q !== 0) m.memory.freePages(q, 0);
        throw new SlotAllocError('-ENOMEM: no memory for the I/O buffers');
      }
      s.pages[p] = phys;
    }
  }
  return slots;
}

/** Give every slot's pages back. */
export function freeSlots(m: Machine, slots: readonly Slot[]): void {
  for (const s of slots) for (const p of s.pages) if (p !== 0) m.memory.freePages(p, 0);
}

/** The slot's current I/O as (phys, len) pairs into `ranges`; returns the number of pairs. */
export function slotRanges(s: Slot, ranges: Float64Array): number {
  let n = 0;
  let left = s.bytes;
  let off = s.offset;
  for (let p = 0; left > 0; p++) {
    const chunk = Math.min(4096 - off, left);
    ranges[2 * n] = (s.pages[p] ?? 0) + off;
    ranges[2 * n + 1] = chunk;
    n++;
    left -= chunk;
    off = 0;
  }
  return n;
}

/** Copy the slot's current I/O bytes out of its buffer (the CPU reading what a read brought). */
export function readSlot(m: Machine, s: Slot, out: Uint8Array): void {
  const len = s.bytes;
  let done = 0;
  let off = s.offset;
  for (let p = 0; done < len; p++) {
    const chunk = Math.min(4096 - off, len - done);
    m.memory.readInto((s.pages[p] ?? 0) + off, out, done, chunk);
    done += chunk;
    off = 0;
  }
}

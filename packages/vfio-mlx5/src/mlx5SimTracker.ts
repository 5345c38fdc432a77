// The simulated firmware's PAGE_TRACK object (dmakit's model of the device side of
// drivers/vfio/pci/mlx5/cmd.c's page tracker: the object mlx5vf_create_tracker creates, the
// MODIFY that asks for a report, and the report messages the firmware QP sends into the host
// QP's receive buffer). The message layout is the model's: le32 count, le32 flags (bit 0: last
// message of the report), then `count` le64 page addresses.
import { DmaFaultError, Errno, PAGE_SIZE } from '@dmakit/dma-core';
import type { Device } from '@dmakit/dma-core';
import type { VfioIovaRange } from './iovaBitmap.js';
import type { Mlx5FunctionCaps, Mlx5PageTrackerCreate, Mlx5SimMkey } from './mlx5Ifc.js';

/**
 * One PAGE_TRACK object: the ranges it watches, the pages the VF wrote in them, and the report
 * being delivered.
 * @internal
 */
export class Mlx5SimPageTracker {
  readonly ranges: VfioIovaRange[];
  readonly pageSize: number;
  readonly msgSize: number;
  readonly #recv: Mlx5SimMkey;
  readonly #dirty = new Set<number>();
  #report: number[] = [];
  #reportOff = 0;
  /** A tracker object error (the driver sees -EIO). */
  error = false;

  private constructor(c: Mlx5PageTrackerCreate, recv: Mlx5SimMkey) {
    this.ranges = c.ranges.map((r) => ({ ...r }));
    this.pageSize = 2 ** c.logPageSize;
    this.msgSize = 2 ** c.logMsgSize;
    this.#recv = recv;
  }

  /** CREATE_GENERAL_OBJECT(PAGE_TRACK) checked against the caps: the tracker or -EINVAL. */
  static create(c: Mlx5PageTrackerCreate, recv: Mlx5SimMkey | undefined, caps: Mlx5FunctionCaps): Mlx5SimPageTracker | number {
    if (recv === undefined || c.recvNpages > recv.npages) return -Errno.EINVAL;
    if (c.ranges.length === 0 || c.ranges.length > caps.pgTrackMaxNumRange) return -Errno.EINVAL;
    if (c.logPageSize < caps.pgTrackLogMinPageSize || c.logPageSize > caps.pgTrackLogMaxPageSize) return -Errno.EINVAL;
    if (c.logMsgSize < caps.pgTrackLogMinMsgSize || c.logMsgSize > Math.min(12, caps.pgTrackLogMaxMsgSize)) return -Errno.EINVAL;
    return new Mlx5SimPageTracker(c, recv);
  }

  /** The VF wrote `[iova, iova + len)`: mark the tracked pages it touched. */
  deviceWrite(iova: number, len: number): void {
    if (this.error) return;
    const ps = this.pageSize;
    for (const r of this.ranges) {
      const s = Math.max(iova, r.iova);
      const e = Math.min(iova + len, r.iova + r.length);
      if (e <= s) continue;
      for (let p = Math.floor(s / ps); p * ps < e; p++) this.#dirty.add(p);
    }
  }

  /** MODIFY: take (and clear) the dirty pages of `[iova, iova + length)` as the next report. */
  queryReport(iova: number, length: number): number {
    if (this.error) return -Errno.EIO;
    const ps = this.pageSize;
    const lo = Math.floor(iova / ps);
    const hi = Math.ceil((iova + length) / ps);
    const out: number[] = [];
    for (const p of this.#dirty) if (p >= lo && p < hi) out.push(p);
    out.sort((a, b) => a - b);
    for (const p of out) this.#dirty.delete(p);
    this.#report = out;
    this.#reportOff = 0;
    return 0;
  }

  /**
   * Send the next report message through `pf` into receive slot `slot` (staged in `scratch`).
   * Returns the message bytes, or -EIO on a tracker error or a refused DMA.
   */
  postMessage(pf: Device, slot: number, scratch: Uint8Array): number {
    if (this.error) return -Errno.EIO;
    const perMsg = (this.msgSize - 8) / 8;
    const n = Math.min(perMsg, this.#report.length - this.#reportOff);
    const last = this.#reportOff + n >= this.#report.length;
    const dv = new DataView(scratch.buffer, 0, this.msgSize);
    dv.setUint32(0, n, true);
    dv.setUint32(4, last ? 1 : 0, true);
    for (let i = 0; i < n; i++) {
      const addr = (this.#report[this.#reportOff + i] ?? 0) * this.pageSize;
      dv.setUint32(8 + 8 * i, addr % 0x1_0000_0000, true);
      dv.setUint32(12 + 8 * i, Math.floor(addr / 0x1_0000_0000), true);
    }
    this.#reportOff += n;
    const bytes = 8 + 8 * n;
    const slotOff = slot * this.msgSize;
    const page = Math.floor(slotOff / PAGE_SIZE);
    try {
      pf.dmaWrite((this.#recv.mtt[page] ?? 0) + (slotOff % PAGE_SIZE), scratch, 0, bytes);
    } catch (e) {
      if (!(e instanceof DmaFaultError)) throw e;
      this.error = true;
      return -Errno.EIO;
    }
    return bytes;
  }
}

// kernel: include/linux/dma-buf.h, include/linux/dma-resv.h, include/linux/dma-fence.h,
// include/linux/dma-mapping.h (struct phys_vec), drivers/dma-buf/dma-buf.c
// The dma-buf port an importer consumes. @dmakit/dmabuf implements it; importers (an RDMA MR,
// NVMe pre-mapped buffers, ...) take a `DmaBufPort` as a constructor argument and apps/demo
// connects them. Pointer-returning kernel calls return the object or a negative errno (ERR_PTR).
import type { Device } from '../device/device.js';
import type { SgTable } from '../dma/scatterlist.js';
import type { DmaDataDirection } from '../units/direction.js';

/** `struct phys_vec { phys_addr_t paddr; size_t len; }`: one physically contiguous range. */
export interface PhysVec {
  readonly paddr: number;
  readonly len: number;
}

/** `enum dma_resv_usage`, in the kernel's order (a lower value includes the ones before it). */
export const DmaResvUsage = {
  /** Kernel memory management (moves, evictions, clears): everyone waits on these. */
  KERNEL: 0,
  /** Implicit write synchronisation. */
  WRITE: 1,
  /** Implicit read synchronisation. */
  READ: 2,
  /** Explicitly synchronised work: nobody waits implicitly. */
  BOOKKEEP: 3,
} as const;
export type DmaResvUsage = (typeof DmaResvUsage)[keyof typeof DmaResvUsage];

/** kernel: DMA_RESV_USAGE_KERNEL (enum dma_resv_usage in include/linux/dma-resv.h). */
export const DMA_RESV_USAGE_KERNEL = DmaResvUsage.KERNEL;
/** kernel: DMA_RESV_USAGE_WRITE (enum dma_resv_usage in include/linux/dma-resv.h). */
export const DMA_RESV_USAGE_WRITE = DmaResvUsage.WRITE;
/** kernel: DMA_RESV_USAGE_READ (enum dma_resv_usage in include/linux/dma-resv.h). */
export const DMA_RESV_USAGE_READ = DmaResvUsage.READ;
/** kernel: DMA_RESV_USAGE_BOOKKEEP (enum dma_resv_usage in include/linux/dma-resv.h). */
export const DMA_RESV_USAGE_BOOKKEEP = DmaResvUsage.BOOKKEEP;

/** `MAX_SCHEDULE_TIMEOUT` for `dmaResvWaitTimeout` (wait as long as it takes). */
export const MAX_SCHEDULE_TIMEOUT = Number.MAX_SAFE_INTEGER;

/**
 * `struct dma_fence`: completion of some asynchronous work (a copy engine moving a buffer). In the
 * model a fence signals at a known simulated time (`signalAt`, ns) or when its owner signals it;
 * waiting moves the simulated clock forward instead of sleeping.
 */
export interface DmaFence {
  /** `fence->context`: the timeline. */
  readonly context: number;
  readonly seqno: number;
  /** Simulated time (ns) at which the work completes, or -1 when only an explicit signal ends it. */
  readonly signalAt: number;
  /** `dma_fence_is_signaled` as last observed (the port's `dmaFenceIsSignaled` refreshes it). */
  readonly signaled: boolean;
  /** Error the work ended with (`fence->error`), 0 for success. */
  readonly error: number;
}

/**
 * `struct dma_resv`: the reservation object of a buffer. One lock (a ww_mutex in the kernel)
 * protecting the mapping state, and the fences of work that uses or moves the buffer.
 */
export interface DmaResv {
  /** Is the lock held (`dma_resv_is_locked`)? */
  readonly locked: boolean;
  /** Who holds it (for reports), or null. */
  readonly lockOwner: string | null;
  /** Unsignaled and signaled fences still attached, for inspection. */
  readonly fenceCount: number;
}

/** `struct dma_buf` as an importer sees it. */
export interface DmaBuf {
  readonly size: number;
  readonly resv: DmaResv;
  /** `exp_name`: the exporter ("system-heap", "gpu-vram", "vfio-pci"). */
  readonly expName: string;
  /** `name` set by userspace (DMA_BUF_SET_NAME), or ''. */
  readonly name: string;
  /** Reference count (`file_count(dmabuf->file)`). */
  readonly refcount: number;
  /** Number of attachments. */
  readonly attachmentCount: number;
}

/** `struct dma_buf_attach_ops`: what a dynamic importer provides. */
export interface DmaBufAttachOps {
  /** `allow_peer2peer`: the importer can handle P2P/MMIO DMA addresses without struct page. */
  readonly allowPeer2peer: boolean;
  /**
   * `move_notify(attach)`: the exporter is moving or revoking the backing store. Called with the
   * reservation lock held. The importer must stop using its current mapping (invalidate its
   * device's view, unmap at the next opportunity) and map again before the next access.
   */
  moveNotify(attach: DmaBufAttachment): void;
}

/** `struct dma_buf_attachment`. */
export interface DmaBufAttachment {
  readonly dmabuf: DmaBuf;
  /** The importing device. */
  readonly dev: Device;
  /** `peer2peer`: set at attach from `importerOps.allowPeer2peer`. */
  readonly peer2peer: boolean;
  /** null for a static importer (`dma_buf_attach`). */
  readonly importerOps: DmaBufAttachOps | null;
  /** `importer_priv`. */
  importerPriv: unknown;
}

/**
 * The dma-buf calls an importer makes (drivers/dma-buf/dma-buf.c, dma-resv.c, dma-fence.c).
 * Rules (the implementation reports misuse through dma-debug):
 * - `dmaBufMapAttachment` / `dmaBufUnmapAttachment` require `dmabuf.resv` held; the `Unlocked`
 *   variants take and drop it themselves.
 * - A static importer's mapping pins the buffer (it never moves while mapped) and the map waits
 *   for the kernel fences; a dynamic importer must wait for them itself before using a new
 *   mapping (`dmaResvWaitTimeout(resv, DMA_RESV_USAGE_KERNEL, ...)`).
 * - The returned table carries DMA addresses only: read `nents`, `dmaAddress`, `dmaLength`.
 */
export interface DmaBufPort {
  /** `dma_buf_get(fd)`: a new reference, or -EBADF / -EINVAL. */
  dmaBufGet(fd: number): DmaBuf | number;
  /** `dma_buf_put(dmabuf)`: drop a reference; the last one releases the buffer. */
  dmaBufPut(dmabuf: DmaBuf): void;
  /** `dma_buf_attach(dmabuf, dev)`: static importer. Attachment or -errno. */
  dmaBufAttach(dmabuf: DmaBuf, dev: Device): DmaBufAttachment | number;
  /**
   * `dma_buf_dynamic_attach(dmabuf, dev, importer_ops, importer_priv)`. -EOPNOTSUPP when the
   * exporter needs P2P and `importerOps.allowPeer2peer` is false; -ENODEV when revoked.
   */
  dmaBufDynamicAttach(dmabuf: DmaBuf, dev: Device, importerOps: DmaBufAttachOps | null, importerPriv?: unknown): DmaBufAttachment | number;
  /** `dma_buf_detach(dmabuf, attach)`. */
  dmaBufDetach(dmabuf: DmaBuf, attach: DmaBufAttachment): void;
  /** `dma_buf_pin(attach)` (dynamic importers that cannot handle moves): 0 or -errno. Resv held. */
  dmaBufPin(attach: DmaBufAttachment): number;
  /** `dma_buf_unpin(attach)`. Resv held. */
  dmaBufUnpin(attach: DmaBufAttachment): void;
  /** `dma_buf_map_attachment(attach, dir)`: resv held. The DMA-mapped table or -errno. */
  dmaBufMapAttachment(attach: DmaBufAttachment, dir: DmaDataDirection): SgTable | number;
  /** `dma_buf_unmap_attachment(attach, sgt, dir)`: resv held. */
  dmaBufUnmapAttachment(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void;
  /** `dma_buf_map_attachment_unlocked(attach, dir)`. */
  dmaBufMapAttachmentUnlocked(attach: DmaBufAttachment, dir: DmaDataDirection): SgTable | number;
  /** `dma_buf_unmap_attachment_unlocked(attach, sgt, dir)`. */
  dmaBufUnmapAttachmentUnlocked(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void;
  /** `dma_buf_begin_cpu_access(dmabuf, dir)`: 0 or -errno. */
  dmaBufBeginCpuAccess(dmabuf: DmaBuf, dir: DmaDataDirection): number;
  /** `dma_buf_end_cpu_access(dmabuf, dir)`: 0 or -errno. */
  dmaBufEndCpuAccess(dmabuf: DmaBuf, dir: DmaDataDirection): number;

  /** `dma_resv_lock(obj, NULL)`: 0, or -EDEADLK if it is already held (the model never blocks). */
  dmaResvLock(resv: DmaResv, owner?: string): number;
  /** `dma_resv_unlock(obj)`. */
  dmaResvUnlock(resv: DmaResv): void;
  /**
   * `dma_resv_wait_timeout(obj, usage, intr, timeout)`: wait for every fence of `usage` or a
   * stricter one. Returns the time left (> 0, at least 1), 0 on timeout, or -errno.
   * Waiting advances the simulated clock to the last fence's `signalAt`.
   */
  dmaResvWaitTimeout(resv: DmaResv, usage: DmaResvUsage, intr: boolean, timeoutNs: number): number;
  /** `dma_resv_test_signaled(obj, usage)`. */
  dmaResvTestSignaled(resv: DmaResv, usage: DmaResvUsage): boolean;
}

/** `IS_ERR(ptr)` for the port's `T | -errno` returns. */
export function isErrPtr(x: unknown): x is number {
  return typeof x === 'number';
}

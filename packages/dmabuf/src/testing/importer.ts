/**
 * Test helpers of @dmakit/dmabuf used by several of its test files (not shipped): an ERR_PTR
 * unwrapper and a dynamic peer-to-peer importer that unmaps in move_notify, as mlx5's
 * invalidate callback does.
 */
import { DMA_BIDIRECTIONAL, isErrPtr } from '@dmakit/dma-core';
import type { Device, DmaBufAttachment, SgTable } from '@dmakit/dma-core';
import { dmaBufDynamicAttach, dmaBufMapAttachmentUnlocked, dmaBufUnmapAttachment, dmaBufUnmapAttachmentUnlocked } from '@dmakit/dmabuf';
import type { DmaBufObject } from '@dmakit/dmabuf';

/** The value, or a thrown Error naming the errno an ERR_PTR-style call returned. */
export function must<T>(x: T | number): T {
  if (isErrPtr(x)) throw new Error(`errno ${x}`);
  return x;
}

/** A dynamic P2P importer that unmaps in move_notify (like mlx5's invalidate callback). */
export class Importer {
  sgt: SgTable | null = null;
  notifies = 0;
  readonly attach: DmaBufAttachment;
  constructor(
    readonly buf: DmaBufObject,
    readonly dev: Device,
  ) {
    this.attach = must(
      dmaBufDynamicAttach(buf, dev, {
        allowPeer2peer: true,
        moveNotify: () => {
          this.notifies++;
          if (this.sgt !== null) dmaBufUnmapAttachment(this.attach, this.sgt, DMA_BIDIRECTIONAL);
          this.sgt = null;
        },
      }),
    );
  }

  map(): SgTable | number {
    const r = dmaBufMapAttachmentUnlocked(this.attach, DMA_BIDIRECTIONAL);
    if (!isErrPtr(r)) this.sgt = r;
    return r;
  }

  unmap(): void {
    if (this.sgt !== null) dmaBufUnmapAttachmentUnlocked(this.attach, this.sgt, DMA_BIDIRECTIONAL);
    this.sgt = null;
  }
}

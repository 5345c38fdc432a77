// kernel: drivers/dma-buf/dma-buf.c (dma_buf_fd, dma_buf_get, the file's release), fs/file.c
// File-descriptor-like handles: a table per "process"; each fd holds one reference.
import { Errno } from '@dmakit/dma-core';
import type { DmaBuf, DmaBufPort } from '@dmakit/dma-core';
import {
  dmaBufAttach,
  dmaBufBeginCpuAccess,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufEndCpuAccess,
  dmaBufMapAttachment,
  dmaBufMapAttachmentUnlocked,
  dmaBufPin,
  dmaBufPut,
  dmaBufUnmapAttachment,
  dmaBufUnmapAttachmentUnlocked,
  dmaBufUnpin,
  getDmaBuf,
  toDmaBufObject,
} from './dmaBuf.js';
import type { DmaBufObject } from './dmaBuf.js';
import { dmaResvLock, dmaResvTestSignaled, dmaResvUnlock, dmaResvWaitTimeout } from './resv.js';

/** `O_CLOEXEC` for `dmaBufFd` flags. */
export const O_CLOEXEC = 0o2000000;

/** A process's file table, holding dma-buf files only. Lowest free fd first, from 3. */
export class DmaBufFdTable {
  readonly #files = new Map<number, DmaBufObject>();

  /** Number of open dma-buf fds. */
  get openCount(): number {
    return this.#files.size;
  }

  /** `dma_buf_fd(dmabuf, flags)`: install; the fd takes over the caller's reference. */
  install(dmabuf: DmaBuf, flags = 0): number {
    const buf = toDmaBufObject(dmabuf);
    if (buf === null || buf.released) return -Errno.EINVAL;
    if (!Number.isInteger(flags) || (flags & ~O_CLOEXEC) !== 0) return -Errno.EINVAL;
    let fd = 3;
    while (this.#files.has(fd)) fd++;
    this.#files.set(fd, buf);
    return fd;
  }

  /** `dma_buf_get(fd)`: a new reference, -EBADF for no such fd. */
  get(fd: number): DmaBufObject | number {
    const buf = Number.isInteger(fd) ? this.#files.get(fd) : undefined;
    if (buf === undefined) return -Errno.EBADF;
    getDmaBuf(buf);
    return buf;
  }

  /** `close(fd)`: drop the fd's reference. 0 or -EBADF. */
  close(fd: number): number {
    const buf = Number.isInteger(fd) ? this.#files.get(fd) : undefined;
    if (buf === undefined) return -Errno.EBADF;
    this.#files.delete(fd);
    dmaBufPut(buf);
    return 0;
  }

  /** Close every fd (process exit). */
  closeAll(): void {
    for (const fd of [...this.#files.keys()]) this.close(fd);
  }
}

/** `dma_buf_fd(dmabuf, flags)`. */
export function dmaBufFd(table: DmaBufFdTable, dmabuf: DmaBuf, flags = 0): number {
  return table.install(dmabuf, flags);
}

/** `dma_buf_get(fd)` in `table`. */
export function dmaBufGet(table: DmaBufFdTable, fd: number): DmaBufObject | number {
  return table.get(fd);
}

/** The dma-buf port (dma-core contract) an importer is given, resolving fds in `table`. */
export function createDmaBufPort(table: DmaBufFdTable): DmaBufPort {
  return {
    dmaBufGet: (fd) => table.get(fd),
    dmaBufPut,
    dmaBufAttach,
    dmaBufDynamicAttach,
    dmaBufDetach,
    dmaBufPin,
    dmaBufUnpin,
    dmaBufMapAttachment,
    dmaBufUnmapAttachment,
    dmaBufMapAttachmentUnlocked,
    dmaBufUnmapAttachmentUnlocked,
    dmaBufBeginCpuAccess,
    dmaBufEndCpuAccess,
    dmaResvLock,
    dmaResvUnlock,
    dmaResvWaitTimeout,
    dmaResvTestSignaled,
  };
}

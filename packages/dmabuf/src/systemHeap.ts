// kernel: drivers/dma-buf/heaps/system_heap.c, drivers/dma-buf/dma-heap.c
// The system heap: buffers of RAM pages (largest orders first: 1 MiB, 64 KiB, 4 KiB), mapped for
// each attachment with dma_map_sgtable. Not dynamic: the pages never move.
import { Device, Errno, GFP_ZERO, PAGE_SIZE, SgTable, dmaMapSgtable, dmaSyncSgtableForCpu, dmaSyncSgtableForDevice, dmaUnmapSgtable, pageAlign } from '@dmakit/dma-core';
import type { DmaDataDirection, Machine } from '@dmakit/dma-core';
import { dmaBufExport } from './dmaBuf.js';
import type { DmaBufAttachmentObject, DmaBufObject, DmaBufOps, IosysMap } from './dmaBuf.js';

/** `orders[]` of system_heap.c: 8 (1 MiB), 4 (64 KiB), 0. */
const ORDERS = [8, 4, 0] as const;

interface HeapBuffer {
  readonly len: number;
  readonly chunkPhys: Float64Array;
  readonly chunkOrder: Uint8Array;
}

/** Physically contiguous chunks of a heap buffer, as a CPU view over machine memory. */
function chunkMap(machine: Machine, b: HeapBuffer): IosysMap {
  const walk = (offset: number, len: number, fn: (phys: number, at: number, n: number) => void): void => {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(len) || offset < 0 || len < 0 || offset + len > b.len) {
      throw new RangeError(`iosys_map: [${offset}, +${len}) outside the ${b.len}-byte buffer`);
    }
    let base = 0;
    let done = 0;
    for (let i = 0; i < b.chunkPhys.length && done < len; i++) {
      const size = PAGE_SIZE * 2 ** (b.chunkOrder[i] ?? 0);
      const pos = offset + done;
      if (pos < base + size) {
        const n = Math.min(len - done, base + size - pos);
        fn((b.chunkPhys[i] ?? 0) + (pos - base), done, n);
        done += n;
      }
      base += size;
    }
  };
  return {
    isIomem: false,
    read(offset, len) {
      const out = new Uint8Array(len);
      walk(offset, len, (phys, at, n) => {
        machine.memory.readInto(phys, out, at, n);
      });
      return out;
    },
    write(offset, bytes) {
      walk(offset, bytes.length, (phys, at, n) => {
        machine.memory.write(phys, bytes, at, n);
      });
    },
  };
}

/** `struct dma_heap` "system". */
export class SystemHeap {
  readonly machine: Machine;
  /** The heap's misc device (`/dev/dma_heap/system`): names it in reports. */
  readonly dev: Device;
  liveBuffers = 0;
  liveBytes = 0;

  constructor(machine: Machine) {
    this.machine = machine;
    this.dev = new Device(machine, { name: 'dma_heap/system', dmaMaskBits: 64 });
  }

  /**
   * `dma_heap_buffer_alloc(heap, len, fd_flags, heap_flags)` without the fd: a zeroed buffer of
   * RAM pages, or -EINVAL (bad length) / -ENOMEM (nothing leaked).
   */
  allocate(len: number, name = ''): DmaBufObject | number {
    if (!Number.isSafeInteger(len) || len <= 0) return -Errno.EINVAL;
    const size = pageAlign(len);
    const phys: number[] = [];
    const orders: number[] = [];
    const mem = this.machine.memory;
    let left = size;
    const undo = (): number => {
      for (let i = 0; i < phys.length; i++) mem.freePages(phys[i] ?? 0, orders[i] ?? 0);
      return -Errno.ENOMEM;
    };
    while (left > 0) {
      let got = 0;
      let order = 0;
      for (const o of ORDERS) {
        if (PAGE_SIZE * 2 ** o > left) continue;
        got = mem.allocPages(o, GFP_ZERO);
        if (got !== 0) {
          order = o;
          break;
        }
        // alloc_largest_available: try the next smaller order; order 0 failing is -ENOMEM.
      }
      if (got === 0) return undo();
      phys.push(got);
      orders.push(order);
      left -= PAGE_SIZE * 2 ** order;
    }
    const buf: HeapBuffer = { len: size, chunkPhys: Float64Array.from(phys), chunkOrder: Uint8Array.from(orders) };
    const machine = this.machine;
    const onRelease = (): void => {
      this.liveBuffers--;
      this.liveBytes -= buf.len;
    };
    const ops: DmaBufOps = {
      mapDmaBuf(attach: DmaBufAttachmentObject, dir: DmaDataDirection) {
        // system_heap_map_dma_buf: the attachment's own copy of the table (dup_sg_table)
        const sgt = new SgTable(buf.chunkPhys.length);
        for (let i = 0; i < buf.chunkPhys.length; i++) sgt.push(buf.chunkPhys[i] ?? 0, PAGE_SIZE * 2 ** (buf.chunkOrder[i] ?? 0));
        const ret = dmaMapSgtable(attach.dev, sgt, dir, 0);
        return ret === 0 ? sgt : ret;
      },
      unmapDmaBuf(attach, sgt, dir) {
        dmaUnmapSgtable(attach.dev, sgt, dir, 0);
      },
      beginCpuAccess(dmabuf, dir) {
        for (const a of dmabuf.attachments) for (const sgt of a.maps.keys()) dmaSyncSgtableForCpu(a.dev, sgt, dir);
        return 0;
      },
      endCpuAccess(dmabuf, dir) {
        for (const a of dmabuf.attachments) for (const sgt of a.maps.keys()) dmaSyncSgtableForDevice(a.dev, sgt, dir);
        return 0;
      },
      vmap() {
        return chunkMap(machine, buf);
      },
      vunmap() {
        /* nothing to undo: the linear map */
      },
      release() {
        for (let i = 0; i < buf.chunkPhys.length; i++) mem.freePages(buf.chunkPhys[i] ?? 0, buf.chunkOrder[i] ?? 0);
        onRelease();
      },
    };
    const dmabuf = dmaBufExport({ exporter: this.dev, expName: 'system', ops, size, priv: buf });
    if (typeof dmabuf === 'number') return (undo(), dmabuf);
    dmabuf.name = name;
    this.liveBuffers++;
    this.liveBytes += size;
    return dmabuf;
  }

  /** Physical address of each chunk of a heap buffer and its size (for tests). */
  chunks(dmabuf: DmaBufObject): { phys: number; size: number }[] {
    const b = dmabuf.priv as HeapBuffer | null;
    if (b === null || !(b.chunkPhys instanceof Float64Array)) return [];
    return Array.from(b.chunkPhys, (p, i) => ({ phys: p, size: PAGE_SIZE * 2 ** (b.chunkOrder[i] ?? 0) }));
  }
}

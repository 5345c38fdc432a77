// The GPU VRAM exporter: P2P out of VRAM, eviction to system memory and back with move_notify,
// the copy fenced in the reservation object, static importers pinned, frees deferred past stale maps.
import { describe, expect, it } from 'vitest';
import { DMA_BIDIRECTIONAL, DMA_RESV_USAGE_KERNEL, Errno, MAX_SCHEDULE_TIMEOUT, PAGE_SIZE, SZ_1M, isErrPtr } from '@dmakit/dma-core';
import type { Device, DmaBufAttachment, SgTable } from '@dmakit/dma-core';
import {
  GpuVramExporter,
  dmaBufAttach,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufMapAttachmentUnlocked,
  dmaBufMappingIsStale,
  dmaBufPut,
  dmaBufSgtMode,
  dmaBufUnmapAttachment,
  dmaBufUnmapAttachmentUnlocked,
  dmaBufVmapUnlocked,
  dmaBufVunmapUnlocked,
  dmaResvWaitTimeout,
} from '@dmakit/dmabuf';
import type { DmaBufObject } from '@dmakit/dmabuf';
import { pattern, sameBytes } from '@dmakit/testkit';
import { buildTopology } from './testing/topology.js';

function must<T>(x: T | number): T {
  if (isErrPtr(x)) throw new Error(`errno ${x}`);
  return x;
}

/** Dynamic importer that unmaps in move_notify and waits for kernel fences after each map. */
class Importer {
  sgt: SgTable | null = null;
  notifies = 0;
  readonly attach: DmaBufAttachment;
  constructor(
    readonly buf: DmaBufObject,
    readonly dev: Device,
    readonly wait = true,
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
  ensure(): SgTable {
    if (this.sgt !== null) return this.sgt;
    const s = must(dmaBufMapAttachmentUnlocked(this.attach, DMA_BIDIRECTIONAL));
    if (this.wait) dmaResvWaitTimeout(this.buf.resv, DMA_RESV_USAGE_KERNEL, false, MAX_SCHEDULE_TIMEOUT);
    this.sgt = s;
    return s;
  }
  /** Device reads `len` bytes at buffer offset `off` through its mapping. */
  read(off: number, len: number): Uint8Array {
    const s = this.ensure();
    const out = new Uint8Array(len);
    let base = 0;
    let done = 0;
    for (let i = 0; i < s.nents && done < len; i++) {
      const segLen = s.dmaLength[i]!;
      const pos = off + done;
      if (pos < base + segLen) {
        const n = Math.min(len - done, base + segLen - pos);
        this.dev.dmaReadInto(s.dmaAddress[i]! + (pos - base), out, done, n);
        done += n;
      }
      base += segLen;
    }
    return out;
  }
  done(): void {
    if (this.sgt !== null) dmaBufUnmapAttachmentUnlocked(this.attach, this.sgt, DMA_BIDIRECTIONAL);
    this.sgt = null;
    dmaBufDetach(this.buf, this.attach);
  }
}

describe('GPU VRAM exporter', () => {
  it('exports VRAM; a peer under the same switch reads it by bus address, the NIC through the host bridge', () => {
    const t = buildTopology();
    const gpu = new GpuVramExporter(t.machine, t.gpu);
    const buf = must(gpu.exportBuffer(2 * SZ_1M, { maxRange: SZ_1M / 2 }));
    expect(gpu.placement(buf)).toBe('vram');
    expect(gpu.vramRanges(buf)).toHaveLength(4);
    const data = pattern(2 * SZ_1M, 11);
    expect(gpu.gpuWrite(buf, 0, data)).toBe(0);
    const peer = new Importer(buf, t.peer);
    const nic = new Importer(buf, t.nic);
    expect(dmaBufSgtMode(peer.ensure())).toBe('bus-addr');
    expect(dmaBufSgtMode(nic.ensure())).toBe('map-phys');
    expect(nic.sgt?.nents).toBe(4);
    expect(sameBytes(peer.read(0, 2 * SZ_1M), data)).toBe(true);
    expect(nic.read(SZ_1M / 2 - 100, 5000)).toEqual(data.subarray(SZ_1M / 2 - 100, SZ_1M / 2 + 4900));
    peer.done();
    nic.done();
    dmaBufPut(buf);
    expect(gpu.stats.vramPagesUsed).toBe(0);
    expect(t.machine.dmaDebug.entries).toBe(0);
  });

  it('evict and restore: move_notify each time, re-map, the copy is fenced, bytes survive', () => {
    const t = buildTopology();
    const gpu = new GpuVramExporter(t.machine, t.gpu, { copyBytesPerNs: 10 });
    const pagesBefore = t.machine.memory.allocatedPageCount;
    const buf = must(gpu.exportBuffer(SZ_1M));
    const data = pattern(SZ_1M, 5);
    gpu.gpuWrite(buf, 0, data);
    const nic = new Importer(buf, t.nic);
    expect(nic.read(0, 16)).toEqual(data.subarray(0, 16));
    const t0 = t.machine.clock.now();
    expect(gpu.evict(buf)).toBe(0);
    expect(nic.notifies).toBe(1);
    expect(nic.sgt).toBeNull();
    expect(gpu.placement(buf)).toBe('system');
    expect(buf.resv.fenceCount).toBe(1);
    // Re-map: system pages now; waiting for the kernel fence lands the copy.
    const s = nic.ensure();
    expect(dmaBufSgtMode(s)).toBeNull();
    expect(t.machine.clock.now() - t0).toBe(Math.ceil(SZ_1M / 10));
    expect(sameBytes(nic.read(0, SZ_1M), data)).toBe(true);
    expect(t.machine.memory.allocatedPageCount - pagesBefore).toBe(SZ_1M / PAGE_SIZE);
    expect(gpu.stats.vramPagesUsed).toBe(0);
    expect(gpu.restore(buf)).toBe(0);
    expect(nic.notifies).toBe(2);
    expect(nic.read(4096, 4096)).toEqual(data.subarray(4096, 8192));
    expect(gpu.placement(buf)).toBe('vram');
    expect(t.machine.memory.allocatedPageCount).toBe(pagesBefore);
    expect(gpu.stats).toMatchObject({ evictions: 1, restores: 1, bytesCopied: 2 * SZ_1M });
    nic.done();
    dmaBufPut(buf);
    expect(t.machine.dmaDebug.entries).toBe(0);
  });

  it('an importer that skips the fence wait reads the destination before the copy lands', () => {
    const t = buildTopology();
    const gpu = new GpuVramExporter(t.machine, t.gpu);
    const buf = must(gpu.exportBuffer(64 * 1024));
    gpu.gpuWrite(buf, 0, pattern(64 * 1024, 2));
    const careless = new Importer(buf, t.nic, false);
    gpu.evict(buf);
    expect(careless.read(0, 8)).toEqual(new Uint8Array(8)); // zeroed pages: the copy has not run
    dmaResvWaitTimeout(buf.resv, DMA_RESV_USAGE_KERNEL, false, MAX_SCHEDULE_TIMEOUT);
    expect(careless.read(0, 8)).toEqual(pattern(64 * 1024, 2).subarray(0, 8));
    careless.done();
    dmaBufPut(buf);
  });

  it('a static importer pins: the buffer moves to system memory for it and cannot move while mapped', () => {
    const t = buildTopology();
    const gpu = new GpuVramExporter(t.machine, t.gpu);
    const buf = must(gpu.exportBuffer(64 * 1024));
    const data = pattern(64 * 1024, 8);
    gpu.gpuWrite(buf, 0, data);
    const dyn = new Importer(buf, t.peer);
    dyn.ensure();
    const st = must(dmaBufAttach(buf, t.nic));
    const sgt = must(dmaBufMapAttachmentUnlocked(st, DMA_BIDIRECTIONAL));
    // Not P2P-capable: amdgpu pins such importers in GTT; the dynamic importer heard about it.
    expect(gpu.placement(buf)).toBe('system');
    expect(dyn.notifies).toBe(1);
    // The core waited for the copy before handing the static importer its table.
    expect(t.nic.dmaRead(sgt.dmaAddress[0]!, 64)).toEqual(data.subarray(0, 64));
    expect(gpu.restore(buf)).toBe(-Errno.EBUSY);
    expect(gpu.evict(buf)).toBe(0);
    dmaBufUnmapAttachmentUnlocked(st, sgt, DMA_BIDIRECTIONAL);
    expect(gpu.restore(buf)).toBe(0);
    expect(dyn.read(0, 64)).toEqual(data.subarray(0, 64));
    dmaBufDetach(buf, st);
    dyn.done();
    dmaBufPut(buf);
    expect(t.machine.dmaDebug.entries).toBe(0);
  });

  it('the old placement is not freed while an importer still maps it (stale past move_notify)', () => {
    const t = buildTopology();
    const gpu = new GpuVramExporter(t.machine, t.gpu);
    const buf = must(gpu.exportBuffer(64 * 1024));
    const lazy = must(dmaBufDynamicAttach(buf, t.peer, { allowPeer2peer: true, moveNotify() {} }));
    const old = must(dmaBufMapAttachmentUnlocked(lazy, DMA_BIDIRECTIONAL));
    expect(gpu.evict(buf)).toBe(0);
    dmaResvWaitTimeout(buf.resv, DMA_RESV_USAGE_KERNEL, false, MAX_SCHEDULE_TIMEOUT);
    expect(dmaBufMappingIsStale(lazy, old)).toBe(true);
    expect(gpu.stats.deferredFrees).toBe(1);
    expect(gpu.stats.vramPagesUsed).toBe(16); // VRAM still held for the stale mapping
    const other = must(gpu.exportBuffer(gpu.vramFreeBytes));
    expect(gpu.exportBuffer(PAGE_SIZE)).toBe(-Errno.ENOMEM);
    dmaBufUnmapAttachmentUnlocked(lazy, old, DMA_BIDIRECTIONAL);
    expect(gpu.stats.vramPagesUsed).toBe((16 * SZ_1M) / PAGE_SIZE - 16);
    expect(gpu.restore(buf)).toBe(0);
    dmaBufDetach(buf, lazy);
    dmaBufPut(buf);
    dmaBufPut(other);
    expect(gpu.stats.vramPagesUsed).toBe(0);
  });

  it('vmap gives a CPU view and pins the buffer', () => {
    const t = buildTopology();
    const gpu = new GpuVramExporter(t.machine, t.gpu);
    const buf = must(gpu.exportBuffer(8192));
    const map = must(dmaBufVmapUnlocked(buf));
    expect(map.isIomem).toBe(true);
    map.write(4000, pattern(200, 4));
    expect(gpu.gpuRead(buf, 4000, 200)).toEqual(pattern(200, 4));
    expect(gpu.evict(buf)).toBe(-Errno.EBUSY);
    dmaBufVunmapUnlocked(buf, map);
    expect(gpu.evict(buf)).toBe(0);
    expect(gpu.gpuRead(buf, 4000, 200)).toEqual(pattern(200, 4));
    dmaBufPut(buf);
  });
});

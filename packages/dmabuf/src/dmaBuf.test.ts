// Framework rules of drivers/dma-buf/dma-buf.c: export, fds and references, attach, the
// reservation lock around map/unmap, pin-on-map for static importers, fences.
import { describe, expect, it } from 'vitest';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_RESV_USAGE_KERNEL, DMA_TO_DEVICE, DmaDebugError, Errno, MAX_SCHEDULE_TIMEOUT, SZ_1M, isErrPtr } from '@dmakit/dma-core';
import type { DmaBufAttachment, SgTable } from '@dmakit/dma-core';
import {
  DmaBufFdTable,
  SystemHeap,
  createDmaBufPort,
  dmaBufAttach,
  dmaBufBeginCpuAccess,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufEndCpuAccess,
  dmaBufExport,
  dmaBufFd,
  dmaBufMapAttachment,
  dmaBufMapAttachmentUnlocked,
  dmaBufPut,
  dmaBufUnmapAttachment,
  dmaBufUnmapAttachmentUnlocked,
  dmaBufVmapUnlocked,
  dmaBufVunmapUnlocked,
  dmaFenceContextAlloc,
  dmaFenceCreate,
  dmaFenceIsSignaled,
  dmaResvAddFence,
  dmaResvLock,
  dmaResvTestSignaled,
  dmaResvUnlock,
  dmaResvWaitTimeout,
} from '@dmakit/dmabuf';
import type { DmaBufObject } from '@dmakit/dmabuf';
import { pattern } from '@dmakit/testkit';
import { buildTopology } from './testing/topology.js';

function mustBuf(x: DmaBufObject | number): DmaBufObject {
  if (typeof x === 'number') throw new Error(`errno ${x}`);
  return x;
}

function must<T>(x: T | number): T {
  if (isErrPtr(x)) throw new Error(`errno ${x}`);
  return x;
}

function rules(t: ReturnType<typeof buildTopology>): string[] {
  return t.machine.dmaDebug.reports.map((r) => r.rule);
}

describe('export and references', () => {
  it('rejects export info without the mandatory ops, or with pin but no unpin', () => {
    const t = buildTopology({ debug: 'warn' });
    const base = { exporter: t.gpu, expName: 'x', size: 4096 };
    expect(dmaBufExport({ ...base, ops: { release() {}, unmapDmaBuf() {} } as never })).toBe(-Errno.EINVAL);
    expect(dmaBufExport({ ...base, ops: { release() {}, unmapDmaBuf() {}, mapDmaBuf: () => -Errno.ENOMEM, pin: () => 0 } })).toBe(-Errno.EINVAL);
    expect(dmaBufExport({ ...base, size: 0, ops: { release() {}, unmapDmaBuf() {}, mapDmaBuf: () => -Errno.ENOMEM } })).toBe(-Errno.EINVAL);
    expect(rules(t)).toEqual(['dmabuf-bad-export', 'dmabuf-bad-export', 'dmabuf-bad-export']);
  });

  it('fds hold references; the last put releases the pages', () => {
    const t = buildTopology();
    const heap = new SystemHeap(t.machine);
    const before = t.machine.memory.allocatedPageCount;
    const buf = mustBuf(heap.allocate(3 * SZ_1M + 4096));
    expect(buf.size).toBe(3 * SZ_1M + 4096);
    expect(heap.chunks(buf).map((c) => c.size)).toEqual([SZ_1M, SZ_1M, SZ_1M, 4096]);
    const fds = new DmaBufFdTable();
    const fd = dmaBufFd(fds, buf);
    expect(fd).toBe(3);
    const port = createDmaBufPort(fds);
    const got = port.dmaBufGet(fd);
    expect(got).toBe(buf);
    expect(buf.refcount).toBe(2);
    expect(port.dmaBufGet(99)).toBe(-Errno.EBADF);
    expect(fds.close(fd)).toBe(0);
    expect(fds.close(fd)).toBe(-Errno.EBADF);
    expect(heap.liveBuffers).toBe(1);
    port.dmaBufPut(buf);
    expect(buf.released).toBe(true);
    expect(heap.liveBuffers).toBe(0);
    expect(t.machine.memory.allocatedPageCount).toBe(before);
  });

  it("dma_buf_attach returns -ENOMEM when the attachment cannot be allocated (fault-injection site 'dmabuf_attach'), and the buffer keeps no attachment", () => {
    const t = buildTopology({ debug: 'strict' });
    const heap = new SystemHeap(t.machine);
    const buf = mustBuf(heap.allocate(64 * 1024));
    t.machine.faultInjection.arm('dmabuf_attach', 1);
    expect(dmaBufAttach(buf, t.peer)).toBe(-Errno.ENOMEM);
    expect(buf.attachments).toHaveLength(0);
    const a = must(dmaBufAttach(buf, t.peer));
    dmaBufDetach(buf, a);
    dmaBufPut(buf);
    expect(heap.liveBuffers).toBe(0);
  });

  it('a put after release and a release while attached are reported; nothing leaks', () => {
    const t = buildTopology({ debug: 'warn' });
    const heap = new SystemHeap(t.machine);
    const before = t.machine.memory.allocatedPageCount;
    const buf = mustBuf(heap.allocate(64 * 1024));
    const a = must(dmaBufAttach(buf, t.peer));
    must(dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL));
    expect(t.machine.dmaDebug.entries).toBe(1);
    dmaBufPut(buf);
    expect(rules(t)).toEqual(['dmabuf-release-attached']);
    expect(t.machine.dmaDebug.entries).toBe(0);
    expect(t.machine.memory.allocatedPageCount).toBe(before);
    dmaBufPut(buf);
    expect(rules(t)).toEqual(['dmabuf-release-attached', 'dmabuf-refcount']);
    expect(dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL)).toBe(-Errno.EINVAL);
  });
});

describe('attach, map and the reservation lock', () => {
  it('a static importer maps the heap buffer and its device writes reach the pages', () => {
    const t = buildTopology();
    const heap = new SystemHeap(t.machine);
    const buf = mustBuf(heap.allocate(2 * SZ_1M));
    const a = must(dmaBufAttach(buf, t.nic));
    expect(a.peer2peer).toBe(false);
    expect(dmaResvLock(buf.resv)).toBe(0);
    const sgt = must(dmaBufMapAttachment(a, DMA_FROM_DEVICE));
    dmaResvUnlock(buf.resv);
    expect(sgt.nents).toBe(2);
    const data = pattern(8192, 7);
    // The NIC writes 8 KiB straddling nothing; then 4 KiB at the start of the second segment.
    t.nic.dmaWrite(sgt.dmaAddress[0]!, data);
    t.nic.dmaWrite(sgt.dmaAddress[1]!, data.subarray(0, 4096));
    expect(dmaBufBeginCpuAccess(buf, DMA_FROM_DEVICE)).toBe(0);
    const map = must(dmaBufVmapUnlocked(buf));
    expect(map.read(0, 8192)).toEqual(data);
    expect(map.read(SZ_1M, 4096)).toEqual(data.subarray(0, 4096));
    dmaBufVunmapUnlocked(buf, map);
    expect(dmaBufEndCpuAccess(buf, DMA_FROM_DEVICE)).toBe(0);
    dmaBufUnmapAttachmentUnlocked(a, sgt, DMA_FROM_DEVICE);
    dmaBufDetach(buf, a);
    dmaBufPut(buf);
    expect(t.machine.dmaDebug.entries).toBe(0);
    expect(t.machine.dmaDebug.reports).toEqual([]);
  });

  it('map and unmap without the reservation lock are reported (strict mode throws, naming the rule)', () => {
    const t = buildTopology();
    const heap = new SystemHeap(t.machine);
    const buf = mustBuf(heap.allocate(4096));
    const a = must(dmaBufAttach(buf, t.peer));
    expect(() => dmaBufMapAttachment(a, DMA_TO_DEVICE)).toThrow(DmaDebugError);
    expect(rules(t)).toEqual(['dmabuf-resv-not-held']);
    expect(buf.mappedCount).toBe(0);
    const sgt = must(dmaBufMapAttachmentUnlocked(a, DMA_TO_DEVICE));
    expect(() => {
      dmaBufUnmapAttachment(a, sgt, DMA_TO_DEVICE);
    }).toThrow(/dma_resv_assert_held/);
    dmaBufUnmapAttachmentUnlocked(a, sgt, DMA_TO_DEVICE);
    expect(buf.mappedCount).toBe(0);
  });

  it('warn mode: the map proceeds after the report, as the kernel does after lockdep', () => {
    const t = buildTopology({ debug: 'warn' });
    const buf = mustBuf(new SystemHeap(t.machine).allocate(4096));
    const a = must(dmaBufAttach(buf, t.peer));
    const sgt = must(dmaBufMapAttachment(a, DMA_TO_DEVICE));
    expect(rules(t)).toEqual(['dmabuf-resv-not-held']);
    dmaBufUnmapAttachmentUnlocked(a, sgt, DMA_TO_DEVICE);
  });

  it('mapping after detach, unmapping twice and detaching with live mappings are reported', () => {
    const t = buildTopology({ debug: 'warn' });
    const buf = mustBuf(new SystemHeap(t.machine).allocate(4096));
    const a = must(dmaBufAttach(buf, t.peer));
    const sgt = must(dmaBufMapAttachmentUnlocked(a, DMA_TO_DEVICE));
    dmaBufUnmapAttachmentUnlocked(a, sgt, DMA_TO_DEVICE);
    dmaBufUnmapAttachmentUnlocked(a, sgt, DMA_TO_DEVICE);
    must(dmaBufMapAttachmentUnlocked(a, DMA_TO_DEVICE));
    dmaBufDetach(buf, a);
    expect(dmaBufMapAttachmentUnlocked(a, DMA_TO_DEVICE)).toBe(-Errno.EINVAL);
    expect(rules(t)).toEqual(['dmabuf-unmap-not-mapped', 'dmabuf-detach-mapped', 'dmabuf-bad-attachment']);
    expect(t.machine.dmaDebug.entries).toBe(0);
  });

  it('attaching while holding the reservation lock is the deadlock the kernel would hit', () => {
    const t = buildTopology({ debug: 'warn' });
    const buf = mustBuf(new SystemHeap(t.machine).allocate(4096));
    dmaResvLock(buf.resv);
    expect(dmaBufAttach(buf, t.peer)).toBe(-Errno.EDEADLK);
    dmaResvUnlock(buf.resv);
    expect(rules(t)).toEqual(['dmabuf-resv-deadlock']);
    expect(buf.attachmentCount).toBe(0);
  });

  it('a dynamic importer must provide move_notify', () => {
    const t = buildTopology({ debug: 'warn' });
    const buf = mustBuf(new SystemHeap(t.machine).allocate(4096));
    expect(dmaBufDynamicAttach(buf, t.peer, { allowPeer2peer: true } as never)).toBe(-Errno.EINVAL);
    const a = dmaBufDynamicAttach(buf, t.peer, { allowPeer2peer: true, moveNotify(_x: DmaBufAttachment) {} });
    expect(isErrPtr(a)).toBe(false);
    if (!isErrPtr(a)) expect(a.peer2peer).toBe(true);
  });
});

describe('pinning static importers', () => {
  it('a static importer pins for as long as it maps; a dynamic one does not', () => {
    const t = buildTopology();
    let pins = 0;
    const maps: SgTable[] = [];
    const heap = new SystemHeap(t.machine);
    const inner = mustBuf(heap.allocate(4096));
    const buf = mustBuf(
      dmaBufExport({
        exporter: t.gpu,
        expName: 'pinnable',
        size: 4096,
        ops: {
          pin: () => (pins++, 0),
          unpin: () => {
            pins--;
          },
          mapDmaBuf: (attach, dir) => {
            const r = inner.ops.mapDmaBuf(attach, dir);
            if (typeof r !== 'number') maps.push(r);
            return r;
          },
          unmapDmaBuf: (attach, sgt, dir) => {
            inner.ops.unmapDmaBuf(attach, sgt, dir);
          },
          release: () => {
            dmaBufPut(inner);
          },
        },
      }),
    );
    const s = must(dmaBufAttach(buf, t.peer));
    const d = must(dmaBufDynamicAttach(buf, t.nic, { allowPeer2peer: false, moveNotify() {} }));
    const st = must(dmaBufMapAttachmentUnlocked(s, DMA_TO_DEVICE));
    expect(pins).toBe(1);
    const dt = must(dmaBufMapAttachmentUnlocked(d, DMA_TO_DEVICE));
    expect(pins).toBe(1);
    dmaBufUnmapAttachmentUnlocked(s, st, DMA_TO_DEVICE);
    expect(pins).toBe(0);
    dmaBufUnmapAttachmentUnlocked(d, dt, DMA_TO_DEVICE);
    dmaBufDetach(buf, s);
    dmaBufDetach(buf, d);
    dmaBufPut(buf);
    expect(heap.liveBuffers).toBe(0);
    expect(maps).toHaveLength(2);
  });
});

describe('fences', () => {
  it('waiting advances the simulated clock to the fence and runs its completion once', () => {
    const t = buildTopology();
    const buf = mustBuf(new SystemHeap(t.machine).allocate(4096));
    const clock = t.machine.clock;
    let ran = 0;
    const f = dmaFenceCreate(clock, dmaFenceContextAlloc(), 1, clock.now() + 5000, () => ran++);
    expect(dmaResvLock(buf.resv)).toBe(0);
    expect(dmaResvAddFence(buf.resv, f, DMA_RESV_USAGE_KERNEL)).toBe(0);
    dmaResvUnlock(buf.resv);
    expect(dmaResvTestSignaled(buf.resv, DMA_RESV_USAGE_KERNEL)).toBe(false);
    expect(dmaResvWaitTimeout(buf.resv, DMA_RESV_USAGE_KERNEL, true, 1000)).toBe(0);
    expect(clock.now()).toBe(1000);
    expect(dmaResvWaitTimeout(buf.resv, DMA_RESV_USAGE_KERNEL, true, MAX_SCHEDULE_TIMEOUT)).toBeGreaterThan(0);
    expect(clock.now()).toBe(5000);
    expect(dmaFenceIsSignaled(f)).toBe(true);
    expect(ran).toBe(1);
    expect(buf.resv.fenceCount).toBe(0);
  });

  it('a static importer waits for kernel fences in map; a fence with no end never hangs', () => {
    const t = buildTopology();
    const buf = mustBuf(new SystemHeap(t.machine).allocate(4096));
    const clock = t.machine.clock;
    const a = must(dmaBufAttach(buf, t.peer));
    dmaResvLock(buf.resv);
    dmaResvAddFence(buf.resv, dmaFenceCreate(clock, dmaFenceContextAlloc(), 1, 7000), DMA_RESV_USAGE_KERNEL);
    dmaResvUnlock(buf.resv);
    const sgt = must(dmaBufMapAttachmentUnlocked(a, DMA_TO_DEVICE));
    expect(clock.now()).toBe(7000);
    dmaBufUnmapAttachmentUnlocked(a, sgt, DMA_TO_DEVICE);
    dmaResvLock(buf.resv);
    dmaResvAddFence(buf.resv, dmaFenceCreate(clock, dmaFenceContextAlloc(), 1, -1), DMA_RESV_USAGE_KERNEL);
    dmaResvUnlock(buf.resv);
    expect(dmaBufMapAttachmentUnlocked(a, DMA_TO_DEVICE)).toBe(-Errno.ETIMEDOUT);
    expect(buf.mappedCount).toBe(0);
    expect(t.machine.dmaDebug.entries).toBe(0);
  });
});

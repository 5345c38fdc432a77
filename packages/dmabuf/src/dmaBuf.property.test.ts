// Property: after any sequence of attach / map / move / unmap / detach, nothing leaks (mappings,
// pins, pages, VRAM, dma-debug entries), no importer uses a mapping after move_notify, and every
// byte an importer or the GPU reads is the last byte written there (moves included).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DMA_BIDIRECTIONAL, DMA_RESV_USAGE_KERNEL, MAX_SCHEDULE_TIMEOUT, PAGE_SIZE, isErrPtr } from '@dmakit/dma-core';
import type { Device, DmaBufAttachment, SgTable } from '@dmakit/dma-core';
import {
  GpuVramExporter,
  dmaBufAttach,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufMapAttachmentUnlocked,
  dmaBufMappingIsStale,
  dmaBufMappingStats,
  dmaBufPut,
  dmaBufUnmapAttachment,
  dmaBufUnmapAttachmentUnlocked,
  dmaResvWaitTimeout,
} from '@dmakit/dmabuf';
import type { DmaBufObject } from '@dmakit/dmabuf';
import { pattern, sameBytes } from '@dmakit/testkit';
import { buildTopology } from './testing/topology.js';

const SIZE = 64 * 1024;

type Style = 'eager' | 'lazy' | 'static';

/** An importer: eager ones unmap inside move_notify, lazy ones at their next use, static ones pin. */
class Imp {
  attach: DmaBufAttachment | null = null;
  sgt: SgTable | null = null;
  invalid = false;
  usedStale = 0;
  constructor(
    readonly buf: DmaBufObject,
    readonly dev: Device,
    readonly style: Style,
  ) {}

  attachNow(): void {
    if (this.attach !== null) return;
    const a =
      this.style === 'static'
        ? dmaBufAttach(this.buf, this.dev)
        : dmaBufDynamicAttach(this.buf, this.dev, {
            allowPeer2peer: true,
            moveNotify: (at) => {
              this.invalid = true;
              if (this.style === 'eager' && this.sgt !== null) {
                dmaBufUnmapAttachment(at, this.sgt, DMA_BIDIRECTIONAL);
                this.sgt = null;
              }
            },
          });
    if (isErrPtr(a)) throw new Error(`attach failed ${a}`);
    this.attach = a;
  }

  unmap(): void {
    if (this.attach !== null && this.sgt !== null) dmaBufUnmapAttachmentUnlocked(this.attach, this.sgt, DMA_BIDIRECTIONAL);
    this.sgt = null;
  }

  detach(): void {
    this.unmap();
    if (this.attach !== null) dmaBufDetach(this.buf, this.attach);
    this.attach = null;
  }

  /** A usable, current mapping (re-mapped after move_notify, fences waited), or null. */
  ensure(): SgTable | null {
    this.attachNow(); // an access by a detached importer attaches it first
    if (this.attach === null) return null;
    if (this.invalid) {
      this.unmap();
      this.invalid = false;
    }
    if (this.sgt === null) {
      const s = dmaBufMapAttachmentUnlocked(this.attach, DMA_BIDIRECTIONAL);
      if (isErrPtr(s)) return null;
      if (this.style !== 'static') dmaResvWaitTimeout(this.buf.resv, DMA_RESV_USAGE_KERNEL, false, MAX_SCHEDULE_TIMEOUT);
      this.sgt = s;
    }
    if (dmaBufMappingIsStale(this.attach, this.sgt)) this.usedStale++;
    return this.sgt;
  }

  /** Device access through the mapping at buffer offset `off`. */
  access(off: number, len: number, write: Uint8Array | null): Uint8Array | null {
    const s = this.ensure();
    if (s === null) return null;
    const out = new Uint8Array(len);
    let base = 0;
    let done = 0;
    for (let i = 0; i < s.nents && done < len; i++) {
      const segLen = s.dmaLength[i] ?? 0;
      const pos = off + done;
      if (pos < base + segLen) {
        const n = Math.min(len - done, base + segLen - pos);
        const addr = (s.dmaAddress[i] ?? 0) + (pos - base);
        if (write !== null) this.dev.dmaWrite(addr, write, done, n);
        else this.dev.dmaReadInto(addr, out, done, n);
        done += n;
      }
      base += segLen;
    }
    return out;
  }
}

type Cmd =
  | { k: 'attach' | 'detach' | 'map' | 'unmap'; i: number }
  | { k: 'write'; i: number; off: number; len: number; seed: number }
  | { k: 'read'; i: number; off: number; len: number }
  | { k: 'evict' | 'restore' | 'wait' }
  | { k: 'gpuWrite'; off: number; len: number; seed: number };

const imp = fc.integer({ min: 0, max: 3 });
const span = fc.record({ off: fc.integer({ min: 0, max: SIZE - 1 }), len: fc.integer({ min: 1, max: 3 * PAGE_SIZE }) }).map(({ off, len }) => ({ off, len: Math.min(len, SIZE - off) }));
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({ k: fc.constantFrom('attach' as const, 'detach' as const, 'map' as const, 'unmap' as const), i: imp }),
  fc.tuple(imp, span, fc.nat()).map(([i, s, seed]) => ({ k: 'write' as const, i, ...s, seed })),
  fc.tuple(imp, span).map(([i, s]) => ({ k: 'read' as const, i, ...s })),
  fc.constantFrom({ k: 'evict' as const }, { k: 'restore' as const }, { k: 'wait' as const }),
  fc.tuple(span, fc.nat()).map(([s, seed]) => ({ k: 'gpuWrite' as const, ...s, seed })),
);

describe('dma-buf interleavings (GPU VRAM exporter, four importers)', () => {
  it('nothing leaks, no stale mapping is used, bytes are the last written', () => {
    fc.assert(
      fc.property(fc.array(cmd, { minLength: 1, maxLength: 60 }), fc.integer({ min: 1, max: 4 }), (cmds, frag) => {
        const t = buildTopology();
        const gpu = new GpuVramExporter(t.machine, t.gpu);
        const pages0 = t.machine.memory.allocatedPageCount;
        const live0 = dmaBufMappingStats.live;
        const bufOrErr = gpu.exportBuffer(SIZE, { maxRange: SIZE / frag });
        if (isErrPtr(bufOrErr)) throw new Error('export failed');
        const buf = bufOrErr;
        const shadow = new Uint8Array(SIZE);
        // BUS_ADDR peer, host-bridge NIC, a lazy importer, and a static (pinning) importer.
        const imps = [new Imp(buf, t.peer, 'eager'), new Imp(buf, t.nic, 'eager'), new Imp(buf, t.vfioDev, 'lazy'), new Imp(buf, t.far, 'static')];
        for (const c of cmds) {
          switch (c.k) {
            case 'attach':
              imps[c.i]?.attachNow();
              break;
            case 'detach':
              imps[c.i]?.detach();
              break;
            case 'map':
              imps[c.i]?.ensure();
              break;
            case 'unmap':
              imps[c.i]?.unmap();
              break;
            case 'write': {
              const data = pattern(c.len, c.seed);
              if (imps[c.i]?.access(c.off, c.len, data) != null) shadow.set(data, c.off);
              break;
            }
            case 'read': {
              const got = imps[c.i]?.access(c.off, c.len, null);
              if (got != null) expect(sameBytes(got, shadow.subarray(c.off, c.off + c.len))).toBe(true);
              break;
            }
            case 'evict':
              gpu.evict(buf);
              break;
            case 'restore':
              gpu.restore(buf);
              break;
            case 'wait':
              dmaResvWaitTimeout(buf.resv, DMA_RESV_USAGE_KERNEL, false, MAX_SCHEDULE_TIMEOUT);
              break;
            case 'gpuWrite': {
              const data = pattern(c.len, c.seed);
              expect(gpu.gpuWrite(buf, c.off, data)).toBe(0);
              shadow.set(data, c.off);
              break;
            }
          }
          // Eager importers never hold a mapping past move_notify.
          for (const m of imps) if (m.style === 'eager' && m.sgt !== null && m.attach !== null) expect(dmaBufMappingIsStale(m.attach, m.sgt)).toBe(false);
        }
        const back = gpu.gpuRead(buf, 0, SIZE);
        expect(back instanceof Uint8Array && sameBytes(back, shadow)).toBe(true);
        for (const m of imps) {
          expect(m.usedStale).toBe(0);
          m.detach();
        }
        expect(buf.mappedCount).toBe(0);
        dmaBufPut(buf);
        expect(gpu.stats.vramPagesUsed).toBe(0);
        expect(t.machine.memory.allocatedPageCount).toBe(pages0);
        expect(dmaBufMappingStats.live).toBe(live0);
        expect(t.machine.dmaDebug.entries).toBe(0);
        expect(t.machine.dmaDebug.reports).toEqual([]);
      }),
      { numRuns: 150, seed: 7 },
    );
  });
});

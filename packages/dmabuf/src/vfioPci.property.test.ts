// Property: over any interleaving of memory-decode toggles, resets and importer map / access /
// unmap / detach, a revoked buffer never maps (-ENODEV), no importer touches the BAR through a
// mapping that move_notify invalidated, bytes written through a live mapping land in the BAR,
// and after close + teardown nothing is left mapped.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DMA_BIDIRECTIONAL, Errno, PAGE_SIZE, isErrPtr, toPciDev } from '@dmakit/dma-core';
import type { Device, DmaBufAttachment, SgTable } from '@dmakit/dma-core';
import {
  VfioPciCoreDevice,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufMapAttachmentUnlocked,
  dmaBufMappingIsStale,
  dmaBufMappingStats,
  dmaBufPut,
  dmaBufUnmapAttachment,
  dmaBufUnmapAttachmentUnlocked,
} from '@dmakit/dmabuf';
import type { DmaBufObject } from '@dmakit/dmabuf';
import { pattern, sameBytes } from '@dmakit/testkit';
import { buildTopology } from './testing/topology.js';

const RANGES = [
  { offset: 0, length: 2 * PAGE_SIZE },
  { offset: 16 * PAGE_SIZE, length: PAGE_SIZE },
  { offset: 64 * PAGE_SIZE, length: 3 * PAGE_SIZE },
];
const SIZE = 6 * PAGE_SIZE;

/* eslint-disable vitest/no-standalone-expect -- Imp is a test importer whose methods run only inside the property */
class Imp {
  attach: DmaBufAttachment | null = null;
  sgt: SgTable | null = null;
  constructor(
    readonly buf: DmaBufObject,
    readonly dev: Device,
  ) {}
  ensure(vdev: VfioPciCoreDevice): SgTable | null {
    if (this.attach === null) {
      const a = dmaBufDynamicAttach(this.buf, this.dev, {
        allowPeer2peer: true,
        moveNotify: (at) => {
          if (this.sgt !== null) dmaBufUnmapAttachment(at, this.sgt, DMA_BIDIRECTIONAL);
          this.sgt = null;
        },
      });
      if (isErrPtr(a)) {
        expect(a).toBe(-Errno.ENODEV);
        expect(vdev.isRevoked(this.buf)).toBe(true);
        return null;
      }
      this.attach = a;
    }
    if (this.sgt === null) {
      const s = dmaBufMapAttachmentUnlocked(this.attach, DMA_BIDIRECTIONAL);
      if (isErrPtr(s)) {
        expect(s).toBe(-Errno.ENODEV);
        expect(vdev.isRevoked(this.buf)).toBe(true);
        return null;
      }
      expect(vdev.isRevoked(this.buf)).toBe(false);
      this.sgt = s;
    }
    expect(dmaBufMappingIsStale(this.attach, this.sgt)).toBe(false);
    return this.sgt;
  }
  /** Write `data` at buffer offset `off` through the mapping (segments in order). */
  write(vdev: VfioPciCoreDevice, off: number, data: Uint8Array): boolean {
    const s = this.ensure(vdev);
    if (s === null) return false;
    let base = 0;
    let done = 0;
    for (let i = 0; i < s.nents && done < data.length; i++) {
      const segLen = s.dmaLength[i] ?? 0;
      const pos = off + done;
      if (pos < base + segLen) {
        const n = Math.min(data.length - done, base + segLen - pos);
        this.dev.dmaWrite((s.dmaAddress[i] ?? 0) + (pos - base), data, done, n);
        done += n;
      }
      base += segLen;
    }
    return true;
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
}
/* eslint-enable vitest/no-standalone-expect */

type Cmd = { k: 'decode'; on: boolean } | { k: 'reset' } | { k: 'write'; i: number; off: number; len: number; seed: number } | { k: 'unmap' | 'detach'; i: number };

const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  fc.boolean().map((on) => ({ k: 'decode' as const, on })),
  fc.constant({ k: 'reset' as const }),
  fc
    .tuple(fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 2 * PAGE_SIZE }), fc.nat())
    .map(([i, off, len, seed]) => ({ k: 'write' as const, i, off, len: Math.min(len, SIZE - off), seed })),
  fc.record({ k: fc.constantFrom('unmap' as const, 'detach' as const), i: fc.integer({ min: 0, max: 1 }) }),
);

describe('VFIO dma-buf revoke interleavings', () => {
  it('revoked buffers never map, live mappings write into the BAR, nothing leaks', () => {
    fc.assert(
      fc.property(fc.array(cmd, { maxLength: 50 }), (cmds) => {
        const t = buildTopology();
        const live0 = dmaBufMappingStats.live;
        const vdev = new VfioPciCoreDevice(t.machine, t.vfioDev);
        const b = toPciDev(t.vfioDev)?.bar(1);
        if (b === undefined) throw new Error('no BAR');
        const created = vdev.featureDmaBuf({ regionIndex: 1, dmaRanges: RANGES });
        if (isErrPtr(created)) throw new Error('feature');
        const buf = created;
        // The peer under the switch (bus addresses) and the NIC through the host bridge.
        const imps = [new Imp(buf, t.peer), new Imp(buf, t.nic)];
        const barOff = (off: number): number => {
          let base = 0;
          for (const r of RANGES) {
            if (off < base + r.length) return r.offset + (off - base);
            base += r.length;
          }
          return -1;
        };
        for (const c of cmds) {
          switch (c.k) {
            case 'decode':
              vdev.setMemoryDecode(c.on);
              break;
            case 'reset':
              vdev.reset();
              break;
            case 'write': {
              const data = pattern(c.len, c.seed);
              if (imps[c.i]?.write(vdev, c.off, data) === true) {
                const got = new Uint8Array(c.len);
                for (let k = 0; k < c.len; k++) got[k] = t.machine.memory.read(b.start + barOff(c.off + k), 1)[0] ?? 0;
                expect(sameBytes(got, data)).toBe(true);
              }
              break;
            }
            case 'unmap':
              imps[c.i]?.unmap();
              break;
            case 'detach':
              imps[c.i]?.detach();
              break;
          }
          if (vdev.isRevoked(buf)) for (const m of imps) expect(m.sgt).toBeNull();
        }
        vdev.close();
        for (const m of imps) expect(m.sgt).toBeNull();
        for (const m of imps) m.detach();
        dmaBufPut(buf);
        expect(vdev.dmabufCount).toBe(0);
        expect(dmaBufMappingStats.live).toBe(live0);
        expect(t.machine.dmaDebug.entries).toBe(0);
        expect(t.machine.dmaDebug.reports).toEqual([]);
      }),
      { numRuns: 120, seed: 3 },
    );
  });
});

import { describe, expect, it } from 'vitest';
import {
  DMA_ATTR_MMIO,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  DmaFaultError,
  DmaIovaState,
  Errno,
  SgTable,
  createMachine,
  dmaIovaDestroy,
  dmaIovaLink,
  dmaIovaTryAlloc,
} from '@dmakit/dma-core';
import type { Device, DmaDataDirection, Machine } from '@dmakit/dma-core';
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE, createIommu } from './index.js';
import type { Iommu, IommuDmaOps } from './index.js';

const SZ_4K = 4096;

interface Rig {
  machine: Machine;
  iommu: Iommu;
  dev: Device;
  ops: IommuDmaOps;
}

function rig(mode: 'strict' | 'lazy', devOpts: { untrusted?: boolean; minAlignMask?: number; maxSegmentSize?: number; segmentBoundaryMask?: number } = {}): Rig {
  const machine = createMachine({ ramBytes: 256 * 2 ** 20 });
  const iommu = createIommu(machine, { mode, cpus: 2 });
  const dev = machine.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, ...devOpts });
  const domain = iommu.attachDevice(dev);
  const ops = iommu.opsOf(domain)!;
  expect(dev.dmaOps).toBe(ops);
  return { machine, iommu, dev, ops };
}

function page(machine: Machine, fill?: number): number {
  const p = machine.memory.allocPages(0);
  expect(p).toBeGreaterThan(0);
  if (fill !== undefined) machine.memory.fill(p, SZ_4K, fill);
  return p;
}

describe('dma-iommu single mappings', () => {
  it('keeps the intra-granule offset, prefers 32-bit IOVAs, and moves bytes through the page table', () => {
    const { machine, dev, ops } = rig('strict');
    const p = page(machine, 0xab);
    const dma = ops.mapPhys(dev, p + 0x10, 0x100, DMA_BIDIRECTIONAL, 0);
    expect(dma).not.toBe(DMA_MAPPING_ERROR);
    expect(dma % SZ_4K).toBe(0x10);
    expect(dma).toBeLessThan(2 ** 32);
    expect(dev.dmaRead(dma, 4)).toEqual(new Uint8Array([0xab, 0xab, 0xab, 0xab]));
    dev.dmaWrite(dma, new Uint8Array([1, 2, 3]));
    expect(machine.memory.read(p + 0x10, 3)).toEqual(new Uint8Array([1, 2, 3]));
    ops.unmapPhys(dev, dma, 0x100, DMA_BIDIRECTIONAL, 0);
  });

  it('a DMA_TO_DEVICE mapping is read-only for the device: a write faults and moves no byte', () => {
    const { machine, iommu, dev, ops } = rig('strict');
    const p = page(machine, 0x11);
    const dma = ops.mapPhys(dev, p, SZ_4K, DMA_TO_DEVICE, 0);
    expect(dev.dmaRead(dma, 1)[0]).toBe(0x11);
    expect(() => {
      dev.dmaWrite(dma, new Uint8Array([0xff]));
    }).toThrow(DmaFaultError);
    expect(machine.memory.read(p, 1)[0]).toBe(0x11);
    const f = iommu.faults.at(-1)!;
    expect(f).toMatchObject({ device: 'nvme0', iova: dma, access: 'write', reasonName: 'permission' });
    expect(iommu.stats().faults).toBe(1);
    ops.unmapPhys(dev, dma, SZ_4K, DMA_TO_DEVICE, 0);
  });

  it('strict unmap: the device faults at once', () => {
    const { machine, iommu, dev, ops } = rig('strict');
    const p = page(machine, 0x22);
    const dma = ops.mapPhys(dev, p, SZ_4K, DMA_BIDIRECTIONAL, 0);
    expect(dev.dmaRead(dma, 1)[0]).toBe(0x22); // fills the IOTLB
    ops.unmapPhys(dev, dma, SZ_4K, DMA_BIDIRECTIONAL, 0);
    expect(() => dev.dmaRead(dma, 1)).toThrow(DmaFaultError);
    expect(iommu.faults.at(-1)?.reasonName).toBe('not-present');
    expect(iommu.stats().staleIotlbAccesses).toBe(0);
  });

  it('lazy unmap: the device still reaches the page through the stale IOTLB entry until the flush, then faults', () => {
    const { machine, iommu, dev, ops } = rig('lazy');
    const p = page(machine, 0x33);
    const dma = ops.mapPhys(dev, p, SZ_4K, DMA_BIDIRECTIONAL, 0);
    expect(dev.dmaRead(dma, 1)[0]).toBe(0x33);
    ops.unmapPhys(dev, dma, SZ_4K, DMA_BIDIRECTIONAL, 0);
    expect(iommu.domainOf(dev)!.iovaToPhys(dma)).toBe(0); // PTE is gone...
    expect(dev.dmaRead(dma, 1)[0]).toBe(0x33); // ...but the IOTLB still translates it
    expect(iommu.stats().staleIotlbAccesses).toBe(1);
    expect(iommu.stats().fqPending).toBe(1);
    machine.advance(10e6); // flush-queue timer: flush_iotlb_all
    expect(iommu.stats().fqFlushes).toBe(1);
    expect(() => dev.dmaRead(dma, 1)).toThrow(DmaFaultError);
  });

  it('lazy: an IOVA is reused only after the flush', () => {
    const { machine, iommu, dev, ops } = rig('lazy');
    const p = page(machine);
    const a = ops.mapPhys(dev, p, SZ_4K, DMA_BIDIRECTIONAL, 0);
    ops.unmapPhys(dev, a, SZ_4K, DMA_BIDIRECTIONAL, 0);
    const b = ops.mapPhys(dev, p, SZ_4K, DMA_BIDIRECTIONAL, 0);
    expect(b).not.toBe(a);
    ops.unmapPhys(dev, b, SZ_4K, DMA_BIDIRECTIONAL, 0);
    machine.advance(10e6);
    const c = ops.mapPhys(dev, p, SZ_4K, DMA_BIDIRECTIONAL, 0);
    expect([a, b]).toContain(c); // back from the rcache
    expect(iommu.stats().rcacheHits).toBeGreaterThan(0);
    ops.unmapPhys(dev, c, SZ_4K, DMA_BIDIRECTIONAL, 0);
  });

  it('lazy: a full per-CPU queue (256 slots, one kept empty) forces a flush', () => {
    const { machine, iommu, dev, ops } = rig('lazy');
    const p = page(machine);
    for (let i = 0; i < 255; i++) ops.unmapPhys(dev, ops.mapPhys(dev, p, SZ_4K, DMA_FROM_DEVICE, 0), SZ_4K, DMA_FROM_DEVICE, 0);
    expect(iommu.stats().fqFlushes).toBe(0);
    expect(iommu.stats().fqPending).toBe(255);
    ops.unmapPhys(dev, ops.mapPhys(dev, p, SZ_4K, DMA_FROM_DEVICE, 0), SZ_4K, DMA_FROM_DEVICE, 0);
    expect(iommu.stats()).toMatchObject({ fqFlushes: 1, fqFullFlushes: 1, fqPending: 1 });
  });

  it('untrusted devices get strict domains and bounce unaligned buffers with the padding zeroed', () => {
    const { machine, iommu, dev, ops } = rig('lazy', { untrusted: true, minAlignMask: 0xfff });
    expect(iommu.domainOf(dev)!.type).toBe('strict');
    const p = page(machine);
    // A secret next to the 512-byte buffer in the same page.
    machine.memory.fill(p, SZ_4K, 0x5e);
    machine.memory.fill(p + 0x200, 0x200, 0x42);
    const dma = ops.mapPhys(dev, p + 0x200, 0x200, DMA_TO_DEVICE, 0);
    expect(dma).not.toBe(DMA_MAPPING_ERROR);
    const pageBase = dma - (dma % SZ_4K);
    const seen = dev.dmaRead(pageBase, SZ_4K);
    expect(seen.includes(0x5e)).toBe(false);
    expect(dev.dmaRead(dma, 0x200).every((b) => b === 0x42)).toBe(true);
    ops.unmapPhys(dev, dma, 0x200, DMA_TO_DEVICE, 0);
    expect(machine.swiotlb.stats().usedSlots).toBe(0);
    // MMIO needing a bounce is refused.
    expect(ops.mapPhys(dev, p + 0x200, 0x200, DMA_TO_DEVICE, DMA_ATTR_MMIO)).toBe(DMA_MAPPING_ERROR);
  });

  it('coherent allocations are zeroed and reachable through the IOMMU', () => {
    const { machine, dev, ops } = rig('strict');
    const buf = ops.alloc(dev, 3 * SZ_4K, 0)!;
    expect(buf).not.toBeNull();
    expect(dev.dmaRead(buf.dmaAddr, 3 * SZ_4K).every((b) => b === 0)).toBe(true);
    dev.dmaWrite(buf.dmaAddr + SZ_4K, new Uint8Array([9]));
    expect(machine.memory.read(buf.phys + SZ_4K, 1)[0]).toBe(9);
    ops.free(dev, buf, 0);
    expect(() => dev.dmaRead(buf.dmaAddr, 1)).toThrow(DmaFaultError);
  });
});

describe('dma-iommu map_sg', () => {
  it('merges page-aligned segments into one IOVA range, split at max_segment_size', () => {
    const { machine, dev, ops } = rig('strict');
    const sgt = new SgTable(24);
    for (let i = 0; i < 24; i++) sgt.push(page(machine), SZ_4K); // 96 KiB, physically scattered or not
    const n = ops.mapSg(dev, sgt, 24, DMA_BIDIRECTIONAL, 0);
    expect(n).toBe(2); // 64 KiB + 32 KiB
    expect(sgt.dmaLength[0]).toBe(65536);
    expect(sgt.dmaLength[1]).toBe(32768);
    expect(sgt.dmaAddress[1]).toBe(sgt.dmaAddress[0]! + 65536);
    expect(sgt.dmaLength[2]).toBe(0);
    ops.unmapSg(dev, sgt, 24, DMA_BIDIRECTIONAL, 0);
    expect(ops.domain.pgtable.countLeaves()).toBe(0);
  });

  it('an unaligned start or end closes the output segment (hand-computed __finalise_sg)', () => {
    const { machine, dev, ops } = rig('strict');
    const a = page(machine);
    const b = page(machine);
    const c = page(machine);
    const sgt = new SgTable(3);
    sgt.push(a + 0x100, 0xf00); // ends on a granule boundary, starts inside
    sgt.push(b, 0x800); // starts at 0, ends mid-granule → closes
    sgt.push(c, SZ_4K); // starts a new segment
    const n = ops.mapSg(dev, sgt, 3, DMA_BIDIRECTIONAL, 0);
    expect(n).toBe(2);
    const base = sgt.dmaAddress[0]! - 0x100;
    expect(sgt.dmaAddress[0]).toBe(base + 0x100);
    expect(sgt.dmaLength[0]).toBe(0xf00 + 0x800);
    expect(sgt.dmaAddress[1]).toBe(base + 2 * SZ_4K);
    expect(sgt.dmaLength[1]).toBe(SZ_4K);
    machine.memory.fill(b, 0x800, 0x77);
    expect(dev.dmaRead(sgt.dmaAddress[0]! + 0xf00, 0x800).every((x) => x === 0x77)).toBe(true);
    ops.unmapSg(dev, sgt, 3, DMA_BIDIRECTIONAL, 0);
    expect(ops.domain.pgtable.countLeaves()).toBe(0);
  });

  it('pads to the segment boundary so no output segment crosses it', () => {
    const { machine, dev, ops } = rig('strict', { segmentBoundaryMask: 0x1fff, maxSegmentSize: 65536 });
    const sgt = new SgTable(2);
    sgt.push(page(machine), SZ_4K);
    sgt.push(machine.memory.allocPages(1), 2 * SZ_4K); // 8 KiB would cross the 8 KiB boundary at +4K
    const n = ops.mapSg(dev, sgt, 2, DMA_BIDIRECTIONAL, 0);
    expect(n).toBe(2);
    expect(sgt.dmaAddress[1]! - sgt.dmaAddress[0]!).toBe(2 * SZ_4K);
    expect(sgt.dmaAddress[1]! % (2 * SZ_4K)).toBe(0);
    ops.unmapSg(dev, sgt, 2, DMA_BIDIRECTIONAL, 0);
    expect(ops.domain.pgtable.countLeaves()).toBe(0);
  });
});

describe('the two-step IOVA API on an IOMMU device', () => {
  it('try_alloc, link 512 pages, one sync, device I/O, unlink part, destroy', () => {
    const { machine, iommu, dev, ops } = rig('strict');
    const state = new DmaIovaState();
    expect(ops.iovaTryAlloc(dev, state, 0, 512 * SZ_4K)).toBe(true);
    const s0 = iommu.stats();
    const pages: number[] = [];
    for (let i = 0; i < 512; i++) {
      const p = page(machine, i & 0xff);
      pages.push(p);
      expect(ops.iovaLink(dev, state, p, i * SZ_4K, SZ_4K, DMA_BIDIRECTIONAL, 0)).toBe(0);
    }
    expect(ops.iovaSync(dev, state, 0, 512 * SZ_4K)).toBe(0);
    const s1 = iommu.stats();
    expect(s1.iovaAllocs - s0.iovaAllocs).toBe(0);
    expect(s1.iotlbSyncMaps - s0.iotlbSyncMaps).toBe(1);
    expect(dev.dmaRead(state.addr + 7 * SZ_4K, 2)).toEqual(new Uint8Array([7, 7]));
    dev.dmaWrite(state.addr + 300 * SZ_4K + 5, new Uint8Array([0xee]));
    expect(machine.memory.read(pages[300]! + 5, 1)[0]).toBe(0xee);
    // Unlink pages 100..199: the device faults there at once, the IOVA stays allocated.
    ops.iovaUnlink(dev, state, 100 * SZ_4K, 100 * SZ_4K, DMA_BIDIRECTIONAL, 0);
    expect(() => dev.dmaRead(state.addr + 150 * SZ_4K, 1)).toThrow(DmaFaultError);
    expect(dev.dmaRead(state.addr + 99 * SZ_4K, 1)[0]).toBe(99);
    // Relink them, then destroy.
    for (let i = 100; i < 200; i++) expect(ops.iovaLink(dev, state, pages[i]!, i * SZ_4K, SZ_4K, DMA_BIDIRECTIONAL, 0)).toBe(0);
    ops.iovaDestroy(dev, state, 512 * SZ_4K, DMA_BIDIRECTIONAL, 0);
    expect(ops.domain.pgtable.countLeaves()).toBe(0);
    expect(() => dev.dmaRead(state.addr, 1)).toThrow(DmaFaultError);
    expect([...ops.cookie.iovad.liveRanges()].filter((r) => !r.cached && !r.reserved)).toHaveLength(0);
  });

  it('returns the kernel errors: -EIO, -EADDRINUSE, -EPERM', () => {
    const { machine, dev, ops } = rig('strict');
    const state = new DmaIovaState();
    const p = page(machine);
    expect(ops.iovaTryAlloc(dev, state, p + 0x80, 2 * SZ_4K)).toBe(true);
    expect(state.addr % SZ_4K).toBe(0x80);
    expect(ops.iovaLink(dev, state, p + 0x80, SZ_4K, 0x100, DMA_BIDIRECTIONAL, 0)).toBe(-Errno.EIO);
    expect(ops.iovaLink(dev, state, p + 0x80, 0, SZ_4K - 0x80, DMA_BIDIRECTIONAL, 0)).toBe(0);
    // Page-aligned phys at offset 0 of an offset-0x80 state: the IOVA is unaligned for the IOMMU.
    expect(ops.iovaLink(dev, state, p, 0, SZ_4K, DMA_BIDIRECTIONAL, 0)).toBe(-Errno.EINVAL);
    expect(ops.iovaLink(dev, state, p, SZ_4K - 0x80, SZ_4K, DMA_BIDIRECTIONAL, 0)).toBe(0);
    // Linking over a linked page: iommu_map_nosync passes generic_pt's -EADDRINUSE up (__map_range).
    expect(ops.iovaLink(dev, state, p, SZ_4K - 0x80, SZ_4K, DMA_BIDIRECTIONAL, 0)).toBe(-Errno.EADDRINUSE);
    ops.iovaDestroy(dev, state, 2 * SZ_4K, DMA_BIDIRECTIONAL, 0);
    expect(ops.domain.pgtable.countLeaves()).toBe(0);

    const u = rig('strict', { untrusted: true, minAlignMask: 0xfff });
    const st2 = new DmaIovaState();
    const q = page(u.machine);
    expect(u.ops.iovaTryAlloc(u.dev, st2, q + 0x80, 0x100)).toBe(true);
    expect(u.ops.iovaLink(u.dev, st2, q + 0x80, 0, 0x100, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO)).toBe(-Errno.EPERM);
    u.ops.iovaFree(u.dev, st2);
  });

  it('untrusted: head and tail granules bounce through swiotlb, the middle is linked directly', () => {
    const { machine, dev, ops } = rig('strict', { untrusted: true, minAlignMask: 0xfff });
    const buf = machine.memory.allocPages(2); // 4 pages
    machine.memory.fill(buf, 4 * SZ_4K, 0x5e); // neighbouring secret
    const phys = buf + 0xc00;
    const size = 2 * SZ_4K; // head 0x400 bytes, middle one page, tail 0xc00 bytes
    machine.memory.fill(phys, size, 0x42);
    const state = new DmaIovaState();
    expect(ops.iovaTryAlloc(dev, state, phys, size)).toBe(true);
    expect(ops.iovaLink(dev, state, phys, 0, size, DMA_BIDIRECTIONAL, 0)).toBe(0);
    expect(state.useSwiotlb).toBe(true);
    expect(ops.iovaSync(dev, state, 0, size)).toBe(0);
    expect(dev.dmaRead(state.addr, size).every((b) => b === 0x42)).toBe(true);
    // Head and tail granules show zeros, not the neighbour's bytes.
    expect(dev.dmaRead(state.addr - 0xc00, 0xc00).every((b) => b === 0)).toBe(true);
    expect(dev.dmaRead(state.addr + size, 0x400).every((b) => b === 0)).toBe(true);
    dev.dmaWrite(state.addr, new Uint8Array([1]));
    ops.iovaDestroy(dev, state, size, DMA_BIDIRECTIONAL, 0);
    expect(machine.memory.read(phys, 1)[0]).toBe(1); // copied back from the bounce buffer
    expect(machine.swiotlb.stats().usedSlots).toBe(0);
    expect(ops.domain.pgtable.countLeaves()).toBe(0);
  });
});

/** Is swiotlb_tbl_map_single a fault-injection site yet (dma-core's swiotlb room)? */
describe('fail-the-Nth sweep', () => {
  for (const site of ['iova', 'pgtable', 'swiotlb'] as const) {
    it(`every ${site} failure in a map/link sequence leaves page table, IOVA tree and swiotlb as they were`, () => {
      let injected = 0;
      for (let n = 1; n <= 8; n++) {
        const { machine, dev, ops } = rig('strict', { untrusted: true, minAlignMask: 0xfff });
        const buf = machine.memory.allocPages(3);
        const tables = ops.domain.stats().tablePagesLive;
        const ranges = () => [...ops.cookie.iovad.liveRanges()].filter((r) => !r.cached).length;
        const before = ranges();
        machine.faultInjection.arm(site, n);
        const dmas: number[] = [];
        const a = ops.mapPhys(dev, buf + 0x10, 0x300, DMA_BIDIRECTIONAL, 0);
        if (a !== DMA_MAPPING_ERROR) dmas.push(a);
        const b = ops.mapPhys(dev, buf + SZ_4K, 2 * SZ_4K, DMA_BIDIRECTIONAL, 0);
        const state = new DmaIovaState();
        if (ops.iovaTryAlloc(dev, state, buf + 0x800, 3 * SZ_4K)) {
          const linked = ops.iovaLink(dev, state, buf + 0x800, 0, 3 * SZ_4K, DMA_BIDIRECTIONAL, 0);
          if (linked === 0) ops.iovaDestroy(dev, state, 3 * SZ_4K, DMA_BIDIRECTIONAL, 0);
          else {
            expect([-Errno.ENOMEM]).toContain(linked);
            ops.iovaFree(dev, state);
          }
        }
        for (const d of dmas) ops.unmapPhys(dev, d, 0x300, DMA_BIDIRECTIONAL, 0);
        if (b !== DMA_MAPPING_ERROR) ops.unmapPhys(dev, b, 2 * SZ_4K, DMA_BIDIRECTIONAL, 0);
        injected += machine.faultInjection.injected.get(site) ?? 0;
        machine.faultInjection.disarm();
        expect(ops.domain.pgtable.countLeaves()).toBe(0);
        expect(ops.domain.stats().tablePagesLive).toBe(tables);
        expect(ranges()).toBe(before);
        expect(machine.swiotlb.stats().usedSlots).toBe(0);
      }
      expect(injected).toBeGreaterThan(0);
    });
  }
});

describe('dma_iova_link installs the prot of dma_info_to_prot (drivers/iommu/dma-iommu.c)', () => {
  // One 4 KiB page per direction, on a coherent and a non-coherent device, with dma-debug off (the
  // one-store hot path) and on (the checked path): same PTE either way.
  for (const debug of ['off', 'warn'] as const) {
    for (const coherent of [true, false]) {
      it(`${coherent ? 'coherent' : 'non-coherent'} device, dma-debug ${debug}`, () => {
        const machine = createMachine({ ramBytes: 64 * 2 ** 20, dmaDebug: debug });
        const iommu = createIommu(machine, { mode: 'strict' });
        const dev = machine.pci.addDevice({ name: 'dev0', dmaMaskBits: 64, coherent });
        const domain = iommu.attachDevice(dev);
        const expected: [DmaDataDirection, number][] = [
          [DMA_BIDIRECTIONAL, IOMMU_READ | IOMMU_WRITE],
          [DMA_TO_DEVICE, IOMMU_READ],
          [DMA_FROM_DEVICE, IOMMU_WRITE],
        ];
        const state = new DmaIovaState();
        expect(dmaIovaTryAlloc(dev, state, 0, expected.length * SZ_4K)).toBe(true);
        expected.forEach(([dir], i) => {
          expect(dmaIovaLink(dev, state, machine.memory.allocPages(0), i * SZ_4K, SZ_4K, dir, 0)).toBe(0);
        });
        expected.forEach(([, access], i) => {
          expect(domain.pgtable.walk(state.addr + i * SZ_4K)).toBe(true);
          expect(domain.pgtable.walkProt).toBe(access | (coherent ? IOMMU_CACHE : 0));
        });
        dmaIovaDestroy(dev, state, expected.length * SZ_4K, DMA_BIDIRECTIONAL, 0);
      });
    }
  }
});

// Mirrors kernel/dma/direct.c in a CC guest: force_dma_unencrypted() bounces streaming DMA through
// the shared swiotlb pool and decrypts coherent allocations.
import { describe, expect, it } from 'vitest';
import {
  createMachine,
  DMA_ATTR_MMIO,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  dmaAllocCoherent,
  dmaAllocPages,
  dmaFreeCoherent,
  dmaFreePages,
  DmaIovaState,
  dmaIovaTryAlloc,
  dmaMapPhys,
  dmaMappingError,
  dmaUnmapPhys,
  PAGE_SIZE,
} from '../index.js';

const BIT51 = 2 ** 51;

function tdx() {
  const m = createMachine({ cc: { type: 'tdx', sharedBit: 51 } });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64 });
  return { m, dev };
}

describe('dma-direct in a CC guest', () => {
  it('bounces a streaming mapping of private memory through the shared pool; the address carries the shared bit', () => {
    const { m, dev } = tdx();
    const buf = m.memory.allocPages(0);
    const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff);
    m.memory.write(buf + 24, data);
    const dma = dmaMapPhys(dev, buf + 24, 1000, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    expect(dma).toBeGreaterThanOrEqual(BIT51);
    const tlb = dma - BIT51;
    expect(tlb).toBeGreaterThanOrEqual(m.swiotlb.base);
    expect(tlb).toBeLessThan(m.swiotlb.base + m.swiotlb.bytes);
    expect(dev.dmaRead(dma, 1000)).toEqual(data);
    expect(m.swiotlb.stats().bounces).toBe(1);
    dmaUnmapPhys(dev, dma, 1000, DMA_TO_DEVICE);
    expect(m.swiotlb.stats().usedSlots).toBe(0);
  });

  it('copies device writes back to private memory on unmap (FROM_DEVICE)', () => {
    const { m, dev } = tdx();
    const buf = m.memory.allocPages(1);
    const dma = dmaMapPhys(dev, buf, 2 * PAGE_SIZE, DMA_FROM_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    const payload = new Uint8Array(2 * PAGE_SIZE).fill(0x3c);
    dev.dmaWrite(dma, payload);
    expect(m.memory.read(buf, 4)).toEqual(new Uint8Array(4)); // not yet: still in the bounce buffer
    dmaUnmapPhys(dev, dma, 2 * PAGE_SIZE, DMA_FROM_DEVICE);
    expect(m.memory.read(buf, 2 * PAGE_SIZE)).toEqual(payload);
    expect(m.cc!.isShared(buf)).toBe(false);
  });

  it('refuses DMA_ATTR_MMIO on a force-bounce (CC) device', () => {
    const { dev } = tdx();
    expect(dmaMapPhys(dev, 0xf000_0000, 4096, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO)).toBe(DMA_MAPPING_ERROR);
  });

  it('coherent allocations come back decrypted at a shared address and are re-encrypted on free', () => {
    const { m, dev } = tdx();
    m.trace.record();
    const before = m.cc!.stats.sharedPages;
    const buf = dmaAllocCoherent(dev, 3 * PAGE_SIZE)!;
    expect(buf).not.toBeNull();
    expect(buf.dmaAddr).toBe(buf.phys + BIT51);
    expect(m.cc!.isShared(buf.phys)).toBe(true);
    expect(m.cc!.stats.sharedPages).toBe(before + 4); // order-2 block
    expect(m.memory.read(buf.cpuAddr, 16)).toEqual(new Uint8Array(16)); // zeroed after decrypting
    dev.dmaWrite(buf.dmaAddr + 8, new Uint8Array([1, 2]));
    expect(m.memory.read(buf.cpuAddr + 8, 2)).toEqual(new Uint8Array([1, 2]));
    dmaFreeCoherent(dev, 3 * PAGE_SIZE, buf.cpuAddr, buf.dmaAddr);
    expect(m.cc!.isShared(buf.phys)).toBe(false);
    expect(m.cc!.stats.sharedPages).toBe(before);
    const names = m.trace.events().map((e) => e.name);
    expect(names.indexOf('coco:set_memory_decrypted')).toBeLessThan(names.indexOf('dma:dma_alloc'));
    expect(names.lastIndexOf('coco:set_memory_encrypted')).toBeGreaterThan(names.indexOf('dma:dma_free'));
  });

  it('dma_alloc_pages decrypts too', () => {
    const { m, dev } = tdx();
    const buf = dmaAllocPages(dev, PAGE_SIZE, DMA_FROM_DEVICE)!;
    expect(buf.dmaAddr).toBe(buf.phys + BIT51);
    expect(m.cc!.isShared(buf.phys)).toBe(true);
    dmaFreePages(dev, PAGE_SIZE, buf.phys, buf.dmaAddr, DMA_FROM_DEVICE);
    expect(m.cc!.isShared(buf.phys)).toBe(false);
  });

  it('the two-step API declines (dma_iova_try_alloc false) so the caller falls back to a bouncing dma_map_phys', () => {
    const { m, dev } = tdx();
    const buf = m.memory.allocPages(0);
    const state = new DmaIovaState();
    expect(dmaIovaTryAlloc(dev, state, buf, PAGE_SIZE)).toBe(false);
    const dma = dmaMapPhys(dev, buf, PAGE_SIZE, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    expect(m.swiotlb.isSwiotlbBuffer(dma - BIT51)).toBe(true);
    dmaUnmapPhys(dev, dma, PAGE_SIZE, DMA_TO_DEVICE);
  });

  it('SEV: shared addresses carry no C-bit; a 32-bit device still works through the pool', () => {
    const m = createMachine({ cc: 'sev' });
    const dev = m.pci.addDevice({ name: 'legacy', dmaMaskBits: 32 });
    const buf = m.memory.allocPages(0);
    m.memory.write(buf, new Uint8Array([5, 6]));
    const dma = dmaMapPhys(dev, buf, 2, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    expect(m.swiotlb.isSwiotlbBuffer(dma)).toBe(true);
    expect(dev.dmaRead(dma, 2)).toEqual(new Uint8Array([5, 6]));
    dmaUnmapPhys(dev, dma, 2, DMA_TO_DEVICE);
    const c = dmaAllocCoherent(dev, 64)!;
    expect(c.dmaAddr).toBe(c.phys);
    dmaFreeCoherent(dev, 64, c.cpuAddr, c.dmaAddr);
  });

  it('an ordinary machine maps directly, as before', () => {
    const m = createMachine();
    const dev = m.pci.addDevice({ name: 'plain', dmaMaskBits: 64 });
    const buf = m.memory.allocPages(0);
    const dma = dmaMapPhys(dev, buf, 64, DMA_TO_DEVICE);
    expect(dma).toBe(buf);
    expect(dmaMappingError(dev, dma)).toBe(0);
    dmaUnmapPhys(dev, dma, 64, DMA_TO_DEVICE);
    expect(m.swiotlb.stats().bounces).toBe(0);
  });
});

import { describe, expect, it } from 'vitest';
import {
  CcOptionError,
  createMachine,
  DMA_TO_DEVICE,
  DmaDebugError,
  DmaFaultError,
  dmaMapPhys,
  dmaMappingError,
  dmaUnmapPhys,
  Errno,
  forceDmaUnencrypted,
  PAGE_SIZE,
  setMemoryDecrypted,
  setMemoryEncrypted,
  toPciDev,
} from '../index.js';

const SHARED = 2 ** 51;

function guest(dmaDebug: 'strict' | 'warn' = 'strict') {
  const m = createMachine({ cc: { type: 'tdx', sharedBit: 51 }, dmaDebug });
  const dev = m.pci.addDevice({ name: 'nic', dmaMaskBits: 64 });
  return { m, dev };
}

describe('confidential guest: memory conversion', () => {
  it('boots with private RAM and a shared swiotlb pool', () => {
    const { m, dev } = guest();
    const cc = m.cc!;
    expect(cc.vendor).toBe('tdx');
    expect(cc.isShared(m.swiotlb.base)).toBe(true);
    expect(cc.isShared(m.swiotlb.base + m.swiotlb.bytes - 1)).toBe(true);
    const page = m.memory.allocPages(0);
    expect(cc.isShared(page)).toBe(false);
    expect(cc.stats.sharedPages).toBe(m.swiotlb.bytes / PAGE_SIZE);
    expect(forceDmaUnencrypted(dev)).toBe(true);
  });

  it('rejects bad cc options with a typed error', () => {
    expect(() => createMachine({ cc: { type: 'snp' as 'sev' } })).toThrow(CcOptionError);
    expect(() => createMachine({ cc: { type: 'tdx', sharedBit: 40 } })).toThrow(/physBits=46/);
    expect(() => createMachine({ cc: { type: 'tdx', sharedBit: 60 } })).toThrow(CcOptionError);
    expect(() => createMachine({ cc: { type: 'sev', sharedBit: 47.5 } })).toThrow(CcOptionError);
    expect(createMachine({ cc: 'sev' }).cc?.bit).toBe(51);
  });

  it('converts page-granular ranges and returns the kernel errno for bad input, converting nothing', () => {
    const { m } = guest();
    m.trace.record();
    const cc = m.cc!;
    const base = m.memory.allocPages(2); // 4 pages
    expect(setMemoryDecrypted(m, base + 8, 1)).toBe(-Errno.EINVAL);
    expect(setMemoryDecrypted(m, base, 0)).toBe(-Errno.EINVAL);
    expect(setMemoryDecrypted(m, base, 1.5)).toBe(-Errno.EINVAL);
    expect(setMemoryDecrypted(m, -PAGE_SIZE, 1)).toBe(-Errno.EINVAL);
    expect(setMemoryDecrypted(m, m.memory.ramTop(), 1)).toBe(-Errno.EFAULT);
    expect(setMemoryDecrypted(m, base + 2 * PAGE_SIZE, 1)).toBe(0);
    // Double conversion of page 2 inside a 4-page call: -EIO and pages 0, 1, 3 stay private.
    expect(setMemoryDecrypted(m, base, 4)).toBe(-Errno.EIO);
    expect([0, 1, 2, 3].map((i) => cc.isShared(base + i * PAGE_SIZE))).toEqual([false, false, true, false]);
    expect(setMemoryEncrypted(m, base, 1)).toBe(-Errno.EIO);
    expect(setMemoryEncrypted(m, base + 2 * PAGE_SIZE, 1)).toBe(0);
    expect(cc.isShared(base + 2 * PAGE_SIZE)).toBe(false);
    expect(cc.stats).toMatchObject({ decryptCalls: 1, encryptCalls: 1, failedCalls: 7 });
    const evs = m.trace.events().filter((e) => e.name.startsWith('coco:set_memory_'));
    expect(evs).toHaveLength(9);
    expect(evs.at(-2)?.fields).toEqual({ addr: base, numpages: 1, ret: -Errno.EIO });
    expect(evs.at(-1)?.name).toBe('coco:set_memory_encrypted');
  });

  it('refuses a non-RAM range (a BAR, a range running past RAM) with -EFAULT, traced, converting nothing', () => {
    const m = createMachine({ cc: { type: 'tdx', sharedBit: 51 }, dmaDebug: 'strict' });
    const dev = m.pci.addDevice({ name: 'bar-owner', dmaMaskBits: 64, bars: [{ size: 1 << 20 }] });
    const bar = toPciDev(dev)!.bar(0)!;
    m.trace.record();
    const before = m.cc!.stats.sharedPages;
    expect(setMemoryDecrypted(m, bar.start, 1)).toBe(-Errno.EFAULT);
    expect(setMemoryEncrypted(m, bar.start, 1)).toBe(-Errno.EFAULT);
    const lastRam = m.memory.ramTop() - PAGE_SIZE;
    expect(setMemoryDecrypted(m, lastRam, 2)).toBe(-Errno.EFAULT); // half RAM, half nothing
    expect(m.cc!.isShared(lastRam)).toBe(false);
    expect(m.cc!.stats.sharedPages).toBe(before);
    const evs = m.trace.events().filter((e) => e.name.startsWith('coco:set_memory_'));
    expect(evs.map((e) => e.fields.ret)).toEqual([-Errno.EFAULT, -Errno.EFAULT, -Errno.EFAULT]);
    expect(evs[0]?.fields).toEqual({ addr: bar.start, numpages: 1, ret: -Errno.EFAULT });
  });

  it('does not preserve contents across a conversion (written pages scramble, untouched pages read zero)', () => {
    const { m } = guest();
    const a = m.memory.allocPages(1);
    const secret = new Uint8Array(PAGE_SIZE).fill(0x5a);
    m.memory.write(a, secret);
    expect(setMemoryDecrypted(m, a, 2)).toBe(0);
    const seen = m.memory.read(a, PAGE_SIZE);
    expect(seen.filter((b) => b === 0x5a).length).toBeLessThan(64);
    expect(m.memory.read(a + PAGE_SIZE, PAGE_SIZE).every((b) => b === 0)).toBe(true);
    expect(setMemoryEncrypted(m, a, 1)).toBe(0);
    expect(m.memory.read(a, PAGE_SIZE)).not.toEqual(secret);
  });

  it('on an ordinary machine conversion is a no-op returning 0', () => {
    const m = createMachine();
    expect(m.cc).toBeNull();
    expect(setMemoryDecrypted(m, 3, 1)).toBe(0);
    const dev = m.pci.addDevice({ name: 'plain', dmaMaskBits: 64 });
    expect(forceDmaUnencrypted(dev)).toBe(false);
  });
});

describe('confidential guest: device access', () => {
  it('refuses private memory to a device that is not an accepted TDI, and records the fault', () => {
    const { m, dev } = guest();
    m.trace.record();
    const page = m.memory.allocPages(0);
    m.memory.write(page, new Uint8Array([1, 2, 3]));
    expect(() => dev.dmaRead(page, 3)).toThrow(DmaFaultError); // private-world address
    expect(() => dev.dmaRead(page + SHARED, 3)).toThrow(DmaFaultError); // shared alias of a private page
    expect(() => { dev.dmaWrite(page + SHARED, new Uint8Array([9])); }).toThrow(DmaFaultError);
    expect(m.memory.read(page, 3)).toEqual(new Uint8Array([1, 2, 3]));
    expect(m.faults).toHaveLength(3);
    expect(m.faults[0]).toMatchObject({ device: 'nic', reasonName: 'permission', backend: 'direct' });
    expect(m.cc!.stats.refusedAccesses).toBe(3);
    expect(dev.portStats.faults).toBe(3);
    const refused = m.trace.events().filter((e) => e.name === 'coco:dma_refused');
    expect(refused[0]?.fields).toEqual({ phys_addr: page, size: 3, write: false, private: true });
  });

  it('lets a device reach a shared page through its shared-world address only', () => {
    const { m, dev } = guest();
    const page = m.memory.allocPages(0);
    expect(setMemoryDecrypted(m, page, 1)).toBe(0);
    m.memory.write(page, new Uint8Array([7, 8, 9]));
    expect(dev.dmaRead(page + SHARED, 3)).toEqual(new Uint8Array([7, 8, 9]));
    dev.dmaWrite(page + SHARED + 1, new Uint8Array([0xee]));
    expect(m.memory.read(page, 3)).toEqual(new Uint8Array([7, 0xee, 9]));
    // A private-world (T=1) request to a shared page is refused too.
    expect(() => dev.dmaRead(page, 1)).toThrow(DmaFaultError);
    // A multi-page access that crosses into a private page moves no byte at all.
    const two = m.memory.allocPages(1);
    expect(setMemoryDecrypted(m, two, 1)).toBe(0);
    m.memory.write(two, new Uint8Array(PAGE_SIZE).fill(1));
    expect(() => { dev.dmaWrite(two + SHARED, new Uint8Array(2 * PAGE_SIZE).fill(2)); }).toThrow(DmaFaultError);
    expect(m.memory.read(two, 4)).toEqual(new Uint8Array([1, 1, 1, 1]));
  });

  it('SEV: the C-bit marks private addresses; shared addresses carry no bit', () => {
    const m = createMachine({ cc: { type: 'sev', sharedBit: 47 } });
    const dev = m.pci.addDevice({ name: 'sev-nic', dmaMaskBits: 64 });
    const page = m.memory.allocPages(0);
    expect(setMemoryDecrypted(m, page, 1)).toBe(0);
    m.memory.write(page, new Uint8Array([4]));
    expect(dev.dmaRead(page, 1)).toEqual(new Uint8Array([4]));
    expect(() => dev.dmaRead(page + 2 ** 47, 1)).toThrow(DmaFaultError);
    expect(m.cc!.ccMkenc(page)).toBe(page + 2 ** 47);
    expect(m.cc!.ccMkdec(page + 2 ** 47)).toBe(page);
  });
});

describe('confidential guest: dma-debug', () => {
  it('reports a conversion of memory with a live DMA mapping (strict: throws before converting)', () => {
    const { m, dev } = guest('strict');
    const page = m.memory.allocPages(0);
    const dma = dmaMapPhys(dev, page, 512, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    expect(() => setMemoryDecrypted(m, page, 1)).toThrow(DmaDebugError);
    expect(m.cc!.isShared(page)).toBe(false);
    dmaUnmapPhys(dev, dma, 512, DMA_TO_DEVICE);
  });

  it('warn mode records the report, names the mapping, and converts as the kernel would', () => {
    const { m, dev } = guest('warn');
    const page = m.memory.allocPages(0);
    const dma = dmaMapPhys(dev, page + 256, 512, DMA_TO_DEVICE);
    expect(dmaMappingError(dev, dma)).toBe(0);
    expect(setMemoryDecrypted(m, page, 1)).toBe(0);
    const r = m.dmaDebug.reports.find((x) => x.rule === 'cc-convert-mapped');
    expect(r?.message).toMatch(/set_memory_decrypted .* overlaps a live phy mapping/);
    expect(r?.device).toBe('nic');
    dmaUnmapPhys(dev, dma, 512, DMA_TO_DEVICE);
  });
});

import { describe, expect, it } from 'vitest';
import { NVME_DEFAULT_COST_MODEL, NVME_PUBLISHED_IOPS, nvmeSimulatedCost } from './index.js';
import type { NvmeCostCounters } from './index.js';

const base: NvmeCostCounters = { ios: 1000, bytes: 1000 * 4096, directMaps: 1000, doorbells: 2000, interrupts: 1000, descriptors: 0, bounceBytes: 0, queueDepth: 32, iommuNs: 0 };

describe('nvmeSimulatedCost', () => {
  it('prices each layer per I/O from the counters', () => {
    const c = nvmeSimulatedCost(base);
    // block 100 + driver (100 + 2 doorbells x 50, polled) + dma 10, no IOMMU, no bounce.
    expect(c.nsPerIo).toEqual({ block: 100, driver: 200, dma: 10, iommu: 0, swiotlb: 0, total: 310 });
    expect(c.cpuBoundIops).toBeCloseTo(1e9 / 310, 6);
    // 32 outstanding / (5 us + 4096 B / 7.88 B/ns)
    expect(c.deviceBoundIops).toBeCloseTo((32 * 1e9) / (5000 + 4096 / 7.88), 6);
    expect(c.simulatedIops).toBe(Math.min(c.cpuBoundIops, c.deviceBoundIops));
  });

  it('adds the IOMMU time it is given, bounce copies, descriptors and (unpolled) interrupts', () => {
    const c = nvmeSimulatedCost({ ...base, directMaps: 0, iommuNs: 2_000_000, bounceBytes: 4096 * 10, descriptors: 500 });
    expect(c.nsPerIo.iommu).toBe(2000);
    expect(c.nsPerIo.dma).toBe(0);
    expect(c.nsPerIo.swiotlb).toBeCloseTo(0.1 * 40.96, 9);
    expect(c.nsPerIo.driver).toBe(100 + 100 + 20);
    const irq = nvmeSimulatedCost(base, { ...NVME_DEFAULT_COST_MODEL, polled: false });
    expect(irq.nsPerIo.driver).toBe(200 + 1000);
    expect(irq.simulatedIops).toBeLessThan(nvmeSimulatedCost(base).simulatedIops);
  });

  it('a strict IOMMU costs more than a lazy one with the same counters otherwise', () => {
    const strict = nvmeSimulatedCost({ ...base, directMaps: 0, iommuNs: 1000 * 4000 });
    const lazy = nvmeSimulatedCost({ ...base, directMaps: 0, iommuNs: 1000 * 600 });
    const off = nvmeSimulatedCost(base);
    expect(strict.cpuBoundIops).toBeLessThan(lazy.cpuBoundIops);
    expect(lazy.cpuBoundIops).toBeLessThan(off.cpuBoundIops);
  });

  it('an empty run divides by one, not zero', () => {
    const c = nvmeSimulatedCost({ ...base, ios: 0, bytes: 0, directMaps: 0, doorbells: 0, interrupts: 0, queueDepth: 0 });
    expect(c.nsPerIo.total).toBe(0);
    expect(c.cpuBoundIops).toBe(Number.POSITIVE_INFINITY);
    expect(c.deviceBoundIops).toBeCloseTo(1e9 / 5000, 9);
  });

  it('refuses negative or non-finite counters with a RangeError naming the counter', () => {
    expect(() => nvmeSimulatedCost({ ...base, doorbells: -1 })).toThrow(/doorbells/);
    expect(() => nvmeSimulatedCost({ ...base, iommuNs: Number.NaN })).toThrow(RangeError);
  });

  it('publishes the reference figures it is compared with', () => {
    expect(NVME_PUBLISHED_IOPS.strict).toBeLessThan(NVME_PUBLISHED_IOPS.lazy);
    expect(NVME_PUBLISHED_IOPS.lazy).toBeLessThan(NVME_PUBLISHED_IOPS.off);
    expect(Object.isFrozen(NVME_DEFAULT_COST_MODEL) && Object.isFrozen(NVME_PUBLISHED_IOPS)).toBe(true);
  });
});

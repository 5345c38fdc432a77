/**
 * The cost model of the "nvme" stack: simulated CPU time per counted event, so a run reports a
 * simulated IOPS figure for strict, lazy and no IOMMU that a user can set next to a real machine.
 *
 * It is computed from event counters after the run (never from wall time), with defaults chosen
 * before any run and never fitted to an end-to-end result. The IOMMU part is iommu-dma's own cost
 * model (`IOMMU_DEFAULT_COST_MODEL`, see packages/iommu-dma/src/costModel.ts for its inputs), so
 * both packages price an IOTLB invalidation the same way. The rest, per event:
 *
 * - `blockNs` / `driverNs`: the software path of one request with no DMA mapping work, in the
 *   block layer (blk-mq tag, plug, end_io) and in the driver (nvme_queue_rq, nvme_handle_cqe).
 *   Assumption: a round 100 ns each, the order of a few hundred instructions at 3-4 GHz; not taken
 *   from any IOPS result.
 * - `dmaMapNs`: dma-direct map + unmap of one segment (dma_map_phys on a coherent device: a few
 *   comparisons and an add). Assumption: 10 ns.
 * - `doorbellNs`: one MMIO doorbell write. It is a posted, uncached store; the CPU does not wait for
 *   the device. Assumption: 50 ns (store buffer drain of an UC write, order of 100-200 cycles).
 * - `interruptNs`: MSI-X delivery, IRQ entry/exit and the handler's CQ scan. Assumption: 1 us, the
 *   usual order for a hardware interrupt round trip on x86 (the published t/io_uring peaks use
 *   polled queues and pay none; see `polled`).
 * - `descriptorNs`: dma_pool_alloc + dma_pool_free of one PRP/SGL list page. Assumption: 40 ns.
 * - `bounceNsPerByte`: swiotlb memcpy. 0.1 ns/B, i.e. 10 GB/s, the order of a single-core memcpy.
 * - Device side (`deviceLatencyNs`, `deviceBytesPerNs`): Intel Optane SSD P5800X product brief,
 *   about 5 us 4 KiB random read latency; PCIe 4.0 x4 link, 16 GT/s x 4 lanes x 128/130 encoding
 *   = 7.88 GB/s (PCI Express Base Specification 4.0). Only used for the device-bound figure.
 */
import { IOMMU_DEFAULT_COST_MODEL, iommuSimulatedNs } from '@dmakit/iommu-dma';
import type { IommuCostCounters, IommuCostModel } from '@dmakit/iommu-dma';

export interface NvmeCostModel {
  readonly blockNs: number;
  readonly driverNs: number;
  readonly dmaMapNs: number;
  readonly doorbellNs: number;
  readonly interruptNs: number;
  readonly descriptorNs: number;
  readonly bounceNsPerByte: number;
  readonly deviceLatencyNs: number;
  readonly deviceBytesPerNs: number;
  /** Price completions as polled (no interrupt cost), like t/io_uring's peak runs. Default true. */
  readonly polled: boolean;
  readonly iommu: IommuCostModel;
}

export const NVME_DEFAULT_COST_MODEL: NvmeCostModel = Object.freeze({
  blockNs: 100,
  driverNs: 100,
  dmaMapNs: 10,
  doorbellNs: 50,
  interruptNs: 1000,
  descriptorNs: 40,
  bounceNsPerByte: 0.1,
  deviceLatencyNs: 5000,
  deviceBytesPerNs: 7.88,
  polled: true,
  iommu: IOMMU_DEFAULT_COST_MODEL,
});

/** The counters one run produced (totals over the run). */
export interface NvmeCostCounters {
  readonly ios: number;
  readonly bytes: number;
  readonly directMaps: number;
  readonly doorbells: number;
  readonly interrupts: number;
  readonly descriptors: number;
  readonly bounceBytes: number;
  readonly queueDepth: number;
  readonly iommu: IommuCostCounters | null;
}

/** Simulated nanoseconds per I/O, split by layer, and the IOPS they allow. */
export interface NvmeSimulatedCost {
  readonly nsPerIo: {
    readonly block: number;
    readonly driver: number;
    readonly dma: number;
    readonly iommu: number;
    readonly swiotlb: number;
    readonly total: number;
  };
  /** One CPU submitting and completing everything: 1e9 / total. */
  readonly cpuBoundIops: number;
  /** The device at `queueDepth` outstanding commands: QD / (latency + transfer). */
  readonly deviceBoundIops: number;
  /** min(cpu-bound, device-bound). */
  readonly simulatedIops: number;
}

export function nvmeSimulatedCost(c: NvmeCostCounters, model: NvmeCostModel = NVME_DEFAULT_COST_MODEL): NvmeSimulatedCost {
  const n = Math.max(1, c.ios);
  const block = (c.ios * model.blockNs) / n;
  const driver = (c.ios * model.driverNs + c.doorbells * model.doorbellNs + (model.polled ? 0 : c.interrupts * model.interruptNs) + c.descriptors * model.descriptorNs) / n;
  const dma = (c.directMaps * model.dmaMapNs) / n;
  const iommu = c.iommu === null ? 0 : iommuSimulatedNs(c.iommu, model.iommu) / n;
  const swiotlb = (c.bounceBytes * model.bounceNsPerByte) / n;
  const total = block + driver + dma + iommu + swiotlb;
  const bytesPerIo = c.bytes / n;
  const deviceNs = model.deviceLatencyNs + bytesPerIo / model.deviceBytesPerNs;
  const cpuBoundIops = 1e9 / total;
  const deviceBoundIops = (Math.max(1, c.queueDepth) * 1e9) / deviceNs;
  return { nsPerIo: { block, driver, dma, iommu, swiotlb, total }, cpuBoundIops, deviceBoundIops, simulatedIops: Math.min(cpuBoundIops, deviceBoundIops) };
}

/** Published 4 KiB random read IOPS on one core (fio t/io_uring, Optane, Linux 5.x/6.x era). */
export const PUBLISHED_IOPS = Object.freeze({ strict: 570_000, lazy: 1_930_000, off: 5_010_000 });

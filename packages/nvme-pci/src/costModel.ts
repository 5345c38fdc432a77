/**
 * A simulated-time cost model of NVMe I/O on the host: simulated CPU time per counted event, so a
 * run can report a simulated IOPS figure (strict, lazy or no IOMMU) that a user can set next to a
 * real machine. Not a kernel file: the events it prices are those of `drivers/nvme/host/pci.c`
 * (`nvme_queue_rq`, `nvme_handle_cqe`, PRP/SGL list pages from the DMA pools, doorbell writes) and
 * of the block layer around it.
 *
 * It is computed from event counters after the run (never from wall time), with defaults chosen
 * before any run and never fitted to an end-to-end result. The IOMMU's share is an input
 * (`NvmeCostCounters.iommuNs`): price it with the IOMMU's own cost model (iommu-dma's
 * `iommuSimulatedNs` over its stats), so both packages price an IOTLB invalidation the same way.
 * The rest, per event:
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

/** Simulated nanoseconds per counted event of NVMe I/O (see the file header for each default). */
export interface NvmeCostModel {
  /** Block layer software path of one request (blk-mq tag, plug, end_io). */
  readonly blockNs: number;
  /** Driver software path of one request (nvme_queue_rq, nvme_handle_cqe). */
  readonly driverNs: number;
  /** dma-direct map + unmap of one segment. */
  readonly dmaMapNs: number;
  /** One MMIO doorbell write (posted). */
  readonly doorbellNs: number;
  /** One interrupt: MSI-X delivery, IRQ entry/exit, the CQ scan (not paid when `polled`). */
  readonly interruptNs: number;
  /** dma_pool_alloc + dma_pool_free of one PRP/SGL list page. */
  readonly descriptorNs: number;
  /** swiotlb bounce copy, per byte. */
  readonly bounceNsPerByte: number;
  /** Device latency of one command (device-bound figure only). */
  readonly deviceLatencyNs: number;
  /** Device transfer rate in bytes per ns (device-bound figure only). */
  readonly deviceBytesPerNs: number;
  /** Price completions as polled (no interrupt cost), like t/io_uring's peak runs. Default true. */
  readonly polled: boolean;
}

/** The defaults: order-of-magnitude assumptions and the P5800X / PCIe 4.0 x4 device side. */
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
});

/** The counters one run produced (totals over the run), e.g. from `NvmeDev.stats` and swiotlb's stats. */
export interface NvmeCostCounters {
  /** Completed I/Os. */
  readonly ios: number;
  /** Bytes they moved. */
  readonly bytes: number;
  /** dma-direct segment mappings (0 behind an IOMMU, whose work is in `iommuNs`). */
  readonly directMaps: number;
  /** SQ + CQ doorbell writes. */
  readonly doorbells: number;
  readonly interrupts: number;
  /** PRP/SGL list pages taken from the DMA pools. */
  readonly descriptors: number;
  /** Bytes copied through swiotlb bounce buffers. */
  readonly bounceBytes: number;
  /** Outstanding commands the workload kept (for the device-bound figure). */
  readonly queueDepth: number;
  /** Simulated CPU time of the run's IOMMU work, priced by the IOMMU's cost model; 0 without one. */
  readonly iommuNs: number;
}

/** Simulated nanoseconds per I/O, split by layer, and the IOPS they allow. */
export interface NvmeSimulatedCost {
  /** Simulated CPU ns per I/O in each layer, and their sum. */
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

/** Price a run's counters under `model`: ns per I/O by layer, CPU-bound and device-bound IOPS. */
export function nvmeSimulatedCost(c: NvmeCostCounters, model: NvmeCostModel = NVME_DEFAULT_COST_MODEL): NvmeSimulatedCost {
  for (const [name, v] of Object.entries(c) as [string, unknown][]) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new RangeError(`nvmeSimulatedCost: counter ${name} must be a finite number >= 0, got ${String(v)}`);
  }
  const n = Math.max(1, c.ios);
  const block = (c.ios * model.blockNs) / n;
  const driver = (c.ios * model.driverNs + c.doorbells * model.doorbellNs + (model.polled ? 0 : c.interrupts * model.interruptNs) + c.descriptors * model.descriptorNs) / n;
  const dma = (c.directMaps * model.dmaMapNs) / n;
  const iommu = c.iommuNs / n;
  const swiotlb = (c.bounceBytes * model.bounceNsPerByte) / n;
  const total = block + driver + dma + iommu + swiotlb;
  const bytesPerIo = c.bytes / n;
  const deviceNs = model.deviceLatencyNs + bytesPerIo / model.deviceBytesPerNs;
  const cpuBoundIops = 1e9 / total;
  const deviceBoundIops = (Math.max(1, c.queueDepth) * 1e9) / deviceNs;
  return { nsPerIo: { block, driver, dma, iommu, swiotlb, total }, cpuBoundIops, deviceBoundIops, simulatedIops: Math.min(cpuBoundIops, deviceBoundIops) };
}

/**
 * Published 4 KiB random read IOPS on one core under a strict IOMMU, a lazy one and none (fio
 * t/io_uring, Intel Optane, Linux 5.x/6.x era): the figures a simulated run is set next to.
 */
export const NVME_PUBLISHED_IOPS: Readonly<{ strict: number; lazy: number; off: number }> = Object.freeze({ strict: 570_000, lazy: 1_930_000, off: 5_010_000 });

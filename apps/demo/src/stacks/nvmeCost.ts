/**
 * The nvme stacks' price list: nvme-pci's cost model of NVMe I/O (`nvmeSimulatedCost`, see
 * packages/nvme-pci/src/costModel.ts for every default) with the IOMMU's share priced by
 * iommu-dma's own cost model (`iommuSimulatedNs`), so both packages price an IOTLB invalidation
 * the same way. The composition root joins them; neither package imports the other.
 */
import { IOMMU_DEFAULT_COST_MODEL, iommuSimulatedNs } from '@dmakit/iommu-dma';
import type { IommuCostCounters, IommuCostModel } from '@dmakit/iommu-dma';
import { NVME_DEFAULT_COST_MODEL as NVME_PCI_COST_MODEL, NVME_PUBLISHED_IOPS, nvmeSimulatedCost as nvmePciSimulatedCost } from '@dmakit/nvme-pci';
import type { NvmeCostCounters, NvmeCostModel, NvmeSimulatedCost } from '@dmakit/nvme-pci';

export type { NvmeSimulatedCost } from '@dmakit/nvme-pci';

/** nvme-pci's cost model plus the IOMMU's. */
export interface NvmeStackCostModel extends NvmeCostModel {
  readonly iommu: IommuCostModel;
}

/** Both packages' defaults. */
export const NVME_DEFAULT_COST_MODEL: NvmeStackCostModel = Object.freeze({ ...NVME_PCI_COST_MODEL, iommu: IOMMU_DEFAULT_COST_MODEL });

/** A run's counters, with the IOMMU's own (null without an IOMMU). */
export interface NvmeStackCostCounters extends Omit<NvmeCostCounters, 'iommuNs'> {
  readonly iommu: IommuCostCounters | null;
}

/** Simulated ns per I/O by layer and the IOPS they allow (nvme-pci), the IOMMU's share priced by iommu-dma. */
export function nvmeSimulatedCost(c: NvmeStackCostCounters, model: NvmeStackCostModel = NVME_DEFAULT_COST_MODEL): NvmeSimulatedCost {
  const { iommu, ...rest } = c;
  return nvmePciSimulatedCost({ ...rest, iommuNs: iommu === null ? 0 : iommuSimulatedNs(iommu, model.iommu) }, model);
}

/** Published 4 KiB random read IOPS on one core (fio t/io_uring, Optane, Linux 5.x/6.x era). */
export const PUBLISHED_IOPS = NVME_PUBLISHED_IOPS;

// kernel: include/linux/iommu.h (struct iommu_fault, iommu_report_device_fault)

/** Result of a device-side translation that the IOMMU refused. */
export const DmaFaultReason = {
  /** No valid translation (PTE not present). */
  NOT_PRESENT: -1,
  /** Translation present but without the permission the access needs. */
  PERMISSION: -2,
  /** The address is outside what the device can reach (aperture, bus, no memory there). */
  OUT_OF_RANGE: -3,
} as const;
export type DmaFaultReason = (typeof DmaFaultReason)[keyof typeof DmaFaultReason];

/** Whether a device access reads or writes memory. */
export type DmaAccessKind = 'read' | 'write';

/** One refused device access, like `iommu_report_device_fault`'s record. */
export interface DmaFaultRecord {
  readonly device: string;
  readonly dmaAddr: number;
  readonly len: number;
  readonly access: DmaAccessKind;
  readonly reason: DmaFaultReason;
  readonly reasonName: 'not-present' | 'permission' | 'out-of-range';
  /** 'direct' or the DMA ops name (e.g. 'iommu-dma'). */
  readonly backend: string;
  /** Simulated time of the fault (ns). */
  readonly time: number;
  readonly detail: string;
}

/** Thrown by the device-side DMA port when an access is refused. No byte was moved. */
export class DmaFaultError extends Error {
  readonly record: DmaFaultRecord;

  constructor(record: DmaFaultRecord) {
    super(`DMA fault: ${record.device} ${record.access} at 0x${record.dmaAddr.toString(16)} (+${record.len}): ${record.reasonName} [${record.backend}] ${record.detail}`);
    this.name = 'DmaFaultError';
    this.record = record;
  }
}

// kernel: include/linux/dma-direction.h
/** Direction of a DMA transfer. kernel: enum dma_data_direction in include/linux/dma-direction.h. */
export const DmaDataDirection = {
  DMA_BIDIRECTIONAL: 0,
  DMA_TO_DEVICE: 1,
  DMA_FROM_DEVICE: 2,
  DMA_NONE: 3,
} as const;
export type DmaDataDirection = (typeof DmaDataDirection)[keyof typeof DmaDataDirection];

/** Data may move both ways. kernel: DMA_BIDIRECTIONAL in include/linux/dma-direction.h. */
export const DMA_BIDIRECTIONAL = DmaDataDirection.DMA_BIDIRECTIONAL;
/** The device reads memory. kernel: DMA_TO_DEVICE in include/linux/dma-direction.h. */
export const DMA_TO_DEVICE = DmaDataDirection.DMA_TO_DEVICE;
/** The device writes memory. kernel: DMA_FROM_DEVICE in include/linux/dma-direction.h. */
export const DMA_FROM_DEVICE = DmaDataDirection.DMA_FROM_DEVICE;
/** No transfer (used for debugging only). kernel: DMA_NONE in include/linux/dma-direction.h. */
export const DMA_NONE = DmaDataDirection.DMA_NONE;

const DIR_NAMES = ['BIDIRECTIONAL', 'TO_DEVICE', 'FROM_DEVICE', 'NONE'] as const;

/** `valid_dma_direction`: only BIDIRECTIONAL, TO_DEVICE and FROM_DEVICE may be mapped. */
export function validDmaDirection(dir: unknown): dir is DmaDataDirection {
  return dir === 0 || dir === 1 || dir === 2;
}

/** Symbolic name as the `dma:*` tracepoints print it. */
export function dmaDirectionName(dir: number): string {
  return DIR_NAMES[dir] ?? `UNKNOWN(${dir})`;
}

/** Does the device read memory under this direction? (TO_DEVICE or BIDIRECTIONAL) */
export function dirDeviceReads(dir: number): boolean {
  return dir === DMA_TO_DEVICE || dir === DMA_BIDIRECTIONAL;
}

/** Does the device write memory under this direction? (FROM_DEVICE or BIDIRECTIONAL) */
export function dirDeviceWrites(dir: number): boolean {
  return dir === DMA_FROM_DEVICE || dir === DMA_BIDIRECTIONAL;
}

// The NVMe PCI host driver (kernel: drivers/nvme/host/pci.c).
export * from './constants.js';
export * from './iod.js';
export * from './queue.js';
export * from './nvmeDev.js';
export type { NvmeCtrlState, NvmeDevOptions, NvmeHostStats, NvmeNsInfo } from './dev.js';
export { nvmeErrorStatus } from './completion.js';
export type { NvmeBarMapping } from './mmio.js';

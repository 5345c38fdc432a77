// The simulated NVMe controller (device side of @dmakit/nvme-pci).
export * from './registers.js';
export * from './spec.js';
export * from './namespace.js';
export * from './dataPointer.js';
export * from './queues.js';
export * from './controller.js';

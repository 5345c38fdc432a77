/**
 * @dmakit/dma-core: the simulated machine, the DMA API, dma-debug, tracing and the contracts.
 * This barrel is the public surface; each room re-exports its own public names.
 */
// First: a second copy of dma-core in this process throws before anything else is set up.
export * from './instance/index.js';
export * from './units/index.js';
export * from './sim/index.js';
export * from './util/index.js';
export * from './trace/index.js';
export * from './mem/index.js';
export * from './mm/index.js';
export * from './coco/index.js';
export * from './bus/index.js';
export * from './device/index.js';
export * from './dma/index.js';
export * from './contracts/index.js';
export * from './machine.js';

export * from './scatterlist.js';
export * from './iovaState.js';
export * from './debug.js';
export * from './swiotlb.js';
export * from './attach.js';

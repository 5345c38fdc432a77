export type * from './dmaMapOps.js';
export * from './hmm.js';
export * from './dmaBuf.js';
export * from './blkRqDma.js';
export * from './iommuUnmanagedDomain.js';

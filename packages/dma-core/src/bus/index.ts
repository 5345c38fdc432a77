export * from './pciDev.js';
export * from './p2pdma.js';
export * from './pciTopology.js';
export * from './tdisp.js';

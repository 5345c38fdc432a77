export * from './dmaMapOps.js';
export * from './hmm.js';

export * from './dmaMapOps.js';
export * from './hmm.js';
export * from './dmaBuf.js';

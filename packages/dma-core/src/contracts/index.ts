export * from './dmaMapOps.js';

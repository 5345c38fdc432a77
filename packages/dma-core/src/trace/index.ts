export * from './trace.js';
export * from './dmaEvents.js';

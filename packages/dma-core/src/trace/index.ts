export * from './events.js';
export * from './trace.js';
export * from './dmaEvents.js';
export * from './export.js';

export * from './device.js';
export * from './dmaFault.js';
export type * from './host.js';

export * from './physicalMemory.js';
export * from './regions.js';
export * from './systemMemory.js';

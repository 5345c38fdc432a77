export * from './pciTopology.js';

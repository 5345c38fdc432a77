export * from './intMap.js';

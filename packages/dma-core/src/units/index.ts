export * from './page.js';
export * from './errno.js';
export * from './direction.js';
export * from './attrs.js';
export * from './dmaAddr.js';

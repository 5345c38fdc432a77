export * from './physicalMemory.js';
export * from './bytes.js';
export * from './regions.js';
export * from './systemMemory.js';
export { MAX_BUDDY_ORDER } from './buddy.js';
export { PageFlag, PAGE_META_CHUNK_PAGES } from './pageMeta.js';

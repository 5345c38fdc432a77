export * from './constants.js';
export * from './mmuNotifier.js';
export { MmStruct } from './mmStruct.js';
export type { MigrateToRam, MmOwner } from './mmStruct.js';
export type { MmapArgs } from './mmap.js';
export { SegvError } from './uaccess.js';
export { ShmemObject, VmArea } from './vmaTree.js';
export * from './process.js';

export * from './constants.js';
export * from './mmuNotifier.js';
export { MmStruct, SegvError, ShmemObject, VmArea } from './mmStruct.js';
export type { MigrateToRam, MmapArgs } from './mmStruct.js';
export * from './process.js';

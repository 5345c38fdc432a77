export { CcOptionError, CcPlatform } from './cc.js';
export type { CcOptions, CcStats, CcVendor, CocoConvertTraceFields, CocoDmaRefusedTraceFields } from './cc.js';
export * from './setMemory.js';

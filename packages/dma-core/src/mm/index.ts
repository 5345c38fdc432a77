export * from './constants.js';
export * from './mmuNotifier.js';
export { MmStruct } from './mmStruct.js';
export type { MigrateToRam, MmOwner } from './mmStruct.js';
export type { MmapArgs } from './mmap.js';
export { SegvError } from './uaccess.js';
export { ShmemObject, VmArea } from './vmaTree.js';
export type { VmFile } from './vmaTree.js';
export * from './process.js';
export { AddressSpace, folioMapping } from './pageCache.js';
export { FMODE_READ, FMODE_WRITE, Inode, O_RDONLY, O_RDWR, O_WRONLY, VfsFile, fileStats, openDeviceFile, openTmpfile, vmInsertPage } from './file.js';
export type { DeviceFileOptions, FileOperations, TmpfileOptions } from './file.js';
export {
  FOLL_GET,
  FOLL_LONGTERM,
  FOLL_NOFAULT,
  FOLL_PIN,
  FOLL_WRITE,
  getUserPages,
  getUserPagesFast,
  gupStats,
  pinUserPages,
  pinUserPagesFast,
  putUserPages,
  unpinUserPages,
} from './gup.js';
export { HPAGE_PMD_NR, VM_FAULT_FALLBACK, hugeZeroFolio, thpVmstat, transparentHugepageSettings } from './thp.js';
export type { ThpVmstat, TransparentHugepageMode, TransparentHugepageSettings } from './thp.js';

export { DMA_CORE_VERSION } from './version.js';
export {
  DMA_CORE_INSTANCE,
  DMA_CORE_INSTANCE_KEY,
  DuplicateDmaCoreError,
  registerDmaCoreInstance,
} from './instance.js';
export type { DmaCoreInstance } from './instance.js';

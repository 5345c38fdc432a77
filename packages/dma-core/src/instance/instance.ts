/**
 * One dma-core per process. dma-core keeps per-machine and per-device state in module-level
 * registries (dma-debug, tracepoints, the DMA ops dispatch); a second copy loaded into the same
 * process would hold its own, and two subsystems built on different copies would silently disagree.
 * Every copy records itself in a process-wide registry on `globalThis` under a `Symbol.for` key
 * (shared by all copies, whatever their version); a copy from a different module URL throws.
 * The same URL evaluated again (a test runner resetting its module graph) is the same copy.
 */
import { DMA_CORE_VERSION } from './version.js';

/** The `Symbol.for` key of the process-wide registry of loaded dma-core copies. */
export const DMA_CORE_INSTANCE_KEY: unique symbol = Symbol.for('@dmakit/dma-core/instance');

/** One loaded copy of dma-core: its version and the URL of the module that registered it. */
export interface DmaCoreInstance {
  readonly version: string;
  readonly url: string;
}

/** The registry slot: the first copy loaded into this process. */
interface InstanceRegistry {
  [DMA_CORE_INSTANCE_KEY]?: DmaCoreInstance;
}

/**
 * A second copy of dma-core was loaded into a process that already has one. Names both copies
 * (version and location) and how to fix it.
 */
export class DuplicateDmaCoreError extends Error {
  /** The copy that was loaded first and stays in use. */
  readonly first: DmaCoreInstance;
  /** The copy whose loading failed. */
  readonly second: DmaCoreInstance;
  readonly code = 'ERR_DMAKIT_DUPLICATE_DMA_CORE';

  constructor(first: DmaCoreInstance, second: DmaCoreInstance) {
    super(
      'Two copies of @dmakit/dma-core are loaded in one process: ' +
        `${first.version} from ${first.url} was loaded first, then ${second.version} from ${second.url}. ` +
        'dma-core keeps per-device state in module-level registries, so the subsystems would silently disagree. ' +
        'Install exactly one dma-core that satisfies every subsystem (it is their peer dependency): ' +
        'upgrade the subsystems together, then run `npm dedupe` (or `pnpm dedupe`) and check `npm ls @dmakit/dma-core`.',
    );
    this.name = 'DuplicateDmaCoreError';
    this.first = first;
    this.second = second;
  }
}

/**
 * Record `self` in `registry` (by default `globalThis`). Returns the copy in use. Throws
 * {@link DuplicateDmaCoreError} when another copy, from a different module URL, is already there.
 */
export function registerDmaCoreInstance(
  self: DmaCoreInstance,
  registry: object = globalThis,
): DmaCoreInstance {
  const slot = registry as InstanceRegistry;
  const first = slot[DMA_CORE_INSTANCE_KEY];
  if (first === undefined) {
    Object.defineProperty(slot, DMA_CORE_INSTANCE_KEY, {
      value: Object.freeze({ version: self.version, url: self.url }),
      enumerable: false,
      writable: false,
      configurable: true,
    });
    return self;
  }
  if (first.url !== self.url) throw new DuplicateDmaCoreError(first, self);
  return first;
}

/** This copy of dma-core. */
export const DMA_CORE_INSTANCE: DmaCoreInstance = registerDmaCoreInstance({
  version: DMA_CORE_VERSION,
  url: import.meta.url,
});

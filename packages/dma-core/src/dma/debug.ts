// kernel: kernel/dma/debug.c (CONFIG_DMA_API_DEBUG)
/** Skeleton: the dma-debug room owner implements every check. */
export type DmaDebugMode = 'off' | 'warn' | 'strict';

export interface DmaDebugReport {
  readonly rule: string;
  readonly device: string;
  readonly message: string;
}

export class DmaDebug {
  mode: DmaDebugMode;
  readonly reports: DmaDebugReport[] = [];

  constructor(mode: DmaDebugMode) {
    this.mode = mode;
  }

  get enabled(): boolean {
    return this.mode !== 'off';
  }
}

// kernel: kernel/dma/debug.c (CONFIG_DMA_API_DEBUG)
// SKELETON: the hook signatures are fixed (the DMA API calls them); the dma-debug room owner
// implements the entry tracking and every check behind them.
import type { Device } from '../device/device.js';
import type { DmaDataDirection } from '../units/direction.js';
import type { DmaIovaState } from './iovaState.js';
import type { SgTable } from './scatterlist.js';

export type DmaDebugMode = 'off' | 'warn' | 'strict';

/** The rules dma-debug checks. Numbers refer to kernel-core.md section 8. */
export type DmaDebugRule =
  | 'unmap-error-address' // 1
  | 'unmap-not-mapped' // 2 (also double unmap)
  | 'size-mismatch' // 3
  | 'type-mismatch' // 4
  | 'cpu-address-mismatch' // 5
  | 'nents-mismatch' // 6
  | 'direction-mismatch' // 7
  | 'map-error-not-checked' // 8
  | 'sync-not-mapped' // 9
  | 'sync-out-of-range' // 10
  | 'sync-direction-mismatch' // 11
  | 'sync-for-cpu-device-read-only' // 12
  | 'sync-for-device-device-write-only' // 13
  | 'sync-sg-nents-mismatch' // 14
  | 'sg-segment-too-long' // 15
  | 'sg-segment-boundary' // 16
  | 'mmio-on-ram' // 20
  | 'cacheline-overlap' // 21
  | 'cacheline-overlap-overflow' // 22
  | 'leak-at-unbind' // 23
  | 'invalid-direction' // BUG() in the kernel
  | 'invalid-argument' // zero/negative/non-integer/oversized sizes and addresses
  | 'no-dma-mask' // WARN: dev->dma_mask not set
  // The two-step API (the kernel's dma-debug does not track it; this model does):
  | 'iova-leak-at-unbind'
  | 'iova-link-out-of-range'
  | 'iova-link-unaligned'
  | 'iova-link-overlap'
  | 'iova-unlink-not-linked'
  | 'iova-destroy-size-mismatch'
  | 'iova-free-with-links'
  | 'iova-not-allocated';

export type DmaDebugEntryType = 'single' | 'phy' | 'sg' | 'coherent' | 'noncoherent';

export interface DmaDebugReport {
  readonly rule: DmaDebugRule;
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

  /** Record a report; in strict mode also throw DmaDebugError. */
  report(rule: DmaDebugRule, dev: Device, message: string): void {
    this.reports.push({ rule, device: dev.name, message });
  }

  mapPhys(_dev: Device, _phys: number, _size: number, _dir: DmaDataDirection, _dmaAddr: number, _attrs: number): void {}
  mappingError(_dev: Device, _dmaAddr: number): void {}
  unmapPhys(_dev: Device, _dmaAddr: number, _size: number, _dir: DmaDataDirection): void {}
  mapSg(_dev: Device, _sgt: SgTable, _nents: number, _mappedEnts: number, _dir: DmaDataDirection, _attrs: number): void {}
  unmapSg(_dev: Device, _sgt: SgTable, _nelems: number, _dir: DmaDataDirection): void {}
  allocCoherent(_dev: Device, _size: number, _dmaAddr: number, _cpuAddr: number, _attrs: number): void {}
  freeCoherent(_dev: Device, _size: number, _cpuAddr: number, _dmaAddr: number): void {}
  allocPages(_dev: Device, _phys: number, _size: number, _dir: DmaDataDirection, _dmaAddr: number): void {}
  freePages(_dev: Device, _phys: number, _size: number, _dir: DmaDataDirection, _dmaAddr: number): void {}
  syncSingleForCpu(_dev: Device, _dmaAddr: number, _size: number, _dir: DmaDataDirection): void {}
  syncSingleForDevice(_dev: Device, _dmaAddr: number, _size: number, _dir: DmaDataDirection): void {}
  syncSgForCpu(_dev: Device, _sgt: SgTable, _nelems: number, _dir: DmaDataDirection): void {}
  syncSgForDevice(_dev: Device, _sgt: SgTable, _nelems: number, _dir: DmaDataDirection): void {}
  iovaTryAlloc(_dev: Device, _state: DmaIovaState): void {}
  iovaLink(_dev: Device, _state: DmaIovaState, _phys: number, _offset: number, _size: number, _dir: DmaDataDirection, _attrs: number): void {}
  iovaSync(_dev: Device, _state: DmaIovaState, _offset: number, _size: number): void {}
  iovaUnlink(_dev: Device, _state: DmaIovaState, _offset: number, _size: number, _dir: DmaDataDirection): void {}
  iovaDestroy(_dev: Device, _state: DmaIovaState, _mappedLen: number, _dir: DmaDataDirection): void {}
  iovaFree(_dev: Device, _state: DmaIovaState): void {}
  /** BUS_NOTIFY_UNBOUND_DRIVER: report leaked mappings and IOVA states. */
  unbind(_dev: Device): void {}
}

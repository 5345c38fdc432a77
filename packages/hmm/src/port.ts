// The HmmPort contract (dma-core/src/contracts/hmm.ts) implemented by this package.
import type { HmmPort } from '@dmakit/dma-core';
import { hmmDmaMapAlloc, hmmDmaMapFree, hmmDmaMapPfn, hmmDmaUnmapPfn } from './hmmDma.js';
import { hmmRangeFault } from './hmmRange.js';

/** This package's HMM, as the port a mirroring driver (rdma-umem-odp, a GPU driver) takes: hmm_range_fault() and the HMM DMA helpers of mm/hmm.c behind dma-core's HmmPort contract. */
export const hmmPort: HmmPort = Object.freeze({ hmmRangeFault, hmmDmaMapAlloc, hmmDmaMapFree, hmmDmaMapPfn, hmmDmaUnmapPfn });

/** The HMM port to inject into a consumer (the same stateless object every time). */
export function createHmmPort(): HmmPort {
  return hmmPort;
}

/**
 * The property tasks' properties: the very functions the packages' own property tests assert
 * (each package's `src/testing/properties.ts`, not shipped, so imported by path as `pnpm fuzz`
 * imports the controller fuzzer). Only the worker and `--replay` load this module.
 */
import type fc from 'fast-check';
import { dmaApiProperty, dmaDebugBalancedProperty, dmaDebugIovaLinkProperty } from '../../../packages/dma-core/src/testing/properties.js';
import { hmmMirrorProperty } from '../../../packages/hmm/src/testing/properties.js';
import { iovaDomainProperty, iovaKernelWalkProperty, unmanagedDomainModelProperty } from '../../../packages/iommu-dma/src/testing/properties.js';
import type { PropertyTaskName } from './plan.js';

/** A fresh property per run (fast-check properties keep no state between checks, but cost nothing to build). */
export const PROPERTIES: Readonly<Record<PropertyTaskName, () => fc.IRawProperty<unknown, false>>> = {
  'dma-core/dma-api': dmaApiProperty,
  'dma-core/dma-debug-balanced': dmaDebugBalancedProperty,
  'dma-core/dma-debug-iova-link': dmaDebugIovaLinkProperty,
  'iommu-dma/iova-domain': iovaDomainProperty,
  'iommu-dma/iova-kernel-walk': iovaKernelWalkProperty,
  'iommu-dma/unmanaged-domain': unmanagedDomainModelProperty,
  'hmm/mirror': () => hmmMirrorProperty(),
};

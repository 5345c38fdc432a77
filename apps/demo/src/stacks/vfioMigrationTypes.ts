/**
 * The result and option types of the "vfio-migration" stack (vfioMigration.ts): what a run is
 * asked to do and what it reports, per path (two-step IOVA or legacy scatterlist).
 */
import { errnoName } from '@dmakit/dma-core';
import type { StackFailure } from './types.js';
import type { Machine } from '@dmakit/dma-core';

export type VfioMigrationIommuMode = 'strict' | 'lazy';

/**
 * A VFIO call (or the VMM's own setup) returned an errno: the migration stops there and the
 * stack reports it (QEMU fails the migration and keeps the source running).
 */
export class VfioMigrationStop extends Error {
  override readonly name = 'VfioMigrationStop';
  readonly error: string;
  constructor(
    readonly step: string,
    errno: number,
  ) {
    const error = `-${errnoName(errno)}`;
    super(`vfio-migration: ${step}: ${error}`);
    this.error = error;
  }
}

export interface VfioMigrationOptions {
  readonly seed?: number;
  readonly iommu?: VfioMigrationIommuMode;
  /** Guest RAM in MiB (8 regions with holes between them). Default 16. */
  readonly guestMiB?: number;
  /** Function internal state bytes. Default 256 KiB. */
  readonly stateBytes?: number;
  /** Chunk size of the final device image. Default 64 KiB. */
  readonly chunkBytes?: number;
  readonly maxRounds?: number;
  /** Stop pre-copy when a round leaves at most this many dirty pages. Default 32. */
  readonly dirtyThreshold?: number;
  /** Run only this path (default both, compared). */
  readonly path?: 'iova' | 'legacy' | 'both';
  /** Corrupt the device stream on the wire (tests the target's refusal). */
  readonly corruptStream?: boolean;
  /** Called with each host's machine right after it is created, before any DMA: role 'source' or 'target' (once per path, iova first). */
  readonly onMachine?: (m: Machine, role: string) => void;
  /** Progress in migration phases: round 0, each pre-copy round, stop-copy (maxRounds + 2 per path run). */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface VfioMigrationRound {
  readonly round: number;
  /** 'pre-copy' rounds run with the guest live; the 'stop-copy' round is inside the downtime. */
  readonly phase: 'pre-copy' | 'stop-copy';
  readonly cpuDirtyPages: number;
  readonly deviceDirtyPages: number;
  readonly iommuDirtyPages: number;
  readonly pagesSent: number;
  readonly deviceBytes: number;
  readonly precopyDirtyBytes: number;
}

export interface VfioMigrationPathResult {
  readonly path: 'iova' | 'legacy';
  readonly verified: boolean;
  readonly verification: {
    readonly guestPagesCompared: number;
    readonly mismatchedPages: number;
    readonly functionStateBytes: number;
    readonly functionStateEqual: boolean;
    readonly targetContinued: boolean;
    readonly targetPacketsAfterResume: number;
    readonly targetDmaFaults: number;
    readonly deviceTrackerCoversIommuDirty: boolean;
    readonly sourceBuffersFreed: boolean;
    /** dma-debug reports on both hosts (the DMA API use of the migration buffers is clean). */
    readonly dmaDebugReports: number;
    /** IOMMU faults on both hosts (no device access was refused). */
    readonly iommuFaults: number;
    readonly targetRefusedCorruptStream?: boolean;
  };
  readonly rounds: VfioMigrationRound[];
  readonly bytesMoved: { readonly ramBytes: number; readonly deviceBytes: number; readonly totalBytes: number; readonly afterStopBytes: number };
  readonly downtime: { readonly simulatedNs: number; readonly sourceNs: number; readonly wireNs: number; readonly targetNs: number; readonly wallMs: number };
  readonly buffers: {
    readonly registrations: number;
    readonly pagesRegistered: number;
    readonly peakMetadataBytes: number;
    readonly metadataBytesPerPage: number;
    readonly iotlbSyncs: number;
    readonly iotlbSyncsPerBuffer: number;
    readonly recycled: number;
  };
  readonly deviceTracker: { readonly ranges: number; readonly requestedRanges: number; readonly pageSize: number; readonly reports: number; readonly messages: number };
  readonly arcs: { readonly source: string[]; readonly target: string[] };
  readonly streamDigest: string;
  readonly wallMs: number;
}

export interface VfioMigrationResult {
  readonly stack: 'vfio-migration';
  readonly iommu: VfioMigrationIommuMode;
  readonly verified: boolean;
  /** Where the migration stopped: the errno a VFIO ioctl, the migration fd or the VMM's setup returned. */
  readonly failure?: StackFailure;
  readonly pathsIdentical: boolean | null;
  readonly paths: VfioMigrationPathResult[];
}

import { describe, expect, it } from 'vitest';
import { runVfioMigrationPath, runVfioMigrationStack } from './vfioMigration.js';

describe('vfio-migration: live migration of an assigned mlx5 VF between two hosts', () => {
  for (const iommu of ['strict', 'lazy'] as const) {
    it(`verifies guest memory and function state on the target (IOMMU ${iommu}); the legacy path gives identical results`, () => {
      const r = runVfioMigrationStack({ seed: 2, iommu, guestMiB: 8, stateBytes: 128 * 1024, chunkBytes: 16 * 1024 });
      expect(r.pathsIdentical).toBe(true);
      for (const p of r.paths) {
        expect(p.verification.mismatchedPages).toBe(0);
        expect(p.verification.functionStateEqual).toBe(true);
        expect(p.verification.targetContinued).toBe(true);
        expect(p.verification.deviceTrackerCoversIommuDirty).toBe(true);
        expect(p.verification.sourceBuffersFreed).toBe(true);
        expect(p.verification.dmaDebugReports).toBe(0);
        expect(p.verification.iommuFaults).toBe(0);
        expect(p.verified).toBe(true);
        // Pre-copy converges: the last live round leaves far fewer dirty pages than the first.
        const live = p.rounds.filter((x) => x.phase === 'pre-copy' && x.round > 0);
        expect(live.length).toBeGreaterThan(1);
        expect(live[live.length - 1]!.pagesSent).toBeLessThan(live[0]!.pagesSent);
        expect(p.deviceTracker.ranges).toBeLessThanOrEqual(4);
        expect(p.deviceTracker.requestedRanges).toBe(8);
        expect(p.downtime.simulatedNs).toBeGreaterThan(0);
        expect(p.arcs.source).toEqual(['RUNNING->PRE_COPY', 'PRE_COPY->PRE_COPY_P2P', 'PRE_COPY_P2P->STOP_COPY', 'STOP_COPY->STOP']);
        expect(p.arcs.target).toEqual(['RUNNING->RUNNING_P2P', 'RUNNING_P2P->STOP', 'STOP->RESUMING', 'RESUMING->STOP', 'STOP->RUNNING_P2P', 'RUNNING_P2P->RUNNING']);
      }
      expect(r.verified).toBe(true);
      const [iova, legacy] = r.paths;
      // One IOTLB sync per migration buffer on both paths (one link sync or one sg map).
      expect(iova!.buffers.iotlbSyncsPerBuffer).toBe(1);
      expect(iova!.buffers.metadataBytesPerPage).toBeLessThan(legacy!.buffers.metadataBytesPerPage);
    });
  }

  it('a corrupted device stream is refused on the target: RESUMING fails, nothing goes live', () => {
    const p = runVfioMigrationPath('iova', { seed: 3, guestMiB: 8, stateBytes: 64 * 1024, corruptStream: true });
    expect(p.verification.targetRefusedCorruptStream).toBe(true);
    expect(p.verification.functionStateEqual).toBe(false);
    expect(p.verified).toBe(true);
  });
});

/** Worker side: a snapshot of every IOMMU domain of the run's machines, through iommu-dma's public read-only APIs. */
import type { Machine } from '@dmakit/dma-core';
import { IommuDmaCookie, iommuDeviceList } from '@dmakit/iommu-dma';
import type { DomainSnapshot, Snapshot } from './protocol.js';

/** Ranges per domain sent to the page (the allocator may hold thousands in its rcaches). */
export const MAX_RANGES = 4000;

export interface RunMachine {
  readonly machine: Machine;
  readonly role: string;
}

/** A device or domain name, prefixed by its machine's role unless the machine is the single 'host'. */
export function qualify(role: string, name: string): string {
  return role === 'host' ? name : `${role}/${name}`;
}

export function takeSnapshot(machines: readonly RunMachine[], at: number, progress: { done: number; total: number } | null): Snapshot {
  const domains: DomainSnapshot[] = [];
  let iommu: Record<string, number> | null = null;
  for (const { machine, role } of machines) {
    for (const unit of iommuDeviceList(machine)) {
      const s = unit.stats() as unknown as Record<string, number>;
      if (iommu === null) iommu = { ...s };
      else for (const [k, v] of Object.entries(s)) iommu[k] = (iommu[k] ?? 0) + v;
      for (const d of unit.domains) {
        const cookie = d.cookie instanceof IommuDmaCookie ? d.cookie : null;
        const ranges: number[] = [];
        let truncated = false;
        let iv = null;
        if (cookie !== null) {
          for (const r of cookie.iovad.liveRanges()) {
            if (ranges.length >= MAX_RANGES * 3) {
              truncated = true;
              break;
            }
            ranges.push(r.pfnLo, r.pfnHi, r.reserved ? 2 : r.cached ? 1 : 0);
          }
          iv = cookie.iovad.stats();
        }
        const ds = d.stats();
        const tlb = d.iotlb;
        const occ = d.pgtable.occupancy();
        domains.push({
          name: qualify(role, d.name),
          type: d.type,
          iova: {
            granule: cookie?.iovad.granule ?? d.granule,
            dma32bitPfn: cookie?.iovad.dma32bitPfn ?? 2 ** 20,
            ranges,
            truncated,
            allocs: iv?.allocs ?? 0,
            frees: iv?.frees ?? 0,
            rcacheHits: iv?.rcacheHits ?? 0,
            rcacheMisses: iv?.rcacheMisses ?? 0,
            treeNodes: iv?.treeNodes ?? 0,
            allocatedGranules: iv?.allocatedGranules ?? 0,
            cachedGranules: iv?.cachedGranules ?? 0,
          },
          pt: { levels: occ.levels.map((l) => ({ ...l })), tablePagesLive: occ.tablePagesLive, tablePagesPeak: occ.tablePagesPeak, entriesPerTable: occ.entriesPerTable },
          tlb: {
            entries: tlb.entries,
            ways: tlb.ways,
            valid: tlb.valid,
            pfns: tlb.validEntries().pfns,
            hits: tlb.stats.hits,
            misses: tlb.stats.misses,
            invalidationsRange: tlb.stats.invalidationsRange,
            invalidationsFull: tlb.stats.invalidationsFull,
            evictions: tlb.stats.evictions,
          },
          staleIotlbAccesses: ds.staleIotlbAccesses,
          maps: ds.maps,
          unmaps: ds.unmaps,
          fqPending: cookie?.fq?.stats.pending ?? 0,
        });
      }
    }
  }
  const first = machines[0]?.machine;
  return { at, simNs: first !== undefined ? first.clock.now() : 0, domains, iommu, progress };
}

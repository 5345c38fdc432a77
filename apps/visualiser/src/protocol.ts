/**
 * Messages between the page and the worker that runs a stack. Everything here is structured-clone
 * friendly (plain objects, arrays, numbers, strings).
 */
import type { IommuMode, MappingPath, StackInfo } from '@dmakit/demo/stacks';

/** A trace event on the wire: `d` is the device, prefixed by the machine's role when a stack builds several machines. */
export interface WireEvent {
  /** "system:event" (kernel tracepoint name). */
  readonly n: string;
  /** Simulated ns. */
  readonly t: number;
  readonly d: string;
  readonly f: Readonly<Record<string, number | string | boolean | readonly number[]>>;
}

export interface PtLevel {
  readonly level: number;
  readonly entrySize: number;
  readonly tables: number;
  readonly entries: number;
  readonly leaves: number;
}

/** One IOMMU domain at one moment, through iommu-dma's public read-only APIs. */
export interface DomainSnapshot {
  readonly name: string;
  readonly type: 'strict' | 'lazy';
  readonly iova: {
    readonly granule: number;
    readonly dma32bitPfn: number;
    /** Flat [pfnLo, pfnHi, kind] triples; kind 0 allocated, 1 rcache-held, 2 reserved (capped). */
    readonly ranges: number[];
    readonly truncated: boolean;
    readonly allocs: number;
    readonly frees: number;
    readonly rcacheHits: number;
    readonly rcacheMisses: number;
    readonly treeNodes: number;
    readonly allocatedGranules: number;
    readonly cachedGranules: number;
  };
  readonly pt: { readonly levels: readonly PtLevel[]; readonly tablePagesLive: number; readonly tablePagesPeak: number; readonly entriesPerTable: number };
  readonly tlb: {
    readonly entries: number;
    readonly ways: number;
    readonly valid: number;
    readonly pfns: number[];
    readonly hits: number;
    readonly misses: number;
    readonly invalidationsRange: number;
    readonly invalidationsFull: number;
    readonly evictions: number;
  };
  readonly staleIotlbAccesses: number;
  readonly maps: number;
  readonly unmaps: number;
  readonly fqPending: number;
}

export interface Snapshot {
  /** Events streamed before this snapshot was taken (the cursor position it belongs to). */
  readonly at: number;
  /** Simulated ns of the first machine. */
  readonly simNs: number;
  readonly domains: readonly DomainSnapshot[];
  /** iommu.stats() summed over every IOMMU (absent without an IOMMU). */
  readonly iommu: Readonly<Record<string, number>> | null;
  readonly progress: { readonly done: number; readonly total: number } | null;
}

export interface RunParams {
  readonly stack: string;
  readonly seed: number;
  readonly iommu?: IommuMode;
  readonly mapping?: MappingPath;
  readonly size?: number;
  /** Stack-specific options (StackRunRequest.extra), keyed by StackOptionInfo.key. */
  readonly extra?: Readonly<Record<string, string | number | boolean>>;
}

export type ToWorker =
  | { readonly type: 'run'; readonly id: number; readonly params: RunParams; readonly compare: boolean }
  | { readonly type: 'trace'; readonly id: number };

/** StackInfo without functions. */
export type StackMeta = Pick<StackInfo, 'name' | 'summary' | 'help' | 'defaultIommu' | 'iommuModes' | 'mappings' | 'comparesMappings' | 'size' | 'options'>;

export type FromWorker =
  | { readonly type: 'ready'; readonly stacks: readonly StackMeta[] }
  | { readonly type: 'started'; readonly id: number; readonly role: string }
  | { readonly type: 'batch'; readonly id: number; readonly events: WireEvent[]; readonly snapshot: Snapshot }
  | {
      readonly type: 'done';
      readonly id: number;
      readonly result: unknown;
      readonly table: string;
      /** Wall-clock ms the run took in the worker (performance.now). */
      readonly runMs: number;
      readonly eventCount: number;
      readonly dropped: number;
    }
  | { readonly type: 'compare'; readonly id: number; readonly mapping: string; readonly events: WireEvent[]; readonly snapshots: Snapshot[] }
  | { readonly type: 'error'; readonly id: number; readonly usage: boolean; readonly message: string }
  | { readonly type: 'trace'; readonly id: number; readonly json: string };

// kernel: include/trace/events/dma.h, include/trace/events/swiotlb.h, include/trace/events/iommu.h
/**
 * The typed event set: every tracepoint the model emits, by "system:event" name, with the
 * kernel's field names. `TraceEventMap` is an interface so a package can add its own events by
 * declaration merging (`declare module '@dmakit/dma-core' { interface TraceEventMap { ... } }`).
 */

/** A field value: numbers (addresses, sizes, dir, attrs), strings, flags, or per-segment arrays. */
export type TraceFieldValue = number | string | boolean | readonly number[];
/** The fields of one event, by the kernel's field names. */
export type TraceFields = Readonly<Record<string, TraceFieldValue>>;

/** dma.h `dma_map` class (dma_map_phys). */
export type DmaMapTraceFields = {
  readonly phys_addr: number;
  readonly dma_addr: number;
  readonly size: number;
  readonly dir: number;
  readonly attrs: number;
};
/** dma.h `dma_unmap` class (dma_unmap_phys). */
export type DmaUnmapTraceFields = { readonly addr: number; readonly size: number; readonly dir: number; readonly attrs: number };
/** dma.h `dma_alloc_class` (dma_alloc, dma_alloc_pages, dma_alloc_sgt_err); `flags` is the gfp mask. */
export type DmaAllocTraceFields = {
  readonly virt_addr: number;
  readonly dma_addr: number;
  readonly size: number;
  readonly dir: number;
  readonly flags: number;
  readonly attrs: number;
};
/** dma.h `dma_alloc_sgt`. */
export type DmaAllocSgtTraceFields = {
  readonly phys_addrs: readonly number[];
  readonly dma_addr: number;
  readonly size: number;
  readonly dir: number;
  readonly flags: number;
  readonly attrs: number;
};
/** dma.h `dma_free_class` (dma_free, dma_free_pages). */
export type DmaFreeTraceFields = { readonly virt_addr: number; readonly dma_addr: number; readonly size: number; readonly dir: number; readonly attrs: number };
/** dma.h `dma_free_sgt`. */
export type DmaFreeSgtTraceFields = { readonly phys_addrs: readonly number[]; readonly dma_addr: number; readonly size: number; readonly dir: number };
/** dma.h `dma_map_sg`. */
export type DmaMapSgTraceFields = {
  readonly phys_addrs: readonly number[];
  readonly dma_addrs: readonly number[];
  readonly lengths: readonly number[];
  readonly dir: number;
  readonly attrs: number;
};
/** dma.h `dma_map_sg_err`. */
export type DmaMapSgErrTraceFields = { readonly phys_addrs: readonly number[]; readonly err: number; readonly dir: number; readonly attrs: number };
/** dma.h `dma_unmap_sg` (`addrs` are the CPU physical addresses). */
export type DmaUnmapSgTraceFields = { readonly addrs: readonly number[]; readonly dir: number; readonly attrs: number };
/** dma.h `dma_sync_single` class. */
export type DmaSyncSingleTraceFields = { readonly dma_addr: number; readonly size: number; readonly dir: number };
/** dma.h `dma_sync_sg` class. */
export type DmaSyncSgTraceFields = { readonly dma_addrs: readonly number[]; readonly lengths: readonly number[]; readonly dir: number };
/** swiotlb.h `swiotlb_bounced`. */
export type SwiotlbBouncedTraceFields = { readonly dma_mask: number; readonly dev_addr: number; readonly size: number; readonly force: boolean };
/** iommu.h `map`. */
export type IommuMapTraceFields = { readonly iova: number; readonly paddr: number; readonly size: number };
/** iommu.h `unmap`. */
export type IommuUnmapTraceFields = { readonly iova: number; readonly size: number; readonly unmapped_size: number };
/** iommu.h `io_page_fault` (`driver` is dev_driver_string). */
export type IommuIoPageFaultTraceFields = { readonly iova: number; readonly flags: number; readonly driver: string };

/**
 * Every event the model emits, by "system:event" name, with its field type. Packages extend it by
 * declaration merging.
 */
export interface TraceEventMap {
  'dma:dma_map_phys': DmaMapTraceFields;
  'dma:dma_unmap_phys': DmaUnmapTraceFields;
  'dma:dma_alloc': DmaAllocTraceFields;
  'dma:dma_alloc_pages': DmaAllocTraceFields;
  'dma:dma_alloc_sgt_err': DmaAllocTraceFields;
  'dma:dma_alloc_sgt': DmaAllocSgtTraceFields;
  'dma:dma_free': DmaFreeTraceFields;
  'dma:dma_free_pages': DmaFreeTraceFields;
  'dma:dma_free_sgt': DmaFreeSgtTraceFields;
  'dma:dma_map_sg': DmaMapSgTraceFields;
  'dma:dma_map_sg_err': DmaMapSgErrTraceFields;
  'dma:dma_unmap_sg': DmaUnmapSgTraceFields;
  'dma:dma_sync_single_for_cpu': DmaSyncSingleTraceFields;
  'dma:dma_sync_single_for_device': DmaSyncSingleTraceFields;
  'dma:dma_sync_sg_for_cpu': DmaSyncSgTraceFields;
  'dma:dma_sync_sg_for_device': DmaSyncSgTraceFields;
  'swiotlb:swiotlb_bounced': SwiotlbBouncedTraceFields;
  'iommu:map': IommuMapTraceFields;
  'iommu:unmap': IommuUnmapTraceFields;
  'iommu:io_page_fault': IommuIoPageFaultTraceFields;
}

/** Name of a known event ("system:event"). */
export type TraceEventName = keyof TraceEventMap;

/** The fields of a named event: typed for known names, free-form for others. */
export type TraceFieldsFor<N extends string> = N extends TraceEventName ? TraceEventMap[N] : TraceFields;

/**
 * One trace record. `name` is "system:event" (e.g. "dma:dma_map_phys"); `ts` is simulated ns;
 * `fields` carries the tracepoint's fields under the kernel's field names.
 */
export interface TraceEvent {
  readonly name: string;
  readonly ts: number;
  readonly device: string;
  readonly fields: TraceFields;
}

/** A known event with its typed fields. */
export interface TypedTraceEvent<N extends TraceEventName> extends TraceEvent {
  readonly name: N;
  readonly fields: TraceEventMap[N];
}

/** Discriminated union of every known event (narrow on `name`). */
export type KnownTraceEvent = { [K in TraceEventName]: TypedTraceEvent<K> }[TraceEventName];

/** Every known event name, in dma.h order then swiotlb and iommu. */
export const TRACE_EVENT_NAMES: readonly TraceEventName[] = [
  'dma:dma_map_phys',
  'dma:dma_unmap_phys',
  'dma:dma_alloc',
  'dma:dma_alloc_pages',
  'dma:dma_alloc_sgt_err',
  'dma:dma_alloc_sgt',
  'dma:dma_free',
  'dma:dma_free_pages',
  'dma:dma_free_sgt',
  'dma:dma_map_sg',
  'dma:dma_map_sg_err',
  'dma:dma_unmap_sg',
  'dma:dma_sync_single_for_cpu',
  'dma:dma_sync_single_for_device',
  'dma:dma_sync_sg_for_cpu',
  'dma:dma_sync_sg_for_device',
  'swiotlb:swiotlb_bounced',
  'iommu:map',
  'iommu:unmap',
  'iommu:io_page_fault',
];

const KNOWN = new Set<string>(TRACE_EVENT_NAMES);

/** Type guard: `isTraceEvent(ev, 'dma:dma_map_phys')` narrows `ev.fields`. */
export function isTraceEvent<N extends TraceEventName>(ev: TraceEvent, name: N): ev is TypedTraceEvent<N> {
  return ev.name === name;
}

/** Narrow to the union of known events (undefined for a custom event). */
export function asKnownTraceEvent(ev: TraceEvent): KnownTraceEvent | undefined {
  return KNOWN.has(ev.name) ? (ev as KnownTraceEvent) : undefined;
}

/** "dma:dma_map_phys" → ["dma", "dma_map_phys"] (no colon: system ""). */
export function splitTraceEventName(name: string): readonly [system: string, event: string] {
  const i = name.indexOf(':');
  return i < 0 ? ['', name] : [name.slice(0, i), name.slice(i + 1)];
}

/**
 * A name filter like ftrace's set_event: each pattern is "system:event", "system:*", "system"
 * (whole system), "*:event", or "*". A leading "!" excludes. Empty list: everything.
 */
export type TraceEventFilter = string | readonly string[] | ((name: string) => boolean);

/** Compiles an event filter into a predicate (null means "everything"), like ftrace's set_event parsing. */
export function compileTraceFilter(filter: TraceEventFilter | undefined): ((name: string) => boolean) | null {
  if (filter === undefined) return null;
  if (typeof filter === 'function') return filter;
  const list = typeof filter === 'string' ? [filter] : filter;
  if (list.length === 0) return null;
  const include: ((n: string) => boolean)[] = [];
  const exclude: ((n: string) => boolean)[] = [];
  for (const raw of list) {
    const neg = raw.startsWith('!');
    const p = neg ? raw.slice(1) : raw;
    (neg ? exclude : include).push(patternMatcher(p));
  }
  const cache = new Map<string, boolean>();
  return (name) => {
    let v = cache.get(name);
    if (v === undefined) {
      v = (include.length === 0 || include.some((m) => m(name))) && !exclude.some((m) => m(name));
      cache.set(name, v);
    }
    return v;
  };
}

function patternMatcher(p: string): (name: string) => boolean {
  if (p === '*' || p === '*:*') return () => true;
  const [sys, ev] = p.includes(':') ? splitTraceEventName(p) : [p, '*'];
  return (name) => {
    const [s, e] = splitTraceEventName(name);
    return (sys === '*' || sys === s) && (ev === '*' || ev === e);
  };
}

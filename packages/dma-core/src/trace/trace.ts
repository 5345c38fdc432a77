// kernel: include/trace/events/dma.h, include/trace/events/swiotlb.h, include/trace/events/iommu.h
/**
 * One trace record. `name` is "system:event" (e.g. "dma:dma_map_phys"); `ts` is simulated ns;
 * `fields` carries the tracepoint's fields under the kernel's field names.
 * (Skeleton: the trace room owner makes the event set typed and adds exporters.)
 */
export interface TraceEvent {
  readonly name: string;
  readonly ts: number;
  readonly device: string;
  readonly fields: Readonly<Record<string, number | string | boolean | readonly number[]>>;
}

export type TraceSubscriber = (ev: TraceEvent) => void;

/**
 * The trace hub. Call sites guard with `if (trace.enabled)` so tracing costs one branch when off.
 */
export class Trace {
  /** True when someone listens (a subscriber or recording). */
  enabled = false;
  readonly #subs = new Set<TraceSubscriber>();

  subscribe(fn: TraceSubscriber): () => void {
    this.#subs.add(fn);
    this.enabled = true;
    return () => {
      this.#subs.delete(fn);
      this.enabled = this.#subs.size > 0;
    };
  }

  emit(ev: TraceEvent): void {
    for (const fn of this.#subs) fn(ev);
  }
}

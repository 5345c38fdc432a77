// kernel: include/trace/events/dma.h, include/trace/events/swiotlb.h, include/trace/events/iommu.h
/**
 * One trace record. `name` is "system:event" (e.g. "dma:dma_map_phys"); `ts` is simulated ns;
 * `fields` carries the tracepoint's fields under the kernel's field names.
 * (Skeleton: the trace room owner makes the event set typed and adds exporters; the emit
 * helpers in dmaEvents.ts keep their signatures.)
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
  /** Simulated-time source for `ts` (set by the machine). */
  now: () => number = () => 0;
  readonly #subs = new Set<TraceSubscriber>();

  subscribe(fn: TraceSubscriber): () => void {
    this.#subs.add(fn);
    this.enabled = true;
    return () => {
      this.#subs.delete(fn);
      this.enabled = this.#subs.size > 0;
    };
  }

  emit(name: string, device: string, fields: TraceEvent['fields']): void {
    const ev: TraceEvent = { name, ts: this.now(), device, fields };
    for (const fn of this.#subs) fn(ev);
  }
}

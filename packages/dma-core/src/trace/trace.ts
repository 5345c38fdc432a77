// kernel: kernel/trace/ring_buffer.c (overwrite mode), include/trace/events/*.h
import { compileTraceFilter } from './events.js';
import type { TraceEvent, TraceEventFilter, TraceFieldsFor } from './events.js';

/** Callback that receives each trace event. */
export type TraceSubscriber = (ev: TraceEvent) => void;

/** Options of Trace.record(): ring capacity and an event filter. */
export interface TraceRecordOptions {
  /** Ring size in events (default 65536). A full ring overwrites the oldest event. */
  capacity?: number;
  /** Which events to keep (ftrace set_event style: "dma", "dma:dma_map_phys", "iommu:*", "!dma:dma_sync_*"...). */
  events?: TraceEventFilter;
}

/** Options of Trace.subscribe(): an event filter. */
export interface TraceSubscribeOptions {
  events?: TraceEventFilter;
}

const DEFAULT_CAPACITY = 1 << 16;

/**
 * The trace hub. Call sites guard with `if (trace.enabled)` so tracing costs one branch when off.
 * Views subscribe (or record into the ring) instead of being called by the model.
 */
export class Trace {
  /** True when someone listens (a subscriber or recording). A plain field: call sites test it. */
  enabled = false;
  /** Simulated-time source for `ts` (set by the machine). */
  now: () => number = () => 0;
  readonly #subs = new Set<TraceSubscriber>();
  #ring: (TraceEvent | undefined)[] = [];
  #head = 0;
  #len = 0;
  #dropped = 0;
  #written = 0;
  #recording = false;
  #recordFilter: ((name: string) => boolean) | null = null;

  /**
   * Calls fn for every event (optionally filtered); returns the unsubscribe function. Like attaching a
   * probe to a tracepoint.
   */
  subscribe(fn: TraceSubscriber, opts?: TraceSubscribeOptions): () => void {
    const filter = compileTraceFilter(opts?.events);
    const sub: TraceSubscriber =
      filter === null
        ? fn
        : (ev) => {
            if (filter(ev.name)) fn(ev);
          };
    this.#subs.add(sub);
    this.enabled = true;
    return () => {
      this.#subs.delete(sub);
      this.#updateEnabled();
    };
  }

  /** Emits an event to the subscribers and the ring (kernel: a trace_<event>() call site). */
  emit<N extends string>(name: N, device: string, fields: TraceFieldsFor<N>): void {
    const ev: TraceEvent = { name, ts: this.now(), device, fields };
    for (const fn of this.#subs) fn(ev);
    if (this.#recording && (this.#recordFilter === null || this.#recordFilter(name))) this.#push(ev);
  }

  /** Start recording into a bounded ring buffer (clears what was recorded before). */
  record(opts: TraceRecordOptions = {}): void {
    const capacity = opts.capacity ?? DEFAULT_CAPACITY;
    if (!Number.isSafeInteger(capacity) || capacity <= 0) {
      throw new RangeError(`Trace.record: capacity must be a positive integer, got ${capacity}`);
    }
    this.#ring = new Array<TraceEvent | undefined>(capacity);
    this.#head = 0;
    this.#len = 0;
    this.#dropped = 0;
    this.#written = 0;
    this.#recordFilter = compileTraceFilter(opts.events);
    this.#recording = true;
    this.enabled = true;
  }

  /** Stop recording; the recorded events stay readable through `events()`. */
  stop(): void {
    this.#recording = false;
    this.#updateEnabled();
  }

  /** True while recording into the ring. */
  get recording(): boolean {
    return this.#recording;
  }

  /** Events overwritten because the ring was full. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Events written to the ring since `record()` (kept + dropped). */
  get written(): number {
    return this.#written;
  }

  /** Ring size in events. */
  get capacity(): number {
    return this.#ring.length;
  }

  /** The recorded events, oldest first. */
  events(): TraceEvent[] {
    const out: TraceEvent[] = [];
    const cap = this.#ring.length;
    for (let i = 0; i < this.#len; i++) {
      const ev = this.#ring[(this.#head + i) % cap];
      if (ev !== undefined) out.push(ev);
    }
    return out;
  }

  /** Empty the ring (recording continues if it was on). */
  clear(): void {
    this.#ring.fill(undefined);
    this.#head = 0;
    this.#len = 0;
    this.#dropped = 0;
    this.#written = 0;
  }

  #push(ev: TraceEvent): void {
    const cap = this.#ring.length;
    this.#written++;
    if (this.#len < cap) {
      this.#ring[(this.#head + this.#len) % cap] = ev;
      this.#len++;
    } else {
      this.#ring[this.#head] = ev;
      this.#head = (this.#head + 1) % cap;
      this.#dropped++;
    }
  }

  #updateEnabled(): void {
    this.enabled = this.#subs.size > 0 || this.#recording;
  }
}

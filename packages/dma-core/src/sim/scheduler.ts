import type { SimClock } from './clock.js';

/** Callback run by the event scheduler. */
export type SimEventFn = () => void;

/** Handle returned by `schedule`; `cancel()` removes a pending event. */
export interface SimTimer {
  readonly due: number;
  /** Removes the event if it has not run yet. */
  cancel(): void;
  readonly pending: boolean;
}

interface Entry extends SimTimer {
  due: number;
  seq: number;
  fn: SimEventFn;
  pending: boolean;
}

/**
 * Discrete-event scheduler on the simulation clock. Events due at the same time run in the order
 * they were scheduled (stable by sequence number), so every run is reproducible.
 */
export class EventScheduler {
  readonly #clock: SimClock;
  readonly #heap: Entry[] = [];
  #seq = 0;

  constructor(clock: SimClock) {
    this.#clock = clock;
  }

  /** Number of events still pending. */
  get pendingCount(): number {
    return this.#heap.filter((e) => e.pending).length;
  }

  /** Run `fn` when `delayNs` of simulated time has passed. */
  schedule(delayNs: number, fn: SimEventFn): SimTimer {
    if (!Number.isFinite(delayNs) || delayNs < 0) {
      throw new RangeError(`schedule: delay must be a finite non-negative number of ns, got ${delayNs}`);
    }
    const entry: Entry = {
      due: this.#clock.now() + delayNs,
      seq: this.#seq++,
      fn,
      pending: true,
      cancel() {
        entry.pending = false;
      },
    };
    this.#push(entry);
    return entry;
  }

  /** Run events in time order until none is left (or `maxEvents` ran, to stop runaway loops). */
  runUntilIdle(maxEvents = 10_000_000): number {
    let ran = 0;
    while (this.#heap.length > 0 && ran < maxEvents) {
      const e = this.#pop();
      if (!e?.pending) continue;
      e.pending = false;
      this.#clock.advanceTo(e.due);
      e.fn();
      ran++;
    }
    return ran;
  }

  /** Run every event due within the next `ns`, in order, then set the clock to now + ns. */
  advance(ns: number): number {
    if (!Number.isFinite(ns) || ns < 0) throw new RangeError(`advance: ns must be >= 0, got ${ns}`);
    const end = this.#clock.now() + ns;
    let ran = 0;
    for (;;) {
      const top = this.#heap[0];
      if (top === undefined || top.due > end) break;
      const e = this.#pop();
      if (!e?.pending) continue;
      e.pending = false;
      this.#clock.advanceTo(e.due);
      e.fn();
      ran++;
    }
    this.#clock.advanceTo(end);
    return ran;
  }

  #less(a: Entry, b: Entry): boolean {
    return a.due < b.due || (a.due === b.due && a.seq < b.seq);
  }

  #push(e: Entry): void {
    const h = this.#heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p];
      if (parent === undefined || !this.#less(e, parent)) break;
      h[i] = parent;
      i = p;
    }
    h[i] = e;
  }

  #pop(): Entry | undefined {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (top === undefined || last === undefined || h.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      let mv: Entry = last;
      const lv = h[l];
      const rv = h[r];
      if (lv !== undefined && this.#less(lv, mv)) {
        m = l;
        mv = lv;
      }
      if (rv !== undefined && this.#less(rv, mv)) {
        m = r;
        mv = rv;
      }
      if (m === i) break;
      h[i] = mv;
      i = m;
    }
    h[i] = last;
    return top;
  }
}

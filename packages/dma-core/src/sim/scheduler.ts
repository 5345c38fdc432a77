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

/** A scheduled event: one object per `schedule` (its `cancel` is a method, not a closure). */
class Entry implements SimTimer {
  due: number;
  seq: number;
  fn: SimEventFn;
  pending = true;
  /** Position in the scheduler's heap, -1 once it left it (ran or cancelled). */
  heapIndex = -1;
  readonly #sched: EventScheduler;

  constructor(sched: EventScheduler, due: number, seq: number, fn: SimEventFn) {
    this.#sched = sched;
    this.due = due;
    this.seq = seq;
    this.fn = fn;
  }

  cancel(): void {
    this.#sched.cancel(this);
  }

  /** @internal */
  ownedBy(sched: EventScheduler): boolean {
    return this.#sched === sched;
  }
}

/**
 * Discrete-event scheduler on the simulation clock. Events due at the same time run in the order
 * they were scheduled (stable by sequence number), so every run is reproducible. A cancelled
 * event leaves the heap at once, so a timer armed and cancelled on every I/O (a request timeout)
 * costs nothing later and the heap holds only what is pending.
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
    return this.#heap.length;
  }

  /** Run `fn` when `delayNs` of simulated time has passed. */
  schedule(delayNs: number, fn: SimEventFn): SimTimer {
    if (!Number.isFinite(delayNs) || delayNs < 0) {
      throw new RangeError(`schedule: delay must be a finite non-negative number of ns, got ${delayNs}`);
    }
    const entry = new Entry(this, this.#clock.now() + delayNs, this.#seq++, fn);
    this.#push(entry);
    return entry;
  }

  /** Cancel a pending event of this scheduler (what `timer.cancel()` does): it leaves the heap now. */
  cancel(timer: SimTimer): void {
    if (!(timer instanceof Entry) || !timer.ownedBy(this) || !timer.pending) return;
    timer.pending = false;
    const e = timer;
    const h = this.#heap;
    const i = e.heapIndex;
    if (i < 0 || h[i] !== e) return;
    e.heapIndex = -1;
    const last = h.pop();
    if (last === undefined || last === e) return;
    h[i] = last;
    last.heapIndex = i;
    const parent = h[(i - 1) >> 1];
    if (i > 0 && parent !== undefined && this.#less(last, parent)) this.#siftUp(last, i);
    else this.#siftDown(last, i);
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
    this.#siftUp(e, h.length - 1);
  }

  #siftUp(e: Entry, from: number): void {
    const h = this.#heap;
    let i = from;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p];
      if (parent === undefined || !this.#less(e, parent)) break;
      h[i] = parent;
      parent.heapIndex = i;
      i = p;
    }
    h[i] = e;
    e.heapIndex = i;
  }

  #siftDown(e: Entry, from: number): void {
    const h = this.#heap;
    const n = h.length;
    let i = from;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let m = l;
      let mv = h[l];
      const rv = h[r];
      if (mv === undefined) break;
      if (r < n && rv !== undefined && this.#less(rv, mv)) {
        m = r;
        mv = rv;
      }
      if (!this.#less(mv, e)) break;
      h[i] = mv;
      mv.heapIndex = i;
      i = m;
    }
    h[i] = e;
    e.heapIndex = i;
  }

  #pop(): Entry | undefined {
    const h = this.#heap;
    const top = h[0];
    if (top === undefined) return undefined;
    top.heapIndex = -1;
    const last = h.pop();
    if (last !== undefined && last !== top) this.#siftDown(last, 0);
    return top;
  }
}

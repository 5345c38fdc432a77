/**
 * Deterministic simulated time in nanoseconds. Model code never reads wall time
 * (DESIGN.md section 4): everything that takes time advances this clock.
 */
export class SimClock {
  #now = 0;

  /** Current simulated time in ns (dmakit's virtual clock; never wall time). */
  now(): number {
    return this.#now;
  }

  /** Move time forward (never backward). Used by the scheduler and by cost models. */
  advanceTo(ns: number): void {
    if (ns > this.#now) this.#now = ns;
  }

  /** Charge `ns` of simulated time to the current activity. */
  charge(ns: number): void {
    if (ns > 0) this.#now += ns;
  }
}

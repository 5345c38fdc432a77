/**
 * Deterministic fault injection, like the kernel's fail_page_alloc / failslab with `times` and
 * `interval`: arm a site to fail its Nth call (and optionally every call after it). Sites are
 * named by the allocation they guard: 'alloc_pages', 'iova', 'pgtable', 'swiotlb', 'dma_pool', ...
 */
export class FaultInjection {
  readonly #armed = new Map<string, { nth: number; every: boolean; seen: number }>();
  readonly #calls = new Map<string, number>();
  /** How many injected failures happened, per site. */
  readonly injected = new Map<string, number>();

  /** Fail the `nth` (1-based) next call at `site`; with `every`, all calls from then on. */
  arm(site: string, nth: number, every = false): void {
    if (!Number.isInteger(nth) || nth < 1) throw new RangeError(`arm: nth must be >= 1, got ${nth}`);
    this.#armed.set(site, { nth, every, seen: 0 });
  }

  /** Disarms one site, or every site when none is given. */
  disarm(site?: string): void {
    if (site === undefined) this.#armed.clear();
    else this.#armed.delete(site);
  }

  /** Count a call at `site`; true if it must fail. Costs one map lookup when nothing is armed. */
  shouldFail(site: string): boolean {
    this.#calls.set(site, (this.#calls.get(site) ?? 0) + 1);
    const a = this.#armed.get(site);
    if (a === undefined) return false;
    a.seen++;
    const fail = a.every ? a.seen >= a.nth : a.seen === a.nth;
    if (!a.every && a.seen >= a.nth) this.#armed.delete(site);
    if (fail) this.injected.set(site, (this.injected.get(site) ?? 0) + 1);
    return fail;
  }

  /** Calls seen at a site since creation (armed or not). */
  calls(site: string): number {
    return this.#calls.get(site) ?? 0;
  }
}

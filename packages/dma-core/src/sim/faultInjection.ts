/** One injected failure: the site and the call number (1-based, counted over every site) it hit. */
export interface InjectedFault {
  readonly site: string;
  readonly call: number;
}

/**
 * Deterministic fault injection, like the kernel's fail_page_alloc / failslab with `times` and
 * `interval`: arm a site to fail its Nth call (and optionally every call after it). Sites are
 * named by the allocation they guard: 'alloc_pages', 'iova', 'pgtable', 'swiotlb', 'dma_pool',
 * 'dmabuf_attach', 'hmm_fault', 'migrate_alloc', 'nvme_prp_pool', ...
 *
 * `failNth(n)` is the per-task counter of `/proc/self/task/<tid>/fail-nth`
 * (Documentation/fault-injection/fault-injection.rst): the nth call to any site fails, once. It is
 * what tools/testing/selftests/iommu/iommufd_fail_nth.c sweeps: run once to count the sites a call
 * chain passes (`totalCalls`), then rerun failing the 1st, 2nd, ... of them.
 */
export class FaultInjection {
  readonly #armed = new Map<string, { nth: number; every: boolean; seen: number }>();
  readonly #calls = new Map<string, number>();
  #total = 0;
  #nth = 0;
  /** How many injected failures happened, per site. */
  readonly injected = new Map<string, number>();
  /** The latest injected failure, or null before the first. */
  lastInjected: InjectedFault | null = null;
  /**
   * Called at every site with its name and the call number over all sites (1-based), before the
   * decision: a sweep's counting run records which site each call number is.
   */
  onCall: ((site: string, call: number) => void) | null = null;

  /** Fail the `nth` (1-based) next call at `site`; with `every`, all calls from then on. */
  arm(site: string, nth: number, every = false): void {
    if (!Number.isInteger(nth) || nth < 1) throw new RangeError(`arm: nth must be >= 1, got ${nth}`);
    this.#armed.set(site, { nth, every, seen: 0 });
  }

  /**
   * Fail the `nth` (1-based) next call to any site, once (writing n to `fail-nth`). 0 disarms.
   * Per-site arms keep working beside it.
   */
  failNth(nth: number): void {
    if (!Number.isInteger(nth) || nth < 0) throw new RangeError(`failNth: nth must be an integer >= 0, got ${nth}`);
    this.#nth = nth;
  }

  /**
   * Calls still to pass before the armed `failNth` fires, 0 when none is pending (reading
   * `fail-nth`: 0 once the failure was injected). A sweep that finds it non-zero after a run knows
   * the run passed fewer sites than n.
   */
  get failNthPending(): number {
    return this.#nth;
  }

  /** Disarms one site, or every site and `failNth` when none is given. */
  disarm(site?: string): void {
    if (site === undefined) {
      this.#armed.clear();
      this.#nth = 0;
    } else this.#armed.delete(site);
  }

  /** Count a call at `site`; true if it must fail. Costs one map lookup when nothing is armed. */
  shouldFail(site: string): boolean {
    this.#total++;
    this.#calls.set(site, (this.#calls.get(site) ?? 0) + 1);
    this.onCall?.(site, this.#total);
    let fail = false;
    if (this.#nth > 0 && --this.#nth === 0) fail = true;
    const a = this.#armed.get(site);
    if (a !== undefined) {
      a.seen++;
      if (a.every ? a.seen >= a.nth : a.seen === a.nth) fail = true;
      if (!a.every && a.seen >= a.nth) this.#armed.delete(site);
    }
    if (fail) {
      this.injected.set(site, (this.injected.get(site) ?? 0) + 1);
      this.lastInjected = { site, call: this.#total };
    }
    return fail;
  }

  /** Calls seen at a site since creation (armed or not). */
  calls(site: string): number {
    return this.#calls.get(site) ?? 0;
  }

  /** Calls seen at every site together since creation (what `failNth` counts). */
  get totalCalls(): number {
    return this.#total;
  }

  /** Calls seen per site since creation, sites in the order first reached. */
  sites(): ReadonlyMap<string, number> {
    return new Map(this.#calls);
  }
}

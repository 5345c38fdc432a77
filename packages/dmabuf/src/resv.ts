// kernel: drivers/dma-buf/dma-resv.c, drivers/dma-buf/dma-fence.c, include/linux/dma-resv.h
// The reservation object: one lock and a list of fences. The model is single-threaded, so the
// lock never blocks: taking it twice is the deadlock the kernel would hit, reported and refused.
// Fences signal at a known simulated time; waiting moves the clock, never sleeps.
import { DmaResvUsage, Errno, MAX_SCHEDULE_TIMEOUT } from '@dmakit/dma-core';
import type { Device, DmaFence, DmaResv, SimClock } from '@dmakit/dma-core';

let nextContext = 1;

/** `dma_fence_context_alloc(num)`: the first of `num` new timelines. */
export function dmaFenceContextAlloc(num = 1): number {
  const c = nextContext;
  nextContext += Math.max(1, Math.floor(num));
  return c;
}

/** `struct dma_fence` with the model's signal time and an action run once when it signals. */
export class DmaFenceObject implements DmaFence {
  readonly context: number;
  readonly seqno: number;
  readonly signalAt: number;
  signaled = false;
  error = 0;
  readonly #clock: SimClock;
  #onSignal: (() => void) | null;

  constructor(clock: SimClock, context: number, seqno: number, signalAt: number, onSignal: (() => void) | null) {
    this.#clock = clock;
    this.context = context;
    this.seqno = seqno;
    this.signalAt = signalAt;
    this.#onSignal = onSignal;
  }

  /** The simulated clock the fence's signal time refers to. */
  get clock(): SimClock {
    return this.#clock;
  }

  /** Run the completion action (the copy the fence stands for) and mark signaled. */
  signalNow(): void {
    if (this.signaled) return;
    this.signaled = true;
    const fn = this.#onSignal;
    this.#onSignal = null;
    if (fn !== null) fn();
  }
}

/**
 * `dma_fence_init` + a completion time: signals by itself once the simulated clock reaches
 * `signalAt` (observed lazily by `dmaFenceIsSignaled` and the waits); -1 = only `dmaFenceSignal`.
 * `onSignal` runs exactly once, when the fence signals (e.g. the copy engine's last write).
 */
export function dmaFenceCreate(clock: SimClock, context: number, seqno: number, signalAt: number, onSignal: (() => void) | null = null): DmaFenceObject {
  return new DmaFenceObject(clock, context, seqno, signalAt, onSignal);
}

function isFence(f: unknown): f is DmaFenceObject {
  return f instanceof DmaFenceObject;
}

/** `dma_fence_signal(fence)`: 0, or -EINVAL if it had already signaled. */
export function dmaFenceSignal(fence: DmaFence): number {
  if (!isFence(fence) || fence.signaled) return -Errno.EINVAL;
  fence.signalNow();
  return 0;
}

/** `dma_fence_is_signaled(fence)` on the simulated clock. */
export function dmaFenceIsSignaled(fence: DmaFence): boolean {
  if (!isFence(fence)) return true;
  if (!fence.signaled && fence.signalAt >= 0 && fence.clock.now() >= fence.signalAt) fence.signalNow();
  return fence.signaled;
}

/**
 * `dma_fence_wait_timeout(fence, intr, timeout)`: time left (>= 1), 0 on timeout. A fence with no
 * signal time never completes by waiting: the model returns 0 at once instead of hanging.
 */
export function dmaFenceWaitTimeout(fence: DmaFence, _intr: boolean, timeoutNs: number): number {
  if (!isFence(fence) || dmaFenceIsSignaled(fence)) return Math.max(1, timeoutNs);
  if (fence.signalAt < 0) return 0;
  const clock = fence.clock;
  const wait = fence.signalAt - clock.now();
  if (timeoutNs !== MAX_SCHEDULE_TIMEOUT && wait > timeoutNs) {
    clock.charge(timeoutNs);
    return 0;
  }
  clock.advanceTo(fence.signalAt);
  fence.signalNow();
  return timeoutNs === MAX_SCHEDULE_TIMEOUT ? MAX_SCHEDULE_TIMEOUT : Math.max(1, timeoutNs - wait);
}

/** A fence in a reservation object with its usage (kernel: one entry of struct dma_resv_list). */
export interface ResvFence {
  readonly fence: DmaFenceObject;
  readonly usage: DmaResvUsage;
}

/** `struct dma_resv`. `dev` names the exporter in dma-debug reports; `clock` times the waits. */
export class DmaResvObject implements DmaResv {
  locked = false;
  lockOwner: string | null = null;
  readonly dev: Device;
  readonly fences: ResvFence[] = [];
  /** How often the lock was taken (for tests and benchmarks). */
  lockCount = 0;

  constructor(dev: Device) {
    this.dev = dev;
  }

  get fenceCount(): number {
    return this.fences.length;
  }

  /** The simulated clock of the device the object belongs to. */
  get clock(): SimClock {
    return this.dev.host.clock;
  }
}

/** `dma_resv_init(obj)`. */
export function dmaResvInit(dev: Device): DmaResvObject {
  return new DmaResvObject(dev);
}

/** True if x is a reservation object created by dmaResvInit(). */
export function isResv(x: unknown): x is DmaResvObject {
  return x instanceof DmaResvObject;
}

/**
 * `dma_resv_lock(obj, NULL)`: 0, or -EDEADLK when the lock is already held (one thread of
 * execution here: the kernel would deadlock or return -EALREADY for the same ww context).
 */
export function dmaResvLock(resv: DmaResv, owner = 'task'): number {
  if (!isResv(resv)) return -Errno.EINVAL;
  if (resv.locked) {
    resv.dev.host.dmaDebug.report('dmabuf-resv-deadlock', resv.dev, `dma_resv_lock: already held by ${resv.lockOwner ?? '?'} (${owner} would deadlock)`);
    return -Errno.EDEADLK;
  }
  resv.locked = true;
  resv.lockOwner = owner;
  resv.lockCount++;
  return 0;
}

/** `dma_resv_trylock(obj)`. */
export function dmaResvTrylock(resv: DmaResv, owner = 'task'): boolean {
  if (!isResv(resv) || resv.locked) return false;
  resv.locked = true;
  resv.lockOwner = owner;
  resv.lockCount++;
  return true;
}

/** `dma_resv_unlock(obj)`; unlocking a lock that is not held is reported. */
export function dmaResvUnlock(resv: DmaResv): void {
  if (!isResv(resv)) return;
  if (!resv.locked) {
    resv.dev.host.dmaDebug.report('dmabuf-resv-not-held', resv.dev, 'dma_resv_unlock: the lock is not held');
    return;
  }
  resv.locked = false;
  resv.lockOwner = null;
}

/** `dma_resv_is_locked(obj)`. */
export function dmaResvIsLocked(resv: DmaResv): boolean {
  return isResv(resv) && resv.locked;
}

/**
 * `dma_resv_assert_held(obj)` (lockdep): false and a dma-debug report naming `fn` and the device
 * that made the call when the lock is not held.
 */
export function dmaResvAssertHeld(resv: DmaResvObject, dev: Device, fn: string): boolean {
  if (resv.locked) return true;
  dev.host.dmaDebug.report('dmabuf-resv-not-held', dev, `${fn}: dma_resv_assert_held failed: the reservation lock is not held`);
  return false;
}

function prune(resv: DmaResvObject): void {
  const f = resv.fences;
  let j = 0;
  for (let i = 0; i < f.length; i++) {
    const e = f[i];
    if (e !== undefined && !dmaFenceIsSignaled(e.fence)) f[j++] = e;
  }
  f.length = j;
}

/** `dma_resv_add_fence(obj, fence, usage)`: resv held. Signaled fences are dropped on the way. */
export function dmaResvAddFence(resv: DmaResv, fence: DmaFence, usage: DmaResvUsage): number {
  if (!isResv(resv) || !isFence(fence)) return -Errno.EINVAL;
  if (!dmaResvAssertHeld(resv, resv.dev, 'dma_resv_add_fence')) return -Errno.EINVAL;
  prune(resv);
  resv.fences.push({ fence, usage });
  return 0;
}

/** `dma_resv_usage_rw(write)`: the usage a CPU/device access must wait for. */
export function dmaResvUsageRw(write: boolean): DmaResvUsage {
  // kernel: a writer waits for readers too (READ), a reader only for writers (WRITE).
  return write ? DmaResvUsage.READ : DmaResvUsage.WRITE;
}

/** `dma_resv_test_signaled(obj, usage)`: are all fences of `usage` or stricter signaled? */
export function dmaResvTestSignaled(resv: DmaResv, usage: DmaResvUsage): boolean {
  if (!isResv(resv)) return true;
  for (const e of resv.fences) if (e.usage <= usage && !dmaFenceIsSignaled(e.fence)) return false;
  return true;
}

/**
 * `dma_resv_wait_timeout(obj, usage, intr, timeout)`: time left (>= 1), 0 on timeout, -EINVAL
 * for a bad object. Waiting advances the simulated clock to the last fence's signal time.
 */
export function dmaResvWaitTimeout(resv: DmaResv, usage: DmaResvUsage, intr: boolean, timeoutNs: number): number {
  if (!isResv(resv)) return -Errno.EINVAL;
  if (!(typeof timeoutNs === 'number' && timeoutNs >= 0)) return -Errno.EINVAL;
  let left = timeoutNs;
  for (const e of resv.fences) {
    if (e.usage > usage) continue;
    const r = dmaFenceWaitTimeout(e.fence, intr, left);
    if (r <= 0) return r;
    left = r;
  }
  prune(resv);
  return Math.max(1, left);
}

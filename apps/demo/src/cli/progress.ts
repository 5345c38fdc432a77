/**
 * The CLI's progress line on stderr: shown only when stderr is a terminal, only once a run has
 * taken longer than `delayMs`, redrawn at most every `intervalMs`, and cleared at the end so the
 * table (or an error) starts on a clean line. Fed by the stack registry's `onProgress`.
 */

/** Where the line goes: process.stderr, or a fake in tests. */
export interface ProgressStream {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

export interface ProgressOptions {
  /** Text before the bar (e.g. the stack's name). */
  readonly label: string;
  /** Show nothing before the run has taken this long. Default 1000 ms. */
  readonly delayMs?: number;
  /** Minimum time between redraws. Default 100 ms. */
  readonly intervalMs?: number;
  /** Milliseconds clock. Default performance.now. */
  readonly now?: () => number;
}

export interface Progress {
  /** Report `done` of `total` units. */
  update(done: number, total: number): void;
  /** Clear the line if anything was drawn. Idempotent. */
  end(): void;
}

const BAR_WIDTH = 30;
/** Carriage return + "erase in line" (ECMA-48 EL 2): the whole line goes. */
const CLEAR_LINE = '\r\x1b[2K';

/** A progress line on `stream`, or a no-op when the stream is not a terminal. */
export function createProgress(stream: ProgressStream, opts: ProgressOptions): Progress {
  if (stream.isTTY !== true) return { update: () => undefined, end: () => undefined };
  const now = opts.now ?? (() => performance.now());
  const delayMs = opts.delayMs ?? 1000;
  const intervalMs = opts.intervalMs ?? 100;
  const t0 = now();
  let drawnAt = Number.NEGATIVE_INFINITY;
  let shown = false;
  let ended = false;
  return {
    update(done, total) {
      if (ended || !(total > 0)) return;
      const t = now();
      if (t - t0 < delayMs || (t - drawnAt < intervalMs && done < total)) return;
      drawnAt = t;
      shown = true;
      const frac = Math.min(1, Math.max(0, done / total));
      const filled = Math.round(frac * BAR_WIDTH);
      const line = `${opts.label} [${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${String(Math.floor(frac * 100)).padStart(3)}% ${done}/${total}`;
      const max = stream.columns !== undefined && stream.columns > 1 ? stream.columns - 1 : line.length;
      stream.write(`${CLEAR_LINE}${line.slice(0, max)}`);
    },
    end() {
      if (ended) return;
      ended = true;
      if (shown) stream.write(CLEAR_LINE);
    },
  };
}

/**
 * `--trace FILE`: checked for writability before the run (so a bad path is one line and exit 2,
 * not a stack trace after minutes of work), then every machine the stack builds records its
 * trace, and at the end they are written as one Chrome trace with a process per machine.
 */
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { toChromeTrace } from '@dmakit/dma-core';
import type { ChromeTraceEvent, Machine } from '@dmakit/dma-core';

/** The trace file cannot be opened or written: `message` is one line for the user. */
export class TraceFileError extends Error {
  override readonly name = 'TraceFileError';
}

const REASONS: Readonly<Record<string, string>> = {
  ENOENT: 'no such directory',
  ENOTDIR: 'a parent is not a directory',
  EISDIR: 'it is a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  EEXIST: 'file exists',
  ENAMETOOLONG: 'file name too long',
};

function reasonOf(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e.code === 'string') return REASONS[e.code] ?? e.code;
  return typeof e.message === 'string' ? (e.message.split('\n')[0] ?? 'unknown error') : 'unknown error';
}

export interface TraceRecorder {
  /** Pass as the registry's `onMachine`: starts recording that machine's trace. */
  readonly onMachine: (machine: Machine, role: string) => void;
  /** Write every recorded machine's events; returns the event and machine counts. */
  finish(): { readonly events: number; readonly machines: number };
  /** Close the file without writing (the run failed). */
  abort(): void;
}

/** Open `file` for writing now (throws TraceFileError); the returned recorder fills it later. */
export function openTraceFile(file: string): TraceRecorder {
  let fd: number;
  try {
    fd = openSync(file, 'w');
  } catch (err) {
    throw new TraceFileError(`cannot write trace file ${file}: ${reasonOf(err)}`);
  }
  const machines: { machine: Machine; role: string }[] = [];
  let closed = false;
  const close = (): void => {
    if (!closed) closeSync(fd);
    closed = true;
  };
  return {
    onMachine(machine, role) {
      machine.trace.record({ capacity: 1 << 20 });
      machines.push({ machine, role });
    },
    finish() {
      let events = 0;
      const traceEvents: ChromeTraceEvent[] = [];
      machines.forEach(({ machine, role }, i) => {
        const ev = machine.trace.events();
        events += ev.length;
        // One machine: the exporter's defaults (pid 1, "dmakit"); several: one named process each.
        const out = toChromeTrace(ev, machines.length === 1 ? {} : { pid: i + 1, processName: `dmakit ${role}` });
        for (const e of out.traceEvents) traceEvents.push(e);
      });
      const base = toChromeTrace([]);
      try {
        writeFileSync(fd, JSON.stringify({ ...base, traceEvents: machines.length === 0 ? base.traceEvents : traceEvents }));
      } catch (err) {
        throw new TraceFileError(`cannot write trace file ${file}: ${reasonOf(err)}`);
      } finally {
        close();
      }
      return { events, machines: machines.length };
    },
    abort: close,
  };
}

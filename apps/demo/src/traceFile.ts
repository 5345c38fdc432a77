import { toChromeTrace } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';

/** Start recording the machine's trace; the returned function writes a Chrome trace file. */
export function recordTrace(machine: Machine): (file: string, write: (file: string, data: string) => void) => number {
  machine.trace.record({ capacity: 1 << 20 });
  return (file, write) => {
    const events = machine.trace.events();
    const out = toChromeTrace(events);
    write(file, typeof out === 'string' ? out : JSON.stringify(out));
    return events.length;
  };
}

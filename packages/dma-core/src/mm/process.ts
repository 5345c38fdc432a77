// SKELETON: the mm room owner replaces this with address spaces, VMAs, faults and notifiers.
import type { SystemMemory } from '../mem/systemMemory.js';
import type { SimClock } from '../sim/clock.js';
import type { Trace } from '../trace/trace.js';

/** What a process needs of the machine. */
export interface ProcessHost {
  readonly memory: SystemMemory;
  readonly clock: SimClock;
  readonly trace: Trace;
}

export class Process {
  readonly pid: number;
  readonly host: ProcessHost;

  constructor(host: ProcessHost, pid: number) {
    this.host = host;
    this.pid = pid;
  }
}

// kernel: kernel/fork.c (dup_mm), kernel/exit.c (exit_mm -> mmput -> exit_mmap)
import type { SystemMemory } from '../mem/systemMemory.js';
import type { SimClock } from '../sim/clock.js';
import type { Trace } from '../trace/trace.js';
import { MmStruct } from './mmStruct.js';

declare module './mmStruct.js' {
  // An mm's owner is this Process (see the forward declaration in mmStruct.ts).
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type -- completes a forward declaration
  interface MmOwner extends Process {}
}

/** What a process needs of the machine. */
export interface ProcessHost {
  readonly memory: SystemMemory;
  readonly clock: SimClock;
  readonly trace: Trace;
}

/** pids handed out by fork() when the host cannot create processes itself. */
const forkPids = new WeakMap<ProcessHost, number>();

/** A user process: a pid and an address space. */
export class Process {
  readonly pid: number;
  readonly host: ProcessHost;
  readonly mm: MmStruct;

  constructor(host: ProcessHost, pid: number) {
    this.host = host;
    this.pid = pid;
    this.mm = new MmStruct(host.memory, this);
  }

  /** True once the process has exited. */
  get exited(): boolean {
    return this.mm.exited;
  }

  /**
   * `fork()`: a child whose address space is a copy-on-write copy of this one. The child comes
   * from the host's `createProcess()` when it has one (the Machine does), so pids stay unique.
   * Returns the child, or a negative errno (-ENOMEM) if copying failed.
   */
  fork(): Process | number {
    const maker = (this.host as ProcessHost & { createProcess?: () => Process }).createProcess;
    let child: Process;
    if (typeof maker === 'function') child = maker.call(this.host);
    else {
      const pid = forkPids.get(this.host) ?? 1_000_000;
      forkPids.set(this.host, pid + 1);
      child = new Process(this.host, pid);
    }
    const r = this.mm.dupInto(child.mm);
    return r < 0 ? r : child;
  }

  /** Process exit: mmu notifiers get MMU_NOTIFY_RELEASE, then every mapping is torn down. */
  exit(): void {
    this.mm.exitMmap();
  }
}

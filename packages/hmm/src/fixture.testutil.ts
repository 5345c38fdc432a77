// Shared setup for the tests (not part of the public surface; imported by *.test.ts only).
import { createMachine, MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, SZ_1M } from '@dmakit/dma-core';
import type { Machine, Process } from '@dmakit/dma-core';
import { DmirrorDevice } from '@dmakit/hmm';
import type { Dmirror } from '@dmakit/hmm';

export interface Fixture {
  machine: Machine;
  mdev: DmirrorDevice;
  proc: Process;
  mirror: Dmirror;
}

export function setup(opts: { devmemBytes?: number; coherent?: boolean; dmaMaskBits?: number; ramBytes?: number; name?: string; dmaDebug?: 'strict' | 'warn' } = {}): Fixture {
  const machine = createMachine({ ramBytes: opts.ramBytes ?? 256 * SZ_1M, dmaDebug: opts.dmaDebug ?? 'strict' });
  const mdev = addDmirror(machine, opts.name ?? 'dmirror0', opts);
  const proc = machine.createProcess();
  const mirror = mdev.open(proc.mm);
  return { machine, mdev, proc, mirror };
}

export function addDmirror(machine: Machine, name: string, opts: { devmemBytes?: number; coherent?: boolean; dmaMaskBits?: number } = {}): DmirrorDevice {
  const dev = machine.pci.addDevice({ name, dmaMaskBits: opts.dmaMaskBits ?? 64, coherent: opts.coherent ?? true });
  const mdev = DmirrorDevice.create({ dev, memory: machine.memory, devmemBytes: opts.devmemBytes ?? 4 * SZ_1M, name });
  if (typeof mdev === 'number') throw new Error(`DmirrorDevice.create: ${mdev}`);
  return mdev;
}

export function mmapAnon(proc: Process, npages: number, prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS): number {
  const addr = proc.mm.mmap({ length: npages * PAGE_SIZE, prot, flags });
  if (addr < 0) throw new Error(`mmap: ${addr}`);
  return addr;
}

/** Page p, word w holds (p * 1024 + w) * sign, as hmm-tests' int patterns. */
export function pattern(npages: number, sign = 1, seed = 0): Uint8Array {
  const b = new Uint8Array(npages * PAGE_SIZE);
  const v = new Int32Array(b.buffer);
  for (let i = 0; i < v.length; i++) v[i] = sign * (i + seed);
  return b;
}

/** Fast byte equality (vitest's deep equality walks typed arrays element by element). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

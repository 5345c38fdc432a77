/**
 * Test fixture of @dmakit/hmm (not shipped: src/testing/ is excluded from the build and the
 * tarball): a machine with the dmirror test device (lib/test_hmm.c) opened by a process, and the
 * buffers and int patterns of tools/testing/selftests/mm/hmm-tests.c. Helpers other packages need
 * too (byte compare, anonymous mmap) come from @dmakit/testkit.
 */
import { createMachine, MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, SZ_1M, openTmpfile } from '@dmakit/dma-core';
import type { Machine, Process, VfsFile } from '@dmakit/dma-core';
import { DmirrorDevice } from '@dmakit/hmm';
import type { Dmirror } from '@dmakit/hmm';
import { mmapAnon } from '@dmakit/testkit';
import { expect } from 'vitest';

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

/** hmm-tests' `mmap(NULL, npages << PAGE_SHIFT, prot, flags, -1, 0)`, counted in pages. */
export function mmapPages(proc: Process, npages: number, prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS): number {
  return mmapAnon(proc, npages * PAGE_SIZE, { prot, flags });
}

/** Page p, word w holds (p * 1024 + w) * sign, as hmm-tests' int patterns. */
export function intPattern(npages: number, sign = 1, seed = 0): Uint8Array {
  const b = new Uint8Array(npages * PAGE_SIZE);
  const v = new Int32Array(b.buffer);
  for (let i = 0; i < v.length; i++) v[i] = sign * (i + seed);
  return b;
}

/**
 * hmm-tests' `hmm_create_file(size)`: `open("/tmp", O_TMPFILE | O_EXCL | O_RDWR, 0600)` then
 * `ftruncate(fd, size)`: an unnamed tmpfs file that goes away with its last reference.
 */
export function hmmCreateFile(machine: Machine, size: number): VfsFile {
  const f = openTmpfile(machine.memory, { name: 'hmm_create_file' });
  if (typeof f === 'number') throw new Error(`openTmpfile: ${f}`);
  const r = f.ftruncate(size);
  if (r !== 0) throw new Error(`ftruncate: ${r}`);
  return f;
}

/**
 * The common opening of hmm-tests' device-private cases: an anonymous buffer of `npages` filled
 * with the int pattern, migrated to the device whole (every page moved, bytes intact).
 */
export function migratedAnonBuffer(f: Fixture, npages: number): { ptr: number; data: Uint8Array } {
  const ptr = mmapPages(f.proc, npages);
  const data = intPattern(npages);
  f.proc.mm.write(ptr, data);
  const m = f.mirror.migrateToDevice(ptr, npages);
  expect(m.ret).toBe(0);
  expect(m.cpages).toBe(npages);
  expect(m.data.length === data.length && m.data.every((b, i) => b === data[i])).toBe(true);
  return { ptr, data };
}

/** HMM_BUFFER_SIZE of hmm-tests.c (1024 << 12 bytes), in pages. */
export const HMM_BUFFER_PAGES = (1024 << 12) / PAGE_SIZE;

/**
 * FIXTURE_TEARDOWN and the leak checks after it: close the mirror, exit the process; no DMA
 * mapping and no device page is left behind, and, given the allocator's `baseline`, no system page.
 */
export function leakFree(f: Fixture, baseline?: number): void {
  f.mirror.close();
  f.proc.exit();
  expect(f.machine.dmaDebug.entries).toBe(0);
  expect(f.mdev.devicePagesInUse).toBe(0);
  if (baseline !== undefined) expect(f.machine.memory.allocatedPageCount).toBe(baseline);
}

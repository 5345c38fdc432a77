/**
 * Test helper of @dmakit/hmm (not shipped): the HMM mirror property, shared by hmm.property.test.ts
 * and the seeded soak (tools/soak), which runs it with fresh seeds:
 * `fc.check(hmmMirrorProperty(), { seed, numRuns })`. A broken invariant throws (vitest's
 * `expect`, which also runs outside the test runner).
 */
import fc from 'fast-check';
import { expect } from 'vitest';
import { MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE, SZ_2M } from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';
import { setup } from './fixture.js';

const NPAGES = 16;
const BASE = 0x4000_0000 + SZ_2M - 8 * PAGE_SIZE; // straddles two 2 MiB mirror chunks

type Op =
  | { k: 'cpuW'; p: number; v: number }
  | { k: 'cpuR'; p: number }
  | { k: 'devW'; p: number; v: number }
  | { k: 'devR'; p: number }
  | { k: 'unmap'; p: number }
  | { k: 'remap'; p: number }
  | { k: 'prot'; p: number; prot: number }
  | { k: 'toDev'; p: number; n: number }
  | { k: 'toSys'; p: number; n: number }
  | { k: 'fork'; p: number; v: number }
  | { k: 'excl'; p: number }
  | { k: 'race'; p: number; what: 'unmap' | 'ro' | 'cpuW'; v: number };

const page = fc.integer({ min: 0, max: NPAGES - 1 });
const val = fc.integer({ min: 1, max: 255 });
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constant('cpuW' as const), p: page, v: val }),
  fc.record({ k: fc.constant('cpuR' as const), p: page }),
  fc.record({ k: fc.constant('devW' as const), p: page, v: val }),
  fc.record({ k: fc.constant('devR' as const), p: page }),
  fc.record({ k: fc.constant('unmap' as const), p: page }),
  fc.record({ k: fc.constant('remap' as const), p: page }),
  fc.record({ k: fc.constant('prot' as const), p: page, prot: fc.constantFrom(PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE) }),
  fc.record({ k: fc.constant('toDev' as const), p: page, n: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ k: fc.constant('toSys' as const), p: page, n: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ k: fc.constant('fork' as const), p: page, v: val }),
  fc.record({ k: fc.constant('excl' as const), p: page }),
  fc.record({ k: fc.constant('race' as const), p: page, what: fc.constantFrom('unmap' as const, 'ro' as const, 'cpuW' as const), v: val }),
);

function fillPage(v: number): Uint8Array {
  return new Uint8Array(PAGE_SIZE).fill(v);
}

/** What the interleavings exercised, summed over every run of the property (the test checks it reached every path). */
export interface HmmMirrorCoverage {
  devReads: number;
  toDevice: number;
  devmemFaults: number;
  invalidations: number;
  readRetries: number;
}

/**
 * Under any interleaving of device faults, CPU accesses, munmap, mprotect, fork, migration to and
 * from device memory, device-exclusive access and the CPU racing hmm_range_fault (the mmu
 * notifier sequence protocol), the device never maps a page the CPU does not map (no DMA_MAPPED
 * word without a live mapping), every byte read is the last byte written, and nothing leaks
 * (dma-debug entries, device pages, allocated pages). `seen` accumulates what was exercised.
 */
export function hmmMirrorProperty(seen: HmmMirrorCoverage = { devReads: 0, toDevice: 0, devmemFaults: 0, invalidations: 0, readRetries: 0 }) {
  return fc.property(fc.array(op, { minLength: 1, maxLength: 40 }), (ops) => {
    const f = setup({ dmaDebug: 'warn', devmemBytes: 64 * PAGE_SIZE });
    const mm = f.proc.mm;
    const mem = f.machine.memory;
    expect(mem.zeroPagePhys).toBeGreaterThan(0);
    const baseline = mem.allocatedPageCount;
    expect(mm.mmap({ addr: BASE, length: NPAGES * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED })).toBe(BASE);
    const mapped = new Array<boolean>(NPAGES).fill(true);
    const prot = new Array<number>(NPAGES).fill(PROT_READ | PROT_WRITE);
    const expected = new Array<number>(NPAGES).fill(0);
    const at = (p: number): number => BASE + p * PAGE_SIZE;
    for (const o of ops) {
      const p = o.p;
      const readable = mapped[p] === true && (prot[p] ?? 0) !== PROT_NONE;
      const writable = mapped[p] === true && ((prot[p] ?? 0) & PROT_WRITE) !== 0;
      switch (o.k) {
        case 'cpuW':
          if (writable) {
            mm.write(at(p), fillPage(o.v));
            expected[p] = o.v;
          }
          break;
        case 'cpuR':
          if (readable) expect(mm.read(at(p), 1)[0]).toBe(expected[p]);
          break;
        case 'devW': {
          const r = f.mirror.write(at(p), fillPage(o.v));
          expect(r.ret === 0).toBe(writable);
          if (r.ret === 0) expected[p] = o.v;
          break;
        }
        case 'devR': {
          const r = f.mirror.read(at(p), 1);
          expect(r.ret === 0).toBe(readable);
          if (r.ret === 0) {
            expect(r.data[PAGE_SIZE - 1]).toBe(expected[p]);
            seen.devReads++;
          }
          break;
        }
        case 'unmap':
          expect(mm.munmap(at(p), PAGE_SIZE)).toBe(0);
          mapped[p] = false;
          break;
        case 'remap':
          if (mapped[p] !== true) {
            expect(mm.mmap({ addr: at(p), length: PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED })).toBe(at(p));
            mapped[p] = true;
            prot[p] = PROT_READ | PROT_WRITE;
            expected[p] = 0;
          }
          break;
        case 'prot':
          if (mapped[p] === true) {
            expect(mm.mprotect(at(p), PAGE_SIZE, o.prot)).toBe(0);
            prot[p] = o.prot;
          }
          break;
        case 'toDev':
        case 'toSys': {
          const n = Math.min(o.n, NPAGES - p);
          const r = o.k === 'toDev' ? f.mirror.migrateToDevice(at(p), n) : f.mirror.migrateToSystem(at(p), n);
          expect(r.ret === 0 || r.ret === -22 || r.ret === -2).toBe(true);
          break;
        }
        case 'race': {
          // The CPU acts between hmm_range_fault and the driver lock (the notifier race).
          const hook = { fired: false };
          f.mirror.afterRangeFault = () => {
            if (hook.fired) return;
            hook.fired = true;
            if (o.what === 'unmap') {
              mm.munmap(at(p), PAGE_SIZE);
              mapped[p] = false;
            } else if (o.what === 'ro') {
              mm.mprotect(at(p), PAGE_SIZE, PROT_READ);
              prot[p] = PROT_READ;
            } else if (writable) {
              mm.write(at(p), fillPage(o.v));
              expected[p] = o.v;
            }
          };
          const r = f.mirror.read(at(p), 1);
          f.mirror.afterRangeFault = undefined;
          const ok = readable && !(hook.fired && o.what === 'unmap');
          expect(r.ret === 0).toBe(ok);
          if (r.ret === 0) expect(r.data[0]).toBe(expected[p]);
          break;
        }
        case 'excl': {
          const r = f.mirror.exclusive(at(p), 1);
          expect(r.ret === 0).toBe(writable);
          if (r.ret === 0) expect(r.data[0]).toBe(expected[p]);
          break;
        }
        case 'fork': {
          const child = f.proc.fork() as Process;
          if (writable) child.mm.write(at(p), fillPage(o.v));
          if (readable) expect(child.mm.read(at(p), 1)[0]).toBe(writable ? o.v : expected[p]);
          child.exit();
          break;
        }
      }
      expect(f.mirror.checkInvariants()).toEqual([]);
    }
    for (let p = 0; p < NPAGES; p++) {
      if (mapped[p] === true && (prot[p] ?? 0) !== PROT_NONE) expect(mm.read(at(p), 1)[0]).toBe(expected[p]);
    }
    seen.toDevice += f.mirror.stats.migratedToDevice;
    seen.devmemFaults += f.mirror.stats.devmemFaults;
    seen.invalidations += f.mirror.stats.invalidations;
    seen.readRetries += f.mirror.stats.readRetries;
    f.mirror.close();
    f.proc.exit();
    expect(f.machine.dmaDebug.entries).toBe(0);
    expect(f.machine.dmaDebug.reports.filter((r) => !r.rule.startsWith('cacheline-overlap')).map((r) => r.message)).toEqual([]);
    expect(f.mdev.devicePagesInUse).toBe(0);
    expect(mem.allocatedPageCount).toBe(baseline);
  });
}

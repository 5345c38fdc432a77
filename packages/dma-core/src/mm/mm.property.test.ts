import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  Errno,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  PTE_PRESENT,
  PTE_ZERO,
  SegvError,
  createMachine,
} from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';

/** Reference model: per process, per page: protection and a backing cell (shared cells are shared). */
interface Cell {
  bytes: Uint8Array;
}
interface RefPage {
  prot: number;
  cell: Cell;
  shared: boolean;
}
interface RefProc {
  proc: Process;
  pages: Map<number, RefPage>;
}

const W = 0x1000_0000;
const NPAGES = 6;
// Biased towards read-write so COW and sharing get exercised.
const PROTS = [PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE];

const opArb = fc.oneof(
  { arbitrary: fc.record({ k: fc.constant('mmap' as const), p: fc.nat(), idx: fc.nat(NPAGES - 1), n: fc.integer({ min: 1, max: NPAGES }), prot: fc.nat(4), shared: fc.boolean() }), weight: 2 },
  fc.record({ k: fc.constant('munmap' as const), p: fc.nat(), idx: fc.nat(NPAGES - 1), n: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ k: fc.constant('mprotect' as const), p: fc.nat(), idx: fc.nat(NPAGES - 1), n: fc.integer({ min: 1, max: 3 }), prot: fc.nat(4) }),
  { arbitrary: fc.record({ k: fc.constant('write' as const), p: fc.nat(), idx: fc.nat(NPAGES - 1), off: fc.nat(PAGE_SIZE - 8), v: fc.integer({ min: 1, max: 255 }) }), weight: 4 },
  { arbitrary: fc.record({ k: fc.constant('read' as const), p: fc.nat(), idx: fc.nat(NPAGES - 1), off: fc.nat(PAGE_SIZE - 8) }), weight: 2 },
  fc.record({ k: fc.constant('fork' as const), p: fc.nat() }),
  fc.record({ k: fc.constant('exit' as const), p: fc.nat() }),
);

describe('mm property: CPU view equals a reference model', () => {
  it('random mmap/munmap/mprotect/write/read/fork/exit', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 10, maxLength: 80 }), (ops) => {
        const m = createMachine({ ramBytes: 64 * 1024 * 1024, swiotlbBytes: 0 });
        expect(m.memory.zeroPagePhys).toBeGreaterThan(0);
        const base = m.memory.stats().allocatedPages;
        const procs: RefProc[] = [{ proc: m.createProcess(), pages: new Map() }];
        const pick = (i: number): RefProc => {
          const r = procs[i % procs.length];
          if (r === undefined) throw new Error('no process');
          return r;
        };
        for (const op of ops) {
          const rp = pick(op.p);
          const mm = rp.proc.mm;
          switch (op.k) {
            case 'mmap': {
              const n = Math.min(op.n, NPAGES - op.idx);
              const prot = PROTS[op.prot] ?? PROT_NONE;
              const addr = mm.mmap({ length: n * PAGE_SIZE, prot, flags: (op.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED, addr: W + op.idx * PAGE_SIZE });
              expect(addr).toBe(W + op.idx * PAGE_SIZE);
              for (let i = 0; i < n; i++) rp.pages.set(op.idx + i, { prot, cell: { bytes: new Uint8Array(PAGE_SIZE) }, shared: op.shared });
              break;
            }
            case 'munmap': {
              const n = Math.min(op.n, NPAGES - op.idx);
              expect(mm.munmap(W + op.idx * PAGE_SIZE, n * PAGE_SIZE)).toBe(0);
              for (let i = 0; i < n; i++) rp.pages.delete(op.idx + i);
              break;
            }
            case 'mprotect': {
              const n = Math.min(op.n, NPAGES - op.idx);
              const prot = PROTS[op.prot] ?? PROT_NONE;
              let all = true;
              for (let i = 0; i < n; i++) if (!rp.pages.has(op.idx + i)) all = false;
              const r = mm.mprotect(W + op.idx * PAGE_SIZE, n * PAGE_SIZE, prot);
              expect(r).toBe(all ? 0 : -Errno.ENOMEM);
              if (all) for (let i = 0; i < n; i++) {
                const pg = rp.pages.get(op.idx + i);
                if (pg !== undefined) pg.prot = prot;
              }
              break;
            }
            case 'write': {
              const pg = rp.pages.get(op.idx);
              const data = Uint8Array.of(op.v, op.v ^ 0xff, op.v);
              const addr = W + op.idx * PAGE_SIZE + op.off;
              if (pg === undefined || (pg.prot & PROT_WRITE) === 0) {
                expect(() => {
                  mm.write(addr, data);
                }).toThrow(SegvError);
              } else {
                mm.write(addr, data);
                pg.cell.bytes.set(data, op.off);
              }
              break;
            }
            case 'read': {
              const pg = rp.pages.get(op.idx);
              const addr = W + op.idx * PAGE_SIZE + op.off;
              if (pg === undefined || pg.prot === PROT_NONE) {
                expect(() => mm.read(addr, 8)).toThrow(SegvError);
              } else {
                expect([...mm.read(addr, 8)]).toEqual([...pg.cell.bytes.subarray(op.off, op.off + 8)]);
              }
              break;
            }
            case 'fork': {
              if (procs.length >= 4) break;
              const child = rp.proc.fork();
              if (typeof child === 'number') throw new Error('fork failed');
              const pages = new Map<number, RefPage>();
              for (const [k, pg] of rp.pages) {
                pages.set(k, { prot: pg.prot, shared: pg.shared, cell: pg.shared ? pg.cell : { bytes: pg.cell.bytes.slice() } });
              }
              procs.push({ proc: child, pages });
              break;
            }
            case 'exit': {
              if (procs.length <= 1) break;
              rp.proc.exit();
              procs.splice(procs.indexOf(rp), 1);
              break;
            }
          }
          // No page is freed while mapped.
          for (const r of procs) {
            r.proc.mm.forEachPte((_addr, pfn, flags) => {
              if ((flags & PTE_PRESENT) === 0 || (flags & PTE_ZERO) !== 0) return;
              const info = m.memory.pageInfo(pfn * PAGE_SIZE);
              expect(info.allocated).toBe(true);
              expect(info.refcount).toBeGreaterThan(0);
            });
          }
        }
        // Every byte of every process matches the model at the end.
        for (const r of procs) {
          for (const [k, pg] of r.pages) {
            if (pg.prot === PROT_NONE) continue;
            expect([...r.proc.mm.read(W + k * PAGE_SIZE, PAGE_SIZE)]).toEqual([...pg.cell.bytes]);
          }
        }
        for (const r of procs) r.proc.exit();
        expect(m.memory.stats().allocatedPages).toBe(base);
      }),
      { numRuns: 300 },
    );
  });
});

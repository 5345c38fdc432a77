/**
 * Bounded fail_nth sweeps over every demo stack (the full sweep is `pnpm failnth`): each stack's
 * sites are counted, then up to a cap of them (every site kind at least three times) are failed
 * one at a time; every run must end cleanly. Caps keep the file near 40 s on a loaded 2-core box.
 */
import { describe, expect, it } from 'vitest';
import { getStack, StackUsageError } from '../stacks/index.js';
import { failNthSweep, formatFailNthTable, sweepSelection } from './sweep.js';
import type { FailNthRow } from './sweep.js';

const CAPS: readonly (readonly [string, number])[] = [
  ['direct', 7],
  ['nvme', 16],
  ['rdma-odp', 12],
  ['vfio-migration', 4],
  ['dmabuf-p2p', 18],
  ['gpu-svm', 45],
  ['cc-guest', 16],
];

describe('fail_nth sweep over every stack (bounded)', () => {
  const rows: FailNthRow[] = [];
  it.each(CAPS)('%s: every failed site surfaces at the edge, leaks nothing, corrupts nothing', (name, cap) => {
    const def = getStack(name);
    expect(def).toBeDefined();
    if (def === undefined) return;
    const row = failNthSweep(def, { maxRuns: cap });
    rows.push(row);
    expect(row.sites).toBeGreaterThan(0);
    expect(row.runs).toBe(Math.min(cap, row.sites));
    expect(row.findings).toEqual([]);
    expect({ leaks: row.leaks, corruptions: row.corruptions, exceptions: row.exceptions, clean: row.clean }).toEqual({ leaks: 0, corruptions: 0, exceptions: 0, clean: row.runs });
    // Most failures reach the stack's edge as an errno or status; the rest are recovered from.
    expect(row.reported).toBeGreaterThan(0);
  }, 60_000);

  it('prints one table row per stack', () => {
    const table = formatFailNthTable(rows);
    expect(table.split('\n')[0]).toMatch(/^stack\s+sites\s+runs\s+clean\s+reported\s+leaks\s+corruptions\s+exceptions$/);
    expect(table.split('\n')).toHaveLength(rows.length + 1);
  });
});

describe('the failNth plan of a run request', () => {
  it('arms only the planned machine and is checked like every option (StackUsageError, one line)', () => {
    const def = getStack('direct');
    if (def === undefined) throw new Error('direct');
    expect(() => def.run({ seed: 1, failNth: { nth: 0 } })).toThrow(StackUsageError);
    expect(() => def.run({ seed: 1, failNth: { nth: 1.5 } })).toThrow(/--fail-nth must be an integer >= 1, got 1.5/);
    expect(() => def.run({ seed: 1, failNth: { nth: 1, machine: -1 } })).toThrow(/--fail-nth-machine/);
    const r = def.run({ seed: 1, failNth: { nth: 1 } });
    expect(r.failure).toEqual({ step: 'stream TO_DEVICE (dma-direct)', error: '-ENOMEM (alloc_pages)', dataIntact: true });
    // A plan for a machine the stack never creates arms nothing.
    expect(def.run({ seed: 1, failNth: { nth: 1, machine: 5 } }).failure).toBeUndefined();
  });
});

describe('sweepSelection', () => {
  it('reruns every call when uncapped, and a capped sweep still covers every site kind', () => {
    const seq = [...Array.from({ length: 100 }, () => 'alloc_pages'), 'dmabuf_attach', ...Array.from({ length: 100 }, () => 'iova')];
    expect(sweepSelection(seq)).toHaveLength(201);
    const picked = sweepSelection(seq, 10);
    expect(picked).toHaveLength(10);
    expect(sweepSelection(seq, 3)).toHaveLength(3);
    expect(picked).toContain(101); // the only dmabuf_attach call
    expect(new Set(picked.map((p) => seq[p - 1]))).toEqual(new Set(['alloc_pages', 'dmabuf_attach', 'iova']));
    expect([...picked].sort((a, b) => a - b)).toEqual(picked);
  });
});

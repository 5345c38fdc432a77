import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Errno } from '@dmakit/dma-core';
import {
  VFIO_DEVICE_NUM_STATES,
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
  VfioDeviceMigState as S,
  vfioMigArcIsLegal,
  vfioMigGetNextState,
  vfioMigLegalArcs,
  vfioMigPath,
  vfioMigStateSupported,
} from './index.js';

const FLAG_SETS = [
  VFIO_MIGRATION_STOP_COPY,
  VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
];
const STATES = Array.from({ length: VFIO_DEVICE_NUM_STATES }, (_, i) => i);

/** Shortest distance over the legal arcs (BFS), -1 if unreachable. */
function bfs(flags: number, from: number, to: number): number {
  const arcs = vfioMigLegalArcs(flags);
  const dist = new Map<number, number>([[from, 0]]);
  const q = [from];
  while (q.length > 0) {
    const s = q.shift() ?? 0;
    if (s === to) return dist.get(s) ?? -1;
    for (const [a, b] of arcs) {
      if (a === s && !dist.has(b)) {
        dist.set(b, (dist.get(s) ?? 0) + 1);
        q.push(b);
      }
    }
  }
  return -1;
}

/** Pairs the kernel table refuses although a path exists: STOP_COPY may not reach pre-copy. */
function refused(from: number, to: number): boolean {
  return from === S.STOP_COPY && (to === S.PRE_COPY || to === S.PRE_COPY_P2P);
}

describe('vfio_mig_get_next_state: the full transition table', () => {
  for (const flags of FLAG_SETS) {
    it(`every from/to pair with migration flags 0x${flags.toString(16)}`, () => {
      for (const from of STATES) {
        for (const to of STATES) {
          const path = vfioMigPath(flags, from, to);
          const fromOk = vfioMigStateSupported(flags, from);
          const toOk = vfioMigStateSupported(flags, to);
          if (!fromOk || !toOk || from === S.ERROR || to === S.ERROR || refused(from, to)) {
            if (from !== to) expect(path, `${from}->${to}`).toBe(-Errno.EINVAL);
            continue;
          }
          expect(Array.isArray(path), `${from}->${to}`).toBe(true);
          if (!Array.isArray(path)) continue;
          // Only legal single arcs, only supported states, ends at the target, shortest.
          let s = from;
          for (const n of path) {
            expect(vfioMigArcIsLegal(flags, s, n), `${from}->${to}: arc ${s}->${n}`).toBe(true);
            expect(vfioMigStateSupported(flags, n)).toBe(true);
            s = n;
          }
          expect(s).toBe(to);
          expect(path.length, `${from}->${to}`).toBe(bfs(flags, from, to));
        }
      }
    });
  }

  it('spot checks against the kernel table', () => {
    const all = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;
    expect(vfioMigPath(all, S.RUNNING, S.STOP_COPY)).toEqual([S.RUNNING_P2P, S.STOP, S.STOP_COPY]);
    expect(vfioMigPath(all, S.PRE_COPY, S.STOP_COPY)).toEqual([S.PRE_COPY_P2P, S.STOP_COPY]);
    expect(vfioMigPath(all, S.RESUMING, S.RUNNING)).toEqual([S.STOP, S.RUNNING_P2P, S.RUNNING]);
    expect(vfioMigPath(all, S.RESUMING, S.PRE_COPY)).toEqual([S.STOP, S.RUNNING_P2P, S.RUNNING, S.PRE_COPY]);
    expect(vfioMigPath(all, S.RUNNING, S.PRE_COPY_P2P)).toEqual([S.RUNNING_P2P, S.PRE_COPY_P2P]);
    expect(vfioMigPath(VFIO_MIGRATION_STOP_COPY, S.RUNNING, S.STOP_COPY)).toEqual([S.STOP, S.STOP_COPY]);
    expect(vfioMigPath(VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY, S.PRE_COPY, S.STOP_COPY)).toEqual([S.STOP_COPY]);
    expect(vfioMigGetNextState(all, S.STOP_COPY, S.PRE_COPY)).toBe(-Errno.EINVAL);
    expect(vfioMigGetNextState(all, S.RUNNING, S.ERROR)).toBe(-Errno.EINVAL);
    expect(vfioMigGetNextState(VFIO_MIGRATION_STOP_COPY, S.RUNNING, S.RUNNING_P2P)).toBe(-Errno.EINVAL);
    expect(vfioMigGetNextState(all, 8, S.STOP)).toBe(-Errno.EINVAL);
    expect(vfioMigGetNextState(all, S.STOP, -1)).toBe(-Errno.EINVAL);
  });

  it('property: any sequence of requests walks only legal arcs, each request along a shortest path', () => {
    fc.assert(
      fc.property(fc.constantFrom(...FLAG_SETS), fc.array(fc.integer({ min: -1, max: 8 }), { maxLength: 30 }), (flags, requests) => {
        let cur: number = S.RUNNING;
        for (const req of requests) {
          const path = vfioMigPath(flags, cur, req);
          if (!Array.isArray(path)) continue; // refused: state unchanged
          expect(path.length).toBe(bfs(flags, cur, req));
          for (const n of path) {
            expect(vfioMigArcIsLegal(flags, cur, n)).toBe(true);
            cur = n;
          }
          expect(cur).toBe(req);
        }
      }),
      { numRuns: 300 },
    );
  });
});

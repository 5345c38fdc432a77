import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EventScheduler, SimClock } from '../index.js';
import type { SimTimer } from '../index.js';

describe('EventScheduler', () => {
  it('runs events by due time, ties in scheduling order, skipping cancelled ones (reference model)', () => {
    // Each step schedules an event (delay) or cancels an earlier one (index), at a random point in
    // a run that also advances time in slices; the order must equal sorting the survivors.
    const step = fc.oneof(
      fc.record({ kind: fc.constant('schedule' as const), delay: fc.integer({ min: 0, max: 50 }) }),
      fc.record({ kind: fc.constant('cancel' as const), which: fc.nat() }),
      fc.record({ kind: fc.constant('advance' as const), ns: fc.integer({ min: 0, max: 30 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 120 }), (steps) => {
        const clock = new SimClock();
        const s = new EventScheduler(clock);
        const ran: number[] = [];
        const timers: { id: number; due: number; timer: SimTimer; cancelled: boolean; ran: boolean }[] = [];
        const expected: number[] = [];
        for (const st of steps) {
          if (st.kind === 'schedule') {
            const id = timers.length;
            const t = { id, due: clock.now() + st.delay, cancelled: false, ran: false, timer: s.schedule(st.delay, () => { ran.push(id); t.ran = true; }) };
            timers.push(t);
          } else if (st.kind === 'cancel') {
            const t = timers[st.which % Math.max(1, timers.length)];
            if (t !== undefined && !t.ran) {
              t.timer.cancel();
              t.cancelled = true;
              expect(t.timer.pending).toBe(false);
            }
          } else {
            // Reference: survivors due within the slice, by (due, id).
            const end = clock.now() + st.ns;
            const due = timers.filter((t) => !t.cancelled && !t.ran && !expected.includes(t.id) && t.due <= end);
            due.sort((a, b) => a.due - b.due || a.id - b.id);
            expected.push(...due.map((t) => t.id));
            s.advance(st.ns);
            expect(clock.now()).toBe(end);
          }
          expect(s.pendingCount).toBe(timers.filter((t) => !t.cancelled && !t.ran).length);
        }
        const rest = timers.filter((t) => !t.cancelled && !t.ran);
        rest.sort((a, b) => a.due - b.due || a.id - b.id);
        expected.push(...rest.map((t) => t.id));
        s.runUntilIdle();
        expect(ran).toEqual(expected);
        expect(s.pendingCount).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('a cancelled event leaves the queue at once: arming and cancelling a long timer per step keeps it small', () => {
    const clock = new SimClock();
    const s = new EventScheduler(clock);
    let ran = 0;
    for (let i = 0; i < 10_000; i++) {
      const timeout = s.schedule(30e9, () => { throw new Error('a cancelled timeout ran'); });
      s.schedule(1000, () => { ran++; });
      expect(s.pendingCount).toBe(2);
      s.advance(1000);
      timeout.cancel();
      expect(s.pendingCount).toBe(0);
    }
    expect(ran).toBe(10_000);
    expect(clock.now()).toBe(10_000 * 1000);
  });

  it('cancel is idempotent and ignores timers of another scheduler', () => {
    const a = new EventScheduler(new SimClock());
    const b = new EventScheduler(new SimClock());
    let n = 0;
    const t = a.schedule(5, () => { n++; });
    b.cancel(t);
    expect(t.pending).toBe(true);
    t.cancel();
    t.cancel();
    a.cancel(t);
    expect(a.pendingCount).toBe(0);
    a.runUntilIdle();
    expect(n).toBe(0);
  });
});

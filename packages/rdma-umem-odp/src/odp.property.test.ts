/**
 * Property tests over random interleavings of RDMA traffic, CPU writes, munmap/remap, mprotect,
 * fork with the child writing, prefetch and invalidations raced into the fault path:
 * - no stale mapping: every byte the HCA moves goes to or from the page the CPU maps at that
 *   virtual address right now (and a write only to a page the CPU may write: never into a page
 *   still shared copy-on-write with a forked child);
 * - the bytes: the process sees exactly what the model says (CPU writes, RDMA writes, zeroes after
 *   a remap), the forked child keeps its own copy;
 * - nothing leaks: after deregistration and exit no DMA mapping, mkey, notifier or page remains.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PROT_READ, PROT_WRITE, PTE_PRESENT, PTE_WRITE } from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';
import {
  Hca,
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_ON_DEMAND,
  IB_ACCESS_REMOTE_READ,
  IB_ACCESS_REMOTE_WRITE,
  IB_IMPLICIT_MR_LENGTH,
  IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH,
  IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE,
  IB_UVERBS_ADVISE_MR_FLAG_FLUSH,
  IB_WR_RDMA_READ,
  IB_WR_RDMA_WRITE,
  IbWcStatus,
} from '@dmakit/rdma-umem-odp';
import type { HcaQp, Mlx5IbMr } from '@dmakit/rdma-umem-odp';
import { mmapAnon, pattern, sameBytes } from '@dmakit/testkit';
import { createRig, drain, dropPages } from './testing/rig.js';
import type { OdpRig } from './testing/rig.js';

const PAGES = 16;
const PG = 4096;
const LEN = PAGES * PG;
const RW = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_ON_DEMAND;

type Op =
  | { k: 'write'; page: number; n: number; seed: number; implicit: boolean }
  | { k: 'read'; page: number; n: number; implicit: boolean }
  | { k: 'cpu'; page: number; n: number; seed: number }
  | { k: 'drop'; page: number; n: number }
  | { k: 'ro'; page: number; n: number }
  | { k: 'rw'; page: number; n: number }
  | { k: 'fork'; page: number; seed: number }
  | { k: 'prefetch'; page: number; n: number; write: boolean }
  | { k: 'race'; page: number; n: number };

const span = { page: fc.integer({ min: 0, max: PAGES - 1 }), n: fc.integer({ min: 1, max: 6 }) };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constant('write' as const), ...span, seed: fc.integer({ min: 1, max: 1000 }), implicit: fc.boolean() }),
  fc.record({ k: fc.constant('read' as const), ...span, implicit: fc.boolean() }),
  fc.record({ k: fc.constant('cpu' as const), ...span, seed: fc.integer({ min: 1, max: 1000 }) }),
  fc.record({ k: fc.constant('drop' as const), ...span }),
  fc.record({ k: fc.constant('ro' as const), ...span }),
  fc.record({ k: fc.constant('rw' as const), ...span }),
  fc.record({ k: fc.constant('fork' as const), page: span.page, seed: fc.integer({ min: 1, max: 1000 }) }),
  fc.record({ k: fc.constant('prefetch' as const), ...span, write: fc.boolean() }),
  fc.record({ k: fc.constant('race' as const), ...span }),
);

interface World {
  rig: OdpRig;
  buf: number;
  src: number;
  mrA: Mlx5IbMr;
  mrB: Mlx5IbMr;
  imr: Mlx5IbMr;
  /** What the process must see in its buffer. */
  shadow: Uint8Array;
  writable: boolean[];
  children: { proc: Process; shadow: Uint8Array }[];
  violations: string[];
  /** Pages the machine itself holds (zero page, swiotlb) before any process memory. */
  baseline: number;
}

function clampN(page: number, n: number): number {
  return Math.min(n, PAGES - page);
}

function reconnect(w: World): void {
  const { a, b } = w.rig;
  const qa: HcaQp = a.ib.createQp(a.pd, a.cq, a.cq);
  const qb: HcaQp = b.ib.createQp(b.pd, b.cq, b.cq);
  a.ib.hca.destroyQp(a.qp);
  b.ib.hca.destroyQp(b.qp);
  (a as { qp: HcaQp }).qp = qa;
  (b as { qp: HcaQp }).qp = qb;
  Hca.connect(qa, qb);
}

function setup(legacy: boolean, seed: number): World {
  const rig = createRig({ legacy, seed });
  expect(rig.machine.memory.zeroPagePhys).toBeGreaterThan(0); // allocated on first use
  const baseline = rig.machine.memory.allocatedPageCount;
  const buf = mmapAnon(rig.b.proc, LEN);
  const src = mmapAnon(rig.a.proc, LEN);
  const mrA = rig.a.ib.regUserMr(rig.a.pd, src, LEN, src, RW);
  const mrB = rig.b.ib.regUserMr(rig.b.pd, buf, LEN, buf, RW);
  const imr = rig.b.ib.regUserMr(rig.b.pd, 0, IB_IMPLICIT_MR_LENGTH, 0, RW);
  if (typeof mrA === 'number' || typeof mrB === 'number' || typeof imr === 'number') throw new Error('reg_mr');
  const w: World = { rig, buf, src, mrA, mrB, imr, shadow: new Uint8Array(LEN), writable: new Array<boolean>(PAGES).fill(true), children: [], violations: [], baseline };
  const mm = rig.b.proc.mm;
  // No stale mapping: every DMA of b's HCA hits the page the CPU maps now (dma-direct: dma == phys).
  rig.b.ib.hca.onAccess = (_mk, va, dma, _len, write) => {
    const f = mm.pteFlags(va);
    const phys = mm.walkPte(va) * PG + (va % PG);
    if ((f & PTE_PRESENT) === 0) w.violations.push(`HCA ${write ? 'write' : 'read'} at 0x${va.toString(16)}: page not mapped by the CPU`);
    else if (phys !== dma) w.violations.push(`HCA access at 0x${va.toString(16)} through stale dma 0x${dma.toString(16)} (CPU maps 0x${phys.toString(16)})`);
    else if (write && (f & PTE_WRITE) === 0) w.violations.push(`HCA write at 0x${va.toString(16)} into a page the CPU maps read-only (COW shared?)`);
  };
  return w;
}

function step(w: World, op: Op): void {
  const { rig, buf, src } = w;
  const pb = rig.b.proc;
  switch (op.k) {
    case 'write': {
      const n = clampN(op.page, op.n);
      const data = pattern(n * PG, op.seed);
      rig.a.proc.mm.write(src, data);
      const key = op.implicit ? w.imr.rkey : w.mrB.rkey;
      rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: n * PG, lkey: w.mrA.lkey }], remoteAddr: buf + op.page * PG, rkey: key });
      drain(rig);
      const wc = rig.a.cq.poll();
      const allowed = w.writable.slice(op.page, op.page + n).every(Boolean);
      const okStatus = wc.length === 1 && wc[0]?.status === IbWcStatus.IB_WC_SUCCESS;
      if (allowed !== okStatus) w.violations.push(`write ${JSON.stringify(op)}: allowed=${allowed} status=${JSON.stringify(wc.map((c) => c.status))}`);
      if (okStatus) w.shadow.set(data, op.page * PG);
      else reconnect(w);
      break;
    }
    case 'read': {
      const n = clampN(op.page, op.n);
      const key = op.implicit ? w.imr.rkey : w.mrB.rkey;
      rig.a.ib.postSend(rig.a.qp, { wrId: 2, opcode: IB_WR_RDMA_READ, sgList: [{ addr: src, length: n * PG, lkey: w.mrA.lkey }], remoteAddr: buf + op.page * PG, rkey: key });
      drain(rig);
      const wc = rig.a.cq.poll();
      if (wc[0]?.status !== IbWcStatus.IB_WC_SUCCESS) {
        // A writable MR faults with REQ_WRITE even for reads (pagefault_real_mr), so a read of a
        // page made read-only fails unless the page was already mapped (e.g. by PREFETCH).
        if (w.writable.slice(op.page, op.page + n).every(Boolean)) w.violations.push(`read ${JSON.stringify(op)} failed: ${JSON.stringify(wc)}`);
        reconnect(w);
        break;
      }
      if (!sameBytes(rig.a.proc.mm.read(src, n * PG), w.shadow.subarray(op.page * PG, (op.page + n) * PG))) w.violations.push(`read ${JSON.stringify(op)}: bytes differ`);
      break;
    }
    case 'cpu': {
      const n = clampN(op.page, op.n);
      if (!w.writable.slice(op.page, op.page + n).every(Boolean)) break;
      const data = pattern(n * PG, op.seed + 7);
      pb.mm.write(buf + op.page * PG, data);
      w.shadow.set(data, op.page * PG);
      break;
    }
    case 'drop': {
      const n = clampN(op.page, op.n);
      dropPages(pb, buf + op.page * PG, n * PG);
      w.shadow.fill(0, op.page * PG, (op.page + n) * PG);
      w.writable.fill(true, op.page, op.page + n);
      break;
    }
    case 'ro':
    case 'rw': {
      const n = clampN(op.page, op.n);
      pb.mm.mprotect(buf + op.page * PG, n * PG, op.k === 'ro' ? PROT_READ : PROT_READ | PROT_WRITE);
      w.writable.fill(op.k === 'rw', op.page, op.page + n);
      break;
    }
    case 'fork': {
      const child = pb.fork();
      if (typeof child === 'number') break;
      const cs = w.shadow.slice();
      if (w.writable[op.page] === true) {
        const d = pattern(PG, op.seed + 13);
        child.mm.write(buf + op.page * PG, d);
        cs.set(d, op.page * PG);
      }
      w.children.push({ proc: child, shadow: cs });
      break;
    }
    case 'prefetch': {
      const n = clampN(op.page, op.n);
      const advice = op.write ? IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE : IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH;
      rig.b.ib.adviseMr(rig.b.pd, advice, IB_UVERBS_ADVISE_MR_FLAG_FLUSH, [{ addr: buf + op.page * PG, length: n * PG, lkey: w.mrB.lkey }]);
      break;
    }
    case 'race': {
      // The next fault's window between hmm_range_fault and umem_mutex sees these pages dropped.
      const n = clampN(op.page, op.n);
      let fired = false;
      rig.b.ib.raceWindow = () => {
        if (fired) return;
        fired = true;
        dropPages(pb, buf + op.page * PG, n * PG);
        w.shadow.fill(0, op.page * PG, (op.page + n) * PG);
        w.writable.fill(true, op.page, op.page + n);
      };
      break;
    }
  }
}

function teardownAndCheckLeaks(w: World): string[] {
  const { rig } = w;
  const problems: string[] = [];
  rig.b.ib.raceWindow = undefined;
  for (const side of [rig.a, rig.b]) {
    for (const mr of side.ib.mrs) if (side.ib.deregMr(mr) !== 0) problems.push('dereg failed');
    drain(rig);
    if (side.ib.mrs.length !== 0 || side.ib.hca.mkeyCount !== 0) problems.push(`${side.ib.name}: ${side.ib.hca.mkeyCount} mkeys left`);
    if (side.proc.mm.notifierSubscriptions.itree.length !== 0) problems.push(`${side.ib.name}: interval notifiers left`);
  }
  for (const c of w.children) c.proc.exit();
  rig.a.proc.exit();
  rig.b.proc.exit();
  rig.machine.unbindDevice(rig.a.ib.dmaDevice);
  rig.machine.unbindDevice(rig.b.ib.dmaDevice);
  const leaks = rig.machine.dmaDebug.reports.filter((r) => !r.rule.startsWith('cacheline-overlap'));
  for (const r of leaks) problems.push(`dma-debug: ${r.rule}: ${r.message}`);
  if (rig.machine.memory.allocatedPageCount !== w.baseline) problems.push(`pages: ${rig.machine.memory.allocatedPageCount} allocated, baseline ${w.baseline}`);
  return problems;
}

function run(legacy: boolean, seed: number, ops: Op[]): string[] {
  const w = setup(legacy, seed);
  for (const op of ops) step(w, op);
  const out = [...w.violations];
  if (!sameBytes(w.rig.b.proc.mm.read(w.buf, LEN), w.shadow)) out.push('final bytes differ from the model');
  for (const c of w.children) if (!sameBytes(c.proc.mm.read(w.buf, LEN), c.shadow)) out.push('a forked child lost its copy');
  return out.concat(teardownAndCheckLeaks(w));
}

describe('ODP properties', () => {
  for (const legacy of [false, true]) {
    it(`no stale mapping, right bytes, nothing leaks${legacy ? ' (legacy path)' : ''}`, () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 1 << 20 }), fc.array(opArb, { minLength: 1, maxLength: 24 }), (seed, ops) => {
          expect(run(legacy, seed, ops)).toEqual([]);
        }),
        { numRuns: 60, seed: legacy ? 42 : 7 },
      );
    });
  }
});

/** Traffic queued at once while CPU-side events fire at seeded simulated times in between. */
type Timed = { at: number; k: 'drop' | 'cpu' | 'ro' | 'rw' | 'prefetch'; page: number; n: number; seed: number };

const timedArb: fc.Arbitrary<Timed> = fc.record({
  at: fc.integer({ min: 0, max: 60_000 }),
  k: fc.constantFrom('drop' as const, 'cpu' as const, 'ro' as const, 'rw' as const, 'prefetch' as const),
  ...span,
  seed: fc.integer({ min: 1, max: 1000 }),
});

function runTimed(legacy: boolean, seed: number, wqes: { page: number; n: number; seed: number }[], events: Timed[]): string[] {
  const w = setup(legacy, seed);
  const { rig, buf } = w;
  const pb = rig.b.proc;
  // A source slot of 4 pages per WQE, all written before the traffic starts.
  const src = mmapAnon(rig.a.proc, wqes.length * 4 * PG);
  const mrSrc = rig.a.ib.regUserMr(rig.a.pd, src, wqes.length * 4 * PG, src, RW);
  if (typeof mrSrc === 'number') throw new Error('reg_mr');
  // Each WQE has its own source slice; the shadow takes its bytes when its completion is pushed,
  // which happens in the same simulated event as the data move.
  const data = wqes.map((q, i) => pattern(clampN(q.page, q.n) * PG, q.seed + i));
  const cq = rig.a.cq;
  const push = cq.push.bind(cq);
  cq.push = (wc) => {
    const q = wqes[wc.wrId];
    const d = data[wc.wrId];
    if (wc.status === IbWcStatus.IB_WC_SUCCESS && q !== undefined && d !== undefined) w.shadow.set(d, q.page * PG);
    push(wc);
  };
  wqes.forEach((q, i) => {
    const n = clampN(q.page, q.n);
    const off = i * 4 * PG;
    rig.a.proc.mm.write(src + off, (data[i] ?? new Uint8Array(0)).subarray(0, Math.min(n, 4) * PG));
  });
  // Rewrite the data arrays to what each WQE will really send (at most 4 pages from its slot).
  wqes.forEach((q, i) => {
    const n = Math.min(clampN(q.page, q.n), 4);
    data[i] = (data[i] ?? new Uint8Array(0)).subarray(0, n * PG);
    rig.a.ib.postSend(rig.a.qp, { wrId: i, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src + i * 4 * PG, length: n * PG, lkey: mrSrc.lkey }], remoteAddr: buf + q.page * PG, rkey: w.mrB.rkey });
  });
  for (const e of events) {
    rig.machine.schedule(e.at, () => {
      const n = clampN(e.page, e.n);
      const a = buf + e.page * PG;
      switch (e.k) {
        case 'drop':
          dropPages(pb, a, n * PG);
          w.shadow.fill(0, e.page * PG, (e.page + n) * PG);
          w.writable.fill(true, e.page, e.page + n);
          break;
        case 'cpu':
          if (w.writable.slice(e.page, e.page + n).every(Boolean)) {
            const d = pattern(n * PG, e.seed + 99);
            pb.mm.write(a, d);
            w.shadow.set(d, e.page * PG);
          }
          break;
        case 'ro':
        case 'rw':
          pb.mm.mprotect(a, n * PG, e.k === 'ro' ? PROT_READ : PROT_READ | PROT_WRITE);
          w.writable.fill(e.k === 'rw', e.page, e.page + n);
          break;
        case 'prefetch':
          rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE, 0, [{ addr: a, length: n * PG, lkey: w.mrB.lkey }]);
          break;
      }
    });
  }
  drain(rig);
  const out = [...w.violations];
  if (!sameBytes(pb.mm.read(buf, LEN), w.shadow)) out.push('final bytes differ from the model');
  return out.concat(teardownAndCheckLeaks(w));
}

describe('ODP properties under scheduler interleavings', () => {
  for (const legacy of [false, true]) {
    it(`CPU events fired between WQEs, page faults and resumes never expose a stale mapping${legacy ? ' (legacy path)' : ''}`, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 1 << 20 }),
          fc.array(fc.record({ page: span.page, n: span.n, seed: fc.integer({ min: 1, max: 1000 }) }), { minLength: 1, maxLength: 12 }),
          fc.array(timedArb, { maxLength: 12 }),
          (seed, wqes, events) => {
            expect(runTimed(legacy, seed, wqes, events)).toEqual([]);
          },
        ),
        { numRuns: 60, seed: legacy ? 5 : 3 },
      );
    });
  }
});

/**
 * rdma-odp end to end, as a property over random interleavings (fast-check, seeded): RDMA WRITE /
 * READ through two HCAs on the real @dmakit/hmm under a strict IOMMU, while the server process
 * munmaps/remaps, mprotects, forks (the child writes), a GPU (hmm's dmirror device) migrates parts
 * of the buffer into its device-private memory and back, and invalidations are raced into the
 * fault path. Invariants:
 * - the HCA never uses a stale mapping: the IOMMU translation of every address it DMAs to or from
 *   is the page the CPU maps at that virtual address now, and it writes only pages the CPU may
 *   write (never a page shared copy-on-write with the child, never a device-private page);
 * - the bytes are what the model says, the forked child keeps its own copy;
 * - nothing leaks: after teardown no mkey, mapped page, IOVA or dma-debug entry remains.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createMachine, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, PTE_PRESENT, PTE_WRITE, SZ_1G } from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';
import { createHmmPort, DmirrorDevice } from '@dmakit/hmm';
import { createIommu, iommuIovaToPhys } from '@dmakit/iommu-dma';
import {
  Hca,
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_ON_DEMAND,
  IB_ACCESS_REMOTE_READ,
  IB_ACCESS_REMOTE_WRITE,
  IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE,
  IB_UVERBS_ADVISE_MR_FLAG_FLUSH,
  IB_WR_RDMA_READ,
  IB_WR_RDMA_WRITE,
  IbWcStatus,
  Mlx5IbDev,
} from '@dmakit/rdma-umem-odp';
import type { HcaCq, HcaQp, IbPd } from '@dmakit/rdma-umem-odp';

const PAGES = 32;
const LEN = PAGES * PAGE_SIZE;
const ACCESS = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_ON_DEMAND;

type Op =
  | { k: 'write' | 'read' | 'drop' | 'ro' | 'rw' | 'prefetch' | 'race' | 'toGpu' | 'fromGpu'; page: number; n: number; seed: number }
  | { k: 'fork'; page: number; n: number; seed: number };

const opArb: fc.Arbitrary<Op> = fc.record({
  k: fc.constantFrom('write', 'write', 'read', 'drop', 'ro', 'rw', 'prefetch', 'race', 'toGpu', 'fromGpu', 'fork'),
  page: fc.integer({ min: 0, max: PAGES - 1 }),
  n: fc.integer({ min: 1, max: 8 }),
  seed: fc.integer({ min: 1, max: 1 << 20 }),
});

function fill(seed: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = seed >>> 0;
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

interface Side {
  proc: Process;
  ib: Mlx5IbDev;
  pd: IbPd;
  cq: HcaCq;
  qp: HcaQp;
}

function world(seed: number) {
  const m = createMachine({ ramBytes: SZ_1G, seed, dmaDebug: 'warn' });
  const iommu = createIommu(m, { mode: 'strict' });
  const hmm = createHmmPort();
  const side = (name: string): Side => {
    const dev = m.pci.addDevice({ name, dmaMaskBits: 64 });
    iommu.attachDevice(dev);
    const ib = new Mlx5IbDev({ dev, hmm, scheduler: m.scheduler });
    const proc = m.createProcess();
    const pd = ib.allocPd(proc.mm);
    const cq = ib.createCq();
    return { proc, ib, pd, cq, qp: ib.createQp(pd, cq, cq) };
  };
  const a = side('mlx5_0');
  const b = side('mlx5_1');
  Hca.connect(a.qp, b.qp);
  const gpuDev = m.pci.addDevice({ name: 'gpu0', dmaMaskBits: 48 });
  iommu.attachDevice(gpuDev);
  const gpu = DmirrorDevice.create({ dev: gpuDev, memory: m.memory, devmemBytes: LEN * 2, name: 'gpu0' });
  if (typeof gpu === 'number') throw new Error(`dmirror: ${gpu}`);
  const buf = b.proc.mm.mmap({ length: LEN, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  const src = a.proc.mm.mmap({ length: LEN, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  const mrA = a.ib.regUserMr(a.pd, src, LEN, src, ACCESS);
  const mrB = b.ib.regUserMr(b.pd, buf, LEN, buf, ACCESS);
  if (typeof mrA === 'number' || typeof mrB === 'number') throw new Error('reg_mr');
  const mirror = gpu.open(b.proc.mm);
  const violations: string[] = [];
  const domain = iommu.domainOf(b.ib.dmaDevice);
  b.ib.hca.onAccess = (_mk, va, dma, _len, write) => {
    const mm = b.proc.mm;
    const f = mm.pteFlags(va);
    const phys = domain === null ? -1 : iommuIovaToPhys(domain, dma);
    if ((f & PTE_PRESENT) === 0) violations.push(`HCA ${write ? 'write' : 'read'} at 0x${va.toString(16)}: not mapped by the CPU (flags ${f})`);
    else if (phys !== mm.walkPte(va) * PAGE_SIZE + (va % PAGE_SIZE)) violations.push(`HCA access at 0x${va.toString(16)} reaches 0x${phys.toString(16)}, CPU maps another page`);
    else if (write && (f & PTE_WRITE) === 0) violations.push(`HCA write at 0x${va.toString(16)} into a read-only (COW-shared) page`);
  };
  return { m, iommu, a, b, buf, src, mrA, mrB, mirror, violations };
}

function run(seed: number, ops: Op[]): string[] {
  const w = world(seed);
  const { m, a, b, buf, src, mrA, mrB, mirror, violations } = w;
  const shadow = new Uint8Array(LEN);
  const writable = new Array<boolean>(PAGES).fill(true);
  const children: { proc: Process; shadow: Uint8Array }[] = [];
  const settle = (): void => {
    for (let g = 0; a.cq.depth === 0 && g < 100_000; g++) m.advance(1000);
  };
  const reconnect = (): void => {
    a.ib.hca.destroyQp(a.qp);
    b.ib.hca.destroyQp(b.qp);
    a.qp = a.ib.createQp(a.pd, a.cq, a.cq);
    b.qp = b.ib.createQp(b.pd, b.cq, b.cq);
    Hca.connect(a.qp, b.qp);
  };
  const remap = (p: number, n: number): void => {
    b.proc.mm.munmap(buf + p * PAGE_SIZE, n * PAGE_SIZE);
    b.proc.mm.mmap({ length: n * PAGE_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, addr: buf + p * PAGE_SIZE });
    shadow.fill(0, p * PAGE_SIZE, (p + n) * PAGE_SIZE);
    writable.fill(true, p, p + n);
  };
  for (const op of ops) {
    const p = op.page;
    const n = Math.min(op.n, PAGES - p);
    const lo = p * PAGE_SIZE;
    const hi = (p + n) * PAGE_SIZE;
    const allW = writable.slice(p, p + n).every(Boolean);
    switch (op.k) {
      case 'write': {
        const d = fill(op.seed, n * PAGE_SIZE);
        a.proc.mm.write(src, d);
        a.ib.postSend(a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: d.length, lkey: mrA.lkey }], remoteAddr: buf + lo, rkey: mrB.rkey });
        settle();
        const st = a.cq.poll()[0]?.status;
        if ((st === IbWcStatus.IB_WC_SUCCESS) !== allW) violations.push(`write ${JSON.stringify(op)}: status ${String(st)}, writable ${allW}`);
        if (st === IbWcStatus.IB_WC_SUCCESS) shadow.set(d, lo);
        else reconnect();
        break;
      }
      case 'read': {
        a.ib.postSend(a.qp, { wrId: 2, opcode: IB_WR_RDMA_READ, sgList: [{ addr: src, length: hi - lo, lkey: mrA.lkey }], remoteAddr: buf + lo, rkey: mrB.rkey });
        settle();
        const st = a.cq.poll()[0]?.status;
        if (st !== IbWcStatus.IB_WC_SUCCESS) {
          if (allW) violations.push(`read ${JSON.stringify(op)} failed: ${String(st)}`);
          reconnect();
        } else if (!same(a.proc.mm.read(src, hi - lo), shadow.subarray(lo, hi))) violations.push(`read ${JSON.stringify(op)}: bytes differ`);
        break;
      }
      case 'drop':
        remap(p, n);
        break;
      case 'ro':
      case 'rw':
        b.proc.mm.mprotect(buf + lo, hi - lo, op.k === 'ro' ? PROT_READ : PROT_READ | PROT_WRITE);
        writable.fill(op.k === 'rw', p, p + n);
        break;
      case 'prefetch':
        b.ib.adviseMr(b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE, IB_UVERBS_ADVISE_MR_FLAG_FLUSH, [{ addr: buf + lo, length: hi - lo, lkey: mrB.lkey }]);
        break;
      case 'race': {
        let fired = false;
        b.ib.raceWindow = () => {
          if (fired) return;
          fired = true;
          remap(p, n);
        };
        break;
      }
      case 'toGpu':
        if (allW) mirror.migrateToDevice(buf + lo, n);
        break;
      case 'fromGpu':
        mirror.migrateToSystem(buf + lo, n);
        break;
      case 'fork': {
        const child = b.proc.fork();
        if (typeof child === 'number') break;
        const cs = shadow.slice();
        if (writable[p] === true) {
          const d = fill(op.seed ^ 0x5555, PAGE_SIZE);
          child.mm.write(buf + lo, d);
          cs.set(d, lo);
        }
        children.push({ proc: child, shadow: cs });
        break;
      }
    }
  }
  b.ib.raceWindow = undefined;
  const out = [...violations];
  if (!same(b.proc.mm.read(buf, LEN), shadow)) out.push('final bytes differ from the model');
  for (const c of children) if (!same(c.proc.mm.read(buf, LEN), c.shadow)) out.push('a forked child lost its copy');
  // Teardown and leaks.
  for (const s of [a, b]) for (const mr of s.ib.mrs) s.ib.deregMr(mr);
  for (const c of children) c.proc.exit();
  mirror.close();
  a.proc.exit();
  b.proc.exit();
  w.iommu.flushQueues();
  for (let g = 0; g < 10; g++) m.advance(1e6);
  const st = w.iommu.stats();
  if (a.ib.hca.mkeyCount + b.ib.hca.mkeyCount !== 0) out.push('mkeys left');
  if (a.ib.report().mappedPages + b.ib.report().mappedPages !== 0) out.push('mapped pages left');
  if (st.faults !== 0) out.push(`${st.faults} IOMMU faults`);
  m.unbindDevice(a.ib.dmaDevice);
  m.unbindDevice(b.ib.dmaDevice);
  for (const r of m.dmaDebug.reports) if (!r.rule.startsWith('cacheline-overlap') && (r.device === 'mlx5_0' || r.device === 'mlx5_1')) out.push(`dma-debug: ${r.rule}: ${r.message}`);
  return out;
}

describe('rdma-odp property (real hmm + strict IOMMU + a migrating GPU)', () => {
  it('no stale mapping, right bytes, nothing leaks, over random interleavings', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1 << 20 }), fc.array(opArb, { minLength: 1, maxLength: 20 }), (seed, ops) => {
        expect(run(seed, ops)).toEqual([]);
      }),
      { numRuns: 40, seed: 11 },
    );
  });
});
